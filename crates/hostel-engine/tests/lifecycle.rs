//! Real guests through the engine library: boot, vCPU count, QMP control, power-off from both
//! sides, and a killed QEMU noticed with its reason.

use hostel_engine::{ExitReason, LaunchOptions, RunState, Vm, VmSpecInput};
use hostel_testkit::{guest_assets, run_arg, LineWatcher, BOOT_TIMEOUT};
use std::os::unix::net::UnixStream;
use std::time::Duration;

struct Booted {
    vm: Vm,
    console: LineWatcher,
    _dir: tempfile::TempDir,
}

/// Launches the busybox guest paused, attaches to its console, then lets it run.
async fn boot(vcpus: u32, cmdline: &str) -> Option<Booted> {
    let assets = guest_assets()?;
    let dir = tempfile::tempdir().unwrap();
    let spec = VmSpecInput {
        name: Some("lifecycle".into()),
        vcpus: Some(vcpus),
        kernel: Some(assets.vmlinux),
        initrd: Some(assets.initrd),
        cmdline: Some(format!("quiet {cmdline}")),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let vm = Vm::launch(&spec, &LaunchOptions::new(dir.path()))
        .await
        .unwrap();
    let console = UnixStream::connect(vm.run_dir().console_socket()).unwrap();
    let console = LineWatcher::new(console);
    vm.start().await.unwrap();
    Some(Booted {
        vm,
        console,
        _dir: dir,
    })
}

#[tokio::test]
async fn boots_to_ready_with_the_specified_vcpus_and_powers_off_from_inside() {
    let Some(mut b) = boot(2, &run_arg("echo CPUS=$(nproc)")).await else {
        return;
    };
    assert!(
        b.console.wait_for("HOSTEL-READY", BOOT_TIMEOUT).is_some(),
        "no HOSTEL-READY:\n{}",
        b.console.transcript()
    );
    let cpus = b
        .console
        .wait_for("CPUS=", BOOT_TIMEOUT)
        .expect("nproc output");
    assert_eq!(cpus.trim(), "CPUS=2");
    assert_eq!(b.vm.wait().await, ExitReason::GuestPoweroff);
    // The console log on disk has the whole session too.
    let log = std::fs::read_to_string(b.vm.console_log()).unwrap();
    assert!(log.contains("HOSTEL-EXIT 0"), "{log}");
    assert!(
        !b.vm.run_dir().qmp_socket().exists(),
        "runtime files left behind"
    );
}

#[tokio::test]
async fn pause_resume_and_graceful_powerdown_through_qmp() {
    let Some(mut b) = boot(1, "").await else {
        return;
    };
    assert!(b.console.wait_for("HOSTEL-READY", BOOT_TIMEOUT).is_some());
    assert_eq!(b.vm.status().await.unwrap(), RunState::Running);
    b.vm.pause().await.unwrap();
    assert_eq!(b.vm.status().await.unwrap(), RunState::Paused);
    b.vm.resume().await.unwrap();
    assert_eq!(b.vm.status().await.unwrap(), RunState::Running);
    // The guest answers the ACPI power button itself: a guest power-off, not a host stop.
    let reason = b.vm.stop(Duration::from_secs(60)).await;
    assert_eq!(
        reason,
        ExitReason::GuestPoweroff,
        "{}",
        b.console.transcript()
    );
}

#[tokio::test]
async fn a_killed_qemu_is_noticed_with_its_reason() {
    let Some(mut b) = boot(1, "").await else {
        return;
    };
    assert!(b.console.wait_for("HOSTEL-READY", BOOT_TIMEOUT).is_some());
    // SAFETY: signalling the QEMU this test launched.
    unsafe { libc::kill(b.vm.pid(), libc::SIGKILL) };
    let reason = b.vm.wait_timeout(Duration::from_secs(10)).await;
    assert_eq!(reason, Some(ExitReason::Killed { signal: 9 }));
    assert!(reason.unwrap().to_string().contains("SIGKILL"));
    assert!(!b.vm.exited().unwrap().is_clean());
}
