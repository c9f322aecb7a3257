//! The admin socket's wire format, shared by the daemon and its clients (CLI, console):
//! newline-delimited JSON, one [`Request`] line answered by one [`Response`] line; after
//! `subscribe`, the daemon answers `subscribed` and a `snapshot`, then keeps sending `event`
//! lines until the client hangs up (with `lagged` and a fresh `snapshot` whenever the client
//! read too slowly and events were dropped for it).
//!
//! Pure data: it names only money and the shared status enums, so a client needs nothing of
//! the daemon's insides to speak it; the daemon turns its records into these views
//! (in `activity::views`).

use serde::{Deserialize, Serialize};

use crate::kinds::{BudgetKind, MailKind, MailLang, MailStatus, OrderKind};
use crate::money::Usd;

mod upstream;

use crate::status::{Api, Finish, KeyStatus, Measured, OrderStatus};
pub use upstream::{AccountView, BalanceView, CurrencyBalance, ModelLoadView, UpstreamView};

/// A command from a client.
/// How often a subscription hears [`Response::Heartbeat`].
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Is the daemon there?
    Ping,
    /// Every key.
    KeysList,
    /// One key, by full key, id, or display prefix.
    KeysShow {
        /// Key, id or prefix.
        key: String,
    },
    /// Mint a key by hand.
    KeysCreate {
        /// Plan id.
        plan: String,
        /// Buyer's email.
        #[serde(default)]
        email: Option<String>,
        /// Budget instead of the plan's.
        #[serde(default)]
        budget_usd: Option<Usd>,
        /// Operator's note.
        #[serde(default)]
        note: Option<String>,
    },
    /// Revoke a key.
    KeysRevoke {
        /// Key, id or prefix.
        key: String,
    },
    /// Add budget to a key.
    KeysTopup {
        /// Key, id or prefix.
        key: String,
        /// Amount to add.
        usd: Usd,
    },
    /// The newest orders.
    OrdersList {
        /// How many (default 100).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// One order by id.
    OrdersShow {
        /// Our order id.
        order_id: String,
    },
    /// Stream activity events from now on.
    Subscribe,
    /// Copy the database to `path` (a path on the daemon's machine, absolute; never
    /// overwritten) with SQLite's online backup.
    Backup {
        /// Where the copy goes.
        path: std::path::PathBuf,
    },
    /// Replace a key's text (same id, plan, budget, spend, history); the old text stops
    /// working at once.
    KeysRotate {
        /// Key, id or prefix.
        key: String,
    },
    /// The newest messages of the outbox.
    MailList {
        /// How many (default 100).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Queue a failed (or waiting) message again, now.
    MailRetry {
        /// The message's number.
        id: i64,
    },
    /// Queue every message given up (`failed`) again, now, but the balance notices that must
    /// not go (see [`Response::MailRetriedFailed`]).
    MailRetryFailed,
    /// A key's latest requests (its ledger rows), or one request by its id.
    Requests {
        /// Key, id or prefix (as `keys show` takes it).
        #[serde(default)]
        key: Option<String>,
        /// A request's `x-request-id` (instead of a key).
        #[serde(default)]
        request_id: Option<String>,
        /// How many of the key's (default 20).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// The upstream pool: accounts, load, balances, liability.
    UpstreamStatus,
    /// Put an upstream account back in service.
    UpstreamEnable {
        /// The account's name.
        name: String,
    },
    /// Take an upstream account out of service until enabled.
    UpstreamDisable {
        /// The account's name.
        name: String,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `ping`.
    Pong {
        /// Daemon version.
        version: String,
    },
    /// Answer to `keys_list`.
    Keys {
        /// Oldest first.
        keys: Vec<KeyView>,
    },
    /// Answer to `keys_show`, `keys_revoke`, `keys_topup`.
    Key {
        /// The key after the command.
        key: KeyView,
    },
    /// Answer to `keys_create`: the only time the full key is sent.
    Created {
        /// The new key.
        key: KeyView,
        /// `sk-gateway-…`
        api_key: String,
    },
    /// Answer to `orders_list`.
    Orders {
        /// Newest first.
        orders: Vec<OrderView>,
    },
    /// Answer to `orders_show`.
    Order {
        /// The order.
        order: OrderView,
    },
    /// Answer to `subscribe`; events follow.
    Subscribed,
    /// Sent right after `subscribed`, and after `lagged`: the daemon's state at that moment.
    /// The events that follow are the ones it does not reflect yet (the daemon takes the
    /// snapshot and starts the event stream at the same point of the bus); only on a saturated
    /// bus may a few repeat, so applying an event twice should change nothing.
    Snapshot {
        /// The state.
        snapshot: Box<Snapshot>,
    },
    /// One activity event (after `subscribe`).
    Event {
        /// What happened.
        event: ActivityEvent,
    },
    /// Sent on a subscription every [`HEARTBEAT`]: a console that hears nothing for much
    /// longer knows the daemon is stuck, not idle (it kept saying `live` on a frozen daemon;
    /// found by an independent check).
    Heartbeat,
    /// Some events were dropped because this client read too slowly.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// Answer to `backup`: the copy is complete and synced.
    BackedUp {
        /// Where it is.
        path: std::path::PathBuf,
        /// Its size in bytes.
        bytes: u64,
        /// The database could not commit when it was taken: rows waiting for a commit (in the
        /// ledger's journal) are not in the copy.
        #[serde(default)]
        behind: bool,
    },
    /// Answer to `upstream_status`, `upstream_enable`, `upstream_disable`.
    Upstream {
        /// The pool now.
        upstream: Box<UpstreamView>,
    },
    /// The command failed.
    Error {
        /// Why, in a sentence.
        message: String,
    },
    /// Answer to `keys_rotate`: the only time the new key is sent.
    Rotated {
        /// The key after the rotation.
        key: KeyView,
        /// The new `sk-gateway-…`.
        api_key: String,
    },
    /// Answer to `requests`: ledger rows, newest first.
    Requests {
        /// The rows.
        requests: Vec<crate::store::UsageRow>,
    },
    /// Answer to `mail_list`.
    Mail {
        /// Newest first.
        mail: Vec<MailView>,
        /// Whether the daemon sends mail (`[email]` configured): an empty outbox then means
        /// nothing was due yet, not that mail is off.
        #[serde(default)]
        sending: bool,
    },
    /// Answer to `mail_retry`.
    MailRetried {
        /// The message, queued again.
        mail: MailView,
        /// Whether the daemon sends mail: with `[email]` off it waits (see [`Response::Mail`]).
        #[serde(default)]
        sending: bool,
    },
    /// Answer to `mail_retry_failed`.
    MailRetriedFailed {
        /// The messages queued again, oldest first.
        queued: Vec<MailView>,
        /// The failed messages left as they are, and why (a balance notice its owner opted out
        /// of, of a revoked key, or one a top-up made untrue).
        withheld: Vec<MailWithheld>,
        /// Whether the daemon sends mail: with `[email]` off they wait (see [`Response::Mail`]).
        #[serde(default)]
        sending: bool,
    },
}

/// A failed message `mail retry --failed` left as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailWithheld {
    /// The message's number.
    pub id: i64,
    /// Why it stays unsent.
    pub why: String,
}

/// A key as shown to the operator (never the full key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyView {
    /// `key_…`
    pub id: String,
    /// `sk-gateway-AbCd…`
    pub prefix: String,
    /// Plan id.
    pub plan: String,
    /// active, exhausted or revoked.
    pub status: KeyStatus,
    /// Granted in total.
    pub budget_usd: Usd,
    /// Charged in total.
    pub spent_usd: Usd,
    /// budget − spent.
    pub remaining_usd: Usd,
    /// Held by requests in flight.
    pub held_usd: Usd,
    /// Requests settled.
    pub requests: u64,
    /// Buyer's email.
    pub email: Option<String>,
    /// Operator's note.
    pub note: Option<String>,
    /// Paying order.
    pub order_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub last_used_at: Option<String>,
    /// Every change of its budget, oldest first (only in answers about one key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_history: Option<Vec<BudgetChange>>,
}

/// One change of a key's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetChange {
    /// purchase, grant, top_up, operator_top_up, refund.
    pub kind: BudgetKind,
    /// How much (negative for a refund).
    pub amount_usd: Usd,
    /// The order behind it.
    pub order_id: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// A message of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailView {
    /// Its number (for `mail retry`).
    pub id: i64,
    /// receipt, low_balance, exhausted, rotated.
    pub kind: MailKind,
    /// To whom.
    pub recipient: String,
    /// en or zh.
    pub lang: MailLang,
    /// The key it is about.
    pub key_id: Option<String>,
    /// The order it is about.
    pub order_id: Option<String>,
    /// queued, sent, failed.
    pub status: MailStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, while queued (`null` once sent or failed for good).
    pub next_attempt_at: Option<String>,
    /// RFC 3339.
    pub sent_at: Option<String>,
}

