//! Per-port counters. Every frame the switch does not deliver is counted under exactly one
//! [`DropReason`], so "where did my packet go" is answerable from `show stats` alone.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

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
    /// segments, or more than [`hostel_virtq::MAX_CHAIN_DESCS`] descriptors.
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
}

/// Live counters of one port (or of a network's uplink). Updated with relaxed atomics and,
/// on the TX path, once per batch rather than once per frame.
#[derive(Debug)]
pub struct PortStats {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub replies: AtomicU64,
    /// Descriptors this port's rings made the switch read (TX chains it sent, RX chains
    /// deliveries to it walked): the work it caused, added once per batch.
    pub desc_visits: AtomicU64,
    /// Batches of deliveries to this port cut short because its RX ring exceeded the
    /// per-delivery work budget (see [`DropReason::RxWorkBudget`]).
    pub rx_over_budget: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
}

impl From<hostel_virtq::Error> for DropReason {
    /// A chain the virtqueue layer refused: too long for a frame, or broken.
    fn from(e: hostel_virtq::Error) -> DropReason {
        match e {
            hostel_virtq::Error::TooLong { .. } => DropReason::TooLong,
            hostel_virtq::Error::BadRing => DropReason::DestinationDown,
            _ => DropReason::BadDescriptor,
        }
    }
}

impl Default for PortStats {
    fn default() -> Self {
        PortStats {
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            desc_visits: AtomicU64::new(0),
            rx_over_budget: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl PortStats {
    pub fn count_drop(&self, r: DropReason) {
        self.drops[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Ordering::Relaxed)
    }

    pub fn add_rx(&self, packets: u64, bytes: u64) {
        self.rx_packets.fetch_add(packets, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_tx(&self, packets: u64, bytes: u64) {
        self.tx_packets.fetch_add(packets, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reporting (each counter read once).
    pub fn snapshot(&self) -> StatsSnapshot {
        let drops = DropReason::ALL
            .iter()
            .filter_map(|r| {
                let n = self.drops(*r);
                (n > 0).then(|| (r.name().to_string(), n))
            })
            .collect();
        StatsSnapshot {
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            replies: self.replies.load(Ordering::Relaxed),
            desc_visits: self.desc_visits.load(Ordering::Relaxed),
            rx_over_budget: self.rx_over_budget.load(Ordering::Relaxed),
            drops,
        }
    }
}

/// Serializable counters; `drops` lists only non-zero reasons.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the switch answered itself (ARP, NDP, DHCP).
    pub replies: u64,
    /// See [`PortStats::desc_visits`].
    #[serde(default)]
    pub desc_visits: u64,
    /// See [`PortStats::rx_over_budget`].
    #[serde(default)]
    pub rx_over_budget: u64,
    pub drops: std::collections::BTreeMap<String, u64>,
}

impl StatsSnapshot {
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops.get(r.name()).copied().unwrap_or(0)
    }
}
