//! The kernel side of `bench-nft`: two network namespaces it creates and always deletes (a
//! guard), veths between them, an AF_PACKET frame generator and the counters it reads.
//!
//! Topology: namespace `gen` holds `a0` and `b0`, namespace `fw` holds their peers `a1`
//! and `b1` and forwards between them under the nftables ruleset. Frames are written to `a0`
//! (internet → VM) and counted as they arrive on `b0`. RPS steers `a1`'s receive work (the
//! whole forwarding path: conntrack, nftables, routing, `b1`'s transmit) to [`FW_CPU`], while
//! the sender and `b0`'s receive run on [`GEN_CPU`], so the forwarding CPU's softirq time in
//! `/proc/stat` is the forwarding cost alone.
//!
//! Hand-written AF_PACKET and setns calls: a few libc calls, no crate does just this.

use std::ffi::CString;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

pub const GEN_CPU: usize = 0;
pub const FW_CPU: usize = 1;
pub const MAC_A0: [u8; 6] = [0x02, 0x68, 0, 0, 0, 0xa0];
pub const MAC_A1: [u8; 6] = [0x02, 0x68, 0, 0, 0, 0xa1];
pub const MAC_B0: [u8; 6] = [0x02, 0x68, 0, 0, 0, 0xb0];
pub const MAC_B1: [u8; 6] = [0x02, 0x68, 0, 0, 0, 0xb1];

/// Set by SIGINT/SIGTERM: loops stop and the guard deletes the namespaces.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn catch_signals() {
    for s in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) };
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The two namespaces; dropping it deletes them (and with them the veths and conntrack).
pub struct Topology {
    pub fw: String,
    pub gen: String,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.fw, &self.gen] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

impl Topology {
    pub fn create() -> Result<Topology> {
        let id = std::process::id();
        let t = Topology {
            fw: format!("hnft-fw-{id}"),
            gen: format!("hnft-gen-{id}"),
        };
        run(&["ip", "netns", "add", &t.gen])?;
        run(&["ip", "netns", "add", &t.fw])?;
        let (g, f) = (t.gen.as_str(), t.fw.as_str());
        for (x0, m0, x1, m1) in [("a0", MAC_A0, "a1", MAC_A1), ("b0", MAC_B0, "b1", MAC_B1)] {
            run(&[
                "ip",
                "-n",
                g,
                "link",
                "add",
                x0,
                "address",
                &mac(m0),
                "type",
                "veth",
                "peer",
                "name",
                x1,
                "address",
                &mac(m1),
                "netns",
                f,
            ])?;
            run(&["ip", "-n", g, "link", "set", x0, "up"])?;
            run(&["ip", "-n", f, "link", "set", x1, "up"])?;
        }
        let sh = |ns: &str, script: &str| run(&["ip", "netns", "exec", ns, "sh", "-ec", script]);
        sh(
            f,
            &format!(
                "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
                 net.ipv4.conf.a1.rp_filter=0 net.ipv4.conf.b1.rp_filter=0 \
                 net.netfilter.nf_conntrack_tcp_be_liberal=1
                 ip addr add 192.0.2.254/24 dev a1
                 ip addr add 192.0.3.254/24 dev b1
                 ip neigh add 192.0.2.1 lladdr {} dev a1 nud permanent
                 ip neigh add 192.0.3.1 lladdr {} dev b1 nud permanent
                 ip route add 198.18.0.0/15 via 192.0.2.1 dev a1
                 ip route add 10.0.0.0/16 via 192.0.3.1 dev b1
                 echo {:x} > /sys/class/net/a1/queues/rx-0/rps_cpus
                 echo {:x} > /sys/class/net/b1/queues/rx-0/rps_cpus",
                mac(MAC_A0),
                mac(MAC_B0),
                1u32 << FW_CPU,
                1u32 << FW_CPU
            ),
        )?;
        sh(
            g,
            &format!(
                "echo {:x} > /sys/class/net/b0/queues/rx-0/rps_cpus
                 echo {:x} > /sys/class/net/a0/queues/rx-0/rps_cpus",
                1u32 << GEN_CPU,
                1u32 << GEN_CPU
            ),
        )?;
        Ok(t)
    }

