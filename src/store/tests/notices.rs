//! A key's replacement notices in the outbox: one goes at once, the next an hour after it with
//! every replacement made meanwhile folded in; receipts are sent before queued notices.

use super::*;
use crate::kinds::MailKind;

fn rotation(n: u8, at_ms: i64) -> Write {
    Write::RotateKey {
        key_id: "key_a".into(),
        hash: [n; 32],
        sealed: vec![n],
        prefix: format!("sk-gateway-N{n}…"),
        notify: true,
        request: None,
        at_ms,
    }
}

/// `(next_attempt_at, created_at, key_prefix, status)` of the key's notices, oldest first.
async fn notices(store: &Store) -> Vec<(i64, i64, String, String)> {
    store
        .read(|c| {
            let mut s = c.prepare(
                "SELECT next_attempt_at, created_at, key_prefix, status FROM outbox
                 WHERE kind = 'rotated' ORDER BY id",
            )?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn replacements_in_a_row_make_one_notice_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let (store, _) = Store::open(&path).await.unwrap();
    let mut k = key("key_a", 1);
    k.email = Some("victim@example.com".into());
    store.write(insert(k)).await.unwrap();
    let t0 = chrono::Utc::now().timestamp_millis();
    let hour = mail::ROTATED_NOTICE_SPACING_MS;

    // The first goes at once; the second (the first may be in the sender's hands) an hour
    // after it; every later one is folded into the second.
    store.write(rotation(1, t0)).await.unwrap();
    store.write(rotation(2, t0 + 1_000)).await.unwrap();
    for n in 3..=40 {
        store
            .write(rotation(n, t0 + 1_000 * i64::from(n)))
            .await
            .unwrap();
    }
    let q = |s: &str| s.to_string();
    assert_eq!(
        notices(&store).await,
        [
            (t0, t0, q("sk-gateway-N1…"), q("queued")),
            (t0 + hour, t0 + 40_000, q("sk-gateway-N40…"), q("queued")),
        ]
    );

    // Sent: the folded one still waits its hour; after it is sent too, the next is spaced
    // from that sending.
    let first = store.read(|c| mail::list(c, 10)).await.unwrap();
    let id_of = |i: usize| first[first.len() - 1 - i].id;
    store
        .write(Write::MailSent {
            id: id_of(0),
            at_ms: t0 + 2_000,
        })
        .await
        .unwrap();
    store.write(rotation(41, t0 + 50_000)).await.unwrap();
    assert_eq!(
        notices(&store).await.len(),
        2,
        "folded into the waiting one"
    );
    store
        .write(Write::MailSent {
            id: id_of(1),
            at_ms: t0 + hour + 5_000,
        })
        .await
        .unwrap();
    store.write(rotation(42, t0 + hour + 6_000)).await.unwrap();
    let all = notices(&store).await;
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[2],
        (
            t0 + 2 * hour + 5_000,
            t0 + hour + 6_000,
            q("sk-gateway-N42…"),
            q("queued")
        )
    );

    // A receipt queued after the notices is taken first.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO outbox (kind, recipient, lang, status, next_attempt_at, created_at)
         VALUES ('receipt', 'buyer@example.com', 'en', 'queued', ?1, ?1)",
        [t0 + 3 * hour],
    )
    .unwrap();
    let due = store
        .read(move |c| mail::due(c, t0 + 3 * hour, 0, 10))
        .await
        .unwrap();
    let kinds: Vec<MailKind> = due.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MailKind::Receipt, MailKind::Rotated]);
    store.close().await;
}

/// Keys bought with one address (each replaced) mail it at most a day's worth of notices,
/// however the address is spelt (found by an independent check: each spelling got its own).
#[tokio::test]
async fn an_address_gets_at_most_a_days_worth_of_replacement_notices() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&db(&dir)).await.unwrap();
    let t0 = chrono::Utc::now().timestamp_millis();
    let spellings = [
        "victim@example.com",
        "Victim@example.com",
        "victim@EXAMPLE.COM",
        "victim@\u{ff45}xample.com",
        " victim@example.com",
    ];
    for n in 0..30u8 {
        let mut k = key(&format!("key_{n}"), n);
        k.email = Some(spellings[usize::from(n) % spellings.len()].into());
        store.write(insert(k)).await.unwrap();
        store
            .write(Write::RotateKey {
                key_id: format!("key_{n}"),
                hash: [n.wrapping_add(100); 32],
                sealed: vec![n],
                prefix: format!("sk-gateway-K{n}…"),
                notify: true,
                request: None,
                at_ms: t0 + i64::from(n),
            })
            .await
            .unwrap();
    }
    let queued = count(&store, "SELECT count(*) FROM outbox WHERE kind = 'rotated'").await;
    assert_eq!(queued, mail::ROTATED_NOTICES_PER_ADDRESS_PER_DAY);
    store.close().await;
}
