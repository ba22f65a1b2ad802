//! A vhost-user message relay between QEMU and the backend library.
//!
//! QEMU's vhost-user-net sends SET_VRING_ENABLE when the guest configures its queues, which
//! is before SET_FEATURES; the `vhost` crate rejects that as "inactive feature" and drops the
//! connection. The relay holds back enables that arrive before features are set and replays
//! the last state of each ring right after SET_FEATURES (QEMU 7.2 does not resend it); every
//! other message passes through unchanged, file descriptors included. Only control messages cross the relay;
//! the datapath (shared memory and eventfds) never does.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

const HDR_LEN: usize = 12;
const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
const FLAG_NEED_REPLY: u32 = 1 << 3;
const FLAG_REPLY: u32 = 1 << 2;
const VERSION: u32 = 1;
const MAX_FDS: usize = 32;
/// Largest payload the relay accepts (vhost-user messages are a few hundred bytes).
const MAX_PAYLOAD: usize = 4096;

fn recv_with_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; (MAX_FDS * 4 + 64) / 8];
    // SAFETY: msghdr is plain data; zeroed is a valid initial state.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points at live buffers sized as declared.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control buffer the kernel just filled, per cmsg(3).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n as usize)
}

fn send_with_fds(sock: &UnixStream, buf: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    if fds.is_empty() {
        return (&*sock).write_all(buf);
    }
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut _,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; (MAX_FDS * 4 + 64) / 8];
    // SAFETY: as in recv_with_fds; the control message is built with the CMSG macros inside
    // a buffer large enough for MAX_FDS descriptors.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE((fds.len() * 4) as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as _;
        let data = libc::CMSG_DATA(c) as *mut RawFd;
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), fd.as_raw_fd());
        }
        let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if (n as usize) < buf.len() {
            (&*sock).write_all(&buf[n as usize..])?;
        }
    }
    Ok(())
}

fn le32(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Relays frontend→backend messages until either side closes.
fn frontend_to_backend(front: &UnixStream, back: &UnixStream) -> io::Result<()> {
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
            if fds.len() > MAX_FDS {
                return Err(io::Error::other("too many fds"));
            }
        }
        let (req, flags, size) = (le32(&buf, 0), le32(&buf, 4), le32(&buf, 8) as usize);
        if size > MAX_PAYLOAD {
            return Err(io::Error::other(format!(
                "vhost-user payload too large: {size}"
            )));
        }
        (&*front).read_exact(&mut buf[HDR_LEN..HDR_LEN + size])?;
        tracing::trace!(req, flags, size, fds = fds.len(), "vhost-user request");
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
/// replies; returns when either side disconnects, after shutting both down.
pub fn relay(front: UnixStream, back: UnixStream) {
    let (f2, b2) = match (front.try_clone(), back.try_clone()) {
        (Ok(f), Ok(b)) => (f, b),
        _ => return,
    };
    let replies = std::thread::spawn(move || {
        // Backend→frontend traffic is replies only; no descriptors flow that way for the
        // protocol features the switch offers.
        let _ = io::copy(&mut &b2, &mut &f2);
        let _ = f2.shutdown(Shutdown::Both);
        let _ = b2.shutdown(Shutdown::Both);
    });
    if let Err(e) = frontend_to_backend(&front, &back) {
        tracing::debug!(error = %e, "vhost-user relay ended");
    }
    let _ = front.shutdown(Shutdown::Both);
    let _ = back.shutdown(Shutdown::Both);
    let _ = replies.join();
}
