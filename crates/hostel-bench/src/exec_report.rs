//! `bench-exec`'s section of BENCHMARKS.md: exec against SSH, medians with ranges, the
//! ratios and the goals (round trip ≤ 0.5× SSH, throughput ≥ SSH).

use crate::exec_bench::Side;
use crate::stats::ratio;
use crate::table::{median_range, ratio_cell};

pub const BEGIN: &str = "<!-- bench-exec:begin -->";
pub const END: &str = "<!-- bench-exec:end -->";

pub struct SectionInfo<'a> {
    pub invocation: &'a str,
    pub machine: &'a str,
    pub load_after: &'a str,
    pub accelerator: &'a str,
    pub rounds: usize,
    pub tp_rounds: usize,
}

fn goal(ok: Option<bool>, text: &str) -> String {
    match ok {
        Some(true) => format!("{text}: **met**"),
        Some(false) => format!("{text}: **missed**"),
        None => text.to_owned(),
    }
}

pub fn section(exec: &Side, ssh: &Side, i: &SectionInfo<'_>) -> String {
    let rt = ratio(exec.round_trip(), ssh.round_trip());
    let tp = ratio(exec.throughput(), ssh.throughput());
    format!(
        "{BEGIN}\n\
## Guest agent: `hostel vm exec` vs SSH (`make bench-exec`)\n\n\
Command: `{inv}`\n\n\
Machine: {machine}; accelerator {acc}; load average after the run: {load}. The machine is \
shared with other engineers' builds and tests while this runs, so absolute numbers are noisy; \
the two sides alternate (which goes first swaps every round), so the load falls on both.\n\n\
One Debian 12 VM (hostel's image, 1 vCPU, 1 GiB) created through a daemon the benchmark starts. \
`hostel vm exec bench -- CMD` (the release CLI, a new process and HTTP connection each time) \
against `ssh debian@VM CMD` (ed25519 key, a new connection each time: no ControlMaster; run \
through `ip netns exec` into the namespace holding the VM network's uplink). Round trip: \
`true`, {rounds} rounds. Throughput: `{tp_cmd}`, every byte of stdout read, MB/s = 10^6 bytes \
over the command's whole run, {tp_rounds} rounds. Failures: exec {ef}, ssh {sf}.\n\n\
| metric (median, min–max) | hostel vm exec | ssh | exec / ssh | goal |\n\
|---|---|---|---|---|\n\
| round trip of `true`, ms | {e_rt} | {s_rt} | {rt_r} | {rt_g} |\n\
| throughput of `{tp_cmd}`, MB/s | {e_tp} | {s_tp} | {tp_r} | {tp_g} |\n\n\
Why exec's numbers are what they are: the agent channel is one virtio-serial port speaking \
JSON; every step is a call (`guest-exec`, `guest-exec-status` polls from 20 ms, file opens, \
reads, the clean-up `rm`), each opened with a `guest-sync-delimited`; output is written to a \
file in the guest and read back in 1 MiB chunks as base64 inside JSON, so throughput is bound \
by qemu-ga's and the daemon's base64/JSON work and the port, not by a network.\n\
{END}\n",
        inv = i.invocation,
        machine = i.machine,
        acc = i.accelerator,
        load = i.load_after,
        rounds = i.rounds,
        tp_rounds = i.tp_rounds,
        tp_cmd = crate::exec_bench::THROUGHPUT_CMD,
        ef = exec.failures,
        sf = ssh.failures,
        e_rt = median_range(exec.round_trip(), 1),
        s_rt = median_range(ssh.round_trip(), 1),
        rt_r = ratio_cell(rt),
        rt_g = goal(rt.map(|r| r <= 0.5), "≤ 0.50"),
        e_tp = median_range(exec.throughput(), 1),
        s_tp = median_range(ssh.throughput(), 1),
        tp_r = ratio_cell(tp),
        tp_g = goal(tp.map(|r| r >= 1.0), "≥ 1.00"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_judges_both_goals() {
        let exec = Side {
            round_trip_ms: vec![40.0, 60.0],
            throughput_mbps: vec![50.0],
            failures: 0,
        };
        let ssh = Side {
            round_trip_ms: vec![100.0],
            throughput_mbps: vec![100.0],
            failures: 1,
        };
        let i = SectionInfo {
            invocation: "make bench-exec",
            machine: "m",
            load_after: "1.0",
            accelerator: "kvm",
            rounds: 2,
            tp_rounds: 1,
        };
        let s = section(&exec, &ssh, &i);
        assert!(s.starts_with(BEGIN) && s.trim_end().ends_with(END), "{s}");
        assert!(
            s.contains("| 50.0 (40.0–60.0) | 100.0 (100.0–100.0) | 0.50 | ≤ 0.50: **met** |"),
            "{s}"
        );
        assert!(s.contains("| 0.50 | ≥ 1.00: **missed** |"), "{s}");
        assert!(s.contains("exec 0, ssh 1"), "{s}");
    }
}
