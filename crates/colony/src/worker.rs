//! `colony worker`: a worker process that takes tasks from the board and runs a
//! command for each.
//!
//! It registers a session, heartbeats it, claims work for that session, and runs
//! `sh -c COMMAND` per task with the task on stdin and in the environment
//! (`COLONY_TASK`, `COLONY_TASK_JSON`, `COLONY_CHECKPOINT`, `COLONY_LEASE_TOKEN`). A line
//! `checkpoint: {json}` on the command's stdout is stored as the task's checkpoint; the
//! rest of stdout is the result (JSON if it parses); a non-zero exit fails the attempt
//! with the end of stderr. The task's lease is renewed while the command runs. A lost
//! session (410) or claim (409) stops the worker: its work went to someone else.

use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::client::{ApiFailure, Client};
use crate::output::text;
use crate::Remote;

/// Claims in a row that cannot reach the node before the worker gives up.
const UNREACHABLE_CLAIMS_MAX: u32 = 50;

/// Largest stderr tail kept as a failure reason, in bytes.
const FAILURE_REASON_BYTES_MAX: usize = 2_048;

pub struct WorkerOptions {
    pub capabilities: Vec<String>,
    pub exec: Option<String>,
    pub poll_ms: u64,
    pub max_tasks: Option<u64>,
    pub model: Option<String>,
    pub profile: Option<String>,
}

fn is_gone(error: &anyhow::Error) -> Option<u16> {
    error
        .downcast_ref::<ApiFailure>()
        .map(|f| f.status)
        .filter(|s| *s == 409 || *s == 410)
}

pub async fn run(options: WorkerOptions, remote: Remote) -> anyhow::Result<ExitCode> {
    let Some(exec) = options.exec.clone() else {
        bail!("pass --exec COMMAND: the command each task runs (the LLM-driven worker comes with the gateway)");
    };
    let client = Client::new(&remote)?;
    let registration = client
        .post(
            "/v1/workers",
            &json!({"capabilities": options.capabilities, "model": options.model, "profile": options.profile,
                    "justification": format!("worker process {} starts", std::process::id())}),
        )
        .await
        .context("cannot register a worker session")?;
    let worker = registration["worker"].as_u64().context("no worker id")?;
    let heartbeat_ms = registration["heartbeat_ms"].as_u64().unwrap_or(2_000);
    if registration["status"] == "queued" {
        eprintln!(
            "colony worker: queued (position {}); waiting for a place",
            registration["position"]
        );
        loop {
            tokio::time::sleep(Duration::from_millis(heartbeat_ms)).await;
            if client.get(&format!("/v1/workers/{worker}")).await.is_ok() {
                break;
            }
        }
    }
    eprintln!(
        "colony worker: session {worker} registered (capabilities: {})",
        options.capabilities.join(",")
    );

    // SIGTERM or Ctrl-C: finish the task at hand, leave the session, exit.
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let stopping = Arc::clone(&stopping);
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stopping.store(true, Ordering::SeqCst);
        });
    }
    let lost = Arc::new(AtomicBool::new(false));
    let beating = {
        let (client, lost) = (client.clone(), Arc::clone(&lost));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(heartbeat_ms)).await;
                if let Err(error) = client
                    .post(&format!("/v1/workers/{worker}/heartbeat"), &json!({}))
                    .await
                {
                    if is_gone(&error).is_some() {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    eprintln!("colony worker: heartbeat failed: {error:#}");
                }
            }
        })
    };

    let mut done = 0u64;
    let mut unreachable = 0u32;
    let result = loop {
        if lost.load(Ordering::SeqCst) {
            break Err(anyhow::anyhow!(
                "session {worker} was declared lost; register again"
            ));
        }
        if stopping.load(Ordering::SeqCst) || options.max_tasks.is_some_and(|max| done >= max) {
            break Ok(());
        }
        let claimed = client
            .post("/v1/tasks/claim", &json!({"worker": worker}))
            .await;
        let claimed = match claimed {
            Ok(Value::Null) => {
                unreachable = 0;
                tokio::time::sleep(Duration::from_millis(options.poll_ms)).await;
                continue;
            }
            Ok(claimed) => {
                unreachable = 0;
                claimed
            }
            Err(error) if is_gone(&error).is_some() => {
                break Err(error.context("the session is gone"))
            }
            Err(error) => {
                // A node that stays unreachable is gone: do not poll it forever.
                if error.downcast_ref::<ApiFailure>().is_none() {
                    unreachable += 1;
                    if unreachable >= UNREACHABLE_CLAIMS_MAX {
                        break Err(error.context("the node has been unreachable"));
                    }
                }
                eprintln!("colony worker: claim failed: {error:#}");
                tokio::time::sleep(Duration::from_millis(options.poll_ms.max(100))).await;
                continue;
            }
        };
        match work(&client, &exec, &claimed).await {
            Ok(()) => done += 1,
            Err(error) if is_gone(&error).is_some() => {
                break Err(error.context("the claim was lost: the task went to another worker"));
            }
            Err(error) => eprintln!("colony worker: {error:#}"),
        }
    };
    beating.abort();
    match result {
        Ok(()) => {
            let _ = client.delete(&format!("/v1/workers/{worker}")).await;
            eprintln!("colony worker: session {worker} left after {done} task(s)");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("colony worker: stopping: {error:#}");
            Ok(ExitCode::from(3))
        }
    }
}

