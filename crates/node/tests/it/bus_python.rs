//! A client not written in Rust: Python's `websockets` package, following
//! docs/protocol.md (tests/python/bus_client.py). `.ci/run` installs the package; the
//! test fails, saying so, when it is missing.

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_follows_the_protocol_document() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let created = reqwest::Client::new()
        .post(format!("{base}/v1/streams"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "pylog", "subjects": ["py.log.>"], "justification": "the python test"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let url = format!("ws://{}/v1/bus", node.local_addr());
    common::run_python("websockets.sync.client", "bus_client.py", vec![url, admin]).await;
    node.shutdown().await.unwrap();
}
