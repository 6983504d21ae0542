//! `colony worker`: a worker process that takes tasks from the board and runs a
//! command for each (`--exec`), or asks a model through the node's LLM gateway
//! (without `--exec`; see [`work_llm`]).
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

use anyhow::Context;
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
    let exec = options.exec.clone();
    let model = options.model.clone().unwrap_or_else(|| "auto".to_string());
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
        let outcome = match &exec {
            Some(exec) => work(&client, exec, &claimed).await,
            None => work_llm(&client, &model, &claimed).await,
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

/// A denial to wait out (429 from the gateway: budget, rate or limit), in seconds.
fn backoff_secs(error: &anyhow::Error) -> Option<u64> {
    let failure = error.downcast_ref::<ApiFailure>()?;
    (failure.status == 429).then(|| {
        failure.body["error"]["colony"]["retry_after"]
            .as_u64()
            .or(failure.body["error"]["retry_after"].as_u64())
            .unwrap_or(5)
            .clamp(1, 60)
    })
}

/// What the worker asks the model. The answer must hold one fenced JSON block with an
/// `action`: `complete` (with `result`) or `decompose` (with `subtasks`), and a
/// `justification`. The old swarm's ```` ```signal ```` and ```` ```swarm ```` blocks are
/// understood too.
const SYSTEM_PROMPT: &str = "You are a worker in a Colony swarm. You get one task. Either do it \
and answer with a fenced ```json block {\"action\": \"complete\", \"result\": ..., \"justification\": \"...\"}, \
or, if it is too big for one step, split it into 2 to 5 smaller independent tasks with \
{\"action\": \"decompose\", \"subtasks\": [{\"title\": \"...\", \"description\": \"...\", \"capabilities\": []}], \
\"justification\": \"...\"}. If you cannot do it, answer a ```signal block {\"signal\": \
\"task_rejection\" | \"clarification_needed\" | \"low_confidence\", \"reason\": \"...\"}. Always justify.";

/// `remaining` micro-dollars split evenly among `count` subtasks (the odd
/// micro-dollars stay with the parent).
pub fn budget_shares(remaining: u64, count: usize) -> Vec<u64> {
    if count == 0 {
        return Vec::new();
    }
    vec![remaining / count as u64; count]
}

/// Micro-dollars as a dollar amount the API reads exactly (`"0.250000"`).
pub fn micro_usd_text(micro: u64) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// The fenced blocks of a model's answer: (language, body).
pub fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let Some(newline) = after.find('\n') else {
            break;
        };
        let language = after[..newline].trim().to_lowercase();
        let body_start = &after[newline + 1..];
        let Some(end) = body_start.find("```") else {
            break;
        };
        blocks.push((language, body_start[..end].trim().to_string()));
        rest = &body_start[end + 3..];
    }
    blocks
}

