//! `hostel storage-backend`: the host's storage process (pool, volumes, vhost-user-blk
//! sockets). The daemon starts it with the devices it recorded and drives it over the
//! control socket; it is not meant to be run by hand (`hostel-storage` is the tool for that).

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StorageArgs {
    /// Unix socket of the JSON-lines control protocol.
    #[arg(long)]
    pub control: PathBuf,
    /// A device of the pool (in any order, under any path); none: no pool until one is added.
    #[arg(long = "device")]
    pub devices: Vec<PathBuf>,
}

pub fn main(args: StorageArgs) -> Result<ExitCode> {
    hostel_storage::control::run(&args.control, &args.devices)?;
    Ok(ExitCode::SUCCESS)
}
