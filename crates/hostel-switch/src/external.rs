//! The external port: the host interface the switch drives ([`crate::afpacket`]), the
//! neighbour cache for next hops on the wire, and the reader that handles what arrives:
//! ARP requests and neighbour solicitations for the edges' public addresses are answered
//! with the external MAC, answers about next hops the switch asked for are learnt, and IP
//! frames to the external MAC go to the edge owning the destination
//! ([`crate::datapath::edge::inbound`]). Everything else is counted as a drop on the port
//! (frames from the wire are untrusted: parsed from a private copy, lengths checked).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::afpacket::PacketDev;
use crate::datapath::edge::{self, EdgeScratch};
use crate::datapath::exec::with_rx;
use crate::datapath::neigh::{Lookup, NeighCache};
use crate::datapath::port::PortRuntime;
use crate::datapath::ratelimit::now_ns;
use crate::datapath::rx::FrameSrc;
use crate::datapath::vnet::VnetHdr;
use crate::datapath::Core;
use crate::error::SwitchError;
use crate::packet::parse::ETH_HLEN;
use crate::packet::{arp, ip, ndp, parse, L3, REPLY_BUF};
use crate::stats::DropReason;
use crate::tables::{EdgeIdx, ExtEntry, Tables};
use crate::types::MacAddr;
use hostel_firewall::Stage;
use hostel_virtq::SegList;

/// How long the reader waits for the ring before looking at `stop` and the gateways.
const POLL_MS: libc::c_int = 100;

/// The external network's live state, kept across table rebuilds.
pub struct External {
    pub port: Arc<PortRuntime>,
    neigh: Mutex<NeighCache>,
}

impl External {
    /// Opens interface `name` as the external port.
    pub fn open(name: &str) -> std::io::Result<Arc<External>> {
        let dev = PacketDev::open(name)?;
        Ok(Arc::new(External {
            port: PortRuntime::packet(&format!("external:{name}"), Arc::new(dev)),
            neigh: Mutex::new(NeighCache::default()),
        }))
    }

    /// An external port on no interface (for fuzzing): every send fails as
    /// `destination_down`, everything else works as on a real one.
    pub fn detached(id: &str) -> Arc<External> {
        Arc::new(External {
            port: PortRuntime::new(id),
            neigh: Mutex::new(NeighCache::default()),
        })
    }

    pub fn dev(&self) -> Option<&Arc<PacketDev>> {
        self.port.packet_dev()
    }

    fn neigh(&self) -> std::sync::MutexGuard<'_, NeighCache> {
        self.neigh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn lookup(&self, ip: IpAddr, now: u64) -> Lookup {
        self.neigh().lookup(ip, now)
    }

    /// The MAC known for `ip` on the wire.
    pub fn neighbor(&self, ip: IpAddr) -> Option<MacAddr> {
        self.neigh().get(ip)
    }

    /// Sends a complete frame out of the interface now.
    pub fn send(&self, frame: &[u8]) -> Result<(), DropReason> {
        let r = self.queue(VnetHdr::default(), frame);
        self.flush();
        r
    }

    /// Sends every frame queued since the last flush (one system call).
    pub fn flush(&self) {
        if let Some(d) = self.dev() {
            d.flush();
        }
    }

    /// Queues a complete frame for the interface: it leaves on the next [`External::flush`]
    /// (which the sending worker makes once per batch).
    pub fn queue(&self, hdr: VnetHdr, frame: &[u8]) -> Result<(), DropReason> {
        let empty = SegList::default();
        let src = FrameSrc {
            head: frame,
            tail: &empty,
            tail_skip: 0,
            len: frame.len(),
        };
        with_rx(&self.port, |s| s.send(hdr, &src))?
    }

    /// Asks the wire who has `ip` (ARP, or a neighbour solicitation from the external MAC's
    /// link-local address), from the first edge's outside address.
    pub fn solicit(&self, x: &ExtEntry, ip: IpAddr) {
        let mut out = [0u8; 128];
        let n = match ip {
            IpAddr::V4(a) => {
                let spa = x
                    .cfg
                    .edges
                    .first()
                    .map_or(std::net::Ipv4Addr::UNSPECIFIED, |e| e.outside4);
                arp::build_request(x.cfg.mac, spa, a, &mut out)
            }
            IpAddr::V6(a) => ndp::build_solicit(x.cfg.mac, &x.cfg.mac.link_local(), &a, &mut out),
        };
        if n > 0 {
            let _ = self.send(&out[..n]);
        }
    }
}

/// The external port and its reader thread.
pub struct ExternalHandle {
    pub ext: Arc<External>,
    pub interface: String,
    thread: Option<JoinHandle<()>>,
}

