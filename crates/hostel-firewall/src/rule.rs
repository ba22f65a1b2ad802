//! The rule model's validation into the strict form the compiler takes. The serde model
//! itself (`PolicySpec`, `RuleSpec`, ...) lives in `hostel_switch_proto::firewall`, so the
//! daemon builds it without linking the firewall; it is re-exported here at the old paths.
//!
//! Evaluation order: rules of one direction are tried lowest `priority` first, then lowest
//! `id`; the first rule that matches decides. No match: the direction's default policy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use hostel_switch_proto::firewall::{
    Action, DefaultAction, Direction, PolicySpec, PortSpec, ProtocolSpec, RuleSpec, Scope,
};
use hostel_switch_proto::types::{Ipv4Cidr, Ipv6Cidr};

use crate::packet::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// An IPv4 or IPv6 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpCidr {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl IpCidr {
    pub fn host(ip: IpAddr) -> IpCidr {
        match ip {
            IpAddr::V4(addr) => IpCidr::V4(Ipv4Cidr { addr, prefix: 32 }),
            IpAddr::V6(addr) => IpCidr::V6(Ipv6Cidr { addr, prefix: 128 }),
        }
    }
    /// The inclusive range of addresses (IPv4 in the low 32 bits).
    pub fn range(&self) -> (bool, u128, u128) {
        match self {
            IpCidr::V4(c) => {
                let p = u32::from(c.prefix.min(32));
                let host = match p {
                    0 => u32::MAX,
                    32.. => 0,
                    _ => u32::MAX >> p,
                };
                let lo = u32::from(c.addr) & !host;
                (false, u128::from(lo), u128::from(lo | host))
            }
            IpCidr::V6(c) => {
                let p = u32::from(c.prefix.min(128));
                let host = if p == 0 {
                    u128::MAX
                } else if p == 128 {
                    0
                } else {
                    u128::MAX >> p
                };
                let lo = u128::from(c.addr) & !host;
                (true, lo, lo | host)
            }
        }
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("port {0} is out of range 0-65535")]
    PortOutOfRange(u32),
    #[error("empty port range {from}-{to}")]
    EmptyRange { from: u32, to: u32 },
    #[error("prefix length /{0} is too long")]
    PrefixTooLong(u32),
    #[error("{0:?} is not an address, a CIDR, set:NAME or group:NAME")]
    BadAddress(String),
    #[error("unknown protocol {0:?} (tcp, udp, icmp, icmpv6, any or 0-255)")]
    UnknownProtocol(String),
    #[error("only icmp and icmpv6 rules have an ICMP type or code")]
    IcmpOnNonIcmp,
    #[error("{0} is out of range 0-255")]
    IcmpOutOfRange(u32),
    #[error("an ICMP code needs an ICMP type")]
    CodeWithoutType,
    #[error("only tcp and udp rules have ports")]
    PortsOnPortless,
    #[error("unknown address set {0:?}")]
    UnknownSet(String),
    #[error("unknown VM group {0:?}")]
    UnknownGroup(String),
    #[error("unknown NIC {0:?}")]
    UnknownNic(String),
    #[error("rule id {0} is used twice")]
    DuplicateId(u32),
    #[error("too many rules ({0}; at most {MAX_RULES})")]
    TooMany(usize),
}

/// At most this many rules per tenant: the compiled tables grow with rules × boundaries.
pub const MAX_RULES: usize = 4096;

/// A validation failure naming the rule (if any) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}field `{field}`: {problem}", rule.map(|r| format!("rule {r}: ")).unwrap_or_default())]
pub struct RuleError {
    pub rule: Option<u32>,
    pub field: String,
    pub problem: Problem,
}

/// One validated rule with every name resolved to address ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: u32,
    pub priority: u32,
    pub direction: Direction,
    pub action: Action,
    /// `None`: any protocol.
    pub protocol: Option<u8>,
    /// Empty: any. Each entry is (is IPv6, lo, hi).
    pub source: Vec<(bool, u128, u128)>,
    pub destination: Vec<(bool, u128, u128)>,
    /// Empty: any. For ICMP rules the source "port" is the type and the destination the code.
    pub sport: Vec<(u16, u16)>,
    pub dport: Vec<(u16, u16)>,
    /// For a NIC-scoped rule: the NIC's addresses (a packet's inside end must be one).
    pub nic: Option<Vec<IpAddr>>,
    pub stateless: bool,
    pub log: bool,
}

