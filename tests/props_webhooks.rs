//! Issue 11, a property over real HTTP: whatever body is posted to `/webhooks/paypal`
//! (arbitrary bytes, arbitrary JSON, event-shaped bodies with every field right or wrong,
//! oversized ones), the daemon answers one of its documented plain-text refusals or takes
//! it, never fails, and asks PayPal's verify API exactly when the body is an event it acts
//! on: a JSON object of at most `MAX_EVENT_BYTES` with a string `id`, a string `event_type`
//! it handles and an object `resource` (the simulated PayPal counts the verify calls).
//!
//! Every delivery comes from its own address (through a trusted proxy's `X-Forwarded-For`),
//! so the per-IP limit never answers for the shape check.

use std::cell::Cell;

use modelrelay::shop::webhooks::MAX_EVENT_BYTES;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

use crate::common::TestApp;

/// The event types the shop acts on (SPEC: captures completed, pending, denied, refunded,
/// reversed): the only ones worth a verify call.
const HANDLED: [&str; 5] = [
    "PAYMENT.CAPTURE.COMPLETED",
    "PAYMENT.CAPTURE.PENDING",
    "PAYMENT.CAPTURE.DENIED",
    "PAYMENT.CAPTURE.REFUNDED",
    "PAYMENT.CAPTURE.REVERSED",
];

/// Types that are not handled: ones PayPal sends that the shop ignores, and inventions.
const OTHER_TYPES: [&str; 7] = [
    "CHECKOUT.ORDER.APPROVED",
    "PAYMENT.SALE.COMPLETED",
    "CUSTOMER.DISPUTE.CREATED",
    "PAYMENT.CAPTURE.NONSENSE",
    "payment.capture.completed",
    " PAYMENT.CAPTURE.COMPLETED",
    "",
];

/// The five `PAYPAL-*` headers with values PayPal never signed.
const FORGED: [(&str, &str); 5] = [
    ("PAYPAL-AUTH-ALGO", "SHA256withRSA"),
    (
        "PAYPAL-CERT-URL",
        "https://api.paypal.com/v1/notifications/certs/CERT-x",
    ),
    ("PAYPAL-TRANSMISSION-ID", "6f1b4e60-0000-11ef-0000-forged"),
    ("PAYPAL-TRANSMISSION-SIG", "Zm9yZ2Vk"),
    ("PAYPAL-TRANSMISSION-TIME", "2026-11-25T10:00:00Z"),
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        let key = prop_oneof![
            prop::sample::select(vec!["id", "event_type", "resource", "status", "amount"])
                .prop_map(String::from),
            "\\PC{0,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A field of an event: absent, or a value of the right type or not.
fn field(right: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        4 => right.prop_map(Some),
        1 => scalar().prop_map(Some),
    ]
}

fn event_shaped() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        prop::sample::select(HANDLED.to_vec()),
        prop::sample::select(OTHER_TYPES.to_vec()),
    ]
    .prop_map(|k| json!(k));
    let resource = prop_oneof![
        Just(json!({"id": "CAPTURE-1", "status": "COMPLETED"})),
        json_value().prop_filter("an object", Value::is_object),
    ];
    (
        field("WH-[0-9A-Z]{0,8}".prop_map(Value::String)),
        field(kind),
        field(resource),
        prop::collection::vec(("\\PC{1,6}", json_value()), 0..3),
        prop_oneof![20 => Just(0usize), 1 => Just(MAX_EVENT_BYTES)],
    )
        .prop_map(|(id, kind, resource, extra, pad)| {
            let mut event: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [("id", id), ("event_type", kind), ("resource", resource)] {
                match v {
                    Some(v) => event.insert(k.into(), v),
                    None => event.remove(k),
                };
            }
            if pad > 0 {
                event.insert("padding".into(), json!("x".repeat(pad)));
            }
            serde_json::to_vec(&event).unwrap()
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        3 => event_shaped(),
    ]
}

/// Does this body earn a call to PayPal's verify API?
fn worth_verifying(raw: &[u8]) -> bool {
    if raw.len() > MAX_EVENT_BYTES {
        return false;
    }
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(raw) else {
        return false;
    };
    matches!(o.get("id"), Some(Value::String(_)))
        && matches!(o.get("event_type"), Some(Value::String(t)) if HANDLED.contains(&t.as_str()))
        && matches!(o.get("resource"), Some(Value::Object(_)))
}

#[test]
fn webhook_bodies_never_fail_and_only_handled_events_reach_verify() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(TestApp::spawn_shop_with(|c| c.server.behind_proxy = true));
    let deliveries = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        source_file: Some(file!()),
        ..Config::with_cases(256)
    });
    let outcome = runner.run(&body(), |raw| {
        let n = deliveries.get() + 1;
        deliveries.set(n);
        let expect_verify = worth_verifying(&raw);
        let before = app.pp().counts().verify_calls;
        let (status, text) = rt.block_on(async {
            let mut req = app
                .http
                .post(format!("{}/webhooks/paypal", app.base))
                .header(
                    "x-forwarded-for",
                    format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255),
                )
                .body(raw.clone());
            for (k, v) in FORGED {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        });
        let verified = app.pp().counts().verify_calls - before;
        let short = String::from_utf8_lossy(&raw[..raw.len().min(80)]).into_owned();
        prop_assert_eq!(
            verified,
            u64::from(expect_verify),
            "{}: {} {}",
            short,
            status,
            text
        );
        let answer = (status, text.as_str());
        if expect_verify {
            prop_assert_eq!(answer, (400, "signature not verified"), "{}", short);
        } else {
            prop_assert!(
                matches!(
                    answer,
                    (
                        400,
                        "not JSON" | "not a PayPal event" | "unknown event type"
                    ) | (413, "too large")
                        | (200, "ignored")
                ),
                "{}: {:?}",
                short,
                answer
            );
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // Still serving.
    let health = rt.block_on(async {
        app.http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(health, 200);
    rt.block_on(async move {
        let mut app = app;
        app.shutdown().await;
    });
}
