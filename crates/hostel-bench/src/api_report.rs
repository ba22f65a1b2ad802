//! `bench-api` results: the one-VM, burst and read-only-call tables, and the BENCHMARKS.md
//! section.

use crate::api_bench::{percentile, ApiSample, BurstResult, RecordsResult, GUEST_MIB, RUN_TRUE};
use crate::machine::Machine;
use crate::stats::{ratio, Summary};
use crate::table::{median_range, ratio_cell};
use std::path::Path;

/// Everything one `bench-api` run measured.
#[derive(Debug, Clone, Default)]
pub struct ApiResults {
    pub run_ready_s: Vec<f64>,
    pub api: Vec<ApiSample>,
    pub run_failures: usize,
    pub api_failures: usize,
    pub burst: Option<BurstResult>,
    pub records: Option<RecordsResult>,
}

pub const BEGIN: &str = "<!-- bench-api:begin -->";
pub const END: &str = "<!-- bench-api:end -->";

/// Seconds to the hundredth, median (min–max).
fn secs(s: Option<Summary>) -> String {
    median_range(s, 2)
}

/// Whether the goal is met, judged on the value as the table prints it (two decimals), so a
/// ratio shown as 1.20 never reads "missed" against a goal of 1.2.
fn goal_cell(value: Option<f64>, goal: f64, op: &str) -> String {
    let value = value.map(|v| (v * 100.0).round() / 100.0);
    let met = match (op, value) {
        ("≤", Some(v)) => Some(v <= goal),
        ("<", Some(v)) => Some(v < goal),
        _ => None,
    };
    match met {
        Some(true) => format!("{op} {goal}: **met**"),
        Some(false) => format!("{op} {goal}: **missed**"),
        None => format!("{op} {goal}"),
    }
}

/// The one-VM table: API against `hostel run`, and where the API's time goes.
pub fn sequential_table(r: &ApiResults) -> String {
    let run = Summary::of(&r.run_ready_s);
    let col = |f: fn(&ApiSample) -> f64| Summary::of(&r.api.iter().map(f).collect::<Vec<_>>());
    let follow = col(|a| a.follow_s);
    let q = ratio(follow, run);
    let mut out = String::from(
        "| metric (median, min–max) | value | ratio to `hostel run` | goal |\n|---|---|---|---|\n",
    );
    out.push_str(&format!(
        "| `hostel run` spawn → `HOSTEL-READY` on stdout (s) | {} | 1.00 | |\n",
        secs(run)
    ));
    out.push_str(&format!(
        "| **API create (`start: true`) → `HOSTEL-READY` on the console follow stream** (s) | {} | {} | {} |\n",
        secs(follow),
        ratio_cell(q),
        goal_cell(q, 1.2, "≤"),
    ));
    let log = col(|a| a.log_s);
    out.push_str(&format!(
        "| ↳ `HOSTEL-READY` written to QEMU's console log (s) | {} | {} | |\n",
        secs(log),
        ratio_cell(ratio(log, run)),
    ));
    out.push_str(&format!(
        "| ↳ create call returns, QEMU running (s) | {} | | |\n",
        secs(col(|a| a.create_s))
    ));
    let lag = Summary::of(
        &r.api
            .iter()
            // The file is polled every 2 ms, so the stream can win by a hair; that is 0 lag.
            .map(|a| ((a.follow_s - a.log_s) * 1000.0).max(0.0))
            .collect::<Vec<_>>(),
    );
    out.push_str(&format!(
        "| ↳ follow stream behind the log file (ms) | {} | | |\n",
        median_range(lag, 0)
    ));
    out
}

