//! The console's state: what the daemon looks like ([`Model`]), which view is shown, what is
//! selected, which dialog is open. No I/O: [`App::handle`] turns [`Event`]s into state changes
//! and [`Action`]s for the I/O loop.

use super::event::{Action, Command, Event};
use super::model::Model;
use crate::activity::protocol::{ActivityEvent, KeyView, Response};
use crate::money::Usd;

/// How long an outcome message stays in the status line.
const MESSAGE_MS: i64 = 8_000;
/// How long a warning the console started with stays on the status line.
const START_WARNING_MS: i64 = 30_000;

/// The five views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Streams in flight and the last finished requests.
    Live,
    /// Every key with its budget.
    Keys,
    /// The newest orders.
    Orders,
    /// Rate-limit hits and refusals over the last hour.
    Limits,
    /// The DeepSeek accounts: state, load, balance, errors; liability and coverage.
    Upstream,
}

impl View {
    /// Every view, in tab order.
    pub const ALL: [View; 5] = [
        View::Live,
        View::Keys,
        View::Orders,
        View::Limits,
        View::Upstream,
    ];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            View::Live => "Live",
            View::Keys => "Keys",
            View::Orders => "Orders",
            View::Limits => "Limits",
            View::Upstream => "Upstream",
        }
    }

    pub(super) fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// How the Keys view is sorted (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySort {
    /// Oldest first, as minted.
    Created,
    /// Least money left first.
    Remaining,
    /// Most spent first.
    Spent,
    /// Most requests first.
    Requests,
    /// Most recently used first.
    LastUsed,
    /// By plan, then oldest first.
    Plan,
}

impl KeySort {
    /// The next order.
    pub(super) fn next(self) -> KeySort {
        match self {
            KeySort::Created => KeySort::Remaining,
            KeySort::Remaining => KeySort::Spent,
            KeySort::Spent => KeySort::Requests,
            KeySort::Requests => KeySort::LastUsed,
            KeySort::LastUsed => KeySort::Plan,
            KeySort::Plan => KeySort::Created,
        }
    }

    /// Shown in the Keys view's title.
    pub fn label(self) -> &'static str {
        match self {
            KeySort::Created => "created",
            KeySort::Remaining => "remaining ↑",
            KeySort::Spent => "spent ↓",
            KeySort::Requests => "requests ↓",
            KeySort::LastUsed => "last used ↓",
            KeySort::Plan => "plan",
        }
    }
}

/// A dialog over the views; while one is open it gets every key.
#[derive(Debug, Clone, PartialEq)]
pub enum Modal {
    /// The key bindings.
    Help,
    /// Typing the Keys filter.
    Filter,
    /// "Revoke this key?"
    ConfirmRevoke {
        /// Key id.
        key_id: String,
        /// Display prefix.
        prefix: String,
    },
    /// Typing a top-up amount.
    TopUpAmount {
        /// Key id.
        key_id: String,
        /// Display prefix.
        prefix: String,
        /// What was typed.
        input: String,
        /// Why the input is not an amount.
        error: Option<String>,
    },
    /// "Add $X to this key?"
    ConfirmTopUp {
        /// Key id.
        key_id: String,
        /// Display prefix.
        prefix: String,
        /// Amount.
        usd: Usd,
    },
    /// Choosing the plan of a comp key.
    ChoosePlan {
        /// Index into [`App::plans`].
        selected: usize,
    },
    /// "Mint a comp key on this plan?"
    ConfirmCreate {
        /// Plan id.
        plan: String,
    },
    /// "Replace this key's text?"
    ConfirmRotate {
        /// Key id.
        key_id: String,
        /// Display prefix.
        prefix: String,
    },
    /// A key's new text, shown this once.
    ReplacedKey {
        /// The full new key.
        api_key: String,
        /// The old display prefix.
        old_prefix: String,
    },
    /// "Enable / disable this upstream account?"
    ConfirmAccount {
        /// The account's name.
        name: String,
        /// Put it back in service (or take it out).
        enable: bool,
    },
    /// A command is on its way.
    Working(String),
    /// A new key, shown this once.
    NewKey {
        /// The full key.
        api_key: String,
        /// Its plan.
        plan: String,
    },
    /// A command failed.
    Failed(String),
}

impl Modal {
    /// A question `y` answers (revoke, top up, mint, replace, enable or disable an account).
    pub fn is_confirmation(&self) -> bool {
        matches!(
            self,
            Modal::ConfirmRevoke { .. }
                | Modal::ConfirmTopUp { .. }
                | Modal::ConfirmCreate { .. }
                | Modal::ConfirmRotate { .. }
                | Modal::ConfirmAccount { .. }
        )
    }
}

