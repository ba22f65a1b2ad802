//! Flows: a bounded table keyed by the 5-tuple, direction from the initiator (to_server), TCP
//! handshake tracking (no midstream pickup) and in-order reassembly per direction to a depth.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use crate::packet::{Packet, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// Segments held ahead of a gap, per direction, and their bytes: a sender cannot make us
/// buffer more than this waiting for a hole to fill.
const MAX_PENDING_SEGMENTS: usize = 64;
const MAX_PENDING_BYTES: usize = 256 * 1024;
/// Rules remembered per direction as having matched the stream so far, and rules whose fast
/// pattern has appeared in it (checked again on every new data, since their other contents
/// may arrive later).
const MAX_STREAM_HITS: usize = 256;
/// Inspected bytes kept per direction for matches that reach back (a relative content, a
/// pattern across segments); older ones are freed, as Suricata frees inspected data.
pub const STREAM_KEEP: usize = 64 * 1024;
const MAX_ARMED: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
    proto: u8,
}

impl FlowKey {
    pub fn of(p: &Packet<'_>) -> FlowKey {
        let (sp, dp) = p.ports();
        let proto = match p.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { v6: false, .. } => 1,
            L4::Icmp { v6: true, .. } => 58,
            L4::Other(n) => n,
        };
        let (a, b) = ((p.src, sp), (p.dst, dp));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey { lo, hi, proto }
    }
    /// A stable id for the EVE `flow_id` (within JSON's exact integer range).
    pub fn id(&self) -> u64 {
        // Fixed keys: the same flow gets the same id in every run.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish() & ((1 << 52) - 1)
    }
}

/// One direction's reassembled bytes.
#[derive(Debug, Default)]
pub struct Stream {
    next_seq: Option<u32>,
    /// Bytes held: the stream from position `base` on (positions count from the first byte).
    pub data: Vec<u8>,
    pub base: usize,
    pending: BTreeMap<u32, Vec<u8>>,
    pending_bytes: usize,
    /// Rules (by index) that matched this stream, and up to where.
    hits: Vec<(u32, usize)>,
    pub armed: Vec<u32>,
}

impl Stream {
    fn start(&mut self, isn: u32) {
        if self.next_seq.is_none() {
            self.next_seq = Some(isn.wrapping_add(1));
        }
    }

    pub fn tracked(&self) -> bool {
        self.next_seq.is_some()
    }

    /// Adds a segment; returns the stream position where this call's new in-order bytes start.
    /// `budget`: bytes all streams may still hold (the table's memcap); taken from as data is
    /// stored.
    pub fn add(
        &mut self,
        seq: u32,
        payload: &[u8],
        depth: usize,
        budget: &mut usize,
    ) -> Option<usize> {
        let before = self.data.len();
        let next = self.next_seq?;
        let rel = seq.wrapping_sub(next) as i32;
        if rel > 0 {
            if self.pending.len() < MAX_PENDING_SEGMENTS
                && self.pending_bytes + payload.len() <= MAX_PENDING_BYTES
                && payload.len() <= *budget
                && !self.pending.contains_key(&seq)
            {
                self.pending_bytes += payload.len();
                *budget -= payload.len();
                self.pending.insert(seq, payload.to_vec());
            }
            return None;
        }
        self.append(rel, payload, depth, budget);
        // Fill from the segments that waited for this one.
        while let Some(n) = self.next_seq {
            let ready = self
                .pending
                .keys()
                .copied()
                .find(|&s| (s.wrapping_sub(n) as i32) <= 0);
            let Some(s) = ready else { break };
            let Some(seg) = self.pending.remove(&s) else {
                break;
            };
            self.pending_bytes -= seg.len();
            *budget += seg.len();
            self.append(s.wrapping_sub(n) as i32, &seg, depth, budget);
        }
        (self.data.len() > before).then_some(self.base + before)
    }

    fn append(&mut self, rel: i32, payload: &[u8], depth: usize, budget: &mut usize) {
        // Bytes already had (a retransmission) keep their first copy.
        let skip = rel.unsigned_abs() as usize;
        let Some(new) = payload.get(skip..) else {
            return;
        };
        if let Some(n) = self.next_seq.as_mut() {
            *n = n.wrapping_add(new.len() as u32);
        }
        let room = depth
            .saturating_sub(self.base + self.data.len())
            .min(*budget);
        let take = new.len().min(room);
        self.data.extend_from_slice(&new[..take]);
        *budget -= take;
    }

