//! The usage ledger: rows recorded once per request id, the queries over them, and the key
//! counters they move.

use super::*;

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

    ledger_queries_see(&store, [&first, &second, &third]).await;
    every_keys_rows_by_time(&store).await;

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
    // The key's token totals, kept with its counters, are its three rows' (the duplicate
    // moved nothing).
    let tokens = store
        .read(|c| usage::token_totals(c, "key_a"))
        .await
        .unwrap();
    assert_eq!(
        tokens,
        usage::TokenTotals {
            prompt: 90,
            cache_hit: 30,
            cache_miss: 60,
            completion: 21,
            reasoning: 3
        }
    );
    let none = store
        .read(|c| usage::token_totals(c, "key_none"))
        .await
        .unwrap();
    assert_eq!(none, usage::TokenTotals::default());
    let (store, keys) = reopen(store, &path).await;
    let a = keys.iter().find(|k| k.id == "key_a").unwrap();
    assert_eq!((a.spent.nanos(), a.requests), (1_900, 3));
    store.close().await;
}

/// The ledger queries over key_a's three rows (`first` at 1 000 ms, `third` at 2 000 ms,
/// `second` at 3 000 ms) and key_b's one.
async fn ledger_queries_see(store: &Store, [first, second, third]: [&UsageRow; 3]) {
    let row = store
        .read(|c| usage::by_request_id(c, "req-1"))
        .await
        .unwrap()
        .unwrap();
    assert_same_usage(&row, first);
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
    assert_same_usage(&recent[0], second);
    assert_same_usage(&recent[1], third);
    assert_same_usage(&recent[2], first);
    let latest = store.read(|c| usage::recent(c, "key_a", 1)).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].request_id, "req-2");

    // `[from, to)`, summed over its days and models.
    let between = |from, to| async move {
        let days = store
            .read(move |c| usage::daily_costs(c, "key_a", from, to))
            .await
            .unwrap();
        days.iter().map(|(_, _, cost)| cost.nanos()).sum::<i64>()
    };
    assert_eq!(between(0, 10_000).await, 1_900);
    assert_eq!(between(1_000, 3_000).await, 1_300);
    assert_eq!(between(1_001, 3_001).await, 666);
    assert_eq!(between(5_000, 6_000).await, 0);
    // By day and model from the index alone: a key's whole history is asked for by chat
    // front-ends, and a table read per row took a second on a busy key's.
    let plan = store
        .read(|c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {}", usage::DAILY_COSTS))?;
            let rows = stmt.query_map(["key_a", "0", "0"], |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .unwrap()
        .join("; ");
    assert!(
        plan.starts_with(
            "SEARCH usage USING COVERING INDEX usage_by_key_time_cost_model (key_id=? AND created_at>? AND created_at<?)"
        ),
        "{plan}"
    );

    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(totals, (3, Usd::from_nanos(1_900)));
    let totals = store.read(|c| usage::totals(c, "key_b")).await.unwrap();
    assert_eq!(totals, (1, Usd::from_nanos(5)));
    let totals = store.read(|c| usage::totals(c, "key_none")).await.unwrap();
    assert_eq!(totals, (0, Usd::ZERO));
}

/// The reads of every key's rows by time (the console's day totals, the tracker's reload) over
/// key_a's rows at 1 000, 2 000 and 3 000 ms and key_b's at 2 500 (each 120 ms long): exact
/// counts and sums across keys, and a plan that seeks each key's range in
/// `usage_by_key_time_cost_model` (the totals from the index alone) rather than scanning the ledger (there is no index on `created_at` alone since migration 7).
async fn every_keys_rows_by_time(store: &Store) {
    let all = |from, to| store.read(move |c| usage::totals_between(c, from, to));
    assert_eq!(all(0, 10_000).await.unwrap(), (4, Usd::from_nanos(1_905)));
    assert_eq!(all(2_000, 3_000).await.unwrap(), (2, Usd::from_nanos(71)));
    assert_eq!(all(2_001, 3_001).await.unwrap(), (2, Usd::from_nanos(605)));
    assert_eq!(all(3_001, 9_000).await.unwrap(), (0, Usd::ZERO));

    let settled = |started, ended| store.read(move |c| usage::settled_since(c, started, ended));
    let mut ids = settled(2_000, 2_600).await.unwrap();
    ids.sort();
    assert_eq!(ids, ["req-2", "req-b"]);
    let mut ids = settled(0, 0).await.unwrap();
    ids.sort();
    assert_eq!(ids, ["req-1", "req-2", "req-3", "req-b"]);
    assert!(settled(0, 3_121).await.unwrap().is_empty());

    let plans = store
        .read(|c| {
            let mut plans = Vec::new();
            for sql in [usage::TOTALS_BETWEEN, usage::SETTLED_SINCE] {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = stmt.query_map([0, 0], |r| r.get::<_, String>(3))?;
                plans.push(rows.collect::<Result<Vec<_>, _>>()?.join("; "));
            }
            Ok(plans)
        })
        .await
        .unwrap();
    let [totals, settled] = &plans[..] else {
        panic!("{plans:?}")
    };
    assert!(
        totals.contains(
            "SEARCH u USING COVERING INDEX usage_by_key_time_cost_model (key_id=? AND created_at>? AND created_at<?)"
        ),
        "{totals}"
    );
    assert!(
        settled.contains(
            "SEARCH u USING INDEX usage_by_key_time_cost_model (key_id=? AND created_at>?)"
        ),
        "{settled}"
    );
    for plan in &plans {
        assert!(plan.starts_with("SCAN k"), "{plan}");
        assert!(!plan.contains("SCAN u"), "{plan}");
    }
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

/// Every ledger row, every column, in id order.
fn ledger_values(c: &rusqlite::Connection) -> Vec<Vec<rusqlite::types::Value>> {
    let mut stmt = c.prepare("SELECT * FROM usage ORDER BY id").unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn migration_6_keeps_every_ledger_row_and_checks_measured_without_a_temporary_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // A database as version 5 left it, with rows of every kind of `measured`.
    db_at_version(
        &path,
        5,
        "INSERT INTO keys (id, hash, sealed, prefix, plan, status, budget_nanos, spent_nanos,
                 requests, created_at)
                 VALUES ('key_a', zeroblob(32), x'00', 'p', 'pro', 'active', 9000, 3703, 3, 1);
             INSERT INTO usage (id, request_id, key_id, model, stream, period, prompt_tokens,
                 cache_hit_tokens, cache_miss_tokens, completion_tokens, reasoning_tokens,
                 cost_nanos, measured, status, finish, latency_ms, ttft_ms, created_at, api,
                 account)
             VALUES (7, 'req_a', 'key_a', 'deepseek-chat', 1, 'peak', 10, 2, 8, 5, 1, 1234,
                     'clamped', 200, 'stop', 99, 12, 1000, 'anthropic', 'acct-2'),
                    (9, 'req_b', 'key_a', 'deepseek-reasoner', 0, 'off_peak', 3, 0, 3, 4, 0,
                     2000, 'provider', 200, 'length', 50, NULL, 2000, 'openai', ''),
                    (12, 'req_c', 'key_a', 'deepseek-chat', 1, 'peak', 1, 0, 1, 1, 0, 469,
                     'estimated', 499, 'client_abort', 5, 4, 3000, 'openai', 'acct-1');",
    );
    let before = ledger_values(&rusqlite::Connection::open(&path).unwrap());
    let (store, keys) = Store::open(&path).await.unwrap();
    assert_eq!(keys[0].spent.nanos(), 3703);
    store.close().await;

    let c = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(before.len(), 3);
    assert_eq!(ledger_values(&c), before);
    let insert = "INSERT INTO usage (request_id, key_id, model, stream, period, prompt_tokens,
        cache_hit_tokens, cache_miss_tokens, completion_tokens, reasoning_tokens, cost_nanos,
        measured, status, finish, latency_ms, ttft_ms, created_at, api, account)
        VALUES ('req_d', 'key_a', 'm', 0, 'peak', 0, 0, 0, 0, 0, 0, ?1, 200, 'stop', 0, NULL, 0,
                'openai', '')";
    // The CHECK is compiled to comparisons: no temporary index is opened per row.
    let ops: Vec<String> = c
        .prepare(&format!("EXPLAIN {insert}"))
        .unwrap()
        .query_map(["provider"], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{ops:?}");
    // And it still holds.
    let err = c.execute(insert, ["bogus"]).unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    c.execute(insert, ["estimated"]).unwrap();
}

/// Migration 13 gives every key the token totals of its ledger rows (each counted up to 2^40),
/// which the dashboard then reads instead of summing the ledger.
#[tokio::test]
async fn migration_13_gives_each_key_its_ledgers_token_totals() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    db_at_version(
        &path,
        12,
        "INSERT INTO keys (id, hash, sealed, prefix, plan, status, budget_nanos, spent_nanos,
                 requests, created_at)
                 VALUES ('key_a', zeroblob(32), x'00', 'p', 'pro', 'active', 9000, 3703, 3, 1),
                        ('key_b', randomblob(32), x'00', 'q', 'pro', 'active', 9000, 0, 0, 1);
             INSERT INTO usage (request_id, key_id, model, stream, period, prompt_tokens,
                 cache_hit_tokens, cache_miss_tokens, completion_tokens, reasoning_tokens,
                 cost_nanos, measured, status, finish, latency_ms, ttft_ms, created_at, api,
                 account)
             VALUES ('req_a', 'key_a', 'm', 1, 'peak', 10, 2, 8, 5, 1, 1234, 'provider', 200,
                     'stop', 99, 12, 1000, 'openai', ''),
                    ('req_b', 'key_a', 'm', 0, 'peak', 3, 0, 3, 9223372036854775807, 0, 2000,
                     'clamped', 200, 'length', 50, NULL, 2000, 'openai', ''),
                    ('req_c', 'key_a', 'm', 1, 'peak', 1, 0, 1, 1, 0, 469, 'estimated', 499,
                     'client_abort', 5, 4, 3000, 'anthropic', '');",
    );
    let (store, _) = Store::open(&path).await.unwrap();
    let (a, a_sums, b) = store
        .read(|c| {
            Ok((
                usage::token_totals(c, "key_a")?,
                usage::token_sums(c, "key_a")?,
                usage::token_totals(c, "key_b")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        a,
        usage::TokenTotals {
            prompt: 14,
            cache_hit: 2,
            cache_miss: 12,
            completion: 5 + (1 << 40) + 1,
            reasoning: 1
        }
    );
    assert_eq!(a, a_sums);
    assert_eq!(b, usage::TokenTotals::default());
    // And the writer moves them from there.
    store
        .write(used(usage("req_d", "key_a", 10, 4_000)))
        .await
        .unwrap();
    let after = store
        .read(|c| usage::token_totals(c, "key_a"))
        .await
        .unwrap();
    assert_eq!(
        (after.prompt, after.completion),
        (44, 5 + (1 << 40) + 1 + 7)
    );
    store.close().await;
}

/// `/healthz`'s read has a connection of its own: it answers while a customer's long read
/// holds the other one (a busy key's ledger made the probe time out).
#[tokio::test]
async fn the_health_probe_reads_beside_a_read_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let long = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .read(move |c| {
                    let _ = started.send(());
                    // Held until the probe below has answered.
                    let _ = held.recv();
                    usage::totals(c, "key_a")
                })
                .await
        })
    };
    running.await.unwrap();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.read_committed(|c| {
            Ok(c.query_row("SELECT count(*) FROM keys", [], |r| r.get::<_, i64>(0))?)
        }),
    )
    .await
    .expect("the probe waited for the other read")
    .unwrap();
    assert_eq!(n, 1);
    release.send(()).unwrap();
    assert_eq!(long.await.unwrap().unwrap().0, 0);
    store.close().await;
}
