//! Unit tests of the client's pure parts: amounts, error bodies, ids, settings.

use super::types::NANOS_PER_CENT;
use super::wire::{api_error, checked_id};
use super::*;
use crate::money::Usd;

fn usd(s: &str) -> Usd {
    s.parse().unwrap()
}

#[test]
fn formats_exactly_two_decimals() {
    assert_eq!(format_amount(usd("1")).unwrap(), "1.00");
    assert_eq!(format_amount(usd("0.5")).unwrap(), "0.50");
    assert_eq!(format_amount(usd("20.07")).unwrap(), "20.07");
    assert_eq!(format_amount(usd("1234567.89")).unwrap(), "1234567.89");
    assert_eq!(format_amount(Usd::ZERO).unwrap(), "0.00");
    for sub_cent in ["1.001", "0.000000001", "9.999"] {
        assert!(matches!(
            format_amount(usd(sub_cent)),
            Err(PaypalError::Amount(_))
        ));
    }
    assert!(matches!(
        format_amount(usd("-1.00")),
        Err(PaypalError::Amount(_))
    ));
}

#[test]
fn parses_only_two_decimal_usd_values() {
    assert_eq!(parse_amount("1.00").unwrap(), usd("1"));
    assert_eq!(parse_amount("0.01").unwrap().nanos(), NANOS_PER_CENT);
    assert_eq!(parse_amount("50.25").unwrap(), usd("50.25"));
    for bad in [
        "",
        "1",
        "1.0",
        "1.001",
        "1.000",
        ".50",
        "1.",
        "-1.00",
        "+1.00",
        " 1.00",
        "1.00 ",
        "1,00",
        "1e2",
        "1.0e0",
        "abc",
        "1.2.3",
        "99999999999.00",
    ] {
        assert!(
            matches!(parse_amount(bad), Err(PaypalError::Amount(_))),
            "{bad:?} accepted"
        );
    }
    for s in ["0.00", "1.00", "19.99", "100.10"] {
        assert_eq!(format_amount(parse_amount(s).unwrap()).unwrap(), s);
    }
}

#[test]
fn error_bodies_expose_the_issue() {
    let body = br#"{"name":"UNPROCESSABLE_ENTITY","message":"The requested action could not be performed.","debug_id":"abc123","details":[{"issue":"ORDER_NOT_APPROVED","description":"Payer has not yet approved the Order for payment."}]}"#;
    let PaypalError::Api {
        status,
        name,
        message,
    } = api_error(422, body)
    else {
        panic!("not an Api error")
    };
    assert_eq!((status, name.as_str()), (422, "ORDER_NOT_APPROVED"));
    assert!(message.contains("not yet approved") && message.contains("abc123"));

    let e = api_error(404, br#"{"name":"RESOURCE_NOT_FOUND","message":"gone"}"#);
    assert_eq!(e.api_name(), Some("RESOURCE_NOT_FOUND"));
    let e = api_error(400, br#"{"error":"invalid_client"}"#);
    assert_eq!(e.api_name(), Some("invalid_client"));
    let e = api_error(502, b"<html>bad gateway</html>");
    assert_eq!(e.api_name(), Some("HTTP_502"));

    // Credentials echoed back (by a proxy at `paypal.api_base`) are not kept to be logged.
    for body in [
        &b"<html>upstream error; Authorization was Basic QWNMSUVOVGlkOnNlY3JldDEyMzQ1Njc4OQ==</html>"[..],
        br#"{"name":"AUTHENTICATION_FAILURE","message":"token A21AAHbQ9x8fK3mZpL2vN7tR4wY6cE1uJ0sD5gB rejected"}"#,
    ] {
        let PaypalError::Api { message, name, .. } = api_error(401, body) else {
            panic!("not an Api error")
        };
        assert!(message.contains("[redacted]"), "{message}");
        assert!(!message.contains("QWNMSUVO") && !message.contains("A21AAHbQ"), "{message}");
        assert!(name == "HTTP_401" || name == "AUTHENTICATION_FAILURE");
    }
}

#[test]
fn settings_debug_hides_the_secret() {
    let s = PaypalSettings {
        base_url: "https://api-m.sandbox.paypal.com".into(),
        client_id: "id".into(),
        client_secret: "very-secret".into(),
        webhook_id: "WH".into(),
    };
    assert!(!format!("{s:?}").contains("very-secret"));
    let p = PayPal::new(s).unwrap();
    assert!(!format!("{p:?}").contains("very-secret"));
    let bad = PaypalSettings {
        base_url: "api-m.paypal.com".into(),
        client_id: String::new(),
        client_secret: String::new(),
        webhook_id: String::new(),
    };
    assert!(matches!(PayPal::new(bad), Err(PaypalError::Malformed(_))));
}

#[test]
fn ids_cannot_reshape_the_path() {
    assert!(checked_id("5O190127TN364715T").is_ok());
    for bad in ["", "../x", "a/b", "a?b", "a b", "a%2F"] {
        assert!(checked_id(bad).is_err(), "{bad:?}");
    }
}
