//! Colony as an MCP server, spoken to as JSON-RPC over HTTP: `/mcp` needs a token
//! (`401` with RFC 9728's metadata otherwise), negotiates the protocol revisions, lists
//! only the tools a token may call, and each tool is its route: the same scope, the
//! same decision, recorded as made over MCP. Bad input gets clear errors, never a 5xx.

use crate::common;

use serde_json::{json, Value};

pub(crate) struct Mcp {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Mcp {
    pub(crate) async fn post(
        &self,
        token: Option<&str>,
        version: &str,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .post(format!("{}/mcp", self.base))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", version)
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn call(&self, token: &str, tool: &str, arguments: Value) -> Value {
        let (status, _, answer) = self
            .post(
                Some(token),
                "2025-06-18",
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments}}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["result"].clone()
    }

    pub(crate) async fn tool_names(&self, token: &str) -> Vec<String> {
        let (status, _, answer) = self
            .post(
                Some(token),
                "2025-06-18",
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_works_the_board_under_the_same_rules_as_http() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (_node, base, admin) = common::start(data.path(), config.path()).await;
    let mcp = Mcp {
        base: base.clone(),
        http: reqwest::Client::new(),
    };

    // No token: 401, and where to learn how to present one.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let (status, headers, _) = mcp.post(None, "2025-06-18", initialize.clone()).await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("resource_metadata=")
            && challenge.contains("/.well-known/oauth-protected-resource"),
        "{challenge}"
    );
    let metadata = common::get_json(&base, &admin, "/.well-known/oauth-protected-resource").await;
    assert_eq!(metadata["resource"], format!("{base}/mcp"));

    // Each revision is negotiated.
    for version in ["2025-06-18", "2025-11-25"] {
        let mut request = initialize.clone();
        request["params"]["protocolVersion"] = json!(version);
        let (status, _, answer) = mcp.post(Some(&admin), version, request).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["result"]["protocolVersion"], version, "{answer}");
        assert_eq!(answer["result"]["serverInfo"]["name"], "colony");
    }

