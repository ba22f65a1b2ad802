//! The comparison point: the same traffic through two TAP devices on a Linux bridge, driven by
//! write/read from one thread (in a private network namespace, so nothing touches the host's
//! interfaces). Its CPU figure is that thread's time, which includes the kernel's bridging
//! done in its context.

use std::time::{Duration, Instant};

use hostel_switch::datapath::chain::SegList;
use hostel_switch::datapath::rx::FrameSrc;
use hostel_switch::datapath::vnet::VnetHdr;
use hostel_switch::uplink::Uplink;
use hostel_switch::MacAddr;

use crate::{rusage, Measured};

const SIOCBRADDBR: libc::c_ulong = 0x89a0;
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

fn ifreq_name(name: &str) -> [u8; 40] {
    let mut r = [0u8; 40];
    r[..name.len()].copy_from_slice(name.as_bytes());
    r
}

fn bridge_up(br: &str, ports: &[&str]) -> std::io::Result<()> {
    // SAFETY: plain socket for interface ioctls, owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let _guard = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    let name = std::ffi::CString::new(br).map_err(std::io::Error::other)?;
    // SAFETY: SIOCBRADDBR takes a NUL-terminated name.
    if unsafe { libc::ioctl(s, SIOCBRADDBR as _, name.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for p in ports {
        let pname = std::ffi::CString::new(*p).map_err(std::io::Error::other)?;
        // SAFETY: valid C string.
        let idx = unsafe { libc::if_nametoindex(pname.as_ptr()) } as i32;
        let mut req = ifreq_name(br);
        req[16..20].copy_from_slice(&idx.to_ne_bytes());
        // SAFETY: req is an ifreq-sized buffer with name and ifindex set.
        if unsafe { libc::ioctl(s, SIOCBRADDIF as _, req.as_mut_ptr()) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut req = ifreq_name(br);
    // SAFETY: as above, SIOCGIFFLAGS/SIOCSIFFLAGS on an ifreq buffer.
    unsafe {
        libc::ioctl(s, libc::SIOCGIFFLAGS as _, req.as_mut_ptr());
        let flags = i16::from_ne_bytes([req[16], req[17]]) | libc::IFF_UP as i16;
        req[16..18].copy_from_slice(&flags.to_ne_bytes());
        if libc::ioctl(s, libc::SIOCSIFFLAGS as _, req.as_mut_ptr()) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs one case through a bridge; `None` (with a printed reason) if the bridge cannot be
/// built here.
pub fn run(frame: &[u8], hdr: VnetHdr, secs: f64) -> Option<Measured> {
    let frame = frame.to_vec();
    std::thread::spawn(move || {
        // SAFETY: unshare only affects this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "bridge comparison skipped: unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let a = Uplink::open("hbt0", "bench", MacAddr([2, 0, 0, 0, 0, 0x10])).ok()?;
        let b = Uplink::open("hbt1", "bench", MacAddr([2, 0, 0, 0, 0, 0x11])).ok()?;
        if let Err(e) = bridge_up("hbr0", &["hbt0", "hbt1"]) {
            eprintln!("bridge comparison skipped: {e}");
            return None;
        }
        let src = FrameSrc {
            head: &frame,
            tail_mem: None,
            tail: &SegList::default(),
            tail_skip: 0,
            len: frame.len(),
        };
        let mut buf = vec![0u8; 70_000];
        let (mut packets, mut bytes, mut send_errors) = (0u64, 0u64, 0u64);
        let cpu0 = rusage(libc::RUSAGE_THREAD);
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        while Instant::now() < deadline {
            for _ in 0..32 {
                if a.send(hdr, &src).is_err() {
                    send_errors += 1;
                }
            }
            while let Ok(n) = b.recv(&mut buf) {
                packets += 1;
                bytes += (n.saturating_sub(12)) as u64;
            }
        }
        if send_errors > 0 {
            eprintln!("bridge: {send_errors} TAP writes failed");
        }
        Some(Measured {
            packets,
            bytes,
            wall: start.elapsed().as_secs_f64(),
            switch_cpu: rusage(libc::RUSAGE_THREAD) - cpu0,
        })
    })
    .join()
    .ok()
    .flatten()
}
