//! Receipts and notices against a real SMTP server on loopback (Python's `aiosmtpd`, pinned in
//! tests/python/requirements.txt, in the venv tests/python_client.rs builds): they arrive once,
//! in the language the customer paid in, with a working opt-out; an SMTP server that is down
//! delays neither payments nor requests, its mail is retried with backoff, given up, queued
//! again by `modelrelay mail retry`, sent once it is back, and never sent twice after a restart.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use modelrelay::activity::protocol::Request;
use modelrelay::config::Config;
use modelrelay::status::KeyStatus;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{TestApp, body};
use crate::python_client::{python_command, venv_python};
use crate::shop_orders::Browser;

const FLASH: &str = "deepseek-v4-flash";

/// A loopback port nobody listens on (yet).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The SMTP server: `tests/python/smtp_sink.py` on a port, writing what it accepts to a file.
struct Sink {
    _child: tokio::process::Child,
    file: PathBuf,
}

impl Sink {
    async fn start(port: u16, dir: &std::path::Path) -> Sink {
        let python = venv_python().await;
        let file = dir.join(format!("smtp-{port}.jsonl"));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/smtp_sink.py");
        let mut cmd = tokio::process::Command::from(python_command(&python));
        cmd.arg(script)
            .arg(port.to_string())
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("smtp_sink.py starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
            "smtp_sink.py did not start: {ready:?}"
        );
        Sink {
            _child: child,
            file,
        }
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            // The sink may be writing its last line as it is read: only whole lines count.
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until `n` messages arrived (then a little longer, to see that no more come).
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.messages().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived: {:#?}",
                self.messages().len(),
                self.messages()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let got = self.messages();
        assert_eq!(got.len(), n, "more than {n} messages: {got:#?}");
        got
    }
}

fn email_on(c: &mut Config, port: u16) {
    c.email.smtp_url = format!("smtp://127.0.0.1:{port}");
    c.email.from = "Relay Billing <billing@relay.test>".into();
    c.email.retry_secs = 1;
}

/// `POST /api/keys/rotate` with `key`; the new key.
async fn rotate(app: &TestApp, key: &str) -> String {
    let (status, v) = crate::selfservice_rotate::rotate(app, key).await;
    assert_eq!(status, 200, "{v}");
    v["api_key"].as_str().unwrap().to_string()
}

/// Buy a plan in the browser `b`; returns (order id, key).
async fn buy(app: &TestApp, b: &mut Browser, plan: &str, email: &str) -> (String, String) {
    let (order_id, paypal_id) = b.create_order(app, plan, email).await;
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = b.capture(app, &order_id).await;
    assert_eq!(status, 200, "{v}");
    (order_id, v["api_key"].as_str().unwrap().to_string())
}

/// Spend a key in three steps: to 40 % of its budget, below 20 % (a low balance), then all of
/// it (upstream reports more than the hold, so the charge is the whole hold: exhausted).
async fn spend_down(app: &TestApp, key: &str) {
    for directive in [
        "[[sim reply=1000 prompt=5]]",
        "[[sim reply=500 prompt=5]]",
        "[[sim reply=1000 prompt=100000]]",
    ] {
        let r = app
            .chat(key, &body(FLASH, &format!("spend {directive}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let last = app.chat(key, &body(FLASH, "more")).send().await.unwrap();
    assert_eq!(last.status(), 402);
}

fn outbox_count(app: &TestApp) -> i64 {
    app.db()
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn receipts_and_notices_arrive_once_in_the_buyers_language_with_a_working_opt_out() {
    let port = free_port();
    let app = TestApp::spawn_shop_with(|c| {
        email_on(c, port);
        c.plans.get_mut("trial").unwrap().budget_usd = "0.001".parse().unwrap();
    })
    .await;
    let sink = Sink::start(port, app.dir.path()).await;
    let mut b = Browser::open(&app).await;
    b.cookies.push(("mr_lang".into(), "zh".into()));
    let (order_id, key) = buy(&app, &mut b, "trial", "buyer@example.com").await;
    spend_down(&app, &key).await;
    let got = sink.wait_for(3).await;
    let subjects: Vec<&str> = got.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert!(
        subjects[0].contains("收据") && subjects[0].contains(&order_id),
        "{subjects:?}"
    );
    assert!(subjects[1].contains("余额即将用完"), "{subjects:?}");
    assert!(subjects[2].contains("预算已用完"), "{subjects:?}");
    for m in &got {
        assert_eq!(m["to"][0], "buyer@example.com");
        assert_eq!(m["from"], "billing@relay.test");
        assert!(!m["raw"].as_str().unwrap().contains(&key), "never the key");
        assert!(!m["html"].as_str().unwrap().is_empty());
        // The sender's domain, never the machine's host name.
        assert_eq!(m["helo"], "relay.test", "{}", m["raw"]);
        let id = m["message_id"].as_str().unwrap();
        assert!(
            id.starts_with("<mr.") && id.ends_with("@relay.test>"),
            "{id}"
        );
    }
    // One id a message (the same at each of its attempts: the outbox row's, named through
    // the server's secret, so that it does not tell how many mails went before).
    let ids: std::collections::BTreeSet<&str> = got
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), got.len());
    let state = &app.daemon.as_ref().unwrap().state;
    let rows: Vec<(i64, i64)> = app
        .db()
        .prepare("SELECT id, created_at FROM outbox WHERE status = 'sent'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let named: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|&(id, queued)| {
            modelrelay::mail::outbox::message_id(&state.sealer, id, queued, "relay.test")
        })
        .collect();
    assert_eq!(ids, named.iter().map(String::as_str).collect(), "{rows:?}");
    for (id, _) in &rows {
        assert!(
            ids.iter().all(|m| !m.contains(&format!(".{id}."))),
            "{ids:?}"
        );
    }
    let public = app
        .daemon
        .as_ref()
        .unwrap()
        .state
        .config
        .server
        .public_url
        .clone();
    let receipt = got[0]["text"].as_str().unwrap();
    assert!(
        receipt.contains(&format!("{public}/order?order_id={order_id}")),
        "{receipt}"
    );
    assert!(receipt.contains("$1.00 USD"), "{receipt}");

    // The opt-out link: a GET (a mail scanner) changes nothing, the POST stops the notices.
    let low = got[1]["text"].as_str().unwrap();
    let link = low
        .split_whitespace()
        .find(|w| w.contains("/mail/opt-out/"))
        .expect("opt-out link");
    // The page at the public URL is this daemon.
    let link = link.replace(&public, &app.base);
    let opted = |app: &TestApp| -> bool {
        app.db()
            .query_row("SELECT opted_out_at IS NOT NULL FROM key_mail", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let page = app.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("opt-out-form"));
    assert!(!opted(&app), "a GET changes nothing");
    let done = app.http.post(&link).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(opted(&app));
    // A done page shows no status number (a bare "200" read as a stray line); errors do.
    let done = done.text().await.unwrap();
    assert!(done.contains("id=\"message\"") && !done.contains("status-code"));
    let bogus = app
        .http
        .get(format!("{}/mail/opt-out/{}", app.base, "0".repeat(48)))
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), 404);
    assert!(
        bogus
            .text()
            .await
            .unwrap()
            .contains("<p class=\"status-code\">404</p>")
    );

    // Re-armed by a top-up, crossed again: no notice for an opted-out key.
    let before = outbox_count(&app);
    app.admin(Request::KeysTopup {
        key: key.clone(),
        usd: "0.001".parse().unwrap(),
    })
    .await;
    spend_down(&app, &key).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(outbox_count(&app), before);
    assert_eq!(sink.messages().len(), 3);

    // A replacement is told whatever the opt-out (it is about security), in Chinese too.
    let new_key = rotate(&app, &key).await;
    let got = sink.wait_for(4).await;
    let notice = &got[3];
    assert!(
        notice["subject"].as_str().unwrap().contains("已更换"),
        "{notice}"
    );
    let raw = notice["raw"].as_str().unwrap();
    assert!(
        !raw.contains(&new_key) && !raw.contains(&key),
        "never a key"
    );
}

#[tokio::test]
async fn smtp_down_delays_nothing_and_mail_goes_once_it_is_back_never_twice_after_a_restart() {
    let port = free_port();
    let app = TestApp::spawn_shop_with(|c| {
        email_on(c, port);
        c.email.max_attempts = 2;
    })
    .await;
    // The same purchase where no mail is sent at all, timed now on this machine as loaded as
    // it is: the one with SMTP down may take no longer than four times it (3 s at least).
    let unmailed = TestApp::spawn_shop().await;
    let mut b = Browser::open(&unmailed).await;
    let started = Instant::now();
    buy(&unmailed, &mut b, "trial", "down@example.com").await;
    let usual = started.elapsed();
    drop(unmailed);
    let mut b = Browser::open(&app).await;
    let started = Instant::now();
    let (order_id, key) = buy(&app, &mut b, "trial", "down@example.com").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3).max(usual * 4),
        "payment waited on SMTP: {took:?}, {usual:?} without mail"
    );
    let ok = app
        .chat(&key, &body(FLASH, "hi [[sim reply=2]]"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // Two attempts (the second after the backoff), then given up.
    let status = |app: &TestApp| -> (String, i64) {
        app.db()
            .query_row("SELECT status, attempts FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&app).0 != "failed" {
        assert!(Instant::now() < deadline, "{:?}", status(&app));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&app), ("failed".to_string(), 2));
    let cli = async |args: &[&str]| mail_cli(&app, args).await;
    let out = cli(&["mail", "list", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list[0]["kind"], "receipt");
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(
        list[0]["next_attempt_at"],
        Value::Null,
        "no attempt is coming"
    );
    assert_eq!(list[0]["order_id"], order_id.as_str());
    assert!(list[0]["last_error"].as_str().unwrap().len() > 3);
    let id = list[0]["id"].as_i64().unwrap();
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("modelrelay_mail_failed_total 2"),
        "{metrics}"
    );

    // The server is back: `mail retry` queues it again and it goes, once.
    let sink = Sink::start(port, app.dir.path()).await;
    let out = cli(&["mail", "retry", &id.to_string()]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let got = sink.wait_for(1).await;
    assert!(got[0]["subject"].as_str().unwrap().contains(&order_id));
    assert_eq!(status(&app).0, "sent");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("modelrelay_mail_sent_total 1"),
        "{metrics}"
    );
    let out = cli(&["mail", "retry", &id.to_string()]).await;
    assert_ne!(out.code, Some(0), "a sent message is never sent again");

    // A restart sends nothing again.
    let mut app = app;
    app.shutdown().await;
    let TestApp { sim, dir, .. } = app;
    let mut config = crate::common::test_config(dir.path(), &sim);
    email_on(&mut config, port);
    let app = TestApp::start(config, sim, dir).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(status(&app).0, "sent");
}

/// A top-up's receipt goes to whoever made the order, who had the key's text then: once the
/// owner replaced the text, the receipt names none of the new one (it named its prefix; found
/// by an independent check).
#[tokio::test]
async fn a_top_up_receipt_names_nothing_of_a_key_replaced_since_the_order() {
    let port = free_port();
    let app = TestApp::spawn_shop_with(|c| email_on(c, port)).await;
    let sink = Sink::start(port, app.dir.path()).await;
    let mut owner = Browser::open(&app).await;
    let (_, key) = buy(&app, &mut owner, "trial", "owner@example.com").await;
    let mut other = Browser::open(&app).await;
    let (status, v) = other
        .post_json(
            &app,
            "/api/orders",
            &serde_json::json!({"plan": "trial", "email": "other@example.com", "key": key}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let order_id = v["order_id"].as_str().unwrap().to_string();
    let paypal_id = v["paypal_order_id"].as_str().unwrap().to_string();
    let new_key = rotate(&app, &key).await;
    assert!(app.pp().approve(&paypal_id));
    let (status, v) = other.capture(&app, &order_id).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("paid")), "{v}");
    // The owner's receipt and rotation notice, and the other buyer's receipt.
    let got = sink.wait_for(3).await;
    let receipt = got
        .iter()
        .find(|m| m["to"][0] == "other@example.com")
        .expect("the top-up's receipt");
    let text = receipt["text"].as_str().unwrap();
    assert!(text.contains(&order_id), "{text}");
    assert!(text.contains("sk-gateway-…"), "{text}");
    assert!(!text.contains(&new_key[..15]), "{text}");
    assert!(
        !receipt["html"]
            .as_str()
            .unwrap_or("")
            .contains(&new_key[..15])
    );
}

/// A rotation notice names the text its rotation made, however late it goes out (found by an
/// independent check: three rotations in a row sent three notices naming the last, the key's
/// text at sending). Rotations in a row make one notice at once and one an hour after it, that
/// names the latest (one notice per rotation let a $1 key flood any address; found by an
/// independent check).
#[tokio::test]
async fn rotation_notices_name_their_rotations_text_and_come_one_an_hour() {
    let port = free_port();
    let app = TestApp::spawn_shop_with(|c| email_on(c, port)).await;
    let mut b = Browser::open(&app).await;
    let (_, mut key) = buy(&app, &mut b, "trial", "turns@example.com").await;
    let mut made = Vec::new();
    for _ in 0..3 {
        key = rotate(&app, &key).await;
        made.push(modelrelay::keys::token::display_prefix(&key));
    }
    // The mail server comes up only now: every notice is sent after the last rotation.
    let sink = Sink::start(port, app.dir.path()).await;
    let got = sink.wait_for(2).await;
    let named: Vec<String> = got
        .iter()
        .filter_map(|m| {
            m["subject"]
                .as_str()
                .unwrap()
                .strip_prefix("Your API key was replaced: ")
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        named,
        [made[0].clone()],
        "the first rotation's notice, at once"
    );
    // The second and third are one notice, naming the third's text, due an hour after the
    // first; nothing more goes now.
    let (prefix, due_in): (String, i64) = app
        .db()
        .query_row(
            "SELECT key_prefix, next_attempt_at - created_at FROM outbox
             WHERE kind = 'rotated' AND status = 'queued'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(prefix, made[2]);
    assert!((3_500_000..=3_600_000).contains(&due_in), "{due_in}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(sink.messages().len(), 2);
}

/// `mail list` of an empty outbox says what that means: nothing due yet when the daemon sends
/// mail, mail off otherwise (with `--json`, on stderr) (it said "once [email] is configured"
/// with email on; found by an independent check).
#[tokio::test]
async fn an_empty_outbox_says_whether_mail_is_on() {
    for on in [true, false] {
        let port = free_port();
        let app = TestApp::spawn_with(|c| {
            if on {
                email_on(c, port);
            }
        })
        .await;
        let mail_list = async |json: bool| {
            let args: &[&str] = if json {
                &["mail", "list", "--json"]
            } else {
                &["mail", "list"]
            };
            mail_cli(&app, args).await
        };
        let out = mail_list(false).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        let text = &out.stdout;
        assert_eq!(
            text.contains("once [email] is configured"),
            !on,
            "email on: {on}: {text}"
        );
        assert!(text.contains("(no mail yet"), "{text}");
        // With --json the outbox alone goes to stdout, the note to stderr.
        let out = mail_list(true).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&out.stdout).unwrap(),
            serde_json::json!([])
        );
        let note = &out.stderr;
        assert_eq!(note.contains("email is off"), !on, "email on: {on}: {note}");
    }
}

/// `modelrelay ARGS… --socket <the app's socket>`, run in its data directory.
async fn mail_cli(app: &TestApp, args: &[&str]) -> crate::cli::Run {
    let socket = app.socket.to_str().expect("utf-8 socket path");
    let mut all = args.to_vec();
    all.extend_from_slice(&["--socket", socket]);
    crate::cli::run_in(app.dir.path(), &all, &[]).await
}

/// Outbox rows of `kind` for `key_id` (written by the ledger writer: waited for).
async fn notices(app: &TestApp, kind: &str) -> i64 {
    let count = || -> i64 {
        app.db()
            .query_row("SELECT count(*) FROM outbox WHERE kind = ?1", [kind], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count()
}

/// Each request holds its prompt's bound in bytes, so a key spent by use keeps a little more
/// than the smallest request costs and stays `active`: a client that always sends a long
/// conversation gets 402 from then on, and its owner is told the key ran out — once, while
/// short requests still go through.
#[tokio::test]
async fn a_low_key_refused_for_want_of_money_tells_its_owner_once() {
    let app = TestApp::spawn_with(|c| email_on(c, free_port())).await;
    let key = app.create_key("trial", Some("0.001")).await;
    // 600 750 then 300 750 nano-USD of 1 000 000: 98 500 left, below a fifth (low).
    for directive in ["[[sim reply=1000 prompt=5]]", "[[sim reply=500 prompt=5]]"] {
        let r = app
            .chat(&key, &body(FLASH, directive))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.key_state(&key).balance().spent.nanos(), 901_500);
    assert_eq!(notices(&app, "low_balance").await, 1);
    assert_eq!(notices(&app, "exhausted").await, 0, "not run out yet");
    let long = format!(
        "{} [[sim reply=3 prompt=5]]",
        "a long conversation ".repeat(50)
    );
    for _ in 0..2 {
        let r = app.chat(&key, &body(FLASH, &long)).send().await.unwrap();
        assert_eq!(r.status(), 402);
        let short = app
            .chat(&key, &body(FLASH, "[[sim reply=3 prompt=5]]"))
            .send()
            .await
            .unwrap();
        assert_eq!(short.status(), 200, "a short request still goes through");
    }
    assert_eq!(notices(&app, "exhausted").await, 1, "told once");
    let status: String = app
        .db()
        .query_row("SELECT status FROM keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "active");
}

/// One request that takes a key past both lines (low, then out) tells its owner once, that the
/// key ran out: the low notice counts as had, without a mail (both came in the same second;
/// found by an independent check).
#[tokio::test]
async fn a_key_that_runs_out_in_one_step_gets_one_notice() {
    let app = TestApp::spawn_with(|c| email_on(c, free_port())).await;
    let key = app.create_key("trial", Some("0.001")).await;
    // A long prompt and more output than the key pays for: the answer is cut at what the
    // balance pays once the prompt's bound is held (its `max_tokens` set from it).
    let text = format!("{} [[sim reply=99999 prompt=6170]]", "a".repeat(6_000));
    let r = app.chat(&key, &body(FLASH, &text)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // 999 450 nano-USD of 1 000 000: 550 left, too little for any request.
    assert_eq!(app.key_state(&key).balance().spent.nanos(), 999_450);
    assert_eq!(app.key_state(&key).status(), KeyStatus::Exhausted);
    assert_eq!(notices(&app, "exhausted").await, 1);
    let flags: (i64, i64) = app
        .db()
        .query_row("SELECT low_sent, exhausted_sent FROM key_mail", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(flags, (1, 1), "the low notice is remembered as had");
    let low: i64 = app
        .db()
        .query_row(
            "SELECT count(*) FROM outbox WHERE kind = 'low_balance'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(low, 0, "no low-balance mail beside the exhausted one");

    // A top-up too small to pay for a request leaves the key exhausted, in the same crossing:
    // no second "has run out" (the key was `active` for a moment and its notice re-armed).
    let id = app.key_state(&key).id.clone();
    let topup = Request::KeysTopup {
        key: id.clone(),
        usd: "0.000001".parse().expect("usd"),
    };
    match app.admin(topup).await {
        modelrelay::activity::protocol::Response::Key { key } => {
            assert_eq!(key.status, KeyStatus::Exhausted)
        }
        other => panic!("{other:?}"),
    }
    let flags = |app: &TestApp| -> (i64, i64) {
        app.db()
            .query_row("SELECT low_sent, exhausted_sent FROM key_mail", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
    };
    // Not re-armed in the store either, and the notice still waiting to go (the SMTP server
    // is down) is not dropped as if the key paid again (it was, and never went).
    assert_eq!(flags(&app), (1, 1));
    let (queued, status): (String, String) = app
        .db()
        .query_row(
            "SELECT o.status, k.status FROM outbox o JOIN keys k ON k.id = o.key_id
             WHERE o.kind = 'exhausted'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((queued.as_str(), status.as_str()), ("queued", "exhausted"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        notices(&app, "exhausted").await,
        1,
        "told once for the crossing"
    );
    // One that pays for requests again re-arms it: the next run-out is told.
    let topup = Request::KeysTopup {
        key: id,
        usd: "0.01".parse().expect("usd"),
    };
    match app.admin(topup).await {
        modelrelay::activity::protocol::Response::Key { key } => {
            assert_eq!(key.status, KeyStatus::Active)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.key_state(&key).status(), KeyStatus::Active);
}

/// A balance notice still waiting to go (its SMTP server down) when its key is revoked is not
/// sent: it would tell the owner to add credit to a key that can take none (found by an
/// independent check: mailed on its third attempt, after the revocation).
#[tokio::test]
async fn a_balance_notice_waiting_to_go_is_dropped_when_its_key_is_revoked() {
    let app = TestApp::spawn_with(|c| email_on(c, free_port())).await;
    let key = app.create_key("trial", Some("0.001")).await;
    let text = format!("{} [[sim reply=99999 prompt=6170]]", "a".repeat(6_000));
    let r = app.chat(&key, &body(FLASH, &text)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.key_state(&key).status(), KeyStatus::Exhausted);
    assert_eq!(notices(&app, "exhausted").await, 1);
    let status = |app: &TestApp| -> (String, Option<String>) {
        app.db()
            .query_row(
                "SELECT status, last_error FROM outbox WHERE kind = 'exhausted'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(status(&app).0, "queued", "the SMTP server is down");
    let id = app.key_state(&key).id.clone();
    match app.admin(Request::KeysRevoke { key: id }).await {
        modelrelay::activity::protocol::Response::Key { .. } => {}
        other => panic!("{other:?}"),
    }
    let (st, why) = status(&app);
    assert_eq!(st, "failed");
    assert_eq!(
        why.as_deref(),
        Some("not sent: the key was revoked before it could go")
    );
}

/// The sender reads the messages due and sends them paced: one dropped meanwhile (its key
/// revoked) is not sent (three went after the revocation had dropped them, while the outbox
/// said they had not; found by an independent check), and `mail retry` does not send it
/// either.
#[tokio::test]
async fn a_notice_dropped_while_the_sender_paces_is_not_sent() {
    let port = free_port();
    let app = TestApp::spawn_with(|c| {
        email_on(c, port);
        c.email.send_per_minute = 12;
    })
    .await;
    let sink = Sink::start(port, app.dir.path()).await;
    let text = format!("{} [[sim reply=99999 prompt=6170]]", "a".repeat(6_000));
    let first = app.create_key("trial", Some("0.001")).await;
    let r = app.chat(&first, &body(FLASH, &text)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    sink.wait_for(1).await;
    // The next one waits for its turn (5 s apart); its key is revoked meanwhile.
    let second = app.create_key("trial", Some("0.001")).await;
    let r = app.chat(&second, &body(FLASH, &text)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(notices(&app, "exhausted").await, 2);
    let id = app.key_state(&second).id.clone();
    match app.admin(Request::KeysRevoke { key: id.clone() }).await {
        modelrelay::activity::protocol::Response::Key { .. } => {}
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(sink.messages().len(), 1, "{:#?}", sink.messages());
    let (mail_id, status): (i64, String) = app
        .db()
        .query_row(
            "SELECT id, status FROM outbox WHERE key_id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "failed");
    let run = mail_cli(&app, &["mail", "retry", &mail_id.to_string()]).await;
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("revoked"), "{}", run.stderr);
}

/// A refusal of the server or the account (a greeting of 554: the VPS's address blocklisted
/// for a while) is not the message's: it is tried again, and sent once the server takes mail
/// — one such minute failed every message due for good (found by an independent check). A
/// refusal of the message itself (550 at RCPT: no such mailbox) still fails it at once.
#[tokio::test]
async fn a_server_that_refuses_everyone_for_a_while_fails_no_message_for_good() {
    let port = free_port();
    let app = TestApp::spawn_shop_with(|c| email_on(c, port)).await;
    // Greets 554 and hangs up, counting the connections.
    let refuser = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let greeted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = greeted.clone();
    let refusing = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        loop {
            let Ok((mut s, _)) = refuser.accept().await else {
                return;
            };
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = s
                .write_all(b"554 5.7.1 Service unavailable; client host blocked\r\n")
                .await;
        }
    });
    let mut b = Browser::open(&app).await;
    let (order_id, _key) = buy(&app, &mut b, "trial", "buyer@example.com").await;
    let tried_twice = |(_, attempts): &(String, i64)| *attempts >= 2;
    let row = receipt_once(&app, &order_id, tried_twice).await;
    assert_eq!(row.0, "queued", "not given up");
    assert!(greeted.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    refusing.abort();
    let _ = refusing.await;
    let sink = Sink::start(port, app.dir.path()).await;
    let got = sink.wait_for(1).await;
    assert_eq!(got[0]["to"][0], "buyer@example.com");
    assert_eq!(receipt_once(&app, &order_id, |_| true).await.0, "sent");
    // A mailbox the server says does not exist: failed at its first attempt.
    let (gone, _) = buy(&app, &mut b, "trial", "nosuchuser@example.com").await;
    let row = receipt_once(&app, &gone, |(status, _)| status != "queued").await;
    assert_eq!(row, ("failed".to_string(), 1));
    // The account's refusal at MAIL FROM (530: a login wanted) is retried too, however the
    // connection before it went (found by a re-check).
    let flag = PathBuf::from(format!("{}.refuse-mail", sink.file.display()));
    std::fs::write(&flag, b"").unwrap();
    let (later, _) = buy(&app, &mut b, "trial", "later@example.com").await;
    let row = receipt_once(&app, &later, tried_twice).await;
    assert_eq!(row.0, "queued", "not given up");
    std::fs::remove_file(&flag).unwrap();
    let got = sink.wait_for(2).await;
    assert_eq!(got[1]["to"][0], "later@example.com");
}

/// A `from` address the server will not send as (553 at MAIL FROM, on a connection that works)
/// refuses every message alike — each failed for good (found by an independent check). Said
/// with an enhanced status code (`5.7.1`), no message fails: each is tried again and goes once
/// the address is mended. Said without one, the first fails, the ones after it are tried again
/// (also when their own retries follow each other), and `mail retry --failed` queues the first
/// again.
#[tokio::test]
async fn a_sender_address_refused_for_a_while_fails_at_most_one_message_that_retry_failed_sends() {
    let port = free_port();
    let app = TestApp::spawn_shop_with(|c| email_on(c, port)).await;
    let sink = Sink::start(port, app.dir.path()).await;
    let flag = PathBuf::from(format!("{}.refuse-sender", sink.file.display()));
    let mut b = Browser::open(&app).await;
    // With the enhanced code: none fails, each is retried on its own too.
    std::fs::write(
        &flag,
        "553 5.7.1 Sender address rejected: not owned by user",
    )
    .unwrap();
    let (alone, _) = buy(&app, &mut b, "trial", "alone@example.com").await;
    let row = receipt_once(&app, &alone, |(_, attempts)| *attempts >= 3).await;
    assert_eq!(row.0, "queued", "not given up");
    std::fs::remove_file(&flag).unwrap();
    let got = sink.wait_for(1).await;
    assert_eq!(got[0]["to"][0], "alone@example.com");
    // Without it: the first fails for good, not the others.
    std::fs::write(&flag, "553 Sender address rejected: not owned by user").unwrap();
    let (first, _) = buy(&app, &mut b, "trial", "first@example.com").await;
    let row = receipt_once(&app, &first, |(status, _)| status != "queued").await;
    assert_eq!(row, ("failed".to_string(), 1));
    // Alone in the outbox after it: its own retries get the refusal the first got.
    let (second, _) = buy(&app, &mut b, "trial", "second@example.com").await;
    let row = receipt_once(&app, &second, |(_, attempts)| *attempts >= 3).await;
    assert_eq!(row.0, "queued", "not given up");
    std::fs::remove_file(&flag).unwrap();
    let got = sink.wait_for(2).await;
    assert_eq!(got[1]["to"][0], "second@example.com");
    assert_eq!(receipt_once(&app, &first, |_| true).await.0, "failed");
    let run = mail_cli(&app, &["mail", "retry", "--failed"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("queued again: 1\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("first@example.com"), "{}", run.stdout);
    let got = sink.wait_for(3).await;
    assert_eq!(got[2]["to"][0], "first@example.com");
    let run = mail_cli(&app, &["mail", "retry", "--failed", "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v, serde_json::json!({ "queued": [], "withheld": [] }));
    // One message or all of them, not both.
    let run = mail_cli(&app, &["mail", "retry", "1", "--failed"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

/// The (status, attempts) of `order_id`'s receipt in the outbox once `done` holds of them
/// (within 30 s).
async fn receipt_once(
    app: &TestApp,
    order_id: &str,
    done: impl Fn(&(String, i64)) -> bool,
) -> (String, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row: (String, i64) = app
            .db()
            .query_row(
                "SELECT status, attempts FROM outbox WHERE order_id = ?1",
                [order_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if done(&row) {
            return row;
        }
        assert!(Instant::now() < deadline, "{row:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sender at an internationalized domain greets, sends and names its messages with the
/// domain's ASCII form, as recipients' domains are (found by an independent check: the
/// greeting went in raw UTF-8, every mail asked for SMTPUTF8 and the Message-ID was an
/// encoded word).
#[tokio::test]
async fn a_sender_at_an_idn_domain_goes_out_in_its_ascii_form() {
    let port = free_port();
    let app = TestApp::spawn_shop_with(|c| {
        email_on(c, port);
        c.email.from = "Büro <billing@bücher.example>".into();
    })
    .await;
    let sink = Sink::start(port, app.dir.path()).await;
    let mut b = Browser::open(&app).await;
    buy(&app, &mut b, "trial", "buyer@example.com").await;
    let got = sink.wait_for(1).await;
    assert_eq!(got[0]["helo"], "xn--bcher-kva.example");
    assert_eq!(got[0]["from"], "billing@xn--bcher-kva.example");
    let id = got[0]["message_id"].as_str().unwrap();
    assert!(id.ends_with("@xn--bcher-kva.example>"), "{id}");
    assert!(got[0]["raw"].as_str().unwrap().is_ascii());
}
