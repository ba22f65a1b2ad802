//! The answer to a rejected packet, written into a caller's buffer: a TCP RST for TCP, an
//! ICMP/ICMPv6 destination unreachable (port unreachable for UDP, administratively
//! prohibited otherwise) quoting the offending datagram.

use std::net::Ipv4Addr;

use crate::checksum::{checksum, finish, pseudo4, pseudo6, sum};
use crate::packet::{
    IcmpKind, Packet, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST,
    TCP_SYN,
};

/// IPv6's minimum MTU bounds the ICMPv6 error (RFC 4443 §2.4(c)); IPv4 quotes 576 - 28 at most.
const V6_MAX: usize = 1280;
const V4_MAX: usize = 576;

/// Whether this packet may be answered at all: never an ICMP error or a RST (no loops).
pub fn answerable(p: &Packet) -> bool {
    if p.tuple.proto == PROTO_TCP {
        return p.tcp_flags & TCP_RST == 0;
    }
    !matches!(p.icmp, IcmpKind::Error)
}

/// Writes the answer to `pkt` (parsed as `p`) into `out`; its length, or `None` if `out` is
/// too small or the packet gets none.
pub fn build(pkt: &[u8], p: &Packet, out: &mut [u8]) -> Option<usize> {
    if !answerable(p) {
        return None;
    }
    let ip_len = if p.tuple.v6 { 40 } else { 20 };
    if p.tuple.proto == PROTO_TCP && !matches!(p.frag, crate::packet::Frag::Later { .. }) {
        let l4 = pkt.get(p.l4_off..p.len)?;
        let len = ip_len + 20;
        let o = out.get_mut(..len)?;
        o.fill(0);
        let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
        let ack = u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]);
        let doff = usize::from(l4[12] >> 4) * 4;
        let payload = l4.len().saturating_sub(doff) as u32;
        let t = &mut o[ip_len..];
        t[0..2].copy_from_slice(&l4[2..4]);
        t[2..4].copy_from_slice(&l4[0..2]);
        if p.tcp_flags & TCP_ACK != 0 {
            t[4..8].copy_from_slice(&ack.to_be_bytes());
            t[13] = TCP_RST;
        } else {
            let n = payload
                + u32::from(p.tcp_flags & TCP_SYN != 0)
                + u32::from(p.tcp_flags & TCP_FIN != 0);
            t[8..12].copy_from_slice(&seq.wrapping_add(n).to_be_bytes());
            t[13] = TCP_RST | TCP_ACK;
        }
        t[12] = 5 << 4;
        ip_header(pkt, p, o, PROTO_TCP, len);
        let ps = pseudo(pkt, p, PROTO_TCP, 20);
        let c = finish(sum(ps, &o[ip_len..len]));
        o[ip_len + 16..ip_len + 18].copy_from_slice(&c.to_be_bytes());
        return Some(len);
    }
    let (proto, ty, code, max) = if p.tuple.v6 {
        (
            PROTO_ICMPV6,
            1u8,
            if p.tuple.proto == PROTO_UDP { 4 } else { 1 },
            V6_MAX,
        )
    } else {
        (
            PROTO_ICMP,
            3u8,
            if p.tuple.proto == PROTO_UDP { 3 } else { 13 },
            V4_MAX,
        )
    };
    let quote = p.len.min(max - ip_len - 8).min(pkt.len());
    let len = ip_len + 8 + quote;
    let o = out.get_mut(..len)?;
    o.fill(0);
    o[ip_len] = ty;
    o[ip_len + 1] = code;
    o[ip_len + 8..].copy_from_slice(&pkt[..quote]);
    ip_header(pkt, p, o, proto, len);
    let c = if p.tuple.v6 {
        finish(sum(pseudo(pkt, p, proto, len - ip_len), &o[ip_len..]))
    } else {
        checksum(&o[ip_len..])
    };
    o[ip_len + 2..ip_len + 4].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// The reply's IP header: addresses swapped, TTL/hop limit 64.
fn ip_header(pkt: &[u8], p: &Packet, o: &mut [u8], proto: u8, len: usize) {
    if p.tuple.v6 {
        o[0] = 0x60;
        o[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        o[6] = proto;
        o[7] = 64;
        o[8..24].copy_from_slice(&pkt[24..40]);
        o[24..40].copy_from_slice(&pkt[8..24]);
    } else {
        o[0] = 0x45;
        o[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        o[6] = 0x40;
        o[8] = 64;
        o[9] = proto;
        o[12..16].copy_from_slice(&pkt[16..20]);
        o[16..20].copy_from_slice(&pkt[12..16]);
        let c = checksum(&o[..20]);
        o[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// The reply's pseudo-header sum (its source is the packet's destination).
fn pseudo(pkt: &[u8], p: &Packet, proto: u8, l4len: usize) -> u32 {
    let at = |o: usize| -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&pkt[o..o + 16]);
        a
    };
    let at4 = |o: usize| Ipv4Addr::new(pkt[o], pkt[o + 1], pkt[o + 2], pkt[o + 3]);
    if p.tuple.v6 {
        pseudo6(&at(24).into(), &at(8).into(), proto, l4len as u32)
    } else {
        pseudo4(at4(16), at4(12), proto, l4len as u16)
    }
}
