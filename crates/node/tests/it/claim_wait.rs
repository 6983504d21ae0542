//! Claims that wait for work (`wait_ms`, a long poll): answered as soon as a task
//! they can take is posted, one claim per task and by capability, not counted among
//! the requests being served, bounded per principal, given up when their client goes
//! away, and answered at once when the node stops.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::common;
use common::bus::{wait_for_figure, PATIENCE};

const WAITING: &str = "colony_claims_waiting";

/// The shipped genesis with `concurrent_api_requests` at most `hard` requests and
/// one principal at most `per_principal` requests in flight.
fn genesis(hard: u64, per_principal: u64) -> tempfile::TempDir {
    let shipped = |file: &str| {
        std::fs::read_to_string(format!(
            "{}/../../config/genesis/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let limits = shipped("limits.toml").replace(
        "soft = 512\nhard = 1024\nbrake_floor = 16\n",
        &format!("soft = {hard}\nhard = {hard}\nbrake_floor = 1\n"),
    );
    assert!(limits.contains(&format!("soft = {hard}\nhard = {hard}\nbrake_floor = 1")));
    let http = shipped("http.toml").replace(
        "requests_in_flight_per_principal_max = 256",
        &format!("requests_in_flight_per_principal_max = {per_principal}"),
    );
    common::genesis_dir(&[("limits.toml", &limits), ("http.toml", &http)])
}

/// `POST /v1/tasks/claim` as `token`: the status and the body (`null` for 204).
async fn claim(base: String, token: String, body: Value) -> (u16, Value) {
    common::send(
        reqwest::Method::POST,
        &base,
        &token,
        "/v1/tasks/claim",
        Some(body),
    )
    .await
}

async fn post_task(base: &str, admin: &str, title: &str, capabilities: &[&str]) -> String {
    let created = common::post_json(
        base,
        admin,
        "/v1/tasks",
        &json!({"title": title, "capabilities": capabilities, "justification": "work to do"}),
    )
    .await;
    created["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_claim_gets_the_task_it_can_take_as_soon_as_it_is_posted() {
    let config = genesis(1024, 256);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, worker) = common::create_principal(&base, &admin, "builder", "ai", &["member"]).await;

    let too_long = claim(base.clone(), worker.clone(), json!({"wait_ms": 30_001})).await;
    assert_eq!(too_long.0, 400, "{}", too_long.1);
    assert_eq!(too_long.1["error"]["field"], "wait_ms");
    // Nothing to wait for, and no wait asked: at once.
    assert_eq!(claim(base.clone(), worker.clone(), json!({})).await.0, 204);

    let builds = tokio::spawn(claim(
        base.clone(),
        worker.clone(),
        json!({"capabilities": ["build"], "wait_ms": 20_000}),
    ));
    let reviews = tokio::spawn(claim(
        base.clone(),
        worker.clone(),
        json!({"capabilities": ["review"], "wait_ms": 20_000}),
    ));
    wait_for_figure(&base, &admin, WAITING, 2).await;
    let build = post_task(&base, &admin, "build it", &["build"]).await;
    let (status, claimed) = builds.await.unwrap();
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["task"]["address"], build.as_str());
    // The review claim was not woken for a task it cannot take.
    wait_for_figure(&base, &admin, WAITING, 1).await;
    assert!(!reviews.is_finished());
    let review = post_task(&base, &admin, "review it", &["review"]).await;
    let (status, claimed) = reviews.await.unwrap();
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["task"]["address"], review.as_str());
    wait_for_figure(&base, &admin, WAITING, 0).await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_claims_are_not_requests_being_served_and_each_gets_its_own_task() {
    // At most 6 requests served at once, node-wide: 8 claims wait all the same (one
    // principal holds at most 10 tasks, `tasks_per_worker`).
    let config = genesis(6, 256);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, worker) = common::create_principal(&base, &admin, "many", "ai", &["member"]).await;
    let mut waiting = Vec::new();
    for n in 1..=8 {
        waiting.push(tokio::spawn(claim(
            base.clone(),
            worker.clone(),
            json!({"wait_ms": 20_000}),
        )));
        wait_for_figure(&base, &admin, WAITING, n).await;
    }
    let (status, _) =
        common::send(reqwest::Method::GET, &base, &worker, "/v1/ledger/me", None).await;
    assert_eq!(status, 200, "a request is served while 8 claims wait");
    let mut posted = Vec::new();
    for n in 0..8 {
        posted.push(post_task(&base, &admin, &format!("task {n}"), &[]).await);
    }
    let mut taken = Vec::new();
    for claim in waiting {
        let (status, claimed) = claim.await.unwrap();
        assert_eq!(status, 200, "{claimed}");
        taken.push(claimed["task"]["address"].as_str().unwrap().to_string());
    }
    taken.sort();
    posted.sort();
    assert_eq!(taken, posted, "each task to one claim");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_waits_with_at_most_its_requests_in_flight_the_rest_answer_at_once() {
    let config = genesis(1024, 4);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, worker) = common::create_principal(&base, &admin, "greedy", "ai", &["member"]).await;
    let mut waiting = FuturesUnordered::new();
    for n in 1..=4 {
        waiting.push(tokio::spawn(claim(
            base.clone(),
            worker.clone(),
            json!({"wait_ms": 20_000}),
        )));
        wait_for_figure(&base, &admin, WAITING, n).await;
    }
    for _ in 0..2 {
        let (status, body) = claim(base.clone(), worker.clone(), json!({"wait_ms": 20_000})).await;
        assert_eq!(status, 204, "past its 4, a claim does not wait: {body}");
    }
    for n in 0..4 {
        post_task(&base, &admin, &format!("task {n}"), &[]).await;
    }
    while let Some(answer) = waiting.next().await {
        assert_eq!(answer.unwrap().0, 200);
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_client_went_away_takes_nothing() {
    let config = genesis(1024, 256);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, worker) = common::create_principal(&base, &admin, "gone", "ai", &["member"]).await;
    let body = json!({"wait_ms": 20_000}).to_string();
    let mut socket = tokio::net::TcpStream::connect(node.local_addr())
        .await
        .unwrap();
    socket
        .write_all(
            format!(
                "POST /v1/tasks/claim HTTP/1.1\r\nHost: colony\r\nAuthorization: Bearer {worker}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    wait_for_figure(&base, &admin, WAITING, 1).await;
    drop(socket);
    // The node notices the closed connection and drops the waiting claim...
    wait_for_figure(&base, &admin, WAITING, 0).await;
    // ...so the task posted next is there for the next claim.
    let address = post_task(&base, &admin, "for someone present", &[]).await;
    let (status, claimed) = claim(base.clone(), worker.clone(), json!({})).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["task"]["address"], address.as_str());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_answers_its_waiting_claims_at_once() {
    let config = genesis(1024, 256);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let (_, worker) = common::create_principal(&base, &admin, "patient", "ai", &["member"]).await;
    let waiting = tokio::spawn(claim(base.clone(), worker, json!({"wait_ms": 30_000})));
    wait_for_figure(&base, &admin, WAITING, 1).await;
    let stopping = tokio::spawn(node.shutdown());
    // Well before its 30 s: the node does not keep it.
    let (status, body) = tokio::time::timeout(PATIENCE.min(Duration::from_secs(15)), waiting)
        .await
        .expect("answered when the node stops")
        .unwrap();
    assert_eq!(status, 204, "{body}");
    stopping.await.unwrap().unwrap();
}