/// Runs the command for one claimed task and reports the outcome.
async fn work(client: &Client, exec: &str, claimed: &Value) -> anyhow::Result<()> {
    let task = &claimed["task"];
    let address = text(&task["address"]);
    let token = claimed["lease"]["token"]
        .as_u64()
        .context("no lease token")?;
    let lease_ms = task_lease_ms(claimed);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(exec)
        .env("COLONY_TASK", &address)
        .env("COLONY_TASK_JSON", task.to_string())
        .env(
            "COLONY_CHECKPOINT",
            if task["checkpoint"].is_null() {
                String::new()
            } else {
                task["checkpoint"].to_string()
            },
        )
        .env("COLONY_LEASE_TOKEN", token.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the --exec command")?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(task.to_string().as_bytes()).await;
    }
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = child.stderr.take().expect("piped");
    let stderr_tail = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all).await;
        let start = all.len().saturating_sub(FAILURE_REASON_BYTES_MAX);
        String::from_utf8_lossy(&all[start..]).trim().to_string()
    });
    let lease_path = |action: &str| format!("/v1/tasks/{address}/{action}");
    let mut output = Vec::new();
    let mut renew = tokio::time::interval(Duration::from_millis((lease_ms / 3).max(50)));
    renew.tick().await;
    loop {
        tokio::select! {
            line = stdout.next_line() => match line? {
                Some(line) => match line.strip_prefix("checkpoint:") {
                    Some(checkpoint) => {
                        let checkpoint: Value = serde_json::from_str(checkpoint.trim()).unwrap_or_else(|_| json!(checkpoint.trim()));
                        client.post(&lease_path("checkpoint"), &json!({"lease_token": token, "checkpoint": checkpoint})).await?;
                    }
                    None => output.push(line),
                },
                None => break,
            },
            _ = renew.tick() => {
                client.post(&lease_path("heartbeat"), &json!({"lease_token": token})).await?;
            }
        }
    }
    let status = child.wait().await?;
    let stderr = stderr_tail.await.unwrap_or_default();
    if status.success() {
        let text = output.join("\n");
        let result: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        client
            .post(
                &lease_path("complete"),
                &json!({"lease_token": token, "result": result}),
            )
            .await?;
        eprintln!("colony worker: completed {address}");
    } else {
        let reason = if stderr.is_empty() {
            format!("the command exited with {status}")
        } else {
            stderr
        };
        client
            .post(
                &lease_path("fail"),
                &json!({"lease_token": token, "reason": reason}),
            )
            .await?;
        eprintln!("colony worker: failed {address}");
    }
    Ok(())
}

fn task_lease_ms(claimed: &Value) -> u64 {
    let expires = claimed["lease"]["expires_at_ms"].as_u64().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    expires.saturating_sub(now).max(300)
}
