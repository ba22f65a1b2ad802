//! The data path: reads verified block by block against their checksums with fall-back to the
//! other copy (and repair of the bad one), thin allocation on first write, copy-on-write of
//! shared clusters, discard. Offsets and lengths come from guests: every one is checked
//! against the volume's size before anything is touched, and an error fails that request only.

use tracing::warn;

use crate::error::{PoolError, Result};
use crate::format::{BLOCKS_PER_CLUSTER, BLOCK_SIZE, CLUSTER_SIZE};
use crate::meta::{DevIndex, Extent, ExtentId};
use crate::pool::{Inner, Pool};

const CS: usize = CLUSTER_SIZE as usize;
const BS: usize = BLOCK_SIZE as usize;

/// One piece of a request inside a single cluster.
struct Piece {
    cluster: u64,
    within: usize,
    len: usize,
    /// Offset into the request's buffer.
    at: usize,
}

fn pieces(offset: u64, len: u64) -> impl Iterator<Item = Piece> {
    let end = offset + len;
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let within = (pos % CLUSTER_SIZE) as usize;
        let n = (CS - within).min((end - pos) as usize);
        let p = Piece {
            cluster: pos / CLUSTER_SIZE,
            within,
            len: n,
            at: (pos - offset) as usize,
        };
        pos += n as u64;
        Some(p)
    })
}

impl Inner {
    fn check_range(&self, volume: &str, offset: u64, len: u64) -> Result<()> {
        let v = self
            .meta
            .volumes
            .get(volume)
            .ok_or_else(|| PoolError::NoSuchVolume(volume.to_string()))?;
        match offset.checked_add(len) {
            Some(end) if end <= v.size => Ok(()),
            _ => Err(PoolError::OutOfRange {
                offset,
                len,
                size: v.size,
            }),
        }
    }

    fn lookup(&self, volume: &str, cluster: u64) -> Option<ExtentId> {
        self.meta.volumes.get(volume)?.map.get(&cluster).copied()
    }

    /// Blocks `b0..b1` (in the cluster) of extent `id`, each verified against its checksum.
    /// A block no copy holds intact is taken from the first readable copy only while a crash
    /// is unsettled (it is then a write torn after the last flush, and either copy is a valid
    /// result); otherwise it is an error. Bad copies are rewritten from the good one.
    fn read_blocks(
        &mut self,
        volume: &str,
        cluster: u64,
        id: ExtentId,
        b0: usize,
        b1: usize,
    ) -> Result<Vec<u8>> {
        let ext = self.meta.extents.get(&id).cloned().ok_or_else(|| {
            PoolError::CorruptMetadata(format!("volume {volume:?} maps to missing extent {id}"))
        })?;
        let span = (b1 - b0) * BS;
        let mut out = vec![0u8; span];
        // The first healthy copy in one read; per block fall-back only where it is bad.
        let mut good = vec![false; b1 - b0];
        let mut first_ok = None;
        for (k, &(dev, c)) in ext.copies.iter().enumerate() {
            let Some(d) = self.healthy(dev) else { continue };
            let off = d.sb.cluster_offset(c) + (b0 * BS) as u64;
            match d.io.read_at(&mut out, off) {
                Ok(()) => {
                    first_ok = Some(k);
                    break;
                }
                Err(e) => self.fail_device(dev, &e),
            }
        }
        if let Some(k) = first_ok {
            for (j, g) in good.iter_mut().enumerate() {
                *g = crc32c::crc32c(&out[j * BS..(j + 1) * BS]) == ext.crc[b0 + j];
            }
            let mut new_crc = ext.crc;
            let mut changed = false;
            for j in 0..good.len() {
                let b = b0 + j;
                let mut block = [0u8; BS];
                let mut source = if good[j] { Some(k) } else { None };
                if source.is_none() {
                    for (k2, &(dev, c)) in ext.copies.iter().enumerate() {
                        if k2 == k {
                            continue;
                        }
                        let Some(d) = self.healthy(dev) else { continue };
                        match d
                            .io
                            .read_at(&mut block, d.sb.cluster_offset(c) + (b * BS) as u64)
                        {
                            Ok(()) if crc32c::crc32c(&block) == ext.crc[b] => {
                                out[j * BS..(j + 1) * BS].copy_from_slice(&block);
                                source = Some(k2);
                                break;
                            }
                            Ok(()) => {}
                            Err(e) => self.fail_device(dev, &e),
                        }
                    }
                }
                if source.is_none() {
                    if !self.meta.needs_scrub {
                        return Err(PoolError::Unreadable {
                            volume: volume.to_string(),
                            cluster,
                        });
                    }
                    new_crc[b] = crc32c::crc32c(&out[j * BS..(j + 1) * BS]);
                    changed = true;
                    source = Some(k);
                }
                // Rewrite every healthy copy that does not hold the chosen block.
                if let Some(src) = source {
                    let data = &out[j * BS..(j + 1) * BS];
                    for (k2, &(dev, c)) in ext.copies.iter().enumerate() {
                        if k2 == src || (k2 == k && good[j]) {
                            continue;
                        }
                        let Some(d) = self.healthy(dev) else { continue };
                        let off = d.sb.cluster_offset(c) + (b * BS) as u64;
                        let mut cur = [0u8; BS];
                        let same = d.io.read_at(&mut cur, off).is_ok() && cur[..] == *data;
                        if !same {
                            warn!(volume, cluster, block = b, "repairing a bad copy");
                            if let Err(e) = d.io.write_at(data, off) {
                                self.fail_device(dev, &e);
                            }
                        }
                    }
                }
            }
            if changed {
                if let Some(e) = self.meta.extents.get_mut(&id) {
                    e.crc = new_crc;
                }
                self.touch_extent(id);
            }
            return Ok(out);
        }
        Err(PoolError::Unreadable {
            volume: volume.to_string(),
            cluster,
        })
    }

