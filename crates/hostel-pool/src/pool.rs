//! The pool: its devices, creation, opening from whatever paths the devices have now, and the
//! metadata commit every durable change goes through.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{info, warn};
use uuid::Uuid;

use crate::alloc::FreeMap;
use crate::device::BlockDevice;
use crate::error::{PoolError, Result};
use crate::format::{self, Superblock, META_HEADER, SUPERBLOCK_BYTES};
use crate::log::{self, Changes, Delta, DELTA_HEADER};
use crate::meta::{DevIndex, DevMeta, ExtentId, Meta};

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
    /// Shared so a read can do its I/O without the pool lock (`Pool::read`).
    pub io: Arc<dyn BlockDevice>,
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
    /// Counts the commits that made freed clusters reusable (see `Pool::read`).
    pub frees_released: u64,
    pub generation: u64,
    pub dirty: bool,
    /// Where the metadata log stands (see `log.rs`).
    pub log: LogState,
    /// Extents and map entries changed since the last commit: what the next delta carries.
    pub changes: Changes,
    pub stats: CommitStats,
    /// Told when a device fails or is added: copies may need re-mirroring.
    pub remirror: Arc<crate::remirror::Shared>,
}

/// The metadata log's position, the same on every healthy device (each commit is written to
/// all of them in the same place).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogState {
    /// The slot holding the current checkpoint and its deltas.
    pub slot: u64,
    /// Generation of that checkpoint.
    pub base: u64,
    /// Offset in the slot where the next delta goes.
    pub end: u64,
    /// Checksum of the last record of the chain.
    pub prev_crc: u32,
    /// The next commit must be a whole-state checkpoint (a control operation, an added
    /// device, an open: changes the delta records do not describe, or a fresh chain).
    pub checkpoint_due: bool,
}

impl LogState {
    fn fresh(slot: u64) -> LogState {
        LogState {
            slot,
            base: 0,
            end: 0,
            prev_crc: 0,
            checkpoint_due: true,
        }
    }
}

/// What a commit wrote, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub checkpoints: u64,
    pub deltas: u64,
    /// Bytes of metadata records written, per device.
    pub bytes: u64,
}

