//! The host side of `bench-net`'s end-to-end part: the network namespace with the bridge and
//! TAPs, the `hostel switch` process, and CPU time read from /proc.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The network namespace, bridge and TAPs of the bridge case; removed on drop.
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Creates namespace `name` with bridge `hbnbr0` and TAPs `hbnt0`/`hbnt1` in it (with
    /// virtio-net headers, as QEMU opens them).
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns { name: name.into() };
        ip(&["-n", name, "link", "add", "hbnbr0", "type", "bridge"])?;
        for t in ["hbnt0", "hbnt1"] {
            ip(&[
                "-n", name, "tuntap", "add", "dev", t, "mode", "tap", "vnet_hdr",
            ])?;
            ip(&["-n", name, "link", "set", t, "master", "hbnbr0", "up"])?;
        }
        ip(&["-n", name, "link", "set", "hbnbr0", "up"])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// What the switch's `stats` request tells about a run: guest B's port and both ports' drops.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwitchCounters {
    pub rx_bytes: u64,
    pub rx_frames: u64,
    /// Every drop reason, both ports.
    pub drops: u64,
    /// Drops for want of a free RX buffer in the receiver.
    pub no_rx_buffer: u64,
}

/// A running `hostel switch` with one network (10.0.0.0/24) and ports `vm-a`/`vm-b`.
pub struct SwitchProc {
    child: Child,
    pub control: PathBuf,
    pub sockets: [PathBuf; 2],
}

impl SwitchProc {
    pub fn start(hostel: &Path, dir: &Path) -> Result<SwitchProc> {
        Self::start_with(hostel, dir, None, None)
    }

    /// [`SwitchProc::start`], run inside network namespace `netns` (the external interface
    /// an `external` configuration names lives there), with that external network.
    pub fn start_with(
        hostel: &Path,
        dir: &Path,
        netns: Option<&str>,
        external: Option<serde_json::Value>,
    ) -> Result<SwitchProc> {
        let sockets = [dir.join("vm-a.sock"), dir.join("vm-b.sock")];
        let port = |id: &str, last: u8, sock: &Path| {
            serde_json::json!({
                "id": id, "network": "bench", "mac": format!("52:54:00:00:00:{last:02x}"),
                "ipv4": format!("10.0.0.{last}"), "socket": sock,
            })
        };
        let config = serde_json::json!({
            "networks": [{
                "id": "bench", "subnet4": "10.0.0.0/24", "gateway4": "10.0.0.1",
                "gateway_mac": "52:54:00:00:00:01", "mtu": 1500,
            }],
            "ports": [port("vm-a", 2, &sockets[0]), port("vm-b", 3, &sockets[1])],
        });
        let mut config = config;
        if let Some(x) = external {
            config["external"] = x;
        }
        let cfg = dir.join("switch.json");
        std::fs::write(&cfg, config.to_string())?;
        let control = dir.join("control.sock");
        let log = std::fs::File::create(dir.join("switch.log"))?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(hostel);
                c
            }
            None => Command::new(hostel),
        };
        let child = cmd
            .arg("switch")
            .arg("--control")
            .arg(&control)
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {} switch", hostel.display()))?;
        let mut sw = SwitchProc {
            child,
            control,
            sockets,
        };
        // The control socket is bound after the configuration (and its port sockets).
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&sw.control).is_err() {
            if let Some(st) = sw.child.try_wait()? {
                bail!(
                    "hostel switch exited ({st}); see {}",
                    dir.join("switch.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("hostel switch's control socket never appeared");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sw)
    }

    /// Guest B's port counters and the drops of both ports.
    pub fn counters(&self) -> Result<SwitchCounters> {
        let mut s = UnixStream::connect(&self.control)?;
        s.write_all(b"{\"op\":\"stats\"}\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let p = &v["stats"]["ports"]["vm-b"];
        let get = |k: &str| p[k].as_u64().ok_or_else(|| anyhow!("no {k} in {line}"));
        let drops: Vec<&serde_json::Map<String, serde_json::Value>> = ["vm-a", "vm-b"]
            .iter()
            .filter_map(|port| v["stats"]["ports"][port]["drops"].as_object())
            .collect();
        Ok(SwitchCounters {
            rx_bytes: get("rx_bytes")?,
            rx_frames: get("rx_packets")?,
            drops: drops
                .iter()
                .flat_map(|d| d.values().filter_map(|n| n.as_u64()))
                .sum(),
            no_rx_buffer: drops
                .iter()
                .filter_map(|d| d.get("no_rx_buffer").and_then(|n| n.as_u64()))
                .sum(),
        })
    }

    /// One control request (a JSON object with its `op`); the switch's answer.
    pub fn request(&self, req: &serde_json::Value) -> Result<serde_json::Value> {
        let mut s = UnixStream::connect(&self.control)?;
        s.write_all(format!("{req}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if v["ok"] != true {
            bail!("switch refused {}: {line}", req["op"]);
        }
        Ok(v)
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        proc_cpu_seconds(self.child.id())
    }
}

impl Drop for SwitchProc {
    fn drop(&mut self) {
        if let Ok(mut s) = UnixStream::connect(&self.control) {
            let _ = s.write_all(b"{\"op\":\"shutdown\"}\n");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in seconds (/proc/PID/stat, clock ticks).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime from a /proc stat line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// CPU seconds of a process's threads, split into (vCPU threads, the rest). QEMU names its
/// TCG vCPU threads "CPU n/TCG" (`-name ...,debug-threads=on`).
pub fn qemu_thread_cpu(pid: u32) -> Option<(f64, f64)> {
    let (mut vcpu, mut rest) = (0.0, 0.0);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let tid: u32 = t.file_name().to_str()?.parse().ok()?;
        let comm =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        let Some(c) = thread_cpu_seconds(pid, tid) else {
            continue;
        };
        if comm.starts_with("CPU ") {
            vcpu += c;
        } else {
            rest += c;
        }
    }
    Some((vcpu, rest))
}

fn thread_cpu_seconds(pid: u32, tid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat_cpu_seconds(&stat)
}

/// Busy CPU seconds of the whole host so far (every CPU: user, nice, system, irq, softirq,
/// steal), from the first line of /proc/stat.
pub fn host_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    Some(busy / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}
