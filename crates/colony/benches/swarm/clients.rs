//! The swarm's client processes: the agents of a share of the tokens, driven from a
//! process of their own, and what they measured sent back to the parent as JSON.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_client::Client;

use super::{agent, stagger, unix_ms, Figures, Mode};

/// What a client process measured, for the parent to add up.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub(crate) struct ClientFigures {
    heartbeats: Vec<u64>,
    claims: Vec<u64>,
    dispatch: Vec<u64>,
    calls: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    completed: u64,
}

impl ClientFigures {
    pub(crate) fn of(figures: &Figures) -> ClientFigures {
        ClientFigures {
            heartbeats: figures.heartbeats.lock().unwrap().clone(),
            claims: figures.claims.lock().unwrap().clone(),
            dispatch: figures.dispatch.lock().unwrap().clone(),
            calls: figures.calls.lock().unwrap().clone(),
            errors: figures.errors.load(Ordering::Relaxed),
            first_error: figures.first_error.lock().unwrap().clone(),
            completed: figures.completed.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn merge_into(self, figures: &Figures) {
        figures.heartbeats.lock().unwrap().extend(self.heartbeats);
        figures.claims.lock().unwrap().extend(self.claims);
        figures.dispatch.lock().unwrap().extend(self.dispatch);
        figures.calls.lock().unwrap().extend(self.calls);
        figures.errors.fetch_add(self.errors, Ordering::Relaxed);
        if let Some(error) = self.first_error {
            figures.first_error.lock().unwrap().get_or_insert(error);
        }
        figures
            .completed
            .fetch_add(self.completed, Ordering::Relaxed);
    }
}

/// Starts a client process (this benchmark's binary, `swarm-client`) driving the
/// agents whose tokens are `share` until `leave_ms` (Unix ms).
pub(crate) fn spawn_clients(
    url: &str,
    share: &[String],
    leave_ms: u64,
    mode: Mode,
) -> std::process::Child {
    use std::io::Write;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["swarm-client", url, &leave_ms.to_string(), mode.as_str()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(share.join("\n").as_bytes()).unwrap();
    drop(stdin);
    child
}

/// A client process: the agents of the tokens on stdin, until `leave_ms`; prints
/// what they measured as JSON.
pub(crate) fn client_process(url: &str, leave_ms: u64, mode: Mode) {
    let mut tokens = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut tokens).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let figures = Arc::new(Figures::default());
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(4096)
            .pool_idle_timeout(colony_client::IDLE_CONNECTION_KEPT)
            .build()
            .unwrap();
        let until = Instant::now() + Duration::from_millis(leave_ms.saturating_sub(unix_ms()));
        let mut tasks = Vec::new();
        let tokens: Vec<&str> = tokens.lines().filter(|t| !t.is_empty()).collect();
        for (index, token) in tokens.iter().enumerate() {
            let client = Client::with_http(url, token, http.clone()).unwrap();
            let start_after = stagger(index, tokens.len());
            tasks.push(tokio::spawn(agent(
                client,
                Arc::clone(&figures),
                until,
                mode,
                start_after,
            )));
        }
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    });
    println!(
        "{}",
        serde_json::to_string(&ClientFigures::of(&figures)).unwrap()
    );
}
