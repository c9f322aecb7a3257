//! The client in `paypal/mod.rs` against the simulated PayPal, over real HTTP.

use super::*;
use crate::money::Usd;
use crate::paypal::{CaptureInfo, NewOrder, PayPal, PaypalError, PaypalSettings};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use std::collections::HashSet;

mod webhooks;

async fn sim() -> SimulatedPaypal {
    SimulatedPaypal::start(SimPaypalOptions::default())
        .await
        .unwrap()
}

fn client_with(s: &SimulatedPaypal, secret: &str, webhook_id: &str) -> PayPal {
    let o = SimPaypalOptions::default();
    PayPal::new(PaypalSettings {
        base_url: format!("{}/", s.base_url()),
        client_id: o.client_id,
        client_secret: secret.to_owned(),
        webhook_id: webhook_id.to_owned(),
    })
    .unwrap()
}

fn client(s: &SimulatedPaypal) -> PayPal {
    client_with(s, "sim-secret", "WH-SIM")
}

fn new_order(id: &str, amount: &str) -> NewOrder {
    NewOrder {
        order_id: id.to_owned(),
        amount: amount.parse().unwrap(),
        description: "modelrelay Trial plan".to_owned(),
    }
}

/// Create and approve an order; returns PayPal's order id.
async fn approved(s: &SimulatedPaypal, pp: &PayPal, id: &str, amount: &str) -> String {
    let created = pp
        .create_order(&new_order(id, amount), &format!("create-{id}"))
        .await
        .unwrap();
    assert!(s.approve(&created.id));
    created.id
}

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn usd(s: &str) -> Usd {
    s.parse().unwrap()
}

fn api_name(e: &PaypalError) -> (u16, &str) {
    match e {
        PaypalError::Api { status, name, .. } => (*status, name.as_str()),
        other => panic!("expected an Api error, got {other:?}"),
    }
}

#[tokio::test]
async fn one_token_serves_many_calls_and_is_refreshed_after_a_401() {
    let s = sim().await;
    // Concurrent first calls wait for one token request instead of each making one.
    let pp = Arc::new(client(&s));
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let pp = pp.clone();
            tokio::spawn(async move {
                let o = new_order(&format!("ord-{i}"), "1.00");
                pp.create_order(&o, &format!("r-{i}")).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().id);
    }
    pp.get_order(&ids[0]).await.unwrap();
    assert_eq!(s.counts().token_requests, 1);
    assert_eq!(s.counts().creates, 4);

    // PayPal revoked the token early: one 401, one new token, and the call still succeeds.
    s.revoke_tokens();
    assert_eq!(pp.get_order(&ids[1]).await.unwrap().status, "CREATED");
    assert_eq!(s.counts().token_requests, 2);
    pp.get_order(&ids[2]).await.unwrap();
    assert_eq!(s.counts().token_requests, 2);
}

/// A `paypal.api_base` with a wrong path: the token endpoint's 404 is no answer of the API
/// (nothing was called), never PayPal saying it does not know an order — which the checkout
/// tells the buyer as "nothing was charged" (found by an independent check).
#[tokio::test]
async fn a_token_endpoint_that_is_not_there_is_no_answer_about_the_order() {
    let s = sim().await;
    let pp = client(&s);
    let id = approved(&s, &pp, "o-base", "1.00").await;
    let wrong = PayPal::new(PaypalSettings {
        base_url: format!("{}/sandbox", s.base_url()),
        client_id: SimPaypalOptions::default().client_id,
        client_secret: "sim-secret".into(),
        webhook_id: "WH-SIM".into(),
    })
    .unwrap();
    for e in [
        wrong
            .capture_order(&id, "capture-o-base")
            .await
            .unwrap_err(),
        wrong.get_order(&id).await.unwrap_err(),
    ] {
        assert!(
            matches!(&e, PaypalError::Unreachable(m) if m.contains("404")),
            "{e:?}"
        );
    }
    assert_eq!(s.counts().captures, 0);
    // The right base captures it.
    let done = pp.capture_order(&id, "capture-o-base").await.unwrap();
    assert!(done.capture.is_some());
}

