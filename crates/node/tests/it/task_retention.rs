//! Finished task trees leave the live state by `retention.toml` and are read back from
//! the task archive, over HTTP against a real node, across a restart that rebuilds
//! the archive from the log.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common;

const KEEP_TWO: &str = "[tasks]\nkeep_finished = 2\nkeep_finished_for = \"7d\"\n";

async fn call(base: &str, token: &str, method: Method, path: &str, body: Value) -> (u16, Value) {
    let body = (method != Method::GET).then_some(body);
    common::send(method, base, token, path, body).await
}

/// Claims whatever is claimable and completes it; its address.
async fn claim_and_complete(base: &str, worker: &str, result: Value) -> String {
    let (status, claimed) = call(
        base,
        worker,
        Method::POST,
        "/v1/tasks/claim",
        json!({"capabilities": []}),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    let address = claimed["task"]["address"].as_str().unwrap().to_string();
    let token = claimed["lease"]["token"].as_u64().unwrap();
    let (status, done) = call(
        base,
        worker,
        Method::POST,
        &format!("/v1/tasks/{address}/complete"),
        json!({"lease_token": token, "result": result}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_trees_leave_the_board_and_read_back_from_the_archive_after_a_rebuild() {
    let config = common::genesis_dir(&[("retention.toml", KEEP_TWO)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (status, created) = call(
        &base,
        &admin,
        Method::POST,
        "/v1/principals",
        json!({"name": "loom", "kind": "ai", "justification": "a worker"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let worker = created["token"].as_str().unwrap().to_string();

    // A tree: a root decomposed in two subtasks, all three completed.
    let post =
        |title: &str| json!({"title": title, "description": "d", "justification": "work to do"});
    let (status, root) = call(&base, &admin, Method::POST, "/v1/tasks", post("plan")).await;
    assert_eq!(status, 201, "{root}");
    let root = root["address"].as_str().unwrap().to_string();
    let (_, claimed) = call(
        &base,
        &worker,
        Method::POST,
        "/v1/tasks/claim",
        json!({"capabilities": []}),
    )
    .await;
    let token = claimed["lease"]["token"].as_u64().unwrap();
    let (status, split) = call(
        &base,
        &worker,
        Method::POST,
        &format!("/v1/tasks/{root}/decompose"),
        json!({"lease_token": token, "justification": "two parts",
               "subtasks": [{"title": "part one"}, {"title": "part two"}]}),
    )
    .await;
    assert_eq!(status, 200, "{split}");
    claim_and_complete(&base, &worker, json!({"part": 1})).await;
    claim_and_complete(&base, &worker, json!({"part": 2})).await;
    // Two more single tasks: five finished tasks, two kept. The tree (three, the
    // oldest) leaves, whole, as the first single one finishes.
    for title in ["single one", "single two"] {
        let (status, _) = call(&base, &admin, Method::POST, "/v1/tasks", post(title)).await;
        assert_eq!(status, 201);
    }
    let first_single = claim_and_complete(&base, &worker, json!("one")).await;
    let second_single = claim_and_complete(&base, &worker, json!("two")).await;
    assert_eq!(second_single, "0.7.1.00003");

    let (_, live) = call(
        &base,
        &admin,
        Method::GET,
        "/v1/tasks?status=completed",
        json!(null),
    )
    .await;
    let live: Vec<&str> = live["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        live,
        vec![first_single.as_str(), second_single.as_str()],
        "the list walks live tasks only"
    );
    let (_, dashboard) = call(&base, &admin, Method::GET, "/v1/dashboard", json!(null)).await;
    assert_eq!(dashboard["tasks"]["completed"], 2, "{}", dashboard["tasks"]);
    assert_eq!(dashboard["tasks"]["archived"], 3);
    let metrics = common::metrics(&base, &admin).await;
    assert_eq!(common::figure(&metrics, "colony_tasks_archived_total"), 3);
    assert!(
        metrics.contains("colony_tasks{status=\"completed\"} 2"),
        "{metrics}"
    );

    let check_archived = |base: String, admin: String, root: String| async move {
        let (status, task) = call(
            &base,
            &admin,
            Method::GET,
            &format!("/v1/tasks/{root}"),
            json!(null),
        )
        .await;
        assert_eq!(status, 200, "{task}");
        assert_eq!(task["archived"], true);
        assert_eq!(task["status"], "completed");
        assert_eq!(task["title"], "plan");
        let children: Vec<&str> = task["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["status"].as_str().unwrap())
            .collect();
        assert_eq!(children, vec!["completed", "completed"], "{task}");
        assert!(task["history"].as_array().unwrap().len() >= 3);
        let (status, part) = call(
            &base,
            &admin,
            Method::GET,
            &format!("/v1/tasks/{root}.2"),
            json!(null),
        )
        .await;
        assert_eq!(status, 200, "{part}");
        assert_eq!(part["result"], json!({"part": 2}));
        assert_eq!(part["archived"], true);
    };
    check_archived(base.clone(), admin.clone(), root.clone()).await;
    let (status, live_one) = call(
        &base,
        &admin,
        Method::GET,
        &format!("/v1/tasks/{second_single}"),
        json!(null),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        live_one.get("archived").is_none(),
        "a live task is not marked: {live_one}"
    );
    let (status, missing) = call(
        &base,
        &admin,
        Method::GET,
        "/v1/tasks/0.7.1.99999",
        json!(null),
    )
    .await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // The retirement is a decision in the log, with its cause.
    let (_, records) = call(
        &base,
        &admin,
        Method::GET,
        &format!("/v1/audit?address={root}"),
        json!(null),
    )
    .await;
    let retire = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "task.retire")
        .unwrap_or_else(|| panic!("no task.retire for {root}: {records}"));
    let detail = retire["detail"].to_string();
    assert!(
        detail.contains("\"tasks\":3") && detail.contains("\"cause\":\"count\""),
        "{detail}"
    );

    // A new task may not depend on a retired one.
    let (status, refused) = call(
        &base,
        &admin,
        Method::POST,
        "/v1/tasks",
        json!({"title": "late", "depends_on": [root], "justification": "after the plan"}),
    )
    .await;
    assert_eq!(status, 404, "{refused}");

    // The archive is written from the log: without it and without snapshots, a
    // restart replays every command and writes it again.
    node.shutdown().await.unwrap();
    std::fs::remove_dir_all(data.path().join("archive")).unwrap();
    std::fs::remove_dir_all(data.path().join("snapshots")).unwrap();
    let node = colony_node::Node::start(common::node_config(data.path(), config.path()))
        .await
        .unwrap();
    let base = format!("http://{}", node.local_addr());
    check_archived(base.clone(), admin.clone(), root).await;
    let (_, live) = call(
        &base,
        &admin,
        Method::GET,
        "/v1/tasks?status=completed",
        json!(null),
    )
    .await;
    assert_eq!(live["tasks"].as_array().unwrap().len(), 2);
    node.shutdown().await.unwrap();
}

/// Polls `path` until `done` holds of its answer (the node's own clock decides when).
async fn until(base: &str, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, answer) = call(base, token, Method::GET, path, json!(null)).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never came to it: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_rule_changes_by_a_vote_and_the_node_retires_by_the_new_one() {
    let governance = common::governance_reviewed_in("2s");
    let config = common::genesis_dir(&[("governance.toml", &governance)]);
    let data = tempfile::tempdir().unwrap();
    let (_node, base, admin) = common::start(data.path(), config.path()).await;
    let mut tokens = Vec::new();
    for (name, kind) in [("matt", "human"), ("loom", "ai")] {
        let (status, created) = call(
            &base,
            &admin,
            Method::POST,
            "/v1/principals",
            json!({"name": name, "kind": kind, "justification": "retention vote"}),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        tokens.push(created["token"].as_str().unwrap().to_string());
    }
    let (human, ai) = (&tokens[0], &tokens[1]);
    let mut finished = Vec::new();
    for title in ["first", "second"] {
        let body = json!({"title": title, "description": "d", "justification": "work"});
        let (status, _) = call(&base, &admin, Method::POST, "/v1/tasks", body).await;
        assert_eq!(status, 201);
        finished.push(claim_and_complete(&base, ai, json!(title)).await);
    }

    // What a proposal may not ask for.
    for (body, code) in [
        (json!({}), "invalid_body"),
        (json!({"keep_finished_for": "soon"}), "invalid_body"),
        (json!({"keep_finished": 0}), "invalid"),
        (
            json!({"keep_finished": 10000, "keep_finished_for": "7d"}),
            "invalid",
        ),
    ] {
        let (status, refused) = call(
            &base,
            human,
            Method::POST,
            "/v1/proposals",
            json!({"retention": body, "justification": "x"}),
        )
        .await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {refused}"
        );
    }

    // Keep one finished task instead of ten thousand: a human and an AI approve.
    let (status, opened) = call(
        &base,
        human,
        Method::POST,
        "/v1/proposals",
        json!({"retention": {"keep_finished": 1}, "justification": "memory is short here"}),
    )
    .await;
    assert_eq!(status, 201, "{opened}");
    assert_eq!(
        (opened["state"].as_str(), opened["change"].as_str()),
        (Some("review"), Some("retention"))
    );
    let id = opened["id"].as_u64().unwrap();
    for token in [human, ai] {
        let (status, voted) = call(
            &base,
            token,
            Method::POST,
            &format!("/v1/proposals/{id}/votes"),
            json!({"vote": "approve", "justification": "agreed"}),
        )
        .await;
        assert_eq!(status, 201, "{voted}");
    }
    let decided = until(&base, &admin, &format!("/v1/proposals/{id}"), |p| {
        p["state"] != "review"
    })
    .await;
    assert_eq!(decided["state"], "applied", "{decided}");

    // The node retires by the new rule: the older of the two leaves for the archive.
    until(&base, &admin, "/v1/dashboard", |d| {
        d["tasks"]["archived"] == 1
    })
    .await;
    let (_, oldest) = call(
        &base,
        &admin,
        Method::GET,
        &format!("/v1/tasks/{}", finished[0]),
        json!(null),
    )
    .await;
    assert_eq!(oldest["archived"], true, "{oldest}");
    let (_, newest) = call(
        &base,
        &admin,
        Method::GET,
        &format!("/v1/tasks/{}", finished[1]),
        json!(null),
    )
    .await;
    assert!(newest.get("archived").is_none(), "{newest}");

    // The change is a decision in the log, with the rule it replaced.
    let (_, audit) = call(
        &base,
        &admin,
        Method::GET,
        "/v1/audit?limit=1000",
        json!(null),
    )
    .await;
    let changed = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "governance.decide")
        .expect("the decision is in the audit log");
    let effect = changed.to_string();
    assert!(
        effect.contains("retention_changed") && effect.contains("\"keep_finished\":1"),
        "{effect}"
    );
}
