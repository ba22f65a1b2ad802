//! `hostel firewall ...`: a tenant's firewall at its edge: rules (with hit counters),
//! default policies, address sets, VM groups and the log.

use super::output::{self, Format, Table};
use super::Ctx;
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use hostel_api::{
    AddressSetBody, DefaultPolicy, FirewallDefaults, FirewallRuleBody, FirewallRuleView,
    FirewallView, RuleAction, RuleDirection, VmGroupBody,
};

#[derive(Args, Debug)]
pub struct FirewallArgs {
    /// Operator only: the tenant whose firewall to act on.
    #[arg(long, global = true)]
    tenant: Option<String>,
    #[command(subcommand)]
    cmd: FirewallCommand,
}

#[derive(Subcommand, Debug)]
pub enum FirewallCommand {
    /// Rules: add, list, delete.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Defaults, rules, sets, groups and counters.
    Show,
    /// What happens to packets no rule matches (defaults: ingress drop, egress allow).
    Default {
        #[arg(long, value_enum)]
        ingress: Option<Policy>,
        #[arg(long, value_enum)]
        egress: Option<Policy>,
    },
    /// Named address sets (`set:NAME` in a rule).
    #[command(subcommand)]
    Set(NamedCommand),
    /// Groups of the tenant's VMs (`group:NAME` in a rule).
    #[command(subcommand)]
    Group(NamedCommand),
    /// Packets logged by rules with `--log` since the last read.
    Log {
        /// Keep asking (once a second) until interrupted.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NamedCommand {
    /// Create or replace it with these members (addresses/CIDRs, or VM names).
    Put { name: String, members: Vec<String> },
    /// Delete it (refused while a rule uses it).
    Delete { name: String },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Policy {
    Allow,
    Drop,
    Reject,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Dir {
    Ingress,
    Egress,
}

#[derive(Subcommand, Debug)]
pub enum RuleCommand {
    /// Add a rule. Rules of a direction are tried lowest priority first, then lowest id;
    /// the first match decides. Stateful unless --stateless: replies pass.
    Add {
        #[arg(long, value_enum)]
        direction: Dir,
        #[arg(long, value_enum)]
        action: Policy,
        /// tcp, udp, icmp, icmpv6, any (default) or a number.
        #[arg(long)]
        protocol: Option<String>,
        /// Source addresses: CIDRs, set:NAME, group:NAME (repeat).
        #[arg(long = "source")]
        source: Vec<String>,
        #[arg(long = "destination")]
        destination: Vec<String>,
        /// Destination ports or ranges, e.g. 22 or 8000-8080 (repeat).
        #[arg(long = "port")]
        ports: Vec<String>,
        #[arg(long = "source-port")]
        source_ports: Vec<String>,
        #[arg(long)]
        icmp_type: Option<u32>,
        #[arg(long)]
        icmp_code: Option<u32>,
        /// Default 1000; lower goes first.
        #[arg(long)]
        priority: Option<u32>,
        /// Attach the rule to one VM's NIC instead of the whole edge.
        #[arg(long)]
        vm: Option<String>,
        #[arg(long)]
        nic: Option<u32>,
        #[arg(long)]
        stateless: bool,
        #[arg(long)]
        log: bool,
    },
    /// Rules with their hit counters.
    List,
    /// Delete a rule by id.
    Delete { id: u32 },
}

fn policy(p: Policy) -> DefaultPolicy {
    match p {
        Policy::Allow => DefaultPolicy::Allow,
        Policy::Drop => DefaultPolicy::Drop,
        Policy::Reject => DefaultPolicy::Reject,
    }
}

fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn main(ctx: &Ctx, args: FirewallArgs) -> Result<()> {
    let tenant = args.tenant.as_deref();
    let c = &ctx.client;
    match args.cmd {
        FirewallCommand::Rule(RuleCommand::Add {
            direction,
            action,
            protocol,
            source,
            destination,
            ports,
            source_ports,
            icmp_type,
            icmp_code,
            priority,
            vm,
            nic,
            stateless,
            log,
        }) => {
            let r = c.add_firewall_rule(
                tenant,
                &FirewallRuleBody {
                    priority,
                    direction: match direction {
                        Dir::Ingress => RuleDirection::Ingress,
                        Dir::Egress => RuleDirection::Egress,
                    },
                    action: match action {
                        Policy::Allow => RuleAction::Allow,
                        Policy::Drop => RuleAction::Drop,
                        Policy::Reject => RuleAction::Reject,
                    },
                    protocol,
                    source,
                    destination,
                    source_ports,
                    destination_ports: ports,
                    icmp_type,
                    icmp_code,
                    vm,
                    nic,
                    stateless,
                    log,
                },
            )?;
            if ctx.format == Format::Json {
                return output::json(&r);
            }
            rules(std::slice::from_ref(&r));
            Ok(())
        }
        FirewallCommand::Rule(RuleCommand::List) => {
            let all = c.list_firewall_rules(tenant)?;
            if ctx.format == Format::Json {
                return output::json(&all);
            }
            rules(&all);
            Ok(())
        }
        FirewallCommand::Rule(RuleCommand::Delete { id }) => {
            c.delete_firewall_rule(tenant, id)?;
            Ok(())
        }
        FirewallCommand::Show => show(ctx.format, &c.firewall(tenant)?),
        FirewallCommand::Default { ingress, egress } => {
            let v = c.set_firewall_defaults(
                tenant,
                &FirewallDefaults {
                    ingress: ingress.map(policy),
                    egress: egress.map(policy),
                },
            )?;
            show(ctx.format, &v)
        }
        FirewallCommand::Set(NamedCommand::Put { name, members }) => {
            let v = c.set_address_set(tenant, &name, &AddressSetBody { addresses: members })?;
            show(ctx.format, &v)
        }
        FirewallCommand::Set(NamedCommand::Delete { name }) => {
            c.delete_address_set(tenant, &name)?;
            Ok(())
        }
        FirewallCommand::Group(NamedCommand::Put { name, members }) => {
            let v = c.set_vm_group(tenant, &name, &VmGroupBody { vms: members })?;
            show(ctx.format, &v)
        }
        FirewallCommand::Group(NamedCommand::Delete { name }) => {
            c.delete_vm_group(tenant, &name)?;
            Ok(())
        }
        FirewallCommand::Log { follow } => loop {
            for e in c.firewall_log(tenant)? {
                if ctx.format == Format::Json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!(
                        "{} rule={} {} {} proto={} {}:{} > {}:{} len={}",
                        e.time_ns,
                        output::opt(e.rule),
                        word(&e.direction),
                        word(&e.action),
                        e.protocol,
                        e.source,
                        e.source_port,
                        e.destination,
                        e.destination_port,
                        e.length
                    );
                }
            }
            if !follow {
                return Ok(());
            }
            // A follower asks again: the switch hands out each entry once.
            std::thread::sleep(std::time::Duration::from_secs(1));
        },
    }
}

fn rules(all: &[FirewallRuleView]) {
    let mut t = Table::new(&[
        "id",
        "prio",
        "dir",
        "action",
        "proto",
        "source",
        "destination",
        "ports",
        "scope",
        "hits",
        "bytes",
    ]);
    for r in all {
        let mut proto = r.protocol.clone();
        if let Some(ty) = r.icmp_type {
            proto.push_str(&format!(" type {ty}"));
            if let Some(code) = r.icmp_code {
                proto.push_str(&format!(" code {code}"));
            }
        }
        if r.stateless {
            proto.push_str(" (stateless)");
        }
        let any = |v: &[String]| {
            if v.is_empty() {
                "any".into()
            } else {
                v.join(",")
            }
        };
        t.row(vec![
            r.id.to_string(),
            r.priority.to_string(),
            word(&r.direction),
            word(&r.action),
            proto,
            any(&r.source),
            any(&r.destination),
            any(&r.destination_ports),
            match &r.vm {
                Some(vm) => format!("{vm}/nic{}", r.nic.unwrap_or(0)),
                None => "edge".into(),
            },
            r.hits_packets.to_string(),
            r.hits_bytes.to_string(),
        ]);
    }
    t.print();
}

fn show(format: Format, v: &FirewallView) -> Result<()> {
    if format == Format::Json {
        return output::json(v);
    }
    output::print_fields(&[
        (
            "defaults",
            format!(
                "ingress {} ({} pkts), egress {} ({} pkts)",
                word(&v.default_ingress),
                v.default_hits.get("ingress").copied().unwrap_or(0),
                word(&v.default_egress),
                v.default_hits.get("egress").copied().unwrap_or(0)
            ),
        ),
        (
            "conntrack",
            format!("{} of {}", v.conntrack, v.conntrack_limit),
        ),
        (
            "drops",
            v.drops
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ]);
    for (name, members) in &v.sets {
        println!("set {name}: {}", members.join(", "));
    }
    for (name, members) in &v.groups {
        println!("group {name}: {}", members.join(", "));
    }
    rules(&v.rules);
    Ok(())
}
