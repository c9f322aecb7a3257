//! Rendering tests: every view, dialog and state drawn on ratatui's `TestBackend` at 80×24 (the
//! smallest supported terminal) and 200×50, asserting what the operator reads. The Upstream
//! view and the header's alert line are in `upstream`.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;

use super::draw;
use crate::console::app::{App, View};
use crate::console::event::Event;
use crate::console::tests::{NOW, app, press, type_str};

mod small;
mod upstream;

const SMALL: (u16, u16) = (80, 24);
const LARGE: (u16, u16) = (200, 50);

/// The screen as lines of text, and the buffer (for styles).
fn render(app: &App, (w, h): (u16, u16)) -> (Vec<String>, Buffer) {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| draw(f, app)).unwrap();
    let buf = term.backend().buffer().clone();
    let lines = (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect();
    (lines, buf)
}

fn screen(app: &App, size: (u16, u16)) -> Vec<String> {
    render(app, size).0
}

/// The one line containing `needle` (panics with the screen otherwise).
fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    let hits: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
    assert!(
        hits.len() == 1,
        "{} lines contain {needle:?}:\n{}",
        hits.len(),
        lines.join("\n")
    );
    hits[0]
}

fn assert_has(lines: &[String], needles: &[&str]) {
    let text = lines.join("\n");
    for n in needles {
        assert!(text.contains(n), "missing {n:?} in:\n{text}");
    }
}

fn view(v: View) -> App {
    let mut a = app();
    a.view = v;
    a
}

#[test]
fn header_on_every_view() {
    for v in View::ALL {
        for size in [SMALL, LARGE] {
            let lines = screen(&view(v), size);
            assert_has(
                &lines[..3],
                &[
                    "modelrelay 0.1.0",
                    "up 2h07m",
                    "req/s 0.03",
                    "in flight 1",
                    "● live",
                    "spend $1.25",
                    "revenue $20.00",
                    "upstream last 1.2s",
                    "1 Live",
                    "4 Limits",
                ],
            );
        }
        let wide = screen(&view(v), LARGE);
        assert!(
            wide[1].contains("last error upstream_error 502 5m ago"),
            "{}",
            wide[1]
        );
    }
    // An error of this very moment is "just now", not "now ago".
    let mut a = view(View::Live);
    a.handle(Event::Tick(NOW - 299_500));
    let wide = screen(&a, LARGE);
    assert!(
        wide[1].contains("last error upstream_error 502 just now"),
        "{}",
        wide[1]
    );
}

#[test]
fn live_view_lists_streams_and_finished_requests() {
    for size in [SMALL, LARGE] {
        let lines = screen(&view(View::Live), size);
        assert_has(&lines, &["In flight (1)", "Finished (last 2"]);
        let stream = line_with(&lines, "203.0.113.7");
        for cell in [
            "sk-gateway-PrOo…",
            "pro",
            "deepseek-v4-flash",
            "4.0s",
            "120",
            "30.0",
        ] {
            assert!(stream.contains(cell), "{cell:?} not in {stream:?}");
        }
        let a = line_with(&lines, "11:59:30");
        for cell in [
            "sk-gateway-PrOo…",
            "200",
            "$0.000182",
            "1.2s",
            "87ms",
            "300",
        ] {
            assert!(a.contains(cell), "{cell:?} not in {a:?}");
        }
        let b = line_with(&lines, "11:59:50");
        assert!(b.contains("sk-gateway-TrIa…") && b.contains("$0.01"), "{b}");
    }
    let wide = screen(&view(View::Live), LARGE);
    assert_has(&wide, &["req_stream", "REQUEST", "END"]);
    // From 100 columns, how each ended (README), before the other optional columns.
    let hundred = screen(&view(View::Live), (100, 30));
    assert_has(&hundred, &["END"]);
    assert!(line_with(&wide, "11:59:30").contains("req_a"));
}

