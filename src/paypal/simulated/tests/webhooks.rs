//! The simulated PayPal's webhooks through the client: pending captures completed or denied
//! later, signature verification of untouched and tampered deliveries, refunds and reversals.

use super::*;

#[tokio::test]
async fn a_pending_capture_completes_later_with_a_webhook() {
    let (s, pp, id, c) = capture_in(CaptureMode::Pending).await;
    assert_eq!(
        (c.status.as_str(), c.amount),
        ("PENDING", Some(usd("10.00")))
    );
    let order = s.order(&id).unwrap();
    let cap = &order["purchase_units"][0]["payments"]["captures"][0];
    assert_eq!(cap["status_details"]["reason"], "PENDING_REVIEW");
    assert_eq!(s.counts().completed_captures, 0);
    assert!(s.webhook("PAYMENT.CAPTURE.COMPLETED", &id).is_none());

    let (headers, body) = s.webhook("PAYMENT.CAPTURE.PENDING", &id).unwrap();
    assert!(
        pp.verify_webhook(&header_map(&headers), body.as_bytes())
            .await
            .unwrap()
    );

    let (headers, body) = s.complete_pending(&id).unwrap();
    assert!(s.complete_pending(&id).is_none());
    assert!(
        pp.verify_webhook(&header_map(&headers), body.as_bytes())
            .await
            .unwrap()
    );
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["event_type"], "PAYMENT.CAPTURE.COMPLETED");
    assert_eq!(event["resource"]["id"], c.id.as_str());
    assert_eq!(event["resource"]["status"], "COMPLETED");
    assert_eq!(event["resource"]["invoice_id"], "ord-m");
    assert_eq!(event["resource"]["amount"]["value"], "10.00");
    assert_eq!(
        event["resource"]["supplementary_data"]["related_ids"]["order_id"],
        id.as_str()
    );
    assert_eq!(
        pp.get_order(&id).await.unwrap().capture.unwrap().status,
        "COMPLETED"
    );
    assert_eq!(s.counts().completed_captures, 1);
    // The replay of the capture call still answers what it answered then.
    assert_eq!(
        pp.capture_order(&id, "cap-m")
            .await
            .unwrap()
            .capture
            .unwrap()
            .status,
        "PENDING"
    );
}

#[tokio::test]
async fn issued_webhooks_verify_and_tampered_ones_do_not() {
    let s = sim().await;
    let pp = client(&s);
    let id = approved(&s, &pp, "ord-w", "1.00").await;
    assert!(s.webhook("PAYMENT.CAPTURE.COMPLETED", &id).is_none());
    pp.capture_order(&id, "cap-w").await.unwrap();
    let (headers, body) = s.webhook("PAYMENT.CAPTURE.COMPLETED", &id).unwrap();
    let map = header_map(&headers);
    assert!(pp.verify_webhook(&map, body.as_bytes()).await.unwrap());

    // Header names in any case.
    let lower: Vec<_> = headers
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.clone()))
        .collect();
    assert!(
        pp.verify_webhook(&header_map(&lower), body.as_bytes())
            .await
            .unwrap()
    );
    // Redelivery: the same event id in a new transmission; the old one still verifies.
    let (headers2, body2) = s.webhook("PAYMENT.CAPTURE.COMPLETED", &id).unwrap();
    let (e1, e2): (Value, Value) = (
        serde_json::from_str(&body).unwrap(),
        serde_json::from_str(&body2).unwrap(),
    );
    assert_eq!(e1["id"], e2["id"]);
    assert_ne!(
        header_map(&headers2)["paypal-transmission-id"],
        map["paypal-transmission-id"]
    );
    assert!(
        pp.verify_webhook(&header_map(&headers2), body2.as_bytes())
            .await
            .unwrap()
    );

    // A tampered amount.
    let tampered = body.replace("\"1.00\"", "\"100.00\"");
    assert_ne!(tampered, body);
    assert!(!pp.verify_webhook(&map, tampered.as_bytes()).await.unwrap());
    // A transmission id the simulator never issued.
    let mut unknown = map.clone();
    unknown.insert(
        "paypal-transmission-id",
        HeaderValue::from_static("00000000-0000-0000-0000-000000000000"),
    );
    assert!(!pp.verify_webhook(&unknown, body.as_bytes()).await.unwrap());
    // Another header of a genuine transmission changed.
    let mut forged = map.clone();
    forged.insert(
        "paypal-transmission-sig",
        HeaderValue::from_static("Zm9yZ2Vk"),
    );
    assert!(!pp.verify_webhook(&forged, body.as_bytes()).await.unwrap());
    // Our webhook id is not the one the event was sent to.
    let other = client_with(&s, "sim-secret", "WH-OTHER");
    assert!(!other.verify_webhook(&map, body.as_bytes()).await.unwrap());
    assert_eq!(s.counts().verify_calls, 7);

    // Missing a header, not JSON, or no webhook id configured: false without asking PayPal.
    let mut missing = map.clone();
    missing.remove("paypal-cert-url");
    assert!(!pp.verify_webhook(&missing, body.as_bytes()).await.unwrap());
    assert!(
        !pp.verify_webhook(&HeaderMap::new(), body.as_bytes())
            .await
            .unwrap()
    );
    assert!(!pp.verify_webhook(&map, b"not json").await.unwrap());
    assert!(!pp.verify_webhook(&map, b"[1,2]").await.unwrap());
    let unset = client_with(&s, "sim-secret", "");
    assert!(!unset.verify_webhook(&map, body.as_bytes()).await.unwrap());
    assert_eq!(s.counts().verify_calls, 7);
}

