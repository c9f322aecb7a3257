//! Group commit: a bad write in a batch fails alone, every write gets its own result, and
//! closing flushes what was queued.

use super::*;

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
        below: Usd::ZERO,
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
        below: Usd::ZERO,
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
        paypal_app: None,
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
            below: Usd::ZERO,
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
async fn a_batch_moves_each_keys_counters_by_the_sum_of_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    store.write(insert(key("key_b", 2))).await.unwrap();

    // One transaction: rows of two keys interleaved, out of time order, with a top-up (a
    // write of another kind) between them.
    store.write_later(used(usage("req-1", "key_a", 100, 50)));
    store.write_later(used(usage("req-2", "key_b", 7, 10)));
    store.write_later(used(usage("req-3", "key_a", 200, 30)));
    store.write_later(Write::TopUp {
        key_id: "key_a".into(),
        amount: Usd::from_dollars(1),
        below: Usd::ZERO,
        at_ms: 60,
    });
    let mut big = usage("req-4", "key_a", 300, 40);
    // Counted up to 2^40 tokens, as the ledger's sums count a row.
    big.completion_tokens = u64::MAX;
    big.reasoning_tokens = 5;
    store.write_later(used(big));
    store
        .write(used(usage("req-5", "key_b", 11, 20)))
        .await
        .unwrap();

    let (store, keys) = reopen(store, &path).await;
    let a = keys.iter().find(|k| k.id == "key_a").unwrap();
    let b = keys.iter().find(|k| k.id == "key_b").unwrap();
    assert_eq!((a.spent.nanos(), a.requests), (600, 3));
    assert_eq!((b.spent.nanos(), b.requests), (18, 2));
    assert_eq!(a.budget, Usd::from_dollars(2));
    // The latest use, not the last row's.
    assert_eq!(a.last_used_at, Some(time(50)));
    assert_eq!(b.last_used_at, Some(time(20)));
    assert_eq!(count(&store, "SELECT count(*) FROM usage").await, 5);
    // Token totals move with the other counters: what the ledger's rows sum to.
    let tokens = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .read(move |c| Ok((usage::token_totals(c, id)?, usage::token_sums(c, id)?)))
                .await
                .unwrap()
        }
    };
    let (a_kept, a_summed) = tokens("key_a").await;
    assert_eq!(a_kept, a_summed);
    assert_eq!(
        (a_kept.prompt, a_kept.cache_hit, a_kept.cache_miss),
        (90, 30, 60)
    );
    assert_eq!(
        (a_kept.completion, a_kept.reasoning),
        (7 + 7 + (1 << 40), 5)
    );
    let (b_kept, b_summed) = tokens("key_b").await;
    assert_eq!(b_kept, b_summed);
    assert_eq!((b_kept.prompt, b_kept.completion), (60, 14));
    store.close().await;
}

/// Waited writes arriving faster than commits (the writer then gathers them, see
/// `writer::gather`) each get their answer and land once; a close in the middle of it loses
/// nothing that was queued before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waited_writes_gathered_under_load_each_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    let store = std::sync::Arc::new(store);
    store.write(insert(key("key_a", 1))).await.unwrap();
    let mut n = 0;
    for round in 0..20 {
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = store.clone();
                let id = format!("req-{round}-{i}");
                tokio::spawn(async move { store.write(used(usage(&id, "key_a", 10, i))).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
            n += 1;
        }
    }
    // Waited writes still arriving when the close is asked: each is committed or refused.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            let id = format!("req-last-{i}");
            tokio::spawn(async move { store.write(used(usage(&id, "key_a", 10, i))).await })
        })
        .collect();
    store.close().await;
    let late = store.write(used(usage("req-late", "key_a", 10, 0))).await;
    assert!(matches!(late, Err(StoreError::Closed)), "{late:?}");
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => n += 1,
            Err(StoreError::Closed) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    drop(store);
    let (store, keys) = Store::open(&path).await.unwrap();
    assert_eq!(keys[0].requests, n);
    let totals = store.read(|c| usage::totals(c, "key_a")).await.unwrap();
    assert_eq!(totals, (n, Usd::from_nanos(10 * n as i64)));
    store.close().await;
}
