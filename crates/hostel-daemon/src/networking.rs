//! Tenant networks as the switch sees them: the store's networks and NICs rendered into the
//! switch's tables, pushed whole (the switch's `apply` is idempotent and keeps unchanged
//! ports connected), and re-pushed when a restarted switch comes back empty. Standbys'
//! NICs ride along, each alone in an address-less network of its own.

use crate::standby::StandbyPool;
use crate::switch_link::{gateway_mac, LinkError, SwitchLink};
use crate::Ctx;
use hostel_state::{slaac_address, Ipv6Prefix64, NetworkId, NicLimits, Store, VmId, VmNic};
use hostel_switch_proto::{
    Ipv4Cidr, Ipv6Cidr, NetworkConfig, PortConfig, PortLimits, SwitchConfig,
};
use std::collections::HashMap;
use std::time::Duration;

/// The switch's id of a VM's NIC (and its socket's name).
pub fn port_id(vm: &VmId, idx: u32) -> String {
    format!("{vm}-{idx}")
}

pub fn switch_config(
    store: &dyn Store,
    link: &SwitchLink,
    standby: &StandbyPool,
) -> hostel_state::Result<SwitchConfig> {
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
                subnet4: Some(Ipv4Cidr {
                    addr: n.subnet4.network(),
                    prefix: n.subnet4.prefix(),
                }),
                gateway4: Some(n.gateway4),
                subnet6: n.subnet6.map(|p| Ipv6Cidr {
                    addr: p.network(),
                    prefix: 64,
                }),
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
        .filter_map(|nic| {
            let l = limits.get(&(nic.vm, nic.idx)).copied().unwrap_or_default();
            port_config(&nic, prefixes.get(&nic.network), link, l)
        })
        .collect();
    let (standby_nets, standby_ports) = standby.switch_entries(link);
    networks.extend(standby_nets);
    ports.extend(standby_ports);
    Ok(SwitchConfig {
        networks,
        ports,
        policies: Vec::new(),
        external: None,
    })
}

/// A NIC's port. Its IPv6 address is the SLAAC one its guest derives from the MAC, so the
/// anti-spoofing check admits exactly what the guest will use.
fn port_config(
    nic: &VmNic,
    prefix: Option<&Ipv6Prefix64>,
    link: &SwitchLink,
    limits: PortLimits,
) -> Option<PortConfig> {
    let id = port_id(&nic.vm, nic.idx);
    Some(PortConfig {
        socket: link.port_socket(&id),
        network: nic.network.to_string(),
        mac: nic.mac.parse().ok()?,
        ipv4: Some(nic.ipv4),
        ipv6: prefix
            .and_then(|p| slaac_address(p, &nic.mac))
            .into_iter()
            .collect(),
        id,
        limits,
        kind: Default::default(),
    })
}

/// The switch's form of a NIC's effective limits.
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

/// Pushes the store's tables to the switch (starting it if needed). Nothing to do, and no
/// switch process, on a host without networks.
pub async fn sync(ctx: &Ctx) -> Result<(), String> {
    let config =
        switch_config(ctx.store.as_ref(), &ctx.switch, &ctx.standby).map_err(|e| e.to_string())?;
    if config.networks.is_empty() && !ctx.switch.alive().await {
        return Ok(());
    }
    ctx.switch
        .apply(config)
        .await
        .map_err(|e: LinkError| e.to_string())
}

/// Keeps the switch alive and programmed: a switch that died (or was restarted by hand)
/// comes back with the whole table, and the VMs' NICs reconnect by themselves.
pub async fn watchdog(ctx: std::sync::Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_ok = true;
    loop {
        tick.tick().await;
        let has_networks = ctx
            .store
            .list_all_networks()
            .map(|n| !n.is_empty())
            .unwrap_or(false)
            || ctx.standby.is_configured();
        if !has_networks {
            continue;
        }
        let programmed = match ctx.switch.show_config().await {
            Ok(live) => switch_config(ctx.store.as_ref(), &ctx.switch, &ctx.standby)
                .map(|want| normalized(want) == normalized(live))
                .unwrap_or(true),
            Err(_) => false,
        };
        if programmed {
            last_ok = true;
            continue;
        }
        if last_ok {
            tracing::warn!("switch missing or out of date; restoring its tables");
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

/// Table order carries no meaning; compare as sets.
fn normalized(mut c: SwitchConfig) -> SwitchConfig {
    c.networks.sort_by(|a, b| a.id.cmp(&b.id));
    c.ports.sort_by(|a, b| a.id.cmp(&b.id));
    c
}
