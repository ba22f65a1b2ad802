//! The external network with real frames: a veth pair whose host end is the "real NIC"
//! the switch drives (AF_PACKET ring), and whose other end sits in a namespace playing the
//! internet (the upstream gateway 203.0.113.1, an external host 198.51.100.7, routes for
//! the tenants' routed public subnets via their edges' outside addresses). Tenant VMs are
//! test rings (`flow_tests::Vm`). Skipped (with a printed reason) without root or `ip`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{NetworkConfig, PortConfig};
use crate::datapath::edge::{EdgeFilter, EdgeRuntime, EdgeVerdict, PassFilter};
use crate::datapath::flow_tests::{Vm, ALL};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::port::PortRuntime;
use crate::datapath::vnet::VnetHdr;
use crate::datapath::Core;
use crate::external::{self, External};
use crate::packet::checksum;
use crate::packet::parse::tests::udp4;
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::types::MacAddr;
use crate::uplink_tests::PacketSocket;
use hostel_switch_proto::{EdgeConfig, ExternalConfig};

const EXT_MAC: MacAddr = MacAddr([0x02, 0, 0x5e, 0, 0, 1]);
const GW_A: MacAddr = MacAddr([2, 0, 0, 0, 0x0a, 1]);
const GW_B: MacAddr = MacAddr([2, 0, 0, 0, 0x0b, 1]);
const VM_A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0x0a, 2]);
const VM_B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0x0b, 2]);
/// A second VM of tenant t1 on network `a` (VM-to-VM traffic).
const VM_C: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0x0a, 3]);
const IP_C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const IP_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const IP_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 18);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const UPSTREAM6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const FAR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 7);
const IP6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(5);

/// Why the namespace playing the internet could not be made: only `NotRoot` is a reason to
/// skip a test; the others are failures.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("needs root (network namespaces, veth, AF_PACKET)")]
    NotRoot,
    #[error("`{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}`: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("the gateway's MAC {0:?} does not parse")]
    GatewayMac(String),
}

