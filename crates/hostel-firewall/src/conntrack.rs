//! A tenant's connection table: a preallocated slab of connections and an open-addressing
//! index holding both directions' tuples, so a lookup, insert or removal allocates nothing and
//! probes at most `MAX_PROBE` slots. Hand-written rather than a `HashMap` because the table
//! needs a hard size, a bounded probe (a flood of colliding tuples costs the sender, not an
//! unbounded loop), eviction of the oldest embryonic connection, and an incremental sweep.
//!
//! The hash is keyed per table from the process's random seed, so a sender cannot precompute
//! colliding tuples across instances.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::nat::PortPools;
use crate::packet::{Tuple, PROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::rule::Direction;
use crate::state::{tcp_next, STATES};
pub use crate::state::{State, Timeouts, SEC};
use crate::tcpwin::Window;
use crate::DropReason;

const NIL: u32 = u32::MAX;
/// Longest probe sequence: the index is kept at most half full, so honest tuples rarely pass 8.
const MAX_PROBE: usize = 64;
/// Slab entries the sweep looks at per packet.
const SWEEP_PER_CALL: usize = 1;

/// The largest table: 2^30 connections (far beyond any host's memory for one tenant).
pub const MAX_LIMIT: usize = 1 << 30;

/// Source NAT of a connection: the inside source was rewritten to this outside address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snat {
    pub inside_addr: u32,
    pub inside_port: u16,
    pub outside_addr: u32,
    pub outside_port: u16,
}

/// A connection as callers see it (a copy out of the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// As the initiator sent it (inside addresses: after floating-IP translation, before SNAT).
    pub orig: Tuple,
    pub direction: Direction,
    pub state: State,
    pub expires: u64,
    pub snat: Option<Snat>,
}

impl Conn {
    pub fn new(
        orig: Tuple,
        direction: Direction,
        state: State,
        expires: u64,
        snat: Option<Snat>,
    ) -> Conn {
        Conn {
            orig,
            direction,
            state,
            expires,
            snat,
        }
    }

    /// As the responder's packets arrive: the original reversed, and with source NAT addressed
    /// to the outside address and port (for ICMP echo both "ports" are the identifier).
    pub fn reply(&self) -> Tuple {
        reply_of(
            &self.orig,
            self.snat.map(|s| (s.outside_addr, s.outside_port)),
        )
    }
}

fn reply_of(orig: &Tuple, snat: Option<(u32, u16)>) -> Tuple {
    let mut r = orig.reversed();
    if let Some((addr, port)) = snat {
        r.dst = u128::from(addr);
        r.dport = port;
        if orig.proto == crate::packet::PROTO_ICMP || orig.proto == crate::packet::PROTO_ICMPV6 {
            r.sport = port;
        }
    }
    r
}

/// A tuple as stored: byte arrays, so it packs without 16-byte alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
struct Packed {
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
    v6: bool,
}

impl Packed {
    fn of(t: &Tuple) -> Packed {
        Packed {
            src: t.src.to_be_bytes(),
            dst: t.dst.to_be_bytes(),
            sport: t.sport,
            dport: t.dport,
            proto: t.proto,
            v6: t.v6,
        }
    }
    fn tuple(&self) -> Tuple {
        Tuple {
            src: u128::from_be_bytes(self.src),
            dst: u128::from_be_bytes(self.dst),
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            v6: self.v6,
        }
    }
}

/// One table entry: the connection in its first cache line, the TCP window in the second, the
/// two an aligned 128-byte pair (the CPU's adjacent-line prefetcher fetches both; one TLB
/// entry), so a lookup touches the index slot and this pair. The reply tuple is not stored:
/// it is the original reversed, plus the SNAT binding.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(128))]
struct Entry {
    orig: Packed,
    state: u8,
    /// Bit 0: egress-initiated; bit 1: live.
    flags: u8,
    /// 0: no source NAT (0.0.0.0 is never an outside address).
    snat_addr: u32,
    snat_port: u16,
    expires: u64,
    emb_prev: u32,
    emb_next: u32,
    /// At offset 64: the second line.
    win: Window,
}

