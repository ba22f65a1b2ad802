//! `hostel`: one binary for the CLI and every hostel process.

mod cli;
mod cmd_daemon;
mod cmd_run;
mod cmd_storage;
mod cmd_switch;
mod console;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hostel",
    version,
    about = "Multi-tenant virtualization platform"
)]
struct Cli {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot one VM in the foreground, its console on this terminal.
    Run(cmd_run::RunArgs),
    /// Run the hostel daemon: the API, the state store and every VM's supervisor.
    Daemon(cmd_daemon::DaemonArgs),
    /// Run the host's switch (the daemon starts it; this is its entry point).
    Switch(cmd_switch::SwitchArgs),
    /// Offline signature scans (no daemon): `scan file|image PATH --db DIR [--yara FILE]`.
    Scan(cli::scan::ScanArgs),
    /// Run the host's storage process (the daemon starts it; this is its entry point).
    #[command(hide = true)]
    StorageBackend(cmd_storage::StorageArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOSTEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd_run::main(args),
        Command::Daemon(args) => cmd_daemon::main(args),
        Command::Switch(args) => cmd_switch::main(args),
        Command::Scan(args) => cli::scan::main(args),
        Command::StorageBackend(args) => cmd_storage::main(args),
        Command::Client(cmd) => cli::main(cli.global, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
