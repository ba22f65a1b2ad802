//! `bench-ids-inline`: what inline intrusion detection costs two guests' TCP. Two TCG guests
//! run iperf3 through one `hostel switch` (the `bench-net` guests, `hostel run`), whose network
//! is a tenant's network attached to an external network (a veth in the bench's
//! namespace, so the tenant has an edge and so a detection engine), with the tenant's
//! VM-to-VM inspection (`intra_networks`) off, on with N rules at the default 1 MiB stream
//! depth, and on with the whole stream inspected; the cases alternate within each round.
//! Prints one markdown section; `--markdown FILE` also writes it into BENCHMARKS.md.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hostel_bench::machine::{self, Machine};
use hostel_bench::net_e2e::{self, Backend};
use hostel_bench::net_host::{Netns, SwitchProc};
use hostel_bench::stats::Summary;
use hostel_bench::{command_line, report};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

pub const BEGIN: &str = "<!-- bench-ids-inline:begin -->";
pub const END: &str = "<!-- bench-ids-inline:end -->";

#[derive(Parser, Debug)]
#[command(about = "Guest-to-guest TCP through inline intrusion detection vs detection off")]
struct Args {
    /// The hostel binary (`hostel run`, `hostel switch`), a release build.
    #[arg(long)]
    hostel: PathBuf,
    /// Guest assets from `make guest`: vmlinux, initrd-iperf.img.
    #[arg(long)]
    guest: PathBuf,
    /// Rules loaded.
    #[arg(long, default_value_t = 1000)]
    rules: usize,
    /// Rounds (each boots two guests per case).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// iperf3 duration.
    #[arg(long, default_value_t = 8)]
    iperf_seconds: u32,
    /// Write the result section into this markdown file (replacing an earlier one).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Off,
    /// Suricata's default: each flow direction inspected for its first MiB.
    Depth1M,
    /// Every byte of the stream.
    Whole,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Off => "detection off",
            Case::Depth1M => "detection on (stream depth 1 MiB)",
            Case::Whole => "detection on (whole stream)",
        }
    }
}

