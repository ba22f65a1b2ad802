//! Bad input to `hostel run`: one clear message naming the problem, a non-zero status, and
//! nothing left running or half-made.

use hostel_testkit::{guest_assets, is_root, run_arg, LineWatcher, BOOT_TIMEOUT};
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn hostel_run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hostel"))
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(args: &[&str], needle: &str) {
    let (ok, err) = hostel_run(args);
    assert!(!ok, "accepted {args:?}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// No QEMU process whose command line mentions `marker` is alive.
fn assert_no_qemu_with(marker: &str) {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            assert!(
                !(cmd.contains("qemu-system") && cmd.contains(marker)),
                "QEMU left running: {cmd}"
            );
        }
    }
}

fn assert_clean_run_dir(dir: &Path) {
    for f in ["qmp.sock", "console.sock", "qemu.pid"] {
        assert!(!dir.join(f).exists(), "{f} left in {}", dir.display());
    }
}

#[test]
fn spec_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("k");
    std::fs::write(&kernel, "not a kernel").unwrap();
    let k = kernel.to_str().unwrap();
    assert_refused(&["--kernel", k, "--vcpus", "0"], "invalid vcpus");
    assert_refused(&["--kernel", k, "--memory", "lots"], "not a size");
    assert_refused(
        &["--kernel", k, "--disk", "/x.img,format=vmdk"],
        "unknown disk format",
    );
    assert_refused(
        &["--kernel", "/nonexistent/vmlinuz"],
        "kernel /nonexistent/vmlinuz",
    );
    assert_refused(&["--kernel", k], "not a Linux kernel");
    assert_refused(&[], "no kernel given");
}

#[test]
fn host_limits_and_missing_files_are_refused_before_qemu_starts() {
    let Some(a) = guest_assets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let rd = run_dir.to_str().unwrap();
    let (k, i) = (a.vmlinux.to_str().unwrap(), a.initrd.to_str().unwrap());
    let base = ["--kernel", k, "--initrd", i, "--run-dir", rd];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    assert_refused(&with(&["--memory", "64T"]), "the host has");
    assert_refused(
        &with(&["--disk", "/nonexistent.img"]),
        "disk /nonexistent.img",
    );
    let fake_qcow = dir.path().join("fake.qcow2");
    std::fs::write(&fake_qcow, b"plain bytes").unwrap();
    let arg = format!("{},format=qcow2", fake_qcow.display());
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--disk", arg.as_str()])
        .collect();
    assert_refused(&args, "declared qcow2 but the file is raw");
    assert_refused(&with(&["--qemu", "/nonexistent/qemu"]), "QEMU not found");
    let old = dir.path().join("old-qemu");
    std::fs::write(&old, "#!/bin/sh\necho 'QEMU emulator version 2.11.1'\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&old).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--qemu", old.to_str().unwrap()])
        .collect();
    assert_refused(&args, "too old: version 2.11.1");
    assert_refused(&with(&["--net", "tap=lo"]), "cannot open TAP device \"lo\"");
    assert_no_qemu_with(rd);
}

/// Starts a long-running guest holding `disk` (and `tap`, when given).
fn start_holder(disk: &Path, tap: Option<&str>, run_dir: &Path) -> Option<(Child, LineWatcher)> {
    let a = guest_assets()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostel"));
    cmd.arg("run")
        .arg("--kernel")
        .arg(&a.vmlinux)
        .arg("--initrd")
        .arg(&a.initrd)
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--disk")
        .arg(disk)
        .args([
            "--cmdline",
            &format!("quiet {}", run_arg("echo HOLDING; sleep 600")),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(t) = tap {
        cmd.args(["--net", &format!("tap={t}")]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut console = LineWatcher::new(child.stdout.take().unwrap());
    assert!(
        console.wait_for("HOLDING", BOOT_TIMEOUT).is_some(),
        "holder never booted: {}",
        console.transcript()
    );
    Some((child, console))
}

#[test]
fn a_disk_or_tap_in_use_by_another_vm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("shared.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let tap = is_root().then(|| format!("hb{}", std::process::id() % 100_000));
    let holder_dir = dir.path().join("holder");
    let Some((mut holder, _console)) = start_holder(&disk, tap.as_deref(), &holder_dir) else {
        return;
    };
    let a = guest_assets().unwrap();
    let second = dir.path().join("second");
    let base = [
        "--kernel",
        a.vmlinux.to_str().unwrap(),
        "--initrd",
        a.initrd.to_str().unwrap(),
        "--run-dir",
        second.to_str().unwrap(),
    ];
    let mut args = base.to_vec();
    args.extend(["--disk", disk.to_str().unwrap()]);
    let (ok, err) = hostel_run(&args);
    let disk_msg = format!("disk {} is in use by another VM", disk.display());
    if let Some(t) = &tap {
        let net = format!("tap={t}");
        let mut args = base.to_vec();
        args.extend(["--net", net.as_str()]);
        let (tap_ok, tap_err) = hostel_run(&args);
        assert!(
            !tap_ok && tap_err.contains("cannot open TAP device"),
            "{tap_err}"
        );
    }
    // SAFETY: stopping the holder this test started.
    unsafe { libc::kill(holder.id() as i32, libc::SIGTERM) };
    let status = holder.wait().unwrap();
    assert!(!ok, "second VM got the disk");
    assert!(err.contains(&disk_msg), "{err}");
    assert_clean_run_dir(&second);
    assert_no_qemu_with(second.to_str().unwrap());
    // SIGTERM to `hostel run` powers the guest off gracefully.
    assert!(status.code().is_some(), "holder died by signal: {status:?}");
    assert_no_qemu_with(holder_dir.to_str().unwrap());
}