/// A validated policy, ready to compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// In evaluation order.
    pub rules: Vec<Rule>,
    pub default_ingress: DefaultAction,
    pub default_egress: DefaultAction,
}

fn err(rule: Option<u32>, field: impl Into<String>, problem: Problem) -> RuleError {
    RuleError {
        rule,
        field: field.into(),
        problem,
    }
}

/// Parses a CIDR or bare address, checking the prefix length (a `/33` names the field).
pub fn parse_cidr(s: &str) -> Result<IpCidr, Problem> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = a.parse().map_err(|_| Problem::BadAddress(s.into()))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => {
            let n: u32 = p.parse().map_err(|_| Problem::BadAddress(s.into()))?;
            if n > max {
                return Err(Problem::PrefixTooLong(n));
            }
            n
        }
    };
    Ok(match ip {
        IpAddr::V4(addr) => IpCidr::V4(Ipv4Cidr {
            addr,
            prefix: prefix as u8,
        }),
        IpAddr::V6(addr) => IpCidr::V6(Ipv6Cidr {
            addr,
            prefix: prefix as u8,
        }),
    })
}

fn protocol(p: &ProtocolSpec) -> Result<Option<u8>, Problem> {
    match p {
        ProtocolSpec::Number(n) => u8::try_from(*n)
            .map(Some)
            .map_err(|_| Problem::UnknownProtocol(n.to_string())),
        ProtocolSpec::Name(s) => match s.to_ascii_lowercase().as_str() {
            "any" => Ok(None),
            "tcp" => Ok(Some(PROTO_TCP)),
            "udp" => Ok(Some(PROTO_UDP)),
            "icmp" => Ok(Some(PROTO_ICMP)),
            "icmpv6" => Ok(Some(PROTO_ICMPV6)),
            other => other
                .parse::<u8>()
                .map(Some)
                .map_err(|_| Problem::UnknownProtocol(s.clone())),
        },
    }
}

fn ports(list: &[PortSpec]) -> Result<Vec<(u16, u16)>, Problem> {
    let one = |p: u32| u16::try_from(p).map_err(|_| Problem::PortOutOfRange(p));
    list.iter()
        .map(|p| match *p {
            PortSpec::One(p) => one(p).map(|p| (p, p)),
            PortSpec::Range { from, to } => {
                let (lo, hi) = (one(from)?, one(to)?);
                if hi < lo {
                    return Err(Problem::EmptyRange { from, to });
                }
                Ok((lo, hi))
            }
        })
        .collect()
}

/// Validation of a [`PolicySpec`] (a trait because the model is defined in
/// `hostel-switch-proto`).
pub trait Validate {
    /// The policy in strict form, or the first problem, naming its rule and field.
    fn validate(&self) -> Result<Policy, RuleError>;
}

impl Validate for PolicySpec {
    /// Checks every field and resolves every name; the first problem found is returned.
    fn validate(&self) -> Result<Policy, RuleError> {
        if self.rules.len() > MAX_RULES {
            return Err(err(None, "rules", Problem::TooMany(self.rules.len())));
        }
        let mut sets: BTreeMap<&str, Vec<(bool, u128, u128)>> = BTreeMap::new();
        for (name, list) in &self.sets {
            let mut v = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let c = parse_cidr(s).map_err(|p| err(None, format!("sets.{name}[{i}]"), p))?;
                v.push(c.range());
            }
            sets.insert(name, v);
        }
        let mut ids = BTreeSet::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            if !ids.insert(r.id) {
                return Err(err(Some(r.id), "id", Problem::DuplicateId(r.id)));
            }
            rules.push(self.rule(r, &sets)?);
        }
        rules.sort_by_key(|r| (r.priority, r.id));
        Ok(Policy {
            rules,
            default_ingress: self.default_ingress,
            default_egress: self.default_egress,
        })
    }
}

/// The steps of [`Validate::validate`] (a private trait: the model's type is foreign here).
trait Resolve {
    fn addrs(
        &self,
        id: u32,
        field: &str,
        list: &[String],
        sets: &BTreeMap<&str, Vec<(bool, u128, u128)>>,
    ) -> Result<Vec<(bool, u128, u128)>, RuleError>;
    fn rule(
        &self,
        r: &RuleSpec,
        sets: &BTreeMap<&str, Vec<(bool, u128, u128)>>,
    ) -> Result<Rule, RuleError>;
}

