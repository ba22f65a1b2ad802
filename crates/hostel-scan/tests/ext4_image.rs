//! The file-level tier on real ext4 images made by `mkfs.ext4 -d` (no kernel mount): EICAR
//! found with its path, incremental rescans, a directory loop, and corrupted images.

use hostel_scan::fs::{scan_ext4, BlockSource, ScanRecord, WalkLimits};
use hostel_scan::sigs::{EICAR, EICAR_NAME};
use hostel_scan::Engine;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, RwLock};

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn skip_without_tools() -> bool {
    if have("mkfs.ext4") && have("debugfs") {
        return false;
    }
    eprintln!("skipped: mkfs.ext4 or debugfs (e2fsprogs) not installed");
    true
}

/// An ext4 image of `dir`'s contents.
fn make_image(dir: &Path, image: &Path, mb: u32) {
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(dir)
        .arg(image)
        .arg(format!("{mb}M"))
        .status()
        .expect("mkfs.ext4 runs");
    assert!(st.success(), "mkfs.ext4 -d failed");
}

fn debugfs(image: &Path, request: &str) {
    let out = Command::new("debugfs")
        .args(["-w", "-R", request])
        .arg(image)
        .output()
        .expect("debugfs runs");
    assert!(out.status.success(), "debugfs {request}: {out:?}");
}

fn source(image: &Path) -> Arc<dyn BlockSource> {
    Arc::new(std::fs::File::open(image).expect("image opens"))
}

fn populated(tmp: &Path) -> std::path::PathBuf {
    let root = tmp.join("root");
    std::fs::create_dir_all(root.join("home/user/downloads")).unwrap();
    std::fs::write(root.join("home/user/downloads/eicar.com"), EICAR).unwrap();
    std::fs::write(root.join("etc-hosts"), b"127.0.0.1 localhost\n").unwrap();
    // Several chunks' worth, EICAR at the end: found through the kept tail.
    let mut big = vec![0x5au8; (3 << 20) + 17];
    big.extend_from_slice(EICAR);
    std::fs::write(root.join("big.bin"), &big).unwrap();
    root
}

#[test]
fn eicar_in_an_ext4_image_is_found_with_its_path_and_rescans_are_incremental() {
    if skip_without_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = populated(tmp.path());
    let image = tmp.path().join("fs.img");
    make_image(&root, &image, 16);
    let engine = Engine::load(None, None).unwrap();
    // Small buffers so big.bin spans several and its EICAR sits across the tail.
    let mut limits = WalkLimits::default();
    limits.file.chunk = 1 << 20;
    let first = scan_ext4(source(&image), &engine, None, &limits).unwrap();
    let paths: Vec<(&str, &str)> = first
        .findings
        .iter()
        .map(|f| (f.path.as_str(), f.finding.signature.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/big.bin", EICAR_NAME),
            ("/home/user/downloads/eicar.com", EICAR_NAME)
        ]
    );
    assert_eq!(first.files_scanned, 3);
    assert!(first.errors.is_empty(), "{:?}", first.errors);

    // Nothing changed: nothing scanned, findings carried over.
    let second = scan_ext4(source(&image), &engine, Some(&first.record), &limits).unwrap();
    assert_eq!((second.files_scanned, second.files_unchanged), (0, 3));
    assert_eq!(second.findings, first.findings);

    // A file added by debugfs (no mount): only it is scanned.
    let extra = tmp.path().join("extra");
    std::fs::write(&extra, [b"prefix ".as_slice(), EICAR].concat()).unwrap();
    debugfs(&image, &format!("write {} /extra.txt", extra.display()));
    let third = scan_ext4(source(&image), &engine, Some(&second.record), &limits).unwrap();
    assert_eq!((third.files_scanned, third.files_unchanged), (1, 3));
    assert!(third
        .findings
        .iter()
        .any(|f| f.path == "/extra.txt" && f.finding.offset == Some(7)));
}

#[test]
fn a_directory_loop_ends_at_the_depth_limit() {
    if skip_without_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = populated(tmp.path());
    let image = tmp.path().join("loop.img");
    make_image(&root, &image, 16);
    // A hard link from deep inside to an ancestor directory: the tree becomes infinite.
    debugfs(&image, "ln /home /home/user/downloads/up");
    let engine = Engine::load(None, None).unwrap();
    let limits = WalkLimits {
        max_depth: 12,
        ..WalkLimits::default()
    };
    let scan = scan_ext4(source(&image), &engine, None, &limits).unwrap();
    assert!(scan.walk_truncated, "the loop must hit the depth limit");
    assert!(scan
        .findings
        .iter()
        .any(|f| f.path == "/home/user/downloads/eicar.com"));
    assert!(scan.findings.iter().any(|f| f
        .path
        .starts_with("/home/user/downloads/up/user/downloads/")));
}

/// A small xorshift: the corruptions are the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn corrupted_images_end_without_panic_or_hang() {
    if skip_without_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = populated(tmp.path());
    for i in 0..40 {
        std::fs::create_dir_all(root.join(format!("d{i}/e"))).unwrap();
        std::fs::write(root.join(format!("d{i}/e/f")), vec![i as u8; 5000]).unwrap();
    }
    let image = tmp.path().join("fs.img");
    make_image(&root, &image, 16);
    let clean = std::fs::read(&image).unwrap();
    // Metadata lives in the first block groups' tables: corrupt the first 2 MiB.
    let meta_len = clean.len().min(2 << 20);
    let engine = Engine::load(None, None).unwrap();
    let limits = WalkLimits {
        max_depth: 16,
        max_entries: 20_000,
        ..WalkLimits::default()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut loaded, mut refused) = (0, 0);
    for _round in 0..150 {
        let mut img = clean.clone();
        let flips = 1 + rng.next() % 64;
        for _ in 0..flips {
            let at = (rng.next() as usize) % meta_len;
            img[at] ^= 1 << (rng.next() % 8);
        }
        let src: Arc<dyn BlockSource> = Arc::new(RwLock::new(img));
        match scan_ext4(src, &engine, Some(&ScanRecord::default()), &limits) {
            Ok(scan) => {
                loaded += 1;
                assert!(scan.files_scanned <= limits.max_entries);
            }
            Err(hostel_scan::fs::FsError::NotExt4(_)) => refused += 1,
            Err(e) => panic!("the reader must not panic: {e}"),
        }
    }
    eprintln!("corrupted images: {loaded} walked, {refused} refused");
    assert!(loaded > 0, "some corruptions leave a loadable filesystem");
}
