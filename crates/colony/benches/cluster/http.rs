//! The durable workload's own HTTP/1.1 client: one kept-alive connection per
//! simulated client, each request written whole and each answer read by its
//! `content-length`. The clients share the two cores with the nodes they measure;
//! a general client (reqwest: its pool, its URL parsing, a `serde_json::Value` per
//! answer) took about as much CPU per command as the node it called, and so much of
//! the box that the figures measured the clients as much as the nodes.

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer's head and body, at most (the benchmark's answers are a few hundred
/// bytes).
const ANSWER_BYTES_MAX: usize = 64 * 1024;

pub struct Connection {
    stream: TcpStream,
    /// `Host` and `Authorization`, written in every request.
    headers: String,
    buffer: Vec<u8>,
    end_of_head: memmem::Finder<'static>,
}

/// An answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Connection {
    /// A connection to `base` (`http://HOST:PORT`) sending `token` with each request.
    pub async fn open(base: &str, token: &str) -> Connection {
        let host = base.strip_prefix("http://").expect("an http:// base");
        let stream = TcpStream::connect(host).await.expect("the node answers");
        stream.set_nodelay(true).unwrap();
        Connection {
            stream,
            headers: format!("Host: {host}\r\nAuthorization: Bearer {token}\r\n"),
            buffer: Vec::with_capacity(4096),
            end_of_head: memmem::Finder::new(b"\r\n\r\n"),
        }
    }

    /// `POST path` with a JSON body; the answer.
    pub async fn post(&mut self, path: &str, body: &[u8]) -> Answer {
        let mut request = Vec::with_capacity(160 + self.headers.len() + body.len());
        request.extend_from_slice(b"POST ");
        request.extend_from_slice(path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\n");
        request.extend_from_slice(self.headers.as_bytes());
        request.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        request.extend_from_slice(body.len().to_string().as_bytes());
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(body);
        self.stream
            .write_all(&request)
            .await
            .expect("the request is sent");
        self.answer().await
    }

    async fn answer(&mut self) -> Answer {
        let head_end = loop {
            if let Some(at) = self.end_of_head.find(&self.buffer) {
                break at + 4;
            }
            self.fill().await;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).expect("a text head");
        let status: u16 = head
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("an HTTP status line: {head:?}"));
        let length: usize = head
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("an answer with a content-length: {head:?}"));
        assert!(head_end + length <= ANSWER_BYTES_MAX, "an answer too large");
        while self.buffer.len() < head_end + length {
            self.fill().await;
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        Answer { status, body }
    }

    async fn fill(&mut self) {
        assert!(self.buffer.len() < ANSWER_BYTES_MAX, "an answer too large");
        let mut chunk = [0u8; 4096];
        let read = self
            .stream
            .read(&mut chunk)
            .await
            .expect("the answer arrives");
        assert!(read > 0, "the node closed the connection");
        self.buffer.extend_from_slice(&chunk[..read]);
    }
}
