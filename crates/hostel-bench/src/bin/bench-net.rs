//! `bench-net`: hostel's switch against a Linux bridge and Open vSwitch. Part one runs
//! `hostel-switch-bench` (the datapath alone, a synthetic frontend playing two VMs); part two
//! boots two TCG guests and runs iperf3 between them through `hostel switch` and through TAP
//! devices in a Linux bridge, alternating. Prints one markdown section; `--markdown FILE`
//! also writes it into BENCHMARKS.md.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_bench::command_line;
use hostel_bench::machine::{self, Machine};
use hostel_bench::net_e2e::{self, Backend};
use hostel_bench::net_host::{Netns, SwitchProc};
use hostel_bench::net_report::{self, NetInfo};
use hostel_bench::report;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Parser, Debug)]
#[command(about = "Switch datapath and guest-to-guest TCP vs Linux bridge and Open vSwitch")]
struct Args {
    /// The hostel binary (`hostel run`, `hostel switch`).
    #[arg(long)]
    hostel: PathBuf,
    /// The synthetic datapath bench (`hostel-switch-bench`).
    #[arg(long)]
    switch_bench: PathBuf,
    /// Guest assets from `make guest`: vmlinux, initrd-iperf.img.
    #[arg(long)]
    guest: PathBuf,
    /// Rounds of the synthetic comparison (each runs every size through every contender);
    /// 0 skips it.
    #[arg(long, default_value_t = 5)]
    dp_rounds: usize,
    /// Seconds per synthetic case.
    #[arg(long, default_value_t = 3.0)]
    dp_seconds: f64,
    /// Rounds of the end-to-end comparison (each boots two guests per network).
    #[arg(long, default_value_t = 7)]
    e2e_rounds: usize,
    /// iperf3 duration.
    #[arg(long, default_value_t = 8)]
    iperf_seconds: u32,
    /// Skip the end-to-end part (the section then reports only the datapath).
    #[arg(long)]
    no_e2e: bool,
    /// Write the result section into this markdown file (replacing an earlier one).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const QEMU: &str = "qemu-system-x86_64";

fn main() -> Result<()> {
    let args = Args::parse();
    for p in [&args.hostel, &args.switch_bench] {
        if !p.is_file() {
            bail!("{} missing: run `make build`", p.display());
        }
    }
    for f in ["vmlinux", "initrd-iperf.img"] {
        let p = args.guest.join(f);
        if !p.is_file() {
            bail!("{} missing: run `make guest`", p.display());
        }
    }
    let machine = Machine::probe(QEMU);
    let tmp = tempfile::Builder::new().prefix("bench-net-").tempdir()?;

    // Part one: the synthetic datapath comparison, in its own process.
    let json = tmp.path().join("datapath.json");
    let dp_args = [
        "--rounds".to_string(),
        args.dp_rounds.to_string(),
        "--seconds".into(),
        args.dp_seconds.to_string(),
        "--bridge".into(),
        "--ovs".into(),
    ];
    eprintln!(
        "datapath: {} {}",
        args.switch_bench.display(),
        dp_args.join(" ")
    );
    let st = Command::new(&args.switch_bench)
        .args(&dp_args)
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context("running the switch bench")?;
    if !st.success() {
        bail!("{} failed: {st}", args.switch_bench.display());
    }
    let dp = net_report::parse_datapath(&std::fs::read_to_string(&json)?)?;

    // Part two: iperf3 between two guests, switch and bridge alternating.
    let (mut sw_samples, mut br_samples, mut failures) = (Vec::new(), Vec::new(), (0, 0));
    if !args.no_e2e {
        let ns = Netns::create(&format!("hostel-bench-{}", std::process::id()))?;
        let sw = SwitchProc::start(&args.hostel, tmp.path())?;
        for round in 0..args.e2e_rounds {
            let order = if round % 2 == 0 {
                [Backend::Switch, Backend::Bridge]
            } else {
                [Backend::Bridge, Backend::Switch]
            };
            for backend in order {
                let swp = (backend == Backend::Switch).then_some(&sw);
                let r = net_e2e::run_once(
                    &args.hostel,
                    &args.guest,
                    &ns.name,
                    backend,
                    swp,
                    args.iperf_seconds,
                );
                let label = backend.label();
                match r {
                    Ok(mut s) => {
                        s.round = round;
                        eprintln!(
                            "e2e {}/{} {label}: {:.2} Gbit/s, {} retransmits, guest frame {:.0} B, others' load {:.2}{}",
                            round + 1,
                            args.e2e_rounds,
                            s.gbps,
                            s.retransmits,
                            s.guest_tx_frame,
                            s.other_load.unwrap_or(f64::NAN),
                            s.switch_rx_frame
                                .map(|f| format!(
                                    ", switch frame {f:.0} B, {} dropped ({} no RX buffer)",
                                    s.switch_drops.unwrap_or(0),
                                    s.switch_no_rx_buffer.unwrap_or(0)
                                ))
                                .unwrap_or_default()
                        );
                        match backend {
                            Backend::Switch => sw_samples.push(s),
                            Backend::Bridge => br_samples.push(s),
                        }
                    }
                    Err(e) => {
                        eprintln!(
                            "e2e {}/{} {label}: FAILED: {e:#}",
                            round + 1,
                            args.e2e_rounds
                        );
                        match backend {
                            Backend::Switch => failures.0 += 1,
                            Backend::Bridge => failures.1 += 1,
                        }
                    }
                }
            }
        }
    }

    let invocation = command_line::invocation();
    let dp_command = format!(
        "{} {}",
        command_line::relative(&args.switch_bench.display().to_string()),
        dp_args.join(" ")
    );
    let hostel_run = command_line::for_docs(&net_e2e::run_args(
        &args.guest,
        0,
        "<base64 script>",
        "<nic>",
    ));
    let script_a = net_e2e::script_a(args.iperf_seconds);
    let load_after = machine::load_average();
    let info = NetInfo {
        invocation: &invocation,
        machine: &machine,
        load_after: &load_after,
        dp_command: &dp_command,
        dp_rounds: args.dp_rounds,
        dp_seconds: args.dp_seconds,
        e2e_rounds: args.e2e_rounds,
        e2e_failures: failures,
        iperf_seconds: args.iperf_seconds,
        hostel_run: &hostel_run,
        script_a: &script_a,
        script_b: net_e2e::SCRIPT_B,
    };
    let section = net_report::section(&dp, &sw_samples, &br_samples, &info);
    println!("{section}");
    if let Some(md) = &args.markdown {
        report::write_section(md, net_report::BEGIN, net_report::END, &section)
            .with_context(|| format!("writing {}", md.display()))?;
        eprintln!("wrote the bench-net section of {}", md.display());
    }
    Ok(())
}
