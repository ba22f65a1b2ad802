//! The switch's inbound edge path, for `bench-edge` (`make bench-firewall`): a wire frame
//! through [`crate::external::handle`] (parse, owner lookup, TTL, the edge's filter, the
//! inside lookup and L2 rewrite) into a tenant port's guest RX ring (a real split virtqueue
//! in anonymous guest memory, driven by `hostel_virtq::driver`, its buffers recycled after
//! every block as a polling guest would). Frames go one at a time ([`EdgeBench::wire`]) or a
//! ring block at a time as the reader hands them over, with its look-ahead cache hints
//! ([`EdgeBench::wire_block`]). The outbound path ([`EdgeBench::vm_frame`]: a VM's frame
//! through `edge::outbound` to the detached external port) is measured for new
//! connections.

use std::net::Ipv4Addr;
use std::sync::Arc;

use vhost_user_backend::VringT;
use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use crate::config::{NetworkConfig, PortConfig};
use crate::datapath::edge::{self, EdgeFilter, EdgeRuntime, EdgeScratch, PassFilter};
use crate::datapath::firewall::FirewallFilter;
use crate::datapath::port::{PortRuntime, RxTarget, Vring};
use crate::datapath::rx::FrameSrc;
use crate::datapath::vnet::{VnetHdr, OFFERED_FEATURES};
use crate::external::{self, External};
use crate::packet::REPLY_BUF;
use crate::tables::Tables;
use hostel_switch_proto::{DropReason, EdgeConfig, ExternalConfig, PolicySpec};
use hostel_virtq::driver::SplitRing;
use hostel_virtq::ring::F_WRITE;
use hostel_virtq::SegList;

/// The VM's RX ring: larger than a block, so one block always finds buffers.
const QSIZE: u16 = 256;
const RX_BUF: u32 = 2048;
const RX_DATA: u64 = 0x10_0000;

/// The guest side of the VM port's RX queue.
struct GuestRx {
    ring: SplitRing,
    delivered: u64,
}

impl GuestRx {
    fn attach(port: &PortRuntime) -> GuestRx {
        let size = RX_DATA as usize + usize::from(QSIZE) * RX_BUF as usize;
        let gm =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory");
        let (mut ring, end) = SplitRing::new(&gm, 0x1000, QSIZE).expect("the RX ring");
        assert!(end <= RX_DATA);
        for id in 0..QSIZE {
            let addr = RX_DATA + u64::from(id) * u64::from(RX_BUF);
            ring.write_desc(id, addr, RX_BUF, F_WRITE, 0);
        }
        ring.suppress_interrupts();
        let mem = GuestMemoryAtomic::new(gm);
        let vring = Vring::new(mem.clone(), QSIZE).expect("vring");
        vring
            .set_queue_info(ring.desc(), ring.avail(), ring.used())
            .expect("queue addresses");
        vring.set_queue_size(QSIZE);
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        port.set_rx(Some(RxTarget {
            vring,
            mem,
            features: OFFERED_FEATURES,
        }));
        let mut g = GuestRx { ring, delivered: 0 };
        g.refill();
        g
    }

    /// Takes back what the switch filled and offers every free buffer again.
    fn refill(&mut self) {
        self.delivered += self.ring.reap() as u64;
        while self.ring.repost().is_some() {}
        self.ring.publish();
    }
}

const EXT_MAC: [u8; 6] = [2, 0, 0x5e, 0, 0, 1];
const GW_MAC: [u8; 6] = [2, 0, 0x5e, 0, 0, 0xfe];
/// The VM's address in the tenant's routed public subnet (not translated, so the case
/// without a filter delivers to the same port).
pub const VM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// One tenant edge on a detached external port, with a VM port.
pub struct EdgeBench {
    tables: Tables,
    scratch: EdgeScratch,
    reply: Box<[u8; REPLY_BUF]>,
    port: std::sync::Arc<PortRuntime>,
    rx: GuestRx,
}

