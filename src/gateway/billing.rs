//! Billing on the request path: hold the worst case before going upstream, settle to the exact
//! cost after, write one ledger row.
//!
//! The hold covers the prompt's upper bound at the dearer prompt price plus `max_tokens` output
//! tokens; when the key cannot cover the client's own `max_tokens`, the upstream `max_tokens` is
//! lowered to what it can cover, and when it cannot cover one output token the answer is 402.
//! Holds are taken by compare-and-swap on the key's available balance, so concurrent requests
//! can never together hold more than the key has, and a charge never exceeds its hold: the
//! balance cannot go below zero.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

mod pending;
mod prompt;

pub use pending::{Billed, Pending};
pub use prompt::PromptSource;

use super::error::GatewayError;
use crate::activity::ActivityEvent;
use crate::catalog::Model;
use crate::keys::{KeySlot, KeyState, KeyStatus, Notice};
use crate::money::{TokenPrices, Usd, cost_of};
use crate::pricing::PricePeriod;
use crate::state::AppState;
use crate::status::Api;
use crate::store::{Finish, Measured, UsageRow, Write};
use crate::upstream::Dispatch;

/// Token counts from upstream's usage, in DeepSeek's terms (every dialect maps its own usage
/// onto these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt: u64,
    /// Of which served from cache.
    pub hit: u64,
    /// Of which not.
    pub miss: u64,
    /// Output tokens, reasoning included.
    pub completion: u64,
    /// Of which reasoning.
    pub reasoning: u64,
}

/// What a request's hold must cover, whatever its dialect.
#[derive(Debug, Clone, Copy)]
pub struct HoldNeeds {
    /// Upper bound of its prompt tokens.
    pub prompt_upper_bound: u64,
    /// Output tokens the client asked for at most (per choice), if it said.
    pub max_tokens: Option<u64>,
    /// Choices asked for.
    pub n: u64,
}

/// Money held for one request, and the output cap that keeps the cost inside it.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    /// Held from the key's balance.
    pub amount: Usd,
    /// `max_tokens` to send upstream.
    pub max_tokens: u64,
    /// Period the request started in.
    pub period: PricePeriod,
    /// Prices of that period.
    pub prices: TokenPrices,
    /// Most output tokens upstream may report: `max_tokens` × choices.
    pub max_output: u64,
    /// Most prompt tokens upstream may report: as many as the whole hold could pay for at the
    /// cheaper prompt price (far above any real prompt, and small enough that no count, sum or
    /// counter built from it can overflow).
    pub max_prompt: u64,
    /// The key's refund epoch when it was taken ([`KeyState::epoch`]): which refunds it pays.
    pub epoch: u64,
}

/// Hold the worst case of `req` on `key`, lowering `max_tokens` when needed; 402 when the key
/// cannot pay for one output token.
pub fn reserve(
    key: &KeyState,
    model: &Model,
    period: PricePeriod,
    req: HoldNeeds,
) -> Result<Hold, GatewayError> {
    if key.status() == KeyStatus::Exhausted {
        return Err(GatewayError::InsufficientBudget {
            available: key.available(),
            held: key.balance().held,
            spent: true,
            needs: None,
        });
    }
    let prices = *model.prices.get(period);
    let prompt_price = prices.cache_hit.max(prices.cache_miss).nanos().max(0) as i128;
    let out_price = prices.output.nanos().max(1) as i128 * i128::from(req.n.max(1));
    let prompt_part = i128::from(req.prompt_upper_bound) * prompt_price;
    let wanted = req
        .max_tokens
        .unwrap_or(u64::from(model.max_output_tokens))
        .min(u64::from(model.max_output_tokens))
        .max(1);
    // Read before the hold is taken: a refund from now on is not this hold's to pay.
    let epoch = key.epoch();
    // Work in nano-USD × 1e6 (the unit of price × tokens) so nothing rounds.
    let pays = |money: Usd| i128::from(money.nanos()) * 1_000_000 >= prompt_part + out_price;
    let affords = |money: Usd| (i128::from(money.nanos()) * 1_000_000 - prompt_part) / out_price;
    // The least this request holds: its prompt's bound and one output token, rounded up as
    // the hold is.
    let needs = Usd::from_nanos(
        i64::try_from((prompt_part + out_price + 999_999) / 1_000_000).unwrap_or(i64::MAX),
    );
    let (amount, max_tokens) = key.try_hold(|available| {
        let affordable = affords(available);
        if !pays(available) || affordable < 1 {
            return Err(unaffordable(key, available, needs, pays));
        }
        // Lowered only for want of money, never because the key's own requests in flight hold
        // it for now: a cut answer (13 tokens of an agent's 32 000) is not retried by anyone,
        // a 429 is, and the answer is whole once they finish (found by an independent check).
        // One that even the held money would not make whole is lowered now, as before (a 429
        // then only delayed a cut answer).
        if affordable < wanted as i128 {
            let held = key.balance().held;
            if held > Usd::ZERO && affords(available.saturating_add(held)) >= wanted as i128 {
                return Err(GatewayError::BudgetHeld { available, held });
            }
        }
        let max_tokens = (wanted as i128).min(affordable) as u64;
        let worst = prompt_part + i128::from(max_tokens) * out_price;
        let hold = (worst + 999_999) / 1_000_000;
        Ok((Usd::from_nanos(hold as i64), max_tokens))
    })?;
    let cheapest = prices.cache_hit.min(prices.cache_miss).nanos().max(1) as i128;
    let max_prompt =
        (i128::from(amount.nanos()) * 1_000_000 / cheapest).max(i128::from(req.prompt_upper_bound));
    Ok(Hold {
        amount,
        max_tokens,
        period,
        prices,
        max_output: max_tokens.saturating_mul(req.n.max(1)),
        max_prompt: u64::try_from(max_prompt).unwrap_or(u64::MAX),
        epoch,
    })
}