/// A `paypal.api_base` at something that serves the token but not the orders API (a proxy that
/// passes on only `/v1/`, a web server's 404 page): its 404 is no answer about the order, never
/// PayPal saying it does not know it (which the checkout tells the buyer as "nothing was
/// charged"; found by an independent check).
#[tokio::test]
async fn a_404_without_paypals_error_body_is_no_answer_about_the_order() {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/v1/oauth2/token",
            post(|| async {
                axum::Json(json!({"access_token": "A21-proxy", "expires_in": 32400}))
            }),
        )
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                "<html><head><title>404 Not Found</title></head><body>nginx</body></html>",
            )
        });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let pp = PayPal::new(PaypalSettings {
        base_url: format!("http://{addr}"),
        client_id: "id".into(),
        client_secret: "secret".into(),
        webhook_id: "WH-SIM".into(),
    })
    .unwrap();
    for e in [
        pp.capture_order("5O190127TN364715T", "capture-o-proxy")
            .await
            .unwrap_err(),
        pp.get_order("5O190127TN364715T").await.unwrap_err(),
    ] {
        assert!(
            matches!(&e, PaypalError::Unreachable(m) if m.contains("404")),
            "{e:?}"
        );
    }
    // PayPal's own 404 (its error body) still says the order is unknown.
    let s = sim().await;
    let e = client(&s).get_order("NOSUCHORDER00000").await.unwrap_err();
    assert!(matches!(e, PaypalError::Api { status: 404, .. }), "{e:?}");
}

/// The client goes straight to `paypal.api_base`: a proxy variable left in the service's
/// environment (reqwest reads them by default) does not stop every payment.
#[tokio::test]
async fn the_client_uses_no_proxy_of_the_environment() {
    if crate::test_support::is_proxy_child() {
        let s = sim().await;
        let pp = client(&s);
        let id = approved(&s, &pp, "o-proxy", "1.00").await;
        assert!(pp.get_order(&id).await.is_ok());
        return;
    }
    crate::test_support::in_a_child_behind_a_closed_proxy(
        "paypal::simulated::tests::the_client_uses_no_proxy_of_the_environment",
    );
}

#[tokio::test]
async fn wrong_credentials_and_missing_tokens_are_refused() {
    let s = sim().await;
    let pp = client_with(&s, "wrong-secret", "WH-SIM");
    let e = pp
        .create_order(&new_order("x", "1.00"), "r")
        .await
        .unwrap_err();
    assert!(matches!(e, PaypalError::Auth), "{e:?}");
    assert_eq!(s.counts().create_calls, 0);

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v2/checkout/orders", s.base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{}/v2/checkout/orders/NOPE", s.base_url()))
        .bearer_auth("A21AAmadeup")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{}/v1/oauth2/token", s.base_url()))
        .basic_auth("sim-client-id", Some("nope"))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn create_is_idempotent_and_invoice_ids_are_unique() {
    let s = sim().await;
    let pp = client(&s);
    let first = pp
        .create_order(&new_order("ord-1", "20.00"), "req-1")
        .await
        .unwrap();
    assert_eq!(first.status, "CREATED");
    let approve = first.approve_url.clone().unwrap();
    assert!(
        approve.ends_with(&format!("/checkoutnow?token={}", first.id)),
        "{approve}"
    );
    let again = pp
        .create_order(&new_order("ord-1", "20.00"), "req-1")
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(s.counts().creates, 1);
    assert_eq!(s.counts().create_calls, 2);

    let e = pp
        .create_order(&new_order("ord-1", "20.00"), "req-2")
        .await
        .unwrap_err();
    assert_eq!(api_name(&e), (422, "DUPLICATE_INVOICE_ID"));
    assert_eq!(s.counts().creates, 1);

    let order = s.order(&first.id).unwrap();
    let unit = &order["purchase_units"][0];
    assert_eq!(unit["invoice_id"], "ord-1");
    assert_eq!(unit["custom_id"], "ord-1");
    assert_eq!(unit["reference_id"], "ord-1");
    assert_eq!(
        unit["amount"],
        json!({"currency_code": "USD", "value": "20.00"})
    );
    assert_eq!(unit["description"], "modelrelay Trial plan");

    let info = pp.get_order(&first.id).await.unwrap();
    assert_eq!(info.invoice_id.as_deref(), Some("ord-1"));
    assert_eq!((info.status.as_str(), info.capture), ("CREATED", None));
    let e = pp.get_order("UNKNOWN0000000000").await.unwrap_err();
    assert_eq!(api_name(&e), (404, "INVALID_RESOURCE_ID"));
}

