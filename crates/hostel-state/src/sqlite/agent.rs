//! A tenant's guest agent settings: one row per tenant the operator ever set them for
//! (no row: [`AgentSettings::default`], everything allowed).

use rusqlite::{Connection, Row};

use super::rows::query_first;
use super::DbResult;
use crate::error::StoreError;
use crate::ids::TenantId;
use crate::model::agent::{AgentSettings, MAX_FILE_BYTES_LIMIT};

fn from_row(row: &Row<'_>) -> DbResult<AgentSettings> {
    let max: i64 = row.get("max_file_bytes")?;
    Ok(AgentSettings {
        exec: row.get::<_, i64>("exec")? != 0,
        files: row.get::<_, i64>("files")? != 0,
        max_file_bytes: u64::try_from(max).map_err(|_| {
            StoreError::Backend(format!("corrupt value in column \"max_file_bytes\": {max}"))
        })?,
    })
}

pub(super) fn get(c: &Connection, tenant: &TenantId) -> DbResult<AgentSettings> {
    let sql = "SELECT exec, files, max_file_bytes FROM tenant_agent WHERE tenant_id = ?1";
    Ok(query_first(c, sql, [tenant.to_string()], from_row)?.unwrap_or_default())
}

pub(super) fn set(c: &Connection, tenant: &TenantId, s: &AgentSettings) -> DbResult<AgentSettings> {
    super::tenants::get(c, tenant)?;
    if !(1..=MAX_FILE_BYTES_LIMIT).contains(&s.max_file_bytes) {
        return Err(StoreError::invalid(
            "max_file_bytes",
            format!(
                "{} is outside 1 to {MAX_FILE_BYTES_LIMIT}",
                s.max_file_bytes
            ),
        )
        .into());
    }
    c.prepare_cached(
        "INSERT INTO tenant_agent (tenant_id, exec, files, max_file_bytes) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant_id) DO UPDATE SET \
         exec = excluded.exec, files = excluded.files, max_file_bytes = excluded.max_file_bytes",
    )?
    .execute((
        tenant.to_string(),
        i64::from(s.exec),
        i64::from(s.files),
        // In range: checked against MAX_FILE_BYTES_LIMIT above.
        s.max_file_bytes as i64,
    ))?;
    Ok(*s)
}

#[cfg(test)]
mod tests {
    use crate::{
        Actor, AgentSettings, AuditQuery, NewAuditEntry, Quota, SqliteStore, Store, StoreError,
        TenantName,
    };

    #[test]
    fn settings_default_on_round_trip_audited_and_refuse_a_bad_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let sys = |a: &str| NewAuditEntry::ok(Actor::System, None, a, "t");
        let quota = Quota {
            max_vcpus: 1,
            max_memory_mib: 128,
            max_disk_gib: 1,
            max_vms: 1,
            max_networks: 0,
            max_uplinks: 0,
            max_public_addresses: 0,
        };
        let t = store
            .create_tenant(
                &TenantName::new("acme").unwrap(),
                quota,
                &sys("tenant.create"),
            )
            .unwrap()
            .id;
        assert_eq!(store.get_agent(&t).unwrap(), AgentSettings::default());
        let off = AgentSettings {
            exec: false,
            files: true,
            max_file_bytes: 4096,
        };
        assert_eq!(
            store.set_agent(&t, &off, &sys("tenant.agent")).unwrap(),
            off
        );
        assert_eq!(store.get_agent(&t).unwrap(), off);
        let audited = store.list_audit(&AuditQuery::newest(10)).unwrap();
        assert_eq!(audited[0].action, "tenant.agent");
        for bad in [0, crate::MAX_FILE_BYTES_LIMIT + 1] {
            let e = store
                .set_agent(
                    &t,
                    &AgentSettings {
                        max_file_bytes: bad,
                        ..off
                    },
                    &sys("tenant.agent"),
                )
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    StoreError::Invalid {
                        field: "max_file_bytes",
                        ..
                    }
                ),
                "{e:?}"
            );
        }
        assert_eq!(
            store.get_agent(&t).unwrap(),
            off,
            "a refusal changes nothing"
        );
    }
}
