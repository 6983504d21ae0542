//! `colony bus pub|sub|streams|stream-add` and `colony import hypernet --messages`:
//! a WebSocket client of the node's bus (docs/protocol.md).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use colony_api::bus::{Answer, ClientFrame, ServerFrame};

use crate::client::Client;
use crate::Remote;

/// One bus connection.
pub struct Bus {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Frames read while waiting for an answer.
    held: std::collections::VecDeque<Incoming>,
}

/// A frame the node sent: as it came (to print it) and read.
pub struct Incoming {
    pub raw: Value,
    pub frame: ServerFrame,
}

impl Bus {
    pub async fn connect(remote: &Remote) -> anyhow::Result<Bus> {
        let client = Client::new(remote)?;
        let url = remote.url.trim_end_matches('/');
        let ws_url = if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}/v1/bus")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}/v1/bus")
        } else {
            bail!("--url must start with http:// or https:// ({url})");
        };
        let mut request = ws_url.as_str().into_client_request()?;
        let token = client
            .token()
            .ok_or_else(|| anyhow!("no token: pass --token or set COLONY_TOKEN"))?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let tls = colony_node::tls::client_config(remote.ca_file.as_deref())
            .map_err(|message| anyhow!("TLS: {message}"))?;
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            true,
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        )
        .await
        .with_context(|| format!("cannot open the bus at {ws_url}"))?;
        Ok(Bus {
            ws,
            next_id: 1,
            held: Default::default(),
        })
    }

    async fn read(&mut self) -> anyhow::Result<Incoming> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let raw: Value = serde_json::from_str(&text)?;
                    let frame = serde_json::from_value(raw.clone())
                        .with_context(|| format!("a frame this CLI cannot read: {text}"))?;
                    return Ok(Incoming { raw, frame });
                }
                Some(Ok(Message::Close(frame))) => {
                    bail!(
                        "the node closed the connection{}",
                        frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                    )
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
                None => bail!("the node closed the connection"),
            }
        }
    }

    /// The next frame that is not an answer being waited for.
    pub async fn next(&mut self) -> anyhow::Result<Incoming> {
        match self.held.pop_front() {
            Some(frame) => Ok(frame),
            None => self.read().await,
        }
    }

    /// Sends a frame with a fresh `id` and returns the answer (`ok` or `err`).
    pub async fn request(&mut self, mut frame: ClientFrame) -> anyhow::Result<Incoming> {
        let id = self.next_id;
        self.next_id += 1;
        frame.id = Some(id);
        self.ws
            .send(Message::Text(serde_json::to_string(&frame)?.into()))
            .await?;
        loop {
            let answer = self.read().await?;
            if answer.frame.answers() == Some(&Value::from(id)) {
                return Ok(answer);
            }
            self.held.push_back(answer);
        }
    }
}

/// The answer's `ok`, or its refusal as an error.
fn check(answer: Incoming) -> anyhow::Result<(Value, Answer)> {
    match answer.frame {
        ServerFrame::Ok(ok) => Ok((answer.raw, ok)),
        ServerFrame::Err(refused) => bail!("{}: {}", refused.error.code, refused.error.message),
        _ => bail!("an answer that is neither ok nor err: {}", answer.raw),
    }
}

