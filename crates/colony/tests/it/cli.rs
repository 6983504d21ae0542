//! The CLI as people use it, against a real node: governance and the Hypernet import.

use crate::common;
use common::{cli as colony, start};

fn json(url: &str, token: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, text) = colony(url, token, &all);
    assert!(ok, "{args:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {text}"))
}

fn token_of(created: &serde_json::Value) -> String {
    created["token"].as_str().unwrap().to_string()
}

#[test]
fn principals_limits_and_governance_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    let ai = json(
        &url,
        &admin,
        &[
            "principals",
            "add",
            "--name",
            "keystone",
            "--kind",
            "ai",
            "-j",
            "reviews code",
        ],
    );
    assert_eq!(ai["address"], "2.1");
    let ai_token = token_of(&ai);
    let (ok, table) = colony(&url, &admin, &["principals", "list"]);
    assert!(
        ok && table.contains("keystone") && table.contains("ADDRESS"),
        "{table}"
    );

    // Brake from the command line, as the AI.
    let (ok, text) = colony(
        &url,
        &ai_token,
        &[
            "limits",
            "brake",
            "ai_accounts",
            "--hard",
            "20",
            "-j",
            "slow down",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = colony(
        &url,
        &ai_token,
        &[
            "limits",
            "brake",
            "ai_accounts",
            "--hard",
            "unlimited",
            "-j",
            "oops",
        ],
    );
    assert!(!ok && text.contains("a brake only lowers"), "{text}");
    let (ok, limits) = colony(&url, &admin, &["limits"]);
    assert!(
        ok && limits
            .lines()
            .any(|l| l.starts_with("ai_accounts") && l.contains(" 20 ")),
        "{limits}"
    );

    // Propose, vote, list.
    let proposal = json(
        &url,
        &admin,
        &[
            "limits",
            "propose",
            "ai_accounts",
            "--hard",
            "30",
            "-j",
            "room to grow",
        ],
    );
    let id = proposal["id"].to_string();
    assert_eq!(proposal["state"], "review");
    let voted = json(
        &url,
        &ai_token,
        &["limits", "vote", &id, "approve", "-j", "agreed"],
    );
    assert_eq!(voted["tally"]["ai"]["approve"], 1);
    let (ok, listed) = colony(&url, &admin, &["limits", "proposals", "--state", "review"]);
    assert!(
        ok && listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("review") && l.contains("1/0/0")),
        "{listed}"
    );
    let (ok, shown) = colony(&url, &admin, &["limits", "proposals", &id]);
    assert!(
        ok && shown.contains("room to grow") && shown.contains("vote: 2.1 (ai) approve: agreed"),
        "{shown}"
    );

    node.kill().unwrap();
    node.wait().unwrap();
}

#[test]
fn hypernet_settings_import_through_governance() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let files = tempfile::tempdir().unwrap();
    let swarm = files.path().join("swarm_config.json");
    std::fs::write(
        &swarm,
        r#"{"hard_max_sessions": 4, "soft_max_sessions": 2,
        "budget": {"daily_limit_usd": 5.00, "session_limit_usd": 2.00, "warn_at_percent": 0.80}}"#,
    )
    .unwrap();
    let limits = files.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"custom_limits": {"max_ai_accounts": {"soft": 20, "hard": 60}}}"#,
    )
    .unwrap();

    let (ok, text) = colony(
        &url,
        &admin,
        &[
            "import",
            "hypernet",
            "--swarm-config",
            swarm.to_str().unwrap(),
            "--limits",
            limits.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    // Lower than Colony's defaults: applied at once. Equal: unchanged. Higher: a vote.
    assert!(
        text.lines()
            .any(|l| l.starts_with("active_workers") && l.contains("applied at once")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("llm_spend_usd") && l.contains("not changed")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ai_accounts") && l.contains("in review")),
        "{text}"
    );

    let old = json(&url, &admin, &["limits"]);
    let workers = old["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "active_workers")
        .unwrap();
    assert_eq!(
        (workers["soft"].as_u64(), workers["hard"].as_u64()),
        (Some(2), Some(4))
    );
    assert!(workers["set_via"].as_str().unwrap().starts_with("proposal"));

    // The old swarm's routes answer in their old shapes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{url}{path}")).bearer_auth(&admin).send();
        let all: serde_json::Value = get("/limits").await.unwrap().json().await.unwrap();
        assert_eq!(all["limits"]["max_ai_accounts"]["hard"], 50);
        assert_eq!(all["limits"]["max_concurrent_workers"]["hard"], 4);
        let one: serde_json::Value = get("/limits/max_ai_accounts")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (one["name"].as_str(), one["soft"].as_u64()),
            (Some("max_ai_accounts"), Some(10))
        );
        let check: serde_json::Value = get("/limits/check/max_concurrent_workers?current=4")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (check["allowed"].as_bool(), check["status"].as_str()),
            (Some(false), Some("blocked"))
        );
        let check: serde_json::Value = get("/limits/check/max_concurrent_workers?current=2")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (check["allowed"].as_bool(), check["warning"].as_bool()),
            (Some(true), Some(true))
        );
        let missing = get("/limits/check/nothing").await.unwrap();
        assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    });
    node.kill().unwrap();
    node.wait().unwrap();
}

