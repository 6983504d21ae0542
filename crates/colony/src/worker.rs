//! `colony worker`: a worker process that takes tasks from the board and runs a
//! command for each (`--exec`), or asks a model through the node's LLM gateway
//! (without `--exec`; see `worker_llm.rs`).
//!
//! It registers a session, heartbeats it, claims work for that session, and runs
//! `sh -c COMMAND` per task with the task on stdin and in the environment
//! (`COLONY_TASK`, `COLONY_TASK_JSON`, `COLONY_CHECKPOINT`, `COLONY_LEASE_TOKEN`, and
//! `COLONY_URL` with `COLONY_TOKEN`: a token scoped to that task, never the worker's
//! own, revoked when the command ends). A line
//! `checkpoint: {json}` on the command's stdout is stored as the task's checkpoint; the
//! rest of stdout is the result (JSON if it parses); a non-zero exit fails the attempt
//! with the end of stderr. The task's lease is renewed while the command runs. A lost
//! session (410) or claim (409) stops the worker: its work went to someone else.
//!
//! The reference LLM worker is in `worker_llm.rs`.

use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use colony_api::gateway::OpenAiError;
use colony_api::ledger::{CommitRequest, LedgerView, ReleaseRequest, ReserveRequest, Reserved};
use colony_api::streams::Duration as Ttl;
use colony_api::tasks::{ClaimRequest, Claimed, LeaseRequest};
use colony_api::tokens::{CreateToken, TokenCreated};
use colony_api::workers::{RegisterAnswer as Registration, RegisterRequest, WorkerHeartbeat};

use crate::client::{ApiFailure, Client};
use crate::lease::{is_gone, task_lease_ms, until, Lease, ProcessGroup};
use crate::Remote;

/// How often a queued session checks whether it was admitted, in milliseconds.
const DEFAULT_HEARTBEAT_MS: u64 = 2_000;

/// Claims in a row that cannot reach the node before the worker gives up.
const UNREACHABLE_CLAIMS_MAX: u32 = 50;

/// Largest stderr tail kept as a failure reason, in bytes.
const FAILURE_REASON_BYTES_MAX: usize = 2_048;

pub struct WorkerOptions {
    pub capabilities: Vec<String>,
    pub exec: Option<String>,
    /// How `exec` runs: isolation and limits.
    pub sandbox: crate::sandbox::SandboxFlags,
    pub poll_ms: u64,
    pub max_tasks: Option<u64>,
    pub model: Option<String>,
    pub profile: Option<String>,
}

/// A worker session registered (waiting for a place when queued): its id and how
/// often it heartbeats.
async fn register(client: &Client, options: &WorkerOptions) -> anyhow::Result<(u64, u64)> {
    let request = RegisterRequest {
        capabilities: options.capabilities.clone(),
        model: options.model.clone(),
        profile: options.profile.clone(),
        justification: Some(format!("worker process {} starts", std::process::id())),
    };
    let registration: Registration = client
        .post_as("/v1/workers", &request)
        .await
        .context("cannot register a worker session")?;
    let (worker, heartbeat_ms) = match &registration {
        Registration::Queued(queued) => (queued.worker, DEFAULT_HEARTBEAT_MS),
        Registration::Registered(registered) => (registered.worker, registered.heartbeat_ms),
    };
    if let Registration::Queued(queued) = &registration {
        eprintln!(
            "colony worker: queued (position {}); waiting for a place",
            queued.position
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
    Ok((worker, heartbeat_ms))
}

/// A flag set at SIGTERM or Ctrl-C.
fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopping);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        flag.store(true, Ordering::SeqCst);
    });
    Ok(stopping)
}

/// The session's heartbeats, until the node says it is gone (`lost` is then set).
fn heartbeat(
    client: Client,
    worker: u64,
    heartbeat_ms: u64,
    lost: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(heartbeat_ms)).await;
            if let Err(error) = client
                .post(&format!("/v1/workers/{worker}/heartbeat"), &json!({}))
                .await
                .and_then(crate::client::typed::<WorkerHeartbeat>)
            {
                if is_gone(&error).is_some() {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                eprintln!("colony worker: heartbeat failed: {error:#}");
            }
        }
    })
}