/// The daemon's live state, for a console that just connected (or resynchronises after lag).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Daemon version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Unix ms when the snapshot was taken.
    pub at_ms: i64,
    /// Requests in flight, oldest first.
    pub in_flight: Vec<InFlightView>,
    /// The latest finished requests (`RequestFinished` events), newest last.
    pub finished: Vec<ActivityEvent>,
    /// Every key.
    pub keys: Vec<KeyView>,
    /// The newest orders, newest first.
    pub orders: Vec<OrderView>,
    /// Rate-limit hits in the last hour, per key.
    pub rate_limited: Vec<RateLimitHits>,
    /// 402/403 refusals in the last hour (`Refused` events), newest last.
    pub refusals: Vec<ActivityEvent>,
    /// The newest refusal of the last hour no longer in `refusals` (pushed out by newer ones):
    /// the counts `refusals` gives are then a floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals_pushed_out_ms: Option<i64>,
    /// Today's totals (UTC day).
    pub today: Totals,
    /// How upstream has been doing.
    pub upstream: UpstreamHealth,
}

/// A request in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlightView {
    /// `x-request-id`.
    pub request_id: String,
    /// Key id.
    pub key_id: String,
    /// Key display prefix.
    pub key_prefix: String,
    /// Plan id.
    pub plan: String,
    /// Public model name.
    pub model: String,
    /// Streamed?
    pub stream: bool,
    /// Client address.
    pub client_ip: Option<String>,
    /// The API dialect it was made in.
    #[serde(default)]
    pub api: Api,
    /// The upstream account serving it, once known.
    #[serde(default)]
    pub account: String,
    /// Unix ms it started.
    pub started_ms: i64,
    /// Output tokens so far (streams).
    pub output_tokens: u64,
}

