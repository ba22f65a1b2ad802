//! The storage pool in the daemon (issue 17): the operator's devices, tenants' volumes on
//! them, attached to busybox guests as vhost-user-blk disks served by the daemon's storage
//! process. What a guest wrote and flushed reads back after a detach and attach, after
//! `kill -9` of the storage process in the middle of its writes (the VM keeps its QEMU, the
//! daemon restarts storage, the guest carries on), after the daemon and the storage process
//! are both killed and started again, and a VM snapshot of the running guest (vCPUs paused
//! for it) restored gives the exact contents back, as does a backup of it restored into a
//! new volume.
//! Refusals (bad input, quota, another tenant's volume) are 4xx naming the field and change
//! nothing. Guests boot under TCG; skipped without the guest assets.

mod common;

use common::api::{
    client, daemon_with_failpoints, guest_dir, restart, small_vm, stop_body, wait_vm,
};
use common::{alive, boot_slots, poll, sigkill, DaemonCli, HOSTEL};
use hostel_api::{AddDevice, Client, ClientError, CreateVolume};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{run_arg, LineWatcher, BOOT_TIMEOUT};
use std::path::Path;
use std::time::Duration;

/// Each device file (sparse).
const DEVICE_BYTES: u64 = 256 << 20;
const VOLUME_BYTES: u64 = 64 << 20;
/// How long the guest's flushed write loop may take after the storage process is killed.
const WRITES_TIMEOUT: Duration = Duration::from_secs(240);

/// The guest: the first MiB's checksum before it writes (`BEFORE=`), a random MiB written
/// with fsync and read back past the page cache (`AFTER=` must equal `WANT=`), then 150
/// records each written and flushed on its own (`FLUSHED n` once the flush completed),
/// all read back past the page cache (`VERIFY bad=`), then `DONE`.
const SCRIPT: &str = r#"D=/dev/vdb
echo BEFORE=$(dd if=$D bs=65536 count=16 2>/dev/null | md5sum | cut -d' ' -f1)
head -c 1048576 /dev/urandom > /tmp/p
dd if=/tmp/p of=$D bs=65536 conv=fsync 2>/dev/null || echo WERR
echo 3 > /proc/sys/vm/drop_caches
echo AFTER=$(dd if=$D bs=65536 count=16 2>/dev/null | md5sum | cut -d' ' -f1) WANT=$(md5sum < /tmp/p | cut -d' ' -f1)
i=0
while [ $i -lt 150 ]; do
  echo "rec $i" | dd of=$D bs=4096 seek=$((1024+i)) conv=fsync,sync 2>/dev/null || echo WERR
  echo FLUSHED $i
  i=$((i+1))
done
echo 3 > /proc/sys/vm/drop_caches
j=0; bad=0
while [ $j -lt 150 ]; do
  dd if=$D bs=4096 skip=$((1024+j)) count=1 2>/dev/null | head -n1 | grep -qx "rec $j" || bad=$((bad+1))
  j=$((j+1))
done
echo VERIFY bad=$bad
echo DONE
exec sleep 100000"#;

fn sparse_devices(dir: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            let p = dir.join(n);
            std::fs::File::create(&p)
                .and_then(|f| f.set_len(DEVICE_BYTES))
                .expect("device file");
            p.display().to_string()
        })
        .collect()
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>, status: u16, field: &str) -> String {
    match r {
        Err(ClientError::Api {
            status: s,
            field: f,
            message,
            ..
        }) => {
            assert_eq!(s, status, "{message}");
            assert_eq!(f.as_deref(), Some(field), "{message}");
            message
        }
        other => panic!("expected {status} naming {field}, got {other:?}"),
    }
}

fn volume(name: &str, size: u64) -> CreateVolume {
    CreateVolume {
        name: name.to_string(),
        size_bytes: size,
        copies: None,
    }
}

/// The console lines of the guest's `boot`-th boot (1-based), once it printed `DONE`.
fn boot_lines(c: &Client, vm: &str, boot: usize, timeout: Duration) -> Vec<String> {
    let stream = c.vms(None).console_follow(vm).expect("console follow");
    let mut lines = LineWatcher::new(stream);
    for n in 1..=boot {
        assert!(
            lines.wait_for("DONE", timeout).is_some(),
            "{vm}: boot {n} printed no DONE:\n{}",
            lines.transcript()
        );
    }
    let t = lines.transcript();
    let segment = t.split("HOSTEL-READY").nth(boot).unwrap_or_default();
    segment.lines().map(str::to_string).collect()
}

