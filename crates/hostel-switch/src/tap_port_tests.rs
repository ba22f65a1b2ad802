//! A TAP port (a container's NIC): an existing host TAP device attached by name, switched,
//! anti-spoofed and counted like a VM's NIC, through the same pipeline and delivery path.
//! Skipped (with a printed reason) without root or /dev/net/tun.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::PortKind;
use crate::datapath::flow_tests::{ip, mac, Vm, ALL};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::port::PortRuntime;
use crate::datapath::tests::{net, port};
use crate::datapath::vnet::VnetHdr;
use crate::datapath::Core;
use crate::packet::parse::tests::udp4;
use crate::policy::{Action, PolicyConfig, PolicyScope, RuleConfig};
use crate::stats::DropReason;
use crate::switch::Switch;
use crate::tables::Tables;
use crate::uplink::{self, Role, TapDev};
use crate::uplink_tests::PacketSocket;

/// Creates a persistent TAP with no reader, as a daemon would for a container, and
/// deletes it on drop. `None` (skip) without the rights to.
struct HostTap(String);

impl HostTap {
    fn make(tag: &str) -> Option<HostTap> {
        if !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("SKIPPED: /dev/net/tun missing");
            return None;
        }
        let name = format!("hs{tag}{}", std::process::id() % 100_000);
        let dev = match TapDev::create(&name, mac(5)) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("SKIPPED: cannot create TAP ({e}); needs root");
                return None;
            }
        };
        dev.set_persistent(true).expect("persist");
        // No IPv6 autoconfiguration traffic from the host side to blur the counts.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        Some(HostTap(name))
    }
}

impl Drop for HostTap {
    fn drop(&mut self) {
        if let Ok(d) = TapDev::attach(&self.0) {
            let _ = d.set_persistent(false);
        }
    }
}

