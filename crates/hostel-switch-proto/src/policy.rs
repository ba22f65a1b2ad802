//! Policy stages: declarative, ACL-like rule lists the daemon programs per network or per
//! port (a tenant's policy is attached to each of its networks: the switch knows networks,
//! not tenants), compiled into the the switch's tables and so swapped atomically with
//! them.
//!
//! A policy applies to every frame the switch forwards (unicast, flood, uplink), VM to VM
//! included: first the ingress port's policies, then the network's, then (for unicast) the
//! destination port's. Inside a policy the first rule that matches decides: `pass` ends that
//! policy, `drop` ends the frame (counted as `filtered` on the sender), `mirror` sends a copy
//! to the named port and goes on to the next rule (the frame's own delivery is unchanged).
//! No rule matching means pass. Frames the switch consumes itself (ARP, NDP, DHCP) are not
//! judged. A flood copy is judged by the sender's and the network's policies only.
//!
//! The switch does not restrict where a mirror copy goes (an operator's IDS may watch many
//! tenants): the daemon must let a tenant name only its own ports.
//!
//! Rule fields left out match anything. A rule naming ports matches only TCP, UDP and SCTP
//! whose ports are in the frame's first bytes (not a later IPv4 fragment, not behind IPv6
//! extension headers): a deny rule on ports is no firewall, which will be a stateful stage
//! in the same slot (`hostel_switch::datapath::pipeline::PolicyStage`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::types::{Ipv4Cidr, Ipv6Cidr};

/// Most rules one policy may hold: evaluation cost per frame stays bounded.
pub const MAX_RULES: usize = 256;
/// Most policies one network or port may have attached.
pub const MAX_ATTACHED: usize = 8;

/// Where a policy applies. Exactly one of the fields is given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyScope {
    /// Every frame forwarded inside this network (a tenant-wide policy is attached to each
    /// network of the tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Every frame this port sends or is sent (unicast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// One policy stage: an ordered rule list and where it is attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub id: String,
    pub scope: PolicyScope,
    pub rules: Vec<RuleConfig>,
}

/// What a matching rule does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Pass,
    Drop,
    /// Copy the frame to this port (an IDS), then go on with the next rule.
    Mirror(String),
}

/// Either family's prefix, written as in `"10.0.0.0/24"` or `"fd00::/64"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IpCidr {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl IpCidr {
    /// Whether `ip` lies inside this prefix; an address of the other family never does.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpCidr::V4(c), IpAddr::V4(a)) => c.contains(a),
            (IpCidr::V6(c), IpAddr::V6(a)) => c.contains(a),
            _ => false,
        }
    }
}

/// One rule: every field given must match. Ports are inclusive `[low, high]` ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    /// IPv4 protocol or IPv6 next header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpCidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpCidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<(u16, u16)>,
    pub action: Action,
}

impl PolicyConfig {
    /// Checks what can be checked without the switch's tables (mirror targets are resolved,
    /// and so checked, when the switch compiles the policy).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::Policy {
            id: self.id.clone(),
            reason,
        };
        if self.id.is_empty() {
            return Err(bad("empty id".into()));
        }
        if self.scope.network.is_some() == self.scope.port.is_some() {
            return Err(bad("scope must name exactly one of network or port".into()));
        }
        if self.rules.len() > MAX_RULES {
            return Err(bad(format!("more than {MAX_RULES} rules")));
        }
        for (i, r) in self.rules.iter().enumerate() {
            for (name, range) in [("src_ports", r.src_ports), ("dst_ports", r.dst_ports)] {
                if let Some((lo, hi)) = range {
                    if lo > hi {
                        return Err(bad(format!("rules[{i}].{name}: {lo} > {hi}")));
                    }
                }
            }
            if let (Some(IpCidr::V4(_)), Some(IpCidr::V6(_)))
            | (Some(IpCidr::V6(_)), Some(IpCidr::V4(_))) = (r.src, r.dst)
            {
                return Err(bad(format!(
                    "rules[{i}]: src and dst of different families"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: Vec<RuleConfig>) -> PolicyConfig {
        PolicyConfig {
            id: "p".into(),
            scope: PolicyScope {
                network: Some("n".into()),
                port: None,
            },
            rules,
        }
    }

    fn rule() -> RuleConfig {
        RuleConfig {
            ethertype: None,
            protocol: None,
            src: None,
            dst: None,
            src_ports: None,
            dst_ports: None,
            action: Action::Mirror("nowhere".into()),
        }
    }

    fn reason(p: &PolicyConfig) -> String {
        match p.validate() {
            Err(ConfigError::Policy { reason, .. }) => reason,
            other => panic!("expected a policy error, got {other:?}"),
        }
    }

    #[test]
    fn validate_refuses_what_the_tables_cannot_honour() {
        // A mirror target is the switch's to resolve: without tables it is not an error.
        assert!(policy(vec![rule()]).validate().is_ok());

        let mut p = policy(vec![]);
        p.scope.port = Some("vm".into());
        assert!(reason(&p).contains("exactly one"));
        p.scope = PolicyScope::default();
        assert!(reason(&p).contains("exactly one"));

        assert!(reason(&policy(vec![rule(); MAX_RULES + 1])).contains("more than"));

        let mut r = rule();
        r.dst_ports = Some((90, 80));
        assert_eq!(reason(&policy(vec![r])), "rules[0].dst_ports: 90 > 80");

        let mut r = rule();
        r.src = Some(IpCidr::V4("10.0.0.0/8".parse().unwrap()));
        r.dst = Some(IpCidr::V6("fd00::/8".parse().unwrap()));
        assert!(reason(&policy(vec![rule(), r])).starts_with("rules[1]"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bad =
            r#"{"id":"p","scope":{"network":"n"},"rules":[{"action":"drop","dst_port":[22,22]}]}"#;
        assert!(serde_json::from_str::<PolicyConfig>(bad).is_err());
    }
}
