//! Device I/O through io_uring: one ring per thread (the backend's queue threads, the
//! re-mirror worker), a batch of operations on any number of devices submitted with one
//! system call and waited for together — the two copies of a mirrored write, a commit's
//! record on every device with its `fdatasync` linked behind it, run in parallel rather than
//! one device after the other.
//!
//! Where the kernel refuses io_uring (seccomp in a container, an old kernel), the batch runs
//! as positioned reads and writes, one after the other, and says why once in the log.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types, IoUring};
use tracing::info;

/// Ring entries: a batch larger than this is submitted in pieces.
const ENTRIES: u32 = 64;

/// One operation of a batch. The buffers are borrowed for the batch's duration.
pub enum Op<'a> {
    Read {
        fd: RawFd,
        buf: &'a mut [u8],
        off: u64,
    },
    Write {
        fd: RawFd,
        buf: &'a [u8],
        off: u64,
    },
    /// `fdatasync`; when it follows a write to the same fd in the batch, it is linked behind
    /// it (runs only once the write completed).
    Sync {
        fd: RawFd,
    },
}

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
    static REFUSED: RefCell<bool> = const { RefCell::new(false) };
}

fn errno(r: i32) -> io::Error {
    io::Error::from_raw_os_error(-r)
}

/// Whether this thread's batches go through io_uring (false: the kernel refused a ring).
#[cfg(test)]
pub fn in_use() -> bool {
    RING.with(|r| r.borrow().is_some())
}

/// Runs the batch; one result per operation, in order. A short read or write is continued
/// until done (a read past the end is `UnexpectedEof`).
pub fn run(ops: &mut [Op<'_>]) -> Vec<io::Result<()>> {
    let ring = RING.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_none() && !REFUSED.with(|f| *f.borrow()) {
            match IoUring::new(ENTRIES) {
                Ok(ring) => *r = Some(ring),
                Err(e) => {
                    info!(error = %e, "io_uring unavailable: device I/O uses pread/pwrite");
                    REFUSED.with(|f| *f.borrow_mut() = true);
                }
            }
        }
        r.is_some()
    });
    if !ring {
        return ops.iter_mut().map(run_sync).collect();
    }
    let mut results: Vec<io::Result<()>> = Vec::with_capacity(ops.len());
    for chunk in ops.chunks_mut(ENTRIES as usize) {
        results.extend(RING.with(|r| {
            let mut r = r.borrow_mut();
            match r.as_mut() {
                Some(ring) => {
                    let (out, keep) = run_chunk(ring, chunk);
                    if !keep {
                        // Entries the kernel refused stay in the submission queue, pointing
                        // into this batch's buffers, and the next submit would send them:
                        // closing the ring is the only way to be sure they never run.
                        *r = None;
                    }
                    out
                }
                None => chunk.iter_mut().map(run_sync).collect(),
            }
        }));
    }
    results
}

fn run_sync(op: &mut Op<'_>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    // A borrowed view of the descriptor as a File, never closed here.
    let with = |fd: RawFd, f: &mut dyn FnMut(&std::fs::File) -> io::Result<()>| {
        use std::os::fd::FromRawFd;
        // SAFETY: `fd` is open for the whole call (its owner lends it to the batch), and the
        // ManuallyDrop keeps this temporary File from closing it.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        f(&file)
    };
    match op {
        Op::Read { fd, buf, off } => with(*fd, &mut |f| f.read_exact_at(buf, *off)),
        Op::Write { fd, buf, off } => with(*fd, &mut |f| f.write_all_at(buf, *off)),
        Op::Sync { fd } => with(*fd, &mut |f| f.sync_data()),
    }
}