const LIVE: u8 = 2;
const EGRESS: u8 = 1;

impl Entry {
    fn live(&self) -> bool {
        self.flags & LIVE != 0
    }
    fn state(&self) -> State {
        STATES[usize::from(self.state) % STATES.len()]
    }
    fn snat(&self) -> Option<(u32, u16)> {
        (self.snat_addr != 0).then_some((self.snat_addr, self.snat_port))
    }
    fn orig(&self) -> Tuple {
        self.orig.tuple()
    }
    fn reply(&self) -> Tuple {
        reply_of(&self.orig(), self.snat())
    }
    fn view(&self) -> Conn {
        let orig = self.orig();
        Conn {
            orig,
            direction: if self.flags & EGRESS != 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            state: self.state(),
            expires: self.expires,
            snat: self.snat().map(|(a, p)| Snat {
                inside_addr: orig.src as u32,
                inside_port: orig.sport,
                outside_addr: a,
                outside_port: p,
            }),
        }
    }
}

/// Counters of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtStats {
    pub occupancy: usize,
    pub embryonic: usize,
    pub inserts: u64,
    pub expired: u64,
    pub evicted_embryonic: u64,
    pub cut_by_policy: u64,
    pub full: u64,
}

pub struct ConnTrack {
    slab: Vec<Entry>,
    free: Vec<u32>,
    index: Vec<u64>,
    mask: usize,
    /// Secret per table: a sender cannot aim tuples at one probe sequence.
    keys: [u64; 6],
    emb_head: u32,
    emb_tail: u32,
    sweep: usize,
    pub max_embryonic: usize,
    pub timeouts: Timeouts,
    pub stats: CtStats,
    /// Source-NAT ports in use, released with their connection.
    pub ports: PortPools,
}

/// Which of a connection's tuples a packet matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Orig,
    Reply,
}

