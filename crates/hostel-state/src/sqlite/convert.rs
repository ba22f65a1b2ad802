//! Conversions between domain values and SQLite columns, and the private
//! error type that keeps rusqlite errors inside this module.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::ValueRef;
use rusqlite::{ErrorCode, Row, RowIndex};

use crate::error::StoreError;

/// Internal error: lets `?` work on both rusqlite and store errors; turned
/// into a [`StoreError`] before it crosses the [`Store`](crate::Store) trait.
#[derive(Debug)]
pub(crate) enum DbError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

pub(crate) type DbResult<T> = Result<T, DbError>;

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e)
    }
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError::Store(e)
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> StoreError {
        match e {
            DbError::Store(e) => e,
            DbError::Sql(e) => {
                let busy = matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                );
                if busy {
                    StoreError::Backend(format!("database busy beyond timeout: {e}"))
                } else {
                    StoreError::Backend(e.to_string())
                }
            }
        }
    }
}

/// Whether the error is a UNIQUE/PRIMARY KEY violation. Callers pre-check
/// uniqueness to produce friendly errors; this is the backstop.
pub(crate) fn is_unique_violation(e: &DbError) -> bool {
    match e {
        DbError::Sql(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == ErrorCode::ConstraintViolation
                && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
        }
        _ => false,
    }
}

/// SQLite integers are signed; domain values are validated to fit, so a
/// failure here means a validation gap, reported rather than wrapped around.
pub(crate) fn to_i64(field: &'static str, v: u64) -> DbResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::invalid(field, "value too large to store").into())
}

/// A stored value that fails to parse means the file was edited or corrupted
/// outside the daemon; surface it as a backend error naming the column.
fn corrupt(col: impl fmt::Debug, detail: impl fmt::Display) -> DbError {
    StoreError::Backend(format!("corrupt value in column {col:?}: {detail}")).into()
}

/// Parses a TEXT column in place (no intermediate `String`), since ids and
/// enum words are most of what a row holds. `col` is an index on hot paths
/// (VM rows) and a name elsewhere.
pub(crate) fn text<T, I>(row: &Row<'_>, col: I) -> DbResult<T>
where
    T: FromStr<Err = StoreError>,
    I: RowIndex + Copy + fmt::Debug,
{
    let s = row.get_ref(col)?.as_str().map_err(|e| corrupt(col, e))?;
    s.parse().map_err(|e| corrupt(col, e))
}

pub(crate) fn opt_text<T, I>(row: &Row<'_>, col: I) -> DbResult<Option<T>>
where
    T: FromStr<Err = StoreError>,
    I: RowIndex + Copy + fmt::Debug,
{
    match row.get_ref(col)? {
        ValueRef::Null => Ok(None),
        v => {
            let s = v.as_str().map_err(|e| corrupt(col, e))?;
            s.parse().map(Some).map_err(|e| corrupt(col, e))
        }
    }
}

pub(crate) fn uint<T, I>(row: &Row<'_>, col: I) -> DbResult<T>
where
    T: TryFrom<i64>,
    I: RowIndex + Copy + fmt::Debug,
{
    let v: i64 = row.get(col)?;
    T::try_from(v).map_err(|_| corrupt(col, format!("{v} out of range")))
}

pub(crate) fn opt_uint<T, I>(row: &Row<'_>, col: I) -> DbResult<Option<T>>
where
    T: TryFrom<i64>,
    I: RowIndex + Copy + fmt::Debug,
{
    let v: Option<i64> = row.get(col)?;
    v.map(|v| T::try_from(v).map_err(|_| corrupt(col, format!("{v} out of range"))))
        .transpose()
}
