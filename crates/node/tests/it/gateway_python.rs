//! The official Python clients against the gateway: `openai`
//! (tests/python/openai_client.py: a chat, a stream with usage, the budget error once
//! the budget is spent) and `anthropic` (tests/python/anthropic_client.py: messages and
//! streams through an Anthropic upstream and an OpenAI-compatible one, the budget
//! error), and the OpenAI Agents SDK (tests/python/agents_client.py: an agent with a
//! function tool, over the Responses API). The packages are in the tests' own Python
//! environment (`common::python`).

use crate::common;

use colony_mock_llm::MockState;

/// A node whose gateway serves the mock upstream in both shapes, and a principal's
/// token on it.
async fn start() -> (common::GatewayNode, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(common::serve_mock(listener, MockState::default()));
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

/// Issue 29: the OpenAI Agents SDK (`openai-agents`) runs an agent with one function
/// tool through Colony (the Responses API, its default): the model asks for the tool,
/// the SDK runs it, the model answers with its result; both turns are charged to the
/// micro-dollar and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_agents_sdk_runs_an_agent_with_a_tool_through_colony() {
    let (started, token) = start().await;
    let base = format!("{}/v1", started.base);
    common::run_python("agents", "agents_client.py", vec![base, token.clone()]).await;
    // Settlements are decided just after the answers: wait until none is pending.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let me = loop {
        let me = common::get_json(&started.base, &token, "/v1/ledger/me").await;
        if me["balances"]["llm_budget_usd"]["reserved"] == 0 {
            break me;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {me}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let address = me["principal"].as_str().unwrap().to_string();
    let audit = common::get_json(
        &started.base,
        &started.admin,
        &format!("/v1/audit?actor={address}&limit=1000"),
    )
    .await;
    let settles: Vec<&serde_json::Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "llm.settle" && r["decision"] == "allowed")
        .collect();
    assert_eq!(settles.len(), 2, "two model turns settled: {audit}");
    let mut charged = 0;
    for settle in &settles {
        // "llm call to mock-mini: X input + Y output tokens = Z micro-USD (...)"
        let said = settle["justification"].as_str().unwrap();
        let numbers: Vec<u64> = said
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        let (input, output, cost) = (numbers[0], numbers[1], numbers[2]);
        assert_eq!(cost, input + 2 * output, "$1/M in, $2/M out: {said}");
        charged += cost;
    }
    let budget = &me["balances"]["llm_budget_usd"];
    assert_eq!(budget["used"].as_u64(), Some(charged), "{budget}");
    started.node.shutdown().await.unwrap();
}
