//! A tenant's edge router, inline in the switch: between the tenant's networks (inside: each
//! network's gateway, answered by the switch already) and the external network (outside:
//! the edge's public addresses, answered on the wire by [`crate::external`]).
//!
//! Outbound: a frame from a tenant port to an address no local port owns is copied into the
//! sender's scratch, its IP TTL/hop limit decremented, judged by the edge's [`EdgeFilter`]
//! (which may rewrite it in place: NAT), and then either handed to the edge that owns the
//! destination (two tenants on one host meet here, out through one edge and in through the
//! other, never via the wire) or L2-rewritten towards the next hop on the wire (the upstream
//! gateway, or an on-link host) and sent out the external port. Inbound (from the wire or a
//! hairpin) goes through the owning edge's filter and is delivered to the tenant port that
//! owns the destination, L2-rewritten as coming from the network's gateway.
//!
//! Each step does bounded work: one copy, fixed header edits, one filter call, hash lookups
//! (plus a scan of at most `MAX_PUBLIC_PER_EDGE` routed subnets per edge), one delivery.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};

use crate::datapath::exec::with_rx;
use crate::datapath::port::PortRuntime;
use crate::datapath::ratelimit::now_ns;
use crate::datapath::rx::FrameSrc;
use crate::datapath::tx::MAX_FRAME;
use crate::datapath::vnet::{VnetHdr, GSO_NONE, HDR_F_NEEDS_CSUM};
use crate::packet::checksum;
use crate::packet::parse::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN};
use crate::stats::{DropReason, PortStats};
use crate::tables::{EdgeEntry, EdgeIdx, ExtEntry, NetIdx, Tables};
use crate::types::MacAddr;
use hostel_switch_proto::EdgeConfig;
use hostel_virtq::SegList;

/// What an [`EdgeFilter`] decides about one IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeVerdict {
    /// Forward the packet (as the filter may have rewritten it).
    Pass,
    /// Drop it (counted `filtered`).
    Drop,
    /// Drop it and send back the IP packet of this length the filter wrote into `reply`
    /// (a TCP RST, an ICMP unreachable), to the packet's source.
    Reply(usize),
}

/// The per-tenant hook between the edge's inside and outside: the stateful firewall and
/// NAT (`hostel-firewall`) implement it. `pkt` is the IP packet (no Ethernet header),
/// already validated (version, header length, total length within the frame) and with its
/// TTL/hop limit decremented; it may be rewritten in place (addresses, ports, checksums),
/// but not resized. `reply` is where a [`EdgeVerdict::Reply`] is written (it may be empty:
/// then a reply is not possible and counts as a drop). `now` is monotonic nanoseconds.
/// Called with the edge's lock held, from any port's worker thread: it must not block and
/// should not allocate.
pub trait EdgeFilter: Send {
    /// From the tenant's VMs towards the outside.
    fn outbound(&mut self, pkt: &mut [u8], reply: &mut [u8], now: u64) -> EdgeVerdict;
    /// From the outside (the wire, or another tenant's edge) towards the tenant's VMs.
    fn inbound(&mut self, pkt: &mut [u8], reply: &mut [u8], now: u64) -> EdgeVerdict;
}

/// The identity edge: routes without filtering or translating.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassFilter;

impl EdgeFilter for PassFilter {
    fn outbound(&mut self, _: &mut [u8], _: &mut [u8], _: u64) -> EdgeVerdict {
        EdgeVerdict::Pass
    }
    fn inbound(&mut self, _: &mut [u8], _: &mut [u8], _: u64) -> EdgeVerdict {
        EdgeVerdict::Pass
    }
}

/// Makes each tenant's filter when its edge first appears (kept across table rebuilds, so
/// connection state survives reconfiguration).
pub type FilterFactory = std::sync::Arc<dyn Fn(&EdgeConfig) -> Box<dyn EdgeFilter> + Send + Sync>;

/// The identity filter for every edge.
pub fn pass_filters() -> FilterFactory {
    std::sync::Arc::new(|_| Box::new(PassFilter))
}

/// Live state of one tenant's edge: its filter and counters (`tx`: what left through it,
/// `rx`: what came in through it).
pub struct EdgeRuntime {
    pub tenant: String,
    filter: Mutex<Box<dyn EdgeFilter>>,
    pub stats: PortStats,
}

impl EdgeRuntime {
    pub fn new(tenant: &str, filter: Box<dyn EdgeFilter>) -> Self {
        EdgeRuntime {
            tenant: tenant.to_string(),
            filter: Mutex::new(filter),
            stats: PortStats::default(),
        }
    }

    fn judge(&self, outbound: bool, pkt: &mut [u8], reply: &mut [u8], now: u64) -> EdgeVerdict {
        let mut f = self.filter.lock().unwrap_or_else(PoisonError::into_inner);
        let v = if outbound {
            f.outbound(pkt, reply, now)
        } else {
            f.inbound(pkt, reply, now)
        };
        match v {
            EdgeVerdict::Reply(n) if n == 0 || n > reply.len() => EdgeVerdict::Drop,
            v => v,
        }
    }
}

