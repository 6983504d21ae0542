//! The reference LLM worker, a handler for [`crate::run_worker`] (what `colony
//! worker` runs without `--exec`): for each claimed task, one gateway call charged to
//! the task, whose fenced JSON decision completes the task or decomposes it (the
//! subtasks sharing what is left of its budget). A gateway refusal that passes (a
//! budget or rate spent: 429) gives the task back and pauses the worker for as long
//! as the gateway said.
//!
//! ```no_run
//! # async fn example() -> Result<(), colony_client::Error> {
//! use colony_client::{llm_worker, run_worker, Client, Stop, WorkerOptions};
//! let client = Client::from_env()?;
//! let options = WorkerOptions { capabilities: vec!["writing".into()], ..Default::default() };
//! run_worker(&client, &options, &Stop::default(), |work| llm_worker::work("gpt-4o-mini", work))
//!     .await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use colony_api::gateway::ChatRequest;
use colony_api::tasks::{TaskRequest, Usd};
use serde_json::{json, Map, Value};

use crate::{Error, Outcome, Work};

/// How long to pause after a gateway refusal that passes, when it did not say.
const REFUSED_PAUSE: Duration = Duration::from_secs(5);
/// How long to pause after the gateway could not be reached or was overloaded,
/// when it did not say.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(2);
/// The longest pause a refusal may ask for.
const REFUSED_PAUSE_MAX: Duration = Duration::from_secs(60);

/// A JSON value as text: a string as it is, null as nothing, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
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

/// After an attempt's deadline, how long the handler waits for the node to end
/// the claim (it fails a timed-out attempt by itself) before failing it itself.
const TIMED_OUT_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// Asks the model through the gateway (charged to the task) to complete or split
/// one claimed task, and says what it decided, with its justification.
pub async fn work(model: &str, work: Work) -> Outcome {
    let task = &work.task;
    let address = work.held.address.as_str();
    let checkpoint = json!({"stage": "asking the model", "model": model,
                            "resumed_from": task.checkpoint});
    if let Err(error) = work.client.checkpoint(&work.held, checkpoint).await {
        if error.is_gone() {
            return Outcome::Release("its claim was lost".into());
        }
        tracing::warn!(task = %address, "checkpoint not saved: {error}");
    }
    let prompt = format!(
        "Title: {}\nDescription: {}\nCapabilities: {:?}\nPriority: {}\nCheckpoint: {}\n\nAnswer with the \"action\" JSON block.",
        task.title,
        task.description,
        task.capabilities,
        task.priority.as_str(),
        task.checkpoint,
    );
    let request = ChatRequest {
        model: model.to_string(),
        messages: vec![
            json!({"role": "system", "content": SYSTEM_PROMPT}),
            json!({"role": "user", "content": prompt}),
        ],
        max_tokens: Some(800),
        stream: None,
        rest: Map::new(),
    };
    // The call is abandoned when the attempt times out or the claim is lost (the
    // gateway settles what was generated when the caller leaves).
    let deadline = tokio::time::Instant::now() + work.time_left();
    let answer = tokio::select! {
        answer = work.client.chat(&request, Some(address)) => answer,
        () = work.lease_lost.lost() => {
            tracing::warn!(task = %address, "abandoned the model call: its claim was lost");
            return Outcome::Release("its claim was lost".into());
        }
        _ = tokio::time::sleep_until(deadline) => {
            let why = format!("its attempt timed out (attempt_timeout {} ms)", task.attempt_timeout_ms);
            tracing::warn!(task = %address, "abandoned the model call: {why}");
            // The node fails a timed-out attempt by itself; nothing is reported then.
            let _ = tokio::time::timeout(TIMED_OUT_CLAIM_WAIT, work.lease_lost.lost()).await;
            return Outcome::Fail(why);
        }
    };
    let answer = match answer {
        Ok(answer) => answer,
        // Refused for a while (a budget, a rate: 429), or the gateway or its provider
        // unreachable or overloaded (502, 503, 504): the task goes back at once
        // rather than sit here, and the worker waits before claiming again (as long
        // as the gateway said, or a default) rather than fail the same way at once.
        Err(error) if error.is_transient() => {
            let (otherwise, what) = if error.status() == Some(429) {
                (REFUSED_PAUSE, "was refused")
            } else {
                (UNAVAILABLE_PAUSE, "failed")
            };
            let pause = error
                .retry_after()
                .unwrap_or(otherwise)
                .clamp(Duration::from_secs(1), REFUSED_PAUSE_MAX);
            tracing::warn!(task = %address, "the model call {what}, backing off {} s: {error}", pause.as_secs());
            return Outcome::Backoff {
                reason: format!("the model call {what}: {error}"),
                pause,
            };
        }
        // The task is no longer this worker's to charge (its lease went).
        Err(error) if error.is_gone() => {
            tracing::warn!(task = %address, "the model call was refused: {error}");
            return Outcome::Release(format!("the model call was refused: {error}"));
        }
        // A refusal that stands (a scope, a model the gateway does not serve): the
        // attempt fails, saying why, rather than the task coming back here forever.
        Err(error) => {
            tracing::warn!(task = %address, "the model call failed: {error}");
            return Outcome::Fail(format!("the model call failed: {error}"));
        }
    };
    let content = answer
        .get("choices")
        .and_then(|choices| choices[0]["message"]["content"].as_str())
        .unwrap_or("")
        .to_string();
    decide(&work, model, &content).await
}

