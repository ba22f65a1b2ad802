//! `bench-exec`: `hostel vm exec` against SSH on one Debian 12 VM, alternating: the round
//! trip of `true` and the throughput of `head -c 200M /dev/zero`. Prints a markdown section;
//! `--markdown FILE` also writes it into BENCHMARKS.md.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_bench::api_daemon::{self, Daemon};
use hostel_bench::command_line;
use hostel_bench::exec_bench::{self, Contenders, Side};
use hostel_bench::exec_report::{self, SectionInfo};
use hostel_bench::images_bench;
use hostel_bench::machine::{self, Machine};
use hostel_images::{BuildOptions, Catalog, ImageStore, Progress};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "hostel vm exec vs ssh: round trip and throughput on one Debian 12 VM")]
struct Args {
    /// The hostel binary (`hostel daemon` and the CLI).
    #[arg(long)]
    hostel: PathBuf,
    /// Image store holding (or to build) debian-12: the tests' cache by default.
    #[arg(long, default_value = "target/images-cache")]
    images: PathBuf,
    /// Round trips of each side.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Throughput runs of each side.
    #[arg(long, default_value_t = 3)]
    throughput_rounds: usize,
    /// Write the result section into this markdown file (replacing an earlier one).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const QEMU: &str = "qemu-system-x86_64";
const VM: &str = "bench";

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench-exec needs root (network namespaces, TAP devices, image builds)");
    }
    if !args.hostel.is_file() {
        bail!("{} missing: run `make build`", args.hostel.display());
    }
    let hostel = std::fs::canonicalize(&args.hostel)?;
    let machine = Machine::probe(QEMU);
    std::fs::create_dir_all(&args.images)?;
    let store = ImageStore::open(std::fs::canonicalize(&args.images)?)?;
    let progress = |p: &Progress| eprintln!("build {} [{:3}%] {}", p.image, p.percent, p.message);
    let opts = BuildOptions {
        replace: true,
        ..Default::default()
    };
    let image = Catalog::builtin()
        .build(&store, "debian-12", &opts, &progress)
        .context("building debian-12")?
        .image;

    api_daemon::install_interrupt_cleanup();
    std::env::remove_var("HOSTEL_STANDBY");
    let mut daemon = Daemon::spawn_with(&hostel, None, "hostel-bench-exec-")?;
    eprintln!("daemon at {}", daemon.url);
    let outcome = measure(&daemon, &hostel, &image, &args);
    let ((exec, ssh, accelerator), strays) = daemon.shutdown_after(outcome)?;
    if let Ok(pids) = &strays {
        if !pids.is_empty() {
            eprintln!("WARNING: QEMU still ran after every VM was deleted; killed {pids:?}");
        }
    }
    drop(daemon);

    let invocation = command_line::invocation();
    let load_after = machine::load_average();
    let section = exec_report::section(
        &exec,
        &ssh,
        &SectionInfo {
            invocation: &invocation,
            machine: &machine.describe(),
            load_after: &load_after,
            accelerator: &accelerator,
            rounds: args.rounds,
            tp_rounds: args.throughput_rounds,
        },
    );
    println!("{section}");
    if let Some(md) = &args.markdown {
        hostel_bench::report::write_section(md, exec_report::BEGIN, exec_report::END, &section)
            .with_context(|| format!("writing {}", md.display()))?;
        eprintln!("wrote the bench-exec section of {}", md.display());
    }
    Ok(())
}

fn measure(
    daemon: &Daemon,
    hostel: &std::path::Path,
    image: &hostel_images::Image,
    args: &Args,
) -> Result<(Side, Side, String)> {
    let accelerator = daemon.operator_client().host()?.accelerator;
    let keys = daemon.run_dir("keys")?;
    let (key, public_key) = images_bench::ssh_keypair(&keys)?;
    let side = images_bench::setup_hostel(daemon, hostel, image, &public_key)?;
    let argv = side.create_argv(VM);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env("HOSTEL_URL", &side.url)
        .env("HOSTEL_TOKEN", &side.token)
        .stdin(Stdio::null())
        .output()
        .context("running hostel vm create")?;
    if !out.status.success() {
        bail!(
            "hostel vm create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deadline = Instant::now() + images_bench::SSH_TIMEOUT;
    images_bench::wait_ssh(&side.ns, &key, deadline).context("waiting for SSH")?;
    let c = Contenders {
        side: &side,
        vm: VM,
        key: &key,
    };
    exec_bench::wait_agent(&c, deadline)?;
    eprintln!("VM up: SSH and the agent answer; measuring");
    // One unmeasured run of each, so neither pays for a cold cache.
    let _ = c.round_trip(true);
    let _ = c.round_trip(false);
    let (exec, ssh) = exec_bench::run(&c, args.rounds, args.throughput_rounds);
    let client = hostel_api::Client::new(side.url.clone(), Some(side.token.clone()));
    client.vms(None).delete(VM).context("deleting the VM")?;
    if exec.round_trip_ms.is_empty() || ssh.round_trip_ms.is_empty() {
        bail!("every round trip of one side failed; nothing to compare");
    }
    Ok((exec, ssh, accelerator))
}
