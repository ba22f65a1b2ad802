//! The firewall's settings, and what it answers and counts.

use crate::conntrack::Timeouts;
use crate::nat::NatError;
use crate::rule::RuleError;
use crate::DropReason;

/// Operator settings of one tenant's firewall.
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections tracked at most (the table is allocated at this size).
    pub conntrack_limit: usize,
    /// Half-open TCP connections at most; above it the oldest is evicted.
    pub max_embryonic: usize,
    /// New half-open TCP connections per second, and the burst above that rate.
    pub syn_rate: u64,
    pub syn_burst: u64,
    pub timeouts: Timeouts,
    pub log_capacity: usize,
    pub log_rate: u64,
    pub log_burst: u64,
    /// Rejects answered per second, and the burst; above it a rejected packet is only dropped.
    pub reject_rate: u64,
    pub reject_burst: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            conntrack_limit: 65_536,
            max_embryonic: 16_384,
            syn_rate: 100_000,
            syn_burst: 10_000,
            timeouts: Timeouts::default(),
            log_capacity: 1024,
            log_rate: 100,
            log_burst: 200,
            reject_rate: 100,
            reject_burst: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Nat(#[from] NatError),
}

/// What to do with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it (possibly rewritten in place).
    Accept,
    Drop(DropReason),
    /// Drop it and send the first `len` bytes of the reply buffer back where it came from.
    Reject {
        len: usize,
    },
}

/// Which part of a connection lookup [`Firewall::prefetch`] warms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The index slot (issue first).
    Slot,
    /// The connection's entry (issue once the slot had time to arrive).
    Entry,
}

/// Packets and bytes a rule (or a default policy) decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    /// Indexed like `DropReason::ALL`.
    pub drops: [u64; DropReason::ALL.len()],
    pub related: u64,
    pub rejects_sent: u64,
    pub rejects_rate_limited: u64,
    pub generation: u64,
}

impl Stats {
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

/// The outcome of installing a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyChange {
    pub generation: u64,
    /// Tracked connections the new policy no longer allows, removed.
    pub cut: usize,
}
