//! Carrying out one frame's [`Decision`], whatever port kind it came from and goes to: the
//! vhost-user TX path (for everything but its grouped unicasts) and the TAP readers (uplinks
//! and TAP ports) both end here, and every delivery goes through [`with_rx`].

use std::sync::atomic::Ordering;

use crate::datapath::edge::{self, EdgeScratch};
use crate::datapath::exec::with_rx;
use crate::datapath::local;
use crate::datapath::pipeline::{Decision, Ingress};
use crate::datapath::port::PortRuntime;
use crate::datapath::rx::FrameSrc;
use crate::datapath::vnet::VnetHdr;
use crate::packet::{parse, REPLY_BUF};
use crate::stats::DropReason;
use crate::tables::{NetIdx, PortIdx, Tables};

/// Local replies need the whole request (DHCP options follow a 236-byte BOOTP header).
pub const LOCAL_REQ: usize = 1024;

/// Buffers for local replies, allocated once per port so forwarding never allocates.
pub struct Scratch {
    request: Box<[u8; LOCAL_REQ]>,
    reply: Box<[u8; REPLY_BUF]>,
    /// Made on the first frame through an edge.
    edge: Option<Box<EdgeScratch>>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            request: Box::new([0; LOCAL_REQ]),
            reply: Box::new([0; REPLY_BUF]),
            edge: None,
        }
    }
}

/// A frame of network `ni` bound for the outside, sent by another port than the network's
/// security appliance: it goes to the appliance instead, addressed to its MAC (the appliance
/// routes it on through the gateway, and the switch then passes it to the edge). An
/// appliance without a connected guest stops the traffic (`appliance_down`).
fn to_appliance(
    t: &Tables,
    a: PortIdx,
    hdr: VnetHdr,
    src: &FrameSrc<'_>,
    scratch: &mut Scratch,
) -> Result<(), DropReason> {
    let buf = scratch.frame_buf();
    if src.len > buf.len() {
        return Err(DropReason::TooLong);
    }
    let n = src.copy_prefix(buf);
    if n != src.len || n < 14 {
        return Err(DropReason::BadDescriptor);
    }
    let port = t.port(a);
    buf[0..6].copy_from_slice(&port.cfg.mac.0);
    let empty = hostel_virtq::SegList::default();
    let frame = FrameSrc {
        head: &buf[..n],
        tail: &empty,
        tail_skip: 0,
        len: n,
    };
    match with_rx(&port.rt, |s| s.send(hdr, &frame)) {
        Ok(r) => r,
        Err(DropReason::DestinationDown) => Err(DropReason::ApplianceDown),
        Err(e) => Err(e),
    }
}

/// What a security appliance sends towards the outside must come from its own network (its
/// VMs' packets it forwards, or its own): it may not use the edge to send as anyone else.
fn appliance_out(t: &Tables, ni: NetIdx, src: &FrameSrc<'_>) -> Result<(), DropReason> {
    let mut h = [0u8; 38];
    let n = src.copy_prefix(&mut h);
    let cfg = &t.net(ni).cfg;
    let ok = match (n, u16::from_be_bytes([h[12], h[13]])) {
        (30.., 0x0800) => {
            let ip = std::net::Ipv4Addr::new(h[26], h[27], h[28], h[29]);
            cfg.subnet4.is_some_and(|c| c.contains(ip))
        }
        (38, 0x86dd) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&h[22..38]);
            let ip = std::net::Ipv6Addr::from(a);
            cfg.subnet6.is_some_and(|c| c.contains(ip))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(DropReason::SpoofedSrcIp)
    }
}

impl Scratch {
    /// A buffer for one whole frame (the edge's, made on first use).
    pub fn frame_buf(&mut self) -> &mut [u8] {
        &mut self.edge.get_or_insert_with(Box::default).frame
    }
}

/// Where a frame came from: the tables it was judged with, its ingress, and the port that
/// sent it (which pays for its drops, and gets the switch's replies).
pub struct Forward<'a> {
    pub tables: &'a Tables,
    pub ingress: Ingress,
    pub sender: &'a PortRuntime,
}

