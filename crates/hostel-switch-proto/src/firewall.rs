//! A tenant firewall's rule model as the daemon stores it and sends it to the switch (serde
//! only; validation and evaluation are in `hostel-firewall`, which re-exports these types).
//! Wire types are loose on purpose (a port is a `u32`, a protocol a name or any number) so
//! that validation can say which field of which rule is wrong instead of a deserializer's
//! "invalid value".
//!
//! Evaluation order: rules of one direction are tried lowest `priority` first, then lowest
//! `id`; the first rule that matches decides. No match: the direction's default policy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Which way a packet crosses the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From outside towards the tenant's VMs.
    Ingress,
    /// From the tenant's VMs towards outside.
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Drop,
    /// Drop and answer: a TCP RST, or an ICMP/ICMPv6 administratively-prohibited unreachable.
    Reject,
}

/// A protocol by name (`tcp`, `udp`, `icmp`, `icmpv6`, `any`) or by number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProtocolSpec {
    Number(u32),
    Name(String),
}

impl Default for ProtocolSpec {
    fn default() -> Self {
        ProtocolSpec::Name("any".into())
    }
}

/// One port or an inclusive range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    One(u32),
    Range { from: u32, to: u32 },
}

/// Where a rule applies.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The tenant's whole edge.
    #[default]
    Edge,
    /// One VM NIC (named in `Policy::nics`): the rule sees traffic whose inside end is that NIC,
    /// from outside and from the tenant's other VMs.
    Nic(String),
}

/// A rule as stored and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: u32,
    #[serde(default = "default_priority")]
    pub priority: u32,
    pub direction: Direction,
    pub action: Action,
    #[serde(default)]
    pub protocol: ProtocolSpec,
    /// Addresses: `10.0.0.0/8`, `2001:db8::/32`, a bare address, `set:NAME` or `group:NAME`.
    /// Empty: any.
    #[serde(default)]
    pub source: Vec<String>,
    #[serde(default)]
    pub destination: Vec<String>,
    #[serde(default)]
    pub source_ports: Vec<PortSpec>,
    #[serde(default)]
    pub destination_ports: Vec<PortSpec>,
    #[serde(default)]
    pub icmp_type: Option<u32>,
    #[serde(default)]
    pub icmp_code: Option<u32>,
    #[serde(default)]
    pub scope: Scope,
    /// Matches packet by packet, creating no connection (replies need their own rule).
    #[serde(default)]
    pub stateless: bool,
    #[serde(default)]
    pub log: bool,
}

fn default_priority() -> u32 {
    1000
}

/// A default policy for one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    Allow,
    Drop,
    Reject,
}

/// A tenant's whole rule set with the names its rules refer to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    #[serde(default = "deny")]
    pub default_ingress: DefaultAction,
    #[serde(default = "allow")]
    pub default_egress: DefaultAction,
    /// Named address sets (CIDRs or addresses).
    #[serde(default)]
    pub sets: BTreeMap<String, Vec<String>>,
    /// Groups of the tenant's VMs, resolved by the daemon to their addresses.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<IpAddr>>,
    /// The addresses of each VM NIC that has NIC-scoped rules.
    #[serde(default)]
    pub nics: BTreeMap<String, Vec<IpAddr>>,
}

fn deny() -> DefaultAction {
    DefaultAction::Drop
}
fn allow() -> DefaultAction {
    DefaultAction::Allow
}

impl Default for PolicySpec {
    fn default() -> Self {
        PolicySpec {
            rules: Vec::new(),
            default_ingress: DefaultAction::Drop,
            default_egress: DefaultAction::Allow,
            sets: BTreeMap::new(),
            groups: BTreeMap::new(),
            nics: BTreeMap::new(),
        }
    }
}
