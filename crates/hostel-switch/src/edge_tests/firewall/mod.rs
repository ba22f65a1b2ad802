//! The tenant firewall in the edge, with real frames: the same namespace-and-veth internet
//! as the other edge tests, whose kernel is the external host (real TCP and UDP sockets in
//! the namespace), and test rings as the VMs.
//!
//! Tenant t1: network `a` (10.1.0.0/24: `a2` with floating 203.0.113.11, `a3` behind source
//! NAT on 203.0.113.10) and network `r` (the routed public 192.0.2.0/28 and 2001:db8:2::/64:
//! `r2`, untranslated). Tenant t2: network `b`, the same private 10.1.0.0/24 (`b2`, floating
//! 203.0.113.21, source NAT on 203.0.113.20).

use super::*;
use crate::datapath::firewall::{check_edge, FirewallFilter};
use hostel_switch_proto::{FirewallStats, FloatingIp, PolicySpec};

mod flows;
mod switch;

const GW_R: MacAddr = MacAddr([2, 0, 0, 0, 0x0c, 1]);
const VM_A3: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0x0a, 3]);
const VM_R: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0x0c, 2]);
const PRIV: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const PRIV3: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
const GW_PRIV: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const IP_R: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const OUT1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const FLOAT1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const OUT2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const FLOAT2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 21);

/// The VMs, by index into `FwRig::vms`.
const A2: usize = 0;
const A3: usize = 1;
const R2: usize = 2;
const B2: usize = 3;

fn policy(v: serde_json::Value) -> PolicySpec {
    serde_json::from_value(v).expect("a valid policy document")
}

/// t1: SSH in, SMTP rejected (RST), TFTP rejected (ICMP port unreachable), ping6 from
/// 2001:db8:ff::/48, syslog dropped and logged; default: deny in, allow out.
fn policy1() -> PolicySpec {
    policy(serde_json::json!({"rules": [
        {"id": 1, "direction": "ingress", "action": "allow", "protocol": "tcp",
         "destination_ports": [22]},
        {"id": 2, "direction": "ingress", "action": "reject", "protocol": "tcp",
         "destination_ports": [25]},
        {"id": 3, "direction": "ingress", "action": "reject", "protocol": "udp",
         "destination_ports": [69]},
        {"id": 4, "direction": "ingress", "action": "allow", "protocol": "icmpv6",
         "icmp_type": 128, "source": ["2001:db8:ff::/48"]},
        {"id": 5, "direction": "ingress", "action": "drop", "protocol": "udp",
         "destination_ports": [514], "log": true}
    ]}))
}

/// t2: HTTP in only.
fn policy2() -> PolicySpec {
    policy(serde_json::json!({"rules": [
        {"id": 1, "direction": "ingress", "action": "allow", "protocol": "tcp",
         "destination_ports": [80]}
    ]}))
}

fn fw_external_cfg(nic: &str) -> ExternalConfig {
    let private: Ipv4Cidr = "10.1.0.0/24".parse().unwrap();
    ExternalConfig {
        edges: vec![
            EdgeConfig {
                tenant: "t1".into(),
                networks: vec!["a".into(), "r".into()],
                outside4: OUT1,
                outside6: Some("2001:db8:1::10".parse().unwrap()),
                floating4: vec![FLOAT1],
                routed4: vec!["192.0.2.0/28".parse().unwrap()],
                routed6: vec!["2001:db8:2::/64".parse().unwrap()],
                attached4: vec![FloatingIp {
                    public: FLOAT1,
                    private: PRIV,
                }],
                snat4: vec![private],
                policy: policy1(),
                ..edge_defaults()
            },
            EdgeConfig {
                tenant: "t2".into(),
                networks: vec!["b".into()],
                outside4: OUT2,
                floating4: vec![FLOAT2],
                attached4: vec![FloatingIp {
                    public: FLOAT2,
                    private: PRIV,
                }],
                snat4: vec![private],
                policy: policy2(),
                ..edge_defaults()
            },
        ],
        ..external_cfg(nic)
    }
}

use crate::types::Ipv4Cidr;

fn fw_networks() -> Vec<NetworkConfig> {
    vec![
        network("a", "10.1.0.0/24", GW_PRIV, GW_A),
        network6(network(
            "r",
            "192.0.2.0/28",
            Ipv4Addr::new(192, 0, 2, 1),
            GW_R,
        )),
        network("b", "10.1.0.0/24", GW_PRIV, GW_B),
    ]
}

fn fw_ports() -> Vec<PortConfig> {
    vec![
        vm_port("a2", "a", VM_A, PRIV),
        vm_port("a3", "a", VM_A3, PRIV3),
        PortConfig {
            ipv6: vec![IP6_A],
            ..vm_port("r2", "r", VM_R, IP_R)
        },
        vm_port("b2", "b", VM_B, PRIV),
    ]
}