/// Asks the model through the gateway (charged to the task) to complete or split
/// one claimed task, and reports what it decided, with its justification.
async fn work_llm(client: &Client, model: &str, claimed: &Value) -> anyhow::Result<()> {
    let task = &claimed["task"];
    let address = text(&task["address"]);
    let token = claimed["lease"]["token"]
        .as_u64()
        .context("no lease token")?;
    let lease_path = |action: &str| format!("/v1/tasks/{address}/{action}");
    client
        .post(
            &lease_path("checkpoint"),
            &json!({"lease_token": token, "checkpoint": {"stage": "asking the model", "model": model,
                    "resumed_from": task["checkpoint"]}}),
        )
        .await?;
    let prompt = format!(
        "Title: {}\nDescription: {}\nCapabilities: {}\nPriority: {}\nCheckpoint: {}\n\nAnswer with the \"action\" JSON block.",
        text(&task["title"]),
        text(&task["description"]),
        task["capabilities"],
        text(&task["priority"]),
        task["checkpoint"],
    );
    let request = json!({
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
        "max_tokens": 800,
    });
    let answer = match client
        .post_with(
            "/v1/chat/completions",
            &request,
            &[("x-colony-task", &address)],
        )
        .await
    {
        Ok(answer) => answer,
        Err(error) => {
            // Give the task back at once rather than sit on it while waiting.
            let _ = client
                .post(&lease_path("release"), &json!({"lease_token": token, "justification": format!("the model call was refused: {error}")}))
                .await;
            return Err(error);
        }
    };
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let blocks = fenced_blocks(&content);
    for (language, body) in &blocks {
        if language == "swarm" {
            // Scaling is the supervisor's, from the board: recorded, not obeyed.
            eprintln!("colony worker: {address}: the model asked the swarm for {body} (the supervisor scales from the board)");
        }
    }
    let signal = blocks
        .iter()
        .find(|(l, _)| l == "signal")
        .and_then(|(_, b)| serde_json::from_str::<Value>(b).ok());
    if let Some(signal) = signal {
        let reason = format!(
            "the model signalled {}: {}",
            text(&signal["signal"]),
            text(&signal["reason"])
        );
        let action = if signal["signal"] == "task_rejection" {
            "fail"
        } else {
            "release"
        };
        client
            .post(
                &lease_path(action),
                &json!({"lease_token": token, "reason": reason, "justification": reason}),
            )
            .await?;
        eprintln!("colony worker: {address}: {reason}");
        return Ok(());
    }
    let decision = blocks
        .iter()
        .filter(|(l, _)| l == "json" || l == "swarm" || l.is_empty())
        .filter_map(|(_, b)| serde_json::from_str::<Value>(b).ok())
        .find(|v| v["action"].is_string())
        .or_else(|| {
            serde_json::from_str::<Value>(content.trim())
                .ok()
                .filter(|v| v["action"].is_string())
        });
    let Some(decision) = decision else {
        let reason = format!(
            "the model's answer held no decision block: {}",
            content.chars().take(300).collect::<String>()
        );
        client
            .post(
                &lease_path("fail"),
                &json!({"lease_token": token, "reason": reason}),
            )
            .await?;
        eprintln!("colony worker: {address}: failed (no decision in the answer)");
        return Ok(());
    };
    let justification = decision["justification"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{model} decided without saying why"));
    match decision["action"].as_str() {
        Some("decompose") => {
            let mut subtasks: Vec<Value> = decision["subtasks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .take(10)
                .map(|s| {
                    json!({"title": text(&s["title"]), "description": s["description"].as_str().unwrap_or(""),
                           "capabilities": s["capabilities"].as_array().cloned().unwrap_or_default()})
                })
                .collect();
            // The subtasks share what is left of the task's budget (the call above is
            // already charged), so that their own calls are charged to them.
            let current = client.get(&format!("/v1/tasks/{address}")).await?;
            let remaining = current["budget"]["remaining_micro_usd"]
                .as_u64()
                .unwrap_or(0);
            let shares = budget_shares(remaining, subtasks.len());
            for (subtask, share) in subtasks.iter_mut().zip(shares) {
                if share > 0 {
                    subtask["budget_usd"] = json!(micro_usd_text(share));
                }
            }
            client
                .post(&lease_path("decompose"), &json!({"lease_token": token, "subtasks": subtasks, "justification": justification}))
                .await?;
            eprintln!(
                "colony worker: {address}: decomposed into {} subtasks ({justification})",
                subtasks.len()
            );
        }
        _ => {
            let result = if decision["result"].is_null() {
                Value::String(content.clone())
            } else {
                decision["result"].clone()
            };
            client
                .post(&lease_path("complete"), &json!({"lease_token": token, "result": result, "justification": justification}))
                .await?;
            eprintln!("colony worker: {address}: completed ({justification})");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_shares_never_exceed_what_is_left() {
        assert_eq!(budget_shares(1_000, 3), vec![333, 333, 333]);
        assert_eq!(budget_shares(0, 2), vec![0, 0]);
        assert!(budget_shares(5, 0).is_empty());
        for (remaining, count) in [(1, 1), (999_999, 7), (u64::MAX, 10)] {
            assert!(budget_shares(remaining, count).iter().sum::<u64>() <= remaining);
        }
    }

    #[test]
    fn micro_dollars_are_written_exactly() {
        assert_eq!(micro_usd_text(250_000), "0.250000");
        assert_eq!(micro_usd_text(1_000_001), "1.000001");
        assert_eq!(micro_usd_text(0), "0.000000");
    }

    #[test]
    fn fenced_blocks_are_found_with_their_language() {
        let text = "intro\n```json\n{\"action\": \"complete\"}\n```\nthen\n```signal\n{}\n```";
        let blocks = fenced_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[0],
            ("json".into(), "{\"action\": \"complete\"}".into())
        );
        assert_eq!(blocks[1].0, "signal");
    }
}
