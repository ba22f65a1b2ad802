//! `hostel ids`: a tenant's intrusion detection (`show`, `set`, `rules`, `alerts [--follow]`)
//! through the API, and `replay`, the same engine offline on a capture.

use super::output::Format;
use super::Ctx;
use anyhow::Result;
use clap::{Args, Subcommand};
use hostel_api::{IdsAlertsView, IdsRulesBody, IdsSettingsBody, IdsView};
use std::io::Write;

#[derive(Subcommand, Debug)]
pub enum IdsCommand {
    /// The tenant's detection: watched networks, mode, how its rules load.
    Show(TenantArg),
    /// Which networks are watched, and how.
    Set(SetArgs),
    /// Replace the tenant's own rules with a file's (`-` for stdin).
    Rules(RulesArgs),
    /// The tenant's alerts as EVE JSON lines.
    Alerts(AlertsArgs),
    /// Offline: a capture through the engine, EVE lines on stdout (no daemon needed).
    /// Arguments: --rules FILE --pcap FILE [--var NAME=VALUE]... [--classification FILE].
    Replay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct TenantArg {
    /// Operator only: the tenant to act for.
    #[arg(long)]
    tenant: Option<String>,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// Networks to watch (repeat; none: detection off).
    #[arg(long = "network")]
    networks: Vec<String>,
    /// Of those, networks whose traffic between the tenant's own VMs is inspected too
    /// (repeat; each must also be given with --network).
    #[arg(long = "intra-network")]
    intra_networks: Vec<String>,
    /// detect or prevent.
    #[arg(long, default_value = "detect")]
    mode: String,
    /// fail_open or fail_closed, when detection cannot keep up.
    #[arg(long)]
    overload: Option<String>,
    #[command(flatten)]
    t: TenantArg,
}

#[derive(Args, Debug)]
pub struct RulesArgs {
    /// A rules file in Suricata's language, or `-` for stdin.
    file: String,
    #[command(flatten)]
    t: TenantArg,
}

#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// Keep printing new alerts as they come (every second), until interrupted.
    #[arg(long)]
    follow: bool,
    /// Only alerts after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    #[command(flatten)]
    t: TenantArg,
}

fn path(base: &str, tenant: &Option<String>, extra: &[(&str, String)]) -> String {
    let mut q: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(t) = tenant {
        q.push(format!("tenant={t}"));
    }
    if q.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", q.join("&"))
    }
}

fn print_view(ctx: &Ctx, v: &IdsView) -> Result<()> {
    if matches!(ctx.format, Format::Json) {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    println!("mode:      {} ({})", v.mode, v.overload);
    println!("networks:  {}", v.networks.join(", "));
    if !v.intra_networks.is_empty() {
        println!("VM to VM:  {}", v.intra_networks.join(", "));
    }
    println!(
        "rules:     {} loaded, {} refused; operator rules: {} loaded",
        v.rules_loaded,
        v.rules_refused.len(),
        v.operator_rules_loaded
    );
    for r in &v.rules_refused {
        println!("  refused: sid {}: `{}`: {}", r.sid, r.keyword, r.reason);
    }
    println!("switch:    {}", v.switch);
    Ok(())
}

pub fn main(ctx: &Ctx, cmd: IdsCommand) -> Result<()> {
    match cmd {
        IdsCommand::Show(t) => {
            let v: IdsView = ctx.client.get(&path("/v1/ids", &t.tenant, &[]))?;
            print_view(ctx, &v)
        }
        IdsCommand::Set(a) => {
            let body = IdsSettingsBody {
                mode: a.mode,
                overload: a.overload,
                networks: a.networks,
                intra_networks: a.intra_networks,
            };
            let v: IdsView = ctx
                .client
                .send("PUT", &path("/v1/ids", &a.t.tenant, &[]), &body)?;
            print_view(ctx, &v)
        }
        IdsCommand::Rules(a) => {
            let rules = if a.file == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&a.file)
                    .map_err(|e| super::invalid(Some("file"), format!("{}: {e}", a.file)))?
            };
            let v: IdsView = ctx.client.send(
                "PUT",
                &path("/v1/ids/rules", &a.t.tenant, &[]),
                &IdsRulesBody { rules },
            )?;
            print_view(ctx, &v)
        }
        IdsCommand::Alerts(a) => {
            let mut after = a.after;
            let out = std::io::stdout();
            loop {
                let p = path(
                    "/v1/ids/alerts",
                    &a.t.tenant,
                    &[("after", after.to_string())],
                );
                let got: IdsAlertsView = ctx.client.get(&p)?;
                let mut w = out.lock();
                if got.lost > 0 {
                    eprintln!(
                        "hostel: {} alerts were lost before they were read",
                        got.lost
                    );
                }
                for line in &got.alerts {
                    writeln!(w, "{line}")?;
                }
                w.flush()?;
                after = got.next;
                if !a.follow {
                    return Ok(());
                }
                // Polling: the API answers at once; one request per second per follower.
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        IdsCommand::Replay { .. } => unreachable!("handled before connecting"),
    }
}
