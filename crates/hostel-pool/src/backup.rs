//! Backups: a snapshot exported as a file (full), or the clusters that changed between two
//! snapshots of a volume (incremental); either restored into a new volume.
//!
//! ```text
//! header   "HSTLBKUP" version kind size snapshot-id base-id name-len name   CRC-32C
//! records  cluster(u64) kind(u8: 1 data, 0 unmapped) [64 KiB data] CRC-32C   (ascending)
//! trailer  "HSTLBEND" records(u64) CRC-32C of everything before the trailer
//! ```
//!
//! Hand-written rather than a tar or qcow2 writer: the format must carry the snapshot ids
//! an incremental chain is checked against, and verify every cluster before anything is
//! trusted; it is a page of code. Only mapped clusters are stored (a thin volume's backup is
//! as big as what was written). A restore writes into a hidden volume (a name users cannot
//! give) and renames it when the trailer has checked out: a corrupted or truncated backup,
//! or a crash mid-restore, leaves no volume behind (`Pool::open` deletes hidden ones).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use uuid::Uuid;

use crate::error::{PoolError, Result};
use crate::format::CLUSTER_SIZE;
use crate::meta::{ExtentId, Snapshot, Volume};
use crate::pool::{Inner, Pool};
use crate::volume::check_name;

const MAGIC: &[u8; 8] = b"HSTLBKUP";
const END: &[u8; 8] = b"HSTLBEND";
const VERSION: u32 = 1;
const CS: usize = CLUSTER_SIZE as usize;

/// What a backup holds, as its header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// The snapshot it captures.
    pub snapshot: String,
    pub snapshot_id: Uuid,
    /// For an incremental backup: the snapshot it extends.
    pub base_id: Option<Uuid>,
    pub size: u64,
    /// Cluster records in it.
    pub records: u64,
}

/// A writer that checksums everything through it.
struct Summed<W> {
    w: W,
    crc: u32,
}

impl<W: Write> Summed<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.w.write_all(b).map_err(PoolError::BackupIo)
    }
}

/// A reader that checksums everything through it and names what a short read cut.
struct Checked<R> {
    r: R,
    crc: u32,
}

impl<R: Read> Checked<R> {
    fn take(&mut self, b: &mut [u8], what: &str) -> Result<()> {
        self.r.read_exact(b).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                PoolError::BadBackup(format!("truncated in the {what}"))
            }
            _ => PoolError::BackupIo(e),
        })?;
        self.crc = crc32c::crc32c_append(self.crc, b);
        Ok(())
    }
}

