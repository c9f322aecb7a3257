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
    /// `POST /api/orders/{id}/capture` (each call may reach PayPal).
    pub capture: DefaultKeyedRateLimiter<IpAddr>,
}

impl ShopLimits {
    /// Forget addresses idle long enough to be back at full allowance (bounded memory).
    pub fn prune(&self) {
        self.order_lookup.retain_recent();
        self.dashboard.retain_recent();
        self.create_order.retain_recent();
        self.capture.retain_recent();
    }
}

/// The key per-IP limits count by: the address, or its /64 for IPv6 (one customer typically
/// holds a whole /64, and rotating within it must not reset the limit).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(seg))
        }
    }
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
            capture: per_minute(30),
        }
    }
}

/// Background upkeep of the storefront: prune idle per-IP limiter entries every minute.
pub fn start_background(state: &Arc<AppState>) {
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
        .route("/api/usage", get(usage::api_usage))
        .route("/api/orders", post(checkout::create))
        .route("/api/orders/{order_id}/capture", post(checkout::capture))
        .route("/webhooks/paypal", post(webhooks::paypal))
        // Last, so it wraps every storefront route, JSON included (no-store on the capture
        // answer that carries a key).
        .layer(axum::middleware::from_fn(web::security_headers))
}