#[test]
fn live_view_keeps_model_names_whole_from_80_to_120_columns() {
    use crate::activity::protocol::{ActivityEvent, Response};
    let mut a = view(View::Live);
    // Real request ids: the time in hex, then the random tail that tells them apart.
    let id = |tail: &str| format!("req_019ab2c3d4e5{tail}");
    a.handle(Event::Socket(Response::Event {
        event: ActivityEvent::RequestStarted {
            request_id: id("StReAmPrO001"),
            key_id: "key_pro".into(),
            key_prefix: "sk-gateway-PrOo…".into(),
            plan: "pro".into(),
            model: "deepseek-v4-pro".into(),
            stream: true,
            client_ip: Some("198.51.100.4".into()),
            api: crate::status::Api::OpenAi,
            at_ms: NOW - 2_000,
        },
    }));
    let mut done = crate::console::tests::finished("", "key_pro", "0.0021", NOW - 5_000);
    if let ActivityEvent::RequestFinished {
        request_id, model, ..
    } = &mut done
    {
        *request_id = id("FiNiShPrO001");
        *model = "deepseek-v4-pro".into();
    }
    a.handle(Event::Socket(Response::Event { event: done }));
    for width in [80, 100, 120] {
        let lines = screen(&a, (width, 24));
        for (row, model) in [
            ("198.51.100.4", "deepseek-v4-pro"),
            ("203.0.113.7", "deepseek-v4-flash"),
            ("11:59:55", "deepseek-v4-pro"),
            ("11:59:30", "deepseek-v4-flash"),
        ] {
            let line = line_with(&lines, row);
            assert!(
                line.contains(&format!(" {model} ")),
                "{width} columns: {model:?} not whole in {line:?}"
            );
        }
    }
    // From 140 columns the request id is there too (after how each ended, the dialect and the
    // account), by the tail that tells it apart.
    let lines = screen(&a, (140, 24));
    assert!(line_with(&lines, "11:59:55").contains("FiNiShPrO001"));
}

#[test]
fn live_view_says_which_dialect_and_account_served_a_request() {
    use crate::activity::protocol::{ActivityEvent, Response};
    use crate::status::Api;
    let mut a = view(View::Live);
    let mut start = crate::console::tests::started("req_anthropic", NOW - 1_000);
    if let ActivityEvent::RequestStarted { api, client_ip, .. } = &mut start {
        *api = Api::Anthropic;
        *client_ip = Some("192.0.2.55".into());
    }
    for event in [
        start,
        ActivityEvent::RequestRouted {
            request_id: "req_anthropic".into(),
            account: "secondary".into(),
            at_ms: NOW - 900,
        },
    ] {
        a.handle(Event::Socket(Response::Event { event }));
    }
    let mut done = crate::console::tests::finished("req_done", "key_pro", "0.0021", NOW - 500);
    if let ActivityEvent::RequestFinished { api, account, .. } = &mut done {
        *api = Api::Anthropic;
        *account = "primary".into();
    }
    a.handle(Event::Socket(Response::Event { event: done }));
    let lines = screen(&a, LARGE);
    assert_has(&lines, &["API", "ACCOUNT"]);
    let flying = line_with(&lines, "192.0.2.55");
    assert!(
        flying.contains(" anthropic ") && flying.contains(" secondary "),
        "{flying}"
    );
    // The fixture's stream has not been routed yet: its account is not known.
    let unrouted = line_with(&lines, "203.0.113.7");
    assert!(
        unrouted.contains(" openai ") && unrouted.contains(" - "),
        "{unrouted}"
    );
    let finished = line_with(&lines, "11:59:59");
    assert!(
        finished.contains(" anthropic ") && finished.contains(" primary "),
        "{finished}"
    );
    // At 80 columns the model keeps its name and these give way.
    let narrow = screen(&a, SMALL);
    assert!(!narrow.join("\n").contains("ACCOUNT"));
    assert!(line_with(&narrow, "192.0.2.55").contains("deepseek-v4-flash"));
}

#[test]
fn live_view_shows_tokens_growing() {
    let mut a = view(View::Live);
    a.handle(Event::Tick(NOW + 1_000));
    a.handle(Event::Socket(crate::activity::protocol::Response::Event {
        event: crate::activity::protocol::ActivityEvent::RequestProgress {
            request_id: "req_stream".into(),
            output_tokens: 260,
            at_ms: NOW + 1_000,
        },
    }));
    let lines = screen(&a, SMALL);
    let row = line_with(&lines, "203.0.113.7");
    assert!(
        row.contains("5.0s") && row.contains("260") && row.contains("52.0"),
        "{row}"
    );
}

