//! The bus attacked as one hostile agent would: holding every connection the node
//! may hold, filling the routing trie through many connections, and sending worker
//! commands without waiting for their answers.

use crate::common;

use colony_node::bus::BusConfig;
use serde_json::json;

use common::bus::*;

/// A node with `bus` and an AI member, `hoarder`.
struct Hoard {
    node: colony_node::Node,
    base: String,
    admin: String,
    address: String,
    token: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn with_hoarder(bus: BusConfig) -> Hoard {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), bus).await;
    let (address, token) =
        common::create_principal(&base, &admin, "hoarder", "ai", &["member"]).await;
    Hoard {
        node,
        base,
        admin,
        address,
        token,
        _dirs: (config, data),
    }
}

/// One agent opens connections until refused: it gets `connections_per_principal_max`
/// of them and a `429` naming its own bound, while another principal still connects;
/// closing one makes room for one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_hold_every_bus_connection() {
    let hoard = with_hoarder(BusConfig {
        connections_max: 10,
        connections_per_principal_max: 3,
        ..test_bus()
    })
    .await;
    let (node, base, admin, hoarder) = (&hoard.node, &hoard.base, &hoard.admin, &hoard.token);

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            Client::try_connect(node, hoarder)
                .await
                .expect("within its bound"),
        );
    }
    for _ in 0..5 {
        let (status, body) = Client::try_connect(node, hoarder)
            .await
            .err()
            .expect("past its bound");
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
        assert_eq!(body["error"]["scope"], "principal", "{body}");
        assert_eq!(body["error"]["max"], 3, "{body}");
    }
    let mut admin_client = Client::try_connect(node, admin)
        .await
        .expect("others get in");
    assert_eq!(
        admin_client.request(json!({"op": "ping"}), "p").await["op"],
        "pong"
    );

    drop(held.pop());
    wait_for_connections(base, admin, 3).await;
    held.push(
        Client::try_connect(node, hoarder)
            .await
            .expect("room again"),
    );
    let metrics = common::metrics(base, admin).await;
    assert!(
        metrics.contains("colony_bus_connections_refused_per_principal_total 5"),
        "{metrics}"
    );
}

/// A worker that sends heartbeats without waiting for their answers has at most
/// `WORKER_OPS_IN_FLIGHT_MAX` of them waiting for decisions; the rest are refused at
/// once with `too_many_in_flight`, and none reaches the node's command queue.
/// (The test holds the decider, so that no decision is made meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_flood_the_command_queue_from_one_connection() {
    use colony_node::bus::session::WORKER_OPS_IN_FLIGHT_MAX;
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let (_, token) = common::create_principal(&base, &admin, "eager", "ai", &["member"]).await;
    let mut client = Client::connect(&node, &token).await;
    let hello = client
        .request(json!({"op": "hello", "capabilities": ["rust"]}), "h")
        .await;
    assert_eq!(hello["op"], "ok", "{hello}");
    let worker = hello["worker"].as_u64().unwrap();

    let held = node.hold_decisions_for_tests();
    // A heartbeat is heard in memory (issue 30): answered while nothing is decided.
    assert_eq!(
        client.request(json!({"op": "heartbeat"}), "beat").await["op"],
        "ok"
    );
    // Worker commands (here `hello` resuming the session) wait for decisions.
    const SENT: usize = 20;
    for n in 0..SENT {
        client
            .send(json!({"op": "hello", "worker": worker, "id": format!("hb{n}")}))
            .await;
    }
    let mut refused = Vec::new();
    while refused.len() < SENT - WORKER_OPS_IN_FLIGHT_MAX {
        let frame = client.recv().await;
        assert_eq!(frame["op"], "err", "nothing is decided yet: {frame}");
        assert_eq!(frame["error"]["code"], "too_many_in_flight", "{frame}");
        assert_eq!(
            frame["error"]["max"],
            json!(WORKER_OPS_IN_FLIGHT_MAX),
            "{frame}"
        );
        refused.push(frame["id"].as_str().unwrap().to_string());
    }
    drop(held);

    // The first ones sent were let through and are answered once decided.
    let expected: Vec<String> = (WORKER_OPS_IN_FLIGHT_MAX..SENT)
        .map(|n| format!("hb{n}"))
        .collect();
    assert_eq!(refused, expected);
    let mut answered = 0;
    while answered < WORKER_OPS_IN_FLIGHT_MAX {
        let frame = client.recv().await;
        assert_eq!(frame["op"], "ok", "{frame}");
        answered += 1;
    }
    // Once answered, the connection may send more.
    assert_eq!(
        client.request(json!({"op": "heartbeat"}), "after").await["op"],
        "ok"
    );
}

/// One agent cannot fill the routing trie through many connections: all of its
/// connections together hold at most `subscriptions_per_principal_max`; a
/// subscription that ends, or a connection that closes, gives its places back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_fill_the_routing_trie() {
    let hoard = with_hoarder(BusConfig {
        subscriptions_per_connection_max: 4,
        subscriptions_per_principal_max: 5,
        ..test_bus()
    })
    .await;
    let (node, base, admin, address, token) = (
        &hoard.node,
        &hoard.base,
        &hoard.admin,
        &hoard.address,
        &hoard.token,
    );
    let subscribe = |n: usize| json!({"op": "sub", "sid": format!("s{n}"), "subject": format!("agents.{address}.{n}")});
    let mut first = Client::connect(node, token).await;
    for n in 0..4 {
        let answer = first.request(subscribe(n), &format!("a{n}")).await;
        assert_eq!(answer["op"], "ok", "{answer}");
    }
    let mut second = Client::connect(node, token).await;
    assert_eq!(second.request(subscribe(4), "b4").await["op"], "ok");
    let refused = second.request(subscribe(5), "b5").await;
    assert_eq!(
        refused["error"]["code"], "too_many_subscriptions",
        "{refused}"
    );
    assert_eq!(refused["error"]["scope"], "principal", "{refused}");
    assert_eq!(refused["error"]["max"], 5, "{refused}");
    // Another principal subscribes as it likes.
    let mut other = Client::connect(node, admin).await;
    other.sub("x", "work.>").await;
    // An unsubscription gives a place back...
    let unsub = first
        .request(json!({"op": "unsub", "sid": "s0"}), "u0")
        .await;
    assert_eq!(unsub["op"], "ok", "{unsub}");
    assert_eq!(second.request(subscribe(5), "b5-again").await["op"], "ok");
    // ... and a closed connection all of its own.
    drop(first);
    wait_for_connections(base, admin, 2).await;
    for n in 6..8 {
        let answer = second.request(subscribe(n), &format!("b{n}")).await;
        assert_eq!(answer["op"], "ok", "{answer}");
    }
}
