//! The benchmark's clients, alike for every server: Colony's WebSocket frames, and
//! NATS's and Redis's text protocols, each written directly over tokio TCP (for
//! Colony, tokio-tungstenite makes the handshake; the frames are then read and
//! written here, masked as a client's must be, as lean as the text clients).

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::MaybeTlsStream;

use super::{Kind, Server};

/// One client connection speaking the server's protocol.
pub(super) enum Client {
    /// Colony: WebSocket frames after the handshake.
    Ws {
        reader: BufReader<OwnedReadHalf>,
        writer: BufWriter<OwnedWriteHalf>,
    },
    Text {
        kind: Kind,
        reader: BufReader<OwnedReadHalf>,
        writer: BufWriter<OwnedWriteHalf>,
    },
}

impl Client {
    pub(super) async fn connect(server: &Server, small: bool) -> Client {
        match server.kind {
            Kind::Colony => {
                let mut request = format!("ws://{}/v1/bus", server.addr)
                    .into_client_request()
                    .unwrap();
                request.headers_mut().insert(
                    "authorization",
                    format!("Bearer {}", server.token).parse().unwrap(),
                );
                // Idle clients keep small buffers so that the benchmark process fits.
                let config = if small {
                    WebSocketConfig::default()
                        .read_buffer_size(4096)
                        .write_buffer_size(0)
                } else {
                    WebSocketConfig::default()
                };
                let (ws, _) =
                    tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                        .await
                        .expect("websocket connect");
                let MaybeTlsStream::Plain(stream) = ws.into_inner() else {
                    unreachable!("the benchmark speaks plain ws://")
                };
                stream.set_nodelay(true).unwrap();
                let (read, write) = stream.into_split();
                let capacity = if small { 512 } else { 64 << 10 };
                Client::Ws {
                    reader: BufReader::with_capacity(capacity, read),
                    writer: BufWriter::with_capacity(capacity, write),
                }
            }
            kind => {
                let stream = TcpStream::connect(server.addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (read, write) = stream.into_split();
                let capacity = if small { 512 } else { 64 << 10 };
                let mut client = Client::Text {
                    kind,
                    reader: BufReader::with_capacity(capacity, read),
                    writer: BufWriter::with_capacity(capacity, write),
                };
                if kind == Kind::Nats {
                    client
                        .write_raw(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
                        .await;
                }
                client.round_trip().await;
                client
            }
        }
    }

    pub(super) async fn write_raw(&mut self, bytes: &[u8]) {
        if let Client::Text { writer, .. } = self {
            writer.write_all(bytes).await.unwrap();
        }
    }

    /// A request the server answers, so that what was sent before is processed.
    pub(super) async fn round_trip(&mut self) {
        match self {
            Client::Ws { reader, writer } => {
                write_text(writer, br#"{"op":"ping","id":0}"#).await;
                writer.flush().await.unwrap();
                loop {
                    let text = read_text(reader, writer).await;
                    if contains(&text, b"\"pong\"") {
                        return;
                    }
                }
            }
            Client::Text {
                kind,
                reader,
                writer,
            } => {
                writer.write_all(b"PING\r\n").await.unwrap();
                writer.flush().await.unwrap();
                let want = if *kind == Kind::Nats { "PONG" } else { "+PONG" };
                let mut line = String::new();
                loop {
                    line.clear();
                    reader.read_line(&mut line).await.unwrap();
                    if line.trim_end() == want {
                        return;
                    }
                }
            }
        }
    }

    pub(super) async fn subscribe(&mut self, subjects: &[String]) {
        match self {
            Client::Ws { writer, .. } => {
                for (n, subject) in subjects.iter().enumerate() {
                    let frame = format!(r#"{{"op":"sub","sid":"s{n}","subject":"{subject}"}}"#);
                    write_text(writer, frame.as_bytes()).await;
                }
            }
            Client::Text {
                kind: Kind::Nats,
                writer,
                ..
            } => {
                for (n, subject) in subjects.iter().enumerate() {
                    writer
                        .write_all(format!("SUB {subject} {n}\r\n").as_bytes())
                        .await
                        .unwrap();
                }
            }
            Client::Text { writer, reader, .. } => {
                for subject in subjects {
                    writer
                        .write_all(
                            format!(
                                "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{subject}\r\n",
                                subject.len()
                            )
                            .as_bytes(),
                        )
                        .await
                        .unwrap();
                }
                writer.flush().await.unwrap();
                // Each SUBSCRIBE is confirmed with a 3-element array.
                for _ in subjects {
                    read_resp_array(reader).await;
                }
                return;
            }
        }
        self.round_trip().await;
    }

    /// The payload of the next message.
    pub(super) async fn next_payload(&mut self) -> String {
        match self {
            Client::Ws { reader, writer } => loop {
                // What a NATS client does with `MSG`: find the payload, copy it out.
                let text = read_text(reader, writer).await;
                if text.starts_with(br#"{"op":"msg""#) {
                    let start = DATA.find(&text).expect("a msg has data") + 8;
                    let end = start + memchr::memchr(b'"', &text[start..]).unwrap();
                    return String::from_utf8(text[start..end].to_vec()).unwrap();
                }
                assert!(
                    !text.starts_with(br#"{"op":"err""#),
                    "{}",
                    String::from_utf8_lossy(&text)
                );
            },
            Client::Text {
                kind: Kind::Nats,
                reader,
                writer,
            } => {
                let mut line = String::new();
                loop {
                    line.clear();
                    reader.read_line(&mut line).await.unwrap();
                    if let Some(rest) = line.strip_prefix("MSG ") {
                        let len: usize = rest.split_whitespace().last().unwrap().parse().unwrap();
                        let mut payload = vec![0; len + 2];
                        reader.read_exact(&mut payload).await.unwrap();
                        payload.truncate(len);
                        return String::from_utf8(payload).unwrap();
                    }
                    if line.starts_with("PING") {
                        writer.write_all(b"PONG\r\n").await.unwrap();
                        writer.flush().await.unwrap();
                    }
                }
            }
            Client::Text { reader, .. } => {
                let parts = read_resp_array(reader).await;
                assert_eq!(parts[0], "message");
                parts[2].clone()
            }
        }
    }
}

/// Writes one text frame, masked (RFC 6455 asks it of clients).
async fn write_text(writer: &mut BufWriter<OwnedWriteHalf>, payload: &[u8]) {
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x88];
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x81);
    match payload.len() {
        short @ 0..=125 => frame.push(0x80 | short as u8),
        medium @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
    writer.write_all(&frame).await.unwrap();
}

/// Reads frames until a text frame, answering pings; its payload.
async fn read_text(
    reader: &mut BufReader<OwnedReadHalf>,
    writer: &mut BufWriter<OwnedWriteHalf>,
) -> Vec<u8> {
    loop {
        let mut head = [0u8; 2];
        reader.read_exact(&mut head).await.unwrap();
        let length = match head[1] & 0x7f {
            126 => reader.read_u16().await.unwrap() as usize,
            127 => reader.read_u64().await.unwrap() as usize,
            short => short as usize,
        };
        let mut payload = vec![0; length];
        reader.read_exact(&mut payload).await.unwrap();
        match head[0] & 0x0f {
            0x1 => return payload,
            0x9 => {
                // A ping: the pong is masked, as everything a client sends.
                let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                writer.write_all(&pong).await.unwrap();
                writer.flush().await.unwrap();
            }
            0x8 => panic!("the server closed: {}", String::from_utf8_lossy(&payload)),
            _ => {}
        }
    }
}

/// A message's data, found as tokio's `read_line` (which the NATS and Redis clients
/// use) finds a line's end: with memchr, not byte by byte (the searcher made once).
static DATA: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""data":""#));

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

pub(super) async fn read_resp_array(reader: &mut BufReader<OwnedReadHalf>) -> Vec<String> {
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let count: usize = line
        .trim_start_matches('*')
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{line:?}"));
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if let Some(len) = line.strip_prefix('$') {
            let len: usize = len.trim().parse().unwrap();
            let mut value = vec![0; len + 2];
            reader.read_exact(&mut value).await.unwrap();
            value.truncate(len);
            parts.push(String::from_utf8(value).unwrap());
        } else {
            parts.push(line.trim().trim_start_matches(':').to_string());
        }
    }
    parts
}

/// A client that only publishes; whatever the server answers is drained by a
/// background task (ended when the publisher is dropped).
pub(super) enum Publisher {
    Text(
        Kind,
        BufWriter<OwnedWriteHalf>,
        #[allow(dead_code)] AbortOnDrop,
    ),
}

pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Publisher {
    pub(super) async fn connect(server: &Server) -> Publisher {
        let kind = server.kind;
        let (reader, writer) = match Client::connect(server, false).await {
            Client::Text { reader, writer, .. } | Client::Ws { reader, writer } => (reader, writer),
        };
        // Redis answers every PUBLISH, Colony answers pings: read and discard.
        let drain = tokio::spawn(async move {
            let mut reader = reader;
            let mut sink = vec![0; 64 << 10];
            while let Ok(n) = reader.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        Publisher::Text(kind, writer, AbortOnDrop(drain))
    }

    pub(super) async fn publish(&mut self, subject: &str, payload: &str) {
        match self {
            Publisher::Text(Kind::Colony, writer, _) => {
                let frame = format!(r#"{{"op":"pub","subject":"{subject}","data":"{payload}"}}"#);
                write_text(writer, frame.as_bytes()).await;
            }
            Publisher::Text(Kind::Nats, writer, _) => writer
                .write_all(format!("PUB {subject} {}\r\n{payload}\r\n", payload.len()).as_bytes())
                .await
                .unwrap(),
            Publisher::Text(_, writer, _) => writer
                .write_all(
                    format!(
                        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{subject}\r\n${}\r\n{payload}\r\n",
                        subject.len(),
                        payload.len()
                    )
                    .as_bytes(),
                )
                .await
                .unwrap(),
        }
    }

    pub(super) async fn flush(&mut self) {
        match self {
            Publisher::Text(_, writer, _) => writer.flush().await.unwrap(),
        }
    }
}