#[test]
fn keys_view_shows_budgets() {
    for size in [SMALL, LARGE] {
        let lines = screen(&view(View::Keys), size);
        assert_has(&lines, &["Keys (3)", "sort: created", "REMAINING", "REQS"]);
        let trial = line_with(&lines, "sk-gateway-TrIa…");
        for cell in ["trial", "active", "$0.01", "$0.99", "3m", "█", "99%"] {
            assert!(trial.contains(cell), "{cell:?} not in {trial:?}");
        }
        let pro = line_with(&lines, "sk-gateway-PrOo…");
        assert!(pro.contains("$48.76") && pro.contains("$1.24"), "{pro}");
        let old = line_with(&lines, "sk-gateway-OlDd…");
        // Nothing left to spend on a revoked key, whatever it had when revoked.
        assert!(
            old.contains("revoked") && old.contains("$4.00") && old.contains("40"),
            "{old}"
        );
        assert!(!old.contains("$1.00") && old.contains(" - "), "{old}");
        assert!(old.starts_with('▸'), "the first key is selected: {old}");
    }
    let wide = screen(&view(View::Keys), LARGE);
    let trial = line_with(&wide, "sk-gateway-TrIa…");
    assert!(trial.contains("key_trial@example.com") && trial.contains("$1.00"));
    assert_has(&wide, &["BUDGET", "EMAIL · NOTE"]);
    // A hand-made key's note follows its email, or stands alone.
    let mut a = view(View::Keys);
    if let Some(k) = a.model.keys.get_mut("key_pro") {
        k.note = Some("agent 3".into());
    }
    if let Some(k) = a.model.keys.get_mut("key_trial") {
        k.email = None;
        k.note = Some("comp for Ana".into());
    }
    let wide = screen(&a, LARGE);
    let pro = line_with(&wide, "sk-gateway-PrOo…");
    assert!(pro.contains("@example.com · agent 3"), "{pro}");
    let trial = line_with(&wide, "sk-gateway-TrIa…");
    assert!(trial.contains("comp for Ana"), "{trial}");
}

/// A busy key's request count is shortened in a narrow window (it was cut to `…`), whole in a
/// wide one.
#[test]
fn a_busy_keys_request_count_is_shortened_not_cut() {
    let mut a = view(View::Keys);
    if let Some(k) = a.model.keys.get_mut("key_pro") {
        k.requests = 469_123;
    }
    let lines = screen(&a, SMALL);
    let small = line_with(&lines, "sk-gateway-PrOo…");
    assert!(small.contains("469k"), "{small}");
    let lines = screen(&a, LARGE);
    let large = line_with(&lines, "sk-gateway-PrOo…");
    assert!(large.contains("469123"), "{large}");
    // At 120 columns, the wide layout's first width, the id stays whole.
    let lines = screen(&a, (120, 30));
    let at_120 = line_with(&lines, "sk-gateway-PrOo…");
    assert!(
        at_120.contains("key_pro") && at_120.contains("469k"),
        "{at_120}"
    );
}

#[test]
fn keys_view_filter_and_sort_are_shown() {
    let mut a = view(View::Keys);
    press(&mut a, KeyCode::Char('s'));
    press(&mut a, KeyCode::Char('/'));
    type_str(&mut a, "tri");
    let lines = screen(&a, SMALL);
    assert_has(
        &lines,
        &["Keys (1 of 3)", "sort: remaining ↑", "filter: tri"],
    );
    assert!(lines[23].contains("filter: tri▏"), "{}", lines[23]);
    assert!(!lines.join("\n").contains("sk-gateway-PrOo…"));
    press(&mut a, KeyCode::Enter);
    press(&mut a, KeyCode::Char('/'));
    type_str(&mut a, "zzz");
    assert_has(&screen(&a, SMALL), &["no key matches the filter"]);
}

#[test]
fn orders_view_lists_orders() {
    for size in [SMALL, LARGE] {
        let lines = screen(&view(View::Orders), size);
        assert_has(&lines, &["Orders (3", "AMOUNT", "STATUS", "EMAIL"]);
        let paid = line_with(&lines, "ord_PAID");
        for cell in ["11-25 11:02", "pro", "$20.00", "paid"] {
            assert!(paid.contains(cell), "{cell:?} not in {paid:?}");
        }
        let open = line_with(&lines, "ord_OPEN");
        assert!(open.contains("created") && open.contains("$5.00") && open.contains(" - "));
        assert!(line_with(&lines, "ord_BACK").contains("refunded"));
    }
    let small = screen(&view(View::Orders), SMALL);
    let paid = line_with(&small, "ord_PAID");
    assert!(
        paid.contains("sk-gateway-PrOo…") && paid.contains("alice@"),
        "{paid}"
    );
    let wide = screen(&view(View::Orders), LARGE);
    let paid = line_with(&wide, "ord_PAIDxxxxxxxxxxxxxxxx");
    assert!(
        paid.contains("alice@example.com") && paid.contains("key_pro"),
        "{paid}"
    );
}

