//! A user's qcow2 of a Debian root filesystem: `qemu-img convert -O qcow2` of the built
//! debian-12 image (cached), imported into a fresh store with the image's kernel and initramfs,
//! recognized as a bare ext4 filesystem behind the qcow2 format, cloned into a VM disk and
//! booted to the login prompt with the seed's host name.

mod common;

use common::*;
use hostel_images::{DiskLayout, ImageStore, ImportOptions, SeedConfig, SeedNetwork};
use hostel_testkit::sh;
use std::time::Duration;

const HOST: &str = "hostel-qcow2-test";

#[test]
fn qcow2_converted_from_the_debian_image_imports_and_boots() {
    let Some(cache) = cached_store() else { return };
    let base = build(&cache, "debian-12").image;
    let Some((kernel, initrd, cmdline)) = base.kernel_boot() else {
        panic!("debian-12 carries no kernel");
    };

    let dir = tempfile::tempdir().unwrap();
    let qcow2 = dir.path().join("debian-12.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 {} {}",
        base.disk_path().display(),
        qcow2.display()
    ));
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let opts = ImportOptions {
        kernel: Some(kernel),
        initrd: Some(initrd),
        cmdline: Some(cmdline.to_string()),
        ..Default::default()
    };
    let img = store.import("mine", &qcow2, &opts).unwrap();
    let disk = &img.manifest().disk;
    assert_eq!(disk.file, "rootfs.qcow2");
    assert_eq!(disk.layout, DiskLayout::Ext4);
    assert_eq!(disk.virtual_size, base.manifest().disk.virtual_size);
    // The import copied the file: the user may delete or change theirs.
    std::fs::remove_file(&qcow2).unwrap();

    let seed = SeedConfig {
        instance_id: format!("q-{}", std::process::id()),
        hostname: HOST.into(),
        network: SeedNetwork::Disabled,
        ..Default::default()
    };
    let run_dir = dir.path().join("vm");
    std::fs::create_dir_all(&run_dir).unwrap();
    let transcript = runtime().block_on(async move {
        let mut g = boot(&store, "mine", &seed, &run_dir, None, 3 << 30).await;
        // The seed's host name at the prompt (`expect` fails the test without it). The
        // prompt has no newline: cloud-init's last console lines may follow on its line.
        g.expect(&format!("{HOST} login:"));
        let transcript = g.transcript();
        g.save_transcript("boot_qcow2");
        g.vm.stop(Duration::from_secs(30)).await;
        transcript
    });
    // The root filesystem is the image's: cloud-init ran from it and named the host.
    assert!(
        transcript.contains("Cloud-init v. "),
        "no cloud-init on the console:\n{transcript}"
    );
}
