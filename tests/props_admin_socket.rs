//! Issue 11, a property over the real admin socket: whatever line a peer sends (arbitrary
//! bytes, JSON with a `cmd` right or wrong, real requests, lines over the cap), the daemon
//! answers it with exactly one `Response` line — an error saying `bad request` for what is
//! not a request, `command too long for the admin socket` past `MAX_LINE` — and keeps serving.
//! (`backup` is left out of the real requests: it writes a file wherever it is told.)

use modelrelay::activity::client;
use modelrelay::activity::protocol::{Request, Response};
use modelrelay::activity::server::MAX_LINE;
use modelrelay::money::Usd;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::common::TestApp;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

/// A JSON object with a `cmd` (a real one or not) and fields that may or may not fit it.
fn command_ish() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "key",
        "plan",
        "email",
        "budget_usd",
        "note",
        "usd",
        "limit",
        "order_id",
        "x",
    ]);
    (
        prop::sample::select(vec![
            "ping",
            "keys_list",
            "keys_show",
            "keys_create",
            "keys_revoke",
            "keys_topup",
            "orders_list",
            "orders_show",
            "subscribe",
            "Ping",
            "nope",
            "",
        ]),
        prop::collection::vec((key, scalar()), 0..4),
    )
        .prop_map(|(cmd, fields)| {
            let mut o: Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            o.insert("cmd".into(), Value::String(cmd.into()));
            serde_json::to_vec(&o).unwrap()
        })
}

/// Real requests (no `backup`), with arbitrary strings and amounts.
fn request() -> impl Strategy<Value = Request> {
    let s = || "\\PC{0,16}";
    let usd = || any::<i64>().prop_map(Usd::from_nanos);
    prop_oneof![
        Just(Request::Ping),
        Just(Request::KeysList),
        s().prop_map(|key| Request::KeysShow { key }),
        (
            prop_oneof![Just("trial".to_string()), s().boxed()],
            prop::option::of(s()),
            prop::option::of(usd()),
            prop::option::of(s()),
        )
            .prop_map(|(plan, email, budget_usd, note)| Request::KeysCreate {
                plan,
                email,
                budget_usd,
                note,
            }),
        s().prop_map(|key| Request::KeysRevoke { key }),
        (s(), usd()).prop_map(|(key, usd)| Request::KeysTopup { key, usd }),
        prop::option::of(any::<u32>()).prop_map(|limit| Request::OrdersList { limit }),
        s().prop_map(|order_id| Request::OrdersShow { order_id }),
        Just(Request::Subscribe),
    ]
}

/// One line, without its newline.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..200),
        3 => command_ish(),
        3 => request().prop_map(|r| serde_json::to_vec(&r).unwrap()),
        1 => Just(vec![b'{'; MAX_LINE + 1]),
    ]
    .prop_map(|mut l| {
        l.retain(|b| *b != b'\n');
        l
    })
}

/// Send `line` on a fresh connection; the one line that answers it.
async fn exchange(socket: &std::path::Path, line: &[u8]) -> String {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    // A line over the cap is answered and the connection closed before it is all written.
    if write.write_all(line).await.is_ok() {
        let _ = write.write_all(b"\n").await;
    }
    let mut answer = String::new();
    let mut reader = BufReader::new(read);
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_line(&mut answer),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    answer
}

#[test]
fn every_line_gets_one_answer_and_the_daemon_keeps_serving() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(TestApp::spawn());
    let mut runner = TestRunner::new(Config {
        source_file: Some(file!()),
        ..Config::with_cases(256)
    });
    let outcome = runner.run(&line(), |line| {
        let answer = rt.block_on(exchange(&app.socket, &line));
        let short = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        prop_assert!(answer.ends_with('\n'), "{}: {:?}", short, answer);
        let resp: Response = serde_json::from_str(&answer)
            .map_err(|e| TestCaseError::fail(format!("{short}: {answer:?}: {e}")))?;
        let bad = |r: &Response, what: &str| {
            matches!(r, Response::Error { message } if message.starts_with(what))
        };
        if line.len() > MAX_LINE {
            prop_assert!(bad(&resp, "command too long for the admin socket"), "{:?}", resp);
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Err(_) => prop_assert!(bad(&resp, "bad request"), "{}: {:?}", short, resp),
                Ok(Request::Subscribe) => {
                    prop_assert!(matches!(resp, Response::Subscribed), "{:?}", resp)
                }
                Ok(_) => prop_assert!(!bad(&resp, "bad request"), "{}: {:?}", short, resp),
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let pong = rt
        .block_on(client::call(&app.socket, &Request::Ping))
        .unwrap();
    assert!(matches!(pong, Response::Pong { .. }), "{pong:?}");
    rt.block_on(async move {
        let mut app = app;
        app.shutdown().await;
    });
}
