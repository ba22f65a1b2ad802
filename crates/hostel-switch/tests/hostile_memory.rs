//! Hostile vhost-user frontends against a running switch: memory files that would fault
//! the switch (SIGBUS takes every tenant down with it) and eventfds that would spin or
//! block its threads are refused on their own port, which then serves the next frontend;
//! the switch's other ports never notice.

mod common;

use common::{frontend, honest, memfd, region, rings, TestSwitch};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The attacked port accepts an honest guest right after, and the bystander's session,
/// open all along, still answers.
fn both_ports_still_serve(ts: &TestSwitch, bystander: &mut common::Honest) {
    drop(honest(&ts.sock("p1")));
    bystander
        .fe
        .set_vring_enable(0, true)
        .expect("the other port's guest was disturbed");
}

/// Defect: a region declared larger than its file was mapped, and the first access past
/// the file's end (the rings, a frame) killed the switch with SIGBUS. Before the fix the
/// switch acknowledged this table.
#[test]
fn a_region_larger_than_its_file_is_refused() {
    let ts = TestSwitch::new(&["p1", "p2"]);
    let mut bystander = honest(&ts.sock("p2"));
    let file = memfd(1 << 20, true);
    let fe = frontend(&ts.sock("p1"));
    let r = fe.set_mem_table(&[region(&file, 64 << 20, 0)]);
    assert!(r.is_err(), "a 64 MiB region over a 1 MiB file was accepted");
    // The same file at an offset that runs past its end.
    let fe = frontend(&ts.sock("p1"));
    let r = fe.set_mem_table(&[region(&file, 1 << 20, 4096)]);
    assert!(
        r.is_err(),
        "a region running past the end of its file was accepted"
    );
    both_ports_still_serve(&ts, &mut bystander);
}

/// Defect: a frontend could truncate its memfd after SET_MEM_TABLE; the next access then
/// faulted. Only files sealed against shrinking are accepted. Before the fix this table was
/// acknowledged, and truncating the file then kicking TX killed the switch.
#[test]
fn memory_that_could_shrink_later_is_refused() {
    let ts = TestSwitch::new(&["p1", "p2"]);
    let mut bystander = honest(&ts.sock("p2"));
    let file = memfd(2 << 20, false);
    let mut fe = frontend(&ts.sock("p1"));
    let r = fe.set_mem_table(&[region(&file, 2 << 20, 0)]);
    if r.is_ok() {
        // What the fix prevents: shrink the file under the switch and make it look.
        if let Ok(rings) = rings(&mut fe, 0x1000) {
            file.set_len(0).unwrap();
            let _ = rings.kicks[1].write(1);
            let _ = fe.get_features();
        }
        panic!("unsealed guest memory was accepted");
    }
    both_ports_still_serve(&ts, &mut bystander);
}

/// Guest memory one port may map is capped, whatever files back it.
#[test]
fn memory_beyond_the_per_port_cap_is_refused() {
    let ts = TestSwitch::new(&["p1", "p2"]);
    let mut bystander = honest(&ts.sock("p2"));
    // Sparse: no memory is used.
    let file = memfd(40 << 30, true);
    let fe = frontend(&ts.sock("p1"));
    let r = fe.set_mem_table(&[
        region(&file, 40 << 30, 0),
        common::region_at(&file, 40 << 30, 0, 40 << 30),
    ]);
    assert!(r.is_err(), "80 GiB of guest memory was accepted");
    both_ports_still_serve(&ts, &mut bystander);
}

/// Defect: a kick eventfd in semaphore mode with a huge count stays readable for 2^64
/// reads, so the port's thread spun forever. Before the fix this kick was acknowledged.
#[test]
fn a_semaphore_kick_eventfd_is_refused() {
    let ts = TestSwitch::new(&["p1", "p2"]);
    let mut bystander = honest(&ts.sock("p2"));
    let mut fe = frontend(&ts.sock("p1"));
    let mem = memfd(2 << 20, true);
    fe.set_mem_table(&[region(&mem, 2 << 20, 0)]).unwrap();
    let sem = EventFd::new(EFD_NONBLOCK | libc::EFD_SEMAPHORE).unwrap();
    sem.write(u64::MAX - 1).unwrap();
    let r = fe.set_vring_kick(1, &sem);
    if r.is_ok() {
        // What the fix prevents: enabled, the queue's thread reads one unit per wakeup.
        let _ = fe.set_vring_enable(1, true);
        panic!("a semaphore-mode kick eventfd was accepted");
    }
    both_ports_still_serve(&ts, &mut bystander);
}

/// The switch writes call eventfds from other guests' threads: a blocking one at its
/// maximum count would stall them, so call fds are made non-blocking.
#[test]
fn call_eventfds_are_made_non_blocking() {
    let ts = TestSwitch::new(&["p1"]);
    let fe = frontend(&ts.sock("p1"));
    let mem = memfd(2 << 20, true);
    fe.set_mem_table(&[region(&mem, 2 << 20, 0)]).unwrap();
    let call = EventFd::new(0).unwrap();
    fe.set_vring_call(0, &call).unwrap();
    // SAFETY: F_GETFL only reads the status flags of a descriptor we hold.
    let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&call), libc::F_GETFL) };
    assert_ne!(flags & libc::O_NONBLOCK, 0);
}
