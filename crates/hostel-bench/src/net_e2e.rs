//! `bench-net`'s end-to-end part: iperf3 TCP between two TCG guests, booted with `hostel run`
//! with the same arguments in both cases except the NIC: vhost-user ports of a `hostel
//! switch` process, or TAP devices in a Linux bridge. Everything runs inside a private
//! network namespace that is deleted at the end, so the host's interfaces are untouched.

use crate::net_host::{host_busy_seconds, qemu_thread_cpu, SwitchCounters, SwitchProc};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A boot, or an iperf3 run, that takes longer than this is stuck.
const STEP_TIMEOUT: Duration = Duration::from_secs(240);
pub const GUEST_MEMORY: &str = "256M";
const MAC_A: &str = "52:54:00:00:00:02";
const MAC_B: &str = "52:54:00:00:00:03";

/// Which network the two guests are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Switch,
    Bridge,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Switch => "hostel switch",
            Backend::Bridge => "TAP + Linux bridge",
        }
    }
}

/// What one iperf3 run measured.
#[derive(Debug, Clone, Default)]
pub struct E2eSample {
    /// Which round it ran in (the other network's run of the same round came right before
    /// or after it).
    pub round: usize,
    /// iperf3's receiver-side throughput.
    pub gbps: f64,
    /// TCP retransmissions iperf3's sender reported.
    pub retransmits: u64,
    /// Guest A's NIC counters over the run: bytes / packets handed to the device, so ~64 KiB
    /// when TSO is on and ~1.5 KiB when the guest segments itself.
    pub guest_tx_frame: f64,
    /// The switch's view: bytes / frames delivered to guest B's port during the run.
    pub switch_rx_frame: Option<f64>,
    /// Frames the switch dropped during the run (both ports, every reason).
    pub switch_drops: Option<u64>,
    /// Of those, dropped because the receiver had no free RX buffer.
    pub switch_no_rx_buffer: Option<u64>,
    /// CPU seconds of the `hostel switch` process per GB delivered.
    pub switch_cpu_per_gb: Option<f64>,
    /// Virtio interrupts per GB in guest A (TX completions, ACKs) and guest B (data).
    pub irqs_a_per_gb: Option<f64>,
    pub irqs_b_per_gb: Option<f64>,
    /// CPU of everything else on the host during the run (other users' builds and VMs),
    /// in cores: the host's busy time minus the two QEMUs' and the switch's.
    pub other_load: Option<f64>,
    /// CPU seconds per GB of both QEMUs' vCPU threads (the guests themselves, under TCG).
    pub vcpu_cpu_per_gb: Option<f64>,
    /// CPU seconds per GB of both QEMUs' other threads: the main loop, which runs the
    /// virtio-net device and its TAP I/O (bridge case) or relays interrupts (vhost-user).
    pub qemu_io_cpu_per_gb: Option<f64>,
}

/// The guests' command: the iperf3 server on B (prints "Server listening" when ready).
pub const SCRIPT_B: &str =
    "iperf3 -s -1; echo IRQS $(awk '/virtio/ {s += $2} END {print s}' /proc/interrupts)";

/// The client on A: waits for B to answer, then runs iperf3 and reports its NIC counters.
pub fn script_a(seconds: u32) -> String {
    format!(
        "i=0; until ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 60 ] && break; done\n\
         s=/sys/class/net/eth0/statistics; b0=$(cat $s/tx_bytes); p0=$(cat $s/tx_packets)\n\
         irqs() {{ awk '/virtio/ {{s += $2}} END {{print s}}' /proc/interrupts; }}; i0=$(irqs)\n\
         echo IPERF-START\n\
         iperf3 -c 10.0.0.3 -t {seconds} -f g\n\
         echo IPERF-END\n\
         echo TXSTAT $(( $(cat $s/tx_bytes) - b0 )) $(( $(cat $s/tx_packets) - p0 )) $(( $(irqs) - i0 ))\n"
    )
}

/// One guest under `hostel run`, its console read line by line.
struct Guest {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    tail: Vec<String>,
    run_dir: tempfile::TempDir,
}

/// Everything that differs between the cases: the NIC flag of `hostel run`.
fn nic_flag(backend: Backend, sw: Option<&SwitchProc>, idx: usize) -> Result<String> {
    let mac = [MAC_A, MAC_B][idx];
    Ok(match backend {
        Backend::Switch => {
            let sw = sw.ok_or_else(|| anyhow!("switch case without a switch"))?;
            format!("vhost-user={},mac={mac}", sw.sockets[idx].display())
        }
        Backend::Bridge => format!("tap={},mac={mac}", ["hbnt0", "hbnt1"][idx]),
    })
}