fn value<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix(key)))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

fn check_boot(lines: &[String]) {
    assert!(
        !lines.iter().any(|l| l.contains("WERR")),
        "a write failed: {lines:?}"
    );
    assert_eq!(
        value(lines, "AFTER="),
        value(lines, "WANT="),
        "read back: {lines:?}"
    );
    assert_eq!(value(lines, "bad="), "0", "flushed records lost: {lines:?}");
}

fn start(c: &Client, vm: &str) {
    c.vms(None).start(vm).expect("start");
}

fn stop(c: &Client, vm: &str) {
    c.vms(None).stop(vm, &stop_body(true, None)).expect("stop");
    wait_vm(c, vm, "stopped", BOOT_TIMEOUT, |v| v.state == "stopped");
}

#[test]
fn refusals_change_nothing_and_tenants_see_only_their_volumes() {
    let Some(dir) = guest_dir() else { return };
    let d = TestDaemon::start(Path::new(HOSTEL), &dir, "vol-refuse");
    let op = client(&d, &d.operator_token);
    // No pool yet: a volume is refused, naming why.
    let a = d.tenant("acme", &[]);
    let ca = client(&d, &a.token);
    assert_eq!(
        ca.create_volume(None, &volume("v", VOLUME_BYTES))
            .unwrap_err()
            .status(),
        Some(409)
    );

    let tmp = tempfile::tempdir().unwrap();
    let devs = sparse_devices(tmp.path(), &["a", "b"]);
    refused(
        op.add_storage_device(&AddDevice {
            path: "/nonexistent/dev".into(),
        }),
        400,
        "path",
    );
    refused(
        op.add_storage_device(&AddDevice {
            path: "relative".into(),
        }),
        400,
        "path",
    );
    for p in &devs {
        op.add_storage_device(&AddDevice { path: p.clone() })
            .expect("device add");
    }
    refused(
        op.add_storage_device(&AddDevice {
            path: devs[0].clone(),
        }),
        409,
        "path",
    );
    let listed = op.list_storage_devices().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|d| d.state == "ready" && d.bytes > 0 && !d.failed),
        "{listed:?}"
    );
    // A tenant cannot even see the operator's routes.
    assert_eq!(ca.list_storage_devices().unwrap_err().status(), Some(404));

    refused(
        ca.create_volume(None, &volume("zero", 0)),
        400,
        "size_bytes",
    );
    refused(
        ca.create_volume(None, &volume("odd", 1000)),
        400,
        "size_bytes",
    );
    refused(
        ca.create_volume(None, &volume("Bad Name", VOLUME_BYTES)),
        400,
        "name",
    );
    refused(
        ca.create_volume(
            None,
            &CreateVolume {
                copies: Some(3),
                ..volume("c3", VOLUME_BYTES)
            },
        ),
        400,
        "copies",
    );
    // 200 GiB is over the default 100 GiB of provisioned bytes.
    refused(
        ca.create_volume(None, &volume("huge", 200 << 30)),
        409,
        "volume_bytes",
    );
    assert!(
        ca.list_volumes(None).unwrap().is_empty(),
        "a refusal made a volume"
    );

    let v = ca
        .create_volume(None, &volume("data", VOLUME_BYTES))
        .expect("create");
    assert_eq!(
        (v.copies, v.state.as_str(), v.allocated_bytes),
        (2, "ready", Some(0))
    );
    refused(
        ca.create_volume(None, &volume("data", VOLUME_BYTES)),
        409,
        "name",
    );
    // The operator's storage quota: 128 MiB provisioned leaves no room for 65 MiB more.
    let out = d.op(&[
        "quota",
        "storage",
        "acme",
        "--volume-bytes",
        "128M",
        "-o",
        "json",
    ]);
    let q: hostel_api::StorageQuotaBody = out.json();
    assert_eq!(q.max_volume_bytes, 128 << 20);
    refused(
        ca.create_volume(None, &volume("two", 65 << 20)),
        409,
        "volume_bytes",
    );
    assert_eq!(ca.list_volumes(None).unwrap().len(), 1);
    assert_eq!(ca.storage_quota("acme").unwrap_err().status(), Some(404));
    // The operator's metrics show the pool's health and the volume.
    let metrics = op.get_text("/metrics").unwrap();
    for want in [
        "hostel_storage_degraded 0".to_string(),
        format!("hostel_volume_size_bytes{{tenant=\"acme\",volume=\"data\"}} {VOLUME_BYTES}"),
        "hostel_volume_degraded_clusters{tenant=\"acme\",volume=\"data\"} 0".to_string(),
    ] {
        assert!(metrics.contains(&want), "no {want:?} in\n{metrics}");
    }
    refused(
        ca.resize_volume(None, "data", VOLUME_BYTES / 2),
        400,
        "size_bytes",
    );
    refused(
        ca.resize_volume(None, "data", 200 << 30),
        409,
        "volume_bytes",
    );
    assert_eq!(
        ca.show_volume(None, "data").unwrap().size_bytes,
        VOLUME_BYTES
    );

    // Another tenant: the volume does not exist for it, whatever it tries.
    let b = d.tenant("bravo", &[]);
    let cb = client(&d, &b.token);
    cb.vms(None)
        .create(&small_vm("bvm", false, None))
        .expect("bravo vm");
    for r in [
        cb.show_volume(None, "data").map(|_| ()),
        cb.attach_volume(None, "data", "bvm").map(|_| ()),
        cb.delete_volume(None, "data"),
        cb.create_snapshot(None, "data", "s").map(|_| ()),
    ] {
        assert_eq!(r.unwrap_err().status(), Some(404));
    }
    assert!(cb.list_volumes(None).unwrap().is_empty());
    // A tenant at its allocated-bytes quota (0 here) can create nothing more.
    let zero = hostel_api::StorageQuotaBody {
        max_volume_bytes: 1 << 30,
        max_volume_allocated_bytes: 0,
    };
    op.set_storage_quota("bravo", &zero).expect("storage quota");
    refused(
        cb.create_volume(None, &volume("b", VOLUME_BYTES)),
        409,
        "volume_allocated_bytes",
    );
    assert!(cb.list_volumes(None).unwrap().is_empty());
    // Nor can acme attach its volume to bravo's VM.
    assert_eq!(
        ca.attach_volume(None, "data", "bvm").unwrap_err().status(),
        Some(404)
    );

    // One VM at a time.
    ca.vms(None)
        .create(&small_vm("avm", false, None))
        .expect("acme vm");
    ca.attach_volume(None, "data", "avm").expect("attach");
    refused(ca.attach_volume(None, "data", "avm"), 409, "name");
    refused(ca.delete_volume(None, "data"), 409, "name");
    ca.detach_volume(None, "data").expect("detach");

    // Snapshots: a bad name is refused naming it; one made is listed; its twin is a 409.
    refused(ca.create_snapshot(None, "data", "Not OK"), 400, "snapshot");
    ca.create_snapshot(None, "data", "s1").expect("snapshot");
    refused(ca.create_snapshot(None, "data", "s1"), 409, "snapshot");
    assert_eq!(
        ca.show_volume(None, "data").unwrap().snapshots,
        vec!["s1".to_string()]
    );
    ca.delete_snapshot(None, "data", "s1")
        .expect("snapshot delete");
    assert!(ca.show_volume(None, "data").unwrap().snapshots.is_empty());

    // Backups: of a snapshot only, named uniquely, restored into a new volume (with the
    // snapshot) within the quota; another tenant sees none of them.
    ca.create_snapshot(None, "data", "b").expect("snapshot");
    let bk = |snapshot: &str, name: &str| hostel_api::CreateBackup {
        name: name.to_string(),
        snapshot: snapshot.to_string(),
        base: None,
    };
    assert_eq!(
        ca.create_backup(None, "data", &bk("nosuch", "b0"))
            .unwrap_err()
            .status(),
        Some(404)
    );
    let b = ca
        .create_backup(None, "data", &bk("b", "b1"))
        .expect("backup");
    assert_eq!((b.size_bytes, b.snapshot.as_str()), (VOLUME_BYTES, "b"));
    assert!(b.file_bytes > 0);
    refused(ca.create_backup(None, "data", &bk("b", "b1")), 409, "name");
    assert_eq!(ca.list_backups(None).unwrap().len(), 1);
    assert!(cb.list_backups(None).unwrap().is_empty());
    assert_eq!(
        cb.restore_backup(None, "b1", "mine").unwrap_err().status(),
        Some(404)
    );
    refused(ca.restore_backup(None, "b1", "data"), 409, "name");
    let copy = ca.restore_backup(None, "b1", "copy").expect("restore");
    assert_eq!(
        (copy.size_bytes, copy.snapshots.clone()),
        (VOLUME_BYTES, vec!["b".to_string()])
    );
    ca.delete_volume(None, "copy").expect("delete copy");
    ca.delete_snapshot(None, "data", "b")
        .expect("snapshot delete");

    // Audited, under the tenant.
    let audit = op.audit(Some("acme"), 100).unwrap();
    for action in [
        "volume.create",
        "volume.attach",
        "volume.detach",
        "volume.snapshot.create",
    ] {
        assert!(
            audit.iter().any(|e| e.action == action),
            "no {action} in {audit:?}"
        );
    }

    ca.delete_volume(None, "data").expect("delete");
    assert!(ca.list_volumes(None).unwrap().is_empty());
    // The name is free again, and the pool took the space back.
    ca.create_volume(None, &volume("data", VOLUME_BYTES))
        .expect("create again");
}