    /// The position after the stream's last byte.
    pub fn end(&self) -> usize {
        self.base + self.data.len()
    }

    /// The held bytes from stream position `pos` (or from the oldest held one).
    pub fn from(&self, pos: usize) -> (usize, &[u8]) {
        let at = pos.clamp(self.base, self.end());
        (at, &self.data[at - self.base..])
    }

    /// Frees inspected bytes beyond the last `STREAM_KEEP`; returns how many.
    pub fn trim(&mut self) -> usize {
        let drop = self.data.len().saturating_sub(STREAM_KEEP);
        if drop > 0 {
            self.data.drain(..drop);
            self.base += drop;
        }
        drop
    }

    pub fn hit_from(&self, rule: u32) -> usize {
        self.hits.iter().find(|h| h.0 == rule).map_or(0, |h| h.1)
    }

    /// Stops reassembly and frees the bytes held; returns how many.
    fn close(&mut self) -> usize {
        let held = self.data.len() + self.pending_bytes;
        self.next_seq = None;
        self.data = Vec::new();
        self.pending.clear();
        self.pending_bytes = 0;
        held
    }

    pub fn arm(&mut self, rule: u32) {
        if self.armed.len() < MAX_ARMED && !self.armed.contains(&rule) {
            self.armed.push(rule);
        }
    }

    pub fn set_hit(&mut self, rule: u32, upto: usize) {
        if let Some(h) = self.hits.iter_mut().find(|h| h.0 == rule) {
            h.1 = upto;
        } else if self.hits.len() < MAX_STREAM_HITS {
            self.hits.push((rule, upto));
        }
    }
}

#[derive(Debug)]
pub struct Flow {
    pub id: u64,
    initiator: (IpAddr, u16),
    pub last_seen: Duration,
    syn: bool,
    synack: bool,
    pub established: bool,
    seen: [bool; 2],
    fin: [bool; 2],
    /// Index 0: to_server (the initiator's data), 1: to_client.
    pub streams: [Stream; 2],
    pub bits: Vec<u32>,
    /// Set in prevent mode once a drop rule matched: the rest of the flow is dropped.
    pub dropped: bool,
}

impl Flow {
    pub fn has_bit(&self, b: u32) -> bool {
        self.bits.contains(&b)
    }
    pub fn set_bit(&mut self, b: u32) {
        if !self.has_bit(b) {
            self.bits.push(b);
        }
    }
    pub fn unset_bit(&mut self, b: u32) {
        self.bits.retain(|&x| x != b);
    }
}

#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow>,
    max: usize,
    timeout: Duration,
    last_sweep: Duration,
    pub untracked: u64,
    /// Bytes all streams may still hold (reassembly memcap minus what they hold).
    stream_budget: usize,
    /// Stream bytes not stored because the memcap was reached.
    pub memcap_hits: u64,
}

/// The outcome of one packet's flow update.
pub struct Seen {
    pub to_server: bool,
    /// Where new reassembled bytes start in this direction's stream, for tracked TCP.
    pub new_stream: Option<usize>,
}

impl FlowTable {
    pub fn new(max: usize, timeout: Duration, stream_memcap: usize) -> Self {
        FlowTable {
            flows: HashMap::new(),
            max,
            timeout,
            last_sweep: Duration::ZERO,
            untracked: 0,
            stream_budget: stream_memcap,
            memcap_hits: 0,
        }
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        self.flows.get_mut(key)
    }

    /// After a packet's inspection: frees its direction's old stream bytes.
    pub fn trim(&mut self, key: &FlowKey, dir: usize) {
        if let Some(f) = self.flows.get_mut(key) {
            self.stream_budget += f.streams[dir].trim();
        }
    }

