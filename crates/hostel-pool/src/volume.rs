//! Volumes and their snapshots: creation, copy-on-write snapshots, clones and restores. Every
//! change here is committed before it returns (they are operator actions, not guest I/O).

use std::collections::BTreeMap;

use crate::error::{PoolError, Result};
use crate::format::CLUSTER_SIZE;
use crate::meta::{ExtentId, Snapshot, Volume};
use crate::pool::{Inner, Pool};

/// Largest volume: 64 TiB, so cluster indexes and byte offsets never come near overflow.
pub const MAX_VOLUME_BYTES: u64 = 64 << 40;

/// A volume as the pool reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    /// Provisioned size in bytes.
    pub size: u64,
    /// Bytes of clusters the volume maps (shared ones included).
    pub allocated: u64,
    pub copies: u8,
    /// Clusters with fewer healthy copies than `copies`: non-zero means degraded.
    pub degraded_clusters: u64,
    pub snapshots: Vec<String>,
}

/// Names are path- and URL-safe: 1 to 64 of `[a-z0-9._-]`, not starting with a dot or dash.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why| {
        Err(PoolError::BadName {
            name: name.chars().take(80).collect(),
            why,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return bad("only a-z, 0-9, '.', '_' and '-' are allowed");
    }
    if name.starts_with(['.', '-']) {
        return bad("must not start with '.' or '-'");
    }
    Ok(())
}

pub(crate) fn check_size(size: u64) -> Result<()> {
    if size == 0 || size % 512 != 0 {
        return Err(PoolError::BadSize {
            size,
            why: "must be a non-zero multiple of 512",
        });
    }
    if size > MAX_VOLUME_BYTES {
        return Err(PoolError::BadSize {
            size,
            why: "larger than 64 TiB",
        });
    }
    Ok(())
}

impl Inner {
    fn volume(&self, name: &str) -> Result<&Volume> {
        self.meta
            .volumes
            .get(name)
            .ok_or_else(|| PoolError::NoSuchVolume(name.to_string()))
    }

    fn snapshot(&self, volume: &str, snap: &str) -> Result<&Snapshot> {
        self.volume(volume)?
            .snapshots
            .get(snap)
            .ok_or_else(|| PoolError::NoSuchSnapshot {
                volume: volume.to_string(),
                snapshot: snap.to_string(),
            })
    }

    pub(crate) fn incref_map(&mut self, map: &BTreeMap<u64, ExtentId>) {
        for id in map.values() {
            if let Some(e) = self.meta.extents.get_mut(id) {
                e.refs += 1;
            }
        }
        self.dirty = true;
    }

    fn info(&self, name: &str, v: &Volume) -> VolumeInfo {
        let degraded = v
            .map
            .values()
            .filter(|id| {
                self.meta.extents.get(id).is_some_and(|e| {
                    let live = e
                        .copies
                        .iter()
                        .filter(|&&(d, _)| self.healthy(d).is_some())
                        .count();
                    live < v.copies as usize
                })
            })
            .count() as u64;
        VolumeInfo {
            name: name.to_string(),
            size: v.size,
            allocated: v.map.len() as u64 * CLUSTER_SIZE,
            copies: v.copies,
            degraded_clusters: degraded,
            snapshots: v.snapshots.keys().cloned().collect(),
        }
    }
}

impl Pool {
    /// A thin volume of `size` bytes with `copies` copies (2: mirrored on two devices).
    pub fn create_volume(&self, name: &str, size: u64, copies: u8) -> Result<VolumeInfo> {
        check_name(name)?;
        check_size(size)?;
        let mut g = self.lock();
        let devices = g.meta.devices.len();
        if !(1..=2).contains(&copies) || copies as usize > devices {
            return Err(PoolError::BadCopies { copies, devices });
        }
        if g.meta.volumes.contains_key(name) {
            return Err(PoolError::VolumeExists(name.to_string()));
        }
        let v = Volume {
            size,
            copies,
            map: BTreeMap::new(),
            snapshots: BTreeMap::new(),
        };
        let info = g.info(name, &v);
        g.meta.volumes.insert(name.to_string(), v);
        g.commit_checkpoint()?;
        Ok(info)
    }

