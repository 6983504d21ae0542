//! The official `openai` Python package against the gateway (tests/python/openai_client.py):
//! a chat, a stream with usage, and the budget error once the budget is spent.
//! `.ci/run` installs the package; the test fails, saying so, when it is missing.

mod common;

use std::path::Path;
use std::process::Command;

use colony_node::gateway::mock::{self, MockState};
use colony_node::gateway::GatewayConfig;
use colony_node::{Node, NodeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_package_chats_streams_and_gets_the_budget_error() {
    let probe = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .expect("python3 is on the machine");
    assert!(
        probe.success(),
        "this test needs Python's openai package: pip install openai"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(mock::serve(listener, MockState::default()));
    let providers = format!(
        "[gateway]\ndefault_model = \"mock-mini\"\n\n[[upstreams]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\n\
         [[models]]\nname = \"mock-mini\"\nupstream = \"mock\"\ninput_usd_per_million = \"1.00\"\noutput_usd_per_million = \"2.00\"\n\n\
         [[models]]\nname = \"dear\"\nupstream = \"mock\"\ninput_usd_per_million = \"30000\"\noutput_usd_per_million = \"30000\"\n"
    );
    let gateway = GatewayConfig::parse(Path::new("providers.toml"), &providers, &|_| None).unwrap();
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        gateway: Some(gateway),
        ..common::node_config(data.path(), config.path())
    })
    .await
    .unwrap();
    let base = format!("http://{}", node.local_addr());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/principals"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "py", "kind": "ai", "justification": "the openai package test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/openai_client.py");
    let url = format!("{base}/v1");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(url)
            .arg(token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the openai client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    node.shutdown().await.unwrap();
}