    /// Updates (or creates) the packet's flow. `None` when the table is full of live flows.
    pub fn update(
        &mut self,
        key: FlowKey,
        p: &Packet<'_>,
        ts: Duration,
        depth: usize,
    ) -> Option<Seen> {
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= self.max {
                self.sweep(ts);
            }
            if self.flows.len() >= self.max {
                self.untracked += 1;
                return None;
            }
            self.flows.insert(
                key,
                Flow {
                    id: key.id(),
                    initiator: (p.src, p.ports().0),
                    last_seen: ts,
                    syn: false,
                    synack: false,
                    established: false,
                    seen: [false; 2],
                    fin: [false; 2],
                    streams: Default::default(),
                    bits: Vec::new(),
                    dropped: false,
                },
            );
        }
        let f = self.flows.get_mut(&key)?;
        f.last_seen = f.last_seen.max(ts);
        let to_server = (p.src, p.ports().0) == f.initiator;
        let d = usize::from(!to_server);
        f.seen[d] = true;
        let mut new_stream = None;
        match p.l4 {
            L4::Tcp { seq, flags, .. } => {
                let syn = flags & TCP_SYN != 0;
                let ack = flags & TCP_ACK != 0;
                if syn && !ack && to_server {
                    f.syn = true;
                    f.streams[0].start(seq);
                } else if syn && ack && !to_server && f.syn {
                    f.synack = true;
                    f.streams[1].start(seq);
                } else if ack && !syn && to_server && f.synack {
                    f.established = true;
                }
                if !p.payload.is_empty() && f.streams[d].tracked() {
                    // TCP Fast Open: data on a SYN starts after the ISN.
                    let at = if syn { seq.wrapping_add(1) } else { seq };
                    let before = self.stream_budget;
                    new_stream = f.streams[d].add(at, p.payload, depth, &mut self.stream_budget);
                    if self.stream_budget == 0 && before < p.payload.len() {
                        self.memcap_hits += 1;
                    }
                }
                f.fin[d] |= flags & TCP_FIN != 0;
                // A closed connection's bytes go back to the memcap; its remaining packets
                // are inspected one by one.
                if flags & TCP_RST != 0 || (f.fin[0] && f.fin[1]) {
                    f.established = false;
                    let freed = f.streams[0].close() + f.streams[1].close();
                    self.stream_budget += freed;
                }
            }
            // UDP and ICMP "establish" once both sides have spoken, as in Suricata.
            _ => f.established = f.seen[0] && f.seen[1],
        }
        Some(Seen {
            to_server,
            new_stream,
        })
    }

    fn sweep(&mut self, now: Duration) {
        // At most once per second of capture time: a full table of live flows costs one scan.
        if now < self.last_sweep + Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        let timeout = self.timeout;
        let mut freed = 0;
        self.flows.retain(|_, f| {
            let keep = now.saturating_sub(f.last_seen) < timeout;
            if !keep {
                freed += f.streams[0].close() + f.streams[1].close();
            }
            keep
        });
        self.stream_budget += freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_out_of_order_and_retransmits() {
        let mut s = Stream::default();
        s.start(999);
        let mut b = usize::MAX;
        assert_eq!(s.add(1005, b"world", 100, &mut b), None);
        assert_eq!(s.add(1000, b"hello", 100, &mut b), Some(0));
        assert_eq!(s.data, b"helloworld");
        assert_eq!(s.add(1000, b"helloworld!", 100, &mut b), Some(10));
        assert_eq!(s.data, b"helloworld!");
        // Depth bound.
        assert_eq!(s.add(1011, b"0123456789", 15, &mut b), Some(11));
        assert_eq!(s.data.len(), 15);
        // Memcap bound.
        let mut s = Stream::default();
        s.start(0);
        let mut b = 4;
        assert_eq!(s.add(1, b"abcdef", 100, &mut b), Some(0));
        assert_eq!((s.data.as_slice(), b), (&b"abcd"[..], 0));
        assert_eq!(s.close(), 4);
    }

    #[test]
    fn pending_is_bounded() {
        let mut s = Stream::default();
        s.start(0);
        let mut budget = usize::MAX;
        for i in 0..1000u32 {
            s.add(100 + i * 10, &[0u8; 5], 1 << 20, &mut budget);
        }
        assert!(s.pending.len() <= MAX_PENDING_SEGMENTS);
    }
}
