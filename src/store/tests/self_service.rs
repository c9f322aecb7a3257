//! Self-service in the store: the migration's budget history of existing keys, top-ups paid
//! once, their refunds, rotation, notices once per crossing, and the outbox's life cycle.

use super::*;
use crate::kinds::{BudgetKind, MailKind, MailLang, MailStatus, OrderKind};
use orders::{Grant, OrderExtra, OrderRecord, OrderStatus, TopUpGrant};

fn order(id: &str, plan: &str) -> OrderRecord {
    OrderRecord {
        order_id: id.into(),
        plan: plan.into(),
        email: "buyer@example.com".into(),
        amount: Usd::from_dollars(5),
        currency: "USD".into(),
        status: OrderStatus::Created,
        paypal_order_id: None,
        paypal_app: None,
        paypal_capture_id: None,
        key_id: None,
        browser_token_hash: None,
        created_at: time(10_000),
        paid_at: None,
        refunded_at: None,
    }
}

fn top_up_of(key_id: &str, lang: MailLang) -> OrderExtra {
    OrderExtra {
        kind: OrderKind::TopUp,
        topup_key_id: Some(key_id.into()),
        lang,
        upgraded_from: None,
        refunded: crate::money::Usd::ZERO,
    }
}

fn pay_top_up(order_id: &str, key_id: &str, dollars: i64, new_plan: Option<&str>) -> Write {
    Write::Pay {
        order_id: order_id.into(),
        capture_id: format!("CAP-{order_id}"),
        grant: Grant::TopUp(TopUpGrant {
            key_id: key_id.into(),
            amount: Usd::from_dollars(dollars),
            new_plan: new_plan.map(str::to_string),
            upgraded_from: new_plan.map(|_| "trial".to_string()),
            below: Usd::ZERO,
        }),
        receipt: true,
        at_ms: 1_800_000_000_000,
    }
}

async fn history(store: &Store, key_id: &'static str) -> Vec<(BudgetKind, i64)> {
    store
        .read(move |c| budget::history(c, key_id))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.amount.nanos()))
        .collect()
}

#[tokio::test]
async fn the_migration_gives_existing_keys_their_history_and_mail_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // A database as version 4 left it: a sold key topped up by the operator, a comp key.
    db_at_version(
        &path,
        4,
        "INSERT INTO keys (id, hash, sealed, prefix, plan, status, budget_nanos, created_at, order_id)
                 VALUES ('key_sold', zeroblob(32), x'00', 'p', 'trial', 'exhausted', 3000000000, 1, 'ord_1'),
                        ('key_comp', randomblob(32), x'00', 'q', 'trial', 'active', 1000000000, 2, NULL);
             INSERT INTO topups (key_id, amount_nanos, created_at)
                 VALUES ('key_sold', 2000000000, 5);",
    );
    let (store, keys) = Store::open(&path).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        history(&store, "key_sold").await,
        [
            (BudgetKind::Purchase, 1_000_000_000),
            (BudgetKind::OperatorTopUp, 2_000_000_000)
        ]
    );
    assert_eq!(
        history(&store, "key_comp").await,
        [(BudgetKind::Grant, 1_000_000_000)]
    );
    let flags = store.read(mail::notice_flags).await.unwrap();
    assert_eq!(
        flags,
        [
            ("key_comp".to_string(), false, false),
            ("key_sold".to_string(), false, true)
        ]
    );
    let tokens = store
        .read(|c| {
            Ok((
                mail::token_of(c, "key_sold")?,
                mail::token_of(c, "key_comp")?,
            ))
        })
        .await
        .unwrap();
    let (a, b) = (tokens.0.unwrap(), tokens.1.unwrap());
    assert_eq!(a.len(), 48);
    assert_ne!(a, b);
    store.close().await;
}

