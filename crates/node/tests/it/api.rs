//! The HTTP API against a real node on a loopback port, with its real store.

use colony_node::Node;

use crate::common;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A node on a free port over a fresh data directory, with limits.toml replaced.
struct TestNode {
    node: Option<Node>,
    base: String,
    admin: String,
    http: reqwest::Client,
    data: tempfile::TempDir,
    _config: tempfile::TempDir,
}

const LIMITS: &str = r#"
[limits.ai_accounts]
soft = 40
hard = 50
[limits.human_accounts]
soft = 100
hard = 1000
[limits.llm_spend_usd]
soft = "4.00"
hard = "5.00"
window = "24h"
[limits.concurrent_api_requests]
soft = 512
hard = 1024
"#;

fn config_dir(limits: &str) -> tempfile::TempDir {
    common::genesis_dir(&[("limits.toml", limits)])
}

use common::node_config;

impl TestNode {
    async fn start() -> TestNode {
        TestNode::with_limits(LIMITS).await
    }

    async fn with_limits(limits: &str) -> TestNode {
        TestNode::with_config(config_dir(limits)).await
    }

    async fn with_config(config: tempfile::TempDir) -> TestNode {
        let data = tempfile::tempdir().unwrap();
        let (node, base, admin) = common::start(data.path(), config.path()).await;
        TestNode {
            base,
            node: Some(node),
            admin,
            http: reqwest::Client::new(),
            data,
            _config: config,
        }
    }

