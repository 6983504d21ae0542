//! Work that is never stuck, over HTTP (issue 26): `attempt_timeout` at post, the
//! attempt's deadline in the claim, `POST /v1/tasks/{address}/cancel` (the holder's
//! next call is `409 cancelled`) and `/priority`, with who may use them.

use crate::common;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(20);

async fn post(base: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    common::send(Method::POST, base, token, path, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_26_a_poster_cancels_its_task_and_the_holder_is_refused() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (_node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, poster) = common::create_principal(&base, &admin, "poster", "ai", &["member"]).await;
    let (_, worker) = common::create_principal(&base, &admin, "worker", "ai", &["member"]).await;

    // The attempt timeout is bounded where it enters.
    let (status, refused) = post(
        &base,
        &poster,
        "/v1/tasks",
        json!({"title": "t", "attempt_timeout": "500ms", "justification": "too short"}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("attempt_timeout"));
    let (status, posted) = post(
        &base,
        &poster,
        "/v1/tasks",
        json!({"title": "report", "budget_usd": "0.25", "attempt_timeout": "10m", "justification": "weekly"}),
    )
    .await;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["attempt_timeout_ms"], 600_000);
    let address = posted["address"].as_str().unwrap().to_string();

    let (status, claimed) = post(&base, &worker, "/v1/tasks/claim", json!({})).await;
    assert_eq!(status, 200, "{claimed}");
    let token = claimed["lease"]["token"].as_u64().unwrap();
    let deadline = claimed["lease"]["attempt_deadline_ms"].as_u64().unwrap();
    let expires = claimed["lease"]["expires_at_ms"].as_u64().unwrap();
    assert!(deadline >= expires && deadline - expires <= 600_000 - 30_000 + 1_000);

    // Only whoever directs it may raise it or cancel it.
    let (status, _) = post(
        &base,
        &worker,
        &format!("/v1/tasks/{address}/priority"),
        json!({"priority": "critical", "justification": "mine now"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, raised) = post(
        &base,
        &poster,
        &format!("/v1/tasks/{address}/priority"),
        json!({"priority": "critical", "justification": "the board meets at noon"}),
    )
    .await;
    assert_eq!(status, 200, "{raised}");
    assert_eq!(raised["priority"], "critical");
    let (status, _) = post(
        &base,
        &worker,
        &format!("/v1/tasks/{address}/cancel"),
        json!({"justification": "not mine to cancel"}),
    )
    .await;
    assert_eq!(status, 403);

    let (status, cancelled) = post(
        &base,
        &poster,
        &format!("/v1/tasks/{address}/cancel"),
        json!({"justification": "the report is no longer needed"}),
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["effect"]["refunded_micro_usd"], 250_000);
    let me = common::get_json(&base, &poster, "/v1/ledger/me").await;
    assert_eq!(me["balances"]["llm_budget_usd"]["reserved"], 0, "{me}");

    // The holder's next heartbeat is a 409 that says who cancelled it.
    let (status, answer) = post(
        &base,
        &worker,
        &format!("/v1/tasks/{address}/heartbeat"),
        json!({"lease_token": token}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "cancelled", "{answer}");
    assert_eq!(answer["error"]["by"], "2.1", "{answer}");

    // Listed as cancelled; a second cancel is refused and changes nothing.
    let list = common::get_json(&base, &admin, "/v1/tasks?status=cancelled").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "{list}");
    let (status, _) = post(
        &base,
        &poster,
        &format!("/v1/tasks/{address}/cancel"),
        json!({"justification": "again"}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_26_an_attempt_past_its_timeout_fails_however_often_it_is_renewed() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (_node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, worker) = common::create_principal(&base, &admin, "hangs", "ai", &["member"]).await;
    let (status, posted) = post(
        &base,
        &admin,
        "/v1/tasks",
        json!({"title": "hangs", "attempt_timeout": 1000, "justification": "a short one"}),
    )
    .await;
    assert_eq!(status, 201, "{posted}");
    let address = posted["address"].as_str().unwrap().to_string();
    let (_, claimed) = post(
        &base,
        &worker,
        "/v1/tasks/claim",
        json!({"lease_ms": 60000}),
    )
    .await;
    let token = claimed["lease"]["token"].as_u64().unwrap();
    // The worker renews as fast as it likes: the attempt still ends at its deadline.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let answer = loop {
        let (status, answer) = post(
            &base,
            &worker,
            &format!("/v1/tasks/{address}/heartbeat"),
            json!({"lease_token": token}),
        )
        .await;
        if status != 200 {
            assert_eq!(status, 409, "{answer}");
            break answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "never timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer["error"]["code"], "attempt_timed_out", "{answer}");
    assert_eq!(answer["error"]["timeout_ms"], 1000, "{answer}");
    let task = common::get_json(&base, &admin, &format!("/v1/tasks/{address}")).await;
    assert_eq!(task["attempts"][0]["outcome"], "timed_out", "{task}");
    assert_eq!(task["failures"], 1, "{task}");
    let audit = common::get_json(&base, &admin, "/v1/audit?limit=1000").await;
    let timed_out: Vec<&Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "task.timed_out")
        .collect();
    assert_eq!(
        timed_out.len(),
        1,
        "recorded once, with the evidence: {audit}"
    );
    assert_eq!(timed_out[0]["reason"]["code"], "attempt_timed_out");
}