#[tokio::test]
async fn a_top_up_is_paid_once_with_one_receipt_and_refunded_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    let mut k = key("key_a", 1);
    k.email = Some("buyer@example.com".into());
    store.write(insert(k)).await.unwrap();
    store
        .write(Write::InsertOrderWith {
            order: Box::new(order("ord_t", "pro")),
            extra: top_up_of("key_a", MailLang::Zh),
        })
        .await
        .unwrap();
    store
        .write(pay_top_up("ord_t", "key_a", 50, Some("pro")))
        .await
        .unwrap();
    let again = store
        .write(pay_top_up("ord_t", "key_a", 50, Some("pro")))
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");

    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].budget, Usd::from_dollars(51));
    assert_eq!(keys[0].plan, "pro");
    assert_eq!(
        history(&store, "key_a").await,
        [
            (BudgetKind::Grant, 1_000_000_000),
            (BudgetKind::TopUp, 50_000_000_000)
        ]
    );
    let o = store
        .read(|c| orders::get_full(c, "ord_t"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.record.status, OrderStatus::Paid);
    assert_eq!(o.record.key_id, None);
    assert_eq!(o.key_id(), Some("key_a"));
    assert_eq!(o.extra.upgraded_from.as_deref(), Some("trial"));
    let mail = store.read(|c| mail::list(c, 10)).await.unwrap();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0].kind, MailKind::Receipt);
    assert_eq!(mail[0].lang, MailLang::Zh);
    assert_eq!(mail[0].order_id.as_deref(), Some("ord_t"));
    assert_eq!(mail[0].key_id.as_deref(), Some("key_a"));
    let granted = store
        .read(|c| budget::granted_by(c, "ord_t"))
        .await
        .unwrap();
    assert_eq!(granted, Some(Usd::from_dollars(50)));

    let refund = |take: i64| Write::RefundCredit {
        order_id: "ord_t".into(),
        key_id: "key_a".into(),
        take: Usd::from_dollars(take),
        restore_plan: Some("trial".into()),
        at_ms: 1_800_000_000_001,
    };
    store.write(refund(40)).await.unwrap();
    assert!(matches!(
        store.write(refund(40)).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].budget, Usd::from_dollars(11));
    assert_eq!(keys[0].plan, "trial");
    assert_eq!(
        history(&store, "key_a").await.last(),
        Some(&(BudgetKind::Refund, -40_000_000_000))
    );
    store.close().await;
}

#[tokio::test]
async fn a_top_up_of_a_revoked_key_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    store.write(insert(key("key_r", 1))).await.unwrap();
    store
        .write(Write::KeyStatus {
            key_id: "key_r".into(),
            status: KeyStatus::Revoked,
            at_ms: 1,
        })
        .await
        .unwrap();
    store
        .write(Write::InsertOrderWith {
            order: Box::new(order("ord_r", "trial")),
            extra: top_up_of("key_r", MailLang::En),
        })
        .await
        .unwrap();
    let err = store
        .write(pay_top_up("ord_r", "key_r", 1, None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let o = store
        .read(|c| orders::get(c, "ord_r"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status, OrderStatus::Created);
    assert_eq!(count(&store, "SELECT count(*) FROM outbox").await, 0);
    store.close().await;
}

#[tokio::test]
async fn rotation_replaces_the_text_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    let mut k = key("key_a", 1);
    k.email = Some("a@b.co".into());
    store.write(insert(k)).await.unwrap();
    store
        .write(Write::RotateKey {
            key_id: "key_a".into(),
            hash: [9; 32],
            sealed: vec![9, 9],
            prefix: "sk-gateway-New…".into(),
            notify: true,
            request: Some([7; 32]),
            at_ms: 42,
        })
        .await
        .unwrap();
    let (store, keys) = reopen(store, &path).await;
    assert_eq!(keys[0].hash, [9; 32]);
    assert_eq!(keys[0].sealed, [9, 9]);
    let recent = store.read(|c| keys::recent_rotations(c, 0)).await.unwrap();
    assert_eq!(recent, [([7; 32], "key_a".to_string(), 42, vec![9, 9])]);
    assert_eq!(keys[0].prefix, "sk-gateway-New…");
    assert_eq!(keys[0].budget, Usd::from_dollars(1));
    let at = store.read(|c| keys::rotated_at(c, "key_a")).await.unwrap();
    assert_eq!(at.map(|t| t.timestamp_millis()), Some(42));
    let mail = store.read(|c| mail::list(c, 10)).await.unwrap();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].kind, MailKind::Rotated);
    assert_eq!(mail[0].recipient, "a@b.co");

    // Rotated twice in the same millisecond: the later is stamped a millisecond on, and only
    // its request made the current text (the first one's, sent again after a restart, was
    // given the second one's text).
    for (request, text) in [([5; 32], 5u8), ([6; 32], 6)] {
        store
            .write(Write::RotateKey {
                key_id: "key_a".into(),
                hash: [text; 32],
                sealed: vec![text],
                prefix: "sk-gateway-Twice…".into(),
                notify: false,
                request: Some(request),
                at_ms: 100,
            })
            .await
            .unwrap();
    }
    let recent = store.read(|c| keys::recent_rotations(c, 0)).await.unwrap();
    assert_eq!(recent, [([6; 32], "key_a".to_string(), 101, vec![6])]);
    store.close().await;
}

