//! End to end through the `hostel` CLI against a real `hostel daemon`: supervision of guests
//! across a `kill -9` of the daemon, and a guest's QEMU dying behind the daemon's back.
//! The daemon and the helpers are in `common` (see there for cleanup and boot slots).

mod common;

use common::{
    alive, boot_slots, daemon_with_guests, poll, proc_stat, sigkill, DaemonCli, NOTICE_TIMEOUT,
};
use hostel_api::{TenantView, VmView};
use std::collections::BTreeMap;
use std::time::Duration;

/// `kill -9` of the daemon under running guests: they keep running, and the restarted
/// daemon shows everything as it was, with the same QEMU processes, and supervises them.
#[test]
fn daemon_kill9_and_restart_keeps_everything() {
    let Some(mut d) = daemon_with_guests("e2e-kill9") else {
        return;
    };
    let a = d.tenant("alpha", &[]);
    let b = d.tenant("bravo", &[]);
    {
        let _slots = boot_slots(2);
        a.create("one", &["--memory", "128M"]);
        b.create("two", &["--memory", "128M", "--restart-policy", "never"]);
        a.wait_ready("one", 1);
        b.wait_ready("two", 1);
    }
    a.create("idle", &["--no-start", "--memory", "64M"]);

    let tenants_before: Vec<TenantView> = d.op(&["tenant", "list", "-o", "json"]).json();
    let (a_before, b_before) = (a.vms(), b.vms());
    let procs: Vec<(u32, u64)> = a_before
        .iter()
        .chain(&b_before)
        .filter_map(|v| v.pid)
        .map(|pid| (pid, proc_stat(pid).expect("QEMU alive").1))
        .collect();
    assert_eq!(procs.len(), 2, "{a_before:#?} {b_before:#?}");

    d.kill9();
    for (pid, start) in &procs {
        assert!(alive(*pid), "QEMU {pid} died with the daemon");
        assert_eq!(proc_stat(*pid).map(|s| s.1), Some(*start));
    }
    // While it is down the CLI says so.
    a.cli(&["vm", "list"]).refused("cannot reach");

    d.respawn();
    let tenants_after: Vec<TenantView> = d.op(&["tenant", "list", "-o", "json"]).json();
    let key = |ts: &[TenantView]| -> Vec<_> {
        ts.iter()
            .map(|t| (t.id.clone(), t.name.clone(), t.quota, t.usage))
            .collect()
    };
    assert_eq!(key(&tenants_after), key(&tenants_before));
    // Old tokens still work; every VM is as it was.
    let shape = |vms: &[VmView]| -> BTreeMap<String, String> {
        vms.iter()
            .map(|v| {
                (
                    v.id.clone(),
                    format!(
                        "{} {} {} {} {:?} {} {} {} {} {:?}",
                        v.name,
                        v.state,
                        v.desired,
                        v.restart_count,
                        v.pid,
                        v.vcpus,
                        v.memory_mib,
                        v.image,
                        v.restart_policy,
                        v.last_exit
                    ),
                )
            })
            .collect()
    };
    assert_eq!(shape(&a.vms()), shape(&a_before));
    assert_eq!(shape(&b.vms()), shape(&b_before));
    for (pid, start) in &procs {
        assert!(alive(*pid), "QEMU {pid} died across the restart");
        assert_eq!(
            proc_stat(*pid).map(|s| s.1),
            Some(*start),
            "QEMU {pid} replaced"
        );
    }
    let console = a.cli(&["vm", "console", "one"]);
    assert!(console.stdout.contains("HOSTEL-READY"), "{console:?}");

    // The new daemon supervises the guests it adopted: a kill behind its back is noticed...
    let two = b.show("two");
    let two_pid = two.pid.unwrap();
    sigkill(two_pid);
    let crashed = poll("adopted VM noticed dead", NOTICE_TIMEOUT, || {
        let v = b.show("two");
        (v.state == "crashed").then_some(v)
    });
    assert!(crashed.pid.is_none(), "{crashed:?}");
    assert!(crashed.last_exit.is_some(), "{crashed:?}");
    // ...and it can stop them.
    let one_pid = a.show("one").pid.unwrap();
    let out = a.cli(&["vm", "stop", "one", "--force"]);
    assert!(out.ok(), "{out:?}");
    poll("adopted VM stopped", Duration::from_secs(30), || {
        let v = a.show("one");
        (v.state == "stopped" && !alive(one_pid)).then_some(())
    });

    // Start, restart and stop on QEMUs the new daemon started itself.
    let _slot = boot_slots(1);
    let started: VmView = a.cli(&["vm", "start", "one", "-o", "json"]).json();
    assert_eq!(started.desired, "running");
    let first = a.wait_running("one", Duration::from_secs(30));
    assert_ne!(first.pid, Some(one_pid));
    a.wait_ready("one", 2);
    let out = a.cli(&["vm", "restart", "one"]);
    assert!(out.ok(), "{out:?}");
    let second = poll("one restarted", Duration::from_secs(60), || {
        let v = a.show("one");
        (v.state == "running" && v.pid.is_some() && v.pid != first.pid).then_some(v)
    });
    a.wait_ready("one", 3);
    // A booted guest powers off when asked: well inside the timeout, and it says so.
    let out = a.cli(&["vm", "stop", "one", "--timeout", "60", "-o", "json"]);
    let stopped: VmView = out.json();
    let pid = second.pid.unwrap();
    let stopped = poll("one stopped", Duration::from_secs(30), || {
        let v = if stopped.state == "stopped" {
            stopped.clone()
        } else {
            a.show("one")
        };
        (v.state == "stopped" && !alive(pid)).then_some(v)
    });
    assert_eq!(
        stopped.last_exit.as_deref(),
        Some("guest powered off"),
        "{stopped:?}"
    );
}

