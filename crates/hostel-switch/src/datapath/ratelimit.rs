//! Storm control: token buckets on what each port sends ([`PortLimits`]).
//!
//! The buckets live in the port's [`PortRuntime`](crate::datapath::port::PortRuntime), so a
//! guest that reconnects (or a limit that is changed) does not get a fresh burst. Only the
//! port's own TX worker touches them: the TX path takes the lock once per queue event, reads
//! the monotonic clock once per batch (`Instant::now` is a vDSO call, not a system call) and
//! then spends a few compares per frame. A port without limits skips all of it.
//!
//! Arithmetic is integer only: a refill credits `elapsed × rate / 10^9` whole tokens and
//! advances the bucket's clock by exactly the time those tokens stand for (rounded up), so
//! the fraction of a token left over carries to the next batch and, over any interval `T`,
//! at most `burst + rate × T` packets pass (bytes: plus one frame of debt).

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use crate::config::{PortLimits, RateLimit};
use crate::datapath::pipeline::Decision;
use crate::stats::DropReason;

const NS_PER_SEC: u128 = 1_000_000_000;

/// Nanoseconds on the monotonic clock since the first call in this process.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One token bucket. `tokens` may go negative: a frame passes while the bucket is not empty
/// and takes its whole cost, so frames larger than the burst still pass, at the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    rate: u64,
    burst: i64,
    tokens: i64,
    /// The instant up to which the rate has been credited.
    last: u64,
}

impl Bucket {
    /// A full bucket. `rate` and `burst` are bounded by [`crate::config::MAX_LIMIT`] after
    /// validation; the clamps only keep the arithmetic total.
    pub fn new(rate: u64, burst: u64, now: u64) -> Bucket {
        let burst = i64::try_from(burst).unwrap_or(i64::MAX);
        Bucket {
            rate: rate.max(1),
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub fn refill(&mut self, now: u64) {
        if now <= self.last {
            return;
        }
        let room = self.burst.saturating_sub(self.tokens);
        if room <= 0 {
            self.last = now;
            return;
        }
        let elapsed = u128::from(now - self.last);
        let earned = elapsed * u128::from(self.rate) / NS_PER_SEC;
        // `room` is positive here, so the conversion cannot fail.
        if earned >= u128::try_from(room).unwrap_or(0) {
            self.tokens = self.burst;
            self.last = now;
            return;
        }
        // earned < room <= i64::MAX, and the time it stands for is at most `elapsed`.
        self.tokens += earned as i64;
        let used = (earned * NS_PER_SEC).div_ceil(u128::from(self.rate));
        self.last += used as u64;
    }

    #[inline]
    pub fn ready(&self) -> bool {
        self.tokens > 0
    }

    #[inline]
    pub fn take(&mut self, cost: u64) {
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(cost).unwrap_or(i64::MAX));
    }

    /// Changes rate and depth but keeps what the bucket holds (capped at the new depth), so
    /// changing a limit never hands out a fresh burst.
    fn reconfigure(&mut self, rate: u64, burst: u64, now: u64) {
        self.refill(now);
        let fresh = Bucket::new(rate, burst, now);
        self.rate = fresh.rate;
        self.burst = fresh.burst;
        self.tokens = self.tokens.min(fresh.burst);
        self.last = now;
    }

    pub fn tokens(&self) -> i64 {
        self.tokens
    }
}

fn rebuild(want: Option<(u64, u64)>, old: Option<Bucket>, now: u64) -> Option<Bucket> {
    let (rate, burst) = want?;
    Some(match old {
        Some(mut b) => {
            b.reconfigure(rate, burst, now);
            b
        }
        None => Bucket::new(rate, burst, now),
    })
}

/// The packet and byte buckets of one traffic class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    pub packets: Option<Bucket>,
    pub bytes: Option<Bucket>,
}

impl Buckets {
    fn configure(&mut self, cfg: &RateLimit, now: u64) {
        self.packets = rebuild(cfg.packets(), self.packets, now);
        self.bytes = rebuild(cfg.bytes(), self.bytes, now);
    }

