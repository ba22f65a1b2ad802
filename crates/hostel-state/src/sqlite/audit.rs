//! Audit log rows: append-only, read newest first.

use rusqlite::{named_params, Connection, Row};

use super::convert::{opt_text, text, uint};
use super::rows::query_rows;
use super::DbResult;
use crate::model::audit::{AuditEntry, AuditQuery, AuditResult, NewAuditEntry};
use crate::time::Timestamp;

const COLUMNS: &str = "seq, at, actor, tenant_id, action, target, error";

fn from_row(row: &Row<'_>) -> DbResult<AuditEntry> {
    let error: Option<String> = row.get("error")?;
    Ok(AuditEntry {
        seq: uint(row, "seq")?,
        at: Timestamp::from_unix_millis(row.get("at")?),
        actor: text(row, "actor")?,
        tenant: opt_text(row, "tenant_id")?,
        action: row.get("action")?,
        target: row.get("target")?,
        result: error.map_or(AuditResult::Ok, AuditResult::Error),
    })
}

pub(super) fn append(c: &Connection, entry: &NewAuditEntry) -> DbResult<AuditEntry> {
    let e = entry.normalized()?;
    let at = Timestamp::now();
    let error = match &e.result {
        AuditResult::Ok => None,
        AuditResult::Error(text) => Some(text.as_str()),
    };
    let sql = format!(
        "INSERT INTO audit_log ({COLUMNS}) \
         VALUES (NULL, :at, :actor, :tenant_id, :action, :target, :error)"
    );
    c.prepare_cached(&sql)?.execute(named_params! {
        ":at": at.unix_millis(),
        ":actor": e.actor.to_string(),
        ":tenant_id": e.tenant.map(|t| t.to_string()),
        ":action": e.action,
        ":target": e.target,
        ":error": error,
    })?;
    let seq = u64::try_from(c.last_insert_rowid()).unwrap_or_default();
    Ok(AuditEntry {
        seq,
        at,
        actor: e.actor,
        tenant: e.tenant,
        action: e.action,
        target: e.target,
        result: e.result,
    })
}

pub(super) fn list(c: &Connection, q: &AuditQuery) -> DbResult<Vec<AuditEntry>> {
    let limit = i64::from(q.limit.min(AuditQuery::MAX_LIMIT));
    // i64::MAX as the "no cursor" bound keeps this one cached statement and
    // lets SQLite walk the primary key (or the tenant index) backwards.
    let before = q
        .before_seq
        .map_or(i64::MAX, |s| i64::try_from(s).unwrap_or(i64::MAX));
    let sql = match q.tenant {
        Some(_) => format!(
            "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = :tenant AND seq < :before \
             ORDER BY seq DESC LIMIT :limit"
        ),
        None => format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq < :before ORDER BY seq DESC LIMIT :limit"
        ),
    };
    let tenant = q.tenant.map(|t| t.to_string());
    match &tenant {
        Some(t) => query_rows(
            c,
            &sql,
            named_params! {":tenant": t, ":before": before, ":limit": limit},
            from_row,
        ),
        None => query_rows(
            c,
            &sql,
            named_params! {":before": before, ":limit": limit},
            from_row,
        ),
    }
}
