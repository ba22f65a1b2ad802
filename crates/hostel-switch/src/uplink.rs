//! TAP devices as ports: a network's uplink (created by the switch, carrying the gateway
//! MAC) and a TAP port (an existing device attached by name, a container's NIC). Both use
//! virtio-net headers, so offloads cross into the host kernel untouched, and both have a
//! reader thread that feeds what the host sends through the same pipeline and delivery path
//! as a VM's TX queue ([`crate::datapath::forward`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::datapath::forward;
use crate::datapath::pipeline::{Ctx, Decision, Ingress};
use crate::datapath::port::PortRuntime;
use crate::datapath::ratelimit::{self, Class, Limiter};
use crate::datapath::rx::FrameSrc;
use crate::datapath::vnet::{VnetHdr, VNET_HDR_LEN};
use crate::datapath::Core;
use crate::error::SwitchError;
use crate::stats::DropReason;
use crate::tables::Tables;
use crate::types::MacAddr;
use hostel_virtq::SegList;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
/// How long the reader waits before looking at `stop` again.
const POLL_MS: libc::c_int = 100;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

fn ifreq(name: &str) -> IfReq {
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    let n = name.len().min(libc::IFNAMSIZ - 1);
    r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    r
}

fn ioctl(fd: RawFd, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: every caller passes a pointer to a live, correctly sized argument for `req`.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One open TAP device. Counters live on the [`PortRuntime`] that owns it.
pub struct TapDev {
    pub name: String,
    file: File,
    stop: AtomicBool,
}

/// The network uplink's constructor: the uplink is a [`PortRuntime`] whose I/O is a TAP.
pub struct Uplink;

impl Uplink {
    /// Opens (creating if needed) TAP `name` as `network`'s uplink, with the gateway MAC so
    /// the host answers as the gateway, and sets it up.
    pub fn open(name: &str, network: &str, mac: MacAddr) -> Result<Arc<PortRuntime>, SwitchError> {
        let dev = TapDev::create(name, mac)?;
        tracing::debug!(uplink = %name, network = %network, "uplink open");
        Ok(PortRuntime::tap(name, dev))
    }
}

/// What a TAP reader's frames are: host traffic into a network (trusted, no anti-spoofing)
/// or a port's own traffic, judged like a VM's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Uplink { network: String },
    Port,
}

impl TapDev {
    /// Opens (creating if needed) TAP `name` with 12-byte vnet headers and checksum/TSO
    /// offloads, gives it `mac`, and sets it up.
    pub fn create(name: &str, mac: MacAddr) -> Result<Arc<TapDev>, SwitchError> {
        let dev = Self::open_fd(name)?;
        set_mac_and_up(name, mac).map_err(|source| SwitchError::Tap {
            name: name.to_string(),
            source,
        })?;
        Ok(dev)
    }

