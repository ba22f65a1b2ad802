//! Address translation at the edge (IPv4; IPv6 is routed, never translated): floating IPs
//! (1:1, stateless, both directions), source NAT ports for connections of VMs without one, and
//! the in-place rewrite of a datagram with incremental checksum updates, including the header
//! quoted in an ICMP error.

use std::net::Ipv4Addr;

use hostel_switch_proto::types::Ipv4Cidr;
use serde::{Deserialize, Serialize};

use crate::checksum::{self, update16, update32};
use crate::packet::{Frag, IcmpKind, Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// A public address attached to one VM's private address (the type the edge config carries).
pub use hostel_switch_proto::external::FloatingIp;

/// A tenant network whose VMs without a floating IP reach outside through source NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatNetwork {
    pub network: Ipv4Cidr,
    /// The tenant's address on the external network.
    pub outside: Ipv4Addr,
}

/// A tenant's translation set-up. Anything not named here (routed public subnets, IPv6)
/// crosses untranslated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatConfig {
    #[serde(default)]
    pub floating: Vec<FloatingIp>,
    #[serde(default)]
    pub snat: Vec<SnatNetwork>,
    /// Source ports (and ICMP echo identifiers) handed out, inclusive.
    #[serde(default = "default_ports")]
    pub snat_ports: (u16, u16),
}

fn default_ports() -> (u16, u16) {
    (1024, 65535)
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            floating: Vec::new(),
            snat: Vec::new(),
            snat_ports: default_ports(),
        }
    }
}

/// Something wrong with a translation set-up, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    #[error("field `floating[{index}].public`: {addr} is attached twice")]
    DuplicatePublic { index: usize, addr: Ipv4Addr },
    #[error("field `floating[{index}].private`: {addr} already has a floating IP")]
    DuplicatePrivate { index: usize, addr: Ipv4Addr },
    #[error("field `snat[{index}].outside`: {addr} is also a floating IP")]
    OutsideIsFloating { index: usize, addr: Ipv4Addr },
    #[error("field `snat_ports`: empty range {0}-{1}")]
    EmptyPorts(u16, u16),
    #[error("field `snat[{index}].network`: prefix /{prefix} is too long")]
    Prefix { index: usize, prefix: u8 },
}

/// The compiled translation tables (sorted for binary search; built once per change).
#[derive(Clone, Debug, Default)]
pub struct Nat {
    by_public: Vec<(u32, u32)>,
    by_private: Vec<(u32, u32)>,
    snat: Vec<(u32, u32, u32)>,
}

impl Nat {
    pub fn new(c: &NatConfig) -> Result<Nat, NatError> {
        let mut n = Nat::default();
        if c.snat_ports.1 < c.snat_ports.0 {
            return Err(NatError::EmptyPorts(c.snat_ports.0, c.snat_ports.1));
        }
        for (index, f) in c.floating.iter().enumerate() {
            let (pu, pr) = (u32::from(f.public), u32::from(f.private));
            if n.by_public.iter().any(|e| e.0 == pu) {
                return Err(NatError::DuplicatePublic {
                    index,
                    addr: f.public,
                });
            }
            if n.by_private.iter().any(|e| e.0 == pr) {
                return Err(NatError::DuplicatePrivate {
                    index,
                    addr: f.private,
                });
            }
            n.by_public.push((pu, pr));
            n.by_private.push((pr, pu));
        }
        for (index, s) in c.snat.iter().enumerate() {
            if s.network.prefix > 32 {
                return Err(NatError::Prefix {
                    index,
                    prefix: s.network.prefix,
                });
            }
            if n.by_public.iter().any(|e| e.0 == u32::from(s.outside)) {
                return Err(NatError::OutsideIsFloating {
                    index,
                    addr: s.outside,
                });
            }
            let m = u32::from(s.network.mask());
            n.snat
                .push((u32::from(s.network.addr) & m, m, u32::from(s.outside)));
        }
        n.by_public.sort_unstable();
        n.by_private.sort_unstable();
        Ok(n)
    }

    pub fn floating_private(&self, public: u32) -> Option<u32> {
        let i = self.by_public.binary_search_by_key(&public, |e| e.0).ok()?;
        Some(self.by_public[i].1)
    }

    pub fn floating_public(&self, private: u32) -> Option<u32> {
        let i = self
            .by_private
            .binary_search_by_key(&private, |e| e.0)
            .ok()?;
        Some(self.by_private[i].1)
    }

