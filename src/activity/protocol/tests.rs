//! The wire format round-trips: requests, answers and events as JSON lines.

use super::*;

#[test]
fn requests_round_trip_as_json_lines() {
    let reqs = [
        Request::Ping,
        Request::KeysList,
        Request::KeysShow {
            key: "key_1".into(),
        },
        Request::KeysCreate {
            plan: "pro".into(),
            email: Some("a@b.c".into()),
            budget_usd: Some("2.5".parse().unwrap()),
            note: None,
        },
        Request::KeysRevoke {
            key: "key_1".into(),
        },
        Request::KeysTopup {
            key: "key_1".into(),
            usd: "5".parse().unwrap(),
        },
        Request::Subscribe,
        Request::Backup {
            path: "/var/lib/modelrelay/backups/a.db".into(),
        },
    ];
    for r in reqs {
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }
    let r: Request =
        serde_json::from_str(r#"{"cmd":"keys_topup","key":"k","usd":"1.25"}"#).unwrap();
    assert_eq!(
        r,
        Request::KeysTopup {
            key: "k".into(),
            usd: "1.25".parse().unwrap()
        }
    );
}

#[test]
fn events_round_trip() {
    let e = ActivityEvent::RequestFinished {
        request_id: "req_1".into(),
        key_id: "key_1".into(),
        model: "deepseek-v4-flash".into(),
        status: 200,
        finish: Finish::ClientAbort,
        cost_usd: Usd::from_nanos(1234),
        prompt_tokens: 10,
        completion_tokens: 3,
        measured: Measured::Estimated,
        latency_ms: 40,
        ttft_ms: Some(5),
        api: Api::Anthropic,
        account: "second".into(),
        at_ms: 1,
    };
    let line = serde_json::to_string(&Response::Event { event: e.clone() }).unwrap();
    assert!(line.contains(r#""cost_usd":"0.000001234""#), "{line}");
    match serde_json::from_str::<Response>(&line).unwrap() {
        Response::Event { event } => assert_eq!(event, e),
        other => panic!("{other:?}"),
    }
}

#[test]
fn self_service_requests_and_views_round_trip() {
    for r in [
        Request::KeysRotate {
            key: "key_1".into(),
        },
        Request::MailList { limit: Some(5) },
        Request::MailRetry { id: 7 },
        Request::MailRetryFailed,
    ] {
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }
    let r: Request = serde_json::from_str(r#"{"cmd":"mail_retry","id":3}"#).unwrap();
    assert_eq!(r, Request::MailRetry { id: 3 });
    // An older daemon's order and event lines still read: the new fields have defaults.
    let o: OrderView = serde_json::from_str(
        r#"{"order_id":"o","status":"paid","plan":"trial","amount_usd":"1","email":"a@b.co",
            "key_id":null,"paypal_order_id":null,"paypal_capture_id":null,
            "created_at":"2026-01-01T00:00:00Z","paid_at":null}"#,
    )
    .unwrap();
    assert_eq!(o.kind, crate::kinds::OrderKind::Purchase);
    let e: ActivityEvent = serde_json::from_str(
        r#"{"kind":"order_created","order_id":"o","plan":"p","amount_usd":"1","email":"e","at_ms":1}"#,
    )
    .unwrap();
    assert!(matches!(
        e,
        ActivityEvent::OrderCreated { key_id: None, .. }
    ));
    let top_up = serde_json::to_string(&ActivityEvent::OrderCreated {
        order_id: "o".into(),
        plan: "p".into(),
        amount_usd: Usd::from_dollars(1),
        email: "e".into(),
        at_ms: 1,
        order_kind: crate::kinds::OrderKind::TopUp,
        key_id: Some("key_1".into()),
    })
    .unwrap();
    assert!(top_up.contains(r#""order_kind":"top_up""#), "{top_up}");
}

#[test]
fn coverage_reads_below_one_percent_rather_than_nothing() {
    use crate::money::Usd;
    let view = |pct: Option<u64>, usd: &str| UpstreamView {
        coverage_percent: pct,
        usd_balance: usd.parse::<Usd>().unwrap(),
        ..UpstreamView::default()
    };
    assert_eq!(view(Some(0), "110").coverage_text().as_deref(), Some("<1%"));
    assert_eq!(view(Some(0), "0").coverage_text().as_deref(), Some("0%"));
    assert_eq!(
        view(Some(271), "135").coverage_text().as_deref(),
        Some("271%")
    );
    assert_eq!(view(None, "135").coverage_text(), None);
}
