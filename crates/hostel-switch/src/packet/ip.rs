//! IP header work on frames the switch holds in its own buffers (an edge's scratch, a copy
//! out of the external ring): length checks against the frame, TTL / hop limit, addresses,
//! the ICMP time exceeded the edge sends, and completing an offloaded checksum.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packet::checksum;
use crate::packet::parse::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN};
use crate::stats::DropReason;
use crate::types::MacAddr;

/// The length of the Ethernet frame in `buf` up to the end of its IP packet (Ethernet
/// padding cut off), after checking the IP header against the frame: version, header
/// length, and a total length that fits.
pub fn ip_frame_len(buf: &[u8]) -> Result<usize, DropReason> {
    let ip = buf.get(ETH_HLEN..).ok_or(DropReason::Malformed)?;
    let et = u16::from_be_bytes([buf[12], buf[13]]);
    let len = match (et, ip.first().map(|b| b >> 4)) {
        (ETHERTYPE_IPV4, Some(4)) if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ihl < 20 || tot < ihl || tot > ip.len() {
                return Err(DropReason::Malformed);
            }
            tot
        }
        (ETHERTYPE_IPV6, Some(6)) if ip.len() >= 40 => {
            let tot = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if tot > ip.len() {
                return Err(DropReason::Malformed);
            }
            tot
        }
        _ => return Err(DropReason::Malformed),
    };
    Ok(ETH_HLEN + len)
}

