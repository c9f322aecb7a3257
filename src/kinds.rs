//! The small enums of self-service that several floors share: what an order buys
//! ([`OrderKind`]), what changed a key's budget ([`BudgetKind`]), which mail a message is
//! ([`MailKind`]) and where it stands ([`MailStatus`]), and the language a customer bought in
//! ([`MailLang`]). Like [`crate::status`], they sit at the bottom so the store, the wire
//! protocol, the mailer and the pages can name them; each keeps the name it is stored under.

use serde::{Deserialize, Serialize};

/// What an order buys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// A new key on the plan.
    #[default]
    Purchase,
    /// The plan's budget added to an existing key.
    TopUp,
}

impl OrderKind {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::Purchase => "purchase",
            OrderKind::TopUp => "top_up",
        }
    }

    /// From the stored name (anything else is a purchase, the only kind before top-ups).
    pub fn parse(s: &str) -> OrderKind {
        if s == "top_up" {
            OrderKind::TopUp
        } else {
            OrderKind::Purchase
        }
    }
}

/// What changed a key's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// The budget a bought key started with.
    Purchase,
    /// The budget of a key the operator minted by hand.
    Grant,
    /// Credit the customer bought for the key from the storefront.
    TopUp,
    /// Credit the operator added (`keys topup`, the console).
    OperatorTopUp,
    /// What a refunded or reversed top-up took back (negative).
    Refund,
}

impl BudgetKind {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::Purchase => "purchase",
            BudgetKind::Grant => "grant",
            BudgetKind::TopUp => "top_up",
            BudgetKind::OperatorTopUp => "operator_top_up",
            BudgetKind::Refund => "refund",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<BudgetKind> {
        Some(match s {
            "purchase" => BudgetKind::Purchase,
            "grant" => BudgetKind::Grant,
            "top_up" => BudgetKind::TopUp,
            "operator_top_up" => BudgetKind::OperatorTopUp,
            "refund" => BudgetKind::Refund,
            _ => return None,
        })
    }
}

/// Which mail a queued message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// After each paid order.
    Receipt,
    /// A key's remaining budget fell below a fifth of its budget.
    LowBalance,
    /// A key ran out of money.
    Exhausted,
    /// A key's text was replaced.
    Rotated,
}

impl MailKind {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Receipt => "receipt",
            MailKind::LowBalance => "low_balance",
            MailKind::Exhausted => "exhausted",
            MailKind::Rotated => "rotated",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<MailKind> {
        Some(match s {
            "receipt" => MailKind::Receipt,
            "low_balance" => MailKind::LowBalance,
            "exhausted" => MailKind::Exhausted,
            "rotated" => MailKind::Rotated,
            _ => return None,
        })
    }
}

/// Where a queued message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    /// Waiting for its (next) attempt.
    Queued,
    /// The SMTP server accepted it.
    Sent,
    /// Given up on (every attempt failed, or the server refused it for good).
    Failed,
}

impl MailStatus {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            MailStatus::Queued => "queued",
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
        }
    }

    /// From the stored name (anything unknown reads as failed: never sent again by itself).
    pub fn parse(s: &str) -> MailStatus {
        match s {
            "queued" => MailStatus::Queued,
            "sent" => MailStatus::Sent,
            _ => MailStatus::Failed,
        }
    }
}

/// The language of a customer's mails: the storefront's language when they paid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailLang {
    /// English.
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl MailLang {
    /// Stored name (`en`, `zh`).
    pub fn as_str(self) -> &'static str {
        match self {
            MailLang::En => "en",
            MailLang::Zh => "zh",
        }
    }

    /// From the stored name (anything else is English).
    pub fn parse(s: &str) -> MailLang {
        if s == "zh" {
            MailLang::Zh
        } else {
            MailLang::En
        }
    }
}