/// The refusal of a request `key` cannot pay for with `available`: 429 `budget_held` when
/// what its own requests in flight hold would pay for it (`pays`) — it may be retried once they
/// finish — and 402 `insufficient_budget` otherwise.
fn unaffordable(
    key: &KeyState,
    available: Usd,
    needs: Usd,
    pays: impl FnOnce(Usd) -> bool,
) -> GatewayError {
    let held = key.balance().held;
    if key.status() != KeyStatus::Exhausted
        && held > Usd::ZERO
        && pays(available.saturating_add(held))
    {
        GatewayError::BudgetHeld { available, held }
    } else {
        GatewayError::InsufficientBudget {
            available,
            held,
            spent: false,
            needs: Some(needs),
        }
    }
}

/// Counts upstream reported beyond what the request could have used are a malformed answer:
/// they are capped at the hold's bounds, logged, and the row says so (`clamped`), so that no
/// stored figure, sum or counter can overflow.
fn within_hold(ctx: &RequestCtx, u: Usage, measured: Measured) -> (Usage, Measured) {
    let hold = &ctx.hold;
    let capped = Usage {
        prompt: u.prompt.min(hold.max_prompt),
        hit: u.hit.min(hold.max_prompt),
        miss: u.miss.min(hold.max_prompt),
        completion: u.completion.min(hold.max_output),
        reasoning: u.reasoning.min(u.completion).min(hold.max_output),
    };
    if capped == u {
        return (u, measured);
    }
    if measured != Measured::Provider {
        // Our own estimate ran past the output cap (4 bytes a token is rough): the cap wins.
        return (capped, measured);
    }
    tracing::error!(
        request_id = %ctx.request_id,
        prompt = u.prompt,
        cache_hit = u.hit,
        cache_miss = u.miss,
        completion = u.completion,
        reasoning = u.reasoning,
        max_prompt = hold.max_prompt,
        max_output = hold.max_output,
        "upstream reported more tokens than the request could use; counts capped"
    );
    (capped, Measured::Clamped)
}

/// What one request is, from the moment it holds money until it settles.
pub struct RequestCtx {
    /// `x-request-id`.
    pub request_id: String,
    /// Paying key.
    pub key: Arc<KeyState>,
    /// The model (public name, upstream name, prices).
    pub model: Model,
    /// The hold.
    pub hold: Hold,
    /// Its place among the key's requests in flight: given back when this is dropped, after
    /// the settlement.
    pub slot: KeySlot,
    /// Streamed?
    pub stream: bool,
    /// Prompt estimate, for when upstream reports no usage.
    pub prompt_estimate: u64,
    /// The request's body, kept (shared, not copied) for a count of its prompt by DeepSeek's
    /// tokenizer, made only for a bill that would otherwise take the estimate.
    pub prompt: Option<PromptSource>,
    /// Monotonic start.
    pub started: Instant,
    /// Wall-clock start.
    pub started_at: DateTime<Utc>,
    /// The API dialect it was made in.
    pub api: Api,
    /// Whether it is being (or was) written to an upstream account's connection — until then
    /// DeepSeek has not seen it (queued for an account, or connecting), and a client that goes
    /// away (or a shutdown) owes nothing for it — and the account of its latest attempt (the
    /// one serving it once its answer began). Shared with the upstream client, which sets both.
    pub dispatch: Dispatch,
}