#[test]
fn tasks_from_the_command_line_the_old_board_and_the_old_routes() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let worker = token_of(&json(
        &url,
        &admin,
        &[
            "principals",
            "add",
            "--name",
            "loom",
            "--kind",
            "ai",
            "-j",
            "a worker",
        ],
    ));

    let posted = json(
        &url,
        &admin,
        &[
            "tasks",
            "post",
            "write the guide",
            "--capability",
            "writing",
            "--priority",
            "high",
            "-j",
            "docs are missing",
        ],
    );
    assert_eq!(posted["address"], "0.7.1.00001");
    let (ok, listed) = colony(&url, &admin, &["tasks", "list", "--status", "pending"]);
    assert!(
        ok && listed.contains("0.7.1.00001") && listed.contains("write the guide"),
        "{listed}"
    );

    // The old board: open tasks are posted, dependencies first.
    let files = tempfile::tempdir().unwrap();
    let board = files.path().join("TASK-BOARD.json");
    std::fs::write(&board, r#"{"tasks": [
        {"id": "task-002", "title": "review the guide", "status": "pending", "priority": "p2", "depends_on": ["task-001"]},
        {"id": "task-001", "title": "draft the guide", "status": "claimed", "priority": "p1", "claimed_by": "loom"},
        {"id": "task-000", "title": "set up", "status": "completed"}]}"#).unwrap();
    let (ok, text) = colony(
        &url,
        &admin,
        &["import", "hypernet", "--tasks", board.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("task-001") && text.contains("posted as 0.7.1.00002 (pending)"),
        "{text}"
    );
    assert!(
        text.contains("posted as 0.7.1.00003 (blocked)")
            && text.contains("skipped task-000: already completed"),
        "{text}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let post = |path: String, token: String, body: serde_json::Value| {
            let http = http.clone();
            async move {
                let response = http.post(path).bearer_auth(token).json(&body).send().await.unwrap();
                let status = response.status();
                (status, response.json::<serde_json::Value>().await.unwrap())
            }
        };
        // The old routes: post, claim a named task, start, progress, complete.
        let (status, created) = post(format!("{url}/tasks"), admin.clone(), serde_json::json!({"title": "old style", "priority": "low", "tags": ["ops"], "created_by": "1.1"})).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{created}");
        let address = created["address"].as_str().unwrap().to_string();
        assert_eq!((created["status"].as_str(), created["tags"][0].as_str()), (Some("pending"), Some("ops")));
        let (status, claimed) = post(format!("{url}/tasks/{address}/claim"), worker.clone(), serde_json::json!({"assignee": "2.1"})).await;
        assert_eq!((status, claimed["assigned_to"].as_str()), (reqwest::StatusCode::OK, Some("2.1")), "{claimed}");
        let (status, lost) = post(format!("{url}/tasks/{address}/claim"), admin.clone(), serde_json::json!({"assignee": "1.1"})).await;
        assert_eq!(status, reqwest::StatusCode::CONFLICT, "a lost claim answers 409: {lost}");
        assert!(lost["error"]["detail"].as_str().unwrap().contains("held by 2.1"));
        let (status, _) = post(format!("{url}/tasks/{address}/start"), worker.clone(), serde_json::json!({})).await;
        assert_eq!(status, reqwest::StatusCode::OK);
        let (_, progressed) = post(format!("{url}/tasks/{address}/progress"), worker.clone(), serde_json::json!({"progress": 0.5})).await;
        assert_eq!(progressed["progress"], 0.5);
        let (status, _) = post(format!("{url}/tasks/{address}/complete"), admin.clone(), serde_json::json!({"result": "not mine"})).await;
        assert_eq!(status, reqwest::StatusCode::CONFLICT);
        let mine: serde_json::Value = http.get(format!("{url}/tasks/mine/2.1")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        assert_eq!(mine["count"], 1);
        let (status, done) = post(format!("{url}/tasks/{address}/complete"), worker.clone(), serde_json::json!({"result": "done"})).await;
        assert_eq!((status, done["status"].as_str(), done["result"].as_str()), (reqwest::StatusCode::OK, Some("completed"), Some("done")));
        let listed: serde_json::Value = http.get(format!("{url}/tasks?tag=ops&status=completed")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["count"], 1);
    });

    let (ok, shown) = colony(&url, &admin, &["tasks", "show", "0.7.1.00004"]);
    assert!(
        ok && shown.contains("completed") && shown.contains("attempt 1 by 2.1: completed"),
        "{shown}"
    );
    let (ok, tree) = colony(&url, &admin, &["tasks", "tree", "0.7.1.00001"]);
    assert!(
        ok && tree.starts_with("0.7.1.00001  [pending]  write the guide"),
        "{tree}"
    );
    let (ok, dead) = colony(&url, &admin, &["tasks", "dead"]);
    assert!(ok && dead.contains("ADDRESS"), "{dead}");
    node.kill().unwrap();
    node.wait().unwrap();
}

