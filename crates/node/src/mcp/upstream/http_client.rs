//! The HTTP side of an upstream MCP server reached over Streamable HTTP: rmcp's
//! client transport does the protocol (sessions, the initialize handshake, streams,
//! reconnection); this is the [`StreamableHttpClient`] it sends through, on the
//! workspace's reqwest (rmcp's own reqwest client is for reqwest 0.13; the workspace,
//! and its TLS roots, are on 0.12). Every answer is bounded as it arrives: a JSON
//! answer by `max_json_response_size`, one event of a stream by
//! `max_sse_event_size`, an error's text by `max_error_response_size`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, InsufficientScopeError, SseError, StreamableHttpClient,
    StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::{Sse, SseStream};

type Failure = StreamableHttpError<reqwest::Error>;

const SESSION_ID: &str = "mcp-session-id";
const LAST_EVENT_ID: &str = "last-event-id";
const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";

/// reqwest 0.12 speaking Streamable HTTP for rmcp's client transport.
#[derive(Clone)]
pub(crate) struct HttpUpstream {
    client: reqwest::Client,
}

impl HttpUpstream {
    pub(crate) fn new(client: reqwest::Client) -> HttpUpstream {
        HttpUpstream { client }
    }

    fn request(
        &self,
        method: reqwest::Method,
        uri: &str,
        session_id: Option<&str>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, uri);
        for (name, value) in custom_headers {
            request = request.header(name, value);
        }
        if let Some(session) = session_id {
            request = request.header(SESSION_ID, session);
        }
        if let Some(token) = auth_header {
            request = request.bearer_auth(token);
        }
        request
    }
}