    /// A whole extent, verified (and repaired) as a read is.
    pub(crate) fn read_extent(
        &mut self,
        volume: &str,
        cluster: u64,
        id: ExtentId,
    ) -> Result<Vec<u8>> {
        self.read_blocks(volume, cluster, id, 0, BLOCKS_PER_CLUSTER)
    }

    /// Clusters on `copies` distinct healthy devices with the most free space (fewer when
    /// fewer devices are healthy: a degraded pool keeps taking writes).
    fn allocate(&mut self, copies: u8) -> Result<Vec<(DevIndex, u64)>> {
        let healthy: Vec<DevIndex> = (0..self.devs.len() as DevIndex)
            .filter(|&i| self.healthy(i).is_some())
            .collect();
        let wanted = (copies as usize).min(healthy.len()).max(1);
        let mut with_space: Vec<DevIndex> = healthy
            .into_iter()
            .filter(|&i| self.free[i as usize].free() > 0)
            .collect();
        if with_space.len() < wanted {
            return Err(PoolError::OutOfSpace { wanted });
        }
        with_space.sort_by_key(|&i| std::cmp::Reverse(self.free[i as usize].free()));
        let mut out = Vec::with_capacity(wanted);
        for &i in &with_space[..wanted] {
            // `free() > 0` was just checked, under the same lock.
            if let Some(c) = self.free[i as usize].alloc() {
                out.push((i, c));
            }
        }
        if out.len() < wanted {
            for (i, c) in out {
                self.free[i as usize].release(c);
            }
            return Err(PoolError::OutOfSpace { wanted });
        }
        Ok(out)
    }

