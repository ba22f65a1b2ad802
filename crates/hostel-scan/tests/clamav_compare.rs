//! hostel's scanner against Debian's `clamscan` and `yara` on Debian's `clamav-testfiles`, with
//! the same signatures: hashes made from the files (MD5, SHA-1, SHA-256, one of any size),
//! body signatures exercising the syntax, YARA rules. The findings must be identical, both
//! scanning the files directly and through the file-level tier on an ext4 image of them.

use hostel_scan::compare::{self, files_under, write_reference_db};
use hostel_scan::fs::{scan_ext4, BlockSource, WalkLimits};
use hostel_scan::sigs::SigSources;
use hostel_scan::{Engine, FileLimits, SigKind};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

const TESTFILES: &str = "/usr/share/clamav-testfiles";

fn skip(tools: &[&str]) -> bool {
    if !Path::new(TESTFILES).is_dir() {
        eprintln!("skipped: {TESTFILES} missing (Debian package clamav-testfiles)");
        return true;
    }
    for t in tools {
        if !compare::have(t) {
            eprintln!("skipped: {t} not installed");
            return true;
        }
    }
    false
}

/// Only the reference directory's signatures (no built-in), as clamscan gets.
fn engine_for(db: &Path) -> Engine {
    let mut src = SigSources::default();
    src.add_dir(db).unwrap();
    let e = Engine::compile(src);
    assert!(e.report.refused.is_empty(), "{:?}", e.report.refused);
    e
}

fn ours(
    engine: &Engine,
    files: &[std::path::PathBuf],
    kinds: &[SigKind],
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for f in files {
        let mut file = std::fs::File::open(f).unwrap();
        let size = file.metadata().unwrap().len();
        let scan = engine
            .scan_reader(&mut file, size, &FileLimits::default())
            .unwrap();
        assert!(!scan.truncated && !scan.incomplete);
        for finding in scan.findings {
            if kinds.contains(&finding.kind) {
                out.insert((f.display().to_string(), finding.signature));
            }
        }
    }
    out
}

#[test]
fn clamscan_and_hostel_agree_on_clamav_testfiles() {
    if skip(&["clamscan", "mkfs.ext4"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    std::fs::create_dir(&db).unwrap();
    let files = files_under(Path::new(TESTFILES));
    // Hashes of every other file: the rest must not match by hash.
    let hashed: Vec<_> = files.iter().step_by(2).cloned().collect();
    write_reference_db(&db, &hashed).unwrap();
    let engine = engine_for(&db);
    assert_eq!(engine.report.hash, hashed.len());
    assert_eq!(engine.body.len(), 12);

    let reference = compare::clamscan(&db, Path::new(TESTFILES)).unwrap();
    let got = ours(&engine, &files, &[SigKind::Hash, SigKind::Body]);
    assert_eq!(got, reference, "hostel vs clamscan, file by file");
    // Something of each kind matched, and some signature matched nothing.
    let sigs: BTreeSet<&str> = reference.iter().map(|(_, s)| s.as_str()).collect();
    assert!(sigs.contains("Cmp.Hash.0") && sigs.contains("Cmp.Hash.3"));
    for s in [
        "Cmp.Wild",
        "Cmp.Alt",
        "Cmp.Neg",
        "Cmp.Jumps",
        "Cmp.Eof",
        "Cmp.Offset",
        "Cmp.Shift",
    ] {
        assert!(sigs.contains(s), "{s} matched nothing");
    }
    assert!(!sigs.contains("Cmp.Never"));

    // The same through the file-level tier: an ext4 image of the files.
    let image = tmp.path().join("testfiles.img");
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d", TESTFILES])
        .arg(&image)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success());
    let src: Arc<dyn BlockSource> = Arc::new(std::fs::File::open(&image).unwrap());
    let scan = scan_ext4(src, &engine, None, &WalkLimits::default()).unwrap();
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    let via_fs: BTreeSet<(String, String)> = scan
        .findings
        .into_iter()
        .map(|f| (format!("{TESTFILES}{}", f.path), f.finding.signature))
        .collect();
    assert_eq!(via_fs, reference, "file-level tier vs clamscan");
}

#[test]
fn yara_and_hostel_agree_on_clamav_testfiles() {
    if skip(&["yara"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("ref.yar");
    std::fs::write(&rules, compare::YARA_RULES).unwrap();
    let mut src = SigSources::default();
    src.add_file(&rules);
    let engine = Engine::compile(src);
    assert_eq!(engine.report.yara_files, 1, "{:?}", engine.report.refused);
    let files = files_under(Path::new(TESTFILES));
    let reference = compare::yara(&rules, Path::new(TESTFILES)).unwrap();
    let got = ours(&engine, &files, &[SigKind::Yara]);
    assert_eq!(got, reference);
    let rules_hit: BTreeSet<&str> = reference.iter().map(|(_, r)| r.as_str()).collect();
    for r in ["CmpImports", "CmpHex", "CmpMz", "CmpNocase"] {
        assert!(rules_hit.contains(r), "{r} matched nothing");
    }
}
