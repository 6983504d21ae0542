//! Issue 28: the governed MCP gateway. An upstream MCP server written with the
//! official SDK (tests/python/mcp_upstream.py), run by the node over stdio under
//! bubblewrap, offered as `notes__*`: an agent allowed only the read tool does not
//! see the others; a destructive call waits until a human of another lineage
//! approves it over HTTP and runs once; a denied one never reaches the upstream;
//! io_ops are charged per call; a hanging upstream is cut at its deadline; a result
//! past its bound is not passed on; every call is a decision in the log.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::mcp::Mcp;
use crate::common;

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn is_error(result: &Value) -> bool {
    result["isError"] == json!(true)
}

/// mcp.toml for the test's upstream.
fn mcp_toml(python: &Path) -> String {
    common::tools::notes_upstream_toml(python)
}

async fn audit(base: &str, admin: &str, actor: &str) -> Vec<Value> {
    let audit = common::get_json(base, admin, &format!("/v1/audit?actor={actor}&limit=1000")).await;
    audit["records"].as_array().unwrap().clone()
}

/// A tool call made on its own task (it waits for a person's decision).
fn call_in_background(
    base: &str,
    token: &str,
    tool: &'static str,
    arguments: Value,
) -> tokio::task::JoinHandle<Value> {
    let mcp = Mcp {
        base: base.to_string(),
        http: reqwest::Client::new(),
    };
    let token = token.to_string();
    tokio::spawn(async move { mcp.call(&token, tool, arguments).await })
}

/// An MCP answer read as server-sent events, one JSON-RPC message at a time.
struct SseReader {
    response: reqwest::Response,
    pending: String,
}