/// Decrements the TTL (IPv4, with the RFC 1624 incremental checksum update) or hop limit
/// (IPv6) of the packet in the frame `buf`, checked by [`ip_frame_len`].
pub fn dec_ttl(buf: &mut [u8]) -> Result<(), DropReason> {
    match buf.get(ETH_HLEN).map(|b| b >> 4) {
        Some(4) if buf.len() >= ETH_HLEN + 20 => {
            let ttl = buf[ETH_HLEN + 8];
            if ttl <= 1 {
                return Err(DropReason::TtlExceeded);
            }
            buf[ETH_HLEN + 8] = ttl - 1;
            // The TTL is the high byte of its 16-bit word: the sum drops by 0x0100.
            let old = u16::from_be_bytes([buf[ETH_HLEN + 10], buf[ETH_HLEN + 11]]);
            let sum = u32::from(!old) + u32::from(!0x0100u16);
            let c = !(((sum & 0xffff) + (sum >> 16)) as u16);
            buf[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
            Ok(())
        }
        Some(6) if buf.len() >= ETH_HLEN + 40 => {
            let hl = buf[ETH_HLEN + 7];
            if hl <= 1 {
                return Err(DropReason::TtlExceeded);
            }
            buf[ETH_HLEN + 7] = hl - 1;
            Ok(())
        }
        _ => Err(DropReason::Malformed),
    }
}

/// The destination address of the packet in a frame checked by [`ip_frame_len`].
pub fn dst_ip(buf: &[u8]) -> Result<IpAddr, DropReason> {
    let ip = buf.get(ETH_HLEN..).ok_or(DropReason::Malformed)?;
    match ip.first().map(|b| b >> 4) {
        Some(4) => ip
            .get(16..20)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        Some(6) => ip
            .get(24..40)
            .and_then(|s| <[u8; 16]>::try_from(s).ok())
            .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
    .ok_or(DropReason::Malformed)
}

/// The source address of the packet in a frame checked by [`ip_frame_len`].
pub fn src_ip(buf: &[u8]) -> Result<IpAddr, DropReason> {
    let ip = buf.get(ETH_HLEN..).ok_or(DropReason::Malformed)?;
    match ip.first().map(|b| b >> 4) {
        Some(4) => ip
            .get(12..16)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        Some(6) => ip
            .get(8..24)
            .and_then(|s| <[u8; 16]>::try_from(s).ok())
            .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
    .ok_or(DropReason::Malformed)
}

/// Writes an ICMPv4 time exceeded (in transit) from `gw` (at `gw_mac`) back to the sender
/// of the IPv4 frame `orig`, quoting its IP header and 8 bytes, into `out`; returns the
/// frame length, or 0 for IPv6 (see [`time_exceeded6`]) and for ICMP other than echo
/// requests (never an error about an error, RFC 1122).
pub fn time_exceeded4(orig: &[u8], gw: Ipv4Addr, gw_mac: MacAddr, out: &mut [u8]) -> usize {
    let Some(ip) = orig.get(ETH_HLEN..) else {
        return 0;
    };
    if ip.first().map(|b| b >> 4) != Some(4) || ip.len() < 20 {
        return 0;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] == 1 && ip.get(ihl) != Some(&8) {
        return 0;
    }
    let quote = ip.len().min(ihl + 8);
    let total = 20 + 8 + quote;
    if out.len() < ETH_HLEN + total {
        return 0;
    }
    let f = &mut out[..ETH_HLEN + total];
    f[0..6].copy_from_slice(&orig[6..12]);
    f[6..12].copy_from_slice(&gw_mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let h = &mut f[ETH_HLEN..ETH_HLEN + 20];
    h.copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[12..16].copy_from_slice(&gw.octets());
    h[16..20].copy_from_slice(&ip[12..16]);
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut f[ETH_HLEN + 20..];
    icmp[..8].fill(0);
    icmp[0] = 11;
    icmp[8..].copy_from_slice(&ip[..quote]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ETH_HLEN + total
}

/// The ICMPv6 "hop limit exceeded in transit" (type 3, code 0, RFC 4443 §3.3) from gateway
/// `gw` (`gw_mac`) about the IPv6 frame `orig`, quoting as much of it as keeps the error
/// within the minimum MTU (1280 bytes), into `out`; returns the frame length, or 0 for
/// anything but IPv6 and for an ICMPv6 error (never an error about an error, RFC 4443 §2.4;
/// the next header is looked at directly, an error behind extension headers is quoted).
pub fn time_exceeded6(orig: &[u8], gw: Ipv6Addr, gw_mac: MacAddr, out: &mut [u8]) -> usize {
    const MIN_MTU: usize = 1280;
    let Some(ip) = orig.get(ETH_HLEN..) else {
        return 0;
    };
    if ip.first().map(|b| b >> 4) != Some(6) || ip.len() < 40 {
        return 0;
    }
    if ip[6] == 58 && ip.get(40).is_some_and(|t| *t < 128) {
        return 0;
    }
    let quote = ip.len().min(MIN_MTU - 40 - 8);
    let total = 40 + 8 + quote;
    if out.len() < ETH_HLEN + total {
        return 0;
    }
    let f = &mut out[..ETH_HLEN + total];
    f[0..6].copy_from_slice(&orig[6..12]);
    f[6..12].copy_from_slice(&gw_mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let src: [u8; 16] = ip[8..24].try_into().unwrap_or([0; 16]);
    let h = &mut f[ETH_HLEN..ETH_HLEN + 40];
    h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 58, 64]);
    h[4..6].copy_from_slice(&((8 + quote) as u16).to_be_bytes());
    h[8..24].copy_from_slice(&gw.octets());
    h[24..40].copy_from_slice(&src);
    let icmp = &mut f[ETH_HLEN + 40..];
    icmp[..8].fill(0);
    icmp[0] = 3;
    icmp[8..].copy_from_slice(&ip[..quote]);
    let acc = checksum::pseudo6(&gw, &Ipv6Addr::from(src), 58, (8 + quote) as u32);
    let c = checksum::finish(checksum::sum(acc, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ETH_HLEN + total
}

/// Fills in a checksum a guest left to the device (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, summed
/// from `start`, stored at `start + offset`): the wire gets only complete checksums.
pub fn complete_csum(buf: &mut [u8], start: usize, offset: usize) -> Result<(), DropReason> {
    let at = start + offset;
    if at + 2 > buf.len() || start > buf.len() {
        return Err(DropReason::BadVnetHeader);
    }
    // The guest put the pseudo-header sum in the field; summing from `start` includes it.
    let c = checksum::checksum(&buf[start..]);
    buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Completes the TCP or UDP checksum of a frame the kernel hands over with it left partial
/// (`TP_STATUS_CSUMNOTREADY`: sent by the host's own stack through a veth or TAP with
/// checksum offload on, so the field holds only the pseudo-header sum). Without this, every
/// such segment would reach a guest with a checksum it rejects. Only an unfragmented (or
/// first-fragment-free) IPv4 packet or an IPv6 packet whose next header is TCP or UDP is
/// touched; anything else, or anything whose lengths do not add up, is left as it came.
pub fn complete_partial_l4(frame: &mut [u8]) {
    if frame.len() < ETH_HLEN {
        return;
    }
    let ip = ETH_HLEN;
    let (l4, end, proto) = match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_IPV4 => {
            let Some(h) = frame.get(ip..ip + 20) else {
                return;
            };
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            // A fragment's checksum covers the whole datagram: never partial per fragment.
            if h[0] >> 4 != 4 || ihl < 20 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return;
            }
            (ip + ihl, ip + total, h[9])
        }
        ETHERTYPE_IPV6 => {
            let Some(h) = frame.get(ip..ip + 40) else {
                return;
            };
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            (ip + 40, ip + 40 + payload, h[6])
        }
        _ => return,
    };
    let offset = match proto {
        6 => 16,
        17 => 6,
        _ => return,
    };
    let Some(pkt) = frame.get_mut(..end) else {
        return;
    };
    if l4 > end || complete_csum(pkt, l4, offset).is_err() {
        return;
    }
    // UDP sends a computed zero as all ones (zero means "no checksum").
    if proto == 17 && pkt[l4 + 6..l4 + 8] == [0, 0] {
        pkt[l4 + 6..l4 + 8].copy_from_slice(&[0xff, 0xff]);
    }
}

/// Puts back the partial checksum a segmentation offload expects (the folded pseudo-header
/// sum, for the packet's current addresses and L4 length, at `start + offset`), after
/// [`complete_csum`] made it whole for the edge's filter. TCP only (the only GSO offered);
/// an IPv6 packet with extension headers before it is refused.
pub fn partial_csum(buf: &mut [u8], start: usize, offset: usize) -> Result<(), DropReason> {
    let at = start + offset;
    if at + 2 > buf.len() || start < ETH_HLEN + 20 {
        return Err(DropReason::BadVnetHeader);
    }
    let l4_len = buf.len() - start;
    let ip = &buf[ETH_HLEN..];
    let acc = match ip[0] >> 4 {
        4 => {
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let len = u16::try_from(l4_len).map_err(|_| DropReason::TooLong)?;
            checksum::pseudo4(src, dst, ip[9], len)
        }
        6 if ip.len() >= 40 && ip[6] == 6 => {
            let (Ok(src), Ok(dst)) = (src_ip(buf), dst_ip(buf)) else {
                return Err(DropReason::Malformed);
            };
            let (IpAddr::V6(src), IpAddr::V6(dst)) = (src, dst) else {
                return Err(DropReason::Malformed);
            };
            checksum::pseudo6(&src, &dst, 6, l4_len as u32)
        }
        _ => return Err(DropReason::GsoUnsupported),
    };
    let folded = !checksum::finish(acc);
    buf[at..at + 2].copy_from_slice(&folded.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse::tests::udp4;

    fn frame() -> Vec<u8> {
        let mut f = udp4(
            MacAddr([2; 6]),
            MacAddr([4; 6]),
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(198, 51, 100, 7),
            b"payload",
        );
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn ttl_decrements_with_a_valid_checksum_and_runs_out() {
        let mut f = frame();
        for ttl in (2..=64u8).rev() {
            assert_eq!(f[22], ttl);
            dec_ttl(&mut f).unwrap();
            assert_eq!(checksum::checksum(&f[14..34]), 0, "checksum at ttl {ttl}");
        }
        assert_eq!(dec_ttl(&mut f), Err(DropReason::TtlExceeded));
    }

    #[test]
    fn ip_lengths_are_checked_against_the_frame() {
        let mut f = frame();
        let real = f.len();
        f.extend_from_slice(&[0; 20]); // Ethernet padding
        assert_eq!(ip_frame_len(&f), Ok(real));
        f[16..18].copy_from_slice(&9000u16.to_be_bytes());
        assert_eq!(ip_frame_len(&f), Err(DropReason::Malformed));
        let mut f = frame();
        f[14] = 0x43;
        assert_eq!(ip_frame_len(&f), Err(DropReason::Malformed));
        assert_eq!(ip_frame_len(&f[..20]), Err(DropReason::Malformed));
        assert_eq!(ip_frame_len(&f[..5]), Err(DropReason::Malformed));
        assert_eq!(
            dst_ip(&frame()),
            Ok(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)))
        );
    }

    #[test]
    fn time_exceeded_quotes_the_packet_and_checks_out() {
        let f = frame();
        let gw = Ipv4Addr::new(192, 0, 2, 1);
        let mut out = [0u8; 200];
        let n = time_exceeded4(&f, gw, MacAddr([2, 0, 0, 0, 0, 1]), &mut out);
        assert_eq!(n, 14 + 20 + 8 + 28);
        let r = &out[..n];
        assert_eq!(&r[0..6], &f[6..12]);
        assert_eq!(checksum::checksum(&r[14..34]), 0);
        assert_eq!(checksum::checksum(&r[34..]), 0);
        assert_eq!((r[23], r[34]), (1, 11));
        assert_eq!(&r[26..30], &gw.octets());
        assert_eq!(&r[30..34], &f[26..30]);
        assert_eq!(&r[42..], &f[14..42]);
        let mut icmp = f.clone();
        icmp[23] = 1;
        icmp[34] = 3; // an ICMP error: no error about it
        assert_eq!(time_exceeded4(&icmp, gw, MacAddr([2; 6]), &mut out), 0);
        icmp[34] = 8; // an echo request (traceroute -I): answered
        assert!(time_exceeded4(&icmp, gw, MacAddr([2; 6]), &mut out) > 0);
    }

    #[test]
    fn hop_limit_exceeded_quotes_the_packet_and_checks_out() {
        let vm: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let far: Ipv6Addr = "2001:db8:ffff::9".parse().unwrap();
        let gw: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut f = vec![0u8; 14 + 40 + 8 + 2000];
        f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 5]);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&2008u16.to_be_bytes());
        f[20] = 17;
        f[21] = 1;
        f[22..38].copy_from_slice(&vm.octets());
        f[38..54].copy_from_slice(&far.octets());
        let mut out = [0u8; 1600];
        let n = time_exceeded6(&f, gw, MacAddr([2, 0, 0, 0, 0, 1]), &mut out);
        assert_eq!(n, 14 + 1280, "the error stays within the minimum MTU");
        let r = &out[..n];
        assert_eq!(&r[0..6], &f[6..12]);
        assert_eq!((r[20], r[54]), (58, 3), "ICMPv6 time exceeded");
        assert_eq!(&r[22..38], &gw.octets());
        assert_eq!(&r[38..54], &vm.octets());
        assert_eq!(&r[62..], &f[14..14 + 1232]);
        let acc = checksum::pseudo6(&gw, &vm, 58, 1240);
        assert_eq!(checksum::finish(checksum::sum(acc, &r[54..])), 0);
        // No error about an ICMPv6 error; an echo request (traceroute -I) is answered.
        let mut icmp = f.clone();
        icmp[20] = 58;
        icmp[54] = 1;
        assert_eq!(time_exceeded6(&icmp, gw, MacAddr([2; 6]), &mut out), 0);
        icmp[54] = 128;
        assert!(time_exceeded6(&icmp, gw, MacAddr([2; 6]), &mut out) > 0);
        assert_eq!(time_exceeded6(&frame(), gw, MacAddr([2; 6]), &mut out), 0);
    }

    #[test]
    fn partial_checksums_are_completed() {
        let mut f = frame();
        let udp = 34;
        let len = (f.len() - udp) as u16;
        let pseudo = checksum::pseudo4(
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(198, 51, 100, 7),
            17,
            len,
        );
        // What a guest with checksum offload leaves: the folded pseudo-header sum.
        let mut p = pseudo;
        while p > 0xffff {
            p = (p & 0xffff) + (p >> 16);
        }
        f[udp + 6..udp + 8].copy_from_slice(&(p as u16).to_be_bytes());
        complete_csum(&mut f, udp, 6).unwrap();
        let acc = checksum::sum(pseudo, &f[udp..]);
        assert_eq!(checksum::finish(acc), 0);
        assert_eq!(
            complete_csum(&mut f, 4000, 6),
            Err(DropReason::BadVnetHeader)
        );
    }
}