/// Largest reply a filter may write (an ICMPv6 error carries up to 1280 bytes).
pub const REPLY_MAX: usize = 1500;

/// A worker's buffers for edge traffic, allocated on first use so ports that never cross
/// an edge do not pay for them.
pub struct EdgeScratch {
    pub frame: Box<[u8]>,
    pub reply: Box<[u8]>,
}

impl Default for EdgeScratch {
    fn default() -> Self {
        EdgeScratch {
            frame: vec![0; MAX_FRAME].into_boxed_slice(),
            reply: vec![0; ETH_HLEN + REPLY_MAX].into_boxed_slice(),
        }
    }
}

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
/// frame length, or 0 for IPv6 (none yet) and for ICMP other than echo requests (never an
/// error about an error, RFC 1122).
fn time_exceeded4(orig: &[u8], gw: Ipv4Addr, gw_mac: MacAddr, out: &mut [u8]) -> usize {
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

/// Fills in a checksum the guest left to the device (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the
/// wire gets only complete checksums.
fn complete_csum(buf: &mut [u8], hdr: &VnetHdr) -> Result<(), DropReason> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > buf.len() || start > buf.len() {
        return Err(DropReason::BadVnetHeader);
    }
    // The guest put the pseudo-header sum in the field; summing from `start` includes it.
    let c = checksum::checksum(&buf[start..]);
    buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Link-local and multicast IPv6 destinations never cross a router.
fn not_routed6(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80 || a.is_multicast()
}

fn ethertype_of(ip: &[u8]) -> u16 {
    match ip.first().map(|b| b >> 4) {
        Some(6) => ETHERTYPE_IPV6,
        _ => ETHERTYPE_IPV4,
    }
}

fn contiguous<'a>(buf: &'a [u8], empty: &'a SegList<'a>) -> FrameSrc<'a> {
    FrameSrc {
        head: buf,
        tail: empty,
        tail_skip: 0,
        len: buf.len(),
    }
}

