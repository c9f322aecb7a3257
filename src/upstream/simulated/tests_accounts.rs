//! Tests of the simulator's accounts through HTTP: several keys, balances drawn down at list
//! prices on both routes, 402 once the money is gone, `/user/balance`, and the demo's accounts.

use super::*;
use serde_json::{Value, json};

pub(super) const A: &str = "sk-account-a";
pub(super) const B: &str = "sk-account-b";

/// A simulator whose default account is `A` (with `balance`) and a second account `B`.
pub(super) async fn two_accounts(balance: Option<SimBalance>, b: SimAccount) -> SimulatedDeepSeek {
    SimulatedDeepSeek::start(SimOptions {
        api_key: A.to_owned(),
        balance,
        accounts: vec![b],
        ..SimOptions::default()
    })
    .await
    .unwrap()
}

pub(super) fn chat_body(text: &str, model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

pub(super) fn messages_body(text: &str, model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 1000, "stream": stream,
        "messages": [{"role": "user", "content": text}]})
}

/// POST a chat request (OpenAI format) with `key` as Bearer.
pub(super) async fn chat(s: &SimulatedDeepSeek, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", s.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// POST a Messages request (Anthropic format) with `key` as `x-api-key`.
pub(super) async fn messages(s: &SimulatedDeepSeek, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/anthropic/v1/messages", s.base_url()))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// GET `path` with `key` as Bearer: `(status, JSON body)`.
pub(super) async fn get(s: &SimulatedDeepSeek, path: &str, key: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", s.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

pub(super) async fn status_and_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(text.trim_start()).unwrap())
}

pub(super) fn deepseek_error(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn usd(s: &str) -> Usd {
    s.parse().unwrap()
}

/// 640 cache hits, 360 misses, 8 output tokens (3 of them reasoning).
const USAGE: &str = "[[sim prompt=1000 hit=640 reply=5 reasoning=3]]";

#[tokio::test]
async fn answers_draw_balances_down_at_list_prices() {
    let b = SimAccount::new(B).with_balance(SimBalance::usd(usd("1")).with_granted(usd("0.0001")));
    let s = two_accounts(Some(SimBalance::usd(usd("1"))), b).await;

    // Flash, off-peak, OpenAI format: 640 × 3 + 360 × 150 + 8 × 600 nano-USD.
    let (status, v) =
        status_and_json(chat(&s, A, &chat_body(USAGE, "deepseek-v4-flash", false)).await).await;
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["prompt_cache_hit_tokens"], 640);
    let flash = 640 * 3 + 360 * 150 + 8 * 600;
    assert_eq!(s.balance(A), Some(Usd::from_nanos(1_000_000_000 - flash)));
    // The same usage streamed costs the same again.
    let text = chat(&s, A, &chat_body(USAGE, "deepseek-chat", true))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        s.balance(A),
        Some(Usd::from_nanos(1_000_000_000 - 2 * flash))
    );
    assert_eq!(s.balance(B), Some(usd("1.0001")), "B was not touched");

    // Pro at peak prices on the Anthropic route (claude-opus* is pro): the granted part goes first.
    s.set_peak(true);
    let (status, v) =
        status_and_json(messages(&s, B, &messages_body(USAGE, "claude-opus-4-1", false)).await)
            .await;
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 640);
    let pro_peak = 640 * 44 + 360 * 1_320 + 8 * 3_960;
    assert_eq!(
        pro_peak,
        list_cost("deepseek-v4-pro", true, 640, 360, 8).nanos()
    );
    let funds = s.funds(B).unwrap();
    assert_eq!(funds.granted, Usd::ZERO);
    assert_eq!(
        funds.topped_up,
        Usd::from_nanos(1_000_000_000 + 100_000 - pro_peak)
    );
    assert_eq!(
        s.balance(A),
        Some(Usd::from_nanos(1_000_000_000 - 2 * flash))
    );

    // Every request says which account it was made with.
    let accounts: Vec<Option<String>> = s.requests().into_iter().map(|r| r.account).collect();
    assert_eq!(
        accounts,
        [Some(A.to_owned()), Some(A.to_owned()), Some(B.to_owned())]
    );
    assert_eq!(s.requests_of(B).len(), 1);
    assert_eq!(
        s.requests_of(B)[0].served_model.as_deref(),
        Some("deepseek-v4-pro")
    );
}

