//! Parsing an untrusted IP datagram (no link header: the switch hands over the IP packet) into
//! the few fields the firewall needs. Every offset is checked against the buffer; any length,
//! IHL or extension-header chain is handled without panicking, with bounded work.

use crate::DropReason;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// IPv6 extension headers walked before giving up (RFC 8200 recommends an order with at most
/// one of each; 8 covers every legitimate chain).
const MAX_EXT_HEADERS: usize = 8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A flow's identity. IPv4 addresses sit in the low 32 bits of the `u128`s. For ICMP echo both
/// ports carry the identifier, so a reply's reversed tuple equals the request's; other ICMP has 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Tuple {
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub v6: bool,
}

impl Tuple {
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }
}

/// Where a datagram sits in a fragmented original.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    Whole,
    /// Offset 0 with more to come: carries the transport header.
    First {
        id: u32,
    },
    /// Offset > 0: no transport header to judge.
    Later {
        id: u32,
    },
}

/// What an ICMP/ICMPv6 message is to the firewall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    NotIcmp,
    EchoRequest,
    EchoReply,
    /// An error (unreachable, time exceeded, ...) quoting the header of the packet that caused it.
    Error,
    Other,
}

/// The header quoted inside an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    pub tuple: Tuple,
    /// Offset of the quoted IP header in the outer buffer.
    pub l3_off: usize,
    /// Offset of the quoted transport header in the outer buffer.
    pub l4_off: usize,
    pub icmp: IcmpKind,
}

/// The fields of one datagram the firewall looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub tuple: Tuple,
    /// What rules match as ports: TCP/UDP ports, or ICMP type and code.
    pub match_sport: u16,
    pub match_dport: u16,
    pub icmp: IcmpKind,
    pub tcp_flags: u8,
    pub l4_off: usize,
    /// The datagram's length by its own header (never more than the buffer).
    pub len: usize,
    pub frag: Frag,
    pub inner: Option<Inner>,
}

impl Packet {
    pub fn is_v6(&self) -> bool {
        self.tuple.v6
    }
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// Parses an IPv4 or IPv6 datagram.
pub fn parse(buf: &[u8]) -> Result<Packet, DropReason> {
    match buf.first().map(|b| b >> 4) {
        Some(4) => parse_v4(buf),
        Some(6) => parse_v6(buf),
        _ => Err(DropReason::Malformed),
    }
}

struct L3 {
    tuple: Tuple,
    l4_off: usize,
    len: usize,
    frag: Frag,
}

fn l3_v4(buf: &[u8], check_total: bool) -> Result<L3, DropReason> {
    if buf.len() < 20 || buf[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    if ihl < 20 || ihl > buf.len() {
        return Err(DropReason::Malformed);
    }
    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let len = if check_total {
        if total < ihl || total > buf.len() {
            return Err(DropReason::Malformed);
        }
        total
    } else {
        // A quoted header's datagram was cut by the ICMP sender: take what is there.
        buf.len()
    };
    let fo = u16::from_be_bytes([buf[6], buf[7]]);
    let offset = fo & 0x1fff;
    let more = fo & 0x2000 != 0;
    let id = u32::from(u16::from_be_bytes([buf[4], buf[5]]));
    let frag = match (offset, more) {
        (0, false) => Frag::Whole,
        (0, true) => Frag::First { id },
        _ => Frag::Later { id },
    };
    let src = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
    let dst = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]);
    Ok(L3 {
        tuple: Tuple {
            src: u128::from(src),
            dst: u128::from(dst),
            sport: 0,
            dport: 0,
            proto: buf[9],
            v6: false,
        },
        l4_off: ihl,
        len,
        frag,
    })
}

