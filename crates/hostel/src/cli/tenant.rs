//! `hostel tenant`, `hostel token`, `hostel quota`: the operator's side of tenancy.

use super::output::{self, mib, Format, Table};
use super::{invalid, Ctx};
use anyhow::Result;
use clap::{Args, Subcommand};
use hostel_api::{parse_mib, CreateTenant, CreateToken, QuotaBody, TenantView};

/// The quota a tenant gets when created without one; mirrors the daemon's documented default
/// (`CreateTenant::quota`) so that `--vcpus 8` alone changes only the vCPUs.
const DEFAULT_QUOTA: QuotaBody = QuotaBody {
    vcpus: 4,
    memory_mib: 4096,
    disk_gib: 50,
    vms: 4,
    networks: hostel_api::DEFAULT_MAX_NETWORKS,
    uplinks: hostel_api::DEFAULT_MAX_UPLINKS,
    public_addresses: hostel_api::DEFAULT_MAX_PUBLIC_ADDRESSES,
};

/// Quota fields as flags; an absent flag keeps the value it is merged onto.
#[derive(Args, Debug, Default)]
pub struct QuotaFlags {
    /// vCPUs across the tenant's VMs.
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory across the tenant's VMs (512M, 8G; a bare number is MiB).
    #[arg(long)]
    memory: Option<String>,
    /// Disk across the tenant's VMs, in GiB.
    #[arg(long)]
    disk_gib: Option<u64>,
    /// Number of VMs.
    #[arg(long)]
    max_vms: Option<u32>,
    /// Number of networks.
    #[arg(long)]
    max_networks: Option<u32>,
    /// Number of networks with an uplink (a device in the host each).
    #[arg(long)]
    max_uplinks: Option<u32>,
    /// Number of floating public addresses on the external network.
    #[arg(long)]
    max_public_addresses: Option<u32>,
}

impl QuotaFlags {
    fn is_empty(&self) -> bool {
        self.vcpus.is_none()
            && self.memory.is_none()
            && self.disk_gib.is_none()
            && self.max_vms.is_none()
            && self.max_networks.is_none()
            && self.max_uplinks.is_none()
            && self.max_public_addresses.is_none()
    }

