//! `hostel address ...`: a tenant's public (floating) addresses.

use super::output::{self, Format, Table};
use super::Ctx;
use anyhow::Result;
use clap::{Args, Subcommand};
use hostel_api::{AddressView, AllocateAddress, AttachAddress};

#[derive(Args, Debug)]
pub struct AddressArgs {
    /// Operator only: the tenant whose addresses to act on.
    #[arg(long, global = true)]
    tenant: Option<String>,
    #[command(subcommand)]
    cmd: AddressCommand,
}

#[derive(Subcommand, Debug)]
pub enum AddressCommand {
    /// Take a public address from the external network's pools (within the quota).
    Allocate {
        /// A particular free address (default: the lowest free one).
        address: Option<String>,
    },
    /// Attach it 1:1 to a VM's NIC (whose network is attached to the external network).
    Attach {
        address: String,
        vm: String,
        #[arg(long, default_value_t = 0)]
        nic: u32,
    },
    /// Detach it from its NIC (the tenant keeps it).
    Detach { address: String },
    /// Give it back to the pools.
    Release { address: String },
    /// The tenant's public addresses (its edge's own included).
    List,
}

pub fn main(ctx: &Ctx, args: AddressArgs) -> Result<()> {
    let tenant = args.tenant.as_deref();
    let c = &ctx.client;
    let one = match args.cmd {
        AddressCommand::Allocate { address } => {
            c.allocate_address(tenant, &AllocateAddress { address })?
        }
        AddressCommand::Attach { address, vm, nic } => {
            c.attach_address(tenant, &address, &AttachAddress { vm, nic })?
        }
        AddressCommand::Detach { address } => c.detach_address(tenant, &address)?,
        AddressCommand::Release { address } => {
            c.release_address(tenant, &address)?;
            return Ok(());
        }
        AddressCommand::List => {
            let all = c.list_addresses(tenant)?;
            if ctx.format == Format::Json {
                return output::json(&all);
            }
            table(&all);
            return Ok(());
        }
    };
    if ctx.format == Format::Json {
        return output::json(&one);
    }
    table(std::slice::from_ref(&one));
    Ok(())
}

fn table(all: &[AddressView]) {
    let mut t = Table::new(&["address", "kind", "vm", "nic", "private"]);
    for a in all {
        t.row(vec![
            a.address.clone(),
            a.kind.clone(),
            output::opt(a.vm.clone()),
            output::opt(a.nic),
            output::opt(a.private.clone()),
        ]);
    }
    t.print();
}
