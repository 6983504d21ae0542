//! `GET /v1/reports/summary`: a window of the decision log summed up, in JSON and
//! Markdown, each figure naming decision records behind it.

use crate::common;

use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_counts_spend_work_and_denials_with_their_records() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let http = reqwest::Client::new();
    let (agent, token) = common::create_principal(&base, &admin, "agent", "ai", &["member"]).await;
    let chat = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "colony-scripted", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let model = chat.headers()["x-colony-model"]
        .to_str()
        .unwrap()
        .to_string();
    let posted = common::post_json(
        &base,
        &admin,
        "/v1/tasks",
        &json!({"title": "t", "justification": "work"}),
    )
    .await;
    let address = posted["address"].as_str().unwrap().to_string();
    let claimed = common::post_json(&base, &token, "/v1/tasks/claim", &json!({})).await;
    let lease = claimed["lease"]["token"].as_u64().unwrap();
    let done = common::post_json(
        &base,
        &token,
        &format!("/v1/tasks/{address}/complete"),
        &json!({"lease_token": lease, "result": "ok"}),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let denied = common::post_json(
        &base,
        &token,
        "/v1/ledger/reserve",
        &json!({"resource": "llm_budget_usd", "amount": 1_000_000_000_000u64, "justification": "too much"}),
    )
    .await;
    assert_eq!(denied["error"]["code"], "insufficient_resource");

    // The settlement is decided after the answer: wait for it in the log.
    common::bus::wait_for_decision(&base, &admin, "llm.settle", &agent).await;
    let summary = common::get_json(&base, &admin, "/v1/reports/summary?since=1h").await;
    assert_eq!(summary["llm_calls"], 1, "{summary}");
    assert!(summary["llm_micro_usd"].as_u64().unwrap() > 0);
    assert_eq!(summary["spend_by_model"][0]["who"], model.as_str());
    assert_eq!(summary["spend_by_principal"][0]["who"], agent.as_str());
    assert_eq!(summary["tasks_posted"]["count"], 1);
    assert_eq!(summary["tasks_completed"]["count"], 1);
    let reasons = summary["denials_by_reason"].as_array().unwrap();
    let insufficient = reasons
        .iter()
        .find(|d| d["code"] == "insufficient_resource")
        .unwrap_or_else(|| panic!("{summary}"));
    // The figure names its record, and the record is that denial.
    let seq = insufficient["records"][0].as_u64().unwrap();
    let page = common::get_json(
        &base,
        &admin,
        &format!("/v1/audit?after={}&limit=1", seq - 1),
    )
    .await;
    assert_eq!(
        page["records"][0]["reason"]["code"],
        "insufficient_resource"
    );

    let markdown = http
        .get(format!("{base}/v1/reports/summary?since=1h&format=md"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(markdown.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/markdown"));
    let text = markdown.text().await.unwrap();
    assert!(text.starts_with("# Colony: what happened"), "{text}");
    assert!(text.contains(&format!("| {model} | 1 |")), "{text}");
    assert!(
        text.contains(&format!("(/v1/audit?after={}&limit=1)", seq - 1)),
        "{text}"
    );

    // Bad windows are refused; the whole log is the read policy's to give.
    let bad: Value = common::get_json(&base, &admin, "/v1/reports/summary?since=forever").await;
    assert_eq!(bad["error"]["code"], "invalid_query");
    let refused = common::get_json(&base, &token, "/v1/reports/summary").await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    node.shutdown().await.unwrap();
}