fn edge_cfg(policy: PolicySpec, conntrack_limit: u32) -> ExternalConfig {
    ExternalConfig {
        interface: "bench0".into(),
        mac: crate::types::MacAddr(EXT_MAC),
        subnet4: "203.0.113.0/24".parse().expect("cidr"),
        gateway4: Ipv4Addr::new(203, 0, 113, 1),
        subnet6: None,
        gateway6: None,
        edges: vec![EdgeConfig {
            tenant: "t".into(),
            networks: vec!["n".into()],
            outside4: Ipv4Addr::new(203, 0, 113, 10),
            outside6: None,
            floating4: vec![],
            routed4: vec!["10.0.0.0/24".parse().expect("cidr")],
            routed6: vec![],
            attached4: vec![],
            snat4: vec![],
            policy,
            conntrack_limit,
            appliances: Vec::new(),
        }],
    }
}

impl EdgeBench {
    /// `policy: None`: the identity filter (the switch without a firewall).
    pub fn new(policy: Option<PolicySpec>, conntrack_limit: u32) -> EdgeBench {
        let firewall = policy.is_some();
        let cfg = edge_cfg(policy.unwrap_or_default(), conntrack_limit);
        let net = NetworkConfig {
            id: "n".into(),
            subnet4: Some("10.0.0.0/24".parse().expect("cidr")),
            gateway4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            subnet6: None,
            gateway6: None,
            gateway_mac: crate::types::MacAddr([2, 0, 0, 0, 0, 1]),
            uplink: None,
            dns: vec![],
            mtu: 1500,
        };
        let p = PortConfig {
            id: "vm".into(),
            network: "n".into(),
            mac: crate::types::MacAddr([0x52, 0x54, 0, 0, 0, 2]),
            ipv4: Some(VM),
            ipv6: vec![],
            socket: "/nonexistent/bench.sock".into(),
            kind: Default::default(),
            limits: Default::default(),
        };
        let port = PortRuntime::new("vm");
        let tables = Tables::build(&[net], &[p], |_| port.clone(), |_| None)
            .and_then(|t| {
                t.with_external(
                    &cfg,
                    External::detached("external"),
                    |e| {
                        let f: Box<dyn EdgeFilter> = if firewall {
                            Box::new(FirewallFilter::new(e))
                        } else {
                            Box::new(PassFilter)
                        };
                        Arc::new(EdgeRuntime::new(&e.tenant, f))
                    },
                    false,
                )
            })
            .expect("the bench's tables");
        let rx = GuestRx::attach(&port);
        let mut b = EdgeBench {
            tables,
            scratch: EdgeScratch::default(),
            reply: Box::new([0; REPLY_BUF]),
            port,
            rx,
        };
        // The upstream gateway resolved, so the VM's frames can leave (`vm_frame`).
        let gw = Ipv4Addr::new(203, 0, 113, 1);
        if let Some(x) = b.tables.ext.as_ref() {
            let _ = x.rt.lookup(std::net::IpAddr::V4(gw), 1);
        }
        b.wire(&arp_reply(gw, GW_MAC, Ipv4Addr::new(203, 0, 113, 10)), 1);
        b
    }

    /// Recycles the VM's RX buffers, as a polling guest does.
    pub fn refill(&mut self) {
        self.rx.refill();
    }

    /// Frames the VM's ring received so far (its buffers recycled first).
    pub fn delivered(&mut self) -> u64 {
        self.rx.refill();
        self.rx.delivered
    }

    /// A VM's Ethernet frame through the switch's outbound edge path (copy into the
    /// worker's scratch, TTL, the edge's filter, L2 rewrite towards the upstream gateway,
    /// queued on the detached external port, which drops it at the last step).
    pub fn vm_frame(&mut self, frame: &[u8]) -> Result<(), DropReason> {
        let empty = SegList::default();
        let src = FrameSrc {
            head: frame,
            tail: &empty,
            tail_skip: 0,
            len: frame.len(),
        };
        let ni = self.tables.net_by_id("n").ok_or(DropReason::NoRoute)?;
        edge::outbound(
            &self.tables,
            ni,
            &self.port,
            VnetHdr::default(),
            &src,
            &mut self.scratch,
        )
    }