#[test]
fn guest_data_survives_storage_kill_detach_daemon_restart_and_snapshot_restore() {
    let Some(dir) = guest_dir() else { return };
    let _slot = boot_slots(1);
    let mut d = TestDaemon::start(Path::new(HOSTEL), &dir, "vol-guest");
    let op = client(&d, &d.operator_token);
    let tmp = tempfile::tempdir().unwrap();
    for p in sparse_devices(tmp.path(), &["a", "b"]) {
        op.add_storage_device(&AddDevice { path: p })
            .expect("device add");
    }
    let t = d.tenant("acme", &[]);
    let c = client(&d, &t.token);
    c.create_volume(None, &volume("data", VOLUME_BYTES))
        .expect("volume");
    c.vms(None)
        .create(&small_vm("vm", false, Some(run_arg(SCRIPT))))
        .expect("vm");
    c.attach_volume(None, "data", "vm").expect("attach");
    start(&c, "vm");
    let pid = wait_vm(&c, "vm", "running", BOOT_TIMEOUT, |v| {
        v.state == "running" && v.pid.is_some()
    })
    .pid;
    refused(c.detach_volume(None, "data"), 409, "vm");

    // Boot 1: kill -9 the storage process once the guest has flushed 30 records.
    let storage = d.storage_pid().expect("storage process");
    {
        let stream = c.vms(None).console_follow("vm").expect("console");
        let mut lines = LineWatcher::new(stream);
        assert!(
            lines.wait_for("FLUSHED 30", BOOT_TIMEOUT).is_some(),
            "guest did not write:\n{}",
            lines.transcript()
        );
    }
    sigkill(storage as u32);
    let restarted = poll("a new storage process", Duration::from_secs(20), || {
        d.storage_pid().filter(|p| *p != storage)
    });
    let boot1 = boot_lines(&c, "vm", 1, WRITES_TIMEOUT);
    check_boot(&boot1);
    let v = c.vms(None).show("vm").unwrap();
    assert_eq!(v.pid, pid, "the VM's QEMU changed with the storage process");
    assert!(pid.is_some_and(alive));
    assert!(alive(restarted as u32));
    let written = value(&boot1, "AFTER=").to_string();
    let shown = c.show_volume(None, "data").unwrap();
    assert!(
        shown
            .allocated_bytes
            .is_some_and(|a| (1 << 20..VOLUME_BYTES).contains(&a)),
        "thin: {shown:?}"
    );
    assert!(!shown.degraded, "{shown:?}");

    // A VM snapshot of the running guest: its vCPUs paused for the snapshot, then continued
    // (same QEMU, still running).
    let vols = c.create_vm_snapshot(None, "vm", "s1").expect("vm snapshot");
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0].snapshots, vec!["s1".to_string()]);
    refused(c.create_vm_snapshot(None, "vm", "s1"), 409, "snapshot");
    let v = c.vms(None).show("vm").unwrap();
    assert_eq!((v.state.as_str(), v.pid), ("running", pid), "{v:?}");

    // A full backup of that snapshot, restored at the end into a new volume.
    let backup = hostel_api::CreateBackup {
        name: "b1".into(),
        snapshot: "s1".into(),
        base: None,
    };
    c.create_backup(None, "data", &backup).expect("backup");

    // Detach and attach again; boot 2 reads what boot 1 wrote.
    stop(&c, "vm");
    c.detach_volume(None, "data").expect("detach");
    assert_eq!(c.show_volume(None, "data").unwrap().vm, None);
    c.attach_volume(None, "data", "vm").expect("attach again");
    start(&c, "vm");
    let boot2 = boot_lines(&c, "vm", 2, BOOT_TIMEOUT + WRITES_TIMEOUT);
    check_boot(&boot2);
    assert_eq!(
        value(&boot2, "BEFORE="),
        written,
        "boot 1's data after detach/attach"
    );
    let overwritten = value(&boot2, "AFTER=").to_string();
    assert_ne!(overwritten, written, "boot 2 wrote a new random MiB");
    stop(&c, "vm");

    // The whole host: daemon and storage process killed, a daemon started on the same
    // state finds its pool (from the recorded devices) and volumes.
    let storage = d.storage_pid().expect("storage process");
    d.kill9();
    sigkill(storage as u32);
    poll("storage process gone", Duration::from_secs(10), || {
        (!alive(storage as u32)).then_some(())
    });
    d.respawn();
    let shown = c.show_volume(None, "data").expect("volume after restart");
    assert_eq!(shown.snapshots, vec!["s1".to_string()]);
    assert_eq!(shown.vm.as_deref(), Some("vm"));
    assert!(shown.allocated_bytes.is_some_and(|a| a > 0), "{shown:?}");
    assert_eq!(
        client(&d, &d.operator_token)
            .list_storage_devices()
            .unwrap()
            .len(),
        2
    );

    // Restore s1: boot 3 reads boot 1's data, not boot 2's.
    c.restore_vm_snapshot(None, "vm", "s1").expect("restore");
    start(&c, "vm");
    let boot3 = boot_lines(&c, "vm", 3, BOOT_TIMEOUT + WRITES_TIMEOUT);
    check_boot(&boot3);
    assert_eq!(
        value(&boot3, "BEFORE="),
        written,
        "snapshot s1 restored exactly"
    );
    refused(c.restore_snapshot(None, "data", "s1"), 409, "vm");
    refused(c.restore_vm_snapshot(None, "vm", "s1"), 409, "vm");

    // The backup restored into a new volume, in place of the old one: boot 4 reads boot 1's
    // data from it.
    stop(&c, "vm");
    c.restore_backup(None, "b1", "copy")
        .expect("restore backup");
    c.detach_volume(None, "data").expect("detach");
    c.attach_volume(None, "copy", "vm").expect("attach copy");
    start(&c, "vm");
    let boot4 = boot_lines(&c, "vm", 4, BOOT_TIMEOUT + WRITES_TIMEOUT);
    check_boot(&boot4);
    assert_eq!(
        value(&boot4, "BEFORE="),
        written,
        "backup b1 restored exactly"
    );
}