/// The console's whole state.
#[derive(Debug, Clone)]
pub struct App {
    /// The daemon as the console knows it.
    pub model: Model,
    /// The view shown.
    pub view: View,
    /// The open dialog.
    pub modal: Option<Modal>,
    /// The clock (unix ms), set by ticks.
    pub now_ms: i64,
    /// The subscription is up.
    pub connected: bool,
    /// Why it is down (shown while reconnecting).
    pub disconnect_reason: Option<String>,
    /// Render without colours (`NO_COLOR`).
    pub mono: bool,
    /// The admin socket, shown in the header.
    pub socket: String,
    /// Plans a comp key may be minted on (config, and every plan seen on a key).
    pub plans: Vec<String>,
    /// The selected key (by id, so live re-sorting never moves it under the operator).
    pub selected_key: Option<String>,
    /// The Keys filter (case-insensitive substring of prefix, id, plan, status, email).
    pub filter: String,
    /// The Keys order.
    pub sort: KeySort,
    /// Selected row on the Live (finished list), Orders, Limits and Upstream views (by
    /// [`View::index`]; the Keys view selects by id).
    pub row: [usize; 5],
    /// The last outcome and when it happened.
    pub message: Option<(String, i64)>,
    /// Events missed in the last lag (resynchronising).
    pub lagged: Option<u64>,
    /// When the outbox was last asked for (unix ms).
    pub mail_asked_ms: i64,
    /// Reading the upstream pool: when, and whether an answer is awaited.
    pub upstream_poll: UpstreamPoll,
    /// The key of the open shown-once dialog was drawn whole: set by drawing, read by Enter
    /// and Esc, which close that dialog only then (in a window too small for it, closing would
    /// lose the key for good).
    pub key_seen: std::cell::Cell<bool>,
    /// A Ctrl-C came while a key shown once was not yet drawn whole: the next one quits.
    pub quit_armed: std::cell::Cell<bool>,
    /// Dialogs the answers of actions brought while a key shown once was open, shown after it
    /// closes, in order: an answer that replaced the open dialog lost a new key's text for
    /// good (found by an independent check: a second replacement's answer wiped the first's).
    pub waiting: std::collections::VecDeque<Modal>,
    /// When the open confirmation was first drawn with what it acts on (the key, the account):
    /// set by drawing, read by `y`, which does nothing until [`CONFIRM_READ`] after it (a window
    /// too small for the dialog showed "Revoke" alone and `y` revoked; a paste of "ry" without
    /// bracketed paste drew the dialog and confirmed it in the same burst; found by independent
    /// checks).
    pub confirm_seen: std::cell::Cell<Option<std::time::Instant>>,
}

/// How long a confirmation must have been on screen before `y` answers it: longer than the
/// keys of a paste or a held key take to arrive, shorter than anyone reads the question.
pub const CONFIRM_READ: std::time::Duration = std::time::Duration::from_millis(250);

/// How often the Orders view re-reads the outbox (events also keep it current).
const MAIL_REFRESH_MS: i64 = 10_000;

/// Reading the upstream pool (the Upstream view, the header's alert line): every couple of
/// seconds while connected, and at once when an account changes state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamPoll {
    /// When a read was last asked for or answered (unix ms): the next one waits its interval
    /// from the later of the two.
    pub last_ms: i64,
    /// An answer is awaited: one read at a time, so a slow daemon never gets a queue of them.
    pub waiting: bool,
    /// Asked for again meanwhile: read once more as soon as the answer comes.
    pub again: bool,
}

impl App {
    /// A fresh state for the socket at `socket`; `plans` from the config.
    pub fn new(socket: impl Into<String>, plans: Vec<String>, mono: bool) -> App {
        App {
            model: Model::default(),
            view: View::Live,
            modal: None,
            now_ms: 0,
            connected: false,
            disconnect_reason: None,
            mono,
            socket: socket.into(),
            plans,
            selected_key: None,
            filter: String::new(),
            sort: KeySort::Created,
            row: [0; 5],
            message: None,
            lagged: None,
            mail_asked_ms: 0,
            upstream_poll: UpstreamPoll::default(),
            key_seen: std::cell::Cell::new(false),
            quit_armed: std::cell::Cell::new(false),
            waiting: std::collections::VecDeque::new(),
            confirm_seen: std::cell::Cell::new(None),
        }
    }