impl Resolve for PolicySpec {
    fn addrs(
        &self,
        id: u32,
        field: &str,
        list: &[String],
        sets: &BTreeMap<&str, Vec<(bool, u128, u128)>>,
    ) -> Result<Vec<(bool, u128, u128)>, RuleError> {
        let mut out = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let f = || format!("{field}[{i}]");
            if let Some(name) = s.strip_prefix("set:") {
                let set = sets
                    .get(name)
                    .ok_or_else(|| err(Some(id), f(), Problem::UnknownSet(name.into())))?;
                out.extend_from_slice(set);
            } else if let Some(name) = s.strip_prefix("group:") {
                let g = self
                    .groups
                    .get(name)
                    .ok_or_else(|| err(Some(id), f(), Problem::UnknownGroup(name.into())))?;
                out.extend(g.iter().map(|ip| IpCidr::host(*ip).range()));
            } else {
                out.push(parse_cidr(s).map_err(|p| err(Some(id), f(), p))?.range());
            }
        }
        // A list that resolved to nothing (an empty set or group) matches nothing, not anything:
        // an impossible range keeps the rule inert rather than widening it.
        if !list.is_empty() && out.is_empty() {
            out.push((false, 1, 0));
        }
        Ok(out)
    }

    fn rule(
        &self,
        r: &RuleSpec,
        sets: &BTreeMap<&str, Vec<(bool, u128, u128)>>,
    ) -> Result<Rule, RuleError> {
        let id = Some(r.id);
        let proto = protocol(&r.protocol).map_err(|p| err(id, "protocol", p))?;
        let icmp = matches!(proto, Some(PROTO_ICMP | PROTO_ICMPV6));
        let has_ports = matches!(proto, Some(PROTO_TCP | PROTO_UDP));
        let mut sport = ports(&r.source_ports).map_err(|p| err(id, "source_ports", p))?;
        let mut dport = ports(&r.destination_ports).map_err(|p| err(id, "destination_ports", p))?;
        if !has_ports {
            if !r.source_ports.is_empty() {
                return Err(err(id, "source_ports", Problem::PortsOnPortless));
            }
            if !r.destination_ports.is_empty() {
                return Err(err(id, "destination_ports", Problem::PortsOnPortless));
            }
        }
        if !icmp {
            if r.icmp_type.is_some() {
                return Err(err(id, "icmp_type", Problem::IcmpOnNonIcmp));
            }
            if r.icmp_code.is_some() {
                return Err(err(id, "icmp_code", Problem::IcmpOnNonIcmp));
            }
        } else {
            let byte = |v: u32, f: &str| {
                u8::try_from(v).map_err(|_| err(id, f, Problem::IcmpOutOfRange(v)))
            };
            match (r.icmp_type, r.icmp_code) {
                (None, Some(_)) => return Err(err(id, "icmp_code", Problem::CodeWithoutType)),
                (Some(t), c) => {
                    let t = u16::from(byte(t, "icmp_type")?);
                    sport = vec![(t, t)];
                    if let Some(c) = c {
                        let c = u16::from(byte(c, "icmp_code")?);
                        dport = vec![(c, c)];
                    }
                }
                (None, None) => {}
            }
        }
        let nic = match &r.scope {
            Scope::Edge => None,
            Scope::Nic(name) => Some(
                self.nics
                    .get(name)
                    .ok_or_else(|| err(id, "scope", Problem::UnknownNic(name.clone())))?
                    .clone(),
            ),
        };
        Ok(Rule {
            id: r.id,
            priority: r.priority,
            direction: r.direction,
            action: r.action,
            protocol: proto,
            source: self.addrs(r.id, "source", &r.source, sets)?,
            destination: self.addrs(r.id, "destination", &r.destination, sets)?,
            sport,
            dport,
            nic,
            stateless: r.stateless,
            log: r.log,
        })
    }
}

/// Convenience for tests and callers building rules in code.
pub fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// Convenience for tests and callers building rules in code.
pub fn v6(s: &str) -> Option<IpAddr> {
    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}