    async fn restart(&mut self) {
        self.node.take().unwrap().shutdown().await.unwrap();
        let node = Node::start(node_config(self.data.path(), self._config.path()))
            .await
            .unwrap();
        self.base = format!("http://{}", node.local_addr());
        self.node = Some(node);
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(token), None).await
    }

    async fn principal(&self, name: &str, kind: &str, roles: &[&str]) -> (String, String) {
        let (status, body) = self
            .post(
                "/v1/principals",
                &self.admin,
                json!({"name": name, "kind": kind, "roles": roles, "justification": "test"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["address"].as_str().unwrap().to_string(),
            body["token"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_creations_against_hard_fifty_create_exactly_fifty() {
    let node = std::sync::Arc::new(TestNode::start().await);
    let mut tasks = Vec::new();
    for index in 0..200 {
        let node = std::sync::Arc::clone(&node);
        tasks.push(tokio::spawn(async move {
            node.post("/v1/principals", &node.admin, json!({"name": format!("agent-{index}"), "kind": "ai", "justification": "load test"})).await
        }));
    }
    let mut created = Vec::new();
    let mut denied = 0;
    let mut warned = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => {
                if !body["warnings"].as_array().unwrap().is_empty() {
                    warned += 1;
                }
                created.push(body["address"].as_str().unwrap().to_string());
            }
            StatusCode::TOO_MANY_REQUESTS => {
                denied += 1;
                let error = &body["error"];
                assert_eq!(error["code"], "hard_limit");
                assert_eq!(error["limit"], "ai_accounts");
                assert_eq!(
                    (error["usage"].as_u64(), error["hard"].as_u64()),
                    (Some(50), Some(50))
                );
                let message = error["message"].as_str().unwrap();
                assert!(
                    message.contains("set by 0.1") && message.contains("propose"),
                    "{message}"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created.len(), 50);
    assert_eq!(denied, 150);
    assert_eq!(warned, 10, "the 41st to 50th cross soft 40");
    created.sort();
    created.dedup();
    assert_eq!(created.len(), 50, "every address is distinct");
    let (_, limits) = node.get("/v1/limits", &node.admin).await;
    let accounts = limits["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "ai_accounts")
        .unwrap()
        .clone();
    assert_eq!(
        accounts,
        json!({
            "name": "ai_accounts", "unit": "accounts", "soft": 40, "hard": 50, "usage": 50, "reserved": 0,
            "state": "blocked", "on_soft": "warn", "window_ms": null, "queued": 0, "enforcement": "kernel",
            "description": accounts["description"], "set_by": "0.1", "set_at": accounts["set_at"], "set_via": accounts["set_via"],
        })
    );
    let (_, principals) = node.get("/v1/principals", &node.admin).await;
    assert_eq!(
        principals["principals"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == "ai")
            .count(),
        50
    );
}

#[tokio::test]
async fn principals_get_hypernet_addresses_and_roles_are_enforced() {
    let node = TestNode::start().await;
    let (ai, ai_token) = node.principal("loom", "ai", &[]).await;
    let (human, _) = node.principal("matt", "human", &[]).await;
    let (_, observer) = node.principal("watcher", "human", &["observer"]).await;
    assert_eq!((ai.as_str(), human.as_str()), ("2.1", "1.2"));
    let (status, body) = node
        .post(
            "/v1/principals",
            &ai_token,
            json!({"name": "x", "kind": "human", "justification": "j"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an AI spawns no humans: {body}"
    );
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, body) = node
        .post(
            "/v1/ledger/reserve",
            &observer,
            json!({"resource": "io_ops", "amount": 1, "justification": "j"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, body) = node.get("/v1/principals", &observer).await;
    assert_eq!(status, StatusCode::OK, "observers read");
    assert_eq!(body["principals"].as_array().unwrap().len(), 4);
    // Removal revokes the token.
    let (status, _) = node
        .post(
            &format!("/v1/principals/{ai}/remove"),
            &node.admin,
            json!({"justification": "done"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = node.get("/v1/ledger/me", &ai_token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked")),
        "removing a principal revokes its tokens: {body}"
    );
}

#[tokio::test]
async fn reserve_commit_release_and_balances() {
    let node = TestNode::start().await;
    let (_, token) = node.principal("loom", "ai", &[]).await;
    let (status, body) = node
        .post(
            "/v1/ledger/reserve",
            &token,
            json!({"resource": "llm_budget_usd", "amount": 500_000, "justification": "one call"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let reservation = body["reservation"].as_u64().unwrap();
    let (status, body) = node
        .post(
            "/v1/ledger/commit",
            &token,
            json!({"reservation": reservation, "actual": 320_000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["charged"].as_u64(),
            body["refunded"].as_u64(),
            body["shortfall"].as_u64()
        ),
        (Some(320_000), Some(180_000), Some(0))
    );
    let (_, me) = node.get("/v1/ledger/me", &token).await;
    let budget = &me["balances"]["llm_budget_usd"];
    assert_eq!(
        (
            budget["quota"].as_u64(),
            budget["used"].as_u64(),
            budget["available"].as_u64()
        ),
        (Some(2_000_000), Some(320_000), Some(1_680_000))
    );
    // Committing twice is refused; releasing an open reservation refunds it all.
    let (status, body) = node
        .post(
            "/v1/ledger/commit",
            &token,
            json!({"reservation": reservation, "actual": 1}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (_, body) = node
        .post(
            "/v1/ledger/reserve",
            &token,
            json!({"resource": "memory_bytes", "amount": 1000, "justification": "buffer"}),
        )
        .await;
    let memory = body["reservation"].as_u64().unwrap();
    let (status, _) = node
        .post("/v1/ledger/release", &token, json!({"reservation": memory}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, me) = node.get("/v1/ledger/me", &token).await;
    assert_eq!(me["balances"]["memory_bytes"]["reserved"], 0);
    assert_eq!(me["reservations"], json!([]));
    // Over quota: the denial carries the numbers.
    let (status, body) = node
        .post(
            "/v1/ledger/reserve",
            &token,
            json!({"resource": "llm_budget_usd", "amount": 2_000_000, "justification": "too much"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "insufficient_resource");
    assert_eq!(
        (
            body["error"]["requested"].as_u64(),
            body["error"]["available"].as_u64()
        ),
        (Some(2_000_000), Some(1_680_000))
    );
    assert_eq!(body["error"]["resource"], "llm_budget_usd");
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    let node = TestNode::start().await;
    let (_, token) = node.principal("loom", "ai", &[]).await;
    let url = |path: &str| format!("{}{path}", node.base);
    let raw = |path: &str, body: &'static str| {
        node.http
            .post(url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            raw("/v1/ledger/reserve", "{\"resource\":"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            raw("/v1/ledger/reserve", "[1,2]"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            raw(
                "/v1/ledger/reserve",
                r#"{"resource":"io_ops","amount":1,"justification":"j","extra":true}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            raw(
                "/v1/ledger/reserve",
                r#"{"resource":"io_ops","amount":-1,"justification":"j"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            raw(
                "/v1/ledger/reserve",
                r#"{"resource":"io_ops","amount":1e30,"justification":"j"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            raw(
                "/v1/ledger/reserve",
                r#"{"resource":"io_ops","amount":18446744073709551615,"justification":"j"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "amount_out_of_range",
        ),
        (
            raw(
                "/v1/ledger/reserve",
                r#"{"resource":"io_ops","amount":0,"justification":"j"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            raw(
                "/v1/ledger/reserve",
                r#"{"resource":"gold","amount":1,"justification":"j"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "unknown_resource",
        ),
        (
            raw("/v1/ledger/reserve", r#"{"resource":"io_ops","amount":1}"#),
            StatusCode::BAD_REQUEST,
            "justification_required",
        ),
        (
            raw(
                "/v1/ledger/reserve",
                r#"{"resource":"io_ops","amount":1,"justification":"  "}"#,
            ),
            StatusCode::BAD_REQUEST,
            "justification_required",
        ),
        (
            raw(
                "/v1/ledger/reserve",
                r#"{"resource":"io_ops","amount":1,"justification":"j","ttl_ms":999999999999}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            raw("/v1/ledger/commit", r#"{"reservation":424242,"actual":1}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            node.http
                .post(url("/v1/ledger/reserve"))
                .bearer_auth(&token)
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            node.http
                .post(url("/v1/ledger/reserve"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(vec![b'x'; 100_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            node.http.get(url("/v1/limits")),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            node.http.get(url("/v1/limits")).bearer_auth("colony_wrong"),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            node.http
                .get(url("/v1/limits"))
                .header("authorization", "Basic Zm9vOmJhcg=="),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            node.http.get(url("/metrics")),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            node.http
                .get(url("/v1/limits/no_such_limit"))
                .bearer_auth(&token),
            StatusCode::NOT_FOUND,
            "unknown_limit",
        ),
        (
            node.http.get(url("/v1/audit?limit=0")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            node.http.get(url("/v1/nowhere")).bearer_auth(&token),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            node.http
                .post(url("/v1/principals"))
                .bearer_auth(&node.admin)
                .json(&json!({"name":"x","kind":"robot","justification":"j"})),
            StatusCode::BAD_REQUEST,
            "invalid_kind",
        ),
        (
            node.http
                .post(url("/v1/principals"))
                .bearer_auth(&node.admin)
                .json(&json!({"name":"x","kind":"ai","justification":"j","address":"2.x-y"})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            node.http
                .post(url("/v1/principals"))
                .bearer_auth(&node.admin)
                .json(&json!({"name":"","kind":"ai","justification":"j"})),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
    ];
    for (index, (request, status, code)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        let got_status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("case {index}: body is not JSON: {e}"));
        assert_eq!(
            (got_status, body["error"]["code"].as_str()),
            (status, Some(code)),
            "case {index}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "case {index}: a message"
        );
    }
    // The node keeps serving, and nothing was lost or half-done.
    let (status, _) = node.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, me) = node.get("/v1/ledger/me", &token).await;
    assert_eq!(me["reservations"], json!([]));
    assert_eq!(me["balances"]["io_ops"]["reserved"], 0);
}

#[tokio::test]
async fn audit_pages_filters_and_survives_restart() {
    let mut node = TestNode::start().await;
    let (ai, token) = node.principal("loom", "ai", &[]).await;
    for _ in 0..5 {
        node.post(
            "/v1/ledger/reserve",
            &token,
            json!({"resource": "compute_ms", "amount": 10, "justification": "work"}),
        )
        .await;
    }
    let (_, page) = node.get("/v1/audit?after=0&limit=3", &node.admin).await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["action"], "genesis");
    assert_eq!(records[1]["prev_hash"], records[0]["hash"]);
    assert_eq!(page["next_after"], 3);
    let (_, mine) = node
        .get(&format!("/v1/audit?actor={ai}&limit=100"), &node.admin)
        .await;
    let mine = mine["records"].as_array().unwrap();
    assert_eq!(mine.len(), 5);
    assert!(mine.iter().all(|r| r["actor"] == ai
        && r["justification"] == "work"
        && r["action"] == "ledger.reserve"));
    let (_, about) = node
        .get(&format!("/v1/audit?address={ai}&limit=100"), &node.admin)
        .await;
    assert_eq!(
        about["records"].as_array().unwrap().len(),
        6,
        "its creation and its five reservations"
    );
    let before = node.get("/v1/audit?limit=1000", &node.admin).await.1;
    node.restart().await;
    let after = node.get("/v1/audit?limit=1000", &node.admin).await.1;
    assert_eq!(before["records"], after["records"]);
    let (status, _) = node.get("/v1/ledger/me", &token).await;
    assert_eq!(status, StatusCode::OK, "tokens survive a restart");
    node.node.take().unwrap().shutdown().await.unwrap();
    let report = colony_log::verify_audit(node.data.path()).unwrap();
    assert_eq!(
        report.head_hash,
        after["records"].as_array().unwrap().last().unwrap()["hash"]
    );
    assert_eq!(
        colony_log::verify_replay(node.data.path()).unwrap(),
        report.records
    );
}

#[tokio::test]
async fn metrics_show_limits_and_decisions() {
    let node = TestNode::start().await;
    node.principal("loom", "ai", &[]).await;
    let response = node
        .http
        .get(format!("{}/metrics", node.base))
        .bearer_auth(&node.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for expected in [
        "# TYPE colony_limit_usage gauge",
        "colony_limit_usage{limit=\"ai_accounts\",unit=\"accounts\"} 1",
        "colony_limit_hard{limit=\"ai_accounts\",unit=\"accounts\"} 50",
        "colony_principals{kind=\"ai\"} 1",
        "colony_principals{kind=\"human\"} 1",
        "colony_principals{kind=\"artifact\"} 0",
        "# TYPE colony_log_sync_seconds histogram",
        "colony_log_sync_seconds_bucket{le=\"+Inf\"} ",
        "colony_decisions_total{decision=\"allowed\"} 4",
        "colony_commands_total 4",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in\n{text}");
    }
}

#[tokio::test]
async fn soft_limit_queue_over_http() {
    let node =
        TestNode::with_limits("[limits.ai_accounts]\nsoft = 1\nhard = 5\non_soft = \"queue\"\n")
            .await;
    let (first, _) = node.principal("first", "ai", &[]).await;
    let (status, queued) = node
        .post(
            "/v1/principals",
            &node.admin,
            json!({"name": "second", "kind": "ai", "justification": "j", "priority": "high"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["status"], "queued");
    let token = queued["token"].as_str().unwrap().to_string();
    let (status, _) = node.get("/v1/ledger/me", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not admitted yet");
    node.post(
        &format!("/v1/principals/{first}/remove"),
        &node.admin,
        json!({"justification": "make room"}),
    )
    .await;
    let (status, me) = node.get("/v1/ledger/me", &token).await;
    assert_eq!(status, StatusCode::OK, "admitted when usage dropped: {me}");
    let (_, audit) = node.get("/v1/audit?limit=100", &node.admin).await;
    assert!(audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["decision"] == "admitted" && r["reason"]["code"] == "limit_allows"));
}

#[tokio::test]
async fn a_bad_genesis_file_stops_the_start_with_file_and_line() {
    let data = tempfile::tempdir().unwrap();
    let config = config_dir("[limits.ai_accounts]\nsoft = 60\nhard = 50\n");
    let error = Node::start(node_config(data.path(), config.path()))
        .await
        .err()
        .expect("a bad file is refused")
        .to_string();
    assert!(
        error.contains("limits.toml:2") && error.contains("soft (60) is above hard (50)"),
        "{error}"
    );
    assert!(
        !data.path().join("admin.token").exists(),
        "nothing was created"
    );
}

#[tokio::test]
async fn past_soft_concurrency_low_priority_requests_are_shed_first() {
    // Soft 0: every request is past soft, so the ceilings by priority decide.
    let node =
        TestNode::with_limits("[limits.concurrent_api_requests]\nsoft = 0\nhard = 4\n").await;
    let get = |priority: &'static str| {
        node.http
            .get(format!("{}/v1/ledger/me", node.base))
            .bearer_auth(&node.admin)
            .header("x-colony-priority", priority)
            .send()
    };
    let shed = get("low").await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["priority"].as_str()
        ),
        (Some("shed"), Some("low"))
    );
    for priority in ["normal", "high", "critical"] {
        let admitted = get(priority).await.unwrap();
        assert_eq!(admitted.status(), StatusCode::OK, "{priority}");
        assert!(
            admitted.headers().contains_key("colony-warning"),
            "past soft is warned"
        );
    }
    let (status, _) = node.call("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "health is never shed");
    // Nor is the governance lane.
    let limits = node
        .http
        .get(format!("{}/v1/limits", node.base))
        .bearer_auth(&node.admin)
        .header("x-colony-priority", "low")
        .send()
        .await
        .unwrap();
    assert_eq!(limits.status(), StatusCode::OK, "governance is never shed");
}
