//! Disk files for import tests: a scratch directory with a store in it, small ext4 and qcow2
//! files made with the host's tools, and the checks every refused import shares.

use hostel_images::{ImageError, ImageStore, ImportOptions};
use hostel_testkit::{sh, which};
use std::path::{Path, PathBuf};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: ImageStore,
}

impl Fixture {
    /// `None` (after printing why) when qemu-img or mkfs.ext4 is missing.
    pub fn new() -> Option<Self> {
        if !(which("qemu-img") && which("mkfs.ext4")) {
            if std::env::var_os("HOSTEL_REQUIRE_GUEST").is_some() {
                panic!("qemu-img or mkfs.ext4 missing");
            }
            eprintln!("SKIPPED: qemu-img or mkfs.ext4 missing");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        Some(Fixture { dir, store })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A 64 MiB ext4 filesystem with a file in it.
    pub fn ext4(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        let tree = self.path(&format!("{name}.tree"));
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hostname"), "imported\n").unwrap();
        sh(&format!(
            "truncate -s 64M {p} && mkfs.ext4 -q -F -d {t} {p}",
            p = p.display(),
            t = tree.display()
        ));
        p
    }

    /// `qemu-img convert -O qcow2` of `raw` into `name`.
    pub fn to_qcow2(&self, raw: &Path, name: &str) -> PathBuf {
        let p = self.path(name);
        sh(&format!(
            "qemu-img convert -f raw -O qcow2 {} {}",
            raw.display(),
            p.display()
        ));
        p
    }

    /// A 32 MiB qcow2 whose first 8 MiB are random (no filesystem, no partition table).
    pub fn qcow2_with_data(&self, name: &str) -> PathBuf {
        let raw = self.path(&format!("{name}.src"));
        sh(&format!(
            "head -c 8M /dev/urandom > {r} && truncate -s 32M {r}",
            r = raw.display()
        ));
        self.to_qcow2(&raw, name)
    }

    pub fn import(&self, name: &str, file: &Path) -> Result<hostel_images::Image, ImageError> {
        self.store.import(name, file, &ImportOptions::default())
    }

    /// Imports `file` expecting a refusal as truncated or corrupt whose message says so and
    /// names the user's file; checks nothing was registered or left in staging.
    pub fn assert_refused_damaged(&self, name: &str, file: &Path) -> ImageError {
        let err = self.import(name, file).unwrap_err();
        let msg = err.to_string();
        eprintln!("{name}: refused: {msg}");
        assert!(
            matches!(
                err,
                ImageError::Truncated { .. } | ImageError::Corrupt { .. }
            ),
            "{err:?}"
        );
        assert!(
            msg.starts_with("truncated image ") || msg.starts_with("corrupt image "),
            "{msg}"
        );
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        let staging = self.store.root().join("tmp").display().to_string();
        assert!(!msg.contains(&staging), "names the staging copy: {msg}");
        self.assert_nothing_registered(name);
        err
    }

    pub fn assert_nothing_registered(&self, name: &str) {
        assert!(!self.store.contains(name));
        let tmp: Vec<_> = std::fs::read_dir(self.store.root().join("tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "staging left behind: {tmp:?}");
    }
}
