//! What `stats` answers: per-port counter snapshots, with every frame the switch did not
//! deliver counted under exactly one [`DropReason`], so "where did my packet go" is
//! answerable from `show stats` alone. The live (atomic) counters are the switch's own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $v:ident = $s:literal,)*) => {
        /// Why a frame was not delivered.
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($(#[$m])* $v,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            pub const COUNT: usize = DropReason::ALL.len();
            /// Stable snake_case name used in stats output.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$v => $s,)* }
            }
        }
    };
}

drop_reasons! {
    /// Frame shorter than an Ethernet header, or a truncated L3 header.
    Malformed = "malformed",
    /// TX chain had a write-only descriptor, an address outside guest memory, too many
    /// segments, or more than `hostel_virtq::MAX_CHAIN_DESCS` descriptors.
    BadDescriptor = "bad_descriptor",
    /// TX chain shorter than the virtio-net header.
    ShortChain = "short_chain",
    /// Frame longer than a 64 KiB TSO segment plus headers.
    TooLong = "too_long",
    /// Inconsistent virtio-net header (GSO without size, checksum range outside frame).
    BadVnetHeader = "bad_vnet_header",
    /// Source MAC is not the port's MAC.
    SpoofedSrcMac = "spoofed_src_mac",
    /// Source IPv4/IPv6 (or ARP sender) is not assigned to the port.
    SpoofedSrcIp = "spoofed_src_ip",
    /// 802.1Q tagged frames: tenants may not pick VLANs.
    VlanTagged = "vlan_tagged",
    /// EtherType the switch does not forward (neither IPv4, IPv6 nor ARP).
    UnsupportedEthertype = "unsupported_ethertype",
    /// ARP that is neither a request nor a reply, or a request for an unknown address.
    ArpUnanswered = "arp_unanswered",
    /// The port is not (or no longer) in the switch tables.
    UnknownPort = "unknown_port",
    /// No port owns the destination and the network has no uplink.
    NoRoute = "no_route",
    /// The destination port has no connected guest or its RX ring is not ready.
    DestinationDown = "destination_down",
    /// The destination's RX ring had no (or too small) buffers.
    NoRxBuffer = "no_rx_buffer",
    /// Finding room in the destination's RX ring took more descriptor visits than one
    /// delivery may spend (huge, empty or broken chains): the receiver loses the frame, the
    /// sender does not lose its time. The receiver's `rx_over_budget` says who it was.
    RxWorkBudget = "rx_work_budget",
    /// The destination did not negotiate the offload this frame needs (GSO/partial csum).
    OffloadUnsupported = "offload_unsupported",
    /// A frame addressed back to its sender.
    Hairpin = "hairpin",
    /// Writing to or reading from the uplink TAP failed.
    UplinkError = "uplink_error",
    /// A hook stage on the uplink path (firewall, IDS) rejected the frame.
    Filtered = "filtered",
    /// DHCP message the server does not answer (not DISCOVER/REQUEST, or port has no IPv4).
    DhcpIgnored = "dhcp_ignored",
    /// Multicast/broadcast the switch consumed without flooding (e.g. unanswerable NDP).
    NdpUnanswered = "ndp_unanswered",
    /// Source 0.0.0.0 or `::` on anything but DHCP, duplicate-address detection or router
    /// solicitation towards the switch itself.
    UnspecifiedSource = "unspecified_source",
    /// Over the sending port's `limits.total` packet or byte rate.
    RateLimited = "rate_limited",
    /// Over the sending port's broadcast/multicast (`limits.flood`) or unknown-destination
    /// (`limits.unknown`) rate.
    StormLimited = "storm_limited",
    /// The receiver's RX ring was filling up and this sender had already taken its share
    /// (half of what the receiver offered when the batch began), leaving the rest for others.
    RxFairShare = "rx_fair_share",
    /// IPv4 TTL or IPv6 hop limit ran out at a tenant's edge router.
    TtlExceeded = "ttl_exceeded",
    /// The next hop on the external network has no known MAC yet (a request went out).
    NeighborUnresolved = "neighbor_unresolved",
    /// A frame on the external wire not addressed to the switch's external MAC.
    NotForUs = "not_for_us",
    /// A TSO frame an edge cannot pass on whole (IPv6 with extension headers before TCP).
    GsoUnsupported = "gso_unsupported",
    /// Outside traffic of a network whose security appliance is designated but missing (its
    /// NIC gone) or not connected (its VM stopped): the network fails closed.
    ApplianceDown = "appliance_down",
}

/// Serializable counters; `drops` lists only non-zero reasons.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the switch answered itself (ARP, NDP, DHCP).
    pub replies: u64,
    /// Descriptors this port's rings made the switch read (TX chains it sent, RX chains
    /// deliveries to it walked): the work it caused.
    #[serde(default)]
    pub desc_visits: u64,
    /// Batches of deliveries to this port cut short because its RX ring exceeded the
    /// per-delivery work budget (see [`DropReason::RxWorkBudget`]).
    #[serde(default)]
    pub rx_over_budget: u64,
    pub drops: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops.get(r.name()).copied().unwrap_or(0)
    }
}

/// Counters of every port and uplink, keyed by id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchStats {
    pub ports: BTreeMap<String, PortStatus>,
    pub uplinks: BTreeMap<String, StatsSnapshot>,
    /// The external port's counters (frames from and to the wire; drops of wire frames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<StatsSnapshot>,
    /// Per tenant edge: `tx` what went out through it, `rx` what came in through it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub edges: BTreeMap<String, StatsSnapshot>,
    /// Per tenant edge: its firewall's counters (absent for an edge without one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub firewalls: BTreeMap<String, FirewallStats>,
    /// Per tenant: its intrusion detection's counters (absent while detection is off).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ids: BTreeMap<String, crate::ids::IdsStats>,
}

/// One tenant firewall's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FirewallStats {
    /// The installed policy's generation (1 at creation, +1 per rule change).
    pub generation: u64,
    pub accepted: u64,
    /// Drops by reason (`rule`, `default`, `tcp_no_connection`, `conntrack_full`, ...).
    pub drops: BTreeMap<String, u64>,
    pub rejects_sent: u64,
    /// Hits of each rule, and of each direction's default (`rule: null`).
    pub rules: Vec<RuleHits>,
    /// Tracked connections now, and the table's size.
    pub conntrack: usize,
    pub conntrack_limit: usize,
    /// Connections removed by a rule change.
    pub cut_by_policy: u64,
    pub log_written: u64,
    pub log_rate_limited: u64,
}

/// What one rule (or a direction's default, `rule: None`) decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHits {
    /// `ingress` or `egress`.
    pub direction: crate::firewall::Direction,
    pub rule: Option<u32>,
    pub packets: u64,
    pub bytes: u64,
}

/// One firewall log entry (a packet that met a rule with `log`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallLogEntry {
    /// The switch's monotonic clock, nanoseconds.
    pub time_ns: u64,
    pub rule: Option<u32>,
    pub direction: crate::firewall::Direction,
    pub action: crate::firewall::Action,
    pub protocol: u8,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub len: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    pub network: String,
    pub connected: bool,
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}
