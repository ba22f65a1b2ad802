//! A DHCPv4 server that only ever hands a port the one address the daemon assigned to it.
//!
//! There is no lease state: the answer is a pure function of the request and the tables, so
//! a restarted switch answers exactly as before.

use std::net::Ipv4Addr;

use crate::packet::checksum;
use crate::packet::parse::{Ipv4Pkt, ETHERTYPE_IPV4, IPPROTO_UDP};
use crate::types::{Ipv4Cidr, MacAddr};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPTIONS_OFF: usize = 240;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// Lease time announced; guests renew long before it matters because answers never change.
pub const LEASE_SECS: u32 = 86_400;

/// The fields of a client message the server needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpRequest {
    pub xid: [u8; 4],
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub chaddr: MacAddr,
    pub msg_type: u8,
    pub requested: Option<Ipv4Addr>,
}

/// Parses a BOOTREQUEST from the UDP payload of a frame (`frame` holds the whole frame).
pub fn parse_request(frame: &[u8], ip: &Ipv4Pkt) -> Option<DhcpRequest> {
    let b = frame.get(ip.l4_off + 8..)?;
    if b.len() < OPTIONS_OFF || b[0] != 1 || b[1] != 1 || b[2] != 6 || b[236..240] != MAGIC {
        return None;
    }
    let mut req = DhcpRequest {
        xid: b[4..8].try_into().ok()?,
        flags: u16::from_be_bytes([b[10], b[11]]),
        ciaddr: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        chaddr: MacAddr::from_slice(&b[28..34])?,
        msg_type: 0,
        requested: None,
    };
    let mut opts = &b[OPTIONS_OFF..];
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            0 => {
                opts = rest;
                continue;
            }
            255 => break,
            _ => {}
        }
        let (&len, rest) = rest.split_first()?;
        let val = rest.get(..usize::from(len))?;
        match (code, len) {
            (53, 1) => req.msg_type = val[0],
            (50, 4) => req.requested = Some(Ipv4Addr::new(val[0], val[1], val[2], val[3])),
            _ => {}
        }
        opts = &rest[usize::from(len)..];
    }
    (req.msg_type != 0).then_some(req)
}

/// What the server knows about the network and the asking port.
#[derive(Clone, Debug)]
pub struct Lease<'a> {
    pub server_mac: MacAddr,
    pub server_ip: Ipv4Addr,
    pub subnet: Ipv4Cidr,
    pub assigned: Ipv4Addr,
    pub dns: &'a [Ipv4Addr],
    pub mtu: u16,
}

