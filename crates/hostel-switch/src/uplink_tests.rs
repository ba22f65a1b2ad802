//! The uplink against a real TAP device: VM→host frames appear on the interface, host→VM
//! frames are switched by destination IP, and host ARP for a port is answered by the switch.
//! Skipped (with a printed reason) without root or /dev/net/tun.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::datapath::flow_tests::{Vm, ALL};
use crate::datapath::pipeline::Pipeline;
use crate::datapath::port::PortRuntime;
use crate::datapath::tests::{net, port};
use crate::datapath::vnet::VnetHdr;
use crate::datapath::Core;
use crate::packet::parse::tests::udp4;
use crate::tables::Tables;
use crate::types::MacAddr;
use crate::uplink::Uplink;

struct PacketSocket(std::os::fd::OwnedFd, i32);

impl PacketSocket {
    fn open(ifname: &str) -> std::io::Result<PacketSocket> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname).map_err(std::io::Error::other)?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: setting a timeval option with its exact size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(PacketSocket(fd, ifindex))
    }

    fn send(&self, frame: &[u8]) {
        use std::os::fd::AsRawFd;
        // SAFETY: frame is a valid buffer; the socket is bound to the interface.
        unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    }

    /// Waits for a frame matching `want`, up to `timeout`.
    fn expect(&self, timeout: Duration, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 70_000];
        while Instant::now() < deadline {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && want(&buf[..n as usize]) {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }
}

#[test]
fn uplink_tap_carries_traffic_both_ways() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED: /dev/net/tun missing");
        return;
    }
    let name = format!("hsw{}", std::process::id() % 100_000);
    let gw = MacAddr([2, 0, 0, 0, 0, 1]);
    let uplink = match Uplink::open(&name, "a", gw) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("SKIPPED: cannot create TAP ({e}); needs root");
            return;
        }
    };
    let mut a = Vm::new("a2", ALL);
    a.post_rx(32, 2048);
    let rts: HashMap<String, Arc<PortRuntime>> = [("a2".to_string(), a.rt.clone())].into();
    let t = Tables::build(
        &[net("a", true)],
        &[port("a2", "a", 2)],
        |p| rts[&p.id].clone(),
        |_| Some(uplink.clone()),
    )
    .unwrap();
    let core = Core::new(Pipeline::new());
    core.publish(t);
    let reader = {
        let (u, c) = (uplink.clone(), core.clone());
        std::thread::spawn(move || u.run(c))
    };
    let sock = PacketSocket::open(&name).expect("packet socket");
    let vm_mac = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
    let vm_ip = std::net::Ipv4Addr::new(10, 0, 0, 2);
    let far = std::net::Ipv4Addr::new(192, 0, 2, 9);

    // VM → uplink: an off-subnet destination leaves through the TAP, unmodified.
    let out = udp4(vm_mac, gw, vm_ip, far, b"to-the-host");
    a.queue_tx(VnetHdr::default(), &out, 1);
    a.run_tx(&core);
    let seen = sock.expect(Duration::from_secs(3), |f| f == out.as_slice());
    assert!(seen.is_some(), "VM frame never appeared on {name}");

    // Uplink → VM: delivered by destination IP.
    let inbound = udp4(gw, vm_mac, far, vm_ip, b"from-the-host");
    sock.send(&inbound);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        got = a
            .received()
            .into_iter()
            .filter(|(_, f)| f == &inbound)
            .collect();
        std::thread::yield_now();
    }
    assert_eq!(got.len(), 1, "host frame not delivered to the VM");

    // Host ARP for the VM's address is answered by the switch on the TAP.
    let mut arp = vec![0u8; 42];
    arp[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    arp[6..12].copy_from_slice(&gw.0);
    arp[12..22].copy_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp[22..28].copy_from_slice(&gw.0);
    arp[28..32].copy_from_slice(&[10, 0, 0, 1]);
    arp[38..42].copy_from_slice(&vm_ip.octets());
    sock.send(&arp);
    let reply = sock.expect(Duration::from_secs(3), |f| {
        f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2]
    });
    let reply = reply.expect("no ARP reply from the switch");
    assert_eq!(&reply[22..28], &vm_mac.0);
    let _ = sock.1;

    uplink.stop();
    reader.join().unwrap();
}