    /// Attaches to the existing TAP device `name` (never creating one: a misspelt name must
    /// not become a fresh, unconnected device). A device that is no TAP, or that another
    /// process holds, is refused by the kernel.
    pub fn attach(name: &str) -> Result<Arc<TapDev>, SwitchError> {
        let cname = std::ffi::CString::new(name).map_err(|_| SwitchError::Tap {
            name: name.to_string(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(SwitchError::Tap {
                name: name.to_string(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such network device"),
            });
        }
        Self::open_fd(name)
    }

    fn open_fd(name: &str) -> Result<Arc<TapDev>, SwitchError> {
        let err = |source| SwitchError::Tap {
            name: name.to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(err)?;
        let fd = file.as_raw_fd();
        let mut req = ifreq(name);
        let flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        req.data[..2].copy_from_slice(&flags.to_ne_bytes());
        ioctl(fd, TUNSETIFF, (&mut req as *mut IfReq).cast()).map_err(err)?;
        let mut hdr_sz: libc::c_int = VNET_HDR_LEN as libc::c_int;
        ioctl(
            fd,
            TUNSETVNETHDRSZ,
            (&mut hdr_sz as *mut libc::c_int).cast(),
        )
        .map_err(err)?;
        // TUNSETOFFLOAD takes the flags as the argument value itself.
        // SAFETY: plain integer argument.
        let r = unsafe {
            libc::ioctl(
                fd,
                TUNSETOFFLOAD as _,
                (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) as libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(Arc::new(TapDev {
            name: name.to_string(),
            file,
            stop: AtomicBool::new(false),
        }))
    }

    /// Writes one frame (header, switch-held head, then guest segments) with a single
    /// `writev`, straight from guest memory.
    pub fn send(&self, hdr: VnetHdr, src: &FrameSrc<'_>) -> Result<(), DropReason> {
        let hb = hdr.to_bytes();
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2 + hostel_virtq::MAX_SEGS];
        iov[0] = libc::iovec {
            iov_base: hb.as_ptr() as *mut _,
            iov_len: hb.len(),
        };
        let head_len = src.head.len().min(src.len);
        iov[1] = libc::iovec {
            iov_base: src.head.as_ptr() as *mut _,
            iov_len: head_len,
        };
        let mut cnt = 2;
        let mut left = src.len - head_len;
        let mut pos = 0usize;
        if left > 0 {
            for s in src.tail.as_slice() {
                let slen = s.len();
                if src.tail_skip >= pos + slen {
                    pos += slen;
                    continue;
                }
                let off = src.tail_skip.saturating_sub(pos);
                let n = (slen - off).min(left);
                iov[cnt] = s.iovec(off, n).ok_or(DropReason::BadDescriptor)?;
                cnt += 1;
                left -= n;
                pos += slen;
                if left == 0 {
                    break;
                }
            }
        }
        // SAFETY: the iovecs point into `hb`, `src.head` and guest segments (each checked
        // by `Seg::iovec` to lie within its `Seg`, mapped while the segment's borrow of the
        // memory map lives); all outlive the call, and writev only reads them.
        let r = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), cnt as libc::c_int) };
        if r < 0 {
            return Err(DropReason::UplinkError);
        }
        Ok(())
    }

    /// Reads one frame (with its virtio-net header) without blocking.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let r = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// A persistent device outlives this process: a switch that crashes and comes back
    /// reattaches to the same interface, and whatever the host configured on it (addresses,
    /// routes, bridge membership, namespace) is still there. Cleared before the network is
    /// removed, so the device goes away with the last open descriptor.
    pub fn set_persistent(&self, persistent: bool) -> Result<(), SwitchError> {
        // TUNSETPERSIST takes the flag as the argument value itself.
        // SAFETY: plain integer argument on a TAP descriptor we own.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETPERSIST as _,
                libc::c_ulong::from(persistent),
            )
        };
        if r < 0 {
            return Err(SwitchError::Tap {
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Stops the reader (within [`POLL_MS`]).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Reader loop of the TAP behind `rt`: waits for it to become readable (100 ms timeout only
/// to notice [`TapDev::stop`]), then feeds every queued frame through the pipeline and the
/// delivery path shared with the vhost-user ports.
///
/// A TAP whose interface the host deleted (by hand, or with a namespace it had moved it
/// to) polls as an error at once, forever: the loop then waits out the timeout instead of
/// spinning a core, and says once that the device is gone (removing and re-adding the
/// network or port, or restarting the switch, opens it anew).
pub fn run(rt: Arc<PortRuntime>, core: Arc<Core>, role: Role) {
    let Some(dev) = rt.tap_dev().cloned() else {
        return;
    };
    let mut buf = vec![0u8; VNET_HDR_LEN + 65_536 + 256];
    let mut scratch = forward::Scratch::default();
    let mut said_gone = false;
    while !dev.stop.load(Ordering::Acquire) {
        let mut pfd = libc::pollfd {
            fd: dev.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if r <= 0 {
            continue;
        }
        if pfd.revents & libc::POLLIN == 0 {
            if !said_gone {
                tracing::warn!(tap = %dev.name, port = %rt.id,
                    "TAP device gone from the host; its traffic is dropped");
                said_gone = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(POLL_MS as u64));
            continue;
        }
        // One table snapshot per wakeup, not per frame. A network or port not (or no longer)
        // in the tables still has its queue drained, or the poll would never block.
        let tables = core.tables();
        let ingress = match &role {
            Role::Uplink { network } => tables.net_by_id(network).map(Ingress::Uplink),
            Role::Port => tables.port_by_key(rt.key).map(Ingress::Port),
        };
        // A TAP port's storm control, as on a VM's TX (an uplink carries the host's traffic
        // and has none).
        let mut limiter = match ingress {
            Some(Ingress::Port(pi)) => rt.policer.engage(&tables.port(pi).cfg.limits),
            _ => None,
        };
        for _ in 0..64 {
            let n = match dev.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => break,
            };
            match ingress {
                Some(i) => {
                    let frame = Frame {
                        ingress: i,
                        buf: &buf[..n],
                    };
                    handle(
                        &core,
                        &tables,
                        &rt,
                        frame,
                        limiter.as_deref_mut(),
                        &mut scratch,
                    )
                }
                None => rt.stats.count_drop(DropReason::UnknownPort),
            }
        }
        // A TAP port's frames through an edge leave in one system call.
        if let Some(x) = &tables.ext {
            x.rt.flush();
        }
    }
}

/// One frame read from a TAP, with its virtio-net header.
struct Frame<'a> {
    ingress: Ingress,
    buf: &'a [u8],
}

fn handle(
    core: &Core,
    tables: &Tables,
    rt: &PortRuntime,
    Frame { ingress, buf }: Frame<'_>,
    limiter: Option<&mut Limiter>,
    scratch: &mut forward::Scratch,
) {
    rt.stats
        .add_tx(1, buf.len().saturating_sub(VNET_HDR_LEN) as u64);
    let Some(h) = buf
        .get(..VNET_HDR_LEN)
        .and_then(|h| <&[u8; VNET_HDR_LEN]>::try_from(h).ok())
    else {
        rt.stats.count_drop(DropReason::ShortChain);
        return;
    };
    let mut hdr = VnetHdr::from_bytes(h);
    hdr.num_buffers = 0;
    let frame = &buf[VNET_HDR_LEN..];
    if let Err(r) = hdr.validate(frame.len()) {
        rt.stats.count_drop(r);
        return;
    }
    let mut ctx = Ctx::new(tables, ingress, frame, frame.len());
    let mut decision = core.pipeline.classify(&mut ctx);
    let mirror = ctx.mirror;
    if let (Some(l), Some(first)) = (limiter, frame.first()) {
        let group = first & 1 == 1;
        ratelimit::police(
            l,
            std::slice::from_mut(&mut decision),
            |d| Class::of(d, group).map(|c| (c, frame.len())),
            |d, r| *d = Decision::Drop(r),
        );
    }
    let empty = SegList::default();
    let src = FrameSrc {
        head: frame,
        tail: &empty,
        tail_skip: 0,
        len: frame.len(),
    };
    let fwd = forward::Forward {
        tables,
        ingress,
        sender: rt,
    };
    if let Err(r) = fwd.forward(decision, hdr, &src, scratch) {
        rt.stats.count_drop(r);
    }
    if let Some(m) = mirror {
        fwd.mirror(m, decision, hdr, &src);
    }
}

fn set_mac_and_up(name: &str, mac: MacAddr) -> io::Result<()> {
    // SAFETY: creating a datagram socket has no memory-safety preconditions.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is a fresh fd we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    let mut req = ifreq(name);
    req.data[..2].copy_from_slice(&(libc::ARPHRD_ETHER).to_ne_bytes());
    req.data[2..8].copy_from_slice(&mac.0);
    ioctl(
        sock.as_raw_fd(),
        libc::SIOCSIFHWADDR,
        (&mut req as *mut IfReq).cast(),
    )?;
    let mut req = ifreq(name);
    ioctl(
        sock.as_raw_fd(),
        libc::SIOCGIFFLAGS,
        (&mut req as *mut IfReq).cast(),
    )?;
    let flags = i16::from_ne_bytes([req.data[0], req.data[1]]) | libc::IFF_UP as i16;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(
        sock.as_raw_fd(),
        libc::SIOCSIFFLAGS,
        (&mut req as *mut IfReq).cast(),
    )
}
