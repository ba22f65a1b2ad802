//! ARP replies on behalf of the gateway and of other ports, so ARP never floods a network.

use crate::packet::parse::{ArpPkt, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::packet::MIN_FRAME;
use crate::types::MacAddr;

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// Writes an ARP reply to `req` saying `req.tpa` is at `answer`; returns the frame length,
/// or 0 if `out` is too small.
pub fn build_reply(req: &ArpPkt, answer: MacAddr, out: &mut [u8]) -> usize {
    if out.len() < MIN_FRAME {
        return 0;
    }
    out[..MIN_FRAME].fill(0);
    out[0..6].copy_from_slice(&req.sha.0);
    out[6..12].copy_from_slice(&answer.0);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    out[14..16].copy_from_slice(&1u16.to_be_bytes());
    out[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    out[18] = 6;
    out[19] = 4;
    out[20..22].copy_from_slice(&OP_REPLY.to_be_bytes());
    out[22..28].copy_from_slice(&answer.0);
    out[28..32].copy_from_slice(&req.tpa.octets());
    out[32..38].copy_from_slice(&req.sha.0);
    out[38..42].copy_from_slice(&req.spa.octets());
    MIN_FRAME
}

/// Writes a broadcast ARP request from (`sha`, `spa`) asking for `tpa`; returns the frame
/// length, or 0 if `out` is too small.
pub fn build_request(
    sha: MacAddr,
    spa: std::net::Ipv4Addr,
    tpa: std::net::Ipv4Addr,
    out: &mut [u8],
) -> usize {
    if out.len() < MIN_FRAME {
        return 0;
    }
    out[..MIN_FRAME].fill(0);
    out[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    out[6..12].copy_from_slice(&sha.0);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    out[14..16].copy_from_slice(&1u16.to_be_bytes());
    out[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    out[18] = 6;
    out[19] = 4;
    out[20..22].copy_from_slice(&OP_REQUEST.to_be_bytes());
    out[22..28].copy_from_slice(&sha.0);
    out[28..32].copy_from_slice(&spa.octets());
    out[38..42].copy_from_slice(&tpa.octets());
    MIN_FRAME
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{parse, L3};
    use std::net::Ipv4Addr;

    #[test]
    fn reply_parses_back() {
        let req = ArpPkt {
            op: OP_REQUEST,
            sha: MacAddr([2, 0, 0, 0, 0, 2]),
            spa: Ipv4Addr::new(10, 0, 0, 2),
            tha: MacAddr::ZERO,
            tpa: Ipv4Addr::new(10, 0, 0, 1),
        };
        let gw = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut buf = [0u8; 64];
        let n = build_reply(&req, gw, &mut buf);
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(p.dst, req.sha);
        assert_eq!(p.src, gw);
        let L3::Arp(a) = p.l3 else { panic!() };
        assert_eq!(
            (a.op, a.sha, a.spa, a.tha, a.tpa),
            (OP_REPLY, gw, req.tpa, req.sha, req.spa)
        );
        assert_eq!(build_reply(&req, gw, &mut [0u8; 10]), 0);
    }
}
