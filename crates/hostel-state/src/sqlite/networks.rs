//! Network and NIC rows, and address/MAC allocation.
//!
//! Allocation runs inside the caller's IMMEDIATE transaction, so "find the
//! lowest free address, then insert it" cannot interleave with another
//! writer, in this process or another; the UNIQUE constraints on `vm_nics`
//! are the backstop.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use hostel_types::MacAddr;
use rusqlite::{named_params, Connection, Row};

use super::convert::{is_unique_violation, text, uint};
use super::rows::{query_first, query_rows};
use super::{tenants, DbResult};
use crate::error::{EntityKind, StoreError};
use crate::ids::{NetworkId, NetworkName, TenantId, VmId};
use crate::model::network::{
    check_usable_subnet, derive_mac, resolve_gateway, Network, NewNetwork, NewNic, Uplink, VmNic,
    MAX_NICS_PER_VM,
};
use crate::model::tenant::Usage;
use crate::quota;
use crate::time::Timestamp;

const COLUMNS: &str = "id, tenant_id, name, subnet4, gateway4, subnet6, uplink, created_at";
const NIC_COLUMNS: &str = "vm_id, idx, network_id, mac, ipv4";

/// Re-derivations tried when a MAC collides within a network. Each try has at
/// most (NICs on the network / 2^24) chance of colliding, so running out
/// means the network is absurdly full, not bad luck.
const MAC_ATTEMPTS: u32 = 64;

fn from_row(row: &Row<'_>) -> DbResult<Network> {
    Ok(Network {
        id: text(row, "id")?,
        tenant: text(row, "tenant_id")?,
        name: text(row, "name")?,
        subnet4: text(row, "subnet4")?,
        gateway4: addr(row, "gateway4")?,
        subnet6: row
            .get::<_, Option<String>>("subnet6")?
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| {
                StoreError::Backend(format!("corrupt value in column \"subnet6\": {e}"))
            })?,
        uplink: text(row, "uplink")?,
        created_at: Timestamp::from_unix_millis(row.get("created_at")?),
    })
}

fn nic_from_row(row: &Row<'_>) -> DbResult<VmNic> {
    Ok(VmNic {
        vm: text(row, "vm_id")?,
        idx: uint(row, "idx")?,
        network: text(row, "network_id")?,
        mac: mac(row, "mac")?,
        ipv4: addr(row, "ipv4")?,
    })
}

/// A NIC's MAC, kept as its text form; a row that does not parse is corruption, reported
/// as such rather than passed on (a port without its MAC cannot be switched).
fn mac(row: &Row<'_>, col: &str) -> DbResult<MacAddr> {
    let s: String = row.get(col)?;
    s.parse().map_err(|e| {
        StoreError::Backend(format!("corrupt value in column {col:?}: {s:?}: {e}")).into()
    })
}

/// `Ipv4Addr` parses with its own error type, so it cannot go through
/// [`text`]; same corruption reporting, though.
fn addr(row: &Row<'_>, col: &str) -> DbResult<Ipv4Addr> {
    let s: String = row.get(col)?;
    s.parse().map_err(|e| {
        StoreError::Backend(format!("corrupt value in column {col:?}: {s:?}: {e}")).into()
    })
}

pub(super) fn insert(c: &Connection, tenant: &TenantId, new: &NewNetwork) -> DbResult<Network> {
    let quota = tenants::quota(c, tenant)?;
    let name = &new.name;
    check_usable_subnet(&new.subnet4)?;
    let gateway4 = resolve_gateway(&new.subnet4, new.gateway4)?;
    let conflict = || {
        StoreError::conflict(
            EntityKind::Network,
            name,
            "name already in use in this tenant",
        )
    };
    let taken = c
        .prepare_cached("SELECT 1 FROM networks WHERE tenant_id = ?1 AND name = ?2")?
        .exists([tenant.to_string(), name.to_string()])?;
    if taken {
        return Err(conflict().into());
    }
    let mut usage = Usage::default();
    add_usage(c, tenant, &mut usage)?;
    quota::check_network(&quota, &usage, new.uplink != Uplink::None)?;
    let net = Network {
        id: NetworkId::new_random(),
        tenant: *tenant,
        name: name.clone(),
        subnet4: new.subnet4,
        gateway4,
        subnet6: new.subnet6,
        uplink: new.uplink,
        created_at: Timestamp::now(),
    };
    let sql = format!(
        "INSERT INTO networks ({COLUMNS}) VALUES \
         (:id, :tenant_id, :name, :subnet4, :gateway4, :subnet6, :uplink, :created_at)"
    );
    c.prepare_cached(&sql)?
        .execute(named_params! {
            ":id": net.id.to_string(),
            ":tenant_id": tenant.to_string(),
            ":name": name.as_str(),
            ":subnet4": new.subnet4.to_string(),
            ":gateway4": gateway4.to_string(),
            ":subnet6": new.subnet6.map(|p| p.to_string()),
            ":uplink": new.uplink.as_str(),
            ":created_at": net.created_at.unix_millis(),
        })
        .map_err(|e| {
            let e = e.into();
            if is_unique_violation(&e) {
                conflict().into()
            } else {
                e
            }
        })?;
    Ok(net)
}

