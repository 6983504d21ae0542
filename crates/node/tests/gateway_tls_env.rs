//! `SSL_CERT_FILE` adds roots to every upstream call, as it does for OpenSSL, curl
//! and Python. One test in its own process, since it sets the variable.

mod common;

use colony_mock_llm::MockState;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_cert_file_is_trusted_besides_the_system_roots() {
    let ca = common::test_ca();
    // Set before any client exists; the only test of this process.
    std::env::set_var("SSL_CERT_FILE", &ca.ca_file);
    let mock = MockState::default();
    let upstream = common::serve_mock_tls(&ca, mock.clone()).await;
    let providers = format!(
        r#"
[gateway]
default_model = "secure-mini"
timeout = "5s"

[[upstreams]]
name = "secure"
kind = "openai"
base_url = "{upstream}"

[[models]]
name = "secure-mini"
upstream = "secure"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
max_output_tokens = 100
"#
    );
    let node = common::start_with_gateway(&providers, &|_: &str| None).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", node.base))
        .bearer_auth(&node.admin)
        .json(&json!({"model": "secure-mini", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("mock answer"));
}