impl SseReader {
    async fn post(base: &str, token: &str, body: Value) -> SseReader {
        let response = reqwest::Client::new()
            .post(format!("{base}/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let kind = response.headers()["content-type"].to_str().unwrap();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        SseReader {
            response,
            pending: String::new(),
        }
    }

    /// The next message (keep-alives and empty events skipped).
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let event: String = self.pending.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                if let Ok(message) = serde_json::from_str::<Value>(&data.join("\n")) {
                    return message;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("the stream goes on within 30 s")
                .unwrap()
                .expect("the stream is still open");
            self.pending
                .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }
}

/// The pending approval request of `tool`, once it is there.
async fn pending_request(base: &str, admin: &str, tool: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let grants = common::get_json(base, admin, "/v1/grants?state=pending").await;
        if let Some(grant) = grants["grants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["tool"] == tool)
        {
            return grant.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no approval request for {tool}: {grants}"
        );
        // The call is on its way to asking; look again once the node had time to.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_servers_tools_are_governed_priced_approved_and_recorded() {
    let python = tokio::task::spawn_blocking(common::python).await.unwrap();
    let config = common::genesis_dir(&[("mcp.toml", &mcp_toml(&python))]);
    let data = tempfile::tempdir().unwrap();
    let (_node, base, admin) = common::start(data.path(), config.path()).await;
    let mcp = Mcp {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    let (agent_address, agent) =
        common::create_principal(&base, &admin, "mcp-agent", "ai", &["member"]).await;
    let (_, reviewer) =
        common::create_principal(&base, &admin, "reviewer", "human", &["member"]).await;
    let reader = common::post_json(
        &base,
        &agent,
        &format!("/v1/principals/{agent_address}/tokens"),
        &json!({"name": "notes-reader", "scopes": ["mcp:notes__read_note"], "justification": "reads notes only"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();

    // What each token sees.
    let all = mcp.tool_names(&agent).await;
    for tool in ["notes__read_note", "notes__delete_note", "task_claim"] {
        assert!(all.iter().any(|t| t == tool), "{tool} in {all:?}");
    }
    let seen = mcp.tool_names(&reader).await;
    assert!(seen.iter().any(|t| t == "notes__read_note"), "{seen:?}");
    assert!(!seen.iter().any(|t| t == "notes__delete_note"), "{seen:?}");
    let refused = mcp
        .call(
            &reader,
            "notes__delete_note",
            json!({"name": "a", "justification": "cleanup"}),
        )
        .await;
    assert!(is_error(&refused), "{refused}");
    assert!(text(&refused).contains("mcp:notes"), "{refused}");

    // A read: justified, passed through, charged its io_ops, recorded.
    let unjustified = mcp
        .call(&agent, "notes__read_note", json!({"name": "groceries"}))
        .await;
    assert!(is_error(&unjustified) && text(&unjustified).contains("justification"));
    let read = mcp
        .call(
            &reader,
            "notes__read_note",
            json!({"name": "groceries", "justification": "what to buy"}),
        )
        .await;
    assert!(!is_error(&read), "{read}");
    assert_eq!(text(&read), "note groceries: remember the milk");

    // A destructive call waits for a human of another lineage, and runs once.
    let waiting = call_in_background(
        &base,
        &agent,
        "notes__delete_note",
        json!({"name": "old-list", "justification": "it is done"}),
    );
    let request = pending_request(&base, &admin, "notes__delete_note").await;
    let id = request["id"].as_u64().unwrap();
    assert!(
        request["justification"]
            .as_str()
            .unwrap()
            .contains("old-list"),
        "{request}"
    );
    let deleted = data.path().join("mcp/notes/deleted.txt");
    assert!(!deleted.exists(), "nothing runs before the approval");
    let why = json!({"justification": "checked it"});
    let (status, own) = common::send(
        reqwest::Method::POST,
        &base,
        &agent,
        &format!("/v1/grants/{id}/approve"),
        Some(why.clone()),
    )
    .await;
    assert_eq!(status, 403, "the caller never approves its own call: {own}");
    let (status, approved) = common::send(
        reqwest::Method::POST,
        &base,
        &reviewer,
        &format!("/v1/grants/{id}/approve"),
        Some(why.clone()),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    let result = waiting.await.unwrap();
    assert!(!is_error(&result), "{result}");
    assert_eq!(text(&result), "deleted old-list");
    assert_eq!(std::fs::read_to_string(&deleted).unwrap(), "old-list\n");
    let grant = common::get_json(&base, &admin, &format!("/v1/grants/{id}")).await;
    assert_eq!(grant["state"], "used", "{grant}");

    // A denied one never reaches the upstream.
    let waiting = call_in_background(
        &base,
        &agent,
        "notes__delete_note",
        json!({"name": "taxes", "justification": "tidy up"}),
    );
    let request = pending_request(&base, &admin, "notes__delete_note").await;
    let id = request["id"].as_u64().unwrap();
    let (status, denied) = common::send(
        reqwest::Method::POST,
        &base,
        &reviewer,
        &format!("/v1/grants/{id}/deny"),
        Some(why),
    )
    .await;
    assert_eq!(status, 200, "{denied}");
    let result = waiting.await.unwrap();
    assert!(
        is_error(&result) && text(&result).contains("denied"),
        "{result}"
    );
    assert_eq!(std::fs::read_to_string(&deleted).unwrap(), "old-list\n");

    // A client that asks for progress hears of the wait while its call is open (the
    // answer becomes an event stream), then gets the result on the same stream.
    let mut events = SseReader::post(
        &base,
        &agent,
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
            "name": "notes__delete_note",
            "arguments": {"name": "drafts", "justification": "old drafts"},
            "_meta": {"progressToken": "wait-1"}}}),
    )
    .await;
    let progress = events.next().await;
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    assert_eq!(progress["params"]["progressToken"], "wait-1", "{progress}");
    let said = progress["params"]["message"].as_str().unwrap();
    assert!(said.contains("waiting for a human"), "{said}");
    assert_eq!(progress["params"]["total"], 60.0, "{progress}");
    let id = pending_request(&base, &admin, "notes__delete_note").await["id"]
        .as_u64()
        .unwrap();
    assert!(said.contains(&format!("approval request {id}")), "{said}");
    let (status, _) = common::send(
        reqwest::Method::POST,
        &base,
        &reviewer,
        &format!("/v1/grants/{id}/approve"),
        Some(json!({"justification": "drafts can go"})),
    )
    .await;
    assert_eq!(status, 200);
    let result = loop {
        let event = events.next().await;
        if event["id"] == 9 {
            break event["result"].clone();
        }
        assert_eq!(event["method"], "notifications/progress", "{event}");
    };
    assert_eq!(text(&result), "deleted drafts", "{result}");
    assert_eq!(
        std::fs::read_to_string(&deleted).unwrap(),
        "old-list\ndrafts\n"
    );

    // A hanging upstream is cut at its deadline; a result past its bound is not
    // passed on; the node and the upstream go on.
    let hung = mcp
        .call(
            &agent,
            "notes__hang",
            json!({"seconds": 30, "justification": "test the deadline"}),
        )
        .await;
    assert!(
        is_error(&hung) && text(&hung).contains("within 3000 ms"),
        "{hung}"
    );
    let big = mcp
        .call(
            &agent,
            "notes__big_note",
            json!({"size": 5000, "justification": "a long note"}),
        )
        .await;
    assert!(
        is_error(&big) && text(&big).contains("at most 1000"),
        "{big}"
    );
    let unknown = mcp
        .call(
            &agent,
            "notes__nope",
            json!({"justification": "no such tool"}),
        )
        .await;
    assert!(
        is_error(&unknown) && text(&unknown).contains("no tool named"),
        "{unknown}"
    );

    // Sandboxed: its own home, none of the node's environment, not the host.
    let token_file = data.path().join("admin.token");
    let jail = mcp
        .call(
            &agent,
            "notes__where_am_i",
            json!({"path": token_file, "justification": "where does it run"}),
        )
        .await;
    let jail = text(&jail);
    let home = data.path().join("mcp/notes");
    assert!(jail.contains(&format!("home={}", home.display())), "{jail}");
    assert!(
        jail.contains("visible=False"),
        "the node's files are not its: {jail}"
    );
    assert!(
        !jail.contains("CARGO"),
        "the node's environment leaked: {jail}"
    );

    // Every call is a decision: caller, tool, outcome, size, duration.
    let records = audit(&base, &admin, &agent_address).await;
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "mcp.tool_call")
        .collect();
    let outcome = |tool: &str, outcome: &str| {
        calls.iter().any(|r| {
            r["subject"] == format!("tool:{tool}")
                && r["detail"]["effect"]["outcome"] == outcome
                && r["detail"]["effect"]["arguments_sha256"]
                    .as_str()
                    .is_some_and(|d| d.len() == 64)
        })
    };
    assert!(outcome("notes__read_note", "ok"), "{calls:?}");
    // The read's two io_ops, charged in its record (a balance's `used` starts again
    // at every turn of the one-minute window, which a run may straddle).
    let read_charged = calls.iter().any(|r| {
        r["subject"] == "tool:notes__read_note"
            && r["detail"]["effect"]["outcome"] == "ok"
            && r["detail"]["effect"]["charged"] == json!([["io_ops", 2]])
    });
    assert!(read_charged, "the call's 2 io_ops: {calls:?}");
    assert!(outcome("notes__delete_note", "ok"), "{calls:?}");
    assert!(outcome("notes__hang", "timeout"), "{calls:?}");
    assert!(outcome("notes__big_note", "too_large"), "{calls:?}");
    // A tool's own entry takes what it does not say from `*` (io_ops = 2).
    let big = calls
        .iter()
        .find(|r| r["subject"] == "tool:notes__big_note")
        .unwrap();
    assert_eq!(big["detail"]["effect"]["charged"], json!([["io_ops", 2]]));
    assert_eq!(
        calls
            .iter()
            .filter(|r| r["subject"] == "tool:notes__delete_note")
            .count(),
        2,
        "two approved calls were made, the denied one never"
    );
    // The report counts them by tool and principal.
    let report = common::get_json(&base, &admin, "/v1/reports/summary").await;
    let hang = report["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "notes__hang" && t["who"] == agent_address)
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        (hang["calls"].as_u64(), hang["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let text = reqwest::Client::new()
        .get(format!("{base}/v1/reports/summary?format=md"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("## MCP tool calls") && text.contains("| notes__read_note |"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_be_sandboxed_or_is_misconfigured_stops_the_start_loudly() {
    for (toml, expected) in [
        (
            "[[servers]]\nname = \"Bad Name\"\ncommand = [\"true\"]\n",
            "lowercase",
        ),
        (
            "[[servers]]\nname = \"web\"\ncommand = [\"true\"]\nurl = \"https://example.com/mcp\"\n",
            "either",
        ),
        (
            "[[servers]]\nname = \"x\"\ncommand = [\"true\"]\n[[servers.tools]]\nname = \"*\"\napproval = \"maybe\"\n",
            "approval",
        ),
        (
            "[[servers]]\nname = \"x\"\ncommand = [\"true\"]\nread_only = [\"relative/path\"]\n",
            "absolute",
        ),
    ] {
        let config = common::genesis_dir(&[("mcp.toml", toml)]);
        let data = tempfile::tempdir().unwrap();
        let error = match colony_node::Node::start(common::node_config(data.path(), config.path())).await {
            Ok(_) => panic!("{toml} was taken"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("mcp.toml") && error.contains(expected), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_start_does_not_hold_the_node() {
    let toml = "[[servers]]\nname = \"broken\"\ncommand = [\"/nonexistent/program\"]\nsandbox = \"none\"\nstart_timeout = \"2s\"\n[[servers.tools]]\nname = \"*\"\n";
    let config = common::genesis_dir(&[("mcp.toml", toml)]);
    let data = tempfile::tempdir().unwrap();
    let (_node, base, admin) = common::start(data.path(), config.path()).await;
    let mcp = Mcp {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    let tools = mcp.tool_names(&admin).await;
    assert!(tools.iter().any(|t| t == "task_list"));
    assert!(
        !tools.iter().any(|t| t.starts_with("broken__")),
        "{tools:?}"
    );
    let refused = mcp
        .call(&admin, "broken__anything", json!({"justification": "try"}))
        .await;
    assert!(is_error(&refused), "{refused}");
    let health = common::get_json(&base, &admin, "/healthz").await;
    assert_eq!(health["status"], "ok", "{health}");
}