    /// React to one event.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Key(k) => self.on_key(k).into_iter().collect(),
            Event::Paste(text) => {
                self.on_paste(&text);
                Vec::new()
            }
            Event::Tick(now) => {
                self.now_ms = now;
                self.model.tick(now);
                if self
                    .message
                    .as_ref()
                    .is_some_and(|(_, at)| now - at > MESSAGE_MS)
                {
                    self.message = None;
                }
                let mut actions = Vec::new();
                if self.connected
                    && self.view == View::Orders
                    && now - self.mail_asked_ms > MAIL_REFRESH_MS
                {
                    self.mail_asked_ms = now;
                    actions.push(Action::Send(Command::MailList));
                }
                actions.extend(self.poll_upstream_when_due());
                actions
            }
            Event::Socket(r) => self.apply(r),
            Event::Connected => {
                self.connected = true;
                self.disconnect_reason = None;
                self.model.connection_lost();
                // The daemon's snapshot, when it sends one, supersedes these.
                self.mail_asked_ms = self.now_ms;
                let mut actions = vec![
                    Action::Send(Command::Ping),
                    Action::Send(Command::KeysList),
                    Action::Send(Command::OrdersList),
                    Action::Send(Command::MailList),
                ];
                actions.extend(self.poll_upstream());
                actions
            }
            Event::Disconnected(why) => {
                self.connected = false;
                self.disconnect_reason = Some(why);
                self.model.connection_lost();
                Vec::new()
            }
            Event::Reply(Command::UpstreamStatus, result) => self.on_upstream_status(result),
            Event::Reply(cmd, result) => {
                self.on_reply(cmd, result);
                Vec::new()
            }
        }
    }

    /// Apply a line from the subscription connection.
    pub fn apply(&mut self, resp: Response) -> Vec<Action> {
        match resp {
            Response::Snapshot { snapshot } => {
                if self.now_ms == 0 {
                    self.now_ms = snapshot.at_ms;
                }
                self.model.apply_snapshot(*snapshot);
                self.lagged = None;
                self.learn_plans();
            }
            Response::Event { event } => {
                // The pool is read whole: a change of state is worth reading it now.
                let account_changed = matches!(event, ActivityEvent::AccountChanged { .. });
                self.model.apply_event(event);
                self.learn_plans();
                if account_changed && self.connected {
                    return self.poll_upstream().into_iter().collect();
                }
            }
            Response::Lagged { missed } => {
                self.lagged = Some(missed);
                // A daemon that sends snapshots follows with one; otherwise re-read what can be.
                if !self.model.has_snapshot {
                    return vec![
                        Action::Send(Command::KeysList),
                        Action::Send(Command::OrdersList),
                    ];
                }
            }
            Response::Error { message } => self.say(format!("daemon: {message}")),
            _ => {}
        }
        Vec::new()
    }

    /// Open `modal` as an action's outcome: after the open key shown once, if one is open.
    fn show(&mut self, modal: Modal) {
        if matches!(
            self.modal,
            Some(Modal::NewKey { .. } | Modal::ReplacedKey { .. })
        ) {
            self.waiting.push_back(modal);
            return;
        }
        if matches!(modal, Modal::NewKey { .. } | Modal::ReplacedKey { .. }) {
            self.key_seen.set(false);
            self.quit_armed.set(false);
        }
        self.modal = Some(modal);
    }

    /// The next outcome that waited, once no dialog is open.
    pub(super) fn show_waiting(&mut self) {
        if self.modal.is_none()
            && let Some(next) = self.waiting.pop_front()
        {
            self.show(next);
        }
    }

    fn on_reply(&mut self, cmd: Command, result: Result<Response, String>) {
        let operator = cmd.is_operator_action();
        if operator && matches!(self.modal, Some(Modal::Working(_))) {
            self.modal = None;
        }
        let resp = match result {
            Ok(Response::Error { message }) | Err(message) => {
                if operator {
                    self.show(Modal::Failed(message));
                }
                return;
            }
            Ok(r) => r,
        };
        match (cmd, resp) {
            (Command::Ping, Response::Pong { version }) => {
                if !self.model.has_snapshot {
                    self.model.version = Some(version);
                }
            }
            (Command::KeysList, Response::Keys { keys }) => {
                self.model.apply_keys_list(keys, self.now_ms);
                self.learn_plans();
            }
            (Command::OrdersList, Response::Orders { orders }) => {
                self.model.apply_orders_list(orders);
            }
            (Command::MailList, Response::Mail { mail, .. }) => {
                self.model.apply_mail_list(mail);
            }
            (Command::Rotate { prefix, .. }, Response::Rotated { key, api_key }) => {
                self.model.upsert_key(key);
                self.show(Modal::ReplacedKey {
                    api_key,
                    old_prefix: prefix,
                });
            }
            (Command::Revoke { prefix, .. }, Response::Key { key }) => {
                self.model.upsert_key(key);
                self.say(format!("revoked {prefix}"));
            }
            (Command::TopUp { prefix, usd, .. }, Response::Key { key }) => {
                // Exact amounts: rounded to cents, a tiny top-up read "added $0.00".
                let left = key.remaining_usd;
                let exhausted = if key.status == crate::status::KeyStatus::Exhausted {
                    " (still exhausted)"
                } else {
                    ""
                };
                self.model.upsert_key(key);
                self.say(format!("added ${usd} to {prefix}; ${left} left{exhausted}"));
            }
            (Command::SetAccount { name, enable }, Response::Upstream { upstream }) => {
                self.model.upstream_pool.apply(*upstream, self.now_ms);
                let done = if enable { "enabled" } else { "disabled" };
                self.say(format!("upstream account {name} {done}"));
            }
            (Command::Create { plan }, Response::Created { key, api_key }) => {
                self.selected_key = Some(key.id.clone());
                self.model.upsert_key(key);
                self.show(Modal::NewKey { api_key, plan });
            }
            (_, other) => {
                if operator {
                    self.show(Modal::Failed(format!(
                        "unexpected answer from the daemon: {other:?}"
                    )));
                }
            }
        }
    }

    pub(super) fn say(&mut self, msg: String) {
        self.message = Some((msg, self.now_ms));
    }

    fn learn_plans(&mut self) {
        for k in self.model.keys.values() {
            if !self.plans.contains(&k.plan) {
                self.plans.push(k.plan.clone());
                self.plans.sort();
            }
        }
    }

    /// The keys the Keys view shows: filtered, sorted.
    pub fn visible_keys(&self) -> Vec<&KeyView> {
        let needle = self.filter.to_lowercase();
        // As the web pages take a pasted key: `Bearer `, quotes and line breaks dropped.
        let typed = crate::keys::token::as_pasted(&self.filter);
        let mut keys: Vec<&KeyView> = self
            .model
            .keys
            .values()
            .filter(|k| {
                needle.is_empty()
                    // A whole key pasted in finds its key by its shown beginning (it found
                    // none: found by an independent check).
                    || typed.starts_with(k.prefix.trim_end_matches('…'))
                    || [
                        k.prefix.as_str(),
                        k.id.as_str(),
                        k.plan.as_str(),
                        k.status.as_str(),
                        k.email.as_deref().unwrap_or(""),
                        k.note.as_deref().unwrap_or(""),
                    ]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&needle))
            })
            .collect();
        let created = |a: &KeyView, b: &KeyView| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        };
        // A revoked key has nothing left to spend, as its row says.
        let left = |k: &KeyView| {
            if k.status == crate::status::KeyStatus::Revoked {
                crate::money::Usd::ZERO
            } else {
                k.remaining_usd
            }
        };
        keys.sort_by(|a, b| {
            match self.sort {
                KeySort::Created => std::cmp::Ordering::Equal,
                KeySort::Remaining => left(a).cmp(&left(b)),
                KeySort::Spent => b.spent_usd.cmp(&a.spent_usd),
                KeySort::Requests => b.requests.cmp(&a.requests),
                KeySort::LastUsed => b.last_used_at.cmp(&a.last_used_at),
                KeySort::Plan => a.plan.cmp(&b.plan),
            }
            .then_with(|| created(a, b))
        });
        keys
    }

    /// The index of the selected key among the visible ones (the first when none is).
    pub fn selected_key_index(&self, visible: &[&KeyView]) -> Option<usize> {
        if visible.is_empty() {
            return None;
        }
        Some(
            self.selected_key
                .as_ref()
                .and_then(|id| visible.iter().position(|k| &k.id == id))
                .unwrap_or(0),
        )
    }

    /// The selected key, if any is visible.
    pub fn selected(&self) -> Option<&KeyView> {
        let visible = self.visible_keys();
        self.selected_key_index(&visible).map(|i| visible[i])
    }

    /// Show `text` on the status line for [`START_WARNING_MS`] from `now` (unix ms): a warning
    /// the console was started with (the configuration's mistake), which the terminal's
    /// alternate screen hid as soon as it was printed (found by an independent check).
    pub fn warn_at_start(&mut self, text: String, now: i64) {
        self.message = Some((text, now + START_WARNING_MS - MESSAGE_MS));
    }

    /// The status line's message: disconnection first, then a recent outcome.
    pub fn status_message(&self) -> Option<&str> {
        self.message.as_ref().map(|(m, _)| m.as_str())
    }
}
