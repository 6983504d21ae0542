//! Durable streams and the kernel's own messages on the bus: replay across a restart,
//! acks, redelivery and dead letters, decisions on `colony.events.>`, task offers.

use crate::common;

use serde_json::{json, Value};

use common::bus::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_replay_after_a_restart_then_continue_live() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let created = create_stream(
        &base,
        &admin,
        json!({"name": "orders", "subjects": ["orders.>"], "max_msgs": 1000}),
    )
    .await;
    assert_eq!(created["stream"]["last_seq"], 0);
    let mut publisher = Client::connect(&node, &admin).await;
    for n in 1..=5u64 {
        let answer = publisher.publish("orders.new", json!({"n": n})).await;
        assert_eq!(
            answer,
            json!({"op": "ok", "id": "p", "stream": "orders", "seq": n})
        );
    }
    node.shutdown().await.unwrap();

    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let info: Value = reqwest::Client::new()
        .get(format!("{base}/v1/streams/orders"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["stream"]["messages"], 5, "{info}");
    let mut consumer = Client::connect(&node, &admin).await;
    let answer = consumer
        .request(json!({"op": "sub", "sid": "c", "subject": "orders.>", "stream": "orders", "from_seq": 2}), "s")
        .await;
    assert_eq!(answer["from_seq"], 2);
    for n in 2..=5u64 {
        let msg = consumer.recv().await;
        assert_eq!(
            (msg["seq"].as_u64(), msg["data"]["n"].as_u64()),
            (Some(n), Some(n)),
            "{msg}"
        );
        assert_eq!(msg["stream"], "orders");
        assert_eq!(msg["delivery"], 1);
        consumer
            .send(json!({"op": "ack", "sid": "c", "seq": n}))
            .await;
    }
    let mut publisher = Client::connect(&node, &admin).await;
    assert_eq!(
        publisher.publish("orders.new", json!({"n": 6})).await["seq"],
        6
    );
    let live = consumer.recv().await;
    assert_eq!(live["seq"], 6);

    // from_time: everything stored at or after a time.
    let mut by_time = Client::connect(&node, &admin).await;
    by_time
        .request(json!({"op": "sub", "sid": "t", "subject": "orders.>", "stream": "orders", "from_time": 0}), "s")
        .await;
    assert_eq!(by_time.recv().await["seq"], 1);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_are_redelivered_then_dead_lettered() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    create_stream(
        &base,
        &admin,
        json!({"name": "jobs", "subjects": ["jobs.>"], "ack_wait": "300ms", "max_deliver": 2}),
    )
    .await;
    let mut watcher = Client::connect(&node, &admin).await;
    watcher.sub("dlq", "colony.dlq.>").await;
    let mut consumer = Client::connect(&node, &admin).await;
    consumer
        .request(
            json!({"op": "sub", "sid": "c", "subject": "jobs.>", "stream": "jobs"}),
            "s",
        )
        .await;
    let mut publisher = Client::connect(&node, &admin).await;
    publisher.publish("jobs.a", json!("acked")).await;
    publisher.publish("jobs.b", json!("ignored")).await;
    let first = consumer.recv().await;
    let second = consumer.recv().await;
    assert_eq!(
        (first["seq"].as_u64(), first["delivery"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (second["seq"].as_u64(), second["delivery"].as_u64()),
        (Some(2), Some(1))
    );
    consumer
        .send(json!({"op": "ack", "sid": "c", "seq": 1}))
        .await;
    // Only the unacknowledged one comes again, with its delivery count.
    let again = consumer.recv().await;
    assert_eq!(
        (again["seq"].as_u64(), again["delivery"].as_u64()),
        (Some(2), Some(2)),
        "{again}"
    );
    // After max_deliver, it goes to the dead-letter subject.
    let dead = watcher.recv().await;
    assert_eq!(dead["subject"], "colony.dlq.jobs");
    assert_eq!(dead["from"], "0.1");
    assert_eq!(dead["data"]["seq"], 2);
    assert_eq!(dead["data"]["deliveries"], 2);
    assert_eq!(dead["data"]["message"]["data"], "ignored");
    assert_eq!(dead["data"]["address"], "1.1");
    // And is not delivered again.
    publisher.publish("jobs.c", json!("next")).await;
    let next = consumer.recv().await;
    assert_eq!(next["seq"], 3, "{next}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_decisions_are_published_on_colony_events() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let mut watcher = Client::connect(&node, &admin).await;
    watcher.sub("e", "colony.events.decision.principal.>").await;
    let (address, _) = common::create_principal(&base, &admin, "newcomer", "ai", &["member"]).await;
    let event = watcher.recv().await;
    assert_eq!(event["subject"], "colony.events.decision.principal.create");
    assert_eq!(event["data"]["actor"], "1.1");
    assert_eq!(event["data"]["event"]["decision"], "allowed");
    assert_eq!(event["data"]["event"]["subject"], json!(address));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimable_tasks_are_offered_on_the_bus() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let (_, token) = common::create_principal(&base, &admin, "picker", "ai", &["member"]).await;
    let mut worker = Client::connect(&node, &token).await;
    worker.sub("offers", "colony.tasks.offers").await;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let http = http.clone();
        let base = base.clone();
        let admin = admin.clone();
        async move {
            let posted: Value = http
                .post(format!("{base}/v1/tasks"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            posted["address"].as_str().unwrap().to_string()
        }
    };
    let first = post(json!({"title": "first", "capabilities": ["rust"], "priority": "high", "justification": "t"})).await;
    let offer = worker.recv().await;
    assert_eq!(offer["subject"], "colony.tasks.offers");
    assert_eq!(offer["from"], "0.1");
    assert_eq!(offer["data"]["address"], json!(first));
    assert_eq!(offer["data"]["capabilities"], json!(["rust"]));
    assert_eq!(offer["data"]["priority"], "high");
    // A task waiting on another is offered when it unblocks, not before.
    let second =
        post(json!({"title": "second", "depends_on": [first], "justification": "t"})).await;
    let claim: Value = http
        .post(format!("{base}/v1/tasks/claim"))
        .bearer_auth(&token)
        .json(&json!({"capabilities": ["rust"], "justification": "mine"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claim["task"]["address"], json!(first), "{claim}");
    let token_of_lease = claim["lease"]["token"].as_u64().unwrap();
    let done = http
        .post(format!("{base}/v1/tasks/{first}/complete"))
        .bearer_auth(&token)
        .json(&json!({"lease_token": token_of_lease, "result": "done", "justification": "done"}))
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success(), "{}", done.text().await.unwrap());
    let offer = worker.recv().await;
    assert_eq!(offer["data"]["address"], json!(second), "{offer}");
    // Observers are not offered work.
    let (_, observer) =
        common::create_principal(&base, &admin, "watcher", "human", &["observer"]).await;
    let mut watcher = Client::connect(&node, &observer).await;
    let answer = watcher
        .request(
            json!({"op": "sub", "sid": "o", "subject": "colony.tasks.offers"}),
            "s",
        )
        .await;
    assert_eq!(answer["error"]["code"], "forbidden");
    node.shutdown().await.unwrap();
}

/// Every agent's inbox is kept: what others send to `agents.<address>.inbox` is read
/// back with `GET /v1/inbox` by its owner alone, from a sequence number on; answers
/// to a live request (`...inbox.<id>`) are not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_keeps_what_others_sent_for_its_owner_alone() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (_node, base, admin) = common::start(data.path(), config.path()).await;
    let (alice, alice_token) =
        common::create_principal(&base, &admin, "alice", "ai", &["member"]).await;
    let (bob, bob_token) = common::create_principal(&base, &admin, "bob", "ai", &["member"]).await;
    for (subject, n) in [
        (format!("agents.{bob}.inbox"), 1),
        (format!("agents.{bob}.inbox.req7"), 2),
        (format!("agents.{alice}.inbox"), 3),
        (format!("agents.{bob}.inbox"), 4),
    ] {
        let (status, sent) = common::send(
            reqwest::Method::POST,
            &base,
            &alice_token,
            "/v1/bus/publish",
            Some(json!({"subject": subject, "data": {"n": n}})),
        )
        .await;
        assert_eq!(status, 200, "{sent}");
    }
    let inbox = common::get_json(&base, &bob_token, "/v1/inbox").await;
    assert_eq!(inbox["subject"], format!("agents.{bob}.inbox"));
    let got: Vec<(Value, Value)> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["data"]["n"].clone(), m["from"].clone()))
        .collect();
    assert_eq!(got, [(json!(1), json!(alice)), (json!(4), json!(alice))]);
    let next = inbox["next_seq"].as_u64().unwrap();
    let later = common::get_json(&base, &bob_token, &format!("/v1/inbox?from_seq={next}")).await;
    assert_eq!(later["messages"], json!([]), "{later}");
    let mine = common::get_json(&base, &alice_token, "/v1/inbox").await;
    let mine: Vec<&Value> = mine["messages"].as_array().unwrap().iter().collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["data"]["n"], 3);
    // A token whose bus scope does not reach the inbox cannot read it.
    let narrow = common::post_json(
        &base,
        &bob_token,
        &format!("/v1/principals/{bob}/tokens"),
        &json!({"name": "work-only", "scopes": ["bus:work.>"], "justification": "work subjects only"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, refused) =
        common::send(reqwest::Method::GET, &base, &narrow, "/v1/inbox", None).await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = common::send(
        reqwest::Method::GET,
        &base,
        &bob_token,
        "/v1/inbox?limit=0",
        None,
    )
    .await;
    assert_eq!(status, 400, "{refused}");
}
