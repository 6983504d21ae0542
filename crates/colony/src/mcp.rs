//! `colony mcp`: Colony's MCP server over stdio, for a client that launches a
//! process (Claude Desktop, an editor). It carries each JSON-RPC message from stdin to
//! the node's `/mcp` (Streamable HTTP) with the token of `COLONY_TOKEN` (or
//! `./colony-data/admin.token`), and each message of the answer back to stdout, one
//! per line, as it arrives: a call's progress notifications before its result, a
//! `subscriptions/listen` stream's updates while it stays open. The node negotiates,
//! authorizes, decides and records everything, as for an HTTP client. Requests run
//! side by side (a call waiting for a person's approval holds up no other), at most
//! [`IN_FLIGHT_MAX`] at once; `notifications/cancelled` ends the request it names.
//! Logs go to stderr; stdout carries only the protocol.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::Remote;

/// Longest message read from stdin (the node takes at most as much).
pub const STDIO_MESSAGE_BYTES_MAX: usize = colony_node::mcp::MCP_MESSAGE_BYTES_MAX;

/// Longest message taken from the node (a tool's answer is bounded below this).
pub const NODE_MESSAGE_BYTES_MAX: usize = 2 * colony_node::mcp::TOOL_ANSWER_BYTES_MAX;

/// Requests carried at once; reading stdin waits past it.
pub const IN_FLIGHT_MAX: usize = 64;

/// Messages waiting to be written to stdout.
const STDOUT_QUEUE_MAX: usize = 1_024;

/// What every request shares: the node, the revision the first `initialize` settled
/// on (sent as `MCP-Protocol-Version` with every later message, as Streamable HTTP
/// asks), and the requests in flight by id (for `notifications/cancelled`).
struct Bridge {
    client: Client,
    version: Mutex<Option<String>>,
    in_flight: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    out: mpsc::Sender<Value>,
    slots: Arc<tokio::sync::Semaphore>,
}

pub async fn run(remote: Remote) -> anyhow::Result<ExitCode> {
    let client = Client::new(&remote)?;
    if client.token().is_none() {
        anyhow::bail!(
            "no token: set COLONY_TOKEN (and COLONY_URL), or run from the directory holding colony-data/admin.token"
        );
    }
    eprintln!("colony mcp: serving stdio for {}/mcp", client.base());
    let (out, mut to_write) = mpsc::channel::<Value>(STDOUT_QUEUE_MAX);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(message) = to_write.recv().await {
            write(&mut stdout, &message).await?;
        }
        anyhow::Ok(())
    });
    let bridge = Arc::new(Bridge {
        client,
        version: Mutex::new(None),
        in_flight: Mutex::new(HashMap::new()),
        out,
        slots: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX)),
    });
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut stdin)
            .take(STDIO_MESSAGE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .context("reading stdin")?;
        if read == 0 {
            break;
        }
        if line.len() > STDIO_MESSAGE_BYTES_MAX {
            // Too long: say so, and skip the rest of the line.
            bridge
                .say(error(Value::Null, -32600, "a message is at most 1 MiB"))
                .await;
            skip_line(&mut stdin).await?;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(text.trim()) {
            Ok(message) => message,
            Err(parse) => {
                bridge
                    .say(error(Value::Null, -32700, &format!("not JSON: {parse}")))
                    .await;
                continue;
            }
        };
        Bridge::take(&bridge, message).await;
    }
    // Stdin closed: the client is gone; requests still open end with it.
    for (_, request) in bridge.in_flight.lock().expect("in-flight lock").drain() {
        request.abort();
    }
    drop(bridge);
    let _ = writer.await;
    Ok(ExitCode::SUCCESS)
}

impl Bridge {
    async fn say(&self, message: Value) {
        let _ = self.out.send(message).await;
    }

