//! `bench-images`: a Debian 12 VM from nothing to a working SSH login, through hostel
//! (`hostel vm create --image debian-12` against a daemon this benchmark starts) and through
//! a plain QEMU command booting the same image, kernel and seed, alternating. Prints a
//! markdown table; `--markdown FILE` also writes it into BENCHMARKS.md.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_bench::api_daemon::{self, Daemon};
use hostel_bench::command_line::{self, for_docs};
use hostel_bench::images_bench::{self, Boot, HostelSide, Netns, PlainSetup, Seed};
use hostel_bench::images_report::{self, ImageResults, ImageSample, SectionInfo};
use hostel_bench::machine::{self, Machine};
use hostel_images::{BuildOptions, Catalog, ImageStore, Progress};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Debian 12 VM to SSH login: hostel vm create vs plain QEMU")]
struct Args {
    /// The hostel binary to benchmark (`hostel daemon` and the CLI).
    #[arg(long)]
    hostel: PathBuf,
    /// Image store holding (or to build) debian-12: the tests' cache by default. An image
    /// there from an older recipe is replaced.
    #[arg(long, default_value = "target/images-cache")]
    images: PathBuf,
    /// Measured boots of each contender (each takes a minute or two under TCG).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the unmeasured first boot of each (quick looks; the section says so).
    #[arg(long)]
    no_warm_up: bool,
    /// After each boot, ask systemd where the time went (`systemd-analyze`, kept with the
    /// console logs in target/bench-images/); adds a minute per boot.
    #[arg(long)]
    analyze: bool,
    /// hostel boots every VM cold: no standby (`hostel daemon --standby`) for creates to take.
    #[arg(long)]
    cold: bool,
    /// Write the result section into this markdown file (replacing an earlier one).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// The plain command's QEMU: the one on PATH.
const QEMU: &str = "qemu-system-x86_64";

/// hostel's defaults for an OS-image VM (`hostel vm create` without --vcpus/--memory), given
/// to plain QEMU explicitly.
const VCPUS: u32 = 1;
const MEMORY_MIB: u64 = 1024;

fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench-images needs root (network namespaces, TAP devices, image builds)");
    }
    for tool in [QEMU, "qemu-img", "ssh", "ssh-keygen", "ip"] {
        if !on_path(tool) {
            bail!("{tool} missing: run scripts/install-deps.sh");
        }
    }
    if !args.hostel.is_file() {
        bail!("{} missing: run `make build`", args.hostel.display());
    }
    let hostel = std::fs::canonicalize(&args.hostel)?;
    let machine = Machine::probe(QEMU);

    // Absolute: the daemon is given the image's paths and has a working directory of its own.
    std::fs::create_dir_all(&args.images)?;
    let store = ImageStore::open(std::fs::canonicalize(&args.images)?)?;
    let progress = |p: &Progress| eprintln!("build {} [{:3}%] {}", p.image, p.percent, p.message);
    // A cache: an image from an older recipe is rebuilt, as the tests do.
    let opts = BuildOptions {
        replace: true,
        ..Default::default()
    };
    let built = Catalog::builtin()
        .build(&store, "debian-12", &opts, &progress)
        .context("building debian-12")?;
    let image = built.image;

    api_daemon::install_interrupt_cleanup();
    // The daemon reads its standby wish from the environment it inherits.
    if args.cold {
        std::env::remove_var("HOSTEL_STANDBY");
    } else {
        std::env::set_var("HOSTEL_STANDBY", "debian-12");
    }
    let mut daemon = Daemon::spawn_with(&hostel, None, "hostel-bench-images-")?;
    eprintln!("daemon at {}", daemon.url);
    let outcome = measure(&daemon, &hostel, &image, &args);
    let ((results, accelerator, hostel_cmd, plain_cmd), strays) = daemon.shutdown_after(outcome)?;
    match strays {
        Ok(pids) if pids.is_empty() => {}
        Ok(pids) => {
            eprintln!("WARNING: QEMU still ran after every VM was deleted; killed {pids:?}")
        }
        Err(e) => eprintln!("WARNING: tear-down: {e:#}"),
    }
    drop(daemon);

    let invocation = command_line::invocation();
    let load_after = machine::load_average();
    let info = SectionInfo {
        invocation: &invocation,
        machine: &machine,
        load_after: &load_after,
        runs: args.runs,
        warm_up: !args.no_warm_up,
        accelerator: &accelerator,
        hostel_command: &hostel_cmd,
        plain_command: &plain_cmd,
        standby: !args.cold,
        notes: images_report::NOTES.trim_end(),
    };
    let section = images_report::section(&results, &info);
    println!("{section}");
    if let Some(md) = &args.markdown {
        hostel_bench::report::write_section(md, images_report::BEGIN, images_report::END, &section)
            .with_context(|| format!("writing {}", md.display()))?;
        eprintln!("wrote the bench-images section of {}", md.display());
    }
    Ok(())
}

