//! Key status changes, top-ups and exhaustion marks, as the writer applies them.

use rusqlite::OptionalExtension;

use super::*;

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
            below: Usd::ZERO,
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
            below: Usd::ZERO,
            at_ms: 8_000,
        })
        .await
        .unwrap();

    topups_and_revocation_are_recorded(&store).await;

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
            below: Usd::ZERO,
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

/// The `topups` rows of key_a (6 000 ms) and key_r (8 000 ms), and key_r's revocation time.
async fn topups_and_revocation_are_recorded(store: &Store) {
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
            below: Usd::ZERO,
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

/// The database itself keeps a key's budget at most `MAX_BUDGET`, whichever top-up comes
/// (the operator's and the customers' are serialised apart): past 2^63 nano-dollars SQLite
/// would store the sum as a float and the daemon would not start again.
#[tokio::test]
async fn no_top_up_takes_a_budget_past_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    store.write(insert(key("key_a", 1))).await.unwrap();
    let top_up = |dollars: i64| Write::TopUp {
        key_id: "key_a".into(),
        amount: Usd::from_dollars(dollars),
        below: Usd::ZERO,
        at_ms: 6_000,
    };
    // To the cap exactly: $1 + $999 999 999.
    store.write(top_up(999_999_999)).await.unwrap();
    let refused = store.write(top_up(1)).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    let unknown = store
        .write(Write::TopUp {
            key_id: "key_nope".into(),
            amount: Usd::from_dollars(1),
            below: Usd::ZERO,
            at_ms: 6_000,
        })
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NoSuchKey(_))),
        "{unknown:?}"
    );
    let (_, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].budget, crate::money::MAX_BUDGET);
}
