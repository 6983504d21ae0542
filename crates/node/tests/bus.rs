//! The agent bus through real WebSocket clients (tokio-tungstenite) against a real
//! node: routing, queue groups, request-reply, malformed frames, authorization,
//! streams with replay across a restart, acks, redelivery, dead letters, priority
//! order under contention, each backpressure policy, edge gating and kernel events.

mod common;

use std::time::Duration;

use colony_node::bus::BusConfig;
use colony_node::{Node, NodeConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(20);

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    async fn connect(node: &Node, token: &str) -> Client {
        let mut request = format!("ws://{}/v1/bus", node.local_addr())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.status(), 101);
        Client { ws }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON frame (fails the test after PATIENCE).
    async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends a frame with an `id` and returns the answer to it.
    async fn request(&mut self, mut frame: Value, id: &str) -> Value {
        frame["id"] = json!(id);
        self.send(frame).await;
        loop {
            let answer = self.recv().await;
            if answer["id"] == json!(id) {
                return answer;
            }
        }
    }

    async fn sub(&mut self, sid: &str, subject: &str) {
        let answer = self
            .request(
                json!({"op": "sub", "sid": sid, "subject": subject}),
                &format!("sub-{sid}"),
            )
            .await;
        assert_eq!(answer["op"], "ok", "{answer}");
    }

    async fn publish(&mut self, subject: &str, data: Value) -> Value {
        self.request(json!({"op": "pub", "subject": subject, "data": data}), "p")
            .await
    }
}

fn test_bus() -> BusConfig {
    BusConfig {
        edge_flush_ms: 100,
        frame_bytes_max: 256 << 10,
        ..BusConfig::default()
    }
}

async fn start_with(
    data: &std::path::Path,
    config: &std::path::Path,
    bus: BusConfig,
) -> (Node, String, String) {
    let node = Node::start(NodeConfig {
        bus: Some(bus),
        ..common::node_config(data, config)
    })
    .await
    .unwrap();
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let base = format!("http://{}", node.local_addr());
    (node, base, admin)
}

