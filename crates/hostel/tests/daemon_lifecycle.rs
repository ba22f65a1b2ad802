//! The daemon's lifecycle under crashes (issue 14): a daemon killed at a chosen point
//! (`HOSTEL_FAILPOINTS` holds it there) finishes or undoes what was cut at its next start;
//! stops are bounded and overridable; calls racing a delete are 404; SIGTERM drains.
//! Guests boot under TCG: run with `--test-threads=1`.
//!
//! On the daemon before the reconciler (a8eec88) these failed: start:false showed `creating`;
//! the orphan was never killed; the cut stop stayed running; the force stop waited out the
//! 300 s stop; the unwatched power-off was `crashed`; racing calls got 500 "VM supervisor
//! dropped the request". The failpoint tests need the failpoints this change adds.

mod common;

use common::api::{
    all_qemus, client, daemon_with_failpoints, guest_dir, qemus_of, restart, show, small_vm,
    stop_body, tenant_client, tenant_id, wait_console, wait_vm,
};
use common::{alive, boot_slots, poll, HOSTEL};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{run_arg, BOOT_TIMEOUT};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);
/// A guest that ignores the ACPI power button (the harness's listener is killed) and says so.
const DEAF: &str = "killall dd; echo DEAF-TO-POWER-BUTTON; sleep 100000";

fn daemon(tag: &str) -> Option<TestDaemon> {
    let dir = guest_dir()?;
    Some(TestDaemon::start(Path::new(HOSTEL), &dir, tag))
}

/// Waits until the daemon's log says it holds at a failpoint.
fn wait_failpoint(d: &TestDaemon) {
    poll("the daemon at its failpoint", BOOT_TIMEOUT, || {
        d.log().contains("holding at a failpoint").then_some(())
    });
}

/// Defect 7 and the stop bound of defect 8, without booting anything.
#[test]
fn a_vm_created_without_start_is_stopped_and_a_stop_grace_is_bounded() {
    let Some(d) = daemon("lc-nostart") else {
        return;
    };
    let (_, c) = tenant_client(&d, "acme");
    let vm = c.vms(None).create(&small_vm("idle", false, None)).unwrap();
    assert_eq!(
        (vm.state.as_str(), vm.desired.as_str()),
        ("stopped", "stopped")
    );
    let err = c
        .vms(None)
        .stop("idle", &stop_body(false, Some(1_000_000)))
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("timeout_secs"), "{err}");
    assert!(err.to_string().contains("300"), "{err}");
    // A daemon restart neither undoes it nor changes it.
    let d = restart(d);
    let c = client(&d, c.token().unwrap());
    let vm = show(&c, "idle").expect("kept");
    assert_eq!(vm.state, "stopped");
}

/// Defects 1 and 2: a daemon killed between QEMU's launch and `cont`, and the QEMU's pid
/// file gone: the next daemon finds it by its command line, continues it, and the guest runs.
#[test]
fn a_qemu_paused_before_cont_without_a_pidfile_is_found_and_continued() {
    let Some(d) = daemon_with_failpoints("lc-prelaunch", "launch.before-cont") else {
        return;
    };
    let _slot = boot_slots(1);
    let (token, c) = tenant_client(&d, "acme");
    let create = {
        let c = c.clone();
        std::thread::spawn(move || c.vms(None).create(&small_vm("cut", true, None)))
    };
    wait_failpoint(&d);
    let id = show(&c, "cut").expect("recorded").id;
    let state = d.state_path();
    let pids = qemus_of(&state, &id);
    assert_eq!(pids.len(), 1, "one paused QEMU: {pids:?}");
    std::fs::remove_file(state.join("run").join(&id).join("qemu.pid")).expect("pid file");

    let d = restart(d);
    assert!(
        create.join().unwrap().is_err(),
        "the cut create was acknowledged"
    );
    let c = client(&d, &token);
    let vm = wait_vm(&c, "cut", "running", SETTLE, |v| v.state == "running");
    assert_eq!(vm.pid, Some(pids[0] as u32), "the same QEMU, adopted");
    wait_console(&c, "cut", "HOSTEL-READY", BOOT_TIMEOUT);
    // It is the daemon's: a delete ends it.
    c.vms(None).delete("cut").unwrap();
    assert!(
        !alive(pids[0] as u32),
        "QEMU {} survived its VM's delete",
        pids[0]
    );
}

