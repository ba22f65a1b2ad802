//! Importing disk files into a store: good raw and qcow2 files are accepted, garbage, truncated
//! and corrupt ones are refused with a typed error and leave nothing behind; VM disks cloned
//! from an image are qcow2 overlays of the requested size.

use hostel_images::{DiskLayout, ImageError, ImageStore, ImportOptions};
use hostel_testkit::{sh, which};
use std::path::{Path, PathBuf};

fn tools() -> bool {
    let ok = which("qemu-img") && which("mkfs.ext4");
    if !ok {
        eprintln!("SKIPPED: qemu-img or mkfs.ext4 missing");
    }
    ok
}

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        Fixture { dir, store }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// A 64 MiB ext4 filesystem with a file in it.
    fn ext4(&self, name: &str) -> PathBuf {
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
    fn qcow2_with_data(&self, name: &str) -> PathBuf {
        let raw = self.path(&format!("{name}.src"));
        sh(&format!(
            "head -c 8M /dev/urandom > {r} && truncate -s 32M {r}",
            r = raw.display()
        ));
        let p = self.path(name);
        sh(&format!(
            "qemu-img convert -f raw -O qcow2 {} {}",
            raw.display(),
            p.display()
        ));
        p
    }
    fn assert_nothing_registered(&self, name: &str) {
        assert!(!self.store.contains(name));
        let tmp: Vec<_> = std::fs::read_dir(self.store.root().join("tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "staging left behind: {tmp:?}");
    }
}

fn import(f: &Fixture, name: &str, file: &Path) -> Result<hostel_images::Image, ImageError> {
    f.store.import(name, file, &ImportOptions::default())
}

#[test]
fn garbage_is_refused_as_unsupported() {
    if !tools() {
        return;
    }
    let f = Fixture::new();
    let junk = f.path("junk.img");
    sh(&format!("head -c 1M /dev/urandom > {}", junk.display()));
    let err = import(&f, "junk", &junk).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("junk.img"),
        "names the user's file: {err}"
    );
    let empty = f.path("empty.img");
    std::fs::write(&empty, b"").unwrap();
    assert!(import(&f, "empty", &empty).is_err());
    f.assert_nothing_registered("junk");
}

#[test]
fn truncated_qcow2_is_refused() {
    if !tools() {
        return;
    }
    let f = Fixture::new();
    let q = f.qcow2_with_data("disk.qcow2");
    let len = std::fs::metadata(&q).unwrap().len();
    sh(&format!("truncate -s {} {}", len / 2, q.display()));
    let err = import(&f, "cut", &q).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Truncated { .. } | ImageError::Corrupt { .. }
        ),
        "{err}"
    );
    // Cut inside the header: not even qemu-img info can read it.
    sh(&format!("truncate -s 100 {}", q.display()));
    let err = import(&f, "cut", &q).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Truncated { .. } | ImageError::Corrupt { .. }
        ),
        "{err}"
    );
    f.assert_nothing_registered("cut");
}

#[test]
fn corrupt_qcow2_metadata_is_refused() {
    if !tools() {
        return;
    }
    let f = Fixture::new();
    let q = f.qcow2_with_data("disk.qcow2");
    // The L1 table offset lives at byte 40 of the header; point it into the middle of nowhere.
    sh(&format!(
        "printf '\\377\\377\\377\\377' | dd of={} bs=1 seek=40 conv=notrunc status=none",
        q.display()
    ));
    let err = import(&f, "bad", &q).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Corrupt { .. } | ImageError::Truncated { .. }
        ),
        "{err}"
    );
    f.assert_nothing_registered("bad");
}

#[test]
fn qcow2_with_a_backing_file_is_refused() {
    if !tools() {
        return;
    }
    let f = Fixture::new();
    let q = f.path("overlay.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 -b /etc/passwd -F raw {} 1M",
        q.display()
    ));
    let err = import(&f, "sneaky", &q).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("backing file"), "{err}");
}

#[test]
fn truncated_raw_ext4_is_refused() {
    if !tools() {
        return;
    }
    let f = Fixture::new();
    let p = f.ext4("root.raw");
    sh(&format!("truncate -s 16M {}", p.display()));
    let err = import(&f, "short", &p).unwrap_err();
    assert!(matches!(err, ImageError::Truncated { .. }), "{err}");
    f.assert_nothing_registered("short");
}

#[test]
fn raw_ext4_and_qcow2_import_and_clone_into_vm_disks() {
    if !tools() {
        return;
    }
    let f = Fixture::new();
    let raw = f.ext4("root.raw");
    let img = import(&f, "mine", &raw).unwrap();
    assert_eq!(img.manifest().disk.layout, DiskLayout::Ext4);
    assert_eq!(img.manifest().disk.virtual_size, 64 << 20);
    assert!(img.disk_path().ends_with("images/mine/rootfs.raw"));
    // Same name again is refused unless replacing.
    let err = import(&f, "mine", &raw).unwrap_err();
    assert!(matches!(err, ImageError::Exists { .. }), "{err}");
    assert_eq!(f.store.list().unwrap().len(), 1);

    let disk = f.path("vm1.qcow2");
    img.create_vm_disk(&disk, Some(100 << 20)).unwrap();
    let info = sh(&format!("qemu-img info --output=json {}", disk.display()));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 100u64 << 20);
    assert_eq!(info["backing-filename-format"], "raw");
    assert!(info["backing-filename"]
        .as_str()
        .unwrap()
        .ends_with("images/mine/rootfs.raw"));
    // Never overwrite a VM's disk; never shrink below the image.
    assert!(img.create_vm_disk(&disk, None).is_err());
    let err = img
        .create_vm_disk(&f.path("small.qcow2"), Some(1 << 20))
        .unwrap_err();
    assert!(matches!(err, ImageError::DiskTooSmall { .. }), "{err}");
    // A bare filesystem without a kernel cannot be booted.
    assert!(img.boot_input(&disk, None).is_err());

    let q = f.qcow2_with_data("data.qcow2");
    let img = import(&f, "q", &q).unwrap();
    assert_eq!(img.manifest().disk.file, "rootfs.qcow2");
    assert_eq!(img.manifest().disk.virtual_size, 32 << 20);
    let input = img.boot_input(&disk, None).unwrap();
    assert!(input.boot_from_disk);

    f.store.delete("q").unwrap();
    assert!(!f.store.contains("q"));
    assert!(matches!(
        f.store.delete("q").unwrap_err(),
        ImageError::NotFound(_)
    ));
}
