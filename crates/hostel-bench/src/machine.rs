//! A description of the host a benchmark ran on: without it a number means nothing.

use std::process::Command;

/// The host facts BENCHMARKS.md records with every result.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub kernel: String,
    pub qemu: String,
    pub loadavg: String,
}

impl Machine {
    pub fn probe(qemu: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            date: today_utc(),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_else(|| "unknown CPU".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem_gib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kib| kib / (1024.0 * 1024.0)),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            qemu: Command::new(qemu)
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_owned))
                .unwrap_or_else(|| "unknown QEMU".into()),
            loadavg: load_average(),
        }
    }

    /// The host as every section's "Machine:" line names it (date, CPU, cores, memory, host
    /// kernel, QEMU), so the sections of BENCHMARKS.md can be compared at a glance; each adds
    /// what its run saw besides (accelerator, load).
    pub fn describe(&self) -> String {
        format!(
            "{}, {}, {} cores, {:.0} GiB, host kernel {}, {}",
            self.date, self.cpu, self.cores, self.mem_gib, self.kernel, self.qemu
        )
    }
}

/// The 1/5/15-minute load averages: how busy the shared host was.
pub fn load_average() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, Machine};

    #[test]
    fn described_as_every_section_names_it() {
        let m = Machine {
            date: "2026-12-01".into(),
            cpu: "AMD EPYC".into(),
            cores: 2,
            mem_gib: 7.6,
            kernel: "6.1.0-27-amd64".into(),
            qemu: "QEMU emulator version 7.2.15".into(),
            loadavg: "1.00 0.50 0.25".into(),
        };
        assert_eq!(
            m.describe(),
            "2026-12-01, AMD EPYC, 2 cores, 8 GiB, host kernel 6.1.0-27-amd64, \
             QEMU emulator version 7.2.15"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
