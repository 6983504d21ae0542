//! The `scripted` provider: deterministic, offline answers for tests and demos.
//! Every answer starts with `[scripted]` and carries `system_fingerprint:
//! "colony-scripted"`, so that nobody mistakes it for a model's.
//!
//! When the last user message asks for a JSON decision (it mentions `"action"`),
//! the answer is a fenced JSON block: `decompose` into two subtasks for a task whose
//! title has no `part`, `complete` otherwise. Usage is reported as a quarter of the
//! bytes in and out, rounded up (always within the gateway's bound).

use serde_json::{json, Value};

/// The text the scripted provider answers to `body`.
pub fn answer_text(body: &Value, max_tokens: u64) -> String {
    let last_user = body["messages"]
        .as_array()
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|m| m["role"] == "user")
                .map(|m| content_text(&m["content"]))
        })
        .unwrap_or_default();
    let mut text = if last_user.contains("\"action\"") {
        let title = last_user
            .lines()
            .find_map(|l| l.strip_prefix("Title: "))
            .unwrap_or("the task")
            .to_string();
        let decision = if title.contains("part") {
            json!({"action": "complete", "result": format!("[scripted] done: {title}"),
                   "justification": "[scripted] the part is small enough to finish at once"})
        } else {
            json!({"action": "decompose", "subtasks": [
                {"title": format!("{title}: part 1"), "capabilities": []},
                {"title": format!("{title}: part 2"), "capabilities": []}],
                "justification": "[scripted] two halves are easier to review"})
        };
        format!("[scripted]\n```json\n{decision}\n```")
    } else {
        let excerpt: String = last_user.chars().take(120).collect();
        format!(
            "[scripted] I read {} message(s). You said: {excerpt}",
            body["messages"].as_array().map_or(0, Vec::len)
        )
    };
    // Stay within max_tokens at the reported rate of 4 bytes a token.
    let limit = (max_tokens.saturating_mul(4)) as usize;
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The text of a message's content: a string, or the text parts of an array.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Usage the scripted provider reports: a quarter of the bytes, rounded up.
pub fn usage(body: &Value, text: &str) -> (u64, u64) {
    let input = serde_json::to_string(&body["messages"]).map_or(0, |s| s.len()) as u64;
    (input.div_ceil(4), (text.len() as u64).div_ceil(4))
}

/// A whole chat completion, as OpenAI returns it.
pub fn completion(body: &Value, model: &str, max_tokens: u64, id: u64) -> Value {
    let text = answer_text(body, max_tokens);
    let (prompt, completion) = usage(body, &text);
    json!({
        "id": format!("chatcmpl-scripted-{id}"),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "system_fingerprint": "colony-scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    })
}

/// The same answer as server-sent events: a role chunk, word chunks, a finish
/// chunk, a usage chunk, and `[DONE]`.
pub fn stream_events(body: &Value, model: &str, max_tokens: u64, id: u64) -> Vec<String> {
    let text = answer_text(body, max_tokens);
    let (prompt, completion) = usage(body, &text);
    let chunk = |delta: Value, finish: Value, usage: Value| {
        json!({"id": format!("chatcmpl-scripted-{id}"), "object": "chat.completion.chunk", "created": 0,
               "model": model, "system_fingerprint": "colony-scripted",
               "choices": if usage.is_null() { json!([{"index": 0, "delta": delta, "finish_reason": finish}]) } else { json!([]) },
               "usage": usage})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
        Value::Null,
    )];
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let cut = rest.find(' ').map_or(rest.len(), |i| i + 1);
        events.push(chunk(
            json!({"content": &rest[..cut]}),
            Value::Null,
            Value::Null,
        ));
        rest = &rest[cut..];
    }
    events.push(chunk(json!({}), json!("stop"), Value::Null));
    events.push(chunk(Value::Null, Value::Null, json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})));
    let mut lines: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    lines.push("data: [DONE]\n\n".into());
    lines
}

/// Dimensions of a scripted embedding.
pub const SCRIPTED_EMBEDDING_DIMENSIONS: usize = 8;

/// Deterministic embeddings of `body["input"]` (OpenAI's shape): each input's vector
/// comes from the SHA-256 of its JSON, scaled to unit length, so that equal inputs
/// embed equally; usage is a quarter of the input's bytes, rounded up.
pub fn embeddings(body: &Value, model: &str) -> Value {
    use sha2::{Digest, Sha256};
    let inputs: Vec<Value> = match &body["input"] {
        Value::Array(items) if items.first().is_some_and(Value::is_u64) => {
            vec![body["input"].clone()]
        }
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    };
    let mut tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let text = input.to_string();
            tokens += (text.len() as u64).div_ceil(4);
            let digest = Sha256::digest(text.as_bytes());
            let raw: Vec<f64> = digest
                .chunks(32 / SCRIPTED_EMBEDDING_DIMENSIONS)
                .map(|chunk| {
                    let value = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                    value as f64 / f64::from(u32::MAX) - 0.5
                })
                .collect();
            let norm = raw
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt()
                .max(f64::EPSILON);
            let vector: Vec<f64> = raw.iter().map(|v| v / norm).collect();
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}
