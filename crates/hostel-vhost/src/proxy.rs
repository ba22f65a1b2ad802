//! A vhost-user message relay between QEMU and the backend library.
//!
//! QEMU's vhost-user-net sends SET_VRING_ENABLE when the guest configures its queues, which
//! is before SET_FEATURES; the `vhost` crate rejects that as "inactive feature" and drops the
//! connection. The relay holds back enables that arrive before features are set and replays
//! the last state of each ring right after SET_FEATURES (QEMU 7.2 does not resend it); every
//! other message passes through unchanged, file descriptors included. Only control messages
//! cross the relay; the datapath (shared memory and eventfds) never does.
//!
//! Seeing every message first, the relay is also where the descriptors a frontend hands
//! over are vetted ([`crate::vet`]): guest memory files that could fault the backend
//! and eventfds that could spin or block it are refused before the library maps or polls
//! them, and the connection is closed with a warning naming the port and the problem.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::vet::{Refused, Vetter};

const HDR_LEN: usize = 12;
const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
const FLAG_NEED_REPLY: u32 = 1 << 3;
const FLAG_REPLY: u32 = 1 << 2;
const VERSION: u32 = 1;
/// The vhost-user library's limit (MAX_ATTACHED_FD_ENTRIES); a message with more is refused.
const MAX_FDS: usize = 32;
/// Largest payload the relay accepts (vhost-user messages are a few hundred bytes).
const MAX_PAYLOAD: usize = 4096;

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("frontend refused: {0}")]
    Refused(#[from] Refused),
}

fn recv_with_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the only iovec points at `buf`, which we borrow mutably for the call and
    // which may hold any bytes.
    let (n, count) = unsafe { sock.recv_with_fds(&mut iov, &mut raw) }?;
    let first = fds.len();
    for &fd in &raw[..count] {
        // SAFETY: recvmsg just installed these descriptors in our table; nothing else
        // owns them.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // vmm-sys-util's recvmsg passes no MSG_CMSG_CLOEXEC, so a guest's memory files and
    // eventfds would leak into anything the backend process spawns; close that window right away.
    for fd in &fds[first..] {
        set_cloexec(fd.as_fd())?;
    }
    Ok(n)
}

fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFD with an integer flag set changes only this descriptor's own flags
    // (not the shared open file description), on a descriptor that stays open for the call.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send_with_fds(sock: &UnixStream, buf: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    if fds.is_empty() {
        return (&*sock).write_all(buf);
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    for (r, fd) in raw.iter_mut().zip(fds) {
        *r = fd.as_raw_fd();
    }
    // The descriptors travel with the first bytes; a short send leaves only plain bytes.
    let n = sock.send_with_fds(&[buf], &raw[..fds.len()])?;
    (&*sock).write_all(&buf[n..])
}

fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Relays frontend→backend messages until either side closes or a message is refused.
fn frontend_to_backend(front: &UnixStream, back: &UnixStream) -> Result<(), RelayError> {
    let mut vetter = Vetter::default();
    let mut features_set = false;
    let mut deferred: [Option<[u8; 8]>; 8] = [None; 8];
    let mut buf = [0u8; HDR_LEN + MAX_PAYLOAD];
    loop {
        let mut fds = Vec::new();
        let mut got = 0;
        while got < HDR_LEN {
            let n = recv_with_fds(front, &mut buf[got..HDR_LEN], &mut fds)?;
            if n == 0 {
                return Ok(());
            }
            got += n;
        }
        // Descriptors may come with each piece of a header that arrives in pieces.
        if fds.len() > MAX_FDS {
            return Err(
                io::Error::other(format!("{} descriptors with one message", fds.len())).into(),
            );
        }
        let (req, flags, size) = (le32(&buf, 0), le32(&buf, 4), le32(&buf, 8) as usize);
        if size > MAX_PAYLOAD {
            return Err(io::Error::other(format!("vhost-user payload too large: {size}")).into());
        }
        (&*front).read_exact(&mut buf[HDR_LEN..HDR_LEN + size])?;
        tracing::trace!(req, flags, size, fds = fds.len(), "vhost-user request");
        vetter.check(req, &buf[HDR_LEN..HDR_LEN + size], &fds)?;
        match req {
            SET_FEATURES => {
                features_set = true;
                send_with_fds(back, &buf[..HDR_LEN + size], &fds)?;
                for (index, state) in deferred.iter_mut().enumerate() {
                    if let Some(body) = state.take() {
                        tracing::debug!(index, "replaying deferred SET_VRING_ENABLE");
                        let mut m = [0u8; HDR_LEN + 8];
                        m[0..4].copy_from_slice(&SET_VRING_ENABLE.to_le_bytes());
                        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
                        m[8..12].copy_from_slice(&8u32.to_le_bytes());
                        m[12..20].copy_from_slice(&body);
                        send_with_fds(back, &m, &[])?;
                    }
                }
                continue;
            }
            SET_VRING_ENABLE if !features_set => {
                if size == 8 {
                    let index = le32(&buf, HDR_LEN) as usize;
                    if let Some(slot) = deferred.get_mut(index) {
                        let mut body = [0u8; 8];
                        body.copy_from_slice(&buf[HDR_LEN..HDR_LEN + 8]);
                        *slot = Some(body);
                    }
                }
                tracing::debug!("deferring SET_VRING_ENABLE received before SET_FEATURES");
                if flags & FLAG_NEED_REPLY != 0 {
                    let mut ack = [0u8; HDR_LEN + 8];
                    ack[0..4].copy_from_slice(&req.to_le_bytes());
                    ack[4..8].copy_from_slice(&(VERSION | FLAG_REPLY).to_le_bytes());
                    ack[8..12].copy_from_slice(&8u32.to_le_bytes());
                    (&*front).write_all(&ack)?;
                }
                continue;
            }
            _ => {}
        }
        send_with_fds(back, &buf[..HDR_LEN + size], &fds)?;
    }
}

/// Runs the relay on the current thread (frontend→backend) plus one helper thread for
/// replies; returns when either side disconnects or the frontend sends something refused
/// (see [`crate::vet`]), after shutting both down.
pub fn relay(front: UnixStream, back: UnixStream, port: &str) {
    let (f2, b2) = match (front.try_clone(), back.try_clone()) {
        (Ok(f), Ok(b)) => (f, b),
        _ => return,
    };
    let replies = std::thread::spawn(move || {
        // Backend→frontend traffic is replies only; no descriptors flow that way for the
        // protocol features the backend offers.
        let _ = io::copy(&mut &b2, &mut &f2);
        let _ = f2.shutdown(Shutdown::Both);
        let _ = b2.shutdown(Shutdown::Both);
    });
    match frontend_to_backend(&front, &back) {
        Ok(()) => {}
        Err(RelayError::Io(e)) => tracing::debug!(port, error = %e, "vhost-user relay ended"),
        Err(e @ RelayError::Refused(_)) => {
            tracing::warn!(port, error = %e, "vhost-user connection closed")
        }
    }
    let _ = front.shutdown(Shutdown::Both);
    let _ = back.shutdown(Shutdown::Both);
    let _ = replies.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect: descriptors received from a frontend were inheritable (recvmsg without
    /// MSG_CMSG_CLOEXEC), leaking guest memory files into any child the backend process spawns.
    #[test]
    fn received_descriptors_are_close_on_exec() {
        let (a, b) = UnixStream::pair().unwrap();
        // SAFETY: eventfd with no flags returns a fresh descriptor we own (or -1).
        let raw = unsafe { libc::eventfd(0, 0) };
        assert!(raw >= 0);
        // SAFETY: a fresh descriptor nothing else owns.
        let sent = [unsafe { OwnedFd::from_raw_fd(raw) }];
        send_with_fds(&a, b"hi", &sent).unwrap();
        let mut buf = [0u8; 2];
        let mut fds = Vec::new();
        assert_eq!(recv_with_fds(&b, &mut buf, &mut fds).unwrap(), 2);
        assert_eq!(fds.len(), 1);
        // SAFETY: F_GETFD only reads the flags of a descriptor we own.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0);
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received descriptor is inheritable"
        );
    }
}
