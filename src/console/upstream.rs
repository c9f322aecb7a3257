//! The console's side of the upstream pool: when it is read (`upstream_status` every couple of
//! seconds while connected, and at once on `account_changed`), what an answer changes, and
//! the Upstream view's enable/disable flow up to its confirmation.

use super::app::{App, Modal};
use super::event::{Action, Command};
use crate::activity::protocol::{AccountView, Response};

/// How often the pool is read while connected.
pub const UPSTREAM_POLL_MS: i64 = 2_000;

impl App {
    /// Read the pool now, or as soon as the read under way is answered.
    pub(super) fn poll_upstream(&mut self) -> Option<Action> {
        let poll = &mut self.upstream_poll;
        if poll.waiting {
            poll.again = true;
            return None;
        }
        poll.waiting = true;
        poll.again = false;
        poll.last_ms = self.now_ms;
        Some(Action::Send(Command::UpstreamStatus))
    }

    /// Read the pool if connected and the last read is old enough.
    pub(super) fn poll_upstream_when_due(&mut self) -> Option<Action> {
        let due = self.now_ms - self.upstream_poll.last_ms >= UPSTREAM_POLL_MS;
        if self.connected && due && !self.upstream_poll.waiting {
            return self.poll_upstream();
        }
        None
    }

    /// The answer to a read of the pool (a failed read is said on the view, quietly).
    pub(super) fn on_upstream_status(&mut self, result: Result<Response, String>) -> Vec<Action> {
        self.upstream_poll.waiting = false;
        self.upstream_poll.last_ms = self.now_ms;
        match result {
            Ok(Response::Upstream { upstream }) => {
                self.model.upstream_pool.apply(*upstream, self.now_ms);
            }
            Ok(Response::Error { message }) | Err(message) => {
                self.model.upstream_pool.failed(message);
            }
            Ok(other) => self
                .model
                .upstream_pool
                .failed(format!("unexpected answer from the daemon: {other:?}")),
        }
        if self.upstream_poll.again && self.connected {
            return self.poll_upstream().into_iter().collect();
        }
        Vec::new()
    }

    /// The account selected on the Upstream view.
    pub fn selected_account(&self) -> Option<&AccountView> {
        let accounts = &self.model.upstream_pool.view.as_ref()?.accounts;
        let last = accounts.len().checked_sub(1)?;
        accounts.get(self.row[4].min(last))
    }

    /// `e` / `d` on the Upstream view: ask before changing the selected account, or say why
    /// there is nothing to change.
    pub(super) fn ask_set_account(&mut self, enable: bool) {
        let Some(a) = self.selected_account() else {
            return;
        };
        let name = a.name.clone();
        let nothing_to_do = if enable {
            (a.state == "healthy").then_some("is in service already")
        } else {
            a.disabled_by_operator.then_some("is disabled already")
        };
        match nothing_to_do {
            Some(why) => self.say(format!("upstream account {name} {why}")),
            None => self.modal = Some(Modal::ConfirmAccount { name, enable }),
        }
    }
}
