//! `hostel-ids replay --rules FILE --pcap FILE [--var NAME=VALUE]... [--classification FILE]`:
//! a capture through the detection engine, EVE alert lines on stdout, the load report on stderr
//! (the same as `hostel ids replay`; see `hostel_ids::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("replay") {
        eprintln!("usage: hostel-ids replay --rules FILE --pcap FILE [--var NAME=VALUE]... [--classification FILE]");
        return ExitCode::from(2);
    }
    hostel_ids::cli::replay_main(args)
}
