//! `hostel external ...` (operator): the host's external network, its public address pools,
//! and who holds what.

use super::output::{self, Format, Table};
use super::Ctx;
use anyhow::Result;
use clap::{Args, Subcommand};
use hostel_api::{ExternalSetupBody, ExternalView};

#[derive(Subcommand, Debug)]
pub enum ExternalCommand {
    /// Set up (or change) the external network on a host interface the switch drives.
    Set(Box<SetArgs>),
    /// Show the set-up, the pools' usage, the addresses held and the tenants' edges.
    Show,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// The host interface (the switch opens it with AF_PACKET; no bridge, no routing).
    #[arg(long)]
    interface: String,
    /// The external IPv4 subnet, e.g. 203.0.113.0/24.
    #[arg(long)]
    subnet: String,
    /// The upstream router's address.
    #[arg(long)]
    gateway: String,
    /// A public address pool inside the subnet (repeat for more).
    #[arg(long = "pool")]
    pools: Vec<String>,
    /// A public IPv4 subnet the upstream routes to this host, for tenants' routed
    /// networks (repeat for more).
    #[arg(long = "routed-pool")]
    routed_pools: Vec<String>,
    /// The same for IPv6 (needs --subnet6).
    #[arg(long = "routed-pool6")]
    routed_pools6: Vec<String>,
    /// The external IPv6 prefix and its router.
    #[arg(long)]
    subnet6: Option<String>,
    #[arg(long)]
    gateway6: Option<String>,
    /// The MAC used on the wire (default: derived from the interface name).
    #[arg(long)]
    mac: Option<String>,
    /// Connections each tenant's firewall tracks at most (default 65536).
    #[arg(long)]
    conntrack_limit: Option<u32>,
}

pub fn main(ctx: &Ctx, cmd: ExternalCommand) -> Result<()> {
    let v = match cmd {
        ExternalCommand::Set(a) => {
            let SetArgs {
                interface,
                subnet,
                gateway,
                pools,
                routed_pools,
                routed_pools6,
                subnet6,
                gateway6,
                mac,
                conntrack_limit,
            } = *a;
            ctx.client.set_external(&ExternalSetupBody {
                routed_pools,
                routed_pools6,
                interface,
                subnet,
                gateway,
                subnet6,
                gateway6,
                pools,
                mac,
                conntrack_limit,
            })?
        }
        ExternalCommand::Show => ctx.client.external()?,
    };
    print(ctx.format, &v)
}

fn print(format: Format, v: &ExternalView) -> Result<()> {
    if format == Format::Json {
        return output::json(v);
    }
    output::print_fields(&[
        ("interface", format!("{} ({})", v.interface, v.mac)),
        ("subnet", format!("{} via {}", v.subnet, v.gateway)),
        (
            "subnet6",
            match (&v.subnet6, &v.gateway6) {
                (Some(s), Some(g)) => format!("{s} via {g}"),
                (Some(s), None) => s.clone(),
                _ => "-".into(),
            },
        ),
        ("pools", v.pools.join(", ")),
        (
            "routed pools",
            [v.routed_pools.clone(), v.routed_pools6.clone()]
                .concat()
                .join(", "),
        ),
        (
            "pool usage",
            format!("{} of {} held", v.pool_used, v.pool_size),
        ),
        ("conntrack limit", v.conntrack_limit.to_string()),
        (
            "wire",
            format!(
                "rx {} pkts, tx {} pkts, drops {}",
                v.wire_rx_packets,
                v.wire_tx_packets,
                v.wire_drops.values().sum::<u64>()
            ),
        ),
    ]);
    let mut t = Table::new(&["address", "tenant", "kind", "vm", "nic"]);
    for a in &v.addresses {
        t.row(vec![
            a.address.clone(),
            a.tenant.clone(),
            a.kind.clone(),
            output::opt(a.vm.clone()),
            output::opt(a.nic),
        ]);
    }
    t.print();
    let mut t = Table::new(&[
        "tenant",
        "outside",
        "networks",
        "conntrack",
        "accepted",
        "drops",
    ]);
    for e in &v.edges {
        t.row(vec![
            e.tenant.clone(),
            e.outside.clone(),
            e.networks.join(","),
            format!("{}/{}", e.conntrack, e.conntrack_limit),
            e.accepted.to_string(),
            e.drops.values().sum::<u64>().to_string(),
        ]);
    }
    t.print();
    Ok(())
}
