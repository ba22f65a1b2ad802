//! The per-packet pipeline of one tenant's firewall.
//!
//! For a datagram crossing the edge in `direction`:
//! 1. parse (malformed → drop); a non-first fragment passes only if its first fragment passed
//!    (a small table keyed by addresses, protocol and fragment id, which also carries the
//!    translation to apply) — no reassembly, so fragments arriving before their first are lost;
//! 2. ingress to a floating IP: the destination becomes the VM's private address (rules and
//!    connections always see inside addresses);
//! 3. an ICMP error quoting a tracked connection's packet passes (related), translated;
//! 4. a packet of a tracked connection (in the right direction) passes after a TCP state check
//!    and, for TCP, a sequence-window check (`tcpwin`: an out-of-window RST or segment is
//!    dropped and changes nothing);
//! 5. otherwise the first matching rule decides (default policy if none); an allowed stateful
//!    packet that may open a connection (a bare SYN for TCP) is tracked, with source NAT for a
//!    VM of an SNAT network without a floating IP; stateless rules track nothing;
//! 6. egress from a VM with a floating IP: the source becomes the public address.
//!
//! The buffer is only written when the packet passes, so a reject answers the datagram as it
//! arrived.

use crate::classify::{Compiled, Key};
use crate::conntrack::{Conn, ConnTrack, CtStats, Side, Snat, State};
use crate::log::{Log, LogEntry, LogStats, TokenBucket};
use crate::nat::{self, Nat, NatConfig, Rewrite};
use crate::packet::{
    self, Frag, IcmpKind, Packet, Tuple, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK,
    TCP_SYN,
};
use crate::reject;
use crate::rule::{Action, DefaultAction, Direction, PolicySpec, Validate};
use crate::tcpwin::{self, Window};
use crate::types::{Config, FirewallError, PolicyChange, RuleStats, Stage, Stats, Verdict};
use crate::DropReason;

const FRAG_SLOTS: usize = 1024;
/// Connections looked at for expiry when source-NAT ports run out.
const SNAT_SWEEP: usize = 256;
const FRAG_TTL: u64 = 30 * crate::conntrack::SEC;

#[derive(Clone, Copy, Default)]
struct FragEntry {
    tuple: Tuple,
    id: u32,
    expires: u64,
    rw: Rewrite,
}

/// One tenant's firewall. Not shared between threads: the caller serialises a tenant's packets.
pub struct Firewall {
    compiled: Compiled,
    generation: u64,
    rule_stats: [Vec<RuleStats>; 2],
    default_stats: [RuleStats; 2],
    nat: Nat,
    ct: ConnTrack,
    frags: Vec<FragEntry>,
    log: Log,
    reject_bucket: TokenBucket,
    syn_bucket: TokenBucket,
    stats: Stats,
}

