//! `hostel audit`, `hostel host`: looking at (and tuning) the host itself.

use super::output::{self, mib, Format, Table};
use super::{invalid, Ctx};
use anyhow::Result;
use clap::{Args, Subcommand};
use hostel_api::HostSettings;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only this tenant's entries.
    #[arg(long)]
    tenant: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// The host's CPUs, memory, what running VMs have committed, and the overcommit ratios.
    Show,
    /// Change the overcommit ratios; a ratio not given keeps its value.
    Set {
        /// Running VMs' memory may reach host memory times this.
        #[arg(long)]
        memory_overcommit: Option<f64>,
        /// Running VMs' vCPUs may reach host CPUs times this.
        #[arg(long)]
        cpu_overcommit: Option<f64>,
    },
}

pub fn audit(ctx: &Ctx, args: AuditArgs) -> Result<()> {
    let entries = ctx.client.audit(args.tenant.as_deref(), args.limit)?;
    if ctx.format == Format::Json {
        return output::json(&entries);
    }
    let mut table = Table::new(&["seq", "at", "actor", "tenant", "action", "target", "result"]);
    for e in entries {
        table.row(vec![
            e.seq.to_string(),
            e.at,
            e.actor,
            output::opt(e.tenant),
            e.action,
            e.target,
            e.result,
        ]);
    }
    table.print();
    Ok(())
}

pub fn host(ctx: &Ctx, cmd: HostCommand) -> Result<()> {
    let view = match cmd {
        HostCommand::Show => ctx.client.host()?,
        HostCommand::Set {
            memory_overcommit,
            cpu_overcommit,
        } => {
            if memory_overcommit.is_none() && cpu_overcommit.is_none() {
                return Err(invalid(
                    None,
                    "nothing to set: give --memory-overcommit or --cpu-overcommit",
                ));
            }
            // The API replaces both ratios; read the current ones so the unnamed one stays.
            let current = ctx.client.host()?.settings;
            ctx.client.set_host(&HostSettings {
                memory_overcommit: memory_overcommit.unwrap_or(current.memory_overcommit),
                cpu_overcommit: cpu_overcommit.unwrap_or(current.cpu_overcommit),
            })?
        }
    };
    if ctx.format == Format::Json {
        return output::json(&view);
    }
    let s = view.settings;
    let standby: Vec<String> = view
        .standby
        .iter()
        .map(|p| {
            format!(
                "{}: {} ready, {} booting (keeps {})",
                p.image, p.ready, p.booting, p.wanted
            )
        })
        .collect();
    let standby = if standby.is_empty() {
        "none".to_string()
    } else {
        standby.join("; ")
    };
    output::print_fields(&[
        ("cpus", view.cpus.to_string()),
        ("memory", mib(view.memory_mib)),
        ("accelerator", view.accelerator.clone()),
        ("cpu overcommit", s.cpu_overcommit.to_string()),
        ("memory overcommit", s.memory_overcommit.to_string()),
        (
            "committed vcpus",
            format!(
                "{} of {}",
                view.committed_vcpus,
                (f64::from(view.cpus) * s.cpu_overcommit).floor()
            ),
        ),
        (
            "committed memory",
            format!(
                "{} of {}",
                mib(view.committed_memory_mib),
                mib((view.memory_mib as f64 * s.memory_overcommit) as u64)
            ),
        ),
        ("standby", standby),
    ]);
    Ok(())
}
