//! The streaming matcher and the inline tier's queue: EICAR split across two writes, a full
//! queue leaving dirty ranges, per-tenant budgets, tenant rules kept to their tenant, and the
//! signature directory's reload.

use hostel_scan::fs::BlockSource;
use hostel_scan::inline::{
    run_scanner, scan_write, DirtyRange, InlineQueue, QueueLimits, Submitted, TenantEngines,
    VolumeSource, WriteRange,
};
use hostel_scan::sigs::{SigSources, EICAR, EICAR_NAME};
use hostel_scan::{Engine, StreamMatcher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

fn engine() -> Arc<Engine> {
    Arc::new(Engine::load(None, None).unwrap())
}

#[test]
fn streaming_matcher_finds_eicar_split_across_two_buffers() {
    let e = engine();
    for split in [1, 20, 34, 67] {
        let mut m = StreamMatcher::new(&e, None, 1 << 16).at(4096);
        let mut out = Vec::new();
        m.feed(&[b"junk".as_slice(), &EICAR[..split]].concat(), &mut out);
        assert!(out.is_empty(), "half a signature is no match");
        m.feed(&[&EICAR[split..], b"more".as_slice()].concat(), &mut out);
        assert_eq!(out.len(), 1, "split at {split}");
        assert_eq!(out[0].signature, EICAR_NAME);
        assert_eq!(out[0].offset, Some(4096 + 4));
        // Found once: later buffers do not report it again.
        m.feed(b"tail bytes", &mut out);
        assert_eq!(out.len(), 1);
    }
}

/// A volume in memory that writes land in, as the pool's would.
struct Volumes(Arc<RwLock<Vec<u8>>>);
impl VolumeSource for Volumes {
    fn volume(&self, _tenant: &str, volume: &str) -> Option<Arc<dyn BlockSource>> {
        (volume == "vol").then(|| self.0.clone() as Arc<dyn BlockSource>)
    }
}

fn write(
    vol: &RwLock<Vec<u8>>,
    q: &InlineQueue,
    tenant: &str,
    offset: u64,
    data: &[u8],
) -> Submitted {
    vol.write().unwrap()[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    q.submit(
        WriteRange {
            tenant: tenant.into(),
            volume: "vol".into(),
            offset,
            data: data.to_vec(),
        },
        Instant::now(),
    )
}

#[test]
fn eicar_written_as_two_halves_with_other_writes_between_is_found() {
    let engines = TenantEngines::default();
    engines.set_operator(engine());
    // Second half first, unrelated writes, then the first half (a guest's writeback order).
    let vol = Arc::new(RwLock::new(vec![0u8; 1 << 20]));
    let q = InlineQueue::new(QueueLimits::default());
    let at = 65536 - 30; // across a 64 KiB cluster boundary
    write(&vol, &q, "t1", at + 30, &EICAR[30..]);
    write(&vol, &q, "t1", 8192, &[7u8; 4096]);
    write(&vol, &q, "t1", at, &EICAR[..30]);
    q.close();
    let mut hits = Vec::new();
    run_scanner(&q, &engines, &Volumes(vol.clone()), |h| hits.push(h));
    assert!(!hits.is_empty(), "the split EICAR must be found");
    assert!(hits
        .iter()
        .all(|h| h.signature == EICAR_NAME && h.offset == at && h.tenant == "t1"));
    assert!(q.take_dirty().is_empty());
}

#[test]
fn a_full_queue_leaves_dirty_ranges_merged_never_dropped() {
    let q = InlineQueue::new(QueueLimits {
        max_bytes: 8192,
        max_tenant_bytes: 8192,
        ..QueueLimits::default()
    });
    let now = Instant::now();
    let w = |offset: u64| WriteRange {
        tenant: "t".into(),
        volume: "v".into(),
        offset,
        data: vec![1; 4096],
    };
    assert_eq!(q.submit(w(0), now), Submitted::Queued);
    assert_eq!(q.submit(w(4096), now), Submitted::Queued);
    assert_eq!(q.submit(w(65536), now), Submitted::Dirty);
    assert_eq!(q.submit(w(69632), now), Submitted::Dirty);
    assert_eq!(q.submit(w(1 << 20), now), Submitted::Dirty);
    let dirty = q.take_dirty();
    assert_eq!(
        dirty.get(&("t".to_string(), "v".to_string())).unwrap(),
        &vec![
            DirtyRange {
                offset: 65536,
                len: 8192
            },
            DirtyRange {
                offset: 1 << 20,
                len: 4096
            }
        ]
    );
    // The two queued are still there to scan.
    assert_eq!(q.queued_bytes(), 8192);
}

#[test]
fn one_tenants_churn_does_not_starve_another() {
    let q = InlineQueue::new(QueueLimits {
        max_bytes: 1 << 30,
        max_tenant_bytes: 1 << 30,
        tenant_rate: 1 << 20,
        tenant_burst: 64 << 10,
    });
    let t0 = Instant::now();
    let w = |tenant: &str, offset: u64| WriteRange {
        tenant: tenant.into(),
        volume: "v".into(),
        offset,
        data: vec![0; 16 << 10],
    };
    for i in 0..1000 {
        q.submit(w("noisy", i * 16384), t0);
    }
    for i in 0..4 {
        q.submit(w("quiet", i * 16384), t0);
    }
    // At one instant: each tenant gets its burst (4 writes of 16 KiB), served in turn.
    let mut order = Vec::new();
    while let Some(w) = q.pop(t0) {
        order.push(w.tenant);
    }
    assert_eq!(order.iter().filter(|t| *t == "quiet").count(), 4);
    assert_eq!(order.iter().filter(|t| *t == "noisy").count(), 4);
    assert_eq!(&order[..2], ["noisy", "quiet"]);
    // The noisy tenant then gets only its rate: 1 MiB/s is 64 writes of 16 KiB a second.
    let mut n = 0;
    for step in 1..=50 {
        let now = t0 + Duration::from_millis(10 * step);
        while q.pop(now).is_some() {
            n += 1;
        }
    }
    assert!(
        (30..=33).contains(&n),
        "half a second at 1 MiB/s: {n} writes"
    );
}

#[test]
fn a_tenants_yara_rule_never_reports_on_another_tenants_volume() {
    let mut src = SigSources::default();
    src.add_text(
        "t1.yar",
        "yar",
        "rule T1Marker { strings: $a = \"tenant-one-marker\" condition: $a }",
    );
    assert!(src.report.refused.is_empty());
    let t1 = Arc::new(Engine::compile(src));
    assert_eq!(t1.report.yara_files, 1);
    let engines = TenantEngines::default();
    engines.set_operator(engine());
    engines.set_tenant("t1", t1);
    let vol: Arc<RwLock<Vec<u8>>> = Arc::new(RwLock::new(vec![0u8; 65536]));
    let data = b"xx tenant-one-marker xx".to_vec();
    let w = |tenant: &str| WriteRange {
        tenant: tenant.into(),
        volume: "vol".into(),
        offset: 100,
        data: data.clone(),
    };
    let src_vol: Arc<dyn BlockSource> = vol.clone();
    let own = scan_write(&engines.for_tenant("t1"), src_vol.as_ref(), &w("t1"));
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].signature, "T1Marker");
    let other = scan_write(&engines.for_tenant("t2"), src_vol.as_ref(), &w("t2"));
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn the_signature_directory_reloads_without_restart_and_refuses_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.ndb"),
        "Good.One:0:*:68696464656e2d6d61726b\nBad.Type:3:*:aabb\nBad.Hex:0:*:aabbz1\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.ldb"), "Logical;whatever\n").unwrap();
    std::fs::write(dir.path().join("c.yar"), "rule broken {").unwrap();
    let db = hostel_scan::db::SigDb::open(dir.path()).unwrap();
    let gen1 = db.current();
    // The built-in EICAR plus the good one.
    assert_eq!((gen1.report.body, gen1.report.hash), (2, 0));
    let refused: Vec<(&str, &str)> = gen1
        .report
        .refused
        .iter()
        .map(|r| (r.file.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            ("a.ndb", "Bad.Type"),
            ("a.ndb", "Bad.Hex"),
            ("b.ldb", "b.ldb"),
            ("c.yar", "c.yar")
        ]
    );
    assert!(gen1.report.refused[0].reason.contains("target type 3"));
    assert!(db.reload_if_changed().unwrap().is_none(), "nothing changed");

    let sample = b"....hidden-mark....";
    assert_eq!(gen1.scan_bytes(sample).findings.len(), 1);
    std::fs::write(
        dir.path().join("d.hdb"),
        format!("{}:{}:Hash.Sample\n", md5_hex(sample), sample.len()),
    )
    .unwrap();
    let report = db.reload_if_changed().unwrap().expect("a new file reloads");
    assert_eq!(report.hash, 1);
    assert_eq!(db.generation(), 2);
    let names: Vec<String> = db
        .current()
        .scan_bytes(sample)
        .findings
        .into_iter()
        .map(|f| f.signature)
        .collect();
    assert_eq!(names, ["Good.One", "Hash.Sample"]);
    // The old generation is still whole for a scan that holds it.
    assert_eq!(gen1.scan_bytes(sample).findings.len(), 1);
}

fn md5_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..32].to_string()
}