pub(super) fn get(c: &Connection, id: &NetworkId) -> DbResult<Network> {
    let sql = format!("SELECT {COLUMNS} FROM networks WHERE id = ?1");
    query_first(c, &sql, [id.to_string()], from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Network, id).into())
}

pub(super) fn get_by_name(
    c: &Connection,
    tenant: &TenantId,
    name: &NetworkName,
) -> DbResult<Network> {
    let sql = format!("SELECT {COLUMNS} FROM networks WHERE tenant_id = ?1 AND name = ?2");
    query_first(c, &sql, (tenant.to_string(), name.as_str()), from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Network, name).into())
}

pub(super) fn list_for_tenant(c: &Connection, tenant: &TenantId) -> DbResult<Vec<Network>> {
    let sql = format!("SELECT {COLUMNS} FROM networks WHERE tenant_id = ?1 ORDER BY name");
    query_rows(c, &sql, [tenant.to_string()], from_row)
}

pub(super) fn list_all(c: &Connection) -> DbResult<Vec<Network>> {
    let sql = format!("SELECT {COLUMNS} FROM networks ORDER BY tenant_id, name");
    query_rows(c, &sql, [], from_row)
}

pub(super) fn delete(c: &Connection, id: &NetworkId) -> DbResult<Network> {
    let net = get(c, id)?;
    let in_use: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM vm_nics WHERE network_id = ?1")?
        .query_row([id.to_string()], |r| r.get(0))?;
    if in_use > 0 {
        return Err(StoreError::conflict(
            EntityKind::Network,
            &net.name,
            format!("still used by {in_use} NIC(s); delete those VMs first"),
        )
        .into());
    }
    c.prepare_cached("DELETE FROM networks WHERE id = ?1")?
        .execute([id.to_string()])?;
    // Its attachment to the external network went with it (cascade).
    super::edge::release_idle_outside(c, &net.tenant)?;
    Ok(net)
}