/// A daemon killed after recording a volume and before the pool made it: the next start
/// undoes the record (its name and quota are free again); the storage process, which
/// outlived the daemon, is found and used.
#[test]
fn an_interrupted_volume_create_is_undone_at_the_next_start() {
    let Some(d) = daemon_with_failpoints("vol-cut", "volume.create.recorded") else {
        return;
    };
    let op = client(&d, &d.operator_token);
    let tmp = tempfile::tempdir().unwrap();
    for p in sparse_devices(tmp.path(), &["a"]) {
        op.add_storage_device(&AddDevice { path: p })
            .expect("device add");
    }
    let t = d.tenant("acme", &[]);
    let c = client(&d, &t.token);
    let held = std::thread::spawn(move || c.create_volume(None, &volume("cut", VOLUME_BYTES)));
    poll("the daemon at its failpoint", BOOT_TIMEOUT, || {
        d.log().contains("holding at a failpoint").then_some(())
    });
    let storage = d.storage_pid().expect("storage process");
    let d = restart(d);
    assert!(
        held.join().unwrap().is_err(),
        "the cut create answered success"
    );
    let c = client(&d, &t.token);
    assert!(
        c.list_volumes(None).unwrap().is_empty(),
        "the cut create left a volume"
    );
    assert_eq!(
        d.storage_pid(),
        Some(storage),
        "the storage process was restarted"
    );
    let v = c
        .create_volume(None, &volume("cut", VOLUME_BYTES))
        .expect("create again");
    assert_eq!((v.state.as_str(), v.copies), ("ready", 1));
}