/// The sparkline cells of the row of `prefix` on the Limits view.
fn sparkline(lines: &[String], prefix: &str) -> String {
    let row = line_with(lines, prefix);
    // Label: key (16), RPM, HITS, LAST (5 each), spaces.
    row.chars()
        .skip(35)
        .collect::<String>()
        .trim_end()
        .to_string()
}

#[test]
fn limits_view_draws_hits_per_key_with_a_sparkline() {
    for size in [SMALL, LARGE] {
        let lines = screen(&view(View::Limits), size);
        assert_has(
            &lines,
            &[
                "Rate-limit hits, last hour: 4 on 1 key",
                "402 (no budget) ×1",
                "403 (not in plan) ×1",
            ],
        );
        let row = line_with(&lines, "sk-gateway-TrIa…    30     4");
        assert!(row.contains("now"), "{row}");
        let refused = line_with(&lines, "insufficient_budget");
        assert!(refused.contains("402") && refused.contains("sk-gateway-TrIa…"));
        let refused = line_with(&lines, "model_not_allowed");
        assert!(refused.contains("403") && refused.contains("sk-gateway-PrOo…"));
    }
    // 45 slices of the hour at 80 columns: the hit 40 minutes ago, and three in the last one.
    let small = sparkline(
        &screen(&view(View::Limits), SMALL),
        "sk-gateway-TrIa…    30",
    );
    assert_eq!(small, format!("{}▂{}█", "·".repeat(14), "·".repeat(29)));
    // One slice per minute at 200 columns.
    let large = sparkline(
        &screen(&view(View::Limits), LARGE),
        "sk-gateway-TrIa…    30",
    );
    assert_eq!(large, format!("{}▄{}▄█", "·".repeat(19), "·".repeat(38)));

    // The two kinds of 429 refusal are told apart in the title.
    use crate::activity::protocol::{ActivityEvent, Response};
    let mut a = view(View::Limits);
    for (i, code) in ["budget_held", "too_many_in_flight", "too_many_in_flight"]
        .into_iter()
        .enumerate()
    {
        a.handle(Event::Socket(Response::Event {
            event: ActivityEvent::Refused {
                key_id: Some("key_pro".into()),
                status: 429,
                code: code.into(),
                at_ms: NOW - 1_000 - i as i64,
            },
        }));
    }
    assert_has(
        &screen(&a, LARGE),
        &["429 (held) ×1 · 429 (at once) ×2", "too_many_in_flight"],
    );
    // At 80 columns the counts alone, the 429s included (the words cut them off).
    assert_has(
        &screen(&a, SMALL),
        &[
            "Refusals (last 1h): 402 ×",
            "· 429 held ×1 · 429 at once ×2",
        ],
    );
}

#[test]
fn limits_view_marks_counts_that_are_a_floor() {
    // The daemon keeps the newest hits a key and refusals; a snapshot saying older ones of the
    // hour fell out is drawn with `+` after each count they may belong to.
    let mut snap = crate::console::tests::snapshot();
    snap.rate_limited[0].pushed_out_ms = Some(NOW - 2_500_000);
    snap.refusals_pushed_out_ms = Some(NOW - 3_000_000);
    let mut a = view(View::Limits);
    a.handle(Event::Socket(
        crate::activity::protocol::Response::Snapshot {
            snapshot: Box::new(snap),
        },
    ));
    for size in [SMALL, LARGE] {
        let lines = screen(&a, size);
        assert_has(&lines, &["Rate-limit hits, last hour: 4+ on 1 key"]);
        line_with(&lines, "sk-gateway-TrIa…    30    4+");
    }
    // The refusals' counts are of the newest kept, and the title says so.
    for size in [SMALL, LARGE] {
        assert_has(
            &screen(&a, size),
            &["Refusals, last hour, the newest 200: 402 (no budget) ×1 · 403 (not in plan) ×1"],
        );
    }
}