/// Adds the tenant's networks (and those with an uplink) to `usage`.
pub(super) fn add_usage(c: &Connection, tenant: &TenantId, usage: &mut Usage) -> DbResult<()> {
    let (networks, uplinks) = c
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(uplink != 'none'), 0) FROM networks WHERE tenant_id = ?1",
        )?
        .query_row([tenant.to_string()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
    usage.networks = networks.max(0) as u64;
    usage.uplinks = uplinks.max(0) as u64;
    Ok(())
}

/// How many networks the tenant owns; tenant deletion refuses while any remain.
pub(super) fn count_for_tenant(c: &Connection, tenant: &TenantId) -> DbResult<i64> {
    c.prepare_cached("SELECT COUNT(*) FROM networks WHERE tenant_id = ?1")?
        .query_row([tenant.to_string()], |r| r.get(0))
        .map_err(Into::into)
}

pub(super) fn nics_of_vm(c: &Connection, vm: &VmId) -> DbResult<Vec<VmNic>> {
    let sql = format!("SELECT {NIC_COLUMNS} FROM vm_nics WHERE vm_id = ?1 ORDER BY idx");
    query_rows(c, &sql, [vm.to_string()], nic_from_row)
}

/// Ordered by address (numerically, which text order in SQL is not).
pub(super) fn nics_of_network(c: &Connection, network: &NetworkId) -> DbResult<Vec<VmNic>> {
    let sql = format!("SELECT {NIC_COLUMNS} FROM vm_nics WHERE network_id = ?1");
    let mut nics = query_rows(c, &sql, [network.to_string()], nic_from_row)?;
    nics.sort_by_key(|n| n.ipv4);
    Ok(nics)
}

/// Every NIC on the host, grouped by network and ordered by address.
pub(super) fn all_nics(c: &Connection) -> DbResult<Vec<VmNic>> {
    let sql = format!("SELECT {NIC_COLUMNS} FROM vm_nics");
    let mut nics = query_rows(c, &sql, [], nic_from_row)?;
    nics.sort_by_key(|n| (n.network, n.ipv4));
    Ok(nics)
}

/// Rejects NIC lists the store would refuse anyway, before anything is
/// written, so a bad request costs no quota check or VM insert.
pub(super) fn check_nic_count(nics: &[NewNic]) -> DbResult<()> {
    if nics.len() > MAX_NICS_PER_VM {
        return Err(
            StoreError::invalid("nics", format!("at most {MAX_NICS_PER_VM} NICs per VM")).into(),
        );
    }
    Ok(())
}

/// Attaches `nics` to the freshly inserted `vm` (owned by `tenant`), in order,
/// allocating addresses and MACs. Must run in the transaction that inserted
/// the VM, so a failure here also undoes the VM.
pub(super) fn attach(
    c: &Connection,
    tenant: &TenantId,
    vm: &VmId,
    nics: &[NewNic],
) -> DbResult<Vec<VmNic>> {
    check_nic_count(nics)?;
    let mut out = Vec::with_capacity(nics.len());
    for (idx, req) in (0u32..).zip(nics) {
        let net = get(c, &req.network)?;
        if net.tenant != *tenant {
            // Same answer as for a network that does not exist: a tenant must
            // not learn that another tenant's network id is valid.
            return Err(StoreError::not_found(EntityKind::Network, req.network).into());
        }
        let ipv4 = match req.ipv4 {
            Some(a) => check_requested(c, &net, a)?,
            None => allocate(c, &net)?,
        };
        let mac = pick_mac(c, &net, vm, idx)?;
        let nic = VmNic {
            vm: *vm,
            idx,
            network: net.id,
            mac,
            ipv4,
        };
        insert_nic(c, &net, &nic)?;
        out.push(nic);
    }
    Ok(out)
}

fn address_taken(c: &Connection, net: &NetworkId, a: Ipv4Addr) -> DbResult<bool> {
    c.prepare_cached("SELECT 1 FROM vm_nics WHERE network_id = ?1 AND ipv4 = ?2")?
        .exists([net.to_string(), a.to_string()])
        .map_err(Into::into)
}

fn address_in_use(net: &Network, a: Ipv4Addr) -> StoreError {
    StoreError::conflict(
        EntityKind::Network,
        &net.name,
        format!("address {a} is already in use"),
    )
}

/// A caller-chosen address must be a host address of the subnet other than
/// the gateway, and free.
fn check_requested(c: &Connection, net: &Network, a: Ipv4Addr) -> DbResult<Ipv4Addr> {
    let subnet = net.subnet4;
    let reason = if !subnet.contains(a) {
        Some(format!("{a} is outside {subnet}"))
    } else if a == subnet.network() {
        Some(format!("{a} is the network address of {subnet}"))
    } else if a == subnet.broadcast() {
        Some(format!("{a} is the broadcast address of {subnet}"))
    } else if a == net.gateway4 {
        Some(format!("{a} is the gateway of network {}", net.name))
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(StoreError::invalid("ipv4", reason).into());
    }
    if address_taken(c, &net.id, a)? {
        return Err(address_in_use(net, a).into());
    }
    Ok(a)
}

/// The lowest free host address other than the gateway. Loads the used set
/// once and scans upwards, so the scan stops after at most `used + 2` steps
/// unless the subnet is actually full.
fn allocate(c: &Connection, net: &Network) -> DbResult<Ipv4Addr> {
    let used: HashSet<Ipv4Addr> = nics_of_network(c, &net.id)?
        .into_iter()
        .map(|n| n.ipv4)
        .collect();
    net.subnet4
        .hosts()
        .find(|a| *a != net.gateway4 && !used.contains(a))
        .ok_or_else(|| {
            StoreError::conflict(
                EntityKind::Network,
                &net.name,
                format!("no free address in {}", net.subnet4),
            )
            .into()
        })
}

fn pick_mac(c: &Connection, net: &Network, vm: &VmId, idx: u32) -> DbResult<MacAddr> {
    let mut stmt = c.prepare_cached("SELECT 1 FROM vm_nics WHERE network_id = ?1 AND mac = ?2")?;
    for attempt in 0..MAC_ATTEMPTS {
        let mac = derive_mac(vm, idx, attempt);
        if !stmt.exists([net.id.to_string(), mac.to_string()])? {
            return Ok(mac);
        }
    }
    Err(StoreError::conflict(
        EntityKind::Network,
        &net.name,
        "could not derive a unique MAC address",
    )
    .into())
}

fn insert_nic(c: &Connection, net: &Network, nic: &VmNic) -> DbResult<()> {
    let sql = format!(
        "INSERT INTO vm_nics ({NIC_COLUMNS}) VALUES (:vm_id, :idx, :network_id, :mac, :ipv4)"
    );
    c.prepare_cached(&sql)?
        .execute(named_params! {
            ":vm_id": nic.vm.to_string(),
            ":idx": nic.idx,
            ":network_id": nic.network.to_string(),
            ":mac": nic.mac.to_string(),
            ":ipv4": nic.ipv4.to_string(),
        })
        .map_err(|e| {
            let e = e.into();
            if is_unique_violation(&e) {
                // Pre-checks make this unreachable; it is the backstop.
                StoreError::conflict(
                    EntityKind::Nic,
                    format!("{}#{}", nic.vm, nic.idx),
                    format!("address or MAC already in use on network {}", net.name),
                )
                .into()
            } else {
                e
            }
        })?;
    Ok(())
}
