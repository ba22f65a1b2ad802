//! Descriptors: a vhost-user connection, even a bare connect and close, must give back every
//! descriptor it took, and a port's listener must outlive running out of them. Both tests
//! count or exhaust the process's descriptor table, so they take turns.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use common::{frontend, honest, TestSwitch};
use vhost::VhostBackend;

static TABLE: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A full handshake on `sock`, which the listener serves only after it has torn down every
/// earlier session: while it is open, the descriptor count is at a known point.
fn probe(sock: &std::path::Path) -> vhost::vhost_user::Frontend {
    let fe = frontend(sock);
    fe.get_features().expect("probe handshake");
    fe
}

/// Defect: every connection leaked an eventfd (the library's exit event), until the fd
/// limit stopped the port, and then the others, from reconnecting. Before the fix the
/// count grew by one per connection (10,000 here).
#[test]
fn ten_thousand_connections_leak_no_descriptor() {
    let _turn = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let ts = TestSwitch::new(&["p1"]);
    let sock = ts.sock("p1");
    drop(honest(&sock));
    let p = probe(&sock);
    let before = open_fds();
    drop(p);
    for i in 0..10_000 {
        drop(UnixStream::connect(&sock).unwrap_or_else(|e| panic!("connect {i}: {e}")));
    }
    // Some full sessions too, with memory and rings.
    for _ in 0..20 {
        drop(honest(&sock));
    }
    let p = probe(&sock);
    let after = open_fds();
    drop(p);
    assert!(
        after <= before,
        "{before} descriptors open before 10,020 connections, {after} after"
    );
}

/// The descriptor count once it has stopped moving (no session being torn down).
fn settled_fds() -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = open_fds();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = open_fds();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "descriptor count never settled ({now})"
        );
        last = now;
    }
}

/// Waits (bounded) until the switch has torn down the sessions of a step.
fn fds_back_to(baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() > baseline {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open 10 s after a session ended, {baseline} before",
            open_fds()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Holds every free descriptor number but `free`.
struct Hog(#[allow(dead_code)] Vec<File>);

impl Hog {
    fn leave(free: usize) -> Hog {
        let mut files = Vec::new();
        loop {
            match File::open("/dev/null") {
                Ok(f) => files.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("opening /dev/null: {e}"),
            }
        }
        files.truncate(files.len().saturating_sub(free));
        Hog(files)
    }
}

fn set_fd_limit(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let old = lim.rlim_cur;
    lim.rlim_cur = soft.min(lim.rlim_max);
    // SAFETY: setrlimit only reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    old
}

/// A lowered soft descriptor limit, put back on drop: a failed assert must not leave the
/// other tests of this binary (which share the process) starved of descriptors.
struct FdLimit(u64);

impl FdLimit {
    fn lower_to(soft: u64) -> FdLimit {
        FdLimit(set_fd_limit(soft))
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        set_fd_limit(self.0);
    }
}

/// Defect: when a session could not get its descriptors the listener thread returned, and
/// the port never accepted a connection again. Sweeping how many descriptors are left makes
/// each step of a session's set-up fail in turn (accept, relay socket, daemon, threads);
/// after each, with descriptors back, the port must serve a guest. Before the fix the
/// probe after one of the steps was never answered.
#[test]
fn the_listener_outlives_running_out_of_descriptors() {
    let _turn = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let ts = TestSwitch::new(&["p1"]);
    let sock = ts.sock("p1");
    drop(probe(&sock));
    // A session is torn down after its client hangs up: until that is over, its descriptors
    // would be handed to the next step's session and the hog would leave more than `free`.
    let baseline = settled_fds();
    // A low limit keeps the hog small.
    let limit = FdLimit::lower_to(open_fds() as u64 + 64);
    let mut outcomes = Vec::new();
    for free in 1..24 {
        let hog = Hog::leave(free);
        let outcome = match UnixStream::connect(&sock) {
            Err(e) => format!("connect: {e}"),
            Ok(mut c) => {
                // GET_FEATURES with no payload; the answer (or the switch hanging up on
                // us) shows how far the session got with so few descriptors.
                let mut req = [0u8; 12];
                req[0] = 1;
                req[4] = 1;
                c.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut buf = [0u8; 20];
                match c.write_all(&req).and_then(|()| c.read(&mut buf)) {
                    Ok(0) => "hung up".to_string(),
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                        ) =>
                    {
                        "hung up".to_string()
                    }
                    Ok(_) => "served".to_string(),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        "waiting".to_string()
                    }
                    Err(e) => format!("{e}"),
                }
            }
        };
        drop(hog);
        outcomes.push(outcome);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn({
            let sock = sock.clone();
            move || {
                let fe = probe(&sock);
                let _ = tx.send(fe.get_features().is_ok());
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(ok) => {
                assert!(ok);
                fds_back_to(baseline);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the probe after {free} free descriptors failed ({outcomes:?})")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "the port stopped serving after a session with {free} free descriptors \
                 ({outcomes:?})"
            ),
        }
    }
    drop(limit);
    assert!(
        outcomes.iter().any(|o| o == "hung up") && outcomes.iter().any(|o| o == "served"),
        "the sweep did not cover both failed and complete set-ups: {outcomes:?}"
    );
}
