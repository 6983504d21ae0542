//! The exporter's HTTP client: the batch processor exports from a thread of its own,
//! outside any async runtime, so each request is spawned on the node's runtime (where
//! reqwest's connections live) and awaited from there.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// Largest answer read from a collector (they answer a few bytes).
const ANSWER_BYTES_MAX: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct RuntimeClient {
    runtime: tokio::runtime::Handle,
    client: reqwest::Client,
}

impl RuntimeClient {
    pub(crate) fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| format!("the OTLP exporter's HTTP client: {error}"))?;
        Ok(RuntimeClient { runtime, client })
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut outgoing = self
            .client
            .request(parts.method, parts.uri.to_string())
            .body(body);
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name, value);
        }
        let sent = self.runtime.spawn(async move {
            let response = outgoing.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            let mut response = response;
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > ANSWER_BYTES_MAX {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut answer = Response::builder().status(status);
        if let Some(map) = answer.headers_mut() {
            *map = headers;
        }
        Ok(answer.body(Bytes::from(body))?)
    }
}
