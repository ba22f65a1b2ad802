//! Request and response bodies of the edge: the external network (operator), public
//! addresses and firewall rules (tenants).
//!
//! Ports, protocols and addresses are text on purpose: the daemon checks them and names the
//! field at fault (`destination_ports[0]`), where a typed schema would only give a
//! deserializer's message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The host's external network (`PUT /v1/external`, operator only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExternalSetupBody {
    /// The host network interface the switch drives itself (AF_PACKET); it must exist.
    #[schema(min_length = 1, max_length = 15)]
    pub interface: String,
    /// The external IPv4 subnet, e.g. "203.0.113.0/24".
    pub subnet: String,
    /// The upstream router's address on it.
    #[schema(format = Ipv4)]
    pub gateway: String,
    /// The external IPv6 prefix, if any.
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    #[schema(format = Ipv6)]
    pub gateway6: Option<String>,
    /// Public IPv4 address pools (CIDRs inside `subnet`): tenants' edge addresses and
    /// floating addresses come from here.
    #[schema(max_items = 64)]
    pub pools: Vec<String>,
    /// Public IPv4 subnets the upstream routes to this host, outside `subnet`: tenants'
    /// networks may take subnets of them as routed (untranslated) networks.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub routed_pools: Vec<String>,
    /// The same for IPv6 (needs `subnet6`: each edge routing IPv6 gets an address there).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub routed_pools6: Vec<String>,
    /// The MAC the switch uses on the wire (default: one derived from the interface name).
    #[serde(default)]
    pub mac: Option<String>,
    /// Connections each tenant's firewall tracks at most (default 65536; a change applies
    /// from the switch's next start).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4_194_304)]
    pub conntrack_limit: Option<u32>,
}

/// A public address someone holds, as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeldAddressView {
    pub address: String,
    pub tenant: String,
    /// `outside` (a tenant edge's own address: source NAT) or `floating`.
    pub kind: String,
    #[serde(default)]
    pub vm: Option<String>,
    #[serde(default)]
    pub nic: Option<u32>,
}

/// One tenant's edge, with its firewall's counters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EdgeView {
    pub tenant: String,
    /// The edge's own address on the external network.
    pub outside: String,
    /// Names of the tenant's networks attached.
    pub networks: Vec<String>,
    /// Tracked connections now, and the table's size.
    pub conntrack: u64,
    pub conntrack_limit: u64,
    pub accepted: u64,
    /// Packets the firewall dropped, by reason.
    pub drops: BTreeMap<String, u64>,
}

/// The external network: set-up, pools and their usage, edges.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExternalView {
    pub interface: String,
    pub mac: String,
    pub subnet: String,
    pub gateway: String,
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub gateway6: Option<String>,
    pub pools: Vec<String>,
    #[serde(default)]
    pub routed_pools: Vec<String>,
    #[serde(default)]
    pub routed_pools6: Vec<String>,
    pub conntrack_limit: u32,
    /// Usable addresses in the pools, and how many are held.
    pub pool_size: u64,
    pub pool_used: u64,
    pub addresses: Vec<HeldAddressView>,
    pub edges: Vec<EdgeView>,
    /// Frames on the wire (the switch's external port), when the switch has it.
    pub wire_rx_packets: u64,
    pub wire_tx_packets: u64,
    pub wire_drops: BTreeMap<String, u64>,
}

/// Attaching a network to the external network (`PUT /v1/networks/{name}/external`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct AttachExternal {
    /// VMs without a floating address reach outside through source NAT on the tenant
    /// edge's address (without it they reach outside only with a floating address).
    #[serde(default)]
    pub snat: bool,
    /// The network's subnet (and its IPv6 prefix, if inside a routed IPv6 pool) is public,
    /// from the operator's routed pools: its VMs are reached and leave untranslated.
    #[serde(default)]
    pub routed: bool,
}

/// `PUT /v1/networks/{name}/appliance`: the tenant's VM (one of its NICs, on this network)
/// that all of the network's traffic to and from the outside goes through.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAppliance {
    /// The VM's name.
    pub vm: String,
    /// Which of its NICs (default 0); it must be on this network.
    #[serde(default)]
    pub nic: u32,
}

/// A network's security appliance and whether outside traffic flows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplianceView {
    /// The appliance VM's name and NIC; absent once that VM was deleted.
    #[serde(default)]
    pub vm: Option<String>,
    #[serde(default)]
    pub nic: Option<u32>,
    /// `up`, or `down: <why>` (the network's outside traffic is stopped: fail closed), or
    /// `inactive: <why>` (the network has no outside to steer).
    pub state: String,
}

/// A network's attachment to the external network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkExternalView {
    pub snat: bool,
    #[serde(default)]
    pub routed: bool,
    /// The tenant edge's own address.
    pub outside: String,
}

/// `POST /v1/addresses`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct AllocateAddress {
    /// A particular free pool address (default: the lowest free one).
    #[serde(default)]
    #[schema(format = Ipv4)]
    pub address: Option<String>,
}

