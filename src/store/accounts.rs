//! The upstream accounts the operator disabled, kept across restarts (an account is known by
//! its name in the config; the pool itself lives in memory).

use rusqlite::Connection;

use super::error::StoreError;

/// Record that the operator disabled (`disabled`) or enabled the account `name`, whose
/// DeepSeek key has the fingerprint `key_sha256` (migration 15).
pub(super) fn set_disabled(
    c: &Connection,
    name: &str,
    key_sha256: &str,
    disabled: bool,
    at_ms: i64,
) -> Result<(), StoreError> {
    if disabled {
        c.execute(
            "INSERT INTO upstream_disabled (name, disabled_at, key_sha256) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET key_sha256 = excluded.key_sha256",
            rusqlite::params![name, at_ms, key_sha256],
        )?;
    } else {
        c.execute("DELETE FROM upstream_disabled WHERE name = ?1", [name])?;
    }
    Ok(())
}

/// An account the operator disabled: its name, and the fingerprint of the key it had then
/// (none for a flag recorded before migration 15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    /// The account's name in the config.
    pub name: String,
    /// SHA-256 of its DeepSeek key then, hex.
    pub key_sha256: Option<String>,
}

/// The accounts the operator disabled, oldest first.
pub fn disabled(c: &Connection) -> Result<Vec<Disabled>, StoreError> {
    let mut stmt =
        c.prepare("SELECT name, key_sha256 FROM upstream_disabled ORDER BY disabled_at, name")?;
    let rows = stmt.query_map([], |r| {
        Ok(Disabled {
            name: r.get(0)?,
            key_sha256: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
