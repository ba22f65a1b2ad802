//! The per-packet pipeline: flow update and reassembly, the prefilter (aho-corasick over each
//! rule's fast pattern, one automaton per protocol group), rule checks in precedence order,
//! flowbits, thresholds, and alerts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

/// Patterns per group up to which the prefilter is a DFA.
const DFA_MAX_PATTERNS: usize = 20_000;

use crate::flow::{FlowKey, FlowTable};
use crate::packet::{Packet, L4};
use crate::rule::{Action, FlowbitOp, Proto, Rule};
use crate::ruleset::RuleSet;
use crate::threshold::{threshold_allows, ThresholdEntry};

/// Detect raises alerts only; prevent also drops the packet and the rest of its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Detect,
    Prevent,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// Reassembly depth per flow and direction.
    pub stream_depth: usize,
    pub max_flows: usize,
    /// Bytes all flows' reassembled streams may hold together (Suricata's reassembly memcap
    /// default); beyond it new stream bytes are not inspected, counted.
    pub stream_memcap: usize,
    pub flow_timeout: Duration,
    pub max_threshold_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Detect,
            stream_depth: 1 << 20,
            max_flows: 65_536,
            stream_memcap: 256 << 20,
            flow_timeout: Duration::from_secs(120),
            max_threshold_entries: 65_536,
        }
    }
}

/// One alert, ready for EVE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub ts: Duration,
    pub flow_id: u64,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// Suricata's protocol name: TCP, UDP, ICMP, IPV6-ICMP, or the number.
    pub proto: String,
    pub icmp: Option<(u8, u8)>,
    /// `allowed` or `blocked`.
    pub action: &'static str,
    pub gid: u32,
    pub sid: u32,
    pub rev: u32,
    pub signature: String,
    pub category: String,
    pub severity: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub alerts: u64,
    pub drops: u64,
    pub untracked_flows: u64,
    pub stream_memcap_hits: u64,
    pub threshold_table_full: u64,
}

/// A packet's outcome.
#[derive(Debug, Default)]
pub struct Verdict {
    pub alerts: Vec<Alert>,
    /// Prevent mode only: drop this packet.
    pub drop: bool,
}

struct Group {
    /// Rules without a usable fast pattern: checked on every packet of the group.
    always: Vec<u32>,
    ac: Option<AhoCorasick>,
    /// Pattern id → rules keyed on it.
    by_pattern: Vec<Vec<u32>>,
    longest: usize,
}

pub struct Engine {
    rules: Vec<Rule>,
    /// tcp, udp, icmp, other.
    groups: [Group; 4],
    flows: FlowTable,
    thresholds: HashMap<(u32, u32, IpAddr), ThresholdEntry>,
    config: Config,
    counters: Counters,
    scratch: Vec<u32>,
}

fn group_of(l4: &L4) -> usize {
    match l4 {
        L4::Tcp { .. } => 0,
        L4::Udp { .. } => 1,
        L4::Icmp { .. } => 2,
        L4::Other(_) => 3,
    }
}

fn build_group(rules: &[Rule], idx: &[u32]) -> Group {
    let mut always = Vec::new();
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    let mut ids: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut by_pattern: Vec<Vec<u32>> = Vec::new();
    for &i in idx {
        match rules[i as usize].fast_pattern() {
            Some(c) => {
                // Case-folded keys: one case-insensitive automaton; the rule's own check
                // restores case where the content is case-sensitive.
                let key = c.pattern.to_ascii_lowercase();
                let id = *ids.entry(key.clone()).or_insert_with(|| {
                    patterns.push(key);
                    by_pattern.push(Vec::new());
                    patterns.len() - 1
                });
                by_pattern[id].push(i);
            }
            None => always.push(i),
        }
    }
    let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
    let ac = if patterns.is_empty() {
        None
    } else {
        // A DFA scans about twice as fast as the NFA the builder picks by itself beyond ~100
        // patterns (measured at 1,000 and 10,000 rules); its memory grows with the patterns
        // (~20 MB more at 10,000, ~0.5 s to build), so beyond 20,000 the NFA.
        let kind = (patterns.len() <= DFA_MAX_PATTERNS).then_some(AhoCorasickKind::DFA);
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(kind)
            .build(&patterns)
            .ok()
    };
    // Should the automaton fail to build (its own size limits), every rule is checked.
    if ac.is_none() {
        always.extend(by_pattern.drain(..).flatten());
        always.sort_unstable();
    }
    Group {
        always,
        ac,
        by_pattern,
        longest,
    }
}

