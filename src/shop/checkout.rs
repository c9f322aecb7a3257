//! The checkout's JSON API, called by `assets/js/checkout.js`.
//!
//! `POST /api/orders` creates our order and PayPal's (the amount comes from the plan in config,
//! never from the browser); with a `key`, the order is a top-up of that key, which must be one
//! of ours and not revoked before PayPal is asked for anything. `POST /api/orders/{id}/capture`
//! captures it server-side and, when PayPal's capture checks out, fulfils it
//! ([`super::fulfil`]; the capture half is in `checkout/capture.rs`). Both are behind the guard
//! (`x-csrf-token`, then a per-IP limit) and refuse with [`ShopError`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::Utc;
use governor::DefaultKeyedRateLimiter;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::ShopError;
use super::guard::{Guard, Guarded, Refusal};
use super::limits::ShopLimits;
use super::web::{csrf_header, page_lang};
use crate::activity::ActivityEvent;
use crate::admin::is_email;
use crate::config::PlanConfig;
use crate::keys::KeyStatus;
use crate::kinds::OrderKind;
use crate::paypal::{NewOrder, PayPal};
use crate::state::AppState;
use crate::store::Write;
use crate::store::orders::{OrderExtra, OrderRecord, OrderStatus};

mod capture;

pub(crate) use capture::capture_at_paypal;
pub use capture::{Capturing, capture};

/// Cookie proving this browser created the order, so the capture may show it the key at once.
fn order_cookie_name(order_id: &str) -> String {
    format!("mr_order_{order_id}")
}

/// The guard's refusal of a JSON call: `limited` is the endpoint's own 429.
fn refused(why: Refusal, limited: ShopError) -> Response {
    match why {
        Refusal::Csrf => ShopError::CsrfFailed,
        Refusal::Limited => limited,
    }
    .into_response()
}

/// `POST /api/orders` behind the guard: the body is read before the token is checked (a body
/// over the size limit is refused first, as by any handler).
pub struct CreateOrder;

impl Guarded for CreateOrder {
    /// The body, and the address the order comes from (for the shared allowance).
    type Admitted = (Bytes, std::net::IpAddr);

    fn limiter(limits: &ShopLimits) -> &DefaultKeyedRateLimiter<std::net::IpAddr> {
        &limits.create_order
    }

    async fn read(
        req: Request,
        state: &Arc<AppState>,
    ) -> Result<((Bytes, std::net::IpAddr), Option<String>), Response> {
        let token = csrf_header(req.headers()).map(str::to_owned);
        let (parts, body) = req.into_parts();
        let crate::state::ClientIp(ip) = crate::state::ClientIp::of(state, &parts);
        let req = Request::from_parts(parts, body);
        // Refused in the API's own shape, like every other answer of this endpoint.
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ShopError::BodyTooLarge.into_response()
            } else {
                ShopError::BadOrderRequest.into_response()
            }
        })?;
        Ok(((body, ip), token))
    }

    fn refuse(_: (Bytes, std::net::IpAddr), why: Refusal) -> Response {
        refused(why, ShopError::TooManyOrders)
    }
}

#[derive(Deserialize)]
struct CreateBody {
    plan: String,
    email: String,
    /// The key to add the plan's budget to (a top-up), instead of a new key.
    #[serde(default)]
    key: Option<String>,
    /// The same as a dashboard grant (the pages never hold the key itself; see
    /// [`super::grant`]).
    #[serde(default)]
    key_grant: Option<String>,
}

