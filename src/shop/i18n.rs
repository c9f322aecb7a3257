//! The storefront's two languages. Every user-visible string of every page lives here, once per
//! language, so a page cannot be half translated: a missing field does not compile.

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

    /// The strings of this language.
    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

/// Every string the pages show.
pub struct Texts {
    /// Site name in the header.
    pub site_name: &'static str,
    /// Banner shown in demo mode.
    pub demo_banner: &'static str,
}

/// English.
pub static EN: Texts = Texts {
    site_name: "modelrelay",
    demo_banner: "DEMO: payments and model answers are simulated. Nothing is charged.",
};

/// Chinese.
pub static ZH: Texts = Texts {
    site_name: "modelrelay",
    demo_banner: "演示模式：支付和模型回答均为模拟，不会产生任何费用。",
};
