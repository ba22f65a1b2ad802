//! Helpers for tests, fuzzers and benchmarks of devices built on this crate; nothing here is
//! for production use.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// A memfd of `size` bytes standing for guest memory, sealed against shrinking
/// (`F_SEAL_SHRINK`, as QEMU's memfd backend makes it) if `seal`; an unsealed one is what a
/// hostile frontend would hand over.
pub fn memfd(size: u64, seal: bool) -> io::Result<File> {
    // SAFETY: memfd_create with a static NUL-terminated name and valid flags.
    let fd = unsafe {
        libc::memfd_create(
            c"hostel-guest".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size)?;
    if seal {
        // SAFETY: F_ADD_SEALS with an integer seal set on our own memfd.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(f)
}

/// A memfd of `size` bytes sealed against shrinking: guest memory a device may map.
pub fn sealed_memfd(size: u64) -> io::Result<File> {
    memfd(size, true)
}
