//! A disk that starts empty (0 bytes, read-only) and is filled and grown under the running
//! guest: what a standby's seed goes through. The guest waits for the capacity change, reads
//! the host's bytes, and still cannot write to it.

use hostel_engine::{DiskFormat, DiskSpec, LaunchOptions, Vm, VmSpecInput};
use hostel_testkit::{guest_assets, run_arg, LineWatcher, BOOT_TIMEOUT};
use std::io::Write;
use std::os::unix::net::UnixStream;

const CONTENT: &[u8] = b"HOSTEL-SEED-0123456789";

#[tokio::test]
async fn an_empty_read_only_disk_grows_under_the_guest_and_stays_read_only() {
    let Some(assets) = guest_assets() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.img");
    std::fs::File::create(&seed).unwrap();
    let script = "while [ \"$(cat /sys/block/vda/size)\" = 0 ]; do sleep 0.1; done; \
        echo GOT=$(head -c 22 /dev/vda) SIZE=$(cat /sys/block/vda/size); \
        if dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; \
        then echo WRITE=done; else echo WRITE=refused; fi";
    let spec = VmSpecInput {
        name: Some("live-disk".into()),
        kernel: Some(assets.vmlinux),
        initrd: Some(assets.initrd),
        cmdline: Some(format!("quiet {}", run_arg(script))),
        disks: vec![DiskSpec {
            path: seed.clone(),
            format: Some(DiskFormat::Raw),
            readonly: true,
        }],
        ..Default::default()
    }
    .validate()
    .unwrap();
    let vm = Vm::launch(&spec, &LaunchOptions::new(dir.path().join("run")))
        .await
        .unwrap();
    let mut console = LineWatcher::new(UnixStream::connect(vm.run_dir().console_socket()).unwrap());
    vm.start().await.unwrap();
    assert!(
        console.wait_for("HOSTEL-READY", BOOT_TIMEOUT).is_some(),
        "{}",
        console.transcript()
    );
    // The host fills the file QEMU holds open (4 KiB: whole sectors), then grows the disk.
    let mut bytes = CONTENT.to_vec();
    bytes.resize(4096, 0);
    let mut f = std::fs::OpenOptions::new().write(true).open(&seed).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
    vm.grow_disk(0, DiskFormat::Raw, bytes.len() as u64, true)
        .await
        .unwrap();
    let got = console
        .wait_for("GOT=", BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("guest never saw the disk grow:\n{}", console.transcript()));
    assert!(got.contains("GOT=HOSTEL-SEED-0123456789 SIZE=8"), "{got}");
    let write = console
        .wait_for("WRITE=", BOOT_TIMEOUT)
        .expect("write attempt");
    assert!(write.contains("WRITE=refused"), "{write}");
    assert_eq!(&std::fs::read(&seed).unwrap()[..CONTENT.len()], CONTENT);
    vm.wait().await;
}
