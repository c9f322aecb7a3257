//! What every storefront page shares: the language (`?lang=`, cookie, `Accept-Language`), the
//! CSRF token (double-submit: an `HttpOnly; SameSite=Lax` cookie — see `cookie` for why Lax —
//! echoed by forms as `csrf_token` and by the pages' JSON calls as `x-csrf-token`), the DEMO
//! flag, the language switch's links, and the security headers.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use subtle::ConstantTimeEq;

use super::i18n::{A11yTexts, Lang, SelfTexts, Texts};
use crate::state::AppState;

/// Cookie holding the CSRF token.
pub const CSRF_COOKIE: &str = "mr_csrf";
/// Cookie holding the chosen language.
pub const LANG_COOKIE: &str = "mr_lang";
/// Cookie holding a secret of this browser that no page prints (`HttpOnly`): dashboard grants
/// are sealed to it as well as to the CSRF token, which every page prints — with the token
/// alone, the HTML of someone's dashboard (a saved or shared page) replaced their key from any
/// browser (found by an independent check).
pub const BROWSER_COOKIE: &str = "mr_browser";

/// The per-request page context handed to every template.
pub struct PageCtx {
    /// Language of the page.
    pub lang: Lang,
    /// Its strings.
    pub t: &'static Texts,
    /// Its self-service strings (top-ups, key replacement, notices).
    pub s: &'static SelfTexts,
    /// Its accessibility aids (skip link, titles of states, the chart's table…).
    pub a11y: &'static A11yTexts,
    /// This browser's CSRF token (for `<meta name="csrf-token">` and hidden form fields).
    pub csrf: String,
    /// Running with simulated upstream and PayPal.
    pub demo: bool,
    /// The daemon sends mail (receipts, balance notices): the pages say where an address goes.
    pub mail: bool,
    /// `server.public_url`, no trailing slash.
    pub public_url: String,
    /// The path of this page (for the language switch links).
    pub path: String,
    /// Its query string, without the `?`.
    query: String,
    /// Reached by a form's POST: the language switch leads to the page's GET form instead.
    posted: bool,
    /// Whether the header shows the language switch (see [`PageCtx::hide_lang_switch`]).
    lang_switch: bool,
    /// This browser's [`BROWSER_COOKIE`]: never handed to a template.
    browser: String,
    cookies: CookieJar,
    set_cookies: bool,
}

impl PageCtx {
    /// Render a template into a response that also sets the context's cookies.
    pub fn page(&self, html: Result<String, askama::Error>) -> Response {
        match html {
            Ok(body) => (self.cookies.clone(), Html(body)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "template failed");
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "page error").into_response()
            }
        }
    }

    /// The URL of this page in another language (its other query parameters kept, so a
    /// checkout result survives the switch). A page reached by POST has no address of its own
    /// to show again (`GET /dashboard/rotate` was a bare 405, found by an accessibility
    /// audit): its switch leads to its form's page ([`get_form_of`]).
    pub fn lang_link(&self, lang: &str) -> String {
        let (path, query) = if self.posted {
            get_form_of(&self.path)
        } else {
            (self.path.as_str(), self.query.as_str())
        };
        let mut query: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("lang="))
            .collect();
        let wanted = format!("lang={lang}");
        query.push(&wanted);
        // A path such as `//evil.example/x` (or `/\evil.example/x`, which browsers read the
        // same way) must not become a protocol-relative link.
        let path = format!("/{}", path.trim_start_matches(['/', '\\']));
        format!("{path}?{}", query.join("&"))
    }

    /// Leave the language switch out of this page: one that shows a new key once, which a
    /// click on the switch would lose without a word.
    pub fn hide_lang_switch(&mut self) {
        self.lang_switch = false;
    }

    /// Whether the header shows the language switch.
    pub fn shows_lang_switch(&self) -> bool {
        self.lang_switch
    }

    /// True when the cookies changed (a new CSRF token or language).
    pub fn sets_cookies(&self) -> bool {
        self.set_cookies
    }

    /// What this browser's dashboard grants are sealed to (see [`crate::shop::grant`]).
    pub fn grant_binding(&self) -> String {
        binding(&self.csrf, &self.browser)
    }
}