    /// The outside address for a VM without a floating IP, if its network has source NAT.
    pub fn snat_outside(&self, src: u32) -> Option<u32> {
        self.snat
            .iter()
            .find(|(net, mask, _)| src & mask == *net)
            .map(|e| e.2)
    }

    pub fn outside_addrs(&self) -> impl Iterator<Item = u32> + '_ {
        self.snat.iter().map(|e| e.2)
    }
}

/// Ports in use per outside address and protocol class: a bitmap each, allocated when the
/// translation set-up is installed, so allocating a port costs at most 1,024 word reads
/// (fewer for a narrower range) and one bit scan.
#[derive(Clone, Debug, Default)]
pub struct PortPools {
    lo: u16,
    hi: u16,
    pools: Vec<(u32, [Box<[u64; 1024]>; 3])>,
    cursor: usize,
}

fn class(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 0,
        PROTO_UDP => 1,
        _ => 2,
    }
}

impl PortPools {
    /// Keeps the bitmaps of addresses still in use (their ports stay taken).
    pub fn configure(&mut self, addrs: impl Iterator<Item = u32>, range: (u16, u16)) {
        self.lo = range.0;
        self.hi = range.1;
        let mut next = Vec::new();
        for a in addrs {
            if next.iter().any(|(x, _)| *x == a) {
                continue;
            }
            let keep = self.pools.iter().position(|(x, _)| *x == a);
            next.push(match keep {
                Some(i) => self.pools.swap_remove(i),
                None => (
                    a,
                    [
                        Box::new([0u64; 1024]),
                        Box::new([0u64; 1024]),
                        Box::new([0u64; 1024]),
                    ],
                ),
            });
        }
        self.pools = next;
    }

    /// A free port for `addr`, preferring `want` (port preservation); `None` when exhausted.
    pub fn allocate(&mut self, addr: u32, proto: u8, want: u16) -> Option<u16> {
        let (lo, hi) = (self.lo, self.hi);
        let cursor = self.cursor;
        let (_, maps) = self.pools.iter_mut().find(|(a, _)| *a == addr)?;
        let map = &mut maps[class(proto)];
        let free = |m: &[u64; 1024], p: u16| m[usize::from(p) / 64] & (1 << (p % 64)) == 0;
        let mut pick = None;
        if (lo..=hi).contains(&want) && free(map, want) {
            pick = Some(want);
        } else {
            // One pass over the range's words from a moving cursor, bits outside the range
            // masked off: at most 1,024 word reads, one bit scan.
            let (wlo, whi) = (usize::from(lo) / 64, usize::from(hi) / 64);
            let n = whi - wlo + 1;
            for k in 0..n {
                let w = wlo + (cursor + k) % n;
                let mut bits = !map[w];
                if w == wlo {
                    bits &= u64::MAX << (lo % 64);
                }
                if w == whi {
                    bits &= u64::MAX >> (63 - hi % 64);
                }
                if bits != 0 {
                    pick = Some((w * 64 + bits.trailing_zeros() as usize) as u16);
                    break;
                }
            }
        }
        let p = pick?;
        map[usize::from(p) / 64] |= 1 << (p % 64);
        self.cursor = usize::from(p) / 64 - usize::from(lo) / 64;
        Some(p)
    }

    pub fn release(&mut self, addr: u32, proto: u8, port: u16) {
        if let Some((_, maps)) = self.pools.iter_mut().find(|(a, _)| *a == addr) {
            maps[class(proto)][usize::from(port) / 64] &= !(1 << (port % 64));
        }
    }
}

/// New values for a datagram's source and destination. Ports are ignored where there are none
/// (non-first fragments, protocols without ports); for ICMP echo the port is the identifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub src: Option<(u32, u16)>,
    pub dst: Option<(u32, u16)>,
}

impl Rewrite {
    pub fn is_none(&self) -> bool {
        self.src.is_none() && self.dst.is_none()
    }
}

fn get16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

