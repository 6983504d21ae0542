//! Issue 29: the gateway's calls in OpenTelemetry. A node exporting to an OTLP/HTTP
//! receiver (tests/python/otlp_receiver.py, which decodes what it gets with the
//! official `opentelemetry-proto` messages, or OTLP's JSON) sends a span per call
//! with the GenAI semantic conventions' attributes and Colony's own, a span per
//! upstream attempt (two when the first model fails over), a span per kernel
//! decision (reserve, settle), the caller's `traceparent` as the call's parent, the
//! attempt's context to the upstream, and never a prompt unless `log_prompts`.

use std::path::PathBuf;
use std::time::Duration;

use colony_node::telemetry::{OtlpProtocol, TelemetryConfig};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use super::gateway::{ai, call, setup_traced};
use crate::common;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

/// The receiver, running until dropped.
struct Receiver {
    _child: tokio::process::Child,
    url: String,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

async fn receiver() -> Receiver {
    let python = tokio::task::spawn_blocking(common::python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spans.jsonl");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python/otlp_receiver.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the OTLP receiver starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the OTLP receiver says where it listens within 60 s")
        .unwrap()
        .expect("the OTLP receiver printed its port");
    let port = line.strip_prefix("listening ").expect("listening PORT");
    Receiver {
        _child: child,
        url: format!("http://127.0.0.1:{port}/v1/traces"),
        out,
        _dir: dir,
    }
}

impl Receiver {
    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// The call spans (those the node made for a request), by requested model and
/// operation.
fn calls<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn children<'a>(spans: &'a [Value], parent: &Value) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["parent_span_id"] == parent["span_id"] && s["trace_id"] == parent["trace_id"])
        .collect()
}

fn named<'a>(spans: &[&'a Value], name: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .copied()
        .filter(|s| s["name"] == name)
        .collect()
}

