//! The client against a real node: typed calls and their refusals, the worker
//! loop completing and failing tasks, and the example agent run as a program.

use std::path::Path;
use std::time::Duration;

use colony_client::api::tasks::TaskRequest;
use colony_client::{run_worker, Client, Outcome, Session, Stop, WorkerOptions};
use colony_node::{Node, NodeConfig};
use serde_json::json;

/// A node on the shipped genesis files and gateway (its offline scripted model).
async fn node() -> (Node, String, String, tempfile::TempDir, tempfile::TempDir) {
    node_with(|_| {}).await
}

/// [`node`] with its config directory changed by `change` before it starts.
async fn node_with(
    change: impl FnOnce(&Path),
) -> (Node, String, String, tempfile::TempDir, tempfile::TempDir) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    let config = tempfile::tempdir().unwrap();
    for file in [
        "limits.toml",
        "quotas.toml",
        "governance.toml",
        "tasks.toml",
        "providers.toml",
    ] {
        std::fs::copy(shipped.join(file), config.path().join(file)).unwrap();
    }
    change(config.path());
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        data_dir: data.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        config_dir: config.path().to_path_buf(),
        config_dir_required: true,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let url = format!("http://{}", node.local_addr());
    (node, url, admin, config, data)
}

fn task(title: &str, capabilities: &[&str]) -> TaskRequest {
    TaskRequest {
        title: title.into(),
        description: "from the client's test".into(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        max_attempts: Some(1),
        justification: Some("a test posts it".into()),
        ..TaskRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_completes_and_fails_tasks_and_refusals_keep_their_explanation() {
    let (_node, url, admin, _config, _data) = node().await;
    let client = Client::new(&url, &admin).unwrap();
    // A refusal carries the node's code and message.
    let refused = client.task("0.7.1.99999").await.unwrap_err();
    assert_eq!(refused.status(), Some(404), "{refused}");
    assert!(refused.is_gone());
    assert!(Client::new("localhost:7700", &admin).is_err());
    assert!(Client::new(&url, " ").is_err());
    let bad = Client::new(&url, "colony_not_a_token").unwrap();
    assert_eq!(bad.ledger().await.unwrap_err().status(), Some(401));

    let good = client.post_task(&task("say yes", &["test"])).await.unwrap();
    let bad_task = client.post_task(&task("say no", &["test"])).await.unwrap();
    let options = WorkerOptions {
        capabilities: vec!["test".into()],
        max_tasks: Some(2),
        idle_pause: Duration::from_millis(50),
        ..WorkerOptions::default()
    };
    let report = run_worker(&client, &options, &Stop::default(), |work| async move {
        work.client
            .checkpoint(&work.held, json!({"seen": work.task.title}))
            .await
            .unwrap();
        if work.task.title == "say yes" {
            Outcome::Complete(json!({"answer": "yes"}))
        } else {
            Outcome::Fail("this one says no".into())
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (report.completed, report.failed, report.lost),
        (1, 1, 0),
        "{report:?}"
    );
    let done = client.task(&good.address).await.unwrap();
    assert_eq!(done.status, "completed");
    assert_eq!(done.result, json!({"answer": "yes"}));
    let dead = client.task(&bad_task.address).await.unwrap();
    assert_eq!(dead.status, "dead", "one attempt only: {dead:?}");

    // The ledger and the bus, typed.
    let reserved = client
        .reserve(colony_kernel::Resource::IoOps, 5, "a test reserves")
        .await
        .unwrap();
    let committed = client.commit(reserved.reservation, 2).await.unwrap();
    assert_eq!((committed.charged, committed.refunded), (2, 3));
    let published = client
        .publish("work.client", json!({"hello": 1}), "a test publishes")
        .await
        .unwrap();
    assert_eq!(published.subject, "work.client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_agent_summarizes_tasks_through_the_gateway() {
    let (_node, url, admin, _config, _data) = node().await;
    let client = Client::new(&url, &admin).unwrap();
    let mut posted = Vec::new();
    for title in ["the first issue", "the second issue"] {
        let mut request = task(title, &["summarize"]);
        request.budget_usd = Some(colony_client::api::tasks::Usd::Text("0.50".into()));
        posted.push(client.post_task(&request).await.unwrap().address);
    }
    // The example, as built by `cargo test` beside this test.
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("agent");
    let output = tokio::process::Command::new(&examples)
        .args(["--max-tasks", "2"])
        .env("COLONY_URL", &url)
        .env("COLONY_TOKEN", &admin)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", examples.display()));
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("2 completed, 0 failed"), "{said}");
    for address in posted {
        let done = client.task(&address).await.unwrap();
        assert_eq!(done.status, "completed", "{done:?}");
        let summary = done.result["summary"].as_str().unwrap();
        assert!(summary.contains("[scripted]"), "{summary}");
        // The call was charged to the task's budget.
        let budget = done.budget.as_ref().unwrap();
        assert!(budget.spent_micro_usd > 0, "{budget:?}");
    }
}

/// `colony_claims_waiting` on the node, polled until it is `value`.
async fn until_waiting(url: &str, admin: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = reqwest::Client::new()
            .get(format!("{url}/metrics"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let now: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix("colony_claims_waiting "))
            .expect("the gauge")
            .parse()
            .unwrap();
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} claims waiting, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_waits_on_the_node_for_work_and_stops_at_once() {
    let (_node, url, admin, _config, _data) = node().await;
    let client = Client::new(&url, &admin).unwrap();
    // An hour between polls: only a claim that waits on the node sees the task soon.
    let options = WorkerOptions {
        capabilities: vec!["later".into()],
        idle_pause: Duration::from_secs(3600),
        ..WorkerOptions::default()
    };
    let stop = Stop::default();
    let worker = {
        let (client, options, stop) = (client.clone(), options.clone(), stop.clone());
        tokio::spawn(async move {
            run_worker(&client, &options, &stop.clone(), |work| {
                let stop = stop.clone();
                async move {
                    stop.stop();
                    Outcome::Complete(json!({"took": work.task.title}))
                }
            })
            .await
        })
    };
    until_waiting(&url, &admin, 1).await;
    let posted = client
        .post_task(&task("when it comes", &["later"]))
        .await
        .unwrap();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(
        client.task(&posted.address).await.unwrap().status,
        "completed"
    );

    // Stopped while its claim waits: it stops now, and the node lets the claim go.
    let stop = Stop::default();
    let worker = {
        let (client, options, stop) = (client.clone(), options.clone(), stop.clone());
        tokio::spawn(async move {
            run_worker(&client, &options, &stop, |_| async {
                Outcome::Fail("nothing was posted".into())
            })
            .await
        })
    };
    until_waiting(&url, &admin, 1).await;
    stop.stop();
    let report = worker.await.unwrap().unwrap();
    assert_eq!((report.completed, report.failed), (0, 0), "{report:?}");
    until_waiting(&url, &admin, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gives_tasks_back_and_its_handler_hears_of_a_lost_lease() {
    let (_node, url, admin, _config, _data) = node().await;
    let client = Client::new(&url, &admin).unwrap();
    // Given back: the task is on the board again, its attempt not spent.
    let back = client.post_task(&task("not now", &["back"])).await.unwrap();
    let options = WorkerOptions {
        capabilities: vec!["back".into()],
        max_tasks: Some(1),
        ..WorkerOptions::default()
    };
    let report = run_worker(&client, &options, &Stop::default(), |_| async {
        Outcome::Release("this worker cannot take it now".into())
    })
    .await
    .unwrap();
    assert_eq!((report.released, report.failed), (1, 0), "{report:?}");
    let view = client.task(&back.address).await.unwrap();
    assert_eq!(view.status, "pending", "{view:?}");

    // Cancelled while worked on: the next renewal is refused, the handler is told
    // and stops, and what it made of the task is not reported.
    let doomed = client
        .post_task(&task("cancelled", &["lost"]))
        .await
        .unwrap();
    let options = WorkerOptions {
        capabilities: vec!["lost".into()],
        max_tasks: Some(1),
        lease: Some(Duration::from_millis(600)),
        ..WorkerOptions::default()
    };
    let (started, mut working) = tokio::sync::mpsc::unbounded_channel();
    let worker = {
        let client = client.clone();
        tokio::spawn(async move {
            run_worker(&client, &options, &Stop::default(), move |work| {
                let started = started.clone();
                async move {
                    started.send(work.task.address.clone()).unwrap();
                    work.lease_lost.lost().await;
                    assert!(work.lease_lost.is_lost());
                    Outcome::Complete(json!({"too": "late"}))
                }
            })
            .await
        })
    };
    let address = working.recv().await.unwrap();
    assert_eq!(address, doomed.address);
    client
        .cancel(&address, "the test cancels it while it is worked on")
        .await
        .unwrap();
    let report = worker.await.unwrap().unwrap();
    assert_eq!((report.lost, report.completed), (1, 0), "{report:?}");
    let view = client.task(&doomed.address).await.unwrap();
    assert_eq!(view.status, "cancelled", "{view:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_tries_an_unreachable_node_again_then_gives_up_with_the_error() {
    let (node, url, admin, _config, _data) = node().await;
    let client = Client::new(&url, &admin).unwrap();
    let options = WorkerOptions {
        capabilities: vec!["never".into()],
        claim_retries_max: 3,
        ..WorkerOptions::default()
    };
    let worker = {
        let client = client.clone();
        tokio::spawn(async move {
            run_worker(&client, &options, &Stop::default(), |_| async {
                Outcome::Fail("nothing is ever posted".into())
            })
            .await
        })
    };
    // Its claim waits on the node; then the node goes away.
    until_waiting(&url, &admin, 1).await;
    node.shutdown().await.unwrap();
    let error = worker.await.unwrap().unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        matches!(error, colony_client::Error::Unreachable { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_session_says_its_place_and_works_once_admitted() {
    // Two active sessions at most before the next one queues.
    let (_node, url, admin, _config, _data) = node_with(|config| {
        let limits = config.join("limits.toml");
        let shipped = std::fs::read_to_string(&limits).unwrap();
        let text = shipped.replace(
            "[limits.active_workers]\n# Hypernet max_concurrent_workers; the swarm's soft_max_sessions/hard_max_sessions\n# (2/4 per machine) map here too. Enforced once worker sessions exist.\nsoft = 15\n",
            "[limits.active_workers]\nsoft = 2\n",
        );
        assert_ne!(text, shipped, "the shipped active_workers limit moved");
        std::fs::write(limits, text).unwrap();
    })
    .await;
    let client = Client::new(&url, &admin).unwrap();
    let options = WorkerOptions {
        capabilities: vec!["queued".into()],
        max_tasks: Some(1),
        ..WorkerOptions::default()
    };
    let first = Session::register(&client, &options).await.unwrap();
    let second = Session::register(&client, &options).await.unwrap();
    assert_eq!((first.queued(), second.queued()), (None, None));
    let third = Session::register(&client, &options).await.unwrap();
    assert!(third.queued().is_some(), "{third:?}");
    let posted = client
        .post_task(&task("for the third", &["queued"]))
        .await
        .unwrap();
    let working = {
        let options = options.clone();
        tokio::spawn(async move {
            third
                .run(&options, &Stop::default(), |work| async move {
                    Outcome::Complete(json!({"by": "the third", "task": work.task.address}))
                })
                .await
        })
    };
    // A place frees up: the third is admitted, works the task, and leaves.
    client.leave(first.worker()).await.unwrap();
    let report = working.await.unwrap().unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    let done = client.task(&posted.address).await.unwrap();
    assert_eq!(done.status, "completed");
    // A queued session stopped before its turn does nothing (the second and the
    // fourth hold the two places) and leaves the queue.
    let fourth = Session::register(&client, &options).await.unwrap();
    let mut fifth = Session::register(&client, &options).await.unwrap();
    assert_eq!(fourth.queued(), None);
    assert!(fifth.queued().is_some(), "{fifth:?}");
    let stop = Stop::default();
    stop.stop();
    assert!(!fifth.admitted(&stop).await.unwrap());
    let report = fifth.run(&options, &stop, |_| async { Outcome::Fail("never".into()) });
    assert_eq!(report.await.unwrap().completed, 0);
    // The place the second frees is nobody's: the next session is active at once.
    client.leave(second.worker()).await.unwrap();
    let sixth = Session::register(&client, &options).await.unwrap();
    assert_eq!(sixth.queued(), None, "{sixth:?}");
    drop((fourth, sixth));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_session_is_gone_ends_and_says_so() {
    let (_node, url, admin, _config, _data) = node().await;
    let client = Client::new(&url, &admin).unwrap();
    let options = WorkerOptions {
        capabilities: vec!["never".into()],
        ..WorkerOptions::default()
    };
    let session = Session::register(&client, &options).await.unwrap();
    let worker = session.worker();
    let working = {
        let options = options.clone();
        tokio::spawn(async move {
            session
                .run(&options, &Stop::default(), |_| async {
                    Outcome::Fail("nothing is ever posted".into())
                })
                .await
        })
    };
    // Its claim waits on the node; then the session is made to leave.
    until_waiting(&url, &admin, 1).await;
    client.leave(worker).await.unwrap();
    let report = working.await.unwrap().unwrap();
    assert!(report.session_lost, "{report:?}");
    assert_eq!(report.worker, worker);
}

/// A handler refused for a while gives its task back and the worker claims nothing
/// for the pause it asked; a handler may settle a task itself (completing it with
/// a justification of its own), and the worker reports nothing more of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_pauses_after_a_backoff_and_leaves_a_settled_task_alone() {
    let (_node, url, admin, _config, _data) = node().await;
    let client = Client::new(&url, &admin).unwrap();
    let posted = client.post_task(&task("later", &["pause"])).await.unwrap();
    let options = WorkerOptions {
        capabilities: vec!["pause".into()],
        max_tasks: Some(2),
        ..WorkerOptions::default()
    };
    let pause = Duration::from_millis(300);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let report = {
        let seen = std::sync::Arc::clone(&seen);
        run_worker(&client, &options, &Stop::default(), move |work| {
            let seen = std::sync::Arc::clone(&seen);
            async move {
                let calls = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(tokio::time::Instant::now());
                    seen.len()
                };
                if calls == 1 {
                    return Outcome::Backoff {
                        reason: "the model's budget is spent for now".into(),
                        pause,
                    };
                }
                work.client
                    .complete(&work.held, json!("done"), "the handler's own reason")
                    .await
                    .unwrap();
                Outcome::Settled("completed by the handler".into())
            }
        })
        .await
        .unwrap()
    };
    assert_eq!(
        (report.released, report.settled, report.completed),
        (1, 1, 0),
        "{report:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen[1] - seen[0] >= pause,
        "the worker claimed again only after the pause"
    );
    let view = client.task(&posted.address).await.unwrap();
    assert_eq!(view.status, "completed", "{view:?}");
    assert_eq!(view.result, json!("done"));
    assert_eq!(
        view.failures, 0,
        "giving it back failed no attempt: {view:?}"
    );
}

/// The reference LLM worker on the offline scripted model: a task is split in two
/// (the parts sharing its budget), the parts are completed, and the task completes
/// with them; each decision is the handler's own, with the model's justification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_llm_worker_splits_a_task_and_completes_its_parts() {
    let (_node, url, admin, _config, _data) = node().await;
    let client = Client::new(&url, &admin).unwrap();
    let mut request = task("port the parser", &[]);
    request.budget_usd = Some(colony_client::api::tasks::Usd::Text("0.50".into()));
    let posted = client.post_task(&request).await.unwrap();
    let options = WorkerOptions {
        max_tasks: Some(3),
        idle_pause: Duration::from_millis(50),
        ..WorkerOptions::default()
    };
    let report = run_worker(&client, &options, &Stop::default(), |work| {
        colony_client::llm_worker::work("colony-scripted", work)
    })
    .await
    .unwrap();
    assert_eq!(
        (report.settled, report.failed, report.released),
        (3, 0, 0),
        "{report:?}"
    );
    let root = client.task(&posted.address).await.unwrap();
    assert_eq!(root.status, "completed", "{root:?}");
    let children = root.children.clone().unwrap_or_default();
    assert_eq!(children.len(), 2, "{root:?}");
    for child in children {
        let part = client.task(&child.address).await.unwrap();
        assert_eq!(part.status, "completed", "{part:?}");
        assert!(
            part.result
                .as_str()
                .unwrap_or_default()
                .contains("[scripted] done"),
            "{part:?}"
        );
        // Each part had a share of what was left, and its own call was charged to it.
        let budget = part.budget.as_ref().expect("a share of the budget");
        assert!(budget.spent_micro_usd > 0, "{budget:?}");
    }
    let history = root.history.clone().unwrap_or_default();
    assert!(
        history
            .iter()
            .any(|t| t.justification.contains("two halves are easier to review")),
        "the model's justification is recorded: {history:?}"
    );
}
