//! SQL for the `keys` and `topups` tables. Every change of a key's budget is also recorded in
//! its history ([`super::budget`]); a new key gets its mail row ([`super::mail`]).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::error::StoreError;
use crate::keys::{KeyRecord, KeyStatus};
use crate::kinds::BudgetKind;
use crate::money::Usd;

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Every key, for the in-memory table at start-up.
pub fn load_all(c: &mut Connection) -> Result<Vec<KeyRecord>, StoreError> {
    load(c, "ORDER BY created_at, id", [])
}

/// One key by id.
pub fn load_one(c: &Connection, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
    Ok(load(c, "WHERE id = ?1", [key_id])?.pop())
}

fn load<P: rusqlite::Params>(
    c: &Connection,
    tail: &str,
    params: P,
) -> Result<Vec<KeyRecord>, StoreError> {
    let mut stmt = c.prepare(&format!(
        "SELECT id, hash, sealed, prefix, plan, status, budget_nanos, spent_nanos, requests,
                email, note, order_id, created_at, last_used_at
         FROM keys {tail}"
    ))?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, Option<String>>(9)?,
            r.get::<_, Option<String>>(10)?,
            r.get::<_, Option<String>>(11)?,
            r.get::<_, i64>(12)?,
            r.get::<_, Option<i64>>(13)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            id,
            hash,
            sealed,
            prefix,
            plan,
            status,
            budget,
            spent,
            requests,
            email,
            note,
            order_id,
            created,
            last,
        ) = row?;
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("key {id}: hash is not 32 bytes")))?;
        let status = KeyStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("key {id}: status {status:?}")))?;
        out.push(KeyRecord {
            id,
            hash,
            sealed,
            prefix,
            plan,
            status,
            budget: Usd::from_nanos(budget),
            spent: Usd::from_nanos(spent),
            requests: u64::try_from(requests).unwrap_or(0),
            email,
            note,
            order_id,
            created_at: ms_to_time(created),
            last_used_at: last.map(ms_to_time),
        });
    }
    Ok(out)
}

/// Insert a newly minted key.
pub fn insert(c: &Connection, k: &KeyRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO keys (id, hash, sealed, prefix, plan, status, budget_nanos, spent_nanos,
                           requests, email, note, order_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            k.id,
            &k.hash[..],
            k.sealed,
            k.prefix,
            k.plan,
            k.status.as_str(),
            k.budget.nanos(),
            k.spent.nanos(),
            i64::try_from(k.requests).unwrap_or(i64::MAX),
            k.email,
            k.note,
            k.order_id,
            k.created_at.timestamp_millis(),
        ],
    )?;
    let kind = if k.order_id.is_some() {
        BudgetKind::Purchase
    } else {
        BudgetKind::Grant
    };
    let at = k.created_at.timestamp_millis();
    super::budget::record(c, &k.id, kind, k.budget, k.order_id.as_deref(), at)?;
    super::mail::add_key(c, &k.id)
}

/// Change a key's status.
pub fn set_status(
    c: &Connection,
    key_id: &str,
    status: KeyStatus,
    at_ms: i64,
) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE keys SET status = ?2,
                revoked_at = CASE WHEN ?2 = 'revoked' THEN ?3 ELSE revoked_at END
         WHERE id = ?1",
        params![key_id, status.as_str(), at_ms],
    )?;
    if n == 0 {
        return Err(StoreError::NoSuchKey(key_id.to_string()));
    }
    if status == KeyStatus::Revoked {
        super::mail::drop_balance_notices(
            c,
            key_id,
            "not sent: the key was revoked before it could go",
        )?;
    }
    Ok(())
}

/// Set `exhausted` if the key is active and its committed remaining balance is below `below`.
pub fn mark_exhausted(c: &Connection, key_id: &str, below: Usd) -> Result<(), StoreError> {
    c.execute(
        "UPDATE keys SET status = 'exhausted'
         WHERE id = ?1 AND status = 'active' AND budget_nanos - spent_nanos < ?2",
        params![key_id, below.nanos()],
    )?;
    Ok(())
}

/// An exhausted key whose remaining budget is `below` or more is active again.
pub fn reactivate(c: &Connection, key_id: &str, below: Usd) -> Result<(), StoreError> {
    c.execute(
        "UPDATE keys SET status = 'active'
         WHERE id = ?1 AND status = 'exhausted' AND budget_nanos - spent_nanos >= ?2",
        params![key_id, below.nanos()],
    )?;
    Ok(())
}