    /// Writes `data` at `within` on every healthy copy (in parallel, one io_uring batch); a
    /// copy that fails takes its device out.
    fn write_copies(
        &mut self,
        volume: &str,
        copies: &[(DevIndex, u64)],
        within: usize,
        data: &[u8],
    ) -> Result<()> {
        let live: Vec<(DevIndex, u64)> = copies
            .iter()
            .copied()
            .filter(|&(dev, _)| self.healthy(dev).is_some())
            .collect();
        let results = {
            let targets: Vec<(&dyn crate::device::BlockDevice, u64)> = live
                .iter()
                .filter_map(|&(dev, c)| {
                    self.healthy(dev)
                        .map(|d| (d.io.as_ref(), d.sb.cluster_offset(c) + within as u64))
                })
                .collect();
            crate::device::write_copies(&targets, data, false)
        };
        let mut ok = 0;
        for (&(dev, _), r) in live.iter().zip(results) {
            match r {
                Ok(()) => ok += 1,
                Err(e) => self.fail_device(dev, &e),
            }
        }
        if ok == 0 {
            return Err(PoolError::WriteFailed(volume.to_string()));
        }
        Ok(())
    }

    fn decref(&mut self, id: ExtentId) {
        let Some(e) = self.meta.extents.get_mut(&id) else {
            return;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            if let Some(e) = self.meta.extents.remove(&id) {
                self.pending_free.extend(e.copies);
            }
        }
        self.touch_extent(id);
    }

    pub(crate) fn release_map(&mut self, map: &std::collections::BTreeMap<u64, ExtentId>) {
        for &id in map.values() {
            self.decref(id);
        }
    }

    /// A whole new cluster holding `cluster_data`, mapped at `cluster` of `volume`.
    fn write_new_cluster(
        &mut self,
        volume: &str,
        cluster: u64,
        cluster_data: &[u8],
    ) -> Result<ExtentId> {
        let copies = self.meta.volumes.get(volume).map_or(1, |v| v.copies);
        let placed = self.allocate(copies)?;
        if let Err(e) = self.write_copies(volume, &placed, 0, cluster_data) {
            self.pending_free.extend(placed);
            return Err(e);
        }
        let mut crc = [0u32; BLOCKS_PER_CLUSTER];
        for (b, c) in crc.iter_mut().enumerate() {
            *c = crc32c::crc32c(&cluster_data[b * BS..(b + 1) * BS]);
        }
        let id = self.meta.next_extent;
        self.meta.next_extent += 1;
        self.meta.extents.insert(
            id,
            Extent {
                want: copies,
                copies: placed,
                refs: 1,
                crc,
                committed_refs: 0,
            },
        );
        self.touch_extent(id);
        let old = self
            .meta
            .volumes
            .get_mut(volume)
            .and_then(|v| v.map.insert(cluster, id));
        self.touch_map(volume, cluster);
        if let Some(old) = old {
            self.decref(old);
        }
        Ok(id)
    }

    fn write_piece(&mut self, volume: &str, p: &Piece, data: &[u8]) -> Result<()> {
        let Some(id) = self.lookup(volume, p.cluster) else {
            let mut full = vec![0u8; CS];
            full[p.within..p.within + p.len].copy_from_slice(data);
            return self.write_new_cluster(volume, p.cluster, &full).map(|_| ());
        };
        let (in_place, copies) = match self.meta.extents.get(&id) {
            Some(e) => (e.refs == 1 && e.committed_refs <= 1, e.copies.clone()),
            None => {
                return Err(PoolError::CorruptMetadata(format!(
                    "volume {volume:?} maps to missing extent {id}"
                )))
            }
        };
        if !in_place {
            let mut full = self.read_blocks(volume, p.cluster, id, 0, BLOCKS_PER_CLUSTER)?;
            full[p.within..p.within + p.len].copy_from_slice(data);
            return self.write_new_cluster(volume, p.cluster, &full).map(|_| ());
        }
        let b0 = p.within / BS;
        let b1 = (p.within + p.len).div_ceil(BS);
        let aligned = p.within % BS == 0 && p.len % BS == 0;
        let span = if aligned {
            data.to_vec()
        } else {
            let mut s = self.read_blocks(volume, p.cluster, id, b0, b1)?;
            let at = p.within - b0 * BS;
            s[at..at + p.len].copy_from_slice(data);
            s
        };
        self.write_copies(volume, &copies, b0 * BS, &span)?;
        if let Some(e) = self.meta.extents.get_mut(&id) {
            for b in b0..b1 {
                let j = b - b0;
                e.crc[b] = crc32c::crc32c(&span[j * BS..(j + 1) * BS]);
            }
        }
        self.touch_extent(id);
        Ok(())
    }

