//! The pool: its devices, creation, opening from whatever paths the devices have now, and the
//! metadata commit every durable change goes through.

use std::sync::{Mutex, MutexGuard};

use tracing::{info, warn};
use uuid::Uuid;

use crate::alloc::FreeMap;
use crate::device::BlockDevice;
use crate::error::{PoolError, Result};
use crate::format::{self, Superblock, META_HEADER, SUPERBLOCK_BYTES};
use crate::meta::{DevIndex, DevMeta, Meta};

/// How a new pool (or a device added to one) is laid out.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateOptions {
    /// Bytes per metadata slot on each device; default: 1/256 of the device, 1 MiB to 256 MiB
    /// (about 40 bytes per extent and 10 per map entry: a 10 GiB device's default slot holds
    /// a million map entries).
    pub meta_slot_bytes: Option<u64>,
}

/// A device as the pool reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub uuid: Uuid,
    /// Where it was found this time (`None`: missing).
    pub name: Option<String>,
    pub failed: bool,
    pub clusters: u64,
    pub free_clusters: u64,
}

pub(crate) struct Dev {
    pub io: Box<dyn BlockDevice>,
    pub sb: Superblock,
}

pub(crate) struct Inner {
    pub pool: Uuid,
    pub meta: Meta,
    /// Parallel to `meta.devices`; `None` when the device was not found at open.
    pub devs: Vec<Option<Dev>>,
    pub free: Vec<FreeMap>,
    /// Clusters freed since the last commit: reusable only once the commit that frees them is
    /// durable, so a crash can never leave the old metadata pointing at someone else's data.
    pub pending_free: Vec<(DevIndex, u64)>,
    pub generation: u64,
    pub dirty: bool,
}

/// A storage pool. Every method takes `&self`; the pool serialises its work internally.
pub struct Pool {
    pub(crate) inner: Mutex<Inner>,
}

fn default_slot(len: u64) -> u64 {
    (len / 256).clamp(1 << 20, 256 << 20) / 4096 * 4096
}

fn io_err(dev: &dyn BlockDevice, source: std::io::Error) -> PoolError {
    PoolError::DeviceIo {
        path: dev.name(),
        source,
    }
}

fn format_device(
    io: &dyn BlockDevice,
    pool: Uuid,
    generation: u64,
    opts: CreateOptions,
) -> Result<Superblock> {
    let len = io.size_bytes();
    let slot = opts.meta_slot_bytes.unwrap_or_else(|| default_slot(len));
    let sb = Superblock::layout(pool, Uuid::new_v4(), generation, len, slot).ok_or(
        PoolError::DeviceTooSmall {
            path: io.name(),
            len,
            min: SUPERBLOCK_BYTES + 2 * slot + 2 * format::CLUSTER_SIZE,
        },
    )?;
    // Invalidate both slots first so a device reused from another pool brings no commit along.
    let zero = vec![0u8; META_HEADER as usize];
    for s in 0..2 {
        io.write_at(&zero, sb.slot_offset(s))
            .map_err(|e| io_err(io, e))?;
    }
    io.write_at(&sb.encode(), 0).map_err(|e| io_err(io, e))?;
    io.sync().map_err(|e| io_err(io, e))?;
    Ok(sb)
}

impl Pool {
    /// Formats `devices` as a new pool (destroying what they held).
    pub fn create(devices: Vec<Box<dyn BlockDevice>>, opts: CreateOptions) -> Result<Pool> {
        if devices.is_empty() {
            return Err(PoolError::NoDevices);
        }
        let pool = Uuid::new_v4();
        let mut meta = Meta::default();
        let mut devs = Vec::new();
        let mut free = Vec::new();
        for io in devices {
            let sb = format_device(io.as_ref(), pool, 0, opts)?;
            meta.devices.push(DevMeta {
                uuid: *sb.device.as_bytes(),
                clusters: sb.data_clusters,
                failed: false,
            });
            free.push(FreeMap::new(sb.data_clusters));
            devs.push(Some(Dev { io, sb }));
        }
        meta.open = true;
        let p = Pool {
            inner: Mutex::new(Inner {
                pool,
                meta,
                devs,
                free,
                pending_free: Vec::new(),
                generation: 0,
                dirty: true,
            }),
        };
        p.lock().commit()?;
        info!(%pool, "storage pool created");
        Ok(p)
    }

