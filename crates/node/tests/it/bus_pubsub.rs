//! The bus's publish and subscribe through real WebSocket clients against a real node:
//! routing, queue groups, request-reply, malformed frames, authorization by subject,
//! priority order under contention, each backpressure policy, and edge gating.

use crate::common;

use colony_node::bus::BusConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use common::bus::*;

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
    // Alice may write to Bob's inbox (kept in the inbox stream, so the answer comes
    // once it is on disk)...
    assert_eq!(
        a.publish(&format!("agents.{bob}.inbox"), json!("hello"))
            .await["stream"],
        "inbox"
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
    // A session remembers the subject it was last allowed, and only that one: the
    // same again passes, the next other subject is checked as ever.
    assert_eq!(a.publish("work.x", json!(2)).await["op"], "ok");
    let answer = a
        .request(
            json!({"op": "pub", "subject": "secret.plans", "data": 1}),
            "x",
        )
        .await;
    assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
    assert_eq!(a.publish("work.x", json!(3)).await["op"], "ok");
    w.sub("pub", "public.>").await;
    let answer = w.publish("public.chat", json!(1)).await;
    assert_eq!(answer["error"]["code"], "forbidden");
    node.shutdown().await.unwrap();
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
    .replace("io_ops = 10000", "io_ops = 20")
    // A day's window: a run that straddled a turn of the one-minute one would get
    // a new allowance halfway.
    .replace("io_ops = \"1m\"", "io_ops = \"1d\"");
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

/// A browser cannot set headers on a WebSocket: it offers its token as the
/// subprotocol after `colony.bearer`, and the node names that subprotocol back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_presents_its_token_as_a_subprotocol() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let connect = |offered: String| {
        let mut request = format!("ws://{}/v1/bus", node.local_addr())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let (ws, response) = connect(format!("colony.bearer, {admin}")).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "colony.bearer"
    );
    let mut client = Client { ws };
    client.sub("events", "colony.events.>").await;
    common::create_principal(&base, &admin, "seen", "ai", &["member"]).await;
    let event = client.recv().await;
    assert_eq!(event["subject"], "colony.events.decision.principal.create");
    // A wrong token is refused before the upgrade.
    let refused = connect("colony.bearer, colony_nope".into())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    node.shutdown().await.unwrap();
}