    /// Unmaps whole clusters; zeroes the partial ones at the edges.
    fn discard_range(&mut self, volume: &str, offset: u64, len: u64) -> Result<()> {
        for p in pieces(offset, len) {
            if p.len == CS {
                let old = self
                    .meta
                    .volumes
                    .get_mut(volume)
                    .and_then(|v| v.map.remove(&p.cluster));
                if let Some(old) = old {
                    self.touch_map(volume, p.cluster);
                    self.decref(old);
                }
            } else if self.lookup(volume, p.cluster).is_some() {
                self.write_piece(volume, &p, &vec![0u8; p.len])?;
            }
        }
        Ok(())
    }
}

/// What `Pool::scrub` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    pub extents: u64,
    /// Extents some block of which could not be read from any copy.
    pub unreadable: u64,
    /// Extents given a new copy because one was on a failed device.
    pub remirrored: u64,
}

impl Pool {
    /// Reads `buf.len()` bytes at `offset`; unallocated clusters read as zeros.
    ///
    /// The device I/O runs without the pool lock: where each piece lives (extent, first
    /// healthy copy, the blocks' checksums) is looked up under the lock, the blocks are read
    /// and checked against those checksums without it, and the lock is taken again only to
    /// confirm that no freed cluster became reusable meanwhile (then the read could have hit
    /// a cluster another volume has since written: everything is read again under the lock).
    /// A block that does not match (a bad copy, a write racing the read, a failed device)
    /// is read again the careful way, under the lock, with fall-back and repair.
    pub fn read(&self, volume: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        struct Planned {
            piece: Piece,
            b0: usize,
            /// First healthy copy: its device and the span's offset there.
            at: Option<(std::sync::Arc<dyn crate::device::BlockDevice>, u64)>,
            crc: Vec<u32>,
        }
        let (plan, epoch) = {
            let g = self.lock();
            g.check_range(volume, offset, buf.len() as u64)?;
            let mut plan = Vec::new();
            for p in pieces(offset, buf.len() as u64) {
                match g.lookup(volume, p.cluster) {
                    None => buf[p.at..p.at + p.len].fill(0),
                    Some(id) => {
                        let b0 = p.within / BS;
                        let b1 = (p.within + p.len).div_ceil(BS);
                        let e = g.meta.extents.get(&id);
                        let at = e.and_then(|e| {
                            e.copies.iter().find_map(|&(dev, c)| {
                                g.healthy(dev).map(|d| {
                                    (
                                        std::sync::Arc::clone(&d.io),
                                        d.sb.cluster_offset(c) + (b0 * BS) as u64,
                                    )
                                })
                            })
                        });
                        let crc = e.map_or_else(Vec::new, |e| e.crc[b0..b1].to_vec());
                        plan.push(Planned {
                            piece: p,
                            b0,
                            at,
                            crc,
                        });
                    }
                }
            }
            (plan, g.frees_released)
        };
        let mut careful = Vec::new();
        let mut span = Vec::new();
        for (k, pl) in plan.iter().enumerate() {
            let Some((dev, off)) = &pl.at else {
                careful.push(k);
                continue;
            };
            span.resize(pl.crc.len() * BS, 0);
            let ok = dev.read_at(&mut span, *off).is_ok()
                && span
                    .chunks(BS)
                    .zip(&pl.crc)
                    .all(|(b, c)| crc32c::crc32c(b) == *c);
            if ok {
                let at = pl.piece.within - pl.b0 * BS;
                buf[pl.piece.at..pl.piece.at + pl.piece.len]
                    .copy_from_slice(&span[at..at + pl.piece.len]);
            } else {
                careful.push(k);
            }
        }
        let mut g = self.lock();
        if g.frees_released != epoch {
            careful = (0..plan.len()).collect();
        }
        for k in careful {
            let p = &plan[k].piece;
            // Looked up again: the map may have changed since the plan.
            g.check_range(volume, offset, buf.len() as u64)?;
            let dst = &mut buf[p.at..p.at + p.len];
            match g.lookup(volume, p.cluster) {
                None => dst.fill(0),
                Some(id) => {
                    let b0 = p.within / BS;
                    let b1 = (p.within + p.len).div_ceil(BS);
                    let s = g.read_blocks(volume, p.cluster, id, b0, b1)?;
                    let at = p.within - b0 * BS;
                    dst.copy_from_slice(&s[at..at + p.len]);
                }
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset`: on every copy before it returns, durable at the next flush.
    pub fn write(&self, volume: &str, offset: u64, data: &[u8]) -> Result<()> {
        let mut g = self.lock();
        g.check_range(volume, offset, data.len() as u64)?;
        for p in pieces(offset, data.len() as u64) {
            g.write_piece(volume, &p, &data[p.at..p.at + p.len])?;
        }
        Ok(())
    }

    /// Gives whole clusters in the range back to the pool; partial ones are zeroed.
    pub fn discard(&self, volume: &str, offset: u64, len: u64) -> Result<()> {
        let mut g = self.lock();
        g.check_range(volume, offset, len)?;
        g.discard_range(volume, offset, len)
    }

    /// Zeroes the range; whole clusters are unmapped (they read as zeros) rather than written.
    pub fn write_zeroes(&self, volume: &str, offset: u64, len: u64) -> Result<()> {
        self.discard(volume, offset, len)
    }

    /// Verifies every block of every extent against its checksum, repairs bad copies from good
    /// ones, gives extents with a copy on a failed device a new copy on a healthy one, and
    /// settles the blocks a crash may have torn. Commits at the end.
    pub fn scrub(&self) -> Result<ScrubReport> {
        let mut g = self.lock();
        let mut r = ScrubReport::default();
        let ids: Vec<ExtentId> = g.meta.extents.keys().copied().collect();
        for id in ids {
            r.extents += 1;
            match g.read_blocks("(scrub)", id, id, 0, BLOCKS_PER_CLUSTER) {
                Ok(full) => {
                    if g.remirror(id, &full) {
                        r.remirrored += 1;
                    }
                }
                Err(e) => {
                    warn!(extent = id, error = %e, "scrub: unreadable");
                    r.unreadable += 1;
                }
            }
        }
        if r.unreadable == 0 {
            g.meta.needs_scrub = false;
        }
        g.commit_checkpoint()?;
        Ok(r)
    }
}

impl Inner {
    /// Replaces copies on failed devices with new ones on healthy devices holding none yet.
    pub(crate) fn remirror(&mut self, id: ExtentId, full: &[u8]) -> bool {
        let Some(e) = self.meta.extents.get(&id) else {
            return false;
        };
        let want = e.want as usize;
        let live: Vec<(DevIndex, u64)> = e
            .copies
            .iter()
            .copied()
            .filter(|&(d, _)| self.healthy(d).is_some())
            .collect();
        if live.len() >= want {
            return false;
        }
        let mut new = live.clone();
        for _ in 0..(want - live.len()) {
            let cand = (0..self.devs.len() as DevIndex)
                .filter(|&i| self.healthy(i).is_some())
                .filter(|&i| !new.iter().any(|&(d, _)| d == i))
                .max_by_key(|&i| self.free[i as usize].free());
            let Some(dev) = cand else { break };
            let Some(c) = self.free[dev as usize].alloc() else {
                break;
            };
            let ok = self
                .healthy(dev)
                .map(|d| d.io.write_at(full, d.sb.cluster_offset(c)));
            match ok {
                Some(Ok(())) => new.push((dev, c)),
                Some(Err(err)) => {
                    self.fail_device(dev, &err);
                    self.pending_free.push((dev, c));
                }
                None => self.free[dev as usize].release(c),
            }
        }
        if new.len() > live.len() {
            // The copies on the failed device are dropped: nothing is read from or allocated
            // on a failed device again.
            if let Some(e) = self.meta.extents.get_mut(&id) {
                e.copies = new;
            }
            self.touch_extent(id);
            return true;
        }
        false
    }
}
