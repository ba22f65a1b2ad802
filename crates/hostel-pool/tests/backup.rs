//! Backups: a snapshot exported whole, the changes between two snapshots exported alone, each
//! restored (into another pool too) with exact contents; corrupted, truncated and baseless
//! backups refused with the reason, leaving no volume and no space behind.

mod common;

use common::*;
use hostel_pool::{Pool, PoolError, CLUSTER_SIZE};

const MIB: u64 = 1 << 20;
/// Not a whole number of clusters: the last one is partial.
const SIZE: u64 = 3 * MIB + 512 * 5;

fn pool(dir: &std::path::Path, names: &[&str]) -> Pool {
    let paths = make_files(dir, names, 32 * MIB);
    Pool::create(open_files(&paths), opts()).unwrap()
}

fn export(p: &Pool, snap: &str, base: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    p.export_backup("v", snap, base, &mut out).unwrap();
    out
}

/// The source: s1 after random writes; s2 after more writes, a discard of one cluster and a
/// write into the last, partial one.
fn source(dir: &std::path::Path) -> (Pool, Vec<u8>, Vec<u8>) {
    let p = pool(dir, &["a", "b"]);
    p.create_volume("v", SIZE, 2).unwrap();
    let mut rng = Rng(21);
    let mut model = vec![0u8; SIZE as usize];
    for _ in 0..40 {
        let len = 512 * (1 + rng.below(40));
        let off = rng.below((SIZE - len) / 512) * 512;
        let mut d = vec![0u8; len as usize];
        rng.fill(&mut d);
        p.write("v", off, &d).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&d);
    }
    p.snapshot_create("v", "s1").unwrap();
    let s1 = model.clone();
    for _ in 0..5 {
        let off = rng.below(SIZE / 4096 - 1) * 4096;
        p.write("v", off, &[0x5a; 4096]).unwrap();
        model[off as usize..off as usize + 4096].fill(0x5a);
    }
    let c = 2 * CLUSTER_SIZE;
    p.discard("v", c, CLUSTER_SIZE).unwrap();
    model[c as usize..(c + CLUSTER_SIZE) as usize].fill(0);
    p.write("v", SIZE - 1024, &[7; 1024]).unwrap();
    model[SIZE as usize - 1024..].fill(7);
    p.snapshot_create("v", "s2").unwrap();
    // Written after s2: in no backup.
    p.write("v", 0, &[9; 4096]).unwrap();
    (p, s1, model)
}

#[test]
fn full_and_incremental_restore_exact_contents_in_another_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (src, s1, s2) = source(&dir.path().join("src").tap_mkdir());
    let full = export(&src, "s1", None);
    let inc = export(&src, "s2", Some("s1"));
    // The incremental holds the changed clusters only.
    assert!(
        inc.len() < full.len() / 3,
        "{} vs {}",
        inc.len(),
        full.len()
    );

    let dst = pool(&dir.path().join("dst").tap_mkdir(), &["x", "y"]);
    // An incremental needs its base first.
    match dst.restore_backup(&mut &inc[..], "r2", 2) {
        Err(PoolError::NoBaseSnapshot { .. }) => {}
        other => panic!("incremental without its base: {other:?}"),
    }
    let i1 = dst.restore_backup(&mut &full[..], "r1", 2).unwrap();
    assert_eq!((i1.snapshot.as_str(), i1.base_id), ("s1", None));
    assert!(read_all(&dst, "r1") == s1, "full restore differs from s1");
    let i2 = dst.restore_backup(&mut &inc[..], "r2", 1).unwrap();
    assert_eq!(i2.base_id, Some(i1.snapshot_id));
    assert!(
        read_all(&dst, "r2") == s2,
        "incremental restore differs from s2"
    );
    // The restored volumes carry the snapshots, so a chain continues from them.
    assert_eq!(dst.volume("r2").unwrap().snapshots, vec!["s2".to_string()]);
    // Restored twice from the same pool's backup: same contents, volumes independent.
    src.restore_backup(&mut &inc[..], "again", 2).unwrap();
    assert!(read_all(&src, "again") == s2);
    // A restore into a name that exists is refused.
    assert!(matches!(
        dst.restore_backup(&mut &full[..], "r1", 2),
        Err(PoolError::VolumeExists(_))
    ));
}

#[test]
fn corrupted_or_truncated_backups_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _, _) = source(dir.path());
    let full = export(&src, "s1", None);
    src.flush().unwrap();
    let free0: Vec<u64> = src.devices().iter().map(|d| d.free_clusters).collect();
    let vols0 = src.volumes();

    let mut flipped = full.clone();
    let mid = full.len() / 2;
    flipped[mid] ^= 0x10;
    let mut bad_header = full.clone();
    bad_header[15] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a flipped data byte", flipped, "checksum does not match"),
        (
            "a cut in the records",
            full[..mid].to_vec(),
            "truncated in the records",
        ),
        ("no trailer", full[..full.len() - 12].to_vec(), "truncated"),
        ("a bad header", bad_header, "header"),
        ("not a backup", b"hello".to_vec(), "truncated in the header"),
    ];
    for (what, bytes, why) in cases {
        match src.restore_backup(&mut &bytes[..], "r", 2) {
            Err(PoolError::BadBackup(msg)) => {
                assert!(msg.contains(why), "{what}: {msg:?} should say {why:?}")
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(matches!(src.volume("r"), Err(PoolError::NoSuchVolume(_))));
    }
    src.flush().unwrap();
    assert_eq!(src.volumes(), vols0, "a refused backup left a volume");
    let free1: Vec<u64> = src.devices().iter().map(|d| d.free_clusters).collect();
    assert_eq!(free0, free1, "a refused backup kept space");
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
