//! `bench-net`'s results: the synthetic datapath samples (`hostel-switch-bench --json`), the
//! end-to-end iperf3 samples, their medians and ratios, and the BENCHMARKS.md section.

use crate::machine::Machine;
use crate::net_e2e::E2eSample;
use crate::stats::{ratio, Summary};
use crate::table::{median_range, ratio_cell};
use anyhow::{Context, Result};

pub const BEGIN: &str = "<!-- bench-net:begin -->";
pub const END: &str = "<!-- bench-net:end -->";

/// Goals of issue #4.
pub const GOAL_VS_BRIDGE_PPS_PER_CORE: f64 = 3.0;
pub const GOAL_MPPS_PER_CORE: f64 = 3.0;
pub const GOAL_E2E_VS_BRIDGE: f64 = 1.0;

/// One synthetic run of one contender with one frame size.
#[derive(Debug, Clone, PartialEq)]
pub struct DpSample {
    pub size: String,
    pub contender: String,
    pub packets: u64,
    pub bytes: u64,
    pub wall_s: f64,
    pub switch_cpu_s: f64,
    pub lost: u64,
    /// Busy CPU seconds of the whole host during the run (every process).
    pub host_cpu_s: f64,
}

impl DpSample {
    pub fn mpps(&self) -> f64 {
        self.packets as f64 / self.wall_s / 1e6
    }
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.wall_s / 1e9
    }
    pub fn cores(&self) -> f64 {
        self.switch_cpu_s / self.wall_s
    }
    pub fn mpps_per_core(&self) -> f64 {
        self.packets as f64 / 1e6 / self.switch_cpu_s
    }
    pub fn cpu_per_gb(&self) -> f64 {
        self.switch_cpu_s / (self.bytes as f64 / 1e9)
    }
}

/// Reads `hostel-switch-bench --json` output.
pub fn parse_datapath(json: &str) -> Result<Vec<DpSample>> {
    let v: Vec<serde_json::Value> = serde_json::from_str(json).context("switch bench JSON")?;
    v.iter()
        .map(|s| {
            let u = |k: &str| s[k].as_u64().with_context(|| format!("{k} in {s}"));
            let f = |k: &str| s[k].as_f64().with_context(|| format!("{k} in {s}"));
            let t = |k: &str| {
                s[k].as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("{k} in {s}"))
            };
            Ok(DpSample {
                size: t("size")?,
                contender: t("contender")?,
                packets: u("packets")?,
                bytes: u("bytes")?,
                wall_s: f("wall_s")?,
                switch_cpu_s: f("switch_cpu_s")?,
                lost: u("lost")?,
                host_cpu_s: s["host_cpu_s"].as_f64().unwrap_or(f64::NAN),
            })
        })
        .collect()
}

/// Frame sizes as `hostel-switch-bench` names them, with their table labels.
const SIZES: [(&str, &str); 3] = [
    ("64B", "64 B"),
    ("1500B", "1514 B"),
    ("64KiB-TSO", "64 KiB TSO"),
];
const CONTENDERS: [&str; 3] = ["switch", "bridge", "ovs"];

fn summary(
    samples: &[DpSample],
    size: &str,
    who: &str,
    f: fn(&DpSample) -> f64,
) -> Option<Summary> {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.size == size && s.contender == who && s.packets > 0)
        .map(f)
        .collect();
    Summary::of(&v)
}

/// Lower-is-better metrics get their ratio inverted so "> 1" always means "switch better".
struct Metric {
    label: &'static str,
    get: fn(&DpSample) -> f64,
    digits: usize,
    higher_is_better: bool,
}

const METRICS: [Metric; 5] = [
    Metric {
        label: "Mpps",
        get: DpSample::mpps,
        digits: 3,
        higher_is_better: true,
    },
    Metric {
        label: "Gbit/s",
        get: DpSample::gbps,
        digits: 2,
        higher_is_better: true,
    },
    Metric {
        label: "switching CPU (cores busy)",
        get: DpSample::cores,
        digits: 2,
        higher_is_better: false,
    },
    Metric {
        label: "**Mpps per core**",
        get: DpSample::mpps_per_core,
        digits: 3,
        higher_is_better: true,
    },
    Metric {
        label: "CPU s per GB",
        get: DpSample::cpu_per_gb,
        digits: 3,
        higher_is_better: false,
    },
];