/// The page a language switch leads to from a page reached by POST at `path`, as a path and
/// a query: the form's own page. The dashboard's top-up checkout (`POST /checkout/{plan}`)
/// leads to the top-up page that asks for the key: its grant came in the form, and the plan's
/// plain address sells a new key (`checkout.js` posts the grant again instead, where it can).
fn get_form_of(path: &str) -> (&str, &'static str) {
    match path {
        "/dashboard/rotate" => ("/dashboard", ""),
        "/demo/paypal/approve" => ("/pricing", ""),
        p if p.starts_with("/checkout/") => (p, "topup=1"),
        p => (p, ""),
    }
}

/// A grant's binding: the CSRF token pages print and the browser secret they never do.
fn binding(csrf: &str, browser: &str) -> String {
    format!("{csrf}|{browser}")
}

/// [`PageCtx::grant_binding`] of the browser making a page's JSON call: its `x-csrf-token`
/// (the guard checked it against the cookie) and its [`BROWSER_COOKIE`].
pub fn grant_binding_of(headers: &HeaderMap) -> String {
    let jar = CookieJar::from_headers(headers);
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value()).unwrap_or("");
    binding(csrf_header(headers).unwrap_or(""), browser)
}

fn secure(state: &AppState) -> bool {
    state.config.server.public_url.starts_with("https://")
}

fn cookie(state: &AppState, name: &'static str, value: String) -> Cookie<'static> {
    let mut c = Cookie::new(name, value);
    c.set_path("/");
    c.set_http_only(true);
    // Lax, not Strict: arriving from another site (a link in an email) must not replace the
    // token that tabs already open are using. The token grants nothing by itself; the POSTs
    // it protects are never sent cross-site with cookies under Lax either.
    c.set_same_site(SameSite::Lax);
    c.set_secure(secure(state));
    c.set_max_age(cookie::time::Duration::days(365));
    c
}

fn lang_from_query(uri: &axum::http::Uri) -> Option<Lang> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.strip_prefix("lang="))
        .find_map(Lang::parse)
}

/// The language a page would be shown in to this browser (its cookie, else
/// `Accept-Language`): what the JSON calls of a page record as the buyer's language.
pub fn page_lang(headers: &HeaderMap) -> Lang {
    CookieJar::from_headers(headers)
        .get(LANG_COOKIE)
        .and_then(|c| Lang::parse(c.value()))
        .unwrap_or_else(|| lang_from_accept(headers))
}

fn lang_from_accept(headers: &HeaderMap) -> Lang {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    lang_of_accept(accept)
}

/// The language we have that `accept` (an `Accept-Language` value) weighs highest (RFC 9110
/// §12.5.4: `q` from 0 to 1, 1 when absent, 0 for "not this one"; of equal weights the first
/// listed); English when it names neither. The first listed used to win whatever its weight
/// (`zh;q=0.1, en;q=0.9` was shown Chinese; found by an independent check).
fn lang_of_accept(accept: &str) -> Lang {
    // The weight given to each of ours by name (the highest, if named twice), and to `*`.
    let (mut named, mut any): ([Option<u32>; 2], Option<u32>) = ([None, None], None);
    for part in accept.split(',') {
        let mut fields = part.split(';');
        let tag = fields.next().unwrap_or("").trim().to_ascii_lowercase();
        let slot = if tag == "zh" || tag.starts_with("zh-") {
            &mut named[1]
        } else if tag == "en" || tag.starts_with("en-") {
            &mut named[0]
        } else if tag == "*" {
            &mut any
        } else {
            continue;
        };
        let q = fields
            .map(str::trim)
            .find(|f| f.len() >= 2 && f[..2].eq_ignore_ascii_case("q="))
            .map_or(Some(1000), |f| weight(&f[2..]));
        let Some(q) = q else { continue };
        *slot = Some(slot.map_or(q, |was| was.max(q)));
    }
    // `*` stands for each of ours the header does not name; of equal weights English, the
    // default, unless Chinese was named first.
    let en = named[0].or(any).unwrap_or(0);
    let zh = named[1].or(any).unwrap_or(0);
    if zh > en || (zh == en && zh > 0 && zh_first(accept)) {
        Lang::Zh
    } else {
        Lang::En
    }
}

