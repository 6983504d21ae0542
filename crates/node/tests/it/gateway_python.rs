//! The official Python clients against the gateway: `openai`
//! (tests/python/openai_client.py: a chat, a stream with usage, the budget error once
//! the budget is spent) and `anthropic` (tests/python/anthropic_client.py: messages and
//! streams through an Anthropic upstream and an OpenAI-compatible one, the budget
//! error). `.ci/run` installs both packages; a test fails, saying so, when its package
//! is missing.

use crate::common;

use colony_node::gateway::mock::{self, MockState};

/// A node whose gateway serves the mock upstream in both shapes, and a principal's
/// token on it.
async fn start() -> (common::GatewayNode, String) {
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
    let started = common::start_with_gateway(&providers, &|_| None).await;
    let (_, token) = common::create_principal(&started.base, &started.admin, "py", "ai", &[]).await;
    (started, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_package_chats_streams_and_gets_the_budget_error() {
    let (started, token) = start().await;
    let base = format!("{}/v1", started.base);
    common::run_python("openai", "openai_client.py", vec![base, token]).await;
    started.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_package_sends_messages_streams_and_gets_the_budget_error() {
    let (started, token) = start().await;
    let base = started.base.clone();
    common::run_python("anthropic", "anthropic_client.py", vec![base, token]).await;
    started.node.shutdown().await.unwrap();
}
