//! Opening a TAP device for QEMU. hostel opens it itself and passes the descriptor, so an
//! unusable TAP is reported before any QEMU runs, with the kernel's reason.

use crate::error::EngineError;
use crate::spec::IfName;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens (or, as root, creates a transient) TAP device with virtio-net headers, ready to hand
/// to QEMU as `-netdev tap,fd=N`. A transient TAP disappears when the last descriptor closes,
/// so a failed launch leaves no interface behind.
pub fn open_tap(name: &IfName) -> Result<File, EngineError> {
    let err = |reason: String| EngineError::Tap {
        name: name.as_str().to_string(),
        reason,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| err(format!("/dev/net/tun: {e}")))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    // IfName guarantees fewer than IFNAMSIZ bytes, so the name stays NUL-terminated.
    req.name[..name.as_str().len()].copy_from_slice(name.as_str().as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq matches in size/layout.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EBUSY) => " (already attached to another VM?)",
            Some(libc::EPERM) => " (not owned by this user?)",
            Some(libc::EINVAL) => " (an interface of that name exists and is not a TAP?)",
            _ => "",
        };
        return Err(err(format!("{e}{hint}")));
    }
    Ok(file)
}