/// Rate-limit hits of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimitHits {
    /// Key id.
    pub key_id: String,
    /// Key display prefix.
    pub key_prefix: String,
    /// The plan's RPM.
    pub limit: u32,
    /// Unix ms of each hit in the last hour, oldest first.
    pub hits_ms: Vec<i64>,
    /// The newest hit of the last hour no longer in `hits_ms` (pushed out by newer ones): the
    /// count `hits_ms` gives is then a floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_out_ms: Option<i64>,
}

/// Today's totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Requests settled.
    pub requests: u64,
    /// Charged to keys.
    pub spend_usd: Usd,
    /// Orders paid.
    pub revenue_usd: Usd,
}

/// Upstream's recent health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpstreamHealth {
    /// The last failure's finish and status, e.g. `upstream_error 502`.
    pub last_error: Option<String>,
    /// When it happened (unix ms).
    pub last_error_ms: Option<i64>,
    /// Latency of the last completed request (ms).
    pub last_latency_ms: Option<u64>,
}

/// An order as shown to the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderView {
    /// Our id.
    pub order_id: String,
    /// created, pending, paid, failed, refunded.
    pub status: OrderStatus,
    /// Plan id.
    pub plan: String,
    /// Price.
    pub amount_usd: Usd,
    /// Buyer's email.
    pub email: String,
    /// The key it paid for.
    pub key_id: Option<String>,
    /// PayPal's order id.
    pub paypal_order_id: Option<String>,
    /// Which PayPal made it (`sandbox:<client id>` or `live:<client id>`; `None` before that
    /// was recorded).
    #[serde(default)]
    pub paypal_app: Option<String>,
    /// PayPal's capture id.
    pub paypal_capture_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub paid_at: Option<String>,
    /// purchase or top_up (for a top-up, `key_id` is the key it credits).
    #[serde(default)]
    pub kind: OrderKind,
    /// The key a top-up credits.
    #[serde(default)]
    pub topped_up_key_id: Option<String>,
    /// What PayPal gave back of the price: its partial refunds, or all of it once refunded.
    #[serde(default)]
    pub refunded_usd: Usd,
}