#[tokio::test]
async fn notices_are_queued_once_per_crossing_and_never_after_an_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let mut k = key("key_a", 1);
    k.email = Some("a@b.co".into());
    store.write(insert(k)).await.unwrap();
    let notice = |kind| Write::KeyNotice {
        key_id: "key_a".into(),
        kind,
        queue: true,
        at_ms: 1,
    };
    for _ in 0..3 {
        store.write(notice(MailKind::LowBalance)).await.unwrap();
    }
    assert_eq!(count(&store, "SELECT count(*) FROM outbox").await, 1);
    // A top-up re-arms it (the key is far above a fifth of its budget again).
    store
        .write(Write::TopUp {
            key_id: "key_a".into(),
            amount: Usd::from_dollars(1),
            below: Usd::ZERO,
            at_ms: 2,
        })
        .await
        .unwrap();
    // The notice still waiting (its SMTP server down) no longer holds: it is not sent.
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM outbox WHERE status = 'failed'
               AND last_error LIKE '%topped up%'"
        )
        .await,
        1
    );
    // Nor does the operator's retry (`mail retry`, `--failed`) send it: the key has money.
    let refused = store
        .write(Write::MailRetry { id: 1, at_ms: 2 })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("top-up"), "{refused}");
    assert_eq!(
        store.read(|c| mail::failed_ids(c, 0, 10)).await.unwrap(),
        [1]
    );
    store.write(notice(MailKind::LowBalance)).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM outbox").await, 2);
    // Opted out: the queued ones are dropped, new crossings queue nothing.
    store
        .write(Write::OptOut {
            key_id: "key_a".into(),
            at_ms: 3,
        })
        .await
        .unwrap();
    store.write(notice(MailKind::Exhausted)).await.unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM outbox WHERE status = 'queued'"
        )
        .await,
        0
    );
    assert_eq!(count(&store, "SELECT count(*) FROM outbox").await, 2);
    // Nor does the operator's retry send a notice its owner opted out of.
    let refused = store
        .write(Write::MailRetry { id: 2, at_ms: 4 })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("opted out"), "{refused}");
    store.close().await;
}

