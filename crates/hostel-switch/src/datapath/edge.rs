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

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};

use crate::datapath::exec::with_rx;
use crate::datapath::port::PortRuntime;
use crate::datapath::ratelimit::now_ns;
use crate::datapath::rx::FrameSrc;
use crate::datapath::tx::MAX_FRAME;
use crate::datapath::vnet::{VnetHdr, GSO_NONE, HDR_F_NEEDS_CSUM};
use crate::packet::ip::{
    complete_csum, dec_ttl, dst_ip, ip_frame_len, partial_csum, time_exceeded4, time_exceeded6,
};
use crate::packet::parse::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN};
use crate::stats::{DropReason, PortStats};
use crate::tables::{EdgeEntry, EdgeIdx, ExtEntry, NetIdx, Tables};
use hostel_firewall::{FirewallError, Stage};
use hostel_switch_proto::{EdgeConfig, FirewallLogEntry, FirewallStats, PolicySpec};
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
    /// A cache hint for a packet a few frames ahead (see `hostel_firewall::Stage`); verdicts
    /// must not depend on it.
    fn prefetch(&self, _pkt: &[u8], _stage: Stage) {}
    /// Whether [`EdgeFilter::prefetch`] does anything (else callers skip the look-ahead).
    fn takes_hints(&self) -> bool {
        false
    }
    /// A committed new configuration of the edge (rules, translations): applied in place,
    /// keeping the filter's state. Its validity was checked before the commit.
    fn reconfigure(&mut self, _cfg: &EdgeConfig) {}
    /// Replaces the rules only; `None` if the filter has none. On success, the new
    /// policy's generation.
    fn set_policy(&mut self, _p: &PolicySpec) -> Option<Result<u64, FirewallError>> {
        None
    }
    /// The firewall's counters, if the filter is one.
    fn firewall_stats(&self) -> Option<FirewallStats> {
        None
    }
    /// Appends the log entries written since the last call.
    fn drain_log(&mut self, _out: &mut Vec<FirewallLogEntry>) {}
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
    /// Intrusion detection after the filter (`ids.rs`), off until configured.
    pub ids: super::ids::EdgeIds,
}

impl EdgeRuntime {
    pub fn new(tenant: &str, filter: Box<dyn EdgeFilter>) -> Self {
        EdgeRuntime {
            tenant: tenant.to_string(),
            filter: Mutex::new(filter),
            stats: PortStats::default(),
            ids: super::ids::EdgeIds::default(),
        }
    }

    fn filter(&self) -> std::sync::MutexGuard<'_, Box<dyn EdgeFilter>> {
        self.filter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// See [`EdgeFilter::prefetch`]; skipped when another thread holds the edge (a hint
    /// never waits). Several hints under one try-lock: a lock costs as much as a hint.
    pub fn prefetch(&self, hints: &[(&[u8], Stage)]) {
        if let Ok(f) = self.filter.try_lock() {
            for (pkt, stage) in hints {
                f.prefetch(pkt, *stage);
            }
        }
    }

    pub fn takes_hints(&self) -> bool {
        self.filter().takes_hints()
    }

    /// See [`EdgeFilter::reconfigure`].
    pub fn reconfigure(&self, cfg: &EdgeConfig) {
        self.filter().reconfigure(cfg);
    }

    /// See [`EdgeFilter::set_policy`]: swapped between two packets.
    pub fn set_policy(&self, p: &PolicySpec) -> Option<Result<u64, FirewallError>> {
        self.filter().set_policy(p)
    }

    pub fn firewall_stats(&self) -> Option<FirewallStats> {
        self.filter().firewall_stats()
    }

    pub fn drain_log(&self, out: &mut Vec<FirewallLogEntry>) {
        self.filter().drain_log(out);
    }

