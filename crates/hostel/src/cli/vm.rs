//! `hostel vm ...`: a tenant's VMs (or, with the operator token and `--tenant`, anyone's).

use super::output::{self, mib, opt, Format, Table};
use super::{invalid, Ctx};
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use hostel_api::{CreateVm, NicRequest, ResizeVm, Size, StopVm, VmView};
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct VmArgs {
    /// Operator only: the tenant whose VMs to act on.
    #[arg(long, global = true)]
    tenant: Option<String>,
    #[command(subcommand)]
    cmd: VmCommand,
}

/// What the supervisor does when the VM's QEMU exits without being asked to.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RestartPolicy {
    Never,
    #[value(name = "on_failure", alias = "on-failure")]
    OnFailure,
    Always,
}

impl RestartPolicy {
    fn api_name(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on_failure",
            RestartPolicy::Always => "always",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create a VM (and start it, unless --no-start).
    Create(CreateArgs),
    /// List VMs.
    List,
    /// Show one VM.
    Show { name: String },
    /// Show or set a NIC's rate limits (the tenant's, within the operator's ceiling; the
    /// operator sets the ceiling with --ceiling). Setting replaces all of them.
    Limits(super::nic_limits::LimitsArgs),
    /// Start a stopped VM.
    Start { name: String },
    /// Stop a VM: the guest is asked to power off, then QEMU is stopped after --timeout.
    Stop {
        name: String,
        /// Stop QEMU at once, skipping the guest's shutdown.
        #[arg(long)]
        force: bool,
        /// Seconds the guest gets to power off (the daemon's default is 30).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Stop and start a VM.
    Restart { name: String },
    /// Change a VM's shape; takes effect at its next start.
    Resize {
        name: String,
        #[arg(long)]
        vcpus: Option<u32>,
        /// 512M, 2G; a bare number is MiB.
        #[arg(long)]
        memory: Option<String>,
        #[arg(long)]
        disk_gib: Option<u64>,
    },
    /// Delete a VM (stopping it first) and its disk.
    Delete { name: String },
    /// Snapshots of all of a VM's pool volumes at one instant (crash-consistent).
    #[command(subcommand)]
    Snapshot(super::volume::VmSnapshotCommand),
    /// Run a command in the guest through its agent (qemu-guest-agent, in hostel's Debian
    /// images): stdout and stderr come back, the command's exit status is this one's.
    /// Output arrives when the command has ended. No --tty: the agent's channel carries
    /// no interactive terminal (use `vm console --attach` or SSH).
    Exec(super::exec::ExecArgs),
    /// Copy files into (push) and out of (pull) the guest through its agent, with mode,
    /// owner and a SHA-256 check against the guest's own.
    #[command(subcommand)]
    File(super::file::FileCommand),
    /// Print the VM's console log; with --follow, keep streaming until EOF or Ctrl-C; with
    /// --attach, type into the serial console (Ctrl-] detaches, the VM keeps running).
    Console {
        name: String,
        #[arg(long, short = 'f')]
        follow: bool,
        /// Attach interactively to the serial console, e.g. to log in when the network is
        /// wrong. One client at a time; Ctrl-] detaches.
        #[arg(long, conflicts_with = "follow")]
        attach: bool,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    name: String,
    #[arg(long)]
    vcpus: Option<u32>,
    /// 512M, 2G; a bare number is MiB.
    #[arg(long)]
    memory: Option<String>,
    /// An image from `hostel image list` (the daemon defaults to busybox).
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    disk_gib: Option<u64>,
    /// Extra kernel command line for direct-boot images.
    #[arg(long)]
    cmdline: Option<String>,
    #[arg(long, value_enum)]
    restart_policy: Option<RestartPolicy>,
    /// Create it stopped.
    #[arg(long)]
    no_start: bool,
    /// A NIC on one of the tenant's networks, as NET or NET,ip=ADDR (address allocated when
    /// not given); repeat for eth1, eth2, ...
    #[arg(long = "network", value_name = "NET[,ip=ADDR]", value_parser = parse_nic)]
    networks: Vec<NicRequest>,
    /// OS images: the guest's host name (default: the VM's name).
    #[arg(long)]
    hostname: Option<String>,
    /// OS images: an SSH public key file for the default user; repeatable.
    #[arg(long = "ssh-key", value_name = "FILE")]
    ssh_keys: Vec<PathBuf>,
    /// OS images: cloud-init user-data file (any format cloud-init reads), passed as is.
    #[arg(long, value_name = "FILE")]
    user_data: Option<PathBuf>,
    /// OS images: a service template (web, database); picks its image.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// A service template parameter; repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

/// A command-line value that does not have the shape its option documents.
#[derive(Debug, thiserror::Error)]
#[error("{text:?}: expected {expected}")]
pub struct ShapeError {
    text: String,
    expected: &'static str,
}

impl ShapeError {
    pub(super) fn new(text: &str, expected: &'static str) -> Self {
        Self {
            text: text.to_string(),
            expected,
        }
    }
}

fn parse_param(s: &str) -> Result<(String, String), ShapeError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(ShapeError {
            text: s.to_string(),
            expected: "KEY=VALUE",
        }),
    }
}

/// The public keys in each file: one per non-empty, non-comment line.
pub(super) fn read_ssh_keys(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| invalid(Some("ssh_keys"), format!("{}: {e}", f.display())))?;
        let found: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if found.is_empty() {
            return Err(invalid(
                Some("ssh_keys"),
                format!("{}: no public key in it", f.display()),
            ));
        }
        if found.iter().any(|k| k.contains("PRIVATE KEY")) {
            return Err(invalid(
                Some("ssh_keys"),
                format!("{}: a private key; give the .pub file", f.display()),
            ));
        }
        keys.extend(found);
    }
    Ok(keys)
}