#[tokio::test]
async fn the_outbox_retries_gives_up_and_never_resends_a_sent_message() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let mut k = key("key_a", 1);
    k.email = Some("a@b.co".into());
    store.write(insert(k)).await.unwrap();
    for at_ms in [1, 2] {
        store
            .write(Write::RotateKey {
                key_id: "key_a".into(),
                hash: [at_ms as u8; 32],
                sealed: vec![],
                prefix: "p".into(),
                notify: true,
                request: None,
                at_ms,
            })
            .await
            .unwrap();
    }
    let due = store.read(|c| mail::due(c, 10, 1_000, 10)).await.unwrap();
    assert_eq!(due.len(), 2);
    let (a, b) = (due[0].id, due[1].id);
    store
        .write(Write::MailSent { id: a, at_ms: 11 })
        .await
        .unwrap();
    store
        .write(Write::MailFailed {
            id: b,
            error: "connection refused".into(),
            next_ms: 100,
            give_up: false,
        })
        .await
        .unwrap();
    assert!(
        store
            .read(|c| mail::due(c, 50, 1_000, 10))
            .await
            .unwrap()
            .is_empty()
    );
    // Set for later than any retry waits: the clock stepped back since; due now.
    let stepped = store.read(|c| mail::due(c, 50, 40, 10)).await.unwrap();
    assert_eq!(stepped.iter().map(|r| r.id).collect::<Vec<_>>(), [b]);
    assert_eq!(store.read(mail::next_due).await.unwrap(), Some(100));
    store
        .write(Write::MailFailed {
            id: b,
            error: "still refused".into(),
            next_ms: 200,
            give_up: true,
        })
        .await
        .unwrap();
    let row = store.read(move |c| mail::get(c, b)).await.unwrap().unwrap();
    assert_eq!(row.status, MailStatus::Failed);
    assert_eq!(row.attempts, 2);
    assert_eq!(row.last_error.as_deref(), Some("still refused"));
    // Retry: queued again, due now; a sent message cannot be.
    store
        .write(Write::MailRetry { id: b, at_ms: 300 })
        .await
        .unwrap();
    let row = store.read(move |c| mail::get(c, b)).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts), (MailStatus::Queued, 0));
    assert!(matches!(
        store
            .write(Write::MailRetry { id: a, at_ms: 300 })
            .await
            .unwrap_err(),
        StoreError::Conflict(_)
    ));
    let sent = store.read(move |c| mail::get(c, a)).await.unwrap().unwrap();
    assert_eq!(sent.status, MailStatus::Sent);
    assert_eq!(sent.sent_at.map(|t| t.timestamp_millis()), Some(11));
    store.close().await;
}

#[tokio::test]
async fn migration_8_counts_a_refunded_order_as_refunded_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    // Version 7: one order refunded, one paid, one failed.
    db_at_version(
        &path,
        7,
        "INSERT INTO orders (order_id, plan, email, amount_nanos, status, created_at)
             VALUES ('ord_back', 'trial', 'a@b.co', 5000000000, 'refunded', 1),
                    ('ord_paid', 'trial', 'a@b.co', 7000000000, 'paid', 2),
                    ('ord_fail', 'trial', 'a@b.co', 9000000000, 'failed', 3);",
    );
    let (store, _) = Store::open(&path).await.unwrap();
    for (id, want) in [
        ("ord_back", 5_000_000_000),
        ("ord_paid", 0),
        ("ord_fail", 0),
    ] {
        let o = store
            .read(move |c| crate::store::orders::get_full(c, id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.extra.refunded.nanos(), want, "{id}");
    }
    store.close().await;
}

#[tokio::test]
async fn a_charge_undone_drops_the_notices_it_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let mut k = key("key_a", 1);
    k.email = Some("a@b.co".into());
    store.write(insert(k)).await.unwrap();
    // The withheld answer's settlement queued the notices (the disk, which never had its row,
    // still shows the key with its whole budget).
    for kind in [MailKind::LowBalance, MailKind::Exhausted] {
        store
            .write(Write::KeyNotice {
                key_id: "key_a".into(),
                kind,
                queue: true,
                at_ms: 1,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM outbox WHERE status = 'queued'"
        )
        .await,
        2
    );
    store
        .write(Write::Rearm {
            key_id: "key_a".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM outbox WHERE status = 'queued'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM key_mail WHERE low_sent = 0 AND exhausted_sent = 0"
        )
        .await,
        1,
        "re-armed for the real crossing"
    );
    store.close().await;
}