pub async fn run(options: WorkerOptions, remote: Remote) -> anyhow::Result<ExitCode> {
    let exec = options.exec.clone();
    let sandbox = match &exec {
        Some(_) => Some(crate::sandbox::Sandbox::resolve(options.sandbox.clone())?),
        None => None,
    };
    let model = options.model.clone().unwrap_or_else(|| "auto".to_string());
    let client = Client::new(&remote)?;
    let (worker, heartbeat_ms) = register(&client, &options).await?;
    // SIGTERM or Ctrl-C: finish the task at hand, leave the session, exit.
    let stopping = stop_on_signal()?;
    let lost = Arc::new(AtomicBool::new(false));
    let beating = heartbeat(client.clone(), worker, heartbeat_ms, Arc::clone(&lost));
    // Who this worker is, asked once: the tokens its commands get are made for it.
    let me: anyhow::Result<String> = client
        .get_as::<LedgerView>("/v1/ledger/me")
        .await
        .map(|ledger| ledger.principal);
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
        let request = ClaimRequest {
            worker: Some(worker),
            ..ClaimRequest::default()
        };
        let claimed = client
            .post_as::<Option<Claimed>>("/v1/tasks/claim", &request)
            .await;
        let claimed = match claimed {
            Ok(None) => {
                unreachable = 0;
                tokio::time::sleep(Duration::from_millis(options.poll_ms)).await;
                continue;
            }
            Ok(Some(claimed)) => {
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
        let outcome = match &exec {
            Some(exec) => {
                let sandbox = sandbox.as_ref().expect("resolved with exec");
                work(&client, &me, exec, sandbox, &claimed).await
            }
            None => crate::worker_llm::work_llm(&client, &model, &claimed).await,
        };
        match outcome {
            Ok(()) => done += 1,
            Err(error) if backoff_secs(&error).is_some() => {
                let secs = backoff_secs(&error).unwrap_or(1);
                eprintln!("colony worker: backing off {secs} s: {error:#}");
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
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

/// A token for the command that runs the task at `address`: `(principal, id,
/// secret)`, scoped to the task for a day (revoked as soon as the command ends), or
/// `None` (said loudly) when the worker's own token may not make one.
async fn task_token(
    client: &Client,
    me: &anyhow::Result<String>,
    address: &str,
) -> Option<(String, u64, String)> {
    let made = async {
        let me = me.as_ref().map_err(|error| anyhow::anyhow!("{error:#}"))?;
        let body = CreateToken {
            name: format!("task {address}"),
            scopes: vec![format!("task:{address}")],
            ttl: Some(Ttl::Text("24h".into())),
            justification: Some(format!("the command that runs {address}")),
        };
        let path = format!("/v1/principals/{me}/tokens");
        let created: TokenCreated = client.post_as(&path, &body).await?;
        anyhow::Ok((me.clone(), created.id, created.token))
    };
    match made.await {
        Ok(made) => Some(made),
        Err(error) => {
            eprintln!(
                "colony worker: the command for {address} runs without a token (this worker's token cannot make one: {error:#})"
            );
            None
        }
    }
}

/// Runs the command for one claimed task and reports the outcome.
async fn work(
    client: &Client,
    me: &anyhow::Result<String>,
    exec: &str,
    sandbox: &crate::sandbox::Sandbox,
    claimed: &Claimed,
) -> anyhow::Result<()> {
    let task = &claimed.task;
    let address = task.address.clone();
    let token = claimed.lease.token;
    let task_json = serde_json::to_string(task)?;
    let lease_ms = task_lease_ms(claimed);
    let lease = Lease {
        client,
        address: &address,
        token,
    };
    // The command's CPU time and memory are reserved before it starts, from the
    // worker's quotas; without them the task goes back on the board.
    let held = match Held::reserve(client, sandbox, &address).await {
        Ok(held) => held,
        Err(error) => {
            eprintln!("colony worker: cannot run {address}: {error:#}");
            lease.act("release", LeaseRequest::default()).await?;
            return Ok(());
        }
    };
    // A private work directory.
    let workdir = tempfile::Builder::new().prefix("colony-task-").tempdir()?;
    // The command gets a token scoped to this task (its routes, and LLM calls made
    // for it), never the worker's own; it is revoked when the command ends.
    let scoped = task_token(client, me, &address).await;
    let (mut command, report) = sandbox.command(exec, workdir.path())?;
    command.env_remove("COLONY_TOKEN");
    if let Some((_, _, secret)) = &scoped {
        command.env("COLONY_TOKEN", secret);
    }
    let mut child = command
        .env("COLONY_URL", client.base())
        .env("COLONY_TASK", &address)
        .env("COLONY_TASK_JSON", &task_json)
        .env(
            "COLONY_CHECKPOINT",
            if task.checkpoint.is_null() {
                String::new()
            } else {
                task.checkpoint.to_string()
            },
        )
        .env("COLONY_LEASE_TOKEN", token.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // A group of its own, so that everything it started can be stopped at once.
        .process_group(0)
        .spawn()
        .context("cannot start the --exec command")?;
    let mut group = ProcessGroup(child.id());
    // The report pipe's write end now lives only in the command's process.
    drop(command);
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(task_json.as_bytes()).await;
    }
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr_tail = tail_of(child.stderr.take().expect("piped"));
    let mut output = Vec::new();
    let mut renew = tokio::time::interval(Duration::from_millis((lease_ms / 3).max(50)));
    renew.tick().await;
    let deadline = tokio::time::Instant::now() + until(claimed.lease.attempt_deadline_ms);
    // Why the command was stopped before it ended: its attempt timed out, or its
    // claim was lost (cancelled, timed out or reassigned, as the node answered).
    let stopped: Option<String> = loop {
        let renewed = tokio::select! {
            line = stdout.next_line() => match line? {
                Some(line) => match line.strip_prefix("checkpoint:") {
                    Some(checkpoint) => lease.act("checkpoint", checkpointed(checkpoint)).await,
                    None => {
                        output.push(line);
                        continue;
                    }
                },
                None => break None,
            },
            _ = renew.tick() => lease.act("heartbeat", LeaseRequest::default()).await,
            _ = tokio::time::sleep_until(deadline) => {
                break Some(format!("its attempt timed out (attempt_timeout {} ms)", task.attempt_timeout_ms));
            }
        };
        match renewed {
            Ok(_) => {}
            Err(error) if is_gone(&error).is_some() => break Some(format!("{error:#}")),
            Err(error) => {
                group.kill();
                return Err(error);
            }
        }
    };
    if let Some(why) = &stopped {
        group.kill();
        eprintln!("colony worker: stopped the command of {address}: {why}");
    }
    let status = child.wait().await?;
    // Reaped: its number may be reused from now on, so it is never signalled again.
    group.0 = None;
    if let Some((principal, id, _)) = &scoped {
        revoke(client, principal, *id, &address).await;
    }
    let measured = crate::sandbox::measured(report).await;
    held.settle(client, &address, measured).await;
    let stderr = stderr_tail.await.unwrap_or_default();
    if stopped.is_some() {
        // The claim is over (the node fails a timed-out attempt by itself): there
        // is nothing to complete or fail.
        return Ok(());
    }
    finish(&lease, status, output, stderr).await
}

/// A `checkpoint:` line's checkpoint: its JSON, or its text.
fn checkpointed(line: &str) -> LeaseRequest {
    let line = line.trim();
    let checkpoint = serde_json::from_str(line).unwrap_or_else(|_| json!(line));
    LeaseRequest {
        checkpoint: Some(checkpoint),
        ..LeaseRequest::default()
    }
}

/// The last `FAILURE_REASON_BYTES_MAX` bytes the command writes on stderr (all of
/// it is read, so that the command never blocks on a full pipe).
fn tail_of(mut stderr: tokio::process::ChildStderr) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all).await;
        let start = all.len().saturating_sub(FAILURE_REASON_BYTES_MAX);
        String::from_utf8_lossy(&all[start..]).trim().to_string()
    })
}

/// The command's scoped token revoked once it ended.
async fn revoke(client: &Client, principal: &str, id: u64, address: &str) {
    let path = format!(
        "/v1/principals/{principal}/tokens/{id}?justification=the%20task%27s%20command%20ended"
    );
    if let Err(error) = client.delete(&path).await {
        eprintln!("colony worker: could not revoke the token of {address}'s command: {error:#}");
    }
}

/// The task completed with what the command printed (JSON, or its text), or failed
/// with the end of what it said on stderr.
async fn finish(
    lease: &Lease<'_>,
    status: std::process::ExitStatus,
    output: Vec<String>,
    stderr: String,
) -> anyhow::Result<()> {
    let address = lease.address;
    if status.success() {
        let text = output.join("\n");
        let result: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let request = LeaseRequest {
            result: Some(result),
            ..LeaseRequest::default()
        };
        lease.act("complete", request).await?;
        eprintln!("colony worker: completed {address}");
    } else {
        let reason = if stderr.is_empty() {
            format!("the command exited with {status}")
        } else {
            stderr
        };
        lease.fail(reason).await?;
        eprintln!("colony worker: failed {address}");
    }
    Ok(())
}

/// A command's CPU time and memory, reserved from the worker's quotas before it
/// runs; what it used is committed after (its peak memory recorded, then the hold
/// given back).
struct Held {
    compute: u64,
    memory: u64,
}

impl Held {
    async fn reserve(
        client: &Client,
        sandbox: &crate::sandbox::Sandbox,
        address: &str,
    ) -> anyhow::Result<Held> {
        let reserve = |resource: &str, amount: u64| ReserveRequest {
            resource: resource.to_string(),
            amount,
            justification: Some(format!("the command of task {address} may use this much")),
            ttl_ms: None,
        };
        let compute: Reserved = client
            .post_as(
                "/v1/ledger/reserve",
                &reserve("compute_ms", sandbox.cpu_ms()),
            )
            .await?;
        let memory: anyhow::Result<Reserved> = client
            .post_as(
                "/v1/ledger/reserve",
                &reserve("memory_bytes", sandbox.memory_bytes()),
            )
            .await;
        match memory {
            Ok(memory) => Ok(Held {
                compute: compute.reservation,
                memory: memory.reservation,
            }),
            Err(error) => {
                let _ = client
                    .post(
                        "/v1/ledger/release",
                        &ReleaseRequest {
                            reservation: compute.reservation,
                            justification: None,
                        },
                    )
                    .await;
                Err(error)
            }
        }
    }

    async fn settle(
        self,
        client: &Client,
        address: &str,
        measured: Option<crate::sandbox::Measured>,
    ) {
        let measured = measured.unwrap_or_default();
        let cpu = format!("{} ms of CPU", measured.cpu_ms);
        let peak = format!("{} bytes at its peak", measured.peak_bytes);
        let commits = [
            (self.compute, measured.cpu_ms, cpu),
            (self.memory, measured.peak_bytes, peak),
        ];
        let mut results = Vec::new();
        for (reservation, actual, what) in commits {
            let body = CommitRequest {
                reservation,
                actual,
                justification: Some(format!("the command of task {address} used {what}")),
            };
            results.push(client.post("/v1/ledger/commit", &body).await.map(|_| ()));
        }
        let release = ReleaseRequest {
            reservation: self.memory,
            justification: Some(format!("the command of task {address} ended")),
        };
        results.push(
            client
                .post("/v1/ledger/release", &release)
                .await
                .map(|_| ()),
        );
        for result in results {
            if let Err(error) = result {
                eprintln!("colony worker: charging {address}'s command: {error:#}");
            }
        }
        eprintln!(
            "colony worker: {address}'s command used {} ms of CPU, {} bytes at its peak",
            measured.cpu_ms, measured.peak_bytes
        );
    }
}

/// A denial to wait out (429 from the gateway: budget, rate or limit), in seconds.
fn backoff_secs(error: &anyhow::Error) -> Option<u64> {
    let failure = error.downcast_ref::<ApiFailure>()?;
    (failure.status == 429).then(|| {
        let gateway = serde_json::from_value::<OpenAiError>(failure.body.clone())
            .ok()
            .and_then(|e| e.error.colony.get("retry_after").and_then(Value::as_u64));
        let api = failure
            .error()
            .and_then(|e| e.details.get("retry_after").and_then(Value::as_u64));
        gateway.or(api).unwrap_or(5).clamp(1, 60)
    })
}
