//! A tenant's intrusion detection settings: one row per tenant that ever set them (no row:
//! the defaults, detection off). A network may only be watched by its own tenant; that is
//! checked inside the caller's transaction, so a network deleted concurrently cannot slip in.

use hostel_types::{IdsMode, IdsOverload};
use rusqlite::{Connection, Row};

use super::rows::{query_first, query_rows};
use super::DbResult;
use crate::error::StoreError;
use crate::ids::{NetworkId, TenantId};
use crate::model::ids::{IdsSettings, MAX_IDS_RULES};

fn from_row(row: &Row<'_>) -> DbResult<IdsSettings> {
    let mode: String = row.get("mode")?;
    let overload: String = row.get("overload")?;
    let networks: String = row.get("networks")?;
    let intra: String = row.get("intra_networks")?;
    let corrupt =
        |col: &str, v: &str| StoreError::Backend(format!("corrupt value in column {col:?}: {v:?}"));
    Ok(IdsSettings {
        mode: IdsMode::parse(&mode).ok_or_else(|| corrupt("mode", &mode))?,
        overload: IdsOverload::parse(&overload).ok_or_else(|| corrupt("overload", &overload))?,
        networks: serde_json::from_str(&networks).map_err(|_| corrupt("networks", &networks))?,
        intra_networks: serde_json::from_str(&intra)
            .map_err(|_| corrupt("intra_networks", &intra))?,
        rules: row.get("rules")?,
    })
}

pub(super) fn get(c: &Connection, tenant: &TenantId) -> DbResult<IdsSettings> {
    let sql = "SELECT mode, overload, networks, intra_networks, rules FROM ids_settings WHERE tenant_id = ?1";
    Ok(query_first(c, sql, [tenant.to_string()], from_row)?.unwrap_or_default())
}

pub(super) fn list(c: &Connection) -> DbResult<Vec<(TenantId, IdsSettings)>> {
    let sql = "SELECT tenant_id, mode, overload, networks, intra_networks, rules FROM ids_settings";
    query_rows(c, sql, [], |row| {
        Ok((super::convert::text(row, "tenant_id")?, from_row(row)?))
    })
}

pub(super) fn set(c: &Connection, tenant: &TenantId, s: &IdsSettings) -> DbResult<IdsSettings> {
    super::tenants::get(c, tenant)?;
    if s.rules.len() > MAX_IDS_RULES {
        return Err(StoreError::invalid(
            "rules",
            format!("{} bytes, at most {MAX_IDS_RULES}", s.rules.len()),
        )
        .into());
    }
    let mut nets: Vec<NetworkId> = Vec::with_capacity(s.networks.len());
    for n in &s.networks {
        let net = super::networks::get(c, n)?;
        if net.tenant != *tenant {
            // Another tenant's network is reported as absent, as everywhere else.
            return Err(StoreError::not_found(crate::error::EntityKind::Network, n).into());
        }
        if !nets.contains(n) {
            nets.push(*n);
        }
    }
    let mut intra: Vec<NetworkId> = Vec::with_capacity(s.intra_networks.len());
    for n in &s.intra_networks {
        // Watched networks are the tenant's (checked above), so this also keeps another
        // tenant's network out.
        if !nets.contains(n) {
            return Err(StoreError::invalid(
                "intra_networks",
                format!("network {n} is not among the watched networks"),
            )
            .into());
        }
        if !intra.contains(n) {
            intra.push(*n);
        }
    }
    let encoded = serde_json::to_string(&nets)
        .map_err(|e| StoreError::Backend(format!("encoding networks: {e}")))?;
    let encoded_intra = serde_json::to_string(&intra)
        .map_err(|e| StoreError::Backend(format!("encoding intra_networks: {e}")))?;
    c.prepare_cached(
        "INSERT INTO ids_settings (tenant_id, mode, overload, networks, rules, intra_networks) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant_id) DO UPDATE SET \
         mode = excluded.mode, overload = excluded.overload, networks = excluded.networks, \
         rules = excluded.rules, intra_networks = excluded.intra_networks",
    )?
    .execute((
        tenant.to_string(),
        s.mode.as_str(),
        s.overload.as_str(),
        encoded,
        s.rules.as_str(),
        encoded_intra,
    ))?;
    Ok(IdsSettings {
        networks: nets,
        intra_networks: intra,
        ..s.clone()
    })
}

