//! The storefront pages over real HTTP with a non-default config: every page in both languages,
//! plans and prices from config, docs from config and `public_url`, 404s in the layout, the
//! checkout page and its assets, security headers and the CSRF cookie. Form posts are in
//! `page_forms.rs`, the demo flow in `page_demo.rs`; both use the helpers here.

use modelrelay::config::{Config, PlanConfig};
use modelrelay::shop::i18n::{A11Y_EN, A11Y_ZH, AGENTS_EN, AGENTS_ZH, EN, ZH};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_LANGUAGE, CONTENT_SECURITY_POLICY, COOKIE, SET_COOKIE};

use crate::common::TestApp;

const PUBLIC_URL: &str = "https://relay.example.test";

/// A config unlike the defaults: renamed and repriced plans, one withdrawn, one added, other
/// token prices, peak windows and body limit, an https public URL and a PayPal client id.
fn custom(c: &mut Config) {
    c.server.public_url = PUBLIC_URL.into();
    c.server.max_body_bytes = 4 * 1024 * 1024;
    c.paypal.client_id = "AbC-client_42".into();
    c.pricing.peak_hours_utc = vec!["02:00-05:30".into()];
    c.pricing.peak_days = vec!["sat".into(), "sun".into()];
    let trial = c.plans.get_mut("trial").unwrap();
    trial.name = "Taster".into();
    trial.price_usd = "2.50".parse().unwrap();
    trial.budget_usd = "3.00".parse().unwrap();
    trial.rpm = 45;
    let starter = c.plans.get_mut("starter").unwrap();
    starter.name = "Withdrawn Plan".into();
    starter.enabled = false;
    c.plans.insert(
        "team".into(),
        PlanConfig {
            name: "Team Max".into(),
            price_usd: "99.00".parse().unwrap(),
            budget_usd: "120.00".parse().unwrap(),
            rpm: 77,
            models: vec!["deepseek-v4-flash".into(), "deepseek-v4-pro".into()],
            max_in_flight: 12,
            enabled: true,
        },
    );
    let flash = c.models.get_mut("deepseek-v4-flash").unwrap();
    flash.output = ["0.70".parse().unwrap(), "1.40".parse().unwrap()];
    flash.input_cache_miss = ["0.17".parse().unwrap(), "0.34".parse().unwrap()];
}

pub(crate) async fn custom_app() -> TestApp {
    TestApp::spawn_with(custom).await
}

