//! The comparison points: the same frames written into one TAP device and read from another,
//! with a Linux bridge or Open vSwitch between the two, all in a private network namespace
//! so nothing touches the host's interfaces. One thread writes and reads (the guests' part),
//! and the kernel's bridging runs in that thread's system time.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostel_switch::datapath::rx::FrameSrc;
use hostel_switch::datapath::vnet::{VnetHdr, VNET_HDR_LEN};
use hostel_switch::uplink::TapDev;
use hostel_switch::MacAddr;
use hostel_virtq::SegList;

use crate::error::BenchError;
use crate::ovs::Ovs;
use crate::{frame, header, rusage, Measured, Size};

/// Everything the TAP cases need, alive until dropped.
pub struct Env {
    bridge: (Arc<TapDev>, Arc<TapDev>),
    ovs: Option<(Ovs, Arc<TapDev>, Arc<TapDev>)>,
    /// Keeps the namespace (and so the TAPs and bridge) alive after its thread ended.
    _netns: File,
}

fn tap(name: &str, last: u8) -> Result<Arc<TapDev>, BenchError> {
    Ok(TapDev::create(name, MacAddr([2, 0, 0, 0, 0, last]))?)
}

impl Env {
    /// Creates the namespace, the bridge with its two TAPs and, with `ovs`, an Open vSwitch
    /// bridge with two more (its state in `dir`).
    pub fn new(ovs: bool, dir: &Path) -> Result<Env, BenchError> {
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            // SAFETY: unshare only affects this thread's network namespace; processes it
            // spawns (ovs-vswitchd) inherit it.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(BenchError::Unshare(std::io::Error::last_os_error()));
            }
            let netns = File::open("/proc/thread-self/ns/net").map_err(BenchError::Netns)?;
            let (a, b) = (tap("hbt0", 0x10)?, tap("hbt1", 0x11)?);
            crate::bridge::bridge_up("hbr0", &["hbt0", "hbt1"]).map_err(|source| {
                BenchError::Bridge {
                    name: "hbr0",
                    source,
                }
            })?;
            let ovs = if ovs {
                let (oa, ob) = (tap("hot0", 0x20)?, tap("hot1", 0x21)?);
                match Ovs::start(&dir.join("ovs"), "hbo0", &["hot0", "hot1"]) {
                    Ok(o) => Some((o, oa, ob)),
                    Err(e) => {
                        eprintln!("Open vSwitch comparison skipped: {e}");
                        None
                    }
                }
            } else {
                None
            };
            Ok(Env {
                bridge: (a, b),
                ovs,
                _netns: netns,
            })
        })
        .join()
        .map_err(|_| BenchError::SetupPanicked)?
    }

    pub fn has_ovs(&self) -> bool {
        self.ovs.is_some()
    }

    pub fn run_bridge(&self, size: Size, secs: f64) -> Measured {
        pump(&self.bridge.0, &self.bridge.1, size, secs, || 0.0)
    }

    pub fn run_ovs(&self, size: Size, secs: f64) -> Measured {
        let Some((o, a, b)) = &self.ovs else {
            return Measured::default();
        };
        pump(a, b, size, secs, || o.vswitchd_cpu())
    }
}

fn src<'a>(frame: &'a [u8], empty: &'a SegList) -> FrameSrc<'a> {
    FrameSrc {
        head: frame,
        tail: empty,
        tail_skip: 0,
        len: frame.len(),
    }
}

/// Sends one frame from B's side and waits for it on A's, so a learning switch knows
/// where B's MAC is before A streams to it (else it floods every frame).
fn prime(a: &TapDev, b: &TapDev, size: Size, buf: &mut [u8]) {
    let back = frame(64, 3, 2);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let _ = b.send(VnetHdr::default(), &src(&back, &SegList::default()));
        let t = Instant::now() + Duration::from_millis(100);
        while Instant::now() < t {
            if let Ok(n) = a.recv(buf) {
                if n == VNET_HDR_LEN + back.len() {
                    drain(a, b, buf);
                    return;
                }
            }
            std::thread::yield_now();
        }
    }
    eprintln!("{}: priming frame never arrived", size.name);
}

fn drain(a: &TapDev, b: &TapDev, buf: &mut [u8]) {
    while a.recv(buf).is_ok() || b.recv(buf).is_ok() {}
}

/// Streams `size` frames A → B for `secs`; `extra_cpu` reads the CPU seconds of a switching
/// process besides this thread (Open vSwitch's).
fn pump(a: &TapDev, b: &TapDev, size: Size, secs: f64, extra_cpu: impl Fn() -> f64) -> Measured {
    let frame = frame(size.len, 2, 3);
    let hdr = header(size.tso);
    let mut buf = vec![0u8; VNET_HDR_LEN + 70_000];
    prime(a, b, size, &mut buf);
    let empty = SegList::default();
    let s = src(&frame, &empty);
    let (mut sent, mut packets, mut bytes) = (0u64, 0u64, 0u64);
    let (u0, s0) = rusage(libc::RUSAGE_THREAD);
    let x0 = extra_cpu();
    let host0 = crate::host_busy();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        for _ in 0..32 {
            if a.send(hdr, &s).is_ok() {
                sent += 1;
            }
        }
        while let Ok(n) = b.recv(&mut buf) {
            if n > VNET_HDR_LEN {
                packets += 1;
                bytes += (n - VNET_HDR_LEN) as u64;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let (u1, s1) = rusage(libc::RUSAGE_THREAD);
    let extra = extra_cpu() - x0;
    let host_cpu = crate::host_busy() - host0;
    drain(a, b, &mut buf);
    Measured {
        packets,
        bytes,
        wall,
        switch_cpu: (s1 - s0) + extra,
        driver_cpu: u1 - u0,
        lost: sent.saturating_sub(packets),
        host_cpu,
    }
}
