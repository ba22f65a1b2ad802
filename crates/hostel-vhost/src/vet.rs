//! Checks on the file descriptors a vhost-user frontend hands over, made in the relay
//! ([`crate::proxy`]) before the vhost-user library sees them.
//!
//! Guest memory is mapped by the library and then read and written by every port's
//! thread: a region that reaches past the end of its file, or a file the frontend can
//! shrink later, turns the next access into SIGBUS and takes the whole backend process (every
//! tenant) down. So each region must lie inside its file, the file must be sealed against
//! shrinking (`F_SEAL_SHRINK`: QEMU's memfd backend seals by default), and one port may map
//! at most [`MAX_PORT_MEMORY`] bytes. Vring eventfds must be eventfds, not in semaphore mode
//! (a semaphore-mode kick stays readable for 2^64 reads: the port's thread would spin
//! forever), and the call fd is made non-blocking (a full counter would otherwise block the
//! sender's thread in `write`).
//!
//! `O_NONBLOCK` is a flag of the open file description, which the backend shares with QEMU
//! (SCM_RIGHTS passes the description, not a copy): QEMU's own reads and writes on these
//! eventfds become non-blocking too. That is harmless for eventfds, as QEMU polls them and
//! opens them `EFD_NONBLOCK` itself; it is why only eventfds, never memory files, get it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Guest memory one port may map in total (the largest VM hostel runs, with room).
pub const MAX_PORT_MEMORY: u64 = 64 << 30;