async fn create_stream(base: &str, admin: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/streams"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_queue_groups_and_request_reply() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, _base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let mut publisher = Client::connect(&node, &admin).await;
    let mut wild = Client::connect(&node, &admin).await;
    wild.sub("w1", "work.*.review").await;
    wild.sub("w2", "work.>").await;
    let answer = publisher.publish("work.code.review", json!({"n": 1})).await;
    assert_eq!(answer, json!({"op": "ok", "id": "p", "delivered": 2}));
    let mut sids = vec![];
    for _ in 0..2 {
        let msg = wild.recv().await;
        assert_eq!(msg["op"], "msg");
        assert_eq!(msg["subject"], "work.code.review");
        assert_eq!(msg["data"], json!({"n": 1}));
        assert_eq!(msg["from"], "1.1");
        assert_eq!(msg["priority"], "normal");
        sids.push(msg["sid"].as_str().unwrap().to_string());
    }
    sids.sort();
    assert_eq!(sids, ["w1", "w2"]);
    assert_eq!(
        publisher.publish("work.code", json!(2)).await["delivered"],
        1
    );
    assert_eq!(wild.recv().await["sid"], "w2");

    // Queue group: each message to exactly one member.
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut member = Client::connect(&node, &admin).await;
        let answer = member
            .request(
                json!({"op": "sub", "sid": "q", "subject": "jobs.>", "queue": "workers"}),
                "s",
            )
            .await;
        assert_eq!(answer["op"], "ok");
        members.push(member);
    }
    for n in 0..30 {
        assert_eq!(
            publisher.publish("jobs.build", json!(n)).await["delivered"],
            1
        );
    }
    let mut received = Vec::new();
    for member in &mut members {
        // Round robin: ten each.
        for _ in 0..10 {
            received.push(member.recv().await["data"].as_u64().unwrap());
        }
    }
    received.sort();
    assert_eq!(received, (0..30).collect::<Vec<u64>>());

    // Request-reply: the responder answers on reply_to.
    let mut responder = Client::connect(&node, &admin).await;
    responder.sub("r", "svc.echo").await;
    publisher.sub("inbox", "agents.1.1.inbox.>").await;
    publisher
        .send(json!({"op": "pub", "subject": "svc.echo", "data": "hi", "reply_to": "agents.1.1.inbox.7"}))
        .await;
    let request = responder.recv().await;
    assert_eq!(request["reply_to"], "agents.1.1.inbox.7");
    responder
        .send(json!({"op": "pub", "subject": request["reply_to"], "data": "HI"}))
        .await;
    let reply = publisher.recv().await;
    assert_eq!(
        (reply["subject"].as_str(), reply["data"].as_str()),
        (Some("agents.1.1.inbox.7"), Some("HI"))
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_session_goes_on() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, _base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let mut client = Client::connect(&node, &admin).await;
    let table: &[(&str, &str)] = &[
        ("not json", "bad_frame"),
        ("[1,2]", "bad_frame"),
        (r#"{"sid":"x"}"#, "bad_frame"),
        (r#"{"op":"fly","id":1}"#, "unknown_op"),
        (r#"{"op":"pub","id":2,"data":1}"#, "invalid"),
        (
            r#"{"op":"pub","id":3,"subject":"a..b","data":1}"#,
            "invalid",
        ),
        (r#"{"op":"pub","id":4,"subject":"a.*","data":1}"#, "invalid"),
        (r#"{"op":"pub","id":5,"subject":"a.b"}"#, "invalid"),
        (
            r#"{"op":"pub","id":6,"subject":"a.b","data":1,"priority":"urgent"}"#,
            "invalid",
        ),
        (
            r#"{"op":"pub","id":7,"subject":"a.b","data":1,"headers":{"k":1}}"#,
            "invalid",
        ),
        (
            r#"{"op":"pub","id":8,"subject":"a.b","data":1,"reply_to":"x.>"}"#,
            "invalid",
        ),
        (r#"{"op":"sub","id":9,"subject":"a.b"}"#, "invalid"),
        (
            r#"{"op":"sub","id":10,"sid":"has space","subject":"a.b"}"#,
            "invalid",
        ),
        (
            r#"{"op":"sub","id":11,"sid":"s","subject":"a.>.b"}"#,
            "invalid",
        ),
        (
            r#"{"op":"sub","id":12,"sid":"s","subject":"a","backpressure":"pray"}"#,
            "invalid",
        ),
        (
            r#"{"op":"sub","id":13,"sid":"s","subject":"a","stream":"nope"}"#,
            "not_found",
        ),
        (
            r#"{"op":"sub","id":14,"sid":"s","subject":"a","from_seq":3}"#,
            "invalid",
        ),
        (r#"{"op":"unsub","id":15,"sid":"never"}"#, "not_found"),
        (r#"{"op":"ack","id":16,"sid":"never","seq":1}"#, "not_found"),
        (
            r#"{"op":"pub","id":17,"subject":"a.b","data":1,"priority":5}"#,
            "bad_frame",
        ),
    ];
    for (frame, code) in table {
        client
            .ws
            .send(Message::Text((*frame).into()))
            .await
            .unwrap();
        let answer = client.recv().await;
        assert_eq!(answer["op"], "err", "{frame}: {answer}");
        assert_eq!(answer["error"]["code"], *code, "{frame}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().len() > 10,
            "{answer}"
        );
    }
    // The id is echoed even when the frame is otherwise wrong.
    client
        .ws
        .send(Message::Text(r#"{"op":"pub","id":"abc"}"#.into()))
        .await
        .unwrap();
    assert_eq!(client.recv().await["id"], "abc");
    client
        .ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(client.recv().await["error"]["code"], "bad_frame");
    // Duplicate sids.
    client.sub("s", "a.b").await;
    let answer = client
        .request(json!({"op": "sub", "sid": "s", "subject": "a.c"}), "dup")
        .await;
    assert_eq!(answer["error"]["code"], "duplicate_sid");
    // Still healthy.
    assert_eq!(
        client.request(json!({"op": "ping"}), "still").await["op"],
        "pong"
    );

    // A frame over the bound closes the connection with 1009.
    let big = format!(
        r#"{{"op":"pub","subject":"a.b","data":"{}"}}"#,
        "x".repeat(300 << 10)
    );
    client.ws.send(Message::Text(big.into())).await.unwrap();
    let close = loop {
        match tokio::time::timeout(PATIENCE, client.ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.unwrap().code, CloseCode::Size);

    // Browsers pass the token in the query string.
    let request = format!("ws://{}/v1/bus?token={admin}", node.local_addr())
        .into_client_request()
        .unwrap();
    let (mut browser, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    browser
        .send(Message::Text(r#"{"op":"ping","id":"b"}"#.into()))
        .await
        .unwrap();
    let pong = loop {
        if let Some(Ok(Message::Text(text))) = browser.next().await {
            break serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(pong, json!({"op": "pong", "id": "b"}));
    // A plain GET without the upgrade is told what to send.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v1/bus", node.local_addr()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);
    // Without a token there is no session.
    let request = format!("ws://{}/v1/bus", node.local_addr())
        .into_client_request()
        .unwrap();
    let error = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(error.to_string().contains("401"), "{error}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_by_subject() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let (alice, alice_token) =
        common::create_principal(&base, &admin, "alice", "ai", &["member"]).await;
    let (bob, bob_token) = common::create_principal(&base, &admin, "bob", "ai", &["member"]).await;
    let (_, watcher_token) =
        common::create_principal(&base, &admin, "watcher", "human", &["observer"]).await;
    let mut a = Client::connect(&node, &alice_token).await;
    let mut b = Client::connect(&node, &bob_token).await;
    let mut w = Client::connect(&node, &watcher_token).await;
    b.sub("inbox", &format!("agents.{bob}.inbox")).await;
    // Alice may write to Bob's inbox...
    assert_eq!(
        a.publish(&format!("agents.{bob}.inbox"), json!("hello"))
            .await["delivered"],
        1
    );
    let msg = b.recv().await;
    assert_eq!(msg["from"], json!(alice));
    // ...but not to his other subjects, nor read them, nor publish as the system.
    for (frame, subject) in [
        (
            json!({"op": "pub", "subject": format!("agents.{bob}.notes"), "data": 1}),
            format!("agents.{bob}.notes"),
        ),
        (
            json!({"op": "sub", "sid": "spy", "subject": format!("agents.{bob}.>")}),
            format!("agents.{bob}.>"),
        ),
        (
            json!({"op": "sub", "sid": "all", "subject": ">"}),
            ">".to_string(),
        ),
        (
            json!({"op": "pub", "subject": "colony.events.decision.fake", "data": 1}),
            "colony.events.decision.fake".to_string(),
        ),
        (
            json!({"op": "pub", "subject": "secret.plans", "data": 1}),
            "secret.plans".to_string(),
        ),
    ] {
        let answer = a.request(frame, "x").await;
        assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
        assert_eq!(answer["error"]["subject"], json!(subject));
    }
    // Members use work.>; observers only read.
    assert_eq!(a.publish("work.x", json!(1)).await["op"], "ok");
    w.sub("pub", "public.>").await;
    let answer = w.publish("public.chat", json!(1)).await;
    assert_eq!(answer["error"]["code"], "forbidden");
    node.shutdown().await.unwrap();
}

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

/// Publishes enough low-priority filler to a subscriber that does not read that
/// the node's queue for it stays full, then markers of every priority.
async fn fill_then_mark(publisher: &mut Client, subject: &str, filler: usize) {
    let chunk = "f".repeat(32 << 10);
    for _ in 0..filler {
        publisher
            .send(json!({"op": "pub", "subject": subject, "data": chunk, "priority": "low"}))
            .await;
    }
    for (n, priority) in [
        "low", "normal", "critical", "high", "normal", "critical", "low", "high",
    ]
    .iter()
    .enumerate()
    {
        publisher
            .send(json!({"op": "pub", "subject": subject, "data": {"marker": n, "priority": priority}, "priority": priority}))
            .await;
    }
    // A round trip makes sure the node has routed all of it.
    assert_eq!(
        publisher.request(json!({"op": "ping"}), "sync").await["op"],
        "pong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_contention_higher_priorities_are_delivered_first() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let bus = BusConfig {
        outbound_msgs_max: 100_000,
        outbound_bytes_max: 256 << 20,
        ..test_bus()
    };
    let (node, _base, admin) = start_with(data.path(), config.path(), bus).await;
    let mut slow = Client::connect(&node, &admin).await;
    slow.sub("s", "feed.>").await;
    let mut publisher = Client::connect(&node, &admin).await;
    // 2000 x 32 KiB = 64 MiB: far more than the socket buffers hold.
    fill_then_mark(&mut publisher, "feed.x", 2_000).await;
    let mut markers = Vec::new();
    while markers.len() < 8 {
        let msg = slow.recv().await;
        if msg["data"].get("marker").is_some() {
            markers.push(msg["priority"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        markers,
        ["critical", "critical", "high", "high", "normal", "normal", "low", "low"]
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_backpressure_policy_bounds_a_slow_consumer() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let bus = BusConfig {
        outbound_msgs_max: 64,
        outbound_bytes_max: 1 << 20,
        ..test_bus()
    };
    let (node, _base, admin) = start_with(data.path(), config.path(), bus).await;
    let mut fast = Client::connect(&node, &admin).await;
    fast.sub("f", "feed.>").await;
    let mut rejecting = Client::connect(&node, &admin).await;
    rejecting
        .request(json!({"op": "sub", "sid": "r", "subject": "feed.>", "backpressure": "reject_publisher"}), "s")
        .await;
    let mut dropping = Client::connect(&node, &admin).await;
    dropping.sub("d", "feed.>").await;
    let mut leaving = Client::connect(&node, &admin).await;
    leaving
        .request(
            json!({"op": "sub", "sid": "l", "subject": "feed.>", "backpressure": "disconnect"}),
            "s",
        )
        .await;
    let mut publisher = Client::connect(&node, &admin).await;
    let chunk = "b".repeat(64 << 10);
    let mut rejected_at = None;
    for n in 0..600u64 {
        let answer = publisher
            .request(
                json!({"op": "pub", "subject": "feed.x", "data": {"n": n, "pad": chunk}}),
                &format!("p{n}"),
            )
            .await;
        if answer["op"] == "err" {
            assert_eq!(answer["error"]["code"], "backpressure", "{answer}");
            assert!(answer["error"]["rejected"].as_u64().unwrap() >= 1);
            rejected_at.get_or_insert(n);
        }
        // The fast subscriber is never held back by the slow ones.
        let msg = fast.recv().await;
        assert_eq!(
            msg["data"]["n"].as_u64(),
            Some(n),
            "the fast subscriber gets everything, in order"
        );
    }
    assert!(
        rejected_at.is_some(),
        "the publisher was told about the slow subscriber"
    );

    // disconnect: the slow connection was closed with 1008.
    let close = loop {
        match tokio::time::timeout(PATIENCE, leaving.ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.unwrap();
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("slow consumer"), "{}", close.reason);

    // drop_oldest: a notice says how many were dropped, and the newest arrive.
    let mut dropped = 0;
    let mut last = 0;
    while last < 599 {
        let frame = dropping.recv().await;
        if frame["op"] == "err" {
            assert_eq!(frame["error"]["code"], "slow_consumer");
            dropped += frame["error"]["dropped"].as_u64().unwrap();
        } else {
            last = frame["data"]["n"].as_u64().unwrap();
        }
    }
    assert!(
        dropped > 0,
        "messages were dropped rather than queued without bound"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_gated_by_io_ops_at_the_edge() {
    let quotas = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/quotas.toml"),
    )
    .unwrap()
    .replace("io_ops = 10000", "io_ops = 20");
    let config = common::genesis_dir(&[("quotas.toml", &quotas)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let (address, token) =
        common::create_principal(&base, &admin, "chatty", "ai", &["member"]).await;
    let mut client = Client::connect(&node, &token).await;
    let mut allowed = 0;
    let mut denial = None;
    for n in 0..30 {
        let answer = client
            .publish(&format!("agents.{address}.log"), json!(n))
            .await;
        if answer["op"] == "ok" {
            allowed += 1;
        } else {
            denial.get_or_insert(answer);
        }
    }
    assert_eq!(allowed, 20, "exactly the quota");
    let denial = denial.unwrap();
    assert_eq!(denial["error"]["code"], "insufficient_resource", "{denial}");
    assert_eq!(denial["error"]["resource"], "io_ops");
    assert!(denial["error"]["retry_after"].as_u64().unwrap() >= 1);
    // The edge charges the kernel: the ledger shows the 20 io_ops.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let me: Value = reqwest::Client::new()
            .get(format!("{base}/v1/ledger/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let used = me["balances"]["io_ops"]["used"].as_u64();
        // Reading the ledger is a query, not a command: it costs nothing.
        if used == Some(20) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "io_ops were not charged: {me}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Waits until the node has seen connections close down to `open`.
async fn wait_for_connections(base: &str, token: &str, open: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let now: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix("colony_bus_connections "))
            .unwrap()
            .parse()
            .unwrap();
        if now == open {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} connections stay open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the decision log holds a record with `action` about `subject`.
async fn wait_for_decision(base: &str, token: &str, action: &str, subject: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let page = common::get_json(base, token, "/v1/audit?limit=1000").await;
        if let Some(record) = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == action && r["subject"] == subject)
        {
            return record.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {action} for {subject}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sessions_over_the_bus_survive_a_reconnect_within_grace_only() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let bus = BusConfig {
        worker_grace_ms: 2_000,
        ..test_bus()
    };
    let (node, base, admin) = start_with(data.path(), config.path(), bus).await;
    let (address, token) =
        common::create_principal(&base, &admin, "builder", "ai", &["member"]).await;
    let http = reqwest::Client::new();
    let posted = common::post_json(
        &base,
        &admin,
        "/v1/tasks",
        &json!({"title": "build it", "capabilities": ["rust"], "justification": "test"}),
    )
    .await;
    let task = posted["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{posted}"))
        .to_string();

    // hello registers a session; a claim for it holds the task.
    let mut client = Client::connect(&node, &token).await;
    let hello = client
        .request(
            json!({"op": "hello", "capabilities": ["rust"], "model": "scripted"}),
            "h",
        )
        .await;
    assert_eq!(hello["op"], "ok", "{hello}");
    assert_eq!(hello["status"], "active");
    assert!(hello["heartbeat_ms"].as_u64().unwrap() > 0);
    let worker = hello["worker"].as_u64().unwrap();
    let claim: Value = http
        .post(format!("{base}/v1/tasks/claim"))
        .bearer_auth(&token)
        .json(&json!({"worker": worker, "justification": "mine"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claim["task"]["address"], json!(task), "{claim}");
    assert_eq!(
        client.request(json!({"op": "heartbeat"}), "hb").await["op"],
        "ok"
    );

    // The connection drops and comes back within the grace period: still active.
    drop(client);
    wait_for_connections(&base, &admin, 0).await;
    let mut client = Client::connect(&node, &token).await;
    let resumed = client
        .request(json!({"op": "hello", "worker": worker}), "h2")
        .await;
    assert_eq!(resumed["resumed"], true, "{resumed}");
    wait_for_decision(&base, &admin, "worker.disconnected", &address).await;
    let state = common::get_json(&base, &admin, &format!("/v1/workers/{worker}")).await;
    assert_eq!(state["state"], "active", "{state}");

    // It drops again and stays away: lost, with the evidence, and its task is back.
    drop(client);
    let lost = wait_for_decision(&base, &admin, "worker.lost", &address).await;
    assert_eq!(lost["reason"]["code"], "worker_disconnected", "{lost}");
    assert_eq!(lost["reason"]["revoked"], json!([task]));
    let task_state = common::get_json(&base, &admin, &format!("/v1/tasks/{task}")).await;
    assert_eq!(task_state["status"], "pending", "{task_state}");

    // A graceful bye ends a session at once.
    let mut client = Client::connect(&node, &token).await;
    let hello = client
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h3")
        .await;
    let second = hello["worker"].as_u64().unwrap();
    let bye = client.request(json!({"op": "bye"}), "bye").await;
    assert_eq!(bye["status"], "left", "{bye}");
    let state = common::get_json(&base, &admin, &format!("/v1/workers/{second}")).await;
    assert_eq!(state["state"], "left", "{state}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_hello_is_told_when_its_session_is_admitted_and_withdrawn_when_gone() {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/limits.toml"),
    )
    .unwrap();
    let limits = shipped.replace(
        "[limits.active_workers]\n# Hypernet max_concurrent_workers; the swarm's soft_max_sessions/hard_max_sessions\n# (2/4 per machine) map here too. Enforced once worker sessions exist.\nsoft = 15\nhard = 30",
        "[limits.active_workers]\nsoft = 1\nhard = 3",
    );
    assert_ne!(limits, shipped, "the test edits active_workers");
    let config = common::genesis_dir(&[("limits.toml", &limits)]);
    let data = tempfile::tempdir().unwrap();
    let bus = BusConfig {
        worker_grace_ms: 200,
        ..test_bus()
    };
    let (node, base, admin) = start_with(data.path(), config.path(), bus).await;
    let (address, token) =
        common::create_principal(&base, &admin, "builder", "ai", &["member"]).await;

    let mut first = Client::connect(&node, &token).await;
    let active = first
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h1")
        .await;
    assert_eq!(active["status"], "active", "{active}");
    let mut second = Client::connect(&node, &token).await;
    let queued = second
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h2")
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let ticket = queued["worker"].as_u64().unwrap();

    // The first leaves: the queue admits the second, which is told so on its
    // connection and can heartbeat its session at once.
    let bye = first
        .request(json!({"op": "bye", "worker": active["worker"]}), "b1")
        .await;
    assert_eq!(bye["op"], "ok", "{bye}");
    let admitted = loop {
        let frame = second.recv().await;
        if frame["op"] == "admitted" {
            break frame;
        }
    };
    assert_eq!(admitted["worker"], json!(ticket));
    assert!(admitted["heartbeat_ms"].as_u64().unwrap() > 0);
    let beat = second
        .request(json!({"op": "heartbeat", "worker": ticket}), "hb")
        .await;
    assert_eq!(beat["op"], "ok", "{beat}");

    // A third hello waits behind the second; its connection drops, and once the
    // grace period runs out its registration leaves the queue.
    let mut third = Client::connect(&node, &token).await;
    let queued = third
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h3")
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");
    drop(third);
    let withdrawn = wait_for_decision(&base, &admin, "worker.withdraw", &address).await;
    assert_eq!(
        withdrawn["reason"]["code"], "worker_disconnected",
        "{withdrawn}"
    );
    let limits = common::get_json(&base, &admin, "/v1/limits/active_workers").await;
    assert_eq!(limits["queued"], json!(0), "{limits}");
    assert_eq!(
        limits["usage"],
        json!(1),
        "only the admitted session: {limits}"
    );
    node.shutdown().await.unwrap();
}
