//! The task board over HTTP against a real node.

use std::sync::Arc;

use colony_node::Node;

use crate::common;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Board {
    node: Node,
    base: String,
    admin: String,
    http: reqwest::Client,
    _data: tempfile::TempDir,
    _config: tempfile::TempDir,
}

impl Board {
    async fn start() -> Board {
        Board::with_files(&[]).await
    }

    async fn with_tasks_toml(tasks: Option<&str>) -> Board {
        match tasks {
            Some(tasks) => Board::with_files(&[("tasks.toml", tasks)]).await,
            None => Board::start().await,
        }
    }

    /// The shipped genesis, with some files replaced.
    async fn with_files(replaced: &[(&str, &str)]) -> Board {
        let config = common::genesis_dir(replaced);
        let data = tempfile::tempdir().unwrap();
        let (node, base, admin) = common::start(data.path(), config.path()).await;
        Board {
            base,
            node,
            admin,
            http: reqwest::Client::new(),
            _data: data,
            _config: config,
        }
    }

    /// Stops the node cleanly and starts it again on the same data.
    async fn restart(self) -> Board {
        let Board {
            node,
            admin,
            http,
            _data,
            _config,
            ..
        } = self;
        node.shutdown().await.unwrap();
        let node = Node::start(common::node_config(_data.path(), _config.path()))
            .await
            .unwrap();
        Board {
            base: format!("http://{}", node.local_addr()),
            node,
            admin,
            http,
            _data,
            _config,
        }
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn worker(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/principals",
                &self.admin,
                json!({"name": name, "kind": "ai", "justification": "a worker"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        body["token"].as_str().unwrap().to_string()
    }

    async fn task(&self, title: &str, extra: Value) -> String {
        let mut body = json!({"title": title, "justification": "work to do"});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, created) = self.post("/v1/tasks", &self.admin, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["address"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn claim_work_checkpoint_complete_and_read_the_history() {
    let board = Board::start().await;
    let worker = board.worker("loom").await;
    let address = board
        .task(
            "summarize the issues",
            json!({"capabilities": ["writing"], "priority": "high", "budget_usd": "0.50"}),
        )
        .await;
    assert_eq!(address, "0.7.1.00001");
    let (status, _) = board
        .post(
            "/v1/tasks/claim",
            &worker,
            json!({"capabilities": ["code"]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "nothing fits");
    let (status, claimed) = board
        .post(
            "/v1/tasks/claim",
            &worker,
            json!({"capabilities": ["writing"], "lease_ms": 60000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let token = claimed["lease"]["token"].as_u64().unwrap();
    assert_eq!(claimed["task"]["status"], "claimed");
    let (status, body) = board
        .post(
            &format!("/v1/tasks/{address}/checkpoint"),
            &worker,
            json!({"lease_token": token, "checkpoint": {"done": 3}}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("in_progress")),
        "{body}"
    );
    let (status, body) = board
        .post(
            &format!("/v1/tasks/{address}/spend"),
            &worker,
            json!({"lease_token": token, "amount_usd": 0.2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["budget"]["remaining_micro_usd"], 300_000);
    let (status, body) = board
        .post(
            &format!("/v1/tasks/{address}/complete"),
            &worker,
            json!({"lease_token": token, "result": {"summary": "all good"}}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("completed"))
    );
    let (status, body) = board
        .post(
            &format!("/v1/tasks/{address}/complete"),
            &worker,
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("stale_lease")),
        "completing twice"
    );
    let task = board.get(&format!("/v1/tasks/{address}")).await;
    assert_eq!(task["result"]["summary"], "all good");
    assert_eq!(task["checkpoint"]["done"], 3);
    let history: Vec<&str> = task["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        vec!["blocked", "pending", "claimed", "in_progress", "completed"]
    );
    assert_eq!(task["attempts"][0]["outcome"], "completed");
    let listed = board
        .get("/v1/tasks?status=completed&capability=writing")
        .await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1);
    board.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_task() {
    let board = Arc::new(Board::start().await);
    let mut workers = Vec::new();
    for index in 0..6 {
        workers.push(board.worker(&format!("w{index}")).await);
    }
    for index in 0..10 {
        board.task(&format!("job {index}"), json!({})).await;
    }
    let mut claims = Vec::new();
    for round in 0..40 {
        let board = Arc::clone(&board);
        let token = workers[round % workers.len()].clone();
        claims.push(tokio::spawn(async move {
            board.post("/v1/tasks/claim", &token, json!({})).await
        }));
    }
    let mut won = Vec::new();
    let mut empty = 0;
    for claim in claims {
        let (status, body) = claim.await.unwrap();
        match status {
            StatusCode::OK => won.push(body["task"]["address"].as_str().unwrap().to_string()),
            StatusCode::NO_CONTENT => empty += 1,
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(body["error"]["limit"], "tasks_per_worker"),
            other => panic!("{other}: {body}"),
        }
    }
    let distinct: std::collections::BTreeSet<&String> = won.iter().collect();
    assert_eq!(won.len(), 10, "every task claimed once");
    assert_eq!(distinct.len(), 10, "no task claimed twice");
    assert!(empty > 0);
}

#[tokio::test]
async fn decompose_fail_dead_letter_and_requeue_over_http() {
    let board = Board::start().await;
    let worker = board.worker("keystone").await;
    let root = board
        .task("ship the release", json!({"max_attempts": 1}))
        .await;
    let (_, claimed) = board.post("/v1/tasks/claim", &worker, json!({})).await;
    let token = claimed["lease"]["token"].as_u64().unwrap();
    let (status, body) = board
        .post(&format!("/v1/tasks/{root}/decompose"), &worker, json!({"lease_token": token, "justification": "two steps",
            "subtasks": [{"title": "build"}, {"title": "publish", "depends_on": ["1"], "max_attempts": 1}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["children"].as_array().unwrap().len(), 2);
    let (status, body) = board
        .post(
            &format!("/v1/tasks/{root}/decompose"),
            &worker,
            json!({"lease_token": token, "justification": "again", "subtasks": [{"title": "x"}]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("stale_lease")),
        "the parent is no longer held"
    );
    let (_, claimed) = board.post("/v1/tasks/claim", &worker, json!({})).await;
    let build = claimed["task"]["address"].as_str().unwrap().to_string();
    assert_eq!(build, format!("{root}.1"));
    let token = claimed["lease"]["token"].as_u64().unwrap();
    let (status, body) = board
        .post(
            &format!("/v1/tasks/{build}/fail"),
            &worker,
            json!({"lease_token": token, "reason": "compiler crashed"}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("failed")),
        "{body}"
    );
    let dead = board.get("/v1/tasks/dead").await;
    assert!(
        dead["tasks"].as_array().unwrap().is_empty(),
        "three attempts by default; one failed so far"
    );

    let doomed = board
        .task(
            "doomed",
            json!({"max_attempts": 1, "capabilities": ["nothing-else"]}),
        )
        .await;
    let (_, claimed) = board
        .post(
            "/v1/tasks/claim",
            &worker,
            json!({"capabilities": ["nothing-else"]}),
        )
        .await;
    assert_eq!(claimed["task"]["address"], doomed.as_str());
    let token = claimed["lease"]["token"].as_u64().unwrap();
    board
        .post(
            &format!("/v1/tasks/{doomed}/fail"),
            &worker,
            json!({"lease_token": token, "reason": "impossible"}),
        )
        .await;
    let dead = board.get("/v1/tasks/dead").await;
    assert_eq!(dead["tasks"][0]["address"], doomed.as_str());
    assert!(dead["tasks"][0]["dead_reasons"][0]
        .as_str()
        .unwrap()
        .contains("impossible"));
    // The Hypernet list calls a dead task `failed`, and finds it by either name
    // (from the board's status index): `failed` holds the failed subtask waiting for
    // its retry and the dead one, in address order.
    for (status, expected) in [
        ("failed", vec!["0.7.1.00001.1", doomed.as_str()]),
        ("dead", vec![doomed.as_str()]),
    ] {
        let old = board.get(&format!("/tasks?status={status}")).await;
        let listed: Vec<&str> = old["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["address"].as_str().unwrap())
            .collect();
        assert_eq!(listed, expected, "{status}: {old}");
        let dead = old["tasks"].as_array().unwrap().last().unwrap();
        assert_eq!(
            (&dead["status"], &dead["colony_status"]),
            (&json!("failed"), &json!("dead"))
        );
    }
    let none = board.get("/tasks?status=no-such-status").await;
    assert_eq!(none["count"], 0, "{none}");
    let (status, body) = board
        .post(
            &format!("/v1/tasks/{doomed}/requeue"),
            &worker,
            json!({"justification": "try again"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, body) = board
        .post(
            &format!("/v1/tasks/{doomed}/requeue"),
            &board.admin,
            json!({"justification": "the API is back"}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
}

#[tokio::test]
async fn bad_task_requests_get_clear_errors() {
    let board = Board::start().await;
    let worker = board.worker("loom").await;
    let cases = [
        (
            json!({"title": "x", "depends_on": ["0.7.1.99999"], "justification": "j"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"title": "x", "depends_on": ["2.1"], "justification": "j"}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"title": "x", "budget_usd": "1000.00", "justification": "j"}),
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_resource",
        ),
        (
            json!({"title": "x", "budget_usd": -1, "justification": "j"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"title": "x", "priority": "urgent", "justification": "j"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"title": "x"}),
            StatusCode::BAD_REQUEST,
            "justification_required",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = board.post("/v1/tasks", &worker, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let held = board.task("held", json!({})).await;
    let (_, claimed) = board.post("/v1/tasks/claim", &worker, json!({})).await;
    let token = claimed["lease"]["token"].as_u64().unwrap();
    let (status, answer) = board
        .post(&format!("/v1/tasks/{held}/decompose"), &worker, json!({"lease_token": token, "justification": "j",
            "subtasks": [{"title": "a", "depends_on": ["2"]}, {"title": "b", "depends_on": ["1"]}]}))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid")),
        "a cycle"
    );
    let (status, answer) = board
        .post(
            &format!("/v1/tasks/{held}/dance"),
            &worker,
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, answer) = board
        .post(
            "/v1/tasks/0.7.1.00042/heartbeat",
            &worker,
            json!({"lease_token": 1}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // Not a task address: refused where it enters, saying what one is.
    for path in ["/v1/tasks/2.1/heartbeat", "/v1/tasks/0.7.1.x/cancel"] {
        let (status, answer) = board.post(path, &worker, json!({"lease_token": 1})).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_path")),
            "{path}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("task address"), "{message}");
    }
    let task = board.get(&format!("/v1/tasks/{held}")).await;
    assert_eq!(
        (
            task["status"].as_str(),
            task["children"].as_array().map(Vec::len)
        ),
        (Some("claimed"), Some(0))
    );
}

#[tokio::test]
async fn worker_sessions_over_http() {
    let board = Board::start().await;
    let worker = board.worker("loom").await;
    let (status, session) = board
        .post(
            "/v1/workers",
            &worker,
            json!({"capabilities": ["writing"], "model": "gpt-4o-mini"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["worker"].as_u64().unwrap();
    assert!(session["heartbeat_ms"].as_u64().unwrap() < session["timeout_ms"].as_u64().unwrap());
    let address = board
        .task("a guide", json!({"capabilities": ["writing"]}))
        .await;
    // The session's capabilities are used when the claim names none.
    let (status, claimed) = board
        .post("/v1/tasks/claim", &worker, json!({"worker": id}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(claimed["task"]["address"], address.as_str());
    let (status, beat) = board
        .post(&format!("/v1/workers/{id}/heartbeat"), &worker, json!({}))
        .await;
    assert_eq!(
        (status, beat["state"].as_str()),
        (StatusCode::OK, Some("active"))
    );
    let listed = board.get("/v1/workers").await;
    assert_eq!(listed["workers"][0]["tasks"][0], address.as_str());
    assert_eq!(listed["workers"][0]["health"], "healthy");
    let response = board
        .http
        .delete(format!("{}/v1/workers/{id}", board.base))
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let task = board.get(&format!("/v1/tasks/{address}")).await;
    assert_eq!(task["status"], "pending", "a leave gives the task back");
    let (status, gone) = board
        .post(&format!("/v1/workers/{id}/heartbeat"), &worker, json!({}))
        .await;
    assert_eq!(
        (status, gone["error"]["code"].as_str()),
        (StatusCode::GONE, Some("worker_gone"))
    );
}

/// On the node's own clock: a worker that stops heartbeating is declared lost after
/// its timeout (300 ms here), its task goes to another worker with its checkpoint, and
/// the stopped worker cannot complete it when it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_loses_its_task_to_another_on_the_nodes_clock() {
    let board = Board::with_tasks_toml(Some(
        "[workers]\nheartbeat = \"100ms\"\ntimeout = \"300ms\"\n",
    ))
    .await;
    let (slow, fast) = (board.worker("sleepy").await, board.worker("steady").await);
    let (_, session) = board
        .post("/v1/workers", &slow, json!({"capabilities": ["code"]}))
        .await;
    let slow_session = session["worker"].as_u64().unwrap();
    let address = board
        .task("port the parser", json!({"capabilities": ["code"]}))
        .await;
    let (_, claimed) = board
        .post("/v1/tasks/claim", &slow, json!({"worker": slow_session}))
        .await;
    let token = claimed["lease"]["token"].as_u64().unwrap();
    board
        .post(
            &format!("/v1/tasks/{address}/checkpoint"),
            &slow,
            json!({"lease_token": token, "checkpoint": {"files": 2}}),
        )
        .await;

    // No more heartbeats from the slow worker: wait for the node to declare it lost.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let workers = board.get("/v1/workers").await;
        if workers["workers"][0]["state"] == "lost" {
            assert!(workers["workers"][0]["evidence"]
                .as_str()
                .unwrap()
                .contains("no heartbeat since"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never declared lost: {workers}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, session) = board
        .post("/v1/workers", &fast, json!({"capabilities": ["code"]}))
        .await;
    let fast_session = session["worker"].as_u64().unwrap();
    let (status, claimed) = board
        .post("/v1/tasks/claim", &fast, json!({"worker": fast_session}))
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(
        claimed["task"]["checkpoint"]["files"], 2,
        "resumes from the checkpoint"
    );
    let new_token = claimed["lease"]["token"].as_u64().unwrap();
    let (status, late) = board
        .post(
            &format!("/v1/tasks/{address}/complete"),
            &slow,
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(
        (status, late["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("stale_lease"))
    );
    let (status, _) = board
        .post(
            &format!("/v1/workers/{slow_session}/heartbeat"),
            &slow,
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::GONE,
        "the resumed worker must register again"
    );
    let (status, done) = board
        .post(
            &format!("/v1/tasks/{address}/complete"),
            &fast,
            json!({"lease_token": new_token}),
        )
        .await;
    assert_eq!(
        (status, done["status"].as_str()),
        (StatusCode::OK, Some("completed"))
    );
}

#[tokio::test]
async fn worker_registrations_queue_past_soft_and_start_when_a_place_frees() {
    let limits = "[limits.active_workers]\nsoft = 1\nhard = 2\non_soft = \"queue\"\n";
    let board = Board::with_files(&[("limits.toml", limits)]).await;
    let worker = board.worker("loom").await;
    let (status, first) = board.post("/v1/workers", &worker, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, queued) = board
        .post("/v1/workers", &worker, json!({"capabilities": ["docs"]}))
        .await;
    assert_eq!(
        (status, queued["status"].as_str()),
        (StatusCode::ACCEPTED, Some("queued")),
        "{queued}"
    );
    let ticket = queued["worker"].as_u64().unwrap();
    let response = board
        .http
        .get(format!("{}/v1/workers/{ticket}", board.base))
        .bearer_auth(&board.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let first = first["worker"].as_u64().unwrap();
    board
        .http
        .delete(format!("{}/v1/workers/{first}", board.base))
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    let admitted = board.get(&format!("/v1/workers/{ticket}")).await;
    assert_eq!(
        (
            admitted["state"].as_str(),
            admitted["capabilities"][0].as_str()
        ),
        (Some("active"), Some("docs"))
    );
}

/// Sessions and leases live in the kernel: across a restart, a worker's session and
/// its claim go on, and no task is lost or done twice.
#[tokio::test]
async fn a_node_restart_loses_no_task_and_keeps_leases() {
    let board = Board::with_files(&[(
        "tasks.toml",
        "[workers]\nheartbeat = \"1s\"\ntimeout = \"20s\"\n",
    )])
    .await;
    let worker = board.worker("loom").await;
    let (_, session) = board.post("/v1/workers", &worker, json!({})).await;
    let session = session["worker"].as_u64().unwrap();
    for index in 0..3 {
        board.task(&format!("job {index}"), json!({})).await;
    }
    let (_, claimed) = board
        .post("/v1/tasks/claim", &worker, json!({"worker": session}))
        .await;
    let held = claimed["task"]["address"].as_str().unwrap().to_string();
    let token = claimed["lease"]["token"].as_u64().unwrap();
    board
        .post(
            &format!("/v1/tasks/{held}/checkpoint"),
            &worker,
            json!({"lease_token": token, "checkpoint": {"half": true}}),
        )
        .await;

    let board = board.restart().await;
    let (status, _) = board
        .post(
            &format!("/v1/workers/{session}/heartbeat"),
            &worker,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the session resumes");
    let (status, done) = board
        .post(
            &format!("/v1/tasks/{held}/complete"),
            &worker,
            json!({"lease_token": token, "result": "done"}),
        )
        .await;
    assert_eq!(
        (status, done["status"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{done}"
    );
    let mut finished = vec![held];
    loop {
        let (status, claimed) = board
            .post("/v1/tasks/claim", &worker, json!({"worker": session}))
            .await;
        if status == StatusCode::NO_CONTENT {
            break;
        }
        let address = claimed["task"]["address"].as_str().unwrap().to_string();
        assert!(!finished.contains(&address), "{address} handed out twice");
        let token = claimed["lease"]["token"].as_u64().unwrap();
        board
            .post(
                &format!("/v1/tasks/{address}/complete"),
                &worker,
                json!({"lease_token": token}),
            )
            .await;
        finished.push(address);
    }
    assert_eq!(finished.len(), 3, "every task done once");
    let completed = board.get("/v1/tasks?status=completed").await;
    assert_eq!(completed["tasks"].as_array().unwrap().len(), 3);
}

/// Pages of the board, each starting `after` the last address of the one before,
/// list every task once, in address order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_is_read_page_after_page() {
    let board = Board::start().await;
    let mut posted = Vec::new();
    for n in 0..7 {
        posted.push(board.task(&format!("task {n}"), json!({})).await);
    }
    posted.sort();
    let mut seen: Vec<String> = Vec::new();
    let mut path = "/v1/tasks?limit=3".to_string();
    loop {
        let page = board.get(&path).await;
        let addresses: Vec<String> = page["tasks"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|t| t["address"].as_str().unwrap().to_string())
            .collect();
        let Some(last) = addresses.last().cloned() else {
            break;
        };
        assert!(addresses.len() <= 3, "{page}");
        seen.extend(addresses);
        path = format!("/v1/tasks?limit=3&after={last}");
    }
    assert_eq!(seen, posted);
    board.node.shutdown().await.unwrap();
}
