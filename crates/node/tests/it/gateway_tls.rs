//! The gateway calls HTTPS upstreams: a mock upstream served by the test over TLS
//! with a certificate from a CA the test made, trusted through `ca_file`; chat,
//! streams and `/v1/messages` go through, and an upstream whose certificate does not
//! verify is a 502 that names it and the TLS error, never a call in plain text.

use crate::common;

use colony_mock_llm::MockState;
use serde_json::{json, Value};

struct Setup {
    base: String,
    admin: String,
    mock: MockState,
    _ca: common::TestCa,
    _node: common::GatewayNode,
}

async fn setup() -> Setup {
    let ca = common::test_ca();
    let mock = MockState::default();
    let upstream = common::serve_mock_tls(&ca, mock.clone()).await;
    let ca_file = ca.ca_file.display().to_string();
    let providers = format!(
        r#"
[gateway]
default_model = "secure-mini"
timeout = "5s"

[[upstreams]]
name = "secure"
kind = "openai"
base_url = "{upstream}"
api_key_envs = ["SECURE_KEY"]
ca_file = "{ca_file}"

[[upstreams]]
name = "secure-anthropic"
kind = "anthropic"
base_url = "{upstream}"
api_key_envs = ["ANTHROPIC_KEY"]
ca_file = "{ca_file}"

[[upstreams]]
name = "untrusted"
kind = "openai"
base_url = "{upstream}"
api_key_envs = ["UNTRUSTED_KEY"]

[[models]]
name = "secure-mini"
upstream = "secure"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
max_output_tokens = 100

[[models]]
name = "secure-claude"
upstream = "secure-anthropic"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
max_output_tokens = 100

[[models]]
name = "untrusted-mini"
upstream = "untrusted"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
max_output_tokens = 100
"#
    );
    let env = |name: &str| match name {
        "SECURE_KEY" => Some("secure-key".to_string()),
        "ANTHROPIC_KEY" => Some("anthropic-key".to_string()),
        "UNTRUSTED_KEY" => Some("untrusted-key".to_string()),
        _ => None,
    };
    let node = common::start_with_gateway(&providers, &env).await;
    Setup {
        base: node.base.clone(),
        admin: node.admin.clone(),
        mock,
        _ca: ca,
        _node: node,
    }
}

async fn post(base: &str, path: &str, token: &str, body: Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .header("x-api-key", token)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn calls(mock: &MockState, key: &str) -> u64 {
    mock.calls.lock().unwrap().get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_and_messages_reach_an_https_upstream() {
    let s = setup().await;
    let question = json!([{"role": "user", "content": "what is TLS"}]);

    let (status, text) = post(
        &s.base,
        "/v1/chat/completions",
        &s.admin,
        json!({"model": "secure-mini", "messages": question, "max_tokens": 20}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("mock answer"),
        "{answer}"
    );
    assert!(answer["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let (status, text) = post(
        &s.base,
        "/v1/chat/completions",
        &s.admin,
        json!({"model": "secure-mini", "messages": question, "max_tokens": 20, "stream": true,
               "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""content":"mock ""#), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(calls(&s.mock, "secure-key"), 2);

    let (status, text) = post(
        &s.base,
        "/v1/messages",
        &s.admin,
        json!({"model": "secure-claude", "max_tokens": 20, "messages": question}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let message: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(message["type"], "message", "{message}");
    assert!(message["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("mock answer"));

    let (status, text) = post(
        &s.base,
        "/v1/messages",
        &s.admin,
        json!({"model": "secure-claude", "max_tokens": 20, "messages": question, "stream": true}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(calls(&s.mock, "anthropic-key"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_that_does_not_verify_is_a_502_naming_it() {
    let s = setup().await;
    let (status, text) = post(
        &s.base,
        "/v1/chat/completions",
        &s.admin,
        json!({"model": "untrusted-mini", "max_tokens": 20,
               "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(status, 502, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert_eq!(error["error"]["code"], "upstream_failed", "{error}");
    assert!(
        message.contains("untrusted"),
        "names the upstream: {message}"
    );
    assert!(
        message.contains("certificate") && message.contains("UnknownIssuer"),
        "names the TLS error: {message}"
    );
    // The request never reached the upstream, in TLS or in plain text.
    assert_eq!(calls(&s.mock, "untrusted-key"), 0);
    // Nothing was charged: the reservation was released.
    let me = common::get_json(&s.base, &s.admin, "/v1/ledger/me").await;
    assert_eq!(
        me["balances"]["llm_budget_usd"]["reserved"],
        json!(0),
        "{me}"
    );
}
