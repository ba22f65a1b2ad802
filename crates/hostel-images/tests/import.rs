//! Importing disk files into a store: good raw and qcow2 files are accepted (a qcow2's content
//! is recognized through the format), garbage, truncated and corrupt ones are refused with a
//! typed error and a message naming the file, and leave nothing behind; VM disks cloned from
//! an image are qcow2 overlays of the requested size.

mod common;

use common::files::Fixture;
use hostel_images::{DiskLayout, ImageError, ImportOptions};
use hostel_testkit::sh;

#[test]
fn garbage_is_refused_as_unsupported() {
    let Some(f) = Fixture::new() else { return };
    let junk = f.path("junk.img");
    sh(&format!("head -c 1M /dev/urandom > {}", junk.display()));
    let err = f.import("junk", &junk).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("junk.img"),
        "names the user's file: {err}"
    );
    let empty = f.path("empty.img");
    std::fs::write(&empty, b"").unwrap();
    assert!(f.import("empty", &empty).is_err());
    f.assert_nothing_registered("junk");
}

#[test]
fn truncated_qcow2_is_refused() {
    let Some(f) = Fixture::new() else { return };
    let q = f.qcow2_with_data("disk.qcow2");
    let len = std::fs::metadata(&q).unwrap().len();
    sh(&format!("truncate -s {} {}", len / 2, q.display()));
    f.assert_refused_damaged("cut", &q);
    // Cut inside the header: not even qemu-img info can read it.
    sh(&format!("truncate -s 100 {}", q.display()));
    f.assert_refused_damaged("cut", &q);
}

#[test]
fn corrupt_qcow2_metadata_is_refused() {
    let Some(f) = Fixture::new() else { return };
    let q = f.qcow2_with_data("disk.qcow2");
    // The L1 table offset lives at byte 40 of the header; point it into the middle of nowhere.
    sh(&format!(
        "printf '\\377\\377\\377\\377' | dd of={} bs=1 seek=40 conv=notrunc status=none",
        q.display()
    ));
    f.assert_refused_damaged("bad", &q);
}

#[test]
fn qcow2_with_a_backing_file_is_refused() {
    let Some(f) = Fixture::new() else { return };
    let q = f.path("overlay.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 -b /etc/passwd -F raw {} 1M",
        q.display()
    ));
    let err = f.import("sneaky", &q).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("backing file"), "{err}");
    f.assert_nothing_registered("sneaky");
}

#[test]
fn truncated_raw_ext4_is_refused() {
    let Some(f) = Fixture::new() else { return };
    let p = f.ext4("root.raw");
    sh(&format!("truncate -s 16M {}", p.display()));
    let err = f.assert_refused_damaged("short", &p);
    assert!(matches!(err, ImageError::Truncated { .. }), "{err}");
}

#[test]
fn qcow2_of_a_bare_ext4_is_recognized_and_needs_a_kernel() {
    let Some(f) = Fixture::new() else { return };
    let raw = f.ext4("root.raw");
    let q = f.to_qcow2(&raw, "root.qcow2");
    let img = f.import("fs", &q).unwrap();
    assert_eq!(img.manifest().disk.layout, DiskLayout::Ext4);
    assert_eq!(img.manifest().disk.file, "rootfs.qcow2");
    let disk = f.path("vm.qcow2");
    img.create_vm_disk(&disk, None).unwrap();
    // No firmware boot of a disk without a boot loader: it would sit in SeaBIOS forever.
    let err = img.boot_input(&disk, None).unwrap_err();
    assert!(err.to_string().contains("without a kernel"), "{err}");

    // With a kernel it boots directly (the files only need to exist for the import).
    let (k, i) = (f.path("vmlinuz"), f.path("initrd.img"));
    std::fs::write(&k, b"kernel").unwrap();
    std::fs::write(&i, b"initrd").unwrap();
    let opts = ImportOptions {
        kernel: Some(k),
        initrd: Some(i),
        cmdline: Some("root=/dev/vda rw quiet".into()),
        ..Default::default()
    };
    let img = f.store.import("fs-k", &q, &opts).unwrap();
    let input = img.boot_input(&disk, None).unwrap();
    assert!(!input.boot_from_disk);
    assert_eq!(input.cmdline.as_deref(), Some("root=/dev/vda rw quiet"));

    // A qcow2 shrunk below its filesystem lost the end of it.
    let short = f.to_qcow2(&raw, "short.qcow2");
    sh(&format!(
        "qemu-img resize -q --shrink -f qcow2 {} 16M",
        short.display()
    ));
    let err = f.assert_refused_damaged("short", &short);
    assert!(matches!(err, ImageError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("the qcow2 disk has"), "{err}");
}

#[test]
fn raw_ext4_and_qcow2_import_and_clone_into_vm_disks() {
    let Some(f) = Fixture::new() else { return };
    let raw = f.ext4("root.raw");
    let img = f.import("mine", &raw).unwrap();
    assert_eq!(img.manifest().disk.layout, DiskLayout::Ext4);
    assert_eq!(img.manifest().disk.virtual_size, 64 << 20);
    assert!(img.disk_path().ends_with("images/mine/rootfs.raw"));
    // Same name again is refused unless replacing.
    let err = f.import("mine", &raw).unwrap_err();
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

    // Random data in a qcow2 is neither a filesystem nor a partitioned disk: accepted as is.
    let q = f.qcow2_with_data("data.qcow2");
    let img = f.import("q", &q).unwrap();
    assert_eq!(img.manifest().disk.file, "rootfs.qcow2");
    assert_eq!(img.manifest().disk.virtual_size, 32 << 20);
    assert_eq!(img.manifest().disk.layout, DiskLayout::Unknown);
    let input = img.boot_input(&disk, None).unwrap();
    assert!(input.boot_from_disk);

    f.store.delete("q").unwrap();
    assert!(!f.store.contains("q"));
    assert!(matches!(
        f.store.delete("q").unwrap_err(),
        ImageError::NotFound(_)
    ));
}