/// A cache hint: never faults, changes nothing a program can observe.
#[inline(always)]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unused_unsafe)]
    // SAFETY: `_mm_prefetch` only hints the cache and accepts any address; `r` is a live
    // reference anyway. (Newer compilers call it safe; the MSRV needs the block.)
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// A table of `n` default values whose memory the kernel may back with transparent huge
/// pages: a lookup touches up to three random places in tens of megabytes (index slot,
/// entry, TCP window), and with 4 KiB pages each also missed the TLB (a page walk per
/// access, about as costly as the miss itself). Only a hint: without THP it is a plain Vec.
fn huge_vec<T: Clone + Default>(n: usize) -> Vec<T> {
    const HUGE: usize = 2 << 20;
    let mut v: Vec<T> = Vec::with_capacity(n);
    let bytes = n.saturating_mul(std::mem::size_of::<T>());
    if bytes >= 2 * HUGE {
        let start = v.as_mut_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let end = (start + bytes) & !(HUGE - 1);
        if end > first {
            // SAFETY: madvise only changes how the kernel backs [first, end), which lies
            // inside the Vec's own, not yet initialised allocation; it touches no memory.
            unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
        }
    }
    v.resize(n, T::default());
    v
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl ConnTrack {
    /// A table of `limit` connections (at least 1), all memory allocated now.
    pub fn new(limit: usize, max_embryonic: usize, timeouts: Timeouts) -> ConnTrack {
        // Index values are `slab index << 1 | side` plus one in 32 bits.
        let limit = limit.clamp(1, MAX_LIMIT);
        let slots = (limit * 4).next_power_of_two();
        ConnTrack {
            slab: huge_vec(limit),
            free: (0..limit as u32).rev().collect(),
            index: huge_vec(slots),
            mask: slots - 1,
            keys: {
                let seed = RandomState::new().hash_one(0x686f_7374_656cu64);
                // Odd and well mixed, so no key zeroes a multiply.
                std::array::from_fn(|i| {
                    mix(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
                })
            },
            emb_head: NIL,
            emb_tail: NIL,
            sweep: 0,
            max_embryonic,
            timeouts,
            stats: CtStats::default(),
            ports: PortPools::default(),
        }
    }

    pub fn limit(&self) -> usize {
        self.slab.len()
    }

    /// Folded 64×64→128 multiplies of the tuple's words with the table's secret keys (the
    /// construction of wyhash/foldhash): three multiplies where three full `mix` rounds
    /// cost twice as much, computed up to three times per packet (two hints, one lookup).
    #[inline]
    fn hash(&self, t: &Tuple) -> u32 {
        let k = &self.keys;
        let c = (u64::from(t.sport) << 32)
            | (u64::from(t.dport) << 16)
            | (u64::from(t.proto) << 1)
            | u64::from(t.v6);
        let a = fold_mul(t.src as u64 ^ k[0], t.dst as u64 ^ k[1]);
        let b = fold_mul((t.src >> 64) as u64 ^ k[2], (t.dst >> 64) as u64 ^ c ^ k[3]);
        (fold_mul(a ^ k[4], b ^ k[5]) >> 32) as u32
    }

    fn decode(slot: u64) -> (usize, Side) {
        let v = (slot as u32).wrapping_sub(1);
        let side = if v & 1 == 0 { Side::Orig } else { Side::Reply };
        ((v >> 1) as usize, side)
    }

    fn tuple_at(&self, slot: u64) -> Tuple {
        let (idx, side) = Self::decode(slot);
        let e = &self.slab[idx];
        match side {
            Side::Orig => e.orig(),
            Side::Reply => e.reply(),
        }
    }

    fn find_slot(&self, t: &Tuple, h: u32) -> Option<usize> {
        let mut i = h as usize & self.mask;
        for _ in 0..MAX_PROBE {
            let s = self.index[i];
            if s == 0 {
                return None;
            }
            if (s >> 32) as u32 == h && self.tuple_at(s) == *t {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// The connection a tuple belongs to, if live at `now`; an expired one is removed.
    pub fn lookup(&mut self, t: &Tuple, now: u64) -> Option<(usize, Side)> {
        let h = self.hash(t);
        let slot = self.find_slot(t, h)?;
        let (idx, side) = Self::decode(self.index[slot]);
        if self.slab[idx].expires <= now {
            self.stats.expired += 1;
            self.remove(idx);
            return None;
        }
        Some((idx, side))
    }

    /// Asks the CPU to start loading the index slot of `t` (stage one of a batch pipeline).
    pub fn prefetch_slot(&self, t: &Tuple) {
        let h = self.hash(t);
        prefetch(&self.index[h as usize & self.mask]);
    }

    /// Reads the (by now, hopefully, cached) home slot of `t` and starts loading its entry
    /// (stage two). Only the home slot: a hint, not a lookup.
    pub fn prefetch_entry(&self, t: &Tuple) {
        let h = self.hash(t);
        let s = self.index[h as usize & self.mask];
        if s != 0 && (s >> 32) as u32 == h {
            let idx = Self::decode(s).0;
            prefetch(&self.slab[idx]);
            if t.proto == PROTO_TCP {
                prefetch(&self.slab[idx].win);
            }
        }
    }

    /// The TCP sequence window of the connection at `idx`.
    pub fn window(&mut self, idx: usize) -> &mut Window {
        &mut self.slab[idx].win
    }

    /// A copy of the connection at `idx`.
    pub fn get(&self, idx: usize) -> Conn {
        self.slab[idx].view()
    }

    fn index_insert(&mut self, t: &Tuple, val: u32) -> bool {
        let h = self.hash(t);
        let mut i = h as usize & self.mask;
        for _ in 0..MAX_PROBE {
            if self.index[i] == 0 {
                self.index[i] = (u64::from(h) << 32) | u64::from(val + 1);
                return true;
            }
            i = (i + 1) & self.mask;
        }
        false
    }

    fn index_remove(&mut self, t: &Tuple) {
        let h = self.hash(t);
        let Some(mut i) = self.find_slot(t, h) else {
            return;
        };
        // Backward-shift deletion: no tombstones, so probe lengths never grow with churn.
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let s = self.index[j];
            if s == 0 {
                break;
            }
            let home = (s >> 32) as usize & self.mask;
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.index[i] = s;
                i = j;
            }
        }
        self.index[i] = 0;
    }

    /// Whether a new connection could be stored now (after an attempt to free an expired one).
    fn make_room(&mut self, now: u64, embryonic: bool) -> Result<(), DropReason> {
        if !self.free.is_empty() {
            return Ok(());
        }
        // A bounded look for an expired entry.
        for _ in 0..64 {
            self.sweep_one(now);
            if !self.free.is_empty() {
                return Ok(());
            }
        }
        if embryonic && self.emb_head != NIL {
            // A full table of half-open connections: the oldest half-open one goes first.
            self.stats.evicted_embryonic += 1;
            self.remove(self.emb_head as usize);
            return Ok(());
        }
        self.stats.full += 1;
        Err(DropReason::ConntrackFull)
    }

    /// Stores a new connection under both tuples.
    pub fn insert(&mut self, conn: Conn, now: u64) -> Result<usize, DropReason> {
        let emb = conn.state.embryonic();
        if emb && self.max_embryonic == 0 {
            return Err(DropReason::SynFlood);
        }
        let (o, r) = (conn.orig, conn.reply());
        for t in [&o, &r] {
            if self.find_slot(t, self.hash(t)).is_some() {
                return Err(DropReason::ConntrackClash);
            }
        }
        if emb && self.stats.embryonic >= self.max_embryonic && self.emb_head != NIL {
            self.stats.evicted_embryonic += 1;
            self.remove(self.emb_head as usize);
        }
        self.make_room(now, emb)?;
        let Some(idx) = self.free.pop() else {
            return Err(DropReason::ConntrackFull);
        };
        self.slab[idx as usize] = Entry {
            orig: Packed::of(&o),
            state: conn.state as u8,
            flags: LIVE
                | if conn.direction == Direction::Egress {
                    EGRESS
                } else {
                    0
                },
            snat_addr: conn.snat.map_or(0, |s| s.outside_addr),
            snat_port: conn.snat.map_or(0, |s| s.outside_port),
            expires: conn.expires,
            emb_prev: NIL,
            emb_next: NIL,
            win: Window::default(),
        };
        if !self.index_insert(&o, idx << 1) {
            self.slab[idx as usize].flags = 0;
            self.free.push(idx);
            self.stats.full += 1;
            return Err(DropReason::ConntrackFull);
        }
        if !self.index_insert(&r, (idx << 1) | 1) {
            self.index_remove(&o);
            self.slab[idx as usize].flags = 0;
            self.free.push(idx);
            self.stats.full += 1;
            return Err(DropReason::ConntrackFull);
        }
        if emb {
            self.emb_link(idx);
        }
        self.stats.inserts += 1;
        self.stats.occupancy += 1;
        Ok(idx as usize)
    }

    fn emb_link(&mut self, idx: u32) {
        let c = &mut self.slab[idx as usize];
        c.emb_prev = self.emb_tail;
        c.emb_next = NIL;
        if self.emb_tail != NIL {
            self.slab[self.emb_tail as usize].emb_next = idx;
        } else {
            self.emb_head = idx;
        }
        self.emb_tail = idx;
        self.stats.embryonic += 1;
    }

    fn emb_unlink(&mut self, idx: u32) {
        let (p, n) = {
            let c = &self.slab[idx as usize];
            (c.emb_prev, c.emb_next)
        };
        if p != NIL {
            self.slab[p as usize].emb_next = n;
        } else {
            self.emb_head = n;
        }
        if n != NIL {
            self.slab[n as usize].emb_prev = p;
        } else {
            self.emb_tail = p;
        }
        let c = &mut self.slab[idx as usize];
        c.emb_prev = NIL;
        c.emb_next = NIL;
        self.stats.embryonic -= 1;
    }

    /// Removes a connection (releasing its source-NAT port); returns it.
    pub fn remove(&mut self, idx: usize) -> Option<Conn> {
        let e = *self.slab.get(idx)?;
        if !e.live() {
            return None;
        }
        if e.state().embryonic() {
            self.emb_unlink(idx as u32);
        }
        self.index_remove(&e.orig());
        self.index_remove(&e.reply());
        self.slab[idx].flags = 0;
        self.free.push(idx as u32);
        self.stats.occupancy -= 1;
        let c = e.view();
        if let Some(n) = c.snat {
            self.ports
                .release(n.outside_addr, c.orig.proto, n.outside_port);
        }
        Some(c)
    }

    fn sweep_one(&mut self, now: u64) {
        let i = self.sweep;
        self.sweep = (self.sweep + 1) % self.slab.len();
        if self.slab[i].live() && self.slab[i].expires <= now {
            self.stats.expired += 1;
            self.remove(i);
        }
    }

    /// Reclaims a few expired connections: bounded work, called once per packet.
    pub fn tick(&mut self, now: u64) {
        self.sweep(now, SWEEP_PER_CALL);
    }

    /// Looks at the next `n` slab entries and removes the expired ones.
    pub fn sweep(&mut self, now: u64, n: usize) {
        for _ in 0..n.min(self.slab.len()) {
            self.sweep_one(now);
        }
    }

    fn set_state(&mut self, idx: usize, s: State) {
        let was = self.slab[idx].state().embryonic();
        self.slab[idx].state = s as u8;
        match (was, s.embryonic()) {
            (true, false) => self.emb_unlink(idx as u32),
            (false, true) => self.emb_link(idx as u32),
            _ => {}
        }
    }

    /// The state a new connection starts in; `None` if this packet may not open one (a TCP
    /// segment other than a bare SYN).
    pub fn initial_state(proto: u8, tcp_flags: u8) -> Option<State> {
        if proto == PROTO_TCP {
            if tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN {
                Some(State::SynSent)
            } else {
                None
            }
        } else {
            Some(State::Unreplied)
        }
    }

    pub fn initial_expiry(&self, s: State, proto: u8, icmp: bool, now: u64) -> u64 {
        now.saturating_add(self.timeouts.get(s, proto, icmp))
    }

    /// Advances a connection by one packet seen on `side`; refreshes its expiry.
    pub fn update(
        &mut self,
        idx: usize,
        side: Side,
        tcp_flags: u8,
        icmp: bool,
        now: u64,
    ) -> Result<(), DropReason> {
        // Only the state and protocol: no copy of the whole connection per packet.
        let (state, proto) = (self.slab[idx].state(), self.slab[idx].orig.proto);
        let from_orig = side == Side::Orig;
        let next = if proto == PROTO_TCP {
            tcp_next(state, from_orig, tcp_flags)?
        } else if from_orig {
            state
        } else {
            State::Replied
        };
        if next != state {
            self.set_state(idx, next);
        }
        self.slab[idx].expires = now.saturating_add(self.timeouts.get(next, proto, icmp));
        Ok(())
    }

    /// Every live connection's slab index (allocates: for policy changes, not per packet).
    pub fn live(&self) -> Vec<usize> {
        (0..self.slab.len())
            .filter(|&i| self.slab[i].live())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_two_cache_lines_and_states_round_trip() {
        assert_eq!(std::mem::size_of::<Entry>(), 128);
        assert_eq!(std::mem::offset_of!(Entry, win), 64);
        for (i, s) in STATES.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
