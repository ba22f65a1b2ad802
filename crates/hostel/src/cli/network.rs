//! `hostel network ...`: a tenant's virtual networks and their ports.

use super::output::{self, Format, Table};
use super::Ctx;
use anyhow::Result;
use clap::{Args, Subcommand};
use hostel_api::{AttachExternal, CreateNetwork, NetworkView, SetAppliance};

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
        /// Attach it to the host's external network (through the tenant's firewall).
        #[arg(long, conflicts_with = "uplink")]
        external: bool,
        /// With --external: VMs without a floating address go out through source NAT.
        #[arg(long, requires = "external", conflicts_with = "routed")]
        snat: bool,
        /// With --external: the subnet is public (inside the operator's routed pools) and
        /// crosses the edge untranslated.
        #[arg(long, requires = "external")]
        routed: bool,
    },
    /// Attach a network to the external network (or change its --snat).
    Attach {
        name: String,
        #[arg(long, conflicts_with = "routed")]
        snat: bool,
        #[arg(long)]
        routed: bool,
    },
    /// Detach a network from the external network.
    Detach { name: String },
    /// Make a VM the network's security appliance: all of the network's traffic to and from
    /// the outside goes through that VM's NIC (which must be on the network); if it is down,
    /// that traffic stops. `--none` removes the appliance.
    Appliance {
        name: String,
        /// The appliance VM.
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        vm: Option<String>,
        /// Which of its NICs.
        #[arg(long, default_value_t = 0)]
        nic: u32,
        /// Remove the network's appliance.
        #[arg(long)]
        none: bool,
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
            external,
            snat,
            routed,
        } => {
            let n = c.create_network(
                tenant,
                &CreateNetwork {
                    name: name.clone(),
                    subnet,
                    gateway,
                    uplink,
                    subnet6,
                },
            )?;
            if !external {
                return print(ctx.format, &n);
            }
            match c.attach_network_external(tenant, &name, &AttachExternal { snat, routed }) {
                Ok(n) => print(ctx.format, &n),
                Err(e) => {
                    // Nothing half-made: the network goes again (it has no VMs yet).
                    if let Err(undo) = c.delete_network(tenant, &name) {
                        eprintln!("hostel: could not delete network {name} again: {undo}");
                    }
                    Err(e.into())
                }
            }
        }
        NetworkCommand::Attach { name, snat, routed } => {
            let n = c.attach_network_external(tenant, &name, &AttachExternal { snat, routed })?;
            print(ctx.format, &n)
        }
        NetworkCommand::Detach { name } => {
            c.detach_network_external(tenant, &name)?;
            Ok(())
        }
        NetworkCommand::Appliance {
            name,
            vm,
            nic,
            none,
        } => match vm {
            Some(vm) if !none => {
                let n = c.set_appliance(tenant, &name, &SetAppliance { vm, nic })?;
                print(ctx.format, &n)
            }
            _ => {
                c.clear_appliance(tenant, &name)?;
                Ok(())
            }
        },
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
            "external",
            match &n.external {
                None => "no".to_string(),
                Some(x) => format!(
                    "yes, edge address {}{}{}",
                    x.outside,
                    if x.snat { ", source NAT" } else { "" },
                    if x.routed {
                        ", routed (untranslated)"
                    } else {
                        ""
                    }
                ),
            },
        ),
        (
            "appliance",
            match &n.appliance {
                None => "none".to_string(),
                Some(a) => format!(
                    "{} nic {}: {}",
                    a.vm.as_deref().unwrap_or("(deleted)"),
                    a.nic.map_or("-".to_string(), |i| i.to_string()),
                    a.state
                ),
            },
        ),
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