#[tokio::test]
async fn create_refuses_bad_amounts() {
    let s = sim().await;
    let pp = client(&s);
    // Refused by the client before PayPal is asked: never rounded.
    for bad in ["1.001", "0", "-1.00"] {
        let e = pp
            .create_order(&new_order("o", bad), "r")
            .await
            .unwrap_err();
        assert!(matches!(e, PaypalError::Amount(_)), "{bad}: {e:?}");
    }
    assert_eq!(s.counts().create_calls, 0);

    // The simulator refuses what PayPal would, whoever sends it.
    let token = {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/oauth2/token", s.base_url()))
            .basic_auth("sim-client-id", Some("sim-secret"))
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["token_type"], "Bearer");
        v["access_token"].as_str().unwrap().to_owned()
    };
    let unit = |amount: Value| json!({"intent": "CAPTURE", "purchase_units": [{"invoice_id": "inv", "amount": amount}]});
    for (body, issue) in [
        (
            unit(json!({"currency_code": "EUR", "value": "1.00"})),
            "CURRENCY_NOT_SUPPORTED",
        ),
        (
            unit(json!({"currency_code": "USD", "value": "1.005"})),
            "DECIMAL_PRECISION",
        ),
        (
            unit(json!({"currency_code": "USD", "value": 1.0})),
            "MISSING_REQUIRED_PARAMETER",
        ),
        (
            json!({"intent": "AUTHORIZE", "purchase_units": [{"invoice_id": "i", "amount": {"currency_code": "USD", "value": "1.00"}}]}),
            "INVALID_PARAMETER_VALUE",
        ),
        (
            json!({"intent": "CAPTURE", "purchase_units": [{"invoice_id": "", "amount": {"currency_code": "USD", "value": "1.00"}}]}),
            "INVALID_STRING_LENGTH",
        ),
    ] {
        let r = reqwest::Client::new()
            .post(format!("{}/v2/checkout/orders", s.base_url()))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["details"][0]["issue"], issue, "{body}");
    }
    assert_eq!(s.counts().creates, 0);
}

#[tokio::test]
async fn capture_needs_approval_then_completes_with_our_invoice_and_exact_amount() {
    let s = sim().await;
    let pp = client(&s);
    let created = pp
        .create_order(&new_order("ord-7", "19.99"), "c-7")
        .await
        .unwrap();
    let e = pp.capture_order(&created.id, "cap-7").await.unwrap_err();
    assert_eq!(api_name(&e), (422, "ORDER_NOT_APPROVED"));
    assert_eq!(s.counts().completed_captures, 0);

    assert!(s.approve(&created.id));
    assert!(!s.approve("NOSUCHORDER"));
    assert_eq!(pp.get_order(&created.id).await.unwrap().status, "APPROVED");
    let r = pp.capture_order(&created.id, "cap-7").await.unwrap();
    assert_eq!(r.order_status, "COMPLETED");
    let c = r.capture.unwrap();
    assert_eq!(c.status, "COMPLETED");
    assert_eq!(c.amount, Some(usd("19.99")));
    assert_eq!(c.currency, "USD");
    assert_eq!(c.invoice_id.as_deref(), Some("ord-7"));
    assert_eq!(c.custom_id.as_deref(), Some("ord-7"));
    let info = pp.get_order(&created.id).await.unwrap();
    assert_eq!(info.status, "COMPLETED");
    assert_eq!(info.capture.as_ref(), Some(&c));
    assert_eq!(s.counts().completed_captures, 1);
}

#[tokio::test]
async fn concurrent_captures_with_one_request_id_make_one_capture() {
    let s = sim().await;
    let pp = Arc::new(client(&s));
    let id = approved(&s, &pp, "ord-c", "5.00").await;
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let pp = pp.clone();
            let id = id.clone();
            tokio::spawn(async move { pp.capture_order(&id, "cap-same").await })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.order_status, "COMPLETED");
        let c = r.capture.unwrap();
        assert_eq!(
            (c.status.as_str(), c.amount),
            ("COMPLETED", Some(usd("5.00")))
        );
        ids.insert(c.id);
    }
    assert_eq!(ids.len(), 1);
    let counts = s.counts();
    assert_eq!((counts.captures, counts.completed_captures), (5, 1));
}

