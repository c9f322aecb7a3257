//! The storefront pages.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::web::PageCtx;
use crate::app::AppState;

#[derive(Template)]
#[template(path = "pages/home.html")]
struct Home<'a> {
    ctx: &'a PageCtx,
}

/// `GET /`
pub async fn home(State(_state): State<Arc<AppState>>, ctx: PageCtx) -> Response {
    ctx.page(Home { ctx: &ctx }.render())
}

/// `GET /pricing`
pub async fn pricing(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}

/// `GET /docs`
pub async fn docs(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}

/// `GET /checkout/{plan}`
pub async fn checkout(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}

/// `GET /order`
pub async fn order_form(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}

/// `POST /order`
pub async fn order_lookup(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}

/// `GET /dashboard`
pub async fn dashboard_form(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}

/// `POST /dashboard`
pub async fn dashboard(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}

/// `GET /demo/paypal/approve` (demo only)
pub async fn demo_approve_page(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}

/// `POST /demo/paypal/approve` (demo only)
pub async fn demo_approve_submit(state: State<Arc<AppState>>, ctx: PageCtx) -> Response {
    home(state, ctx).await
}