/// A storage pool. Every method takes `&self`; the pool serialises its work internally.
pub struct Pool {
    pub(crate) inner: Mutex<Inner>,
    /// The background re-mirror's progress and its wake-up (`remirror.rs`).
    pub(crate) remirror: Arc<crate::remirror::Shared>,
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
    // Whole blocks, so every metadata record sits on a block boundary.
    let slot = opts.meta_slot_bytes.unwrap_or_else(|| default_slot(len)) / 4096 * 4096;
    let sb = Superblock::layout(pool, Uuid::new_v4(), generation, len, slot).ok_or(
        PoolError::DeviceTooSmall {
            path: io.name(),
            len,
            min: SUPERBLOCK_BYTES + 2 * slot + 2 * format::CLUSTER_SIZE,
        },
    )?;
    // Invalidate both slots first so a device reused from another pool brings no commit along.
    let zero = vec![0u8; crate::format::BLOCK_SIZE as usize];
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
            devs.push(Some(Dev {
                io: Arc::from(io),
                sb,
            }));
        }
        meta.open = true;
        let shared = Arc::new(crate::remirror::Shared::default());
        let p = Pool {
            inner: Mutex::new(Inner {
                pool,
                meta,
                devs,
                free,
                pending_free: Vec::new(),
                frees_released: 0,
                generation: 0,
                dirty: true,
                // The first checkpoint goes into slot 0.
                log: LogState::fresh(1),
                changes: Changes::default(),
                stats: CommitStats::default(),
                remirror: Arc::clone(&shared),
            }),
            remirror: shared,
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
            found.push(Dev {
                io: Arc::from(io),
                sb,
            });
        }
        let pool = found.first().ok_or(PoolError::NoDevices)?.sb.pool;
        let (generation, mut meta, slot) = newest_commit(pool, &found)?;
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
        // Volumes a restore was filling when the process died (`backup.rs`): never shown.
        let hidden: Vec<String> = meta
            .volumes
            .keys()
            .filter(|n| n.starts_with('.'))
            .cloned()
            .collect();
        let mut inner = Inner {
            pool,
            meta,
            devs,
            free,
            pending_free: Vec::new(),
            frees_released: 0,
            generation,
            dirty: true,
            // The chain just read stays intact: the opening checkpoint goes into the other
            // slot, and starts a fresh chain on every device.
            log: LogState::fresh(slot),
            changes: Changes::default(),
            stats: CommitStats::default(),
            remirror: Arc::new(crate::remirror::Shared::default()),
        };
        for (i, d) in inner.devs.iter().enumerate() {
            if d.is_none() {
                warn!(%pool, device = %Uuid::from_bytes(inner.meta.devices[i].uuid), "device missing");
            }
        }
        for n in hidden {
            warn!(%pool, volume = %n, "removing a restore that did not finish");
            if let Some(v) = inner.meta.volumes.remove(&n) {
                inner.release_map(&v.map);
            }
        }
        inner.commit()?;
        info!(%pool, generation = inner.generation, "storage pool opened");
        // Missing devices at open: their copies need a new home.
        inner.remirror.wake();
        Ok(Pool {
            remirror: Arc::clone(&inner.remirror),
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
        g.devs.push(Some(Dev {
            io: Arc::from(io),
            sb,
        }));
        // The new device has no chain to append to.
        g.commit_checkpoint()?;
        // A new home for copies a failed device held.
        g.remirror.wake();
        Ok(sb.device)
    }

    pub fn uuid(&self) -> Uuid {
        self.lock().pool
    }

    /// The generation of the last durable metadata commit.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// What the metadata commits have written since the pool was created or opened.
    pub fn commit_stats(&self) -> CommitStats {
        self.lock().stats
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

    /// Writes the whole state as a checkpoint now (tests, benchmarks; commits do it when due).
    pub fn checkpoint(&self) -> Result<()> {
        self.lock().commit_checkpoint()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug already reported; the state it guards is
        // only ever changed through steps that leave it consistent, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The newest state over both slots of every device: a checkpoint whose checksum holds and
/// which decodes, with every delta after it that continues its chain. Also the slot it was
/// read from.
fn newest_commit(pool: Uuid, devs: &[Dev]) -> Result<(u64, Meta, u64)> {
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
    // Every chain from a later checkpoint reaches further than any from an earlier one (a
    // checkpoint is written only after the chain before it): among the chains of the newest
    // checkpoint that reads, the longest wins (a cut between two devices' appends).
    let mut best: Option<(u64, Meta, u64, u64)> = None;
    for (gen, i, s) in candidates {
        if best.as_ref().is_some_and(|b| b.3 > gen) {
            break;
        }
        if let Some((tip, meta)) = read_chain(pool, &devs[i], s) {
            if best.as_ref().map_or(true, |b| tip > b.0) {
                best = Some((tip, meta, s, gen));
            }
        }
    }
    best.map(|(tip, meta, s, _)| (tip, meta, s))
        .ok_or(PoolError::NoMetadata { pool })
}

/// The checkpoint in slot `s` of `d` and the deltas that continue it: the generation reached
/// and the state there; `None` when the checkpoint itself is torn or does not decode.
fn read_chain(pool: Uuid, d: &Dev, s: u64) -> Option<(u64, Meta)> {
    let off = d.sb.slot_offset(s);
    let slot = d.sb.meta_slot_bytes;
    let mut h = [0u8; META_HEADER as usize];
    d.io.read_at(&mut h, off).ok()?;
    let (base, len, crc) = format::decode_commit_header(pool, &h)?;
    let mut payload = vec![0u8; len as usize];
    d.io.read_at(&mut payload, off + META_HEADER).ok()?;
    if !format::commit_checksum_ok(&h, &payload, crc) {
        warn!(device = %d.io.name(), generation = base, "metadata checkpoint with a bad checksum (torn): skipped");
        return None;
    }
    let mut meta = match postcard::from_bytes::<Meta>(&payload) {
        Ok(m) => m,
        Err(e) => {
            warn!(device = %d.io.name(), generation = base, error = %e, "metadata checkpoint does not decode: skipped");
            return None;
        }
    };
    let mut tip = base;
    let mut prev = crc;
    let mut pos = log::align(META_HEADER + len);
    while pos + DELTA_HEADER <= slot {
        let mut h = [0u8; DELTA_HEADER as usize];
        if d.io.read_at(&mut h, off + pos).is_err() {
            break;
        }
        let Some((len, crc)) = log::decode_delta_header(&h, pool, tip + 1, base, prev) else {
            break;
        };
        if len > slot - pos - DELTA_HEADER {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        if d.io
            .read_at(&mut payload, off + pos + DELTA_HEADER)
            .is_err()
            || !log::delta_checksum_ok(&h, &payload, crc)
        {
            break;
        }
        let Ok(delta) = postcard::from_bytes::<Delta>(&payload) else {
            warn!(device = %d.io.name(), generation = tip + 1, "metadata delta does not decode: chain ends before it");
            break;
        };
        // A record applies whole or not at all: apply to a copy only if it names a volume the
        // state lacks (never written so, but the chain is not trusted past such a record).
        if let Err(why) = delta.check(&meta) {
            warn!(device = %d.io.name(), generation = tip + 1, why, "metadata delta does not fit its state: chain ends before it");
            break;
        }
        delta.apply(&mut meta);
        tip += 1;
        prev = crc;
        pos += log::align(DELTA_HEADER + len);
    }
    Some((tip, meta))
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
    /// Flushes the data on every healthy device, then makes the metadata durable as
    /// generation n+1 on every healthy device: a delta appended to the current chain (what
    /// changed since n), or a whole-state checkpoint into the other slot when one is due or
    /// the delta does not fit. Either way generation n stays readable until n+1 is complete,
    /// so a cut anywhere leaves one; the checksums tell a torn record.
    pub fn commit(&mut self) -> Result<()> {
        let healthy: Vec<DevIndex> = (0..self.devs.len() as DevIndex)
            .filter(|&i| self.healthy(i).is_some())
            .collect();
        let synced = {
            let devs: Vec<&dyn BlockDevice> = healthy
                .iter()
                .filter_map(|&i| self.healthy(i).map(|d| d.io.as_ref()))
                .collect();
            crate::device::sync_all(&devs)
        };
        for (&i, r) in healthy.iter().zip(synced) {
            if let Err(e) = r {
                self.fail_device(i, &e);
            }
        }
        if !self.dirty {
            return Ok(());
        }
        let checkpoint = self.log.checkpoint_due;
        // A device that fails during a commit must be recorded as failed by a later commit on
        // the others, or a reopen would trust its stale copies: retry (bounded by the count).
        for _ in 0..=self.devs.len() {
            let failed_before = self.failed_count();
            let gen = self.generation + 1;
            let delta = (!self.log.checkpoint_due).then(|| self.changes.delta(&self.meta));
            let mut next = self.log;
            let record = match delta {
                Some(delta) => {
                    let payload = postcard::to_stdvec(&delta)
                        .map_err(|e| PoolError::CorruptMetadata(format!("encoding: {e}")))?;
                    let (record, crc) = log::encode_delta(
                        self.pool,
                        gen,
                        self.log.base,
                        self.log.prev_crc,
                        &payload,
                    );
                    if self.log.end + record.len() as u64 > self.slot_bytes() {
                        None
                    } else {
                        next.end += record.len() as u64;
                        next.prev_crc = crc;
                        Some((record, self.log.slot, self.log.end))
                    }
                }
                None => None,
            };
            let (record, slot, at) = match record {
                Some(r) => {
                    self.stats.deltas += 1;
                    r
                }
                None => {
                    let payload = postcard::to_stdvec(&self.meta)
                        .map_err(|e| PoolError::CorruptMetadata(format!("encoding: {e}")))?;
                    let mut record = format::encode_commit(self.pool, gen, &payload);
                    // Whole blocks, as every metadata write (O_DIRECT takes no less).
                    record.resize(log::align(record.len() as u64) as usize, 0);
                    if record.len() as u64 > self.slot_bytes() {
                        return Err(PoolError::MetadataFull {
                            need: record.len(),
                            have: self.slot_bytes(),
                        });
                    }
                    let crc = u32::from_le_bytes([record[40], record[41], record[42], record[43]]);
                    next = LogState {
                        slot: 1 - self.log.slot,
                        base: gen,
                        end: log::align(record.len() as u64),
                        prev_crc: crc,
                        checkpoint_due: false,
                    };
                    self.stats.checkpoints += 1;
                    (record, next.slot, 0)
                }
            };
            self.stats.bytes += record.len() as u64;
            // The record and its sync on every healthy device, in parallel.
            let healthy: Vec<DevIndex> = (0..self.devs.len() as DevIndex)
                .filter(|&i| self.healthy(i).is_some())
                .collect();
            let results = {
                let targets: Vec<(&dyn BlockDevice, u64)> = healthy
                    .iter()
                    .filter_map(|&i| self.healthy(i))
                    .map(|d| (d.io.as_ref(), d.sb.slot_offset(slot) + at))
                    .collect();
                crate::device::write_copies(&targets, &record, true)
            };
            let mut written = 0;
            for (&i, r) in healthy.iter().zip(results) {
                match r {
                    Ok(()) => written += 1,
                    Err(e) => self.fail_device(i, &e),
                }
            }
            if written == 0 {
                // Where the chain stands on the devices is unknown now: start a fresh one.
                self.log.checkpoint_due = true;
                return Err(PoolError::CommitFailed);
            }
            self.generation = gen;
            self.log = next;
            if self.failed_count() == failed_before {
                break;
            }
        }
        if !self.pending_free.is_empty() {
            // Clusters become reusable: a read planned before this point re-checks.
            self.frees_released += 1;
        }
        for (dev, c) in std::mem::take(&mut self.pending_free) {
            self.free[dev as usize].release(c);
        }
        if checkpoint {
            for e in self.meta.extents.values_mut() {
                e.committed_refs = e.refs;
            }
        } else {
            // Only extents in the delta changed their references since the last commit.
            let ids: Vec<ExtentId> = self.changes.extents.iter().copied().collect();
            for id in ids {
                if let Some(e) = self.meta.extents.get_mut(&id) {
                    e.committed_refs = e.refs;
                }
            }
        }
        self.changes.clear();
        self.dirty = false;
        Ok(())
    }

    /// A commit that writes the whole state: for control operations (volumes, snapshots,
    /// devices), whose changes the delta records do not describe.
    pub fn commit_checkpoint(&mut self) -> Result<()> {
        self.log.checkpoint_due = true;
        self.dirty = true;
        self.commit()
    }

    /// Every device's metadata slot size (the smallest, should they differ).
    fn slot_bytes(&self) -> u64 {
        self.devs
            .iter()
            .flatten()
            .map(|d| d.sb.meta_slot_bytes)
            .min()
            .unwrap_or(0)
    }

    /// Records that extent `id` changed (or was freed) for the next delta.
    pub fn touch_extent(&mut self, id: ExtentId) {
        self.changes.extents.insert(id);
        self.dirty = true;
    }

    /// Records that `volume`'s map entry for `cluster` changed for the next delta.
    pub fn touch_map(&mut self, volume: &str, cluster: u64) {
        match self.changes.maps.get_mut(volume) {
            Some(s) => {
                s.insert(cluster);
            }
            None => {
                self.changes
                    .maps
                    .insert(volume.to_string(), [cluster].into_iter().collect());
            }
        }
        self.dirty = true;
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
                self.remirror.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::FileDevice;
    use crate::format::CLUSTER_SIZE;

    /// The state a reopen replays (checkpoint + deltas) is the live state, after every flush
    /// of a workload of writes, overwrites, copy-on-write and discards: a change the data
    /// path forgot to record would show here.
    #[test]
    fn replayed_log_equals_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut devs: Vec<Box<dyn BlockDevice>> = Vec::new();
        for n in ["a", "b"] {
            let p = dir.path().join(n);
            std::fs::File::create(&p)
                .unwrap()
                .set_len(16 << 20)
                .unwrap();
            devs.push(Box::new(FileDevice::open(&p).unwrap()));
        }
        let pool = Pool::create(devs, CreateOptions::default()).unwrap();
        pool.create_volume("v", 2 << 20, 2).unwrap();
        pool.create_volume("w", 2 << 20, 1).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..200u64 {
            let vol = if next() % 3 == 0 { "w" } else { "v" };
            let off = next() % ((2 << 20) - 8192);
            match step % 10 {
                0..=5 => pool.write(vol, off, &[step as u8 + 1; 5000]).unwrap(),
                6 => pool
                    .discard(vol, off / CLUSTER_SIZE * CLUSTER_SIZE, CLUSTER_SIZE)
                    .unwrap(),
                7 if step % 50 == 7 => pool.snapshot_create("v", &format!("s{step}")).unwrap(),
                _ => {
                    pool.flush().unwrap();
                    let g = pool.lock();
                    for d in g.devs.iter().flatten() {
                        let (tip, meta) = read_chain(g.pool, d, g.log.slot).unwrap();
                        assert_eq!(tip, g.generation);
                        assert_eq!(
                            postcard::to_stdvec(&meta).unwrap(),
                            postcard::to_stdvec(&g.meta).unwrap(),
                            "step {step}: replay differs from the live state"
                        );
                    }
                }
            }
        }
        let st = pool.commit_stats();
        assert!(st.deltas > 10 && st.checkpoints < 10, "{st:?}");
    }
}
