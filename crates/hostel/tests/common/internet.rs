//! The internet of the edge tests (`daemon_edge`, `daemon_ids_live`, `daemon_appliance`): a
//! namespace holding the far end of a veth pair, with the gateway 203.0.113.1/24 and far
//! hosts on its loopback; the near end is the switch's external interface. Both go on drop.

use super::{DaemonCli, Tenant};
use hostel_testkit::daemon::TestDaemon;
use hostel_testkit::{sh, NetNs};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

pub struct Internet {
    pub ns: NetNs,
    /// The host's end: the "real NIC" the switch drives.
    pub nic: String,
}

impl Internet {
    /// `label` names the namespace and `prefix` (two letters) the veth ends, so tests running
    /// at once never share one; `far` addresses go on the namespace's loopback; `v6`, an
    /// `address/prefix` for the gateway's end, adds IPv6.
    pub fn new(label: &str, prefix: &str, far: &[&str], v6: Option<&str>) -> Internet {
        let tag = std::process::id() % 100_000;
        let ns = NetNs::new(label);
        let (nic, peer) = (format!("{prefix}a{tag}"), format!("{prefix}b{tag}"));
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &nic])
            .stderr(std::process::Stdio::null())
            .status();
        sh(&format!(
            "ip link add {nic} type veth peer name {peer} && ip link set {peer} netns {} && \
             sysctl -qw net.ipv6.conf.{nic}.disable_ipv6=1 && ip link set {nic} up",
            ns.name
        ));
        // Checksum offload stays on at the namespace's end, as a veth has it by default: its
        // TCP/UDP segments reach the switch's ring with partial checksums
        // (TP_STATUS_CSUMNOTREADY), which the switch completes before a guest sees them.
        let mut cmd = format!("ip link set {peer} up && ip addr add 203.0.113.1/24 dev {peer}");
        for a in far {
            cmd.push_str(&format!(" && ip addr add {a}/32 dev lo"));
        }
        if let Some(v6) = v6 {
            cmd.push_str(&format!(" && ip addr add {v6} dev {peer} nodad"));
        }
        ns.exec(&cmd);
        Internet { ns, nic }
    }

    /// A server on `addr` in the namespace answering each connection's first line with
    /// `ACK <line>`, for the whole test.
    pub fn serve(&self, addr: String) {
        let _ = self.ns.spawn_in(move || {
            let l = TcpListener::bind(&addr).expect("bind in the namespace");
            for s in l.incoming().flatten() {
                s.set_read_timeout(Some(Duration::from_secs(3))).ok();
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).is_ok() {
                    let _ = (&s).write_all(format!("ACK {line}").as_bytes());
                }
            }
        });
    }

    /// A TCP connection from the gateway's on-link address (203.0.113.1: a host on the
    /// external network, outside every tenant), 3 s to connect: the peer's first line, or how
    /// the connect or read failed.
    pub fn tcp(&self, to: String) -> Result<String, ErrorKind> {
        self.ns
            .spawn_in(move || {
                let addr: SocketAddr = to.parse().expect("address");
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                    .map_err(|e| e.kind())?;
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 256];
                while !buf.contains(&b'\n') {
                    match s.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) => return Err(e.kind()),
                    }
                }
                Ok(String::from_utf8_lossy(&buf).trim().to_string())
            })
            .join()
            .expect("tcp thread")
    }

    /// The operator sets this link up as the host's external network: subnet 203.0.113.0/24,
    /// the namespace as gateway, public addresses from 203.0.113.8/29.
    /// `extra` adds flags (routed pools, IPv6).
    pub fn set_external(&self, d: &TestDaemon, extra: &[&str]) {
        let mut args = vec![
            "external",
            "set",
            "--interface",
            &self.nic,
            "--subnet",
            "203.0.113.0/24",
            "--gateway",
            "203.0.113.1",
            "--pool",
            "203.0.113.8/29",
        ];
        args.extend_from_slice(extra);
        let ext = d.op(&args);
        assert!(ext.ok(), "external set: {ext:?}");
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.nic])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The tenant's network `lan` (10.9.0.0/24) on the external network, with source NAT.
pub fn snat_lan(t: &Tenant) {
    let made = t.cli(&[
        "network",
        "create",
        "lan",
        "--subnet",
        "10.9.0.0/24",
        "--external",
        "--snat",
    ]);
    assert!(made.ok(), "{made:?}");
}
