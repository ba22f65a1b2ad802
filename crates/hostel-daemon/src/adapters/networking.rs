//! Tenant networks as the switch sees them: the store's networks and NICs rendered into the
//! switch's tables, pushed whole (the switch's `apply` is idempotent and keeps unchanged
//! ports connected), and re-pushed when a restarted switch comes back empty. Standbys'
//! NICs ride along, each alone in an address-less network of its own.

use super::switch_link::{gateway_mac, LinkError, SwitchInstance, SwitchPaths};
use crate::standby::StandbyPool;
use crate::Ctx;
use hostel_state::{slaac_address, Ipv6Prefix64, NetworkId, NicLimits, Store, VmId, VmNic};
use hostel_switch_proto::{NetworkConfig, PortConfig, PortKind, PortLimits, SwitchConfig};

/// What the switch's tables need to know of the host's VPSs.
pub struct VpsPorts {
    pub host: super::vps::VpsHost,
    /// The running switch (`SwitchInstance::key`), if any.
    pub switch_key: Option<String>,
}
use std::collections::HashMap;
use std::time::Duration;

/// The switch's id of a VM's NIC (and its socket's name).
pub fn port_id(vm: &VmId, idx: u32) -> String {
    format!("{vm}-{idx}")
}

pub fn switch_config(
    store: &dyn Store,
    link: &SwitchPaths,
    standby: &StandbyPool,
    vps: &VpsPorts,
) -> hostel_state::Result<SwitchConfig> {
    // VPS NICs are TAP ports; one whose TAP this switch cannot attach is left out (see
    // `vps::port_attachable`).
    let vpss: std::collections::HashSet<VmId> = store
        .list_all_vpss()?
        .into_iter()
        .map(|v| v.vm.id)
        .collect();
    let all = store.list_all_networks()?;
    let prefixes: HashMap<NetworkId, Ipv6Prefix64> = all
        .iter()
        .filter_map(|n| Some((n.id, n.subnet6?)))
        .collect();
    let mut networks: Vec<NetworkConfig> = all
        .into_iter()
        .map(|n| {
            let id = n.id.to_string();
            NetworkConfig {
                subnet4: Some(n.subnet4.into()),
                gateway4: Some(n.gateway4),
                subnet6: n.subnet6.map(Into::into),
                gateway6: n.subnet6.map(|p| p.gateway()),
                gateway_mac: gateway_mac(&id),
                uplink: n.uplink_ifname(),
                dns: Vec::new(),
                mtu: 0,
                id,
            }
        })
        .collect();
    let limits: HashMap<(VmId, u32), PortLimits> = store
        .list_effective_nic_limits()?
        .into_iter()
        .map(|(vm, idx, l)| ((vm, idx), to_switch(&l)))
        .collect();
    let mut ports: Vec<PortConfig> = store
        .list_all_nics()?
        .into_iter()
        .filter(|nic| {
            !vpss.contains(&nic.vm)
                || (nic.idx == 0
                    && super::vps::port_attachable(&vps.host, &nic.vm, vps.switch_key.as_deref()))
        })
        .map(|nic| {
            let l = limits.get(&(nic.vm, nic.idx)).copied().unwrap_or_default();
            let mut port = port_config(&nic, prefixes.get(&nic.network), link, l);
            if vpss.contains(&nic.vm) {
                port.kind = PortKind::Tap {
                    device: super::vps::tap_name(&nic.vm),
                };
                port.socket = Default::default();
            }
            port
        })
        .collect();
    let (standby_nets, standby_ports) = standby.switch_entries(link);
    networks.extend(standby_nets);
    ports.extend(standby_ports);
    Ok(SwitchConfig {
        networks,
        ports,
        policies: Vec::new(),
        external: super::edge::external_config(store)?,
    })
}

/// A NIC's port. Its IPv6 address is the SLAAC one its guest derives from the MAC, so the
/// anti-spoofing check admits exactly what the guest will use.
fn port_config(
    nic: &VmNic,
    prefix: Option<&Ipv6Prefix64>,
    link: &SwitchPaths,
    limits: PortLimits,
) -> PortConfig {
    let id = port_id(&nic.vm, nic.idx);
    PortConfig {
        socket: link.port_socket(&id),
        network: nic.network.to_string(),
        mac: nic.mac,
        ipv4: Some(nic.ipv4),
        ipv6: prefix
            .map(|p| slaac_address(p, &nic.mac))
            .into_iter()
            .collect(),
        id,
        limits,
        kind: Default::default(),
    }
}

/// The switch's form of a NIC's effective limits.
///
/// Two types of one shape, on purpose: the store's `NicLimits` is stored as JSON that always
/// names all three classes (`{"total":{},"flood":{},"unknown":{}}`), the switch's
/// `PortLimits` leaves unlimited classes out of its config, and each crate validates its own
/// (the store names the field at fault, `limits.total.packets_per_sec`, against
/// `MAX_NIC_LIMIT`; the switch checks its bucket rules). One type would change one of the
/// two serializations, the stored one or the switch's, and move both crates' methods into
/// `hostel-types`; this copy is the price of keeping both.
pub fn to_switch(l: &NicLimits) -> PortLimits {
    let rate = |r: hostel_state::RateLimit| hostel_switch_proto::RateLimit {
        packets_per_sec: r.packets_per_sec,
        bytes_per_sec: r.bytes_per_sec,
        burst_packets: r.burst_packets,
        burst_bytes: r.burst_bytes,
    };
    PortLimits {
        total: rate(l.total),
        flood: rate(l.flood),
        unknown: rate(l.unknown),
    }
}

