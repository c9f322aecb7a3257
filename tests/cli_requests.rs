//! `modelrelay requests`: a key's latest ledger rows, or one by its request id, as an operator
//! answering a customer's question about a charge reads them.

use serde_json::Value;

use crate::cli::run_in;
use crate::common::{TestApp, body, expected_cost, request_id};

const FLASH: &str = "deepseek-v4-flash";

async fn requests(app: &TestApp, args: &[&str]) -> crate::cli::Run {
    let socket = app.socket.to_str().expect("utf-8 socket path");
    let mut all = vec!["requests"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--socket", socket]);
    run_in(app.dir.path(), &all, &[]).await
}

#[tokio::test]
async fn an_operator_reads_a_keys_requests_and_one_by_its_id() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let mut ids = Vec::new();
    for stream in [false, true] {
        let mut b = body(FLASH, "[[sim prompt=40 hit=10 reply=5]] hi");
        b["stream"] = stream.into();
        let resp = app.chat(&key, &b).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        ids.push(request_id(&resp));
        let _ = resp.bytes().await.unwrap();
        app.wait_ledger_row(ids.last().unwrap()).await;
    }
    let cost = expected_cost(10, 30, 5, 3_000_000, 150_000_000, 600_000_000);
    assert_eq!(cost, 7_530);

    let out = requests(&app, &[&key, "--json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // Newest first.
    assert_eq!(rows[0]["request_id"], ids[1].as_str());
    assert_eq!(rows[1]["request_id"], ids[0].as_str());
    for (row, stream) in [(&rows[0], true), (&rows[1], false)] {
        assert_eq!(row["stream"], stream);
        assert_eq!(row["model"], FLASH);
        assert_eq!(row["api"], "openai");
        assert_eq!(row["period"], "off_peak");
        assert_eq!(
            (
                &row["cache_hit_tokens"],
                &row["cache_miss_tokens"],
                &row["completion_tokens"]
            ),
            (&Value::from(10), &Value::from(30), &Value::from(5))
        );
        assert_eq!(row["cost_usd"], "0.00000753");
        assert_eq!(row["measured"], "provider");
        assert_eq!(row["status"], 200);
        assert_eq!(row["finish"], "complete");
        assert!(row["created_at"].as_str().unwrap().ends_with('Z'), "{row}");
    }

    // The table, with the sum; a prefix finds the key as `keys show` does.
    let prefix = &key[..15];
    let out = requests(&app, &[prefix]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&ids[0]) && out.stdout.contains(&ids[1]),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("2 requests shown, $0.00001506 for these (newest first)\n"),
        "{}",
        out.stdout
    );
    let out = requests(&app, &[&key, "--limit", "1", "--json"]).await;
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    // Cut there, and said so on stderr (the JSON stays the list alone); whole, nothing said.
    assert!(
        out.stderr.contains("the newest 1 requests are shown"),
        "{}",
        out.stderr
    );
    let out = requests(&app, &[&key, "--limit", "2", "--json"]).await;
    assert_eq!(out.stderr, "", "{out:?}");
    // The table's last line counts the rows shown, and says when the key has more.
    let out = requests(&app, &[&key, "--limit", "1"]).await;
    assert!(
        out.stdout.contains(
            "1 request shown, $0.00000753 for these (newest first; the key has more: --limit N)"
        ),
        "{}",
        out.stdout
    );

    // One request by its id: an object, and a card.
    let out = requests(&app, &["--request", &ids[0], "--json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let row: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(row["request_id"], ids[0].as_str());
    assert_eq!(row["cost_usd"], "0.00000753");
    let out = requests(&app, &["--request", &ids[0]]).await;
    assert!(
        out.stdout.contains("40 (10 cache hit, 30 cache miss)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("$0.00000753"), "{}", out.stdout);
    // A row without an account: served by a version from before accounts were recorded when
    // DeepSeek's counts (or an answer) are in it, else one that never reached DeepSeek (an
    // upgraded database's rows read "never reached DeepSeek"; found by an upgrade check).
    let account_of = async |sql: &str| {
        app.db().execute(sql, [&ids[0]]).unwrap();
        let out = requests(&app, &["--request", &ids[0]]).await;
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("account"))
            .unwrap();
        line.to_string()
    };
    assert!(
        account_of("UPDATE usage SET account = '' WHERE request_id = ?1")
            .await
            .ends_with("- (not recorded: served by an older version)")
    );
    assert!(
        account_of("UPDATE usage SET measured = 'estimated', status = 502 WHERE request_id = ?1")
            .await
            .ends_with("- (never reached DeepSeek)")
    );

    // Mistakes: exit 1 with one line, or clap's 2.
    let out = requests(&app, &["--request", "req_nosuch"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("no request \"req_nosuch\""),
        "{}",
        out.stderr
    );
    let out = requests(&app, &["sk-gateway-nope"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no key matches"), "{}", out.stderr);
    let out = requests(&app, &[]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = requests(&app, &[&key, "--request", &ids[0]]).await;
    assert_eq!(out.code, Some(2), "{out:?}");
}
