//! The storefront: pages (EN/ZH), the checkout's JSON API, PayPal webhooks, order look-up and
//! the usage dashboard. No admin endpoint exists on HTTP.

pub mod assets;
pub mod checkout;
pub mod i18n;
pub mod orders;
pub mod pages;
pub mod usage;
pub mod web;
pub mod webhooks;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::app::AppState;

/// Per-IP limits against guessing and abuse on the storefront's sensitive endpoints.
pub struct ShopLimits {
    /// `POST /order` (order id + email guessing).
    pub order_lookup: DefaultKeyedRateLimiter<IpAddr>,
    /// `POST /dashboard` (key guessing).
    pub dashboard: DefaultKeyedRateLimiter<IpAddr>,
    /// `POST /api/orders` (order spam).
    pub create_order: DefaultKeyedRateLimiter<IpAddr>,
}

fn per_minute(n: u32) -> DefaultKeyedRateLimiter<IpAddr> {
    DefaultKeyedRateLimiter::keyed(Quota::per_minute(
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
    ))
}

impl Default for ShopLimits {
    fn default() -> Self {
        ShopLimits {
            order_lookup: per_minute(10),
            dashboard: per_minute(20),
            create_order: per_minute(10),
        }
    }
}

/// The storefront routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(pages::home))
        .route("/pricing", get(pages::pricing))
        .route("/docs", get(pages::docs))
        .route("/checkout/{plan}", get(pages::checkout))
        .route("/order", get(pages::order_form).post(pages::order_lookup))
        .route(
            "/dashboard",
            get(pages::dashboard_form).post(pages::dashboard),
        )
        .route(
            "/demo/paypal/approve",
            get(pages::demo_approve_page).post(pages::demo_approve_submit),
        )
        .route("/assets/{*path}", get(assets::serve))
        .fallback(pages::not_found_page)
        .layer(axum::middleware::from_fn(web::security_headers))
        .route("/api/usage", get(usage::api_usage))
        .route("/api/orders", post(checkout::create))
        .route("/api/orders/{order_id}/capture", post(checkout::capture))
        .route("/webhooks/paypal", post(webhooks::paypal))
}
