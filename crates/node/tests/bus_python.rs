//! A client not written in Rust: Python's `websockets` package, following
//! docs/protocol.md (tests/python/bus_client.py). `.ci/run` installs the package; the
//! test fails, saying so, when it is missing.

mod common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_follows_the_protocol_document() {
    let probe = Command::new("python3")
        .args(["-c", "import websockets.sync.client"])
        .status()
        .expect("python3 is on the machine");
    assert!(
        probe.success(),
        "this test needs Python's websockets package: pip install websockets"
    );
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
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/bus_client.py");
    let url = format!("ws://{}/v1/bus", node.local_addr());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(url)
            .arg(admin)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    node.shutdown().await.unwrap();
}
