//! `hostel daemon`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Where the database, tokens, disks and VM run directories live.
    #[arg(long, default_value = "/var/lib/hostel", env = "HOSTEL_STATE_DIR")]
    pub state_dir: PathBuf,
    /// TCP address of the API.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// Unix socket of the API (default <state-dir>/hostel.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Directory with the busybox guest assets (vmlinux, initrd.img) from `make guest`.
    #[arg(long, env = "HOSTEL_GUEST_DIR")]
    pub guest_dir: Option<PathBuf>,
    /// Print the operator token at start-up (development: `make run`).
    #[arg(long)]
    pub print_operator_token: bool,
    /// Keep COUNT (default 1) VMs of IMAGE booted ahead of the order: a create of the
    /// default shape (1 vCPU, the image's memory and disk, one network) takes one instead
    /// of booting. Repeatable, e.g. `--standby debian-12 --standby debian-12-web=2`.
    #[arg(
        long,
        value_name = "IMAGE[=COUNT]",
        env = "HOSTEL_STANDBY",
        value_delimiter = ','
    )]
    pub standby: Vec<hostel_daemon::standby::StandbyWanted>,
}

pub fn main(args: DaemonArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(hostel_daemon::run(hostel_daemon::DaemonConfig {
        state_dir: args.state_dir,
        listen: args.listen,
        socket: args.socket,
        guest_dir: args.guest_dir,
        print_operator_token: args.print_operator_token,
        standby: args.standby,
    }))?;
    Ok(ExitCode::SUCCESS)
}
