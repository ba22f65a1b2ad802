//! The replay command line, shared by the `hostel-ids` binary and `hostel ids replay`:
//! `replay --rules FILE --pcap FILE [--var NAME=VALUE]... [--classification FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{Classifications, Config, Engine, RuleSet, Vars};

fn usage() -> ExitCode {
    eprintln!(
        "usage: hostel ids replay --rules FILE --pcap FILE [--var NAME=VALUE]... \
         [--classification FILE]"
    );
    ExitCode::from(2)
}

/// Runs `replay` with `args` (what follows the word `replay`): EVE on stdout, report on stderr.
pub fn replay_main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let mut args = args.into_iter();
    let (mut rules, mut pcap, mut classes) = (Vec::new(), None, None);
    let mut vars = Vars::default();
    while let Some(a) = args.next() {
        let Some(v) = args.next() else {
            return usage();
        };
        match a.as_str() {
            "--rules" => rules.push(PathBuf::from(v)),
            "--pcap" => pcap = Some(PathBuf::from(v)),
            "--classification" => classes = Some(PathBuf::from(v)),
            "--var" => match v.split_once('=') {
                Some((n, val)) if !n.is_empty() => vars.set(n, val),
                _ => {
                    eprintln!("error: {}", crate::ReplayError::Var(v));
                    return ExitCode::from(2);
                }
            },
            _ => return usage(),
        }
    }
    let Some(pcap) = pcap else { return usage() };
    if rules.is_empty() {
        return usage();
    }
    let classes = match classes {
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(t) => Classifications::parse(&t),
            Err(e) => {
                eprintln!("error: reading {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        },
        None => Classifications::default(),
    };
    let mut set = RuleSet::default();
    let (mut loaded, mut refused) = (0, 0);
    for p in &rules {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: reading {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        };
        let report = set.load(&text, &vars, &classes);
        for e in &report.refused {
            eprintln!("refused: {e}");
        }
        loaded += report.loaded;
        refused += report.refused.len();
    }
    eprintln!("rules: {loaded} loaded, {refused} refused");
    let mut engine = Engine::new(set, Config::default());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match crate::replay::replay(&mut engine, &pcap, &mut out) {
        Ok(n) => {
            let c = engine.counters();
            eprintln!(
                "alerts: {n}; packets: {}; untracked flows: {}; stream memcap hits: {}",
                c.packets, c.untracked_flows, c.stream_memcap_hits
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