fn sh(cmd: &str) -> Result<String, SetupError> {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|source| SetupError::Spawn {
            cmd: cmd.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(SetupError::Failed {
            cmd: cmd.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The internet in a namespace, joined to the host by a veth pair; removed on drop (the
/// namespace takes its veth end, and so the pair, with it).
struct Internet {
    ns: String,
    /// The host end: the switch's "real NIC".
    nic: String,
    /// The MAC of the gateway's end, in the namespace.
    gw_mac: MacAddr,
}

impl Internet {
    fn new() -> Result<Internet, SetupError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(SetupError::NotRoot);
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut me = Internet {
            ns: format!("hostel-t-edge-{tag}"),
            nic: format!("hxa{tag}"),
            gw_mac: MacAddr::ZERO,
        };
        let (ns, a, b) = (&me.ns, &me.nic, format!("hxb{tag}"));
        sh(&format!(
            "ip netns add {ns} && ip link add {a} type veth peer name {b} && \
             ip link set {a} mtu 9000 && ip link set {b} mtu 9000 && \
             ip link set {b} netns {ns} && \
             sysctl -qw net.ipv6.conf.{a}.disable_ipv6=1 && ip link set {a} up && \
             ip -n {ns} link set lo up && ip -n {ns} link set {b} up && \
             ip -n {ns} addr add {UPSTREAM}/24 dev {b} && \
             ip -n {ns} addr add {FAR}/32 dev lo && \
             ip -n {ns} route add 192.0.2.0/28 via 203.0.113.10 && \
             ip -n {ns} route add 192.0.2.16/28 via 203.0.113.20 && \
             ip -n {ns} addr add {UPSTREAM6}/64 dev {b} nodad && \
             ip -n {ns} addr add {FAR6}/128 dev lo && \
             ip -n {ns} route add 2001:db8:2::/64 via 2001:db8:1::10"
        ))?;
        let mac = sh(&format!(
            "ip netns exec {ns} cat /sys/class/net/{b}/address"
        ))?;
        me.gw_mac = mac
            .trim()
            .parse()
            .map_err(|_| SetupError::GatewayMac(mac.trim().to_string()))?;
        Ok(me)
    }

    fn wire_end(&self) -> String {
        self.nic.replacen("hxa", "hxb", 1)
    }

    /// A packet socket on the namespace's end of the wire: what it sends arrives on the
    /// switch's NIC, and it sees what the switch sends.
    fn wire(&self) -> PacketSocket {
        let (path, dev) = (format!("/var/run/netns/{}", self.ns), self.wire_end());
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace fd affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            PacketSocket::open(&dev).expect("packet socket in the namespace")
        })
        .join()
        .expect("wire thread")
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns del {}", self.ns));
        let _ = sh(&format!("ip link del {}", self.nic));
    }
}

fn external_cfg(nic: &str) -> ExternalConfig {
    ExternalConfig {
        interface: nic.into(),
        mac: EXT_MAC,
        subnet4: "203.0.113.0/24".parse().unwrap(),
        gateway4: UPSTREAM,
        subnet6: Some("2001:db8:1::/64".parse().unwrap()),
        gateway6: Some(UPSTREAM6),
        edges: vec![
            EdgeConfig {
                tenant: "t1".into(),
                networks: vec!["a".into()],
                outside4: Ipv4Addr::new(203, 0, 113, 10),
                outside6: Some("2001:db8:1::10".parse().unwrap()),
                floating4: vec![Ipv4Addr::new(203, 0, 113, 11)],
                routed4: vec!["192.0.2.0/28".parse().unwrap()],
                routed6: vec!["2001:db8:2::/64".parse().unwrap()],
                ..edge_defaults()
            },
            EdgeConfig {
                tenant: "t2".into(),
                networks: vec!["b".into()],
                outside4: Ipv4Addr::new(203, 0, 113, 20),
                outside6: None,
                floating4: vec![],
                routed4: vec!["192.0.2.16/28".parse().unwrap()],
                routed6: vec![],
                ..edge_defaults()
            },
        ],
    }
}

/// The fields of an edge the firewall reads, at their defaults.
fn edge_defaults() -> EdgeConfig {
    EdgeConfig {
        tenant: String::new(),
        networks: vec![],
        outside4: Ipv4Addr::UNSPECIFIED,
        outside6: None,
        floating4: vec![],
        routed4: vec![],
        routed6: vec![],
        attached4: vec![],
        snat4: vec![],
        policy: Default::default(),
        conntrack_limit: hostel_switch_proto::external::DEFAULT_CONNTRACK_LIMIT,
        appliances: Vec::new(),
    }
}

fn network(id: &str, subnet: &str, gw: Ipv4Addr, mac: MacAddr) -> NetworkConfig {
    NetworkConfig {
        id: id.into(),
        subnet4: Some(subnet.parse().unwrap()),
        gateway4: Some(gw),
        subnet6: None,
        gateway6: None,
        gateway_mac: mac,
        uplink: None,
        dns: vec![],
        mtu: 1500,
    }
}

fn network6(n: NetworkConfig) -> NetworkConfig {
    NetworkConfig {
        subnet6: Some("2001:db8:2::/64".parse().unwrap()),
        gateway6: Some("2001:db8:2::1".parse().unwrap()),
        ..n
    }
}

fn vm_port(id: &str, net: &str, mac: MacAddr, ip: Ipv4Addr) -> PortConfig {
    PortConfig {
        id: id.into(),
        network: net.into(),
        mac,
        ipv4: Some(ip),
        ipv6: vec![],
        socket: format!("/nonexistent/{id}.sock").into(),
        kind: Default::default(),
        limits: Default::default(),
    }
}

/// Drops inbound UDP to port 9 (discard), and answers outbound UDP to port 7 with a copy
/// of the packet sent back (addresses swapped): enough to see both verdicts act.
struct TestFilter;

impl EdgeFilter for TestFilter {
    fn outbound(&mut self, pkt: &mut [u8], reply: &mut [u8], _: u64) -> EdgeVerdict {
        if pkt.len() >= 28 && pkt[9] == 17 && pkt[22..24] == [0, 7] && reply.len() >= pkt.len() {
            let r = &mut reply[..pkt.len()];
            r.copy_from_slice(pkt);
            r[12..16].copy_from_slice(&pkt[16..20]);
            r[16..20].copy_from_slice(&pkt[12..16]);
            return EdgeVerdict::Reply(pkt.len());
        }
        EdgeVerdict::Pass
    }
    fn inbound(&mut self, pkt: &mut [u8], _: &mut [u8], _: u64) -> EdgeVerdict {
        if pkt.len() >= 28 && pkt[9] == 17 && pkt[22..24] == [0, 9] {
            return EdgeVerdict::Drop;
        }
        EdgeVerdict::Pass
    }
}

/// The rig's tables: networks `a` (t1: ports a2, a3) and `b` (t2: port b2) behind `cfg`.
fn rig_tables(
    rts: &HashMap<String, Arc<PortRuntime>>,
    ext: Arc<External>,
    cfg: &ExternalConfig,
    edge_rt: impl FnMut(&EdgeConfig) -> Arc<EdgeRuntime>,
) -> Tables {
    Tables::build(
        &[
            network6(network(
                "a",
                "192.0.2.0/28",
                Ipv4Addr::new(192, 0, 2, 1),
                GW_A,
            )),
            network("b", "192.0.2.16/28", Ipv4Addr::new(192, 0, 2, 17), GW_B),
        ],
        &[
            PortConfig {
                ipv6: vec![IP6_A],
                ..vm_port("a2", "a", VM_A, IP_A)
            },
            vm_port("b2", "b", VM_B, IP_B),
            vm_port("a3", "a", VM_C, IP_C),
        ],
        |p| rts[&p.id].clone(),
        |_| None,
    )
    .unwrap()
    .with_external(cfg, ext, edge_rt, false)
    .unwrap()
}

/// Two tenant VMs behind their edges on the external port, with its reader running.
struct Rig {
    net: Internet,
    core: Arc<Core>,
    ext: Arc<External>,
    a: Vm,
    b: Vm,
    /// t1's second VM, beside `a` on network `a`.
    c: Vm,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Rig {
    fn new() -> Option<Rig> {
        let net = match Internet::new() {
            Ok(n) => n,
            Err(e @ SetupError::NotRoot) => {
                eprintln!("SKIPPED: {e}");
                return None;
            }
            Err(e) => panic!("setting up the internet namespace: {e}"),
        };
        let ext = External::open(&net.nic).expect("external port on the veth");
        let mut a = Vm::new("a2", ALL);
        let mut b = Vm::new("b2", ALL);
        let mut c = Vm::new("a3", ALL);
        a.post_rx(64, 2048);
        b.post_rx(64, 2048);
        c.post_rx(64, 2048);
        let rts: HashMap<String, Arc<PortRuntime>> = [
            ("a2".to_string(), a.rt.clone()),
            ("b2".to_string(), b.rt.clone()),
            ("a3".to_string(), c.rt.clone()),
        ]
        .into();
        let t = rig_tables(&rts, ext.clone(), &external_cfg(&net.nic), |e| {
            let f: Box<dyn EdgeFilter> = if e.tenant == "t2" {
                Box::new(TestFilter)
            } else {
                Box::new(PassFilter)
            };
            Arc::new(EdgeRuntime::new(&e.tenant, f))
        });
        let core = Core::new(Pipeline::new());
        core.publish(t);
        let reader = {
            let (e, c) = (ext.clone(), core.clone());
            std::thread::spawn(move || external::run(e, c))
        };
        Some(Rig {
            net,
            core,
            ext,
            a,
            b,
            c,
            reader: Some(reader),
        })
    }

    /// Publishes the rig's tables again with external configuration `cfg`, keeping the
    /// ports' and edges' live state.
    fn republish(&self, cfg: &ExternalConfig) {
        let rts: HashMap<String, Arc<PortRuntime>> = [
            ("a2".to_string(), self.a.rt.clone()),
            ("b2".to_string(), self.b.rt.clone()),
            ("a3".to_string(), self.c.rt.clone()),
        ]
        .into();
        let old = self.core.tables();
        let edges: HashMap<String, Arc<EdgeRuntime>> = old
            .ext
            .as_ref()
            .map(|x| {
                x.edges
                    .iter()
                    .map(|e| (e.cfg.tenant.clone(), e.rt.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let t = rig_tables(&rts, self.ext.clone(), cfg, |e| edges[&e.tenant].clone());
        self.core.publish(t);
    }

    /// Waits until the switch has resolved the upstream gateway by ARP on the wire.
    fn gateway_resolved(&self) -> MacAddr {
        wait_for("the upstream gateway's MAC", || {
            self.ext.neighbor(IpAddr::V4(UPSTREAM))
        })
    }

    fn ext_drops(&self, r: DropReason) -> u64 {
        self.ext.port.stats.drops(r)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(d) = self.ext.dev() {
            d.stop();
        }
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Waits for a frame on a VM's RX ring matching `want`.
fn vm_gets(vm: &mut Vm, what: &str, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    wait_for(what, || {
        vm.received().into_iter().map(|(_, f)| f).find(|f| want(f))
    })
}

fn with_ip_checksum(mut f: Vec<u8>) -> Vec<u8> {
    f[24..26].fill(0);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

fn udp(src: MacAddr, dst: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr, dport: u16, p: &[u8]) -> Vec<u8> {
    let mut f = udp4(src, dst, sip, dip, p);
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    with_ip_checksum(f)
}

fn echo_request(src: MacAddr, dst: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut f = udp4(src, dst, sip, dip, &[0u8; 24]);
    f[23] = 1; // ICMP
    let icmp = &mut f[34..];
    icmp.fill(0);
    icmp[0] = 8;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&1u16.to_be_bytes());
    icmp[8..].copy_from_slice(b"hostel-edge-ping-payload"[..24].as_ref());
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    with_ip_checksum(f)
}

fn ipv4_of(f: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[off], f[off + 1], f[off + 2], f[off + 3])
}

fn echo6(src: MacAddr, dst: MacAddr, sip: Ipv6Addr, dip: Ipv6Addr, id: u16) -> Vec<u8> {
    let payload = b"hostel-edge-ping6";
    let len = 8 + payload.len();
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(len as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&sip.octets());
    f.extend_from_slice(&dip.octets());
    f.extend_from_slice(&[128, 0, 0, 0]);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(payload);
    let acc = checksum::pseudo6(&sip, &dip, 58, len as u32);
    let c = checksum::finish(checksum::sum(acc, &f[54..]));
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f
}

fn ipv6_of(f: &[u8], off: usize) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&f[off..off + 16]).unwrap())
}

mod appliance;
mod firewall;
mod flows;
mod ids;
mod wire;
