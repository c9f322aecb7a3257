//! The buyers: every 8 s a purchase or a top-up through the storefront's JSON API as the
//! checkout page makes them (CSRF cookie and header, the order's browser cookie), approved in
//! the simulated PayPal as the buyer's popup would, then captured — sometimes twice at once,
//! sometimes twice in a row, sometimes followed by PayPal's webhook delivered twice. Every
//! third turn a big key is also replaced through `POST /api/keys/rotate`.
//!
//! The per-address limits of the storefront (10 orders, 30 captures, 60 webhooks, 10 rotations
//! a minute) are respected, so every refusal is a surprise. What was bought is remembered for
//! the final checks: one key per paid purchase, one budget increase per paid top-up.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use modelrelay::money::Usd;
use rand::SeedableRng;
use rand::rngs::StdRng;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use super::daemon::TRIAL_BUDGET;
use super::keys::Tier;
use super::world::World;

/// An order the soak paid for.
#[derive(Clone, Debug)]
pub struct OrderRec {
    /// `ord_…`
    pub order_id: String,
    /// A top-up (else a purchase).
    pub top_up: bool,
    /// The key it minted or credited.
    pub key_id: String,
}

/// A browser: its cookies and CSRF token.
struct Browser {
    cookies: Vec<(String, String)>,
    csrf: String,
}

impl Browser {
    /// Open the pricing page, as a buyer does before checkout.
    async fn open(world: &World) -> anyhow::Result<Browser> {
        let resp = world
            .http
            .get(format!("{}/pricing", world.base))
            .send()
            .await?;
        let mut b = Browser {
            cookies: Vec::new(),
            csrf: String::new(),
        };
        b.take_cookies(&resp);
        let html = resp.text().await?;
        b.csrf = html
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .context("no csrf-token meta on /pricing")?
            .to_owned();
        Ok(b)
    }

    fn take_cookies(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all(SET_COOKIE) {
            let Some((k, v)) = v
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            self.cookies.retain(|(n, _)| n != k);
            self.cookies.push((k.to_owned(), v.to_owned()));
        }
    }

    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("; ")
    }

    /// A JSON POST as the page's script makes it; fails unless 200.
    async fn post(&mut self, world: &World, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = world
            .http
            .post(format!("{}{path}", world.base))
            .header(COOKIE, self.cookie_header())
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await?;
        self.take_cookies(&resp);
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        ensure!(status == 200, "POST {path} answered {status}: {v}");
        Ok(v)
    }
}

/// A purchase or top-up every 8 s, and a rotation every 24 s, until the load stops.
pub async fn buyers(world: Arc<World>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5409);
    let mut turn = 0u64;
    while world.pause(Duration::from_secs(8)).await {
        let (name, result) = if turn.is_multiple_of(2) {
            ("purchase", buy(&world, turn, None).await)
        } else {
            match world.keys.pick(Tier::Small, &mut rng) {
                Some(key) => ("top-up", buy(&world, turn, Some(key.index)).await),
                None => continue,
            }
        };
        match result {
            Ok(()) => world.tally.event(name),
            Err(e) => world.tally.surprise(format!("{name}: {e:#}")),
        }
        if turn % 3 == 2 {
            match rotate(&world, &mut rng).await {
                Ok(()) => world.tally.event("rotation (POST /api/keys/rotate)"),
                Err(e) => world.tally.surprise(format!("rotation: {e:#}")),
            }
        }
        turn += 1;
    }
}