/// The `hostel run` arguments of guest `idx` (0 = A, 1 = B), `<nic>` and the script aside.
pub fn run_args(guest_dir: &Path, idx: usize, script_b64: &str, nic: &str) -> Vec<String> {
    let g = |f: &str| guest_dir.join(f).display().to_string();
    vec![
        "run".into(),
        "--kernel".into(),
        g("vmlinux"),
        "--initrd".into(),
        g("initrd-iperf.img"),
        "--cmdline".into(),
        format!(
            "quiet hostel.ip=10.0.0.{}/24 hostel.run={script_b64}",
            idx + 2
        ),
        "--vcpus".into(),
        "1".into(),
        "--memory".into(),
        GUEST_MEMORY.into(),
        "--net".into(),
        nic.into(),
    ]
}

impl Guest {
    fn boot(hostel: &Path, netns: &str, args: Vec<String>, name: &'static str) -> Result<Guest> {
        let run_dir = tempfile::Builder::new().prefix("bench-net-vm-").tempdir()?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(hostel)
            .args(&args)
            .arg("--run-dir")
            .arg(run_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning hostel run")?;
        let (tx, rx) = mpsc::channel();
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Guest {
            name,
            child,
            lines: rx,
            tail: Vec::new(),
            run_dir,
        })
    }

    /// QEMU's CPU split (see [`qemu_thread_cpu`]), once its pid file exists.
    fn qemu_cpu(&self) -> Option<(f64, f64)> {
        let pid = std::fs::read_to_string(self.run_dir.path().join("qemu.pid")).ok()?;
        qemu_thread_cpu(pid.trim().parse().ok()?)
    }

    /// Waits for a console line containing `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if self.tail.len() >= 40 {
                        self.tail.remove(0);
                    }
                    self.tail.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => "timed out",
                        RecvTimeoutError::Disconnected => "console closed",
                    };
                    bail!(
                        "guest {}: no {needle:?} ({why}); last lines:\n{}",
                        self.name,
                        self.tail.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for the guest to power off; kills it if it does not.
    fn finish(mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses iperf3's receiver summary ("... 3.75 GBytes  4.02 Gbits/sec   receiver").
pub fn parse_gbps(line: &str) -> Option<f64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| w.ends_with("bits/sec"))?;
    let v: f64 = words.get(i.checked_sub(1)?)?.parse().ok()?;
    Some(match words[i] {
        "Gbits/sec" => v,
        "Mbits/sec" => v / 1e3,
        "Kbits/sec" => v / 1e6,
        _ => return None,
    })
}

/// The sender summary's retransmission count ("... Gbits/sec  12   sender").
fn parse_retransmits(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| w.ends_with("bits/sec"))?;
    words.get(i + 1)?.parse().ok()
}

/// Counters read at the start and the end of the iperf3 run.
struct Snapshot {
    at: Instant,
    host_busy: Option<f64>,
    /// Both QEMUs: (vCPU threads, other threads) CPU seconds.
    qemu: Option<(f64, f64)>,
    /// The switch's counters and its process's CPU seconds.
    switch: Option<(SwitchCounters, Option<f64>)>,
}

impl Snapshot {
    fn take(a: &Guest, b: &Guest, sw: Option<&SwitchProc>) -> Result<Snapshot> {
        let qemu = match (a.qemu_cpu(), b.qemu_cpu()) {
            (Some((va, ra)), Some((vb, rb))) => Some((va + vb, ra + rb)),
            _ => None,
        };
        let switch = match sw {
            Some(s) => Some((s.counters()?, s.cpu_seconds())),
            None => None,
        };
        Ok(Snapshot {
            at: Instant::now(),
            host_busy: host_busy_seconds(),
            qemu,
            switch,
        })
    }
}

