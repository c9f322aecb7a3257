//! The store against a real SQLite file in a temp dir: migrations, every `Write`, group commit
//! with a bad write in the batch, shutdown flushing, and the ledger queries.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::*;
use crate::pricing::PricePeriod;

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("modelrelay.db")
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn key(id: &str, n: u8) -> KeyRecord {
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

fn usage(request_id: &str, key_id: &str, cost_nanos: i64, at_ms: i64) -> UsageRow {
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
            "keys",
            "orders",
            "orders_by_time",
            "schema_migrations",
            "topups",
            "usage",
            "usage_by_key_time",
            "usage_by_time",
            "webhook_events"
        ]
    );

    let (store, keys) = reopen(store, &path).await;
    assert!(keys.is_empty());
    let (store, _) = reopen(store, &path).await;
    assert_eq!(
        count(&store, "SELECT count(*) FROM schema_migrations").await,
        MIGRATIONS.len() as i64
    );
    assert_eq!(
        count(&store, "SELECT max(version) FROM schema_migrations").await,
        MIGRATIONS.len() as i64
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

#[tokio::test]
async fn usage_adds_a_ledger_row_and_moves_the_key_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    store.write(insert(key("key_b", 2))).await.unwrap();

    let mut first = usage("req-1", "key_a", 1_234, 1_000);
    first.stream = true;
    first.period = PricePeriod::Peak;
    first.reasoning_tokens = 3;
    first.ttft_ms = Some(45);
    first.measured = Measured::Estimated;
    first.finish = Finish::ClientAbort;
    let second = usage("req-2", "key_a", 600, 3_000);
    // Settled last but started earliest: last_used_at must not move back.
    let third = usage("req-3", "key_a", 66, 2_000);
    let other = usage("req-b", "key_b", 5, 2_500);
    for u in [&first, &second, &third, &other] {
        store.write(used(u.clone())).await.unwrap();
    }

    let row = store
        .read(|c| usage::by_request_id(c, "req-1"))
        .await
        .unwrap()
        .unwrap();
    assert_same_usage(&row, &first);
    assert!(
        store
            .read(|c| usage::by_request_id(c, "req-none"))
            .await
            .unwrap()
            .is_none()
    );

    // Newest first, limited.
    let recent = store.read(|c| usage::recent(c, "key_a", 10)).await.unwrap();
    assert_eq!(recent.len(), 3);
    assert_same_usage(&recent[0], &second);
    assert_same_usage(&recent[1], &third);
    assert_same_usage(&recent[2], &first);
    let latest = store.read(|c| usage::recent(c, "key_a", 1)).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].request_id, "req-2");

    // `[from, to)`.
    let between = |from, to| store.read(move |c| usage::spent_between(c, "key_a", from, to));
    assert_eq!(between(0, 10_000).await.unwrap().nanos(), 1_900);
    assert_eq!(between(1_000, 3_000).await.unwrap().nanos(), 1_300);
    assert_eq!(between(1_001, 3_001).await.unwrap().nanos(), 666);
    assert_eq!(between(5_000, 6_000).await.unwrap(), Usd::ZERO);

    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(totals, (3, Usd::from_nanos(1_900)));
    let totals = store.read(|c| usage::totals(c, "key_b")).await.unwrap();
    assert_eq!(totals, (1, Usd::from_nanos(5)));
    let totals = store.read(|c| usage::totals(c, "key_none")).await.unwrap();
    assert_eq!(totals, (0, Usd::ZERO));

    let (store, keys) = reopen(store, &path).await;
    let a = keys.iter().find(|k| k.id == "key_a").unwrap();
    assert_eq!(a.spent.nanos(), 1_900);
    assert_eq!(a.requests, 3);
    assert_eq!(a.last_used_at, Some(time(3_000)));
    assert_eq!(a.budget, Usd::from_dollars(1));
    let b = keys.iter().find(|k| k.id == "key_b").unwrap();
    assert_eq!(b.spent.nanos(), 5);
    assert_eq!(b.requests, 1);
    assert_eq!(b.last_used_at, Some(time(2_500)));

    // A request id is recorded once; a duplicate changes nothing.
    let err = store
        .write(used(usage("req-1", "key_a", 999, 4_000)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(totals, (3, Usd::from_nanos(1_900)));
    let (store, keys) = reopen(store, &path).await;
    let a = keys.iter().find(|k| k.id == "key_a").unwrap();
    assert_eq!((a.spent.nanos(), a.requests), (1_900, 3));
    store.close().await;
}

#[tokio::test]
async fn status_changes_and_top_ups_update_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    store.write(insert(key("key_r", 2))).await.unwrap();

    store
        .write(Write::KeyStatus {
            key_id: "key_a".into(),
            status: KeyStatus::Exhausted,
            at_ms: 5_000,
        })
        .await
        .unwrap();
    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].status, KeyStatus::Exhausted);
    assert_eq!(keys[1].status, KeyStatus::Active);

    // A top-up re-activates an exhausted key and is recorded.
    store
        .write(Write::TopUp {
            key_id: "key_a".into(),
            amount: Usd::from_nanos(2_500_000_000),
            at_ms: 6_000,
        })
        .await
        .unwrap();
    store
        .write(Write::KeyStatus {
            key_id: "key_r".into(),
            status: KeyStatus::Revoked,
            at_ms: 7_000,
        })
        .await
        .unwrap();
    // A top-up does not bring a revoked key back.
    store
        .write(Write::TopUp {
            key_id: "key_r".into(),
            amount: Usd::from_dollars(1),
            at_ms: 8_000,
        })
        .await
        .unwrap();

    let topups: Vec<(String, i64, i64)> = store
        .read(|c| {
            let mut stmt =
                c.prepare("SELECT key_id, amount_nanos, created_at FROM topups ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(
        topups,
        [
            ("key_a".to_string(), 2_500_000_000, 6_000),
            ("key_r".to_string(), 1_000_000_000, 8_000),
        ]
    );
    let revoked_at = |id: &'static str| {
        store.read(move |c| {
            Ok(
                c.query_row("SELECT revoked_at FROM keys WHERE id = ?1", [id], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .optional()?
                .flatten(),
            )
        })
    };
    assert_eq!(revoked_at("key_r").await.unwrap(), Some(7_000));
    assert_eq!(revoked_at("key_a").await.unwrap(), None);

    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].status, KeyStatus::Active);
    assert_eq!(keys[0].budget.nanos(), 3_500_000_000);
    assert_eq!(keys[1].status, KeyStatus::Revoked);
    assert_eq!(keys[1].budget, Usd::from_dollars(2));

    // Re-activating by status works too.
    store
        .write(Write::KeyStatus {
            key_id: "key_r".into(),
            status: KeyStatus::Active,
            at_ms: 9_000,
        })
        .await
        .unwrap();
    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[1].status, KeyStatus::Active);
    store.close().await;
}