#[test]
fn bus_streams_and_hypernet_messages_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    // The old swarm's messages: a channel directory and a channel file.
    let messages = tempfile::tempdir().unwrap();
    std::fs::create_dir(messages.path().join("design")).unwrap();
    std::fs::write(
        messages.path().join("design/001-question.md"),
        "---\nsender: 2.1\nmessage_id: m-1\nmessage_type: question\npriority: 300\n---\nHow do we split the parser?\n",
    )
    .unwrap();
    std::fs::write(
        messages.path().join("ops.md"),
        "**Sender:** 2.2\n**Message Type:** signal-of-life\n\nStill here.\n\n---\nsender: 2.3\nreply_to: m-1\n---\nBy token first.\n",
    )
    .unwrap();
    let dir = messages.path().to_str().unwrap();
    let (ok, text) = colony(&url, &admin, &["import", "hypernet", "--messages", dir]);
    assert!(ok, "{text}");
    assert!(
        text.contains("3 messages stored in stream hypernet-messages"),
        "{text}"
    );

    let (ok, text) = colony(
        &url,
        &admin,
        &[
            "bus",
            "sub",
            "hypernet.messages.>",
            "--stream",
            "hypernet-messages",
            "--from-seq",
            "1",
            "--count",
            "3",
            "--ack",
        ],
    );
    assert!(ok, "{text}");
    let frames: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 3, "{text}");
    assert_eq!(frames[0]["subject"], "hypernet.messages.design");
    assert_eq!(frames[0]["priority"], "high");
    assert_eq!(frames[0]["headers"]["message_type"], "question");
    assert_eq!(frames[0]["data"]["content"], "How do we split the parser?");
    assert_eq!(frames[2]["headers"]["reply_to_message"], "m-1");

    // A stream of one's own, then a publish stored in it.
    let (ok, text) = colony(
        &url,
        &admin,
        &[
            "bus",
            "stream-add",
            "notes",
            "--subjects",
            "notes.>",
            "--max-msgs",
            "100",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = colony(
        &url,
        &admin,
        &[
            "bus",
            "pub",
            "notes.today",
            r#"{"n":1}"#,
            "--priority",
            "high",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("stored in stream notes as 1"), "{text}");
    let (ok, text) = colony(&url, &admin, &["bus", "streams"]);
    assert!(
        ok && text.contains("hypernet-messages") && text.contains("notes"),
        "{text}"
    );
    // Publishing where one may not is refused with the reason.
    let (ok, text) = colony(&url, &admin, &["bus", "pub", "colony.events.fake", "1"]);
    assert!(!ok && text.contains("forbidden"), "{text}");
    node.kill().unwrap();
    node.wait().unwrap();
}

#[test]
fn tokens_are_made_listed_rotated_and_revoked_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let agent = json(
        &url,
        &admin,
        &[
            "principals",
            "add",
            "--name",
            "scout",
            "--kind",
            "ai",
            "--role",
            "member",
            "-j",
            "an agent",
        ],
    );
    let primary = token_of(&agent);
    let made = json(
        &url,
        &primary,
        &[
            "tokens",
            "create",
            "--name",
            "reader",
            "--scope",
            "read",
            "--scope",
            "llm",
            "--ttl",
            "1h",
            "-j",
            "reads and asks",
        ],
    );
    let reader = token_of(&made);
    let id = made["id"].as_u64().unwrap().to_string();
    assert!(made["expires_at"].is_string());
    // The scoped token reads, and is refused the ledger, naming the scope.
    let (ok, _) = colony(&url, &reader, &["tasks", "list"]);
    assert!(ok);
    let (ok, text) = colony(
        &url,
        &reader,
        &["ledger", "reserve", "io_ops", "1", "-j", "try"],
    );
    assert!(!ok);
    assert!(text.contains("scope") && text.contains("ledger"), "{text}");
    // Rotated: a new secret, the old one revoked.
    let (ok, text) = colony(
        &url,
        &primary,
        &["tokens", "rotate", &id, "-j", "weekly rotation"],
    );
    assert!(ok, "{text}");
    let (ok, text) = colony(&url, &reader, &["tasks", "list"]);
    assert!(!ok && text.contains("token_revoked"), "{text}");
    let list = json(&url, &primary, &["tokens", "list"]);
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3, "{list}");
    assert_eq!(tokens[1]["state"], "revoked");
    assert_eq!(tokens[2]["state"], "live");
    assert_eq!(tokens[2]["name"], "reader");
    let newest = tokens[2]["id"].as_u64().unwrap().to_string();
    let revoked = json(
        &url,
        &primary,
        &["tokens", "revoke", &newest, "-j", "no longer needed"],
    );
    assert_eq!(revoked["token"].as_u64().unwrap().to_string(), newest);
    let _ = node.kill();
    let _ = node.wait();
}