#[test]
fn help_overlay() {
    for size in [SMALL, LARGE] {
        let mut a = view(View::Keys);
        press(&mut a, KeyCode::Char('?'));
        let lines = screen(&a, size);
        assert_has(
            &lines,
            &[
                "Help",
                "next / previous view",
                "revoke the selected key",
                "top up the selected key",
                "mint a comp key (shown once)",
                "Live, Keys, Orders, Limits, Upstream",
                "enable / disable the selected upstream account",
                "socket /run/modelrelay/modelrelay.sock",
            ],
        );
        // The help covers the table beneath it.
        assert!(!line_with(&lines, "revoke the selected key").contains("sk-gateway-"));
    }
}

#[test]
fn confirmation_dialogs() {
    for size in [SMALL, LARGE] {
        let mut a = view(View::Keys);
        press(&mut a, KeyCode::Char('j'));
        press(&mut a, KeyCode::Char('r'));
        let lines = screen(&a, size);
        assert_has(
            &lines,
            &[
                "Revoke key",
                "Revoke sk-gateway-PrOo… (key_pro)?",
                "Its next request gets 401",
                "y revoke · n or Esc cancel",
            ],
        );
        press(&mut a, KeyCode::Esc);
        press(&mut a, KeyCode::Char('t'));
        type_str(&mut a, "2.5");
        assert_has(&screen(&a, size), &["Top up key", "Amount (USD): $2.5▏"]);
        press(&mut a, KeyCode::Enter);
        assert_has(
            &screen(&a, size),
            &["Add $2.50 to sk-gateway-PrOo…?", "y top up"],
        );
        press(&mut a, KeyCode::Esc);
        // The amount as typed, not rounded to cents ("Add $0.00", "Add $0.0001" for 0.00005).
        press(&mut a, KeyCode::Char('t'));
        type_str(&mut a, "0.00005");
        press(&mut a, KeyCode::Enter);
        assert_has(&screen(&a, size), &["Add $0.00005 to sk-gateway-PrOo…?"]);
        press(&mut a, KeyCode::Esc);
        press(&mut a, KeyCode::Char('n'));
        let lines = screen(&a, size);
        assert_has(&lines, &["New comp key", "▸pro", "starter", "trial"]);
        press(&mut a, KeyCode::Enter);
        assert_has(
            &screen(&a, size),
            &["Mint a comp key on plan pro?", "y mint"],
        );
    }
}

#[test]
fn the_new_key_is_shown_in_full_once() {
    let api_key = "sk-gateway-NeWwAbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab";
    for size in [SMALL, LARGE] {
        let mut a = view(View::Keys);
        a.modal = Some(crate::console::app::Modal::NewKey {
            api_key: api_key.into(),
            plan: "trial".into(),
        });
        let lines = screen(&a, size);
        assert_has(
            &lines,
            &["New key — shown once", api_key, "will not show it again"],
        );
        press(&mut a, KeyCode::Enter);
        assert!(!screen(&a, size).join("\n").contains(api_key));
    }
}

/// In a window narrower than the tables ask for, an amount is whole or marked `…`, never cut
/// on its left (`$20000.00` read `0000.00` at 60 columns, `0.00` at 40; `$20.00` read `20.00`
/// on the Orders view at 45; `never` read `ever`).
#[test]
fn narrow_windows_never_cut_an_amount() {
    let mut a = view(View::Keys);
    let mut big = crate::console::tests::key("key_big", "sk-gateway-BiGg…", "pro", "20000", "0");
    big.last_used_at = None;
    a.model.upsert_key(big);
    // The Live view's costs ($0.000182, $0.01): no tail of one may show without its `$`.
    let mut cut_costs: Vec<String> = ["0.000182", "0.01"]
        .iter()
        .flat_map(|c| (0..c.len() - 1).map(move |i| c[i..].to_string()))
        .collect();
    // Nor a tail of the finished requests' latency (1.2s), TTFT (87ms) or output (300).
    cut_costs.extend([".2s", "2s", "7ms", "00"].map(String::from));
    for v in [View::Keys, View::Orders, View::Live] {
        a.view = v;
        for w in 20..=130 {
            let lines = screen(&a, (w, 24));
            for line in &lines[3..23] {
                for token in line.split(['│', ' ']).filter(|t| !t.is_empty()) {
                    let amount = v != View::Live
                        && token.matches('.').count() == 1
                        && token.chars().any(|c| c.is_ascii_digit());
                    assert!(
                        !amount || token.trim_start_matches(['+', '~']).starts_with('$'),
                        "{v:?} at {w} columns: {token:?} in {line:?}\n{}",
                        lines.join("\n")
                    );
                    assert!(
                        v != View::Live || !cut_costs.iter().any(|c| c == token),
                        "{v:?} at {w} columns: {token:?} in {line:?}\n{}",
                        lines.join("\n")
                    );
                    assert_ne!(token, "ever", "{v:?} at {w}: {line:?}");
                }
            }
        }
    }
}

