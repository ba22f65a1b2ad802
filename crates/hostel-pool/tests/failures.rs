//! Device failures. The I/O errors here are *injected* (a layer answering EIO between the pool
//! and a real file): this machine has no device-mapper (no dm `error` target) and no FUSE
//! file system to make the kernel return real ones. Bit rot is real: bytes flipped in the
//! device file itself.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use hostel_pool::{BlockDevice, FileDevice, Pool, CLUSTER_SIZE};

const MIB: u64 = 1 << 20;

fn faulty(p: &std::path::Path) -> (Box<dyn BlockDevice>, Arc<AtomicBool>) {
    let failing = Arc::new(AtomicBool::new(false));
    let d = Faulty {
        inner: FileDevice::open(p).unwrap(),
        failing: Arc::clone(&failing),
    };
    (Box::new(d), failing)
}

#[test]
fn failed_device_degrades_then_remirrors() {
    let dir = tempfile::tempdir().unwrap();
    let paths = make_files(dir.path(), &["a", "b", "spare"], 16 * MIB);
    let (a, _) = faulty(&paths[0]);
    let (b, b_fails) = faulty(&paths[1]);
    let pool = Pool::create(vec![a, b], opts()).unwrap();
    pool.create_volume("v", 4 * MIB, 2).unwrap();
    let mut model = vec![0u8; 4 * MIB as usize];
    Rng(11).fill(&mut model[..2 * MIB as usize]);
    pool.write("v", 0, &model[..2 * MIB as usize]).unwrap();
    pool.flush().unwrap();
    assert_eq!(pool.volume("v").unwrap().degraded_clusters, 0);

    // Under load: b fails between two writes; neither they nor reads see an error.
    let mut rng = Rng(12);
    for i in 0..64u64 {
        if i == 20 {
            b_fails.store(true, Ordering::SeqCst);
        }
        let off = rng.below(4 * MIB / 4096 - 1) * 4096;
        let mut d = vec![0u8; 4096];
        rng.fill(&mut d);
        pool.write("v", off, &d).unwrap();
        model[off as usize..off as usize + 4096].copy_from_slice(&d);
    }
    pool.flush().unwrap();
    assert!(read_all(&pool, "v") == model);
    let devs = pool.devices();
    assert!(!devs[0].failed && devs[1].failed);
    let info = pool.volume("v").unwrap();
    assert_eq!(
        info.degraded_clusters * CLUSTER_SIZE,
        info.allocated,
        "every cluster lost a copy"
    );

    // A new device, then a scrub: every cluster has two healthy copies again.
    pool.add_device(Box::new(FileDevice::open(&paths[2]).unwrap()), opts())
        .unwrap();
    let r = pool.scrub().unwrap();
    assert_eq!(r.unreadable, 0);
    assert_eq!(r.remirrored * CLUSTER_SIZE, info.allocated);
    assert_eq!(pool.volume("v").unwrap().degraded_clusters, 0);
    pool.close().unwrap();

    // Reopened without the failed device: all there, not degraded.
    let pool = Pool::open(open_files(&[paths[2].clone(), paths[0].clone()])).unwrap();
    assert!(read_all(&pool, "v") == model);
    assert_eq!(pool.volume("v").unwrap().degraded_clusters, 0);
    // And with only the new device: every cluster is there too.
    pool.close().unwrap();
    let pool = Pool::open(open_files(&[paths[2].clone()])).unwrap();
    assert!(read_all(&pool, "v") == model);
}

#[test]
fn both_devices_failing_is_an_error_not_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let paths = make_files(dir.path(), &["a", "b"], 8 * MIB);
    let (a, a_fails) = faulty(&paths[0]);
    let (b, b_fails) = faulty(&paths[1]);
    let pool = Pool::create(vec![a, b], opts()).unwrap();
    pool.create_volume("v", MIB, 2).unwrap();
    pool.write("v", 0, &[1u8; 4096]).unwrap();
    a_fails.store(true, Ordering::SeqCst);
    b_fails.store(true, Ordering::SeqCst);
    let mut buf = [0u8; 4096];
    assert!(pool.read("v", 0, &mut buf).is_err());
    assert!(pool.write("v", 0, &buf).is_err());
    assert!(pool.flush().is_err());
}

/// Finds `pat` (a whole 4 KiB block) in a device file.
fn find(path: &std::path::Path, pat: &[u8]) -> Option<u64> {
    let f = std::fs::read(path).unwrap();
    f.chunks(4096)
        .position(|c| c == pat)
        .map(|i| i as u64 * 4096)
}

#[test]
fn bit_rot_is_served_from_the_mirror_and_repaired() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let paths = make_files(dir.path(), &["a", "b"], 8 * MIB);
    let pool = Pool::create(open_files(&paths), opts()).unwrap();
    pool.create_volume("v", MIB, 2).unwrap();
    let mut pat = vec![0u8; 4096];
    Rng(77).fill(&mut pat);
    pool.write("v", 3 * 4096, &pat).unwrap();
    pool.flush().unwrap();
    for p in &paths {
        let at = find(p, &pat).expect("a copy on each device");
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        // Rot on a, and a different rot on b's neighbouring sector: each block stays
        // recoverable from the other device.
        if p == &paths[0] {
            f.write_all_at(&[0xff; 16], at + 100).unwrap();
        }
    }
    let mut got = vec![0u8; 4096];
    pool.read("v", 3 * 4096, &mut got).unwrap();
    assert!(got == pat, "served from the good copy");
    assert!(find(&paths[0], &pat).is_some(), "bad copy rewritten");
    assert!(
        pool.devices().iter().all(|d| !d.failed),
        "rot is not a device failure"
    );

    // Rot on both copies of a flushed block of a cleanly running pool: an error, not garbage.
    for p in &paths {
        let at = find(p, &pat).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.write_all_at(&[0u8; 8], at).unwrap();
    }
    assert!(pool.read("v", 3 * 4096, &mut got).is_err());
    assert_eq!(pool.scrub().unwrap().unreadable, 1);
}
