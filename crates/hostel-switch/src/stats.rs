//! Live per-port counters. Every frame the switch does not deliver is counted under exactly
//! one [`DropReason`]; the serializable snapshots are in [`hostel_switch_proto::stats`].

use std::sync::atomic::{AtomicU64, Ordering};

pub use hostel_switch_proto::stats::{DropReason, PortStatus, StatsSnapshot, SwitchStats};

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

/// The drop reason for a chain the virtqueue layer refused: too long for a frame, or broken.
pub fn drop_reason_of(e: hostel_virtq::Error) -> DropReason {
    match e {
        hostel_virtq::Error::TooLong { .. } => DropReason::TooLong,
        hostel_virtq::Error::BadRing => DropReason::DestinationDown,
        _ => DropReason::BadDescriptor,
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
