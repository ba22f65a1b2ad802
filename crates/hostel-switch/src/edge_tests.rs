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
const IP_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const IP_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 18);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const UPSTREAM6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const FAR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 7);
const IP6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(5);

fn sh(cmd: &str) -> Result<String, String> {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd}`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
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
    fn new() -> Result<Internet, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root (network namespaces, veth, AF_PACKET)".into());
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
        me.gw_mac = mac.trim().parse().map_err(|e| format!("{e:?}"))?;
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
            },
            EdgeConfig {
                tenant: "t2".into(),
                networks: vec!["b".into()],
                outside4: Ipv4Addr::new(203, 0, 113, 20),
                outside6: None,
                floating4: vec![],
                routed4: vec!["192.0.2.16/28".parse().unwrap()],
                routed6: vec![],
            },
        ],
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

/// Two tenant VMs behind their edges on the external port, with its reader running.
struct Rig {
    net: Internet,
    core: Arc<Core>,
    ext: Arc<External>,
    a: Vm,
    b: Vm,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Rig {
    fn new() -> Option<Rig> {
        let net = match Internet::new() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("SKIPPED: {e}");
                return None;
            }
        };
        let ext = External::open(&net.nic).expect("external port on the veth");
        let mut a = Vm::new("a2", ALL);
        let mut b = Vm::new("b2", ALL);
        a.post_rx(64, 2048);
        b.post_rx(64, 2048);
        let rts: HashMap<String, Arc<PortRuntime>> = [
            ("a2".to_string(), a.rt.clone()),
            ("b2".to_string(), b.rt.clone()),
        ]
        .into();
        let t = Tables::build(
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
            ],
            |p| rts[&p.id].clone(),
            |_| None,
        )
        .unwrap()
        .with_external(
            &external_cfg(&net.nic),
            ext.clone(),
            |e| {
                let f: Box<dyn EdgeFilter> = if e.tenant == "t2" {
                    Box::new(TestFilter)
                } else {
                    Box::new(PassFilter)
                };
                Arc::new(EdgeRuntime::new(&e.tenant, f))
            },
            false,
        )
        .unwrap();
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
            reader: Some(reader),
        })
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

#[test]
fn a_vm_reaches_the_internet_and_back_through_its_edge() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    assert_eq!(rig.gateway_resolved(), rig.net.gw_mac);

    // Out: the routed public address leaves untranslated, from the external MAC to the
    // gateway's, one hop older.
    let out = udp(VM_A, GW_A, IP_A, FAR, 5000, b"to-the-internet");
    rig.a.queue_tx(VnetHdr::default(), &out, 2);
    rig.a.run_tx(&rig.core);
    let seen = wire
        .expect(WAIT, |f| {
            f.len() >= 42 && f[12..14] == [8, 0] && f[42..] == out[42..]
        })
        .expect("the VM's datagram never reached the wire");
    assert_eq!(MacAddr::from_slice(&seen[0..6]), Some(rig.net.gw_mac));
    assert_eq!(MacAddr::from_slice(&seen[6..12]), Some(EXT_MAC));
    assert_eq!((ipv4_of(&seen, 26), ipv4_of(&seen, 30)), (IP_A, FAR));
    assert_eq!(seen[22], out[22] - 1, "TTL decremented once");
    assert_eq!(
        checksum::checksum(&seen[14..34]),
        0,
        "IP checksum still valid"
    );

    // Back: the internet's echo reply to the public address is routed (by the namespace,
    // via the edge's outside address, which the switch answers ARP for) to the VM.
    let ping = echo_request(VM_A, GW_A, IP_A, FAR, 0x4242);
    rig.a.queue_tx(VnetHdr::default(), &ping, 1);
    rig.a.run_tx(&rig.core);
    let reply = vm_gets(&mut rig.a, "the echo reply", |f| {
        f.len() >= 42 && f[23] == 1 && f[34] == 0 && f[38..40] == [0x42, 0x42]
    });
    assert_eq!(MacAddr::from_slice(&reply[0..6]), Some(VM_A));
    assert_eq!(MacAddr::from_slice(&reply[6..12]), Some(GW_A));
    assert_eq!((ipv4_of(&reply, 26), ipv4_of(&reply, 30)), (FAR, IP_A));
    let neigh = sh(&format!("ip -n {} neigh show 203.0.113.10", rig.net.ns)).unwrap();
    assert!(
        neigh.contains(&EXT_MAC.to_string()),
        "the namespace did not learn the outside address at the external MAC: {neigh}"
    );
    let t = rig.core.tables();
    let t1 = &t.ext.as_ref().unwrap().edges[0].rt.stats;
    assert!(t1.tx_packets.load(Ordering::Relaxed) >= 2);
    assert!(t1.rx_packets.load(Ordering::Relaxed) >= 1);

    // ARP for a floating address is answered on the wire with the external MAC.
    let mut arp = vec![0u8; 60];
    arp[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    arp[6..12].copy_from_slice(&rig.net.gw_mac.0);
    arp[12..22].copy_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&rig.net.gw_mac.0);
    arp[28..32].copy_from_slice(&UPSTREAM.octets());
    arp[38..42].copy_from_slice(&[203, 0, 113, 11]);
    wire.send(&arp);
    let ans = wire
        .expect(WAIT, |f| {
            f.len() >= 42
                && f[12..14] == [8, 6]
                && f[20..22] == [0, 2]
                && f[28..32] == [203, 0, 113, 11]
        })
        .expect("no ARP reply for the floating address");
    assert_eq!(MacAddr::from_slice(&ans[22..28]), Some(EXT_MAC));

    // An address nobody owns is dropped and counted on the external port; so is ARP for it.
    let before = rig.ext_drops(DropReason::NoRoute);
    let stray = udp(
        rig.net.gw_mac,
        EXT_MAC,
        FAR,
        Ipv4Addr::new(203, 0, 113, 99),
        53,
        b"?",
    );
    wire.send(&stray);
    wait_for("the stray datagram's drop", || {
        (rig.ext_drops(DropReason::NoRoute) > before).then_some(())
    });
}

#[test]
fn two_tenants_meet_through_their_edges_not_the_wire() {
    let Some(mut rig) = Rig::new() else { return };
    let wire_frames = || rig.ext.port.stats.rx_packets.load(Ordering::Relaxed);
    let before = wire_frames();
    let f = udp(VM_A, GW_A, IP_A, IP_B, 5000, b"hello-tenant-b");
    rig.a.queue_tx(VnetHdr::default(), &f, 1);
    rig.a.run_tx(&rig.core);
    // Delivery is synchronous on the sender's thread: no wait needed.
    let got = rig.b.received();
    assert_eq!(got.len(), 1, "tenant B's VM did not get the datagram");
    let g = &got[0].1;
    assert_eq!(MacAddr::from_slice(&g[0..6]), Some(VM_B));
    assert_eq!(MacAddr::from_slice(&g[6..12]), Some(GW_B));
    assert_eq!((ipv4_of(g, 26), ipv4_of(g, 30)), (IP_A, IP_B));
    assert_eq!(g[22], f[22] - 2, "one hop per edge");
    assert_eq!(checksum::checksum(&g[14..34]), 0);
    assert_eq!(g[34..], f[34..]);
    assert_eq!(wire_frames(), before, "the hairpin went out on the wire");

    // B's inbound filter drops what it refuses: counted on the sender, nothing delivered.
    let refused = udp(VM_A, GW_A, IP_A, IP_B, 9, b"discard-me");
    rig.a.queue_tx(VnetHdr::default(), &refused, 1);
    rig.a.run_tx(&rig.core);
    assert!(rig.b.received().is_empty());
    assert_eq!(rig.a.rt.stats.drops(DropReason::Filtered), 1);

    // B's outbound filter answers instead of forwarding: the reply reaches B's VM from
    // its gateway, and nothing leaves.
    let answered = udp(VM_B, GW_B, IP_B, FAR, 7, b"echo-me");
    rig.b.queue_tx(VnetHdr::default(), &answered, 1);
    rig.b.run_tx(&rig.core);
    let r = rig.b.received();
    assert_eq!(r.len(), 1, "no reply from the edge filter");
    assert_eq!(MacAddr::from_slice(&r[0].1[6..12]), Some(GW_B));
    assert_eq!((ipv4_of(&r[0].1, 26), ipv4_of(&r[0].1, 30)), (FAR, IP_B));
    assert_eq!(rig.b.rt.stats.replies.load(Ordering::Relaxed), 1);

    // A TTL that runs out at the first edge is counted on the sender.
    let mut dying = udp(VM_A, GW_A, IP_A, IP_B, 5000, b"ttl");
    dying[22] = 1;
    let dying = with_ip_checksum(dying);
    rig.a.queue_tx(VnetHdr::default(), &dying, 1);
    rig.a.run_tx(&rig.core);
    assert_eq!(rig.a.rt.stats.drops(DropReason::TtlExceeded), 1);
    assert!(rig.b.received().is_empty());
    // ... and the sender hears it from its gateway (ICMP time exceeded).
    let te = rig.a.received();
    assert_eq!(te.len(), 1, "no time exceeded for the sender");
    let te = &te[0].1;
    assert_eq!((te[23], te[34]), (1, 11));
    assert_eq!(ipv4_of(te, 26), Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(ipv4_of(te, 30), IP_A);
}

#[test]
fn hostile_wire_frames_are_counted_drops() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    let gw = rig.net.gw_mac;
    let good = udp(gw, EXT_MAC, FAR, IP_A, 5000, b"good");
    let mut too_long = good.clone();
    too_long[16..18].copy_from_slice(&9000u16.to_be_bytes());
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let truncated_ip = good[..24].to_vec();
    let truncated_arp = {
        let mut f = good[..30].to_vec();
        f[12..14].copy_from_slice(&[8, 6]);
        f
    };
    let mut v6_short = good.clone();
    v6_short[12..14].copy_from_slice(&[0x86, 0xdd]);
    v6_short[14] = 0x60;
    let mut ttl_one = good.clone();
    ttl_one[22] = 1;
    let ttl_one = with_ip_checksum(ttl_one);
    let mut vlan = good.clone();
    vlan[12..14].copy_from_slice(&[0x81, 0]);
    let mut other_mac = good.clone();
    other_mac[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    // A wire host posing as tenant B (its routed address) towards tenant A.
    let forged = udp(gw, EXT_MAC, IP_B, IP_A, 5000, b"forged");
    let mut tiny = good[..14].to_vec();
    tiny[12..14].copy_from_slice(&[8, 0]);
    let base = |r| rig.ext_drops(r);
    let expect = [
        (DropReason::Malformed, base(DropReason::Malformed) + 6),
        (DropReason::TtlExceeded, base(DropReason::TtlExceeded) + 1),
        (DropReason::VlanTagged, base(DropReason::VlanTagged) + 1),
        (DropReason::NotForUs, base(DropReason::NotForUs) + 1),
        (DropReason::SpoofedSrcIp, base(DropReason::SpoofedSrcIp) + 1),
    ];
    for f in [
        &too_long,
        &bad_ihl,
        &truncated_ip,
        &truncated_arp,
        &v6_short,
        &tiny,
        &ttl_one,
        &vlan,
        &other_mac,
        &forged,
    ] {
        wire.send(f);
    }
    for (r, n) in expect {
        wait_for(r.name(), || (rig.ext_drops(r) >= n).then_some(()));
    }
    assert!(
        rig.a.received().is_empty(),
        "a hostile frame reached the VM"
    );
    // Still alive: a good frame after them is delivered.
    wire.send(&good);
    let g = vm_gets(&mut rig.a, "the good frame", |f| {
        f.len() >= 46 && f[42..46] == *b"good"
    });
    assert_eq!(MacAddr::from_slice(&g[6..12]), Some(GW_A));
}

#[test]
fn the_switch_sets_refuses_and_removes_the_external_network() {
    let net = match Internet::new() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let sw = crate::Switch::new();
    let cfg = crate::SwitchConfig {
        networks: vec![
            network("a", "192.0.2.0/28", Ipv4Addr::new(192, 0, 2, 1), GW_A),
            network("b", "192.0.2.16/28", Ipv4Addr::new(192, 0, 2, 17), GW_B),
        ],
        ports: vec![],
        policies: vec![],
        external: Some(external_cfg(&net.nic)),
    };
    sw.apply(&cfg).unwrap();
    assert_eq!(sw.config(), cfg);
    let stats = sw.stats();
    assert!(stats.external.is_some());
    assert_eq!(stats.edges.keys().collect::<Vec<_>>(), ["t1", "t2"]);
    let mac = wait_for("the gateway resolved by the switch", || {
        sw.external_neighbor(IpAddr::V4(UPSTREAM))
    });
    assert_eq!(mac, net.gw_mac);

    // An edge naming a network the switch lacks is refused, naming the field; nothing moves.
    let mut bad = cfg.clone();
    bad.external.as_mut().unwrap().edges[1].networks = vec!["nope".into()];
    let err = sw.apply(&bad).unwrap_err().to_string();
    assert!(err.contains("external.edges[1].networks"), "{err}");
    assert_eq!(sw.config(), cfg);
    // A network with an uplink TAP cannot also be behind an edge.
    let mut both = cfg.clone();
    both.networks[0].uplink = Some("hx-nope".into());
    assert!(sw.apply(&both).is_err());
    assert_eq!(sw.config(), cfg);
    // An interface that does not exist is refused too.
    let mut gone = cfg.external.clone().unwrap();
    gone.interface = "hx-missing0".into();
    assert!(sw.set_external(Some(gone)).is_err());
    assert_eq!(sw.config(), cfg);

    sw.set_external(None).unwrap();
    assert!(sw.stats().external.is_none());
    assert!(sw.stats().edges.is_empty());
    sw.shutdown();
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

#[test]
fn ipv6_goes_out_and_comes_back_through_the_edge() {
    let Some(mut rig) = Rig::new() else { return };
    let wire = rig.net.wire();
    let gw = wait_for(
        "the IPv6 gateway resolved by neighbour solicitation",
        || rig.ext.neighbor(IpAddr::V6(UPSTREAM6)),
    );
    assert_eq!(gw, rig.net.gw_mac);
    let ping = echo6(VM_A, GW_A, IP6_A, FAR6, 0x6666);
    rig.a.queue_tx(VnetHdr::default(), &ping, 1);
    rig.a.run_tx(&rig.core);
    let seen = wire
        .expect(WAIT, |f| {
            f.len() >= 62 && f[12..14] == [0x86, 0xdd] && f[54] == 128
        })
        .expect("the echo request never reached the wire");
    assert_eq!(MacAddr::from_slice(&seen[0..6]), Some(rig.net.gw_mac));
    assert_eq!(MacAddr::from_slice(&seen[6..12]), Some(EXT_MAC));
    assert_eq!(seen[21], 63, "hop limit decremented once");
    assert_eq!((ipv6_of(&seen, 22), ipv6_of(&seen, 38)), (IP6_A, FAR6));
    // The reply is routed to the edge's outside6, which the switch answers NDP for.
    let reply = vm_gets(&mut rig.a, "the echo6 reply", |f| {
        f.len() >= 62 && f[12..14] == [0x86, 0xdd] && f[54] == 129 && f[58..60] == [0x66, 0x66]
    });
    assert_eq!(MacAddr::from_slice(&reply[0..6]), Some(VM_A));
    assert_eq!(MacAddr::from_slice(&reply[6..12]), Some(GW_A));
    assert_eq!((ipv6_of(&reply, 22), ipv6_of(&reply, 38)), (FAR6, IP6_A));
}

/// Random and mutated frames straight into the wire handler: none may panic, and nothing
/// but a well-formed IP packet from the gateway may reach a VM.
#[test]
fn random_wire_frames_never_reach_a_vm_malformed() {
    let Some(mut rig) = Rig::new() else { return };
    let gw = rig.net.gw_mac;
    let templates = [
        udp(gw, EXT_MAC, FAR, IP_A, 5000, b"template-udp"),
        echo_request(gw, EXT_MAC, FAR, IP_A, 7),
        echo6(gw, EXT_MAC, FAR6, IP6_A, 9),
        {
            let mut a = vec![0u8; 60];
            a[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
            a[6..12].copy_from_slice(&gw.0);
            a[12..22].copy_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
            a[28..32].copy_from_slice(&UPSTREAM.octets());
            a[38..42].copy_from_slice(&[203, 0, 113, 10]);
            a
        },
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let t = rig.core.tables();
    let x = t.ext.as_ref().unwrap();
    let mut s = crate::datapath::edge::EdgeScratch::default();
    let mut reply = [0u8; crate::packet::REPLY_BUF];
    let mut delivered = 0;
    // Each delivery takes a fresh RX buffer of the test VM's 16 MiB: a few thousand fit.
    for i in 0..5_000u64 {
        let mut f = templates[(rnd() % 4) as usize].clone();
        if i % 10 == 0 {
            f = (0..rnd() % 200).map(|_| rnd() as u8).collect();
        } else {
            for _ in 0..=rnd() % 4 {
                let at = (rnd() as usize) % f.len();
                f[at] = rnd() as u8;
            }
            let cut = (rnd() as usize) % (f.len() + 1);
            if i % 3 == 0 {
                f.truncate(cut);
            }
        }
        let _ = external::handle(&t, x, &f, &mut s, &mut reply, i);
        let got = rig.a.received();
        let n = got.len();
        for (_, g) in got {
            delivered += 1;
            assert!(g.len() >= 34, "short frame delivered: {g:02x?}");
            assert_eq!(MacAddr::from_slice(&g[0..6]), Some(VM_A));
            assert_eq!(MacAddr::from_slice(&g[6..12]), Some(GW_A));
            assert_eq!(
                crate::datapath::edge::ip_frame_len(&g),
                Ok(g.len()),
                "delivered frame's IP length disagrees with the frame"
            );
        }
        rig.a.post_rx(n, 2048);
    }
    assert!(
        delivered > 0,
        "no mutated frame was ever valid: the test tests nothing"
    );
}
