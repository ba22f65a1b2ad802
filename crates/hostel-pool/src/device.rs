//! The devices a pool is made of, behind one small trait so tests can put a failing layer
//! between the pool and a real file.
//!
//! `FileDevice` opens a block device or file with `O_DIRECT` where the kernel allows it (the
//! page cache would hold a second copy of every block the guest's own cache already holds,
//! and a write would not reach the device until flush), else buffered, saying why
//! (`direct_io`). Its I/O goes through io_uring (`uring.rs`), and the pool submits the copies
//! of a mirrored write, and a commit's record and sync on every device, as one batch
//! (`write_copies`, `sync_all`), so the devices work in parallel. Layers without a descriptor
//! (the tests' failing and power-cut devices) run the same batches call by call.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::uring::{self, Op};

/// `O_DIRECT` alignment of offsets, lengths and buffers (the pool's block size; at least any
/// device's logical block size).
pub const ALIGN: usize = 4096;
/// Linux's `O_DIRECT` (the pool crate does not take libc for one constant).
const O_DIRECT: i32 = 0o40000;

/// A device of the pool: a block device or a file.
pub trait BlockDevice: Send + Sync + fmt::Debug {
    /// Size in bytes.
    fn size_bytes(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `off`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Writes all of `buf` at `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn sync(&self) -> io::Result<()>;
    /// How errors name the device (its path).
    fn name(&self) -> String;
    /// The descriptor batches may submit to io_uring, and whether it is `O_DIRECT`; `None`:
    /// batches go through the calls above.
    fn uring_fd(&self) -> Option<(RawFd, bool)> {
        None
    }
}

/// A block device or regular file opened read-write.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    /// The same file without `O_DIRECT`, for the rare unaligned write (none on the data
    /// path); `None` when `file` is buffered itself.
    buffered: Option<File>,
    /// Why the device is not `O_DIRECT`, if it is not.
    not_direct: Option<String>,
    len: u64,
    path: PathBuf,
}

/// A zeroed buffer of `len` bytes at an `ALIGN`-aligned address, without `unsafe`: a
/// `Vec` with room to slide to the next aligned address.
pub(crate) struct Aligned {
    v: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    pub fn new(len: usize) -> Aligned {
        let v = vec![0u8; len + ALIGN];
        let at = v.as_ptr().align_offset(ALIGN).min(ALIGN);
        Aligned { v, at, len }
    }
    pub fn get(&self) -> &[u8] {
        &self.v[self.at..self.at + self.len]
    }
    pub fn get_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.at..self.at + self.len]
    }
}

fn aligned(x: u64) -> bool {
    x % ALIGN as u64 == 0
}

impl FileDevice {
    pub fn open(path: &Path) -> io::Result<FileDevice> {
        let open = |flags: i32| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(flags)
                .open(path)
        };
        let mut file = open(0)?;
        // Seeking to the end gives a block device's size as well as a file's.
        let len = file.seek(SeekFrom::End(0))?;
        let (file, buffered, not_direct) = match open(O_DIRECT) {
            Ok(direct) => (direct, Some(file), None),
            Err(e) => {
                let why = format!("the file system refuses O_DIRECT ({e}): buffered I/O");
                tracing::info!(device = %path.display(), "{why}");
                (file, None, Some(why))
            }
        };
        Ok(FileDevice {
            file,
            buffered,
            not_direct,
            len,
            path: path.to_path_buf(),
        })
    }

    /// `None` when the device does I/O with `O_DIRECT`, else why not.
    pub fn direct_io(&self) -> Option<&str> {
        self.not_direct.as_deref()
    }

    fn one(op: Op<'_>) -> io::Result<()> {
        let mut ops = [op];
        uring::run(&mut ops).pop().unwrap_or(Ok(()))
    }
}

impl BlockDevice for FileDevice {
    fn size_bytes(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        if self.not_direct.is_some() {
            return Self::one(Op::Read { fd, buf, off });
        }
        // O_DIRECT: read the covering aligned range into an aligned buffer.
        let start = off - off % ALIGN as u64;
        let end = (off + buf.len() as u64).div_ceil(ALIGN as u64) * ALIGN as u64;
        let mut b = Aligned::new((end - start) as usize);
        Self::one(Op::Read {
            fd,
            buf: b.get_mut(),
            off: start,
        })?;
        let at = (off - start) as usize;
        buf.copy_from_slice(&b.get()[at..at + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if let Some(b) = &self.buffered {
            if !aligned(off) || !aligned(buf.len() as u64) {
                return Self::one(Op::Write {
                    fd: b.as_raw_fd(),
                    buf,
                    off,
                });
            }
            let mut a = Aligned::new(buf.len());
            a.get_mut().copy_from_slice(buf);
            return Self::one(Op::Write {
                fd: self.file.as_raw_fd(),
                buf: a.get(),
                off,
            });
        }
        Self::one(Op::Write {
            fd: self.file.as_raw_fd(),
            buf,
            off,
        })
    }

    fn sync(&self) -> io::Result<()> {
        // One file: a data sync through either descriptor covers both.
        Self::one(Op::Sync {
            fd: self.file.as_raw_fd(),
        })
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn uring_fd(&self) -> Option<(RawFd, bool)> {
        Some((self.file.as_raw_fd(), self.not_direct.is_none()))
    }
}

/// Writes `data` at each (device, offset), then (with `sync`) makes it durable there: one
/// io_uring batch when every device has a descriptor, in parallel across devices. One result
/// per target.
pub(crate) fn write_copies(
    targets: &[(&dyn BlockDevice, u64)],
    data: &[u8],
    sync: bool,
) -> Vec<io::Result<()>> {
    let fds: Option<Vec<(RawFd, bool)>> = targets.iter().map(|(d, _)| d.uring_fd()).collect();
    let batchable = fds.as_ref().is_some_and(|f| {
        !f.iter().any(|&(_, direct)| direct)
            || (targets.iter().all(|&(_, off)| aligned(off)) && aligned(data.len() as u64))
    });
    let (Some(fds), true) = (fds, batchable) else {
        return targets
            .iter()
            .map(|&(d, off)| {
                d.write_at(data, off)
                    .and_then(|()| if sync { d.sync() } else { Ok(()) })
            })
            .collect();
    };
    let bounce = fds.iter().any(|&(_, direct)| direct).then(|| {
        let mut a = Aligned::new(data.len());
        a.get_mut().copy_from_slice(data);
        a
    });
    let buf = bounce.as_ref().map_or(data, Aligned::get);
    let mut ops = Vec::with_capacity(targets.len() * 2);
    for (&(fd, _), &(_, off)) in fds.iter().zip(targets) {
        ops.push(Op::Write { fd, buf, off });
        if sync {
            ops.push(Op::Sync { fd });
        }
    }
    let mut r = uring::run(&mut ops).into_iter();
    let per = if sync { 2 } else { 1 };
    (0..targets.len())
        .map(|_| {
            let mut out = Ok(());
            for _ in 0..per {
                if let Some(Err(e)) = r.next() {
                    if out.is_ok() {
                        out = Err(e);
                    }
                }
            }
            out
        })
        .collect()
}

/// `fdatasync` on every device, in parallel where they have descriptors.
pub(crate) fn sync_all(devs: &[&dyn BlockDevice]) -> Vec<io::Result<()>> {
    match devs
        .iter()
        .map(|d| d.uring_fd().map(|(fd, _)| fd))
        .collect::<Option<Vec<RawFd>>>()
    {
        Some(fds) => {
            let mut ops: Vec<Op<'_>> = fds.into_iter().map(|fd| Op::Sync { fd }).collect();
            uring::run(&mut ops)
        }
        None => devs.iter().map(|d| d.sync()).collect(),
    }
}
