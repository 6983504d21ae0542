//! Server-sent events from LLM upstreams: watching a stream for the usage it
//! reports (OpenAI's chat chunks or Anthropic's message events), and turning
//! OpenAI's chat chunks into Anthropic's message events for `/v1/messages`.

use serde_json::{json, Value};

/// Longest SSE line kept; the rest of a longer line is dropped (it then does not
/// parse, and counts for nothing but its bytes).
pub const SSE_LINE_BYTES_MAX: usize = 1 << 20;

/// The payload of one `data:` line.
#[derive(Debug, PartialEq)]
pub enum Data {
    Json(Value),
    /// OpenAI's `data: [DONE]`.
    Done,
}

/// Follows a stream of events: splits lines, parses `data:` payloads, and notes the
/// usage reported and the bytes of text streamed.
#[derive(Default)]
pub struct Watch {
    line: Vec<u8>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// Input tokens served from the upstream's prompt cache, as reported.
    cached_tokens: u64,
    /// Input tokens written to the upstream's prompt cache, as reported.
    written_tokens: u64,
    out_bytes: u64,
    /// How generation ended, as the stream last said (chat's `finish_reason`,
    /// Anthropic's `stop_reason`, the Responses API's final status).
    finish_reason: Option<String>,
}

impl Watch {
    /// Feeds bytes as they come; returns the payloads of the lines they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Data> {
        let mut data = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                if self.line.len() < SSE_LINE_BYTES_MAX {
                    self.line.push(byte);
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            let Some(payload) = line.strip_prefix(b"data:") else {
                continue;
            };
            let payload = payload.strip_prefix(b" ").unwrap_or(payload);
            if payload == b"[DONE]" {
                data.push(Data::Done);
            } else if let Ok(event) = serde_json::from_slice::<Value>(payload) {
                self.observe(&event);
                data.push(Data::Json(event));
            }
        }
        data
    }

    fn observe(&mut self, event: &Value) {
        // OpenAI: a usage object on a chunk (the last one, when asked for).
        // Anthropic: input tokens on `message_start`, the output so far on
        // `message_delta` (the `output_tokens` of `message_start` is a placeholder).
        // The Responses API: the usage of the finished response, on its last event.
        let (usage, output_counts) = match event["type"].as_str() {
            Some("message_start") => (&event["message"]["usage"], false),
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                (&event["response"]["usage"], true)
            }
            _ => (&event["usage"], true),
        };
        if usage.is_object() {
            if let Some(input) = usage["prompt_tokens"]
                .as_u64()
                .or(usage["input_tokens"].as_u64())
            {
                // Anthropic's prompt-cache reads and writes are input tokens too.
                let cache = usage["cache_read_input_tokens"].as_u64().unwrap_or(0)
                    + usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                self.input_tokens = Some(input + cache);
                self.cached_tokens = crate::cached_of(usage);
                self.written_tokens = usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
            }
            if output_counts {
                if let Some(output) = usage["completion_tokens"]
                    .as_u64()
                    .or(usage["output_tokens"].as_u64())
                {
                    self.output_tokens = Some(output);
                }
            }
        }
        let reason = event["choices"][0]["finish_reason"]
            .as_str()
            .or(event["delta"]["stop_reason"].as_str())
            .or(event["response"]["incomplete_details"]["reason"].as_str())
            .or_else(|| {
                event["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("response."))
                    .then(|| event["response"]["status"].as_str())
                    .flatten()
                    .filter(|s| *s != "in_progress")
            });
        if let Some(reason) = reason {
            self.finish_reason = Some(reason.to_string());
        }
        let text = event["choices"][0]["delta"]["content"]
            .as_str()
            .or(event["delta"]["text"].as_str())
            .or_else(|| {
                (event["type"] == "response.output_text.delta")
                    .then(|| event["delta"].as_str())
                    .flatten()
            });
        if let Some(text) = text {
            self.out_bytes += text.len() as u64;
        }
    }

    /// How generation ended, as the stream said.
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }

    /// The input tokens the stream reported as served from, or written to, the prompt
    /// cache.
    pub fn cache(&self) -> crate::Cache {
        crate::Cache {
            read: self.cached_tokens,
            written: self.written_tokens,
        }
    }

    /// The input tokens the stream reported as served from the prompt cache.
    pub fn cached_tokens(&self) -> u64 {
        self.cached_tokens
    }

    /// Whether the stream reported both input and output tokens.
    pub fn usage_reported(&self) -> bool {
        self.input_tokens.is_some() && self.output_tokens.is_some()
    }

    /// The tokens to charge: those reported, else the input bound and the bytes of
    /// text streamed (a token covers at least one byte), never less than used.
    pub fn tokens(&self, input_bound: u64) -> (u64, u64) {
        (
            self.input_tokens.unwrap_or(input_bound),
            self.output_tokens.unwrap_or(self.out_bytes.max(1)),
        )
    }
}

/// Turns OpenAI chat chunks into Anthropic message events (`message_start`,
/// `content_block_start`, `content_block_delta`..., `content_block_stop`,
/// `message_delta` with the stop reason and usage, `message_stop`).
pub struct ToAnthropic {
    model: String,
    started: bool,
    stop_reason: Option<&'static str>,
    finished: bool,
}