#[tokio::test]
async fn refunds_and_reversals_point_up_to_the_capture() {
    let s = sim().await;
    let pp = client(&s);
    let id = approved(&s, &pp, "ord-f", "5.00").await;
    let cap = pp
        .capture_order(&id, "cap-f")
        .await
        .unwrap()
        .capture
        .unwrap();
    for kind in ["PAYMENT.CAPTURE.REFUNDED", "PAYMENT.CAPTURE.REVERSED"] {
        let (headers, body) = s.webhook(kind, &id).unwrap();
        assert!(
            pp.verify_webhook(&header_map(&headers), body.as_bytes())
                .await
                .unwrap()
        );
        let event: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(event["event_type"], kind);
        assert_eq!(event["resource_type"], "refund");
        let up = event["resource"]["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "up")
            .unwrap();
        let href = up["href"].as_str().unwrap();
        assert!(
            href.ends_with(&format!("/v2/payments/captures/{}", cap.id)),
            "{href}"
        );
        assert_eq!(event["resource"]["invoice_id"], "ord-f");
    }
    let info = pp.get_order(&id).await.unwrap();
    assert_eq!(info.capture.unwrap().status, "REFUNDED");
    let order = s.order(&id).unwrap();
    assert_eq!(
        order["purchase_units"][0]["payments"]["refunds"][0]["status"],
        "COMPLETED"
    );
    assert!(s.webhook("PAYMENT.CAPTURE.NONSENSE", &id).is_none());
    assert!(s.webhook("PAYMENT.CAPTURE.REFUNDED", "UNKNOWN").is_none());
}

#[tokio::test]
async fn a_pending_capture_can_be_denied() {
    let (s, pp, id, _) = capture_in(CaptureMode::Pending).await;
    let (headers, body) = s.webhook("PAYMENT.CAPTURE.DENIED", &id).unwrap();
    assert!(
        pp.verify_webhook(&header_map(&headers), body.as_bytes())
            .await
            .unwrap()
    );
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["resource"]["status"], "DECLINED");
    assert_eq!(
        pp.get_order(&id).await.unwrap().capture.unwrap().status,
        "DECLINED"
    );
    assert!(s.complete_pending(&id).is_none());
    assert!(s.webhook("PAYMENT.CAPTURE.REFUNDED", &id).is_none());
}