/// `POST /api/orders` `{plan, email, key?}` → `{order_id, paypal_order_id}`, and the cookie
/// that lets this browser see the key (or, for a top-up, which key was credited).
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Guard((body, ip)): Guard<CreateOrder>,
) -> Result<Response, ShopError> {
    let req =
        serde_json::from_slice::<CreateBody>(&body).map_err(|_| ShopError::BadOrderRequest)?;
    let email = req.email.trim().to_string();
    if !is_email(&email) {
        return Err(ShopError::InvalidEmail);
    }
    let plan = state
        .config
        .plans
        .get(&req.plan)
        .filter(|p| p.enabled)
        .ok_or(ShopError::PlanNotFound)?;
    let paypal = state
        .paypal
        .as_ref()
        .ok_or(ShopError::PaymentsUnavailable)?;
    let topup_key = key_to_top_up(&state, &req, &headers)?;
    // A key's budget stops at `MAX_BUDGET`, as the operator's top-ups do (the sum would
    // otherwise head for nano-dollars' 64-bit limit).
    if let Some(id) = &topup_key
        && let Some(key) = state.keys.by_id(id)
        && !crate::money::fits_budget(key.balance().budget, plan.budget_usd)
    {
        return Err(ShopError::KeyFull);
    }
    // A key sold while no DeepSeek account may serve could only get 502s (found by an
    // independent check: a mistyped upstream key, and the shop sold keys regardless).
    if state.upstream.none_may_serve() {
        static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
        if let Some(held) = SAID.due() {
            tracing::error!(
                since_last_said = held,
                "new orders refused: no DeepSeek account is in service (every one disabled, or \
                 its key or base_url refused at its balance check; see `modelrelay upstream \
                 status`), so a key sold now could not be used (said at most once a minute)"
            );
        }
        return Err(ShopError::NoUpstream);
    }
    // The database file was removed under the daemon: an order taken now would be paid for
    // and then lost, key and all, at the next start (found by an independent check).
    if lost_database(&state) {
        return Err(ShopError::NotRecording);
    }
    // Last of the checks: an order refused for its own fault does not use the shared allowance.
    if !state.shop_limits.shared_allowance(ip) {
        static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
        if let Some(held) = SAID.due() {
            tracing::warn!(
                since_last_said = held,
                per_minute = super::limits::ORDERS_PER_MINUTE,
                "new orders refused: more came from all addresses together than the shop takes a \
                 minute (said at most once a minute)"
            );
        }
        return Err(ShopError::OrdersPaused);
    }
    let kind = if topup_key.is_some() {
        OrderKind::TopUp
    } else {
        OrderKind::Purchase
    };
    let (Ok(order_suffix), Ok(browser_token)) = (
        crate::keys::token::random_base62(20),
        crate::keys::token::random_base62(32),
    ) else {
        return Err(ShopError::Internal);
    };
    let order_id = format!("ord_{order_suffix}");
    let now = Utc::now();
    let record = OrderRecord {
        order_id: order_id.clone(),
        plan: req.plan.clone(),
        email: email.clone(),
        amount: plan.price_usd,
        currency: "USD".into(),
        status: OrderStatus::Created,
        paypal_order_id: None,
        // The PayPal it is about to be made at (recorded again with its id): the prune of
        // old unpaid orders keeps the other PayPals' (`store::orders::insert`).
        paypal_app: Some(state.config.paypal.app()),
        paypal_capture_id: None,
        key_id: None,
        browser_token_hash: Some(Sha256::digest(browser_token.as_bytes()).into()),
        created_at: now,
        paid_at: None,
        refunded_at: None,
    };
    let extra = OrderExtra {
        kind,
        topup_key_id: topup_key.clone(),
        lang: page_lang(&headers).mail(),
        upgraded_from: None,
        refunded: crate::money::Usd::ZERO,
    };
    let write = Write::InsertOrderWith {
        order: Box::new(record),
        extra,
    };
    if let Err(e) = state.store.write(write).await {
        tracing::error!(error = %e, "order not stored");
        return Err(not_stored(&e));
    }
    let paypal_order_id = open_at_paypal(&state, paypal, &order_id, plan).await?;
    state.activity.emit(ActivityEvent::OrderCreated {
        order_id: order_id.clone(),
        plan: req.plan.clone(),
        amount_usd: plan.price_usd,
        email,
        at_ms: now.timestamp_millis(),
        order_kind: kind,
        key_id: topup_key,
    });
    tracing::info!(order_id, plan = %req.plan, kind = kind.as_str(), "order created");
    let jar = CookieJar::new().add(order_cookie(&state, &order_id, browser_token));
    let answer = json!({"order_id": order_id, "paypal_order_id": paypal_order_id});
    Ok((jar, Json(answer)).into_response())
}

