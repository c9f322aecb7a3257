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
