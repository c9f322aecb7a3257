//! Orders as their buyers see them: the view of an order (its key unsealed when paid; for a
//! top-up, which key was credited, by its display prefix only), loading one, look-up by order
//! id + email (with reconciliation against PayPal), and the demo approval. Creation and capture
//! are in [`super::checkout`], fulfilment in [`super::fulfil`].
//!
//! A key replaced by its owner (rotation) is not shown again here: its new text was shown
//! once, when it was made, and the look-up says when the key was replaced instead.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keys::token::KEY_PREFIX;
use crate::kinds::OrderKind;
use crate::money::Usd;
use crate::state::AppState;
use crate::store::orders::{self as db, Order, OrderRecord, OrderStatus};

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
    /// What PayPal gave back of it: its partial refunds, or all of it once refunded.
    pub refunded_usd: Usd,
    /// created, pending, paid, failed, refunded.
    pub status: OrderStatus,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub paid_at: Option<String>,
    /// The key, for a paid purchase whose key was not replaced since (unsealed).
    pub api_key: Option<String>,
    /// purchase or top_up.
    pub kind: OrderKind,
    /// For a top-up: the display prefix of the key credited (`sk-gateway-AbCd…`).
    pub topped_up: Option<String>,
    /// RFC 3339: the key was replaced by its owner then (it is not shown any more).
    pub replaced_at: Option<String>,
    /// A refunded order whose key is not revoked (now): a top-up's key, or a purchase's key
    /// that had been topped up; it works on.
    pub key_kept: bool,
    /// The key the order paid for or added credit to is revoked now (by the operator, or by a
    /// refund of the purchase that made it).
    pub key_revoked: bool,
    /// The order's plan is no longer on sale (taken out of the config or disabled): unpaid,
    /// it can no longer be paid.
    pub plan_withdrawn: bool,
    /// The look-up found PayPal holding this order's completed payment and could not record
    /// it now (a full disk): it is not unpaid, and is recorded at a later look-up or webhook.
    pub unrecorded_payment: bool,
    /// The look-up found it made by another PayPal than the one configured (the operator
    /// switched `paypal.env` or `paypal.client_id` since), so it could not ask whether that one
    /// took the buyer's money: not "not paid", nor "nothing was taken".
    pub other_paypal: bool,
}

/// What the look-up shows besides the order: the key's sealed copy and when it was replaced.
#[derive(Debug, Clone, Default)]
pub struct KeyShown {
    /// The sealed key of a purchase.
    pub sealed: Option<Vec<u8>>,
    /// When the key's text was replaced, if it was.
    pub replaced_at: Option<DateTime<Utc>>,
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
    let ha = Sha256::digest(crate::mail::comparable_email(a).as_bytes());
    let hb = Sha256::digest(crate::mail::comparable_email(b).as_bytes());
    bool::from(ha.as_slice().ct_eq(hb.as_slice()))
}

/// The view of an order, with its key unsealed when it is a paid purchase whose key was not
/// replaced since.
pub fn order_view(state: &AppState, order: &Order, shown: &KeyShown) -> OrderView {
    let o = &order.record;
    let sealed_key = shown
        .sealed
        .as_deref()
        .filter(|_| shown.replaced_at.is_none());
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
    // The key the order paid for or added credit to, as it is now: a refunded top-up's key may
    // have been revoked since (its purchase refunded too), a paid order's by the operator.
    let key_status = o
        .key_id
        .as_deref()
        .or(order.extra.topup_key_id.as_deref())
        .and_then(|id| state.keys.by_id(id))
        .map(|k| k.status());
    let revoked = crate::keys::KeyStatus::Revoked;
    OrderView {
        order_id: o.order_id.clone(),
        plan: o.plan.clone(),
        plan_name: state
            .config
            .plans
            .get(&o.plan)
            .map_or_else(|| o.plan.clone(), |p| p.name.clone()),
        amount_usd: o.amount,
        refunded_usd: order.extra.refunded,
        status: o.status,
        created_at: rfc3339(o.created_at),
        paid_at: o.paid_at.map(rfc3339),
        api_key,
        kind: order.extra.kind,
        topped_up: order
            .extra
            .topup_key_id
            .as_deref()
            .and_then(|id| state.keys.by_id(id))
            .map(|k| match shown.replaced_at {
                None => k.prefix(),
                Some(_) => format!("{KEY_PREFIX}…"),
            }),
        replaced_at: shown.replaced_at.map(rfc3339),
        key_kept: o.status == OrderStatus::Refunded && key_status.is_some_and(|s| s != revoked),
        key_revoked: key_status == Some(revoked),
        plan_withdrawn: state.config.plans.get(&o.plan).is_none_or(|p| !p.enabled),
        unrecorded_payment: false,
        other_paypal: false,
    }
}

