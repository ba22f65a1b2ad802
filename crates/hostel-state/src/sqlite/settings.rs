//! Host-wide key/value settings.

use rusqlite::{Connection, OptionalExtension};

use super::convert::text;
use super::rows::query_rows;
use super::DbResult;
use crate::error::StoreError;
use crate::ids::SettingKey;

/// Settings are small knobs (ratios, flags), not blobs; the cap keeps a
/// buggy client from bloating every backup.
pub const MAX_SETTING_VALUE_LEN: usize = 64 * 1024;

pub(super) fn get(c: &Connection, key: &SettingKey) -> DbResult<Option<String>> {
    c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key.as_str()], |r| r.get(0))
        .optional()
        .map_err(Into::into)
}

pub(super) fn set(c: &Connection, key: &SettingKey, value: &str) -> DbResult<()> {
    if value.len() > MAX_SETTING_VALUE_LEN {
        return Err(StoreError::invalid(
            "setting value",
            format!("longer than {MAX_SETTING_VALUE_LEN} bytes"),
        )
        .into());
    }
    c.prepare_cached(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key.as_str(), value])?;
    Ok(())
}

pub(super) fn delete(c: &Connection, key: &SettingKey) -> DbResult<bool> {
    let n = c
        .prepare_cached("DELETE FROM settings WHERE key = ?1")?
        .execute([key.as_str()])?;
    Ok(n > 0)
}

pub(super) fn list(c: &Connection) -> DbResult<Vec<(SettingKey, String)>> {
    query_rows(
        c,
        "SELECT key, value FROM settings ORDER BY key",
        [],
        |row| Ok((text(row, "key")?, row.get("value")?)),
    )
}