    // The stateless revision has no initialize: `server/discover` says what is served.
    let discovered = mcp
        .http
        .post(format!("{base}/mcp"))
        .bearer_auth(&admin)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .json(
            &json!({"jsonrpc": "2.0", "id": 3, "method": "server/discover", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}}}),
        )
        .send()
        .await
        .unwrap();
    let status = discovered.status().as_u16();
    let text = discovered.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("2026-07-28") && text.contains("colony"),
        "{text}"
    );

    // A worker with every scope sees the board's tools; a read-only token sees only
    // the tools that read, and a write tool is refused naming the scope it lacks.
    let (_, worker) =
        common::create_principal(&base, &admin, "mcp-worker", "ai", &["member"]).await;
    let names = mcp.tool_names(&worker).await;
    for tool in [
        "task_claim",
        "task_complete",
        "task_post",
        "ledger_me",
        "proposal_vote",
    ] {
        assert!(names.contains(&tool.to_string()), "{names:?}");
    }
    let reader = common::post_json(
        &base,
        &worker,
        "/v1/principals/2.1/tokens",
        &json!({"name": "reader", "scopes": ["read"], "justification": "reads only"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let read_names = mcp.tool_names(&reader).await;
    assert!(
        read_names.contains(&"task_list".to_string()),
        "{read_names:?}"
    );
    assert!(
        !read_names
            .iter()
            .any(|n| n == "task_claim" || n == "task_post"),
        "{read_names:?}"
    );
    let refused = mcp
        .call(
            &reader,
            "task_post",
            json!({"title": "t", "justification": "no scope"}),
        )
        .await;
    assert_eq!(refused["isError"], true, "{refused}");
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("`tasks` scope"), "{text}");

    // Post, claim, checkpoint, complete: the same decisions as over HTTP.
    let posted = mcp
        .call(
            &admin,
            "task_post",
            json!({"title": "summarize", "justification": "weekly report"}),
        )
        .await;
    let address = posted["structuredContent"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let claimed = mcp
        .call(&worker, "task_claim", json!({"justification": "mine"}))
        .await;
    assert_eq!(
        claimed["structuredContent"]["task"]["address"], address,
        "{claimed}"
    );
    let token = claimed["structuredContent"]["lease"]["token"]
        .as_u64()
        .unwrap();
    let checkpointed = mcp
        .call(
            &worker,
            "task_checkpoint",
            json!({"address": address, "lease_token": token,
            "checkpoint": {"page": 3}, "justification": "a third done"}),
        )
        .await;
    assert_eq!(checkpointed["isError"], false, "{checkpointed}");
    let done = mcp
        .call(
            &worker,
            "task_complete",
            json!({"address": address, "lease_token": token,
            "result": {"summary": "ok"}, "justification": "done"}),
        )
        .await;
    assert_eq!(done["structuredContent"]["status"], "completed", "{done}");
    // The bus: publish over MCP into a durable stream, and read it back from a
    // sequence number; a token whose bus scope is narrower is refused.
    common::post_json(
        &base,
        &admin,
        "/v1/streams",
        &json!({"name": "reviews", "subjects": ["work.reviews.>"], "justification": "kept"}),
    )
    .await;
    for n in 1..=3 {
        let published = mcp
            .call(
                &worker,
                "bus_publish",
                json!({"subject": format!("work.reviews.{n}"),
                "data": {"pr": n}, "justification": "a review is ready"}),
            )
            .await;
        assert_eq!(published["isError"], false, "{published}");
    }
    // The stream stores on its writer thread: wait until the three are kept.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while common::get_json(&base, &admin, "/v1/streams/reviews").await["stream"]["messages"] != 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never stored them"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let read = mcp
        .call(
            &worker,
            "stream_read",
            json!({"name": "reviews", "from_seq": 2}),
        )
        .await;
    let messages = read["structuredContent"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{read}");
    assert_eq!(messages[0]["data"], json!({"pr": 2}), "{read}");
    assert_eq!(read["structuredContent"]["next_seq"], 4, "{read}");
    let narrow = common::post_json(
        &base,
        &worker,
        "/v1/principals/2.1/tokens",
        &json!({"name": "narrow", "scopes": ["bus:work.drafts.>"], "justification": "drafts only"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = mcp
        .call(
            &narrow,
            "bus_publish",
            json!({"subject": "work.reviews.9", "data": 1,
            "justification": "outside its scope"}),
        )
        .await;
    assert_eq!(refused["isError"], true, "{refused}");

    // A write without a justification is refused by the tool's schema's rule, as
    // the route refuses it.
    let unjustified = mcp
        .call(&worker, "task_post", json!({"title": "why?"}))
        .await;
    assert_eq!(unjustified["isError"], true, "{unjustified}");

    // Recorded as the same kernel decisions, marked as made over MCP.
    let audit = common::get_json(&base, &admin, "/v1/audit?actor=2.1&limit=100").await;
    let completed = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "task.complete")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(completed["justification"], "[mcp] done", "{completed}");

    // Bad input: clear errors, no 5xx, the node healthy.
    for body in [
        json!("not an object"),
        json!({"jsonrpc": "2.0", "id": 9, "method": "no/such_method"}),
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "no_such_tool"}}),
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "task_show", "arguments": {"address": ["a"]}}}),
    ] {
        let (status, _, answer) = mcp.post(Some(&admin), "2025-06-18", body.clone()).await;
        assert!(status < 500, "{body} -> {status} {answer}");
    }
    let huge = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "task_post", "arguments": {"title": "x".repeat(2 << 20)}}});
    let (status, _, _) = mcp.post(Some(&admin), "2025-06-18", huge).await;
    assert_eq!(status, 413);
    let foreign = mcp
        .http
        .post(format!("{base}/mcp"))
        .bearer_auth(&admin)
        .header("origin", "https://evil.example")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 403);
    let health = common::get_json(&base, &admin, "/healthz").await;
    assert_eq!(health["status"], "ok");
}