/// The burst table: one row per measure over the `n` VMs. `one_vm_s` (the sequential
/// median) and `cores` give the scale: TCG guests share the cores, so `n` boots cannot take
/// less than about `n × one VM ÷ cores`.
pub fn burst_table(b: &BurstResult) -> String {
    let mut out = String::from("| metric (s from the first start call) | value |\n|---|---|\n");
    let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
    out.push_str(&format!(
        "| **all {} VMs `HOSTEL-READY` on their follow streams** | {} |\n",
        b.n,
        b.all_ready_s().map_or("—".into(), |v| format!("{v:.2}"))
    ));
    out.push_str(&format!(
        "| ↳ all {} in their console log files | {} |\n",
        b.n,
        max(&b.log_s).map_or("—".into(), |v| format!("{v:.2}"))
    ));
    out.push_str(&format!(
        "| one VM ready (follow), median (min–max) | {} |\n",
        secs(Summary::of(&b.follow_s))
    ));
    out.push_str(&format!(
        "| start call returned, median (min–max) | {} |\n",
        secs(Summary::of(&b.start_returned_s))
    ));
    out
}

/// The read-only calls table: median and p99 in ms.
pub fn records_table(r: &RecordsResult) -> String {
    let mut out = String::from(
        "| call (ms) | median | p99 | min–max | calls | goal (median) |\n|---|---|---|---|---|---|\n",
    );
    let list = format!(
        "**`GET /v1/vms`** (list, tenant token, {} VMs returned)",
        r.per_tenant
    );
    let rows: [(&str, &[f64], bool); 4] = [
        (&list, &r.list_ms, true),
        (
            "**`GET /v1/vms/NAME`** (show, tenant token)",
            &r.show_ms,
            true,
        ),
        (
            "`GET /v1/host` (operator; sums every VM's commitment)",
            &r.host_ms,
            false,
        ),
        (
            "`POST /v1/vms` `start: false` (while recording, store growing to the total)",
            &r.create_ms,
            false,
        ),
    ];
    for (label, v, has_goal) in rows {
        let s = Summary::of(v);
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} |\n",
            s.map_or("—".into(), |s| format!("{:.2}", s.median)),
            percentile(v, 0.99).map_or("—".into(), |p| format!("{p:.2}")),
            s.map_or("—".into(), |s| format!("{:.2}–{:.2}", s.min, s.max)),
            v.len(),
            if has_goal {
                goal_cell(s.map(|s| s.median), 5.0, "<")
            } else {
                String::new()
            }
        ));
    }
    out
}

/// Inputs of the BENCHMARKS.md section besides the results.
pub struct SectionInfo<'a> {
    pub invocation: &'a str,
    pub machine: &'a Machine,
    pub load_after: &'a str,
    pub accelerator: &'a str,
    pub rounds: usize,
    pub hostel_command: &'a str,
}

/// The whole `bench-api` section, markers included.
pub fn section(r: &ApiResults, i: &SectionInfo<'_>) -> String {
    let m = i.machine;
    let mut out = format!(
        "{BEGIN}\n\
## bench-api: the API's create + start against `hostel run`, a burst of starts, read-only calls\n\n\
- Command: `make bench-api`, i.e. `{invocation}`\n\
- Machine: {host}, \
accelerator {accel}; shared with other builds (load average {lb} before, {la} after)\n\
- The benchmark starts its own `hostel daemon` (temporary state directory, port picked by \
the kernel) and deletes every VM and stops the daemon at the end. Every VM: image `busybox`, \
1 vCPU, {mib} MiB, the daemon's blank 1 GiB raw data disk.\n\
- `hostel run`: `{hostel}`\n\
- API: `POST /v1/vms` `{{\"name\": …, \"vcpus\": 1, \"memory\": {mib}, \"cmdline\": \"{run}\", \"start\": true}}` \
(tenant token), then `GET /v1/vms/NAME/console?follow=true`; the VM is deleted after each round\n\n\
### One VM: {rounds} rounds, alternating `hostel run` and the API (who goes first swaps), after one warm-up of each; failed: `hostel run` {rf}, API {af}\n\n\
{seq}\n",
        invocation = i.invocation,
        host = m.describe(),
        accel = i.accelerator,
        lb = m.loadavg,
        la = i.load_after,
        mib = GUEST_MIB,
        hostel = i.hostel_command,
        run = RUN_TRUE,
        rounds = i.rounds,
        rf = r.run_failures,
        af = r.api_failures,
        seq = sequential_table(r),
    );
    if let Some(b) = &r.burst {
        out.push_str(&format!(
            "### {n} VMs started at once\n\n\
{n} VMs created with `start: false` and their follow streams opened, then {n} threads call \
`POST /v1/vms/NAME/start` together; the VMs stay up (in their shell) until all are ready.\n\n\
{table}\n",
            n = b.n,
            table = burst_table(b)
        ));
    }
    if let Some(rec) = &r.records {
        out.push_str(&format!(
            "### Calls that change no VM, with {total} VMs recorded\n\n\
{total} stopped VMs across {t} tenants ({p} each); calls made one at a time over a kept-alive \
connection, after 10 warm-up calls.\n\n\
{table}\n",
            total = rec.total_vms,
            t = rec.tenants,
            p = rec.per_tenant,
            table = records_table(rec)
        ));
    }
    out.push_str(
        "Times are wall-clock on the benchmark's side. \"Console log\" is QEMU's console log file \
in the VM's run directory, polled every 2 ms (10 ms in the burst): when the guest printed the line, with the API \
out of the path. The follow stream re-reads that file every 20 ms when it has nothing new, \
which is the gap between the two.\n",
    );
    out.push_str(END);
    out.push('\n');
    out
}

