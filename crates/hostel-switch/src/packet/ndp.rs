//! IPv6 neighbour discovery, answered by the switch like ARP: neighbour solicitations for the
//! gateway or another port get a neighbour advertisement; router solicitations get a router
//! advertisement announcing the prefix as on-link.

use std::net::Ipv6Addr;

use crate::packet::checksum;
use crate::packet::parse::{Ipv6Pkt, ETHERTYPE_IPV6, IPPROTO_ICMPV6};
use crate::types::{Ipv6Cidr, MacAddr};

pub const ROUTER_SOLICIT: u8 = 133;
pub const ROUTER_ADVERT: u8 = 134;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;

/// The target address of a neighbour solicitation held in `frame`, after checking the
/// RFC 4861 validity rules that matter here (hop limit 255, code 0, length).
pub fn solicited_target(frame: &[u8], ip: &Ipv6Pkt) -> Option<Ipv6Addr> {
    if ip.icmp_type != Some(NEIGHBOR_SOLICIT) || ip.hop_limit != 255 {
        return None;
    }
    let icmp = frame.get(ip.l4_off..)?;
    if icmp.len() < 24 || icmp[1] != 0 {
        return None;
    }
    let t: [u8; 16] = icmp[8..24].try_into().ok()?;
    Some(Ipv6Addr::from(t))
}

fn ipv6_header(
    out: &mut [u8],
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    plen: u16,
) {
    out[0..6].copy_from_slice(&dst_mac.0);
    out[6..12].copy_from_slice(&src_mac.0);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    out[14..18].copy_from_slice(&[0x60, 0, 0, 0]);
    out[18..20].copy_from_slice(&plen.to_be_bytes());
    out[20] = IPPROTO_ICMPV6;
    out[21] = 255;
    out[22..38].copy_from_slice(&src.octets());
    out[38..54].copy_from_slice(&dst.octets());
}

fn fill_icmp_checksum(out: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr, len: usize) {
    let icmp = &mut out[54..54 + len];
    icmp[2] = 0;
    icmp[3] = 0;
    let acc = checksum::pseudo6(src, dst, IPPROTO_ICMPV6, len as u32);
    let c = checksum::finish(checksum::sum(acc, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
}

/// Builds a neighbour advertisement for `target` at `target_mac`, answering a solicitation
/// from (`req_mac`, `req_src`). Returns the frame length (0 if `out` is too small).
pub fn build_advert(
    req_mac: MacAddr,
    req_src: &Ipv6Addr,
    target: &Ipv6Addr,
    target_mac: MacAddr,
    router: bool,
    out: &mut [u8],
) -> usize {
    const ICMP_LEN: usize = 32; // header 4 + flags 4 + target 16 + TLLA option 8
    let total = 54 + ICMP_LEN;
    if out.len() < total {
        return 0;
    }
    // A solicitation from the unspecified address (DAD) is answered to all-nodes.
    let (dst, dst_mac, solicited) = if req_src.is_unspecified() {
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        (all, MacAddr::ipv6_multicast(&all), false)
    } else {
        (*req_src, req_mac, true)
    };
    ipv6_header(out, target_mac, dst_mac, target, &dst, ICMP_LEN as u16);
    let icmp = &mut out[54..total];
    icmp.fill(0);
    icmp[0] = NEIGHBOR_ADVERT;
    icmp[4] = (u8::from(router) << 7) | (u8::from(solicited) << 6) | (1 << 5);
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 2; // target link-layer address option
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&target_mac.0);
    fill_icmp_checksum(out, target, &dst, ICMP_LEN);
    total
}

/// Builds a neighbour solicitation from (`src_mac`, `src`) for `target`, to its
/// solicited-node group, with the source link-layer option. Returns the frame length.
pub fn build_solicit(src_mac: MacAddr, src: &Ipv6Addr, target: &Ipv6Addr, out: &mut [u8]) -> usize {
    const ICMP_LEN: usize = 32; // header 4 + reserved 4 + target 16 + SLLA option 8
    let total = 54 + ICMP_LEN;
    if out.len() < total {
        return 0;
    }
    let t = target.octets();
    let group = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    ipv6_header(
        out,
        src_mac,
        MacAddr::ipv6_multicast(&group),
        src,
        &group,
        ICMP_LEN as u16,
    );
    let icmp = &mut out[54..total];
    icmp.fill(0);
    icmp[0] = NEIGHBOR_SOLICIT;
    icmp[8..24].copy_from_slice(&t);
    icmp[24] = 1; // source link-layer address option
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&src_mac.0);
    fill_icmp_checksum(out, src, &group, ICMP_LEN);
    total
}

/// The (target, link-layer address) a neighbour advertisement held in `frame` announces,
/// if it is valid (hop limit 255, code 0) and carries a target link-layer option first.
pub fn advertised(frame: &[u8], ip: &Ipv6Pkt) -> Option<(Ipv6Addr, MacAddr)> {
    if ip.icmp_type != Some(NEIGHBOR_ADVERT) || ip.hop_limit != 255 {
        return None;
    }
    let icmp = frame.get(ip.l4_off..)?;
    if icmp.len() < 32 || icmp[1] != 0 || icmp[24] != 2 || icmp[25] != 1 {
        return None;
    }
    let t: [u8; 16] = icmp[8..24].try_into().ok()?;
    Some((Ipv6Addr::from(t), MacAddr::from_slice(&icmp[26..32])?))
}