/// Fills the sample's per-GB and load figures from two snapshots `gb` gigabytes apart.
fn account(s: &mut E2eSample, s0: &Snapshot, s1: &Snapshot, gb: f64) {
    let wall = s1.at.duration_since(s0.at).as_secs_f64();
    let mut ours = 0.0;
    if let (Some((v0, r0)), Some((v1, r1))) = (s0.qemu, s1.qemu) {
        s.vcpu_cpu_per_gb = Some((v1 - v0) / gb);
        s.qemu_io_cpu_per_gb = Some((r1 - r0) / gb);
        ours += (v1 - v0) + (r1 - r0);
    }
    if let (Some((k0, c0)), Some((k1, c1))) = (s0.switch, s1.switch) {
        let bytes = k1.rx_bytes.saturating_sub(k0.rx_bytes) as f64;
        s.switch_drops = Some(k1.drops.saturating_sub(k0.drops));
        s.switch_no_rx_buffer = Some(k1.no_rx_buffer.saturating_sub(k0.no_rx_buffer));
        if k1.rx_frames > k0.rx_frames {
            s.switch_rx_frame = Some(bytes / (k1.rx_frames - k0.rx_frames) as f64);
        }
        if let (Some(c0), Some(c1)) = (c0, c1) {
            s.switch_cpu_per_gb = (bytes > 0.0).then(|| (c1 - c0) / (bytes / 1e9));
            ours += c1 - c0;
        }
    }
    if let (Some(h0), Some(h1)) = (s0.host_busy, s1.host_busy) {
        if wall > 0.0 {
            s.other_load = Some(((h1 - h0 - ours) / wall).max(0.0));
        }
    }
}

/// One iperf3 run between two freshly booted guests.
pub fn run_once(
    hostel: &Path,
    guest_dir: &Path,
    netns: &str,
    backend: Backend,
    sw: Option<&SwitchProc>,
    seconds: u32,
) -> Result<E2eSample> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let args_b = run_args(guest_dir, 1, &b64(SCRIPT_B), &nic_flag(backend, sw, 1)?);
    let mut b = Guest::boot(hostel, netns, args_b, "B")?;
    b.wait_for("Server listening", STEP_TIMEOUT)?;
    let script = b64(&script_a(seconds));
    let args_a = run_args(guest_dir, 0, &script, &nic_flag(backend, sw, 0)?);
    let mut a = Guest::boot(hostel, netns, args_a, "A")?;
    a.wait_for("IPERF-START", STEP_TIMEOUT)?;
    let s0 = Snapshot::take(&a, &b, sw)?;
    let sender = a.wait_for(" sender", STEP_TIMEOUT)?;
    let s1 = Snapshot::take(&a, &b, sw)?;
    let receiver = a.wait_for(" receiver", Duration::from_secs(30))?;
    let txstat = a.wait_for("TXSTAT", Duration::from_secs(30))?;
    let gbps = parse_gbps(&receiver).ok_or_else(|| anyhow!("unparsable: {receiver}"))?;
    // TXSTAT <bytes> <frames> <interrupts>, guest A's counters over the run.
    let nums: Vec<f64> = txstat
        .split_whitespace()
        .skip_while(|w| *w != "TXSTAT")
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let gb = gbps * f64::from(seconds) / 8.0;
    let mut sample = E2eSample {
        gbps,
        retransmits: parse_retransmits(&sender).unwrap_or(0),
        guest_tx_frame: match nums[..] {
            [bytes, packets, ..] if packets > 0.0 => bytes / packets,
            _ => f64::NAN,
        },
        irqs_a_per_gb: nums.get(2).map(|n| n / gb),
        ..Default::default()
    };
    account(&mut sample, &s0, &s1, gb);
    a.wait_for("HOSTEL-EXIT", Duration::from_secs(60))?;
    sample.irqs_b_per_gb = b
        .wait_for("IRQS", Duration::from_secs(60))
        .ok()
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|n| n / gb);
    a.finish();
    b.finish();
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf3_summaries() {
        let r = "[  5]   0.00-8.00   sec  3.75 GBytes  4.02 Gbits/sec                  receiver";
        assert_eq!(parse_gbps(r), Some(4.02));
        let s = "[  5]   0.00-8.00   sec  3.75 GBytes  4.03 Gbits/sec   12             sender";
        assert_eq!(parse_retransmits(s), Some(12));
        let m = "[  5]   0.00-8.00   sec   612 MBytes   642 Mbits/sec                  receiver";
        assert_eq!(parse_gbps(m), Some(0.642));
        assert_eq!(parse_gbps("nothing here"), None);
    }

    #[test]
    fn guests_differ_only_in_the_nic() {
        let a = run_args(Path::new("g"), 0, "X", "tap=t0").join(" ");
        assert!(a.contains("--initrd g/initrd-iperf.img"), "{a}");
        assert!(
            a.contains("hostel.ip=10.0.0.2/24") && a.ends_with("--net tap=t0"),
            "{a}"
        );
    }
}