/// Counts upstream reported where its usage was not whole: Anthropic's input counts come in
/// `message_start` and its output count in `message_delta`, and a stream cut between them (or
/// an answer whose usage lacks one side) has only one of them. Each beats our estimate of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Prompt tokens: (cache hit, cache miss).
    pub prompt: Option<(u64, u64)>,
    /// Output tokens.
    pub output: Option<u64>,
}

/// How a request ended, as billing needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Upstream's usage, if it reported one.
    pub usage: Option<Usage>,
    /// Output tokens estimated from what was relayed.
    pub output_estimate: u64,
    /// One side of a usage upstream reported without the other: better than our estimate.
    pub reported: Reported,
    /// How it ended.
    pub finish: Finish,
    /// HTTP status the client got.
    pub status: u16,
    /// Time to first output token.
    pub ttft: Option<Duration>,
}

/// The counts and cost to bill for an outcome.
///
/// With upstream's usage: exactly that. Without it, an estimate, labelled so (what upstream
/// did report of it, one side, counts as reported): a client that
/// went away pays for its prompt and the output generated so far — unless the request was
/// still queued for an upstream account, never sent; after an upstream failure, or a cut by
/// the daemon's own shutdown, the customer pays for what reached them, and nothing when
/// nothing did (a whole answer cut by a restart was charged its prompt while the client was
/// told to retry: it paid twice).
///
/// A count of 0 where there must be one is no count: every request has a prompt, and an answer
/// that brought text has output. Upstream's zeros (a broken proxy's, or a stream's usage
/// before its end) made a delivered answer free; the side they stand for is estimated instead,
/// as if it were missing (found by an independent check).
fn bill(ctx: &RequestCtx, o: &Outcome, prompt_estimate: (u64, u64)) -> (Usage, Measured) {
    let mut reported = o.reported;
    if let Some(u) = o.usage {
        let no_output = u.completion == 0 && o.output_estimate > 0;
        if u.prompt > 0 && !no_output {
            return (u, Measured::Provider);
        }
        reported = Reported {
            prompt: (u.prompt > 0).then_some((u.hit, u.miss)),
            output: (!no_output).then_some(u.completion),
        };
    }
    reported.prompt = reported
        .prompt
        .filter(|(hit, miss)| hit.saturating_add(*miss) > 0);
    reported.output = reported.output.filter(|&n| n > 0 || o.output_estimate == 0);
    let charge = match o.finish {
        Finish::ClientAbort => ctx.dispatch.sent.load(Ordering::Acquire),
        Finish::Complete => true,
        _ => o.output_estimate > 0,
    };
    if !charge {
        return (Usage::default(), Measured::Estimated);
    }
    let (hit, miss) = reported.prompt.unwrap_or(prompt_estimate);
    let usage = Usage {
        prompt: hit.saturating_add(miss),
        hit,
        miss,
        completion: reported.output.unwrap_or(o.output_estimate),
        reasoning: 0,
    };
    (usage, Measured::Estimated)
}

