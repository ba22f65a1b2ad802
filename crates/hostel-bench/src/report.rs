//! The result table, and its section in BENCHMARKS.md (replaced in place on every run, so
//! the file always holds the latest measurement and the prose around it survives).

use crate::boot::BootSample;
use crate::machine::Machine;
use crate::table::{hostel_vs_plain, Row};
use std::path::Path;

pub const BEGIN: &str = "<!-- bench-boot:begin -->";
pub const END: &str = "<!-- bench-boot:end -->";

/// The header of a BENCHMARKS.md written from scratch.
const FILE_HEADER: &str = "# Benchmarks\n\n\
Every benchmark of hostel: what it compares, the exact command that produced it, the machine \
it ran on, medians with (min–max) and the ratio to the baseline. Sections between \
`<!-- NAME:begin -->` and `<!-- NAME:end -->` are rewritten by the benchmark itself \
(`--markdown BENCHMARKS.md`); everything else is written by hand.\n";

/// Everything one `bench-boot` run produced.
#[derive(Debug, Clone, Default)]
pub struct BootResults {
    pub hostel: Vec<BootSample>,
    pub plain: Vec<BootSample>,
    pub hostel_failures: usize,
    pub plain_failures: usize,
}

/// Decimals of a row: seconds to the hundredth, memory to a tenth of a MiB.
const SECS: usize = 2;
const MIB: usize = 1;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

const ROWS: &[Row<BootSample>] = &[
    Row {
        label: "**Time to `HOSTEL-READY`** (s)",
        digits: SECS,
        get: |s| Some(s.ready_s),
        goal: Some(0.7),
        plain_has: true,
    },
    Row {
        label: "**Time to exit** after `hostel.run` powers off (s)",
        digits: SECS,
        get: |s| Some(s.exit_s),
        goal: Some(0.7),
        plain_has: true,
    },
    Row {
        label: "↳ before the guest clock starts: VMM, firmware, kernel load (s)",
        digits: SECS,
        get: |s| Some(s.pre_kernel_s),
        goal: None,
        plain_has: true,
    },
    Row {
        label: "↳ guest kernel + init to its command (guest uptime, s)",
        digits: SECS,
        get: |s| Some(s.guest_uptime_s),
        goal: None,
        plain_has: true,
    },
    Row {
        label: "↳ `HOSTEL-EXIT` line to process exit (s)",
        digits: SECS,
        get: |s| Some(s.poweroff_s),
        goal: None,
        plain_has: true,
    },
    Row {
        label: "QEMU RSS (MiB)",
        digits: MIB,
        get: |s| Some(mib(s.qemu.rss_kib)),
        goal: None,
        plain_has: true,
    },
    Row {
        label: "↳ guest RAM resident (MiB)",
        digits: MIB,
        get: |s| Some(mib(s.qemu.guest_kib)),
        goal: None,
        plain_has: true,
    },
    Row {
        label: "QEMU RSS − guest RAM (MiB)",
        digits: MIB,
        get: |s| Some(mib(s.qemu.overhead_kib())),
        goal: None,
        plain_has: true,
    },
    Row {
        label: "↳ file-backed, shared by every VM on the host (MiB)",
        digits: MIB,
        get: |s| Some(mib(s.qemu.file_kib)),
        goal: None,
        plain_has: true,
    },
    Row {
        label: "↳ TCG translated-code cache (MiB)",
        digits: MIB,
        get: |s| Some(mib(s.qemu.tcg_kib)),
        goal: None,
        plain_has: true,
    },
    Row {
        // What one more VM costs the host: the shared file pages (QEMU's binary, the kernel
        // image's page cache) are paid once per host, not per VM.
        label: "**Per-VM overhead**: private to the VM = RSS − guest RAM − shared files (MiB)",
        digits: MIB,
        get: |s| Some(mib(s.qemu.overhead_kib().saturating_sub(s.qemu.file_kib))),
        goal: Some(0.5),
        plain_has: true,
    },
    Row {
        label: "`hostel run` process RSS (MiB)",
        digits: MIB,
        get: |s| s.wrapper_rss_kib.map(mib),
        goal: None,
        plain_has: false,
    },
    Row {
        label: "Per-VM overhead incl. the whole `hostel run` process (MiB)",
        digits: MIB,
        get: |s| {
            let private = s.qemu.overhead_kib().saturating_sub(s.qemu.file_kib);
            Some(mib(private + s.wrapper_rss_kib.unwrap_or(0)))
        },
        goal: None,
        plain_has: true,
    },
];

/// The markdown table: one row per metric, hostel and plain QEMU side by side.
pub fn table(r: &BootResults) -> String {
    hostel_vs_plain("`hostel run`", ROWS, &r.hostel, &r.plain)
}

/// Inputs of the BENCHMARKS.md section besides the results.
pub struct SectionInfo<'a> {
    pub invocation: &'a str,
    pub machine: &'a Machine,
    pub load_after: &'a str,
    pub runs: usize,
    pub hostel_command: &'a str,
    pub plain_command: &'a str,
    pub guest_script: &'a str,
}

