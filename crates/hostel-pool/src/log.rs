//! The metadata log: change records appended after a whole-state checkpoint in the same
//! metadata slot, so a flush writes what changed since the last commit, not the whole pool.
//!
//! ```text
//! slot X: | checkpoint c (header + whole Meta) | pad to 4 KiB | delta c+1 | pad | delta c+2 | ...
//! slot Y: the previous checkpoint and its deltas (left intact until the next checkpoint)
//! ```
//!
//! Every record starts on a 4 KiB boundary, so appending one never rewrites a block that holds
//! an earlier record (a device that tears a partial-block write cannot damage the chain). A
//! delta names the checkpoint it extends (`base`), its generation (previous + 1) and the
//! checksum of the record before it (`prev`), and a checksum of its own: replay follows the
//! chain from the checkpoint and stops at the first record that does not continue it — a torn
//! append, or stale bytes from the slot's previous use (whose generations are all lower).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::format::BLOCK_SIZE;
use crate::meta::{DevMeta, Extent, ExtentId, Meta};

const DELTA_MAGIC: &[u8; 8] = b"HSTLDLTA";
/// Bytes before a delta's payload.
pub const DELTA_HEADER: u64 = 64;

/// A volume's changed map entries: logical cluster → extent now (`None`: unmapped).
pub type MapChanges = Vec<(u64, Option<ExtentId>)>;

/// What changed since the previous commit. The small parts of the state (devices, flags,
/// the extent counter) are carried whole; extents and map entries only where they changed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Delta {
    pub devices: Vec<DevMeta>,
    pub next_extent: ExtentId,
    pub open: bool,
    pub needs_scrub: bool,
    /// Extent id → its state now (`None`: freed).
    pub extents: Vec<(ExtentId, Option<Extent>)>,
    /// Volume → (logical cluster → extent now, `None`: unmapped).
    pub maps: Vec<(String, MapChanges)>,
}

/// The keys the data path changed since the last commit.
#[derive(Debug, Default)]
pub struct Changes {
    pub extents: std::collections::BTreeSet<ExtentId>,
    pub maps: BTreeMap<String, std::collections::BTreeSet<u64>>,
}

impl Changes {
    pub fn clear(&mut self) {
        self.extents.clear();
        self.maps.clear();
    }

    /// The delta these changes make from `meta` (the state now).
    pub fn delta(&self, meta: &Meta) -> Delta {
        Delta {
            devices: meta.devices.clone(),
            next_extent: meta.next_extent,
            open: meta.open,
            needs_scrub: meta.needs_scrub,
            extents: self
                .extents
                .iter()
                .map(|id| (*id, meta.extents.get(id).cloned()))
                .collect(),
            maps: self
                .maps
                .iter()
                .map(|(v, cs)| {
                    let map = meta.volumes.get(v).map(|v| &v.map);
                    let entries = cs
                        .iter()
                        .map(|c| (*c, map.and_then(|m| m.get(c).copied())))
                        .collect();
                    (v.clone(), entries)
                })
                .collect(),
        }
    }
}

impl Delta {
    /// Why the delta cannot apply to `meta` (it drops devices, or names a volume the state
    /// does not have): the chain is then not trusted past this record.
    pub fn check(&self, meta: &Meta) -> Result<(), &'static str> {
        if self.devices.len() < meta.devices.len() {
            return Err("it drops devices");
        }
        if self.maps.iter().any(|(v, _)| !meta.volumes.contains_key(v)) {
            return Err("it names a volume the state does not have");
        }
        Ok(())
    }

    /// Applies a delta `check` accepted.
    pub fn apply(self, meta: &mut Meta) {
        meta.devices = self.devices;
        meta.next_extent = self.next_extent;
        meta.open = self.open;
        meta.needs_scrub = self.needs_scrub;
        for (id, e) in self.extents {
            match e {
                Some(e) => meta.extents.insert(id, e),
                None => meta.extents.remove(&id),
            };
        }
        for (name, entries) in self.maps {
            let Some(v) = meta.volumes.get_mut(&name) else {
                continue;
            };
            for (c, id) in entries {
                match id {
                    Some(id) => v.map.insert(c, id),
                    None => v.map.remove(&c),
                };
            }
        }
    }
}

/// `n` rounded up to a whole block: where the record after one of `n` bytes starts.
pub fn align(n: u64) -> u64 {
    n.div_ceil(BLOCK_SIZE) * BLOCK_SIZE
}

/// A delta record as appended: header + payload, padded to whole blocks.
pub fn encode_delta(
    pool: Uuid,
    generation: u64,
    base: u64,
    prev_crc: u32,
    payload: &[u8],
) -> (Vec<u8>, u32) {
    let mut b = Vec::with_capacity(align(DELTA_HEADER + payload.len() as u64) as usize);
    b.extend_from_slice(DELTA_MAGIC);
    b.extend_from_slice(pool.as_bytes());
    b.extend_from_slice(&generation.to_le_bytes());
    b.extend_from_slice(&base.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    b.extend_from_slice(&prev_crc.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b), payload);
    b.extend_from_slice(&crc.to_le_bytes());
    b.resize(DELTA_HEADER as usize, 0);
    b.extend_from_slice(payload);
    b.resize(align(b.len() as u64) as usize, 0);
    (b, crc)
}

/// A delta header that continues the chain: magic, pool, generation, base and previous
/// checksum as expected. Returns the payload length and the record's checksum.
pub fn decode_delta_header(
    h: &[u8],
    pool: Uuid,
    generation: u64,
    base: u64,
    prev_crc: u32,
) -> Option<(u64, u32)> {
    let h = h.get(0..DELTA_HEADER as usize)?;
    if &h[0..8] != DELTA_MAGIC || Uuid::from_slice(&h[8..24]).ok()? != pool {
        return None;
    }
    let le = |r: std::ops::Range<usize>| -> Option<u64> {
        Some(u64::from_le_bytes(h.get(r)?.try_into().ok()?))
    };
    let le32 = |r: std::ops::Range<usize>| -> Option<u32> {
        Some(u32::from_le_bytes(h.get(r)?.try_into().ok()?))
    };
    if le(24..32)? != generation || le(32..40)? != base || le32(48..52)? != prev_crc {
        return None;
    }
    Some((le(40..48)?, le32(52..56)?))
}

/// Whether `payload` is the one a delta header's checksum covers.
pub fn delta_checksum_ok(h: &[u8], payload: &[u8], crc: u32) -> bool {
    h.len() >= 52 && crc32c::crc32c_append(crc32c::crc32c(&h[0..52]), payload) == crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_continues_only_its_chain() {
        let pool = Uuid::new_v4();
        let (rec, crc) = encode_delta(pool, 8, 5, 77, b"payload");
        assert_eq!(rec.len() as u64 % BLOCK_SIZE, 0);
        let (len, c) = decode_delta_header(&rec, pool, 8, 5, 77).unwrap();
        assert_eq!((len, c), (7, crc));
        let payload = &rec[DELTA_HEADER as usize..DELTA_HEADER as usize + 7];
        assert!(delta_checksum_ok(&rec, payload, crc));
        assert!(!delta_checksum_ok(&rec, b"paylaod", crc));
        // Another generation, checkpoint, predecessor or pool: not this chain's record.
        assert!(decode_delta_header(&rec, pool, 9, 5, 77).is_none());
        assert!(decode_delta_header(&rec, pool, 8, 6, 77).is_none());
        assert!(decode_delta_header(&rec, pool, 8, 5, 78).is_none());
        assert!(decode_delta_header(&rec, Uuid::new_v4(), 8, 5, 77).is_none());
    }
}