/// Buy a `trial` plan (`top_up` = the small key to credit, by its index), with this turn's
/// variation of repeated captures and webhooks.
async fn buy(world: &World, turn: u64, top_up: Option<usize>) -> anyhow::Result<()> {
    let mut b = Browser::open(world).await?;
    let email = format!("soak+{turn}@example.com");
    let mut order = json!({"plan": "trial", "email": email});
    let slot = top_up.map(|i| world.keys.all()[i].clone());
    if let Some(s) = &slot {
        order["key"] = s.text.clone().into();
    }
    let created = b.post(world, "/api/orders", &order).await?;
    let order_id = created["order_id"]
        .as_str()
        .context("no order_id")?
        .to_owned();
    let paypal_id = created["paypal_order_id"]
        .as_str()
        .context("no paypal_order_id")?
        .to_owned();
    ensure!(
        world.paypal.approve(&paypal_id),
        "PayPal lost order {paypal_id}"
    );

    let path = format!("/api/orders/{order_id}/capture");
    let answers = match (turn / 2) % 4 {
        // Two captures at once (a double click): one payment, the same answer twice.
        1 => {
            world.tally.event("capture sent twice at once");
            let mut other = Browser {
                cookies: b.cookies.clone(),
                csrf: b.csrf.clone(),
            };
            let empty = json!({});
            let (x, y) = tokio::join!(
                b.post(world, &path, &empty),
                other.post(world, &path, &empty)
            );
            vec![x?, y?]
        }
        // A reload that captures again.
        3 => {
            world.tally.event("capture sent twice in a row");
            let x = b.post(world, &path, &json!({})).await?;
            vec![x, b.post(world, &path, &json!({})).await?]
        }
        _ => vec![b.post(world, &path, &json!({})).await?],
    };
    // PayPal's webhook as well, delivered twice (PayPal redelivers until it gets a 200).
    if (turn / 2) % 4 >= 2 {
        for _ in 0..2 {
            deliver_webhook(world, &paypal_id).await?;
        }
        world.tally.event("webhook delivered twice");
    }

    for a in &answers {
        ensure!(a["status"] == "paid", "capture answered {a}");
    }
    let key_id = match &slot {
        Some(s) => {
            for a in &answers {
                ensure!(a["api_key"].is_null() && a["topped_up"].is_string(), "{a}");
            }
            let credit: Usd = TRIAL_BUDGET.parse()?;
            if let Some(i) = top_up {
                world.keys.credit(i, credit.nanos());
            }
            s.id.clone()
        }
        None => {
            let text = answers[0]["api_key"]
                .as_str()
                .context("no api_key")?
                .to_owned();
            for a in &answers {
                ensure!(a["api_key"] == text.as_str(), "two captures, two keys: {a}");
            }
            let view = world.key_view(&text).await?;
            world
                .keys
                .add(view.id.clone(), text, Tier::Small, view.budget_usd.nanos());
            view.id
        }
    };
    world.remember_order(OrderRec {
        order_id,
        top_up: slot.is_some(),
        key_id,
    });
    Ok(())
}

/// `PAYMENT.CAPTURE.COMPLETED` for the order, signed by the simulated PayPal, to the webhook.
async fn deliver_webhook(world: &World, paypal_id: &str) -> anyhow::Result<()> {
    let (headers, raw) = world
        .paypal
        .webhook("PAYMENT.CAPTURE.COMPLETED", paypal_id)
        .context("the simulated PayPal made no webhook")?;
    let mut req = world
        .http
        .post(format!("{}/webhooks/paypal", world.base))
        .body(raw);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let status = req.send().await?.status();
    if status != 200 {
        bail!("webhook answered {status}");
    }
    Ok(())
}

/// Replace a big key's text through the API, under load.
async fn rotate(world: &World, rng: &mut StdRng) -> anyhow::Result<()> {
    let key = world.keys.pick(Tier::Big, rng).context("no big key")?;
    let Some(old) = world.keys.begin_rotation(key.index) else {
        // The operator is replacing that one right now.
        return Ok(());
    };
    let result = async {
        let resp = world
            .http
            .post(format!("{}/api/keys/rotate", world.base))
            .bearer_auth(&old)
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        ensure!(status == 200, "rotate answered {status}: {v}");
        let text = v["api_key"].as_str().context("no api_key")?.to_owned();
        ensure!(text.starts_with("sk-gateway-"), "{v}");
        Ok(text)
    }
    .await;
    world
        .keys
        .end_rotation(key.index, result.as_ref().ok().cloned());
    result.map(|_| ())
}