#[tokio::test]
async fn status_and_top_up_of_an_unknown_key_fail_with_no_such_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let err = store
        .write(Write::KeyStatus {
            key_id: "key_ghost".into(),
            status: KeyStatus::Revoked,
            at_ms: 1,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NoSuchKey(id) if id == "key_ghost"),
        "{err:?}"
    );
    let err = store
        .write(Write::TopUp {
            key_id: "key_ghost".into(),
            amount: Usd::from_dollars(1),
            at_ms: 1,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NoSuchKey(id) if id == "key_ghost"),
        "{err:?}"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM topups").await, 0);
    store.close().await;
}

#[tokio::test]
async fn usage_of_an_unknown_key_fails_with_no_such_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let err = store
        .write(used(usage("req-ghost", "key_ghost", 10, 1)))
        .await
        .unwrap_err();
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 0);
    assert!(
        matches!(&err, StoreError::NoSuchKey(id) if id == "key_ghost"),
        "expected NoSuchKey(\"key_ghost\"), got {err:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn a_bad_write_does_not_sink_the_rest_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();

    // All queued before the writer runs again, so they share one transaction.
    store.write_later(used(usage("req-1", "key_a", 100, 1)));
    store.write_later(Write::TopUp {
        key_id: "key_ghost".into(),
        amount: Usd::from_dollars(1),
        at_ms: 2,
    });
    store.write_later(used(usage("req-2", "key_a", 200, 3)));
    store.write_later(used(usage("req-ghost", "key_ghost", 5, 4)));
    store.write_later(Write::KeyStatus {
        key_id: "key_ghost".into(),
        status: KeyStatus::Exhausted,
        at_ms: 5,
    });
    store.write_later(insert(key("key_b", 2)));
    store.write_later(Write::TopUp {
        key_id: "key_a".into(),
        amount: Usd::from_dollars(1),
        at_ms: 6,
    });
    store
        .write(used(usage("req-3", "key_a", 300, 7)))
        .await
        .unwrap();

    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(totals, (3, Usd::from_nanos(600)));
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 3);
    assert_eq!(count(&store, "SELECT count(*) FROM topups").await, 1);

    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].id, "key_a");
    assert_eq!(keys[0].spent.nanos(), 600);
    assert_eq!(keys[0].requests, 3);
    assert_eq!(keys[0].budget, Usd::from_dollars(2));
    assert_eq!(keys[1].id, "key_b");
    store.close().await;
}

