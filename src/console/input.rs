//! Keyboard input: what each key does on each view and in each dialog.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{App, Modal, View};
use super::event::{Action, Command};
use crate::money::Usd;
use crate::status::KeyStatus;

/// How many views there are (Tab cycles through them, `1`… picks one).
const VIEWS: usize = View::ALL.len();

/// A typed top-up amount, in dollars (a leading `$` is allowed).
pub fn parse_amount(input: &str) -> Result<Usd, String> {
    match input.trim().trim_start_matches('$').parse::<Usd>() {
        // The daemon's own cap, said before the confirmation rather than after it (found by
        // an independent check).
        Ok(usd) if usd > crate::money::MAX_AMOUNT => Err(format!(
            "the top-up must be at most ${}",
            crate::money::MAX_AMOUNT
        )),
        Ok(usd) if usd.nanos() > 0 => Ok(usd),
        Ok(_) => Err("the amount must be greater than 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Characters of a paste taken: more than any filter or amount needs.
const MAX_PASTE: usize = 200;

impl App {
    /// Turn a key press into a state change, and maybe an action.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            // A key shown once but not yet drawn whole is lost with the console: the first
            // Ctrl-C says so, a second one quits (found by an independent check: a rotated
            // key's text was lost at a Ctrl-C in a small window).
            let is_key = |m: &Modal| matches!(m, Modal::NewKey { .. } | Modal::ReplacedKey { .. });
            let unseen = (self.modal.as_ref().is_some_and(is_key) && !self.key_seen.get())
                || self.waiting.iter().any(is_key);
            if unseen && !self.quit_armed.replace(true) {
                return None;
            }
            return Some(Action::Quit);
        }
        // Ctrl or Alt with a letter is not the letter: Ctrl-R opened the revoke confirmation,
        // Ctrl-U typed a `u` into the filter (found by an independent check). Both together is
        // AltGr on some systems, which types a character of its own.
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl != alt && matches!(key.code, KeyCode::Char(_)) {
            return None;
        }
        if !matches!(self.modal, Some(ref m) if m.is_confirmation()) {
            // A confirmation this key opens is unseen until it is drawn.
            self.confirm_seen.set(None);
        }
        if let Some(modal) = self.modal.take() {
            let action = self.on_modal_key(modal, key);
            self.show_waiting();
            return action;
        }
        match key.code {
            KeyCode::Char('q') => return Some(Action::Quit),
            KeyCode::Char('?') => self.modal = Some(Modal::Help),
            KeyCode::Tab => self.view = View::ALL[(self.view.index() + 1) % VIEWS],
            KeyCode::BackTab => self.view = View::ALL[(self.view.index() + VIEWS - 1) % VIEWS],
            KeyCode::Char(c @ '1'..='9') if usize::from(c as u8 - b'1') < VIEWS => {
                self.view = View::ALL[usize::from(c as u8 - b'1')];
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(i64::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(i64::MAX / 2),
            KeyCode::Esc => {
                self.message = None;
                if self.view == View::Keys {
                    self.filter.clear();
                }
            }
            _ if self.view == View::Keys => self.on_keys_view_key(key.code),
            KeyCode::Char('e') if self.view == View::Upstream => self.ask_set_account(true),
            KeyCode::Char('d') if self.view == View::Upstream => self.ask_set_account(false),
            _ => {}
        }
        None
    }

    fn on_keys_view_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::Char('/') => self.modal = Some(Modal::Filter),
            KeyCode::Char('s') => self.sort = self.sort.next(),
            // On a revoked key the key's actions say why they do nothing (they did nothing
            // and said nothing, while `R` opened a dialog that then failed).
            KeyCode::Char(c @ ('r' | 't' | 'R'))
                if self
                    .selected()
                    .is_some_and(|k| k.status == KeyStatus::Revoked) =>
            {
                let prefix = self
                    .selected()
                    .map(|k| k.prefix.clone())
                    .unwrap_or_default();
                let what = match c {
                    'r' => "revoked already",
                    't' => "revoked: credit cannot be added",
                    _ => "revoked: its text cannot be replaced",
                };
                self.say(format!("{prefix} is {what}"));
            }
            KeyCode::Char('r') => {
                if let Some(k) = self.selected() {
                    self.modal = Some(Modal::ConfirmRevoke {
                        key_id: k.id.clone(),
                        prefix: k.prefix.clone(),
                    });
                }
            }
            KeyCode::Char('t') => {
                if let Some(k) = self.selected() {
                    self.modal = Some(Modal::TopUpAmount {
                        key_id: k.id.clone(),
                        prefix: k.prefix.clone(),
                        input: String::new(),
                        error: None,
                    });
                }
            }
            KeyCode::Char('n') => self.modal = Some(Modal::ChoosePlan { selected: 0 }),
            KeyCode::Char('R') => {
                if let Some(k) = self.selected() {
                    self.modal = Some(Modal::ConfirmRotate {
                        key_id: k.id.clone(),
                        prefix: k.prefix.clone(),
                    });
                }
            }
            _ => {}
        }
    }

    fn move_selection(&mut self, by: i64) {
        let step = |cur: usize, len: usize| -> usize {
            if len == 0 {
                return 0;
            }
            (cur as i64).saturating_add(by).clamp(0, len as i64 - 1) as usize
        };
        match self.view {
            View::Keys => {
                let visible = self.visible_keys();
                if let Some(i) = self.selected_key_index(&visible) {
                    let id = visible[step(i, visible.len())].id.clone();
                    self.selected_key = Some(id);
                }
            }
            View::Live => self.row[0] = step(self.row[0], self.model.finished().len()),
            View::Orders => self.row[2] = step(self.row[2], self.model.orders.len()),
            View::Limits => self.row[3] = step(self.row[3], self.model.rate_limited().len()),
            View::Upstream => {
                let accounts = self
                    .model
                    .upstream_pool
                    .view
                    .as_ref()
                    .map_or(0, |v| v.accounts.len());
                self.row[4] = step(self.row[4], accounts);
            }
        }
    }

    fn on_modal_key(&mut self, modal: Modal, key: KeyEvent) -> Option<Action> {
        match modal {
            Modal::Help | Modal::Failed(_) => None,
            // The outcome still shows when it comes (status line, or a failure dialog).
            Modal::Working(_) if key.code == KeyCode::Esc => None,
            Modal::Working(_) => keep(self, modal),
            Modal::NewKey { .. } | Modal::ReplacedKey { .. }
                if matches!(key.code, KeyCode::Enter | KeyCode::Esc) && self.key_seen.get() =>
            {
                None
            }
            Modal::NewKey { .. } | Modal::ReplacedKey { .. } => keep(self, modal),
            Modal::Filter => self.on_filter_key(key.code),
            Modal::ConfirmRevoke { .. }
            | Modal::ConfirmTopUp { .. }
            | Modal::ConfirmCreate { .. }
            | Modal::ConfirmRotate { .. }
            | Modal::ConfirmAccount { .. } => self.on_confirm_key(modal, key.code),
            Modal::TopUpAmount {
                key_id,
                prefix,
                input,
                error,
            } => self.on_amount_key(key_id, prefix, input, error, key.code),
            Modal::ChoosePlan { selected } => self.on_plan_key(selected, key.code),
        }
    }

    /// Typing the Keys view's filter.
    /// Pasted text: typed into the filter or a top-up amount, one character at a time as if
    /// typed (control characters, newlines included, left out); ignored anywhere else.
    pub fn on_paste(&mut self, text: &str) {
        for c in text.chars().filter(|c| !c.is_control()).take(MAX_PASTE) {
            if !matches!(self.modal, Some(Modal::Filter | Modal::TopUpAmount { .. })) {
                return;
            }
            let _ = self.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
    }

    fn on_filter_key(&mut self, code: KeyCode) -> Option<Action> {
        match code {
            KeyCode::Enter => return None,
            KeyCode::Esc => {
                self.filter.clear();
                return None;
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
            _ => {}
        }
        keep(self, Modal::Filter)
    }

    /// y sends the confirmed command, n/Esc/q cancels, anything else keeps asking.
    fn on_confirm_key(&mut self, modal: Modal, code: KeyCode) -> Option<Action> {
        let yes = matches!(code, KeyCode::Char('y') | KeyCode::Char('Y'));
        let no = matches!(
            code,
            KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Char('q')
        );
        if no {
            return None;
        }
        let read = self
            .confirm_seen
            .get()
            .is_some_and(|at| at.elapsed() >= super::app::CONFIRM_READ);
        if !yes || !read {
            return keep(self, modal);
        }
        let (working, command) = match modal {
            Modal::ConfirmRevoke { key_id, prefix } => (
                format!("revoking {}…", prefix.trim_end_matches('…')),
                Command::Revoke { key_id, prefix },
            ),
            Modal::ConfirmTopUp {
                key_id,
                prefix,
                usd,
            } => (
                format!("topping up {}…", prefix.trim_end_matches('…')),
                Command::TopUp {
                    key_id,
                    prefix,
                    usd,
                },
            ),
            Modal::ConfirmCreate { plan } => {
                (format!("minting a {plan} key…"), Command::Create { plan })
            }
            Modal::ConfirmRotate { key_id, prefix } => (
                format!("replacing {}…", prefix.trim_end_matches('…')),
                Command::Rotate { key_id, prefix },
            ),
            Modal::ConfirmAccount { name, enable } => (
                format!(
                    "{} upstream account {name}…",
                    if enable { "enabling" } else { "disabling" }
                ),
                Command::SetAccount { name, enable },
            ),
            other => return keep(self, other),
        };
        self.modal = Some(Modal::Working(working));
        Some(Action::Send(command))
    }

    /// Typing a top-up amount; Enter asks for confirmation once it parses.
    fn on_amount_key(
        &mut self,
        key_id: String,
        prefix: String,
        mut input: String,
        mut error: Option<String>,
        code: KeyCode,
    ) -> Option<Action> {
        match code {
            KeyCode::Esc => return None,
            KeyCode::Enter => match parse_amount(&input) {
                Ok(usd) => {
                    let confirm = Modal::ConfirmTopUp {
                        key_id,
                        prefix,
                        usd,
                    };
                    return keep(self, confirm);
                }
                Err(e) => error = Some(e),
            },
            KeyCode::Backspace => {
                input.pop();
                error = None;
            }
            // Whatever is typed shows, and Enter says what is wrong with it: dropping the
            // characters that are not part of an amount turned "5,50" into $550 and "1e3" into
            // $13, with only the confirmation to tell.
            KeyCode::Char(c) if !c.is_control() && input.chars().count() < 16 => {
                input.push(c);
                error = None;
            }
            _ => {}
        }
        let typing = Modal::TopUpAmount {
            key_id,
            prefix,
            input,
            error,
        };
        keep(self, typing)
    }

    /// Choosing the plan of a comp key.
    fn on_plan_key(&mut self, selected: usize, code: KeyCode) -> Option<Action> {
        let n = self.plans.len();
        match code {
            KeyCode::Esc | KeyCode::Char('q') => None,
            KeyCode::Down | KeyCode::Char('j') if n > 0 => keep(
                self,
                Modal::ChoosePlan {
                    selected: (selected + 1).min(n - 1),
                },
            ),
            KeyCode::Up | KeyCode::Char('k') => keep(
                self,
                Modal::ChoosePlan {
                    selected: selected.saturating_sub(1),
                },
            ),
            KeyCode::Enter => match self.plans.get(selected) {
                Some(plan) => {
                    let plan = plan.clone();
                    keep(self, Modal::ConfirmCreate { plan })
                }
                None => None,
            },
            _ => keep(self, Modal::ChoosePlan { selected }),
        }
    }
}

/// Keep a dialog open.
fn keep(app: &mut App, m: Modal) -> Option<Action> {
    app.modal = Some(m);
    None
}