/// What the model's answer decides: a signal gives the task back, a decision
/// completes or splits it, no decision fails the attempt.
async fn decide(work: &Work, model: &str, content: &str) -> Outcome {
    let address = work.held.address.as_str();
    let blocks = fenced_blocks(content);
    for (language, body) in &blocks {
        if language == "swarm" {
            // Scaling is the supervisor's, from the board: recorded, not obeyed.
            tracing::info!(task = %address, "the model asked the swarm for {body} (the supervisor scales from the board)");
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
        tracing::info!(task = %address, "{reason}");
        return if signal["signal"] == "task_rejection" {
            Outcome::Fail(reason)
        } else {
            Outcome::Release(reason)
        };
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
        tracing::info!(task = %address, "failed: no decision in the answer");
        return Outcome::Fail(format!(
            "the model's answer held no decision block: {}",
            content.chars().take(300).collect::<String>()
        ));
    };
    let justification = decision["justification"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{model} decided without saying why"));
    let settled = match decision["action"].as_str() {
        Some("decompose") => decompose_as_told(work, &decision, &justification).await,
        _ => {
            let result = if decision["result"].is_null() {
                Value::String(content.to_string())
            } else {
                decision["result"].clone()
            };
            work.client
                .complete(&work.held, result, &justification)
                .await
                .map(|_| format!("completed ({justification})"))
        }
    };
    match settled {
        Ok(what) => {
            tracing::info!(task = %address, "{what}");
            Outcome::Settled(what)
        }
        // Reported as given back: a claim lost meanwhile is then counted as lost.
        Err(error) => {
            tracing::warn!(task = %address, "{error}");
            Outcome::Release(format!(
                "the model's decision could not be recorded: {error}"
            ))
        }
    }
}

/// The task decomposed into the subtasks the model proposed (at most 10), which
/// share what is left of its budget.
async fn decompose_as_told(
    work: &Work,
    decision: &Value,
    justification: &str,
) -> Result<String, Error> {
    // What the model proposed (its own JSON), as the board's requests.
    let mut subtasks: Vec<TaskRequest> = decision["subtasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .take(10)
        .map(|s| TaskRequest {
            title: text(&s["title"]),
            description: s["description"].as_str().unwrap_or("").to_string(),
            capabilities: s["capabilities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            ..TaskRequest::default()
        })
        .collect();
    // The subtasks share what is left of the task's budget (the call above is
    // already charged), so that their own calls are charged to them.
    let current = work.client.task(&work.held.address).await?;
    let remaining = current.budget.map_or(0, |b| b.remaining_micro_usd);
    let shares = budget_shares(remaining, subtasks.len());
    for (subtask, share) in subtasks.iter_mut().zip(shares) {
        if share > 0 {
            subtask.budget_usd = Some(Usd::Text(micro_usd_text(share)));
        }
    }
    let count = subtasks.len();
    work.client
        .decompose(&work.held, subtasks, justification)
        .await?;
    Ok(format!(
        "decomposed into {count} subtasks ({justification})"
    ))
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