/// An order whole, by our id.
pub async fn load_full(state: &AppState, order_id: &str) -> Option<Order> {
    Some(load_shown(state, order_id).await?.0)
}

/// An order whole and what its look-up shows of its key, by our id (`None` too when the
/// database could not be read: logged).
pub async fn load_shown(state: &AppState, order_id: &str) -> Option<(Order, KeyShown)> {
    match try_load_shown(state, order_id).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "order query failed");
            None
        }
    }
}

/// [`load_full`], telling an order that does not exist from a database that could not be
/// read: a capture must not answer "no such order" (the page then offers to pay again) for
/// an order it could not look at.
pub async fn try_load_full(
    state: &AppState,
    order_id: &str,
) -> Result<Option<Order>, crate::store::StoreError> {
    Ok(try_load_shown(state, order_id).await?.map(|(o, _)| o))
}

/// [`load_shown`], its read error kept.
async fn try_load_shown(
    state: &AppState,
    order_id: &str,
) -> Result<Option<(Order, KeyShown)>, crate::store::StoreError> {
    let id = order_id.trim().to_string();
    if id.is_empty() || id.len() > 64 {
        return Ok(None);
    }
    state
        .store
        .read(move |c| {
            let Some(o) = db::get_full(c, &id)? else {
                // The same reads as for an order that exists, so that the time taken does
                // not say whether an order id is real (~40 µs apart; found by an independent
                // check).
                crate::store::keys::sealed(c, "")?;
                crate::store::keys::rotated_at(c, "")?;
                return Ok(None);
            };
            let shown = match (&o.record.key_id, &o.extra.topup_key_id) {
                (Some(k), _) => KeyShown {
                    sealed: crate::store::keys::sealed(c, k)?,
                    replaced_at: crate::store::keys::rotated_at(c, k)?,
                },
                // A top-up's key replaced since the order was made: whoever made the order
                // (anyone who had the key's text then) must not learn anything of the new text
                // (its prefix was shown; found by an independent check).
                (None, Some(k)) => KeyShown {
                    sealed: None,
                    replaced_at: crate::store::keys::rotated_at(c, k)?
                        .filter(|at| *at > o.record.created_at),
                },
                (None, None) => KeyShown::default(),
            };
            Ok(Some((o, shown)))
        })
        .await
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
    // Typed without its `ord_` (found by an independent check: "no order matches").
    let order_id = order_id.trim();
    let with_prefix;
    let order_id = if order_id.starts_with("ord_") || order_id.is_empty() {
        order_id
    } else {
        with_prefix = format!("ord_{order_id}");
        with_prefix.as_str()
    };
    let mut found = load_shown(state, order_id).await;
    // Compare against a dummy when the order does not exist, so both paths do the same work.
    let stored = found
        .as_ref()
        .map_or("\u{0}no-such-order", |(o, _)| o.record.email.as_str());
    let matches = same_email(stored, email);
    let mut unrecorded = false;
    let mut other_paypal = false;
    if matches
        && let Some((o, _)) = &found
        && matches!(
            o.record.status,
            OrderStatus::Created | OrderStatus::Pending | OrderStatus::Failed
        )
    {
        match reconcile(state, o).await {
            Reconciled::Nothing => {}
            Reconciled::Done => found = load_shown(state, order_id).await,
            Reconciled::Unrecorded => unrecorded = true,
            Reconciled::OtherPaypal => other_paypal = true,
        }
    }
    match found {
        Some((o, shown)) if matches => Some(OrderView {
            unrecorded_payment: unrecorded,
            other_paypal,
            ..order_view(state, &o, &shown)
        }),
        _ => None,
    }
}

/// What a look-up's [`reconcile`] did.
enum Reconciled {
    /// Nothing (PayPal holds no payment to take or record, or could not be asked).
    Nothing,
    /// Brought up to date: read the order again.
    Done,
    /// PayPal holds a completed payment that could not be recorded now (a full disk): the
    /// order is not unpaid, whatever its stored status says (the look-up told a buyer who had
    /// paid "this order has not been paid"; found by an independent check).
    Unrecorded,
    /// Another PayPal made it (see [`made_by_other_paypal`]): not asked, so whether it holds
    /// the buyer's money is unknown here.
    OtherPaypal,
}

