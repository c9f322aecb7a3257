//! Orders as their buyers see them: the view of an order (its key unsealed when paid), loading
//! one, look-up by order id + email (with reconciliation against PayPal), and the demo
//! approval. Creation and capture are in [`super::checkout`], fulfilment in [`super::fulfil`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::money::Usd;
use crate::state::AppState;
use crate::store::orders::{self as db, OrderRecord, OrderStatus};

/// An order as its buyer may see it.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    /// Ours.
    pub order_id: String,
    /// Plan id.
    pub plan: String,
    /// Plan display name.
    pub plan_name: String,
    /// Price paid.
    pub amount_usd: Usd,
    /// created, pending, paid, failed, refunded.
    pub status: OrderStatus,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub paid_at: Option<String>,
    /// The key, for a paid order (unsealed).
    pub api_key: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Normalise an email for comparison: trimmed, lower-case.
pub fn normalize_email(e: &str) -> String {
    e.trim().to_lowercase()
}

/// Compare two emails in constant time (over their hashes, so length does not leak either).
fn same_email(a: &str, b: &str) -> bool {
    let ha = Sha256::digest(normalize_email(a).as_bytes());
    let hb = Sha256::digest(normalize_email(b).as_bytes());
    bool::from(ha.as_slice().ct_eq(hb.as_slice()))
}

/// The view of an order, with its key unsealed when paid.
pub fn order_view(state: &AppState, o: &OrderRecord, sealed_key: Option<&[u8]>) -> OrderView {
    let api_key = match (&o.key_id, sealed_key, o.status) {
        (Some(id), Some(sealed), OrderStatus::Paid) => match state.sealer.open(id, sealed) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(order_id = %o.order_id, error = %e, "cannot unseal the key of a paid order");
                None
            }
        },
        _ => None,
    };
    OrderView {
        order_id: o.order_id.clone(),
        plan: o.plan.clone(),
        plan_name: state
            .config
            .plans
            .get(&o.plan)
            .map_or_else(|| o.plan.clone(), |p| p.name.clone()),
        amount_usd: o.amount,
        status: o.status,
        created_at: rfc3339(o.created_at),
        paid_at: o.paid_at.map(rfc3339),
        api_key,
    }
}

/// An order and its sealed key, by our id.
pub async fn load_order(
    state: &AppState,
    order_id: &str,
) -> Option<(OrderRecord, Option<Vec<u8>>)> {
    let id = order_id.trim().to_string();
    if id.is_empty() || id.len() > 64 {
        return None;
    }
    let loaded = state
        .store
        .read(move |c| {
            let Some(o) = db::get(c, &id)? else {
                return Ok(None);
            };
            let sealed = match &o.key_id {
                Some(k) => crate::store::keys::sealed(c, k)?,
                None => None,
            };
            Ok(Some((o, sealed)))
        })
        .await;
    match loaded {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "order query failed");
            None
        }
    }
}

/// Look an order up by id and email. An unknown id and a wrong email give the same `None`,
/// and the email comparison takes the same time either way.
pub async fn lookup_order(state: &Arc<AppState>, order_id: &str, email: &str) -> Option<OrderView> {
    let mut found = load_order(state, order_id).await;
    // Compare against a dummy when the order does not exist, so both paths do the same work.
    let stored = found
        .as_ref()
        .map_or("\u{0}no-such-order", |(o, _)| o.email.as_str());
    let matches = same_email(stored, email);
    if matches
        && let Some((o, _)) = &found
        && matches!(o.status, OrderStatus::Created | OrderStatus::Pending)
        && reconcile(state, o).await
    {
        found = load_order(state, order_id).await;
    }
    match found {
        Some((o, sealed)) if matches => Some(order_view(state, &o, sealed.as_deref())),
        _ => None,
    }
}

/// Ask PayPal where an unpaid order stands and fulfil it if PayPal holds a completed
/// capture: the recovery for a payment whose capture answer and webhook both went missing.
/// True when something was done.
async fn reconcile(state: &Arc<AppState>, o: &OrderRecord) -> bool {
    let (Some(paypal), Some(paypal_id)) = (state.paypal.as_ref(), o.paypal_order_id.as_deref())
    else {
        return false;
    };
    match paypal.get_order(paypal_id).await {
        Ok(info) => match info.capture {
            Some(c) => {
                let state = state.clone();
                let order_id = o.order_id.clone();
                // Its own task: the look-up's visitor leaving must not cut it short.
                let done = tokio::spawn(async move {
                    crate::shop::fulfil::fulfil(&state, &order_id, &c).await
                })
                .await;
                tracing::info!(order_id = %o.order_id, ?done, "order reconciled with PayPal");
                true
            }
            None => false,
        },
        Err(e) => {
            tracing::warn!(order_id = %o.order_id, error = %e, "cannot ask PayPal about an order");
            false
        }
    }
}

/// Demo mode: approve the order at the simulated PayPal, as the buyer would in PayPal's
/// popup. Returns the order's plan on success.
pub async fn demo_approve(state: &Arc<AppState>, order_id: &str) -> Option<String> {
    if !state.demo {
        return None;
    }
    let (order, _) = load_order(state, order_id).await?;
    let paypal_id = order.paypal_order_id.clone()?;
    let url = format!(
        "{}/_sim/approve/{paypal_id}",
        state.config.paypal.base_url()
    );
    match reqwest::Client::new().post(url).send().await {
        Ok(r) if r.status().is_success() => Some(order.plan),
        Ok(r) => {
            tracing::warn!(
                status = r.status().as_u16(),
                "simulated PayPal refused the approval"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "simulated PayPal unreachable");
            None
        }
    }
}
