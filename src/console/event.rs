//! The console's one [`Event`] enum, which every source feeds (keyboard, clock, the subscription
//! connection, the command connection), and the [`Action`]s and [`Command`]s the state asks the
//! I/O loop to carry out.

use crossterm::event::KeyEvent;

use crate::activity::protocol::{Request, Response};
use crate::money::Usd;

/// Something the console must react to.
#[derive(Debug, Clone)]
pub enum Event {
    /// A key was pressed.
    Key(KeyEvent),
    /// Text pasted (bracketed paste): typed into a field that takes text (the filter, a top-up
    /// amount), ignored elsewhere — a paste is never a string of commands (a pasted "ry" on
    /// the Keys view revoked the selected key).
    Paste(String),
    /// The clock moved on (unix ms); drives elapsed times, rates and expiry of old data.
    Tick(i64),
    /// A line from the subscription connection (`subscribed`, `snapshot`, `event`, `lagged`).
    Socket(Response),
    /// The subscription connection is up (after `subscribed`).
    Connected,
    /// The subscription connection is gone; the I/O loop is retrying.
    Disconnected(String),
    /// The answer to a [`Command`] sent on the command connection.
    Reply(Command, Result<Response, String>),
}

/// What the state asks the I/O loop to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Leave the console.
    Quit,
    /// Send a command on the command connection; its answer comes back as [`Event::Reply`].
    Send(Command),
}

/// A command for the daemon, sent on the command connection (the subscription connection only
/// streams).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The daemon's version (when no snapshot tells it).
    Ping,
    /// Every key (the baseline when the daemon sends no snapshot).
    KeysList,
    /// The newest orders (the baseline when the daemon sends no snapshot).
    OrdersList,
    /// Revoke a key.
    Revoke {
        /// Key id.
        key_id: String,
        /// Its display prefix, for messages.
        prefix: String,
    },
    /// Add budget to a key.
    TopUp {
        /// Key id.
        key_id: String,
        /// Its display prefix, for messages.
        prefix: String,
        /// Amount to add.
        usd: Usd,
    },
    /// Mint a comp key on a plan.
    Create {
        /// Plan id.
        plan: String,
    },
    /// Replace a key's text (the new one is shown once).
    Rotate {
        /// Key id.
        key_id: String,
        /// Its display prefix, for messages.
        prefix: String,
    },
    /// The outbox (the Orders view shows it).
    MailList,
    /// The upstream pool (the Upstream view and the header's alert line show it).
    UpstreamStatus,
    /// Put an upstream account back in service, or take it out.
    SetAccount {
        /// The account's name.
        name: String,
        /// In service (`upstream enable`) or not (`upstream disable`).
        enable: bool,
    },
}

impl Command {
    /// The socket request carrying this command (the same ones the CLI sends).
    pub fn request(&self) -> Request {
        match self {
            Command::Ping => Request::Ping,
            Command::KeysList => Request::KeysList,
            Command::OrdersList => Request::OrdersList { limit: Some(200) },
            Command::Revoke { key_id, .. } => Request::KeysRevoke {
                key: key_id.clone(),
            },
            Command::TopUp { key_id, usd, .. } => Request::KeysTopup {
                key: key_id.clone(),
                usd: *usd,
            },
            Command::Create { plan } => Request::KeysCreate {
                plan: plan.clone(),
                email: None,
                budget_usd: None,
                note: Some("comp key minted from the console".into()),
            },
            Command::Rotate { key_id, .. } => Request::KeysRotate {
                key: key_id.clone(),
            },
            Command::MailList => Request::MailList { limit: Some(200) },
            Command::UpstreamStatus => Request::UpstreamStatus,
            Command::SetAccount { name, enable: true } => {
                Request::UpstreamEnable { name: name.clone() }
            }
            Command::SetAccount {
                name,
                enable: false,
            } => Request::UpstreamDisable { name: name.clone() },
        }
    }

    /// True for commands the operator asked for (their outcome is reported on screen).
    pub fn is_operator_action(&self) -> bool {
        matches!(
            self,
            Command::Revoke { .. }
                | Command::TopUp { .. }
                | Command::Create { .. }
                | Command::Rotate { .. }
                | Command::SetAccount { .. }
        )
    }
}