/// A guest's QEMU killed behind the daemon's back: noticed within a couple of seconds, and
/// restarted (new pid, restart_count 1) when the policy says so.
#[test]
fn killed_qemu_is_noticed_and_restarted_by_policy() {
    let Some(d) = daemon_with_guests("e2e-crash") else {
        return;
    };
    let t = d.tenant("crashy", &["--vcpus", "8", "--memory", "2G"]);
    for (vm, policy, restarts) in [
        ("stays-down", "never", false),
        ("comes-back", "always", true),
        ("on-failure", "on_failure", true),
    ] {
        let _slot = boot_slots(1);
        t.create(vm, &["--memory", "128M", "--restart-policy", policy]);
        let first = t.wait_running(vm, Duration::from_secs(30));
        assert_eq!(first.restart_policy, policy);
        let pid = first.pid.unwrap();
        sigkill(pid);

        let noticed = poll(&format!("{vm}: the kill noticed"), NOTICE_TIMEOUT, || {
            let v = t.show(vm);
            (v.state == "crashed" || v.restart_count > 0).then_some(v)
        });
        if restarts {
            let again = poll(&format!("{vm} restarted"), Duration::from_secs(30), || {
                let v = t.show(vm);
                (v.state == "running" && v.pid.is_some_and(|p| p != pid)).then_some(v)
            });
            assert_eq!(again.restart_count, 1, "{again:?}");
            assert!(alive(again.pid.unwrap()));
            // `last_exit` is why it last exited, restarted since or not: it must still say
            // what killed it.
            assert!(
                again.last_exit.as_deref().unwrap_or("").contains("SIGKILL"),
                "{vm} restarted, but last_exit lost the reason: {again:?}"
            );
        } else {
            assert!(
                noticed
                    .last_exit
                    .as_deref()
                    .unwrap_or("")
                    .contains("SIGKILL"),
                "{vm}: {noticed:?}"
            );
            assert_eq!(noticed.state, "crashed", "{noticed:?}");
            assert!(noticed.pid.is_none(), "{noticed:?}");
            assert_eq!(noticed.restart_count, 0);
        }
        // Done with this one: delete it and make sure its QEMU is gone.
        let pid_now = t.show(vm).pid;
        let out = t.cli(&["vm", "delete", vm]);
        assert!(out.ok(), "{out:?}");
        if let Some(p) = pid_now {
            poll(
                &format!("{vm}'s QEMU gone"),
                Duration::from_secs(30),
                || (!alive(p)).then_some(()),
            );
        }
    }
}
