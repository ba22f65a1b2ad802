//! The switch's inbound edge path, for `bench-edge` (`make bench-firewall`): a wire frame
//! through [`crate::external::handle`] (parse, owner lookup, TTL, the edge's filter, the
//! inside lookup and L2 rewrite) to a tenant port. The port has no guest ring, so the last
//! step (the virtqueue copy) is left out in every case alike: the ratios below are of the
//! edge path without it, which overstates the filter's share of a whole switch. Frames go
//! one at a time ([`EdgeBench::wire`]) or a ring block at a time as the reader hands them
//! over, with its look-ahead cache hints ([`EdgeBench::wire_block`]).

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::config::{NetworkConfig, PortConfig};
use crate::datapath::edge::{EdgeFilter, EdgeRuntime, EdgeScratch, PassFilter};
use crate::datapath::firewall::FirewallFilter;
use crate::datapath::port::PortRuntime;
use crate::external::{self, External};
use crate::packet::REPLY_BUF;
use crate::tables::Tables;
use hostel_switch_proto::{DropReason, EdgeConfig, ExternalConfig, PolicySpec};

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
        EdgeBench {
            tables,
            scratch: EdgeScratch::default(),
            reply: Box::new([0; REPLY_BUF]),
        }
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
