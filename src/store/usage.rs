//! The usage ledger: one row per request that reached upstream, and the queries over it.

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::money::Usd;
use crate::pricing::PricePeriod;

use crate::status::Api;
pub use crate::status::{Finish, Measured};

/// One ledger row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageRow {
    /// The `x-request-id`.
    pub request_id: String,
    /// Which key paid.
    pub key_id: String,
    /// Public model name.
    pub model: String,
    /// Streamed?
    pub stream: bool,
    /// Price period at the start of the request.
    pub period: PricePeriod,
    /// Prompt tokens (hit + miss).
    pub prompt_tokens: u64,
    /// Prompt tokens from cache.
    pub cache_hit_tokens: u64,
    /// Prompt tokens not from cache.
    pub cache_miss_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// Of which reasoning.
    pub reasoning_tokens: u64,
    /// What was charged.
    pub cost: Usd,
    /// Provider-reported or estimated counts.
    pub measured: Measured,
    /// HTTP status the client got (200 even when a stream later failed).
    pub status: u16,
    /// How it ended.
    pub finish: Finish,
    /// Start to last byte.
    pub latency_ms: u64,
    /// Start to first output token, when there was one.
    pub ttft_ms: Option<u64>,
    /// Start time, unix ms.
    pub created_at_ms: i64,
    /// The API dialect it was made in.
    pub api: Api,
    /// The upstream account that served it (empty when none was reached).
    pub account: String,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Move the key's counters and insert the row, in the caller's transaction (the key first, so
/// an unknown key is `NoSuchKey`, not a foreign-key failure).
pub fn insert(c: &Connection, u: &UsageRow) -> Result<(), StoreError> {
    let mut add = KeyAdd::default();
    add.count(u);
    add_to_key_with(&mut *c.prepare_cached(ADD_TO_KEY)?, &u.key_id, &add)?;
    insert_row(c, u)
}

/// The most a key's token total reaches (2^62): it stops there rather than overflow.
const KEY_TOKENS_CAP: i64 = 1 << 62;

/// What settled rows add to their key's counters: the writer sums a batch's rows per key
/// (`writer::commit::KeyTotals`) and moves each key's counters once, rather than once per
/// row: the sums are the same, and at load one batch holds many rows of the same few keys.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyAdd {
    /// Charged, in nano-dollars.
    pub cost_nanos: i64,
    /// Requests settled.
    pub requests: i64,
    /// The latest row's start, unix ms.
    pub last_used_ms: i64,
    /// Prompt, cache hit, cache miss, completion and reasoning tokens, each row's counted up
    /// to [`ROW_TOKENS_CAP`] as the ledger's sums count them.
    pub tokens: [i64; 5],
}

impl KeyAdd {
    /// Whether adding `u` would overflow what is counted (then the counters are moved first).
    pub fn would_overflow(&self, u: &UsageRow) -> bool {
        self.cost_nanos.checked_add(u.cost.nanos()).is_none()
    }

    /// Count a row.
    pub fn count(&mut self, u: &UsageRow) {
        self.cost_nanos += u.cost.nanos();
        self.requests += 1;
        self.last_used_ms = self.last_used_ms.max(u.created_at_ms);
        let row = [
            u.prompt_tokens,
            u.cache_hit_tokens,
            u.cache_miss_tokens,
            u.completion_tokens,
            u.reasoning_tokens,
        ];
        for (total, n) in self.tokens.iter_mut().zip(row) {
            *total = total
                .saturating_add(i(n).min(ROW_TOKENS_CAP))
                .min(KEY_TOKENS_CAP);
        }
    }
}

/// The statement behind [`add_to_key_with`]; the writer prepares it once for its thread's life.
/// Token totals stop at 2^62 (`min` of the sum; a sum past `i64::MAX` becomes a float in
/// SQLite, which `min` then gives as the integer cap).
pub(super) const ADD_TO_KEY: &str =
    "UPDATE keys SET spent_nanos = spent_nanos + ?2, requests = requests + ?3,
    last_used_at = max(coalesce(last_used_at, 0), ?4),
    prompt_tokens = min(prompt_tokens + ?5, 4611686018427387904),
    cache_hit_tokens = min(cache_hit_tokens + ?6, 4611686018427387904),
    cache_miss_tokens = min(cache_miss_tokens + ?7, 4611686018427387904),
    completion_tokens = min(completion_tokens + ?8, 4611686018427387904),
    reasoning_tokens = min(reasoning_tokens + ?9, 4611686018427387904)
 WHERE id = ?1";

/// Move a key's counters by `add`, with [`ADD_TO_KEY`] prepared.
pub(super) fn add_to_key_with(
    stmt: &mut rusqlite::Statement<'_>,
    key_id: &str,
    add: &KeyAdd,
) -> Result<(), StoreError> {
    let [p, h, m, o, r] = add.tokens;
    let n = stmt.execute(params![
        key_id,
        add.cost_nanos,
        add.requests,
        add.last_used_ms,
        p,
        h,
        m,
        o,
        r
    ])?;
    if n == 0 {
        return Err(StoreError::NoSuchKey(key_id.to_string()));
    }
    Ok(())
}