/// A frame from tenant port `sender` of network `ni` to an address no local port owns.
pub fn outbound(
    t: &Tables,
    ni: NetIdx,
    sender: &PortRuntime,
    hdr: VnetHdr,
    src: &FrameSrc<'_>,
    s: &mut EdgeScratch,
) -> Result<(), DropReason> {
    let (Some(ext), Some(e)) = (t.ext.as_ref(), t.net(ni).edge) else {
        return Err(DropReason::NoRoute);
    };
    if hdr.gso_type != GSO_NONE {
        return Err(DropReason::GsoUnsupported);
    }
    if src.len > s.frame.len() {
        return Err(DropReason::TooLong);
    }
    let n = src.copy_prefix(&mut s.frame);
    if n != src.len {
        return Err(DropReason::BadDescriptor);
    }
    if hdr.flags & HDR_F_NEEDS_CSUM != 0 {
        complete_csum(&mut s.frame[..n], &hdr)?;
    }
    let n = ip_frame_len(&s.frame[..n])?;
    let buf = &mut s.frame[..n];
    let edge = &ext.edges[e as usize];
    if let Err(r) = dec_ttl(buf) {
        // The sender's traceroute learns its gateway is the first hop.
        let gw = t.net(ni).cfg.gateway4;
        if let (DropReason::TtlExceeded, Some(gw)) = (r, gw) {
            let k = time_exceeded4(buf, gw, t.net(ni).cfg.gateway_mac, &mut s.reply);
            if k > 0 {
                let empty = SegList::default();
                let sent = with_rx(sender, |sink| {
                    sink.send(VnetHdr::default(), &contiguous(&s.reply[..k], &empty))
                });
                if let Ok(Ok(())) = sent {
                    sender
                        .stats
                        .replies
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        return Err(r);
    }
    let now = now_ns();
    let (pkt, reply) = (&mut buf[ETH_HLEN..], &mut s.reply[ETH_HLEN..]);
    match edge.rt.judge(true, pkt, reply, now) {
        EdgeVerdict::Pass => {}
        EdgeVerdict::Drop => return Err(DropReason::Filtered),
        EdgeVerdict::Reply(k) => {
            // Back to the sender, from its network's gateway.
            let r = &mut s.reply[..ETH_HLEN + k];
            r[0..6].copy_from_slice(&buf[6..12]);
            r[6..12].copy_from_slice(&t.net(ni).cfg.gateway_mac.0);
            let et = ethertype_of(&r[ETH_HLEN..]);
            r[12..14].copy_from_slice(&et.to_be_bytes());
            let empty = SegList::default();
            with_rx(sender, |sink| {
                sink.send(VnetHdr::default(), &contiguous(r, &empty))
            })??;
            sender
                .stats
                .replies
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(DropReason::Filtered);
        }
    }
    edge.rt.stats.add_tx(1, n as u64);
    let dst = dst_ip(buf)?;
    match ext.owner(dst) {
        Some(e2) => inbound(t, ext, e2, buf, &mut [], now),
        None => to_wire(ext, buf, dst, now),
    }
}

/// Sends a routed frame out the external port towards `dst`'s next hop: `dst` itself when
/// on the external subnet, else the upstream gateway.
pub fn to_wire(ext: &ExtEntry, buf: &mut [u8], dst: IpAddr, now: u64) -> Result<(), DropReason> {
    let cfg = &ext.cfg;
    let hop = match dst {
        IpAddr::V4(a) if cfg.subnet4.contains(a) => dst,
        IpAddr::V4(_) => IpAddr::V4(cfg.gateway4),
        IpAddr::V6(a) if not_routed6(&a) => return Err(DropReason::NoRoute),
        IpAddr::V6(a) if cfg.subnet6.is_some_and(|s| s.contains(a)) => dst,
        IpAddr::V6(_) => cfg.gateway6.map(IpAddr::V6).ok_or(DropReason::NoRoute)?,
    };
    if let IpAddr::V4(a) = dst {
        if a.is_broadcast() || a.is_multicast() || a == cfg.subnet4.broadcast() {
            return Err(DropReason::NoRoute);
        }
    }
    let found = ext.rt.lookup(hop, now);
    if found.ask {
        ext.rt.solicit(ext, hop);
    }
    let mac = found.mac.ok_or(DropReason::NeighborUnresolved)?;
    buf[0..6].copy_from_slice(&mac.0);
    buf[6..12].copy_from_slice(&cfg.mac.0);
    ext.rt.send(buf)
}

/// A routed frame for edge `e`'s public addresses, from the wire or from another edge:
/// through the edge's inbound filter, then to the tenant port that owns the destination.
/// `reply` may be empty (a hairpin: no replies from the second edge).
pub fn inbound(
    t: &Tables,
    ext: &ExtEntry,
    e: EdgeIdx,
    buf: &mut [u8],
    reply: &mut [u8],
    now: u64,
) -> Result<(), DropReason> {
    let edge = &ext.edges[e as usize];
    dec_ttl(buf)?;
    let can_reply = reply.len() > ETH_HLEN;
    let body = if can_reply {
        &mut reply[ETH_HLEN..]
    } else {
        &mut []
    };
    match edge.rt.judge(false, &mut buf[ETH_HLEN..], body, now) {
        EdgeVerdict::Pass => {}
        EdgeVerdict::Drop => return Err(DropReason::Filtered),
        EdgeVerdict::Reply(k) => {
            let r = &mut reply[..ETH_HLEN + k];
            let et = ethertype_of(&r[ETH_HLEN..]);
            r[12..14].copy_from_slice(&et.to_be_bytes());
            // Never towards the switch's own addresses (no ARP for ourselves on the wire).
            if let Ok(to) = dst_ip(r) {
                if ext.owner(to).is_none() {
                    let _ = to_wire(ext, r, to, now);
                }
            }
            return Err(DropReason::Filtered);
        }
    }
    edge.rt.stats.add_rx(1, buf.len() as u64);
    deliver_inside(t, edge, buf)
}

fn deliver_inside(t: &Tables, edge: &EdgeEntry, buf: &mut [u8]) -> Result<(), DropReason> {
    let dst = dst_ip(buf)?;
    if let IpAddr::V6(a) = dst {
        if not_routed6(&a) {
            return Err(DropReason::NoRoute);
        }
    }
    for &ni in &edge.nets {
        let net = t.net(ni);
        let q = match dst {
            IpAddr::V4(a) => net.v4.get(&a),
            IpAddr::V6(a) => net.v6.get(&a),
        };
        if let Some(&q) = q {
            let port = t.port(q);
            buf[0..6].copy_from_slice(&port.cfg.mac.0);
            buf[6..12].copy_from_slice(&net.cfg.gateway_mac.0);
            let empty = SegList::default();
            return with_rx(&port.rt, |s| {
                s.send(VnetHdr::default(), &contiguous(buf, &empty))
            })?;
        }
    }
    Err(DropReason::NoRoute)
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
        let hdr = VnetHdr {
            flags: HDR_F_NEEDS_CSUM,
            csum_start: udp as u16,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        complete_csum(&mut f, &hdr).unwrap();
        let acc = checksum::sum(pseudo, &f[udp..]);
        assert_eq!(checksum::finish(acc), 0);
        let bad = VnetHdr {
            csum_start: 4000,
            ..hdr
        };
        assert_eq!(complete_csum(&mut f, &bad), Err(DropReason::BadVnetHeader));
    }
}
