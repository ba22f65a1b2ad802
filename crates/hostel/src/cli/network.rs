//! `hostel network ...`: a tenant's virtual networks and their ports.

use super::output::{self, Format, Table};
use super::Ctx;
use anyhow::Result;
use clap::{Args, Subcommand};
use hostel_api::{CreateNetwork, NetworkView};

#[derive(Args, Debug)]
pub struct NetworkArgs {
    /// Operator only: the tenant whose networks to act on.
    #[arg(long, global = true)]
    tenant: Option<String>,
    #[command(subcommand)]
    cmd: NetworkCommand,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network; the switch routes between its VMs and serves them DHCP.
    Create {
        name: String,
        /// IPv4 subnet, e.g. 10.0.0.0/24.
        #[arg(long)]
        subnet: String,
        /// The switch's address on it (default: the first host address).
        #[arg(long)]
        gateway: Option<String>,
        /// Give it an uplink: a TAP device in the host for traffic to addresses outside
        /// the network (its name is in `network show`; route or bridge it on the host).
        #[arg(long)]
        uplink: bool,
        /// IPv6 /64 prefix, e.g. fd00:1::/64: VMs configure their addresses by SLAAC.
        #[arg(long)]
        subnet6: Option<String>,
    },
    /// List networks.
    List,
    /// Show a network: its ports, their addresses and the switch's counters.
    Show { name: String },
    /// Delete a network no VM uses.
    Delete { name: String },
}

pub fn main(ctx: &Ctx, args: NetworkArgs) -> Result<()> {
    let tenant = args.tenant.as_deref();
    let c = &ctx.client;
    match args.cmd {
        NetworkCommand::Create {
            name,
            subnet,
            gateway,
            uplink,
            subnet6,
        } => {
            let n = c.create_network(
                tenant,
                &CreateNetwork {
                    name,
                    subnet,
                    gateway,
                    uplink,
                    subnet6,
                },
            )?;
            print(ctx.format, &n)
        }
        NetworkCommand::List => {
            let nets = c.list_networks(tenant)?;
            if ctx.format == Format::Json {
                return output::json(&nets);
            }
            let mut t = Table::new(&["name", "subnet", "gateway", "ports"]);
            for n in &nets {
                t.row(vec![
                    n.name.clone(),
                    n.subnet.clone(),
                    n.gateway.clone(),
                    n.ports.len().to_string(),
                ]);
            }
            t.print();
            Ok(())
        }
        NetworkCommand::Show { name } => print(ctx.format, &c.show_network(tenant, &name)?),
        NetworkCommand::Delete { name } => {
            c.delete_network(tenant, &name)?;
            Ok(())
        }
    }
}

fn print(format: Format, n: &NetworkView) -> Result<()> {
    if format == Format::Json {
        return output::json(n);
    }
    output::print_fields(&[
        ("name", n.name.clone()),
        ("subnet", n.subnet.clone()),
        ("gateway", n.gateway.clone()),
        ("subnet6", output::opt(n.subnet6.clone())),
        (
            "uplink",
            match &n.uplink {
                None => "none".to_string(),
                Some(u) => format!(
                    "{} ({}; from host {} pkts, to host {} pkts{})",
                    u.interface,
                    if u.attached { "attached" } else { "detached" },
                    u.from_host_packets,
                    u.to_host_packets,
                    drops_suffix(&u.drops)
                ),
            },
        ),
    ]);
    let mut t = Table::new(&[
        "vm", "nic", "mac", "ipv4", "ipv6", "link", "rx pkts", "tx pkts", "drops",
    ]);
    for p in &n.ports {
        let drops = drops_list(&p.drops);
        t.row(vec![
            p.vm.clone(),
            p.nic.to_string(),
            p.mac.clone(),
            output::opt(p.ipv4.clone()),
            output::opt(p.ipv6.clone()),
            if p.connected { "up" } else { "down" }.to_string(),
            p.rx_packets.to_string(),
            p.tx_packets.to_string(),
            if drops.is_empty() { "-".into() } else { drops },
        ]);
    }
    println!();
    t.print();
    Ok(())
}

fn drops_list(drops: &std::collections::BTreeMap<String, u64>) -> String {
    let v: Vec<String> = drops.iter().map(|(r, c)| format!("{r}={c}")).collect();
    v.join(",")
}

fn drops_suffix(drops: &std::collections::BTreeMap<String, u64>) -> String {
    if drops.is_empty() {
        String::new()
    } else {
        format!("; drops {}", drops_list(drops))
    }
}
