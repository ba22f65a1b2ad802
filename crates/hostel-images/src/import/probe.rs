//! Recognizing a raw disk's content from its first sectors, and noticing when the file is
//! shorter than what that content says it spans (a truncated upload or copy).

use crate::error::{ImageError, Result};
use crate::manifest::DiskLayout;
use std::fs::File;
use std::io::Read;
use std::path::Path;

const SECTOR: u64 = 512;
/// Enough for the MBR, the GPT header (LBA 1) and the ext4 superblock (at 1024).
pub(crate) const HEAD: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawContent {
    /// A bare ext4 (or ext2/3) filesystem of this many bytes.
    Ext4 { fs_bytes: u64 },
    /// A GPT disk whose backup header sits at this LBA.
    Gpt { backup_lba: u64 },
    /// An MBR disk whose last partition ends at this sector.
    Mbr { end_sector: u64 },
}

impl RawContent {
    pub fn layout(self) -> DiskLayout {
        match self {
            RawContent::Ext4 { .. } => DiskLayout::Ext4,
            RawContent::Gpt { .. } | RawContent::Mbr { .. } => DiskLayout::Partitioned,
        }
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// Identifies a raw image's content and checks the file is long enough for it.
pub fn probe_raw(path: &Path, file_len: u64) -> Result<RawContent> {
    let mut head = vec![0u8; HEAD];
    let mut f = File::open(path).map_err(ImageError::io(path))?;
    let mut n = 0;
    while n < HEAD {
        match f.read(&mut head[n..]).map_err(ImageError::io(path))? {
            0 => break,
            k => n += k,
        }
    }
    let content = identify(&head[..n]).ok_or_else(|| ImageError::Unsupported {
        path: path.to_path_buf(),
        reason: "raw image without an ext4 filesystem, MBR or GPT partition table".into(),
    })?;
    check_fits(path, content, file_len, "the file has")?;
    Ok(content)
}

/// Checks a disk of `disk_bytes` is long enough for what its first sectors say it holds.
pub(crate) fn check_fits(
    path: &Path,
    content: RawContent,
    disk_bytes: u64,
    what: &str,
) -> Result<()> {
    if content.bytes_needed() > disk_bytes {
        return Err(ImageError::Truncated {
            path: path.to_path_buf(),
            reason: format!("{} but {what} only {disk_bytes}", content.describe()),
        });
    }
    Ok(())
}

impl RawContent {
    /// How long a disk must be to hold all of it.
    pub fn bytes_needed(self) -> u64 {
        match self {
            RawContent::Ext4 { fs_bytes } => fs_bytes,
            RawContent::Gpt { backup_lba } => backup_lba.saturating_add(1).saturating_mul(SECTOR),
            RawContent::Mbr { end_sector } => end_sector.saturating_mul(SECTOR),
        }
    }

    /// What the first sectors promise, in words.
    pub fn describe(self) -> String {
        let n = self.bytes_needed();
        match self {
            RawContent::Ext4 { .. } => format!("its ext4 filesystem spans {n} bytes"),
            RawContent::Gpt { .. } => format!("its GPT backup header ends at byte {n}"),
            RawContent::Mbr { .. } => format!("its last partition ends at byte {n}"),
        }
    }
}

/// Pure signature logic on the first bytes of a disk.
pub(crate) fn identify(head: &[u8]) -> Option<RawContent> {
    if head.len() >= 1024 + 0x200 && le16(head, 1024 + 0x38) == 0xEF53 {
        let sb = &head[1024..];
        let log_block = le32(sb, 0x18);
        if log_block <= 6 {
            let block = 1024u64 << log_block;
            let incompat_64bit = le32(sb, 0x60) & 0x80 != 0;
            let mut blocks = u64::from(le32(sb, 0x04));
            if incompat_64bit {
                blocks |= u64::from(le32(sb, 0x150)) << 32;
            }
            if blocks > 0 {
                return Some(RawContent::Ext4 {
                    fs_bytes: blocks.saturating_mul(block),
                });
            }
        }
    }
    if head.len() >= 1024 && &head[512..520] == b"EFI PART" {
        return Some(RawContent::Gpt {
            backup_lba: le64(head, 512 + 32),
        });
    }
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA {
        let mut end = 0u64;
        let mut any = false;
        for i in 0..4 {
            let e = 446 + 16 * i;
            let kind = head[e + 4];
            let start = u64::from(le32(head, e + 8));
            let count = u64::from(le32(head, e + 12));
            if kind != 0 && count > 0 {
                any = true;
                end = end.max(start + count);
            }
        }
        if any {
            return Some(RawContent::Mbr { end_sector: end });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_ext4_gpt_and_mbr_and_nothing_else() {
        let mut h = vec![0u8; HEAD];
        assert_eq!(identify(&h), None);
        h[1024 + 0x38] = 0x53;
        h[1024 + 0x39] = 0xEF;
        h[1024 + 0x18] = 2; // 4 KiB blocks
        h[1024 + 0x04] = 16;
        assert_eq!(identify(&h), Some(RawContent::Ext4 { fs_bytes: 65536 }));

        let mut g = vec![0u8; HEAD];
        g[512..520].copy_from_slice(b"EFI PART");
        g[512 + 32] = 99;
        assert_eq!(identify(&g), Some(RawContent::Gpt { backup_lba: 99 }));

        let mut m = vec![0u8; HEAD];
        m[510] = 0x55;
        m[511] = 0xAA;
        assert_eq!(identify(&m), None, "boot signature without partitions");
        m[446 + 4] = 0x83;
        m[446 + 8] = 2048u32.to_le_bytes()[0];
        m[446 + 9] = 2048u32.to_le_bytes()[1];
        m[446 + 12] = 100;
        assert_eq!(identify(&m), Some(RawContent::Mbr { end_sector: 2148 }));
    }
}
