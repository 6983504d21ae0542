//! Issue 28: the official MCP Python SDK (`mcp` from PyPI) as a client of a running
//! node, over Streamable HTTP on each protocol revision and over stdio through
//! `colony mcp` (tests/python/mcp_client.py): it lists the tools and resources,
//! claims a posted task, checkpoints and completes it while another session listens
//! to the task's resource and hears each change, reads its inbox; a token without
//! the `tasks` scope sees no write tool and is refused naming it; every call is in
//! the decision log.

use serde_json::{json, Value};

use crate::common;
use common::COLONY;

fn call(url: &str, token: &str, path: &str, body: Value) -> Value {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::new()
            .post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

/// Kills the node when the test ends, passed or not.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_official_mcp_sdk_works_the_board_over_http_and_stdio() {
    let data = tempfile::tempdir().unwrap();
    let (node, url) = common::start_quiet(data.path());
    let _node = Stop(node);
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let worker = call(
        &url,
        &admin,
        "/v1/principals",
        json!({"name": "mcp-agent", "kind": "ai", "justification": "an MCP client"}),
    );
    let (address, worker) = (
        worker["address"].as_str().unwrap().to_string(),
        worker["token"].as_str().unwrap().to_string(),
    );
    let reader = call(
        &url,
        &worker,
        &format!("/v1/principals/{address}/tokens"),
        json!({"name": "reader", "scopes": ["read"], "justification": "reads only"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let task = call(
        &url,
        &admin,
        "/v1/tasks",
        json!({"title": "summarize the issues", "justification": "for the MCP agent"}),
    )["address"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::run_python(
            "mcp",
            "mcp_client.py",
            vec![
                url.clone(),
                worker,
                reader,
                COLONY.to_string(),
                task.clone(),
                address.clone(),
            ],
        ));
    // The decision log has the calls, marked as made over MCP.
    let audit: Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::new()
            .get(format!("{url}/v1/audit?actor={address}&limit=1000"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let records = audit["records"].as_array().unwrap();
    for action in ["task.claim", "task.checkpoint", "task.complete"] {
        assert!(
            records.iter().any(|r| r["action"] == action
                && r["justification"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("[mcp] ")),
            "{action} over MCP in {audit}"
        );
    }
}
