//! Volumes on a pool of files: patterns read back, thin allocation, discard, snapshots,
//! clones and restores, reopening from renamed and reordered devices, hostile requests.

mod common;

use common::*;
use hostel_pool::{Pool, PoolError, CLUSTER_SIZE};

const MIB: u64 = 1 << 20;

fn pool2(dir: &std::path::Path, size: u64) -> (Pool, Vec<std::path::PathBuf>) {
    let paths = make_files(dir, &["a.img", "b.img"], size);
    (Pool::create(open_files(&paths), opts()).unwrap(), paths)
}

#[test]
fn random_writes_read_back_at_any_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = pool2(dir.path(), 32 * MIB);
    let size = 4 * MIB;
    pool.create_volume("v", size, 2).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(0x1234_5678);
    for i in 0..300 {
        let len = match i % 3 {
            0 => 512 * (1 + rng.below(16)),
            1 => 1 + rng.below(3 * CLUSTER_SIZE),
            _ => 4096,
        };
        let off = rng.below(size - len);
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data);
        pool.write("v", off, &data).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
        if i % 50 == 0 {
            pool.flush().unwrap();
        }
    }
    assert!(
        read_all(&pool, "v") == model,
        "volume differs from the model"
    );
    // Unaligned reads across cluster boundaries too.
    let mut b = vec![0u8; 200_000];
    pool.read("v", 12_345, &mut b).unwrap();
    assert!(b[..] == model[12_345..12_345 + 200_000]);
}

#[test]
fn thin_allocation_and_discard() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = pool2(dir.path(), 64 * MIB);
    let size = 32 * MIB;
    pool.create_volume("v", size, 2).unwrap();
    let free0: Vec<u64> = pool.devices().iter().map(|d| d.free_clusters).collect();
    assert_eq!(pool.volume("v").unwrap().allocated, 0);
    // 10% of the volume: every tenth 4 KiB page of every tenth cluster... simply every tenth cluster.
    let clusters = size / CLUSTER_SIZE;
    for c in (0..clusters).step_by(10) {
        pool.write("v", c * CLUSTER_SIZE + 4096, &[0xab; 4096])
            .unwrap();
    }
    pool.flush().unwrap();
    let written = clusters.div_ceil(10);
    let info = pool.volume("v").unwrap();
    assert_eq!(info.allocated, written * CLUSTER_SIZE);
    let ratio = info.allocated as f64 / size as f64;
    assert!((0.09..0.11).contains(&ratio), "allocated {ratio}");
    // Mirrored: one cluster on each device per written cluster.
    for (d, f0) in pool.devices().iter().zip(&free0) {
        assert_eq!(f0 - d.free_clusters, written);
    }
    // The rest of a written cluster, and unwritten clusters, read as zeros.
    let mut b = vec![0u8; CLUSTER_SIZE as usize];
    pool.read("v", 0, &mut b).unwrap();
    assert!(b[..4096].iter().all(|&x| x == 0) && b[4096..8192].iter().all(|&x| x == 0xab));
    assert!(b[8192..].iter().all(|&x| x == 0));

    pool.discard("v", 0, size).unwrap();
    pool.flush().unwrap();
    assert_eq!(pool.volume("v").unwrap().allocated, 0);
    let free1: Vec<u64> = pool.devices().iter().map(|d| d.free_clusters).collect();
    assert_eq!(free1, free0, "discard gives every cluster back");
    assert!(read_all(&pool, "v").iter().all(|&x| x == 0));

    // A partial discard zeroes without unmapping.
    pool.write("v", 0, &[7u8; 8192]).unwrap();
    pool.discard("v", 512, 1024).unwrap();
    let mut b = vec![0u8; 8192];
    pool.read("v", 0, &mut b).unwrap();
    assert!(b[..512].iter().all(|&x| x == 7) && b[512..1536].iter().all(|&x| x == 0));
    assert!(b[1536..].iter().all(|&x| x == 7));
}

fn digest(b: &[u8]) -> u32 {
    // The pool's own checksum would hide a bug it shares; use a different function.
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ x as u32).wrapping_mul(0x0100_0193)
    })
}