/// Insert the ledger row alone (its key's counters are moved by [`add_to_key_with`]).
pub(super) fn insert_row(c: &Connection, u: &UsageRow) -> Result<(), StoreError> {
    insert_row_with(&mut *c.prepare_cached(INSERT_ROW)?, u)
}

/// The statement behind [`insert_row`]; the writer prepares it once for its thread's life.
pub(super) const INSERT_ROW: &str = "INSERT INTO usage (request_id, key_id, model, stream, period,
     prompt_tokens, cache_hit_tokens, cache_miss_tokens, completion_tokens, reasoning_tokens,
     cost_nanos, measured, status, finish, latency_ms, ttft_ms, created_at, api, account)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

/// [`insert_row`] with [`INSERT_ROW`] already prepared.
pub(super) fn insert_row_with(
    stmt: &mut rusqlite::Statement<'_>,
    u: &UsageRow,
) -> Result<(), StoreError> {
    stmt.execute(params![
        u.request_id,
        u.key_id,
        u.model,
        u.stream,
        u.period.as_str(),
        i(u.prompt_tokens),
        i(u.cache_hit_tokens),
        i(u.cache_miss_tokens),
        i(u.completion_tokens),
        i(u.reasoning_tokens),
        u.cost.nanos(),
        u.measured.as_str(),
        u.status,
        u.finish.as_str(),
        i(u.latency_ms),
        u.ttft_ms.map(i),
        u.created_at_ms,
        u.api.as_str(),
        u.account,
    ])?;
    Ok(())
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<UsageRow> {
    let period: String = r.get(4)?;
    let measured: String = r.get(11)?;
    let finish: String = r.get(13)?;
    let u =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0)) };
    Ok(UsageRow {
        request_id: r.get(0)?,
        key_id: r.get(1)?,
        model: r.get(2)?,
        stream: r.get(3)?,
        period: if period == "peak" {
            PricePeriod::Peak
        } else {
            PricePeriod::OffPeak
        },
        prompt_tokens: u(5)?,
        cache_hit_tokens: u(6)?,
        cache_miss_tokens: u(7)?,
        completion_tokens: u(8)?,
        reasoning_tokens: u(9)?,
        cost: Usd::from_nanos(r.get(10)?),
        measured: match measured.as_str() {
            "estimated" => Measured::Estimated,
            "clamped" => Measured::Clamped,
            _ => Measured::Provider,
        },
        status: r.get(12)?,
        finish: Finish::parse(&finish),
        latency_ms: u(14)?,
        ttft_ms: r
            .get::<_, Option<i64>>(15)?
            .map(|v| u64::try_from(v).unwrap_or(0)),
        created_at_ms: r.get(16)?,
        api: Api::parse(&r.get::<_, String>(17)?),
        account: r.get(18)?,
    })
}

const COLUMNS: &str = "request_id, key_id, model, stream, period, prompt_tokens, cache_hit_tokens,
    cache_miss_tokens, completion_tokens, reasoning_tokens, cost_nanos, measured, status, finish,
    latency_ms, ttft_ms, created_at, api, account";

/// A key's latest rows, newest first.
pub fn recent(c: &Connection, key_id: &str, limit: u32) -> Result<Vec<UsageRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM usage WHERE key_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![key_id, limit], row_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One row by request id.
pub fn by_request_id(c: &Connection, request_id: &str) -> Result<Option<UsageRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM usage WHERE request_id = ?1"
    ))?;
    let mut rows = stmt.query_map([request_id], row_of)?;
    Ok(rows.next().transpose()?)
}

/// [`daily_costs`]'s query: read from `usage_by_key_time_cost_model` alone (migration 14), never
/// the table, since chat front-ends ask it for a key's whole history.
pub(super) const DAILY_COSTS: &str =
    "SELECT created_at / 86400000 AS day, model, sum(cost_nanos) FROM usage
     WHERE key_id = ?1 AND created_at >= ?2 AND created_at < ?3
     GROUP BY day, model ORDER BY day, model";

