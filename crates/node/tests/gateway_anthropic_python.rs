//! The official `anthropic` Python package against the gateway
//! (tests/python/anthropic_client.py): messages and streams through an Anthropic
//! upstream and an OpenAI-compatible one, and the budget error once the budget is
//! spent. `.ci/run` installs the package; the test fails, saying so, when it is missing.

mod common;

use std::path::Path;

use colony_node::gateway::mock::{self, MockState};
use colony_node::gateway::GatewayConfig;
use colony_node::{Node, NodeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_package_sends_messages_streams_and_gets_the_budget_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(mock::serve(listener, MockState::default()));
    let providers = format!(
        "[gateway]\ndefault_model = \"mock-mini\"\n\n\
         [[upstreams]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n\n\
         [[upstreams]]\nname = \"mock-anthropic\"\nkind = \"anthropic\"\nbase_url = \"{upstream}\"\n\n\
         [[models]]\nname = \"mock-mini\"\nupstream = \"mock\"\ninput_usd_per_million = \"1.00\"\noutput_usd_per_million = \"2.00\"\n\n\
         [[models]]\nname = \"mock-claude\"\nupstream = \"mock-anthropic\"\ninput_usd_per_million = \"1.00\"\noutput_usd_per_million = \"2.00\"\n\n\
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
    let (_, token) = common::create_principal(&base, &admin, "py", "ai", &[]).await;
    common::run_python("anthropic", "anthropic_client.py", vec![base, token]).await;
    node.shutdown().await.unwrap();
}
