//! `bench-api`: what the daemon's control plane adds to a boot (API create + start to
//! `HOSTEL-READY`, against `hostel run` of the same VM), how long a burst of starts takes to
//! be all ready, and how fast list and show are with many VMs recorded. Prints a markdown
//! table; `--markdown FILE` also writes it into BENCHMARKS.md.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_api::{Client, CreateTenant, CreateToken, HostSettings, QuotaBody};
use hostel_bench::api_bench;
use hostel_bench::api_daemon::{self, Daemon};
use hostel_bench::api_report::{self, ApiResults, SectionInfo};
use hostel_bench::command_line;
use hostel_bench::machine::{self, Machine};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "API create+start vs hostel run, burst start, read-only calls at scale")]
struct Args {
    /// The hostel binary to benchmark (both `hostel daemon` and `hostel run`).
    #[arg(long)]
    hostel: PathBuf,
    /// Guest assets from `make guest`: vmlinux, initrd.img.
    #[arg(long)]
    guest: PathBuf,
    /// Sequential rounds (one `hostel run` and one API boot each), and VMs in the burst.
    #[arg(long, default_value_t = 20)]
    vms: usize,
    /// VMs recorded (stopped) for the list/show timings, spread over 10 tenants.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Timed calls of each read-only kind.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Write the result section into this markdown file (replacing an earlier one).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// Tenants the recorded VMs are spread over.
const RECORD_TENANTS: usize = 10;

/// cpu_overcommit that admits the burst on a small host (20 1-vCPU VMs on 2 cores).
const CPU_OVERCOMMIT: f64 = 32.0;

fn main() -> Result<()> {
    let args = Args::parse();
    if args.vms == 0 || args.records < RECORD_TENANTS || args.calls == 0 {
        bail!("--vms and --calls must be at least 1, --records at least {RECORD_TENANTS}");
    }
    for f in ["vmlinux", "initrd.img"] {
        let p = args.guest.join(f);
        if !p.is_file() {
            bail!("{} missing: run `make guest`", p.display());
        }
    }
    if !args.hostel.is_file() {
        bail!("{} missing: run `make build`", args.hostel.display());
    }
    let hostel = std::fs::canonicalize(&args.hostel)?;
    let guest = std::fs::canonicalize(&args.guest)?;
    let machine = Machine::probe("qemu-system-x86_64");
    api_daemon::install_interrupt_cleanup();

    let mut daemon = Daemon::spawn(&hostel, &guest)?;
    eprintln!("daemon at {}", daemon.url);
    let outcome = measure(&daemon, &hostel, &guest, &args);
    let ((results, accelerator), strays) = daemon.shutdown_after(outcome)?;
    match strays {
        Ok(pids) if pids.is_empty() => {}
        Ok(pids) => eprintln!(
            "WARNING: {} QEMU process(es) still ran after every VM was deleted; killed {pids:?}",
            pids.len()
        ),
        Err(e) => eprintln!("WARNING: tear-down: {e:#}"),
    }
    drop(daemon);

    let invocation = command_line::invocation();
    let load_after = machine::load_average();
    let run_cmd = command_line::for_docs(&api_bench::hostel_run_argv(
        &args.hostel,
        &args.guest,
        std::path::Path::new("<tmpdir>"),
    ));
    let info = SectionInfo {
        invocation: &invocation,
        machine: &machine,
        load_after: &load_after,
        accelerator: &accelerator,
        rounds: args.vms,
        hostel_command: &run_cmd,
    };
    let section = api_report::section(&results, &info);
    println!("{section}");
    if let Some(md) = &args.markdown {
        api_report::write_markdown(md, &section)
            .with_context(|| format!("writing {}", md.display()))?;
        eprintln!("wrote the bench-api section of {}", md.display());
    }
    Ok(())
}

/// All three measurements against one daemon; returns them and the host's accelerator.
fn measure(
    daemon: &Daemon,
    hostel: &std::path::Path,
    guest: &std::path::Path,
    args: &Args,
) -> Result<(ApiResults, String)> {
    let op = daemon.operator_client();
    let host = op.host().context("GET /v1/host")?;
    op.set_host(&HostSettings {
        memory_overcommit: host.settings.memory_overcommit,
        cpu_overcommit: host.settings.cpu_overcommit.max(CPU_OVERCOMMIT),
    })?;
    let n = args.vms as u32;
    op.create_tenant(&CreateTenant {
        name: "bench".into(),
        quota: Some(QuotaBody {
            vcpus: n * 2,
            memory_mib: u64::from(n) * api_bench::GUEST_MIB * 2,
            disk_gib: u64::from(n) * 2,
            vms: n * 2,
            networks: hostel_api::DEFAULT_MAX_NETWORKS,
            uplinks: hostel_api::DEFAULT_MAX_UPLINKS,
            public_addresses: hostel_api::DEFAULT_MAX_PUBLIC_ADDRESSES,
        }),
    })?;
    let secret = op
        .create_token(
            "bench",
            &CreateToken {
                name: Some("bench".into()),
            },
        )?
        .secret;
    let tenant = Client::new(daemon.url.clone(), Some(secret));
    let mut r = ApiResults::default();

    eprintln!("warm-up: hostel run, API");
    api_bench::hostel_run_once(hostel, guest, &daemon.run_dir("warm-up")?)
        .context("warm-up of hostel run")?;
    api_bench::api_once(daemon, &tenant, "warm-up").context("warm-up of the API")?;

    for round in 0..args.vms {
        // Swap who goes first each round, so neither always follows the other's teardown.
        let api_first = round % 2 == 1;
        for api in [api_first, !api_first] {
            let tag = format!("{}/{}", round + 1, args.vms);
            if api {
                match api_bench::api_once(daemon, &tenant, &format!("seq-{round:02}")) {
                    Ok(s) => {
                        eprintln!(
                            "round {tag} API: create {:.2}s, log READY {:.2}s, follow READY {:.2}s",
                            s.create_s, s.log_s, s.follow_s
                        );
                        r.api.push(s);
                    }
                    Err(e) => {
                        eprintln!("round {tag} API: FAILED: {e:#}");
                        r.api_failures += 1;
                    }
                }
            } else {
                let dir = daemon.run_dir(&format!("run-{round:02}"))?;
                match api_bench::hostel_run_once(hostel, guest, &dir) {
                    Ok(s) => {
                        eprintln!("round {tag} hostel run: READY {s:.2}s");
                        r.run_ready_s.push(s);
                    }
                    Err(e) => {
                        eprintln!("round {tag} hostel run: FAILED: {e:#}");
                        r.run_failures += 1;
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    if r.api.is_empty() || r.run_ready_s.is_empty() {
        bail!("every boot of one side failed; nothing to compare");
    }

    eprintln!("burst: {} VMs", args.vms);
    let b = api_bench::burst(daemon, &tenant, args.vms).context("burst")?;
    eprintln!(
        "burst: all ready after {:.2}s",
        b.all_ready_s().unwrap_or(f64::NAN)
    );
    r.burst = Some(b);

    eprintln!("records: {} VMs", args.records);
    let per_tenant = args.records / RECORD_TENANTS;
    let rec = api_bench::records(&op, &daemon.url, RECORD_TENANTS, per_tenant, args.calls)
        .context("recording VMs")?;
    r.records = Some(rec);
    Ok((r, host.accelerator))
}
