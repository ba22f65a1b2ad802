//! Bodies of the cargo-fuzz targets (`fuzz/fuzz_targets/blk_request.rs`), here so the same
//! code also runs on pseudo-random inputs in `tests/fuzz_smoke.rs` on stable.

use crate::request::{self, Desc, Op, Parsed, MAX_CHAIN, MAX_DISCARD_SEG, MAX_IO_BYTES, SECTOR};

/// Guest memory the input describes: the first 4 KiB of it (zero-padded).
const MEM: usize = 4096;

/// Input: a capacity byte, then 13-byte descriptors (address u64, length u32, flags u8);
/// the first `MEM` bytes of the input double as guest memory, so headers and discard
/// segments the descriptors point at are fuzzer-controlled too.
pub fn blk_request(data: &[u8]) {
    let Some((&cap, rest)) = data.split_first() else {
        return;
    };
    let capacity = u64::from(cap) << (cap % 48);
    let mut mem = vec![0u8; MEM];
    let n = data.len().min(MEM);
    mem[..n].copy_from_slice(&data[..n]);
    let descs: Vec<Desc> = rest
        .chunks_exact(13)
        .take(MAX_CHAIN + 8)
        .map(|c| {
            let addr = u64::from_le_bytes(c[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(c[8..12].try_into().unwrap_or_default());
            // Small addresses land in the memory; keep lengths mostly small as guests do.
            Desc {
                addr: if c[12] & 2 != 0 {
                    addr % MEM as u64
                } else {
                    addr
                },
                len: if c[12] & 4 != 0 { len % 8192 } else { len },
                writable: c[12] & 1 != 0,
            }
        })
        .collect();
    let read = |addr: u64, out: &mut [u8]| -> bool {
        let Ok(a) = usize::try_from(addr) else {
            return false;
        };
        match a.checked_add(out.len()).and_then(|e| mem.get(a..e)) {
            Some(s) => {
                out.copy_from_slice(s);
                true
            }
            None => false,
        }
    };
    match request::parse(&descs, capacity, &read) {
        Parsed::Ok(r) => {
            // What the executor relies on.
            let total: u64 = r.data.iter().map(|b| u64::from(b.len)).sum();
            match r.op {
                Op::In { sector, bytes } | Op::Out { sector, bytes } => {
                    assert_eq!(total, bytes);
                    assert!(bytes % SECTOR == 0 && bytes <= MAX_IO_BYTES);
                    assert!(sector + bytes / SECTOR <= capacity);
                }
                Op::Discard(ranges) | Op::WriteZeroes(ranges) => {
                    assert!(!ranges.is_empty() && ranges.len() <= MAX_DISCARD_SEG as usize);
                    for g in ranges {
                        assert!(g.sector + u64::from(g.sectors) <= capacity);
                    }
                }
                Op::Flush | Op::GetId => {}
            }
            assert!(descs.len() <= MAX_CHAIN);
        }
        Parsed::Fail { why, status } => {
            let _ = why.status();
            if let Some(s) = status {
                let last = descs.last().map(|d| (d.addr, d.len, d.writable));
                assert!(
                    matches!(last, Some((a, l, true)) if l > 0 && a.wrapping_add(u64::from(l) - 1) == s)
                );
            }
        }
    }
}
