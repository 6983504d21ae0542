//! `colony worker --exec COMMAND`: one claimed task, run as `sh -c COMMAND` in the
//! sandbox, with the task on stdin and in the environment (`COLONY_TASK`,
//! `COLONY_TASK_JSON`, `COLONY_CHECKPOINT`, `COLONY_LEASE_TOKEN`, and `COLONY_URL`
//! with `COLONY_TOKEN`: a token scoped to that task, never the worker's own, revoked
//! when the command ends). A line `checkpoint: {json}` on the command's stdout is
//! stored as the task's checkpoint; the rest of stdout is the result (JSON if it
//! parses); a non-zero exit fails the attempt with the end of stderr.
//!
//! The command's CPU time and memory are reserved from the worker's quotas before it
//! starts and what it used is charged after. It is stopped, with everything it
//! started, when its attempt's deadline passes or its claim is lost (the client
//! library's loop renews the lease and says when it is lost).

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use colony_api::ledger::{CommitRequest, ReleaseRequest, ReserveRequest, Reserved};
use colony_api::streams::Duration as Ttl;
use colony_api::tokens::{CreateToken, TokenCreated};
use colony_client::{Outcome, Work};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::client::{ApiFailure, Client};
use crate::sandbox::Sandbox;

/// Largest stderr tail kept as a failure reason, in bytes.
const FAILURE_REASON_BYTES_MAX: usize = 2_048;

/// After an attempt's deadline, how long the handler waits for the node to end
/// the claim (it fails a timed-out attempt by itself) before failing it itself.
const TIMED_OUT_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// Why a command was stopped before it ended.
enum Stopped {
    /// Its attempt's deadline passed (the node fails the attempt by itself).
    TimedOut(String),
    /// Its claim was lost: cancelled, timed out or reassigned, as the node answered.
    Lost,
}

/// Runs the command for one claimed task and says what to report.
pub(crate) async fn work(
    client: &Client,
    me: &anyhow::Result<String>,
    exec: &str,
    sandbox: &Sandbox,
    work: Work,
) -> Outcome {
    let address = work.held.address.clone();
    match run(client, me, exec, sandbox, &work).await {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("colony worker: {address}: {error:#}");
            Outcome::Fail(format!("the worker could not run the command: {error:#}"))
        }
    }
}

async fn run(
    client: &Client,
    me: &anyhow::Result<String>,
    exec: &str,
    sandbox: &Sandbox,
    work: &Work,
) -> anyhow::Result<Outcome> {
    let task = &work.task;
    let address = work.held.address.as_str();
    let task_json = serde_json::to_string(task)?;
    // The command's CPU time and memory are reserved before it starts, from the
    // worker's quotas; without them the task goes back on the board, and the worker
    // waits before claiming again (a claim now would be refused the same way).
    let held = match Held::reserve(client, sandbox, address).await {
        Ok(held) => held,
        Err(error) => {
            eprintln!("colony worker: cannot run {address}: {error:#}");
            let pause = error
                .downcast_ref::<ApiFailure>()
                .and_then(|f| {
                    crate::worker_time::refusal_pause(
                        f.status,
                        &f.body,
                        None,
                        Duration::from_secs(1),
                    )
                })
                .unwrap_or(Duration::from_secs(1));
            return Ok(Outcome::Backoff {
                reason: format!("the worker cannot reserve what its command may use: {error:#}"),
                pause,
            });
        }
    };
    // A private work directory.
    let workdir = tempfile::Builder::new().prefix("colony-task-").tempdir()?;
    // The command gets a token scoped to this task (its routes, and LLM calls made
    // for it), never the worker's own; it is revoked when the command ends.
    let scoped = task_token(client, me, address).await;
    let (mut command, report) = sandbox.command(exec, workdir.path())?;
    command.env_remove("COLONY_TOKEN");
    if let Some((_, _, secret)) = &scoped {
        command.env("COLONY_TOKEN", secret);
    }
    let mut child = command
        .env("COLONY_URL", client.base())
        .env("COLONY_TASK", address)
        .env("COLONY_TASK_JSON", &task_json)
        .env(
            "COLONY_CHECKPOINT",
            if task.checkpoint.is_null() {
                String::new()
            } else {
                task.checkpoint.to_string()
            },
        )
        .env("COLONY_LEASE_TOKEN", work.held.lease_token.to_string())
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
    let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr_tail = tail_of(child.stderr.take().expect("piped"));
    let (output, stopped) = follow(work, stdout).await;
    match &stopped {
        Some(Stopped::TimedOut(why)) => {
            group.kill();
            eprintln!("colony worker: stopped the command of {address}: {why}");
        }
        Some(Stopped::Lost) => {
            group.kill();
            eprintln!("colony worker: stopped the command of {address}: its claim was lost (cancelled, timed out or reassigned)");
        }
        None => {}
    }
    let status = child.wait().await?;
    // Reaped: its number may be reused from now on, so it is never signalled again.
    group.0 = None;
    if let Some((principal, id, _)) = &scoped {
        revoke(client, principal, *id, address).await;
    }
    let measured = crate::sandbox::measured(report).await;
    held.settle(client, address, measured).await;
    let stderr = stderr_tail.await.unwrap_or_default();
    Ok(match stopped {
        // Not reported: the loop knows the claim is lost.
        Some(Stopped::Lost) => Outcome::Release("its claim was lost".into()),
        Some(Stopped::TimedOut(why)) => {
            // The node fails a timed-out attempt by itself: the next renewal hears
            // the claim is over, and nothing is reported.
            let _ = tokio::time::timeout(TIMED_OUT_CLAIM_WAIT, work.lease_lost.lost()).await;
            Outcome::Fail(why)
        }
        None => finish(address, status, output, stderr),
    })
}

