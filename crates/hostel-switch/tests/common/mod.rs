//! A vhost-user frontend of the tests' own, honest or hostile: it speaks the protocol through
//! the `vhost` crate and hands the switch whatever memory files and eventfds a test wants.
//! It never maps the memory itself: the switch only needs the file, and the frontend
//! addresses below are just the names the protocol translates through.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostel_switch::datapath::vnet::OFFERED_FEATURES;
use hostel_switch::{NetworkConfig, PortConfig, Switch};
use hostel_virtq::driver::Layout;
use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Where the frontend pretends guest memory sits in its own address space.
pub const UVA: u64 = 0x7f00_0000_0000;
pub const QSIZE: u16 = 256;

pub struct TestSwitch {
    pub dir: tempfile::TempDir,
    pub sw: Arc<Switch>,
}

impl TestSwitch {
    /// A switch with one network and a port per id, each listening on `<dir>/<id>.sock`.
    pub fn new(ports: &[&str]) -> TestSwitch {
        let dir = tempfile::tempdir().unwrap();
        let sw = Switch::new();
        sw.add_network(NetworkConfig {
            id: "n".into(),
            subnet4: Some("10.2.0.0/24".parse().unwrap()),
            gateway4: Some("10.2.0.1".parse().unwrap()),
            subnet6: None,
            gateway6: None,
            gateway_mac: "02:00:00:00:00:01".parse().unwrap(),
            uplink: None,
            dns: vec![],
            mtu: 0,
        })
        .unwrap();
        for (i, id) in ports.iter().enumerate() {
            sw.add_port(PortConfig {
                id: (*id).into(),
                network: "n".into(),
                mac: format!("52:54:00:00:00:{:02x}", i + 2).parse().unwrap(),
                ipv4: Some(format!("10.2.0.{}", i + 2).parse().unwrap()),
                ipv6: vec![],
                socket: dir.path().join(format!("{id}.sock")),
                limits: Default::default(),
                kind: Default::default(),
            })
            .unwrap();
        }
        TestSwitch { dir, sw }
    }

    pub fn sock(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.sock"))
    }
}

impl Drop for TestSwitch {
    fn drop(&mut self) {
        self.sw.shutdown();
    }
}

/// A memfd of `size` bytes, sealed against shrinking if `seal`.
pub fn memfd(size: u64, seal: bool) -> File {
    hostel_virtq::testing::memfd(size, seal).expect("memfd")
}

/// Connects (retrying while the listener starts) and negotiates as QEMU does, with every
/// request asking for an acknowledgement so a refusal shows on the call that caused it.
pub fn frontend(sock: &Path) -> Frontend {
    let deadline = Instant::now() + Duration::from_secs(10);
    // The listener gives no signal when it is up: retry with a short, growing backoff
    // rather than spinning a CPU the switch under test needs.
    let mut backoff = Duration::from_millis(1);
    let mut fe = loop {
        match Frontend::connect(sock, 2) {
            Ok(fe) => break fe,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {sock:?}: {e}"),
            Err(_) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
        }
    };
    fe.set_owner().unwrap();
    let offered = fe.get_features().unwrap();
    fe.set_features(
        offered & (OFFERED_FEATURES | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()),
    )
    .unwrap();
    let pf = fe.get_protocol_features().unwrap();
    fe.set_protocol_features(pf & VhostUserProtocolFeatures::REPLY_ACK)
        .unwrap();
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    fe
}

pub fn region(file: &File, size: u64, offset: u64) -> VhostUserMemoryRegionInfo {
    VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: size,
        userspace_addr: UVA,
        mmap_offset: offset,
        mmap_handle: file.as_raw_fd(),
    }
}

/// Eventfds of both queues, kept alive as long as the rings are in use.
pub struct Rings {
    pub kicks: [EventFd; 2],
    pub calls: [EventFd; 2],
}

/// Lays both rings out from guest address `at` and hands them to the switch.
pub fn rings(fe: &mut Frontend, at: u64) -> Result<Rings, vhost::Error> {
    let r = Rings {
        kicks: [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ],
        calls: [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ],
    };
    for q in 0..2usize {
        let Layout {
            desc, avail, used, ..
        } = Layout::new(at + q as u64 * 0x10_000, QSIZE).expect("ring layout fits");
        fe.set_vring_num(q, QSIZE)?;
        fe.set_vring_addr(
            q,
            &VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: UVA + desc,
                used_ring_addr: UVA + used,
                avail_ring_addr: UVA + avail,
                log_addr: None,
            },
        )?;
        fe.set_vring_base(q, 0)?;
        fe.set_vring_call(q, &r.calls[q])?;
        fe.set_vring_kick(q, &r.kicks[q])?;
        fe.set_vring_enable(q, true)?;
    }
    Ok(r)
}

/// An honest guest: sealed memory, rings inside it, every step acknowledged.
pub struct Honest {
    pub fe: Frontend,
    pub mem: File,
    pub rings: Rings,
}

pub fn honest(sock: &Path) -> Honest {
    let mut fe = frontend(sock);
    let mem = memfd(2 << 20, true);
    fe.set_mem_table(&[region(&mem, 2 << 20, 0)])
        .expect("honest memory refused");
    let rings = rings(&mut fe, 0x1000).expect("honest rings refused");
    Honest { fe, mem, rings }
}

/// A region at guest address `gpa`.
pub fn region_at(file: &File, size: u64, offset: u64, gpa: u64) -> VhostUserMemoryRegionInfo {
    VhostUserMemoryRegionInfo {
        guest_phys_addr: gpa,
        userspace_addr: UVA + gpa,
        ..region(file, size, offset)
    }
}
