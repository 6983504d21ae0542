//! A small client for the node's HTTP API.

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::Remote;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// The token of `--token` (or `COLONY_TOKEN`), or else the local node's admin
/// token when run beside its data.
fn token_of(remote: &Remote) -> Option<String> {
    match &remote.token {
        Some(token) => Some(token.clone()),
        None => std::fs::read_to_string("colony-data/admin.token")
            .ok()
            .map(|t| t.trim().to_string()),
    }
}

/// An HTTP client trusting `--ca-file` (or the system's roots), which gives up on a
/// call after `timeout` when one is given, and never reuses a connection idle for
/// longer than the node keeps one.
fn http_client(
    remote: &Remote,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<reqwest::Client> {
    let tls = colony_node::tls::client_config(remote.ca_file.as_deref())
        .map_err(|message| anyhow!("TLS: {message}"))?;
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .pool_idle_timeout(colony_client::IDLE_CONNECTION_KEPT);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().context("cannot build the HTTP client")
}

/// An error the node answered, kept whole for `--json`.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub body: Value,
}

impl ApiFailure {
    /// The error as the API types it, when the body is one.
    pub fn error(&self) -> Option<colony_api::Explained> {
        serde_json::from_value::<colony_api::ErrorBody>(self.body.clone())
            .ok()
            .map(|body| body.error)
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error() {
            Some(error) => write!(
                f,
                "{} (HTTP {}): {}",
                error.code, self.status, error.message
            ),
            None => write!(f, "error (HTTP {}): {}", self.status, self.body),
        }
    }
}

/// A successful answer read as the API's type `T`.
pub fn typed<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value).context(
        "the node answered in a shape this CLI does not know (is the node another version?)",
    )
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        Ok(Client {
            http: http_client(remote, None)?,
            base: remote.url.trim_end_matches('/').to_string(),
            token: token_of(remote),
        })
    }

    /// The same node, URL, token and trusted CA, as the client library speaks to
    /// it (what `colony worker` runs on): each call bounded by
    /// [`colony_client::CALL_TIMEOUT`].
    pub fn library(remote: &Remote) -> anyhow::Result<colony_client::Client> {
        let token = token_of(remote).ok_or_else(|| {
            anyhow!("no token: pass --token, set COLONY_TOKEN, or run from the directory holding colony-data/admin.token")
        })?;
        let http = http_client(remote, Some(colony_client::CALL_TIMEOUT))?;
        colony_client::Client::with_http(&remote.url, &token, http).map_err(|e| anyhow!("{e}"))
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token requests are sent with.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// A GET whose answer is text (Markdown), as it came.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let token = self
            .token
            .as_deref()
            .ok_or_else(|| anyhow!("no token: pass --token or set COLONY_TOKEN"))?;
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .context("the node's answer broke off")?;
        if status.is_success() {
            return Ok(text);
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Err(ApiFailure {
            status: status.as_u16(),
            body,
        }
        .into())
    }

    /// A GET whose answer is read as `T`.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        typed(self.get(path).await?)
    }

    /// A POST whose answer is read as `T`.
    pub async fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        typed(self.post(path, body).await?)
    }

    pub async fn post(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// A POST of `body` as it is, with extra headers: the status, the content type
    /// and the text answered, whatever the status (the MCP bridge reads them all).
    /// POSTs `body` to `path` with extra headers; the response as it comes (its
    /// status, headers and body stream are the caller's to read).
    pub async fn post_streaming(
        &self,
        path: &str,
        body: String,
        headers: &[(&str, String)],
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let token = self.token.as_deref().ok_or_else(|| {
            anyhow!("no token: pass --token, set COLONY_TOKEN, or run from the directory holding colony-data/admin.token")
        })?;
        let response = request.bearer_auth(token).send().await.with_context(|| {
            format!(
                "cannot reach the node at {} (is `colony up` running?)",
                self.base
            )
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let body: Value = response
            .json()
            .await
            .context("the node answered something that is not JSON")?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ApiFailure {
                status: status.as_u16(),
                body,
            }
            .into())
        }
    }
}