/// A key's spend in `[from_ms, to_ms)` by UTC day and model: `(day's start in ms, model, sum)`,
/// oldest day first, models by name.
pub fn daily_costs(
    c: &Connection,
    key_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, String, Usd)>, StoreError> {
    let mut stmt = c.prepare_cached(DAILY_COSTS)?;
    let rows = stmt.query_map(params![key_id, from_ms, to_ms], |r| {
        Ok((
            r.get::<_, i64>(0)? * 86_400_000,
            r.get::<_, String>(1)?,
            Usd::from_nanos(r.get::<_, i64>(2)?),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Rows and sum of a key's whole ledger (tests and reconciliation).
pub fn totals(c: &Connection, key_id: &str) -> Result<(u64, Usd), StoreError> {
    let (n, sum): (i64, i64) = c.query_row(
        "SELECT count(*), coalesce(sum(cost_nanos), 0) FROM usage WHERE key_id = ?1",
        [key_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((u64::try_from(n).unwrap_or(0), Usd::from_nanos(sum)))
}

/// The most tokens one ledger row counts for in a sum: 2^40, far above any real request and
/// low enough that 8 million such rows still sum within an `i64`.
pub const ROW_TOKENS_CAP: i64 = 1 << 40;

/// A key's token totals over its whole ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenTotals {
    /// Prompt tokens.
    pub prompt: u64,
    /// Of which from cache.
    pub cache_hit: u64,
    /// Of which not.
    pub cache_miss: u64,
    /// Output tokens.
    pub completion: u64,
    /// Of which reasoning.
    pub reasoning: u64,
}

/// Token totals of a key: its counters, kept with its spend by the writer (migration 13), not
/// a sum over its whole ledger (seconds for a busy key's; see the migration). A key unknown
/// to the database has none.
pub fn token_totals(c: &Connection, key_id: &str) -> Result<TokenTotals, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT prompt_tokens, cache_hit_tokens, cache_miss_tokens, completion_tokens,
                reasoning_tokens
         FROM keys WHERE id = ?1",
    )?;
    let totals = stmt.query_row([key_id], totals_of).optional()?;
    Ok(totals.unwrap_or_default())
}

/// The five counts of a row (prompt, cache hit, cache miss, completion, reasoning).
fn totals_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenTotals> {
    let u =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0)) };
    Ok(TokenTotals {
        prompt: u(0)?,
        cache_hit: u(1)?,
        cache_miss: u(2)?,
        completion: u(3)?,
        reasoning: u(4)?,
    })
}

/// Token totals summed over a key's ledger rows, each counted up to [`ROW_TOKENS_CAP`]: what
/// the key's counters hold (tests).
#[cfg(test)]
pub fn token_sums(c: &Connection, key_id: &str) -> Result<TokenTotals, StoreError> {
    Ok(c.query_row(
        "SELECT coalesce(sum(min(prompt_tokens, ?2)), 0), coalesce(sum(min(cache_hit_tokens, ?2)), 0),
                coalesce(sum(min(cache_miss_tokens, ?2)), 0),
                coalesce(sum(min(completion_tokens, ?2)), 0),
                coalesce(sum(min(reasoning_tokens, ?2)), 0)
         FROM usage WHERE key_id = ?1",
        params![key_id, ROW_TOKENS_CAP],
        totals_of,
    )?)
}

/// Spend per UTC day since `from_ms`: (day start in unix ms, total), oldest first, days
/// without spend omitted.
pub fn daily_spend(
    c: &Connection,
    key_id: &str,
    from_ms: i64,
) -> Result<Vec<(i64, Usd)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT (created_at / 86400000) * 86400000 AS day, sum(cost_nanos)
         FROM usage WHERE key_id = ?1 AND created_at >= ?2 GROUP BY day ORDER BY day",
    )?;
    let rows = stmt.query_map(params![key_id, from_ms], |r| {
        Ok((r.get::<_, i64>(0)?, Usd::from_nanos(r.get(1)?)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// The reads of every key's rows by time (the two below) walk the keys and, for each, the range
// of its rows in `usage_by_key_time_cost_model` (which also holds the cost, so the day's totals never
// read the table itself): one index seek per key, `CROSS JOIN` fixing `keys` as the
// outer loop. The ledger has no index on `created_at` alone any more (migration 7: every row
// paid for it on the request path, for these two rare reads). Every row is counted once: its
// key exists (a foreign key; keys are revoked, never deleted) and `keys.id` is unique.

/// [`totals_between`]'s query.
pub(super) const TOTALS_BETWEEN: &str = "SELECT count(*), coalesce(sum(u.cost_nanos), 0)
 FROM keys k CROSS JOIN usage u ON u.key_id = k.id
 WHERE u.created_at >= ?1 AND u.created_at < ?2";

/// [`settled_since`]'s query.
pub(super) const SETTLED_SINCE: &str = "SELECT u.request_id
 FROM keys k CROSS JOIN usage u ON u.key_id = k.id
 WHERE u.created_at >= ?1 AND u.created_at + u.latency_ms >= ?2";

/// Rows and sum of every key's ledger for requests started in `[from_ms, to_ms)` (the
/// console's totals of the day).
pub fn totals_between(c: &Connection, from_ms: i64, to_ms: i64) -> Result<(u64, Usd), StoreError> {
    let (n, sum): (i64, i64) = c.query_row(TOTALS_BETWEEN, params![from_ms, to_ms], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok((u64::try_from(n).unwrap_or(0), Usd::from_nanos(sum)))
}

/// Request ids of the rows of requests that started at or after `started_from_ms` and ended
/// (start + latency) at or after `ended_from_ms`: the requests settled around a moment.
pub fn settled_since(
    c: &Connection,
    started_from_ms: i64,
    ended_from_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = c.prepare_cached(SETTLED_SINCE)?;
    let rows = stmt.query_map(params![started_from_ms, ended_from_ms], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest rows of every key, newest first (in commit order).
pub fn latest(c: &Connection, limit: u32) -> Result<Vec<UsageRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM usage ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], row_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
