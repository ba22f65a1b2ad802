//! Zero-copy, allocation-free parser for the first bytes of an Ethernet frame.
//!
//! The datapath copies a small header window out of guest memory and parses that copy, never
//! guest memory itself, so a guest rewriting its buffer mid-flight cannot make the switch act
//! on headers different from the ones it checked.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::types::MacAddr;

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the header it claims to carry.
    Truncated,
    /// Header fields that cannot be right (IPv4 IHL < 5, wrong version, bad ARP sizes).
    Invalid,
}

/// A parsed frame: addresses needed for switching plus the bits local responders need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub l3: L3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    Arp(ArpPkt),
    Ipv4(Ipv4Pkt),
    Ipv6(Ipv6Pkt),
    /// 802.1Q / 802.1ad tagged.
    Vlan,
    Other(u16),
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpPkt {
    pub op: u16,
    pub sha: MacAddr,
    pub spa: Ipv4Addr,
    pub tha: MacAddr,
    pub tpa: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Pkt {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// Offset of the L4 header from the start of the frame.
    pub l4_off: usize,
    /// UDP (source, destination) ports when this is an unfragmented-first UDP datagram.
    pub udp: Option<(u16, u16)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Pkt {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next: u8,
    pub hop_limit: u8,
    pub l4_off: usize,
    /// ICMPv6 type, when the next header is ICMPv6 directly.
    pub icmp_type: Option<u8>,
}

fn be16(b: &[u8], off: usize) -> Result<u16, ParseError> {
    match b.get(off..off + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(ParseError::Truncated),
    }
}

fn ip4(b: &[u8], off: usize) -> Result<Ipv4Addr, ParseError> {
    let s: [u8; 4] = b
        .get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(ParseError::Truncated)?;
    Ok(Ipv4Addr::from(s))
}

fn ip6(b: &[u8], off: usize) -> Result<Ipv6Addr, ParseError> {
    let s: [u8; 16] = b
        .get(off..off + 16)
        .and_then(|s| s.try_into().ok())
        .ok_or(ParseError::Truncated)?;
    Ok(Ipv6Addr::from(s))
}

fn mac(b: &[u8], off: usize) -> Result<MacAddr, ParseError> {
    b.get(off..)
        .and_then(MacAddr::from_slice)
        .ok_or(ParseError::Truncated)
}

/// Parses the Ethernet header and the L3 header that follows it.
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    if frame.len() < ETH_HLEN {
        return Err(ParseError::Truncated);
    }
    let dst = mac(frame, 0)?;
    let src = mac(frame, 6)?;
    let ethertype = be16(frame, 12)?;
    let l3 = match ethertype {
        ETHERTYPE_ARP => L3::Arp(parse_arp(frame)?),
        ETHERTYPE_IPV4 => L3::Ipv4(parse_ipv4(frame)?),
        ETHERTYPE_IPV6 => L3::Ipv6(parse_ipv6(frame)?),
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => L3::Vlan,
        other => L3::Other(other),
    };
    Ok(Parsed { dst, src, l3 })
}

fn parse_arp(f: &[u8]) -> Result<ArpPkt, ParseError> {
    let o = ETH_HLEN;
    if f.len() < o + 28 {
        return Err(ParseError::Truncated);
    }
    // Ethernet (1) / IPv4 (0x0800), 6-byte MACs, 4-byte addresses: the only ARP we speak.
    if be16(f, o)? != 1 || be16(f, o + 2)? != ETHERTYPE_IPV4 || f[o + 4] != 6 || f[o + 5] != 4 {
        return Err(ParseError::Invalid);
    }
    Ok(ArpPkt {
        op: be16(f, o + 6)?,
        sha: mac(f, o + 8)?,
        spa: ip4(f, o + 14)?,
        tha: mac(f, o + 18)?,
        tpa: ip4(f, o + 24)?,
    })
}

fn parse_ipv4(f: &[u8]) -> Result<Ipv4Pkt, ParseError> {
    let o = ETH_HLEN;
    let vihl = *f.get(o).ok_or(ParseError::Truncated)?;
    if vihl >> 4 != 4 {
        return Err(ParseError::Invalid);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < 20 {
        return Err(ParseError::Invalid);
    }
    if f.len() < o + ihl {
        return Err(ParseError::Truncated);
    }
    let frag = be16(f, o + 6)?;
    let first_fragment = frag & 0x1fff == 0;
    let proto = f[o + 9];
    let l4_off = o + ihl;
    let udp = if proto == IPPROTO_UDP && first_fragment {
        match (be16(f, l4_off), be16(f, l4_off + 2)) {
            (Ok(s), Ok(d)) => Some((s, d)),
            _ => None,
        }
    } else {
        None
    };
    Ok(Ipv4Pkt {
        src: ip4(f, o + 12)?,
        dst: ip4(f, o + 16)?,
        proto,
        l4_off,
        udp,
    })
}

fn parse_ipv6(f: &[u8]) -> Result<Ipv6Pkt, ParseError> {
    let o = ETH_HLEN;
    if f.len() < o + 40 {
        return Err(ParseError::Truncated);
    }
    if f[o] >> 4 != 6 {
        return Err(ParseError::Invalid);
    }
    let next = f[o + 6];
    let l4_off = o + 40;
    let icmp_type = if next == IPPROTO_ICMPV6 {
        f.get(l4_off).copied()
    } else {
        None
    };
    Ok(Ipv6Pkt {
        src: ip6(f, o + 8)?,
        dst: ip6(f, o + 24)?,
        next,
        hop_limit: f[o + 7],
        l4_off,
        icmp_type,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an Ethernet + IPv4 + UDP frame for tests.
    pub fn udp4(
        src: MacAddr,
        dst: MacAddr,
        sip: Ipv4Addr,
        dip: Ipv4Addr,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let tot = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&tot.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
        f.extend_from_slice(&sip.octets());
        f.extend_from_slice(&dip.octets());
        f.extend_from_slice(&1234u16.to_be_bytes());
        f.extend_from_slice(&5678u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn parses_udp4() {
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        let f = udp4(
            a,
            MacAddr::BROADCAST,
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 3),
            b"hi",
        );
        let p = parse(&f).unwrap();
        assert_eq!(p.src, a);
        match p.l3 {
            L3::Ipv4(ip) => {
                assert_eq!(ip.dst, Ipv4Addr::new(10, 0, 0, 3));
                assert_eq!(ip.udp, Some((1234, 5678)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_truncated_and_invalid() {
        assert_eq!(parse(&[0u8; 13]), Err(ParseError::Truncated));
        let mut f = udp4(
            MacAddr([2; 6]),
            MacAddr([4; 6]),
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            b"",
        );
        f[14] = 0x44; // IHL 4
        assert_eq!(parse(&f), Err(ParseError::Invalid));
        f[14] = 0x4f; // IHL 15 = 60 bytes, more than the frame holds
        assert_eq!(parse(&f), Err(ParseError::Truncated));
        let mut v = f.clone();
        v[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        assert_eq!(parse(&v).unwrap().l3, L3::Vlan);
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(parse(&arp[..30]), Err(ParseError::Truncated));
    }
}