/// `NET`, `NET,ip=IP` (the documented form) or the short `NET=IP`: the address is left for
/// the daemon to check against the subnet.
pub(super) fn parse_nic(s: &str) -> Result<NicRequest, ShapeError> {
    let bad = || ShapeError {
        text: s.to_string(),
        expected: "NET, NET,ip=ADDR or NET=ADDR",
    };
    let (network, ip) = match s.split_once(',') {
        Some((n, opt)) => match opt.split_once('=') {
            Some(("ip", ip)) if !ip.is_empty() => (n, Some(ip)),
            _ => return Err(bad()),
        },
        None => match s.split_once('=') {
            Some((n, ip)) if !ip.is_empty() => (n, Some(ip)),
            Some(_) => return Err(bad()),
            None => (s, None),
        },
    };
    if network.is_empty() || network.contains('=') {
        return Err(bad());
    }
    Ok(NicRequest {
        network: network.to_string(),
        ip: ip.map(str::to_string),
    })
}

pub fn main(ctx: &Ctx, args: VmArgs) -> Result<()> {
    let vms = ctx.client.vms(args.tenant.as_deref());
    let vm = match args.cmd {
        VmCommand::Snapshot(cmd) => {
            return super::volume::vm_snapshot(ctx, args.tenant.as_deref(), cmd)
        }
        VmCommand::Create(a) => vms.create(&CreateVm {
            ssh_keys: read_ssh_keys(&a.ssh_keys)?,
            user_data: a
                .user_data
                .as_deref()
                .map(|f| {
                    std::fs::read_to_string(f)
                        .map_err(|e| invalid(Some("user_data"), format!("{}: {e}", f.display())))
                })
                .transpose()?,
            hostname: a.hostname,
            service: a.service,
            service_params: a.params.into_iter().collect(),
            name: a.name,
            vcpus: a.vcpus,
            // Sizes go as typed: the daemon validates them and names the field.
            memory: a.memory.map(Size::Text),
            image: a.image,
            disk_gib: a.disk_gib,
            cmdline: a.cmdline,
            restart_policy: a.restart_policy.map(|p| p.api_name().to_string()),
            start: a.no_start.then_some(false),
            networks: a.networks,
        })?,
        VmCommand::List => return print_list(ctx.format, &vms.list()?),
        VmCommand::Show { name } => {
            let vm = vms.show(&name)?;
            if ctx.format == Format::Table {
                // Limits are one call per NIC; a daemon without the route shows none.
                let limits: Vec<String> = (0..vm.nics.len())
                    .map(|i| {
                        u32::try_from(i)
                            .ok()
                            .and_then(|i| vms.nic_limits(&name, i).ok())
                            .map_or_else(|| "-".into(), |l| super::nic_limits::show_line(&l))
                    })
                    .collect();
                // What the guest reports, when an agent answers (a running VM only).
                let guest = (vm.state == "running")
                    .then(|| vms.guest(&name).ok())
                    .flatten();
                return print_one_with_limits(&vm, &limits, guest.as_ref());
            }
            vm
        }
        VmCommand::Limits(a) => return super::nic_limits::main(ctx, &vms, a),
        VmCommand::File(c) => return super::file::main(ctx, &vms, c),
        VmCommand::Exec(a) => {
            let code = super::exec::main(&vms, a)?;
            std::io::stdout().flush()?;
            std::process::exit(code);
        }
        VmCommand::Start { name } => vms.start(&name)?,
        VmCommand::Stop {
            name,
            force,
            timeout,
        } => vms.stop(
            &name,
            &StopVm {
                force,
                timeout_secs: timeout,
            },
        )?,
        VmCommand::Restart { name } => vms.restart(&name)?,
        VmCommand::Resize {
            name,
            vcpus,
            memory,
            disk_gib,
        } => {
            if vcpus.is_none() && memory.is_none() && disk_gib.is_none() {
                return Err(invalid(
                    None,
                    "nothing to change: give --vcpus, --memory or --disk-gib",
                ));
            }
            let body = ResizeVm {
                vcpus,
                memory: memory.map(Size::Text),
                disk_gib,
            };
            vms.resize(&name, &body)?
        }
        VmCommand::Delete { name } => {
            vms.delete(&name)?;
            return match ctx.format {
                Format::Json => output::json(&serde_json::json!({ "deleted": name })),
                Format::Table => {
                    println!("deleted vm {name}");
                    Ok(())
                }
            };
        }
        VmCommand::Console {
            name,
            follow,
            attach,
        } => {
            if attach {
                return super::attach::attach(&ctx.client, args.tenant.as_deref(), &name);
            }
            if follow {
                return copy_live(vms.console_follow(&name)?);
            }
            let text = vms.console(&name)?;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            return Ok(out.flush()?);
        }
    };
    print_one(ctx.format, &vm)
}

