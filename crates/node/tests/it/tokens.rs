//! Tokens that can be scoped, can expire and can be revoked, over HTTP and the bus.

use crate::common;

use common::bus::{Client, PATIENCE};
use common::send;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn make_token(base: &str, token: &str, address: &str, body: Value) -> (u16, Value) {
    send(
        reqwest::Method::POST,
        base,
        token,
        &format!("/v1/principals/{address}/tokens"),
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_reaches_its_scopes_only() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (agent, primary) =
        common::create_principal(&base, &admin, "agent", "ai", &["member"]).await;
    let (status, made) = make_token(
        &base,
        &primary,
        &agent,
        json!({"name": "reader", "scopes": ["read", "llm"], "justification": "an agent that only reads and asks models"}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let scoped = made["token"].as_str().unwrap().to_string();
    assert!(scoped.starts_with("colony_"));
    assert_eq!(made["scopes"], json!(["read", "llm"]));

    let (status, _) = send(reqwest::Method::GET, &base, &scoped, "/v1/tasks", None).await;
    assert_eq!(status, 200);
    let (status, denied) = send(
        reqwest::Method::POST,
        &base,
        &scoped,
        "/v1/ledger/reserve",
        Some(json!({"resource": "io_ops", "amount": 1, "justification": "try"})),
    )
    .await;
    assert_eq!(status, 403, "{denied}");
    assert_eq!(denied["error"]["code"], "scope");
    assert_eq!(denied["error"]["scope"], "ledger");
    assert!(denied["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`ledger`"));

    // No token wider than the one making it; nobody else's tokens.
    let (status, wider) = make_token(
        &base,
        &scoped,
        &agent,
        json!({"name": "wider", "scopes": ["ledger"], "justification": "try"}),
    )
    .await;
    assert_eq!(status, 403, "{wider}");
    let (_, other) = common::create_principal(&base, &admin, "other", "ai", &["member"]).await;
    let (status, _) = send(
        reqwest::Method::GET,
        &base,
        &other,
        &format!("/v1/principals/{agent}/tokens"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, bad) = make_token(
        &base,
        &primary,
        &agent,
        json!({"name": "bad", "scopes": ["wings"], "justification": "try"}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no scope"));
    let (status, bad) = make_token(
        &base,
        &primary,
        &agent,
        json!({"name": "boss", "scopes": ["admin"], "justification": "try"}),
    )
    .await;
    assert_eq!(
        status, 400,
        "only an admin's token has the admin scope: {bad}"
    );

    // Listed without secrets.
    let (status, list) = send(
        reqwest::Method::GET,
        &base,
        &primary,
        &format!("/v1/principals/{agent}/tokens"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "the first token and the reader: {list}");
    assert_eq!(tokens[0]["name"], "primary");
    assert_eq!(tokens[0]["scopes"], json!(["*"]));
    assert_eq!(tokens[1]["state"], "live");
    assert!(!list.to_string().contains(&scoped));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_401_saying_which() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (agent, primary) =
        common::create_principal(&base, &admin, "agent", "ai", &["member"]).await;
    let (_, made) = make_token(
        &base,
        &primary,
        &agent,
        json!({"name": "brief", "scopes": ["read"], "ttl": 1, "justification": "lives a millisecond"}),
    )
    .await;
    let brief = made["token"].as_str().unwrap().to_string();
    let expires_at_ms = made["expires_at_ms"].as_u64().unwrap();
    // Wait for the clock to pass the expiry (a condition, not a guess).
    while colony_node::sequencer::now_ms() <= expires_at_ms {
        tokio::task::yield_now().await;
    }
    let (status, expired) = send(reqwest::Method::GET, &base, &brief, "/v1/tasks", None).await;
    assert_eq!(status, 401, "{expired}");
    assert_eq!(expired["error"]["code"], "token_expired");

    let (_, made) = make_token(
        &base,
        &admin,
        &agent,
        json!({"name": "by the admin", "scopes": ["read", "tasks"], "justification": "an admin makes one for the agent"}),
    )
    .await;
    let id = made["id"].as_u64().unwrap();
    let revocable = made["token"].as_str().unwrap().to_string();
    let (status, _) = send(reqwest::Method::GET, &base, &revocable, "/v1/tasks", None).await;
    assert_eq!(status, 200);
    let (status, revoked) = send(
        reqwest::Method::DELETE,
        &base,
        &primary,
        &format!("/v1/principals/{agent}/tokens/{id}?justification=leaked"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    let (status, refused) = send(reqwest::Method::GET, &base, &revocable, "/v1/tasks", None).await;
    assert_eq!(status, 401);
    assert_eq!(refused["error"]["code"], "token_revoked");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&agent));
    // Recorded with its justification.
    let decision = common::bus::wait_for_decision(&base, &admin, "token.revoke", &agent).await;
    assert_eq!(decision["justification"], "leaked");
    // The first token still works.
    let (status, _) = send(reqwest::Method::GET, &base, &primary, "/v1/tasks", None).await;
    assert_eq!(status, 200);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_closes_its_bus_connections_and_bus_scopes_hold() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (agent, primary) =
        common::create_principal(&base, &admin, "agent", "ai", &["member"]).await;
    let (_, made) = make_token(
        &base,
        &primary,
        &agent,
        json!({"name": "inbox only", "scopes": [format!("bus:agents.{agent}.>")], "justification": "talks on its own subjects"}),
    )
    .await;
    let id = made["id"].as_u64().unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    let mut client = Client::connect(&node, &token).await;
    let own = client
        .publish(&format!("agents.{agent}.notes"), json!("mine"))
        .await;
    assert_eq!(own["op"], "ok", "{own}");
    let elsewhere = client.publish("work.news", json!("not mine")).await;
    assert_eq!(elsewhere["op"], "err", "{elsewhere}");
    assert!(elsewhere["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bus scope"));
    // Without the bus scope, no bus at all.
    let (_, reader) = make_token(
        &base,
        &primary,
        &agent,
        json!({"name": "reader", "scopes": ["read"], "justification": "no bus"}),
    )
    .await;
    let (status, refused) = send(
        reqwest::Method::GET,
        &base,
        reader["token"].as_str().unwrap(),
        "/v1/bus",
        None,
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["scope"], "bus");

    let (status, revoked) = send(
        reqwest::Method::DELETE,
        &base,
        &admin,
        &format!("/v1/principals/{agent}/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["closed_connections"], 1);
    let closed = loop {
        let message = tokio::time::timeout(PATIENCE, client.ws.next())
            .await
            .expect("the connection closes in time");
        match message {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = closed.expect("a close code");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("revoked"));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_scoped_token_acts_on_its_task_only() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (worker, primary) =
        common::create_principal(&base, &admin, "worker", "ai", &["member"]).await;
    for title in ["one", "two"] {
        let posted = common::post_json(
            &base,
            &admin,
            "/v1/tasks",
            &json!({"title": title, "justification": "work"}),
        )
        .await;
        assert!(posted["address"].is_string(), "{posted}");
    }
    let claimed = common::post_json(&base, &primary, "/v1/tasks/claim", &json!({})).await;
    let address = claimed["task"]["address"].as_str().unwrap().to_string();
    let lease = claimed["lease"]["token"].as_u64().unwrap();
    let (_, made) = make_token(
        &base,
        &primary,
        &worker,
        json!({"name": format!("task {address}"), "scopes": [format!("task:{address}")], "ttl": "1h", "justification": "the command running the task"}),
    )
    .await;
    let scoped = made["token"].as_str().unwrap().to_string();
    let (status, _) = send(
        reqwest::Method::GET,
        &base,
        &scoped,
        &format!("/v1/tasks/{address}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, refused) = send(reqwest::Method::GET, &base, &scoped, "/v1/tasks", None).await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = send(
        reqwest::Method::POST,
        &base,
        &scoped,
        "/v1/tasks/claim",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    let (status, done) = send(
        reqwest::Method::POST,
        &base,
        &scoped,
        &format!("/v1/tasks/{address}/complete"),
        Some(json!({"lease_token": lease, "result": "done"})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_spawns_a_child_no_wider_than_itself() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (agent, primary) =
        common::create_principal(&base, &admin, "agent", "ai", &["member"]).await;
    let (_, made) = make_token(
        &base,
        &primary,
        &agent,
        json!({"name": "spawner", "scopes": ["spawn", "read", "llm"], "justification": "makes helpers"}),
    )
    .await;
    let spawner = made["token"].as_str().unwrap().to_string();
    let (status, child) = send(
        reqwest::Method::POST,
        &base,
        &spawner,
        "/v1/principals",
        Some(
            json!({"name": "helper", "kind": "ai", "justification": "a helper for the summaries"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{child}");
    let address = child["address"].as_str().unwrap().to_string();
    let (_, view) = send(
        reqwest::Method::GET,
        &base,
        &admin,
        &format!("/v1/principals/{address}"),
        None,
    )
    .await;
    assert_eq!(view["parent"], agent.as_str());
    let (_, tokens) = send(
        reqwest::Method::GET,
        &base,
        &admin,
        &format!("/v1/principals/{address}/tokens"),
        None,
    )
    .await;
    assert_eq!(
        tokens["tokens"][0]["scopes"],
        json!(["spawn", "read", "llm"])
    );
    // The child's token is no wider: it cannot reach the ledger.
    let (status, _) = send(
        reqwest::Method::POST,
        &base,
        child["token"].as_str().unwrap(),
        "/v1/ledger/reserve",
        Some(json!({"resource": "io_ops", "amount": 1, "justification": "try"})),
    )
    .await;
    assert_eq!(status, 403);
    // Not a human, not under someone else.
    let (status, refused) = send(
        reqwest::Method::POST,
        &base,
        &spawner,
        "/v1/principals",
        Some(json!({"name": "person", "kind": "human", "justification": "try"})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = send(
        reqwest::Method::POST,
        &base,
        &spawner,
        "/v1/principals",
        Some(json!({"name": "adopted", "kind": "ai", "parent": "1.1", "justification": "try"})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    // A token without `spawn` spawns nothing.
    let (_, reader) = make_token(
        &base,
        &primary,
        &agent,
        json!({"name": "reader", "scopes": ["read"], "justification": "no spawning"}),
    )
    .await;
    let (status, refused) = send(
        reqwest::Method::POST,
        &base,
        reader["token"].as_str().unwrap(),
        "/v1/principals",
        Some(json!({"name": "x", "kind": "ai", "justification": "try"})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["scope"].as_str()),
        (403, Some("spawn"))
    );
    // Removing the agent removes its child.
    let (status, _) = send(
        reqwest::Method::POST,
        &base,
        &admin,
        &format!("/v1/principals/{agent}/remove"),
        Some(json!({"justification": "done"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, view) = send(
        reqwest::Method::GET,
        &base,
        &admin,
        &format!("/v1/principals/{address}"),
        None,
    )
    .await;
    assert_eq!(view["state"], "removed");
    node.shutdown().await.unwrap();
}
