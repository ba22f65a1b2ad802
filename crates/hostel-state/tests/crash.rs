//! Crash safety: a process killed mid-stream of writes loses nothing it was
//! told was committed, and leaves no half-written record.
//!
//! The test re-runs its own binary as a child (selected by an env var) that
//! writes VMs in a loop and reports each committed id on stdout, then aborts
//! the child without any cleanup. The parent reopens the database and checks
//! every reported id is present and the file is consistent. (A process abort
//! leaves the OS page cache intact; power-loss durability additionally rests
//! on `synchronous = FULL`, which the store sets and cannot be tested here.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{big_quota, new_vm, spec, tenant};
use hostel_state::{SqliteStore, Store, TenantName, VmId};

const CHILD_ENV: &str = "HOSTEL_STATE_CRASH_CHILD_DIR";

/// Child half: only does something when started by `committed_writes_survive_abort`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(&dir).unwrap();
    let t = tenant(&store, "acme", big_quota());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let _writer = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        for i in 0.. {
            let vm = store
                .create_vm(&t.id, &new_vm(&format!("vm-{i}"), spec(1, 256, 1)))
                .unwrap();
            writeln!(out, "committed {}", vm.id).unwrap();
            out.flush().unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Wait for enough commits to be meaningful (fsync speed varies a lot on
    // shared disks), then die while the writer keeps going.
    let deadline = Instant::now() + Duration::from_secs(20);
    while count.load(Ordering::SeqCst) < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(20));
    // Dies with the writer mid-transaction and nothing flushed or closed.
    std::process::abort();
}

#[test]
fn committed_writes_survive_abort() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "child was supposed to abort");
    let committed: Vec<VmId> = BufReader::new(&output.stdout[..])
        .lines()
        .map_while(Result::ok)
        // The harness may print "test crash_child ... " on the same line first.
        .filter_map(|l| {
            l.split_once("committed ")
                .map(|(_, id)| id.parse().unwrap())
        })
        .collect();
    assert!(
        committed.len() >= 50,
        "child committed too little to test anything ({})",
        committed.len()
    );

    let store = SqliteStore::open(dir.path()).unwrap();
    store.integrity_check().unwrap();
    for id in &committed {
        store.get_vm(id).expect("a committed VM was lost");
    }
    let t = store
        .get_tenant_by_name(&TenantName::new("acme").unwrap())
        .unwrap();
    let vms = store.list_vms(&t.id).unwrap();
    // At most the one write in flight at abort time may have landed unreported.
    assert!(
        vms.len() == committed.len() || vms.len() == committed.len() + 1,
        "{} VMs on disk, {} reported committed",
        vms.len(),
        committed.len()
    );
    let usage = store.tenant_usage(&t.id).unwrap();
    assert_eq!(usage.vms as usize, vms.len());
    eprintln!("{} committed before abort, all recovered", committed.len());
}