fn l3_v6(buf: &[u8], check_total: bool) -> Result<L3, DropReason> {
    if buf.len() < 40 || buf[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let payload = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let len = if check_total {
        // Payload length 0 means a jumbogram, which no link here carries.
        if payload == 0 || 40 + payload > buf.len() {
            return Err(DropReason::Malformed);
        }
        40 + payload
    } else {
        buf.len()
    };
    let mut src = [0u8; 16];
    src.copy_from_slice(&buf[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&buf[24..40]);
    let mut next = buf[6];
    let mut off = 40;
    let mut frag = Frag::Whole;
    let mut walked = 0;
    while matches!(next, 0 | 43 | 60 | 51 | 44) {
        walked += 1;
        if walked > MAX_EXT_HEADERS {
            return Err(DropReason::ExtensionChain);
        }
        let (nh, hl) = match (buf.get(off), buf.get(off + 1)) {
            (Some(&nh), Some(&hl)) if off + 8 <= len => (nh, usize::from(hl)),
            _ => return Err(DropReason::Malformed),
        };
        let size = match next {
            44 => {
                let fo = be16(buf, off + 2).ok_or(DropReason::Malformed)?;
                let id =
                    u32::from_be_bytes([buf[off + 4], buf[off + 5], buf[off + 6], buf[off + 7]]);
                let offset = fo >> 3;
                let more = fo & 1 != 0;
                frag = match (offset, more) {
                    (0, false) => Frag::Whole,
                    (0, true) => Frag::First { id },
                    _ => Frag::Later { id },
                };
                8
            }
            51 => (hl + 2) * 4,
            _ => (hl + 1) * 8,
        };
        next = nh;
        off += size;
        if off > len {
            return Err(DropReason::Malformed);
        }
        if matches!(frag, Frag::Later { .. }) {
            // What follows is payload of the middle of a datagram, not a header.
            break;
        }
    }
    Ok(L3 {
        tuple: Tuple {
            src: u128::from_be_bytes(src),
            dst: u128::from_be_bytes(dst),
            sport: 0,
            dport: 0,
            proto: next,
            v6: true,
        },
        l4_off: off,
        len,
        frag,
    })
}

fn icmp_kind(v6: bool, ty: u8) -> IcmpKind {
    match (v6, ty) {
        (false, 8) | (true, 128) => IcmpKind::EchoRequest,
        (false, 0) | (true, 129) => IcmpKind::EchoReply,
        (false, 3 | 4 | 5 | 11 | 12) | (true, 1..=4) => IcmpKind::Error,
        _ => IcmpKind::Other,
    }
}

fn is_icmp(t: &Tuple) -> bool {
    (!t.v6 && t.proto == PROTO_ICMP) || (t.v6 && t.proto == PROTO_ICMPV6)
}

fn parse_v4(buf: &[u8]) -> Result<Packet, DropReason> {
    finish(buf, l3_v4(buf, true)?, true)
}

fn parse_v6(buf: &[u8]) -> Result<Packet, DropReason> {
    finish(buf, l3_v6(buf, true)?, true)
}

/// Reads the transport header; `outer` allows one level of ICMP-error quoting.
fn finish(buf: &[u8], l3: L3, outer: bool) -> Result<Packet, DropReason> {
    let L3 {
        mut tuple,
        l4_off,
        len,
        frag,
    } = l3;
    let mut p = Packet {
        tuple,
        match_sport: 0,
        match_dport: 0,
        icmp: IcmpKind::NotIcmp,
        tcp_flags: 0,
        l4_off,
        len,
        frag,
        inner: None,
    };
    if matches!(frag, Frag::Later { .. }) {
        return Ok(p);
    }
    let l4 = buf.get(l4_off..len).ok_or(DropReason::Malformed)?;
    // A quoted header only needs its first 8 bytes (all an ICMPv4 error must quote).
    let need = |n: usize| if outer { n } else { 8 };
    match tuple.proto {
        PROTO_TCP => {
            if l4.len() < need(20) {
                return Err(DropReason::Malformed);
            }
            if outer && ((l4[12] >> 4) < 5 || usize::from(l4[12] >> 4) * 4 > l4.len()) {
                return Err(DropReason::Malformed);
            }
            tuple.sport = u16::from_be_bytes([l4[0], l4[1]]);
            tuple.dport = u16::from_be_bytes([l4[2], l4[3]]);
            p.tcp_flags = l4.get(13).copied().unwrap_or(0);
            p.match_sport = tuple.sport;
            p.match_dport = tuple.dport;
        }
        PROTO_UDP => {
            if l4.len() < 8 {
                return Err(DropReason::Malformed);
            }
            tuple.sport = u16::from_be_bytes([l4[0], l4[1]]);
            tuple.dport = u16::from_be_bytes([l4[2], l4[3]]);
            p.match_sport = tuple.sport;
            p.match_dport = tuple.dport;
        }
        _ if is_icmp(&tuple) => {
            if l4.len() < 8 {
                return Err(DropReason::Malformed);
            }
            let kind = icmp_kind(tuple.v6, l4[0]);
            p.icmp = kind;
            p.match_sport = u16::from(l4[0]);
            p.match_dport = u16::from(l4[1]);
            match kind {
                IcmpKind::EchoRequest | IcmpKind::EchoReply => {
                    let id = u16::from_be_bytes([l4[4], l4[5]]);
                    tuple.sport = id;
                    tuple.dport = id;
                }
                IcmpKind::Error if outer => {
                    let q = l4_off + 8;
                    let quoted = buf.get(q..len).ok_or(DropReason::Malformed)?;
                    let inner_l3 = if tuple.v6 {
                        l3_v6(quoted, false)
                    } else {
                        l3_v4(quoted, false)
                    }
                    .map_err(|_| DropReason::Malformed)?;
                    if inner_l3.tuple.v6 != tuple.v6 {
                        return Err(DropReason::Malformed);
                    }
                    let ip = finish(quoted, inner_l3, false).map_err(|_| DropReason::Malformed)?;
                    p.inner = Some(Inner {
                        tuple: ip.tuple,
                        l3_off: q,
                        l4_off: q + ip.l4_off,
                        icmp: ip.icmp,
                    });
                }
                IcmpKind::Error => return Err(DropReason::Malformed),
                _ => {}
            }
        }
        _ => {}
    }
    p.tuple = tuple;
    Ok(p)
}