    fn refill(&mut self, now: u64) {
        for b in [&mut self.packets, &mut self.bytes].into_iter().flatten() {
            b.refill(now);
        }
    }

    #[inline]
    fn ready(&self) -> bool {
        self.packets.map_or(true, |b| b.ready()) && self.bytes.map_or(true, |b| b.ready())
    }

    #[inline]
    fn take(&mut self, len: u64) {
        if let Some(b) = &mut self.packets {
            b.take(1);
        }
        if let Some(b) = &mut self.bytes {
            b.take(len);
        }
    }
}

/// Which limits besides `total` a frame is subject to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Unicast to a port of the network, or a reply the switch builds for a unicast request.
    Plain,
    /// Broadcast or multicast destination, flooded or answered by the switch (ARP, DHCP
    /// discover, neighbour solicitation).
    Flood,
    /// Unicast to an address no port of the network owns: out through the uplink.
    Unknown,
}

impl Class {
    /// The class of a frame with this decision and destination MAC group bit; `None` for
    /// frames the pipeline already dropped (they are counted under their own reason and do
    /// not consume tokens).
    #[inline]
    pub fn of(d: &Decision, group_dst: bool) -> Option<Class> {
        match d {
            Decision::Drop(_) => None,
            Decision::Flood => Some(Class::Flood),
            Decision::Uplink => Some(Class::Unknown),
            _ if group_dst => Some(Class::Flood),
            _ => Some(Class::Plain),
        }
    }
}

/// A port's buckets, built from its [`PortLimits`] and following their changes.
#[derive(Debug, Default)]
pub struct Limiter {
    cfg: PortLimits,
    pub total: Buckets,
    pub flood: Buckets,
    pub unknown: Buckets,
}

impl Limiter {
    /// Adopts `cfg` if it differs from the limits the buckets were built from.
    pub fn configure(&mut self, cfg: &PortLimits, now: impl FnOnce() -> u64) {
        if self.cfg == *cfg {
            return;
        }
        let now = now();
        self.total.configure(&cfg.total, now);
        self.flood.configure(&cfg.flood, now);
        self.unknown.configure(&cfg.unknown, now);
        self.cfg = *cfg;
    }

    /// Credits the time since the last refill; once per batch.
    pub fn refill(&mut self, now: u64) {
        self.total.refill(now);
        self.flood.refill(now);
        self.unknown.refill(now);
    }

    /// Charges one frame of `len` bytes, or says why it must be dropped. A frame is charged
    /// only if every bucket it is subject to has tokens, so a dropped frame costs nothing.
    #[inline]
    pub fn admit(&mut self, class: Class, len: usize) -> Result<(), DropReason> {
        let special = match class {
            Class::Plain => None,
            Class::Flood => Some(&mut self.flood),
            Class::Unknown => Some(&mut self.unknown),
        };
        let len = len as u64;
        match special {
            Some(s) if !s.ready() => return Err(DropReason::StormLimited),
            _ if !self.total.ready() => return Err(DropReason::RateLimited),
            Some(s) => s.take(len),
            None => {}
        }
        self.total.take(len);
        Ok(())
    }
}

/// The [`Limiter`] of one port, shared between its runtime and its TX worker.
#[derive(Debug, Default)]
pub struct Policer {
    limiter: Mutex<Limiter>,
}

impl Policer {
    /// The port's limiter brought up to `cfg`, or `None` (and no lock taken) when the port is
    /// unlimited. Held for one queue event by the port's TX worker, the only user.
    pub fn engage(&self, cfg: &PortLimits) -> Option<MutexGuard<'_, Limiter>> {
        if cfg.is_unlimited() {
            return None;
        }
        let mut l = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        l.configure(cfg, now_ns);
        Some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn limit(pps: u64, burst: u64) -> RateLimit {
        RateLimit {
            packets_per_sec: Some(pps),
            burst_packets: Some(burst),
            ..Default::default()
        }
    }

    /// Sends one frame every `gap` ns for `dur` ns; returns how many passed.
    fn drive(b: &mut Bucket, start: u64, gap: u64, dur: u64) -> u64 {
        let mut passed = 0;
        let mut t = start;
        while t < start + dur {
            b.refill(t);
            if b.ready() {
                b.take(1);
                passed += 1;
            }
            t += gap;
        }
        passed
    }