#[test]
fn snapshots_clones_and_restore_keep_exact_contents() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = pool2(dir.path(), 64 * MIB);
    let size = 2 * MIB;
    pool.create_volume("v", size, 2).unwrap();
    let mut rng = Rng(99);
    let mut scribble = |pool: &Pool| {
        for _ in 0..40 {
            let len = 1 + rng.below(100_000);
            let off = rng.below(size - len);
            let mut d = vec![0u8; len as usize];
            rng.fill(&mut d);
            pool.write("v", off, &d).unwrap();
        }
    };
    scribble(&pool);
    let a = read_all(&pool, "v");
    pool.snapshot_create("v", "s1").unwrap();
    scribble(&pool);
    let b = read_all(&pool, "v");
    pool.snapshot_create("v", "s2").unwrap();
    scribble(&pool);
    let c = read_all(&pool, "v");
    assert_ne!(digest(&a), digest(&b));

    let k1 = pool.clone_volume("v", "s1", "k1").unwrap();
    assert_eq!(k1.size, size);
    pool.clone_volume("v", "s2", "k2").unwrap();
    assert_eq!(digest(&read_all(&pool, "k1")), digest(&a));
    assert_eq!(digest(&read_all(&pool, "k2")), digest(&b));
    assert_eq!(digest(&read_all(&pool, "v")), digest(&c));

    // Writing a clone changes neither the origin nor the snapshot.
    pool.write("k1", 1000, &[0x55; 70_000]).unwrap();
    pool.snapshot_restore("v", "s1").unwrap();
    assert_eq!(digest(&read_all(&pool, "v")), digest(&a));
    pool.snapshot_restore("v", "s2").unwrap();
    assert_eq!(digest(&read_all(&pool, "v")), digest(&b));
    assert_eq!(digest(&read_all(&pool, "k2")), digest(&b));

    // Deleting everything gives every cluster back.
    for v in ["k1", "k2", "v"] {
        pool.delete_volume(v).unwrap();
    }
    pool.flush().unwrap();
    for d in pool.devices() {
        assert_eq!(
            d.free_clusters, d.clusters,
            "device {} leaks clusters",
            d.uuid
        );
    }
}

#[test]
fn reopens_from_renamed_and_reordered_devices() {
    let dir = tempfile::tempdir().unwrap();
    let paths = make_files(dir.path(), &["a.img", "b.img", "c.img"], 16 * MIB);
    let pool = Pool::create(open_files(&paths), opts()).unwrap();
    pool.create_volume("v", 4 * MIB, 2).unwrap();
    pool.create_volume("w", MIB, 1).unwrap();
    let mut d = vec![0u8; 3 * MIB as usize];
    Rng(5).fill(&mut d);
    pool.write("v", 4096, &d).unwrap();
    pool.write("w", 0, &d[..MIB as usize]).unwrap();
    pool.snapshot_create("v", "s").unwrap();
    pool.write("v", 0, &[1u8; 8192]).unwrap();
    let v = read_all(&pool, "v");
    let uuid = pool.uuid();
    pool.close().unwrap();

    let renamed: Vec<_> = ["z1", "z2", "z3"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    for (from, to) in paths.iter().zip(&renamed) {
        std::fs::rename(from, to).unwrap();
    }
    let reordered = vec![renamed[2].clone(), renamed[0].clone(), renamed[1].clone()];
    let pool = Pool::open(open_files(&reordered)).unwrap();
    assert_eq!(pool.uuid(), uuid);
    assert!(!pool.needs_scrub(), "a closed pool reopens clean");
    assert!(read_all(&pool, "v") == v);
    assert!(read_all(&pool, "w")[..] == d[..MIB as usize]);
    pool.clone_volume("v", "s", "c").unwrap();
    assert!(read_all(&pool, "c")[4096..4096 + d.len()] == d[..]);
    let names: Vec<String> = pool.volumes().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["c", "v", "w"]);
}