const SERVER: i64 = 2; // SPAN_KIND_SERVER
const CLIENT: i64 = 3; // SPAN_KIND_CLIENT
const ERROR: i64 = 2; // STATUS_CODE_ERROR

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_a_span_with_its_attempts_and_decisions_under_the_callers_trace() {
    let receiver = receiver().await;
    let telemetry = TelemetryConfig::new(receiver.url.clone(), OtlpProtocol::HttpProtobuf);
    let s = setup_traced("", Some(telemetry)).await;
    let token = ai(&s.base, &s.admin, "traced").await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let me = common::get_json(&s.base, &token, "/v1/ledger/me").await;
    let principal = me["principal"].clone();

    // A chat, under the caller's trace.
    let (status, headers, text) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        json!({"model": "mock-mini", "messages": [{"role": "user", "content": "secret prompt"}], "max_tokens": 20}),
        &[("traceparent", traceparent.as_str())],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let chat_cost: i64 = headers["x-colony-cost-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // A stream, a fallback (the first model's upstream fails), the Responses API,
    // embeddings, Anthropic's shape.
    let (status, _, _) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        json!({"model": "mock-mini", "stream": true, "messages": [{"role": "user", "content": "stream it"}]}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, text) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        json!({"model": "primary", "messages": [{"role": "user", "content": "fall back"}]}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = call(
        &s.base,
        "/v1/responses",
        &token,
        json!({"model": "mock-mini", "input": "respond", "max_output_tokens": 30}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = call(
        &s.base,
        "/v1/embeddings",
        &token,
        json!({"model": "mock-mini", "input": ["one", "two"]}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Refused: a model that does not exist, and one the budget cannot cover.
    let (status, _, _) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        json!({"model": "nope", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, refused) = call(
        &s.base,
        "/v1/chat/completions",
        &token,
        json!({"model": "pricey", "messages": [{"role": "user", "content": "too dear"}]}),
        &[],
    )
    .await;
    assert_eq!(status, 429, "{refused}");
    let refused: Value = serde_json::from_str(&refused).unwrap();
    let traced_upstream = s.mock.traceparents.lock().unwrap().clone();
    // Stopping exports what is left (the settlements' decisions included).
    s.node.shutdown().await.unwrap();

    let spans = receiver.spans();
    assert!(!spans.is_empty(), "no span reached the receiver");
    for span in &spans {
        assert_eq!(span["resource"]["service.name"], "colony", "{span}");
        assert_eq!(span["scope"], "colony");
        assert!(span["end"].as_u64() >= span["start"].as_u64(), "{span}");
        // Prompts stay out of traces unless log_prompts.
        assert!(
            !span.to_string().contains("secret prompt"),
            "a prompt was exported: {span}"
        );
    }

    // The chat: a child of the caller's span, in its trace, with the conventions'
    // attributes and Colony's.
    let chats = calls(&spans, "chat mock-mini");
    let chat = chats
        .iter()
        .find(|s| s["trace_id"] == TRACE_ID)
        .unwrap_or_else(|| panic!("no call span in the caller's trace: {spans:#?}"));
    assert_eq!(chat["parent_span_id"], PARENT_ID);
    assert_eq!(chat["kind"], SERVER);
    assert_eq!(attr(chat, "gen_ai.operation.name"), "chat");
    assert_eq!(attr(chat, "gen_ai.provider.name"), "openai");
    assert_eq!(attr(chat, "gen_ai.request.model"), "mock-mini");
    assert_eq!(attr(chat, "gen_ai.request.max_tokens"), 20);
    assert_eq!(attr(chat, "gen_ai.response.model"), "mock-mini");
    // The mock counts 10 tokens a message and answers min(max_tokens, 12).
    assert_eq!(attr(chat, "gen_ai.usage.input_tokens"), 10);
    assert_eq!(attr(chat, "gen_ai.usage.output_tokens"), 12);
    assert_eq!(
        attr(chat, "gen_ai.response.finish_reasons"),
        &json!(["stop"])
    );
    assert_eq!(attr(chat, "colony.charged_micro_usd"), chat_cost);
    assert_eq!(chat_cost, 10 + 24);
    assert_eq!(attr(chat, "colony.principal"), &principal);
    assert!(attr(chat, "colony.reservation").as_i64().unwrap() > 0);
    assert!(attr(chat, "colony.reserved_micro_usd").as_i64().unwrap() >= chat_cost);
    assert_eq!(attr(chat, "http.response.status_code"), 200);
    let under = children(&spans, chat);
    let attempts = named(&under, "attempt mock-mini");
    assert_eq!(attempts.len(), 1, "{under:#?}");
    assert_eq!(attempts[0]["kind"], CLIENT);
    assert_eq!(attr(attempts[0], "gen_ai.request.model"), "mini-upstream");
    assert_eq!(attr(attempts[0], "http.response.status_code"), 200);
    let reserve = named(&under, "colony.kernel reserve");
    assert_eq!(reserve.len(), 1, "{under:#?}");
    assert_eq!(attr(reserve[0], "colony.decision"), "allowed");
    assert_eq!(
        attr(reserve[0], "colony.reservation"),
        attr(chat, "colony.reservation")
    );
    assert!(attr(reserve[0], "colony.decision.seq").as_i64().unwrap() > 0);
    let settle = named(&under, "colony.kernel settle");
    assert_eq!(settle.len(), 1, "{under:#?}");
    assert_eq!(attr(settle[0], "colony.decision"), "allowed");
    assert!(
        attr(settle[0], "colony.decision.seq").as_i64()
            > attr(reserve[0], "colony.decision.seq").as_i64()
    );
    // The upstream got the attempt's context.
    let expected = format!(
        "00-{TRACE_ID}-{}-01",
        attempts[0]["span_id"].as_str().unwrap()
    );
    assert!(
        traced_upstream.contains(&expected),
        "the upstream got {traced_upstream:?}, not {expected}"
    );

    // The stream: its usage and cost on the span, ended with the stream.
    let stream = chats
        .iter()
        .find(|s| s["trace_id"] != TRACE_ID)
        .expect("the streamed call's span");
    assert_eq!(attr(stream, "gen_ai.usage.input_tokens"), 10);
    assert_eq!(attr(stream, "gen_ai.usage.output_tokens"), 12);
    assert_eq!(attr(stream, "colony.charged_micro_usd"), 34);
    assert_eq!(
        named(&children(&spans, stream), "colony.kernel settle").len(),
        1
    );

    // The fallback: two attempts, the first failed, the second answered.
    let fallback = calls(&spans, "chat primary");
    assert_eq!(fallback.len(), 1);
    let under = children(&spans, fallback[0]);
    let failed = named(&under, "attempt primary");
    let answered = named(&under, "attempt mock-mini");
    assert_eq!((failed.len(), answered.len()), (1, 1), "{under:#?}");
    assert_eq!(failed[0]["status"], ERROR);
    assert_eq!(attr(failed[0], "error.type"), "upstream_failed");
    assert!(failed[0]["end"].as_u64() <= answered[0]["start"].as_u64());
    assert_eq!(attr(fallback[0], "gen_ai.response.model"), "mock-mini");

    // The Responses API and embeddings.
    let responses: Vec<&Value> = chats
        .iter()
        .copied()
        .filter(|s| attr(s, "gen_ai.response.finish_reasons") == &json!(["completed"]))
        .collect();
    assert_eq!(responses.len(), 1, "{chats:#?}");
    let embeddings = calls(&spans, "embeddings mock-mini");
    assert_eq!(embeddings.len(), 1);
    assert_eq!(attr(embeddings[0], "gen_ai.operation.name"), "embeddings");
    assert!(
        attr(embeddings[0], "gen_ai.usage.input_tokens")
            .as_i64()
            .unwrap()
            > 0
    );
    assert_eq!(attr(embeddings[0], "gen_ai.usage.output_tokens"), 0);

    // Refusals: the code and the error, and nothing reached an upstream.
    let unknown = calls(&spans, "chat nope");
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["status"], ERROR);
    assert_eq!(attr(unknown[0], "colony.refusal.code"), "model_not_found");
    assert_eq!(attr(unknown[0], "http.response.status_code"), 404);
    let dear = calls(&spans, "chat pricey");
    assert_eq!(dear.len(), 1);
    assert_eq!(
        attr(dear[0], "colony.refusal.code"),
        &refused["error"]["code"]
    );
    let under = children(&spans, dear[0]);
    assert!(named(&under, "attempt pricey").is_empty(), "{under:#?}");
    let reserve = named(&under, "colony.kernel reserve");
    assert_eq!(reserve.len(), 1);
    assert_eq!(attr(reserve[0], "colony.decision"), "denied");
    assert_eq!(reserve[0]["status"], ERROR);
}

/// `http/json` reaches the receiver too; and with `log_prompts` the prompt is on the
/// call's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_in_otlp_json_and_carry_the_prompt_only_with_log_prompts() {
    let receiver = receiver().await;
    let telemetry = TelemetryConfig::new(receiver.url.clone(), OtlpProtocol::HttpJson);
    let s = setup_traced("log_prompts = true", Some(telemetry)).await;
    let token = ai(&s.base, &s.admin, "json").await;
    let (status, _, text) = call(
        &s.base,
        "/v1/messages",
        &token,
        json!({"model": "mock-claude", "max_tokens": 16, "messages": [{"role": "user", "content": "logged prompt"}]}),
        &[("x-api-key", token.as_str())],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    s.node.shutdown().await.unwrap();
    let spans = receiver.spans();
    let call = calls(&spans, "chat mock-claude");
    assert_eq!(call.len(), 1, "{spans:#?}");
    assert_eq!(call[0]["encoding"], "json");
    assert_eq!(attr(call[0], "gen_ai.provider.name"), "anthropic");
    assert_eq!(
        attr(call[0], "gen_ai.response.finish_reasons"),
        &json!(["end_turn"])
    );
    assert!(
        attr(call[0], "gen_ai.input.messages")
            .as_str()
            .unwrap()
            .contains("logged prompt"),
        "{}",
        call[0]
    );
    assert_eq!(
        named(&children(&spans, call[0]), "colony.kernel settle").len(),
        1
    );
}
