//! Test devices: files in a temporary directory, and two layers between the pool and a file —
//! one that turns every call into EIO on demand (an *injected* error: this machine has no
//! device-mapper to make the kernel return real ones), one that cuts power after N writes.

#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use hostel_pool::{BlockDevice, CreateOptions, FileDevice};

pub const SLOT: u64 = 256 * 1024;

pub fn opts() -> CreateOptions {
    CreateOptions {
        meta_slot_bytes: Some(SLOT),
    }
}

pub fn make_files(dir: &Path, names: &[&str], size: u64) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = dir.join(n);
            let f = std::fs::File::create(&p).unwrap();
            f.set_len(size).unwrap();
            p
        })
        .collect()
}

pub fn open_files(paths: &[PathBuf]) -> Vec<Box<dyn BlockDevice>> {
    paths
        .iter()
        .map(|p| Box::new(FileDevice::open(p).unwrap()) as Box<dyn BlockDevice>)
        .collect()
}

/// A file that answers EIO to everything once `failing` is set.
#[derive(Debug)]
pub struct Faulty {
    pub inner: FileDevice,
    pub failing: Arc<AtomicBool>,
}

impl Faulty {
    fn check(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(())
    }
}

/// Linux's EIO (the pool crate has no libc dependency to take it from).
const EIO: i32 = 5;

impl BlockDevice for Faulty {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.check()?;
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.check()?;
        self.inner.write_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.check()?;
        self.inner.sync()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

/// Shared by every device of a pool: writes number `cut_at` onwards never reach the file (the
/// one at `cut_at` only half), as if power failed there; the process does not notice.
#[derive(Debug, Default)]
pub struct Cut {
    pub writes: AtomicU64,
    pub cut_at: AtomicU64,
}

impl Cut {
    pub fn new(cut_at: u64) -> Arc<Cut> {
        Arc::new(Cut {
            writes: AtomicU64::new(0),
            cut_at: AtomicU64::new(cut_at),
        })
    }
    pub fn happened(&self) -> bool {
        self.writes.load(Ordering::SeqCst) > self.cut_at.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct CutDevice {
    pub inner: FileDevice,
    pub cut: Arc<Cut>,
}

impl BlockDevice for CutDevice {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let n = self.cut.writes.fetch_add(1, Ordering::SeqCst);
        let at = self.cut.cut_at.load(Ordering::SeqCst);
        if n < at {
            self.inner.write_at(buf, off)
        } else if n == at {
            // Torn: a prefix of the write reaches the device.
            self.inner.write_at(&buf[..buf.len() / 2], off)
        } else {
            Ok(())
        }
    }
    fn sync(&self) -> io::Result<()> {
        if self.cut.happened() {
            return Ok(());
        }
        self.inner.sync()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

/// xorshift64*: reproducible test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub fn read_all(pool: &hostel_pool::Pool, vol: &str) -> Vec<u8> {
    let size = pool.volume(vol).unwrap().size;
    let mut b = vec![0u8; size as usize];
    pool.read(vol, 0, &mut b).unwrap();
    b
}
