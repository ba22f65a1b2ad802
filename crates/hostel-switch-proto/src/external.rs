//! The external network: one per switch, on a host interface the switch drives itself, and
//! the per-tenant edge routers that connect tenant networks to it.
//!
//! A tenant's edge has an inside (the gateway address of each of its networks listed in
//! `networks`, which the switch already answers for) and an outside (`outside4`/`outside6`
//! on the external subnet, answered on the wire with the external MAC). Public addresses a
//! tenant holds are its outside addresses, its floating addresses (also answered on the
//! wire) and its routed public subnets (not answered: the upstream router routes them to
//! the outside address).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::firewall::PolicySpec;
use crate::types::{Ipv4Cidr, Ipv6Cidr, MacAddr};

/// Most edges (tenants) on one external network.
pub const MAX_EDGES: usize = 4096;
/// Most floating addresses or routed subnets per edge: inbound lookups scan routed subnets.
pub const MAX_PUBLIC_PER_EDGE: usize = 256;
/// Default and largest per-tenant connection-table size (the operator sets it per edge).
pub const DEFAULT_CONNTRACK_LIMIT: u32 = 65_536;
pub const MAX_CONNTRACK_LIMIT: u32 = 4_194_304;

/// A public address attached to one VM's private address (1:1, translated both ways).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIp {
    pub public: Ipv4Addr,
    pub private: Ipv4Addr,
}

/// The host's external network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Host network interface the switch drives (AF_PACKET, promiscuous).
    pub interface: String,
    /// The MAC the switch answers with on the wire, and sends from.
    pub mac: MacAddr,
    pub subnet4: Ipv4Cidr,
    /// The upstream router's address on the wire.
    pub gateway4: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// One edge per tenant attached to the external network.
    #[serde(default)]
    pub edges: Vec<EdgeConfig>,
}

/// One tenant's edge router.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The tenant (unique per external network).
    pub tenant: String,
    /// Switch network ids whose off-network traffic goes through this edge.
    pub networks: Vec<String>,
    /// The edge's address on the external subnet.
    pub outside4: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside6: Option<Ipv6Addr>,
    /// Floating IPv4 addresses (on the external subnet, answered on the wire).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floating4: Vec<Ipv4Addr>,
    /// Public subnets the upstream router routes to `outside4`/`outside6`, untranslated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routed4: Vec<Ipv4Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routed6: Vec<Ipv6Cidr>,
    /// Which VM each floating address is attached to (its `public` is one of `floating4`;
    /// a floating address attached to nobody is answered on the wire and reaches no VM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached4: Vec<FloatingIp>,
    /// Private IPv4 subnets (of this tenant's networks) whose VMs without a floating
    /// address go out through source NAT on `outside4`. Other private sources leave
    /// untranslated (routed public subnets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snat4: Vec<Ipv4Cidr>,
    /// The tenant's firewall rules (validated by the switch with `hostel-firewall`).
    #[serde(default)]
    pub policy: PolicySpec,
    /// Connections the tenant's firewall tracks at most (operator-set; allocated when the
    /// edge first appears: a change takes effect when the switch restarts).
    #[serde(default = "default_conntrack_limit")]
    pub conntrack_limit: u32,
    /// The tenant's security appliances: per network (one of `networks`), the VM port that
    /// all of that network's traffic to and from the outside goes through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub appliances: Vec<ApplianceConfig>,
}

/// A network's security appliance: a bump in the wire between the network and the edge.
/// Frames the network's other ports send towards the edge go to the appliance's port
/// instead (addressed to its MAC), what the appliance sends towards the edge goes on to
/// it, and what comes in from the edge for the network goes to the appliance, which routes
/// it on to the VM. The switch tells the directions apart by the sending port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// The network (one of the edge's `networks`).
    pub network: String,
    /// The appliance's port, on that network. `None`: one was designated but its NIC is
    /// gone, so the network's outside traffic stops (fail closed).
    #[serde(default)]
    pub port: Option<String>,
}

fn default_conntrack_limit() -> u32 {
    DEFAULT_CONNTRACK_LIMIT
}

fn overlaps4(a: &Ipv4Cidr, b: &Ipv4Cidr) -> bool {
    a.contains(b.addr) || b.contains(a.addr)
}

fn overlaps6(a: &Ipv6Cidr, b: &Ipv6Cidr) -> bool {
    a.contains(b.addr) || b.contains(a.addr)
}

