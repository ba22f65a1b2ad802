//! A VM snapshot the guest agreed to (issue 22): on the Debian guest, with a pool volume
//! holding an ext4 filesystem that a loop keeps writing to, `vm snapshot` freezes the
//! guest's filesystems through its agent, and the snapshot (exported as a backup, rebuilt
//! into a raw image here) is a filesystem `e2fsck -n` finds clean; the audit entry says it
//! was filesystem-consistent. Then a daemon held between the freeze and the thaw (a
//! failpoint) and killed there: the next daemon thaws the guest (its root filesystem takes
//! writes again).

use super::{exec_out, AGENT_TIMEOUT};
use base64::Engine as _;
use hostel_api::{AddDevice, Client, CreateBackup, CreateVolume, ExecEvent, ExecVm};
use hostel_testkit::daemon::TestDaemon;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const VOLUME_BYTES: u64 = 256 << 20;
const CLUSTER: usize = 64 << 10;

/// `argv` in the guest: its stdout if it exited 0, else `None` (the agent not answering yet,
/// a frozen filesystem, a failed command).
fn try_exec(c: &Client, argv: &[&str]) -> Option<String> {
    let r = c
        .vms(None)
        .exec(
            "deb",
            &ExecVm {
                command: argv.iter().map(|s| s.to_string()).collect(),
                timeout_secs: Some(20),
                ..Default::default()
            },
        )
        .ok()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(r)) {
        match serde_json::from_str::<ExecEvent>(&line.ok()?).ok()? {
            ExecEvent::Stdout(d) => out.extend(b64.decode(d).ok()?),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exit { code, .. } => {
                return (code == Some(0)).then(|| String::from_utf8_lossy(&out).into_owned())
            }
            ExecEvent::Error(_) => return None,
        }
    }
    None
}