    /// `base` with the given flags applied.
    fn apply(&self, base: QuotaBody) -> Result<QuotaBody> {
        let memory_mib = match &self.memory {
            Some(m) => parse_mib(m).map_err(|e| invalid(Some("memory"), e))?,
            None => base.memory_mib,
        };
        Ok(QuotaBody {
            vcpus: self.vcpus.unwrap_or(base.vcpus),
            memory_mib,
            disk_gib: self.disk_gib.unwrap_or(base.disk_gib),
            vms: self.max_vms.unwrap_or(base.vms),
            networks: self.max_networks.unwrap_or(base.networks),
            uplinks: self.max_uplinks.unwrap_or(base.uplinks),
            public_addresses: self.max_public_addresses.unwrap_or(base.public_addresses),
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant (default quota: 4 vCPUs, 4G memory, 50 GiB disk, 4 VMs, 4 networks,
    /// 1 uplink).
    Create {
        name: String,
        #[command(flatten)]
        quota: QuotaFlags,
    },
    /// List tenants with their usage against their quota.
    List,
    /// Show or set the default rate-limit ceiling of a tenant's NICs (those without one of
    /// their own; see `hostel vm limits --ceiling`). Setting replaces it whole.
    NicCeiling(super::nic_limits::TenantCeilingArgs),
    /// Show or set what the tenant may do through its VMs' guest agents: exec, file
    /// transfer (off: 403 naming the setting) and the largest file moved.
    Agent(super::file::TenantAgentArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token for a tenant; prints the secret, which is shown only this once.
    Create {
        /// The tenant the token acts as.
        #[arg(long)]
        tenant: String,
        /// A label to recognise the token by in the audit log.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets): the operator's call lists every tenant's, or
    /// one tenant's with --tenant; a tenant's call its own.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token by id (from `token list`): its secret stops working at once.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set a tenant's quota; fields not given keep their current value.
    Set {
        tenant: String,
        #[command(flatten)]
        quota: QuotaFlags,
    },
    /// Show or set a tenant's storage quota (volume bytes provisioned and allocated).
    Storage {
        tenant: String,
        /// Sum of its volumes' sizes (K, M, G, T suffixes).
        #[arg(long)]
        volume_bytes: Option<String>,
        /// Bytes its volumes may hold in the pool (K, M, G, T suffixes).
        #[arg(long)]
        allocated_bytes: Option<String>,
    },
}

pub fn tenant(ctx: &Ctx, cmd: TenantCommand) -> Result<()> {
    match cmd {
        TenantCommand::Create { name, quota } => {
            let quota = if quota.is_empty() {
                None
            } else {
                Some(quota.apply(DEFAULT_QUOTA)?)
            };
            let t = ctx.client.create_tenant(&CreateTenant { name, quota })?;
            print_tenants(ctx.format, std::slice::from_ref(&t), false)
        }
        TenantCommand::List => {
            let ts = ctx.client.list_tenants()?;
            print_tenants(ctx.format, &ts, true)
        }
        TenantCommand::NicCeiling(a) => super::nic_limits::tenant_ceiling(ctx, a),
        TenantCommand::Agent(a) => super::file::tenant_agent(ctx, a),
    }
}

pub fn token(ctx: &Ctx, cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create { tenant, name } => {
            let t = ctx.client.create_token(&tenant, &CreateToken { name })?;
            match ctx.format {
                Format::Json => output::json(&t),
                // The secret alone on stdout, so `TOKEN=$(hostel token create ...)` works.
                Format::Table => {
                    eprintln!(
                        "token {} ({}) for tenant {}; the secret is shown only once:",
                        t.id,
                        t.name,
                        t.tenant.as_deref().unwrap_or(&tenant)
                    );
                    println!("{}", t.secret);
                    Ok(())
                }
            }
        }
        TokenCommand::List { tenant } => {
            let tokens = ctx.client.list_tokens(tenant.as_deref())?;
            if ctx.format == Format::Json {
                return output::json(&tokens);
            }
            let mut table = Table::new(&["id", "tenant", "name", "created"]);
            for t in tokens {
                table.row(vec![
                    t.id,
                    t.tenant.unwrap_or_else(|| "(operator)".into()),
                    t.name,
                    t.created_at,
                ]);
            }
            table.print();
            Ok(())
        }
        TokenCommand::Delete { id } => {
            ctx.client.delete_token(&id)?;
            eprintln!("token {id} revoked");
            Ok(())
        }
    }
}

pub fn quota(ctx: &Ctx, cmd: QuotaCommand) -> Result<()> {
    match cmd {
        QuotaCommand::Storage {
            tenant,
            volume_bytes,
            allocated_bytes,
        } => {
            let mut q = ctx.client.storage_quota(&tenant)?;
            if let Some(v) = volume_bytes {
                q.max_volume_bytes = super::volume::parse_size(&v)?;
            }
            if let Some(v) = allocated_bytes {
                q.max_volume_allocated_bytes = super::volume::parse_size(&v)?;
            }
            let q = ctx.client.set_storage_quota(&tenant, &q)?;
            if ctx.format == Format::Json {
                return super::output::json(&q);
            }
            super::output::print_fields(&[
                ("max_volume_bytes", q.max_volume_bytes.to_string()),
                (
                    "max_volume_allocated_bytes",
                    q.max_volume_allocated_bytes.to_string(),
                ),
            ]);
            Ok(())
        }
        QuotaCommand::Set { tenant, quota } => {
            if quota.is_empty() {
                return Err(invalid(
                    None,
                    "nothing to set: give --vcpus, --memory, --disk-gib, --max-vms, \
                     --max-networks or --max-uplinks",
                ));
            }
            // Refuse a bad size before asking the daemon anything.
            quota.apply(QuotaBody::default())?;
            // The API replaces the whole quota; read the current one so unnamed fields stay.
            let current = ctx
                .client
                .list_tenants()?
                .into_iter()
                .find(|t| t.name == tenant)
                .ok_or_else(|| anyhow::anyhow!("tenant {tenant:?} not found"))?;
            let body = quota.apply(current.quota)?;
            let t = ctx.client.set_quota(&tenant, &body)?;
            print_tenants(ctx.format, std::slice::from_ref(&t), false)
        }
    }
}

/// One tenant prints as a JSON object, a listing as an array; tables look alike.
fn print_tenants(format: Format, ts: &[TenantView], list: bool) -> Result<()> {
    if format == Format::Json {
        return if list {
            output::json(ts)
        } else {
            output::json(&ts[0])
        };
    }
    let mut table = Table::new(&[
        "name", "vms", "vcpus", "memory", "disk", "networks", "uplinks", "created",
    ]);
    for t in ts {
        let (q, u) = (&t.quota, &t.usage);
        table.row(vec![
            t.name.clone(),
            format!("{}/{}", u.vms, q.vms),
            format!("{}/{}", u.vcpus, q.vcpus),
            format!("{}/{}", mib(u.memory_mib), mib(q.memory_mib)),
            format!("{}/{}G", u.disk_gib, q.disk_gib),
            format!("{}/{}", u.networks, q.networks),
            format!("{}/{}", u.uplinks, q.uplinks),
            t.created_at.clone(),
        ]);
    }
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_quota_fields_keep_their_value() {
        let flags = QuotaFlags {
            memory: Some("8G".into()),
            ..Default::default()
        };
        let q = flags.apply(DEFAULT_QUOTA).unwrap();
        assert_eq!(q.memory_mib, 8192);
        assert_eq!((q.vcpus, q.disk_gib, q.vms), (4, 50, 4));
        let bad = QuotaFlags {
            memory: Some("lots".into()),
            ..Default::default()
        };
        assert!(bad.apply(DEFAULT_QUOTA).is_err());
    }
}