/// Copies a console stream to stdout as it arrives, flushing every chunk so a prompt without
/// a newline shows up and `| grep` sees lines promptly. Ctrl-C ends the process (SIGINT's
/// default), which is all "stop following" needs.
fn copy_live(mut stream: impl Read) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        // A reader that went away (`| head`) ends us by SIGPIPE, like any filter.
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

pub(super) fn print_list(format: Format, vms: &[VmView]) -> Result<()> {
    if format == Format::Json {
        return output::json(vms);
    }
    let mut table = Table::new(&[
        "name", "tenant", "state", "desired", "vcpus", "memory", "disk", "image", "pid", "restarts",
    ]);
    for v in vms {
        table.row(vec![
            v.name.clone(),
            v.tenant.clone(),
            v.state.clone(),
            v.desired.clone(),
            v.vcpus.to_string(),
            mib(v.memory_mib),
            format!("{}G", v.disk_gib),
            v.image.clone(),
            opt(v.pid),
            v.restart_count.to_string(),
        ]);
    }
    table.print();
    Ok(())
}

pub(super) fn print_one(format: Format, v: &VmView) -> Result<()> {
    if format == Format::Json {
        return output::json(v);
    }
    print_one_with_limits(v, &[], None)
}

/// The table form of a VM, with each NIC's limits when `limits` has them.
fn print_one_with_limits(
    v: &VmView,
    limits: &[String],
    guest: Option<&hostel_api::GuestView>,
) -> Result<()> {
    let mut fields: Vec<(String, String)> = [
        ("name", v.name.clone()),
        ("tenant", v.tenant.clone()),
        ("id", v.id.clone()),
        ("state", format!("{} (since {})", v.state, v.since)),
        ("desired", v.desired.clone()),
        ("pid", opt(v.pid)),
        ("vcpus", v.vcpus.to_string()),
        ("memory", mib(v.memory_mib)),
        ("disk", format!("{}G", v.disk_gib)),
        ("image", v.image.clone()),
        ("cmdline", opt(v.cmdline.as_deref())),
        ("restart policy", v.restart_policy.clone()),
        ("restarts", v.restart_count.to_string()),
        ("last exit", opt(v.last_exit.as_deref())),
        ("created", v.created_at.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (i, nic) in v.nics.iter().enumerate() {
        fields.push((
            format!("eth{i}"),
            match &nic.ipv6 {
                Some(v6) => format!(
                    "{} {} {} {v6}",
                    nic.network,
                    nic.mac,
                    opt(nic.ipv4.as_deref())
                ),
                None => format!("{} {} {}", nic.network, nic.mac, opt(nic.ipv4.as_deref())),
            },
        ));
        if let Some(l) = limits.get(i) {
            fields.push((format!("eth{i} limits"), l.clone()));
        }
    }
    if let Some(g) = guest {
        fields.push(("guest host name".into(), g.host_name.clone()));
        fields.push(("guest os".into(), opt(g.os.as_deref())));
        fields.push(("guest kernel".into(), opt(g.kernel.as_deref())));
        for i in g.interfaces.iter().filter(|i| i.name != "lo") {
            fields.push((format!("guest {}", i.name), i.addresses.join(" ")));
        }
    }
    output::print_fields(&fields);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_nic;

    #[test]
    fn nic_forms() {
        let n = parse_nic("lan").unwrap();
        assert_eq!((n.network.as_str(), n.ip), ("lan", None));
        for form in ["lan,ip=10.0.0.5", "lan=10.0.0.5"] {
            let n = parse_nic(form).unwrap();
            assert_eq!(
                (n.network.as_str(), n.ip.as_deref()),
                ("lan", Some("10.0.0.5"))
            );
        }
        for bad in [
            "",
            ",ip=1.2.3.4",
            "lan,ip=",
            "lan,mac=x",
            "lan=",
            "=1.2.3.4",
        ] {
            assert!(parse_nic(bad).is_err(), "{bad:?} accepted");
        }
    }
}
