//! The messages, in English and Chinese, plain text plus simple HTML: a receipt after each
//! paid order (order id, plan, amount, a link to `/order` with the id filled in — never the
//! key), the low-balance and exhausted notices (with the key's one-click opt-out link), and the
//! notice that a key was replaced.
//!
//! Rendering is pure: [`render`] takes what the message is about ([`Facts`]), gathered by the
//! sender when it sends, so a message always tells the state of things at that moment.

use crate::kinds::{MailKind, MailLang, OrderKind};
use crate::money::Usd;

/// What a message is about, as the sender found it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The storefront's public URL (links).
    pub public_url: String,
    /// Our order id (receipts).
    pub order_id: String,
    /// The plan's display name (receipts).
    pub plan_name: String,
    /// What was paid (receipts).
    pub amount: Usd,
    /// Purchase or top-up (receipts).
    pub order_kind: OrderKind,
    /// The key's display prefix, `sk-gateway-AbCd…`.
    pub key_prefix: String,
    /// The key's remaining budget (notices).
    pub remaining: Usd,
    /// The key's total budget (notices).
    pub budget: Usd,
    /// The key's opt-out link (notices).
    pub opt_out_url: String,
    /// RFC 3339 time of what happened (rotation).
    pub at: String,
}

/// A message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body (the same content).
    pub html: String,
}

/// Escape text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Lines of a message: paragraphs, and at most one link with its label.
struct Body {
    subject: String,
    paragraphs: Vec<String>,
    link: Option<(String, String)>,
    footer: Option<(String, String)>,
}

impl Body {
    fn render(self) -> Rendered {
        let mut text = String::new();
        let mut html = String::from(
            "<!doctype html><html><body style=\"font-family:sans-serif;line-height:1.5\">",
        );
        for p in &self.paragraphs {
            text.push_str(p);
            text.push_str("\n\n");
            // A paragraph's own lines (a receipt's order, plan, amount) stay lines in HTML.
            html.push_str(&format!("<p>{}</p>", esc(p).replace('\n', "<br>")));
        }
        if let Some((label, url)) = &self.link {
            text.push_str(&format!("{label}: {url}\n\n"));
            html.push_str(&format!(
                "<p><a href=\"{}\">{}</a></p>",
                esc(url),
                esc(label)
            ));
        }
        if let Some((label, url)) = &self.footer {
            text.push_str(&format!("--\n{label}: {url}\n"));
            html.push_str(&format!(
                "<hr><p style=\"font-size:smaller;color:#666\"><a href=\"{}\">{}</a></p>",
                esc(url),
                esc(label)
            ));
        }
        html.push_str("</body></html>");
        Rendered {
            subject: self.subject,
            text,
            html,
        }
    }
}

/// Render a message of `kind` in `lang`.
pub fn render(kind: MailKind, lang: MailLang, f: &Facts) -> Rendered {
    match lang {
        MailLang::En => en(kind, f),
        MailLang::Zh => zh(kind, f),
    }
    .render()
}

/// A link of a Chinese mail, asking for the Chinese page (opened where the browser prefers
/// English, it showed the English one; found by a review of the Chinese texts).
fn in_chinese(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}lang=zh")
}

fn order_link(f: &Facts) -> String {
    format!("{}/order?order_id={}", f.public_url, f.order_id)
}

