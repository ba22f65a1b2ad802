//! `bench-boot`: boot time and per-VM host memory of `hostel run` against the plain QEMU
//! command a typical tool uses, alternating boots so that the shared host's load falls on
//! both alike. Prints a markdown table; `--markdown FILE` also writes it into BENCHMARKS.md.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_bench::boot::{self, BootSample};
use hostel_bench::command_line;
use hostel_bench::contender::{Contender, GUEST_SCRIPT};
use hostel_bench::machine::{self, Machine};
use hostel_bench::report::{self, BootResults, SectionInfo};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Boot time and memory: hostel run vs plain QEMU")]
struct Args {
    /// The hostel binary to benchmark.
    #[arg(long)]
    hostel: PathBuf,
    /// Guest assets from `make guest`: vmlinux, vmlinuz, initrd.img.
    #[arg(long)]
    guest: PathBuf,
    /// Measured boots of each contender.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Write the result section into this markdown file (replacing an earlier one).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// The plain command's QEMU: the one on PATH, as a typical tool would run it.
const QEMU: &str = "qemu-system-x86_64";

fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    for f in ["vmlinux", "vmlinuz", "initrd.img"] {
        let p = args.guest.join(f);
        if !p.is_file() {
            bail!("{} missing: run `make guest`", p.display());
        }
    }
    if !args.hostel.is_file() {
        bail!("{} missing: run `make build`", args.hostel.display());
    }
    let hostel = Contender::Hostel {
        binary: args.hostel.clone(),
    };
    let plain = Contender::PlainQemu {
        binary: QEMU.into(),
    };
    let machine = Machine::probe(QEMU);

    // Warm the page cache (kernel images, QEMU's binary and firmware) for both.
    for who in [&hostel, &plain] {
        eprintln!("warm-up: {}", who.label());
        boot::run_once(who, &args.guest).with_context(|| format!("warm-up of {}", who.label()))?;
    }

    let mut results = BootResults::default();
    for round in 0..args.runs {
        // Swap who goes first each round, so neither always follows the other's teardown.
        let order = if round % 2 == 0 {
            [&hostel, &plain]
        } else {
            [&plain, &hostel]
        };
        for who in order {
            let is_hostel = matches!(who, Contender::Hostel { .. });
            match boot::run_once(who, &args.guest) {
                Ok(s) => {
                    eprintln!(
                        "run {}/{} {}: {}",
                        round + 1,
                        args.runs,
                        who.label(),
                        brief(&s)
                    );
                    if is_hostel {
                        results.hostel.push(s);
                    } else {
                        results.plain.push(s);
                    }
                }
                Err(e) => {
                    eprintln!(
                        "run {}/{} {}: FAILED: {e}",
                        round + 1,
                        args.runs,
                        who.label()
                    );
                    if is_hostel {
                        results.hostel_failures += 1;
                    } else {
                        results.plain_failures += 1;
                    }
                }
            }
        }
    }
    if results.hostel.is_empty() || results.plain.is_empty() {
        bail!("every boot of one contender failed; nothing to compare");
    }

    let invocation = command_line::invocation();
    let load_after = machine::load_average();
    let info = SectionInfo {
        invocation: &invocation,
        machine: &machine,
        load_after: &load_after,
        runs: args.runs,
        hostel_command: &hostel.display_command(&args.guest),
        plain_command: &plain.display_command(&args.guest),
        guest_script: GUEST_SCRIPT,
    };
    let section = report::section(&results, &info);
    println!("{section}");
    if let Some(md) = &args.markdown {
        report::write_markdown(md, &section)
            .with_context(|| format!("writing {}", md.display()))?;
        eprintln!("wrote the bench-boot section of {}", md.display());
    }
    Ok(())
}

/// One progress line per boot, so a long run shows it is alive and where the time goes.
fn brief(s: &BootSample) -> String {
    format!(
        "ready {:.2}s, exit {:.2}s, overhead {:.1} MiB (rss {:.1}, guest {:.1}){}",
        s.ready_s,
        s.exit_s,
        s.qemu.overhead_kib() as f64 / 1024.0,
        s.qemu.rss_kib as f64 / 1024.0,
        s.qemu.guest_kib as f64 / 1024.0,
        s.wrapper_rss_kib
            .map(|k| format!(", hostel process {:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_default()
    )
}
