//! A real guest: the busybox guest under QEMU (TCG) with a `vhost-user-blk` disk served from a
//! mirrored pool volume writes a pattern to /dev/vda with fsync (a FLUSH), drops its caches
//! and reads it back, writes another megabyte and discards it (blkdiscard); the pool, closed
//! and reopened from its devices, holds the pattern and only it.
//! Skipped (saying why) without QEMU or the guest assets (`make guest`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hostel_pool::{BlockDevice, CreateOptions, FileDevice, Pool};
use hostel_storage::{Disk, DiskServer};
use hostel_testkit::{guest_assets, run_arg, LineWatcher, BOOT_TIMEOUT};

const VOLUME: u64 = 64 << 20;
const PATTERN: &[u8] = b"hostel-storage-pattern\n";

fn devices(paths: &[std::path::PathBuf]) -> Vec<Box<dyn BlockDevice>> {
    paths
        .iter()
        .map(|p| Box::new(FileDevice::open(p).unwrap()) as Box<dyn BlockDevice>)
        .collect()
}

#[test]
fn busybox_guest_writes_and_reads_back_through_the_pool() {
    let Some(assets) = guest_assets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = ["a", "b"].iter().map(|n| dir.path().join(n)).collect();
    for p in &paths {
        std::fs::File::create(p)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
    }
    let pool = Arc::new(Pool::create(devices(&paths), CreateOptions::default()).unwrap());
    pool.create_volume("vm1-disk0", VOLUME, 2).unwrap();
    let sock = dir.path().join("disk0.sock");
    let server = DiskServer::start(
        Disk {
            pool: pool.clone(),
            volume: "vm1-disk0".into(),
            serial: "hostel-vm1-disk0".into(),
            queues: 2,
        },
        &sock,
    )
    .unwrap();

    let script = "set -e; yes hostel-storage-pattern | head -c 1048576 > /tmp/p; \
        dd if=/tmp/p of=/dev/vda bs=65536 seek=16 conv=fsync 2>/dev/null; \
        echo 3 > /proc/sys/vm/drop_caches; \
        dd if=/dev/vda of=/tmp/q bs=65536 skip=16 count=16 2>/dev/null; \
        cmp /tmp/p /tmp/q && echo READBACK-OK; \
        dd if=/tmp/p of=/dev/vda bs=65536 seek=128 conv=fsync 2>/dev/null; \
        blkdiscard -o 8388608 -l 1048576 /dev/vda; echo DISCARD-OK rc=$?; \
        echo SERIAL=$(cat /sys/block/vda/serial) SIZE=$(cat /sys/block/vda/size) \
        QUEUES=$(ls /sys/block/vda/mq | wc -l)";
    // As the engine boots TCG guests: told the host's TSC rate (calibrating against the
    // emulated PIT fails on a loaded host), on the engine's named CPU model.
    let tsc = hostel_engine::tsc::host_tsc_khz()
        .map(|k| format!(" tsc_early_khz={k}"))
        .unwrap_or_default();
    let append = format!(
        "{}{tsc} pci=off panic=-1 {}",
        hostel_engine::qemu_args::PLATFORM_CMDLINE,
        run_arg(script)
    );
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args([
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-m",
            "256M",
        ])
        .args([
            "-machine",
            "microvm,acpi=on,pcie=off,rtc=on,memory-backend=mem",
        ])
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .args([
            "-smp",
            "2",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            hostel_engine::qemu_args::TCG_CPU_MODEL,
        ])
        .arg("-kernel")
        .arg(&assets.vmlinux)
        .arg("-initrd")
        .arg(&assets.initrd)
        .args(["-append", &append, "-serial", "stdio"])
        .arg("-chardev")
        .arg(format!("socket,id=d0,path={}", sock.display()))
        .args(["-device", "vhost-user-blk,chardev=d0,num-queues=2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu starts");
    let mut out = LineWatcher::new(qemu.stdout.take().unwrap());
    let exit = out.wait_for("HOSTEL-EXIT", BOOT_TIMEOUT + Duration::from_secs(120));
    let _ = qemu.kill();
    let _ = qemu.wait();
    let transcript = out.transcript();
    for l in transcript
        .lines()
        .filter(|l| l.contains("-OK") || l.contains("SERIAL="))
    {
        eprintln!("guest: {l}");
    }
    assert!(exit.is_some(), "guest did not finish:\n{transcript}");
    assert!(
        transcript.contains("READBACK-OK"),
        "guest read back something else:\n{transcript}"
    );
    assert!(
        transcript.contains("DISCARD-OK rc=0"),
        "guest discard failed:\n{transcript}"
    );
    let sectors = (VOLUME / 512).to_string();
    assert!(
        transcript.contains(&format!("SERIAL=hostel-vm1-disk0 SIZE={sectors} QUEUES=2")),
        "serial, size or queue count wrong:\n{transcript}"
    );
    server.stop();

    // Flushed by the guest: there after the pool is reopened from its devices.
    drop(
        Arc::try_unwrap(pool)
            .ok()
            .expect("server released the pool"),
    );
    let pool = Pool::open(devices(&paths)).unwrap();
    let mut got = vec![0u8; 1 << 20];
    pool.read("vm1-disk0", 1 << 20, &mut got).unwrap();
    let want: Vec<u8> = PATTERN.iter().copied().cycle().take(1 << 20).collect();
    assert!(got == want, "the pool does not hold what the guest wrote");
    // The second megabyte the guest wrote and then discarded is given back.
    assert_eq!(pool.volume("vm1-disk0").unwrap().allocated, 1 << 20);
}