    /// Deletes a volume and its snapshots; their clusters are free once this returns.
    pub fn delete_volume(&self, name: &str) -> Result<()> {
        let mut g = self.lock();
        let v = g
            .meta
            .volumes
            .remove(name)
            .ok_or_else(|| PoolError::NoSuchVolume(name.to_string()))?;
        g.release_map(&v.map);
        for s in v.snapshots.values() {
            g.release_map(&s.map);
        }
        g.commit_checkpoint()
    }

    pub fn volume(&self, name: &str) -> Result<VolumeInfo> {
        let g = self.lock();
        let v = g.volume(name)?;
        Ok(g.info(name, v))
    }

    /// The volume's provisioned size: cheap (no walk of its map), for the data path.
    pub fn volume_size(&self, name: &str) -> Result<u64> {
        Ok(self.lock().volume(name)?.size)
    }

    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let g = self.lock();
        g.meta
            .volumes
            .iter()
            // A restore in progress (`backup.rs`) is not a volume yet.
            .filter(|(n, _)| !n.starts_with('.'))
            .map(|(n, v)| g.info(n, v))
            .collect()
    }

    /// Grows (never shrinks) a volume's provisioned size.
    pub fn resize_volume(&self, name: &str, size: u64) -> Result<()> {
        check_size(size)?;
        let mut g = self.lock();
        let cur = g.volume(name)?.size;
        if size < cur {
            return Err(PoolError::BadSize {
                size,
                why: "smaller than the volume (shrinking is not supported)",
            });
        }
        if let Some(v) = g.meta.volumes.get_mut(name) {
            v.size = size;
        }
        g.commit_checkpoint()
    }

    /// A read-only point-in-time copy sharing every cluster with the volume; writes after it
    /// copy the cluster first. Flushes the volume's writes into it.
    pub fn snapshot_create(&self, volume: &str, snap: &str) -> Result<()> {
        check_name(snap)?;
        let mut g = self.lock();
        let v = g.volume(volume)?;
        if v.snapshots.contains_key(snap) {
            return Err(PoolError::SnapshotExists {
                volume: volume.to_string(),
                snapshot: snap.to_string(),
            });
        }
        let s = Snapshot {
            id: *uuid::Uuid::new_v4().as_bytes(),
            size: v.size,
            map: v.map.clone(),
        };
        g.incref_map(&s.map);
        if let Some(v) = g.meta.volumes.get_mut(volume) {
            v.snapshots.insert(snap.to_string(), s);
        }
        g.commit_checkpoint()
    }

    pub fn snapshot_delete(&self, volume: &str, snap: &str) -> Result<()> {
        let mut g = self.lock();
        g.snapshot(volume, snap)?;
        let s = g
            .meta
            .volumes
            .get_mut(volume)
            .and_then(|v| v.snapshots.remove(snap));
        if let Some(s) = s {
            g.release_map(&s.map);
        }
        g.commit_checkpoint()
    }

    /// Sets the volume's contents (and size) back to the snapshot's; the snapshot stays.
    pub fn snapshot_restore(&self, volume: &str, snap: &str) -> Result<()> {
        let mut g = self.lock();
        let s = g.snapshot(volume, snap)?.clone();
        g.incref_map(&s.map);
        let old = g.meta.volumes.get_mut(volume).map(|v| {
            v.size = s.size;
            std::mem::replace(&mut v.map, s.map)
        });
        if let Some(old) = old {
            g.release_map(&old);
        }
        g.commit_checkpoint()
    }

    /// A new volume whose contents are the snapshot's, sharing its clusters.
    pub fn clone_volume(&self, volume: &str, snap: &str, new: &str) -> Result<VolumeInfo> {
        check_name(new)?;
        let mut g = self.lock();
        let s = g.snapshot(volume, snap)?.clone();
        let copies = g.volume(volume)?.copies;
        if g.meta.volumes.contains_key(new) {
            return Err(PoolError::VolumeExists(new.to_string()));
        }
        g.incref_map(&s.map);
        let v = Volume {
            size: s.size,
            copies,
            map: s.map,
            snapshots: BTreeMap::new(),
        };
        let info = g.info(new, &v);
        g.meta.volumes.insert(new.to_string(), v);
        g.commit_checkpoint()?;
        Ok(info)
    }
}