/// A deterministic generator, so every run loads the same rules.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `n` rules of the shapes real rule sets use, every TCP one a candidate for the iperf3
/// stream (one content automaton per protocol): plain and nocase contents on any TCP port,
/// HTTP paths with relative contents, response headers, DNS names.
fn rules(n: usize) -> String {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut out = String::new();
    for i in 0..n {
        let sid = 2_000_000 + i;
        let mut pat = |len: usize| -> String {
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        };
        let line = match i % 5 {
            0 => format!(
                "alert tcp any any -> any any (msg:\"bulk {i}\"; flow:established,to_server; content:\"{}\"; sid:{sid}; rev:1;)",
                pat(10)
            ),
            1 => format!(
                "alert tcp any any -> any any (msg:\"bulk nocase {i}\"; content:\"{}\"; nocase; sid:{sid}; rev:1;)",
                pat(12)
            ),
            2 => format!(
                "alert tcp $HOME_NET any -> any 80 (msg:\"http path {i}\"; flow:established,to_server; content:\"GET \"; depth:4; content:\"/p{i:05}/\"; distance:0; within:20; sid:{sid}; rev:1;)"
            ),
            3 => format!(
                "alert tcp any 80 -> $HOME_NET any (msg:\"resp {i}\"; flow:established,to_client; content:\"X-Bad-{i:05}\"; nocase; sid:{sid}; rev:1;)"
            ),
            _ => format!(
                "alert udp $HOME_NET any -> any 53 (msg:\"dns name {i}\"; content:\"|08|bad{i:05}|07|example\"; nocase; sid:{sid}; rev:1;)"
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn set_case(sw: &SwitchProc, case: Case, rules: &str) -> Result<()> {
    let ids = match case {
        Case::Off => serde_json::Value::Null,
        Case::Depth1M | Case::Whole => {
            let mut spec = serde_json::json!({
                "networks": ["bench"],
                "intra_networks": ["bench"],
                "mode": "detect",
                "rules": rules,
                "vars": {"HOME_NET": "[10.0.0.0/24]"},
                // A whole core: the budget must not be what limits inspection here.
                "budget_us_per_sec": 1_000_000,
            });
            if case == Case::Whole {
                spec["stream_depth"] = serde_json::json!(1u64 << 40);
            }
            spec
        }
    };
    let r = sw.request(&serde_json::json!({"op": "set_ids", "tenant": "bench", "ids": ids}))?;
    if case != Case::Off {
        let loaded = r["ids_load"]["loaded"].as_u64().unwrap_or(0);
        let refused = r["ids_load"]["refused"].as_array().map_or(0, Vec::len);
        if refused > 0 || r["ids_load"]["active"] != true {
            bail!("rules not active: {loaded} loaded, {refused} refused: {r}");
        }
    }
    Ok(())
}

/// (packets inspected, packets passed uninspected for want of budget) so far.
fn ids_counters(sw: &SwitchProc) -> (u64, u64) {
    let Ok(v) = sw.request(&serde_json::json!({"op": "stats"})) else {
        return (0, 0);
    };
    let i = &v["stats"]["ids"]["bench"];
    (
        i["packets"].as_u64().unwrap_or(0),
        i["overload_passed"].as_u64().unwrap_or(0),
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.hostel.is_file() {
        bail!("{} missing: build it (release)", args.hostel.display());
    }
    for f in ["vmlinux", "initrd-iperf.img"] {
        if !args.guest.join(f).is_file() {
            bail!("{} missing: run `make guest`", args.guest.join(f).display());
        }
    }
    let machine = Machine::probe("qemu-system-x86_64");
    let tmp = tempfile::Builder::new()
        .prefix("bench-ids-inline-")
        .tempdir()?;
    let ns = Netns::create(&format!("hostel-bidi-{}", std::process::id()))?;
    // The external network's "NIC": one end of a veth pair inside the bench's namespace.
    let st = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ip -n {n} link add hbext0 type veth peer name hbext1 && \
                 ip -n {n} link set hbext0 up && ip -n {n} link set hbext1 up",
                n = ns.name
            ),
        ])
        .status()?;
    if !st.success() {
        bail!("could not make the external interface (veth)");
    }
    let external = serde_json::json!({
        "interface": "hbext0",
        "mac": "02:00:5e:00:00:01",
        "subnet4": "203.0.113.0/24",
        "gateway4": "203.0.113.1",
        "edges": [{"tenant": "bench", "networks": ["bench"], "outside4": "203.0.113.10"}],
    });
    let sw = SwitchProc::start_with(&args.hostel, tmp.path(), Some(&ns.name), Some(external))
        .context("starting the switch")?;
    let text = rules(args.rules);
    let cases = [Case::Off, Case::Depth1M, Case::Whole];
    let mut gbps: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut inspected: Vec<u64> = vec![0; cases.len()];
    let mut overload: Vec<u64> = vec![0; cases.len()];
    let mut failures = 0;
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..cases.len()).collect();
        order.rotate_left(round % cases.len());
        for ci in order {
            let case = cases[ci];
            set_case(&sw, case, &text)?;
            let (p0, o0) = ids_counters(&sw);
            let r = net_e2e::run_once(
                &args.hostel,
                &args.guest,
                &ns.name,
                Backend::Switch,
                Some(&sw),
                args.iperf_seconds,
            );
            let (p1, o1) = ids_counters(&sw);
            match r {
                Ok(s) => {
                    eprintln!(
                        "round {}/{} {}: {:.2} Gbit/s, switch {:.2} CPU s/GB, {} packets inspected, {} over budget",
                        round + 1,
                        args.rounds,
                        case.label(),
                        s.gbps,
                        s.switch_cpu_per_gb.unwrap_or(f64::NAN),
                        p1.saturating_sub(p0),
                        o1.saturating_sub(o0)
                    );
                    gbps[ci].push(s.gbps);
                    cpu[ci].push(s.switch_cpu_per_gb.unwrap_or(f64::NAN));
                    inspected[ci] += p1.saturating_sub(p0);
                    overload[ci] += o1.saturating_sub(o0);
                }
                Err(e) => {
                    eprintln!("round {} {}: FAILED: {e:#}", round + 1, case.label());
                    failures += 1;
                }
            }
        }
    }
    let off = Summary::of(&gbps[0]);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## bench-ids-inline: TCP between two guests through inline detection vs detection off\n\n\
         Command: `{}`, run on {}. Load average after: {}.\n\n\
         Two TCG guests (`hostel run`, 1 vCPU, {}, `initrd-iperf.img`), iperf3 {} s, 1 stream, \
         A → B through one `hostel switch` whose network is a tenant's network attached to an \
         external network (a veth in the namespace), so the tenant has an edge and a detection \
         engine; detection inspects the guests' traffic as VM-to-VM traffic \
         (`intra_networks`), mode detect, {} rules (`crates/hostel-bench/src/bin/bench-ids-inline.rs`: \
         plain and nocase contents on any TCP port, HTTP paths, response headers, DNS names; \
         every TCP rule's pattern is searched in the iperf3 stream), CPU budget one core. \
         The guests offload segmentation, so the engine sees up to 64 KiB per frame. Cases \
         alternate in each round; {} rounds, {} failed runs.\n",
        command_line::invocation(),
        machine.describe(),
        machine::load_average(),
        net_e2e::GUEST_MEMORY,
        args.iperf_seconds,
        args.rules,
        args.rounds,
        failures,
    );
    let _ = writeln!(
        md,
        "| case | Gbit/s median (min–max) | vs off | switch CPU s/GB | packets inspected | passed over budget |\n|---|---|---|---|---|---|"
    );
    for (ci, case) in cases.iter().enumerate() {
        let g = Summary::of(&gbps[ci]);
        let c = Summary::of(&cpu[ci]);
        let ratio = match (g, off) {
            (Some(g), Some(o)) if o.median > 0.0 => format!("{:.2}", g.median / o.median),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            case.label(),
            g.map_or("–".into(), |s| format!(
                "{:.2} ({:.2}–{:.2})",
                s.median, s.min, s.max
            )),
            ratio,
            c.map_or("–".into(), |s| format!("{:.2}", s.median)),
            inspected[ci],
            overload[ci],
        );
    }
    let _ = writeln!(
        md,
        "\nGoal (issue 16): detection with 1,000 rules costs the guests' TCP throughput at most \
         20% (ratio ≥ 0.80) at the rules' stream depth; the switch's CPU per GB shows the \
         engine's work. The host is shared with other builds, so single runs vary."
    );
    println!("{md}");
    if let Some(path) = &args.markdown {
        report::write_section(path, BEGIN, END, &md)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote the bench-ids-inline section of {}", path.display());
    }
    Ok(())
}
