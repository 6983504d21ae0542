//! Issue 31: a cluster whose NATS servers require TLS (a CA of the operator's) and a
//! user and password: the nodes connect with cluster.toml's `tls_ca_file`, `user`
//! and `password_env`, agree on one log, and a client without the password, or
//! without TLS, is refused by NATS before it can publish anything.

use std::time::Duration;

use serde_json::json;

use super::nodes::{admit, get, start_node_with, until_all, Nodes};
use crate::common::config_with;
use crate::common::nats::{NatsCluster, Secure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_nats_over_tls_with_credentials_and_strangers_are_refused() {
    let secure = Secure::new();
    let nats = NatsCluster::start_secure(3, &secure);
    let servers = nats.urls();
    assert!(servers.starts_with("tls://"), "{servers}");
    let toml = format!(
        "[cluster]\ntls_ca_file = \"{}\"\nuser = \"{}\"\npassword_env = \"COLONY_NATS_PASSWORD\"\n",
        secure.ca_file.display(),
        secure.user
    );
    let config = config_with(&[("cluster.toml", &toml)]);
    let data: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let env = [("COLONY_NATS_PASSWORD", secure.password.as_str())];
    let mut nodes = Nodes(Vec::new());
    let mut urls = Vec::new();
    for (i, dir) in data.iter().enumerate() {
        let (child, url) = start_node_with(
            dir.path(),
            config.path(),
            &servers,
            &format!("node-{}", i + 1),
            &env,
        );
        nodes.push(Some(child));
        urls.push(url);
    }
    let token = std::fs::read_to_string(data[0].path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    admit(&http, &urls[0], &token, "node-2", data[1].path()).await;
    let posted = http
        .post(format!("{}/v1/tasks", urls[1]))
        .bearer_auth(&token)
        .json(&json!({"title": "over TLS", "justification": "a secure cluster"}))
        .send()
        .await
        .unwrap();
    assert!(
        posted.status().is_success(),
        "{}",
        posted.text().await.unwrap()
    );
    until_all(&http, &urls, &token, "/v1/tasks", |list| {
        list["tasks"]
            .as_array()
            .is_some_and(|tasks| tasks.len() == 1)
    })
    .await;
    let view = get(&http, &format!("{}/v1/cluster", urls[0]), &token).await;
    assert_eq!(view["admitted"].as_array().unwrap().len(), 2, "{view}");

    // Strangers: no password, or no TLS.
    let port = nats.servers[0].port;
    let no_password = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new()
            .add_root_certificates(secure.ca_file.clone())
            .require_tls(true)
            .connect(format!("tls://127.0.0.1:{port}")),
    )
    .await;
    assert!(
        !matches!(no_password, Ok(Ok(_))),
        "NATS took a client without the password"
    );
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new()
            .user_and_password(secure.user.clone(), secure.password.clone())
            .connect(format!("nats://127.0.0.1:{port}")),
    )
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "NATS took a client without TLS"
    );
    let with_both = async_nats::ConnectOptions::new()
        .add_root_certificates(secure.ca_file.clone())
        .require_tls(true)
        .user_and_password(secure.user.clone(), secure.password.clone())
        .connect(format!("tls://127.0.0.1:{port}"))
        .await;
    assert!(with_both.is_ok(), "the right credentials are taken");
    drop(nodes);
}