/// Whether a Chinese tag comes before any English one in `accept`.
fn zh_first(accept: &str) -> bool {
    for part in accept.split(',') {
        let tag = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if tag == "zh" || tag.starts_with("zh-") {
            return true;
        }
        if tag == "en" || tag.starts_with("en-") {
            return false;
        }
    }
    false
}

/// A `q` value in thousandths (`0.8` → 800); `None` when it is not one.
fn weight(q: &str) -> Option<u32> {
    let q = q.trim();
    let (whole, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u32>().ok()?;
    match whole {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

impl FromRequestParts<Arc<AppState>> for PageCtx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let mut jar = CookieJar::from_headers(&parts.headers);
        let mut set_cookies = false;
        let lang = match lang_from_query(&parts.uri) {
            Some(l) => {
                jar = jar.add(cookie(state, LANG_COOKIE, l.code().to_string()));
                set_cookies = true;
                l
            }
            None => jar
                .get(LANG_COOKIE)
                .and_then(|c| Lang::parse(c.value()))
                .unwrap_or_else(|| lang_from_accept(&parts.headers)),
        };
        let csrf = match jar.get(CSRF_COOKIE).map(|c| c.value().to_string()) {
            Some(t) if t.len() >= 32 => t,
            _ => {
                let t = crate::keys::token::random_base62(32).unwrap_or_default();
                jar = jar.add(cookie(state, CSRF_COOKIE, t.clone()));
                set_cookies = true;
                t
            }
        };
        let browser = match jar.get(BROWSER_COOKIE).map(|c| c.value().to_string()) {
            Some(t) if t.len() >= 32 => t,
            _ => {
                let t = crate::keys::token::random_base62(32).unwrap_or_default();
                jar = jar.add(cookie(state, BROWSER_COOKIE, t.clone()));
                set_cookies = true;
                t
            }
        };
        Ok(PageCtx {
            lang,
            t: lang.texts(),
            s: lang.self_texts(),
            a11y: lang.a11y_texts(),
            csrf,
            demo: state.demo,
            mail: state.mailer.enabled(),
            public_url: state.config.server.public_url.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            posted: parts.method == axum::http::Method::POST,
            lang_switch: true,
            browser,
            cookies: if set_cookies { jar } else { CookieJar::new() },
            set_cookies,
        })
    }
}

/// Check a submitted CSRF token against this browser's cookie, in constant time.
pub fn csrf_ok(headers: &HeaderMap, submitted: Option<&str>) -> bool {
    let jar = CookieJar::from_headers(headers);
    let (Some(cookie), Some(sent)) = (jar.get(CSRF_COOKIE), submitted) else {
        return false;
    };
    let expected = cookie.value().as_bytes();
    expected.len() >= 32 && bool::from(expected.ct_eq(sent.as_bytes()))
}

/// The CSRF header of a JSON call.
pub fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

/// PayPal's origins, allowed by the checkout page's policy only.
const PAYPAL_ORIGINS: &str =
    "https://www.paypal.com https://*.paypal.com https://*.paypalobjects.com";

/// Security headers on every storefront response; the checkout page alone may load PayPal.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let checkout = req.uri().path().starts_with("/checkout/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let csp = if checkout {
        format!(
            "default-src 'self'; script-src 'self' {PAYPAL_ORIGINS}; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data: {PAYPAL_ORIGINS}; connect-src 'self' {PAYPAL_ORIGINS}; \
             frame-src {PAYPAL_ORIGINS}; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; \
             object-src 'none'"
        )
    } else {
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; \
         object-src 'none'"
            .to_string()
    };
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page's context as the extractor makes it, for `path?query` reached by `posted`.
    fn ctx(path: &str, query: &str, posted: bool) -> PageCtx {
        PageCtx {
            lang: Lang::En,
            t: Lang::En.texts(),
            s: Lang::En.self_texts(),
            a11y: Lang::En.a11y_texts(),
            csrf: String::new(),
            demo: false,
            mail: false,
            public_url: String::new(),
            path: path.into(),
            query: query.into(),
            posted,
            lang_switch: true,
            browser: String::new(),
            cookies: CookieJar::new(),
            set_cookies: false,
        }
    }

    /// A page's own address keeps its query; a posted page's switch leads to its form's page,
    /// never to a path that answers `GET` with 405 nor to a purchase instead of a top-up.
    #[test]
    fn accept_language_is_read_by_weight() {
        for (accept, want) in [
            ("", Lang::En),
            ("zh-CN,zh;q=0.9,en;q=0.8", Lang::Zh),
            ("en-US,en;q=0.9,zh-CN;q=0.8", Lang::En),
            ("zh;q=0.1,en;q=0.9", Lang::En),
            ("fr, zh;q=0.5", Lang::Zh),
            ("zh;q=0, en;q=0.1", Lang::En),
            ("zh;q=0", Lang::En),
            ("de, fr;q=0.8", Lang::En),
            ("zh-TW;q=0.7, en;q=0.7", Lang::Zh),
            ("en;q=bogus, zh;q=0.2", Lang::Zh),
            ("zhx, ZH-hk", Lang::Zh),
            ("enx", Lang::En),
            ("en;q=0, *;q=0.5", Lang::Zh),
            ("*;q=0.9, en;q=0", Lang::Zh),
            ("*", Lang::En),
            ("en;Q=0.1,zh;q=0.2", Lang::Zh),
            ("zh-CN;q=0, zh;q=0.9, en;q=0.8", Lang::Zh),
        ] {
            assert_eq!(lang_of_accept(accept), want, "{accept}");
        }
        assert_eq!(weight("0.125"), Some(125));
        assert_eq!(weight("1.000"), Some(1000));
        assert_eq!(weight("1.5"), None);
        assert_eq!(weight("0.1234"), None);
    }

    #[test]
    fn the_language_switch_leads_to_a_page_that_exists() {
        let cases = [
            (
                "/checkout/trial",
                "order_id=ord_x&approved=1&lang=en",
                false,
                "/checkout/trial?order_id=ord_x&approved=1&lang=zh",
            ),
            ("/dashboard", "", false, "/dashboard?lang=zh"),
            ("/dashboard", "lang=en", true, "/dashboard?lang=zh"),
            ("/dashboard/rotate", "lang=en", true, "/dashboard?lang=zh"),
            (
                "/checkout/pro",
                "lang=en",
                true,
                "/checkout/pro?topup=1&lang=zh",
            ),
            ("/order", "", true, "/order?lang=zh"),
            ("/demo/paypal/approve", "", true, "/pricing?lang=zh"),
            ("/mail/opt-out/abc", "", true, "/mail/opt-out/abc?lang=zh"),
            ("//evil.example/x", "", true, "/evil.example/x?lang=zh"),
        ];
        for (path, query, posted, want) in cases {
            assert_eq!(
                ctx(path, query, posted).lang_link("zh"),
                want,
                "{path}?{query}"
            );
        }
        let mut done = ctx("/dashboard/rotate", "", true);
        assert!(done.shows_lang_switch());
        done.hide_lang_switch();
        assert!(!done.shows_lang_switch());
    }
}
