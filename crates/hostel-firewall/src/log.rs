//! Per-rule logging into a bounded ring behind a token bucket, and the bucket itself (also
//! used to rate-limit rejects and new half-open connections).

use std::collections::VecDeque;

use crate::packet::Tuple;
use crate::rule::{Action, Direction};

/// A token bucket refilled from the caller's clock (nanoseconds).
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    /// Tokens per second.
    rate: u64,
    burst: u64,
    /// Tokens scaled by 1e9, so refills of a fraction of a token add up.
    nano_tokens: u64,
    last: u64,
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` banked (starts full).
    pub fn new(rate: u64, burst: u64) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            nano_tokens: burst.saturating_mul(1_000_000_000),
            last: 0,
        }
    }

    pub fn take(&mut self, now: u64) -> bool {
        let cap = self.burst.saturating_mul(1_000_000_000);
        let dt = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        self.nano_tokens = self
            .nano_tokens
            .saturating_add(dt.saturating_mul(self.rate))
            .min(cap);
        if self.nano_tokens >= 1_000_000_000 {
            self.nano_tokens -= 1_000_000_000;
            true
        } else {
            false
        }
    }
}

/// One logged packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub time: u64,
    /// `None`: the direction's default policy decided.
    pub rule_id: Option<u32>,
    pub direction: Direction,
    pub action: Action,
    pub tuple: Tuple,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub written: u64,
    /// Refused by the rate limit.
    pub rate_limited: u64,
    /// Overwritten in the ring before anyone read them.
    pub overwritten: u64,
}

/// The ring: preallocated, the oldest entry goes when full.
pub struct Log {
    ring: VecDeque<LogEntry>,
    cap: usize,
    bucket: TokenBucket,
    pub stats: LogStats,
}

impl Log {
    pub fn new(cap: usize, rate: u64, burst: u64) -> Log {
        let cap = cap.max(1);
        Log {
            ring: VecDeque::with_capacity(cap),
            cap,
            bucket: TokenBucket::new(rate, burst),
            stats: LogStats::default(),
        }
    }

    pub fn record(&mut self, e: LogEntry) {
        if !self.bucket.take(e.time) {
            self.stats.rate_limited += 1;
            return;
        }
        if self.ring.len() == self.cap {
            self.ring.pop_front();
            self.stats.overwritten += 1;
        }
        self.ring.push_back(e);
        self.stats.written += 1;
    }

    /// Takes every entry, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = LogEntry> + '_ {
        self.ring.drain(..)
    }
}