/// `POST /v1/addresses/{address}/attach`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttachAddress {
    /// The VM whose NIC gets the address.
    pub vm: String,
    /// The NIC's index (default 0); its network must be attached to the external network.
    #[serde(default)]
    pub nic: u32,
}

/// A tenant's public address.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddressView {
    pub address: String,
    /// `outside` (the edge's own: source NAT) or `floating`.
    pub kind: String,
    #[serde(default)]
    pub vm: Option<String>,
    #[serde(default)]
    pub nic: Option<u32>,
    /// The private address it is translated to.
    #[serde(default)]
    pub private: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleDirection {
    /// From outside towards the tenant's VMs.
    Ingress,
    /// From the tenant's VMs outwards.
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Allow,
    Drop,
    /// Drop and answer: a TCP RST, or an ICMP unreachable.
    Reject,
}

/// A firewall rule (`POST /v1/firewall/rules`). Rules of one direction are tried lowest
/// `priority` first, then lowest id; the first that matches decides; no match: the
/// direction's default. Stateful unless `stateless`: replies and related ICMP errors pass.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FirewallRuleBody {
    /// Default 1000.
    #[serde(default)]
    pub priority: Option<u32>,
    pub direction: RuleDirection,
    pub action: RuleAction,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `any` (default) or a number 0-255.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Remote or local addresses: CIDRs or addresses (IPv4 and IPv6), `set:NAME`,
    /// `group:NAME`. Empty: any. Rules see private (inside) addresses.
    #[serde(default)]
    pub source: Vec<String>,
    #[serde(default)]
    pub destination: Vec<String>,
    /// Ports or ranges: "22", "8000-8080" (tcp and udp only).
    #[serde(default)]
    pub source_ports: Vec<String>,
    #[serde(default)]
    pub destination_ports: Vec<String>,
    /// icmp and icmpv6 only.
    #[serde(default)]
    pub icmp_type: Option<u32>,
    #[serde(default)]
    pub icmp_code: Option<u32>,
    /// Attach the rule to one VM NIC (with `nic`, default 0) instead of the whole edge.
    #[serde(default)]
    pub vm: Option<String>,
    #[serde(default)]
    pub nic: Option<u32>,
    #[serde(default)]
    pub stateless: bool,
    /// Log matches (rate-limited; `GET /v1/firewall/log`).
    #[serde(default)]
    pub log: bool,
}

/// A rule with its id and hit counters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FirewallRuleView {
    pub id: u32,
    pub priority: u32,
    pub direction: RuleDirection,
    pub action: RuleAction,
    pub protocol: String,
    pub source: Vec<String>,
    pub destination: Vec<String>,
    pub source_ports: Vec<String>,
    pub destination_ports: Vec<String>,
    #[serde(default)]
    pub icmp_type: Option<u32>,
    #[serde(default)]
    pub icmp_code: Option<u32>,
    #[serde(default)]
    pub vm: Option<String>,
    #[serde(default)]
    pub nic: Option<u32>,
    pub stateless: bool,
    pub log: bool,
    /// Packets and bytes that matched since the switch started.
    pub hits_packets: u64,
    pub hits_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    Allow,
    Drop,
    Reject,
}

/// `PUT /v1/firewall/defaults`: what happens to a packet no rule matches.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct FirewallDefaults {
    /// Default: drop.
    #[serde(default)]
    pub ingress: Option<DefaultPolicy>,
    /// Default: allow.
    #[serde(default)]
    pub egress: Option<DefaultPolicy>,
}

/// `PUT /v1/firewall/sets/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddressSetBody {
    /// CIDRs or addresses, IPv4 and IPv6.
    #[schema(max_items = 1024)]
    pub addresses: Vec<String>,
}

/// `PUT /v1/firewall/groups/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmGroupBody {
    /// Names of the tenant's VMs; the group stands for all their NICs' addresses.
    #[schema(max_items = 1024)]
    pub vms: Vec<String>,
}

/// A tenant's firewall.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FirewallView {
    pub default_ingress: DefaultPolicy,
    pub default_egress: DefaultPolicy,
    pub rules: Vec<FirewallRuleView>,
    pub sets: BTreeMap<String, Vec<String>>,
    pub groups: BTreeMap<String, Vec<String>>,
    /// Packets that met no rule, by direction and default policy.
    pub default_hits: BTreeMap<String, u64>,
    /// Tracked connections now, and the table's size (0 while no network is attached).
    pub conntrack: u64,
    pub conntrack_limit: u64,
    /// Packets dropped, by reason.
    pub drops: BTreeMap<String, u64>,
}

/// One logged packet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FirewallLogView {
    /// Switch-monotonic nanoseconds.
    pub time_ns: u64,
    /// The rule that matched (none: the default policy).
    #[serde(default)]
    pub rule: Option<u32>,
    pub direction: RuleDirection,
    pub action: RuleAction,
    pub protocol: u8,
    pub source: String,
    pub destination: String,
    pub source_port: u16,
    pub destination_port: u16,
    pub length: u64,
}