    pub(crate) fn judge(
        &self,
        outbound: bool,
        pkt: &mut [u8],
        reply: &mut [u8],
        now: u64,
    ) -> EdgeVerdict {
        let mut f = self.filter();
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
    if src.len > s.frame.len() {
        return Err(DropReason::TooLong);
    }
    let n = src.copy_prefix(&mut s.frame);
    if n != src.len {
        return Err(DropReason::BadDescriptor);
    }
    // The filter always sees complete checksums; a TSO frame gets its partial one back
    // before it leaves (`finish`).
    if hdr.flags & HDR_F_NEEDS_CSUM != 0 {
        complete_csum(
            &mut s.frame[..n],
            usize::from(hdr.csum_start),
            usize::from(hdr.csum_offset),
        )?;
    }
    let n = ip_frame_len(&s.frame[..n])?;
    let buf = &mut s.frame[..n];
    let edge = &ext.edges[e as usize];
    if let Err(r) = dec_ttl(buf) {
        // The sender's traceroute learns its gateway is the first hop.
        let cfg = &t.net(ni).cfg;
        if r == DropReason::TtlExceeded {
            let k = match cfg.gateway4 {
                Some(gw) if ethertype_of(&buf[ETH_HLEN..]) == ETHERTYPE_IPV4 => {
                    time_exceeded4(buf, gw, cfg.gateway_mac, &mut s.reply)
                }
                _ => {
                    let gw = cfg.gateway6.unwrap_or(cfg.gateway_mac.link_local());
                    time_exceeded6(buf, gw, cfg.gateway_mac, &mut s.reply)
                }
            };
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
    // Tenant-side addresses (before source NAT); acted on only once the filter accepted.
    let ids = super::ids::before_filter(&edge.rt.ids, &t.net(ni).cfg.id, &buf[ETH_HLEN..]);
    let (pkt, reply) = (&mut buf[ETH_HLEN..], &mut s.reply[ETH_HLEN..]);
    match edge.rt.judge(true, pkt, reply, now) {
        EdgeVerdict::Pass if ids == super::ids::IdsVerdict::Drop => {
            return Err(DropReason::Filtered)
        }
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
    let out = Offload::of(hdr);
    match ext.owner(dst) {
        Some(e2) => inbound(t, ext, e2, buf, &mut [], now, out),
        None => {
            let h = out.finish(buf)?;
            to_wire(ext, buf, dst, now, h)
        }
    }
}

/// What a frame crossing an edge keeps of its sender's offloads: a TSO frame stays one
/// frame (the receiver, or the NIC, segments it); anything else leaves complete.
#[derive(Clone, Copy, Debug, Default)]
pub struct Offload(Option<VnetHdr>);

impl Offload {
    fn of(hdr: VnetHdr) -> Offload {
        Offload((hdr.gso_type != GSO_NONE).then_some(hdr))
    }

    /// The header the frame leaves with, its partial checksum restored if it is TSO.
    fn finish(self, buf: &mut [u8]) -> Result<VnetHdr, DropReason> {
        match self.0 {
            Some(h) => {
                let start = usize::from(h.csum_start);
                partial_csum(buf, start, usize::from(h.csum_offset))?;
                Ok(h)
            }
            None => Ok(VnetHdr::default()),
        }
    }
}

/// Sends a routed frame out the external port towards `dst`'s next hop: `dst` itself when
/// on the external subnet, else the upstream gateway.
pub fn to_wire(
    ext: &ExtEntry,
    buf: &mut [u8],
    dst: IpAddr,
    now: u64,
    hdr: VnetHdr,
) -> Result<(), DropReason> {
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
    // Leaves with the rest of the sender's batch (see `External::flush`).
    ext.rt.queue(hdr, buf)
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
    offload: Offload,
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
                    let _ = to_wire(ext, r, to, now, VnetHdr::default());
                }
            }
            return Err(DropReason::Filtered);
        }
    }
    edge.rt.stats.add_rx(1, buf.len() as u64);
    deliver_inside(t, edge, buf, offload)
}

fn deliver_inside(
    t: &Tables,
    edge: &EdgeEntry,
    buf: &mut [u8],
    offload: Offload,
) -> Result<(), DropReason> {
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
            // After destination NAT: the tenant-side address, as outbound packets show it.
            if edge.rt.ids.inspect(&net.cfg.id, &buf[ETH_HLEN..]) == super::ids::IdsVerdict::Drop {
                return Err(DropReason::Filtered);
            }
            // A network with a security appliance gets its outside traffic through it: to
            // the appliance's MAC, which routes it on to `q` (fail closed without one).
            let (q, steered) = match net.appliance {
                Some(Some(a)) => (a, a != q),
                Some(None) => return Err(DropReason::ApplianceDown),
                None => (q, false),
            };
            let port = t.port(q);
            buf[0..6].copy_from_slice(&port.cfg.mac.0);
            buf[6..12].copy_from_slice(&net.cfg.gateway_mac.0);
            let hdr = offload.finish(buf)?;
            let empty = SegList::default();
            return match with_rx(&port.rt, |s| s.send(hdr, &contiguous(buf, &empty))) {
                Err(DropReason::DestinationDown) if steered => Err(DropReason::ApplianceDown),
                r => r?,
            };
        }
    }
    Err(DropReason::NoRoute)
}