#[tokio::test]
async fn a_capture_with_another_request_id_converges_on_the_existing_capture() {
    let s = sim().await;
    let pp = client(&s);
    let id = approved(&s, &pp, "ord-r", "1.00").await;
    let first = pp.capture_order(&id, "cap-1").await.unwrap();

    // PayPal itself says ORDER_ALREADY_CAPTURED to another request id…
    let token = {
        let v: Value = reqwest::Client::new()
            .post(format!("{}/v1/oauth2/token", s.base_url()))
            .basic_auth("sim-client-id", Some("sim-secret"))
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };
    let r = reqwest::Client::new()
        .post(format!("{}/v2/checkout/orders/{id}/capture", s.base_url()))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "UNPROCESSABLE_ENTITY");
    assert_eq!(v["details"][0]["issue"], "ORDER_ALREADY_CAPTURED");

    // …and the client turns that into the capture that exists.
    let again = pp.capture_order(&id, "cap-2").await.unwrap();
    assert_eq!(again, first);
    // The same request id replays the original answer.
    assert_eq!(pp.capture_order(&id, "cap-1").await.unwrap(), first);
    assert_eq!(s.counts().completed_captures, 1);
}

async fn capture_in(mode: CaptureMode) -> (SimulatedPaypal, PayPal, String, CaptureInfo) {
    let s = sim().await;
    let pp = client(&s);
    let id = approved(&s, &pp, "ord-m", "10.00").await;
    s.set_capture_mode(mode);
    let r = pp.capture_order(&id, "cap-m").await.unwrap();
    assert_eq!(r.order_status, "COMPLETED");
    let c = r.capture.unwrap();
    (s, pp, id, c)
}

#[tokio::test]
async fn capture_modes_steer_the_outcome() {
    let (s, _, _, c) = capture_in(CaptureMode::WrongAmount).await;
    assert_eq!(
        (c.status.as_str(), c.amount, c.currency.as_str()),
        ("COMPLETED", Some(usd("11.00")), "USD")
    );
    assert_eq!(s.counts().completed_captures, 1);

    let (_, _, _, c) = capture_in(CaptureMode::WrongCurrency).await;
    assert_eq!(
        (c.status.as_str(), c.amount, c.currency.as_str()),
        ("COMPLETED", Some(usd("10.00")), "EUR")
    );

    let (s, _, id, c) = capture_in(CaptureMode::Declined).await;
    assert_eq!(c.status, "DECLINED");
    assert_eq!(s.counts().completed_captures, 0);
    assert!(s.complete_pending(&id).is_none());
}

#[tokio::test]
async fn another_process_can_approve_over_http() {
    let s = sim().await;
    let pp = client(&s);
    let created = pp
        .create_order(&new_order("ord-h", "1.00"), "c-h")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/_sim/approve/{}", s.base_url(), created.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "APPROVED");
    let r = http
        .post(format!("{}/_sim/approve/NOSUCH", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (headers, body) = s.webhook("CHECKOUT.ORDER.APPROVED", &created.id).unwrap();
    assert!(
        pp.verify_webhook(&header_map(&headers), body.as_bytes())
            .await
            .unwrap()
    );
    assert_eq!(
        pp.capture_order(&created.id, "cap-h")
            .await
            .unwrap()
            .capture
            .unwrap()
            .status,
        "COMPLETED"
    );
}

#[tokio::test]
async fn an_unreachable_paypal_is_reported_as_such() {
    let s = sim().await;
    let pp = client(&s);
    let addr = s.addr();
    s.shutdown();
    drop(s);
    // Once its port refuses connections (the server task lets its listener go in its own
    // time): by the clock, up to a minute.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "{addr} still accepts");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let e = pp.get_order("ABC").await.unwrap_err();
    assert!(matches!(e, PaypalError::Unreachable(_)), "{e:?}");
}
