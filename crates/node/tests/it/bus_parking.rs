//! Idle bus connections park without a task of their own, and every kind of wake
//! brings them back: a frame from the client, a message for them, a close asked by
//! the node (a revoked token), the client going away.

use crate::common;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use common::bus::*;

const PARKED: &str = "colony_bus_connections_parked";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_park_and_every_wake_brings_them_back() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = start_with(data.path(), config.path(), test_bus()).await;
    let mut subscriber = Client::connect(&node, &admin).await;
    subscriber.sub("s", "park.>").await;
    let mut publisher = Client::connect(&node, &admin).await;
    wait_for_figure(&base, &admin, PARKED, 2).await;

    // A frame from a parked client is read and answered; a message for a parked
    // subscriber is delivered.
    let answer = publisher.publish("park.one", json!({"n": 1})).await;
    assert_eq!(answer, json!({"op": "ok", "id": "p", "delivered": 1}));
    let msg = subscriber.recv().await;
    assert_eq!(
        (&msg["subject"], &msg["data"]),
        (&json!("park.one"), &json!({"n": 1}))
    );
    wait_for_figure(&base, &admin, PARKED, 2).await;

    // Again, after parking a second time, and in the other direction.
    let pong = subscriber.request(json!({"op": "ping"}), "again").await;
    assert_eq!(pong["op"], "pong");
    subscriber.sub("t", "back.>").await;
    wait_for_figure(&base, &admin, PARKED, 2).await;
    let answer = publisher.publish("back.two", json!(2)).await;
    assert_eq!(answer["delivered"], 1);
    assert_eq!(subscriber.recv().await["sid"], "t");
    wait_for_figure(&base, &admin, PARKED, 2).await;

    // The node closes a parked connection: its token is revoked.
    let (agent, primary) =
        common::create_principal(&base, &admin, "agent", "ai", &["member"]).await;
    let (status, made) = common::send(
        reqwest::Method::POST,
        &base,
        &primary,
        &format!("/v1/principals/{agent}/tokens"),
        Some(json!({"name": "bus", "scopes": ["bus"], "justification": "parks"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let mut agent_client = Client::connect(&node, made["token"].as_str().unwrap()).await;
    wait_for_figure(&base, &admin, PARKED, 3).await;
    let (status, revoked) = common::send(
        reqwest::Method::DELETE,
        &base,
        &admin,
        &format!("/v1/principals/{agent}/tokens/{}", made["id"]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    let close = loop {
        match tokio::time::timeout(PATIENCE, agent_client.ws.next())
            .await
            .expect("the parked connection closes in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("revoked"), "{}", close.reason);
    wait_for_connections(&base, &admin, 2).await;
    wait_for_figure(&base, &admin, PARKED, 2).await;

    // Clients that go away: one says goodbye, one just drops its socket.
    subscriber.ws.send(Message::Close(None)).await.unwrap();
    wait_for_connections(&base, &admin, 1).await;
    drop(publisher);
    wait_for_connections(&base, &admin, 0).await;
    wait_for_figure(&base, &admin, PARKED, 0).await;
    node.shutdown().await.unwrap();
}
