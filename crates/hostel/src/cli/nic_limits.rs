//! `hostel vm limits NAME`: a NIC's rate limits. A tenant sets its own within the
//! operator's ceiling; the operator sets the ceiling (`--ceiling`).

use super::output::{self, Format};
use super::Ctx;
use anyhow::Result;
use clap::Args;
use hostel_api::{NicLimitsBody, NicLimitsView, RateLimitBody, VmClient};

/// Limits as flags: the classes' packet and byte rates.
#[derive(Args, Debug)]
pub struct RateFlags {
    /// All frames the guest sends, per second.
    #[arg(long, value_name = "N")]
    pps: Option<u64>,
    /// All bytes the guest sends, per second.
    #[arg(long, value_name = "N")]
    bps: Option<u64>,
    /// Broadcast and multicast frames per second.
    #[arg(long, value_name = "N")]
    flood_pps: Option<u64>,
    /// Broadcast and multicast bytes per second.
    #[arg(long, value_name = "N")]
    flood_bps: Option<u64>,
    /// Frames per second to addresses no VM of the network has (out by the uplink).
    #[arg(long, value_name = "N")]
    unknown_pps: Option<u64>,
    /// Bytes per second to addresses no VM of the network has.
    #[arg(long, value_name = "N")]
    unknown_bps: Option<u64>,
}

/// The rate flags, for `conflicts_with_all`.
const RATE_FLAGS: [&str; 6] = [
    "pps",
    "bps",
    "flood_pps",
    "flood_bps",
    "unknown_pps",
    "unknown_bps",
];

impl RateFlags {
    /// The limits the flags give; `None` when they give none.
    pub fn body(&self) -> Option<NicLimitsBody> {
        let rate = |pps, bps| RateLimitBody {
            packets_per_sec: pps,
            bytes_per_sec: bps,
            ..Default::default()
        };
        let b = NicLimitsBody {
            total: rate(self.pps, self.bps),
            flood: rate(self.flood_pps, self.flood_bps),
            unknown: rate(self.unknown_pps, self.unknown_bps),
        };
        (b != NicLimitsBody::default()).then_some(b)
    }
}

#[derive(Args, Debug)]
pub struct LimitsArgs {
    name: String,
    /// The NIC (0 is eth0).
    #[arg(long, default_value_t = 0)]
    nic: u32,
    #[command(flatten)]
    rates: RateFlags,
    /// Operator only: set the NIC's ceiling instead of the tenant's limits.
    #[arg(long)]
    ceiling: bool,
    /// Remove the limits (with --ceiling: the NIC's own ceiling, so the tenant's default
    /// applies again).
    #[arg(long, conflicts_with_all = RATE_FLAGS)]
    clear: bool,
}

/// `hostel tenant nic-ceiling`: the tenant's default ceiling for its NICs.
#[derive(Args, Debug)]
pub struct TenantCeilingArgs {
    tenant: String,
    #[command(flatten)]
    rates: RateFlags,
    /// Remove the default ceiling.
    #[arg(long, conflicts_with_all = RATE_FLAGS)]
    clear: bool,
}

/// Shows, sets (replacing the whole default ceiling) or clears a tenant's default ceiling.
pub fn tenant_ceiling(ctx: &Ctx, a: TenantCeilingArgs) -> Result<()> {
    let c = &ctx.client;
    let v = match (a.rates.body(), a.clear) {
        (Some(b), _) => c.set_tenant_nic_ceiling(&a.tenant, &b)?,
        (None, true) => {
            c.clear_tenant_nic_ceiling(&a.tenant)?;
            c.tenant_nic_ceiling(&a.tenant)?
        }
        (None, false) => c.tenant_nic_ceiling(&a.tenant)?,
    };
    if ctx.format == Format::Json {
        return output::json(&v);
    }
    output::print_fields(&[
        ("tenant".to_string(), v.tenant.clone()),
        (
            "nic ceiling".to_string(),
            v.ceiling.as_ref().map_or_else(|| "none".into(), summary),
        ),
    ]);
    Ok(())
}

/// Shows or sets; a set replaces the whole set of limits with those given.
pub fn main(ctx: &Ctx, vms: &VmClient<'_>, a: LimitsArgs) -> Result<()> {
    let v = match (a.rates.body(), a.clear, a.ceiling) {
        (None, false, _) => vms.nic_limits(&a.name, a.nic)?,
        (None, true, true) => {
            vms.clear_nic_ceiling(&a.name, a.nic)?;
            vms.nic_limits(&a.name, a.nic)?
        }
        (None, true, false) => vms.set_nic_limits(&a.name, a.nic, &NicLimitsBody::default())?,
        (Some(b), _, true) => vms.set_nic_ceiling(&a.name, a.nic, &b)?,
        (Some(b), _, false) => vms.set_nic_limits(&a.name, a.nic, &b)?,
    };
    if ctx.format == Format::Json {
        return output::json(&v);
    }
    output::print_fields(&[
        ("vm".to_string(), v.vm.clone()),
        ("nic".to_string(), format!("eth{}", v.nic)),
        ("limits".to_string(), summary(&v.limits)),
        (
            "ceiling".to_string(),
            format!("{} ({})", summary(&v.ceiling), v.ceiling_source),
        ),
        ("effective".to_string(), summary(&v.effective)),
    ]);
    Ok(())
}

/// `pps=100 flood.pps=10`, or `unlimited`.
pub fn summary(l: &NicLimitsBody) -> String {
    let mut parts = Vec::new();
    for (class, r) in [("", l.total), ("flood.", l.flood), ("unknown.", l.unknown)] {
        let fields = [
            ("pps", r.packets_per_sec),
            ("bps", r.bytes_per_sec),
            ("burst_packets", r.burst_packets),
            ("burst_bytes", r.burst_bytes),
        ];
        for (name, v) in fields {
            if let Some(v) = v {
                parts.push(format!("{class}{name}={v}"));
            }
        }
    }
    if parts.is_empty() {
        "unlimited".into()
    } else {
        parts.join(" ")
    }
}

/// What `vm show` prints for one NIC's limits.
pub fn show_line(v: &NicLimitsView) -> String {
    format!(
        "{} (ceiling: {}, {})",
        summary(&v.effective),
        summary(&v.ceiling),
        v.ceiling_source
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_each_limit_and_says_unlimited() {
        assert_eq!(summary(&NicLimitsBody::default()), "unlimited");
        let mut l = NicLimitsBody::default();
        l.total.packets_per_sec = Some(100);
        l.flood.bytes_per_sec = Some(5);
        assert_eq!(summary(&l), "pps=100 flood.bps=5");
    }
}