#[test]
fn grants_are_asked_for_and_decided_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let agent = json(
        &url,
        &admin,
        &[
            "principals",
            "add",
            "--name",
            "scout",
            "--kind",
            "ai",
            "-j",
            "an agent",
        ],
    );
    let token = token_of(&agent);
    let asked = json(
        &url,
        &token,
        &[
            "grants",
            "request",
            "--resource",
            "io_ops",
            "--amount",
            "100",
            "--ttl",
            "1h",
            "-j",
            "a busy hour",
        ],
    );
    assert_eq!(asked["state"], "pending");
    let id = asked["id"].as_u64().unwrap().to_string();
    let (ok, text) = colony(&url, &token, &["grants", "approve", &id, "-j", "mine"]);
    assert!(!ok && text.contains("own"), "{text}");
    let (ok, text) = colony(
        &url,
        &admin,
        &["grants", "approve", &id, "-j", "fine for an hour"],
    );
    assert!(ok && text.contains("active"), "{text}");
    let (ok, text) = colony(&url, &admin, &["grants", "list"]);
    assert!(ok && text.contains("100 more io_ops"), "{text}");
    let _ = node.kill();
    let _ = node.wait();
}

#[test]
fn a_report_sums_up_the_day_in_markdown_and_json() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    json(
        &url,
        &admin,
        &[
            "principals",
            "add",
            "--name",
            "scout",
            "--kind",
            "ai",
            "-j",
            "an agent",
        ],
    );
    let (ok, text) = colony(&url, &admin, &["report", "--since", "1h"]);
    assert!(ok, "{text}");
    assert!(text.starts_with("# Colony: what happened"), "{text}");
    assert!(text.contains("| principals created | 1 |"), "{text}");
    let summary = json(&url, &admin, &["report"]);
    assert_eq!(summary["principals_created"]["count"], 1);
    let _ = node.kill();
    let _ = node.wait();
}
