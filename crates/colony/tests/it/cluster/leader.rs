//! Every node talks to the NATS server that leads the command stream, and follows
//! it when leadership moves (`crates/cluster/src/leader.rs`); its consumer of the
//! stream lives there too (`crates/cluster/src/placement.rs`: the servers place it at
//! random, the node makes it again until it is there).

use serde_json::Value;

use super::nodes::until_all;
use crate::common::nats::NatsCluster;

/// The stream's leader when every node is connected to it and reads the stream
/// from a consumer on it.
async fn all_on_the_leader(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    not: Option<&str>,
) -> String {
    let on_leader = |view: &Value| {
        let leader = view["stream"]["leader"].as_str();
        leader.is_some()
            && leader != not
            && view["server"].as_str() == leader
            && view["follows_from"].as_str() == leader
    };
    until_all(http, urls, token, "/v1/cluster", on_leader).await;
    let view = super::nodes::get(http, &format!("{}/v1/cluster", urls[0]), token).await;
    view["stream"]["leader"].as_str().unwrap().to_string()
}

pub(super) async fn nodes_follow_the_streams_leader(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    nats: &NatsCluster,
    stream: &str,
) {
    let before = all_on_the_leader(http, urls, token, None).await;
    // The leader steps down: another server of the three takes the stream over.
    let servers: Vec<async_nats::ServerAddr> = nats
        .servers
        .iter()
        .map(|server| server.url().parse().unwrap())
        .collect();
    let client = async_nats::connect(servers).await.unwrap();
    let answer = client
        .request(
            format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
            "".into(),
        )
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer["success"], true, "{answer}");
    let after = all_on_the_leader(http, urls, token, Some(&before)).await;
    assert_ne!(before, after);
}
