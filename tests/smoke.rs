//! A first end-to-end check: mint a key, chat (stream and not), find the ledger rows.

use crate::common::{TestApp, body, request_id};

#[tokio::test]
async fn chat_round_trip_is_billed() {
    let app = TestApp::spawn().await;
    let key = app.create_key("trial", None).await;
    let resp = app
        .chat(
            &key,
            &body("deepseek-v4-flash", "hi [[sim reply=5 prompt=10]]"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "deepseek-v4-flash");
    let row = app.wait_ledger_row(&rid).await;
    assert_eq!(row.cost.nanos(), 10 * 150 + 5 * 600);
}