    /// Loads a ruleset (`nft -f -`) into the forwarding namespace; `None` flushes it.
    pub fn load(&self, ruleset: Option<&str>) -> Result<()> {
        use std::io::Write;
        let text = ruleset.unwrap_or("flush ruleset\n");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.fw, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    pub fn conntrack_count(&self) -> Result<u64> {
        let s = run(&[
            "ip",
            "netns",
            "exec",
            &self.fw,
            "cat",
            "/proc/sys/net/netfilter/nf_conntrack_count",
        ])?;
        Ok(s.trim().parse()?)
    }

    /// Packets counted by the `ingress` chain's counter (policy rules evaluated).
    pub fn ingress_packets(&self) -> Result<u64> {
        let s = run(&[
            "ip",
            "netns",
            "exec",
            &self.fw,
            "nft",
            "list",
            "chain",
            "inet",
            "hostel_bench",
            "ingress",
        ])?;
        let n = s
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .unwrap_or("0");
        Ok(n.parse().unwrap_or(0))
    }
}

/// Runs `f` on a thread inside namespace `ns`, pinned to `cpu`.
pub fn in_ns<T: Send>(ns: &str, cpu: usize, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = fs::File::open(&path).with_context(|| path.clone())?;
            // SAFETY: a valid namespace fd; setns affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            // SAFETY: a zeroed cpu_set_t is an empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `cpu` is below CPU_SETSIZE (the bench uses CPUs 0 and 1).
            unsafe { libc::CPU_SET(cpu, &mut set) };
            // SAFETY: `set` is a valid cpu_set_t of the size passed.
            if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
                bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
    })
}

/// (rx packets, tx packets) of `dev` in the calling thread's namespace.
pub fn dev_packets(dev: &str) -> Result<(u64, u64)> {
    let s = fs::read_to_string("/proc/thread-self/net/dev")?;
    for line in s.lines() {
        if let Some((name, rest)) = line.split_once(':') {
            if name.trim() == dev {
                let v: Vec<u64> = rest
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                return Ok((v[1], v[9]));
            }
        }
    }
    bail!("{dev} not in /proc/thread-self/net/dev")
}

/// Softirq time of `cpu` from /proc/stat, in nanoseconds.
pub fn softirq_ns(cpu: usize) -> Result<u64> {
    let s = fs::read_to_string("/proc/stat")?;
    let tag = format!("cpu{cpu} ");
    let line = s
        .lines()
        .find(|l| l.starts_with(&tag))
        .context("/proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(v[6] * 1_000_000_000 / hz)
}

/// An AF_PACKET socket that only sends, past the qdisc.
pub struct PacketSock {
    fd: OwnedFd,
}

impl PacketSock {
    pub fn open(dev: &str) -> Result<PacketSock> {
        // SAFETY: plain socket(2); protocol 0 receives nothing.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket this struct now owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = CString::new(dev)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {dev}");
        }
        // SAFETY: a zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sll) as u32,
            )
        };
        if rc != 0 {
            bail!("bind {dev}: {}", std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        // SAFETY: an int option of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one as *const _ as *const libc::c_void,
                4,
            )
        };
        Ok(PacketSock { fd })
    }

    /// Sends up to 64 frames with one sendmmsg; returns how many the kernel took.
    pub fn send(&self, frames: &[Vec<u8>]) -> usize {
        let n = frames.len().min(64);
        let mut iov: [libc::iovec; 64] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 64];
        // SAFETY: a zeroed mmsghdr is valid (null name, no control data).
        let mut msgs: [libc::mmsghdr; 64] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iov[i].iov_base = frames[i].as_ptr() as *mut libc::c_void;
            iov[i].iov_len = frames[i].len();
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..n]` point at live iovecs over live frames; the kernel only reads them.
        let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        rc.max(0) as usize
    }
}

fn csum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/TCP ACK frame of `len` bytes (54 to 1514) with valid checksums.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    len: usize,
    dst: [u8; 6],
    src: [u8; 6],
    sip: Ipv4Addr,
    sport: u16,
    dip: Ipv4Addr,
    dport: u16,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    let mut f = vec![0u8; len.max(60)];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = len.max(60) - 14;
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&sip.octets());
    ip[16..20].copy_from_slice(&dip.octets());
    let c = csum(&ip[..20], 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut ip[20..ip_len];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 0x50;
    t[13] = 0x10; // ACK
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = 0u32;
    for w in [sip.octets(), dip.octets()] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 6 + (ip_len as u32 - 20);
    let c = csum(t, pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    f
}