    /// Packets the edge let out (its `tx` counter).
    pub fn sent(&self) -> u64 {
        self.tables
            .ext
            .as_ref()
            .map_or(0, |x| x.edges[0].rt.stats.snapshot().tx_packets)
    }

    /// One wire frame (Ethernet, to the external MAC) through the inbound edge path.
    #[inline]
    pub fn wire(&mut self, frame: &[u8], now: u64) {
        if let Some(x) = self.tables.ext.as_ref() {
            let _ = external::handle(
                &self.tables,
                x,
                frame,
                &mut self.scratch,
                &mut self.reply,
                now,
            );
        }
    }

    /// A block of wire frames as the reader hands them over (with the look-ahead hints).
    pub fn wire_block(&mut self, frames: &[Result<&[u8], DropReason>], now: u64) {
        if let Some(x) = self.tables.ext.as_ref() {
            external::handle_block(
                &self.tables,
                x,
                frames,
                &mut self.scratch,
                &mut self.reply,
                now,
                |_| {},
            );
        }
        self.rx.refill();
    }

    /// A VM's IP packet through the edge's filter outbound (no forwarding): to open flows.
    pub fn vm_packet(&mut self, ip: &mut [u8], now: u64) {
        if let Some(x) = self.tables.ext.as_ref() {
            let _ = x.edges[0].rt.judge(true, ip, &mut self.reply[14..], now);
        }
    }

    /// Packets the edge let in (its `rx` counter).
    pub fn passed(&self) -> u64 {
        self.tables
            .ext
            .as_ref()
            .map_or(0, |x| x.edges[0].rt.stats.snapshot().rx_packets)
    }

    pub fn firewall(&self) -> Option<hostel_switch_proto::FirewallStats> {
        self.tables.ext.as_ref()?.edges[0].rt.firewall_stats()
    }
}

/// An Ethernet frame of `len` bytes from the wire: TCP from `src:sport` to the VM's
/// `dport`, with `flags`, valid checksums.
pub fn wire_frame(len: usize, src: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; len.max(54)];
    f[0..6].copy_from_slice(&EXT_MAC);
    f[6..12].copy_from_slice(&GW_MAC);
    f[12..14].copy_from_slice(&[8, 0]);
    ip_tcp(&mut f[14..], src, VM, sport, dport, flags);
    f
}

/// Writes an IPv4/TCP packet filling `p`, with valid checksums.
pub fn ip_tcp(p: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) {
    use crate::packet::checksum;
    let len = p.len();
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[10..12].fill(0);
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..28].copy_from_slice(&1u32.to_be_bytes());
    p[28..32].copy_from_slice(&1u32.to_be_bytes());
    p[32] = 0x50;
    p[33] = flags;
    p[34..36].copy_from_slice(&0xffffu16.to_be_bytes());
    p[36..38].fill(0);
    let acc = checksum::pseudo4(src, dst, 6, (len - 20) as u16);
    let c = checksum::finish(checksum::sum(acc, &p[20..]));
    p[36..38].copy_from_slice(&c.to_be_bytes());
}

/// The upstream gateway's ARP reply to the edge's outside address.
fn arp_reply(gw: Ipv4Addr, gw_mac: [u8; 6], to: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[0..6].copy_from_slice(&EXT_MAC);
    f[6..12].copy_from_slice(&gw_mac);
    f[12..14].copy_from_slice(&[8, 6]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    f[22..28].copy_from_slice(&gw_mac);
    f[28..32].copy_from_slice(&gw.octets());
    f[32..38].copy_from_slice(&EXT_MAC);
    f[38..42].copy_from_slice(&to.octets());
    f
}

/// The VM's Ethernet frame of `len` bytes to the gateway: TCP from its `sport` to
/// `dst:dport`, with `flags`, valid checksums.
pub fn vm_frame(len: usize, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; len.max(54)];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[8, 0]);
    ip_tcp(&mut f[14..], VM, dst, sport, dport, flags);
    f
}