/// Ask PayPal where an unpaid order stands and fulfil it if PayPal holds a completed
/// capture: the recovery for a payment whose capture answer and webhook both went missing.
/// An order the buyer approved but that was never captured (the tab closed between PayPal's
/// window and our capture) is captured now, as the checkout would have: it said "wait a
/// minute" for good. A top-up is not, if its key was revoked since (no money is taken for a
/// key that cannot use it).
async fn reconcile(state: &Arc<AppState>, o: &Order) -> Reconciled {
    let (Some(paypal), Some(paypal_id)) =
        (state.paypal.as_ref(), o.record.paypal_order_id.as_deref())
    else {
        return Reconciled::Nothing;
    };
    if made_by_other_paypal(state, &o.record) {
        return Reconciled::OtherPaypal;
    }
    let info = match paypal.get_order(paypal_id).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(order_id = %o.record.order_id, error = %e, "cannot ask PayPal about an order");
            return Reconciled::Nothing;
        }
    };
    let state = state.clone();
    let record = o.record.clone();
    let order_id = o.record.order_id.clone();
    // Its own task: the look-up's visitor leaving must not cut it short.
    let done = match info.capture {
        Some(c) => {
            let fulfilled =
                tokio::spawn(
                    async move { crate::shop::fulfil::fulfil(&state, &order_id, &c).await },
                )
                .await;
            if let Ok(crate::shop::fulfil::Fulfilment::Failed(why)) = &fulfilled {
                tracing::warn!(order_id = %o.record.order_id, why, "PayPal holds this order's payment, which cannot be recorded now; a later look-up or PayPal's webhook records it");
                return Reconciled::Unrecorded;
            }
            fulfilled.map(|f| format!("{f:?}"))
        }
        // A failed order is only brought up to date (a payment recorded `failed` by an earlier
        // version while PayPal held it comes out as held for review), never captured now.
        None if info.status == "APPROVED" && o.record.status != OrderStatus::Failed => {
            let order = o.clone();
            let taken = tokio::spawn(async move {
                // A top-up's key's turn, as the checkout's capture takes it, from the check to
                // the credit: a top-up of the same key captured beside this one could pass the
                // budget-cap check too (found by a review).
                let _key_turn = match order.extra.topup_key_id.as_deref() {
                    Some(id) if order.extra.kind == OrderKind::TopUp => {
                        Some(state.capturing.turn(&format!("key {id}")).await)
                    }
                    _ => None,
                };
                if !may_take_money(&state, &order) {
                    return None;
                }
                Some(crate::shop::checkout::capture_at_paypal(&state, &record).await)
            })
            .await;
            match taken {
                Ok(None) => return Reconciled::Nothing,
                // Captured now (a capture record came back), and not recorded: the look-up
                // took the money itself, and said "not paid" (found by a re-check).
                Ok(Some(Ok(crate::shop::fulfil::Fulfilment::Failed(why)))) => {
                    tracing::warn!(order_id = %o.record.order_id, why, "the look-up captured this order at PayPal and cannot record the payment now; a later look-up or PayPal's webhook records it");
                    return Reconciled::Unrecorded;
                }
                Ok(Some(f)) => Ok(format!("{f:?}")),
                Err(e) => Err(e),
            }
        }
        None => return Reconciled::Nothing,
    };
    tracing::info!(order_id = %o.record.order_id, ?done, "order reconciled with PayPal");
    Reconciled::Done
}

/// Whether another PayPal (app or environment) than the one configured made `order`: this one
/// cannot know it, and its "no such order" says nothing of what the other took, so it is not
/// asked (an ERROR says which to configure to settle it, once an hour per order: every capture
/// and look-up of it asked for one, and anyone holding the order id could retry them, 40 lines
/// a minute from one address; found by an independent check).
pub(crate) fn made_by_other_paypal(state: &AppState, order: &OrderRecord) -> bool {
    let now = state.config.paypal.app();
    let Some(made) = order.paypal_app.as_deref().filter(|made| *made != now) else {
        return false;
    };
    // Nothing to settle: the PayPal that made it declined the payment (found by an independent
    // check: its look-ups logged the ERROR above a page that rightly said it failed).
    if order.status == OrderStatus::Failed {
        return true;
    }
    // A sandbox's order never held money, and going back to the sandbox on a public shop would
    // let anyone pay with test money (found by an independent check): said, not alarmed.
    if made.starts_with("sandbox:") && now.starts_with("live:") {
        tracing::info!(order_id = %order.order_id, made_by = %made, "an order made in PayPal's sandbox is not settled with live PayPal (no money was taken)");
        return true;
    }
    let due = {
        let mut said = OTHER_PAYPAL_SAID
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        due_for(&mut said, &order.order_id, crate::clock::mono_ms())
    };
    if due {
        tracing::error!(
            order_id = %order.order_id,
            made_by = %made,
            configured = %now,
            "an order made under other PayPal settings (paypal.env:paypal.client_id) cannot be \
             settled with these; configure that PayPal again to settle it, or look it up in \
             that PayPal's dashboard (said once an hour per order)"
        );
    }
    true
}