#[test]
fn devices_of_another_pool_or_twice_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = make_files(dir.path(), &["a", "b"], 8 * MIB);
    let p2 = make_files(dir.path(), &["c"], 8 * MIB);
    Pool::create(open_files(&p1), opts())
        .unwrap()
        .close()
        .unwrap();
    Pool::create(open_files(&p2), opts())
        .unwrap()
        .close()
        .unwrap();
    let mixed = vec![p1[0].clone(), p2[0].clone()];
    assert!(matches!(
        Pool::open(open_files(&mixed)),
        Err(PoolError::ForeignDevice { .. })
    ));
    let twice = vec![p1[0].clone(), p1[0].clone()];
    assert!(matches!(
        Pool::open(open_files(&twice)),
        Err(PoolError::DuplicateDevice { .. })
    ));
    let blank = make_files(dir.path(), &["blank"], 8 * MIB);
    assert!(matches!(
        Pool::open(open_files(&blank)),
        Err(PoolError::NoSuperblock { .. })
    ));
}

#[test]
fn hostile_requests_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = pool2(dir.path(), 16 * MIB);
    pool.create_volume("v", MIB, 2).unwrap();
    pool.write("v", 0, &[9u8; 4096]).unwrap();
    let mut b = [0u8; 4096];
    for (off, len) in [
        (MIB, 1u64),
        (MIB - 1, 2),
        (u64::MAX, 1),
        (u64::MAX - 10, 4096),
    ] {
        assert!(matches!(
            pool.read("v", off, &mut b[..len as usize]),
            Err(PoolError::OutOfRange { .. })
        ));
        assert!(matches!(
            pool.write("v", off, &b[..len as usize]),
            Err(PoolError::OutOfRange { .. })
        ));
        assert!(matches!(
            pool.discard("v", off, len),
            Err(PoolError::OutOfRange { .. })
        ));
    }
    assert!(matches!(
        pool.discard("v", 0, u64::MAX),
        Err(PoolError::OutOfRange { .. })
    ));
    assert!(matches!(
        pool.read("nope", 0, &mut b),
        Err(PoolError::NoSuchVolume(_))
    ));
    assert!(matches!(
        pool.create_volume("../x", MIB, 2),
        Err(PoolError::BadName { .. })
    ));
    assert!(matches!(
        pool.create_volume("x", 1000, 2),
        Err(PoolError::BadSize { .. })
    ));
    assert!(matches!(
        pool.create_volume("x", MIB, 3),
        Err(PoolError::BadCopies { .. })
    ));
    assert!(matches!(
        pool.create_volume("x", u64::MAX - 511, 1),
        Err(PoolError::BadSize { .. })
    ));
    // Nothing above changed the volume.
    pool.read("v", 0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 9));
    assert_eq!(pool.volume("v").unwrap().allocated, CLUSTER_SIZE);
}

#[test]
fn out_of_space_is_an_error_never_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let paths = make_files(dir.path(), &["a", "b"], 4 * MIB);
    let pool = Pool::create(open_files(&paths), opts()).unwrap();
    let per_dev = pool.devices()[0].clusters;
    pool.create_volume("v", 64 * MIB, 2).unwrap();
    let mut written = Vec::new();
    let mut err = None;
    for c in 0..(per_dev + 5) {
        let d = vec![(c % 251) as u8 + 1; 4096];
        match pool.write("v", c * CLUSTER_SIZE, &d) {
            Ok(()) => written.push(c),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(matches!(err, Some(PoolError::OutOfSpace { .. })), "{err:?}");
    assert_eq!(written.len() as u64, per_dev);
    pool.flush().unwrap();
    let check = |pool: &Pool, written: &[u64]| {
        for &c in written {
            let mut b = vec![0u8; 4096];
            pool.read("v", c * CLUSTER_SIZE, &mut b).unwrap();
            assert!(b.iter().all(|&x| x == (c % 251) as u8 + 1), "cluster {c}");
        }
    };
    check(&pool, &written);
    // Space comes back with a discard (after the flush that makes the free durable).
    pool.discard("v", 0, CLUSTER_SIZE).unwrap();
    assert!(pool.write("v", per_dev * CLUSTER_SIZE, &[1; 512]).is_err());
    pool.flush().unwrap();
    pool.write("v", per_dev * CLUSTER_SIZE, &[1; 512]).unwrap();
    written.remove(0);
    pool.close().unwrap();
    let pool = Pool::open(open_files(&paths)).unwrap();
    check(&pool, &written);
}
