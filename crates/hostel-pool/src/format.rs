//! The on-disk format: a superblock at the start of every device, then two metadata slots,
//! then the data clusters.
//!
//! ```text
//! 0           4 KiB                4 KiB + slot      4 KiB + 2·slot (rounded up to a cluster)
//! | superblock | metadata slot A   | metadata slot B  | data cluster 0 | cluster 1 | ...
//! ```
//!
//! Every multi-byte field is little-endian; every structure carries a CRC-32C, so a torn or
//! stale write is recognised rather than trusted.

use uuid::Uuid;

pub const SUPERBLOCK_BYTES: u64 = 4096;
pub const CLUSTER_SIZE: u64 = 64 * 1024;
/// Checksum granularity: the guest's usual write size, so a 4 KiB write neither reads nor
/// rewrites the rest of its cluster.
pub const BLOCK_SIZE: u64 = 4096;
pub const BLOCKS_PER_CLUSTER: usize = (CLUSTER_SIZE / BLOCK_SIZE) as usize;
const SB_MAGIC: &[u8; 8] = b"HSTLPOOL";
const META_MAGIC: &[u8; 8] = b"HSTLMETA";
const VERSION: u32 = 1;
/// Bytes before a metadata slot's payload.
pub const META_HEADER: u64 = 48;

/// What a device says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub pool: Uuid,
    pub device: Uuid,
    /// The pool's metadata generation when this device was formatted.
    pub generation: u64,
    pub meta_slot_bytes: u64,
    pub data_offset: u64,
    pub data_clusters: u64,
}

impl Superblock {
    /// Lays out a device of `len` bytes with metadata slots of `slot` bytes; `None` when the
    /// device cannot hold the slots and at least one cluster.
    pub fn layout(pool: Uuid, device: Uuid, generation: u64, len: u64, slot: u64) -> Option<Self> {
        let meta_end = SUPERBLOCK_BYTES.checked_add(slot.checked_mul(2)?)?;
        let data_offset = meta_end.div_ceil(CLUSTER_SIZE).checked_mul(CLUSTER_SIZE)?;
        let data_clusters = len.checked_sub(data_offset)? / CLUSTER_SIZE;
        (data_clusters > 0 && slot > META_HEADER).then_some(Superblock {
            pool,
            device,
            generation,
            meta_slot_bytes: slot,
            data_offset,
            data_clusters,
        })
    }

    pub fn slot_offset(&self, slot: u64) -> u64 {
        SUPERBLOCK_BYTES + (slot % 2) * self.meta_slot_bytes
    }

    pub fn cluster_offset(&self, cluster: u64) -> u64 {
        self.data_offset + cluster * CLUSTER_SIZE
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_BYTES as usize];
        b[0..8].copy_from_slice(SB_MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..28].copy_from_slice(self.pool.as_bytes());
        b[28..44].copy_from_slice(self.device.as_bytes());
        b[44..52].copy_from_slice(&self.generation.to_le_bytes());
        b[52..56].copy_from_slice(&(CLUSTER_SIZE as u32).to_le_bytes());
        b[56..64].copy_from_slice(&self.meta_slot_bytes.to_le_bytes());
        b[64..72].copy_from_slice(&self.data_offset.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_clusters.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..80]);
        b[80..84].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The superblock in `b`, if it is one this version wrote and its checksum holds.
    pub fn decode(b: &[u8]) -> Option<Superblock> {
        let b = b.get(0..84)?;
        if &b[0..8] != SB_MAGIC || u32le(&b[8..12])? != VERSION {
            return None;
        }
        if crc32c::crc32c(&b[0..80]) != u32le(&b[80..84])? {
            return None;
        }
        if u32le(&b[52..56])? as u64 != CLUSTER_SIZE {
            return None;
        }
        let sb = Superblock {
            pool: Uuid::from_slice(&b[12..28]).ok()?,
            device: Uuid::from_slice(&b[28..44]).ok()?,
            generation: u64le(&b[44..52])?,
            meta_slot_bytes: u64le(&b[56..64])?,
            data_offset: u64le(&b[64..72])?,
            data_clusters: u64le(&b[72..80])?,
        };
        // The layout must be the one `layout` derives, so a forged superblock cannot point
        // data clusters into the metadata slots.
        let min = SUPERBLOCK_BYTES.checked_add(sb.meta_slot_bytes.checked_mul(2)?)?;
        (sb.data_offset >= min && sb.data_offset % CLUSTER_SIZE == 0).then_some(sb)
    }
}

/// A metadata commit: header + payload, as written into a slot.
pub fn encode_commit(pool: Uuid, generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(META_HEADER as usize + payload.len());
    b.extend_from_slice(META_MAGIC);
    b.extend_from_slice(pool.as_bytes());
    b.extend_from_slice(&generation.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut crc = crc32c::crc32c(&b);
    crc = crc32c::crc32c_append(crc, payload);
    b.extend_from_slice(&crc.to_le_bytes());
    b.resize(META_HEADER as usize, 0);
    b.extend_from_slice(payload);
    b
}

/// The header of a slot: its generation and payload length, if the magic and pool match.
pub fn decode_commit_header(pool: Uuid, h: &[u8]) -> Option<(u64, u64, u32)> {
    let h = h.get(0..44)?;
    if &h[0..8] != META_MAGIC || Uuid::from_slice(&h[8..24]).ok()? != pool {
        return None;
    }
    Some((u64le(&h[24..32])?, u64le(&h[32..40])?, u32le(&h[40..44])?))
}

/// Whether `payload` is the one the header's checksum covers.
pub fn commit_checksum_ok(header: &[u8], payload: &[u8], crc: u32) -> bool {
    header.len() >= 40 && crc32c::crc32c_append(crc32c::crc32c(&header[0..40]), payload) == crc
}

fn u32le(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn u64le(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trip_and_corruption() {
        let sb = Superblock::layout(Uuid::new_v4(), Uuid::new_v4(), 7, 64 << 20, 1 << 20).unwrap();
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b), Some(sb));
        b[30] ^= 1;
        assert_eq!(Superblock::decode(&b), None);
        assert_eq!(Superblock::decode(&b[..10]), None);
    }

    #[test]
    fn tiny_device_has_no_layout() {
        assert!(Superblock::layout(Uuid::nil(), Uuid::nil(), 0, 1 << 20, 1 << 20).is_none());
    }
}