#[cfg(test)]
mod tests {
    use crate::{
        Actor, IdsSettings, NetworkName, NewAuditEntry, NewNetwork, Quota, SqliteStore, Store,
        StoreError, TenantName,
    };
    use hostel_types::IdsMode;

    #[test]
    fn settings_round_trip_audited_and_only_for_the_tenants_networks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let sys = |a: &str| NewAuditEntry::ok(Actor::System, None, a, "t");
        let quota = Quota {
            max_vcpus: 1,
            max_memory_mib: 128,
            max_disk_gib: 1,
            max_vms: 1,
            max_networks: 2,
            max_uplinks: 0,
            max_public_addresses: 0,
        };
        let mk = |n: &str| {
            let t = store
                .create_tenant(&TenantName::new(n).unwrap(), quota, &sys("tenant.create"))
                .unwrap()
                .id;
            let net = NewNetwork::ipv4(
                NetworkName::new("lan").unwrap(),
                "10.0.0.0/24".parse().unwrap(),
            );
            let id = store
                .create_network(&t, &net, &sys("network.create"))
                .unwrap()
                .id;
            (t, id)
        };
        let (a, net_a) = mk("acme");
        let (_b, net_b) = mk("other");
        assert_eq!(store.get_ids(&a).unwrap(), IdsSettings::default());
        let want = IdsSettings {
            mode: IdsMode::Prevent,
            networks: vec![net_a, net_a],
            rules: "alert ip any any -> any any (sid:1;)".into(),
            ..IdsSettings::default()
        };
        let got = store.set_ids(&a, &want, &sys("ids.set")).unwrap();
        assert_eq!(got.networks, vec![net_a], "duplicates folded");
        assert_eq!(store.get_ids(&a).unwrap(), got);
        assert_eq!(store.list_ids().unwrap(), vec![(a, got.clone())]);
        // Another tenant's network: not found, nothing changed, no audit entry.
        let before = store
            .list_audit(&crate::AuditQuery::newest(1000))
            .unwrap()
            .len();
        let theirs = IdsSettings {
            networks: vec![net_b],
            ..want.clone()
        };
        let err = store.set_ids(&a, &theirs, &sys("ids.set")).unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert_eq!(store.get_ids(&a).unwrap(), got);
        assert_eq!(
            store
                .list_audit(&crate::AuditQuery::newest(1000))
                .unwrap()
                .len(),
            before
        );
        let big = IdsSettings {
            rules: "x".repeat(crate::MAX_IDS_RULES + 1),
            ..IdsSettings::default()
        };
        assert!(matches!(
            store.set_ids(&a, &big, &sys("ids.set")).unwrap_err(),
            StoreError::Invalid { field: "rules", .. }
        ));
        // VM-to-VM inspection: only of watched networks, duplicates folded, stored.
        let intra = IdsSettings {
            intra_networks: vec![net_a, net_a],
            ..got.clone()
        };
        let stored = store.set_ids(&a, &intra, &sys("ids.set")).unwrap();
        assert_eq!(stored.intra_networks, vec![net_a]);
        assert_eq!(store.get_ids(&a).unwrap(), stored);
        let unwatched = IdsSettings {
            networks: Vec::new(),
            ..intra
        };
        assert!(matches!(
            store.set_ids(&a, &unwatched, &sys("ids.set")).unwrap_err(),
            StoreError::Invalid {
                field: "intra_networks",
                ..
            }
        ));
        assert_eq!(
            store.get_ids(&a).unwrap(),
            stored,
            "a refusal changes nothing"
        );
    }
}