/// CPU time (user + system, in clock ticks) of one thread of this process.
fn thread_cpu_ticks(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command name, which sits in parentheses: utime is the 12th, stime
    // the 13th of those.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A TAP whose interface the host deleted (by hand, or with the namespace it was moved to)
/// polls as an error at once, forever; the reader must wait, not spin a core.
#[test]
fn a_deleted_uplink_does_not_spin_its_reader() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED: /dev/net/tun missing");
        return;
    }
    let name = format!("hsd{}", std::process::id() % 100_000);
    let uplink = match Uplink::open(&name, "a", MacAddr([2, 0, 0, 0, 0, 1])) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("SKIPPED: cannot create TAP ({e}); needs root");
            return;
        }
    };
    let deleted = std::process::Command::new("ip")
        .args(["link", "del", &name])
        .status()
        .unwrap();
    assert!(deleted.success());
    let core = Core::new(Pipeline::new());
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let reader = {
        let (u, c) = (uplink.clone(), core.clone());
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            u.run(c)
        })
    };
    let tid = tid_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let before = thread_cpu_ticks(tid);
    let window = Instant::now();
    // A measurement window, not synchronisation: how much CPU the reader burns meanwhile.
    std::thread::sleep(Duration::from_millis(1000));
    let used = thread_cpu_ticks(tid) - before;
    let elapsed = window.elapsed();
    uplink.stop();
    reader.join().unwrap();
    // A spinning reader takes ~100 ticks a second; a waiting one next to none.
    assert!(
        used <= 10,
        "reader used {used} ticks in {elapsed:?} on a deleted TAP"
    );
}

/// Defect: the uplink reader, shared by a whole network, walked a hostile receiver's RX ring
/// without limit, and flood copies that did not arrive were not counted. Each delivery now
/// costs at most one budget, the honest port still gets the host's broadcast, and the loss
/// is counted on the uplink and marked on the receiver.
#[test]
fn a_hostile_receiver_costs_the_uplink_reader_bounded_work() {
    use crate::datapath::hostile_tests::offer_enormous_empty_chains;
    use crate::datapath::rx::RX_DELIVERY_BUDGET;
    use crate::stats::DropReason;
    use hostel_virtq::MAX_CHAIN_DESCS;

    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED: /dev/net/tun missing");
        return;
    }
    let name = format!("hsb{}", std::process::id() % 100_000);
    let gw = MacAddr([2, 0, 0, 0, 0, 1]);
    let uplink = match Uplink::open(&name, "a", gw) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("SKIPPED: cannot create TAP ({e}); needs root");
            return;
        }
    };
    let mut honest = Vm::new("a3", ALL);
    honest.post_rx(32, 2048);
    let mut hostile = Vm::new("a4", ALL);
    offer_enormous_empty_chains(&mut hostile);
    let rts: HashMap<String, Arc<PortRuntime>> = [
        ("a3".to_string(), honest.rt.clone()),
        ("a4".to_string(), hostile.rt.clone()),
    ]
    .into();
    let t = Tables::build(
        &[net("a", true)],
        &[port("a3", "a", 3), port("a4", "a", 4)],
        |p| rts[&p.id].clone(),
        |_| Some(uplink.clone()),
    )
    .unwrap();
    let core = Core::new(Pipeline::new());
    core.publish(t);
    let reader = {
        let (u, c) = (uplink.clone(), core.clone());
        std::thread::spawn(move || u.run(c))
    };
    let sock = PacketSocket::open(&name).expect("packet socket");
    let far = std::net::Ipv4Addr::new(192, 0, 2, 9);
    let bcast = udp4(
        gw,
        MacAddr::BROADCAST,
        far,
        std::net::Ipv4Addr::new(10, 0, 0, 255),
        b"to-everyone",
    );
    sock.send(&bcast);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = false;
    while !got && Instant::now() < deadline {
        got = honest.received().iter().any(|(_, f)| f == &bcast);
        std::thread::yield_now();
    }
    uplink.stop();
    reader.join().unwrap();
    assert!(got, "the honest port never got the host's broadcast");
    let marked = hostile.rt.stats.snapshot();
    assert!(marked.rx_over_budget >= 1, "{marked:?}");
    assert!(
        marked.desc_visits
            <= marked.rx_over_budget * u64::from(RX_DELIVERY_BUDGET + MAX_CHAIN_DESCS),
        "{marked:?}"
    );
    assert!(uplink.stats.drops(DropReason::RxWorkBudget) >= 1);
}