/// The synthetic table, and whether each of its two goals was met (`None`: not measured).
pub fn datapath_table(samples: &[DpSample]) -> (String, Option<bool>, Option<bool>) {
    let mut out = String::from(
        "| frames | metric (median, min–max) | hostel switch | Linux bridge | Open vSwitch (netdev) | switch vs bridge | switch vs OVS | goal |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let (mut vs_bridge_met, mut per_core_met) = (None, None);
    for (size, label) in SIZES {
        for m in &METRICS {
            let s: Vec<Option<Summary>> = CONTENDERS
                .iter()
                .map(|c| summary(samples, size, c, m.get))
                .collect();
            if s.iter().all(Option::is_none) {
                continue;
            }
            let r = |other: Option<Summary>| {
                if m.higher_is_better {
                    ratio(s[0], other)
                } else {
                    ratio(other, s[0])
                }
            };
            let (rb, ro) = (r(s[1]), r(s[2]));
            let mut goal = String::new();
            if size == "64B" && m.label.contains("per core") {
                let g1 = rb.map(|r| r >= GOAL_VS_BRIDGE_PPS_PER_CORE);
                let g2 = s[0].map(|s| s.median >= GOAL_MPPS_PER_CORE);
                vs_bridge_met = g1;
                per_core_met = g2;
                goal = format!(
                    "≥ {GOAL_VS_BRIDGE_PPS_PER_CORE:.0}× bridge: {}; ≥ {GOAL_MPPS_PER_CORE:.1} Mpps/core: {}",
                    verdict(g1),
                    verdict(g2)
                );
            }
            out.push_str(&format!(
                "| {label} | {} | {} | {} | {} | {} | {} | {goal} |\n",
                m.label,
                median_range(s[0], m.digits),
                median_range(s[1], m.digits),
                median_range(s[2], m.digits),
                ratio_cell(rb),
                ratio_cell(ro),
            ));
        }
    }
    (out, vs_bridge_met, per_core_met)
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// The end-to-end table and whether its goal was met.
pub fn e2e_table(switch: &[E2eSample], bridge: &[E2eSample]) -> (String, Option<bool>) {
    let sum = |v: &[E2eSample], f: fn(&E2eSample) -> Option<f64>| {
        Summary::of(&v.iter().filter_map(f).collect::<Vec<_>>())
    };
    let mut out = String::from(
        "| metric (median, min–max) | hostel switch | TAP + Linux bridge | switch / bridge | goal |\n\
         |---|---|---|---|---|\n",
    );
    let mut met = None;
    type Get = fn(&E2eSample) -> Option<f64>;
    let rows: [(&str, Get, usize, bool); 12] = [
        (
            "**iperf3 TCP, guest A → guest B** (Gbit/s)",
            |s| Some(s.gbps),
            2,
            true,
        ),
        (
            "TCP retransmissions per run",
            |s| Some(s.retransmits as f64),
            0,
            false,
        ),
        (
            "guest A's average frame handed to its NIC (bytes)",
            |s| Some(s.guest_tx_frame),
            0,
            false,
        ),
        (
            "average frame delivered by the switch to guest B (bytes)",
            |s| s.switch_rx_frame,
            0,
            false,
        ),
        (
            "frames the switch dropped per run",
            |s| s.switch_drops.map(|d| d as f64),
            0,
            false,
        ),
        (
            "↳ for want of a free RX buffer in the receiver",
            |s| s.switch_no_rx_buffer.map(|d| d as f64),
            0,
            false,
        ),
        (
            "`hostel switch` process CPU s per GB",
            |s| s.switch_cpu_per_gb,
            3,
            false,
        ),
        (
            "QEMU main-loop and I/O threads (both VMs) CPU s per GB",
            |s| s.qemu_io_cpu_per_gb,
            3,
            false,
        ),
        (
            "QEMU vCPU threads (both VMs, TCG) CPU s per GB",
            |s| s.vcpu_cpu_per_gb,
            3,
            false,
        ),
        (
            "virtio interrupts per GB, guest A (sender)",
            |s| s.irqs_a_per_gb,
            0,
            false,
        ),
        (
            "virtio interrupts per GB, guest B (receiver)",
            |s| s.irqs_b_per_gb,
            0,
            false,
        ),
        (
            "other processes' CPU on the host during the run (cores)",
            |s| s.other_load,
            2,
            false,
        ),
    ];
    for (i, (label, get, digits, ratio_row)) in rows.into_iter().enumerate() {
        let (a, b) = (sum(switch, get), sum(bridge, get));
        let q = if ratio_row { ratio(a, b) } else { None };
        let goal = if i == 0 {
            met = q.map(|q| q >= GOAL_E2E_VS_BRIDGE);
            format!("≥ {GOAL_E2E_VS_BRIDGE:.1}: {}", verdict(met))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {goal} |\n",
            median_range(a, digits),
            median_range(b, digits),
            ratio_cell(q)
        ));
        if i == 0 {
            out.push_str(&format!(
                "| ↳ switch / bridge within each round (the two ran back to back) | | | {} | |\n",
                median_range(Summary::of(&paired_ratios(switch, bridge)), 2)
            ));
        }
    }
    (out, met)
}

/// Throughput ratios of the two runs of each round in which both succeeded: the host's
/// load drifts over minutes, and the two runs of a round saw about the same.
pub fn paired_ratios(switch: &[E2eSample], bridge: &[E2eSample]) -> Vec<f64> {
    switch
        .iter()
        .filter_map(|s| {
            let b = bridge.iter().find(|b| b.round == s.round)?;
            (b.gbps > 0.0).then(|| s.gbps / b.gbps)
        })
        .collect()
}

/// Inputs of the section besides the samples.
pub struct NetInfo<'a> {
    pub invocation: &'a str,
    pub machine: &'a Machine,
    pub load_after: &'a str,
    pub dp_command: &'a str,
    pub dp_rounds: usize,
    pub dp_seconds: f64,
    pub e2e_rounds: usize,
    pub e2e_failures: (usize, usize),
    pub iperf_seconds: u32,
    pub hostel_run: &'a str,
    pub script_a: &'a str,
    pub script_b: &'a str,
}