/// Why the switch could not be given the store's tables.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The tables could not be read from the store.
    #[error(transparent)]
    Store(#[from] hostel_state::StoreError),
    /// The switch could not be started, reached, or refused the tables.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Which switch holds which tables. The snapshot from the store and its apply happen under
/// this one lock, so two syncs cannot apply their snapshots in the opposite order of taking
/// them (an older table overwriting a newer one); each successful apply is one generation.
#[derive(Default)]
pub struct Tables {
    applied: tokio::sync::Mutex<Applied>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Applied {
    /// Successful applies so far.
    generation: u64,
    /// The switch that took the last one; `None` after a failed apply, or before any.
    switch: Option<SwitchInstance>,
    /// The last snapshot had something in it (networks or standby ports).
    nonempty: bool,
}

impl Tables {
    /// Applies so far; a test or a log line can tell whether a sync happened.
    pub async fn generation(&self) -> u64 {
        self.applied.lock().await.generation
    }
}

/// Pushes the store's tables to the switch (starting it if needed). Nothing to do, and no
/// switch process, on a host without networks.
pub async fn sync(ctx: &Ctx) -> Result<(), SyncError> {
    let mut applied = ctx.tables.applied.lock().await;
    let config = match snapshot(ctx).await {
        Ok(c) => c,
        Err(e) => {
            // Not known to be programmed: the watchdog keeps trying.
            applied.switch = None;
            applied.nonempty = true;
            return Err(e);
        }
    };
    let nonempty = !config.networks.is_empty();
    if !nonempty && !ctx.switch.alive().await {
        applied.nonempty = false;
        return Ok(());
    }
    let result = apply_or_without_external(ctx, config).await;
    *applied = Applied {
        generation: applied.generation + u64::from(result.is_ok()),
        switch: match result {
            Ok(()) => ctx.switch.instance(),
            Err(_) => None,
        },
        nonempty,
    };
    Ok(result?)
}

/// Applies `config`; if the switch refuses it and it has an external network, applies the
/// tenant networks without it, so an external interface that went away (or an operator's
/// set-up the switch cannot open) costs the edge only, not every VM's network. The refusal
/// is still the result: the tables are not what the store says, and the watchdog retries.
async fn apply_or_without_external(ctx: &Ctx, config: SwitchConfig) -> Result<(), LinkError> {
    let has_external = config.external.is_some();
    let inner = has_external.then(|| SwitchConfig {
        external: None,
        ..config.clone()
    });
    let refused = match ctx.switch.apply(config).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if let (Some(inner), LinkError::Refused(_)) = (inner, &refused) {
        tracing::error!(
            error = %refused,
            "the switch refused the external network; applying the tenant networks without it"
        );
        ctx.switch.apply(inner).await?;
    }
    Err(refused)
}

/// The tables the store describes, read on the blocking pool.
async fn snapshot(ctx: &Ctx) -> Result<SwitchConfig, SyncError> {
    let store = std::sync::Arc::clone(&ctx.store);
    let paths = ctx.switch.paths();
    let standby = std::sync::Arc::clone(&ctx.standby);
    let vps = VpsPorts {
        host: super::vps::VpsHost::new(&ctx.layout),
        switch_key: ctx.switch.instance().map(|i| i.key()),
    };
    let task =
        tokio::task::spawn_blocking(move || switch_config(store.as_ref(), &paths, &standby, &vps));
    match task.await {
        Ok(r) => Ok(r?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(hostel_state::StoreError::Backend(format!("store call not run: {e}")).into()),
    }
}

/// Keeps the switch alive and programmed: a switch that died (or was restarted by hand)
/// comes back with the whole table, and the VMs' NICs reconnect by themselves.
///
/// Each tick costs one `stat` of the control socket and one request to the switch: the
/// switch that answers is compared with the one that took the last generation, instead of
/// rendering the whole table from the store and comparing it with the switch's.
pub async fn watchdog(ctx: std::sync::Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_ok = true;
    loop {
        tick.tick().await;
        let applied = *ctx.tables.applied.lock().await;
        if !applied.nonempty && !ctx.standby.is_configured() {
            continue;
        }
        let programmed = applied.switch.is_some()
            && applied.switch == ctx.switch.instance()
            && ctx.switch.alive().await;
        if programmed {
            last_ok = true;
            continue;
        }
        if last_ok {
            tracing::warn!(
                generation = applied.generation,
                "switch missing, restarted or out of date; restoring its tables"
            );
        }
        last_ok = match sync(&ctx).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the switch");
                false
            }
        };
    }
}
