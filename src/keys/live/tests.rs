//! Tests of a key's live state: holds under contention, settlement, refunds owed, notices,
//! plans and the rate limiter.

use super::*;

fn record(budget: i64) -> KeyRecord {
    KeyRecord::for_tests("key_test", Usd::from_nanos(budget))
}

#[test]
fn holds_never_exceed_the_balance_under_contention() {
    let k = Arc::new(KeyState::from_record(record(1_000_000), 60));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let k = k.clone();
            std::thread::spawn(move || {
                let mut got = 0i64;
                for _ in 0..10_000 {
                    let r: Result<(Usd, ()), ()> = k.try_hold(|avail| {
                        if avail.nanos() >= 7 {
                            Ok((Usd::from_nanos(7), ()))
                        } else {
                            Err(())
                        }
                    });
                    if let Ok((h, ())) = r {
                        got += h.nanos();
                        let charged = k.settle(h, Usd::from_nanos(5), Utc::now()).charged;
                        assert_eq!(charged.nanos(), 5);
                    }
                }
                got
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let b = k.balance();
    assert!(b.remaining().nanos() >= 0);
    assert_eq!(b.held, Usd::ZERO);
    assert!(k.available().nanos() >= 0);
    assert_eq!(k.available(), b.remaining());
}

#[test]
fn settle_caps_at_the_hold_and_topup_reactivates() {
    let k = KeyState::from_record(record(1000), 60);
    let (h, ()) = k.try_hold(|a| Ok::<_, ()>((a, ()))).unwrap();
    assert_eq!(h.nanos(), 1000);
    let Settled {
        charged, remaining, ..
    } = k.settle(h, Usd::from_nanos(5000), Utc::now());
    assert_eq!(charged.nanos(), 1000);
    assert_eq!(remaining, Usd::ZERO);
    assert!(k.mark_exhausted_below(Usd::from_nanos(600)));
    assert!(!k.mark_exhausted_below(Usd::from_nanos(600)));
    assert_eq!(k.status(), KeyStatus::Exhausted);
    assert_eq!(k.top_up(Usd::from_nanos(10), Usd::ZERO), KeyStatus::Active);
    assert_eq!(k.available().nanos(), 10);
    assert!(k.revoke());
    assert_eq!(k.top_up(Usd::from_nanos(10), Usd::ZERO), KeyStatus::Revoked);
}

#[test]
fn take_back_never_takes_what_requests_hold() {
    let k = KeyState::from_record(record(1000), 60);
    let (h, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(300), ())))
        .unwrap();
    // 700 available, 300 held: a refund of 900 takes the 700 only.
    assert_eq!(k.take_back(Usd::from_nanos(900)).nanos(), 700);
    assert_eq!(k.available(), Usd::ZERO);
    let Settled {
        charged, remaining, ..
    } = k.settle(h, Usd::from_nanos(300), Utc::now());
    assert_eq!((charged.nanos(), remaining.nanos()), (300, 0));
    k.untake(Usd::from_nanos(50));
    assert_eq!(k.balance().remaining().nanos(), 50);
}

