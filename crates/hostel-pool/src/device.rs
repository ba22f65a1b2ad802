//! The devices a pool is made of, behind one small trait so tests can put a failing layer
//! between the pool and a real file.
//!
//! First version: positioned `pread`/`pwrite` on a buffered file descriptor, made durable by
//! `fdatasync` at flush. Why not io_uring + O_DIRECT yet: the pool's calls are synchronous and
//! one request at a time under the pool lock, so a ring would carry one entry per submission
//! and buy nothing; it pays once the vhost-user-blk queue workers hand a whole kick's requests
//! down as one batch (next step). O_DIRECT also needs block-aligned buffers end to end, which
//! the batched path will bring, and tmpfs (where tests run) refuses it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
}

/// A block device or regular file opened read-write.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileDevice {
    pub fn open(path: &Path) -> io::Result<FileDevice> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        // Seeking to the end gives a block device's size as well as a file's.
        let len = file.seek(SeekFrom::End(0))?;
        Ok(FileDevice {
            file,
            len,
            path: path.to_path_buf(),
        })
    }
}

impl BlockDevice for FileDevice {
    fn size_bytes(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}
