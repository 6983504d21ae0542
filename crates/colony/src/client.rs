//! A small client for the node's HTTP API.

use anyhow::{anyhow, Context};
use serde_json::Value;

use crate::Remote;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An error the node answered, kept whole for `--json`.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub body: Value,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let error = &self.body["error"];
        let code = error["code"].as_str().unwrap_or("error");
        let message = error["message"].as_str().unwrap_or("");
        write!(f, "{code} (HTTP {}): {message}", self.status)
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        let token = match &remote.token {
            Some(token) => Some(token.clone()),
            None => std::fs::read_to_string("colony-data/admin.token")
                .ok()
                .map(|t| t.trim().to_string()),
        };
        let tls = colony_node::tls::client_config(remote.ca_file.as_deref())
            .map_err(|message| anyhow!("TLS: {message}"))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base: remote.url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// The token requests are sent with.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// A POST with extra headers (`X-Colony-Task` for gateway calls).
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
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
