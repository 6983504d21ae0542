//! The LLM gateway against a mock OpenAI-compatible upstream on loopback: budgets
//! reserved and settled to the exact cost, denials in OpenAI's error shape, streaming
//! with usage, key rotation on 429, fallback on 5xx, task budgets, the scripted
//! provider, and Anthropic's shape.

use crate::common;

use std::time::Duration;

use colony_mock_llm::MockState;
use colony_node::Node;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) struct Setup {
    pub(crate) node: Node,
    pub(crate) base: String,
    pub(crate) admin: String,
    pub(crate) mock: MockState,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

pub(crate) async fn setup() -> Setup {
    setup_with("").await
}

async fn setup_with(gateway_extra: &str) -> Setup {
    setup_traced(gateway_extra, None).await
}

/// A node whose gateway uses the mock upstream; `gateway_extra` goes into
/// `[gateway]`; its spans exported as `telemetry` says.
pub(crate) async fn setup_traced(
    gateway_extra: &str,
    telemetry: Option<colony_node::telemetry::TelemetryConfig>,
) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/v1", listener.local_addr().unwrap());
    let mock = MockState::default();
    tokio::spawn(common::serve_mock(listener, mock.clone()));
    let providers = format!(
        r#"
[gateway]
default_model = "mock-mini"
timeout = "5s"
tokens_per_minute_per_principal = 100000
{gateway_extra}

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "{upstream}"
api_key_envs = ["MOCK_KEYS"]

[[upstreams]]
name = "down"
kind = "openai"
base_url = "{upstream}"
api_key_envs = ["BROKEN_KEYS"]

[[upstreams]]
name = "scripted"
kind = "scripted"

[[upstreams]]
name = "mock-anthropic"
kind = "anthropic"
base_url = "{upstream}"
api_key_envs = ["ANTHROPIC_KEYS"]

[[models]]
name = "mock-mini"
upstream = "mock"
upstream_model = "mini-upstream"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
max_output_tokens = 100

[[models]]
name = "pricey"
upstream = "mock"
input_usd_per_million = "100000.00"
output_usd_per_million = "100000.00"

[[models]]
name = "primary"
upstream = "down"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
fallback = ["mock-mini"]

[[models]]
name = "mock-claude"
upstream = "mock-anthropic"
upstream_model = "claude-upstream"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"

[[models]]
name = "colony-scripted"
upstream = "scripted"
input_usd_per_million = "1.00"
output_usd_per_million = "2.00"
"#
    );
    let env = |name: &str| match name {
        "MOCK_KEYS" => Some("limited-1,good-1".to_string()),
        "BROKEN_KEYS" => Some("broken-1".to_string()),
        "ANTHROPIC_KEYS" => Some("good-anthropic".to_string()),
        _ => None,
    };
    let started = common::start_with_gateway_traced(&providers, &env, telemetry).await;
    Setup {
        base: started.base,
        node: started.node,
        admin: started.admin,
        mock,
        _dirs: started.dirs,
    }
}