/// What a refund could not take because requests held it is owed: taken from what those
/// holds give back, never from what they spend, and never more than was owed.
#[test]
fn a_refund_owed_is_taken_from_released_holds_only() {
    let k = KeyState::from_record(record(1000), 60);
    let (a, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(600), ())))
        .unwrap();
    let (b, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(300), ())))
        .unwrap();
    // 100 available, 900 held: a refund of 800 takes 100 now and is owed 700.
    let (taken, owed, _) = k.take_or_owe(Usd::from_nanos(800), "ord_x");
    assert_eq!((taken.nanos(), owed.nanos()), (100, 700));
    // The first request spends 50 of its 600: the 550 it gives back go to the refund.
    let s = k.settle(a, Usd::from_nanos(50), Utc::now());
    assert_eq!((s.charged.nanos(), s.clawed.nanos()), (50, 550));
    assert_eq!(k.available(), Usd::ZERO);
    // The second spends 200 of 300: the 100 it gives back go too (50 left owed).
    let s = k.settle(b, Usd::from_nanos(200), Utc::now());
    assert_eq!((s.charged.nanos(), s.clawed.nanos()), (200, 100));
    let bal = k.balance();
    assert_eq!(
        (bal.budget.nanos(), bal.spent.nanos(), bal.held.nanos()),
        (250, 250, 0)
    );
    assert_eq!(bal.remaining(), Usd::ZERO);
    // Owed no more than what is held: a later hold's release is the customer's again.
    let (taken, owed, _) = k.take_or_owe(Usd::from_nanos(1_000), "ord_x");
    assert_eq!((taken, owed), (Usd::ZERO, Usd::ZERO));
    k.top_up(Usd::from_nanos(100), Usd::ZERO);
    let (c, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(100), ())))
        .unwrap();
    // The 50 left owed died with the holds in flight at the refund (both settled): a hold
    // paid from the new top-up gives back all it did not spend.
    let s = k.settle(c, Usd::ZERO, Utc::now());
    assert_eq!(s.clawed.nanos(), 0);
    assert_eq!(k.available().nanos(), 100);
}

/// A refund is owed only by the holds in flight when it came: a hold made after it (from
/// credit bought since) gives back all it does not spend, holds that spend all they hold
/// pay nothing back, and once they have settled nothing more is taken. Two refunds owed at
/// once are each paid under their own order, oldest first.
#[test]
fn what_a_refund_is_owed_ends_with_the_holds_in_flight_at_the_refund() {
    let k = KeyState::from_record(record(1000), 60);
    let ea = k.epoch();
    let (a, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(1000), ())))
        .unwrap();
    let (taken, owed, _) = k.take_or_owe(Usd::from_nanos(500), "ord_y");
    assert_eq!((taken.nanos(), owed.nanos()), (0, 500));
    assert_eq!(k.owed_to("ord_y").nanos(), 500);
    // Credit bought since, held and mostly given back: none of it goes to the refund.
    k.top_up(Usd::from_nanos(400), Usd::ZERO);
    let eb = k.epoch();
    let (b, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(400), ())))
        .unwrap();
    let s = k.settle_from(b, eb, Usd::from_nanos(300), Utc::now());
    assert_eq!(s.clawed.nanos(), 0);
    // The first spends everything: nothing to give back, and what is owed is forgiven.
    let s = k.settle_from(a, ea, Usd::from_nanos(1000), Utc::now());
    assert_eq!(s.clawed.nanos(), 0);
    assert_eq!(k.owed_to("ord_y"), Usd::ZERO);
    let bal = k.balance();
    assert_eq!((bal.budget.nanos(), bal.spent.nanos()), (1400, 1300));

    // Two refunds owed at once, by one hold: each gets its share under its own order.
    let k = KeyState::from_record(record(1000), 60);
    let e = k.epoch();
    let (h, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(1000), ())))
        .unwrap();
    assert_eq!(k.take_or_owe(Usd::from_nanos(300), "ord_1").1.nanos(), 300);
    assert_eq!(
        k.take_or_owe(Usd::from_nanos(900), "ord_2").1.nanos(),
        700,
        "at most what is held"
    );
    let s = k.settle_from(h, e, Usd::from_nanos(100), Utc::now());
    assert_eq!(
        s.clawed_for,
        vec![
            ("ord_1".to_string(), Usd::from_nanos(300)),
            ("ord_2".to_string(), Usd::from_nanos(600)),
        ]
    );
    assert_eq!(s.clawed.nanos(), 900);
    assert_eq!(
        k.owed_to("ord_2"),
        Usd::ZERO,
        "the rest forgiven with the hold"
    );
}