fn bad(why: String) -> PoolError {
    PoolError::BadBackup(why)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

impl Inner {
    fn snapshot_by_name(&self, volume: &str, snap: &str) -> Result<&Snapshot> {
        self.meta
            .volumes
            .get(volume)
            .ok_or_else(|| PoolError::NoSuchVolume(volume.to_string()))?
            .snapshots
            .get(snap)
            .ok_or_else(|| PoolError::NoSuchSnapshot {
                volume: volume.to_string(),
                snapshot: snap.to_string(),
            })
    }
}

impl Pool {
    /// Writes snapshot `snap` of `volume` to `out`: every mapped cluster (full), or with
    /// `base` only the clusters that differ from snapshot `base` of the same volume
    /// (incremental). The pool lock is taken per cluster, so guests keep running.
    pub fn export_backup(
        &self,
        volume: &str,
        snap: &str,
        base: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<BackupInfo> {
        let (target, base_snap) = {
            let g = self.lock();
            let t = g.snapshot_by_name(volume, snap)?.clone();
            let b = match base {
                Some(b) => Some(g.snapshot_by_name(volume, b)?.clone()),
                None => None,
            };
            (t, b)
        };
        // Shared extents are the same data: a cluster changed exactly where the ids differ.
        let empty = BTreeMap::new();
        let base_map = base_snap.as_ref().map_or(&empty, |b| &b.map);
        let mut records: Vec<(u64, Option<ExtentId>)> = target
            .map
            .iter()
            .filter(|(c, id)| base_map.get(c) != Some(id))
            .map(|(c, id)| (*c, Some(*id)))
            .collect();
        records.extend(
            base_map
                .keys()
                .filter(|c| !target.map.contains_key(c))
                .map(|c| (*c, None)),
        );
        records.sort_unstable_by_key(|r| r.0);

        let mut w = Summed { w: out, crc: 0 };
        let mut h = Vec::new();
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.push(u8::from(base_snap.is_some()));
        h.extend_from_slice(&target.size.to_le_bytes());
        h.extend_from_slice(&target.id);
        h.extend_from_slice(&base_snap.as_ref().map_or([0; 16], |b| b.id));
        h.extend_from_slice(&(snap.len() as u32).to_le_bytes());
        h.extend_from_slice(snap.as_bytes());
        h.extend_from_slice(&crc32c::crc32c(&h).to_le_bytes());
        w.put(&h)?;
        let mut buf = vec![0u8; CS];
        for &(c, id) in &records {
            let mut r = c.to_le_bytes().to_vec();
            match id {
                Some(id) => {
                    r.push(1);
                    let data = {
                        let mut g = self.lock();
                        // The snapshot must still be the one being exported, or its extents
                        // may have been freed and reused.
                        let same = g
                            .snapshot_by_name(volume, snap)
                            .is_ok_and(|s| s.id == target.id);
                        if !same {
                            return Err(PoolError::NoSuchSnapshot {
                                volume: volume.to_string(),
                                snapshot: snap.to_string(),
                            });
                        }
                        g.read_extent(volume, c, id)?
                    };
                    buf.copy_from_slice(&data);
                    r.extend_from_slice(&buf);
                }
                None => r.push(0),
            }
            r.extend_from_slice(&crc32c::crc32c(&r).to_le_bytes());
            w.put(&r)?;
        }
        let mut t = END.to_vec();
        t.extend_from_slice(&(records.len() as u64).to_le_bytes());
        let crc = w.crc;
        t.extend_from_slice(&crc.to_le_bytes());
        w.w.write_all(&t).map_err(PoolError::BackupIo)?;
        w.w.flush().map_err(PoolError::BackupIo)?;
        Ok(BackupInfo {
            snapshot: snap.to_string(),
            snapshot_id: Uuid::from_bytes(target.id),
            base_id: base_snap.map(|b| Uuid::from_bytes(b.id)),
            size: target.size,
            records: records.len() as u64,
        })
    }

    /// Restores a backup into the new volume `name` with `copies` copies: a full backup on
    /// its own, an incremental one on top of the snapshot it extends (found in any volume of
    /// this pool by its id). The volume gets the backed-up snapshot (same name and id), so
    /// later incrementals restore on top of it. Nothing is left behind when the backup is
    /// corrupted or truncated: every cluster is checked before the volume appears.
    pub fn restore_backup(
        &self,
        input: &mut dyn Read,
        name: &str,
        copies: u8,
    ) -> Result<BackupInfo> {
        check_name(name)?;
        let mut r = Checked { r: input, crc: 0 };
        let mut h = vec![0u8; 8 + 4 + 1 + 8 + 16 + 16 + 4];
        r.take(&mut h, "header")?;
        if &h[0..8] != MAGIC {
            return Err(bad("not a hostel backup (no HSTLBKUP magic)".into()));
        }
        if u32_at(&h, 8) != VERSION {
            return Err(bad(format!(
                "version {} (this pool reads {VERSION})",
                u32_at(&h, 8)
            )));
        }
        let incremental = match h[12] {
            0 => false,
            1 => true,
            k => return Err(bad(format!("kind {k} in the header"))),
        };
        let size = u64_at(&h, 13);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[21..37]);
        let mut base = [0u8; 16];
        base.copy_from_slice(&h[37..53]);
        let nlen = u32_at(&h, 53) as usize;
        if nlen > 64 {
            return Err(bad(format!("snapshot name of {nlen} bytes in the header")));
        }
        let mut nb = vec![0u8; nlen];
        r.take(&mut nb, "header")?;
        let want = r.crc;
        let mut c = [0u8; 4];
        r.take(&mut c, "header")?;
        if u32::from_le_bytes(c) != want {
            return Err(bad("header checksum does not match".into()));
        }
        let snap = String::from_utf8(nb).map_err(|_| bad("snapshot name is not UTF-8".into()))?;
        check_name(&snap)?;
        crate::volume::check_size(size)?;

        let hidden = format!(".restore-{name}");
        {
            let mut g = self.lock();
            if g.meta.volumes.contains_key(name) {
                return Err(PoolError::VolumeExists(name.to_string()));
            }
            let devices = g.meta.devices.len();
            if !(1..=2).contains(&copies) || copies as usize > devices {
                return Err(PoolError::BadCopies { copies, devices });
            }
            // A restore of the same name that failed half-way in this process.
            if let Some(old) = g.meta.volumes.remove(&hidden) {
                g.release_map(&old.map);
            }
            let map = if incremental {
                let found = g
                    .meta
                    .volumes
                    .values()
                    .flat_map(|v| v.snapshots.values())
                    .find(|s| s.id == base)
                    .cloned()
                    .ok_or(PoolError::NoBaseSnapshot {
                        id: Uuid::from_bytes(base),
                    })?;
                g.incref_map(&found.map);
                found.map
            } else {
                BTreeMap::new()
            };
            let v = Volume {
                size,
                copies,
                map,
                snapshots: BTreeMap::new(),
            };
            g.meta.volumes.insert(hidden.clone(), v);
            g.commit_checkpoint()?;
        }
        let result = self.restore_records(&mut r, &hidden, size);
        let records = match result {
            Ok(n) => n,
            Err(e) => {
                let _ = self.drop_hidden(&hidden);
                return Err(e);
            }
        };
        let mut g = self.lock();
        if g.meta.volumes.contains_key(name) {
            drop(g);
            let _ = self.drop_hidden(&hidden);
            return Err(PoolError::VolumeExists(name.to_string()));
        }
        let Some(mut v) = g.meta.volumes.remove(&hidden) else {
            return Err(PoolError::NoSuchVolume(hidden));
        };
        let s = Snapshot {
            id,
            size,
            map: v.map.clone(),
        };
        g.incref_map(&s.map);
        v.snapshots.insert(snap.clone(), s);
        g.meta.volumes.insert(name.to_string(), v);
        g.commit_checkpoint()?;
        Ok(BackupInfo {
            snapshot: snap,
            snapshot_id: Uuid::from_bytes(id),
            base_id: incremental.then(|| Uuid::from_bytes(base)),
            size,
            records,
        })
    }

    fn restore_records(&self, r: &mut Checked<&mut dyn Read>, vol: &str, size: u64) -> Result<u64> {
        let clusters = size.div_ceil(CLUSTER_SIZE);
        let mut n = 0u64;
        let mut last: Option<u64> = None;
        let mut data = vec![0u8; CS];
        loop {
            // The trailer's checksum covers everything before the trailer.
            let covered = r.crc;
            let mut head = [0u8; 8];
            r.take(&mut head, "records")?;
            if &head == END {
                let mut t = [0u8; 12];
                r.take(&mut t, "trailer")?;
                if u64_at(&t, 0) != n {
                    return Err(bad(format!(
                        "trailer counts {} records, {n} read",
                        u64_at(&t, 0)
                    )));
                }
                if u32_at(&t, 8) != covered {
                    return Err(bad("trailer checksum does not match".into()));
                }
                return Ok(n);
            }
            let c = u64::from_le_bytes(head);
            if c >= clusters || last.is_some_and(|l| c <= l) {
                return Err(bad(format!(
                    "record {n}: cluster {c} out of order or past the volume"
                )));
            }
            let mut kind = [0u8; 1];
            r.take(&mut kind, "records")?;
            let mut rc = crc32c::crc32c_append(crc32c::crc32c(&head), &kind);
            match kind[0] {
                1 => {
                    r.take(&mut data, "records")?;
                    rc = crc32c::crc32c_append(rc, &data);
                }
                0 => {}
                k => return Err(bad(format!("record {n} (cluster {c}): kind {k}"))),
            }
            let mut cb = [0u8; 4];
            r.take(&mut cb, "records")?;
            if u32::from_le_bytes(cb) != rc {
                return Err(bad(format!(
                    "record {n} (cluster {c}): checksum does not match"
                )));
            }
            let off = c * CLUSTER_SIZE;
            let len = CLUSTER_SIZE.min(size - off);
            if kind[0] == 1 {
                self.write(vol, off, &data[..len as usize])?;
            } else {
                self.discard(vol, off, len)?;
            }
            last = Some(c);
            n += 1;
        }
    }

    fn drop_hidden(&self, hidden: &str) -> Result<()> {
        let mut g = self.lock();
        if let Some(v) = g.meta.volumes.remove(hidden) {
            g.release_map(&v.map);
        }
        g.commit_checkpoint()
    }
}
