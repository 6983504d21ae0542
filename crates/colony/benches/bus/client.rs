//! The benchmark's clients: Colony's WebSocket protocol, and NATS's and Redis's text
//! protocols written directly over tokio TCP (no library).

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Kind, Server};

/// One client connection speaking the server's protocol.
pub(super) enum Client {
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
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
                Client::Ws(Box::new(ws))
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
            Client::Ws(ws) => {
                ws.send(Message::Text(r#"{"op":"ping","id":0}"#.into()))
                    .await
                    .unwrap();
                loop {
                    if let Some(Ok(Message::Text(text))) = ws.next().await {
                        if text.contains("\"pong\"") {
                            return;
                        }
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
            Client::Ws(ws) => {
                for (n, subject) in subjects.iter().enumerate() {
                    let frame = format!(r#"{{"op":"sub","sid":"s{n}","subject":"{subject}"}}"#);
                    ws.send(Message::Text(frame.into())).await.unwrap();
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
            Client::Ws(ws) => loop {
                match ws.next().await.expect("open").expect("frame") {
                    Message::Text(text) => {
                        #[derive(serde::Deserialize)]
                        struct Frame<'a> {
                            op: &'a str,
                            data: Option<&'a str>,
                        }
                        let frame: Frame = serde_json::from_str(&text).unwrap();
                        if frame.op == "msg" {
                            return frame.data.unwrap().to_string();
                        }
                        assert_ne!(frame.op, "err", "{text}");
                    }
                    _ => continue,
                }
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

    /// Splits a WebSocket publisher into its writer and a background drain.
    pub(super) fn into_publisher(self) -> Publisher {
        let Client::Ws(ws) = self else {
            unreachable!("text publishers are built in Publisher::connect")
        };
        let (sink, stream) = (*ws).split();
        let drain = tokio::spawn(async move {
            let mut stream = stream;
            while let Some(Ok(_)) = stream.next().await {}
        });
        Publisher::Ws(sink, AbortOnDrop(drain))
    }
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

type WsSink = futures_util::stream::SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// A client that only publishes; whatever the server answers is drained by a
/// background task (ended when the publisher is dropped).
pub(super) enum Publisher {
    Ws(WsSink, #[allow(dead_code)] AbortOnDrop),
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
        match server.kind {
            Kind::Colony => Client::connect(server, false).await.into_publisher(),
            kind => {
                let Client::Text { reader, writer, .. } = Client::connect(server, false).await
                else {
                    unreachable!()
                };
                // Redis answers every PUBLISH: read and discard.
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
        }
    }

    pub(super) async fn publish(&mut self, subject: &str, payload: &str) {
        match self {
            Publisher::Ws(sink, _) => {
                let frame = format!(r#"{{"op":"pub","subject":"{subject}","data":"{payload}"}}"#);
                sink.feed(Message::Text(frame.into())).await.unwrap();
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
            Publisher::Ws(sink, _) => sink.flush().await.unwrap(),
            Publisher::Text(_, writer, _) => writer.flush().await.unwrap(),
        }
    }
}