#[tokio::test]
async fn each_write_of_a_failed_batch_gets_its_own_result_and_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    let order = orders::OrderRecord {
        order_id: "ord_1".into(),
        plan: "trial".into(),
        email: "buyer@example.com".into(),
        amount: Usd::from_dollars(1),
        currency: "USD".into(),
        status: orders::OrderStatus::Created,
        paypal_order_id: None,
        paypal_capture_id: None,
        key_id: None,
        browser_token_hash: None,
        created_at: time(1),
        paid_at: None,
        refunded_at: None,
    };
    store
        .write(Write::InsertOrder(Box::new(order)))
        .await
        .unwrap();
    let pay = |key_id: &str, n: u8| Write::PayOrder {
        order_id: "ord_1".into(),
        capture_id: format!("cap_{n}"),
        key: Box::new(key(key_id, n)),
        at_ms: 2,
    };
    store.write(pay("key_paid", 2)).await.unwrap();

    // Queued together (the writer has not run since), so they share one batch. Two fail after
    // changing rows: the second payment inserts its key, the duplicate request id moves the key
    // counters; both must be undone, and everything else committed exactly once.
    let results = [
        store.submit(used(usage("req-1", "key_a", 100, 3))),
        store.submit(pay("key_twice", 3)),
        store.submit(used(usage("req-2", "key_a", 200, 4))),
        store.submit(used(usage("req-1", "key_a", 50, 5))),
        store.submit(Write::TopUp {
            key_id: "key_a".into(),
            amount: Usd::from_dollars(1),
            at_ms: 6,
        }),
    ];
    let results = futures_util::future::join_all(results).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(&results[1], Err(StoreError::Conflict(_))),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert!(
        matches!(&results[3], Err(StoreError::Sqlite(_))),
        "{:?}",
        results[3]
    );
    assert!(results[4].is_ok(), "{:?}", results[4]);

    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 2);
    assert_eq!(count(&store, "SELECT count(*) FROM topups").await, 1);
    assert_eq!(
        count(&store, "SELECT count(*) FROM keys WHERE id = 'key_twice'").await,
        0
    );
    let (store, keys) = reopen(store, &db(&dir)).await;
    let a = keys.iter().find(|k| k.id == "key_a").unwrap();
    assert_eq!(a.spent.nanos(), 300);
    assert_eq!(a.requests, 2);
    assert_eq!(a.budget, Usd::from_dollars(2));
    assert_eq!(keys.len(), 2);
    store.close().await;
}

#[tokio::test]
async fn close_commits_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write_later(insert(key("key_a", 1)));
    for i in 0..500 {
        store.write_later(used(usage(&format!("req-{i}"), "key_a", 10, i)));
    }
    store.close().await;
    // The writer is gone: later writes are refused, not silently dropped.
    let err = store
        .write(used(usage("req-late", "key_a", 10, 1_000)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    drop(store);

    let (store, keys) = Store::open(&path).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].requests, 500);
    assert_eq!(keys[0].spent.nanos(), 5_000);
    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(totals, (500, Usd::from_nanos(5_000)));
    store.close().await;
}

#[tokio::test]
async fn writes_queued_while_closing_survive_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();

    // The writer takes this write and the close request together and starts committing…
    store.write_later(used(usage("req-1", "key_a", 1, 1)));
    {
        let closing = store.close();
        tokio::pin!(closing);
        assert!(futures_util::poll!(&mut closing).is_pending());
        tokio::task::yield_now().await;
        // …while these arrive: they are committed on the way out, after the close request.
        store.write_later(used(usage("req-2", "key_a", 2, 2)));
        store.write_later(used(usage("req-ghost", "key_ghost", 4, 3)));
        store.write_later(used(usage("req-3", "key_a", 8, 4)));
        closing.await;
    }
    drop(store);

    let (store, keys) = Store::open(&path).await.unwrap();
    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(
        totals,
        (3, Usd::from_nanos(11)),
        "good writes queued during close were lost"
    );
    assert_eq!(keys[0].requests, 3);
    store.close().await;
}

#[tokio::test]
async fn mark_exhausted_is_decided_by_the_committed_balance() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    store.write(insert(key("key_b", 2))).await.unwrap();
    // Both keys spend all but 100 nano of their $1.
    store
        .write(used(usage("r1", "key_a", 999_999_900, 1)))
        .await
        .unwrap();
    store
        .write(used(usage("r2", "key_b", 999_999_900, 1)))
        .await
        .unwrap();
    // key_b is topped up before its exhaustion mark reaches the writer: the mark must not win.
    store
        .write(Write::TopUp {
            key_id: "key_b".into(),
            amount: Usd::from_dollars(1),
            at_ms: 2,
        })
        .await
        .unwrap();
    for id in ["key_a", "key_b"] {
        store
            .write(Write::MarkExhausted {
                key_id: id.into(),
                below: Usd::from_nanos(600),
            })
            .await
            .unwrap();
    }
    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].status, KeyStatus::Exhausted);
    assert_eq!(keys[1].status, KeyStatus::Active);
    // A revoked key stays revoked.
    store
        .write(Write::KeyStatus {
            key_id: "key_b".into(),
            status: KeyStatus::Revoked,
            at_ms: 3,
        })
        .await
        .unwrap();
    store
        .write(Write::MarkExhausted {
            key_id: "key_b".into(),
            below: Usd::from_dollars(10),
        })
        .await
        .unwrap();
    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[1].status, KeyStatus::Revoked);
    store.close().await;
}