/// Writes the `bench-api` section into the markdown file (created if missing).
pub fn write_markdown(path: &Path, section: &str) -> std::io::Result<()> {
    crate::report::write_section(path, BEGIN, END, section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::splice_between;

    #[test]
    fn tables_show_ratio_and_goals() {
        let r = ApiResults {
            run_ready_s: vec![2.0, 2.0],
            api: vec![
                ApiSample {
                    create_s: 0.3,
                    follow_s: 2.2,
                    log_s: 2.15,
                },
                ApiSample {
                    create_s: 0.3,
                    follow_s: 2.6,
                    log_s: 2.5,
                },
            ],
            ..Default::default()
        };
        let t = sequential_table(&r);
        let row = t.lines().find(|l| l.contains("follow stream**")).unwrap();
        assert!(
            row.contains("2.40 (2.20–2.60) | 1.20 | ≤ 1.2: **met**"),
            "{row}"
        );
        let lag = t.lines().find(|l| l.contains("behind")).unwrap();
        assert!(lag.contains("| 75 (50–100) |"), "{lag}");

        let rec = RecordsResult {
            list_ms: vec![6.0; 10],
            show_ms: vec![1.0; 10],
            ..Default::default()
        };
        let t = records_table(&rec);
        assert!(t
            .lines()
            .any(|l| l.contains("list") && l.contains("**missed**")));
        assert!(t
            .lines()
            .any(|l| l.contains("show") && l.contains("**met**")));
    }

    #[test]
    fn burst_table_has_the_last_ready() {
        let b = BurstResult {
            n: 2,
            start_returned_s: vec![0.1, 0.2],
            follow_s: vec![3.0, 4.0],
            log_s: vec![2.9, 3.9],
        };
        let t = burst_table(&b);
        assert!(t.contains("on their follow streams** | 4.00 |"), "{t}");
    }

    #[test]
    fn splice_keeps_other_sections() {
        let sec = format!("{BEGIN}\nnew\n{END}\n");
        let boot = "<!-- bench-boot:begin -->\nboot\n<!-- bench-boot:end -->\n";
        let appended = splice_between(&format!("# B\n\n{boot}"), BEGIN, END, &sec);
        assert_eq!(appended, format!("# B\n\n{boot}\n{sec}"));
        let replaced = splice_between(
            &format!("# B\n\n{BEGIN}\nold\n{END}\n\n{boot}"),
            BEGIN,
            END,
            &sec,
        );
        assert_eq!(replaced, format!("# B\n\n{sec}\n{boot}"));
        assert!(splice_between("", BEGIN, END, &sec).starts_with("# Benchmarks"));
    }
}