    /// Opens the pool the devices belong to, whatever their paths and order are now. Devices
    /// the metadata lists but that are not given are missing: their copies are not used and
    /// the volumes with copies there are degraded.
    pub fn open(devices: Vec<Box<dyn BlockDevice>>) -> Result<Pool> {
        let mut found: Vec<Dev> = Vec::new();
        for io in devices {
            let mut b = vec![0u8; SUPERBLOCK_BYTES as usize];
            io.read_at(&mut b, 0).map_err(|e| io_err(io.as_ref(), e))?;
            let sb = Superblock::decode(&b).ok_or(PoolError::NoSuperblock { path: io.name() })?;
            if let Some(first) = found.first() {
                if first.sb.pool != sb.pool {
                    return Err(PoolError::ForeignDevice {
                        path: io.name(),
                        found: sb.pool,
                        expected: first.sb.pool,
                    });
                }
            }
            if found.iter().any(|d| d.sb.device == sb.device) {
                return Err(PoolError::DuplicateDevice {
                    path: io.name(),
                    uuid: sb.device,
                });
            }
            found.push(Dev { io, sb });
        }
        let pool = found.first().ok_or(PoolError::NoDevices)?.sb.pool;
        let (generation, mut meta) = newest_commit(pool, &found)?;
        let mut devs: Vec<Option<Dev>> = meta.devices.iter().map(|_| None).collect();
        for d in found {
            match meta
                .devices
                .iter()
                .position(|m| m.uuid == *d.sb.device.as_bytes())
            {
                Some(i) => devs[i] = Some(d),
                None => {
                    warn!(device = %d.io.name(), "device of this pool not in its metadata (an add that did not commit): ignored")
                }
            }
        }
        let free = build_free_maps(&mut meta, &devs)?;
        if meta.open {
            warn!(%pool, "pool was not closed: blocks written after the last flush are settled on read or by scrub");
            meta.needs_scrub = true;
        }
        meta.open = true;
        let mut inner = Inner {
            pool,
            meta,
            devs,
            free,
            pending_free: Vec::new(),
            generation,
            dirty: true,
        };
        for (i, d) in inner.devs.iter().enumerate() {
            if d.is_none() {
                warn!(%pool, device = %Uuid::from_bytes(inner.meta.devices[i].uuid), "device missing");
            }
        }
        inner.commit()?;
        info!(%pool, generation = inner.generation, "storage pool opened");
        Ok(Pool {
            inner: Mutex::new(inner),
        })
    }

    /// Adds a device (formatted here) to the pool.
    pub fn add_device(&self, io: Box<dyn BlockDevice>, opts: CreateOptions) -> Result<Uuid> {
        let mut g = self.lock();
        let sb = format_device(io.as_ref(), g.pool, g.generation, opts)?;
        g.meta.devices.push(DevMeta {
            uuid: *sb.device.as_bytes(),
            clusters: sb.data_clusters,
            failed: false,
        });
        g.free.push(FreeMap::new(sb.data_clusters));
        g.devs.push(Some(Dev { io, sb }));
        g.dirty = true;
        g.commit()?;
        Ok(sb.device)
    }

    pub fn uuid(&self) -> Uuid {
        self.lock().pool
    }

    /// The generation of the last durable metadata commit.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Whether a crash left blocks a scrub has not yet settled.
    pub fn needs_scrub(&self) -> bool {
        self.lock().meta.needs_scrub
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        let g = self.lock();
        g.meta
            .devices
            .iter()
            .enumerate()
            .map(|(i, m)| DeviceInfo {
                uuid: Uuid::from_bytes(m.uuid),
                name: g.devs[i].as_ref().map(|d| d.io.name()),
                failed: m.failed || g.devs[i].is_none(),
                clusters: m.clusters,
                free_clusters: g.free[i].free(),
            })
            .collect()
    }

    /// Makes everything written so far durable on every healthy copy.
    pub fn flush(&self) -> Result<()> {
        let mut g = self.lock();
        g.commit()
    }