/// Four VMs behind two firewalled edges on the external port, with its reader running.
struct FwRig {
    net: Internet,
    core: Arc<Core>,
    ext: Arc<External>,
    cfg: ExternalConfig,
    vms: Vec<Vm>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl FwRig {
    fn new() -> Option<FwRig> {
        Self::with(|_| {})
    }

    /// A rig whose external configuration `edit` changed first.
    fn with(edit: impl FnOnce(&mut ExternalConfig)) -> Option<FwRig> {
        let net = match Internet::new() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("SKIPPED: {e}");
                return None;
            }
        };
        // The namespace's kernel would leave TCP/UDP checksums to the veth's offload (a
        // partial sum on the wire, which no real NIC delivers): computed in software instead.
        sh(&format!(
            "ip netns exec {} ethtool -K {} tx off",
            net.ns,
            net.wire_end()
        ))
        .expect("ethtool (scripts/install-deps.sh installs it)");
        let ext = External::open(&net.nic).expect("external port on the veth");
        let mut cfg = fw_external_cfg(&net.nic);
        edit(&mut cfg);
        for (i, e) in cfg.edges.iter().enumerate() {
            check_edge(i, e).expect("the test's edges are valid");
        }
        let vms: Vec<Vm> = ["a2", "a3", "r2", "b2"]
            .iter()
            .map(|id| {
                let mut v = Vm::new(id, ALL);
                v.post_rx(128, 2048);
                v
            })
            .collect();
        let core = Core::new(Pipeline::new());
        let mut rig = FwRig {
            net,
            core,
            ext,
            cfg,
            vms,
            reader: None,
        };
        rig.restart_filters();
        let (e, c) = (rig.ext.clone(), rig.core.clone());
        rig.reader = Some(std::thread::spawn(move || external::run(e, c)));
        Some(rig)
    }

    /// Publishes tables with new firewalls made from the same configuration: what a new
    /// switch process given the same config does (empty connection tables, same rules).
    fn restart_filters(&mut self) {
        let rts: HashMap<String, Arc<PortRuntime>> = ["a2", "a3", "r2", "b2"]
            .iter()
            .zip(&self.vms)
            .map(|(id, v)| (id.to_string(), v.rt.clone()))
            .collect();
        let t = Tables::build(
            &fw_networks(),
            &fw_ports(),
            |p| rts[&p.id].clone(),
            |_| None,
        )
        .unwrap()
        .with_external(
            &self.cfg,
            self.ext.clone(),
            |e| {
                Arc::new(EdgeRuntime::new(
                    &e.tenant,
                    Box::new(FirewallFilter::new(e)),
                ))
            },
            false,
        )
        .unwrap();
        self.core.publish(t);
    }

    fn edge(&self, tenant: &str) -> Arc<EdgeRuntime> {
        let t = self.core.tables();
        let x = t.ext.as_ref().expect("external network");
        x.edges
            .iter()
            .find(|e| e.rt.tenant == tenant)
            .expect("edge")
            .rt
            .clone()
    }

    fn fw(&self, tenant: &str) -> FirewallStats {
        self.edge(tenant).firewall_stats().expect("a firewall")
    }

    fn drops(&self, tenant: &str, reason: &str) -> u64 {
        self.fw(tenant).drops.get(reason).copied().unwrap_or(0)
    }

    /// Sends `frame` from VM `i` through the switch (synchronously, on this thread).
    fn send(&mut self, i: usize, frame: &[u8]) {
        self.vms[i].queue_tx(VnetHdr::default(), frame, 1);
        self.vms[i].run_tx(&self.core);
    }

    fn gateway_resolved(&self) {
        wait_for("the upstream gateway's MAC", || {
            self.ext.neighbor(IpAddr::V4(UPSTREAM))
        });
    }

    /// Runs `f` on a thread inside the internet's namespace (its sockets stay there).
    fn in_ns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.net.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace fd affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for FwRig {
    fn drop(&mut self) {
        if let Some(d) = self.ext.dev() {
            d.stop();
        }
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// A TCP segment with correct checksums.
#[allow(clippy::too_many_arguments)]
fn tcp(
    (src, dst): (MacAddr, MacAddr),
    (sip, sport): (Ipv4Addr, u16),
    (dip, dport): (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[8, 0, 0x45, 0]);
    f.extend_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&sip.octets());
    f.extend_from_slice(&dip.octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    let mut f = with_ip_checksum(f);
    let acc = checksum::pseudo4(sip, dip, 6, (20 + payload.len()) as u16);
    let c = checksum::finish(checksum::sum(acc, &f[34..]));
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

/// Whether an IPv4 frame's TCP/UDP/ICMP checksum holds (after translation).
fn l4_ok(f: &[u8]) -> bool {
    let tot = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let l4 = &f[34..14 + tot];
    if f[23] == 1 {
        return checksum::checksum(l4) == 0;
    }
    let acc = checksum::pseudo4(ipv4_of(f, 26), ipv4_of(f, 30), f[23], l4.len() as u16);
    checksum::finish(checksum::sum(acc, l4)) == 0
}

fn is_tcp(f: &[u8]) -> bool {
    f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 6
}

fn ports(f: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([f[34], f[35]]),
        u16::from_be_bytes([f[36], f[37]]),
    )
}

fn seq_of(f: &[u8]) -> u32 {
    u32::from_be_bytes([f[38], f[39], f[40], f[41]])
}