/// A narrow window still tells keys apart: what is left of the KEY column shows the part of
/// each prefix after the `sk-gateway-` all keys share (at 50 columns every key read `sk-ga`).
#[test]
fn narrow_windows_tell_keys_apart() {
    for (v, marks) in [
        (View::Keys, &["TrIa", "PrOo", "OlDd"][..]),
        (View::Live, &["PrOo"][..]),
    ] {
        for w in [40, 50, 60] {
            let lines = screen(&view(v), (w, 24));
            for mark in marks {
                // At 40 columns the column has room for three characters and the `…`.
                let mark = if w < 50 { &mark[..3] } else { mark };
                assert!(
                    lines.iter().any(|l| l.contains(mark)),
                    "{v:?} at {w} columns: no {mark:?}\n{}",
                    lines.join("\n")
                );
            }
        }
    }
}

/// In a window too small for the dialog, the new key is still drawn whole (wrapped, over the
/// whole screen, with only how to close it); in one too small even for that, the console asks
/// for a larger window and Enter does not close the dialog (closing would lose the key: it was
/// shown cut, 36 of its 51 characters, at 40×10).
#[test]
fn a_key_shown_once_is_never_cut_by_a_small_window() {
    let api_key = "sk-gateway-NeWwAbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab";
    for (w, h) in [(40, 10), (30, 8), (60, 9)] {
        let mut a = view(View::Keys);
        a.modal = Some(crate::console::app::Modal::NewKey {
            api_key: api_key.into(),
            plan: "trial".into(),
        });
        let text: String = screen(&a, (w, h))
            .iter()
            .map(|l| l.replace(['│', ' '], ""))
            .collect();
        assert!(text.contains(api_key), "{w}x{h}: {text}");
        press(&mut a, KeyCode::Enter);
        assert!(a.modal.is_none(), "{w}x{h}: closed once seen");
    }
    let mut a = view(View::Keys);
    a.modal = Some(crate::console::app::Modal::ReplacedKey {
        api_key: api_key.into(),
        old_prefix: "sk-gateway-OlDd".into(),
    });
    assert_has(&screen(&a, (20, 5)), &["Enlarge"]);
    press(&mut a, KeyCode::Enter);
    press(&mut a, KeyCode::Esc);
    assert!(a.modal.is_some(), "not closed before the key was seen");
    // Ctrl-C: the first one warns that the key would be lost (it quit at once).
    let ctrl_c = || KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(a.on_key(ctrl_c()), None, "the first Ctrl-C does not quit");
    assert!(a.modal.is_some());
    assert_has(&screen(&a, (20, 5)), &["Ctrl-C again"]);
    assert!(a.on_key(ctrl_c()).is_some(), "a second one quits");
    let text: String = screen(&a, (40, 10))
        .iter()
        .map(|l| l.replace(['│', ' '], ""))
        .collect();
    assert!(text.contains(api_key), "{text}");
    press(&mut a, KeyCode::Esc);
    assert!(a.modal.is_none());
}

#[test]
fn disconnection_is_said_on_screen() {
    let mut a = view(View::Live);
    a.handle(Event::Disconnected(
        "no modelrelay daemon is answering on /run/modelrelay/modelrelay.sock".into(),
    ));
    for size in [SMALL, LARGE] {
        let lines = screen(&a, size);
        assert!(
            lines[0].contains("disconnected — reconnecting…"),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("up ?"),
            "no uptime while away: {}",
            lines[0]
        );
        let last = lines.last().unwrap();
        assert!(last.contains("disconnected — reconnecting… no modelrelay daemon"));
    }
}

