//! The upstream accounts the operator disabled, kept across restarts (an account is known by
//! its name in the config; the pool itself lives in memory).

use rusqlite::Connection;

use super::error::StoreError;

/// Record that the operator disabled (`disabled`) or enabled the account `name`.
pub(super) fn set_disabled(
    c: &Connection,
    name: &str,
    disabled: bool,
    at_ms: i64,
) -> Result<(), StoreError> {
    if disabled {
        c.execute(
            "INSERT OR IGNORE INTO upstream_disabled (name, disabled_at) VALUES (?1, ?2)",
            rusqlite::params![name, at_ms],
        )?;
    } else {
        c.execute("DELETE FROM upstream_disabled WHERE name = ?1", [name])?;
    }
    Ok(())
}

/// The names of the accounts the operator disabled, oldest first.
pub fn disabled(c: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare("SELECT name FROM upstream_disabled ORDER BY disabled_at, name")?;
    let names = stmt.query_map([], |r| r.get(0))?;
    Ok(names.collect::<Result<_, _>>()?)
}
