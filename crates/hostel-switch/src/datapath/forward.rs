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
                Ingress::Port(_) => {
                    let s = scratch.edge.get_or_insert_with(Box::default);
                    edge::outbound(self.tables, self.net(), self.sender, hdr, src, s)
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