/// Builds a router advertisement from the gateway to a soliciting port: the prefix is
/// on-link, and addresses are assigned by the platform (no SLAAC "A" flag).
pub fn build_router_advert(
    gw_mac: MacAddr,
    gw_ip: &Ipv6Addr,
    req_mac: MacAddr,
    req_src: &Ipv6Addr,
    prefix: Ipv6Cidr,
    out: &mut [u8],
) -> usize {
    const ICMP_LEN: usize = 16 + 8 + 32; // RA header, SLLA option, prefix option
    let total = 54 + ICMP_LEN;
    if out.len() < total {
        return 0;
    }
    let dst = if req_src.is_unspecified() {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
    } else {
        *req_src
    };
    ipv6_header(out, gw_mac, req_mac, gw_ip, &dst, ICMP_LEN as u16);
    let icmp = &mut out[54..total];
    icmp.fill(0);
    icmp[0] = ROUTER_ADVERT;
    icmp[4] = 64; // cur hop limit
    icmp[6..8].copy_from_slice(&1800u16.to_be_bytes()); // router lifetime
    icmp[16] = 1; // source link-layer address option
    icmp[17] = 1;
    icmp[18..24].copy_from_slice(&gw_mac.0);
    let p = &mut icmp[24..56];
    p[0] = 3; // prefix information
    p[1] = 4;
    p[2] = prefix.prefix;
    p[3] = 0xc0; // on-link, and autonomous: guests configure their address by SLAAC
    p[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    p[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    p[16..32].copy_from_slice(&prefix.addr.octets());
    fill_icmp_checksum(out, gw_ip, &dst, ICMP_LEN);
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{checksum, parse, L3};

    #[test]
    fn advert_is_valid_icmpv6() {
        let req_mac = MacAddr([2, 0, 0, 0, 0, 2]);
        let req_ip: Ipv6Addr = "fd00::2".parse().unwrap();
        let target: Ipv6Addr = "fd00::1".parse().unwrap();
        let gw = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut buf = [0u8; 128];
        let n = build_advert(req_mac, &req_ip, &target, gw, true, &mut buf);
        let p = parse(&buf[..n]).unwrap();
        let L3::Ipv6(ip) = p.l3 else { panic!() };
        assert_eq!(ip.icmp_type, Some(NEIGHBOR_ADVERT));
        assert_eq!((ip.src, ip.dst, p.dst), (target, req_ip, req_mac));
        let acc = checksum::pseudo6(&ip.src, &ip.dst, IPPROTO_ICMPV6, (n - 54) as u32);
        assert_eq!(checksum::finish(checksum::sum(acc, &buf[54..n])), 0);
    }

    #[test]
    fn solicitation_target_checks_hop_limit() {
        let mut f = [0u8; 86];
        let src: Ipv6Addr = "fd00::2".parse().unwrap();
        let target: Ipv6Addr = "fd00::3".parse().unwrap();
        ipv6_header(
            &mut f,
            MacAddr([2; 6]),
            MacAddr([0x33, 0x33, 0xff, 0, 0, 3]),
            &src,
            &target,
            32,
        );
        f[54] = NEIGHBOR_SOLICIT;
        f[62..78].copy_from_slice(&target.octets());
        let L3::Ipv6(ip) = parse(&f).unwrap().l3 else {
            panic!()
        };
        assert_eq!(solicited_target(&f, &ip), Some(target));
        f[21] = 64;
        let L3::Ipv6(ip) = parse(&f).unwrap().l3 else {
            panic!()
        };
        assert_eq!(solicited_target(&f, &ip), None);
    }

    #[test]
    fn solicit_and_advert_round_trip() {
        let me = MacAddr([2, 0, 0, 0, 0, 7]);
        let src: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let target: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut buf = [0u8; 128];
        let n = build_solicit(me, &src, &target, &mut buf);
        let L3::Ipv6(ip) = parse(&buf[..n]).unwrap().l3 else {
            panic!()
        };
        assert_eq!(solicited_target(&buf[..n], &ip), Some(target));
        let acc = checksum::pseudo6(&ip.src, &ip.dst, IPPROTO_ICMPV6, (n - 54) as u32);
        assert_eq!(checksum::finish(checksum::sum(acc, &buf[54..n])), 0);
        let gw = MacAddr([2, 0, 0, 0, 0, 1]);
        let n = build_advert(me, &src, &target, gw, true, &mut buf);
        let L3::Ipv6(ip) = parse(&buf[..n]).unwrap().l3 else {
            panic!()
        };
        assert_eq!(advertised(&buf[..n], &ip), Some((target, gw)));
        assert_eq!(advertised(&buf[..60], &ip), None);
    }

    #[test]
    fn router_advert_valid() {
        let gw = MacAddr([2, 0, 0, 0, 0, 1]);
        let gw_ip: Ipv6Addr = "fe80::1".parse().unwrap();
        let mut buf = [0u8; 128];
        let n = build_router_advert(
            gw,
            &gw_ip,
            MacAddr([2; 6]),
            &"fe80::2".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
            &mut buf,
        );
        let L3::Ipv6(ip) = parse(&buf[..n]).unwrap().l3 else {
            panic!()
        };
        assert_eq!(ip.icmp_type, Some(ROUTER_ADVERT));
        // Prefix information: on-link and autonomous (SLAAC), or guests never take an address.
        let prefix_opt = &buf[54 + 24..54 + 56];
        assert_eq!((prefix_opt[0], prefix_opt[2], prefix_opt[3]), (3, 64, 0xc0));
        let acc = checksum::pseudo6(&ip.src, &ip.dst, IPPROTO_ICMPV6, (n - 54) as u32);
        assert_eq!(checksum::finish(checksum::sum(acc, &buf[54..n])), 0);
    }
}