impl ExternalConfig {
    /// Checks everything that needs no other part of the configuration: addresses inside
    /// the external subnet, no address or subnet held twice, sizes bounded. Which networks
    /// exist is checked when the switch builds its tables.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: String, why: &str| ConfigError::External {
            field,
            reason: why.to_string(),
        };
        if self.interface.is_empty() || self.interface.len() >= 16 || self.interface.contains('/') {
            return Err(bad("interface".into(), "must be 1..=15 bytes, no '/'"));
        }
        if self.mac.is_multicast() || self.mac == MacAddr::ZERO {
            return Err(bad("mac".into(), "must be a unicast address"));
        }
        if self.subnet4.prefix > 30 {
            return Err(bad("subnet4".into(), "must be /30 or wider"));
        }
        let host4 = |ip: Ipv4Addr| {
            self.subnet4.contains(ip) && ip != self.subnet4.broadcast() && {
                let net = u32::from(self.subnet4.addr) & u32::from(self.subnet4.mask());
                u32::from(ip) != net
            }
        };
        if !host4(self.gateway4) {
            return Err(bad("gateway4".into(), "must be a host address in subnet4"));
        }
        match (self.subnet6, self.gateway6) {
            (Some(s), Some(g)) if !s.contains(g) => {
                return Err(bad("gateway6".into(), "outside subnet6"))
            }
            (None, Some(_)) => return Err(bad("gateway6".into(), "given without subnet6")),
            _ => {}
        }
        if self.edges.len() > MAX_EDGES {
            return Err(bad("edges".into(), "too many edges"));
        }
        let mut tenants = std::collections::HashSet::new();
        let mut networks = std::collections::HashSet::new();
        let mut wire4 = std::collections::HashSet::new();
        let mut wire6 = std::collections::HashSet::new();
        wire4.insert(self.gateway4);
        if let Some(g) = self.gateway6 {
            wire6.insert(g);
        }
        let mut routed4: Vec<Ipv4Cidr> = Vec::new();
        let mut routed6: Vec<Ipv6Cidr> = Vec::new();
        for (i, e) in self.edges.iter().enumerate() {
            let f = |name: &str| format!("edges[{i}].{name}");
            if e.tenant.is_empty() || !tenants.insert(e.tenant.as_str()) {
                return Err(bad(f("tenant"), "empty or used by another edge"));
            }
            if e.networks.is_empty() {
                return Err(bad(f("networks"), "an edge needs at least one network"));
            }
            for n in &e.networks {
                if !networks.insert(n.as_str()) {
                    return Err(bad(f("networks"), "network attached to two edges"));
                }
            }
            if !host4(e.outside4) {
                return Err(bad(f("outside4"), "must be a host address in subnet4"));
            }
            if e.floating4.len() > MAX_PUBLIC_PER_EDGE
                || e.routed4.len() > MAX_PUBLIC_PER_EDGE
                || e.routed6.len() > MAX_PUBLIC_PER_EDGE
            {
                return Err(bad(f("floating4"), "too many public addresses"));
            }
            if !wire4.insert(e.outside4) {
                return Err(bad(f("outside4"), "address already in use on the wire"));
            }
            for ip in &e.floating4 {
                if !host4(*ip) {
                    return Err(bad(f("floating4"), "must be host addresses in subnet4"));
                }
                if !wire4.insert(*ip) {
                    return Err(bad(f("floating4"), "address already in use on the wire"));
                }
            }
            if let Some(o) = e.outside6 {
                match self.subnet6 {
                    Some(s) if s.contains(o) => {}
                    _ => return Err(bad(f("outside6"), "must be inside subnet6")),
                }
                if !wire6.insert(o) {
                    return Err(bad(f("outside6"), "address already in use on the wire"));
                }
            }
            for r in &e.routed4 {
                if overlaps4(r, &self.subnet4) || routed4.iter().any(|o| overlaps4(o, r)) {
                    return Err(bad(f("routed4"), "overlaps the external or another subnet"));
                }
                routed4.push(*r);
            }
            for (j, a) in e.attached4.iter().enumerate() {
                if !e.floating4.contains(&a.public) {
                    return Err(bad(
                        f(&format!("attached4[{j}].public")),
                        "not one of this edge's floating4",
                    ));
                }
            }
            if e.attached4.len() > MAX_PUBLIC_PER_EDGE || e.snat4.len() > MAX_PUBLIC_PER_EDGE {
                return Err(bad(f("attached4"), "too many entries"));
            }
            if e.conntrack_limit == 0 || e.conntrack_limit > MAX_CONNTRACK_LIMIT {
                return Err(bad(f("conntrack_limit"), "must be 1..=4194304"));
            }
            if !e.routed6.is_empty() && e.outside6.is_none() {
                return Err(bad(f("routed6"), "needs outside6"));
            }
            for r in &e.routed6 {
                let on_wire = self.subnet6.is_some_and(|s| overlaps6(r, &s));
                if on_wire || routed6.iter().any(|o| overlaps6(o, r)) {
                    return Err(bad(f("routed6"), "overlaps the external or another prefix"));
                }
                routed6.push(*r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext() -> ExternalConfig {
        serde_json::from_str(
            r#"{"interface":"eth1","mac":"02:00:5e:00:00:01",
                "subnet4":"203.0.113.0/24","gateway4":"203.0.113.1",
                "subnet6":"2001:db8:1::/64","gateway6":"2001:db8:1::1",
                "edges":[{"tenant":"t1","networks":["t1-a"],"outside4":"203.0.113.10",
                          "outside6":"2001:db8:1::10","floating4":["203.0.113.11"],
                          "routed4":["192.0.2.0/28"],"routed6":["2001:db8:2::/56"]},
                         {"tenant":"t2","networks":["t2-a","t2-b"],"outside4":"203.0.113.20"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn parses_round_trips_and_validates() {
        let e = ext();
        e.validate().unwrap();
        let back: ExternalConfig =
            serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        let unknown = r#"{"interface":"eth1","mac":"02:00:5e:00:00:01","subnet4":"203.0.113.0/24",
            "gateway4":"203.0.113.1","gatway6":"::1"}"#;
        assert!(serde_json::from_str::<ExternalConfig>(unknown).is_err());
    }

    #[test]
    fn refusals_name_the_field() {
        let field_of = |e: &ExternalConfig| match e.validate() {
            Err(ConfigError::External { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let mut e = ext();
        e.interface = "a-name-longer-than-15".into();
        assert_eq!(field_of(&e), "interface");
        let mut e = ext();
        e.gateway4 = "198.51.100.1".parse().unwrap();
        assert_eq!(field_of(&e), "gateway4");
        let mut e = ext();
        e.gateway4 = "203.0.113.255".parse().unwrap();
        assert_eq!(field_of(&e), "gateway4");
        let mut e = ext();
        e.mac = MacAddr::BROADCAST;
        assert_eq!(field_of(&e), "mac");
        let mut e = ext();
        e.edges[1].outside4 = e.edges[0].floating4[0];
        assert_eq!(field_of(&e), "edges[1].outside4");
        let mut e = ext();
        e.edges[1].outside4 = e.gateway4;
        assert_eq!(field_of(&e), "edges[1].outside4");
        let mut e = ext();
        e.edges[1].floating4 = vec![e.edges[0].outside4];
        assert_eq!(field_of(&e), "edges[1].floating4");
        let mut e = ext();
        e.edges[1].tenant = "t1".into();
        assert_eq!(field_of(&e), "edges[1].tenant");
        let mut e = ext();
        e.edges[1].networks.push("t1-a".into());
        assert_eq!(field_of(&e), "edges[1].networks");
        let mut e = ext();
        e.edges[1].routed4 = vec!["192.0.2.8/29".parse().unwrap()];
        assert_eq!(field_of(&e), "edges[1].routed4");
        let mut e = ext();
        e.edges[1].routed4 = vec!["203.0.113.128/25".parse().unwrap()];
        assert_eq!(field_of(&e), "edges[1].routed4");
        let mut e = ext();
        e.edges[1].routed6 = vec!["2001:db8:3::/64".parse().unwrap()];
        assert_eq!(field_of(&e), "edges[1].routed6");
        let mut e = ext();
        e.edges[0].outside6 = Some("2001:db8:9::1".parse().unwrap());
        assert_eq!(field_of(&e), "edges[0].outside6");
        let mut e = ext();
        e.edges[0].networks.clear();
        assert_eq!(field_of(&e), "edges[0].networks");
        let mut e = ext();
        e.edges[1].attached4 = vec![FloatingIp {
            public: e.edges[0].floating4[0],
            private: "10.0.0.5".parse().unwrap(),
        }];
        assert_eq!(field_of(&e), "edges[1].attached4[0].public");
        let mut e = ext();
        e.edges[1].conntrack_limit = 0;
        assert_eq!(field_of(&e), "edges[1].conntrack_limit");
    }
}