/// Why a frontend's message was refused; the connection is then closed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("request {req} carries {fds} file descriptors, expected {want}")]
    FdCount { req: u32, fds: usize, want: usize },
    #[error("request {req} has a malformed payload ({len} bytes)")]
    Malformed { req: u32, len: usize },
    #[error(
        "memory region {index}: offset {offset:#x} + size {size:#x} lies past the end of its \
         file ({file_size:#x} bytes)"
    )]
    PastEndOfFile {
        index: usize,
        offset: u64,
        size: u64,
        file_size: u64,
    },
    #[error(
        "memory region {index}: file is not sealed against shrinking (F_SEAL_SHRINK); use a \
         sealed memfd (QEMU: memory-backend-memfd, seal=on)"
    )]
    NotSealed { index: usize },
    #[error("guest memory of {total:#x} bytes exceeds the per-port limit of {MAX_PORT_MEMORY:#x}")]
    TooMuchMemory { total: u64 },
    #[error("{what}: not an eventfd ({kind})")]
    NotEventfd { what: &'static str, kind: String },
    #[error("{what}: eventfd in semaphore mode")]
    SemaphoreEventfd { what: &'static str },
    #[error("request {req} may not carry file descriptors")]
    UnexpectedFds { req: u32 },
    #[error("checking a file descriptor of request {req}: {source}")]
    Io {
        req: u32,
        #[source]
        source: io::Error,
    },
}

pub const SET_MEM_TABLE: u32 = 5;
pub const SET_LOG_BASE: u32 = 6;
pub const SET_LOG_FD: u32 = 7;
pub const SET_VRING_KICK: u32 = 12;
pub const SET_VRING_CALL: u32 = 13;
pub const SET_VRING_ERR: u32 = 14;
pub const ADD_MEM_REG: u32 = 37;

/// Bytes of one region in SET_MEM_TABLE / ADD_MEM_REG: guest address, size, frontend
/// address, offset into the file.
const REGION_LEN: usize = 32;

fn le64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// Per-connection state: the memory already accepted, for the per-port cap.
#[derive(Default)]
pub struct Vetter {
    mapped: u64,
}

impl Vetter {
    /// Checks one frontend message (`req`, its `payload` and the descriptors that came with
    /// it). Everything not listed passes only without descriptors.
    pub fn check(&mut self, req: u32, payload: &[u8], fds: &[OwnedFd]) -> Result<(), Refused> {
        match req {
            SET_MEM_TABLE => {
                let n = payload
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or(Refused::Malformed {
                        req,
                        len: payload.len(),
                    })?;
                if payload.len() < 8 + n * REGION_LEN {
                    return Err(Refused::Malformed {
                        req,
                        len: payload.len(),
                    });
                }
                expect_fds(req, fds, n)?;
                let mut total = 0u64;
                for (i, fd) in fds.iter().enumerate() {
                    let at = 8 + i * REGION_LEN;
                    total = total.saturating_add(region(req, payload, at, i, fd)?);
                }
                // The table replaces whatever was mapped before.
                self.mapped = cap(total)?;
                Ok(())
            }
            ADD_MEM_REG => {
                if payload.len() < 8 + REGION_LEN {
                    return Err(Refused::Malformed {
                        req,
                        len: payload.len(),
                    });
                }
                expect_fds(req, fds, 1)?;
                let size = region(req, payload, 8, 0, &fds[0])?;
                // Removals are not credited back: the cap only ever errs on the safe side.
                self.mapped = cap(self.mapped.saturating_add(size))?;
                Ok(())
            }
            SET_LOG_BASE => {
                expect_fds(req, fds, 1)?;
                let (Some(size), Some(offset)) = (le64(payload, 0), le64(payload, 8)) else {
                    return Err(Refused::Malformed {
                        req,
                        len: payload.len(),
                    });
                };
                mapped_file(req, &fds[0], 0, offset, size)?;
                cap(self.mapped.saturating_add(size)).map(|_| ())
            }
            SET_VRING_KICK | SET_VRING_CALL | SET_VRING_ERR | SET_LOG_FD => {
                // Without a descriptor the frontend asks for polling (bit 8 of the payload).
                if fds.len() > 1 {
                    return Err(Refused::FdCount {
                        req,
                        fds: fds.len(),
                        want: 1,
                    });
                }
                if let Some(fd) = fds.first() {
                    let what = match req {
                        SET_VRING_KICK => "vring kick fd",
                        SET_VRING_CALL => "vring call fd",
                        SET_VRING_ERR => "vring error fd",
                        _ => "log fd",
                    };
                    eventfd(req, what, fd)?;
                }
                Ok(())
            }
            _ if fds.is_empty() => Ok(()),
            _ => Err(Refused::UnexpectedFds { req }),
        }
    }
}

fn expect_fds(req: u32, fds: &[OwnedFd], want: usize) -> Result<(), Refused> {
    if fds.len() == want {
        Ok(())
    } else {
        Err(Refused::FdCount {
            req,
            fds: fds.len(),
            want,
        })
    }
}

fn cap(total: u64) -> Result<u64, Refused> {
    if total > MAX_PORT_MEMORY {
        Err(Refused::TooMuchMemory { total })
    } else {
        Ok(total)
    }
}

/// Checks region `index` at `at` in `payload`; returns its size.
fn region(req: u32, payload: &[u8], at: usize, index: usize, fd: &OwnedFd) -> Result<u64, Refused> {
    let field = |o| {
        le64(payload, at + o).ok_or(Refused::Malformed {
            req,
            len: payload.len(),
        })
    };
    let (size, offset) = (field(8)?, field(24)?);
    mapped_file(req, fd, index, offset, size)?;
    Ok(size)
}

/// `[offset, offset + size)` of the file behind `fd` must exist and stay: inside the file
/// now, and the file sealed so it cannot shrink later.
fn mapped_file(
    req: u32,
    fd: &OwnedFd,
    index: usize,
    offset: u64,
    size: u64,
) -> Result<(), Refused> {
    let file_size = File::from(
        fd.try_clone()
            .map_err(|source| Refused::Io { req, source })?,
    )
    .metadata()
    .map_err(|source| Refused::Io { req, source })?
    .len();
    let end = offset.checked_add(size);
    if end.map_or(true, |e| e > file_size) {
        return Err(Refused::PastEndOfFile {
            index,
            offset,
            size,
            file_size,
        });
    }
    if seals(fd.as_fd()) & libc::F_SEAL_SHRINK == 0 {
        return Err(Refused::NotSealed { index });
    }
    Ok(())
}

/// The file's seals; 0 for files that cannot be sealed (not a memfd or shmem file).
fn seals(fd: BorrowedFd<'_>) -> libc::c_int {
    // SAFETY: F_GET_SEALS takes no argument and only reads the descriptor's seal set; `fd`
    // is open for the duration of the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    r.max(0)
}

/// `fd` must be an eventfd not in semaphore mode; it is made non-blocking so that neither
/// the library's read of a kick nor the backend's write of a call can ever block a thread.
fn eventfd(req: u32, what: &'static str, fd: &OwnedFd) -> Result<(), Refused> {
    let raw = fd.as_raw_fd();
    let kind = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .map_err(|source| Refused::Io { req, source })?;
    if kind.as_os_str() != "anon_inode:[eventfd]" {
        return Err(Refused::NotEventfd {
            what,
            kind: kind.display().to_string(),
        });
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))
        .map_err(|source| Refused::Io { req, source })?;
    // Older kernels do not report the mode; the check then cannot tell.
    let semaphore = info
        .lines()
        .filter_map(|l| l.strip_prefix("eventfd-semaphore:"))
        .any(|v| v.trim() == "1");
    if semaphore {
        return Err(Refused::SemaphoreEventfd { what });
    }
    set_nonblocking(fd.as_fd()).map_err(|source| Refused::Io { req, source })
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and only reads the file status flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: F_SETFL with an integer flag set changes only the file status flags of a
    // descriptor that stays open for the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn memfd(size: u64, seal: bool) -> OwnedFd {
        hostel_virtq::testing::memfd(size, seal).unwrap().into()
    }

    fn table(regions: &[(u64, u64)]) -> Vec<u8> {
        let mut p = (regions.len() as u32).to_le_bytes().to_vec();
        p.extend_from_slice(&[0; 4]);
        for (i, &(size, offset)) in regions.iter().enumerate() {
            p.extend_from_slice(&((i as u64) << 32).to_le_bytes());
            p.extend_from_slice(&size.to_le_bytes());
            p.extend_from_slice(&0x7f00_0000_0000u64.to_le_bytes());
            p.extend_from_slice(&offset.to_le_bytes());
        }
        p
    }

    #[test]
    fn memory_must_lie_inside_a_sealed_file_and_under_the_cap() {
        let mut v = Vetter::default();
        let ok = memfd(1 << 20, true);
        v.check(
            SET_MEM_TABLE,
            &table(&[(1 << 20, 0)]),
            &[ok.try_clone().unwrap()],
        )
        .unwrap();
        let r = v.check(
            SET_MEM_TABLE,
            &table(&[(1 << 20, 4096)]),
            &[ok.try_clone().unwrap()],
        );
        assert!(
            matches!(r, Err(Refused::PastEndOfFile { index: 0, .. })),
            "{r:?}"
        );
        let r = v.check(
            SET_MEM_TABLE,
            &table(&[(64 << 20, 0)]),
            &[ok.try_clone().unwrap()],
        );
        assert!(matches!(r, Err(Refused::PastEndOfFile { .. })), "{r:?}");
        let r = v.check(
            SET_MEM_TABLE,
            &table(&[(u64::MAX, 1)]),
            &[ok.try_clone().unwrap()],
        );
        assert!(matches!(r, Err(Refused::PastEndOfFile { .. })), "{r:?}");
        let r = v.check(SET_MEM_TABLE, &table(&[(4096, 0)]), &[memfd(4096, false)]);
        assert!(matches!(r, Err(Refused::NotSealed { index: 0 })), "{r:?}");
        let r = v.check(
            SET_MEM_TABLE,
            &table(&[(4096, 0), (4096, 0)]),
            &[ok.try_clone().unwrap()],
        );
        assert!(matches!(r, Err(Refused::FdCount { .. })), "{r:?}");
        let r = v.check(
            SET_MEM_TABLE,
            &table(&[(4096, 0)])[..20],
            &[ok.try_clone().unwrap()],
        );
        assert!(matches!(r, Err(Refused::Malformed { .. })), "{r:?}");
        // 40 GiB twice: each fits its (sparse) file, together they pass the cap.
        let big = memfd(40 << 30, true);
        let two = [big.try_clone().unwrap(), big.try_clone().unwrap()];
        let r = v.check(SET_MEM_TABLE, &table(&[(40 << 30, 0), (40 << 30, 0)]), &two);
        assert!(matches!(r, Err(Refused::TooMuchMemory { .. })), "{r:?}");
    }

    #[test]
    fn added_regions_and_log_memory_count_against_the_same_limits() {
        let mut v = Vetter::default();
        let big = memfd(40 << 30, true);
        let add = |size: u64, offset: u64| {
            let mut p = vec![0u8; 8];
            for field in [0u64, size, 0x7f00_0000_0000, offset] {
                p.extend_from_slice(&field.to_le_bytes());
            }
            p
        };
        v.check(ADD_MEM_REG, &add(40 << 30, 0), &[big.try_clone().unwrap()])
            .unwrap();
        let r = v.check(ADD_MEM_REG, &add(40 << 30, 0), &[big.try_clone().unwrap()]);
        assert!(matches!(r, Err(Refused::TooMuchMemory { .. })), "{r:?}");
        let r = v.check(
            ADD_MEM_REG,
            &add(4096, 40 << 30),
            &[big.try_clone().unwrap()],
        );
        assert!(matches!(r, Err(Refused::PastEndOfFile { .. })), "{r:?}");
        let mut log = (8192u64).to_le_bytes().to_vec();
        log.extend_from_slice(&0u64.to_le_bytes());
        let r = v.check(SET_LOG_BASE, &log, &[memfd(4096, true)]);
        assert!(matches!(r, Err(Refused::PastEndOfFile { .. })), "{r:?}");
    }

    #[test]
    fn vring_fds_must_be_plain_eventfds() {
        let mut v = Vetter::default();
        // SAFETY: eventfd(2) with a valid flag set.
        let sem = unsafe { libc::eventfd(0, libc::EFD_SEMAPHORE | libc::EFD_CLOEXEC) };
        // SAFETY: a fresh descriptor we own.
        let sem = unsafe { OwnedFd::from_raw_fd(sem) };
        let r = v.check(SET_VRING_KICK, &0u64.to_le_bytes(), &[sem]);
        assert!(matches!(r, Err(Refused::SemaphoreEventfd { .. })), "{r:?}");
        let r = v.check(SET_VRING_CALL, &0u64.to_le_bytes(), &[memfd(4096, true)]);
        assert!(matches!(r, Err(Refused::NotEventfd { .. })), "{r:?}");
        // SAFETY: eventfd(2) with a valid flag set.
        let plain = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        // SAFETY: a fresh descriptor we own.
        let plain = unsafe { OwnedFd::from_raw_fd(plain) };
        v.check(
            SET_VRING_CALL,
            &0u64.to_le_bytes(),
            &[plain.try_clone().unwrap()],
        )
        .unwrap();
        // SAFETY: F_GETFL only reads flags of a descriptor we hold.
        let flags = unsafe { libc::fcntl(plain.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0, "call fd left blocking");
        let r = v.check(1, &[], &[plain]);
        assert!(matches!(r, Err(Refused::UnexpectedFds { req: 1 })), "{r:?}");
    }
}