/// Defect 2: QEMUs and disk directories no record owns are removed at start-up.
#[test]
fn qemus_and_disks_without_a_record_are_removed_at_start_up() {
    let Some(d) = daemon("lc-orphan") else {
        return;
    };
    let (token, c) = tenant_client(&d, "acme");
    let vm = c.vms(None).create(&small_vm("kept", false, None)).unwrap();
    let state = d.state_path();
    let stray = "00000000-0000-4000-8000-000000000001";
    let run = state.join("run").join(stray);
    std::fs::create_dir_all(&run).unwrap();
    // A QEMU that lost its record: the QEMU binary the daemon launches (no machine, paused),
    // found by its command line.
    let qemu = std::env::var_os("HOSTEL_QEMU").unwrap_or("qemu-system-x86_64".into());
    let mut orphan = std::process::Command::new(qemu)
        .args([
            "-machine",
            "none",
            "-S",
            "-nodefaults",
            "-display",
            "none",
            "-pidfile",
        ])
        .arg(run.join("qemu.pid"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A forger: any local process can name a VM's run directory in its command line, but it
    // is not the daemon's QEMU binary, so it is neither adopted nor killed.
    let mut forged = std::process::Command::new("sh")
        .args(["-c", "read x", "qemu-system-x86_64", "-pidfile"])
        .arg(state.join("run").join(&vm.id).join("qemu.pid"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tenant = tenant_id(&d, "acme");
    let disks = state.join("disks").join(&tenant).join(stray);
    std::fs::create_dir_all(&disks).unwrap();
    std::fs::write(disks.join("disk0.raw"), b"").unwrap();
    let kept_disks = state.join("disks").join(&tenant).join(&vm.id);
    assert!(kept_disks.is_dir());

    let d = restart(d);
    let status = poll("the orphan killed", SETTLE, || orphan.try_wait().unwrap());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!disks.exists() && !run.exists(), "stray directories stayed");
    assert!(kept_disks.is_dir(), "a VM's own disks were removed");
    let c = client(&d, &token);
    assert_eq!(show(&c, "kept").unwrap().state, "stopped");
    assert_eq!(
        forged.try_wait().unwrap(),
        None,
        "a forged command line was killed"
    );
    forged.kill().unwrap();
    forged.wait().unwrap();
}

/// Defect 3: a stop cut during the grace period of a guest that ignores the power button is
/// finished by the next daemon (at its recorded deadline), not left running.
#[test]
fn a_stop_cut_during_its_grace_period_is_finished() {
    let Some(d) = daemon("lc-stop") else {
        return;
    };
    let _slot = boot_slots(1);
    let (token, c) = tenant_client(&d, "acme");
    c.vms(None)
        .create(&small_vm("deaf", true, Some(run_arg(DEAF))))
        .unwrap();
    wait_console(&c, "deaf", "DEAF-TO-POWER-BUTTON", BOOT_TIMEOUT);
    let pid = show(&c, "deaf").unwrap().pid.expect("pid");
    let stop = {
        let c = c.clone();
        std::thread::spawn(move || c.vms(None).stop("deaf", &stop_body(false, Some(8))))
    };
    wait_vm(&c, "deaf", "stopping", SETTLE, |v| v.state == "stopping");
    let d = restart(d);
    let _ = stop.join();
    let c = client(&d, &token);
    let vm = wait_vm(&c, "deaf", "stopped", SETTLE, |v| v.state == "stopped");
    assert_eq!(vm.desired, "stopped");
    assert!(!alive(pid), "QEMU {pid} still runs");
}

/// Defect 8: a stop with the longest grace on a guest that ignores the power button does not
/// freeze the VM: a force stop ends it at once, and so does a delete.
#[test]
fn a_force_stop_and_a_delete_override_a_pending_stop() {
    let Some(d) = daemon("lc-override") else {
        return;
    };
    let _slot = boot_slots(1);
    let (_, c) = tenant_client(&d, "acme");
    c.vms(None)
        .create(&small_vm("deaf", true, Some(run_arg(DEAF))))
        .unwrap();
    for round in ["force stop", "delete"] {
        if round == "delete" {
            c.vms(None).start("deaf").unwrap();
        }
        wait_console(&c, "deaf", "DEAF-TO-POWER-BUTTON", BOOT_TIMEOUT);
        let pid = show(&c, "deaf").unwrap().pid.expect("pid");
        let slow = {
            let c = c.clone();
            std::thread::spawn(move || c.vms(None).stop("deaf", &stop_body(false, Some(300))))
        };
        wait_vm(&c, "deaf", "stopping", SETTLE, |v| v.state == "stopping");
        let t = Instant::now();
        if round == "delete" {
            c.vms(None).delete("deaf").unwrap();
            assert!(show(&c, "deaf").is_none());
        } else {
            let v = c.vms(None).stop("deaf", &stop_body(true, None)).unwrap();
            assert_eq!(v.state, "stopped", "{v:?}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{round} waited {:?} behind the pending stop",
            t.elapsed()
        );
        assert!(!alive(pid), "{round}: QEMU {pid} still runs");
        // The slow stop's caller is answered as well: done, or the VM is gone.
        match slow.join().unwrap() {
            Ok(_) => {}
            Err(e) => assert_eq!(e.status(), Some(404), "{round}: {e}"),
        }
    }
}

/// Defect 3: a delete cut after the QEMU was killed is finished by the next daemon: no
/// record, no disks, no QEMU, no usage.
#[test]
fn a_delete_cut_half_way_is_finished() {
    let Some(d) = daemon_with_failpoints("lc-delete", "delete.before-finish") else {
        return;
    };
    let _slot = boot_slots(1);
    let (token, c) = tenant_client(&d, "acme");
    let vm = c.vms(None).create(&small_vm("gone", true, None)).unwrap();
    let pid = vm.pid.expect("pid");
    let del = {
        let c = c.clone();
        std::thread::spawn(move || c.vms(None).delete("gone"))
    };
    wait_failpoint(&d);
    let state = d.state_path();
    let tenant = tenant_id(&d, "acme");
    let d = restart(d);
    let _ = del.join();
    let c = client(&d, &token);
    assert!(
        show(&c, "gone").is_none(),
        "the cut delete was not finished"
    );
    assert!(!alive(pid));
    assert!(!state.join("disks").join(&tenant).join(&vm.id).exists());
    assert!(qemus_of(&state, &vm.id).is_empty());
    let all = client(&d, &d.operator_token).list_tenants().unwrap();
    let acme = all.iter().find(|t| t.name == "acme").unwrap();
    assert_eq!(acme.usage.vms, 0, "{acme:?}");
}

/// Defect 3: a start cut before QEMU was launched is finished by the next daemon.
#[test]
fn a_start_cut_before_qemu_launched_is_finished() {
    let Some(d) = daemon_with_failpoints("lc-start", "launch.before-spawn") else {
        return;
    };
    let _slot = boot_slots(1);
    let (token, c) = tenant_client(&d, "acme");
    c.vms(None).create(&small_vm("later", false, None)).unwrap();
    let start = {
        let c = c.clone();
        std::thread::spawn(move || c.vms(None).start("later"))
    };
    wait_failpoint(&d);
    let d = restart(d);
    let _ = start.join();
    let c = client(&d, &token);
    let vm = wait_vm(&c, "later", "running", SETTLE, |v| v.state == "running");
    assert_eq!(vm.desired, "running");
    wait_console(&c, "later", "HOSTEL-READY", BOOT_TIMEOUT);
}

/// A restart cut between its stop and its start (kill -9 there) is finished by the next
/// daemon: the VM runs again. Before the fix the stop had recorded it wanted stopped, and a
/// daemon killed at this point left it stopped for good.
#[test]
fn a_restart_cut_between_its_stop_and_its_start_is_finished() {
    let Some(d) = daemon_with_failpoints("lc-restart", "restart.before-start") else {
        return;
    };
    let _slot = boot_slots(1);
    let (token, c) = tenant_client(&d, "acme");
    c.vms(None).create(&small_vm("again", true, None)).unwrap();
    wait_console(&c, "again", "HOSTEL-READY", BOOT_TIMEOUT);
    let first = show(&c, "again").unwrap().pid;
    assert!(first.is_some());
    let call = {
        let c = c.clone();
        std::thread::spawn(move || c.vms(None).restart("again"))
    };
    wait_failpoint(&d);
    assert_eq!(show(&c, "again").unwrap().state, "stopped");
    let d = restart(d);
    let _ = call.join();
    let c = client(&d, &token);
    let vm = wait_vm(&c, "again", "running again", SETTLE, |v| {
        v.state == "running" && v.pid.is_some()
    });
    assert_eq!(vm.desired, "running");
    assert_ne!(vm.pid, first);
}

/// Defect 3: a guest that powers itself off while no daemon watches is recorded as stopped
/// (its owner's wish), not as crashed.
#[test]
fn a_guest_powered_off_while_the_daemon_was_down_is_stopped() {
    let Some(d) = daemon("lc-poweroff") else {
        return;
    };
    let _slot = boot_slots(1);
    let (token, c) = tenant_client(&d, "acme");
    let vm = c.vms(None).create(&small_vm("off", true, None)).unwrap();
    wait_console(&c, "off", "HOSTEL-READY", BOOT_TIMEOUT);
    let pid = vm.pid.expect("pid");
    let dir = guest_dir().unwrap();
    let state = d.kill_daemon_only();
    {
        use std::io::Write;
        let sock = state.path().join("run").join(&vm.id).join("console.sock");
        let mut s = std::os::unix::net::UnixStream::connect(sock).expect("console");
        s.write_all(b"\npoweroff -f\n").unwrap();
        poll("the guest powered off", SETTLE, || {
            (!alive(pid)).then_some(())
        });
    }
    let d = TestDaemon::start_in(Path::new(HOSTEL), &dir, state);
    let c = client(&d, &token);
    let vm = show(&c, "off").unwrap();
    assert_eq!(
        (vm.state.as_str(), vm.desired.as_str()),
        ("stopped", "stopped"),
        "{vm:?}"
    );
    assert!(vm.last_exit.unwrap_or_default().contains("powered off"));
}

/// Defect 6: SIGTERM lets a create in flight finish (its guest continued), then the daemon
/// exits and the VM keeps running.
#[test]
fn sigterm_drains_a_create_in_flight() {
    let Some(mut d) = daemon_with_failpoints("lc-drain", "launch.before-cont=3000") else {
        return;
    };
    let _slot = boot_slots(1);
    let (token, c) = tenant_client(&d, "acme");
    let create = {
        let c = c.clone();
        std::thread::spawn(move || c.vms(None).create(&small_vm("drained", true, None)))
    };
    wait_failpoint(&d);
    // SAFETY: signalling the daemon child this test started.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    let vm = create
        .join()
        .unwrap()
        .expect("the create in flight was cut by SIGTERM");
    assert_eq!(vm.state, "running");
    let exited = poll("the daemon exits", SETTLE, || d.child.try_wait().unwrap());
    assert!(exited.success(), "{exited:?}");
    let pid = vm.pid.expect("pid");
    assert!(alive(pid), "the VM died with the daemon");
    let d = restart(d);
    let c = client(&d, &token);
    let again = show(&c, "drained").unwrap();
    assert_eq!((again.state.as_str(), again.pid), ("running", Some(pid)));
    wait_console(&c, "drained", "HOSTEL-READY", BOOT_TIMEOUT);
}

/// Defect 9: starts, stops and shows racing a delete get 404 once it wins, never a 500, and
/// no QEMU is left for the deleted VM.
#[test]
fn calls_racing_a_delete_get_404_and_leave_nothing_running() {
    let Some(d) = daemon("lc-race") else {
        return;
    };
    let _slots = boot_slots(2);
    let (_, c) = tenant_client(&d, "acme");
    let state = d.state_path();
    for round in 0..3 {
        let name = format!("race{round}");
        let vm = c.vms(None).create(&small_vm(&name, false, None)).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let racers: Vec<_> = (0..6)
            .map(|i| {
                let (c, name, calls) = (c.clone(), name.clone(), calls.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while Instant::now() < deadline {
                        let r = match i % 3 {
                            0 => c.vms(None).start(&name).map(drop),
                            1 => c.vms(None).stop(&name, &stop_body(true, None)).map(drop),
                            _ => c.vms(None).show(&name).map(drop),
                        };
                        calls.fetch_add(1, Ordering::Relaxed);
                        match r {
                            Err(e) if e.status() == Some(404) => return,
                            Err(e) => assert_ne!(e.status(), Some(500), "{name}: {e}"),
                            Ok(()) => {}
                        }
                    }
                    panic!("{name}: never saw the delete");
                })
            })
            .collect();
        // Later in each round's traffic: first among the first calls, then amid starts.
        let after = 6 * (round + 1);
        poll("racing calls under way", SETTLE, || {
            (calls.load(Ordering::Relaxed) >= after).then_some(())
        });
        c.vms(None).delete(&name).unwrap();
        for r in racers {
            r.join().unwrap();
        }
        assert!(
            qemus_of(&state, &vm.id).is_empty(),
            "a QEMU outlived {name}"
        );
    }
    assert!(all_qemus(&state).is_empty());
}

/// The periodic sweep (issue 14 item 4), with no API call to prompt anything: a VM's QEMU
/// killed from outside is seen as crashed (its actor), and a QEMU started into a run
/// directory no record owns while the daemon runs is killed within two sweeps; a forged
/// command line and a VM's own QEMU are left alone.
#[test]
fn the_periodic_sweep_handles_what_no_api_call_reports() {
    let Some(dir) = guest_dir() else {
        return;
    };
    let d = TestDaemon::start_with_env(
        Path::new(HOSTEL),
        &dir,
        "lc-sweep",
        &[("HOSTEL_RECONCILE_SECS", "1")],
    );
    let (_token, c) = tenant_client(&d, "acme");
    let state = d.state_path();
    let slots = boot_slots(1);
    let busy = small_vm(
        "busy",
        true,
        Some(run_arg("echo SWEEP-READY; sleep 100000")),
    );
    let vm = c.vms(None).create(&busy).unwrap();
    wait_console(&c, "busy", "SWEEP-READY", BOOT_TIMEOUT);
    drop(slots);

    let stray = "00000000-0000-4000-8000-000000000002";
    let run = state.join("run").join(stray);
    std::fs::create_dir_all(&run).unwrap();
    let qemu = std::env::var_os("HOSTEL_QEMU").unwrap_or("qemu-system-x86_64".into());
    let mut orphan = std::process::Command::new(qemu)
        .args(["-machine", "none", "-S", "-nodefaults", "-display", "none"])
        .arg("-pidfile")
        .arg(run.join("qemu.pid"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut forged = std::process::Command::new("sh")
        .args(["-c", "read x", "qemu-system-x86_64", "-pidfile"])
        .arg(state.join("run").join(stray).join("qemu.pid"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let status = poll("the sweep to kill the orphan", SETTLE, || {
        orphan.try_wait().unwrap()
    });
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // The sweep removes the directory after the kill it waits for: the exit seen here can
    // come first.
    poll(
        "the sweep to remove the orphan's run directory",
        SETTLE,
        || (!run.exists()).then_some(()),
    );
    assert_eq!(
        forged.try_wait().unwrap(),
        None,
        "a forged command line was killed"
    );
    forged.kill().unwrap();
    forged.wait().unwrap();
    let own = qemus_of(&state, &vm.id);
    assert_eq!(own.len(), 1, "the VM's own QEMU is left running: {own:?}");

    // Killed from outside: noticed without any call about it (restart policy `never`).
    // SAFETY: the QEMU of this test's VM, found under its private state directory.
    unsafe { libc::kill(own[0], libc::SIGKILL) };
    let seen = wait_vm(&c, "busy", "crashed", SETTLE, |v| v.state == "crashed");
    assert!(seen.pid.is_none(), "a crashed VM has no pid: {seen:?}");
    assert!(qemus_of(&state, &vm.id).is_empty());
}
