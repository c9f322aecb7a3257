//! The simulated PayPal's records and how they look on the wire: orders, captures, refunds,
//! webhook events and error bodies, shaped like PayPal's so the client parses real shapes.

use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};

use crate::money::Usd;
use crate::paypal::format_amount;

/// An order as the simulator keeps it.
pub(super) struct SimOrder {
    pub id: String,
    /// `CREATED`, `APPROVED`, `COMPLETED`.
    pub status: String,
    pub reference_id: String,
    pub custom_id: Option<String>,
    pub invoice_id: Option<String>,
    pub description: Option<String>,
    pub amount: Usd,
    /// The buyer went through the approval (a payer is shown from then on).
    pub approved: bool,
    pub create_time: String,
    pub update_time: String,
    pub capture: Option<SimCapture>,
    /// The `PayPal-Request-Id`s of captures declined (`INSTRUMENT_DECLINED`): PayPal answers a
    /// request id it has seen with that request's outcome, the decline included.
    pub declined_requests: Vec<String>,
}

/// The one capture of an order.
pub(super) struct SimCapture {
    pub id: String,
    /// `COMPLETED`, `PENDING`, `DECLINED`, `REFUNDED`.
    pub status: String,
    pub status_details: Option<Value>,
    pub amount: Usd,
    pub currency: String,
    /// The `PayPal-Request-Id` that made it: a replay with it gets `reply` again.
    pub request_id: Option<String>,
    /// The 201 body the capture call answered.
    pub reply: Value,
    pub create_time: String,
    pub update_time: String,
    /// Its refunds, oldest first: partial ones, then (or only) the one that refunds the rest.
    pub refunds: Vec<Refund>,
}

impl SimCapture {
    /// What its refunds gave back, in all.
    pub fn refunded(&self) -> Usd {
        self.refunds
            .iter()
            .fold(Usd::ZERO, |sum, r| sum.saturating_add(r.amount))
    }
}

/// A refund of a capture: of all of it, of part, or of what earlier ones left.
pub(super) struct Refund {
    pub id: String,
    pub create_time: String,
    pub amount: Usd,
}

/// Now, as PayPal writes times (`2026-11-04T10:00:00Z`).
pub(super) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A UUID-shaped transmission id, as PayPal sends in `PAYPAL-TRANSMISSION-ID`.
pub(super) fn transmission_id() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An amount as PayPal shows it; simulator amounts are whole cents, but never panic if not.
fn money(u: Usd) -> String {
    format_amount(u).unwrap_or_else(|_| u.to_string())
}

fn link(href: String, rel: &str, method: &str) -> Value {
    json!({"href": href, "rel": rel, "method": method})
}

/// PayPal's error body: `{"name","message","debug_id","details":[{"issue","description"}]}`.
pub(super) fn error_body(name: &str, message: &str, issue: Option<(&str, &str)>) -> Value {
    let mut body = json!({
        "name": name,
        "message": message,
        "debug_id": hex::encode(rand::rng().random::<[u8; 7]>()),
    });
    if let Some((issue, description)) = issue {
        body["details"] = json!([{"issue": issue, "description": description}]);
        body["links"] = json!([link(
            format!("https://developer.paypal.com/docs/api/orders/v2/#error-{issue}"),
            "information_link",
            "GET",
        )]);
    }
    body
}

fn payer() -> Value {
    json!({
        "name": {"given_name": "Sim", "surname": "Buyer"},
        "email_address": "sim-buyer@example.com",
        "payer_id": "SIMBUYER00001",
        "address": {"country_code": "US"},
    })
}

impl SimOrder {
    fn order_links(&self, base: &str) -> Vec<Value> {
        let me = format!("{base}/v2/checkout/orders/{}", self.id);
        vec![
            link(me.clone(), "self", "GET"),
            link(
                format!("{base}/checkoutnow?token={}", self.id),
                "approve",
                "GET",
            ),
            link(me.clone(), "update", "PATCH"),
            link(format!("{me}/capture"), "capture", "POST"),
        ]
    }

    /// The 201 answer to the create call.
    pub fn created_reply(&self, base: &str) -> Value {
        json!({"id": self.id, "status": "CREATED", "links": self.order_links(base)})
    }

    /// `GET /v2/checkout/orders/{id}`.
    pub fn to_json(&self, base: &str) -> Value {
        let mut unit = json!({
            "reference_id": self.reference_id,
            "amount": {"currency_code": "USD", "value": money(self.amount)},
            "payee": {"email_address": "merchant@example.com", "merchant_id": "SIMMERCHANT01"},
        });
        if let Some(invoice) = &self.invoice_id {
            unit["invoice_id"] = json!(invoice);
        }
        if let Some(d) = &self.description {
            unit["description"] = json!(d);
        }
        if let Some(c) = &self.custom_id {
            unit["custom_id"] = json!(c);
        }
        if let Some(c) = &self.capture {
            let mut payments = json!({"captures": [self.capture_json(base, c)]});
            if !c.refunds.is_empty() {
                let refunds: Vec<Value> = (0..c.refunds.len())
                    .map(|i| self.refund_body(base, c, i))
                    .collect();
                payments["refunds"] = json!(refunds);
            }
            unit["payments"] = payments;
        }
        let links = if self.status == "COMPLETED" {
            vec![link(
                format!("{base}/v2/checkout/orders/{}", self.id),
                "self",
                "GET",
            )]
        } else {
            self.order_links(base)
        };
        let mut order = json!({
            "id": self.id,
            "intent": "CAPTURE",
            "status": self.status,
            "purchase_units": [unit],
            "create_time": self.create_time,
            "update_time": self.update_time,
            "links": links,
        });
        if self.approved {
            order["payer"] = payer();
        }
        order
    }