/// Runs a chunk of at most `ENTRIES` operations; also says whether the ring may be used
/// again (false after a submit the kernel refused, see [`run`]).
fn run_chunk(ring: &mut IoUring, ops: &mut [Op<'_>]) -> (Vec<io::Result<()>>, bool) {
    let n = ops.len();
    let mut done = vec![0usize; n];
    let mut result: Vec<Option<io::Result<()>>> = (0..n).map(|_| None).collect();
    // Which ops still need (re)submitting: all at first, then the short ones.
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        let mut submitted = 0;
        {
            let mut sq = ring.submission();
            for (k, &i) in pending.iter().enumerate() {
                // Link a sync behind the write just before it to the same fd.
                let link = matches!(
                    (&ops[i], pending.get(k + 1).map(|&j| &ops[j])),
                    (Op::Write { fd: a, .. }, Some(Op::Sync { fd: b })) if a == b
                );
                let entry = match &mut ops[i] {
                    Op::Read { fd, buf, off } => {
                        let rest = &mut buf[done[i]..];
                        opcode::Read::new(types::Fd(*fd), rest.as_mut_ptr(), rest.len() as u32)
                            .offset(*off + done[i] as u64)
                            .build()
                    }
                    Op::Write { fd, buf, off } => {
                        let rest = &buf[done[i]..];
                        opcode::Write::new(types::Fd(*fd), rest.as_ptr(), rest.len() as u32)
                            .offset(*off + done[i] as u64)
                            .build()
                    }
                    Op::Sync { fd } => opcode::Fsync::new(types::Fd(*fd))
                        .flags(types::FsyncFlags::DATASYNC)
                        .build(),
                };
                let entry = if link {
                    entry.flags(squeue::Flags::IO_LINK)
                } else {
                    entry
                }
                .user_data(i as u64);
                // SAFETY: every buffer an entry points into is borrowed by `ops` for this
                // whole function, and the function does not return before every submitted
                // entry has completed (the loop below waits for all of them).
                if unsafe { sq.push(&entry) }.is_err() {
                    break;
                }
                submitted += 1;
            }
        }
        if let Err(e) = ring.submit_and_wait(submitted) {
            // The kernel consumed none of the entries (io_uring_enter fails only then, e.g.
            // EAGAIN or EBUSY), and nothing of ours is in flight (every earlier round was
            // reaped): run this round synchronously, and have the caller close the ring so
            // the refused entries are never sent.
            tracing::warn!(error = %e, "io_uring submit refused; this batch runs synchronously");
            for &i in &pending {
                result[i] = Some(run_sync(&mut ops[i]));
            }
            let out = result
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(io::Error::other("not run"))))
                .collect();
            return (out, false);
        }
        let mut reaped = 0;
        let mut again = Vec::new();
        while reaped < submitted {
            let cqes: Vec<(u64, i32)> = ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            if cqes.is_empty() {
                // Entries in flight still point into our buffers: waiting for them is the
                // only safe thing, whatever the wait returns.
                let _ = ring.submit_and_wait(1);
                continue;
            }
            for (ud, res) in cqes {
                reaped += 1;
                let i = ud as usize;
                let len = match &ops[i] {
                    Op::Read { buf, .. } => buf.len(),
                    Op::Write { buf, .. } => buf.len(),
                    Op::Sync { .. } => 0,
                };
                if res == -libc_ecanceled() {
                    // A linked sync whose write failed: the write's error is the one reported.
                    result[i] = Some(Err(io::Error::other("canceled: the linked write failed")));
                } else if res < 0 {
                    result[i] = Some(Err(errno(res)));
                } else if matches!(ops[i], Op::Sync { .. }) {
                    result[i] = Some(Ok(()));
                } else if res == 0 && len > done[i] {
                    result[i] = Some(Err(io::Error::from(io::ErrorKind::UnexpectedEof)));
                } else {
                    done[i] += res as usize;
                    if done[i] >= len {
                        result[i] = Some(Ok(()));
                    } else {
                        again.push(i);
                    }
                }
            }
        }
        for &i in &pending[submitted..] {
            again.push(i);
        }
        // A short write's linked sync ran before its remainder: run it again after it.
        let syncs: Vec<usize> = again
            .iter()
            .filter(|&&i| {
                matches!((&ops[i], ops.get(i + 1)), (Op::Write { fd: a, .. }, Some(Op::Sync { fd: b })) if a == b)
            })
            .map(|&i| i + 1)
            .collect();
        for j in syncs {
            result[j] = None;
            again.push(j);
        }
        again.sort_unstable();
        again.dedup();
        pending = again;
    }
    let out = result
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("not run"))))
        .collect();
    (out, true)
}

/// Linux's ECANCELED (125): io_uring's answer for a linked entry whose predecessor failed.
const fn libc_ecanceled() -> i32 {
    125
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_writes_reads_and_syncs_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("a"))
            .unwrap();
        let b = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("b"))
            .unwrap();
        let data = vec![0x42u8; 8192];
        let r = run(&mut [
            Op::Write {
                fd: a.as_raw_fd(),
                buf: &data,
                off: 4096,
            },
            Op::Sync { fd: a.as_raw_fd() },
            Op::Write {
                fd: b.as_raw_fd(),
                buf: &data,
                off: 0,
            },
            Op::Sync { fd: b.as_raw_fd() },
        ]);
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        if !in_use() {
            eprintln!("io_uring refused by the kernel here: the batch ran as pread/pwrite");
        }
        let (mut x, mut y) = (vec![0u8; 8192], vec![0u8; 8192]);
        let r = run(&mut [
            Op::Read {
                fd: a.as_raw_fd(),
                buf: &mut x,
                off: 4096,
            },
            Op::Read {
                fd: b.as_raw_fd(),
                buf: &mut y,
                off: 0,
            },
        ]);
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        assert!(x == data && y == data);
        // Past the end: a short read, reported as such.
        let mut z = vec![0u8; 4096];
        let r = run(&mut [Op::Read {
            fd: b.as_raw_fd(),
            buf: &mut z,
            off: 6000,
        }]);
        assert_eq!(
            r[0].as_ref().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