    #[test]
    fn a_bucket_passes_burst_plus_rate_and_no_more() {
        // 7 packets/s (not a divisor of 10^9, so fractions must carry), burst 3, offered
        // every 1.3 ms for 10 s: 3 + 70 may pass.
        let mut b = Bucket::new(7, 3, 0);
        let passed = drive(&mut b, 0, 1_300_000, 10 * SEC);
        assert!((72..=73).contains(&passed), "{passed}");
        // A long pause refills to the burst, not beyond.
        b.refill(1000 * SEC);
        assert_eq!(b.tokens(), 3);
    }

    #[test]
    fn fractions_of_a_token_are_not_lost_between_refills() {
        // 1000 pps refilled every 0.3 ms (0.3 tokens each time) must still earn 1000/s. The
        // burst is never reached (a full bucket rightly discards what it cannot hold).
        let mut b = Bucket::new(1000, 5, 0);
        b.take(5);
        let passed = drive(&mut b, 1, 300_000, SEC);
        assert!((999..=1001).contains(&passed), "{passed}");
    }

    #[test]
    fn a_byte_bucket_lets_a_big_frame_through_then_repays() {
        let mut b = Bucket::new(1000, 100, 0);
        assert!(b.ready());
        b.take(65_000);
        assert!(!b.ready());
        b.refill(64 * SEC);
        assert!(!b.ready(), "debt repaid too early");
        b.refill(66 * SEC);
        assert!(b.ready());
    }

    #[test]
    fn changing_limits_keeps_the_level_and_never_refills() {
        let mut l = Limiter::default();
        let cfg = PortLimits {
            total: limit(10, 5),
            ..Default::default()
        };
        l.configure(&cfg, || 0);
        for _ in 0..5 {
            l.admit(Class::Plain, 60).unwrap();
        }
        assert_eq!(l.admit(Class::Plain, 60), Err(DropReason::RateLimited));
        let raised = PortLimits {
            total: limit(20, 50),
            ..Default::default()
        };
        l.configure(&raised, || 0);
        assert_eq!(l.admit(Class::Plain, 60), Err(DropReason::RateLimited));
        l.refill(SEC / 10);
        assert_eq!(l.total.packets.map(|b| b.tokens()), Some(2));
    }

    #[test]
    fn storm_buckets_apply_to_their_class_only() {
        let mut l = Limiter::default();
        let cfg = PortLimits {
            total: limit(100, 10),
            flood: limit(1, 2),
            unknown: RateLimit {
                bytes_per_sec: Some(1000),
                burst_bytes: Some(1000),
                ..Default::default()
            },
        };
        l.configure(&cfg, || 0);
        l.admit(Class::Flood, 60).unwrap();
        l.admit(Class::Flood, 60).unwrap();
        assert_eq!(l.admit(Class::Flood, 60), Err(DropReason::StormLimited));
        l.admit(Class::Unknown, 1500).unwrap();
        assert_eq!(l.admit(Class::Unknown, 60), Err(DropReason::StormLimited));
        // Storm drops took nothing from `total`: 3 passed, 7 left.
        for _ in 0..7 {
            l.admit(Class::Plain, 60).unwrap();
        }
        assert_eq!(l.admit(Class::Plain, 60), Err(DropReason::RateLimited));
        assert_eq!(l.flood.packets.map(|b| b.tokens()), Some(0));
    }

    #[test]
    fn classes_follow_the_decision() {
        use crate::datapath::pipeline::LocalReply;
        assert_eq!(Class::of(&Decision::Flood, true), Some(Class::Flood));
        assert_eq!(Class::of(&Decision::Uplink, false), Some(Class::Unknown));
        assert_eq!(Class::of(&Decision::Unicast(1), false), Some(Class::Plain));
        assert_eq!(
            Class::of(&Decision::Local(LocalReply::Dhcp), true),
            Some(Class::Flood)
        );
        assert_eq!(Class::of(&Decision::Drop(DropReason::Hairpin), true), None);
    }
}
