//! `hostel vps ...`: a tenant's VPSs (system containers), with the same shape of commands
//! and output as `hostel vm`.

use super::output::{self, Format};
use super::vm::{parse_nic, print_list, print_one, read_ssh_keys};
use super::{invalid, Ctx};
use anyhow::Result;
use clap::{Args, Subcommand};
use hostel_api::{CreateVm, ExecVps, NicRequest, Size};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct VpsArgs {
    /// Operator only: the tenant whose VPSs to act on.
    #[arg(long, global = true)]
    tenant: Option<String>,
    #[command(subcommand)]
    cmd: VpsCommand,
}

#[derive(Subcommand, Debug)]
pub enum VpsCommand {
    /// Create a VPS (and start it, unless --no-start).
    Create(CreateArgs),
    /// List VPSs.
    List,
    /// Show one VPS.
    Show { name: String },
    /// Start a stopped VPS.
    Start { name: String },
    /// Stop a VPS: PID 1 is asked to stop, everything is killed after 10 s.
    Stop { name: String },
    /// Stop and start a VPS.
    Restart { name: String },
    /// Delete a VPS and its disk.
    Delete { name: String },
    /// Run a command in the VPS as its root; its output, and its exit status as this one's.
    Exec {
        name: String,
        /// Seconds until the command is killed (the daemon's default is 60).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Print the tail of PID 1's output.
    Console { name: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    name: String,
    /// busybox (the daemon's default).
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    vcpus: Option<u32>,
    /// 256M, 1G; a bare number is MiB.
    #[arg(long)]
    memory: Option<String>,
    /// The writable layer's size: 4G (GiB; a bare number is GiB too).
    #[arg(long, value_parser = parse_gib)]
    disk: Option<u64>,
    /// PID 1's command (run by /bin/sh -c); a placeholder init otherwise.
    #[arg(long)]
    command: Option<String>,
    /// Create it stopped.
    #[arg(long)]
    no_start: bool,
    /// Its NIC on one of the tenant's networks, as NET or NET,ip=ADDR.
    #[arg(long = "network", value_name = "NET[,ip=ADDR]", value_parser = parse_nic)]
    networks: Vec<NicRequest>,
    /// An SSH public key file (for images with sshd); repeatable.
    #[arg(long = "ssh-key", value_name = "FILE")]
    ssh_keys: Vec<PathBuf>,
}

fn parse_gib(s: &str) -> Result<u64, super::vm::ShapeError> {
    let t = s.trim();
    let digits = t.strip_suffix(['G', 'g']).unwrap_or(t);
    digits
        .parse()
        .map_err(|_| super::vm::ShapeError::new(s, "GiB, such as 4G"))
}

pub fn main(ctx: &Ctx, args: VpsArgs) -> Result<()> {
    let vpss = ctx.client.vpss(args.tenant.as_deref());
    let vps = match args.cmd {
        VpsCommand::Create(a) => vpss.create(&CreateVm {
            ssh_keys: read_ssh_keys(&a.ssh_keys)?,
            name: a.name,
            vcpus: a.vcpus,
            memory: a.memory.map(Size::Text),
            image: a.image,
            disk_gib: a.disk,
            cmdline: a.command,
            start: a.no_start.then_some(false),
            networks: a.networks,
            ..Default::default()
        })?,
        VpsCommand::List => return print_list(ctx.format, &vpss.list()?),
        VpsCommand::Show { name } => vpss.show(&name)?,
        VpsCommand::Start { name } => vpss.start(&name)?,
        VpsCommand::Stop { name } => vpss.stop(&name, &Default::default())?,
        VpsCommand::Restart { name } => vpss.restart(&name)?,
        VpsCommand::Delete { name } => {
            vpss.delete(&name)?;
            return match ctx.format {
                Format::Json => output::json(&serde_json::json!({ "deleted": name })),
                Format::Table => {
                    println!("deleted vps {name}");
                    Ok(())
                }
            };
        }
        VpsCommand::Exec {
            name,
            timeout,
            command,
        } => {
            if command.is_empty() {
                return Err(invalid(Some("command"), "give a program to run"));
            }
            let out = vpss.vps_exec(
                &name,
                &ExecVps {
                    command,
                    timeout_secs: timeout,
                },
            )?;
            std::io::stdout().write_all(out.stdout.as_bytes())?;
            std::io::stderr().write_all(out.stderr.as_bytes())?;
            std::io::stdout().flush()?;
            std::process::exit(out.exit_code.unwrap_or(137));
        }
        VpsCommand::Console { name } => {
            let text = vpss.console(&name)?;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            return Ok(out.flush()?);
        }
    };
    print_one(ctx.format, &vps)
}
