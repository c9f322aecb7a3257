//! The store against a real SQLite file in a temp dir: migrations and keys here; the ledger,
//! key status changes and group commit (bad writes in a batch, shutdown flushing) in the
//! submodules.

use std::path::{Path, PathBuf};

use super::*;
use crate::keys::KeyStatus;
use crate::money::Usd;
use crate::pricing::PricePeriod;
use chrono::{DateTime, Utc};

mod batches;
mod journal;
mod key_changes;
mod ledger;
mod notices;
mod self_service;

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("modelrelay.db")
}

/// A database at `path` as the first `version` migrations left it, with `setup` run in the
/// same transaction.
fn db_at_version(path: &Path, version: usize, setup: &str) {
    let mut c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .unwrap();
    let tx = c.transaction().unwrap();
    for (version, sql) in &migrate::MIGRATIONS[..version] {
        tx.execute_batch(sql).unwrap();
        tx.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version])
            .unwrap();
    }
    tx.execute_batch(setup).unwrap();
    tx.commit().unwrap();
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

/// A key record for tests (also the writer's).
pub(super) fn key(id: &str, n: u8) -> KeyRecord {
    KeyRecord {
        id: id.to_string(),
        hash: [n; 32],
        sealed: vec![n, 1, 2, 3],
        prefix: format!("sk-gateway-{id}"),
        plan: "trial".into(),
        status: KeyStatus::Active,
        budget: Usd::from_dollars(1),
        spent: Usd::ZERO,
        requests: 0,
        email: None,
        note: None,
        order_id: None,
        created_at: time(1_700_000_000_000 + i64::from(n)),
        last_used_at: None,
    }
}

/// A ledger row for tests (also the writer's).
pub(super) fn usage(request_id: &str, key_id: &str, cost_nanos: i64, at_ms: i64) -> UsageRow {
    UsageRow {
        request_id: request_id.into(),
        key_id: key_id.into(),
        model: "deepseek-v4-flash".into(),
        stream: false,
        period: PricePeriod::OffPeak,
        prompt_tokens: 30,
        cache_hit_tokens: 10,
        cache_miss_tokens: 20,
        completion_tokens: 7,
        reasoning_tokens: 0,
        cost: Usd::from_nanos(cost_nanos),
        measured: Measured::Provider,
        status: 200,
        finish: Finish::Complete,
        latency_ms: 120,
        ttft_ms: None,
        created_at_ms: at_ms,
        api: crate::status::Api::OpenAi,
        account: String::new(),
    }
}

fn insert(k: KeyRecord) -> Write {
    Write::InsertKey(Box::new(k))
}

fn used(u: UsageRow) -> Write {
    Write::Usage(Box::new(u))
}

fn assert_same_key(a: &KeyRecord, b: &KeyRecord) {
    assert_eq!(a.id, b.id);
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.sealed, b.sealed);
    assert_eq!(a.prefix, b.prefix);
    assert_eq!(a.plan, b.plan);
    assert_eq!(a.status, b.status);
    assert_eq!(a.budget, b.budget);
    assert_eq!(a.spent, b.spent);
    assert_eq!(a.requests, b.requests);
    assert_eq!(a.email, b.email);
    assert_eq!(a.note, b.note);
    assert_eq!(a.order_id, b.order_id);
    assert_eq!(a.created_at, b.created_at);
    assert_eq!(a.last_used_at, b.last_used_at);
}

fn assert_same_usage(a: &UsageRow, b: &UsageRow) {
    assert_eq!(a.request_id, b.request_id);
    assert_eq!(a.key_id, b.key_id);
    assert_eq!(a.model, b.model);
    assert_eq!(a.stream, b.stream);
    assert_eq!(a.period, b.period);
    assert_eq!(a.prompt_tokens, b.prompt_tokens);
    assert_eq!(a.cache_hit_tokens, b.cache_hit_tokens);
    assert_eq!(a.cache_miss_tokens, b.cache_miss_tokens);
    assert_eq!(a.completion_tokens, b.completion_tokens);
    assert_eq!(a.reasoning_tokens, b.reasoning_tokens);
    assert_eq!(a.cost, b.cost);
    assert_eq!(a.measured, b.measured);
    assert_eq!(a.status, b.status);
    assert_eq!(a.finish, b.finish);
    assert_eq!(a.latency_ms, b.latency_ms);
    assert_eq!(a.ttft_ms, b.ttft_ms);
    assert_eq!(a.created_at_ms, b.created_at_ms);
}

/// Close and reopen, returning the reopened store and the keys it loaded.
async fn reopen(store: Store, path: &Path) -> (Store, Vec<KeyRecord>) {
    store.close().await;
    drop(store);
    Store::open(path).await.unwrap()
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    store
        .read(move |c| Ok(c.query_row(sql, [], |r| r.get(0))?))
        .await
        .unwrap()
}

#[tokio::test]
async fn open_creates_the_schema_and_reopening_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, keys) = Store::open(&path).await.unwrap();
    assert!(keys.is_empty());
    assert!(path.exists());

    let names: Vec<String> = store
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(
        names,
        [
            "budget_history",
            "budget_history_by_key",
            "key_mail",
            "keys",
            "orders",
            "orders_by_time",
            "orders_by_topup_key",
            "outbox",
            "outbox_by_key",
            "outbox_by_kind",
            "outbox_by_recipient",
            "outbox_due",
            "rotation_requests",
            "rotation_requests_by_time",
            "schema_migrations",
            "topups",
            "upstream_disabled",
            "usage",
            "usage_by_key_time_cost_model",
            "webhook_events"
        ]
    );

    let (store, keys) = reopen(store, &path).await;
    assert!(keys.is_empty());
    let (store, _) = reopen(store, &path).await;
    assert_eq!(
        count(&store, "SELECT count(*) FROM schema_migrations").await,
        migrate::MIGRATIONS.len() as i64
    );
    assert_eq!(
        count(&store, "SELECT max(version) FROM schema_migrations").await,
        migrate::MIGRATIONS.len() as i64
    );
    store.close().await;
}

#[tokio::test]
async fn the_database_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let mode: String = store
        .read(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    store.close().await;
}

#[tokio::test]
async fn an_inserted_key_is_loaded_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();

    let mut sold = key("key_sold", 1);
    sold.email = Some("buyer@example.com".into());
    sold.note = Some("first customer".into());
    sold.order_id = Some("ORDER-1".into());
    sold.plan = "pro".into();
    sold.budget = Usd::from_nanos(50_000_000_001);
    let bare = key("key_bare", 2);
    store.write(insert(sold.clone())).await.unwrap();
    store.write(insert(bare.clone())).await.unwrap();

    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys.len(), 2);
    // Loaded oldest first.
    assert_same_key(&keys[0], &sold);
    assert_same_key(&keys[1], &bare);

    // The sealed copy can be read back by id.
    let sealed = store.read(|c| keys::sealed(c, "key_sold")).await.unwrap();
    assert_eq!(sealed, Some(sold.sealed.clone()));
    let none = store.read(|c| keys::sealed(c, "key_none")).await.unwrap();
    assert_eq!(none, None);

    // A second key with the same hash is refused.
    let mut twin = key("key_twin", 3);
    twin.hash = sold.hash;
    let err = store.write(insert(twin)).await.unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
    store.close().await;
}