/// Orders never paid (created or failed, no capture, no key) are forgotten, with their
/// buyers' addresses, once older than PayPal keeps an order payable; every other order stays,
/// and so does one still `created` that another live PayPal made (it may hold its money) — not
/// one a sandbox made, which never held any.
#[tokio::test]
async fn orders_never_paid_are_forgotten_after_thirty_days() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let at = |id: &str, ms: i64, status: OrderStatus, capture: Option<&str>| {
        let mut o = order(id, "trial");
        o.paypal_app = Some(
            if id.starts_with("other") {
                "live:b"
            } else if id.starts_with("sandbox") {
                "sandbox:test-app"
            } else {
                "live:a"
            }
            .into(),
        );
        o.created_at = time(ms);
        o.status = status;
        o.paypal_capture_id = capture.map(Into::into);
        Write::InsertOrder(Box::new(o))
    };
    let day = 24 * 3600 * 1000;
    for w in [
        at("old_created", day, OrderStatus::Created, None),
        at("old_failed", day, OrderStatus::Failed, None),
        at("other_created", day, OrderStatus::Created, None),
        at("other_failed", day, OrderStatus::Failed, None),
        at("sandbox_created", day, OrderStatus::Created, None),
        at("old_denied", day, OrderStatus::Failed, Some("cap_denied")),
        at(
            "old_pending",
            day,
            OrderStatus::Pending,
            Some("cap_pending"),
        ),
        at("old_review", day, OrderStatus::Review, Some("cap_review")),
        at("recent_created", 3 * day, OrderStatus::Created, None),
    ] {
        store.write(w).await.unwrap();
    }
    let ids = |store: &Store| {
        let store = store.clone();
        async move {
            store
                .read(|c| {
                    let mut s = c.prepare("SELECT order_id FROM orders ORDER BY order_id")?;
                    let ids = s.query_map([], |r| r.get::<_, String>(0))?;
                    Ok(ids.collect::<Result<Vec<_>, _>>()?)
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(ids(&store).await.len(), 9, "nothing is old enough yet");
    // A new order 30 days and a moment after the old ones.
    store
        .write(at(
            "new",
            day + orders::UNPAID_KEPT_MS + 1,
            OrderStatus::Created,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        ids(&store).await,
        [
            "new",
            "old_denied",
            "old_pending",
            "old_review",
            "other_created",
            "recent_created"
        ]
    );
    store.close().await;
}

/// The open orders another PayPal made, as the start counts them: a live app's, not a
/// sandbox's (its test money is nothing to settle, and its count came back at every start for
/// good after the documented switch from the sandbox to live).
#[tokio::test]
async fn open_orders_of_another_paypal_count_live_apps_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    for (id, app, status) in [
        ("ord_live_old", "live:old", OrderStatus::Created),
        ("ord_live_old_p", "live:old", OrderStatus::Pending),
        ("ord_sandbox", "sandbox:test-app", OrderStatus::Created),
        ("ord_current", "live:new", OrderStatus::Created),
    ] {
        let mut o = order(id, "trial");
        o.paypal_app = Some(app.into());
        o.paypal_order_id = Some(format!("PP-{id}"));
        o.status = status;
        store.write(Write::InsertOrder(Box::new(o))).await.unwrap();
    }
    let open = store
        .read(|c| orders::open_of_other_paypal(c, "live:new"))
        .await
        .unwrap();
    assert_eq!(open, [("live:old".to_string(), 1, 1)]);
    store.close().await;
}

/// An exhausted notice of a key still `active` (a request refused for want of money while a
/// little is left) is true and may be sent again; once a top-up came after it, it is withheld
/// (found by a re-check: it was withheld as "made untrue" with no top-up at all).
#[tokio::test]
async fn an_exhausted_notice_is_withheld_from_a_retry_only_after_a_top_up() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let mut k = key("key_a", 1);
    k.email = Some("a@b.co".into());
    store.write(insert(k)).await.unwrap();
    store
        .write(Write::KeyNotice {
            key_id: "key_a".into(),
            kind: MailKind::Exhausted,
            queue: true,
            at_ms: 5,
        })
        .await
        .unwrap();
    let id = store.read(|c| mail::due(c, 10, 1_000, 10)).await.unwrap()[0].id;
    let fail = || Write::MailFailed {
        id,
        error: "552 5.2.2 Mailbox full".into(),
        next_ms: 100,
        give_up: true,
    };
    store.write(fail()).await.unwrap();
    store
        .write(Write::MailRetry { id, at_ms: 6 })
        .await
        .expect("a true notice goes again");
    store.write(fail()).await.unwrap();
    store
        .write(Write::TopUp {
            key_id: "key_a".into(),
            amount: Usd::from_dollars(1),
            below: Usd::ZERO,
            at_ms: 7,
        })
        .await
        .unwrap();
    let refused = store
        .write(Write::MailRetry { id, at_ms: 8 })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("top-up"), "{refused}");
    store.close().await;
}