    fn capture_json(&self, base: &str, c: &SimCapture) -> Value {
        let me = format!("{base}/v2/payments/captures/{}", c.id);
        let mut v = json!({
            "id": c.id,
            "status": c.status,
            "amount": {"currency_code": c.currency, "value": money(c.amount)},
            "final_capture": true,
            "seller_protection": {
                "status": "ELIGIBLE",
                "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"],
            },
            "links": [
                link(me.clone(), "self", "GET"),
                link(format!("{me}/refund"), "refund", "POST"),
                link(format!("{base}/v2/checkout/orders/{}", self.id), "up", "GET"),
            ],
            "create_time": c.create_time,
            "update_time": c.update_time,
        });
        if let Some(custom) = &self.custom_id {
            v["custom_id"] = json!(custom);
        }
        if let Some(invoice) = &self.invoice_id {
            v["invoice_id"] = json!(invoice);
        }
        if let Some(d) = &c.status_details {
            v["status_details"] = d.clone();
        }
        v
    }

    /// The 201 answer to the capture call (rendered once, at capture time).
    pub fn capture_reply(&self, base: &str) -> Value {
        let captures: Vec<Value> = self
            .capture
            .iter()
            .map(|c| self.capture_json(base, c))
            .collect();
        json!({
            "id": self.id,
            "status": self.status,
            "payment_source": {"paypal": {
                "email_address": "sim-buyer@example.com",
                "account_id": "SIMBUYER00001",
                "account_status": "VERIFIED",
                "name": {"given_name": "Sim", "surname": "Buyer"},
                "address": {"country_code": "US"},
            }},
            "purchase_units": [{
                "reference_id": self.reference_id,
                "payments": {"captures": captures},
            }],
            "payer": payer(),
            "links": [link(format!("{base}/v2/checkout/orders/{}", self.id), "self", "GET")],
        })
    }

    /// The capture as a webhook resource: with the order id PayPal adds there.
    pub fn capture_resource(&self, base: &str) -> Value {
        let Some(c) = &self.capture else {
            return Value::Null;
        };
        let mut v = self.capture_json(base, c);
        v["supplementary_data"] = json!({"related_ids": {"order_id": self.id}});
        v
    }

    /// Refund `i` of the capture as PayPal shows it: its own amount, and in its breakdown what
    /// the capture's refunds gave back up to and including it.
    fn refund_body(&self, base: &str, c: &SimCapture, i: usize) -> Value {
        let r = &c.refunds[i];
        let total = c.refunds[..=i]
            .iter()
            .fold(Usd::ZERO, |sum, r| sum.saturating_add(r.amount));
        let mut v = json!({
            "id": r.id,
            "amount": {"currency_code": c.currency, "value": money(r.amount)},
            "seller_payable_breakdown": {
                "gross_amount": {"currency_code": c.currency, "value": money(r.amount)},
                "total_refunded_amount": {"currency_code": c.currency, "value": money(total)},
            },
            "status": "COMPLETED",
            "create_time": r.create_time,
            "update_time": r.create_time,
            "links": [
                link(format!("{base}/v2/payments/refunds/{}", r.id), "self", "GET"),
                link(format!("{base}/v2/payments/captures/{}", c.id), "up", "GET"),
            ],
        });
        if let Some(custom) = &self.custom_id {
            v["custom_id"] = json!(custom);
        }
        if let Some(invoice) = &self.invoice_id {
            v["invoice_id"] = json!(invoice);
        }
        v
    }

    /// The capture's latest refund as a webhook resource, if there is one.
    pub fn refund_json(&self, base: &str) -> Option<Value> {
        let c = self.capture.as_ref()?;
        let last = c.refunds.len().checked_sub(1)?;
        Some(self.refund_body(base, c, last))
    }
}

/// A webhook event envelope around `resource`.
pub(super) fn event(base: &str, kind: &str, resource: Value, order: &SimOrder) -> Value {
    let id = format!("WH-{}-{}", new_id(17), new_id(17));
    let value = order
        .capture
        .as_ref()
        .map_or_else(|| money(order.amount), |c| money(c.amount));
    let currency = order
        .capture
        .as_ref()
        .map_or("USD", |c| c.currency.as_str());
    let (resource_type, resource_version, summary) = match kind {
        "CHECKOUT.ORDER.APPROVED" => (
            "checkout-order",
            "2.0",
            "An order has been approved by buyer".to_owned(),
        ),
        "PAYMENT.CAPTURE.COMPLETED" => (
            "capture",
            "2.0",
            format!("Payment completed for $ {value} {currency}"),
        ),
        "PAYMENT.CAPTURE.PENDING" => (
            "capture",
            "2.0",
            format!("Payment pending for $ {value} {currency}"),
        ),
        "PAYMENT.CAPTURE.DENIED" => (
            "capture",
            "2.0",
            format!("Payment denied for $ {value} {currency}"),
        ),
        "PAYMENT.CAPTURE.REVERSED" => (
            "refund",
            "2.0",
            format!("A $ {value} {currency} capture payment was reversed"),
        ),
        _ => (
            "refund",
            "2.0",
            format!("A $ {value} {currency} capture payment was refunded"),
        ),
    };
    let me = format!("{base}/v1/notifications/webhooks-events/{id}");
    json!({
        "id": id,
        "event_version": "1.0",
        "create_time": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "resource_type": resource_type,
        "resource_version": resource_version,
        "event_type": kind,
        "summary": summary,
        "resource": resource,
        "links": [
            link(me.clone(), "self", "GET"),
            link(format!("{me}/resend"), "resend", "POST"),
        ],
    })
}

/// `len` random uppercase alphanumerics: the shape of PayPal's order, capture and refund ids.
pub(super) fn new_id(len: usize) -> String {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}