/// When [`made_by_other_paypal`] last said each order (monotonic ms).
static OTHER_PAYPAL_SAID: std::sync::LazyLock<std::sync::Mutex<HashMap<String, i64>>> =
    std::sync::LazyLock::new(Default::default);

/// How often one order's ERROR is said again.
const OTHER_PAYPAL_EVERY_MS: i64 = 3_600_000;

/// Whether to say `order_id`'s line at `now`, noting it said; at most 10,000 orders held
/// (those said over an hour ago forgotten first, then all).
fn due_for(said: &mut HashMap<String, i64>, order_id: &str, now: i64) -> bool {
    if said
        .get(order_id)
        .is_some_and(|at| now.saturating_sub(*at) < OTHER_PAYPAL_EVERY_MS)
    {
        return false;
    }
    if said.len() >= 10_000 && !said.contains_key(order_id) {
        said.retain(|_, at| now.saturating_sub(*at) < OTHER_PAYPAL_EVERY_MS);
        if said.len() >= 10_000 {
            said.clear();
        }
    }
    said.insert(order_id.to_owned(), now);
    true
}

/// Whether the order may still be paid: a purchase, or a top-up of a key that can use it and
/// take its credit under the budget cap (the look-up captured one that no longer fitted, and
/// PayPal's money was then held for review; found by an independent check).
fn may_take_money(state: &AppState, o: &Order) -> bool {
    match o.extra.kind {
        OrderKind::Purchase => true,
        OrderKind::TopUp => {
            let budget = state.config.plans.get(&o.record.plan).map(|p| p.budget_usd);
            o.extra
                .topup_key_id
                .as_deref()
                .and_then(|id| state.keys.by_id(id))
                .zip(budget)
                .is_some_and(|(k, b)| {
                    k.status() != crate::keys::KeyStatus::Revoked
                        && crate::money::fits_budget(k.balance().budget, b)
                })
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
    // The simulator is on loopback: no proxy variable of the environment applies.
    let client = reqwest::Client::builder().no_proxy().build();
    let sent = match client {
        Ok(c) => c.post(url).send().await,
        Err(e) => Err(e),
    };
    match sent {
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

#[cfg(test)]
mod tests {
    use super::{OTHER_PAYPAL_EVERY_MS, due_for, same_email};

    /// One order's "made by another PayPal" ERROR is said once an hour, whoever retries; each
    /// order its own; the map stays bounded.
    #[test]
    fn an_order_of_another_paypal_is_said_once_an_hour() {
        let mut said = std::collections::HashMap::new();
        assert!(due_for(&mut said, "ord_a", 1_000));
        for t in [1_001, 2_000, 60_000, OTHER_PAYPAL_EVERY_MS] {
            assert!(!due_for(&mut said, "ord_a", t), "{t}");
        }
        assert!(due_for(&mut said, "ord_b", 2_000));
        assert!(due_for(&mut said, "ord_a", 1_000 + OTHER_PAYPAL_EVERY_MS));
        for n in 0..20_000 {
            due_for(&mut said, &format!("ord_{n}"), 5_000);
        }
        assert!(said.len() <= 10_000, "{}", said.len());
    }

    /// Case, spaces, Unicode's composed and decomposed forms and the domain's ASCII form (what a
    /// receipt's `To:` shows) are one address; another local part or domain is not.
    #[test]
    fn emails_compare_by_their_mail_form() {
        let stored = "Jörg@Bücher.example";
        for typed in [
            " jörg@bücher.example ",
            "jörg@xn--bcher-kva.example",
            "JÖRG@XN--BCHER-KVA.EXAMPLE",
            "jörg@bu\u{308}cher.example",
            // The local part decomposed too.
            "jo\u{308}rg@bu\u{308}cher.example",
            "JO\u{308}RG@bücher.example",
        ] {
            assert!(same_email(stored, typed), "{typed}");
        }
        for other in ["jorg@bücher.example", "jörg@bucher.example", "jörg", ""] {
            assert!(!same_email(stored, other), "{other}");
        }
        assert!(same_email("a@b.co", "A@B.CO"));
        // Stored decomposed (checkout takes the address as typed), looked up composed.
        assert!(same_email("zoe\u{308}@example.com", "zoë@example.com"));
    }
}