fn en(kind: MailKind, f: &Facts) -> Body {
    let dashboard = (
        "Your dashboard".to_string(),
        format!("{}/dashboard", f.public_url),
    );
    match kind {
        MailKind::Receipt => Body {
            subject: format!("Receipt for order {}", f.order_id),
            paragraphs: vec![
                "Thank you for your payment.".into(),
                format!(
                    "Order: {}\nPlan: {}\nAmount: ${} USD",
                    f.order_id, f.plan_name, f.amount
                ),
                match f.order_kind {
                    OrderKind::Purchase => {
                        "Your API key is shown on the order page with your order id and this \
                         email address. It is never sent by email."
                            .to_string()
                    }
                    OrderKind::TopUp => format!(
                        "The plan's budget was added to your key {}. It keeps working in your \
                         tools as before.",
                        f.key_prefix
                    ),
                },
            ],
            link: Some(("Your order".into(), order_link(f))),
            footer: None,
        },
        MailKind::LowBalance => Body {
            subject: format!("Your key {} is running low", f.key_prefix),
            paragraphs: vec![
                format!(
                    "Your API key {} has {} left of its {} budget.",
                    f.key_prefix,
                    dollars(f.remaining, MailLang::En),
                    budget(f.budget)
                ),
                "You can add credit to the same key on your dashboard; your tools keep working \
                 without any change."
                    .into(),
            ],
            link: Some(dashboard),
            footer: Some((
                "Stop balance notices for this key".into(),
                f.opt_out_url.clone(),
            )),
        },
        // Sent also when a request too large for what is left was refused: then cents may be
        // left, and shorter requests go on — said so, not "run out" (found by independent
        // checks: "refused" alone, then "run out" with a fifth of the budget left).
        MailKind::Exhausted if short_of_credit(f) => Body {
            subject: format!("Your key {} is short of credit", f.key_prefix),
            paragraphs: vec![
                format!(
                    "Your API key {} has {} left of its {} budget: too little for requests like \
                     the one it was sent last, which are refused (HTTP 402) until credit is \
                     added. Shorter ones still go through.",
                    f.key_prefix,
                    dollars(f.remaining, MailLang::En),
                    budget(f.budget),
                ),
                "Add credit to the same key on your dashboard and it takes them again at once."
                    .into(),
            ],
            link: Some(dashboard),
            footer: Some((
                "Stop balance notices for this key".into(),
                f.opt_out_url.clone(),
            )),
        },
        MailKind::Exhausted => Body {
            subject: format!("Your key {} has run out of credit", f.key_prefix),
            paragraphs: vec![
                format!(
                    "Your API key {} has run out of credit: {} is left of its {} budget, too \
                     little for its requests, which are refused (HTTP 402) until credit is \
                     added{}.",
                    f.key_prefix,
                    dollars(f.remaining, MailLang::En),
                    budget(f.budget),
                    if f.remaining > Usd::ZERO {
                        "; a very short one may still go through"
                    } else {
                        ""
                    }
                ),
                "Add credit to the same key on your dashboard and it works again at once.".into(),
            ],
            link: Some(dashboard),
            footer: Some((
                "Stop balance notices for this key".into(),
                f.opt_out_url.clone(),
            )),
        },
        MailKind::Rotated => Body {
            subject: format!("Your API key was replaced: {}", f.key_prefix),
            paragraphs: vec![
                format!(
                    "Your API key was replaced at {} (UTC). The new key starts {}; the old one no \
                     longer works. Budget and history stay with the new key.",
                    f.at, f.key_prefix
                ),
                "If you did not do this, someone else has your key and now holds its new text: \
                 reply to this message with your order id, and we will replace the key and send \
                 the new text to you alone. Until then its balance is at risk."
                    .into(),
            ],
            link: Some(dashboard),
            footer: None,
        },
    }
}

/// A run-out notice about a key that still has a cent or more: one of its requests was refused
/// for being larger than what is left, not the key emptied.
fn short_of_credit(f: &Facts) -> bool {
    f.remaining >= Usd::from_nanos(10_000_000)
}

/// An amount in a notice: in cents ("$4.50011475" read as an error; found by an independent
/// check), and one that rounds to no cent but is not nothing said as less than a cent
/// ("$0.00 left" beside $0.000072 on every other page; found by an independent check).
fn dollars(u: Usd, lang: MailLang) -> String {
    let cents = u.to_cents();
    match (cents.as_str(), lang) {
        ("0.00", MailLang::En) if u > Usd::ZERO => "less than $0.01".into(),
        ("0.00", MailLang::Zh) if u > Usd::ZERO => "不足 $0.01".into(),
        _ => format!("${cents}"),
    }
}

/// A key's budget in a notice: in cents, or exactly when under a cent (an operator's
/// sub-cent comp key read "less than $0.01 left of its less than $0.01 budget").
fn budget(u: Usd) -> String {
    match u.to_cents().as_str() {
        "0.00" if u > Usd::ZERO => format!("${u}"),
        cents => format!("${cents}"),
    }
}