impl ExternalHandle {
    /// Opens `interface` and starts its reader on the tables of `core`.
    pub fn start(interface: &str, core: Arc<Core>) -> Result<Self, SwitchError> {
        let ext = External::open(interface).map_err(|source| SwitchError::External {
            name: interface.to_string(),
            source,
        })?;
        let name = format!("ext-{interface}");
        let e2 = ext.clone();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || run(e2, core))
            .map_err(|source| SwitchError::Thread { name, source })?;
        Ok(ExternalHandle {
            ext,
            interface: interface.to_string(),
            thread: Some(thread),
        })
    }

    /// Stops the reader (within its poll interval) and waits for it.
    pub fn stop(mut self) {
        if let Some(d) = self.ext.dev() {
            d.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reader loop of the external port: drains the ring as blocks retire, and keeps the
/// upstream gateways resolved (asked at most once a second while unknown, refreshed before
/// they go stale), so the first frame out rarely waits for ARP.
pub fn run(ext: Arc<External>, core: Arc<Core>) {
    let Some(dev) = ext.dev().cloned() else {
        return;
    };
    let mut scratch = EdgeScratch::default();
    let mut reply = [0u8; REPLY_BUF];
    let mut said_gone = false;
    while !dev.stopped() {
        if !dev.wait(POLL_MS) {
            if !said_gone {
                tracing::warn!(interface = %dev.name, "external interface gone; its traffic is dropped");
                said_gone = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(POLL_MS as u64));
            continue;
        }
        // Also the backstop for a sender that queued without flushing.
        ext.flush();
        let tables = core.tables();
        let x = tables.ext.as_ref().filter(|x| Arc::ptr_eq(&x.rt, &ext));
        let now = now_ns();
        if let Some(x) = x {
            resolve_gateways(x, now);
        }
        dev.drain(|frames| {
            for r in frames {
                match r {
                    Ok(f) => ext.port.stats.add_tx(1, f.len() as u64),
                    Err(reason) => ext.port.stats.count_drop(*reason),
                }
            }
            let Some(x) = x else {
                for _ in frames.iter().filter(|r| r.is_ok()) {
                    ext.port.stats.count_drop(DropReason::UnknownPort);
                }
                return;
            };
            handle_block(&tables, x, frames, &mut scratch, &mut reply, now, |r| {
                if let Err(reason) = r {
                    ext.port.stats.count_drop(reason);
                }
            });
        });
        ext.flush();
    }
}

fn resolve_gateways(x: &ExtEntry, now: u64) {
    let gws = [
        Some(IpAddr::V4(x.cfg.gateway4)),
        x.cfg.gateway6.map(IpAddr::V6),
    ];
    for gw in gws.into_iter().flatten() {
        let found = {
            let mut n = x.rt.neigh();
            n.pin(gw, now);
            n.lookup(gw, now)
        };
        if found.ask {
            x.rt.solicit(x, gw);
        }
    }
}

/// One frame from the wire.
/// How far ahead of the frame being handled its successors' edge filters are hinted: the
/// connection index slot first, its entry once the slot has had time to arrive (the
/// distances `bench-firewall` measured).
const HINT_SLOT: usize = 8;
const HINT_ENTRY: usize = 4;

/// The edge an IPv4 wire frame to the external MAC is for, cheaply (no validation: a hint
/// only; `handle` checks everything).
fn hint_owner(x: &ExtEntry, f: &[u8]) -> Option<EdgeIdx> {
    let h = f.get(..34)?;
    if h[12..14] != [8, 0] || h[0..6] != x.cfg.mac.0 {
        return None;
    }
    x.owner(IpAddr::V4(Ipv4Addr::new(h[30], h[31], h[32], h[33])))
}

/// Handles a ring block's frames in order (`done` gets each IP-or-not frame's outcome),
/// hinting the owning edge's filter a few frames ahead so a firewall's connection lookups
/// overlap other frames' work instead of stalling one by one.
pub(crate) fn handle_block(
    t: &Tables,
    x: &ExtEntry,
    frames: &[Result<&[u8], DropReason>],
    s: &mut EdgeScratch,
    reply: &mut [u8; REPLY_BUF],
    now: u64,
    mut done: impl FnMut(Result<(), DropReason>),
) {
    // The owner of frame i (hinted at `Stage::Slot`), kept until its `Stage::Entry` hint.
    let mut owners = [None::<EdgeIdx>; HINT_SLOT + 1];
    let owner_of = |i: usize, owners: &mut [Option<EdgeIdx>; HINT_SLOT + 1]| {
        let f = match frames.get(i) {
            Some(Ok(f)) => Some(*f),
            _ => None,
        };
        let o = f.and_then(|f| hint_owner(x, f));
        owners[i % (HINT_SLOT + 1)] = o;
        o.zip(f)
    };
    if x.hints {
        for i in 0..HINT_SLOT.min(frames.len()) {
            if let Some((e, f)) = owner_of(i, &mut owners) {
                x.edges[e as usize]
                    .rt
                    .prefetch(&[(&f[ETH_HLEN..], Stage::Slot)]);
            }
        }
    }
    for (i, r) in frames.iter().enumerate() {
        if x.hints {
            let slot = owner_of(i + HINT_SLOT, &mut owners);
            let entry = match (
                owners[(i + HINT_ENTRY) % (HINT_SLOT + 1)],
                frames.get(i + HINT_ENTRY),
            ) {
                (Some(e), Some(Ok(f))) => Some((e, *f)),
                _ => None,
            };
            match (slot, entry) {
                // One edge (the common case): both hints under one try-lock.
                (Some((a, fa)), Some((b, fb))) if a == b => x.edges[a as usize].rt.prefetch(&[
                    (&fa[ETH_HLEN..], Stage::Slot),
                    (&fb[ETH_HLEN..], Stage::Entry),
                ]),
                (a, b) => {
                    if let Some((e, f)) = a {
                        x.edges[e as usize]
                            .rt
                            .prefetch(&[(&f[ETH_HLEN..], Stage::Slot)]);
                    }
                    if let Some((e, f)) = b {
                        x.edges[e as usize]
                            .rt
                            .prefetch(&[(&f[ETH_HLEN..], Stage::Entry)]);
                    }
                }
            }
        }
        if let Ok(f) = r {
            done(handle(t, x, f, s, reply, now));
        }
    }
}

pub(crate) fn handle(
    t: &Tables,
    x: &ExtEntry,
    frame: &[u8],
    s: &mut EdgeScratch,
    reply: &mut [u8; REPLY_BUF],
    now: u64,
) -> Result<(), DropReason> {
    let buf = s.frame.get_mut(..frame.len()).ok_or(DropReason::TooLong)?;
    buf.copy_from_slice(frame);
    let p = parse(buf).map_err(|_| DropReason::Malformed)?;
    let me = x.cfg.mac;
    let for_me = p.dst == me;
    if !for_me && !p.dst.is_multicast() {
        return Err(DropReason::NotForUs);
    }
    match p.l3 {
        L3::Arp(a) => {
            let sender_on_wire = x.cfg.subnet4.contains(a.spa);
            if sender_on_wire {
                // RFC 826's merge: refresh what we already track, never add unasked.
                x.rt.neigh().learn(IpAddr::V4(a.spa), a.sha, now, false);
            }
            if a.op == arp::OP_REQUEST && x.wire4.contains_key(&a.tpa) {
                let n = arp::build_reply(&a, me, reply);
                x.rt.send(&reply[..n])?;
                x.rt.port
                    .stats
                    .replies
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            Err(DropReason::ArpUnanswered)
        }
        L3::Ipv6(ip) if ip.icmp_type == Some(ndp::NEIGHBOR_SOLICIT) => {
            let target = ndp::solicited_target(buf, &ip).ok_or(DropReason::NdpUnanswered)?;
            if x.wire6.contains_key(&target) || target == me.link_local() {
                let n = ndp::build_advert(p.src, &ip.src, &target, me, true, reply);
                if n == 0 {
                    return Err(DropReason::NdpUnanswered);
                }
                x.rt.send(&reply[..n])?;
                x.rt.port
                    .stats
                    .replies
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            Err(DropReason::NdpUnanswered)
        }
        L3::Ipv6(ip) if ip.icmp_type == Some(ndp::NEIGHBOR_ADVERT) => {
            let (target, mac) = ndp::advertised(buf, &ip).ok_or(DropReason::NdpUnanswered)?;
            x.rt.neigh().learn(IpAddr::V6(target), mac, now, false);
            Ok(())
        }
        L3::Ipv4(_) | L3::Ipv6(_) if for_me => {
            let n = ip::ip_frame_len(buf)?;
            let buf = &mut s.frame[..n];
            let dst = ip::dst_ip(buf)?;
            let e = x.owner(dst).ok_or(DropReason::NoRoute)?;
            // The tenants' public addresses live behind this switch: one arriving from the
            // wire as a source is forged (it would pass for another tenant's traffic).
            if x.owner(ip::src_ip(buf)?).is_some() {
                return Err(DropReason::SpoofedSrcIp);
            }
            edge::inbound(t, x, e, buf, &mut s.reply, now, edge::Offload::default())
        }
        L3::Ipv4(_) | L3::Ipv6(_) => Err(DropReason::NotForUs),
        L3::Vlan => Err(DropReason::VlanTagged),
        L3::Other(_) => Err(DropReason::UnsupportedEthertype),
    }
}
