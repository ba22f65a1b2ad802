//! Reading result rows: the one prepare / query / step / convert loop every
//! table module needs, so each module only says which SQL and which row
//! conversion.

use rusqlite::{Connection, Params, Row};

use super::DbResult;

/// Runs `sql` with `params` and converts every row with `from_row`, in the
/// order SQLite returns them.
///
/// Not `Statement::query_map`: its closure must return `rusqlite::Result`,
/// while row conversions here report corrupt columns as store errors naming
/// the column ([`DbError`](super::convert::DbError)). The statement comes
/// from the connection's cache because every call site passes fixed SQL.
pub(super) fn query_rows<T, P: Params>(
    c: &Connection,
    sql: &str,
    params: P,
    mut from_row: impl FnMut(&Row<'_>) -> DbResult<T>,
) -> DbResult<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

/// Like [`query_rows`] but stops after the first row: for lookups by a
/// unique key, where stepping on would only confirm there is no second row.
pub(super) fn query_first<T, P: Params>(
    c: &Connection,
    sql: &str,
    params: P,
    from_row: impl FnOnce(&Row<'_>) -> DbResult<T>,
) -> DbResult<Option<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(from_row).transpose()
}