/// The whole `bench-net` section, markers included.
pub fn section(dp: &[DpSample], sw: &[E2eSample], br: &[E2eSample], i: &NetInfo<'_>) -> String {
    let m = i.machine;
    let (dp_table, _, _) = datapath_table(dp);
    let (e2e, _) = e2e_table(sw, br);
    let host_busy = median_range(
        Summary::of(
            &dp.iter()
                .map(|s| s.host_cpu_s / s.wall_s)
                .collect::<Vec<_>>(),
        ),
        2,
    );
    let lost: u64 = dp
        .iter()
        .filter(|s| s.contender == "switch")
        .map(|s| s.lost)
        .sum();
    format!(
        "{BEGIN}\n\
## bench-net: the switch datapath and guest-to-guest TCP, against a Linux bridge and Open vSwitch\n\n\
- Command: `make bench-net`, i.e. `{inv}`\n\
- Machine: {host}; \
shared with other builds and tests (load average {lb} before, {la} after)\n\n\
### Datapath alone: a synthetic frontend plays two VMs\n\n\
`{dpc}`: {rounds} rounds of {secs} s per case, the three contenders in turn within each \
round (who goes first rotates); frames A → B, one frame size after the other. The whole \
host was busy {host_busy} \
cores (of {cores}) during these runs (/proc/stat, every process).\n\n\
{dp_table}\n\
- **hostel switch**: a vhost-user frontend in the bench process (memfd guest memory, 1024-entry \
split rings driven through raw pointers, interrupts suppressed, polling) fills A's TX ring \
and recycles B's RX buffers (1536 bytes, 4 KiB for TSO, as Linux posts mergeable buffers). \
It offers A no more frames than B has buffers for, so nothing is dropped ({lost} frames lost \
in all switch runs). Switching CPU = CPU of the switch's threads: the process's \
`getrusage(RUSAGE_SELF)` minus the driver thread's `RUSAGE_THREAD`.\n\
- **Linux bridge**: two TAPs (virtio-net headers, TSO/checksum offload on) in a bridge in a \
private network namespace; one thread writes 32 frames into TAP A, then reads everything \
from TAP B. The kernel bridges in the writer's context, so switching CPU = that thread's \
system time (`RUSAGE_THREAD` `ru_stime`); its user time (the guests' side) is left out.\n\
- **Open vSwitch 3.1, userspace datapath** (`datapath_type=netdev`, `userspace-tso-enable=true`, \
the NORMAL learning action, two TAPs as system ports read through packet sockets), \
ovsdb-server and ovs-vswitchd started by hand with their state in a temporary directory and \
killed at the end; switching CPU = ovs-vswitchd's utime + stime from /proc/PID/stat plus the \
driver thread's system time (the kernel's TAP and packet-socket work). It cannot keep up \
with the writer, so most frames are dropped at its socket; only delivered frames count.\n\
- Both learning bridges are primed with one frame from B so A's frames are known unicast.\n\n\
### End to end: iperf3 TCP between two TCG guests\n\n\
{e2e_rounds} rounds, alternating which network goes first; each round boots both guests \
afresh (failed rounds: switch {fs}, bridge {fb}). iperf3 {isecs} s, 1 stream.\n\n\
{e2e}\n\
- Guests: `hostel {run}`, identical for both but for `--net`: `vhost-user=<port socket of \
a running hostel switch>,mac=…` or `tap=<TAP in a bridge>,mac=…` (a private network \
namespace, `hostel run` under `ip netns exec`).\n\
- Guest B: `{sb}`; guest A: `{sa}`\n\
- The average frame size is what shows TSO and checksum offload at work: ~55 KiB frames \
(TCP's 64 KiB TSO limit minus what the congestion window leaves) cross the switch as one \
frame, copied once from A's memory into B's buffers; ~1.5 KiB would mean the guest \
segmented in software.\n\
- CPU per GB is the CPU time between iperf3's start and its summary over iperf3's bytes, from \
/proc/PID/task/*/stat. For the bridge, the QEMU main-loop threads include the TAP reads and \
writes and the kernel's bridging done inside those system calls; for the switch they only \
relay interrupts (no irqfd under TCG), and the switch's own process is the row above.\n\
- The few frames the switch drops are IPv6 neighbour solicitations it does not answer (the \
network has no IPv6). The retransmissions seen by hand in the guests' /proc/net/netstat \
are tail-loss probes answered with DSACKs: late ACKs on a starved host, not lost frames.\n\
- The two guests' vCPUs want both cores, so the figure moves with everything else running \
on the host; the last row says how much that was.\n\
{END}\n",
        inv = i.invocation,
        host = m.describe(),
        cores = m.cores,
        lb = m.loadavg,
        la = i.load_after,
        dpc = i.dp_command,
        rounds = i.dp_rounds,
        secs = i.dp_seconds,
        e2e_rounds = i.e2e_rounds,
        fs = i.e2e_failures.0,
        fb = i.e2e_failures.1,
        isecs = i.iperf_seconds,
        run = i.hostel_run,
        sb = i.script_b,
        sa = i.script_a.replace('\n', "; ").replace("; ; ", "; "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(size: &str, who: &str, packets: u64, cpu: f64) -> DpSample {
        DpSample {
            size: size.into(),
            contender: who.into(),
            packets,
            bytes: packets * 64,
            wall_s: 1.0,
            switch_cpu_s: cpu,
            lost: 0,
            host_cpu_s: 2.0,
        }
    }

    #[test]
    fn parses_the_switch_bench_json() {
        let j = r#"[{"round":0,"size":"64B","contender":"switch","packets":10,"bytes":640,
            "wall_s":1.0,"switch_cpu_s":0.5,"driver_cpu_s":1.0,"lost":0,"host_cpu_s":2.0}]"#;
        let v = parse_datapath(j).unwrap();
        assert_eq!(
            v,
            vec![DpSample {
                switch_cpu_s: 0.5,
                ..s("64B", "switch", 10, 0.5)
            }]
        );
        assert_eq!(v[0].mpps_per_core(), 10.0 / 1e6 / 0.5);
    }

    #[test]
    fn goals_are_judged_on_medians() {
        let v = vec![
            s("64B", "switch", 2_000_000, 0.5),
            s("64B", "switch", 1_800_000, 0.5),
            s("64B", "bridge", 300_000, 1.0),
        ];
        let (t, vs_bridge, per_core) = datapath_table(&v);
        assert_eq!((vs_bridge, per_core), (Some(true), Some(true)), "{t}");
        let row = t.lines().find(|l| l.contains("per core")).unwrap();
        assert!(
            row.contains("3.800 (3.600–4.000)") && row.contains("| 12.67 |"),
            "{row}"
        );
        // CPU per GB is lower-is-better: the ratio is bridge / switch (of the medians).
        let row = t.lines().find(|l| l.contains("CPU s per GB")).unwrap();
        assert!(row.contains("| 12.63 |"), "{row}");
    }

    #[test]
    fn e2e_goal_uses_medians_and_pairs_rounds() {
        let e = |round, gbps| E2eSample {
            round,
            gbps,
            ..Default::default()
        };
        let sw = vec![e(0, 2.0), e(1, 1.0), e(2, 3.0)];
        let br = vec![e(0, 1.0), e(1, 2.0)];
        assert_eq!(paired_ratios(&sw, &br), vec![2.0, 0.5]);
        let (t, met) = e2e_table(&sw, &br);
        // Medians 2.0 and 1.5.
        assert_eq!(met, Some(true), "{t}");
        assert!(t.contains("| 1.33 | ≥ 1.0: **met** |"), "{t}");
        assert!(t.contains("| 1.25 (0.50–2.00) |"), "{t}");
    }
}
