//! The edge's tables: the external network's set-up (one JSON row), the public addresses
//! tenants hold, the networks attached to the external network, and each tenant's
//! firewall document. Every check runs inside the caller's transaction, so two concurrent
//! allocations cannot take one address or overrun a quota.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::convert::{is_unique_violation, opt_uint, text, uint};
use super::rows::{query_first, query_rows};
use super::{networks, tenants, DbResult};
use crate::error::{EntityKind, StoreError};
use crate::ids::{NetworkId, TenantId, VmId};
use crate::model::edge::{AddressKind, ExternalSetup, FirewallDoc, NetworkEdge, PublicAddress};
use crate::model::network::Network;
use crate::model::tenant::Usage;
use crate::time::Timestamp;
use hostel_types::Ipv4Cidr;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt {what}: {e}"))
}

fn no_external() -> StoreError {
    StoreError::conflict(
        EntityKind::External,
        "external",
        "the operator has not set up the external network (`hostel external set`)",
    )
}

pub(super) fn get_external(c: &Connection) -> DbResult<Option<ExternalSetup>> {
    let s: Option<String> = c
        .prepare_cached("SELECT setup FROM external_network WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| corrupt("external set-up", e).into()))
        .transpose()
}

/// Replaces the set-up. Every address a tenant holds must stay inside the new pools
/// (`Conflict` naming the first that would not).
pub(super) fn set_external(c: &Connection, setup: &ExternalSetup) -> DbResult<ExternalSetup> {
    for a in list_addresses(c, None)? {
        if !setup.in_pools(a.address) {
            return Err(StoreError::conflict(
                EntityKind::Address,
                a.address,
                "is held by a tenant and would be outside the new pools; release it first",
            )
            .into());
        }
    }
    let json = serde_json::to_string(setup).map_err(|e| corrupt("external set-up", e))?;
    c.prepare_cached(
        "INSERT INTO external_network (id, setup) VALUES (1, ?1) \
         ON CONFLICT(id) DO UPDATE SET setup = excluded.setup",
    )?
    .execute([json])?;
    Ok(setup.clone())
}

const ADDRESS_COLUMNS: &str = "address, tenant_id, kind, vm_id, nic_idx, created_at";

fn address_from_row(row: &Row<'_>) -> DbResult<PublicAddress> {
    let s: String = row.get("address")?;
    let address = s.parse().map_err(|e| corrupt("address", e))?;
    let vm: Option<String> = row.get("vm_id")?;
    let idx: Option<u32> = opt_uint(row, "nic_idx")?;
    let attached = match (vm, idx) {
        (Some(v), Some(i)) => Some((v.parse::<VmId>()?, i)),
        _ => None,
    };
    Ok(PublicAddress {
        address,
        tenant: text(row, "tenant_id")?,
        kind: text(row, "kind")?,
        attached,
        created_at: Timestamp::from_unix_millis(row.get("created_at")?),
    })
}

/// With `Some(tenant)` that tenant's addresses, else all; ordered by address.
pub(super) fn list_addresses(
    c: &Connection,
    tenant: Option<&TenantId>,
) -> DbResult<Vec<PublicAddress>> {
    let mut out = match tenant {
        Some(t) => {
            let sql =
                format!("SELECT {ADDRESS_COLUMNS} FROM public_addresses WHERE tenant_id = ?1");
            query_rows(c, &sql, [t.to_string()], address_from_row)?
        }
        None => {
            let sql = format!("SELECT {ADDRESS_COLUMNS} FROM public_addresses");
            query_rows(c, &sql, [], address_from_row)?
        }
    };
    out.sort_by_key(|a| a.address);
    Ok(out)
}

/// One of `tenant`'s floating addresses; another tenant's, an edge's own or an unknown
/// one is `NotFound`, alike.
fn own_floating(c: &Connection, tenant: &TenantId, a: Ipv4Addr) -> DbResult<PublicAddress> {
    let sql = format!("SELECT {ADDRESS_COLUMNS} FROM public_addresses WHERE address = ?1");
    query_first(c, &sql, [a.to_string()], address_from_row)?
        .filter(|p| p.tenant == *tenant && p.kind == AddressKind::Floating)
        .ok_or_else(|| StoreError::not_found(EntityKind::Address, a).into())
}

fn insert_address(c: &Connection, p: &PublicAddress) -> DbResult<()> {
    c.prepare_cached(
        "INSERT INTO public_addresses (address, tenant_id, kind, created_at) \
         VALUES (:address, :tenant, :kind, :at)",
    )?
    .execute(named_params! {
        ":address": p.address.to_string(),
        ":tenant": p.tenant.to_string(),
        ":kind": p.kind.as_str(),
        ":at": p.created_at.unix_millis(),
    })
    .map_err(|e| {
        let e = e.into();
        if is_unique_violation(&e) {
            StoreError::conflict(EntityKind::Address, p.address, "already held").into()
        } else {
            e
        }
    })?;
    Ok(())
}

/// `requested` if it is a free pool address, else the lowest free one.
fn pick_address(
    c: &Connection,
    setup: &ExternalSetup,
    requested: Option<Ipv4Addr>,
) -> DbResult<Ipv4Addr> {
    let held: HashSet<Ipv4Addr> = list_addresses(c, None)?
        .into_iter()
        .map(|a| a.address)
        .collect();
    match requested {
        Some(a) => {
            if !setup.in_pools(a) {
                return Err(StoreError::invalid(
                    "address",
                    format!("{a} is not in the external network's public address pools"),
                )
                .into());
            }
            if held.contains(&a) {
                return Err(StoreError::conflict(EntityKind::Address, a, "already held").into());
            }
            Ok(a)
        }
        None => setup
            .pool_addresses()
            .find(|a| !held.contains(a))
            .ok_or_else(|| {
                StoreError::conflict(
                    EntityKind::External,
                    "external",
                    "no free address left in the public address pools",
                )
                .into()
            }),
    }
}

/// A floating address for `tenant`, within its quota.
pub(super) fn allocate(
    c: &Connection,
    tenant: &TenantId,
    requested: Option<Ipv4Addr>,
) -> DbResult<PublicAddress> {
    let quota = tenants::quota(c, tenant)?;
    let setup = get_external(c)?.ok_or_else(no_external)?;
    let mut usage = Usage::default();
    add_usage(c, tenant, &mut usage)?;
    crate::quota::check_public_address(&quota, &usage)?;
    // The switch refuses an edge with more (whatever the operator's quota says).
    let most = hostel_switch_proto::external::MAX_PUBLIC_PER_EDGE as u64;
    if usage.public_addresses >= most {
        return Err(StoreError::conflict(
            EntityKind::Address,
            "public",
            format!("a tenant holds at most {most} floating addresses"),
        )
        .into());
    }
    let address = pick_address(c, &setup, requested)?;
    let p = PublicAddress {
        address,
        tenant: *tenant,
        kind: AddressKind::Floating,
        attached: None,
        created_at: Timestamp::now(),
    };
    insert_address(c, &p)?;
    Ok(p)
}

/// Attaches one of `tenant`'s floating addresses to a NIC of one of its VMs (the caller
/// checked the VM is the tenant's). The NIC's network must be on the external network.
pub(super) fn attach(
    c: &Connection,
    tenant: &TenantId,
    a: Ipv4Addr,
    vm: &VmId,
    idx: u32,
) -> DbResult<PublicAddress> {
    let mut p = own_floating(c, tenant, a)?;
    if let Some((v, i)) = p.attached {
        return Err(StoreError::conflict(
            EntityKind::Address,
            a,
            format!("already attached (to NIC {i} of VM {v}); detach it first"),
        )
        .into());
    }
    let nic = networks::nics_of_vm(c, vm)?
        .into_iter()
        .find(|n| n.idx == idx)
        .ok_or_else(|| StoreError::not_found(EntityKind::Nic, format!("{vm}#{idx}")))?;
    if get_edge(c, &nic.network)?.is_none() {
        let net = networks::get(c, &nic.network)?;
        return Err(StoreError::conflict(
            EntityKind::Network,
            &net.name,
            "is not attached to the external network (`hostel network attach`)",
        )
        .into());
    }
    let other = query_first(
        c,
        &format!(
            "SELECT {ADDRESS_COLUMNS} FROM public_addresses WHERE vm_id = ?1 AND nic_idx = ?2"
        ),
        (vm.to_string(), idx),
        address_from_row,
    )?;
    if let Some(o) = other {
        return Err(StoreError::conflict(
            EntityKind::Nic,
            format!("{vm}#{idx}"),
            format!("already has the floating address {}", o.address),
        )
        .into());
    }
    c.prepare_cached("UPDATE public_addresses SET vm_id = ?2, nic_idx = ?3 WHERE address = ?1")?
        .execute((a.to_string(), vm.to_string(), idx))?;
    p.attached = Some((*vm, idx));
    Ok(p)
}

pub(super) fn detach(c: &Connection, tenant: &TenantId, a: Ipv4Addr) -> DbResult<PublicAddress> {
    let mut p = own_floating(c, tenant, a)?;
    c.prepare_cached(
        "UPDATE public_addresses SET vm_id = NULL, nic_idx = NULL WHERE address = ?1",
    )?
    .execute([a.to_string()])?;
    p.attached = None;
    Ok(p)
}

/// Gives a floating address back to the pool (detaching it first if need be).
pub(super) fn release(c: &Connection, tenant: &TenantId, a: Ipv4Addr) -> DbResult<PublicAddress> {
    let p = own_floating(c, tenant, a)?;
    c.prepare_cached("DELETE FROM public_addresses WHERE address = ?1")?
        .execute([a.to_string()])?;
    Ok(p)
}

/// Adds the tenant's floating addresses to `usage`.
pub(super) fn add_usage(c: &Connection, tenant: &TenantId, usage: &mut Usage) -> DbResult<()> {
    let n: i64 = c
        .prepare_cached(
            "SELECT COUNT(*) FROM public_addresses WHERE tenant_id = ?1 AND kind = 'floating'",
        )?
        .query_row([tenant.to_string()], |r| r.get(0))?;
    usage.public_addresses = n.max(0) as u64;
    Ok(())
}

fn edge_from_row(row: &Row<'_>) -> DbResult<NetworkEdge> {
    Ok(NetworkEdge {
        network: text(row, "network_id")?,
        tenant: text(row, "tenant_id")?,
        snat: uint::<u8, _>(row, "snat")? != 0,
        routed: uint::<u8, _>(row, "routed")? != 0,
    })
}

const EDGE_SQL: &str =
    "SELECT e.network_id, n.tenant_id, e.snat, e.routed FROM network_edges e JOIN networks n ON n.id = e.network_id";

fn get_edge(c: &Connection, network: &NetworkId) -> DbResult<Option<NetworkEdge>> {
    let sql = format!("{EDGE_SQL} WHERE e.network_id = ?1");
    query_first(c, &sql, [network.to_string()], edge_from_row)
}

/// Every attached network, ordered by tenant then network id.
pub(super) fn list_edges(c: &Connection) -> DbResult<Vec<NetworkEdge>> {
    let sql = format!("{EDGE_SQL} ORDER BY n.tenant_id, e.network_id");
    query_rows(c, &sql, [], edge_from_row)
}

/// Attaches a network (or changes its `snat`). The tenant's edge gets its own address
/// from the pools with its first network.
pub(super) fn attach_network(
    c: &Connection,
    network: &NetworkId,
    snat: bool,
    routed: bool,
) -> DbResult<NetworkEdge> {
    let net = networks::get(c, network)?;
    let setup = get_external(c)?.ok_or_else(no_external)?;
    if routed {
        check_routed(c, &setup, &net)?;
    }
    if net.uplink != crate::model::network::Uplink::None {
        return Err(StoreError::conflict(
            EntityKind::Network,
            &net.name,
            "has an uplink TAP; a network reaches outside through one or the other",
        )
        .into());
    }
    let has_outside = list_addresses(c, Some(&net.tenant))?
        .iter()
        .any(|a| a.kind == AddressKind::Outside);
    if !has_outside {
        let address = pick_address(c, &setup, None)?;
        insert_address(
            c,
            &PublicAddress {
                address,
                tenant: net.tenant,
                kind: AddressKind::Outside,
                attached: None,
                created_at: Timestamp::now(),
            },
        )?;
    }
    c.prepare_cached(
        "INSERT INTO network_edges (network_id, snat, routed) VALUES (?1, ?2, ?3) \
         ON CONFLICT(network_id) DO UPDATE SET snat = excluded.snat, routed = excluded.routed",
    )?
    .execute((network.to_string(), i64::from(snat), i64::from(routed)))?;
    Ok(NetworkEdge {
        network: *network,
        tenant: net.tenant,
        snat,
        routed,
    })
}

fn overlaps4(a: &Ipv4Cidr, b: &Ipv4Cidr) -> bool {
    a.contains(b.addr) || b.contains(a.addr)
}

/// A routed network's subnet must lie inside one of the operator's routed pools and
/// overlap no other routed network (of any tenant): the upstream routes it to one edge.
fn check_routed(c: &Connection, setup: &ExternalSetup, net: &Network) -> DbResult<()> {
    let mine: Ipv4Cidr = net.subnet4.into();
    let inside = setup
        .routed_pools4
        .iter()
        .any(|p| p.prefix <= mine.prefix && p.contains(mine.addr));
    if !inside {
        return Err(StoreError::invalid(
            "routed",
            format!(
                "subnet {} is not inside the external network's routed pools",
                net.subnet4
            ),
        )
        .into());
    }
    for e in list_edges(c)?
        .into_iter()
        .filter(|e| e.routed && e.network != net.id)
    {
        let other = networks::get(c, &e.network)?;
        let theirs: Ipv4Cidr = other.subnet4.into();
        if overlaps4(&mine, &theirs) {
            return Err(StoreError::conflict(
                EntityKind::Network,
                &net.name,
                format!(
                    "subnet {} is already routed to another network",
                    net.subnet4
                ),
            )
            .into());
        }
        if let (Some(a), Some(b)) = (net.subnet6, other.subnet6) {
            if a == b {
                return Err(StoreError::conflict(
                    EntityKind::Network,
                    &net.name,
                    format!("prefix {a} is already routed to another network"),
                )
                .into());
            }
        }
    }
    Ok(())
}

/// Detaches a network. Floating addresses attached to its NICs are detached; the
/// tenant's edge address goes back to the pools with its last network.
pub(super) fn detach_network(c: &Connection, network: &NetworkId) -> DbResult<()> {
    let net = networks::get(c, network)?;
    let n = c
        .prepare_cached("DELETE FROM network_edges WHERE network_id = ?1")?
        .execute([network.to_string()])?;
    if n == 0 {
        return Err(StoreError::conflict(
            EntityKind::Network,
            &net.name,
            "is not attached to the external network",
        )
        .into());
    }
    c.prepare_cached(
        "UPDATE public_addresses SET vm_id = NULL, nic_idx = NULL WHERE EXISTS \
         (SELECT 1 FROM vm_nics n WHERE n.vm_id = public_addresses.vm_id \
          AND n.idx = public_addresses.nic_idx AND n.network_id = ?1)",
    )?
    .execute([network.to_string()])?;
    release_idle_outside(c, &net.tenant)
}

/// Gives the tenant's edge address back to the pools once no network of the tenant is
/// attached (after a detach, or when a deleted network's attachment went with it).
pub(super) fn release_idle_outside(c: &Connection, tenant: &TenantId) -> DbResult<()> {
    let still: bool = c
        .prepare_cached(
            "SELECT 1 FROM network_edges e JOIN networks n ON n.id = e.network_id \
             WHERE n.tenant_id = ?1",
        )?
        .exists([tenant.to_string()])?;
    if !still {
        c.prepare_cached("DELETE FROM public_addresses WHERE tenant_id = ?1 AND kind = 'outside'")?
            .execute([tenant.to_string()])?;
    }
    Ok(())
}

pub(super) fn get_firewall(c: &Connection, tenant: &TenantId) -> DbResult<FirewallDoc> {
    let s: Option<String> = c
        .prepare_cached("SELECT doc FROM firewalls WHERE tenant_id = ?1")?
        .query_row([tenant.to_string()], |r| r.get(0))
        .optional()?;
    match s {
        None => Ok(FirewallDoc::default()),
        Some(s) => serde_json::from_str(&s).map_err(|e| corrupt("firewall", e).into()),
    }
}

/// Every tenant's firewall that has been written.
pub(super) fn list_firewalls(c: &Connection) -> DbResult<Vec<(TenantId, FirewallDoc)>> {
    query_rows(c, "SELECT tenant_id, doc FROM firewalls", [], |row| {
        let s: String = row.get("doc")?;
        let doc = serde_json::from_str(&s).map_err(|e| corrupt("firewall", e))?;
        Ok((text(row, "tenant_id")?, doc))
    })
}

/// Replaces the tenant's firewall if its revision is still `doc.revision`; the stored
/// one gets the next revision.
pub(super) fn put_firewall(
    c: &Connection,
    tenant: &TenantId,
    doc: &FirewallDoc,
) -> DbResult<FirewallDoc> {
    tenants::ensure_exists(c, tenant)?;
    let current = get_firewall(c, tenant)?;
    if current.revision != doc.revision {
        return Err(StoreError::conflict(
            EntityKind::Firewall,
            tenant,
            "changed by another call meanwhile; try again",
        )
        .into());
    }
    let mut next = doc.clone();
    next.revision += 1;
    let json = serde_json::to_string(&next).map_err(|e| corrupt("firewall", e))?;
    c.prepare_cached(
        "INSERT INTO firewalls (tenant_id, doc) VALUES (?1, ?2) \
         ON CONFLICT(tenant_id) DO UPDATE SET doc = excluded.doc",
    )?
    .execute((tenant.to_string(), json))?;
    Ok(next)
}
