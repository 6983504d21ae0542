//! `colony mcp`: Colony's MCP server over stdio, for a client that launches a
//! process (Claude Desktop, an editor). It carries each JSON-RPC message from stdin to
//! the node's `/mcp` (Streamable HTTP) with the token of `COLONY_TOKEN` (or
//! `./colony-data/admin.token`), and each answer back to stdout, one per line: the
//! node negotiates, authorizes, decides and records everything, as for an HTTP
//! client. Logs go to stderr; stdout carries only the protocol.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::client::Client;
use crate::Remote;

/// Longest message read from stdin (the node takes at most as much).
pub const STDIO_MESSAGE_BYTES_MAX: usize = colony_node::mcp::MCP_MESSAGE_BYTES_MAX;

/// The revision the first `initialize` settled on (sent as `MCP-Protocol-Version`
/// with every later message, as Streamable HTTP asks).
#[derive(Default)]
struct Negotiated {
    version: Option<String>,
}

pub async fn run(remote: Remote) -> anyhow::Result<ExitCode> {
    let client = Client::new(&remote)?;
    if client.token().is_none() {
        anyhow::bail!(
            "no token: set COLONY_TOKEN (and COLONY_URL), or run from the directory holding colony-data/admin.token"
        );
    }
    eprintln!("colony mcp: serving stdio for {}/mcp", client.base());
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut stdout = tokio::io::stdout();
    let mut negotiated = Negotiated::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut stdin)
            .take(STDIO_MESSAGE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .context("reading stdin")?;
        if read == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        if line.len() > STDIO_MESSAGE_BYTES_MAX {
            // Too long: say so, and skip the rest of the line.
            write(
                &mut stdout,
                &error(Value::Null, -32600, "a message is at most 1 MiB"),
            )
            .await?;
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
                write(
                    &mut stdout,
                    &error(Value::Null, -32700, &format!("not JSON: {parse}")),
                )
                .await?;
                continue;
            }
        };
        for answer in forward(&client, &mut negotiated, &message).await {
            write(&mut stdout, &answer).await?;
        }
    }
}

/// Sends one message to `/mcp`; the messages to write back (none for a notification).
async fn forward(client: &Client, negotiated: &mut Negotiated, message: &Value) -> Vec<Value> {
    let id = message.get("id").cloned();
    let method = message["method"].as_str().unwrap_or_default();
    let declared = message["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
        .as_str()
        .map(str::to_string);
    let version = declared.or_else(|| negotiated.version.clone()).or_else(|| {
        message["params"]["protocolVersion"]
            .as_str()
            .map(str::to_string)
    });
    let mut headers = vec![("accept", "application/json, text/event-stream".to_string())];
    if let Some(version) = &version {
        headers.push(("mcp-protocol-version", version.clone()));
        if version.as_str() >= "2026-07-28" && !method.is_empty() {
            headers.push(("mcp-method", method.to_string()));
        }
    }
    let answered = client.post_raw("/mcp", message.to_string(), &headers).await;
    let (status, content_type, body) = match answered {
        Ok(answered) => answered,
        Err(failure) => {
            return id
                .map(|id| {
                    error(
                        id,
                        -32603,
                        &format!("the node could not be reached: {failure:#}"),
                    )
                })
                .into_iter()
                .collect();
        }
    };
    let messages: Vec<Value> = if content_type.starts_with("text/event-stream") {
        body.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect()
    } else {
        serde_json::from_str::<Value>(&body)
            .ok()
            .into_iter()
            .collect()
    };
    if method == "initialize" {
        if let Some(version) = messages
            .iter()
            .find_map(|m| m["result"]["protocolVersion"].as_str())
        {
            negotiated.version = Some(version.to_string());
        }
    }
    let is_rpc = |m: &Value| m.get("jsonrpc").is_some();
    if messages.iter().any(is_rpc) {
        return messages.into_iter().filter(is_rpc).collect();
    }
    match id {
        // The node refused before the protocol (401, 403, 413): said as a JSON-RPC error.
        Some(id) if !(200..300).contains(&status) => {
            let said = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|b| b["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            vec![error(
                id,
                -32001,
                &format!("the node answered {status}: {said}"),
            )]
        }
        _ => Vec::new(),
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