fn zh(kind: MailKind, f: &Facts) -> Body {
    let dashboard = (
        "您的“用量查询”页面".to_string(),
        in_chinese(&format!("{}/dashboard", f.public_url)),
    );
    match kind {
        MailKind::Receipt => Body {
            subject: format!("订单 {} 的收据", f.order_id),
            paragraphs: vec![
                "感谢您的付款。".into(),
                format!(
                    "订单：{}\n套餐：{}\n金额：${} USD",
                    f.order_id, f.plan_name, f.amount
                ),
                match f.order_kind {
                    OrderKind::Purchase => {
                        "凭订单号和本邮箱地址可在订单页面查看您的 API key。key 不会通过邮件发送。"
                            .to_string()
                    }
                    OrderKind::TopUp => format!(
                        "套餐额度已充入您的 key {}，您的工具无需任何改动即可继续使用。",
                        f.key_prefix
                    ),
                },
            ],
            link: Some(("查看订单".into(), in_chinese(&order_link(f)))),
            footer: None,
        },
        MailKind::LowBalance => Body {
            subject: format!("您的 key {} 余额即将用完", f.key_prefix),
            paragraphs: vec![
                format!(
                    "您的 API key {} 的预算 {} 仅剩 {}。",
                    f.key_prefix,
                    budget(f.budget),
                    dollars(f.remaining, MailLang::Zh)
                ),
                "您可以在“用量查询”页面为同一个 key 充值，工具无需任何改动。".into(),
            ],
            link: Some(dashboard),
            footer: Some((
                "不再接收此 key 的余额提醒".into(),
                in_chinese(&f.opt_out_url),
            )),
        },
        MailKind::Exhausted if short_of_credit(f) => Body {
            subject: format!("您的 key {} 余额不足", f.key_prefix),
            paragraphs: vec![
                format!(
                    "您的 API key {} 的预算 {} 仅剩 {}，不足以支付与最近一次类似的请求：充值前此类请求将被拒绝（HTTP 402），较短的请求仍可完成。",
                    f.key_prefix,
                    budget(f.budget),
                    dollars(f.remaining, MailLang::Zh),
                ),
                "在“用量查询”页面为同一个 key 充值后即可立即恢复。".into(),
            ],
            link: Some(dashboard),
            footer: Some((
                "不再接收此 key 的余额提醒".into(),
                in_chinese(&f.opt_out_url),
            )),
        },
        MailKind::Exhausted => Body {
            subject: format!("您的 key {} 预算已用完", f.key_prefix),
            paragraphs: vec![
                format!(
                    "您的 API key {} 的预算 {} 已用完，仅剩 {}，不足以支付其请求：充值前请求将被拒绝（HTTP 402）{}。",
                    f.key_prefix,
                    budget(f.budget),
                    dollars(f.remaining, MailLang::Zh),
                    if f.remaining > Usd::ZERO {
                        "，很短的请求可能仍可完成"
                    } else {
                        ""
                    }
                ),
                "在“用量查询”页面为同一个 key 充值后即可立即恢复使用。".into(),
            ],
            link: Some(dashboard),
            footer: Some((
                "不再接收此 key 的余额提醒".into(),
                in_chinese(&f.opt_out_url),
            )),
        },
        MailKind::Rotated => Body {
            subject: format!("您的 API key 已更换：{}", f.key_prefix),
            paragraphs: vec![
                format!(
                    "您的 API key 已于 {}（UTC）更换。新 key 以 {} 开头，旧 key 已失效；预算和记录均保留在新 key 上。",
                    f.at, f.key_prefix
                ),
                "如果这不是您本人的操作，说明他人持有您的 key 并已拿到新 key：请回复此邮件并附上订单号，我们会更换 key 并只把新 key 发给您。在此之前，余额有被他人使用的风险。".into(),
            ],
            link: Some(dashboard),
            footer: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            public_url: "https://relay.example".into(),
            order_id: "ord_1".into(),
            plan_name: "Pro <b>".into(),
            amount: Usd::from_dollars(50),
            key_prefix: "sk-gateway-AbCd…".into(),
            remaining: Usd::from_dollars(1),
            budget: Usd::from_dollars(10),
            opt_out_url: "https://relay.example/mail/opt-out/tok".into(),
            ..Facts::default()
        }
    }

    #[test]
    fn a_receipt_links_to_the_order_and_never_carries_a_key() {
        let r = render(MailKind::Receipt, MailLang::En, &facts());
        assert_eq!(r.subject, "Receipt for order ord_1");
        assert!(
            r.text
                .contains("https://relay.example/order?order_id=ord_1")
        );
        assert!(r.text.contains("$50.00 USD"));
        assert!(r.html.contains("Pro &lt;b&gt;"), "{}", r.html);
        // Its order, plan and amount lines stay lines in HTML too.
        assert!(r.html.contains("ord_1<br>"), "{}", r.html);
        let zh = render(MailKind::Receipt, MailLang::Zh, &facts());
        assert!(zh.subject.contains("收据"));
        // A Chinese mail's links ask for the Chinese pages.
        assert!(
            zh.text
                .contains("https://relay.example/order?order_id=ord_1&lang=zh"),
            "{}",
            zh.text
        );
        assert!(!r.text.contains("lang=zh"));
        let zh = render(MailKind::LowBalance, MailLang::Zh, &facts());
        assert!(zh.text.contains("/mail/opt-out/tok?lang=zh"), "{}", zh.text);
        assert!(zh.text.contains("/dashboard?lang=zh"), "{}", zh.text);
    }

    #[test]
    fn notices_carry_their_opt_out_link() {
        for kind in [MailKind::LowBalance, MailKind::Exhausted] {
            for lang in [MailLang::En, MailLang::Zh] {
                let r = render(kind, lang, &facts());
                assert!(r.text.contains("/mail/opt-out/tok"), "{kind:?} {lang:?}");
                assert!(r.html.contains("/mail/opt-out/tok"));
            }
        }
        let r = render(MailKind::Rotated, MailLang::En, &facts());
        assert!(!r.text.contains("opt-out"));
    }

    /// A balance or budget with nano-dollars (after a partial refund, a request's charge)
    /// reads in cents in a notice ("$4.50011475" read as an error; found by an independent
    /// check).
    #[test]
    fn notices_show_amounts_in_cents() {
        let mut f = facts();
        f.remaining = "0.45011475".parse().unwrap();
        f.budget = "4.50011475".parse().unwrap();
        for lang in [MailLang::En, MailLang::Zh] {
            let low = render(MailKind::LowBalance, lang, &f);
            assert!(
                low.text.contains("$0.45") && low.text.contains("$4.50"),
                "{}",
                low.text
            );
            assert!(!low.text.contains("011475"), "{}", low.text);
            let out = render(MailKind::Exhausted, lang, &f);
            assert!(
                out.text.contains("$4.50") && !out.text.contains("011475"),
                "{}",
                out.text
            );
        }
        // Less than a cent left, but not nothing; nothing.
        f.remaining = Usd::from_nanos(72_000);
        let low = render(MailKind::LowBalance, MailLang::En, &f);
        assert!(
            low.text
                .contains("has less than $0.01 left of its $4.50 budget"),
            "{}",
            low.text
        );
        let out = render(MailKind::Exhausted, MailLang::Zh, &f);
        assert!(out.text.contains("仅剩 不足 $0.01"), "{}", out.text);
        assert!(out.text.contains("很短的请求可能仍可完成"), "{}", out.text);
        let out = render(MailKind::Exhausted, MailLang::En, &f);
        assert!(
            out.text
                .contains("less than $0.01 is left of its $4.50 budget")
                && out
                    .text
                    .contains("; a very short one may still go through."),
            "{}",
            out.text
        );
        assert!(
            out.subject.ends_with("has run out of credit"),
            "{}",
            out.subject
        );
        // A cent or more left: a request too large for it was refused, not the key emptied.
        let mut short = f.clone();
        short.remaining = "0.19".parse().unwrap();
        let out = render(MailKind::Exhausted, MailLang::En, &short);
        assert!(
            out.subject.ends_with("is short of credit"),
            "{}",
            out.subject
        );
        assert!(
            out.text.contains("has $0.19 left of its $4.50 budget")
                && out.text.contains("Shorter ones still go through."),
            "{}",
            out.text
        );
        let zh = render(MailKind::Exhausted, MailLang::Zh, &short);
        assert!(
            zh.subject.ends_with("余额不足") && zh.text.contains("仅剩 $0.19"),
            "{}",
            zh.text
        );
        // A budget under a cent, exactly.
        let mut comp = f.clone();
        comp.budget = "0.001".parse().unwrap();
        let low = render(MailKind::LowBalance, MailLang::En, &comp);
        assert!(
            low.text.contains("left of its $0.001 budget"),
            "{}",
            low.text
        );
        f.remaining = Usd::ZERO;
        let out = render(MailKind::Exhausted, MailLang::En, &f);
        assert!(
            out.text.contains("$0.00 is left of its $4.50 budget")
                && out.text.contains("until credit is added.")
                && !out.text.contains("short one"),
            "{}",
            out.text
        );
    }
}
