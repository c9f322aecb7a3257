//! `[email]`: receipts and notices by SMTP. Off until `smtp_url` (or `smtp_url_file`) is set;
//! then `from` is required. The URL carries the credentials, so it is a secret: given as a file
//! under systemd, and redacted by `check-config`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Config;

/// `[email]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The SMTP server, with credentials: `smtps://user:pass@host:465` (TLS),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtp://host:25` (plain, local
    /// relays only). Empty: email is off.
    pub smtp_url: String,
    /// A file holding the SMTP URL instead (systemd credentials).
    pub smtp_url_file: Option<PathBuf>,
    /// The sender, `billing@example.com` or `Example <billing@example.com>`.
    pub from: String,
    /// Messages sent per minute at most (the SMTP provider's rate).
    pub send_per_minute: u32,
    /// Seconds before the first retry of a failed message; each next retry waits twice as
    /// long, up to an hour.
    pub retry_secs: u64,
    /// Attempts before a message is given up (`modelrelay mail retry ID` queues it again).
    pub max_attempts: u32,
    /// Seconds an SMTP connection or command may take.
    pub timeout_secs: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_url: String::new(),
            smtp_url_file: None,
            from: String::new(),
            send_per_minute: 30,
            retry_secs: 60,
            max_attempts: 8,
            timeout_secs: 30,
        }
    }
}

impl EmailConfig {
    /// Is email configured (receipts and notices are queued and sent)?
    pub fn enabled(&self) -> bool {
        !self.smtp_url.trim().is_empty()
    }
}

impl Config {
    /// `[email]`: a usable URL and sender once it is on, sane numbers always.
    pub(super) fn check_email(&self, e: &mut Vec<String>) {
        let m = &self.email;
        if m.enabled() {
            let url = m.smtp_url.trim();
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                // Never echo the URL: it carries the password.
                e.push("email.smtp_url must start with smtp:// or smtps://".into());
            }
            if m.from.trim().is_empty() {
                e.push("email.from must be set when email.smtp_url is (e.g. \"billing@example.com\")".into());
            } else if m.from.trim().parse::<lettre::message::Mailbox>().is_err() {
                e.push(format!(
                    "email.from = {:?} is not an address such as \"Shop <billing@example.com>\"",
                    m.from
                ));
            }
        }
        if m.send_per_minute == 0 {
            e.push("email.send_per_minute must be at least 1".into());
        }
        if m.max_attempts == 0 {
            e.push("email.max_attempts must be at least 1".into());
        }
        if m.retry_secs == 0 || m.retry_secs > 3600 {
            e.push("email.retry_secs must be between 1 and 3600".into());
        }
        if m.timeout_secs == 0 {
            e.push("email.timeout_secs must be greater than 0".into());
        }
    }
}