fn event(out: &mut String, name: &str, data: Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

impl ToAnthropic {
    pub fn new(model: &str) -> ToAnthropic {
        ToAnthropic {
            model: model.to_string(),
            started: false,
            stop_reason: None,
            finished: false,
        }
    }

    fn start(&mut self, id: &Value, out: &mut String) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let id = id.as_str().unwrap_or("colony");
        event(
            out,
            "message_start",
            json!({"type": "message_start", "message": {
                "id": format!("msg_{id}"), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        );
        event(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        );
    }

    /// The events for one OpenAI chunk, appended to `out`.
    pub fn chunk(&mut self, chunk: &Value, out: &mut String) {
        if self.finished {
            return;
        }
        self.start(&chunk["id"], out);
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            event(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": text}}),
            );
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.stop_reason = Some(match reason {
                "length" => "max_tokens",
                "tool_calls" => "tool_use",
                _ => "end_turn",
            });
        }
    }

    /// The closing events (once), with the tokens charged.
    pub fn finish(&mut self, tokens: (u64, u64), out: &mut String) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.start(&Value::Null, out);
        event(
            out,
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        );
        event(
            out,
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                   "usage": {"input_tokens": tokens.0, "output_tokens": tokens.1}}),
        );
        event(out, "message_stop", json!({"type": "message_stop"}));
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI: &str = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"moon\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn usage_is_found_at_every_split_point() {
        let bytes = OPENAI.as_bytes();
        for split in 0..bytes.len() {
            let mut watch = Watch::default();
            let mut data = watch.feed(&bytes[..split]);
            data.extend(watch.feed(&bytes[split..]));
            assert_eq!(data.len(), 6, "split at {split}");
            assert_eq!(data[5], Data::Done);
            assert!(watch.usage_reported());
            assert_eq!(watch.tokens(999), (12, 3));
        }
    }

    #[test]
    fn without_usage_the_bound_and_the_streamed_bytes_are_charged() {
        let mut watch = Watch::default();
        let cut = OPENAI.find("data: {\"id\":\"c1\",\"choices\":[],").unwrap();
        watch.feed(&OPENAI.as_bytes()[..cut]);
        assert!(!watch.usage_reported());
        assert_eq!(watch.tokens(40), (40, "Hello moon".len() as u64));
    }

    #[test]
    fn anthropic_usage_comes_from_message_start_and_message_delta() {
        let stream = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\r\n\r\n";
        let mut watch = Watch::default();
        watch.feed(stream.as_bytes());
        // Cut before message_delta: the placeholder output count is not trusted.
        assert_eq!(watch.tokens(99), (25, 8));
        watch.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n");
        assert!(watch.usage_reported());
        assert_eq!(watch.tokens(99), (25, 4));
    }

    #[test]
    fn prompt_cache_tokens_are_input_tokens_and_noted_as_cached() {
        let mut watch = Watch::default();
        watch.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":400,\"cache_creation_input_tokens\":20,\"output_tokens\":1}}}\n\n");
        watch.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n");
        assert_eq!((watch.tokens(1), watch.cached_tokens()), ((425, 9), 400));
        assert_eq!(
            watch.cache(),
            crate::Cache {
                read: 400,
                written: 20
            }
        );
        let mut chat = Watch::default();
        chat.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":70,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":64}}}\n\n");
        assert_eq!((chat.tokens(1), chat.cached_tokens()), ((70, 2), 64));
    }

    #[test]
    fn responses_usage_comes_from_response_completed_and_text_from_its_deltas() {
        let stream = crate::response_events("r1", "m", "hello there friend", (31, 7));
        let cut = stream.find("response.completed").unwrap();
        let mut watch = Watch::default();
        watch.feed(&stream.as_bytes()[..cut]);
        // Cut before the last event: the input bound, and a token per byte of text.
        assert!(!watch.usage_reported());
        assert_eq!(watch.tokens(99), (99, 18));
        watch.feed(&stream.as_bytes()[cut..]);
        assert!(watch.usage_reported());
        assert_eq!(watch.tokens(99), (31, 7));
    }

    #[test]
    fn openai_chunks_become_anthropic_events_in_order() {
        let mut watch = Watch::default();
        let mut to = ToAnthropic::new("mock-mini");
        let mut out = String::new();
        for data in watch.feed(OPENAI.as_bytes()) {
            match data {
                Data::Json(chunk) => to.chunk(&chunk, &mut out),
                Data::Done => to.finish(watch.tokens(0), &mut out),
            }
        }
        to.finish((0, 0), &mut out);
        let mut reread = Watch::default();
        let events: Vec<Value> = reread
            .feed(out.as_bytes())
            .into_iter()
            .map(|d| match d {
                Data::Json(v) => v,
                Data::Done => panic!("no [DONE] in Anthropic's shape"),
            })
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0]["message"]["model"], "mock-mini");
        assert_eq!(events[2]["delta"]["text"], "Hello ");
        assert_eq!(events[5]["delta"]["stop_reason"], "max_tokens");
        assert_eq!(events[5]["usage"]["output_tokens"], 3);
        // Each event line is named as its payload's type.
        assert_eq!(out.matches("event: ").count(), 7);
        assert_eq!(reread.tokens(0), (12, 3));
    }

    #[test]
    fn an_empty_stream_still_closes_as_a_valid_message() {
        let mut to = ToAnthropic::new("m");
        let mut out = String::new();
        to.finish((5, 1), &mut out);
        assert!(out.starts_with("event: message_start\n"));
        assert!(out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert!(to.is_finished());
    }
}
