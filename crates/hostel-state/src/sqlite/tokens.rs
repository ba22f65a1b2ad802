//! API token rows (hashes only; see [`crate::model::token`]).

use rusqlite::{named_params, Connection, Row};

use super::convert::{is_unique_violation, opt_text, text};
use super::rows::{query_first, query_rows};
use super::{tenants, DbResult};
use crate::error::{EntityKind, StoreError};
use crate::ids::{TenantId, TokenId};
use crate::model::token::{validate_token_name, ApiToken, TokenHash};
use crate::time::Timestamp;

const COLUMNS: &str = "id, tenant_id, name, hash, created_at";

fn from_row(row: &Row<'_>) -> DbResult<ApiToken> {
    let hash: String = row.get("hash")?;
    Ok(ApiToken {
        id: text(row, "id")?,
        tenant: opt_text(row, "tenant_id")?,
        name: row.get("name")?,
        hash: TokenHash::from_hex(hash)
            .map_err(|e| StoreError::Backend(format!("corrupt token hash: {e}")))?,
        created_at: Timestamp::from_unix_millis(row.get("created_at")?),
    })
}

pub(super) fn insert(
    c: &Connection,
    tenant: Option<&TenantId>,
    name: &str,
    hash: &TokenHash,
) -> DbResult<ApiToken> {
    validate_token_name(name)?;
    if let Some(t) = tenant {
        tenants::get(c, t)?;
    }
    let token = ApiToken {
        id: TokenId::new_random(),
        tenant: tenant.copied(),
        name: name.to_owned(),
        hash: hash.clone(),
        created_at: Timestamp::now(),
    };
    let sql = format!(
        "INSERT INTO api_tokens ({COLUMNS}) VALUES (:id, :tenant_id, :name, :hash, :created_at)"
    );
    c.prepare_cached(&sql)?
        .execute(named_params! {
            ":id": token.id.to_string(),
            ":tenant_id": tenant.map(ToString::to_string),
            ":name": name,
            ":hash": hash.as_str(),
            ":created_at": token.created_at.unix_millis(),
        })
        .map_err(|e| {
            let e = e.into();
            if is_unique_violation(&e) {
                // Only possible with a caller-supplied hash; never echo it.
                StoreError::conflict(EntityKind::Token, name, "a token with this hash exists")
                    .into()
            } else {
                e
            }
        })?;
    Ok(token)
}

pub(super) fn find_by_hash(c: &Connection, hash: &TokenHash) -> DbResult<Option<ApiToken>> {
    let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE hash = ?1");
    query_first(c, &sql, [hash.as_str()], from_row)
}

pub(super) fn list(c: &Connection, tenant: Option<&TenantId>) -> DbResult<Vec<ApiToken>> {
    let sql = match tenant {
        Some(_) => {
            format!("SELECT {COLUMNS} FROM api_tokens WHERE tenant_id = ?1 ORDER BY created_at, id")
        }
        None => format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"),
    };
    match tenant {
        Some(t) => query_rows(c, &sql, [t.to_string()], from_row),
        None => query_rows(c, &sql, [], from_row),
    }
}

pub(super) fn get(c: &Connection, id: &TokenId) -> DbResult<ApiToken> {
    let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1");
    query_first(c, &sql, [id.to_string()], from_row)?
        .ok_or_else(|| StoreError::not_found(EntityKind::Token, id).into())
}

pub(super) fn delete(c: &Connection, id: &TokenId) -> DbResult<ApiToken> {
    let token = get(c, id)?;
    c.prepare_cached("DELETE FROM api_tokens WHERE id = ?1")?
        .execute([id.to_string()])?;
    Ok(token)
}