/// Builds the server's answer (OFFER, ACK or NAK), or returns 0 when the message gets none.
pub fn build_reply(req: &DhcpRequest, lease: &Lease<'_>, out: &mut [u8]) -> usize {
    let reply_type = match req.msg_type {
        DISCOVER => OFFER,
        REQUEST => {
            let asked = req.requested.unwrap_or(req.ciaddr);
            if asked == lease.assigned {
                ACK
            } else {
                NAK
            }
        }
        _ => return 0,
    };
    let mut opts = [0u8; 64];
    let mut n = 0;
    let mut put = |code: u8, val: &[u8]| {
        if n + 2 + val.len() <= opts.len() {
            opts[n] = code;
            opts[n + 1] = val.len() as u8;
            opts[n + 2..n + 2 + val.len()].copy_from_slice(val);
            n += 2 + val.len();
        }
    };
    put(53, &[reply_type]);
    put(54, &lease.server_ip.octets());
    if reply_type != NAK {
        put(51, &LEASE_SECS.to_be_bytes());
        put(1, &lease.subnet.mask().octets());
        put(3, &lease.server_ip.octets());
        let mut dns = [0u8; 16];
        let k = lease.dns.len().min(4);
        for (i, d) in lease.dns.iter().take(k).enumerate() {
            dns[i * 4..i * 4 + 4].copy_from_slice(&d.octets());
        }
        if k > 0 {
            put(6, &dns[..k * 4]);
        }
        if lease.mtu >= 68 {
            put(26, &lease.mtu.to_be_bytes());
        }
    }
    put(255, &[]);
    n -= 1; // the end option has no length byte
    let bootp_len = OPTIONS_OFF + n;
    let udp_len = 8 + bootp_len;
    let ip_len = 20 + udp_len;
    let total = 14 + ip_len;
    if out.len() < total {
        return 0;
    }
    let out = &mut out[..total];
    out.fill(0);
    let yiaddr = if reply_type == NAK {
        Ipv4Addr::UNSPECIFIED
    } else {
        lease.assigned
    };
    let dst_ip = Ipv4Addr::BROADCAST;
    out[0..6].copy_from_slice(&req.chaddr.0);
    out[6..12].copy_from_slice(&lease.server_mac.0);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip = &mut out[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&lease.server_ip.octets());
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut out[34..];
    udp[0..2].copy_from_slice(&SERVER_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let b = &mut udp[8..];
    b[0] = 2; // BOOTREPLY
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&req.xid);
    b[10..12].copy_from_slice(&req.flags.to_be_bytes());
    b[12..16].copy_from_slice(&req.ciaddr.octets());
    b[16..20].copy_from_slice(&yiaddr.octets());
    b[20..24].copy_from_slice(&lease.server_ip.octets());
    b[28..34].copy_from_slice(&req.chaddr.0);
    b[236..240].copy_from_slice(&MAGIC);
    b[OPTIONS_OFF..OPTIONS_OFF + n].copy_from_slice(&opts[..n]);
    let acc = checksum::pseudo4(lease.server_ip, dst_ip, IPPROTO_UDP, udp_len as u16);
    let mut c = checksum::finish(checksum::sum(acc, udp));
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    total
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::packet::{parse, L3};

    /// A DHCP client message as udhcpc would send it.
    pub fn client_msg(mac: MacAddr, msg_type: u8, requested: Option<Ipv4Addr>) -> Vec<u8> {
        let mut bootp = vec![0u8; OPTIONS_OFF];
        bootp[0] = 1;
        bootp[1] = 1;
        bootp[2] = 6;
        bootp[4..8].copy_from_slice(&[1, 2, 3, 4]);
        bootp[28..34].copy_from_slice(&mac.0);
        bootp[236..240].copy_from_slice(&MAGIC);
        bootp.extend_from_slice(&[53, 1, msg_type]);
        if let Some(r) = requested {
            bootp.extend_from_slice(&[50, 4]);
            bootp.extend_from_slice(&r.octets());
        }
        bootp.push(255);
        let mut f = crate::packet::parse::tests::udp4(
            mac,
            MacAddr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            &bootp,
        );
        f[34..36].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        f[36..38].copy_from_slice(&SERVER_PORT.to_be_bytes());
        f
    }

    static DNS: [Ipv4Addr; 1] = [Ipv4Addr::new(10, 0, 0, 1)];

    fn lease() -> Lease<'static> {
        Lease {
            server_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            subnet: "10.0.0.0/24".parse().unwrap(),
            assigned: Ipv4Addr::new(10, 0, 0, 3),
            dns: &DNS,
            mtu: 1500,
        }
    }

    fn reply_for(msg: &[u8]) -> (u8, Ipv4Addr) {
        let p = parse(msg).unwrap();
        let L3::Ipv4(ip) = p.l3 else { panic!() };
        let req = parse_request(msg, &ip).unwrap();
        let mut out = [0u8; 600];
        let n = build_reply(&req, &lease(), &mut out);
        assert!(n > 0);
        let rp = parse(&out[..n]).unwrap();
        let L3::Ipv4(rip) = rp.l3 else { panic!() };
        assert_eq!(rip.udp, Some((SERVER_PORT, CLIENT_PORT)));
        assert_eq!(checksum::checksum(&out[14..34]), 0);
        let b = &out[42..n];
        let yiaddr = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        assert_eq!(&b[OPTIONS_OFF..OPTIONS_OFF + 2], &[53, 1]);
        (b[OPTIONS_OFF + 2], yiaddr)
    }

    #[test]
    fn discover_gets_offer_of_assigned_address() {
        let mac = MacAddr([2, 0, 0, 0, 0, 3]);
        assert_eq!(
            reply_for(&client_msg(mac, DISCOVER, None)),
            (OFFER, Ipv4Addr::new(10, 0, 0, 3))
        );
    }

    #[test]
    fn request_acked_or_nakked() {
        let mac = MacAddr([2, 0, 0, 0, 0, 3]);
        let good = client_msg(mac, REQUEST, Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(reply_for(&good), (ACK, Ipv4Addr::new(10, 0, 0, 3)));
        let bad = client_msg(mac, REQUEST, Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(reply_for(&bad).0, NAK);
    }

    #[test]
    fn garbage_options_do_not_panic() {
        let mac = MacAddr([2, 0, 0, 0, 0, 3]);
        let mut m = client_msg(mac, DISCOVER, None);
        let opt = 42 + OPTIONS_OFF;
        m.truncate(opt);
        m.extend_from_slice(&[53, 200, 1]);
        let L3::Ipv4(ip) = parse(&m).unwrap().l3 else {
            panic!()
        };
        assert_eq!(parse_request(&m, &ip), None);
    }
}