impl Engine {
    pub fn new(set: RuleSet, config: Config) -> Self {
        let mut rules = set.rules;
        // Suricata's order: action precedence, then flowbit setters before readers, priority.
        rules.sort_by_key(|r| {
            let reads = r
                .flowbits
                .iter()
                .any(|f| matches!(f, FlowbitOp::IsSet(_) | FlowbitOp::IsNotSet(_)));
            (r.action, reads, r.priority, r.sid)
        });
        let mut members: [Vec<u32>; 4] = Default::default();
        for (i, r) in rules.iter().enumerate() {
            let gs: &[usize] = match r.proto {
                Proto::Tcp => &[0],
                Proto::Udp => &[1],
                Proto::Icmp => &[2],
                Proto::Ip => &[0, 1, 2, 3],
            };
            for &g in gs {
                members[g].push(i as u32);
            }
        }
        let groups = members.map(|m| build_group(&rules, &m));
        Engine {
            rules,
            groups,
            flows: FlowTable::new(config.max_flows, config.flow_timeout, config.stream_memcap),
            thresholds: HashMap::new(),
            config,
            counters: Counters::default(),
            scratch: Vec::new(),
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            untracked_flows: self.flows.untracked,
            stream_memcap_hits: self.flows.memcap_hits,
            ..self.counters
        }
    }

    /// Runs detection on one packet seen at `ts` (capture time).
    pub fn inspect(&mut self, ts: Duration, p: &Packet<'_>) -> Verdict {
        self.counters.packets += 1;
        let mut verdict = Verdict::default();
        let key = FlowKey::of(p);
        let seen = self.flows.update(key, p, ts, self.config.stream_depth);
        let to_server = seen.as_ref().map_or(true, |s| s.to_server);
        let dir = usize::from(!to_server);
        let new_stream = seen.as_ref().and_then(|s| s.new_stream);
        if let Some(f) = self.flows.get_mut(&key) {
            if f.dropped {
                verdict.drop = true;
                self.counters.drops += 1;
                return verdict;
            }
        }
        let is_tcp = matches!(p.l4, L4::Tcp { .. });
        let tracked_stream = is_tcp
            && seen.is_some()
            && self
                .flows
                .get_mut(&key)
                .is_some_and(|f| f.streams[dir].tracked());

        // Prefilter: the new stream bytes (with enough of the old to catch a pattern across
        // the boundary), else the packet payload.
        let g = &self.groups[group_of(&p.l4)];
        let mut cands = std::mem::take(&mut self.scratch);
        cands.clear();
        cands.extend_from_slice(&g.always);
        if let Some(ac) = &g.ac {
            let flow = self.flows.get_mut(&key);
            let hay: &[u8] = match (tracked_stream, new_stream, flow) {
                (true, Some(start), Some(f)) => {
                    f.streams[dir]
                        .from(start.saturating_sub(g.longest.saturating_sub(1)))
                        .1
                }
                (true, _, _) => &[],
                _ => p.payload,
            };
            let first = cands.len();
            for m in ac.find_overlapping_iter(hay) {
                cands.extend_from_slice(&g.by_pattern[m.pattern().as_usize()]);
            }
            if let (true, Some(_), Some(f)) = (tracked_stream, new_stream, self.flows.get_mut(&key))
            {
                let s = &mut f.streams[dir];
                for &r in &cands[first..] {
                    s.arm(r);
                }
                cands.extend_from_slice(&s.armed);
            }
        }
        cands.sort_unstable();
        cands.dedup();

        for &ri in &cands {
            let r = &self.rules[ri as usize];
            if header_matches(r, p).is_none() {
                continue;
            }
            // Flow keywords.
            let flow = self.flows.get_mut(&key);
            if let Some(est) = r.flow.established {
                let is = flow.as_ref().is_some_and(|f| f.established);
                if is != est {
                    continue;
                }
            }
            if let Some(ts_dir) = r.flow.to_server {
                if seen.is_none() || ts_dir != to_server {
                    continue;
                }
            }
            if !packet_checks(r, p) {
                continue;
            }
            let bits_ok = r.flowbits.iter().all(|op| match op {
                FlowbitOp::IsSet(b) => flow.as_ref().is_some_and(|f| f.has_bit(*b)),
                FlowbitOp::IsNotSet(b) => !flow.as_ref().is_some_and(|f| f.has_bit(*b)),
                _ => true,
            });
            if !bits_ok {
                continue;
            }
            if !r.items.is_empty() {
                // dsize rules look at the packet, as in Suricata; others at the stream when
                // this direction is reassembled.
                let use_stream = tracked_stream && r.dsize.is_none();
                let matched = if use_stream {
                    match (new_stream, flow) {
                        (Some(new_at), Some(f)) => {
                            let s = &mut f.streams[dir];
                            let (from, buf) = s.from(s.hit_from(ri));
                            let hit = crate::payload::matches_after(
                                &r.items,
                                buf,
                                Some(new_at.saturating_sub(from)),
                            );
                            if hit {
                                let end = s.end();
                                s.set_hit(ri, end);
                            }
                            hit
                        }
                        _ => false,
                    }
                } else {
                    crate::payload::matches(&r.items, p.payload)
                };
                if !matched {
                    continue;
                }
            }
            // Matched.
            if let Some(f) = self.flows.get_mut(&key) {
                for op in &r.flowbits {
                    match op {
                        FlowbitOp::Set(b) => f.set_bit(*b),
                        FlowbitOp::Unset(b) => f.unset_bit(*b),
                        _ => {}
                    }
                }
            }
            if r.action == Action::Pass {
                break;
            }
            let blocks = matches!(r.action, Action::Drop | Action::Reject)
                && self.config.mode == Mode::Prevent;
            if blocks {
                verdict.drop = true;
                if let Some(f) = self.flows.get_mut(&key) {
                    f.dropped = true;
                }
            }
            if r.flowbits.contains(&FlowbitOp::NoAlert) {
                continue;
            }
            if let Some(t) = r.threshold {
                let ip = if t.by_src { p.src } else { p.dst };
                if !threshold_allows(
                    &mut self.thresholds,
                    self.config.max_threshold_entries,
                    &mut self.counters,
                    (r.sid, r.gid, ip),
                    t.kind,
                    t.count,
                    t.seconds,
                    ts,
                ) {
                    continue;
                }
            }
            let (sp, dp) = p.ports();
            verdict.alerts.push(Alert {
                ts,
                flow_id: key.id(),
                src: p.src,
                src_port: sp,
                dst: p.dst,
                dst_port: dp,
                proto: proto_name(&p.l4),
                icmp: match p.l4 {
                    L4::Icmp { itype, icode, .. } => Some((itype, icode)),
                    _ => None,
                },
                action: if blocks { "blocked" } else { "allowed" },
                gid: r.gid,
                sid: r.sid,
                rev: r.rev,
                signature: r.msg.clone(),
                category: r.category.clone(),
                severity: r.priority,
            });
        }
        self.scratch = cands;
        if tracked_stream {
            self.flows.trim(&key, dir);
        }
        self.counters.alerts += verdict.alerts.len() as u64;
        if verdict.drop {
            self.counters.drops += 1;
        }
        verdict
    }
}

