//! The storefront's two languages. Every user-visible string of every page lives here, once per
//! language (`i18n/en.rs`, `i18n/zh.rs`), so a page cannot be half translated: a missing field
//! does not compile. Sentences that carry values use `{name}` placeholders, filled by the pages.
//! The list of strings itself is declared in `i18n/texts.rs`; this file picks a language and
//! turns statuses and enums into their strings.

/// Declares [`Texts`] and a list of its fields (for the completeness tests). Defined before the
/// submodules, so that `texts.rs` can use it.
macro_rules! texts {
    ($( $(#[$meta:meta])* $name:ident ),* $(,)?) => {
        texts!(@named Texts, "Every string the pages show."; $( $(#[$meta])* $name ),*);
    };
    (@named $ty:ident, $doc:literal; $( $(#[$meta:meta])* $name:ident ),* $(,)?) => {
        #[doc = $doc]
        pub struct $ty {
            $( $(#[$meta])* pub $name: &'static str, )*
        }

        impl $ty {
            /// Every field as `(name, text)`.
            pub fn entries(&self) -> Vec<(&'static str, &'static str)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

mod a11y;
mod a11y_en;
mod a11y_zh;
mod agents;
mod agents_en;
mod agents_zh;
mod en;
mod selfserve;
mod selfserve_en;
mod selfserve_zh;
mod texts;
mod zh;

pub use a11y::A11yTexts;
pub use a11y_en::A11Y_EN;
pub use a11y_zh::A11Y_ZH;
pub use agents::AgentTexts;
pub use agents_en::AGENTS_EN;
pub use agents_zh::AGENTS_ZH;
pub use en::EN;
pub use selfserve::SelfTexts;
pub use selfserve_en::SELF_EN;
pub use selfserve_zh::SELF_ZH;
pub use texts::Texts;
pub use zh::ZH;

use crate::keys::KeyStatus;
use crate::store::orders::OrderStatus;
use crate::store::{Finish, Measured};

/// A language of the storefront.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// From `en` / `zh` (and `zh-CN`, `en-US`…).
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.trim().to_ascii_lowercase();
        if s.starts_with("zh") {
            Some(Lang::Zh)
        } else if s.starts_with("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// `en` or `zh`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The `lang` attribute of `<html>`.
    pub fn html_lang(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The language of mails to a customer who bought in this language.
    pub fn mail(self) -> crate::kinds::MailLang {
        match self {
            Lang::En => crate::kinds::MailLang::En,
            Lang::Zh => crate::kinds::MailLang::Zh,
        }
    }

    /// The storefront language of a mail language.
    pub fn of_mail(l: crate::kinds::MailLang) -> Lang {
        match l {
            crate::kinds::MailLang::En => Lang::En,
            crate::kinds::MailLang::Zh => Lang::Zh,
        }
    }

    /// The self-service strings of this language (top-ups, key replacement, notices).
    pub fn self_texts(self) -> &'static SelfTexts {
        match self {
            Lang::En => &SELF_EN,
            Lang::Zh => &SELF_ZH,
        }
    }

    /// The docs section on Claude Code and other Anthropic clients, in this language.
    pub fn agent_texts(self) -> &'static AgentTexts {
        match self {
            Lang::En => &AGENTS_EN,
            Lang::Zh => &AGENTS_ZH,
        }
    }

    /// The pages' accessibility aids in this language (skip link, titles of states, …).
    pub fn a11y_texts(self) -> &'static A11yTexts {
        match self {
            Lang::En => &A11Y_EN,
            Lang::Zh => &A11Y_ZH,
        }
    }

    /// The strings of this language.
    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

impl Texts {
    /// An order status for people.
    pub fn order_status(&self, s: OrderStatus) -> &'static str {
        match s {
            OrderStatus::Created => self.order_created,
            OrderStatus::Pending => self.order_pending,
            OrderStatus::Paid => self.order_paid,
            OrderStatus::Failed => self.order_failed,
            OrderStatus::Review => self.order_review,
            OrderStatus::Refunded => self.order_refunded,
        }
    }

    /// What an order status means for the buyer.
    pub fn order_status_note(&self, s: OrderStatus) -> &'static str {
        match s {
            OrderStatus::Created => self.order_note_created,
            OrderStatus::Pending => self.order_note_pending,
            OrderStatus::Paid => self.order_note_paid,
            OrderStatus::Failed => self.order_note_failed,
            OrderStatus::Review => self.order_note_review,
            OrderStatus::Refunded => self.order_note_refunded,
        }
    }

    /// A key status for people.
    pub fn key_status(&self, s: KeyStatus) -> &'static str {
        match s {
            KeyStatus::Active => self.key_active,
            KeyStatus::Exhausted => self.key_exhausted,
            KeyStatus::Revoked => self.key_revoked,
        }
    }

    /// How a request ended, for people.
    pub fn finish(&self, f: Finish) -> &'static str {
        match f {
            Finish::Complete => self.finish_complete,
            Finish::ClientAbort => self.finish_client_abort,
            Finish::UpstreamError => self.finish_upstream_error,
            Finish::UpstreamTimeout => self.finish_upstream_timeout,
            Finish::Rejected => self.finish_rejected,
            Finish::Shutdown => self.finish_shutdown,
        }
    }

    /// Where a request's token counts come from, for people.
    pub fn measured(&self, m: Measured) -> &'static str {
        match m {
            Measured::Provider => self.measured_provider,
            Measured::Estimated => self.measured_estimated,
            Measured::Clamped => self.measured_clamped,
        }
    }

    /// A price period (`peak`, `off_peak`) for people.
    pub fn period(&self, p: &str) -> &'static str {
        if p == "peak" {
            self.period_peak
        } else {
            self.period_off_peak
        }
    }

    /// A configured day (`mon`, `tuesday`…) for people.
    pub fn day(&self, d: &str) -> Option<&'static str> {
        let d = d.trim().to_ascii_lowercase();
        Some(match d.get(..3)? {
            "mon" => self.day_mon,
            "tue" => self.day_tue,
            "wed" => self.day_wed,
            "thu" => self.day_thu,
            "fri" => self.day_fri,
            "sat" => self.day_sat,
            "sun" => self.day_sun,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn placeholders(s: &str) -> BTreeSet<String> {
        s.split('{')
            .skip(1)
            .filter_map(|p| p.split_once('}').map(|(name, _)| name.to_string()))
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect()
    }

    #[test]
    fn both_languages_of_self_service_are_complete() {
        both_complete(SELF_EN.entries(), SELF_ZH.entries());
        both_complete(AGENTS_EN.entries(), AGENTS_ZH.entries());
        both_complete(A11Y_EN.entries(), A11Y_ZH.entries());
    }

    fn both_complete(en: Vec<(&str, &str)>, zh: Vec<(&str, &str)>) {
        assert_eq!(en.len(), zh.len());
        for ((name, e), (_, z)) in en.iter().zip(&zh) {
            assert!(
                !e.trim().is_empty() && !z.trim().is_empty(),
                "{name} is empty"
            );
            assert_eq!(
                placeholders(e),
                placeholders(z),
                "placeholders of {name} differ"
            );
            assert_ne!(e, z, "{name} is not translated");
        }
    }

    #[test]
    fn both_languages_are_complete() {
        let en = EN.entries();
        let zh = ZH.entries();
        assert_eq!(en.len(), zh.len());
        for ((name, e), (_, z)) in en.iter().zip(&zh) {
            assert!(!e.trim().is_empty(), "EN {name} is empty");
            assert!(!z.trim().is_empty(), "ZH {name} is empty");
            assert_eq!(
                placeholders(e),
                placeholders(z),
                "placeholders of {name} differ"
            );
        }
        // Prose is translated: apart from names and symbols, ZH differs from EN.
        let same: Vec<&str> = en
            .iter()
            .zip(&zh)
            .filter(|((_, e), (_, z))| e == z)
            .map(|((n, _), _)| *n)
            .collect();
        let allowed = [
            "site_name",
            "email_placeholder",
            "base_url_label",
            "col_status",
            "col_code",
            "dash_key_label",
        ];
        for n in same {
            assert!(allowed.contains(&n), "{n} is not translated");
        }
    }

    /// The Chinese pages speak one way: `你` (not `您`) and "key" (not `密钥`), as most of
    /// them did — a page mixed both (found by an independent check in a browser). The
    /// emails keep their own, more formal register.
    #[test]
    fn the_chinese_pages_use_one_register() {
        let all = ZH
            .entries()
            .into_iter()
            .chain(SELF_ZH.entries())
            .chain(AGENTS_ZH.entries())
            .chain(A11Y_ZH.entries());
        for (name, text) in all {
            // SillyTavern's own label, quoted as its Chinese interface shows it.
            let text = text.replace("“API 密钥”", "");
            assert!(
                !text.contains('您') && !text.contains("密钥"),
                "{name}: {text}"
            );
        }
    }

    #[test]
    fn language_parsing() {
        assert_eq!(Lang::parse("zh-CN"), Some(Lang::Zh));
        assert_eq!(Lang::parse(" EN-us"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(Lang::Zh.texts().nav_home, ZH.nav_home);
        assert_eq!(EN.day("Tuesday"), Some(EN.day_tue));
        assert_eq!(ZH.day("xx"), None);
        assert_eq!(ZH.day(""), None);
    }
}
