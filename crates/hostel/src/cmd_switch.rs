//! `hostel switch`: the host's vhost-user-net switch, one process serving every VM NIC.
//! The daemon starts it and programs it over the control socket.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SwitchArgs {
    /// Unix socket of the JSON-lines control protocol.
    #[arg(long)]
    pub control: PathBuf,
    /// A JSON switch configuration to apply before serving.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn main(args: SwitchArgs) -> Result<ExitCode> {
    hostel_switch::run(hostel_switch::RunOptions {
        control_socket: args.control,
        config: args.config,
    })?;
    Ok(ExitCode::SUCCESS)
}