/// GET a page; `lang` is a query (`?lang=zh`) or an `Accept-Language` value.
pub(crate) async fn get(
    base: &str,
    path: &str,
    accept: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(a) = accept {
        req = req.header(ACCEPT_LANGUAGE, a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// The `mr_csrf` Set-Cookie header of a response, whole.
fn csrf_set_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("mr_csrf="))
}

/// The CSRF token a browser gets on its first visit.
pub(crate) async fn csrf_token(base: &str) -> String {
    let (_, headers, _) = get(base, "/order", None).await;
    let cookie = csrf_set_cookie(&headers).expect("csrf cookie");
    cookie["mr_csrf=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The secret cookie (`mr_browser`, which no page prints) of the test browser whose CSRF token
/// is `csrf`: tests name a browser by its token, and a browser has both cookies.
pub(crate) fn browser_secret(csrf: &str) -> String {
    format!("b{csrf}")
}

/// POST a form as the browser whose CSRF token is `cookie` (both its cookies), or with none.
pub(crate) async fn post_form(
    base: &str,
    path: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    post_form_with(
        base,
        path,
        cookie.map(|c| format!("mr_csrf={c}; mr_browser={}", browser_secret(c))),
        fields,
    )
    .await
}

/// POST a form with exactly the `Cookie` header given.
pub(crate) async fn post_form_with(
    base: &str,
    path: &str,
    cookies: Option<String>,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .form(fields);
    if let Some(c) = cookies {
        req = req.header(COOKIE, c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

/// `s` as askama writes it into HTML.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// The text of the element with this id (up to its first `<`).
pub(crate) fn element_text<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let start = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[start..];
    let open_end = rest.find('>')? + 1;
    let rest = &rest[open_end..];
    Some(&rest[..rest.find('<')?])
}

pub(crate) const PAGES: [&str; 7] = [
    "/",
    "/pricing",
    "/docs",
    "/checkout/trial",
    "/checkout/team",
    "/order",
    "/dashboard",
];

#[tokio::test]
async fn every_page_renders_in_both_languages() {
    let app = custom_app().await;
    for path in PAGES {
        let sep = if path.contains('?') { '&' } else { '?' };
        let cases = [
            (format!("{path}{sep}lang=en"), None, "en"),
            (format!("{path}{sep}lang=zh"), None, "zh"),
            (path.to_string(), Some("zh-CN,zh;q=0.9,en;q=0.8"), "zh"),
            (path.to_string(), Some("en-US,en;q=0.9"), "en"),
            (path.to_string(), Some("fr-FR"), "en"),
        ];
        for (url, accept, lang) in cases {
            let (status, headers, html) = get(&app.base, &url, accept).await;
            assert_eq!(status, 200, "{url} {accept:?}");
            assert!(
                headers[reqwest::header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{url}"
            );
            let t = if lang == "zh" { &ZH } else { &EN };
            let html_lang = if lang == "zh" { "zh-CN" } else { "en" };
            assert!(
                html.contains(&format!("<html lang=\"{html_lang}\">")),
                "{url} {accept:?}"
            );
            for s in [t.nav_pricing, t.nav_docs, t.nav_order, t.nav_dashboard] {
                assert!(html.contains(s), "{url} {accept:?} lacks {s}");
            }
            assert!(html.contains(&esc(t.footer_disclaimer)), "{url}: footer");
            assert!(
                html.contains("href=\"")
                    && html.contains("?lang=zh\"")
                    && html.contains("?lang=en\""),
                "{url}: switch"
            );
            assert!(
                !html.contains("id=\"demo-banner\""),
                "{url}: no demo banner"
            );
        }
    }
    // The language chosen with ?lang= is remembered in a cookie.
    let resp = reqwest::Client::new()
        .get(format!("{}/pricing?lang=zh", app.base))
        .send()
        .await
        .unwrap();
    let lang_cookie = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("mr_lang=zh"))
        .expect("language cookie");
    let resp = reqwest::Client::new()
        .get(format!("{}/docs", app.base))
        .header(COOKIE, lang_cookie.split(';').next().unwrap())
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains(&esc(ZH.docs_title)));
}

/// The levels of a page's headings, in order.
fn heading_levels(html: &str) -> Vec<u8> {
    html.match_indices("<h")
        .filter_map(|(at, _)| {
            let level = html.as_bytes().get(at + 2)?;
            let after = html.as_bytes().get(at + 3)?;
            (level.is_ascii_digit() && matches!(after, b'>' | b' ')).then(|| level - b'0')
        })
        .collect()
}

/// Every opening tag that contains `needle`.
fn tags_with<'a>(html: &'a str, needle: &str) -> Vec<&'a str> {
    html.match_indices(needle)
        .map(|(at, _)| {
            let start = html[..at].rfind('<').unwrap();
            &html[start..at + html[at..].find('>').unwrap()]
        })
        .collect()
}

/// What an accessibility audit found missing, on every page in both languages: a skip link to
/// `main`, the language switch as a labelled navigation, headings that never skip a level
/// (pricing went from h1 to h3), scrolling code and tables reachable by keyboard with a name,
/// and the form hints tied to their fields.
#[tokio::test]
async fn every_page_carries_its_accessibility_aids() {
    let app = custom_app().await;
    let pages = PAGES.iter().copied().chain(["/checkout/trial?topup=1"]);
    for path in pages {
        for (lang, a) in [("en", &A11Y_EN), ("zh", &A11Y_ZH)] {
            let sep = if path.contains('?') { '&' } else { '?' };
            let (status, _, html) = get(&app.base, &format!("{path}{sep}lang={lang}"), None).await;
            assert_eq!(status, 200, "{path}");
            assert!(
                html.contains(&format!(
                    "<body>\n<a class=\"skip-link\" href=\"#main\">{}</a>",
                    esc(a.skip_link)
                )),
                "{path} {lang}: the skip link comes first"
            );
            assert!(html.contains("<main class=\"container\" id=\"main\" tabindex=\"-1\">"));
            assert!(
                html.contains("<nav class=\"lang-switch\" id=\"lang-switch\" aria-label="),
                "{path}: the switch is a navigation"
            );
            let levels = heading_levels(&html);
            assert_eq!(levels.first(), Some(&1), "{path}: {levels:?}");
            for pair in levels.windows(2) {
                assert!(
                    pair[1] <= pair[0] + 1,
                    "{path}: a level skipped in {levels:?}"
                );
            }
            for tag in tags_with(&html, "<pre class=\"code\"") {
                assert!(
                    tag.contains("tabindex=\"0\"")
                        && tag.contains(&format!("aria-label=\"{}\"", esc(a.code_label))),
                    "{path}: {tag}"
                );
            }
            for tag in tags_with(&html, "class=\"table-wrap\"") {
                assert!(
                    tag.contains("role=\"region\" tabindex=\"0\""),
                    "{path}: {tag}"
                );
                let label = tag.split("aria-labelledby=\"").nth(1).unwrap();
                let label = &label[..label.find('"').unwrap()];
                assert!(html.contains(&format!("id=\"{label}\"")), "{path}: {tag}");
            }
            // Each field's hint is read with it.
            let described: &[(&str, &str)] = match path {
                "/order" => &[("order_id", "order-hint"), ("email", "order-hint")],
                "/dashboard" => &[("key", "key-hint")],
                "/checkout/trial?topup=1" => {
                    &[("topup-key", "topup-key-hint"), ("email", "email-hint")]
                }
                p if p.starts_with("/checkout/") => &[("email", "email-hint")],
                _ => &[],
            };
            for (field, hint) in described {
                let tag = tags_with(&html, &format!("id=\"{field}\""))
                    .into_iter()
                    .find(|t| t.starts_with("<input"))
                    .unwrap_or_else(|| panic!("{path}: no #{field}"));
                assert!(
                    tag.contains(&format!("aria-describedby=\"{hint}\"")),
                    "{tag}"
                );
                assert!(!tag.contains("aria-invalid"), "{tag}");
                assert!(
                    html.contains(&format!("<p class=\"hint\" id=\"{hint}\">")),
                    "{path}"
                );
            }
        }
    }
    // The plans on the pricing page are headings of the page's second level.
    let (_, _, html) = get(&app.base, "/pricing", None).await;
    assert!(
        html.contains("<h2 class=\"plan-name\">Taster</h2>"),
        "{html}"
    );
}

#[tokio::test]
async fn pricing_and_home_show_the_configured_plans_and_prices() {
    let app = custom_app().await;
    for lang in ["en", "zh"] {
        let (status, _, html) = get(&app.base, &format!("/pricing?lang={lang}"), None).await;
        assert_eq!(status, 200);
        for s in [
            "Taster",
            "$2.50",
            "$3.00",
            ">45 ",
            "Team Max",
            "$99.00",
            "$120.00",
            ">77 ",
            "Standard",
            "Pro",
            "href=\"/checkout/trial\"",
            "href=\"/checkout/team\"",
            "$0.70",
            "$1.40",
            "$0.17",
            "$0.34",
            "$0.022",
            "02:00–05:30",
        ] {
            assert!(html.contains(s), "/pricing?lang={lang} lacks {s}");
        }
        assert!(
            !html.contains("Withdrawn Plan"),
            "a disabled plan is not on sale"
        );
        assert!(!html.contains("/checkout/starter"));
        assert!(!html.contains("$0.60"), "the default output price is gone");
    }
    let (_, _, en) = get(&app.base, "/pricing?lang=en", None).await;
    assert!(en.contains("45 requests/min") && en.contains("Saturday") && en.contains("Sunday"));
    let (_, _, zh) = get(&app.base, "/pricing?lang=zh", None).await;
    assert!(zh.contains("45 次/分钟") && zh.contains("周六"));
    // Cheapest first.
    let taster = en.find("Taster").unwrap();
    let team = en.find("Team Max").unwrap();
    assert!(taster < team);

    let (_, _, home) = get(&app.base, "/?lang=en", None).await;
    for s in [
        "deepseek-v4-flash",
        "deepseek-v4-pro",
        "$2.50",
        "$0.70 – $1.40",
        "Pro, Team Max",
        &format!("base_url=\"{PUBLIC_URL}/v1\""),
        "href=\"/pricing\"",
    ] {
        assert!(home.contains(s), "home lacks {s}");
    }
}

/// With no peak hours set, one price a model: no off-peak – peak range on the home page and
/// no Peak rows in the price table (they showed prices never charged).
#[tokio::test]
async fn without_peak_hours_one_price_is_shown() {
    let app = TestApp::spawn_with(|c| {
        custom(c);
        c.pricing.peak_hours_utc = vec![];
    })
    .await;
    let (_, _, home) = get(&app.base, "/?lang=en", None).await;
    assert!(
        home.contains("<dd>$0.70</dd>"),
        "home shows one output price"
    );
    assert!(!home.contains("$1.40"), "no peak price shown");
    for lang in ["en", "zh"] {
        let (_, _, html) = get(&app.base, &format!("/pricing?lang={lang}"), None).await;
        assert!(!html.contains("$1.40"), "/pricing?lang={lang}");
        let (t_all, t_peak) = if lang == "en" {
            (EN.period_all, EN.period_peak)
        } else {
            (ZH.period_all, ZH.period_peak)
        };
        assert!(html.contains(&format!("<td>{t_all}</td>")), "{lang}");
        assert!(!html.contains(&format!("<td>{t_peak}</td>")), "{lang}");
    }
}

#[tokio::test]
async fn docs_are_generated_from_the_config() {
    let app = custom_app().await;
    for lang in ["en", "zh"] {
        let (status, _, html) = get(&app.base, &format!("/docs?lang={lang}"), None).await;
        assert_eq!(status, 200);
        let t = if lang == "zh" { &ZH } else { &EN };
        for s in [
            format!("{PUBLIC_URL}/v1"),
            format!("base_url=\"{PUBLIC_URL}/v1\""),
            format!("curl {PUBLIC_URL}/v1/chat/completions"),
            format!("curl -N {PUBLIC_URL}/v1/chat/completions"),
            format!("{PUBLIC_URL}/api/usage"),
            format!("{PUBLIC_URL}/v1/dashboard/billing/subscription"),
            format!("Taster{}<strong>45 {}</strong>", t.label_sep, t.rpm_unit),
            format!("Team Max{}<strong>77 {}</strong>", t.label_sep, t.rpm_unit),
            format!("Standard{}<strong>60 {}</strong>", t.label_sep, t.rpm_unit),
            // Each plan's requests in progress at once, under `too_many_in_flight`.
            format!("Team Max{}<strong>12</strong>", t.label_sep),
            format!("Standard{}<strong>32</strong>", t.label_sep),
            esc(t.err_429_flight_what),
            "4 MiB".to_string(),
            "stream=True".to_string(),
            "\"stream\": true".to_string(),
            "Custom (OpenAI-compatible)".to_string(),
            "$0.70".to_string(),
            "02:00–05:30".to_string(),
            esc(t.docs_what_p2),
            esc(t.docs_empty_p),
            esc(t.docs_abort_p),
            esc(t.docs_st_h),
        ] {
            assert!(html.contains(&s), "/docs?lang={lang} lacks {s}");
        }
        for code in [
            "400", "401", "402", "403", "404", "413", "429", "502", "504",
        ] {
            assert!(html.contains(&format!("id=\"err-{code}\"")), "error {code}");
        }
        // deepseek-v4-pro is in Pro and Team Max only: the 403 advice names them.
        assert!(
            html.contains(&format!(
                "<code>deepseek-v4-pro</code>{}Pro{}Team Max",
                t.label_sep, t.list_sep
            )),
            "403 advice for {lang}"
        );
        assert!(!html.contains("Withdrawn Plan"));
        assert!(!html.contains("127.0.0.1"), "samples use public_url only");
    }
}

/// The Claude Code section: the base URL without `/v1`, the sample model from the plans on
/// sale, and the names table from the configured aliases, longest first, with the plans that
/// include the model serving each; with no aliases, it says so.
#[tokio::test]
async fn docs_describe_anthropic_clients_from_the_config() {
    let app = TestApp::spawn_with(|c| {
        custom(c);
        c.models.get_mut("deepseek-v4-flash").unwrap().aliases =
            vec!["claude*".into(), "my-coder".into()];
    })
    .await;
    for lang in ["en", "zh"] {
        let (status, _, html) = get(&app.base, &format!("/docs?lang={lang}"), None).await;
        assert_eq!(status, 200);
        let (t, a) = if lang == "zh" {
            (&ZH, &AGENTS_ZH)
        } else {
            (&EN, &AGENTS_EN)
        };
        for s in [
            format!("<li><a href=\"#claude-code\">{}</a></li>", esc(a.h)),
            format!("export ANTHROPIC_BASE_URL={PUBLIC_URL}\n"),
            "export ANTHROPIC_MODEL=deepseek-v4-flash\n".to_string(),
            "export ANTHROPIC_SMALL_FAST_MODEL=deepseek-v4-flash\n".to_string(),
            format!("anthropic.Anthropic(base_url=\"{PUBLIC_URL}\""),
            "pip install anthropic".to_string(),
            "<code>POST /v1/messages</code>".to_string(),
            "<code>POST /v1/messages/count_tokens</code>".to_string(),
            esc(a.count_p),
            esc(a.errors_p),
        ] {
            assert!(html.contains(&s), "/docs?lang={lang} lacks {s}");
        }
        let table = &html[html.find("id=\"alias-table\"").expect("alias table")..];
        let table = &table[..table.find("</table>").unwrap()];
        let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
        let row = |name: &str, model: &str, plans: String| {
            format!(
                "<td><code>{name}</code></td><td><code>{model}</code></td><td>{plans}</td></tr>"
            )
        };
        let all = ["Taster", "Standard", "Pro", "Team Max"].join(t.list_sep);
        let pro = ["Pro", "Team Max"].join(t.list_sep);
        let want = [
            row("claude-opus*", "deepseek-v4-pro", pro),
            row("my-coder", "deepseek-v4-flash", all.clone()),
            row("claude*", "deepseek-v4-flash", all),
        ];
        assert_eq!(rows.len(), want.len(), "{table}");
        for (got, want) in rows.iter().zip(&want) {
            assert!(
                got.trim_start().starts_with(want.as_str()),
                "{got} is not {want}"
            );
        }
        assert!(!html.contains(&esc(a.names_none)));
    }
    let bare = TestApp::spawn_with(|c| {
        for m in c.models.values_mut() {
            m.aliases.clear();
        }
    })
    .await;
    let (_, _, html) = get(&bare.base, "/docs", None).await;
    assert!(html.contains(&esc(AGENTS_EN.names_none)));
    assert!(!html.contains("alias-table"));
}

/// An unknown, a disabled and a hostile plan get a 404 page in the layout, in both languages.
async fn assert_unknown_checkouts_are_404s(base: &str) {
    for path in [
        "/checkout/nope",
        "/checkout/starter",
        "/checkout/%3Cscript%3E",
    ] {
        for lang in ["en", "zh"] {
            let (status, _, html) = get(base, &format!("{path}?lang={lang}"), None).await;
            assert_eq!(status, 404, "{path}");
            let t = if lang == "zh" { &ZH } else { &EN };
            assert!(
                html.contains(&esc(t.notfound_plan)),
                "{path}: 404 page in the layout"
            );
            assert!(html.contains(&esc(t.nav_pricing)) && html.contains("csrf-token"));
            assert!(!html.contains("<script>"), "{path}");
        }
    }
}

/// The Team Max checkout: the form, the price, PayPal's SDK with the configured client id (and
/// in the CSP), no demo button.
async fn assert_the_team_checkout(base: &str) {
    let (status, headers, html) = get(base, "/checkout/team", None).await;
    assert_eq!(status, 200);
    for s in [
        "id=\"email\"",
        "type=\"email\"",
        "required",
        "Team Max",
        "$99.00",
        "id=\"paypal-buttons\"",
        "id=\"checkout-error\"",
        "id=\"api-key\"",
        "id=\"order-id\"",
        "data-plan=\"team\"",
        "<script src=\"https://www.paypal.com/sdk/js?client-id=AbC-client_42&amp;currency=USD&amp;intent=capture\"></script>",
        "<script src=\"/assets/js/checkout.js\" defer></script>",
    ] {
        assert!(html.contains(s), "checkout lacks {s}");
    }
    assert!(
        !html.contains("id=\"pay-demo\""),
        "no demo button outside demo mode"
    );
    let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("https://www.paypal.com"), "{csp}");
}

/// The script and stylesheet are served from the binary, with the right types; checkout.js
/// speaks to the order API and to PayPal's buttons.
async fn assert_the_checkout_assets(base: &str) {
    for (path, ty) in [
        ("/assets/js/checkout.js", "javascript"),
        ("/assets/js/copy.js", "javascript"),
        ("/assets/css/site.css", "text/css"),
        ("/assets/img/favicon.svg", "image/svg+xml"),
    ] {
        let (status, headers, body) = get(base, path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            headers[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .contains(ty),
            "{path}"
        );
        assert!(!body.is_empty());
    }
    let (_, _, js) = get(base, "/assets/js/checkout.js", None).await;
    for s in [
        "/api/orders",
        "x-csrf-token",
        "/capture",
        "/demo/paypal/approve",
        "paypal.Buttons",
        "#paypal-buttons",
    ] {
        assert!(js.contains(s), "checkout.js lacks {s}");
    }
}

#[tokio::test]
async fn checkout_pages() {
    let app = custom_app().await;
    assert_unknown_checkouts_are_404s(&app.base).await;
    assert_the_team_checkout(&app.base).await;

    // Without a PayPal client id, the page says payments are not configured.
    let plain = TestApp::spawn().await;
    let (_, _, html) = get(&plain.base, "/checkout/trial", None).await;
    assert!(
        html.contains("id=\"payments-unconfigured\"")
            && html.contains(&esc(EN.checkout_unconfigured))
    );
    assert!(!html.contains("paypal.com/sdk"));

    assert_the_checkout_assets(&app.base).await;
}

#[tokio::test]
async fn security_headers_and_csrf_cookie() {
    let app = custom_app().await;
    for path in PAGES.iter().copied().chain(["/checkout/nope"]) {
        let (_, headers, html) = get(&app.base, path, None).await;
        let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        if path.starts_with("/checkout/") {
            assert!(csp.contains("paypal.com"), "{path}");
        } else {
            assert!(!csp.contains("paypal"), "{path}: {csp}");
            assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        // No inline scripts or styles anywhere (the CSP would block them).
        assert!(
            !html.contains("<script>") && !html.contains(" style=\"") && !html.contains("<style"),
            "{path}"
        );
        assert!(
            !html.contains(" onclick=") && !html.contains(" onsubmit="),
            "{path}"
        );
        // A first visit gets the CSRF cookie; the page carries the same token.
        let cookie = csrf_set_cookie(&headers).expect("csrf cookie on a first visit");
        let lower = cookie.to_ascii_lowercase();
        assert!(lower.contains("httponly"), "{cookie}");
        assert!(lower.contains("samesite=lax"), "{cookie}");
        assert!(lower.contains("secure"), "https public_url: {cookie}");
        let token = cookie["mr_csrf=".len()..].split(';').next().unwrap();
        assert!(token.len() >= 32);
        assert!(
            html.contains(&format!("<meta name=\"csrf-token\" content=\"{token}\">")),
            "{path}"
        );
    }
    // A browser that already has the cookie keeps its token.
    let token = csrf_token(&app.base).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/order", app.base))
        .header(COOKIE, format!("mr_csrf={token}"))
        .send()
        .await
        .unwrap();
    assert!(csrf_set_cookie(resp.headers()).is_none());
    let html = resp.text().await.unwrap();
    assert!(html.contains(&format!("name=\"csrf_token\" value=\"{token}\"")));
}

/// Checkout without JavaScript: the email field has no name, so the form's fallback reload
/// never puts the address into the URL (history, logs); a top-up's form reloads as a top-up's
/// page (it became a purchase's, selling a new key to a buyer who then turned scripts on);
/// and the page come back to from PayPal, which only the script can finish, says where to
/// finish it without one — the order page, with the order's id — instead of waiting for ever.
#[tokio::test]
async fn checkout_without_javascript_leaks_no_email_and_says_how_to_finish() {
    let app = custom_app().await;
    let (status, _, html) = get(&app.base, "/checkout/trial?lang=en", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"email\""), "{html}");
    assert!(!html.contains("name=\"email\""), "{html}");
    assert!(!html.contains("name=\"topup\""), "{html}");
    assert!(!html.contains(&esc(EN.checkout_resume_noscript)), "{html}");
    let (_, _, html) = get(&app.base, "/checkout/trial?topup=1&lang=en", None).await;
    assert!(
        html.contains("<input type=\"hidden\" name=\"topup\" value=\"1\">"),
        "{html}"
    );
    let (_, _, html) = get(
        &app.base,
        "/checkout/trial?order_id=ord_Ab3%3Cx&approved=1&lang=zh",
        None,
    )
    .await;
    assert!(html.contains(&esc(ZH.checkout_resume_noscript)), "{html}");
    assert!(html.contains("<code>ord_Ab3&#60;x</code>"), "{html}");
    assert!(
        html.contains("href=\"/order?order_id=ord_Ab3%3Cx\""),
        "{html}"
    );
}