/// `colony bus pub`.
pub async fn publish(
    remote: &Remote,
    subject: &str,
    data: &str,
    priority: Option<String>,
    headers: &[String],
) -> anyhow::Result<ExitCode> {
    // Data that is not JSON is sent as a string.
    let data: Value = serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.into()));
    let mut map = std::collections::BTreeMap::new();
    for header in headers {
        let (key, value) = header
            .split_once('=')
            .ok_or_else(|| anyhow!("a header is key=value, not {header:?}"))?;
        map.insert(key.to_string(), value.to_string());
    }
    let frame = ClientFrame {
        subject: Some(subject.to_string()),
        data: Some(data),
        priority,
        headers: (!map.is_empty()).then_some(map),
        ..ClientFrame::new("pub")
    };
    let mut bus = Bus::connect(remote).await?;
    let (raw, answer) = check(bus.request(frame).await?)?;
    if remote.json {
        println!("{raw}");
    } else if let Some(seq) = answer.seq {
        println!(
            "stored in stream {} as {seq}",
            answer.stream.as_deref().unwrap_or("")
        );
    } else {
        println!(
            "delivered to {} subscription(s)",
            answer.delivered.unwrap_or(0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `colony bus sub`: prints messages as JSON lines.
pub async fn subscribe(
    remote: &Remote,
    pattern: &str,
    queue: Option<String>,
    stream: Option<String>,
    from_seq: Option<u64>,
    count: Option<u64>,
    ack: bool,
) -> anyhow::Result<ExitCode> {
    let mut bus = Bus::connect(remote).await?;
    let frame = ClientFrame {
        sid: Some("cli".into()),
        subject: Some(pattern.to_string()),
        queue,
        stream: stream.clone(),
        from_seq,
        ..ClientFrame::new("sub")
    };
    check(bus.request(frame).await?)?;
    eprintln!("subscribed to {pattern}; Ctrl-C to stop");
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let incoming = bus.next().await?;
        let msg = match incoming.frame {
            ServerFrame::Msg(msg) => msg,
            ServerFrame::Err(refused) => {
                eprintln!("{}: {}", refused.error.code, refused.error.message);
                continue;
            }
            _ => continue,
        };
        println!("{}", incoming.raw);
        if let (true, Some(seq)) = (ack && stream.is_some(), msg.seq) {
            let ack = ClientFrame {
                sid: Some("cli".into()),
                seq: Some(seq),
                ..ClientFrame::new("ack")
            };
            check(bus.request(ack).await?)?;
        }
        seen += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// One message of the old swarm, as read from its markdown.
#[derive(Debug, Default, PartialEq)]
pub struct HypernetMessage {
    pub channel: String,
    pub fields: std::collections::BTreeMap<String, String>,
    pub content: String,
    pub file: String,
}

/// Fields that go into `headers`, under the same names.
const HEADER_FIELDS: &[&str] = &[
    "sender",
    "recipient",
    "timestamp",
    "message_id",
    "thread_id",
    "status",
    "governance_relevant",
    "visibility",
    "group",
    "read_acl",
    "message_type",
];

/// Reads `key: value` front matter (between `---` lines) or `**Key:** value` lines
/// at the top, then the content. A file may hold several messages, each starting
/// with its own front matter.
pub fn parse_messages(channel: &str, file: &str, text: &str) -> Vec<HypernetMessage> {
    let mut messages = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut index = 0;
    let field = |line: &str| -> Option<(String, String)> {
        let line = line.trim();
        let (key, value) = if let Some(rest) = line.strip_prefix("**") {
            let (key, value) = rest.split_once("**")?;
            (
                key.trim_end_matches(':').to_string(),
                value.trim_start_matches(':').trim().to_string(),
            )
        } else {
            let (key, value) = line.split_once(':')?;
            (key.to_string(), value.trim().to_string())
        };
        let key = key.trim().to_lowercase().replace([' ', '-'], "_");
        (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| (key, value.trim_matches('"').to_string()))
    };
    while index < lines.len() {
        let mut message = HypernetMessage {
            channel: channel.to_string(),
            file: file.to_string(),
            ..Default::default()
        };
        while index < lines.len() && lines[index].trim().is_empty() {
            index += 1;
        }
        if index >= lines.len() {
            break;
        }
        if lines[index].trim() == "---" {
            index += 1;
            while index < lines.len() && lines[index].trim() != "---" {
                if let Some((key, value)) = field(lines[index]) {
                    message.fields.insert(key, value);
                }
                index += 1;
            }
            index += 1;
        } else {
            while index < lines.len() && lines[index].trim_start().starts_with("**") {
                if let Some((key, value)) = field(lines[index]) {
                    message.fields.insert(key, value);
                }
                index += 1;
            }
        }
        let mut content = Vec::new();
        while index < lines.len() {
            // The next message's front matter: `---` followed by a field line.
            if lines[index].trim() == "---"
                && lines
                    .get(index + 1)
                    .is_some_and(|next| field(next).is_some())
                && !content.is_empty()
            {
                break;
            }
            content.push(lines[index]);
            index += 1;
        }
        message.content = content.join("\n").trim().to_string();
        if let Some(channel) = message.fields.get("channel") {
            message.channel = channel.clone();
        }
        if !message.content.is_empty() || !message.fields.is_empty() {
            messages.push(message);
        }
    }
    messages
}

/// A subject token from a channel name.
fn channel_token(channel: &str) -> String {
    let token: String = channel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if token.is_empty() {
        "general".into()
    } else {
        token
    }
}

fn priority_of(text: Option<&String>) -> &'static str {
    match text.map(|t| t.trim().to_lowercase()) {
        Some(t) if t == "low" => "low",
        Some(t) if t == "high" || t == "urgent" => "high",
        Some(t) if t == "critical" => "critical",
        Some(t) => match t.parse::<u32>() {
            Ok(n) if n <= 100 => "low",
            Ok(n) if n <= 200 => "normal",
            Ok(n) if n <= 300 => "high",
            Ok(_) => "critical",
            Err(_) => "normal",
        },
        None => "normal",
    }
}

/// The bus frame for one old message (docs/protocol.md, "Hypernet messages").
pub fn message_frame(message: &HypernetMessage) -> ClientFrame {
    let mut headers = std::collections::BTreeMap::new();
    for key in HEADER_FIELDS {
        if let Some(value) = message.fields.get(*key) {
            headers.insert((*key).to_string(), value.clone());
        }
    }
    if let Some(reply_to) = message.fields.get("reply_to") {
        headers.insert("reply_to_message".into(), reply_to.clone());
    }
    headers.insert("source_file".into(), message.file.clone());
    let tags: Vec<String> = message
        .fields
        .get("tags")
        .map(|t| {
            t.trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    ClientFrame {
        subject: Some(format!(
            "hypernet.messages.{}",
            channel_token(&message.channel)
        )),
        priority: Some(priority_of(message.fields.get("priority")).to_string()),
        headers: Some(headers),
        // The message as the old swarm wrote it: its content and fields.
        data: Some(json!({
            "content": message.content,
            "subject": message.fields.get("subject"),
            "tags": tags,
            "metadata": message.fields.get("metadata"),
        })),
        ..ClientFrame::new("pub")
    }
}

/// Every message under `dir`: `<channel>/*.md` (one or more messages per file) and
/// `<channel>.md` files, in name order.
pub fn read_messages(dir: &Path) -> anyhow::Result<Vec<HypernetMessage>> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            let channel = entry.file_name().to_string_lossy().to_string();
            let mut inner: Vec<_> = std::fs::read_dir(&path)?.collect::<Result<_, _>>()?;
            inner.sort_by_key(|e| e.file_name());
            for file in inner {
                if file.path().extension().is_some_and(|e| e == "md") {
                    files.push((channel.clone(), file.path()));
                }
            }
        } else if path.extension().is_some_and(|e| e == "md") {
            let channel = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            files.push((channel, path));
        }
    }
    let mut messages = Vec::new();
    for (channel, path) in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        messages.extend(parse_messages(&channel, &path.display().to_string(), &text));
    }
    Ok(messages)
}

pub const HYPERNET_STREAM: &str = "hypernet-messages";

/// `colony import hypernet --messages DIR`.
pub async fn import_messages(
    dir: &Path,
    dry_run: bool,
    remote: &Remote,
) -> anyhow::Result<ExitCode> {
    let messages = read_messages(dir)?;
    if dry_run {
        for message in &messages {
            println!("{}", serde_json::to_string(&message_frame(message))?);
        }
        println!("{} messages (dry run: nothing sent)", messages.len());
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::new(remote)?;
    if client
        .get(&format!("/v1/streams/{HYPERNET_STREAM}"))
        .await
        .is_err()
    {
        client
            .post_as::<colony_api::streams::StreamDefined>(
                "/v1/streams",
                &colony_api::streams::CreateStream {
                    name: HYPERNET_STREAM.into(),
                    subjects: vec!["hypernet.messages.>".into()],
                    justification: Some("import the Hypernet swarm's message history".into()),
                    ..Default::default()
                },
            )
            .await
            .context("cannot create the hypernet-messages stream (admins only)")?;
    }
    let mut bus = Bus::connect(remote).await?;
    let (mut stored, mut failed) = (0, 0);
    for message in &messages {
        match check(bus.request(message_frame(message)).await?) {
            Ok(_) => stored += 1,
            Err(error) => {
                failed += 1;
                eprintln!("{}: not imported: {error}", message.file);
            }
        }
    }
    println!(
        "{stored} messages stored in stream {HYPERNET_STREAM} (subjects hypernet.messages.<channel>){}",
        if failed > 0 { format!(", {failed} failed") } else { String::new() }
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_and_bold_fields_both_parse() {
        let text = "---\nsender: 2.1\nrecipient: 2.2\nmessage_type: question\npriority: 300\nthread_id: t-9\ntags: [a, b]\n---\nHow do we split the parser?\n\n---\nsender: 2.2\nreply_to: m-1\n---\nBy token first.\n";
        let messages = parse_messages("design", "f.md", text);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].content, "How do we split the parser?");
        assert_eq!(messages[0].fields["message_type"], "question");
        let frame = message_frame(&messages[0]);
        assert_eq!(frame.subject.as_deref(), Some("hypernet.messages.design"));
        assert_eq!(frame.priority.as_deref(), Some("high"));
        let headers = frame.headers.unwrap();
        assert_eq!(
            (headers["sender"].as_str(), headers["thread_id"].as_str()),
            ("2.1", "t-9")
        );
        let data = frame.data.unwrap();
        assert_eq!(data.get("tags"), Some(&json!(["a", "b"])));
        let frame = message_frame(&messages[1]);
        assert_eq!(frame.headers.unwrap()["reply_to_message"], "m-1");
        assert_eq!(
            frame.data.unwrap().get("content"),
            Some(&json!("By token first."))
        );

        let bold = "**Sender:** 2.3\n**Message Type:** signal-of-life\n**Channel:** Ops Room\n\nStill here.\n";
        let messages = parse_messages("x", "g.md", bold);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].fields["message_type"], "signal-of-life");
        assert_eq!(
            message_frame(&messages[0]).subject.as_deref(),
            Some("hypernet.messages.ops-room")
        );
        assert_eq!(messages[0].content, "Still here.");
    }
}