/// Retries `argv` in the guest until it exits 0 or `limit` passes (the agent coming up after
/// a boot or a thaw).
fn exec_until(c: &Client, argv: &[&str], limit: Duration) -> String {
    let t = Instant::now();
    loop {
        if let Some(out) = try_exec(c, argv) {
            return out;
        }
        assert!(t.elapsed() < limit, "{argv:?} never ran within {limit:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A backup file (`hostel-pool`'s format: header, then cluster records) written out as the
/// raw disk image it captures.
fn backup_to_raw(backup: &Path, raw: &Path) {
    let mut f = std::fs::File::open(backup).expect("backup file");
    let mut b = Vec::new();
    f.read_to_end(&mut b).unwrap();
    assert_eq!(&b[..8], b"HSTLBKUP");
    let size = u64::from_le_bytes(b[13..21].try_into().unwrap());
    let name_len = u32::from_le_bytes(b[53..57].try_into().unwrap()) as usize;
    let mut at = 57 + name_len + 4;
    let mut out = std::fs::File::create(raw).unwrap();
    out.set_len(size).unwrap();
    while &b[at..at + 8] != b"HSTLBEND" {
        let cluster = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let data = b[at + 8] == 1;
        at += 9;
        if data {
            out.seek(SeekFrom::Start(cluster * CLUSTER as u64)).unwrap();
            out.write_all(&b[at..at + CLUSTER]).unwrap();
            at += CLUSTER;
        }
        at += 4;
    }
}

pub fn frozen_snapshot(mut d: TestDaemon, op: &Client, acme: &Client) {
    // The pool: two sparse files, so volumes are mirrored as by default.
    let devices = tempfile::tempdir().unwrap();
    for n in 0..2 {
        let p = devices.path().join(format!("dev{n}"));
        std::fs::File::create(&p).unwrap().set_len(2 << 30).unwrap();
        op.add_storage_device(&AddDevice {
            path: p.display().to_string(),
        })
        .expect("device add");
    }
    acme.create_volume(
        None,
        &CreateVolume {
            name: "data".into(),
            size_bytes: VOLUME_BYTES,
            copies: None,
        },
    )
    .expect("volume");
    // The VM is stopped (the hostile cases ended that way): volumes attach to stopped VMs.
    acme.attach_volume(None, "data", "deb").expect("attach");
    acme.vms(None).start("deb").expect("start");
    let dev = exec_until(
        acme,
        &[
            "sh",
            "-c",
            &format!("lsblk -bdno NAME,SIZE | awk '$2 == {VOLUME_BYTES} {{print $1}}'"),
        ],
        AGENT_TIMEOUT,
    );
    let dev = dev.trim();
    assert!(!dev.is_empty(), "the volume is not among the guest's disks");
    exec_out(
        acme,
        &[
            "sh",
            "-c",
            &format!(
                "mkfs.ext4 -q /dev/{dev} && mkdir -p /mnt/data && mount /dev/{dev} /mnt/data && \
                 (setsid sh -c 'i=0; while true; do i=$((i+1)); echo line $i >> /mnt/data/log; \
                 dd if=/dev/urandom of=/mnt/data/f$((i % 16)) bs=64k count=4 2>/dev/null; done' \
                 </dev/null >/dev/null 2>&1 &)"
            ),
        ],
    );
    // The loop is writing.
    let t = Instant::now();
    while exec_out(acme, &["sh", "-c", "wc -l < /mnt/data/log"])
        .trim()
        .parse::<u64>()
        .unwrap_or(0)
        < 20
    {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the write loop does not write"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    acme.create_vm_snapshot(None, "deb", "s1")
        .expect("vm snapshot");
    let audit = op.audit(Some("acme"), 20).expect("audit");
    let entry = audit
        .iter()
        .find(|e| e.action == "vm.snapshot.create")
        .expect("the snapshot's audit entry");
    assert!(
        entry.target.contains("filesystem-consistent"),
        "not frozen by the agent: {entry:?}"
    );
    // The guest runs on after the thaw: the loop still writes.
    let before: u64 = exec_out(acme, &["sh", "-c", "wc -l < /mnt/data/log"])
        .trim()
        .parse()
        .unwrap();
    let t = Instant::now();
    while exec_out(acme, &["sh", "-c", "wc -l < /mnt/data/log"])
        .trim()
        .parse::<u64>()
        .unwrap()
        <= before
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the guest stayed frozen"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // The snapshot, as a file: clean.
    acme.create_backup(
        None,
        "data",
        &CreateBackup {
            name: "b1".into(),
            snapshot: "s1".into(),
            base: None,
        },
    )
    .expect("backup");
    let tenant = op
        .list_tenants()
        .unwrap()
        .into_iter()
        .find(|t| t.name == "acme")
        .unwrap()
        .id;
    let backup = d
        .state_path()
        .join("storage/backups")
        .join(tenant)
        .join("b1.backup");
    let raw = devices.path().join("s1.raw");
    backup_to_raw(&backup, &raw);
    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "the snapshot's filesystem is not clean: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );

    // A daemon killed between the freeze and the thaw: the next one thaws the guest.
    d.kill9();
    d.respawn_with_env(&[("HOSTEL_FAILPOINTS", "vm-snapshot-frozen")]);
    let held = {
        let c = Client::new(&d.url, acme_token(acme));
        std::thread::spawn(move || c.create_vm_snapshot(None, "deb", "s2").map(|_| ()))
    };
    let t = Instant::now();
    while !d.log().contains("vm-snapshot-frozen") {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "never held at the failpoint"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.kill9();
    assert!(held.join().unwrap().is_err(), "the cut snapshot answered");
    d.respawn_with_env(&[]);
    // Writes to the root filesystem go through once the new daemon thawed it.
    let out = exec_until(
        acme,
        &["sh", "-c", "echo thawed > /root/thawed && cat /root/thawed"],
        Duration::from_secs(180),
    );
    assert_eq!(out.trim(), "thawed");
    let log = d.log();
    assert!(
        log.contains("thawed a guest a cut snapshot left frozen"),
        "the daemon did not thaw it: {}",
        &log[log.len().saturating_sub(3000)..]
    );
}

fn acme_token(c: &Client) -> Option<String> {
    c.token().map(str::to_string)
}