    /// Flushes and marks the pool closed, so the next open knows no write was torn.
    pub fn close(self) -> Result<()> {
        let mut g = self.lock();
        g.meta.open = false;
        g.dirty = true;
        g.commit()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug already reported; the state it guards is
        // only ever changed through steps that leave it consistent, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The newest commit whose checksum holds and which decodes, over both slots of every device.
fn newest_commit(pool: Uuid, devs: &[Dev]) -> Result<(u64, Meta)> {
    let mut candidates: Vec<(u64, usize, u64)> = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        for s in 0..2 {
            let mut h = [0u8; META_HEADER as usize];
            if d.io.read_at(&mut h, d.sb.slot_offset(s)).is_err() {
                continue;
            }
            if let Some((gen, len, _)) = format::decode_commit_header(pool, &h) {
                if len <= d.sb.meta_slot_bytes - META_HEADER {
                    candidates.push((gen, i, s));
                }
            }
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (gen, i, s) in candidates {
        let d = &devs[i];
        let mut h = [0u8; META_HEADER as usize];
        let off = d.sb.slot_offset(s);
        if d.io.read_at(&mut h, off).is_err() {
            continue;
        }
        let Some((_, len, crc)) = format::decode_commit_header(pool, &h) else {
            continue;
        };
        let mut payload = vec![0u8; len as usize];
        if d.io.read_at(&mut payload, off + META_HEADER).is_err() {
            continue;
        }
        if !format::commit_checksum_ok(&h, &payload, crc) {
            warn!(device = %d.io.name(), generation = gen, "metadata commit with a bad checksum (torn): skipped");
            continue;
        }
        match postcard::from_bytes::<Meta>(&payload) {
            Ok(m) => return Ok((gen, m)),
            Err(e) => {
                warn!(device = %d.io.name(), generation = gen, error = %e, "metadata commit does not decode: skipped")
            }
        }
    }
    Err(PoolError::NoMetadata { pool })
}

/// Rebuilds the free maps from the extents, refusing metadata that points outside a device or
/// at one cluster twice.
fn build_free_maps(meta: &mut Meta, devs: &[Option<Dev>]) -> Result<Vec<FreeMap>> {
    let mut free: Vec<FreeMap> = meta
        .devices
        .iter()
        .map(|d| FreeMap::new(d.clusters))
        .collect();
    for (i, d) in devs.iter().enumerate() {
        if d.is_none() {
            meta.devices[i].failed = true;
        }
    }
    for (id, e) in meta.extents.iter_mut() {
        e.committed_refs = e.refs;
        for &(dev, c) in &e.copies {
            let ok = free.get_mut(dev as usize).is_some_and(|f| f.take(c));
            if !ok {
                return Err(PoolError::CorruptMetadata(format!(
                    "extent {id}: cluster {c} of device {dev} outside the device or used twice"
                )));
            }
        }
    }
    Ok(free)
}

impl Inner {
    /// Flushes the data on every healthy device, then writes the metadata as generation n+1
    /// into slot (n+1) mod 2 of every healthy device. The other slot still holds generation n,
    /// so a cut anywhere leaves one complete commit; the checksum tells a torn one.
    pub fn commit(&mut self) -> Result<()> {
        for i in 0..self.devs.len() {
            if let Some(d) = self.healthy(i as DevIndex) {
                if let Err(e) = d.io.sync() {
                    self.fail_device(i as DevIndex, &e);
                }
            }
        }
        if !self.dirty {
            return Ok(());
        }
        // A device that fails during a commit must be recorded as failed by a later commit on
        // the others, or a reopen would trust its stale copies: retry (bounded by the count).
        for _ in 0..=self.devs.len() {
            let failed_before = self.failed_count();
            let gen = self.generation + 1;
            let payload = postcard::to_stdvec(&self.meta)
                .map_err(|e| PoolError::CorruptMetadata(format!("encoding: {e}")))?;
            let record = format::encode_commit(self.pool, gen, &payload);
            let mut written = 0;
            for i in 0..self.devs.len() {
                let Some(d) = self.healthy(i as DevIndex) else {
                    continue;
                };
                if record.len() as u64 > d.sb.meta_slot_bytes {
                    return Err(PoolError::MetadataFull {
                        need: record.len(),
                        have: d.sb.meta_slot_bytes,
                    });
                }
                let r =
                    d.io.write_at(&record, d.sb.slot_offset(gen))
                        .and_then(|()| d.io.sync());
                match r {
                    Ok(()) => written += 1,
                    Err(e) => self.fail_device(i as DevIndex, &e),
                }
            }
            if written == 0 {
                return Err(PoolError::CommitFailed);
            }
            self.generation = gen;
            if self.failed_count() == failed_before {
                break;
            }
        }
        for (dev, c) in std::mem::take(&mut self.pending_free) {
            self.free[dev as usize].release(c);
        }
        for e in self.meta.extents.values_mut() {
            e.committed_refs = e.refs;
        }
        self.dirty = false;
        Ok(())
    }

    fn failed_count(&self) -> usize {
        self.meta.devices.iter().filter(|d| d.failed).count()
    }

    /// The device, if present and not failed.
    pub fn healthy(&self, i: DevIndex) -> Option<&Dev> {
        let i = i as usize;
        match self.meta.devices.get(i) {
            Some(m) if !m.failed => self.devs.get(i).and_then(|d| d.as_ref()),
            _ => None,
        }
    }

    pub fn fail_device(&mut self, i: DevIndex, e: &std::io::Error) {
        if let Some(m) = self.meta.devices.get_mut(i as usize) {
            if !m.failed {
                warn!(device = %Uuid::from_bytes(m.uuid), error = %e, "device failed: serving from the other copies");
                m.failed = true;
                self.dirty = true;
            }
        }
    }
}