/// How long a standby may take to boot to its seed wait (a cold boot's first minute or so,
/// on a loaded host).
const STANDBY_TIMEOUT: Duration = Duration::from_secs(600);

/// Waits until the daemon's debian-12 standby is booted and waiting, with none booting: a
/// measured boot then shares the host with nothing but an idle standby.
fn wait_for_standby(daemon: &Daemon) -> Result<()> {
    let op = daemon.operator_client();
    let t0 = Instant::now();
    loop {
        let host = op.host()?;
        let pool = host
            .standby
            .iter()
            .find(|s| s.image == "debian-12")
            .context("the daemon keeps no debian-12 standby")?;
        if pool.ready >= 1 && pool.booting == 0 {
            eprintln!("standby ready ({:.0?} waited)", t0.elapsed());
            return Ok(());
        }
        if t0.elapsed() > STANDBY_TIMEOUT {
            bail!("no debian-12 standby ready after {STANDBY_TIMEOUT:?}: {pool:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

type Measured = (ImageResults, String, String, String);

fn measure(
    daemon: &Daemon,
    hostel: &Path,
    image: &hostel_images::Image,
    args: &Args,
) -> Result<Measured> {
    let accelerator = daemon.operator_client().host()?.accelerator;
    let keys = daemon.run_dir("keys")?;
    let (key, public_key) = images_bench::ssh_keypair(&keys)?;
    let mut side = images_bench::setup_hostel(daemon, hostel, image, &public_key)?;
    side.analyze = args.analyze;
    let (plain_ns, tap) = images_bench::setup_plain_network()?;
    // Plain QEMU boots the very files hostel's VMs do: the daemon's copy of the image. Two
    // copies would each need the host's page cache, and this host reclaims cold pages, so
    // whoever booted second in a round would read its image from disk again.
    let imported = ImageStore::open(daemon.state_dir().join("images"))?
        .get("debian-12")
        .context("the daemon's debian-12")?;
    // hostel boots its own initramfs (made from the image's modules at build time: the
    // daemon's copy was imported with it); plain QEMU the distribution's, as anyone booting
    // the image by hand would.
    let initrd = image
        .distribution_initrd()
        .context("debian-12 has no initramfs")?;
    let image = &imported;
    let (kernel, _, cmdline) = image.kernel_boot().context("debian-12 has no kernel")?;
    let plain = PlainSetup {
        qemu: QEMU.into(),
        kernel,
        initrd,
        cmdline: cmdline.to_string(),
        image_disk: image.disk_path(),
        // hostel's default disk for the image: its size rounded up to whole GiB.
        disk_bytes: image.manifest().disk.virtual_size.next_multiple_of(1 << 30),
        memory_mib: MEMORY_MIB,
        vcpus: VCPUS,
        analyze: args.analyze,
    };
    let seed_path = keys.join("seed.img");

    let settle = || -> Result<()> {
        if !args.cold {
            wait_for_standby(daemon)?;
        }
        Ok(())
    };
    // The first hostel boot also provides the seed plain QEMU boots with.
    settle()?;
    eprintln!("warm-up: hostel");
    let (boot, mut seed) = side
        .once(daemon, "warm-up", &key, &seed_path)
        .context("warm-up of hostel")?;
    keep_log("hostel-warm-up", &boot);
    eprintln!("warm-up hostel: {}", describe(&boot.sample));
    if !args.no_warm_up {
        settle()?;
        eprintln!("warm-up: plain QEMU");
        let dir = daemon.run_dir("plain-warm-up")?;
        let boot = images_bench::plain_once(&plain, &seed, &plain_ns, &tap, &key, &dir)
            .context("warm-up of plain QEMU")?;
        keep_log("plain-warm-up", &boot);
        eprintln!("warm-up plain QEMU: {}", describe(&boot.sample));
        let _ = std::fs::remove_dir_all(&dir);
    }

    let mut r = ImageResults::default();
    for round in 0..args.runs {
        let hostel_first = round % 2 == 0;
        for is_hostel in [hostel_first, !hostel_first] {
            let tag = format!("{}/{}", round + 1, args.runs);
            settle()?;
            if is_hostel {
                run_hostel(
                    daemon, &side, &key, &seed_path, round, &tag, &mut r, &mut seed,
                );
            } else {
                run_plain(
                    daemon, &plain, &seed, &plain_ns, &tap, &key, round, &tag, &mut r,
                )?;
            }
        }
    }
    if r.hostel.is_empty() || r.plain.is_empty() {
        bail!("every boot of one side failed; nothing to compare");
    }
    // The benchmark's temporary directory (the daemon's state, keys, run dirs) by name.
    let state = daemon.state_dir().display().to_string();
    let hostel_cmd = for_docs(&side.create_argv("NAME"))
        .replace(&key.with_extension("pub").display().to_string(), "KEY.pub");
    let plain_cmd = for_docs(&plain.argv(Path::new("<tmpdir>"), &seed, &tap))
        .replace(&seed.path.display().to_string(), "<seed.img>")
        .replace(&state, "<state-dir>");
    drop(side);
    Ok((r, accelerator, hostel_cmd, plain_cmd))
}

#[allow(clippy::too_many_arguments)]
fn run_hostel(
    daemon: &Daemon,
    side: &HostelSide,
    key: &Path,
    seed_path: &Path,
    round: usize,
    tag: &str,
    r: &mut ImageResults,
    seed: &mut Seed,
) {
    let outcome = side
        .once(daemon, &format!("b{round:02}"), key, seed_path)
        .map(|(boot, new_seed)| {
            *seed = new_seed;
            boot
        });
    record(
        &format!("round {tag} hostel"),
        &format!("hostel-{round:02}"),
        outcome,
        &mut r.hostel,
        &mut r.hostel_failures,
    );
}

#[allow(clippy::too_many_arguments)]
fn run_plain(
    daemon: &Daemon,
    plain: &PlainSetup,
    seed: &Seed,
    ns: &Netns,
    tap: &str,
    key: &Path,
    round: usize,
    tag: &str,
    r: &mut ImageResults,
) -> Result<()> {
    let dir = daemon.run_dir(&format!("plain-{round:02}"))?;
    record(
        &format!("round {tag} plain QEMU"),
        &format!("plain-{round:02}"),
        images_bench::plain_once(plain, seed, ns, tap, key, &dir),
        &mut r.plain,
        &mut r.plain_failures,
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One measured boot of either side: its progress line (`what` names the round and side),
/// its console kept as `log_label`, and its sample or its failure counted.
fn record(
    what: &str,
    log_label: &str,
    outcome: Result<Boot>,
    samples: &mut Vec<ImageSample>,
    failures: &mut usize,
) {
    match outcome {
        Ok(boot) => {
            eprintln!("{what}: {}", describe(&boot.sample));
            keep_log(log_label, &boot);
            samples.push(boot.sample);
        }
        Err(e) => {
            eprintln!("{what}: FAILED: {e:#}");
            *failures += 1;
        }
    }
}

fn describe(s: &ImageSample) -> String {
    let t = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}s"));
    format!(
        "created {}, port 22 {:.1}s, SSH {:.1}s, login prompt {}; guest clock: init-local {}, \
         init {}",
        t(s.created_s),
        s.port_s,
        s.ssh_s,
        t(s.login_prompt_s),
        t(s.guest.init_local),
        t(s.guest.init)
    )
}

/// Console transcripts (and systemd's analyses) are kept in target/bench-images/ for looking
/// into where the time goes.
fn keep_log(label: &str, boot: &Boot) {
    let dir = Path::new("target/bench-images");
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join(format!("{label}-console.log")), &boot.console);
        if let Some(a) = &boot.analysis {
            let _ = std::fs::write(dir.join(format!("{label}-analyze.txt")), a);
        }
    }
}