/// Add budget to a key and record the top-up; an exhausted key that then has at least `below`
/// left is `active` again.
pub fn top_up(
    c: &Connection,
    key_id: &str,
    amount: Usd,
    below: Usd,
    at_ms: i64,
) -> Result<(), StoreError> {
    // The budget stops at `MAX_BUDGET` (see `orders::pay_top_up`), checked here too: the
    // operator's top-ups and the customers' are serialised apart. A top-up too small for one
    // request leaves an exhausted key as it is: made `active` for a moment, its exhausted
    // notice was re-armed (and a queued one dropped) for a crossing that had not ended (found
    // by an independent check).
    let n = c.execute(
        "UPDATE keys SET budget_nanos = budget_nanos + ?2,
                status = CASE WHEN status = 'exhausted' AND budget_nanos + ?2 - spent_nanos >= ?4
                              THEN 'active' ELSE status END
         WHERE id = ?1 AND budget_nanos <= ?3",
        params![
            key_id,
            amount.nanos(),
            crate::money::MAX_BUDGET.nanos() - amount.nanos(),
            below.nanos()
        ],
    )?;
    if n == 0 {
        let known = c
            .query_row("SELECT 1 FROM keys WHERE id = ?1", [key_id], |_| Ok(()))
            .optional()?
            .is_some();
        return Err(if known {
            StoreError::Conflict(format!(
                "key {key_id}'s budget would pass ${}",
                crate::money::MAX_BUDGET
            ))
        } else {
            StoreError::NoSuchKey(key_id.to_string())
        });
    }
    c.execute(
        "INSERT INTO topups (key_id, amount_nanos, created_at) VALUES (?1, ?2, ?3)",
        params![key_id, amount.nanos(), at_ms],
    )?;
    super::budget::record(c, key_id, BudgetKind::OperatorTopUp, amount, None, at_ms)?;
    super::mail::rearm(c, key_id)
}

/// Replace a key's text (hash, sealed copy, display prefix), keeping everything else; a
/// revoked key is not rotated.
pub fn rotate(
    c: &Connection,
    key_id: &str,
    hash: &[u8; 32],
    sealed: &[u8],
    prefix: &str,
    at_ms: i64,
) -> Result<i64, StoreError> {
    // Each rotation of a key is stamped later than the one before (by a millisecond if they
    // fall in the same one): the request that made a key's current text is found at start-up
    // by its stamp equal to the key's, and two rotations in one millisecond both matched —
    // the first one's request, sent again, was given the second one's text.
    let stamped = c
        .query_row(
            "UPDATE keys SET hash = ?2, sealed = ?3, prefix = ?4,
                    rotated_at = MAX(?5, COALESCE(rotated_at, ?5 - 1) + 1)
             WHERE id = ?1 AND status != 'revoked'
             RETURNING rotated_at",
            params![key_id, &hash[..], sealed, prefix, at_ms],
            |r| r.get(0),
        )
        .optional()?;
    stamped.ok_or_else(|| StoreError::Conflict(format!("key {key_id} is revoked or unknown")))
}

/// How long the requests that replaced keys' texts are kept.
const ROTATION_REQUESTS_KEPT_MS: i64 = 24 * 3600 * 1000;

/// Remember the request that replaced a key's text (and forget those older than a day).
pub fn remember_rotation(
    c: &Connection,
    request: &[u8; 32],
    key_id: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM rotation_requests WHERE created_at < ?1",
        [at_ms.saturating_sub(ROTATION_REQUESTS_KEPT_MS)],
    )?;
    c.execute(
        "INSERT OR REPLACE INTO rotation_requests (id, key_id, created_at) VALUES (?1, ?2, ?3)",
        params![&request[..], key_id, at_ms],
    )?;
    Ok(())
}

/// A request that replaced a key's text: its id, the key, when, and the key's sealed text now.
pub type RotationRequest = ([u8; 32], String, i64, Vec<u8>);

/// The requests since `since_ms` that made their key's current text (the key's latest
/// rotation — by any way, the operator's included — and the key not revoked).
pub fn recent_rotations(c: &Connection, since_ms: i64) -> Result<Vec<RotationRequest>, StoreError> {
    let mut stmt = c.prepare(
        "SELECT r.id, r.key_id, r.created_at, k.sealed FROM rotation_requests r
           JOIN keys k ON k.id = r.key_id
          WHERE r.created_at >= ?1 AND k.status != 'revoked' AND r.created_at = k.rotated_at",
    )?;
    let rows = stmt.query_map([since_ms], |r| {
        let id: Vec<u8> = r.get(0)?;
        Ok((id, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, key_id, at, sealed) = row?;
        if let Ok(id) = <[u8; 32]>::try_from(id) {
            out.push((id, key_id, at, sealed));
        }
    }
    Ok(out)
}

/// The request `id` (see [`recent_rotations`]), if it was made since `since_ms` and made its
/// key's current text: the key's id and its sealed text.
pub fn rotation_of_request(
    c: &Connection,
    id: &[u8; 32],
    since_ms: i64,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    Ok(c.query_row(
        "SELECT r.key_id, k.sealed FROM rotation_requests r
           JOIN keys k ON k.id = r.key_id
          WHERE r.id = ?1 AND r.created_at >= ?2 AND k.status != 'revoked'
            AND r.created_at = k.rotated_at",
        params![id.as_slice(), since_ms],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

/// When a key's text was last replaced, if ever.
pub fn rotated_at(c: &Connection, key_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let at: Option<Option<i64>> = c
        .query_row("SELECT rotated_at FROM keys WHERE id = ?1", [key_id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(at.flatten().map(ms_to_time))
}

/// The sealed copy of a key, for showing it again to its buyer.
pub fn sealed(c: &Connection, key_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        c.query_row("SELECT sealed FROM keys WHERE id = ?1", [key_id], |r| {
            r.get(0)
        })
        .optional()?,
    )
}
