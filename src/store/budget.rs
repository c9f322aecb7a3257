//! SQL for `budget_history`: every change of a key's budget, signed, with what caused it. The
//! rows are written in the transaction that changes the budget, so the history and the budget
//! always agree.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::error::StoreError;
use crate::kinds::BudgetKind;
use crate::money::Usd;

/// One change of a key's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetEntry {
    /// What changed it.
    pub kind: BudgetKind,
    /// How much (negative for a refund).
    pub amount: Usd,
    /// The order behind it, if any.
    pub order_id: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Record a change of `key_id`'s budget.
pub fn record(
    c: &Connection,
    key_id: &str,
    kind: BudgetKind,
    amount: Usd,
    order_id: Option<&str>,
    at_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO budget_history (key_id, kind, amount_nanos, order_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key_id, kind.as_str(), amount.nanos(), order_id, at_ms],
    )?;
    Ok(())
}

/// A key's budget history, oldest first.
pub fn history(c: &Connection, key_id: &str) -> Result<Vec<BudgetEntry>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT kind, amount_nanos, order_id, created_at FROM budget_history
         WHERE key_id = ?1 ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([key_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, amount, order_id, at) = row?;
        let kind = BudgetKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("budget history kind {kind:?}")))?;
        out.push(BudgetEntry {
            kind,
            amount: Usd::from_nanos(amount),
            order_id,
            at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// What refunds of an order took back from its key so far (its `refund` lines: partial refunds,
/// and what requests in flight gave back to one), as a positive amount.
pub fn taken_back_for(c: &Connection, order_id: &str) -> Result<Usd, StoreError> {
    let n: i64 = c.query_row(
        "SELECT COALESCE(-SUM(amount_nanos), 0) FROM budget_history
         WHERE order_id = ?1 AND kind = 'refund'",
        [order_id],
        |r| r.get(0),
    )?;
    Ok(Usd::from_nanos(n.max(0)))
}

/// The budget an order (a top-up, or a purchase) added to its key, once paid.
pub fn granted_by(c: &Connection, order_id: &str) -> Result<Option<Usd>, StoreError> {
    let n: Option<i64> = c
        .query_row(
            "SELECT amount_nanos FROM budget_history
             WHERE order_id = ?1 AND kind IN ('top_up', 'purchase')",
            [order_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(n.map(Usd::from_nanos))
}