fn put16(b: &mut [u8], o: usize, v: u16) {
    if let Some(s) = b.get_mut(o..o + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn get32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    if let Some(s) = b.get_mut(o..o + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Rewrites one address field of an IPv4 header at `l3` and returns (old, new) for the
/// transport checksum's pseudo-header.
fn set_addr(b: &mut [u8], l3: usize, field: usize, new: u32) -> u32 {
    let old = get32(b, l3 + field);
    put32(b, l3 + field, new);
    if let Some(c) = get16(b, l3 + 10) {
        put16(b, l3 + 10, update32(c, old, new));
    }
    old
}

/// Changes a transport checksum at `off` for an address and a port change. `udp`: a zero
/// checksum means none and stays zero, and a computed zero is sent as 0xffff.
fn fix_l4(b: &mut [u8], off: usize, addr: Option<(u32, u32)>, port: Option<(u16, u16)>, udp: bool) {
    let Some(mut c) = get16(b, off) else {
        return;
    };
    if udp && c == 0 {
        return;
    }
    if let Some((o, n)) = addr {
        c = update32(c, o, n);
    }
    if let Some((o, n)) = port {
        c = update16(c, o, n);
    }
    if udp && c == 0 {
        c = 0xffff;
    }
    put16(b, off, c);
}

/// Rewrites the transport header at `l4` (ports, checksum). `src_side`: the source port.
fn rewrite_l4(
    b: &mut [u8],
    proto: u8,
    icmp: IcmpKind,
    l4: usize,
    src_side: bool,
    addr: (u32, u32),
    port: u16,
) {
    match proto {
        PROTO_TCP | PROTO_UDP => {
            let po = if src_side { l4 } else { l4 + 2 };
            let old = get16(b, po);
            if old.is_some() {
                put16(b, po, port);
            }
            let coff = if proto == PROTO_TCP { l4 + 16 } else { l4 + 6 };
            fix_l4(
                b,
                coff,
                Some(addr),
                old.map(|o| (o, port)),
                proto == PROTO_UDP,
            );
        }
        PROTO_ICMP if matches!(icmp, IcmpKind::EchoRequest | IcmpKind::EchoReply) => {
            // ICMPv4's checksum covers no pseudo-header: only the identifier changes it.
            if let Some(old) = get16(b, l4 + 4) {
                put16(b, l4 + 4, port);
                fix_l4(b, l4 + 2, None, Some((old, port)), false);
            }
        }
        _ => {}
    }
}

/// Applies `rw` to an IPv4 datagram in place. For an ICMP error, the quoted header gets the
/// mirror image (a new outer destination is the quoted source) and the ICMP checksum is
/// recomputed over the message.
pub fn apply(b: &mut [u8], p: &Packet, rw: &Rewrite) {
    if rw.is_none() || p.tuple.v6 {
        return;
    }
    let l4_present = !matches!(p.frag, Frag::Later { .. });
    for (field, val, src_side) in [(12usize, rw.src, true), (16usize, rw.dst, false)] {
        let Some((addr, port)) = val else { continue };
        let old = set_addr(b, 0, field, addr);
        if !l4_present {
            continue;
        }
        if let Some(inner) = p.inner {
            // The quoted datagram travelled the other way.
            let ifield = if src_side { 16 } else { 12 };
            let iold = set_addr(b, inner.l3_off, ifield, addr);
            rewrite_l4(
                b,
                inner.tuple.proto,
                inner.icmp,
                inner.l4_off,
                !src_side,
                (iold, addr),
                port,
            );
        } else {
            rewrite_l4(
                b,
                p.tuple.proto,
                p.icmp,
                p.l4_off,
                src_side,
                (old, addr),
                port,
            );
        }
    }
    if p.inner.is_some() && l4_present {
        // The quoted bytes changed: recount the ICMP checksum over the whole message.
        put16(b, p.l4_off + 2, 0);
        if let Some(msg) = b.get(p.l4_off..p.len) {
            let c = checksum::checksum(msg);
            put16(b, p.l4_off + 2, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_stay_in_range_unique_and_come_back() {
        for (lo, hi) in [
            (1000u16, 1003u16),
            (60, 70),
            (0, 63),
            (64, 64),
            (65500, 65535),
        ] {
            let mut p = PortPools::default();
            p.configure([7u32].into_iter(), (lo, hi));
            let mut got = std::collections::BTreeSet::new();
            for k in 0..=(hi - lo) {
                let port = p
                    .allocate(7, PROTO_TCP, k.wrapping_mul(977))
                    .expect("a free port");
                assert!((lo..=hi).contains(&port), "{port} outside {lo}-{hi}");
                assert!(got.insert(port), "{port} handed out twice");
            }
            assert_eq!(p.allocate(7, PROTO_TCP, lo), None, "exhausted");
            assert!(
                p.allocate(7, PROTO_UDP, lo).is_some(),
                "UDP has its own ports"
            );
            p.release(7, PROTO_TCP, hi);
            assert_eq!(p.allocate(7, PROTO_TCP, 1), Some(hi));
            assert_eq!(p.allocate(8, PROTO_TCP, 1), None, "unknown address");
        }
    }
}