    /// Carries one message: a handshake at once (what follows needs its revision),
    /// a cancellation to the request it names, anything else side by side.
    async fn take(bridge: &Arc<Bridge>, message: Value) {
        let method = message["method"].as_str().unwrap_or_default().to_string();
        if method == "notifications/cancelled" {
            let id = message["params"]["requestId"].to_string();
            if let Some(request) = bridge.in_flight.lock().expect("in-flight lock").remove(&id) {
                request.abort();
            }
            return;
        }
        if method == "initialize" || method == "server/discover" {
            bridge.forward(&message).await;
            return;
        }
        let Ok(slot) = Arc::clone(&bridge.slots).acquire_owned().await else {
            return;
        };
        let id = message.get("id").map(Value::to_string);
        let carrier = Arc::clone(bridge);
        // Listed before it can end (its end takes the same lock), so that a finished
        // request never stays listed.
        let mut in_flight = bridge.in_flight.lock().expect("in-flight lock");
        let task = tokio::spawn(async move {
            carrier.forward(&message).await;
            if let Some(id) = message.get("id").map(Value::to_string) {
                carrier
                    .in_flight
                    .lock()
                    .expect("in-flight lock")
                    .remove(&id);
            }
            drop(slot);
        });
        if let Some(id) = id {
            in_flight.insert(id, task.abort_handle());
        }
    }

    /// Sends one message to `/mcp` and writes back each message of the answer as it
    /// arrives (none for a notification).
    async fn forward(&self, message: &Value) {
        let id = message.get("id").cloned();
        let method = message["method"].as_str().unwrap_or_default();
        let declared = message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
            .as_str()
            .map(str::to_string);
        let negotiated = self.version.lock().expect("version lock").clone();
        let version = declared.or(negotiated).or_else(|| {
            message["params"]["protocolVersion"]
                .as_str()
                .map(str::to_string)
        });
        let mut headers = vec![("accept", "application/json, text/event-stream".to_string())];
        if let Some(version) = &version {
            headers.push(("mcp-protocol-version", version.clone()));
            if version.as_str() >= "2026-07-28" && !method.is_empty() {
                headers.push(("mcp-method", method.to_string()));
                if let Some(name) = routed_name(method, &message["params"]) {
                    headers.push(("mcp-name", header_value(name)));
                }
            }
        }
        let unreachable = |failure: &anyhow::Error| {
            id.clone().map(|id| {
                error(
                    id,
                    -32603,
                    &format!("the node could not be reached: {failure:#}"),
                )
            })
        };
        let response = match self
            .client
            .post_streaming("/mcp", message.to_string(), &headers)
            .await
        {
            Ok(response) => response,
            Err(failure) => {
                if let Some(said) = unreachable(&failure) {
                    self.say(said).await;
                }
                return;
            }
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut answered = false;
        if content_type.starts_with("text/event-stream") {
            let mut events = SseEvents::default();
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(failure) => {
                        if !answered {
                            if let Some(said) = unreachable(&anyhow::Error::from(failure)) {
                                self.say(said).await;
                            }
                        }
                        return;
                    }
                };
                for data in events.push(&chunk) {
                    match serde_json::from_str::<Value>(&data) {
                        Ok(found) if found.get("jsonrpc").is_some() => {
                            self.settled(method, &found);
                            answered |= found.get("id").is_some();
                            self.say(found).await;
                        }
                        _ => {}
                    }
                }
                if events.overflowed() {
                    if let Some(id) = id.clone() {
                        self.say(error(id, -32603, "the node sent an event past 8 MiB"))
                            .await;
                    }
                    return;
                }
            }
            return;
        }
        let body = match response.text().await {
            Ok(body) => body,
            Err(failure) => {
                if let Some(said) = unreachable(&anyhow::Error::from(failure)) {
                    self.say(said).await;
                }
                return;
            }
        };
        if let Some(found) = serde_json::from_str::<Value>(&body)
            .ok()
            .filter(|m| m.get("jsonrpc").is_some())
        {
            self.settled(method, &found);
            self.say(found).await;
            return;
        }
        // The node refused before the protocol (401, 403, 413): said as a JSON-RPC error.
        if let Some(id) = id.filter(|_| !(200..300).contains(&status)) {
            let said = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|b| b["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            self.say(error(
                id,
                -32001,
                &format!("the node answered {status}: {said}"),
            ))
            .await;
        }
    }

    /// Remembers the revision an `initialize` settled on.
    fn settled(&self, method: &str, answer: &Value) {
        if method == "initialize" {
            if let Some(version) = answer["result"]["protocolVersion"].as_str() {
                *self.version.lock().expect("version lock") = Some(version.to_string());
            }
        }
    }
}