/// The id of the key an order tops up (`None`: a purchase): the body's `key`, or the
/// dashboard's grant for it, refused when unknown or revoked.
fn key_to_top_up(
    state: &AppState,
    req: &CreateBody,
    headers: &HeaderMap,
) -> Result<Option<String>, ShopError> {
    // A `key` sent blank is a top-up whose key was not filled in, not a purchase: bought as a
    // new key, the customer paid for credit they did not get (found by an independent check).
    let pasted = req.key.as_deref().map(crate::keys::token::as_pasted);
    let token = match pasted.as_deref() {
        Some("") => return Err(ShopError::UnknownKey),
        token => token,
    };
    // The same for a blank grant (found by an independent re-check).
    let grant = match req.key_grant.as_deref().map(str::trim) {
        Some("") => return Err(ShopError::GrantExpired),
        grant => grant,
    };
    Ok(match (token, grant) {
        (Some(token), _) => Some(super::topup::key_to_top_up(state, token)?.id.clone()),
        (None, Some(grant)) => {
            let binding = super::web::grant_binding_of(headers);
            let key = super::grant::redeem(state, grant, &binding)
                .ok_or(ShopError::GrantExpired)?
                .key;
            if key.status() == KeyStatus::Revoked {
                return Err(ShopError::KeyRevoked);
            }
            Some(key.id.clone())
        }
        (None, None) => None,
    })
}

/// Create PayPal's order for ours (idempotent on our request id) and record its id; an order
/// PayPal did not create is marked failed.
async fn open_at_paypal(
    state: &AppState,
    paypal: &PayPal,
    order_id: &str,
    plan: &PlanConfig,
) -> Result<String, ShopError> {
    let new = NewOrder {
        order_id: order_id.to_string(),
        amount: plan.price_usd,
        description: format!("{} plan", plan.name),
    };
    let created = match paypal
        .create_order(&new, &format!("create-{order_id}"))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(order_id, error = %e, "PayPal did not create the order");
            state.store.write_later(Write::OrderStatus {
                order_id: order_id.to_string(),
                status: OrderStatus::Failed,
                at_ms: Utc::now().timestamp_millis(),
            });
            super::fulfil::announce(state, order_id).await;
            return Err(ShopError::PaypalCreateFailed);
        }
    };
    let write = Write::SetPaypalOrder {
        order_id: order_id.to_string(),
        paypal_order_id: created.id.clone(),
        paypal_app: state.config.paypal.app(),
    };
    if let Err(e) = state.store.write(write).await {
        tracing::error!(error = %e, "PayPal order id not stored");
        return Err(not_stored(&e));
    }
    Ok(created.id)
}

/// Whether the database file is gone from under the daemon (see [`crate::store::Store::file_gone`]):
/// then no payment is taken, and the log says why (at most once a minute).
pub(crate) fn lost_database(state: &AppState) -> bool {
    if !state.store.file_gone() {
        return false;
    }
    static SAID: crate::clock::Rationed = crate::clock::Rationed::new();
    if let Some(held) = SAID.due() {
        tracing::error!(
            since_last_said = held,
            database = %state.store.path().display(),
            "no payment taken: the database file was removed or replaced while the daemon ran, \
             and what it records now is lost at the next start; stop the daemon and put the \
             database back (README, \"Backups and restore\") (said at most once a minute)"
        );
    }
    true
}

/// The buyer's answer when an order's write failed: a database that cannot commit now (a full
/// disk, a lock another program holds) is a 503 to try again later, as the gateway's own
/// refusals then are (it was a 500 `internal_error`, found by an independent check); anything
/// else is our fault.
fn not_stored(e: &crate::store::StoreError) -> ShopError {
    if e.is_transient() {
        ShopError::NotRecording
    } else {
        ShopError::Internal
    }
}

/// The order cookie: this browser only, never sent cross-site.
fn order_cookie(state: &AppState, order_id: &str, browser_token: String) -> Cookie<'static> {
    let mut c = Cookie::new(order_cookie_name(order_id), browser_token);
    c.set_path("/");
    c.set_http_only(true);
    c.set_same_site(SameSite::Strict);
    c.set_secure(state.config.server.public_url.starts_with("https://"));
    c
}
