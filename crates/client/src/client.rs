//! Typed calls of the node's HTTP API, with the caller's token.

use std::time::Duration;

use colony_api::gateway::ChatRequest;
use colony_api::ledger::{CommitRequest, Committed, LedgerView, ReserveRequest, Reserved};
use colony_api::streams::{PublishRequest, Published, StreamMessages};
use colony_api::tasks::{
    ClaimRequest, Claimed, DecomposeRequest, LeaseRequest, TaskRequest, TaskView,
};
use colony_api::workers::{RegisterAnswer, RegisterRequest, WorkerHeartbeat, WorkerLeft};
use colony_kernel::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::Error;

/// Longest a call waits for its answer by default (an LLM call may take long).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an idle connection is kept for reuse: below the node's 30 s
/// `header_timeout` (after which it closes an idle keep-alive connection), so that
/// a call never goes out on a connection the node is closing.
pub const IDLE_CONNECTION_KEPT: Duration = Duration::from_secs(20);

/// A node, spoken to as one principal (the token's).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// The address and fencing token of a task one holds: what every later call about
/// it presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub address: colony_kernel::TaskAddress,
    pub lease_token: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client").field("url", &self.base).finish()
    }
}

impl Client {
    /// A client of the node at `url` (`http://127.0.0.1:7700`, or `https://...`
    /// trusted by the system's roots) with `token`.
    pub fn new(url: &str, token: &str) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .pool_idle_timeout(IDLE_CONNECTION_KEPT)
            .build()
            .map_err(|e| Error::Setup(format!("cannot build the HTTP client: {e}")))?;
        Client::with_http(url, token, http)
    }

    /// A client with an HTTP client of one's own (a CA of one's own, a proxy, other
    /// timeouts).
    pub fn with_http(url: &str, token: &str, http: reqwest::Client) -> Result<Client, Error> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Setup(format!(
                "`{url}` is not a node's URL (http://HOST:PORT or https://...)"
            )));
        }
        if token.trim().is_empty() {
            return Err(Error::Setup("no token".into()));
        }
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    /// The node of `COLONY_URL` (`http://127.0.0.1:7700` when unset) with the token
    /// of `COLONY_TOKEN`: what a program run by `colony worker --exec` or the
    /// supervisor is given.
    pub fn from_env() -> Result<Client, Error> {
        let url = std::env::var("COLONY_URL").unwrap_or_else(|_| "http://127.0.0.1:7700".into());
        let token = std::env::var("COLONY_TOKEN")
            .map_err(|_| Error::Setup("COLONY_TOKEN is not set".into()))?;
        Client::new(&url, &token)
    }

    /// The node's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<T>, Error> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| Error::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response
            .bytes()
            .await
            .map_err(|source| Error::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        if status.as_u16() == 204 {
            return Ok(None);
        }
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
            let explained = serde_json::from_value::<colony_api::ErrorBody>(body.clone()).ok();
            let (code, message) = match explained {
                Some(error) => (error.error.code, error.error.message),
                None => ("error".to_string(), body.to_string()),
            };
            return Err(Error::Refused {
                status: status.as_u16(),
                code,
                message,
                body,
                retry_after,
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Unexpected {
                what: what.to_string(),
                message: e.to_string(),
            })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.call(path, request)
            .await?
            .ok_or_else(|| Error::Unexpected {
                what: path.to_string(),
                message: "no content".into(),
            })
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Option<T>, Error> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        self.call(path, request).await
    }

    async fn post_some<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Error> {
        self.post(path, body)
            .await?
            .ok_or_else(|| Error::Unexpected {
                what: path.to_string(),
                message: "no content".into(),
            })
    }

    // The board.

    /// Posts a task; the task as the board holds it.
    pub async fn post_task(&self, task: &TaskRequest) -> Result<TaskView, Error> {
        self.post_some("/v1/tasks", task).await
    }

    /// One task, with its subtasks, attempts, lease and history.
    pub async fn task(&self, address: &str) -> Result<TaskView, Error> {
        self.get(&format!("/v1/tasks/{}", segment(address))).await
    }

    /// Claims the best claimable task `request`'s capabilities (or its worker
    /// session's) cover: the task and its lease, or `None` when nothing fits.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<Option<Claimed>, Error> {
        self.post("/v1/tasks/claim", request).await
    }

    async fn lease_call(
        &self,
        held: &Held,
        action: &str,
        request: LeaseRequest,
    ) -> Result<TaskView, Error> {
        let path = format!("/v1/tasks/{}/{action}", segment(&held.address));
        self.post_some(
            &path,
            &LeaseRequest {
                lease_token: held.lease_token,
                ..request
            },
        )
        .await
    }

    /// Renews the lease on a held task (and marks it in progress).
    pub async fn heartbeat(&self, held: &Held) -> Result<TaskView, Error> {
        self.lease_call(held, "heartbeat", LeaseRequest::default())
            .await
    }

    /// Saves progress (any JSON, at most 64 KiB): whoever takes the task next resumes
    /// from it.
    pub async fn checkpoint(&self, held: &Held, checkpoint: Value) -> Result<TaskView, Error> {
        let request = LeaseRequest {
            checkpoint: Some(checkpoint),
            ..LeaseRequest::default()
        };
        self.lease_call(held, "checkpoint", request).await
    }

    /// Completes a held task with its result.
    pub async fn complete(
        &self,
        held: &Held,
        result: Value,
        justification: &str,
    ) -> Result<TaskView, Error> {
        let request = LeaseRequest {
            result: Some(result),
            justification: Some(justification.to_string()),
            ..LeaseRequest::default()
        };
        self.lease_call(held, "complete", request).await
    }

    /// Fails the attempt on a held task: retried with backoff, or dead after its
    /// last attempt.
    pub async fn fail(&self, held: &Held, reason: &str) -> Result<TaskView, Error> {
        let request = LeaseRequest {
            reason: Some(reason.to_string()),
            ..LeaseRequest::default()
        };
        self.lease_call(held, "fail", request).await
    }

    /// Gives a held task back to the board without failing its attempt (the worker
    /// cannot take it now: its reservations were refused, it is stopping).
    pub async fn release(&self, held: &Held, reason: &str) -> Result<TaskView, Error> {
        let request = LeaseRequest {
            justification: Some(reason.to_string()),
            ..LeaseRequest::default()
        };
        self.lease_call(held, "release", request).await
    }

    /// Splits a held task into `subtasks` (each may carry a share of its budget):
    /// it waits for them, and completes when they have.
    pub async fn decompose(
        &self,
        held: &Held,
        subtasks: Vec<TaskRequest>,
        justification: &str,
    ) -> Result<TaskView, Error> {
        let path = format!("/v1/tasks/{}/decompose", segment(&held.address));
        let request = DecomposeRequest {
            lease_token: held.lease_token,
            subtasks,
            on_child_death: Default::default(),
            justification: Some(justification.to_string()),
        };
        self.post_some(&path, &request).await
    }

    /// Cancels a task and its open subtasks (as its poster, an ancestor's, or an
    /// admin): their leases end, what is left of their budgets goes back.
    pub async fn cancel(&self, address: &str, justification: &str) -> Result<TaskView, Error> {
        let path = format!("/v1/tasks/{}/cancel", segment(address));
        let request = colony_api::Justified {
            justification: Some(justification.to_string()),
        };
        self.post_some(&path, &request).await
    }

    // Worker sessions.

    /// Registers a worker session (active, or queued past `active_workers`' soft
    /// limit).
    pub async fn register_worker(
        &self,
        request: &RegisterRequest,
    ) -> Result<RegisterAnswer, Error> {
        self.post_some("/v1/workers", request).await
    }

    /// Tells the node the session is alive.
    pub async fn worker_heartbeat(&self, worker: u64) -> Result<WorkerHeartbeat, Error> {
        self.post_some(&format!("/v1/workers/{worker}/heartbeat"), &Map::new())
            .await
    }

    /// Leaves gracefully: the session's tasks go back on the board.
    pub async fn leave(&self, worker: u64) -> Result<WorkerLeft, Error> {
        let request = self
            .http
            .delete(format!("{}/v1/workers/{worker}", self.base));
        self.call("leave", request)
            .await?
            .ok_or_else(|| Error::Unexpected {
                what: "leave".into(),
                message: "no content".into(),
            })
    }

    // The ledger.

    /// One's quotas, and what is used and reserved of each resource.
    pub async fn ledger(&self) -> Result<LedgerView, Error> {
        self.get("/v1/ledger/me").await
    }

    /// Sets aside `amount` of a resource before an action.
    pub async fn reserve(
        &self,
        resource: Resource,
        amount: u64,
        justification: &str,
    ) -> Result<Reserved, Error> {
        let request = ReserveRequest {
            resource: resource.as_str().to_string(),
            amount,
            ttl_ms: None,
            justification: Some(justification.to_string()),
        };
        self.post_some("/v1/ledger/reserve", &request).await
    }

    /// Charges what the action used of a reservation; the rest is refunded.
    pub async fn commit(&self, reservation: u64, actual: u64) -> Result<Committed, Error> {
        let request = CommitRequest {
            reservation,
            actual,
            justification: None,
        };
        self.post_some("/v1/ledger/commit", &request).await
    }

    // The bus, over HTTP.

    /// Publishes one message on a subject (metered in io_ops and bytes).
    pub async fn publish(
        &self,
        subject: &str,
        data: Value,
        justification: &str,
    ) -> Result<Published, Error> {
        let request = PublishRequest {
            subject: subject.to_string(),
            data,
            justification: Some(justification.to_string()),
        };
        self.post_some("/v1/bus/publish", &request).await
    }

    /// A durable stream's messages from `from_seq` on (at most `limit`).
    pub async fn read_stream(
        &self,
        stream: &str,
        from_seq: u64,
        limit: u32,
    ) -> Result<StreamMessages, Error> {
        self.get(&format!(
            "/v1/streams/{}/messages?from_seq={from_seq}&limit={limit}",
            segment(stream)
        ))
        .await
    }

    // The LLM gateway.

    /// A chat completion through the gateway (OpenAI's shape), reserved before and
    /// charged after to the caller, and to `for_task`'s budget when given (a task
    /// whose lease the caller holds).
    pub async fn chat(
        &self,
        request: &ChatRequest,
        for_task: Option<&str>,
    ) -> Result<Map<String, Value>, Error> {
        let mut call = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .json(request);
        if let Some(task) = for_task {
            call = call.header("x-colony-task", task);
        }
        self.call("/v1/chat/completions", call)
            .await?
            .ok_or_else(|| Error::Unexpected {
                what: "/v1/chat/completions".into(),
                message: "no content".into(),
            })
    }
}

/// One path segment, percent-encoded.
fn segment(text: &str) -> String {
    colony_api::percent_encode(text)
}