/// What 2026-07-28's `Mcp-Name` header carries for `method` (the standard headers
/// let a proxy route without reading the body; the node holds them to the body).
fn routed_name<'a>(method: &str, params: &'a Value) -> Option<&'a str> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return None,
    };
    params[key].as_str()
}

/// A header value as the standard headers spell it: as is when it is plain
/// printable ASCII, otherwise wrapped as `=?base64?...?=`.
fn header_value(value: &str) -> String {
    use base64::Engine;
    let padded = value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']);
    let printable = value.chars().all(|c| (' '..='~').contains(&c));
    let looks_wrapped = value.starts_with("=?base64?") && value.ends_with("?=");
    if printable && !padded && !looks_wrapped {
        value.to_string()
    } else {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        format!("=?base64?{encoded}?=")
    }
}

/// Server-sent events cut from a byte stream: each event's `data:` lines, joined.
#[derive(Default)]
struct SseEvents {
    pending: Vec<u8>,
    overflow: bool,
}

/// Longest event kept while it arrives.
const SSE_EVENT_BYTES_MAX: usize = NODE_MESSAGE_BYTES_MAX;

impl SseEvents {
    /// Takes `chunk`; the data of every event it completes.
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, gap)) = event_end(&self.pending) {
            let event = String::from_utf8_lossy(&self.pending[..end]).into_owned();
            self.pending.drain(..end + gap);
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        if self.pending.len() > SSE_EVENT_BYTES_MAX {
            self.overflow = true;
            self.pending.clear();
        }
        events
    }

    fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// Where the first event in `bytes` ends (a blank line), and the blank line's length.
fn event_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, 2));
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (one, other) => one.or(other),
    }
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

async fn write(stdout: &mut tokio::io::Stdout, message: &Value) -> anyhow::Result<()> {
    let mut line = message.to_string();
    line.push('\n');
    stdout
        .write_all(line.as_bytes())
        .await
        .context("writing stdout")?;
    stdout.flush().await.context("writing stdout")
}

async fn skip_line(stdin: &mut BufReader<tokio::io::Stdin>) -> anyhow::Result<()> {
    let mut rest = Vec::new();
    loop {
        rest.clear();
        let read = (&mut *stdin)
            .take(64 << 10)
            .read_until(b'\n', &mut rest)
            .await
            .context("reading stdin")?;
        if read == 0 || rest.ends_with(b"\n") {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_as_they_arrive() {
        let mut events = SseEvents::default();
        assert!(events.push(b"id: 1\ndata: {\"a\"").is_empty());
        let got = events.push(b":1}\n\ndata: {\"b\":2}\r\n\r\n: keep-alive\n\ndata: x");
        assert_eq!(got, ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(events.push(b"\ndata: y\n\n"), ["x\ny"]);
        assert!(!events.overflowed());
    }

    #[test]
    fn standard_headers_name_what_is_called() {
        let call = json!({"name": "task_claim", "arguments": {}});
        assert_eq!(routed_name("tools/call", &call), Some("task_claim"));
        let read = json!({"uri": "colony://limits"});
        assert_eq!(
            routed_name("resources/read", &read),
            Some("colony://limits")
        );
        assert_eq!(routed_name("tools/list", &json!({})), None);
        assert_eq!(header_value("task_claim"), "task_claim");
        assert_eq!(header_value("tâche"), "=?base64?dMOiY2hl?=");
        assert_eq!(header_value(" padded"), "=?base64?IHBhZGRlZA==?=");
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut events = SseEvents::default();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..=(SSE_EVENT_BYTES_MAX >> 20) {
            events.push(&chunk);
        }
        assert!(events.overflowed());
    }
}
