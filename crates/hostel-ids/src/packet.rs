//! Decoding untrusted frames to what detection needs: addresses, ports, TCP flags and sequence,
//! ICMP type/code, TTL and the payload. Every length is checked; nothing panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The capture's link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    LinuxSll,
    RawIp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        itype: u8,
        icode: u8,
        v6: bool,
    },
    /// Another protocol, or a fragment after the first.
    Other(u8),
}

#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub l4: L4,
    pub payload: &'a [u8],
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_RST: u8 = 0x04;
pub const TCP_FIN: u8 = 0x01;

impl Packet<'_> {
    pub fn ports(&self) -> (u16, u16) {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
            _ => (0, 0),
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Decodes one captured frame; `None` for what carries no IP packet.
pub fn decode(link: Link, frame: &[u8]) -> Option<Packet<'_>> {
    let (mut ethertype, mut rest) = match link {
        Link::Ethernet => (be16(frame, 12)?, frame.get(14..)?),
        Link::LinuxSll => (be16(frame, 14)?, frame.get(16..)?),
        Link::RawIp => match frame.first()? >> 4 {
            4 => (0x0800, frame),
            6 => (0x86dd, frame),
            _ => return None,
        },
    };
    // 802.1Q / 802.1ad tags, at most two as on real links.
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            ethertype = be16(rest, 2)?;
            rest = rest.get(4..)?;
        }
    }
    match ethertype {
        0x0800 => ipv4(rest),
        0x86dd => ipv6(rest),
        _ => None,
    }
}

fn ipv4(b: &[u8]) -> Option<Packet<'_>> {
    if b.first()? >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    let total = usize::from(be16(b, 2)?);
    if ihl < 20 || total < ihl {
        return None;
    }
    // Trailing Ethernet padding is not payload; a truncated capture keeps what it has.
    let b = &b[..total.min(b.len())];
    if b.len() < 20 {
        return None;
    }
    let frag = be16(b, 6)?;
    let proto = b[9];
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let body = b.get(ihl..)?;
    let later_fragment = frag & 0x1fff != 0;
    l4(
        IpAddr::V4(src),
        IpAddr::V4(dst),
        b[8],
        proto,
        body,
        later_fragment,
        false,
    )
}

fn ipv6(b: &[u8]) -> Option<Packet<'_>> {
    if b.first()? >> 4 != 6 || b.len() < 40 {
        return None;
    }
    let plen = usize::from(be16(b, 4)?);
    let mut next = b[6];
    let hop = b[7];
    let src: [u8; 16] = b[8..24].try_into().ok()?;
    let dst: [u8; 16] = b[24..40].try_into().ok()?;
    let mut body = &b[40..(40 + plen).min(b.len())];
    let mut fragment = false;
    // Extension headers, a bounded number of them.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let len = (usize::from(*body.get(1)?) + 1) * 8;
                next = body[0];
                body = body.get(len..)?;
            }
            44 => {
                let off = be16(body, 2)? >> 3;
                fragment = fragment || off != 0;
                next = body[0];
                body = body.get(8..)?;
            }
            _ => break,
        }
    }
    let (s, d) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
    l4(
        IpAddr::V6(s),
        IpAddr::V6(d),
        hop,
        next,
        body,
        fragment,
        true,
    )
}

fn l4<'a>(
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    proto: u8,
    body: &'a [u8],
    later_fragment: bool,
    v6: bool,
) -> Option<Packet<'a>> {
    let other = Packet {
        src,
        dst,
        ttl,
        l4: L4::Other(proto),
        payload: body,
    };
    if later_fragment {
        return Some(other);
    }
    let (l4, payload) = match proto {
        6 => {
            let off = usize::from(body.get(12)? >> 4) * 4;
            if off < 20 {
                return Some(other);
            }
            let seq = u32::from_be_bytes(body.get(4..8)?.try_into().ok()?);
            let tcp = L4::Tcp {
                sport: be16(body, 0)?,
                dport: be16(body, 2)?,
                seq,
                flags: *body.get(13)?,
            };
            (tcp, body.get(off..).unwrap_or(&[]))
        }
        17 => (
            L4::Udp {
                sport: be16(body, 0)?,
                dport: be16(body, 2)?,
            },
            body.get(8..)?,
        ),
        1 | 58 if v6 == (proto == 58) => (
            L4::Icmp {
                itype: *body.first()?,
                icode: *body.get(1)?,
                v6,
            },
            body.get(8..).unwrap_or(&[]),
        ),
        _ => return Some(other),
    };
    Some(Packet {
        src,
        dst,
        ttl,
        l4,
        payload,
    })
}
