//! Issue 30: worker liveness as soft state. Heartbeats (HTTP and bus) are answered
//! from memory and leave nothing in the log; a session is renewed by one batched
//! `worker.renew` decision; a silent one is declared lost by the node within its
//! timeout, with its evidence; a restart keeps a live session that heartbeats within
//! its timeout.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;

const TASKS: &str = "[workers]\nheartbeat = \"100ms\"\ntimeout = \"400ms\"\n";

/// The decision records of `action` (the test's logs hold fewer than 1 000).
async fn audit_actions(base: &str, admin: &str, action: &str) -> Vec<Value> {
    let page = common::get_json(base, admin, "/v1/audit?limit=1000").await;
    let records = page["records"].as_array().cloned().unwrap_or_default();
    assert!(records.len() < 1_000);
    records
        .into_iter()
        .filter(|r| r["action"] == action)
        .collect()
}

/// `POST /v1/workers/{id}/heartbeat` as `token`: the status and the answer.
async fn heartbeat(base: &str, token: &str, id: u64) -> (u16, Value) {
    common::send(
        reqwest::Method::POST,
        base,
        token,
        &format!("/v1/workers/{id}/heartbeat"),
        Some(json!({})),
    )
    .await
}

/// Milliseconds from `from` to `to`, two of the API's times
/// (`2026-12-07T01:21:33.123Z`) less than a day apart.
fn ms_between(from: &str, to: &str) -> i64 {
    let of_day = |time: &str| -> i64 {
        let clock = time.split('T').nth(1).unwrap().trim_end_matches('Z');
        let mut parts = clock.split(':');
        let hours: i64 = parts.next().unwrap().parse().unwrap();
        let minutes: i64 = parts.next().unwrap().parse().unwrap();
        let seconds: f64 = parts.next().unwrap().parse().unwrap();
        (hours * 3_600 + minutes * 60) * 1_000 + (seconds * 1_000.0).round() as i64
    };
    (of_day(to) - of_day(from)).rem_euclid(86_400_000)
}