fn tap_port(id: &str, device: &str) -> crate::config::PortConfig {
    crate::config::PortConfig {
        socket: Default::default(),
        kind: PortKind::Tap {
            device: device.into(),
        },
        ..port(id, "a", 5)
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// A TAP port c5 and VMs a2, a3 in network "a", with `c5`'s reader running.
struct Rig {
    core: Arc<Core>,
    a: Vm,
    b: Vm,
    c5: Arc<PortRuntime>,
    dev: Arc<TapDev>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Rig {
    fn new(host: &HostTap, limits: crate::config::PortLimits, policies: &[PolicyConfig]) -> Rig {
        let dev = TapDev::attach(&host.0).expect("attach the existing TAP");
        let c5 = PortRuntime::tap("c5", dev.clone());
        let (mut a, mut b) = (Vm::new("a2", ALL), Vm::new("a3", ALL));
        a.post_rx(64, 2048);
        b.post_rx(64, 2048);
        let rts: HashMap<String, Arc<PortRuntime>> = [
            ("a2".to_string(), a.rt.clone()),
            ("a3".to_string(), b.rt.clone()),
            ("c5".to_string(), c5.clone()),
        ]
        .into();
        let mut cfg = tap_port("c5", &host.0);
        cfg.limits = limits;
        let t = Tables::build(
            &[net("a", false)],
            &[port("a2", "a", 2), port("a3", "a", 3), cfg],
            |p| rts[&p.id].clone(),
            |_| None,
        )
        .unwrap()
        .with_policies(policies, false)
        .unwrap();
        let core = Core::new(Pipeline::new());
        core.publish(t);
        let (r, c) = (c5.clone(), core.clone());
        let reader = Some(std::thread::spawn(move || uplink::run(r, c, Role::Port)));
        Rig {
            core,
            a,
            b,
            c5,
            dev,
            reader,
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.dev.stop();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[test]
fn a_tap_ports_storm_control_is_charged_to_it() {
    let Some(host) = HostTap::make("l") else {
        return;
    };
    let limits = crate::config::PortLimits {
        total: crate::config::RateLimit {
            packets_per_sec: Some(1),
            burst_packets: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut rig = Rig::new(&host, limits, &[]);
    let sock = PacketSocket::open(&host.0).expect("packet socket");
    let to_vm = udp4(mac(5), mac(2), ip(5), ip(2), b"burst");
    for _ in 0..5 {
        sock.send(&to_vm);
    }
    let mut got = 0;
    wait_for("all five frames delivered or refused", || {
        got += rig.a.received().iter().filter(|(_, f)| f == &to_vm).count();
        got as u64 + rig.c5.stats.drops(DropReason::RateLimited) == 5
    });
    assert!(
        (1..=2).contains(&got),
        "{got} frames passed a 1-packet bucket"
    );
}

#[test]
fn a_tap_port_is_switched_like_a_vm_nic() {
    let Some(host) = HostTap::make("p") else {
        return;
    };
    let mut rig = Rig::new(&host, Default::default(), &[]);
    let sock = PacketSocket::open(&host.0).expect("packet socket");

    // VM → container: switched by destination IP, out through the TAP.
    let to_c = udp4(mac(2), mac(5), ip(2), ip(5), b"to-the-container");
    rig.a.queue_tx(VnetHdr::default(), &to_c, 2);
    rig.a.run_tx(&rig.core);
    let seen = sock.expect(Duration::from_secs(3), |f| f == to_c.as_slice());
    assert!(seen.is_some(), "VM frame never reached the TAP");
    assert_eq!(rig.c5.stats.snapshot().rx_packets, 1);

    // Container → VM, and a spoofed source from the container, dropped on its port.
    let to_vm = udp4(mac(5), mac(2), ip(5), ip(2), b"to-the-vm");
    let spoofed = udp4(mac(5), mac(2), ip(9), ip(2), b"spoofed");
    sock.send(&spoofed);
    sock.send(&to_vm);
    let mut got = Vec::new();
    wait_for("the container's frame at the VM", || {
        got.extend(rig.a.received().into_iter().map(|(_, f)| f));
        got.contains(&to_vm)
    });
    wait_for("the spoofed frame's drop", || {
        rig.c5.stats.drops(DropReason::SpoofedSrcIp) == 1
    });
    got.extend(rig.a.received().into_iter().map(|(_, f)| f));
    assert!(!got.contains(&spoofed), "spoofed frame delivered");
}

/// An IDS behind a TAP: the mirror port may be of any kind.
#[test]
fn a_tap_port_can_be_the_mirror() {
    let Some(host) = HostTap::make("m") else {
        return;
    };
    let ids = PolicyConfig {
        id: "ids".into(),
        scope: PolicyScope {
            network: None,
            port: Some("a2".into()),
        },
        rules: vec![RuleConfig {
            ethertype: None,
            protocol: Some(17),
            src: None,
            dst: None,
            src_ports: None,
            dst_ports: None,
            action: Action::Mirror("c5".into()),
        }],
    };
    let mut rig = Rig::new(&host, Default::default(), &[ids]);
    let sock = PacketSocket::open(&host.0).expect("packet socket");
    let f = udp4(mac(2), mac(3), ip(2), ip(3), b"watched");
    rig.a.queue_tx(VnetHdr::default(), &f, 1);
    rig.a.run_tx(&rig.core);
    let got: Vec<_> = rig.b.received().into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, vec![f.clone()], "delivery changed by the mirror");
    let copy = sock.expect(Duration::from_secs(3), |x| x == f.as_slice());
    assert!(copy.is_some(), "no copy on the mirror TAP");
}

#[test]
fn the_switch_attaches_only_existing_taps_and_lets_go_of_them() {
    let Some(host) = HostTap::make("s") else {
        return;
    };
    let sw = Switch::new();
    sw.add_network(net("a", false)).unwrap();
    let missing = format!("hsno{}", std::process::id() % 100_000);
    let e = sw
        .add_port(tap_port("c5", &missing))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&missing) && e.contains("no such network device"),
        "{e}"
    );
    assert!(
        TapDev::attach("lo").is_err(),
        "a device that is no TAP was attached"
    );
    assert!(sw.config().ports.is_empty(), "a refused port left a trace");
    assert!(std::path::Path::new(&format!("/sys/class/net/{missing}"))
        .metadata()
        .is_err());

    sw.add_port(tap_port("c5", &host.0)).unwrap();
    assert!(sw.stats().ports["c5"].connected);
    // Only one reader may hold a (single-queue) TAP: the switch holds it now.
    assert!(TapDev::attach(&host.0).is_err());
    sw.remove_port("c5").unwrap();
    assert!(TapDev::attach(&host.0).is_ok(), "the switch kept the TAP");
    sw.shutdown();
}