/// The whole `bench-boot` section, markers included.
pub fn section(r: &BootResults, i: &SectionInfo<'_>) -> String {
    let m = i.machine;
    format!(
        "{BEGIN}\n\
## bench-boot: `hostel run` vs plain QEMU\n\n\
- Command: `make bench-boot`, i.e. `{invocation}`\n\
- Machine: {host}; \
shared with other builds (load average {load_before} before, {load_after} after)\n\
- Runs: {runs} boots each, alternating (who goes first swaps every round), after one \
unmeasured warm-up boot each; failed boots: hostel {hf}, plain {pf}\n\
- `hostel run`: `{hostel}`\n\
- Plain QEMU: `{plain}`\n\
- Guest command (`hostel.run`, base64, the same for both): `{script}`\n\n\
{table}\n\
Times are wall-clock from spawn, read off the child's stdout (the serial console). The time \
to exit has the guest's one-second sampling pause (between its two markers) taken out, so \
it is what a `hostel.run` command that does nothing would take. Memory is sampled from \
`/proc/PID/smaps` of the QEMU process during that pause; guest RAM is the memfd backend \
mapping for hostel and the anonymous 128 MiB mapping for plain QEMU. The phase split uses the guest's clock: plain QEMU's kernel calibrates its TSC against the emulated PIT (hostel passes `tsc_early_khz`), which a loaded host skews, so its split is approximate (it can even go negative).\n\
{END}\n",
        invocation = i.invocation,
        host = m.describe(),
        load_before = m.loadavg,
        load_after = i.load_after,
        runs = i.runs,
        hf = r.hostel_failures,
        pf = r.plain_failures,
        hostel = i.hostel_command,
        plain = i.plain_command,
        script = i.guest_script,
        table = table(r),
    )
}

/// Replaces bench-boot's section in `existing`, or appends it.
pub fn splice(existing: &str, section: &str) -> String {
    splice_between(existing, BEGIN, END, section)
}

/// Replaces the text from `begin` through `end` in `existing` with `section`, or appends
/// the section (under the file's header when the file is new). Every benchmark owns one
/// marker pair, so each rewrites its own section and keeps the others.
pub fn splice_between(existing: &str, begin: &str, end: &str, section: &str) -> String {
    if let (Some(b), Some(e)) = (existing.find(begin), existing.find(end)) {
        if b < e {
            let after = &existing[e + end.len()..];
            let after = after.strip_prefix('\n').unwrap_or(after);
            return format!("{}{section}{after}", &existing[..b]);
        }
    }
    let mut out = if existing.trim().is_empty() {
        FILE_HEADER.to_owned()
    } else {
        existing.to_owned()
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push('\n');
    out.push_str(section);
    out
}

/// Writes bench-boot's section into the markdown file (created if missing).
pub fn write_markdown(path: &Path, section: &str) -> std::io::Result<()> {
    write_section(path, BEGIN, END, section)
}

/// Rewrites the section between `begin` and `end` of the markdown file (created if missing).
pub fn write_section(path: &Path, begin: &str, end: &str, section: &str) -> std::io::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    std::fs::write(path, splice_between(&existing, begin, end, section))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemSample;

    fn sample(ready: f64, overhead_mib: u64, wrapper: Option<u64>) -> BootSample {
        BootSample {
            ready_s: ready,
            exit_s: ready + 0.1,
            qemu: MemSample {
                rss_kib: (100 + overhead_mib) * 1024,
                guest_kib: 100 * 1024,
                ..Default::default()
            },
            wrapper_rss_kib: wrapper,
            ..Default::default()
        }
    }

    #[test]
    fn table_has_ratios_and_goals() {
        let r = BootResults {
            hostel: vec![sample(1.0, 20, Some(4096)), sample(1.2, 30, Some(4096))],
            plain: vec![sample(2.0, 100, None), sample(2.0, 100, None)],
            ..Default::default()
        };
        let t = table(&r);
        let ready = t.lines().find(|l| l.contains("HOSTEL-READY")).unwrap();
        assert!(ready.contains("1.10 (1.00–1.20)"), "{ready}");
        assert!(
            ready.contains("| 0.55 |") && ready.contains("met"),
            "{ready}"
        );
        let over = t.lines().find(|l| l.starts_with("| **Per-VM")).unwrap();
        assert!(over.contains("| 0.25 |"), "{over}");
        let wrapper = t.lines().find(|l| l.contains("process RSS")).unwrap();
        assert!(wrapper.contains("4.0 (4.0–4.0) | — | —"), "{wrapper}");
    }

    #[test]
    fn splice_replaces_in_place_or_appends() {
        let sec = format!("{BEGIN}\nnew\n{END}\n");
        let fresh = splice("", &sec);
        assert!(fresh.starts_with("# Benchmarks") && fresh.ends_with(&sec));
        let old = format!("# B\n\n{BEGIN}\nold\n{END}\n\n## Notes\n");
        assert_eq!(splice(&old, &sec), format!("# B\n\n{sec}\n## Notes\n"));
        assert_eq!(splice("# B", &sec), format!("# B\n\n{sec}"));
    }
}