fn proto_name(l4: &L4) -> String {
    match l4 {
        L4::Tcp { .. } => "TCP".into(),
        L4::Udp { .. } => "UDP".into(),
        L4::Icmp { v6: false, .. } => "ICMP".into(),
        L4::Icmp { v6: true, .. } => "IPV6-ICMP".into(),
        L4::Other(n) => format!("{n}"),
    }
}

/// Protocol, addresses and ports; `Some(true)` when matched as written, `Some(false)` when
/// matched reversed (`<>`).
fn header_matches(r: &Rule, p: &Packet<'_>) -> Option<bool> {
    let proto_ok = matches!(
        (r.proto, &p.l4),
        (Proto::Ip, _)
            | (Proto::Tcp, L4::Tcp { .. })
            | (Proto::Udp, L4::Udp { .. })
            | (Proto::Icmp, L4::Icmp { .. })
    );
    if !proto_ok {
        return None;
    }
    let (sp, dp) = p.ports();
    let has_ports = matches!(p.l4, L4::Tcp { .. } | L4::Udp { .. });
    let side = |src: IpAddr, sp: u16, dst: IpAddr, dp: u16| {
        r.src.matches(src)
            && r.dst.matches(dst)
            && (!has_ports || (r.src_port.matches(sp) && r.dst_port.matches(dp)))
    };
    if side(p.src, sp, p.dst, dp) {
        Some(true)
    } else if r.bidirectional && side(p.dst, dp, p.src, sp) {
        Some(false)
    } else {
        None
    }
}

fn packet_checks(r: &Rule, p: &Packet<'_>) -> bool {
    if let Some(d) = r.dsize {
        if !d.test(p.payload.len() as u32) {
            return false;
        }
    }
    if let Some(t) = r.ttl {
        if !t.test(u32::from(p.ttl)) {
            return false;
        }
    }
    if let Some(f) = r.flags {
        match p.l4 {
            L4::Tcp { flags, .. } if f.test(flags) => {}
            _ => return false,
        }
    }
    if r.itype.is_some() || r.icode.is_some() {
        let L4::Icmp { itype, icode, .. } = p.l4 else {
            return false;
        };
        if r.itype.is_some_and(|t| !t.test(u32::from(itype)))
            || r.icode.is_some_and(|c| !c.test(u32::from(icode)))
        {
            return false;
        }
    }
    true
}