pub(crate) async fn call(
    base: &str,
    path: &str,
    token: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn get(base: &str, path: &str, token: &str) -> Value {
    common::get_json(base, token, path).await
}

pub(crate) async fn ai(base: &str, admin: &str, name: &str) -> String {
    common::create_principal(base, admin, name, "ai", &["member"])
        .await
        .1
}

/// Waits until the caller's llm_budget_usd shows `used` and nothing reserved.
pub(crate) async fn wait_for_budget(base: &str, token: &str, used: u64) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let me = get(base, "/v1/ledger/me", token).await;
        let budget = me["balances"]["llm_budget_usd"].clone();
        if budget["used"] == json!(used) && budget["reserved"] == json!(0) {
            return budget;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "budget never settled at {used}: {budget}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the decision log holds `needle` (settlements are synced shortly after
/// they are decided); returns the log's first page as text.
async fn wait_for_audit(base: &str, admin: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = get(base, "/v1/audit?limit=500", admin).await.to_string();
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle:?} never appeared in the decision log: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hello() -> Value {
    json!({"model": "mock-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reserves_then_settles_to_the_exact_cost_and_rotates_past_a_rate_limited_key() {
    let s = setup().await;
    let token = ai(&s.base, &s.admin, "caller").await;
    let (status, headers, text) = call(&s.base, "/v1/chat/completions", &token, hello(), &[]).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["usage"]["prompt_tokens"], 10);
    assert_eq!(answer["usage"]["completion_tokens"], 12);
    assert_eq!(
        answer["model"], "mini-upstream",
        "the upstream's name for the model is used"
    );
    // 10 input tokens at $1/M + 12 output at $2/M = 34 micro-dollars, exactly.
    assert_eq!(headers["x-colony-cost-micro-usd"], "34");
    let reserved: u64 = headers["x-colony-reserved-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reserved >= 34 + 2 * 50,
        "the reservation covered the bound: {reserved}"
    );
    wait_for_budget(&s.base, &token, 34).await;
    // The first key was rate-limited, the second answered; the first now cools down.
    let calls = s.mock.calls.lock().unwrap().clone();
    assert_eq!(calls.get("limited-1"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("good-1"), Some(&1), "{calls:?}");
    let (status, _, _) = call(&s.base, "/v1/chat/completions", &token, hello(), &[]).await;
    assert_eq!(status, 200);
    let calls = s.mock.calls.lock().unwrap().clone();
    assert_eq!(
        calls.get("limited-1"),
        Some(&1),
        "a cooling key is skipped: {calls:?}"
    );
    wait_for_budget(&s.base, &token, 68).await;
    // The decision log has both steps, with model and tokens (readable once the
    // batch holding them is synced, which may be just after the state shows them).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let commits: Vec<Value> = loop {
        let audit = get(&s.base, "/v1/audit?limit=1000", &s.admin).await;
        let commits: Vec<Value> = audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "llm.settle")
            .cloned()
            .collect();
        if commits.len() == 2 {
            break commits;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "commits in the log: {commits:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let why = commits[0]["justification"].as_str().unwrap();
    assert!(
        why.contains("mock-mini") && why.contains("10 input + 12 output tokens = 34 micro-USD"),
        "{why}"
    );
    assert!(
        !why.contains("hello there"),
        "no prompt in the log unless asked"
    );
    s.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_budget_cannot_cover_is_denied_in_openai_shape() {
    let s = setup().await;
    let token = ai(&s.base, &s.admin, "poor").await;
    let mut body = hello();
    body["model"] = json!("pricey");
    let (status, headers, text) = call(&s.base, "/v1/chat/completions", &token, body, &[]).await;
    assert_eq!(status, 429, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "insufficient_quota");
    assert_eq!(error["error"]["code"], "insufficient_resource");
    assert_eq!(error["error"]["colony"]["resource"], "llm_budget_usd");
    assert_eq!(error["error"]["colony"]["available"], 2_000_000);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not enough llm_budget_usd"));
    assert!(headers.get("x-colony-cost-micro-usd").is_none());
    assert!(
        s.mock.calls.lock().unwrap().is_empty(),
        "the upstream was never called"
    );
    // Past the principal's tokens per minute (estimate included): rate_limited.
    let mut body = hello();
    body["max_tokens"] = json!(200_000);
    let (status, headers, text) = call(&s.base, "/v1/chat/completions", &token, body, &[]).await;
    assert_eq!(status, 429, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_exceeded");
    assert_eq!(error["error"]["code"], "rate_limited");
    assert_eq!(
        error["error"]["colony"]["limit"],
        "tokens_per_minute_per_principal"
    );
    assert_eq!(error["error"]["colony"]["max"], 100_000);
    assert!(headers.contains_key("retry-after"));
    // Unknown model, bad body: OpenAI-shaped too.
    let (status, _, text) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        json!({"model": "nope", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["code"],
        "model_not_found"
    );
    let (status, _, text) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        json!({"messages": []}),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["type"],
        "invalid_request_error"
    );
    wait_for_budget(&s.base, &token, 0).await;
    s.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_relays_events_and_settles_from_the_usage_chunk() {
    let s = setup().await;
    let token = ai(&s.base, &s.admin, "streamer").await;
    let mut body = hello();
    body["stream"] = json!(true);
    let (status, headers, text) = call(&s.base, "/v1/chat/completions", &token, body, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let usage: Value = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|e| e["usage"].is_object())
        .expect("the gateway asked for and relays the usage chunk")["usage"]
        .clone();
    assert_eq!(usage["completion_tokens"], 12);
    wait_for_budget(&s.base, &token, 34).await;
    s.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_falls_back_and_the_task_budget_is_charged() {
    let s = setup().await;
    let token = ai(&s.base, &s.admin, "worker").await;
    let (status, _, text) = call(
        &s.base,
        "/v1/tasks",
        &s.admin,
        json!({"title": "summarize", "capabilities": ["writing"], "budget_usd": "0.01", "justification": "t"}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let task = serde_json::from_str::<Value>(&text).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    // Not the lease holder yet: refused.
    let (status, _, text) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        hello(),
        &[("x-colony-task", &task)],
    )
    .await;
    assert_eq!(status, 403, "{text}");
    let (status, _, text) = call(
        &s.base,
        "/v1/tasks/claim",
        &token,
        json!({"capabilities": ["writing"], "justification": "mine"}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let mut body = hello();
    body["model"] = json!("primary");
    let (status, headers, text) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        body,
        &[("x-colony-task", &task)],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        headers["x-colony-model"], "mock-mini",
        "fell back after the 500"
    );
    assert_eq!(s.mock.calls.lock().unwrap().get("broken-1"), Some(&1));
    wait_for_budget(&s.base, &token, 34).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let shown = get(&s.base, &format!("/v1/tasks/{task}"), &s.admin).await;
        if shown["budget"]["spent_micro_usd"] == json!(34) {
            assert_eq!(shown["budget"]["remaining_micro_usd"], json!(10_000 - 34));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task budget not charged: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A streamed call for the task: its charge is decided before the stream's last
    // event goes out, so the task shows it as soon as the stream is read.
    let mut body = hello();
    body["stream"] = json!(true);
    let (status, _, text) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        body,
        &[("x-colony-task", &task)],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let shown = get(&s.base, &format!("/v1/tasks/{task}"), &s.admin).await;
    assert_eq!(shown["budget"]["spent_micro_usd"], json!(68), "{shown}");
    s.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripted_provider_and_anthropics_shape_work_offline() {
    let s = setup().await;
    let token = ai(&s.base, &s.admin, "offline").await;
    let mut body = hello();
    body["model"] = json!("colony-scripted");
    let (status, headers, text) =
        call(&s.base, "/v1/chat/completions", &token, body.clone(), &[]).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert!(answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("[scripted]"));
    assert_eq!(answer["system_fingerprint"], "colony-scripted");
    let cost: u64 = headers["x-colony-cost-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0);
    // The same again gives the same answer.
    let (_, _, again) = call(&s.base, "/v1/chat/completions", &token, body, &[]).await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["choices"], answer["choices"]);

    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", s.base))
        .header("x-api-key", &token)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "mock-mini", "max_tokens": 20, "system": "be brief",
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["type"], "text");
    assert!(
        message["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("mock answer: hi"),
        "{message}"
    );
    // Two messages (system + user): 20 input tokens; 12 output: 20 + 24 = 44.
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 20, "output_tokens": 12})
    );
    wait_for_budget(&s.base, &token, 2 * cost + 44).await;
    // A bad key in Anthropic's shape.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", s.base))
        .header("x-api-key", "nope")
        .json(&json!({"model": "mock-mini", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");
    let models = get(&s.base, "/v1/models", &token).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"mock-mini") && ids.contains(&"colony-scripted") && ids.contains(&"auto"),
        "{ids:?}"
    );
    s.node.shutdown().await.unwrap();
}

/// Reads an SSE body in Anthropic's shape: (event name, payload) pairs, checking
/// that each `event:` line names its payload's type.
fn anthropic_events(text: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(event) = line.strip_prefix("event: ") {
            name = Some(event.to_string());
        } else if let Some(data) = line.strip_prefix("data: ") {
            let payload: Value = serde_json::from_str(data).unwrap();
            assert_eq!(Some(payload["type"].as_str().unwrap()), name.as_deref());
            events.push(payload);
        }
    }
    events
}

async fn messages_stream(
    base: &str,
    token: &str,
    model: &str,
) -> (reqwest::header::HeaderMap, Vec<Value>) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", token)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": model, "max_tokens": 20, "stream": true, "system": "be brief",
                      "messages": [{"role": "user", "content": "how far is the moon"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    (headers, anthropic_events(&response.text().await.unwrap()))
}

fn streamed_text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streams_are_relayed_or_made_from_openai_streams_and_settled_exactly() {
    let s = setup().await;
    let token = ai(&s.base, &s.admin, "anthropic-streamer").await;

    // An Anthropic upstream: its events are relayed as they are, usage read from
    // message_start and message_delta (system + user = 20 input, 12 output: 44).
    let (_, events) = messages_stream(&s.base, &token, "mock-claude").await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(kinds.last(), Some(&"message_stop"));
    assert!(kinds.contains(&"ping"), "relayed untouched: {kinds:?}");
    assert_eq!(events[0]["message"]["model"], "claude-upstream");
    assert_eq!(streamed_text(&events), "mock answer: how far is the moon");
    wait_for_budget(&s.base, &token, 44).await;
    assert_eq!(s.mock.calls.lock().unwrap()["good-anthropic"], 1);

    // An OpenAI-compatible upstream: its chunks become Anthropic's events, with the
    // usage of its usage chunk in message_delta.
    let (headers, events) = messages_stream(&s.base, &token, "mock-mini").await;
    assert_eq!(headers["x-colony-model"], "mock-mini");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds[..2],
        ["message_start", "content_block_start"],
        "{kinds:?}"
    );
    assert_eq!(
        kinds[kinds.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert_eq!(streamed_text(&events), "mock answer: how far is the moon");
    let delta = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 20, "output_tokens": 12})
    );
    wait_for_budget(&s.base, &token, 88).await;

    // The scripted provider streams the same way, offline, and says what it is.
    let (headers, events) = messages_stream(&s.base, &token, "colony-scripted").await;
    assert!(streamed_text(&events).starts_with("[scripted]"));
    let cost: u64 = headers["x-colony-cost-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(
        cost,
        usage["input_tokens"].as_u64().unwrap() + 2 * usage["output_tokens"].as_u64().unwrap()
    );
    wait_for_budget(&s.base, &token, 88 + cost).await;

    // Each call is in the decision log with its tokens and cost, without the prompt.
    let text = wait_for_audit(
        &s.base,
        &s.admin,
        "llm call to mock-claude: 20 input + 12 output tokens = 44 micro-USD",
    )
    .await;
    assert!(
        !text.contains("how far is the moon"),
        "no prompt in the log"
    );
    s.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_are_logged_only_when_the_configuration_asks() {
    let s = setup_with("log_prompts = true").await;
    let token = ai(&s.base, &s.admin, "logged").await;
    let mut body = hello();
    body["messages"][0]["content"] = json!("the secret word is \"heliotrope\"");
    let (status, _, text) = call(&s.base, "/v1/chat/completions", &token, body, &[]).await;
    assert_eq!(status, 200, "{text}");
    // The reservation's record carries the prompt (JSON of the messages).
    let text = wait_for_audit(
        &s.base,
        &s.admin,
        "llm call to mock-mini: 10 input + 12 output tokens = 34 micro-USD",
    )
    .await;
    assert!(text.contains("; prompt: [{"), "{text}");
    assert!(text.contains("heliotrope"), "{text}");
    s.node.shutdown().await.unwrap();
}