/// Something that happened, for the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivityEvent {
    /// A request passed the checks and went upstream.
    RequestStarted {
        /// `x-request-id`
        request_id: String,
        /// Key id.
        key_id: String,
        /// Key display prefix.
        key_prefix: String,
        /// Plan id.
        plan: String,
        /// Public model name.
        model: String,
        /// Streamed?
        stream: bool,
        /// Peer address.
        client_ip: Option<String>,
        /// The API dialect it was made in.
        #[serde(default)]
        api: Api,
        /// Unix ms.
        at_ms: i64,
    },
    /// The upstream account serving a request in flight (once its answer began).
    RequestRouted {
        /// `x-request-id`
        request_id: String,
        /// The account's name.
        account: String,
        /// Unix ms.
        at_ms: i64,
    },
    /// An upstream account changed state (healthy, cooling, disabled).
    AccountChanged {
        /// The account's name.
        account: String,
        /// Its new state.
        state: String,
        /// Why, in a few words.
        reason: String,
        /// Unix ms.
        at_ms: i64,
    },
    /// Output so far of a stream (coalesced: a few per second at most).
    RequestProgress {
        /// `x-request-id`
        request_id: String,
        /// Output tokens so far.
        output_tokens: u64,
        /// Unix ms.
        at_ms: i64,
    },
    /// A request settled.
    RequestFinished {
        /// `x-request-id`
        request_id: String,
        /// Key id.
        key_id: String,
        /// Public model name.
        model: String,
        /// HTTP status sent.
        status: u16,
        /// How it ended.
        finish: Finish,
        /// Charged.
        cost_usd: Usd,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Output tokens.
        completion_tokens: u64,
        /// Provider or estimated.
        measured: Measured,
        /// Start to last byte.
        latency_ms: u64,
        /// Start to first token.
        ttft_ms: Option<u64>,
        /// The API dialect it was made in.
        #[serde(default)]
        api: Api,
        /// The upstream account that served it (empty when none was reached).
        #[serde(default)]
        account: String,
        /// Unix ms.
        at_ms: i64,
    },
    /// A request refused for its key's RPM.
    RateLimited {
        /// Key id.
        key_id: String,
        /// Key display prefix.
        key_prefix: String,
        /// The plan's RPM.
        limit: u32,
        /// Unix ms.
        at_ms: i64,
    },
    /// A request refused before going upstream (401, 402, 403, 404).
    Refused {
        /// Key id, when the key was known.
        key_id: Option<String>,
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Unix ms.
        at_ms: i64,
    },
    /// A key was minted.
    KeyCreated {
        /// The key.
        key: KeyView,
    },
    /// A key ran out of money.
    KeyExhausted {
        /// Key id.
        key_id: String,
        /// Unix ms.
        at_ms: i64,
    },
    /// A key was revoked.
    KeyRevoked {
        /// Key id.
        key_id: String,
        /// Unix ms.
        at_ms: i64,
    },
    /// A customer started a checkout.
    OrderCreated {
        /// Our order id.
        order_id: String,
        /// Plan id.
        plan: String,
        /// Price.
        amount_usd: Usd,
        /// Buyer's email.
        email: String,
        /// Unix ms.
        at_ms: i64,
        /// purchase or top_up.
        #[serde(default)]
        order_kind: OrderKind,
        /// The key a top-up is for.
        #[serde(default)]
        key_id: Option<String>,
    },
    /// An order was paid and its key minted (or, for a top-up, credited).
    OrderPaid {
        /// Our order id.
        order_id: String,
        /// Plan id.
        plan: String,
        /// Price.
        amount_usd: Usd,
        /// The key minted.
        key_id: String,
        /// Unix ms.
        at_ms: i64,
    },
    /// An order was refunded or reversed; its key is revoked.
    OrderRefunded {
        /// Our order id.
        order_id: String,
        /// The revoked key.
        key_id: Option<String>,
        /// Unix ms.
        at_ms: i64,
    },
    /// A key got more budget.
    KeyToppedUp {
        /// Key id.
        key_id: String,
        /// Added.
        amount_usd: Usd,
        /// New total budget.
        budget_usd: Usd,
        /// Unix ms.
        at_ms: i64,
    },
    /// A key changed as a whole (plan, prefix after a rotation, budget after a refund): its
    /// view now.
    KeyUpdated {
        /// The key.
        key: KeyView,
        /// Unix ms.
        at_ms: i64,
    },
    /// A message of the outbox changed (sent, failed, queued again).
    MailChanged {
        /// The message now.
        mail: MailView,
        /// Unix ms.
        at_ms: i64,
    },
    /// An order changed in a way no other event tells: pending, failed, or held for review
    /// (an attached console kept showing `created`; found by an independent check).
    OrderChanged {
        /// The order as stored now.
        order: OrderView,
        /// Unix ms.
        at_ms: i64,
    },
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