/// What a refused request's status and headers say, as rmcp's transport expects it.
async fn refused(response: reqwest::Response, session: bool, error_bytes_max: usize) -> Failure {
    let status = response.status();
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match (status.as_u16(), challenge) {
        (401, Some(challenge)) => {
            return StreamableHttpError::AuthRequired(AuthRequiredError::new(challenge))
        }
        (403, Some(challenge)) if challenge.contains("insufficient_scope") => {
            let scope = challenge
                .split("scope=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_string);
            return StreamableHttpError::InsufficientScope(InsufficientScopeError::new(
                challenge, scope,
            ));
        }
        (404, _) if session => return StreamableHttpError::SessionExpired,
        (429, _) | (500..=599, _) => {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return StreamableHttpError::HttpStatus(HttpStatusError::new(
                status.as_u16(),
                retry_after,
            ));
        }
        _ => {}
    }
    let text = match read_bounded(response, error_bytes_max).await {
        Ok(bytes) | Err(Bounded::TooLarge(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(Bounded::Failed(error)) => error.to_string(),
    };
    StreamableHttpError::UnexpectedServerResponse(format!("HTTP {status}: {text}").into())
}

enum Bounded {
    /// The body went past the bound: its first bytes.
    TooLarge(Vec<u8>),
    Failed(reqwest::Error),
}

/// The body, read until `max` bytes.
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, Bounded> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Bounded::Failed)? {
        if body.len() + chunk.len() > max {
            body.extend_from_slice(&chunk[..max - body.len()]);
            return Err(Bounded::TooLarge(body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An event stream whose events may not exceed `max` bytes each (counted on the
/// wire, from one blank line to the next).
fn bounded_events(
    response: reqwest::Response,
    max: usize,
) -> BoxStream<'static, Result<Sse, SseError>> {
    let (mut in_event, mut line) = (0usize, 0usize);
    let bytes = response.bytes_stream().map(move |chunk| {
        let chunk: Bytes = chunk.map_err(std::io::Error::other)?;
        for &byte in chunk.iter() {
            match byte {
                // A blank line ends the event.
                b'\n' if line == 0 => in_event = 0,
                b'\n' => line = 0,
                b'\r' => {}
                _ => {
                    line += 1;
                    in_event += 1;
                }
            }
            if in_event > max {
                return Err(std::io::Error::other(format!(
                    "an event of the upstream's stream is larger than {max} bytes"
                )));
            }
        }
        Ok(chunk)
    });
    SseStream::from_bytes_stream(bytes).boxed()
}

fn session_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl StreamableHttpClient for HttpUpstream {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        let response = self
            .request(
                reqwest::Method::POST,
                &uri,
                session_id.as_deref(),
                auth_header,
                custom_headers,
            )
            .header(reqwest::header::ACCEPT, format!("{JSON}, {EVENT_STREAM}"))
            .json(&message)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        let status = response.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if !status.is_success() {
            return Err(refused(
                response,
                session_id.is_some(),
                limits.max_error_response_size,
            )
            .await);
        }
        let session = session_of(&response);
        match content_type(&response).as_deref() {
            Some(kind) if kind.starts_with(EVENT_STREAM) => Ok(StreamableHttpPostResponse::Sse(
                bounded_events(response, limits.max_sse_event_size),
                session,
            )),
            Some(kind) if kind.starts_with(JSON) => {
                let body = match read_bounded(response, limits.max_json_response_size).await {
                    Ok(body) => body,
                    Err(Bounded::TooLarge(_)) => {
                        return Err(StreamableHttpError::ResponseBodyTooLarge {
                            max_size: limits.max_json_response_size,
                        })
                    }
                    Err(Bounded::Failed(error)) => return Err(StreamableHttpError::Client(error)),
                };
                let message: ServerJsonRpcMessage = serde_json::from_slice(&body)?;
                Ok(StreamableHttpPostResponse::Json(message, session))
            }
            // A notification's answer may come with no body at all.
            _ if status == reqwest::StatusCode::NO_CONTENT => {
                Ok(StreamableHttpPostResponse::Accepted)
            }
            other => Err(StreamableHttpError::UnexpectedContentType(
                other.map(str::to_string),
            )),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> Result<(), Failure> {
        let response = self
            .request(
                reqwest::Method::DELETE,
                &uri,
                Some(&session_id),
                auth_header,
                custom_headers,
            )
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        match response.status() {
            reqwest::StatusCode::METHOD_NOT_ALLOWED => {
                Err(StreamableHttpError::ServerDoesNotSupportDeleteSession)
            }
            status if status.is_success() || status == reqwest::StatusCode::NOT_FOUND => Ok(()),
            _ => Err(refused(
                response,
                true,
                StreamableHttpResponseLimits::default().max_error_response_size,
            )
            .await),
        }
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Failure> {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default().max_sse_event_size,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Failure> {
        let mut request = self
            .request(
                reqwest::Method::GET,
                &uri,
                session_id.as_deref(),
                auth_header,
                custom_headers,
            )
            .header(reqwest::header::ACCEPT, EVENT_STREAM);
        if let Some(last) = last_event_id {
            request = request.header(LAST_EVENT_ID, last);
        }
        let response = request.send().await.map_err(StreamableHttpError::Client)?;
        let status = response.status();
        if status == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if !status.is_success() {
            let error_max = StreamableHttpResponseLimits::default().max_error_response_size;
            return Err(refused(response, session_id.is_some(), error_max).await);
        }
        match content_type(&response).as_deref() {
            Some(kind) if kind.starts_with(EVENT_STREAM) => {
                Ok(bounded_events(response, max_sse_event_size))
            }
            other => Err(StreamableHttpError::UnexpectedContentType(
                other.map(str::to_string),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &'static str) -> reqwest::Response {
        reqwest::Response::from(
            http::Response::builder()
                .header("content-type", EVENT_STREAM)
                .body(body)
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn an_event_past_its_bound_ends_the_stream_and_smaller_ones_pass() {
        let events: Vec<_> =
            bounded_events(response("data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n"), 20)
                .collect()
                .await;
        let data: Vec<_> = events
            .iter()
            .map(|e| e.as_ref().unwrap().data.clone().unwrap())
            .collect();
        assert_eq!(data, ["{\"a\":1}", "{\"b\":2}"]);

        // One event of 60 bytes over lines, each line short: the event is what counts.
        let big = "data: 0123456789\ndata: 0123456789\ndata: 0123456789\n\n";
        let events: Vec<_> = bounded_events(response(big), 40).collect().await;
        assert!(
            events.iter().any(|e| e.is_err()),
            "an event past 40 bytes must fail: {events:?}"
        );
    }
}
