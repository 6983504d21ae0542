//! Governance over HTTP against a real node: a two-second review period passes on
//! the node's own clock (the sequencer ticks when the review is due).

use std::time::{Duration, Instant};

use colony_node::Node;

use crate::common;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Governed {
    node: Node,
    base: String,
    admin: String,
    http: reqwest::Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Governed {
    async fn start() -> Governed {
        let governance = common::governance_reviewed_in("2s");
        let config = common::genesis_dir(&[("governance.toml", &governance)]);
        let data = tempfile::tempdir().unwrap();
        let (node, base, admin) = common::start(data.path(), config.path()).await;
        Governed {
            base,
            node,
            admin,
            http: reqwest::Client::new(),
            _dirs: (config, data),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let request = if method == "GET" {
            self.http.get(url)
        } else {
            self.http.post(url)
        };
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.bearer_auth(token).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn principal(&self, name: &str, kind: &str) -> (String, String) {
        let (status, body) = self
            .call(
                "POST",
                "/v1/principals",
                &self.admin,
                Some(json!({"name": name, "kind": kind, "justification": "governance test"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["address"].as_str().unwrap().into(),
            body["token"].as_str().unwrap().into(),
        )
    }

    async fn limit(&self, name: &str) -> Value {
        self.call("GET", &format!("/v1/limits/{name}"), &self.admin, None)
            .await
            .1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brake_at_once_then_a_raise_by_consensus_with_every_step_in_the_audit() {
    let colony = Governed::start().await;
    let (ai, ai_token) = colony.principal("keystone", "ai").await;
    let (human, human_token) = colony.principal("matt", "human").await;

    // An AI brakes: applied at once.
    let (status, brake) = colony
        .call("POST", "/v1/proposals", &ai_token, Some(json!({"limit": "ai_accounts", "soft": 2, "hard": 5, "justification": "too many new agents this hour", "brake": true})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{brake}");
    assert_eq!(
        (brake["state"].as_str(), brake["change"].as_str()),
        (Some("applied"), Some("brake"))
    );
    let limit = colony.limit("ai_accounts").await;
    assert_eq!(
        (limit["soft"].as_u64(), limit["hard"].as_u64()),
        (Some(2), Some(5))
    );
    assert_eq!(limit["set_by"], ai.as_str());

    // A brake that raises is refused.
    let (status, refused) = colony
        .call(
            "POST",
            "/v1/proposals",
            &ai_token,
            Some(json!({"limit": "ai_accounts", "hard": 50, "justification": "x", "brake": true})),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid"))
    );

    // A human proposes a raise; one human and one AI approve.
    let (status, opened) = colony
        .call("POST", "/v1/proposals", &human_token, Some(json!({"limit": "ai_accounts", "soft": 20, "hard": 40, "justification": "the swarm is stable"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    assert_eq!(opened["state"], "review");
    assert!(opened["review_ends_at"].as_str().is_some());
    let id = opened["id"].as_u64().unwrap();
    for (token, why) in [
        (&human_token, "I watched the last day"),
        (&ai_token, "my queue is backed up"),
    ] {
        let (status, voted) = colony
            .call(
                "POST",
                &format!("/v1/proposals/{id}/votes"),
                token,
                Some(json!({"vote": "approve", "justification": why})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{voted}");
    }
    let (status, twice) = colony
        .call(
            "POST",
            &format!("/v1/proposals/{id}/votes"),
            &ai_token,
            Some(json!({"vote": "approve", "justification": "again"})),
        )
        .await;
    assert_eq!(
        (status, twice["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid"))
    );
    let (_, review) = colony
        .call("GET", &format!("/v1/proposals/{id}"), &colony.admin, None)
        .await;
    assert_eq!(review["tally"]["human"]["approve"], 1);
    assert_eq!(review["tally"]["ai"]["approve"], 1);
    assert_eq!(review["votes"].as_array().unwrap().len(), 2);

    // The node decides by itself when the review ends.
    let deadline = Instant::now() + Duration::from_secs(15);
    let decided = loop {
        let (_, proposal) = colony
            .call("GET", &format!("/v1/proposals/{id}"), &colony.admin, None)
            .await;
        if proposal["state"] != "review" {
            break proposal;
        }
        assert!(
            Instant::now() < deadline,
            "the review never ended: {proposal}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(decided["state"], "applied", "{decided}");
    let limit = colony.limit("ai_accounts").await;
    assert_eq!(
        (limit["soft"].as_u64(), limit["hard"].as_u64()),
        (Some(20), Some(40))
    );
    assert_eq!(limit["set_via"], format!("proposal {id}"));
    assert_eq!(limit["set_by"], human.as_str());

    let (_, listed) = colony
        .call("GET", "/v1/proposals?state=applied", &colony.admin, None)
        .await;
    assert_eq!(listed["proposals"].as_array().unwrap().len(), 2);

    // Every step is in the decision log with its justification.
    let (_, audit) = colony
        .call("GET", "/v1/audit?limit=1000", &colony.admin, None)
        .await;
    let records = audit["records"].as_array().unwrap();
    let find = |action: &str, justification: &str| {
        records.iter().any(|r| {
            r["action"] == action
                && r["justification"]
                    .as_str()
                    .unwrap_or("")
                    .contains(justification)
        })
    };
    assert!(
        find("governance.propose", "too many new agents"),
        "the brake"
    );
    assert!(
        find("governance.propose", "the swarm is stable"),
        "the proposal"
    );
    assert!(
        find("governance.vote", "I watched the last day")
            && find("governance.vote", "my queue is backed up")
    );
    assert!(records
        .iter()
        .any(|r| r["action"] == "governance.decide" && r["reason"]["code"] == "consensus_reached"));
    colony.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_governance_requests_get_clear_errors() {
    let colony = Governed::start().await;
    let (_, token) = colony.principal("keystone", "ai").await;
    let cases = [
        (
            json!({"limit": "no_such", "hard": 1, "justification": "j"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"limit": "ai_accounts", "soft": 60, "justification": "j"}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"limit": "ai_accounts", "hard": -3, "justification": "j"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"limit": "ai_accounts", "justification": "j"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"limit": "ai_accounts", "hard": 60}),
            StatusCode::BAD_REQUEST,
            "justification_required",
        ),
        (
            json!({"quota_default": {"kind": "ai", "resource": "gold", "amount": 1}, "justification": "j"}),
            StatusCode::BAD_REQUEST,
            "unknown_resource",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = colony
            .call("POST", "/v1/proposals", &token, Some(body.clone()))
            .await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (status, answer) = colony
        .call(
            "POST",
            "/v1/proposals/77/votes",
            &token,
            Some(json!({"vote": "approve"})),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, answer) = colony
        .call(
            "POST",
            "/v1/proposals/1/votes",
            &token,
            Some(json!({"vote": "maybe"})),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_vote"))
    );
    let (status, answer) = colony.call("GET", "/v1/proposals/abc", &token, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_path"))
    );
    let (status, answer) = colony
        .call("GET", "/v1/proposals?state=pending", &token, None)
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let limit = colony.limit("ai_accounts").await;
    assert_eq!(
        (limit["soft"].as_u64(), limit["hard"].as_u64()),
        (Some(10), Some(50)),
        "nothing changed"
    );
}