#[test]
fn empty_daemon_and_connecting() {
    let mut a = App::new("/tmp/s.sock", vec![], false);
    a.handle(Event::Tick(NOW));
    let lines = screen(&a, SMALL);
    assert_has(
        &lines,
        &[
            "connecting…",
            "no requests in flight",
            "nothing finished yet",
        ],
    );
    a.view = View::Keys;
    assert_has(&screen(&a, SMALL), &["no keys yet: press n to mint one"]);
    a.view = View::Orders;
    assert_has(&screen(&a, SMALL), &["no orders yet"]);
    a.view = View::Limits;
    assert_has(
        &screen(&a, SMALL),
        &["no key hit its rate limit (last hour)", "no refusals"],
    );
    // A daemon up for less than an hour: its counts begin at its start, and the view says so.
    let mut snap = crate::console::tests::snapshot();
    snap.uptime_secs = 300;
    a.handle(Event::Connected);
    a.handle(Event::Socket(
        crate::activity::protocol::Response::Snapshot {
            snapshot: Box::new(snap),
        },
    ));
    assert_has(
        &screen(&a, SMALL),
        &[
            "Rate-limit hits, since the daemon started 5m00s ago",
            "Refusals (last 5m00s): 402 ×",
        ],
    );
    assert_has(
        &screen(&a, LARGE),
        &["Refusals, since the daemon started 5m00s ago"],
    );
    a.view = View::Upstream;
    assert_has(&screen(&a, SMALL), &["reading the upstream pool…"]);
    a.handle(Event::Reply(
        crate::console::event::Command::UpstreamStatus,
        Err("unknown command".into()),
    ));
    assert_has(
        &screen(&a, SMALL),
        &["cannot read the upstream pool: unknown command"],
    );
}

#[test]
fn monochrome_uses_no_colour() {
    let colours = |buf: &Buffer| {
        buf.content()
            .iter()
            .filter(|c| c.fg != Color::Reset || c.bg != Color::Reset)
            .count()
    };
    for v in View::ALL {
        let mut a = view(v);
        a.mono = true;
        assert_eq!(colours(&render(&a, SMALL).1), 0, "{v:?} in monochrome");
        a.mono = false;
        assert!(colours(&render(&a, SMALL).1) > 0, "{v:?} in colour");
    }
}

#[test]
fn tiny_terminals_do_not_break_rendering() {
    for (w, h) in [(1, 1), (20, 5), (40, 10), (79, 23)] {
        for v in View::ALL {
            let mut a = view(v);
            screen(&a, (w, h));
            press(&mut a, KeyCode::Char('?'));
            screen(&a, (w, h));
        }
    }
}

#[test]
fn orders_view_shows_top_ups_and_the_outbox() {
    use crate::activity::protocol::MailView;
    use crate::kinds::{MailKind, MailLang, MailStatus, OrderKind};
    let mut a = view(View::Orders);
    a.model.orders[1].kind = OrderKind::TopUp;
    a.model.orders[1].key_id = Some("key_trial".into());
    let mail = |id: i64, status: MailStatus, error: Option<&str>| MailView {
        id,
        kind: MailKind::Receipt,
        recipient: "bob@example.com".into(),
        lang: MailLang::Zh,
        key_id: None,
        order_id: Some("ord_OPENxxxxxxxxxxxxxxxx".into()),
        status,
        attempts: 2,
        last_error: error.map(str::to_string),
        created_at: "2026-11-25T11:30:00Z".into(),
        next_attempt_at: Some("2026-11-25T11:31:00Z".into()),
        sent_at: None,
    };
    // Through the console's own handling of the daemon's answer, as it arrives (an
    // independent check saw no outbox once and nothing tested this path).
    a.handle(Event::Reply(
        crate::console::event::Command::MailList,
        Ok(crate::activity::protocol::Response::Mail {
            mail: vec![
                mail(7, MailStatus::Failed, Some("connection refused")),
                mail(6, MailStatus::Sent, None),
            ],
            sending: true,
        }),
    ));
    let wide = screen(&a, LARGE);
    assert_has(&wide, &["KIND", "Outbox (0 queued, 1 failed"]);
    assert!(line_with(&wide, "key_trial             bob@").contains("top-up"));
    assert!(line_with(&wide, "ord_PAIDxxxxxxxxxxxxxxxx").contains("buy"));
    let failed = line_with(&wide, "connection refused");
    assert!(
        failed.contains("failed") && failed.contains("receipt") && failed.contains(" 7 "),
        "{failed}"
    );
    let small = screen(&a, SMALL);
    assert_has(&small, &["+ top-up", "Outbox"]);
    assert!(line_with(&small, "+starter").contains("ord_OPEN"));
}