fn di(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn is_icmp(t: &Tuple) -> bool {
    (!t.v6 && t.proto == PROTO_ICMP) || (t.v6 && t.proto == PROTO_ICMPV6)
}

/// The ports rules see for a tracked connection's first packet (ICMP: echo request, code 0).
fn match_ports(t: &Tuple) -> (u16, u16) {
    if is_icmp(t) {
        (if t.v6 { 128 } else { 8 }, 0)
    } else if matches!(t.proto, PROTO_TCP | PROTO_UDP) {
        (t.sport, t.dport)
    } else {
        (0, 0)
    }
}

impl Firewall {
    pub fn new(
        config: Config,
        policy: &PolicySpec,
        nat: &NatConfig,
    ) -> Result<Firewall, FirewallError> {
        let compiled = Compiled::new(&policy.validate()?);
        let n = Nat::new(nat)?;
        let mut ct = ConnTrack::new(
            config.conntrack_limit,
            config.max_embryonic,
            config.timeouts,
        );
        ct.ports.configure(n.outside_addrs(), nat.snat_ports);
        Ok(Firewall {
            rule_stats: [
                vec![RuleStats::default(); compiled.ingress.rules.len()],
                vec![RuleStats::default(); compiled.egress.rules.len()],
            ],
            compiled,
            generation: 1,
            default_stats: Default::default(),
            nat: n,
            ct,
            frags: vec![FragEntry::default(); FRAG_SLOTS],
            log: Log::new(config.log_capacity, config.log_rate, config.log_burst),
            reject_bucket: TokenBucket::new(config.reject_rate, config.reject_burst),
            syn_bucket: TokenBucket::new(config.syn_rate, config.syn_burst),
            stats: Stats {
                generation: 1,
                ..Stats::default()
            },
        })
    }

    /// Validates, compiles and installs a new policy (see [`Firewall::install`]).
    pub fn set_policy(&mut self, spec: &PolicySpec) -> Result<PolicyChange, FirewallError> {
        let compiled = Compiled::new(&spec.validate()?);
        Ok(self.install(compiled))
    }

    /// Swaps in a compiled policy between two packets: every packet is judged wholly by the
    /// old or wholly by the new one. Each tracked connection is then judged again as its first
    /// packet would be now; one the new policy does not allow is removed at once, so its next
    /// packet meets the new rules as an untracked one (for TCP: dropped, not being a SYN; the
    /// firewall sends no RST). Counters of rules that keep their id carry over.
    pub fn install(&mut self, compiled: Compiled) -> PolicyChange {
        for d in [Direction::Ingress, Direction::Egress] {
            let old = self.compiled.dir(d);
            let new = compiled.dir(d);
            let stats: Vec<RuleStats> = new
                .rules
                .iter()
                .map(|r| {
                    old.rules
                        .iter()
                        .position(|o| o.id == r.id)
                        .map(|i| self.rule_stats[di(d)][i])
                        .unwrap_or_default()
                })
                .collect();
            self.rule_stats[di(d)] = stats;
        }
        self.compiled = compiled;
        self.generation += 1;
        self.stats.generation = self.generation;
        let mut cut = 0;
        for idx in self.ct.live() {
            let c = self.ct.get(idx);
            let (sport, dport) = match_ports(&c.orig);
            let local = match c.direction {
                Direction::Ingress => c.orig.dst,
                Direction::Egress => c.orig.src,
            };
            let key = Key {
                v6: c.orig.v6,
                proto: c.orig.proto,
                src: c.orig.src,
                dst: c.orig.dst,
                local,
                sport,
                dport,
            };
            let cls = self.compiled.dir(c.direction);
            let allowed = match cls.first_match(&key) {
                Some(i) => cls.rules[i].action == Action::Allow,
                None => cls.default == DefaultAction::Allow,
            };
            if !allowed {
                self.ct.remove(idx);
                self.ct.stats.cut_by_policy += 1;
                cut += 1;
            }
        }
        PolicyChange {
            generation: self.generation,
            cut,
        }
    }

    /// Installs a new translation set-up. Connections whose source-NAT address is gone are
    /// removed; the others keep their ports.
    pub fn set_nat(&mut self, config: &NatConfig) -> Result<usize, FirewallError> {
        let n = Nat::new(config)?;
        self.ct
            .ports
            .configure(n.outside_addrs(), config.snat_ports);
        let mut cut = 0;
        for idx in self.ct.live() {
            if let Some(s) = self.ct.get(idx).snat {
                if !n.outside_addrs().any(|a| a == s.outside_addr) {
                    self.ct.remove(idx);
                    cut += 1;
                }
            }
        }
        self.nat = n;
        Ok(cut)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn conntrack(&self) -> &CtStats {
        &self.ct.stats
    }

    pub fn conntrack_limit(&self) -> usize {
        self.ct.limit()
    }

    pub fn log_stats(&self) -> &LogStats {
        &self.log.stats
    }

    /// Takes the log entries written since the last call, oldest first.
    pub fn drain_log(&mut self) -> impl Iterator<Item = LogEntry> + '_ {
        self.log.drain()
    }

    /// Per-rule counters by rule id, and the default policy's (`None`).
    pub fn rule_stats(&self, d: Direction) -> Vec<(Option<u32>, RuleStats)> {
        let cls = self.compiled.dir(d);
        cls.rules
            .iter()
            .zip(&self.rule_stats[di(d)])
            .map(|(r, s)| (Some(r.id), *s))
            .chain(std::iter::once((None, self.default_stats[di(d)])))
            .collect()
    }

    /// A cache hint for batches (the switch handles frames 64 at a time): call it with
    /// `Stage::Slot` a few packets ahead of [`Firewall::process`] and with `Stage::Entry` a
    /// couple ahead, so a connection lookup's two cache misses overlap other packets' work.
    /// Reads only the fixed IPv4 header fields of plain TCP/UDP (anything else: no hint);
    /// verdicts are the same without it.
    #[inline]
    pub fn prefetch(&self, pkt: &[u8], stage: Stage) {
        let Some(t) = quick_tuple(pkt) else { return };
        match stage {
            Stage::Slot => self.ct.prefetch_slot(&t),
            Stage::Entry => self.ct.prefetch_entry(&t),
        }
    }

    /// Judges one datagram crossing the edge; rewrites it in place if it passes translated;
    /// a reject's answer goes into `reply`. `now`: monotonic nanoseconds.
    pub fn process(
        &mut self,
        direction: Direction,
        pkt: &mut [u8],
        now: u64,
        reply: &mut [u8],
    ) -> Verdict {
        let v = self.judge(direction, pkt, now, reply);
        match v {
            Verdict::Accept => self.stats.accepted += 1,
            Verdict::Drop(r) => self.stats.drops[r as usize] += 1,
            Verdict::Reject { .. } => self.stats.drops[DropReason::Reject as usize] += 1,
        }
        v
    }

    fn judge(&mut self, dir: Direction, pkt: &mut [u8], now: u64, reply: &mut [u8]) -> Verdict {
        self.ct.tick(now);
        let mut p = match packet::parse(pkt) {
            Ok(p) => p,
            Err(r) => return Verdict::Drop(r),
        };
        let received = p.tuple;
        if let Frag::Later { id } = p.frag {
            return self.later_fragment(pkt, &p, id, now);
        }
        let mut rw = Rewrite::default();
        if dir == Direction::Ingress && !p.tuple.v6 {
            if let Some(private) = self.nat.floating_private(p.tuple.dst as u32) {
                p.tuple.dst = u128::from(private);
                let port = match &mut p.inner {
                    Some(inner) => {
                        inner.tuple.src = u128::from(private);
                        inner.tuple.sport
                    }
                    None => p.tuple.dport,
                };
                rw.dst = Some((private, port));
            }
        }
        if let Some(inner) = p.inner {
            if let Some((idx, side)) = self.ct.lookup(&inner.tuple.reversed(), now) {
                let c = self.ct.get(idx);
                match (dir, side, c.snat) {
                    (Direction::Ingress, Side::Reply, Some(s)) => {
                        rw.dst = Some((s.inside_addr, s.inside_port))
                    }
                    (Direction::Egress, Side::Orig, Some(s)) => {
                        rw.src = Some((s.outside_addr, s.outside_port))
                    }
                    _ => {}
                }
                self.stats.related += 1;
                return self.pass(dir, pkt, &p, received, rw, now);
            }
        } else if let Some((idx, side)) = self.ct.lookup(&p.tuple, now) {
            let c = self.ct.get(idx);
            let expected = match side {
                Side::Orig => c.direction,
                Side::Reply => other(c.direction),
            };
            // A packet carrying the other side's tuple in the wrong direction is a spoof: it
            // gets no pass from the connection and is judged (and will clash) as new.
            if dir == expected {
                let window = if c.orig.proto == PROTO_TCP {
                    match self.tcp_window(pkt, &p, idx, side, c.state) {
                        Ok(w) => Some(w),
                        Err(r) => return Verdict::Drop(r),
                    }
                } else {
                    None
                };
                if let Err(r) = self
                    .ct
                    .update(idx, side, p.tcp_flags, is_icmp(&p.tuple), now)
                {
                    return Verdict::Drop(r);
                }
                if let Some(w) = window {
                    *self.ct.window(idx) = w;
                }
                match (side, c.snat) {
                    (Side::Orig, Some(s)) => rw.src = Some((s.outside_addr, s.outside_port)),
                    (Side::Reply, Some(s)) => rw.dst = Some((s.inside_addr, s.inside_port)),
                    _ => {}
                }
                return self.pass(dir, pkt, &p, received, rw, now);
            }
        }
        self.by_rules(dir, pkt, &p, received, rw, now, reply)
    }

    /// The TCP window after segment `p` of tracked connection `idx` from `side`, not yet
    /// stored (the state check comes next); an out-of-window segment is refused. A new
    /// SYN from the initiator where the state machine lets one start over (half-open,
    /// TIME_WAIT, closed) starts the window over too.
    fn tcp_window(
        &mut self,
        pkt: &[u8],
        p: &Packet,
        idx: usize,
        side: Side,
        state: State,
    ) -> Result<Window, DropReason> {
        let seg = tcpwin::segment(pkt, p).ok_or(DropReason::Malformed)?;
        let from_orig = side == Side::Orig;
        let bare_syn = seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        if from_orig && bare_syn && matches!(state, State::SynSent | State::TimeWait | State::Close)
        {
            return Ok(Window::open(&seg));
        }
        let mut w = *self.ct.window(idx);
        if w.check(from_orig, &seg) {
            Ok(w)
        } else {
            Err(DropReason::TcpWindow)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn by_rules(
        &mut self,
        dir: Direction,
        pkt: &mut [u8],
        p: &Packet,
        received: Tuple,
        mut rw: Rewrite,
        now: u64,
        reply: &mut [u8],
    ) -> Verdict {
        let t = p.tuple;
        let key = Key {
            v6: t.v6,
            proto: t.proto,
            src: t.src,
            dst: t.dst,
            local: if dir == Direction::Ingress {
                t.dst
            } else {
                t.src
            },
            sport: p.match_sport,
            dport: p.match_dport,
        };
        let cls = self.compiled.dir(dir);
        let (action, stateless, rule_id, log) = match cls.first_match(&key) {
            Some(i) => {
                let m = cls.rules[i];
                let s = &mut self.rule_stats[di(dir)][i];
                s.packets += 1;
                s.bytes += p.len as u64;
                (m.action, m.stateless, Some(m.id), m.log)
            }
            None => {
                let s = &mut self.default_stats[di(dir)];
                s.packets += 1;
                s.bytes += p.len as u64;
                let a = match cls.default {
                    DefaultAction::Allow => Action::Allow,
                    DefaultAction::Drop => Action::Drop,
                    DefaultAction::Reject => Action::Reject,
                };
                (a, false, None, false)
            }
        };
        if log {
            self.log.record(LogEntry {
                time: now,
                rule_id,
                direction: dir,
                action,
                tuple: received,
                len: p.len,
            });
        }
        match action {
            Action::Allow => {}
            Action::Drop if rule_id.is_some() => return Verdict::Drop(DropReason::Rule),
            Action::Drop => return Verdict::Drop(DropReason::Default),
            Action::Reject => return self.reject(pkt, p, now, reply),
        }
        let src4 = t.src as u32;
        let needs_snat = dir == Direction::Egress
            && !t.v6
            && self.nat.floating_public(src4).is_none()
            && self.nat.snat_outside(src4).is_some();
        let opens = p.inner.is_none() && !matches!(p.icmp, IcmpKind::EchoReply | IcmpKind::Other);
        if stateless || !opens {
            if needs_snat {
                return Verdict::Drop(DropReason::SnatNeedsState);
            }
            return self.pass(dir, pkt, p, received, rw, now);
        }
        let Some(state) = ConnTrack::initial_state(t.proto, p.tcp_flags) else {
            return Verdict::Drop(DropReason::TcpNoConnection);
        };
        if state.embryonic() && !self.syn_bucket.take(now) {
            return Verdict::Drop(DropReason::SynFlood);
        }
        let mut snat = None;
        if needs_snat {
            let outside = self.nat.snat_outside(src4).unwrap_or(src4);
            let ported = matches!(t.proto, PROTO_TCP | PROTO_UDP) || is_icmp(&t);
            let port = if ported {
                let mut got = self.ct.ports.allocate(outside, t.proto, t.sport);
                if got.is_none() {
                    // Expired connections may still hold ports: a bounded sweep, then once more.
                    self.ct.sweep(now, SNAT_SWEEP);
                    got = self.ct.ports.allocate(outside, t.proto, t.sport);
                }
                match got {
                    Some(port) => port,
                    None => return Verdict::Drop(DropReason::SnatExhausted),
                }
            } else {
                0
            };
            snat = Some(Snat {
                inside_addr: src4,
                inside_port: t.sport,
                outside_addr: outside,
                outside_port: port,
            });
            rw.src = Some((outside, port));
        }
        let expires = self.ct.initial_expiry(state, t.proto, is_icmp(&t), now);
        let conn = Conn::new(t, dir, state, expires, snat);
        let inserted = self.ct.insert(conn, now);
        if let (Ok(idx), PROTO_TCP) = (inserted, t.proto) {
            // A bare SYN (`initial_state`), whose header `parse` checked.
            if let Some(seg) = tcpwin::segment(pkt, p) {
                *self.ct.window(idx) = Window::open(&seg);
            }
        }
        if let Err(r) = inserted {
            if let (Some(s), true) = (
                snat,
                matches!(t.proto, PROTO_TCP | PROTO_UDP) || is_icmp(&t),
            ) {
                self.ct
                    .ports
                    .release(s.outside_addr, t.proto, s.outside_port);
            }
            return Verdict::Drop(r);
        }
        self.pass(dir, pkt, p, received, rw, now)
    }

    /// Adds the floating-IP source translation, remembers a first fragment, rewrites, accepts.
    fn pass(
        &mut self,
        dir: Direction,
        pkt: &mut [u8],
        p: &Packet,
        received: Tuple,
        mut rw: Rewrite,
        now: u64,
    ) -> Verdict {
        if dir == Direction::Egress && !p.tuple.v6 && rw.src.is_none() {
            if let Some(public) = self.nat.floating_public(p.tuple.src as u32) {
                let port = p.inner.map_or(p.tuple.sport, |i| i.tuple.dport);
                rw.src = Some((public, port));
            }
        }
        if let Frag::First { id } = p.frag {
            let slot = frag_slot(&received, id);
            self.frags[slot] = FragEntry {
                tuple: received,
                id,
                expires: now.saturating_add(FRAG_TTL),
                rw,
            };
        }
        nat::apply(pkt, p, &rw);
        Verdict::Accept
    }

    fn later_fragment(&mut self, pkt: &mut [u8], p: &Packet, id: u32, now: u64) -> Verdict {
        let slot = frag_slot(&p.tuple, id);
        let e = self.frags[slot];
        let same = e.id == id
            && e.tuple.src == p.tuple.src
            && e.tuple.dst == p.tuple.dst
            && e.tuple.proto == p.tuple.proto
            && e.tuple.v6 == p.tuple.v6;
        if !same || e.expires <= now {
            return Verdict::Drop(DropReason::Fragment);
        }
        nat::apply(pkt, p, &e.rw);
        Verdict::Accept
    }

    fn reject(&mut self, pkt: &[u8], p: &Packet, now: u64, out: &mut [u8]) -> Verdict {
        if !reject::answerable(p) {
            return Verdict::Drop(DropReason::Reject);
        }
        if !self.reject_bucket.take(now) {
            self.stats.rejects_rate_limited += 1;
            return Verdict::Drop(DropReason::Reject);
        }
        match reject::build(pkt, p, out) {
            Some(len) => {
                self.stats.rejects_sent += 1;
                Verdict::Reject { len }
            }
            None => Verdict::Drop(DropReason::Reject),
        }
    }
}

/// The tuple of an unfragmented IPv4 TCP/UDP datagram with a 20-byte header, else `None`.
#[inline]
fn quick_tuple(p: &[u8]) -> Option<Tuple> {
    let h = p.get(..24)?;
    if h[0] != 0x45 || !matches!(h[9], PROTO_TCP | PROTO_UDP) || h[6] & 0x3f != 0 || h[7] != 0 {
        return None;
    }
    Some(Tuple {
        src: u128::from(u32::from_be_bytes([h[12], h[13], h[14], h[15]])),
        dst: u128::from(u32::from_be_bytes([h[16], h[17], h[18], h[19]])),
        sport: u16::from_be_bytes([h[20], h[21]]),
        dport: u16::from_be_bytes([h[22], h[23]]),
        proto: h[9],
        v6: false,
    })
}

fn frag_slot(t: &Tuple, id: u32) -> usize {
    let x = (t.src as u64)
        ^ ((t.src >> 64) as u64)
        ^ (t.dst as u64).rotate_left(21)
        ^ ((t.dst >> 64) as u64).rotate_left(7)
        ^ (u64::from(id) << 8)
        ^ u64::from(t.proto);
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 40) as usize % FRAG_SLOTS
}
