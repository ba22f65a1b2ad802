//! Power cut at every device write of a workload (data writes, metadata commits, snapshot
//! commits; the write at the cut lands half): the pool reopens consistent, every write a
//! completed flush covered is there, every other sector holds its old or one of its newer
//! values, a snapshot that exists holds exactly what the volume held when it was taken.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use hostel_pool::{BlockDevice, CreateOptions, FileDevice, Pool, CLUSTER_SIZE};

const SIZE: u64 = 512 * 1024;
const SECTOR: usize = 512;

struct Model {
    durable: Vec<u8>,
    /// Per sector, values written since the last durable flush.
    later: Vec<Vec<[u8; SECTOR]>>,
    cur: Vec<u8>,
}

impl Model {
    fn record(&mut self, off: u64, data: &[u8]) {
        self.cur[off as usize..off as usize + data.len()].copy_from_slice(data);
        for (i, s) in data.chunks(SECTOR).enumerate() {
            let mut v = [0u8; SECTOR];
            v.copy_from_slice(s);
            self.later[off as usize / SECTOR + i].push(v);
        }
    }
    fn durable_now(&mut self) {
        self.durable = self.cur.clone();
        self.later.iter_mut().for_each(Vec::clear);
    }
    fn check(&self, got: &[u8], cut_at: u64) {
        for (i, s) in got.chunks(SECTOR).enumerate() {
            let ok = *s == self.durable[i * SECTOR..(i + 1) * SECTOR]
                || self.later[i].iter().any(|v| v[..] == *s);
            assert!(
                ok,
                "cut at write {cut_at}: sector {i} holds neither its flushed nor a later value"
            );
        }
    }
}

/// Runs the workload with a cut at device write `cut_at` after set-up; false when the
/// workload finished before reaching it.
fn run(cut_at: u64, slot: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let paths = make_files(dir.path(), &["a", "b"], 8 << 20);
    let cut = Cut::new(u64::MAX);
    let devs: Vec<Box<dyn BlockDevice>> = paths
        .iter()
        .map(|p| {
            Box::new(CutDevice {
                inner: FileDevice::open(p).unwrap(),
                cut: Arc::clone(&cut),
            }) as Box<dyn BlockDevice>
        })
        .collect();
    let pool = Pool::create(
        devs,
        CreateOptions {
            meta_slot_bytes: Some(slot),
        },
    )
    .unwrap();
    pool.create_volume("v", SIZE, 2).unwrap();
    let mut rng = Rng(cut_at * 7 + 1);
    let mut m = Model {
        durable: vec![0; SIZE as usize],
        later: vec![Vec::new(); SIZE as usize / SECTOR],
        cur: vec![0; SIZE as usize],
    };
    let mut base = vec![0u8; SIZE as usize / 2];
    rng.fill(&mut base);
    pool.write("v", 0, &base).unwrap();
    m.record(0, &base);
    pool.flush().unwrap();
    m.durable_now();

    let start = cut.writes.load(Ordering::SeqCst);
    cut.cut_at.store(start + cut_at, Ordering::SeqCst);
    let mut snaps: Vec<(String, Vec<u8>, bool)> = Vec::new();
    for step in 0..35 {
        match step % 7 {
            0..=2 => {
                let blocks = 1 + rng.below(3);
                let off = rng.below(SIZE / 4096 - blocks) * 4096;
                // Odd sizes too: a sub-block write reads, patches and rewrites its block.
                let len = if step % 2 == 0 { blocks * 4096 } else { 1536 };
                let mut d = vec![0u8; len as usize];
                rng.fill(&mut d);
                m.record(off, &d);
                let _ = pool.write("v", off, &d);
                // A flush per write too: each appends a delta to the metadata log.
                if step % 7 == 1 {
                    let r = pool.flush();
                    if !cut.happened() {
                        r.unwrap();
                        m.durable_now();
                    }
                }
            }
            3 | 6 => {
                let r = pool.flush();
                if !cut.happened() {
                    r.unwrap();
                    m.durable_now();
                }
            }
            4 => {
                let c = rng.below(SIZE / CLUSTER_SIZE);
                m.record(c * CLUSTER_SIZE, &vec![0u8; CLUSTER_SIZE as usize]);
                let _ = pool.discard("v", c * CLUSTER_SIZE, CLUSTER_SIZE);
            }
            _ => {
                let name = format!("s{step}");
                let r = pool.snapshot_create("v", &name);
                let done = !cut.happened();
                if done {
                    r.unwrap();
                    m.durable_now();
                }
                snaps.push((name, m.cur.clone(), done));
            }
        }
        if cut.happened() {
            break;
        }
    }
    let reached = cut.happened();
    if !reached {
        // The workload's flushes append to the metadata log; with a small slot the log also
        // fills and a checkpoint starts a chain in the other slot, mid-workload.
        let st = pool.commit_stats();
        // Seven control operations write checkpoints (create, volume, five snapshots).
        assert!(st.deltas >= 5, "{st:?}");
        eprintln!("{st:?}");
        if slot < SLOT {
            assert!(st.checkpoints > 7, "the log never filled: {st:?}");
        } else {
            assert_eq!(st.checkpoints, 7, "{st:?}");
        }
    }
    drop(pool);

    let pool = Pool::open(open_files(&paths))
        .unwrap_or_else(|e| panic!("cut at write {cut_at}: reopen failed: {e}"));
    m.check(&read_all(&pool, "v"), cut_at);
    let info = pool.volume("v").unwrap();
    for (name, content, done) in &snaps {
        if info.snapshots.contains(name) {
            pool.clone_volume("v", name, "c").unwrap();
            assert!(
                read_all(&pool, "c") == *content,
                "cut at {cut_at}: snapshot {name} differs"
            );
            pool.delete_volume("c").unwrap();
        } else {
            assert!(!done, "cut at {cut_at}: completed snapshot {name} lost");
        }
    }
    if reached {
        assert!(pool.needs_scrub(), "a crash must be noticed");
    }
    let r = pool.scrub().unwrap();
    assert_eq!(r.unreadable, 0, "cut at {cut_at}");
    assert!(!pool.needs_scrub());
    // Settled: what reads now is what reads after another reopen, and the pool still works.
    let settled = read_all(&pool, "v");
    pool.write("v", 4096, &[3u8; 4096]).unwrap();
    pool.close().unwrap();
    let pool = Pool::open(open_files(&paths)).unwrap();
    let again = read_all(&pool, "v");
    assert!(again[..4096] == settled[..4096] && again[8192..] == settled[8192..]);
    assert!(again[4096..8192].iter().all(|&x| x == 3));
    reached
}

fn every_cut(slot: u64) {
    let mut n = 0;
    while run(n, slot) {
        n += 1;
        assert!(n < 2000, "workload never ends");
    }
    // The workload must have had something to cut.
    assert!(n > 40, "only {n} cut points");
    eprintln!("{n} cut points checked");
}

#[test]
fn power_cut_at_every_write() {
    every_cut(SLOT);
}

/// Metadata slots of 8 KiB: the log fills every few flushes, so cuts land in checkpoints
/// into the other slot, in the first delta after one, and in deltas over a slot's stale chain.
#[test]
fn power_cut_at_every_write_with_a_log_that_wraps() {
    every_cut(8 * 1024);
}