/// Settle a request: charge, release the rest of the hold, and record its ledger row. Returns
/// once the row is as safe as `store.sync` promises (`full`: committed to disk; `normal`: in
/// the OS, in the journal), so the caller may then send the response's last byte. `kept`: see
/// [`crate::store::Store::record_usage`].
pub async fn settle(state: &AppState, ctx: &RequestCtx, o: Outcome, kept: bool) -> Billed {
    // The estimate would bill the prompt: DeepSeek's tokenizer counts it (a probe bill with
    // no estimate says whether it would).
    // Not while the daemon stops: what is still settling then has seconds before the
    // database closes, and a count takes a second or two a MiB (the estimate stands).
    let stopping = state.stopping.is_cancelled() || state.cut.is_cancelled();
    let scope = || crate::keys::prompts::Scope {
        api: ctx.api,
        model: ctx.model.upstream.clone(),
        account: ctx.dispatch.reached(),
    };
    let mut prompt_estimate = (0, ctx.prompt_estimate);
    if bill(ctx, &o, (0, u64::MAX)).0.miss == u64::MAX
        && !stopping
        && let Some(source) = &ctx.prompt
        && let Some(counted) = source.count(&ctx.key, scope(), ctx.started).await
    {
        prompt_estimate = counted;
    }
    // A stream's prompt DeepSeek read (by its first token) may be in its cache for the key's
    // next one.
    if let (true, Some(ttft), Some(source)) = (ctx.stream, o.ttft, &ctx.prompt) {
        source.remember(&ctx.key, scope(), ctx.started + ttft);
    }
    let (usage, measured) = bill(ctx, &o, prompt_estimate);
    let (usage, measured) = within_hold(ctx, usage, measured);
    let cost = cost_of(usage.hit, usage.miss, usage.completion, &ctx.hold.prices);
    let now = Utc::now();
    let settled = ctx
        .key
        .settle_from(ctx.hold.amount, ctx.hold.epoch, cost, now);
    let charged = settled.charged;
    let took_back = !settled.clawed_for.is_empty();
    // Refunds made while this request was in flight take what it held and did not spend,
    // each under its own order (committed before this request's row: the writer keeps the
    // order of its queue).
    for (order_id, take) in settled.clawed_for {
        tracing::info!(key_id = %ctx.key.id, order_id, taken = %take, "refund taken from a released hold");
        state.store.write_later(Write::TakeBack {
            order_id: Some(order_id),
            key_id: ctx.key.id.clone(),
            take,
            at_ms: now.timestamp_millis(),
        });
    }
    let mut measured = measured;
    if charged < cost {
        tracing::warn!(
            request_id = %ctx.request_id,
            cost = %cost,
            hold = %ctx.hold.amount,
            "upstream used more than the hold allowed; charge capped at the hold"
        );
        // The row's counts then price above its cost: it says it was capped.
        if measured == Measured::Provider {
            measured = Measured::Clamped;
        }
    }
    let row = UsageRow {
        request_id: ctx.request_id.clone(),
        key_id: ctx.key.id.clone(),
        model: ctx.model.name.clone(),
        stream: ctx.stream,
        period: ctx.hold.period,
        prompt_tokens: usage.prompt,
        cache_hit_tokens: usage.hit,
        cache_miss_tokens: usage.miss,
        completion_tokens: usage.completion,
        reasoning_tokens: usage.reasoning,
        cost: charged,
        measured,
        status: o.status,
        finish: o.finish,
        latency_ms: ctx.started.elapsed().as_millis() as u64,
        ttft_ms: o.ttft.map(|d| d.as_millis() as u64),
        created_at_ms: ctx.started_at.timestamp_millis(),
        api: ctx.api,
        account: ctx
            .dispatch
            .reached()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    // A whole answer not sent yet is counted once its row is recorded (it is withheld
    // otherwise); one whose content went out, now.
    let figures = crate::metrics::Settled::of(&row);
    if kept {
        state.metrics.settled(&ctx.model.name, &figures);
    }
    let finished = ActivityEvent::RequestFinished {
        request_id: row.request_id.clone(),
        key_id: row.key_id.clone(),
        model: row.model.clone(),
        status: row.status,
        finish: row.finish,
        cost_usd: row.cost,
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        measured,
        latency_ms: row.latency_ms,
        ttft_ms: row.ttft_ms,
        api: row.api,
        account: row.account.clone(),
        at_ms: now.timestamp_millis(),
    };
    // Record the row now, finish the bookkeeping, and only then wait for the commit: if this
    // future is dropped while waiting, the row, the exhaustion mark and the events are done.
    // The row goes to the store as it is (the event above holds what else needs its text).
    let (status, finish, cost_usd, prompt_tokens, completion_tokens, latency_ms) = (
        row.status,
        row.finish,
        row.cost,
        row.prompt_tokens,
        row.completion_tokens,
        row.latency_ms,
    );
    let committed = state.store.record_usage(row, kept);
    crate::admin::mark_if_exhausted(state, &ctx.key);
    // Sent after the row is queued: the activity tracker relies on it when it reloads the
    // day's totals from the ledger (see activity::tracker).
    state.activity.emit(finished);
    if took_back {
        // The key's budget went down by what the refunds took: consoles hear it (they kept the
        // budget from before until a reconnect; found by an independent check). After the
        // finish, whose cost they add to the key's spend, which this view already holds.
        state.activity.emit(ActivityEvent::KeyUpdated {
            key: crate::activity::views::key_view(&ctx.key),
            at_ms: now.timestamp_millis(),
        });
    }
    let recorded = match committed.await {
        Ok(()) => true,
        Err(e) => {
            // The in-memory balance is already charged, so the customer cannot overspend; the
            // row itself is what is lost, the operator must hear about it, and the answer is
            // not delivered (the caller's part): nothing leaves unbilled.
            tracing::error!(request_id = %ctx.request_id, error = %e, "ledger row not written");
            false
        }
    };
    if !kept && recorded {
        state.metrics.settled(&ctx.model.name, &figures);
    }
    if !kept && !recorded {
        tracing::warn!(
            request_id = %ctx.request_id,
            key_id = %ctx.key.id,
            "answer withheld and its charge given back: its row could not be recorded"
        );
        return Billed { recorded, charged };
    }
    tracing::info!(
        request_id = %ctx.request_id,
        key_id = %ctx.key.id,
        model = %ctx.model.name,
        status,
        finish = finish.as_str(),
        cost = %cost_usd,
        prompt_tokens,
        completion_tokens,
        measured = measured.as_str(),
        latency_ms,
        "request settled"
    );
    Billed { recorded, charged }
}

/// A request refused with 402 while the key held nothing in flight: if the key is low, its
/// owner is told it has run out, once per crossing, as when the balance crosses the exhausted
/// threshold. Each request holds its prompt's bound in bytes, so what is left after the last
/// answer is usually more than the smallest request costs, and the key stays `active` (a short
/// request still goes through) — yet a client that always sends a long conversation can use
/// none of it, and without this its owner would never hear that it ran out (found by an
/// independent check).
pub fn refused_for_money(state: &AppState, key: &KeyState) {
    if key.status() == KeyStatus::Active && key.is_low() {
        crate::admin::notice_if_first(state, key, Notice::Exhausted, true);
    }
}

/// Give back what a withheld answer was charged (its row could not be recorded, so the answer
/// was not delivered): the key's balance and request count as if it had not been made, a key
/// that this charge exhausted serves again, and the notices its settlement queued for a
/// crossing that no longer holds are dropped (the notice bits re-armed in memory, so the real
/// crossing later is told; on disk, once the database takes writes again). What refunds took
/// from the request's hold while it settled stays taken in memory; if its write failed with
/// the row, the disk lacks it until the refund is applied again (a restart gives it back to
/// the customer).
pub fn uncharge(state: &AppState, key: &KeyState, charged: Usd) {
    key.uncharge(charged);
    crate::admin::reactivate_if_funded(state, key);
    key.rearm_notices();
    state.store.write_later(Write::Rearm {
        key_id: key.id.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::gateway::dialect::ClientRequest;
    use crate::gateway::openai::ChatRequest;
    use crate::keys::KeyRecord;

    fn key(budget: i64) -> KeyState {
        KeyState::from_record(KeyRecord::for_tests("key_t", Usd::from_nanos(budget)), 30)
    }

    fn model() -> Model {
        let c = Config::default();
        crate::catalog::Catalog::from_config(&c)
            .unwrap()
            .model("deepseek-v4-flash")
            .unwrap()
            .clone()
    }

    fn req(max_tokens: Option<u64>) -> HoldNeeds {
        let mut v = serde_json::json!({"model":"deepseek-v4-flash","messages":[{"role":"user","content":"hi"}]});
        if let Some(m) = max_tokens {
            v["max_tokens"] = m.into();
        }
        ChatRequest::parse(&serde_json::to_vec(&v).unwrap())
            .unwrap()
            .hold_needs()
    }

    #[test]
    fn hold_covers_prompt_bound_and_output() {
        let r = req(Some(100));
        let k = key(1_000_000_000);
        let h = reserve(&k, &model(), PricePeriod::OffPeak, r).unwrap();
        assert_eq!(h.max_tokens, 100);
        // prompt bound × 150 nano + 100 × 600 nano, per token (prices per 1M / 1e6).
        assert_eq!(
            h.amount.nanos(),
            r.prompt_upper_bound as i64 * 150 + 100 * 600
        );
        assert_eq!(k.available().nanos(), 1_000_000_000 - h.amount.nanos());
    }

    #[test]
    fn lowers_max_tokens_then_refuses() {
        let r = req(Some(1000));
        let prompt = r.prompt_upper_bound as i64 * 150;
        // Enough for the prompt bound and 20.5 output tokens.
        let k = key(prompt + 20 * 600 + 300);
        let h = reserve(&k, &model(), PricePeriod::OffPeak, r).unwrap();
        assert_eq!(h.max_tokens, 20);
        assert_eq!(h.amount.nanos(), prompt + 20 * 600);
        // What is left (300 nano) cannot pay for one token, but what the first request holds
        // would: a wait (429), not a want of money.
        let refused = reserve(&k, &model(), PricePeriod::OffPeak, r).unwrap_err();
        assert!(
            matches!(refused, GatewayError::BudgetHeld { available, held }
                if available.nanos() == 300 && held == h.amount),
            "{refused:?}"
        );
        // With nothing held, the same 300 nano is a 402, which says what the request needs:
        // its prompt's bound and one output token.
        let k = key(300);
        let refused = reserve(&k, &model(), PricePeriod::OffPeak, r).unwrap_err();
        assert!(
            matches!(refused, GatewayError::InsufficientBudget { available, held, needs, .. }
                if available.nanos() == 300 && held == Usd::ZERO
                    && needs == Some(Usd::from_nanos(prompt + 600))),
            "{refused:?}"
        );
        assert!(
            refused.message().contains(&format!(
                "which needs ${} held",
                Usd::from_nanos(prompt + 600)
            )),
            "{}",
            refused.message()
        );
        // Exactly that much is enough (one output token); a nano less is not.
        let h = reserve(&key(prompt + 600), &model(), PricePeriod::OffPeak, r).unwrap();
        assert_eq!((h.max_tokens, h.amount.nanos()), (1, prompt + 600));
        let refused = reserve(&key(prompt + 599), &model(), PricePeriod::OffPeak, r).unwrap_err();
        assert!(
            matches!(refused, GatewayError::InsufficientBudget { needs, .. }
                if needs == Some(Usd::from_nanos(prompt + 600))),
            "{refused:?}"
        );
    }

    /// Held money stands in the way only of what it would make whole: a request that even the
    /// key's whole balance could not pay in full is lowered at once, not told to wait.
    #[test]
    fn a_request_the_held_money_would_not_make_whole_is_lowered_now() {
        let r = req(Some(1000));
        let prompt = r.prompt_upper_bound as i64 * 150;
        // Room for two requests of 20 tokens each, nowhere near 1000.
        let first_prompt = req(Some(20)).prompt_upper_bound as i64 * 150;
        let k = key(first_prompt + 20 * 600 + prompt + 20 * 600);
        let first = reserve(&k, &model(), PricePeriod::OffPeak, req(Some(20))).unwrap();
        assert_eq!(first.max_tokens, 20);
        let second = reserve(&k, &model(), PricePeriod::OffPeak, r).unwrap();
        assert_eq!(second.max_tokens, 20, "lowered now");
        // One that the held money would make whole waits instead.
        let first_prompt = req(Some(20)).prompt_upper_bound as i64 * 150;
        let k = key(first_prompt + 20 * 600 + prompt + 999 * 600 + 300);
        reserve(&k, &model(), PricePeriod::OffPeak, req(Some(20))).unwrap();
        let waits = reserve(&k, &model(), PricePeriod::OffPeak, r).unwrap_err();
        assert!(
            matches!(waits, GatewayError::BudgetHeld { .. }),
            "{waits:?}"
        );
    }

    #[test]
    fn peak_prices_apply_in_peak() {
        let r = req(Some(10));
        let k = key(1_000_000_000);
        let h = reserve(&k, &model(), PricePeriod::Peak, r).unwrap();
        assert_eq!(
            h.amount.nanos(),
            r.prompt_upper_bound as i64 * 300 + 10 * 1200
        );
    }
}
