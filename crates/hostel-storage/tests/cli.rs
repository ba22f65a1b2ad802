//! The `hostel-storage` binary: a pool created, a volume created, status, serving until
//! SIGTERM (a clean close) or SIGKILL (noticed as a crash at the next open, nothing lost that
//! was flushed).

use std::process::{Command, Stdio};
use std::time::Duration;

use hostel_pool::{BlockDevice, FileDevice, Pool};
use hostel_testkit::LineWatcher;

const BIN: &str = env!("CARGO_BIN_EXE_hostel-storage");

fn cmd(devs: &[std::path::PathBuf], args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new(BIN);
    for d in devs {
        c.arg("--device").arg(d);
    }
    let out = c.args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn open(devs: &[std::path::PathBuf]) -> Pool {
    let d: Vec<Box<dyn BlockDevice>> = devs
        .iter()
        .map(|p| Box::new(FileDevice::open(p).unwrap()) as Box<dyn BlockDevice>)
        .collect();
    Pool::open(d).unwrap()
}

/// Starts `serve`, waits for it to say so, then sends `signal`; returns its exit success.
fn serve_then(devs: &[std::path::PathBuf], sock: &std::path::Path, signal: i32) -> bool {
    let mut c = Command::new(BIN);
    for d in devs {
        c.arg("--device").arg(d);
    }
    let mut child = c
        .args(["serve", "--disk"])
        .arg(format!("v={}", sock.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = LineWatcher::new(child.stdout.take().unwrap());
    assert!(out
        .wait_for("serving 1 disk", Duration::from_secs(30))
        .is_some());
    assert!(sock.exists());
    // SAFETY: signals a child we started and have not yet waited for.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait().unwrap().success()
}

#[test]
fn create_status_serve_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let devs: Vec<_> = ["a", "b"].iter().map(|n| dir.path().join(n)).collect();
    for d in &devs {
        std::fs::File::create(d).unwrap().set_len(64 << 20).unwrap();
    }
    let (ok, out, err) = cmd(&devs, &["pool-create"]);
    assert!(ok && out.starts_with("pool "), "{out}{err}");
    let (ok, _, err) = cmd(&devs, &["volume-create", "v", "16M"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cmd(&devs, &["volume-create", "w", "12Q"]);
    assert!(!ok && err.contains("size \"12Q\""), "{err}");
    let (ok, out, _) = cmd(&devs, &["status"]);
    assert!(
        ok && out.contains("volume v size=16777216 allocated=0 copies=2"),
        "{out}"
    );

    let pool = open(&devs);
    pool.write("v", 0, &[5u8; 4096]).unwrap();
    pool.close().unwrap();

    let sock = dir.path().join("v.sock");
    assert!(
        serve_then(&devs, &sock, libc::SIGTERM),
        "SIGTERM is a clean stop"
    );
    assert!(!sock.exists(), "socket removed");
    let pool = open(&devs);
    assert!(!pool.needs_scrub(), "SIGTERM closed the pool cleanly");
    pool.close().unwrap();

    assert!(!serve_then(&devs, &sock, libc::SIGKILL));
    let pool = open(&devs);
    assert!(pool.needs_scrub(), "a kill is noticed");
    let mut b = [0u8; 4096];
    pool.read("v", 0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 5));
    assert_eq!(pool.scrub().unwrap().unreadable, 0);
}