impl Forward<'_> {
    fn net(&self) -> NetIdx {
        match self.ingress {
            Ingress::Port(p) => self.tables.port(p).net,
            Ingress::Uplink(n) => n,
        }
    }

    /// Delivers one frame as `decision` says. Copies lost on a flood are counted on the
    /// sender here; the caller counts the error returned.
    pub fn forward(
        &self,
        decision: Decision,
        hdr: VnetHdr,
        src: &FrameSrc<'_>,
        scratch: &mut Scratch,
    ) -> Result<(), DropReason> {
        match decision {
            Decision::Unicast(q) => with_rx(&self.tables.port(q).rt, |s| s.send(hdr, src))?,
            Decision::Flood => {
                self.flood(hdr, src);
                Ok(())
            }
            Decision::Uplink => match self.ingress {
                Ingress::Uplink(_) => Err(DropReason::Hairpin),
                Ingress::Port(_) => match &self.tables.net(self.net()).uplink {
                    Some(u) => with_rx(u, |s| s.send(hdr, src))?,
                    None => Err(DropReason::NoRoute),
                },
            },
            Decision::Edge => match self.ingress {
                Ingress::Uplink(_) => Err(DropReason::Hairpin),
                Ingress::Port(p) => {
                    let ni = self.net();
                    match self.tables.net(ni).appliance {
                        Some(_) if self.tables.port(p).appliance => {
                            appliance_out(self.tables, ni, src)?;
                        }
                        Some(None) => return Err(DropReason::ApplianceDown),
                        Some(Some(a)) => return to_appliance(self.tables, a, hdr, src, scratch),
                        None => {}
                    }
                    let s = scratch.edge.get_or_insert_with(Box::default);
                    edge::outbound(self.tables, ni, self.sender, hdr, src, s)
                }
            },
            Decision::Local(reply) => {
                let req = &mut scratch.request[..];
                let len = src.copy_prefix(req);
                let parsed = parse(&req[..len]).map_err(|_| DropReason::Malformed)?;
                let out = &mut scratch.reply[..];
                let n = local::build(
                    self.tables,
                    self.ingress,
                    self.net(),
                    reply,
                    &parsed,
                    &req[..len],
                    out,
                )?;
                let frame = FrameSrc {
                    head: &out[..n],
                    tail: src.tail,
                    tail_skip: 0,
                    len: n,
                };
                with_rx(self.sender, |s| s.send(VnetHdr::default(), &frame))??;
                self.sender.stats.replies.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Decision::Drop(r) => Err(r),
        }
    }

    /// Broadcast/multicast: every other port of the network, plus its uplink if the frame
    /// came from a port. Each copy that does not reach a port is a drop on the sender's
    /// counters, under its reason; the uplink counts its own write failures.
    pub fn flood(&self, hdr: VnetHdr, src: &FrameSrc<'_>) {
        let net = self.tables.net(self.net());
        for &q in &net.ports {
            if Ingress::Port(q) == self.ingress {
                continue;
            }
            let r = with_rx(&self.tables.port(q).rt, |s| s.send(hdr, src));
            if let Err(reason) = r.and_then(|sent| sent) {
                self.sender.stats.count_drop(reason);
            }
        }
        if let (Some(u), Ingress::Port(_)) = (&net.uplink, self.ingress) {
            let _ = with_rx(u, |s| s.send(hdr, src));
        }
    }

    /// Sends a policy's copy of a forwarded frame to mirror port `m`. Never a copy to the
    /// frame's own sender, nor a second one to a port the frame reached anyway; a copy that does not arrive is the
    /// mirror's loss, counted on the mirror port, never the sender's.
    pub fn mirror(&self, m: PortIdx, decision: Decision, hdr: VnetHdr, src: &FrameSrc<'_>) {
        let forwarded = matches!(
            decision,
            Decision::Unicast(_) | Decision::Flood | Decision::Uplink | Decision::Edge
        );
        // A flood already reached every port of its network, the mirror's too.
        let has_it = decision == Decision::Unicast(m)
            || (decision == Decision::Flood && self.tables.port(m).net == self.net());
        if !forwarded || Ingress::Port(m) == self.ingress || has_it {
            return;
        }
        let rt = &self.tables.port(m).rt;
        let r = with_rx(rt, |s| s.send(hdr, src)).and_then(|sent| sent);
        // A TAP counts its own write failures.
        if let (Err(r), None) = (r, rt.tap_dev()) {
            rt.stats.count_drop(r);
        }
    }
}