/// Reads the command's stdout until it closes (its checkpoints saved, the rest
/// kept as its output), its attempt's deadline passes, or its claim is lost.
async fn follow(
    work: &Work,
    mut stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> (Vec<String>, Option<Stopped>) {
    let address = work.held.address.as_str();
    let deadline = tokio::time::Instant::now() + work.time_left();
    let mut output = Vec::new();
    let stopped = loop {
        let line = tokio::select! {
            line = stdout.next_line() => line,
            _ = tokio::time::sleep_until(deadline) => break Some(Stopped::TimedOut(format!(
                "its attempt timed out (attempt_timeout {} ms)",
                work.task.attempt_timeout_ms
            ))),
            () = work.lease_lost.lost() => break Some(Stopped::Lost),
        };
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break None,
            Err(error) => {
                eprintln!("colony worker: {address}: reading the command's output: {error}");
                break None;
            }
        };
        let Some(checkpoint) = line.strip_prefix("checkpoint:") else {
            output.push(line);
            continue;
        };
        match work
            .client
            .checkpoint(&work.held, checkpointed(checkpoint))
            .await
        {
            Ok(_) => {}
            Err(error) if error.is_gone() => break Some(Stopped::Lost),
            // A checkpoint refused (too large) or not delivered: the work goes on.
            Err(error) => eprintln!("colony worker: {address}: checkpoint not saved: {error}"),
        }
    };
    (output, stopped)
}

/// A `checkpoint:` line's checkpoint: its JSON, or its text.
fn checkpointed(line: &str) -> Value {
    let line = line.trim();
    serde_json::from_str(line).unwrap_or_else(|_| json!(line))
}

/// What to report of a command that ended: completed with what it printed (JSON,
/// or its text), or failed with the end of what it said on stderr.
fn finish(
    address: &str,
    status: std::process::ExitStatus,
    output: Vec<String>,
    stderr: String,
) -> Outcome {
    if status.success() {
        let text = output.join("\n");
        eprintln!("colony worker: {address}: the command succeeded");
        Outcome::Complete(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    } else {
        eprintln!("colony worker: {address}: the command failed ({status})");
        Outcome::Fail(if stderr.is_empty() {
            format!("the command exited with {status}")
        } else {
            stderr
        })
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

/// The command's scoped token revoked once it ended.
async fn revoke(client: &Client, principal: &str, id: u64, address: &str) {
    let path = format!(
        "/v1/principals/{principal}/tokens/{id}?justification=the%20task%27s%20command%20ended"
    );
    if let Err(error) = client.delete(&path).await {
        eprintln!("colony worker: could not revoke the token of {address}'s command: {error:#}");
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

/// A command's CPU time and memory, reserved from the worker's quotas before it
/// runs; what it used is committed after (its peak memory recorded, then the hold
/// given back).
struct Held {
    compute: u64,
    memory: u64,
}

impl Held {
    async fn reserve(client: &Client, sandbox: &Sandbox, address: &str) -> anyhow::Result<Held> {
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

/// The command's process group: killed whole (the command and everything it
/// started), when its attempt times out, its claim is lost, or the worker goes.
/// Signalled only while its leader is unreaped, when the number cannot have been
/// reused by another group.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn kill(&self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            // Already gone is fine: nothing is left to stop.
            let _gone = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
