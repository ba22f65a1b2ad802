//! The edge: the host's external network (operator set-up and public address pools), the
//! tenant networks attached to it, the public addresses tenants hold, and each tenant's
//! firewall rules.
//!
//! The store keeps what was asked for; `hostel-daemon/src/adapters/networking.rs` renders it
//! into the switch's `ExternalConfig` and one `EdgeConfig` per tenant.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use hostel_switch_proto::firewall::{DefaultAction, RuleSpec};
use hostel_types::{Ipv4Cidr, Ipv6Cidr, MacAddr};
use serde::{Deserialize, Serialize};

use crate::ids::{NetworkId, TenantId, VmId, VmName};
use crate::time::Timestamp;

/// Public address pools per external network, at most.
pub const MAX_POOLS: usize = 64;
/// Default for a tenant's public (floating) address quota.
pub const DEFAULT_MAX_PUBLIC_ADDRESSES: u32 = 2;

/// The host's external network as the operator set it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalSetup {
    /// The host interface the switch drives.
    pub interface: String,
    /// The MAC the switch answers and sends with on the wire.
    pub mac: MacAddr,
    pub subnet4: Ipv4Cidr,
    pub gateway4: Ipv4Addr,
    #[serde(default)]
    pub subnet6: Option<Ipv6Cidr>,
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// Where tenants' public addresses (their edges' own and floating ones) come from;
    /// each inside `subnet4`.
    pub pools: Vec<Ipv4Cidr>,
    /// Public subnets the upstream routes to the host, from which tenants' networks may
    /// take routed (untranslated) subnets: IPv4 and IPv6.
    #[serde(default)]
    pub routed_pools4: Vec<Ipv4Cidr>,
    #[serde(default)]
    pub routed_pools6: Vec<Ipv6Cidr>,
    /// Connections each tenant's firewall tracks at most.
    pub conntrack_limit: u32,
}

impl ExternalSetup {
    /// Every usable address of the pools, in order, without the subnet's network and
    /// broadcast addresses and the gateway.
    pub fn pool_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let net = u32::from(self.subnet4.addr) & u32::from(self.subnet4.mask());
        let bcast = u32::from(self.subnet4.broadcast());
        self.pools.iter().flat_map(move |p| {
            let lo = u32::from(p.addr) & u32::from(p.mask());
            let hi = u32::from(p.broadcast());
            (lo..=hi)
                .filter(move |a| *a != net && *a != bcast && *a != u32::from(self.gateway4))
                .map(Ipv4Addr::from)
        })
    }

    /// The edge's IPv6 address on the external network: the prefix with the edge's IPv4
    /// address as its last 32 bits (unique as that is); `None` without an IPv6 prefix of
    /// /96 or wider.
    pub fn outside6(&self, outside4: Ipv4Addr) -> Option<Ipv6Addr> {
        let p = self.subnet6?;
        if p.prefix > 96 {
            return None;
        }
        let mask = if p.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(p.prefix))
        };
        Some(Ipv6Addr::from(
            (u128::from(p.addr) & mask) | u128::from(u32::from(outside4)),
        ))
    }

    /// Whether `a` is a usable pool address.
    pub fn in_pools(&self, a: Ipv4Addr) -> bool {
        self.pools.iter().any(|p| p.contains(a))
            && a != self.gateway4
            && a != self.subnet4.broadcast()
            && u32::from(a) != u32::from(self.subnet4.addr) & u32::from(self.subnet4.mask())
    }
}

crate::model::word_enum! {
    /// What a public address is for: `outside`, the tenant edge's own address (source
    /// NAT), or `floating`, attached 1:1 to a VM NIC or to nothing.
    AddressKind {
        Outside => "outside",
        Floating => "floating",
    }
}

/// A public address a tenant holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAddress {
    pub address: Ipv4Addr,
    pub tenant: TenantId,
    pub kind: AddressKind,
    /// The VM NIC a floating address is attached to.
    pub attached: Option<(VmId, u32)>,
    pub created_at: Timestamp,
}

/// A tenant network attached to the external network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEdge {
    pub network: NetworkId,
    pub tenant: TenantId,
    /// VMs without a floating address leave through source NAT on the edge's address.
    pub snat: bool,
    /// The network's subnet (and its IPv6 prefix, when inside a routed IPv6 pool) is a
    /// public one the upstream routes to the edge: untranslated.
    pub routed: bool,
}

/// A tenant's firewall as stored: its rules (scope `Nic` names the switch port,
/// `<vm-id>-<index>`), default policies, address sets and VM groups. One document per
/// tenant, replaced whole under a revision check, so a rule change is atomic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallDoc {
    /// Bumped by every write; a write naming an older one is a conflict.
    #[serde(default)]
    pub revision: u64,
    /// The id the next rule gets (ids are never reused, so counters stay with their rule).
    #[serde(default = "first_id")]
    pub next_id: u32,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    #[serde(default = "drop")]
    pub default_ingress: DefaultAction,
    #[serde(default = "allow")]
    pub default_egress: DefaultAction,
    #[serde(default)]
    pub sets: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<VmName>>,
}

fn first_id() -> u32 {
    1
}
fn drop() -> DefaultAction {
    DefaultAction::Drop
}
fn allow() -> DefaultAction {
    DefaultAction::Allow
}

impl Default for FirewallDoc {
    fn default() -> Self {
        FirewallDoc {
            revision: 0,
            next_id: 1,
            rules: Vec::new(),
            default_ingress: DefaultAction::Drop,
            default_egress: DefaultAction::Allow,
            sets: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }
}