#[tokio::test]
async fn unlimited_default_account_and_unknown_keys() {
    let s = two_accounts(None, SimAccount::new(B)).await;
    for _ in 0..3 {
        let resp = chat(&s, A, &chat_body(USAGE, "deepseek-v4-pro", false)).await;
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert_eq!(s.balance(A), None);
    assert_eq!(s.funds(B), None);
    assert_eq!(s.account_keys(), [A, B]);
    // An unknown key is refused and recorded without an account.
    let resp = chat(
        &s,
        "sk-nobody-9876",
        &chat_body("hi", "deepseek-v4-flash", false),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(s.requests().last().unwrap().account, None);
    assert!(!s.set_balance("sk-nobody-9876", Some(SimBalance::default())));
    assert!(!s.set_fault("sk-nobody-9876", Some(AccountFault::Hang)));
    assert_eq!(s.in_flight("sk-nobody-9876"), 0);
}

#[tokio::test]
async fn no_money_left_is_402_in_both_shapes() {
    let s = two_accounts(Some(SimBalance::usd(Usd::ZERO)), SimAccount::new(B)).await;
    let (status, v) =
        status_and_json(chat(&s, A, &chat_body("hi", "deepseek-v4-flash", false)).await).await;
    assert_eq!(status, 402);
    assert_eq!(
        v,
        deepseek_error(
            "Insufficient Balance",
            "unknown_error",
            "invalid_request_error"
        )
    );
    assert_eq!(
        s.wait_outcome(0, Duration::ZERO).await,
        Outcome::Failed(402)
    );
    let (status, v) =
        status_and_json(messages(&s, A, &messages_body("hi", "claude-sonnet-4", true)).await).await;
    assert_eq!(status, 402);
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "billing_error", "message": "Insufficient Balance"}})
    );
    // The other account still answers.
    assert_eq!(
        chat(&s, B, &chat_body("hi", "deepseek-v4-flash", false))
            .await
            .status()
            .as_u16(),
        200
    );

    // A balance that cannot cover the whole answer still starts it (DeepSeek checks before and
    // charges after), and ends below zero; the next request is refused.
    assert!(s.set_balance(A, Some(SimBalance::usd(Usd::from_nanos(1_000)))));
    let resp = chat(&s, A, &chat_body(USAGE, "deepseek-v4-flash", false)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let flash = 640 * 3 + 360 * 150 + 8 * 600;
    assert_eq!(s.balance(A), Some(Usd::from_nanos(1_000 - flash)));
    assert_eq!(
        chat(&s, A, &chat_body("hi", "deepseek-v4-flash", false))
            .await
            .status()
            .as_u16(),
        402
    );
    let (_, report) = get(&s, "/user/balance", A).await;
    assert_eq!(report["is_available"], false);
    assert_eq!(report["balance_infos"][0]["total_balance"], "-0.01");

    // Topping up (or lifting the limit) lets it answer again.
    assert!(s.set_balance(A, None));
    assert_eq!(
        chat(&s, A, &chat_body("hi", "deepseek-v4-flash", false))
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn user_balance_per_key() {
    let cny = CnyBalance {
        granted_fen: 150,
        topped_up_fen: 4_900,
    };
    let b = SimAccount::new(B).with_balance(SimBalance::usd(usd("0.999999")).with_cny(cny));
    let a = SimBalance::usd(usd("100")).with_granted(usd("10"));
    let s = two_accounts(Some(a), b).await;
    let (status, v) = get(&s, "/user/balance", A).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"is_available": true, "balance_infos": [{"currency": "USD", "total_balance": "110.00",
            "granted_balance": "10.00", "topped_up_balance": "100.00"}]})
    );
    let (status, v) = get(&s, "/v1/user/balance", B).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"is_available": true, "balance_infos": [
            {"currency": "USD", "total_balance": "0.99", "granted_balance": "0.00", "topped_up_balance": "0.99"},
            {"currency": "CNY", "total_balance": "50.50", "granted_balance": "1.50", "topped_up_balance": "49.00"}]})
    );
    let (status, v) = get(&s, "/user/balance", "sk-unknown-key-4321").await;
    assert_eq!(status, 401);
    let message = "Authentication Fails, Your api key: ****4321 is invalid";
    assert_eq!(
        v,
        deepseek_error(message, "authentication_error", "invalid_request_error")
    );
    // Drawn down by an answer, the report follows (rounded down to the cent).
    chat(
        &s,
        A,
        &chat_body("[[sim prompt=0 reply=20000]]", "deepseek-v4-pro", false),
    )
    .await;
    let (_, v) = get(&s, "/user/balance", A).await;
    // 20 000 × 1.98 USD per 1M = 0.0396 USD, all from the granted part.
    assert_eq!(v["balance_infos"][0]["total_balance"], "109.96");
    assert_eq!(v["balance_infos"][0]["granted_balance"], "9.96");
    assert_eq!(s.balance(A), Some(usd("109.9604")));
}

#[tokio::test]
async fn demo_options_start_two_accounts() {
    let opts = SimOptions::demo();
    let s = SimulatedDeepSeek::start(opts.clone()).await.unwrap();
    assert_eq!(opts.account_keys(), ["sk-simulated", "sk-simulated-2"]);
    assert_eq!(s.account_keys(), opts.account_keys());
    assert_eq!(s.balance("sk-simulated"), Some(usd("110")));
    let (_, v) = get(&s, "/user/balance", "sk-simulated-2").await;
    assert_eq!(v["balance_infos"][0]["total_balance"], "25.00");
    assert_eq!(v["balance_infos"][1]["currency"], "CNY");
    for key in opts.account_keys() {
        let resp = messages(
            &s,
            &key,
            &messages_body("[[sim delay_ms=0]]", "claude-haiku-4-5", false),
        )
        .await;
        assert_eq!(resp.status().as_u16(), 200);
    }
}