async fn session(base: &str, admin: &str, id: u64) -> Value {
    common::get_json(base, admin, &format!("/v1/workers/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_leave_nothing_in_the_log_and_silence_is_still_caught() {
    let config = common::genesis_dir(&[("tasks.toml", TASKS)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, token) = common::create_principal(&base, &admin, "beater", "ai", &["member"]).await;
    let registered = common::post_json(
        &base,
        &token,
        "/v1/workers",
        &json!({"capabilities": ["code"]}),
    )
    .await;
    let id = registered["worker"].as_u64().unwrap();

    // A second of heartbeats every 50 ms (within the 400 ms timeout).
    let started = Instant::now();
    let mut beats = 0;
    while started.elapsed() < Duration::from_secs(1) {
        let (status, answer) = heartbeat(&base, &token, id).await;
        assert_eq!(
            (status, answer["state"].as_str()),
            (200, Some("active")),
            "{answer}"
        );
        beats += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(beats >= 10);
    assert!(
        audit_actions(&base, &admin, "worker.heartbeat")
            .await
            .is_empty(),
        "a heartbeat is not a decision any more"
    );
    // The session was renewed (registration's short deadline) by the node, once.
    let renewals = audit_actions(&base, &admin, "worker.renew").await;
    assert!(!renewals.is_empty() && renewals.len() <= 2, "{renewals:?}");
    let shown = session(&base, &admin, id).await;
    assert_eq!(shown["state"], "active", "{shown}");
    // The view shows what the node heard (the last of a second of heartbeats), not
    // what the log holds (the registration and the one renewal, in its first
    // 200 ms). Its `health` would say `late` if this read came over 100 ms after the
    // last heartbeat, which a loaded machine makes happen: the time says it.
    let heard = ms_between(
        shown["registered_at"].as_str().unwrap(),
        shown["last_heartbeat"].as_str().unwrap(),
    );
    assert!(heard >= 900, "the view shows what the node heard: {shown}");
    // Another principal's heartbeat for it is refused, as before.
    let (_, other) = common::create_principal(&base, &admin, "other", "ai", &["member"]).await;
    let (status, refused) = heartbeat(&base, &other, id).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // Silence: declared lost by the node within its timeout and a tick.
    let silent_since = Instant::now();
    let lost = loop {
        let shown = session(&base, &admin, id).await;
        if shown["state"] == "lost" {
            break shown;
        }
        assert!(
            silent_since.elapsed() < Duration::from_secs(10),
            "never declared lost: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        lost["evidence"]
            .as_str()
            .unwrap()
            .contains("no heartbeat since")
            && lost["evidence"]
                .as_str()
                .unwrap()
                .contains("(heard by the node)"),
        "{lost}"
    );
    let declared = audit_actions(&base, &admin, "worker.lost").await;
    assert_eq!(declared.len(), 1, "{declared:?}");
    let (status, gone) = heartbeat(&base, &token, id).await;
    assert_eq!(
        (status, gone["error"]["code"].as_str()),
        (410, Some("worker_gone"))
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_a_live_session_that_heartbeats_within_its_timeout() {
    let config = common::genesis_dir(&[(
        "tasks.toml",
        "[workers]\nheartbeat = \"200ms\"\ntimeout = \"1500ms\"\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, token) = common::create_principal(&base, &admin, "survivor", "ai", &["member"]).await;
    let registered = common::post_json(&base, &token, "/v1/workers", &json!({})).await;
    let id = registered["worker"].as_u64().unwrap();
    // Renewed once (the batch at the node's first tick), then the node stops.
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit_actions(&base, &admin, "worker.renew")
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "never renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.shutdown().await.unwrap();

    let (node, base, _) = common::start(data.path(), config.path()).await;
    // Heartbeats after the restart, for three timeouts: the session lives on.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4_500) {
        let (status, answer) = heartbeat(&base, &token, id).await;
        assert_eq!(status, 200, "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(session(&base, &admin, id).await["state"], "active");
    node.shutdown().await.unwrap();
}

/// A session heard from keeps the leases of its tasks (one batched renewal instead
/// of a task heartbeat each); when it falls silent it loses them with the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heard_session_keeps_its_leases_without_task_heartbeats() {
    let config = common::genesis_dir(&[("tasks.toml", TASKS)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, token) = common::create_principal(&base, &admin, "holder", "ai", &["member"]).await;
    let registered = common::post_json(
        &base,
        &token,
        "/v1/workers",
        &json!({"capabilities": ["code"]}),
    )
    .await;
    let id = registered["worker"].as_u64().unwrap();
    let posted = common::post_json(
        &base,
        &admin,
        "/v1/tasks",
        &json!({"title": "long work", "capabilities": ["code"], "justification": "work to do"}),
    )
    .await;
    let address = posted["address"].as_str().unwrap().to_string();
    let claimed = common::post_json(
        &base,
        &token,
        "/v1/tasks/claim",
        &json!({"worker": id, "lease_ms": 500}),
    )
    .await;
    let lease_token = claimed["lease"]["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{claimed}"));

    // Four leases long, only the session heartbeats.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let (status, _) = heartbeat(&base, &token, id).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let task = common::get_json(&base, &token, &format!("/v1/tasks/{address}")).await;
    assert_eq!(task["status"], "claimed", "{task}");
    assert!(audit_actions(&base, &admin, "task.heartbeat")
        .await
        .is_empty());
    let (status, done) = common::send(
        reqwest::Method::POST,
        &base,
        &token,
        &format!("/v1/tasks/{address}/complete"),
        Some(json!({"lease_token": lease_token, "result": "done", "justification": "finished"})),
    )
    .await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("completed")),
        "{done}"
    );
    node.shutdown().await.unwrap();
}

/// An idle worker's polls for work leave nothing in the log, yet each still spends
/// the io_op a command would (through the edge meter); the first poll that finds
/// work claims it through the kernel as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_for_work_that_is_not_there_costs_the_log_nothing() {
    // A long timeout: this worker does not heartbeat.
    let config = common::genesis_dir(&[(
        "tasks.toml",
        "[workers]\nheartbeat = \"2s\"\ntimeout = \"60s\"\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, token) = common::create_principal(&base, &admin, "poller", "ai", &["member"]).await;
    let registered = common::post_json(
        &base,
        &token,
        "/v1/workers",
        &json!({"capabilities": ["code"]}),
    )
    .await;
    let id = registered["worker"].as_u64().unwrap();
    for _ in 0..20 {
        let (status, _) = common::send(
            reqwest::Method::POST,
            &base,
            &token,
            "/v1/tasks/claim",
            Some(json!({"worker": id})),
        )
        .await;
        assert_eq!(status, 204);
    }
    assert!(audit_actions(&base, &admin, "task.claim").await.is_empty());
    // The io_ops reach the ledger with the edge's next charge. (Counted from the
    // charges' records: the balance's `used` starts again at every turn of the
    // one-minute window, which a run may straddle.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let charged: u64 = audit_actions(&base, &admin, "edge.charge")
            .await
            .iter()
            .filter_map(|r| r["detail"]["effect"]["io_ops"].as_u64())
            .sum();
        if charged >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "io_ops not charged: {charged} of 20"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Work appears: the next poll claims it, decided and recorded.
    common::post_json(
        &base,
        &admin,
        "/v1/tasks",
        &json!({"title": "now there is work", "capabilities": ["code"], "justification": "work"}),
    )
    .await;
    let claimed = common::post_json(&base, &token, "/v1/tasks/claim", &json!({"worker": id})).await;
    assert!(claimed["lease"]["token"].is_u64(), "{claimed}");
    assert_eq!(audit_actions(&base, &admin, "task.claim").await.len(), 1);
    // A refusal still goes through the kernel and says why.
    let (_, other) = common::create_principal(&base, &admin, "intruder", "ai", &["member"]).await;
    let (status, refused) = common::send(
        reqwest::Method::POST,
        &base,
        &other,
        "/v1/tasks/claim",
        Some(json!({"worker": id})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{refused}"
    );
    node.shutdown().await.unwrap();
}

/// Heartbeats on a task lease (`POST /v1/tasks/{address}/heartbeat`), by a worker
/// without a session: the first (which starts the task) is a decision; the rest are
/// answered from memory and the lease is renewed in batches (`task.renew_leases`),
/// so it outlives its length many times over; silence lets it lapse as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_heartbeats_are_renewed_in_batches_and_silence_still_ends_the_lease() {
    let config = common::genesis_dir(&[("tasks.toml", TASKS)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, token) = common::create_principal(&base, &admin, "holder", "ai", &["member"]).await;
    let posted = common::post_json(
        &base,
        &admin,
        "/v1/tasks",
        &json!({"title": "long work", "justification": "to hold"}),
    )
    .await;
    let address = posted["address"].as_str().unwrap().to_string();
    let claimed = common::post_json(
        &base,
        &token,
        "/v1/tasks/claim",
        &json!({"capabilities": [], "lease_ms": 1000}),
    )
    .await;
    let lease_token = claimed["lease"]["token"].as_u64().unwrap();
    let beat = |base: String, token: String, address: String| async move {
        common::send(
            reqwest::Method::POST,
            &base,
            &token,
            &format!("/v1/tasks/{address}/heartbeat"),
            Some(json!({"lease_token": lease_token})),
        )
        .await
    };
    // Three lease lengths of heartbeats every 100 ms.
    let started = Instant::now();
    let mut beats = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let (status, answer) = beat(base.clone(), token.clone(), address.clone()).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("in_progress")),
            "{answer}"
        );
        beats += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(beats >= 20);
    let recorded = audit_actions(&base, &admin, "task.heartbeat").await;
    assert_eq!(
        recorded.len(),
        1,
        "only the first (it started the task): {recorded:?}"
    );
    let renewals = audit_actions(&base, &admin, "task.renew_leases").await;
    assert!(
        !renewals.is_empty() && renewals.len() < beats / 2,
        "{} renewals for {beats} heartbeats",
        renewals.len()
    );
    let task = common::get_json(&base, &admin, &format!("/v1/tasks/{address}")).await;
    assert_eq!(task["status"], "in_progress", "{task}");

    // A stale token is refused by the kernel, as before.
    let (status, refused) = common::send(
        reqwest::Method::POST,
        &base,
        &token,
        &format!("/v1/tasks/{address}/heartbeat"),
        Some(json!({"lease_token": lease_token + 100})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("stale_lease")),
        "{refused}"
    );

    // Silence: the lease lapses within its length and a tick.
    let silent_since = Instant::now();
    loop {
        let task = common::get_json(&base, &admin, &format!("/v1/tasks/{address}")).await;
        if task["status"] != "in_progress" {
            assert!(task["lease"].is_null(), "{task}");
            break;
        }
        assert!(
            silent_since.elapsed() < Duration::from_secs(10),
            "the lease never lapsed: {task}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!audit_actions(&base, &admin, "task.lease_expired")
        .await
        .is_empty());
    node.shutdown().await.unwrap();
}
