//! The storefront: pages (EN/ZH), the checkout's JSON API, PayPal webhooks, order look-up and
//! the usage dashboard. No admin endpoint exists on HTTP.
//!
//! The JSON endpoints answer errors with [`error::ShopError`]; the sensitive posts pass
//! [`guard::Guard`] (CSRF, then a per-IP limit); paid orders become keys in [`fulfil`].

pub mod assets;
pub mod checkout;
pub mod error;
pub mod fulfil;
pub mod grant;
pub mod guard;
pub mod i18n;
pub mod limits;
pub mod orders;
pub mod pages;
pub mod rotate;
pub mod topup;
pub mod usage;
pub mod web;
pub mod webhooks;

pub use limits::{ShopLimits, limit_key};

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// Background upkeep of the storefront: prune idle per-IP limiter entries every minute, send
/// the outbox's receipts and notices (when email is configured), and try PayPal's credentials
/// once at start.
pub fn start_background(state: &Arc<AppState>) {
    crate::mail::outbox::start(state);
    // Wrong credentials (or sandbox ones with live) said at start, not at the first buyer's
    // checkout (found by an independent check); the token is kept for that checkout.
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let Some(state) = weak.upgrade() else { return };
        if let Some(paypal) = &state.paypal
            && let Err(e) = paypal.check_credentials().await
            && !matches!(e, crate::paypal::PaypalError::Auth)
        {
            // A refusal is logged with what to check where it happens.
            tracing::warn!(error = %e, "cannot reach PayPal at start; the checkout will try again");
        }
    });
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(state) => state.shop_limits.prune(),
                None => return,
            }
        }
    });
}

/// The storefront routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(pages::home))
        .route("/pricing", get(pages::pricing))
        .route("/docs", get(pages::docs))
        .route(
            "/checkout/{plan}",
            get(pages::checkout).post(pages::checkout_topup),
        )
        .route("/order", get(pages::order_form).post(pages::order_lookup))
        .route(
            "/dashboard",
            get(pages::dashboard_form).post(pages::dashboard),
        )
        // Its GET (typed, from history) goes to the dashboard's form: it was a bare 405.
        .route(
            "/dashboard/rotate",
            get(|| async { axum::response::Redirect::to("/dashboard") }).post(pages::rotate),
        )
        .route(
            "/demo/paypal/approve",
            get(pages::demo_approve_page).post(pages::demo_approve_submit),
        )
        .route(
            "/mail/opt-out/{token}",
            get(pages::opt_out_page).post(pages::opt_out_submit),
        )
        .route("/assets/{*path}", get(assets::serve))
        .fallback(pages::not_found_page)
        .route("/api/usage", get(usage::api_usage))
        .route("/api/orders", post(checkout::create))
        .route("/api/orders/{order_id}/capture", post(checkout::capture))
        .route("/api/keys/rotate", post(rotate::api_rotate))
        .route("/webhooks/paypal", post(webhooks::paypal))
        // Last, so it wraps every storefront route, JSON included (no-store on the capture
        // answer that carries a key).
        .layer(axum::middleware::from_fn(web::security_headers))
}