/// A refund takes what is available and owes the rest of what it wants up to what is
/// held, in one step; a debt whose refund could not be recorded is withdrawn.
#[test]
fn take_or_owe_takes_what_is_available_and_owes_the_rest() {
    let k = KeyState::from_record(record(1000), 60);
    let e = k.epoch();
    let (h, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(700), ())))
        .unwrap();
    let (taken, owed, debt) = k.take_or_owe(Usd::from_nanos(500), "ord_z");
    assert_eq!((taken.nanos(), owed.nanos()), (300, 200));
    assert_eq!(k.owed_to("ord_z").nanos(), 200);
    k.cancel_debt(debt);
    assert_eq!(k.owed_to("ord_z"), Usd::ZERO);
    let (_, owed, _) = k.take_or_owe(Usd::from_nanos(1000), "ord_z");
    assert_eq!(owed.nanos(), 700, "at most what is held");
    let s = k.settle_from(h, e, Usd::from_nanos(100), Utc::now());
    assert_eq!(
        s.clawed_for,
        vec![("ord_z".to_string(), Usd::from_nanos(600))]
    );
    assert_eq!(k.balance().remaining(), Usd::ZERO);
}

#[test]
fn notices_fire_once_per_crossing_and_rearm_above_the_threshold() {
    let k = KeyState::from_record(record(1000), 60);
    assert!(!k.is_low());
    let (h, ()) = k
        .try_hold(|_| Ok::<_, ()>((Usd::from_nanos(900), ())))
        .unwrap();
    k.settle(h, Usd::from_nanos(900), Utc::now());
    assert!(k.is_low());
    assert!(k.first_crossing(Notice::LowBalance));
    assert!(!k.first_crossing(Notice::LowBalance));
    assert!(k.first_crossing(Notice::Exhausted));
    k.rearm_notices();
    assert!(
        !k.first_crossing(Notice::LowBalance),
        "still low: not re-armed"
    );
    k.top_up(Usd::from_nanos(1000), Usd::ZERO);
    k.rearm_notices();
    assert!(k.first_crossing(Notice::LowBalance));
    assert!(k.first_crossing(Notice::Exhausted));
}

#[test]
fn a_plan_change_brings_its_rpm_and_a_rekey_keeps_the_state() {
    let k = Arc::new(KeyState::from_record(record(1000), 1));
    assert!(k.check_rate().allowed);
    assert!(!k.check_rate().allowed);
    k.set_plan("pro".into(), 3);
    assert_eq!(k.plan(), "pro");
    let c = k.check_rate();
    assert!(c.allowed);
    assert_eq!((c.limit, c.remaining), (3, 2));

    let table = crate::keys::KeyTable::new([([1; 32], KeyState::from_record(record(5), 60))]);
    let before = table.by_hash(&[1; 32]).unwrap();
    assert!(table.rekey("key_test", [2; 32]));
    assert!(table.by_hash(&[1; 32]).is_none());
    let after = table.by_hash(&[2; 32]).unwrap();
    assert!(Arc::ptr_eq(&before, &after));
    assert!(!table.rekey("key_none", [3; 32]));
    assert_eq!(table.len(), 1);
}

/// Usage look-ups of a key run one at a time, apart from its requests.
#[test]
fn usage_look_ups_run_one_at_a_time() {
    let k = KeyState::from_record(record(1000), 60);
    let turn = k.start_usage_look_up();
    assert!(turn.is_ok());
    assert!(
        k.start_usage_look_up().is_err(),
        "a second look-up beside the first"
    );
    drop(turn);
    assert!(k.start_usage_look_up().is_ok(), "the next one after it");
    assert!(k.check_rate().allowed);
}

#[test]
fn rate_limit_allows_rpm_then_refuses() {
    let k = KeyState::from_record(record(1000), 3);
    for left in [2, 1, 0] {
        let c = k.check_rate();
        assert!(c.allowed);
        assert_eq!(c.remaining, left);
    }
    let c = k.check_rate();
    assert!(!c.allowed);
    assert!(c.reset > std::time::Duration::from_secs(10));
}
