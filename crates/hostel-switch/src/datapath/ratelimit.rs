//! Storm control: token buckets on what each port sends ([`PortLimits`]).
//!
//! The buckets live in the port's [`PortRuntime`](crate::datapath::port::PortRuntime), so a
//! guest that reconnects (or a limit that is changed) does not get a fresh burst. Only the
//! port's own TX worker touches them: the TX path takes the lock once per queue event, reads
//! the monotonic clock once per batch (`Instant::now` is a vDSO call, not a system call) and
//! then spends a few compares per frame. A port without limits skips all of it.
//!
//! Arithmetic is integer only, in nanotokens (see [`Bucket`]): fractions of a token carry
//! from batch to batch, and over any interval `T` at most `burst + rate × T` packets pass
//! (bytes: plus one frame of debt).

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use crate::config::{PortLimits, RateLimit};
use crate::datapath::pipeline::Decision;
use crate::stats::DropReason;

/// Nanoseconds on the monotonic clock since the first call in this process.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Fixed point: a bucket counts nanotokens, so a rate in tokens per second is also the
/// nanotokens earned per nanosecond and a refill is one multiplication, with no division and
/// no fraction of a token lost between batches.
const SCALE: i128 = 1_000_000_000;

/// One token bucket. A frame passes while the bucket holds at least one token and then
/// takes its whole cost, so the level may go negative: frames larger than the burst still
/// pass, at the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    rate: i128,
    burst: i128,
    tokens: i128,
    /// The instant up to which the rate has been credited.
    last: u64,
}

impl Bucket {
    /// A full bucket. With `rate`, `burst` and costs below 2^64, no sum or product here can
    /// overflow an i128.
    pub fn new(rate: u64, burst: u64, now: u64) -> Bucket {
        let burst = i128::from(burst) * SCALE;
        Bucket {
            rate: i128::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub fn refill(&mut self, now: u64) {
        if now <= self.last {
            return;
        }
        let earned = i128::from(now - self.last) * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
    }

    #[inline]
    pub fn ready(&self) -> bool {
        self.tokens >= SCALE
    }

    #[inline]
    pub fn take(&mut self, cost: u64) {
        self.tokens -= i128::from(cost) * SCALE;
    }

    /// Whether frames costing `cost` in total, each costing at least one token, would all
    /// pass one after the other: before each, at least its own cost (so one token) is left.
    fn can_pay(&self, cost: u64) -> bool {
        self.tokens >= i128::from(cost) * SCALE
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

    /// Whole tokens held (negative while in debt).
    pub fn tokens(&self) -> i64 {
        i64::try_from(self.tokens.div_euclid(SCALE)).unwrap_or(i64::MIN)
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
        self.pay(1, len);
    }

    /// Whether `packets` frames of `bytes` in total would all pass one after the other.
    fn can_pay(&self, packets: u64, bytes: u64) -> bool {
        let ok = |b: &Option<Bucket>, cost: u64| b.map_or(true, |b| b.can_pay(cost));
        ok(&self.packets, packets) && ok(&self.bytes, bytes)
    }

    fn pay(&mut self, packets: u64, bytes: u64) {
        if let Some(b) = &mut self.packets {
            b.take(packets);
        }
        if let Some(b) = &mut self.bytes {
            b.take(bytes);
        }
    }
}

/// What one batch asks of the buckets, per [`Class`].
#[derive(Clone, Copy, Debug, Default)]
struct Demand {
    packets: [u64; 3],
    bytes: [u64; 3],
}

/// Which limits besides `total` a frame is subject to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
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
    fn index(self) -> usize {
        self as usize
    }

    /// The class of a frame with this decision and destination MAC group bit; `None` for
    /// frames the pipeline already dropped (they are counted under their own reason and do
    /// not consume tokens).
    #[inline]
    pub fn of(d: &Decision, group_dst: bool) -> Option<Class> {
        match d {
            Decision::Drop(_) => None,
            Decision::Flood => Some(Class::Flood),
            Decision::Uplink | Decision::Edge => Some(Class::Unknown),
            _ if group_dst => Some(Class::Flood),
            _ => Some(Class::Plain),
        }
    }
}

/// A port's buckets, built from its [`PortLimits`] and following their changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

    /// Charges a whole batch if every bucket it touches can pay for all of it (then no frame
    /// of it would have been refused); otherwise charges nothing.
    fn charge_batch(&mut self, d: &Demand) -> bool {
        let (fl, un) = (Class::Flood.index(), Class::Unknown.index());
        let packets: u64 = d.packets.iter().sum();
        let bytes: u64 = d.bytes.iter().sum();
        let fits = self.total.can_pay(packets, bytes)
            && (d.packets[fl] == 0 || self.flood.can_pay(d.packets[fl], d.bytes[fl]))
            && (d.packets[un] == 0 || self.unknown.can_pay(d.packets[un], d.bytes[un]));
        if fits {
            self.total.pay(packets, bytes);
            self.flood.pay(d.packets[fl], d.bytes[fl]);
            self.unknown.pay(d.packets[un], d.bytes[un]);
        }
        fits
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

/// Storm control for one batch: one clock read, then each frame `view` classifies (frames it
/// returns `None` for, already dropped, cost nothing) is charged or handed to `refuse`.
/// While no bucket is near its limit the batch is charged as a whole, a few additions per
/// frame; otherwise frame by frame, in order.
pub fn police<T>(
    l: &mut Limiter,
    items: &mut [T],
    view: impl Fn(&T) -> Option<(Class, usize)>,
    refuse: impl FnMut(&mut T, DropReason),
) {
    if !items.is_empty() {
        police_at(l, now_ns(), items, view, refuse);
    }
}

/// [`police`] at a given time.
pub fn police_at<T>(
    l: &mut Limiter,
    now: u64,
    items: &mut [T],
    view: impl Fn(&T) -> Option<(Class, usize)>,
    mut refuse: impl FnMut(&mut T, DropReason),
) {
    l.refill(now);
    let mut d = Demand::default();
    for it in items.iter() {
        if let Some((c, len)) = view(it) {
            d.packets[c.index()] += 1;
            d.bytes[c.index()] += len as u64;
        }
    }
    if l.charge_batch(&d) {
        return;
    }
    for it in items.iter_mut() {
        if let Some((c, len)) = view(it) {
            if let Err(r) = l.admit(c, len) {
                refuse(it, r);
            }
        }
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
#[path = "ratelimit_tests.rs"]
mod tests;
