//! `bench-tls`: API calls over HTTPS (the daemon's self-signed certificate, pinned by the
//! client) against the same calls over plain HTTP (`--insecure-http-loopback`), each client
//! on one kept-alive connection, in alternating rounds. Goal: HTTPS within 1.5x of HTTP at
//! the median. Prints a markdown section; `--markdown FILE` also writes it into BENCHMARKS.md.

use anyhow::{bail, Result};
use clap::Parser;
use hostel_api::Client;
use hostel_bench::api_daemon::Daemon;
use hostel_bench::command_line;
use hostel_bench::machine;
use hostel_bench::report::write_section;
use hostel_bench::stats::Summary;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "API calls over HTTPS vs plain HTTP on a kept-alive connection")]
struct Args {
    /// The hostel binary whose daemon is measured.
    #[arg(long)]
    hostel: PathBuf,
    /// Rounds; each runs both sides, in alternating order.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Timed calls per side and kind in each round.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Write the result section into this markdown file (replacing an earlier one).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const BEGIN: &str = "<!-- bench-tls:begin -->";
const END: &str = "<!-- bench-tls:end -->";
/// Untimed calls first: the handshake and the connection pool are not what is measured.
const WARM_UP: usize = 50;

/// The calls timed: a small store read, and a large static body (tens of KiB to encrypt).
const KINDS: [(&str, &str); 2] = [
    ("GET /v1/tenants", "/v1/tenants"),
    ("GET /openapi.json", "/openapi.json"),
];

fn timed(client: &Client, path: &str, calls: usize, out: &mut Vec<f64>) -> Result<()> {
    for _ in 0..calls {
        let t = Instant::now();
        client.get_text(path)?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 || args.calls == 0 {
        bail!("--rounds and --calls must be at least 1");
    }
    if !args.hostel.is_file() {
        bail!("{} missing: run `make build`", args.hostel.display());
    }
    let hostel = std::fs::canonicalize(&args.hostel)?;
    let https = Daemon::spawn_https(&hostel, None, "hostel-bench-tls-https-")?;
    let plain = Daemon::spawn_with(&hostel, None, "hostel-bench-tls-http-")?;
    eprintln!(
        "https daemon at {}, http daemon at {}",
        https.url, plain.url
    );
    let sides = [
        ("HTTPS", https.operator_client()),
        ("HTTP", plain.operator_client()),
    ];

    let mut section = String::new();
    writeln!(
        section,
        "{BEGIN}\n## bench-tls: API calls over HTTPS against plain HTTP (kept-alive connection)\n"
    )?;
    writeln!(
        section,
        "Command: `{}` (`make bench-tls`).\n\nTwo daemons of the same binary on loopback: one \
         serving HTTPS with its self-signed certificate (rustls, *ring*; the client pins the \
         fingerprint), one plain HTTP (`--insecure-http-loopback`). Each side's client is one \
         ureq agent, so every call after the {WARM_UP} untimed warm-up calls reuses one \
         kept-alive TLS session or TCP connection. {} rounds of {} calls per side and kind, \
         the side that goes first alternating by round. Latency per call in µs. Goal: HTTPS \
         within 1.5x of HTTP at the median.\n\nMachine: {}; load average at the start: {}.\n",
        command_line::invocation(),
        args.rounds,
        args.calls,
        machine::Machine::probe("qemu-system-x86_64").describe(),
        machine::load_average(),
    )?;
    writeln!(
        section,
        "| call | HTTPS median (min–max) | HTTP median (min–max) | ratio of medians | median of per-round ratios |\n|---|---|---|---|---|"
    )?;
    for (label, path) in KINDS {
        for (_, c) in &sides {
            let mut sink = Vec::new();
            timed(c, path, WARM_UP, &mut sink)?;
        }
        let mut all = [Vec::new(), Vec::new()];
        let mut round_ratios = Vec::new();
        for round in 0..args.rounds {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut medians = [0.0; 2];
            for i in order {
                let mut samples = Vec::with_capacity(args.calls);
                timed(&sides[i].1, path, args.calls, &mut samples)?;
                medians[i] = Summary::of(&samples).map_or(f64::NAN, |s| s.median);
                all[i].extend(samples);
            }
            round_ratios.push(medians[0] / medians[1]);
            eprintln!(
                "{label} round {}: HTTPS {:.0} µs, HTTP {:.0} µs",
                round + 1,
                medians[0],
                medians[1]
            );
        }
        let (Some(s), Some(p), Some(r)) = (
            Summary::of(&all[0]),
            Summary::of(&all[1]),
            Summary::of(&round_ratios),
        ) else {
            bail!("no samples");
        };
        writeln!(
            section,
            "| `{label}` | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | **{:.2}** | {:.2} |",
            s.median,
            s.min,
            s.max,
            p.median,
            p.min,
            p.max,
            s.median / p.median,
            r.median
        )?;
    }
    writeln!(section, "{END}")?;
    print!("{section}");
    if let Some(md) = &args.markdown {
        write_section(md, BEGIN, END, &section)?;
        eprintln!("wrote {}", md.display());
    }
    Ok(())
}
