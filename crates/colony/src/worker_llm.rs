//! The reference LLM worker (`colony worker` without `--exec`): for each claimed task,
//! one gateway call charged to the task, whose fenced JSON decision completes the
//! task or decomposes it (the subtasks sharing what is left of its budget).

use colony_api::tasks::{Claimed, DecomposeRequest, LeaseRequest, TaskRequest, TaskView, Usd};
use serde_json::{json, Value};

use crate::client::Client;
use crate::lease::Lease;
use crate::output::text;

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
pub(crate) async fn work_llm(
    client: &Client,
    model: &str,
    claimed: &Claimed,
) -> anyhow::Result<()> {
    let task = &claimed.task;
    let address = task.address.clone();
    let token = claimed.lease.token;
    let lease = Lease {
        client,
        address: &address,
        token,
    };
    let checkpoint = LeaseRequest {
        checkpoint: Some(json!({"stage": "asking the model", "model": model,
                    "resumed_from": task.checkpoint})),
        ..LeaseRequest::default()
    };
    lease.act("checkpoint", checkpoint).await?;
    let prompt = format!(
        "Title: {}\nDescription: {}\nCapabilities: {:?}\nPriority: {}\nCheckpoint: {}\n\nAnswer with the \"action\" JSON block.",
        task.title,
        task.description,
        task.capabilities,
        task.priority.as_str(),
        task.checkpoint,
    );
    let request = json!({
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
        "max_tokens": 800,
    });
    let headers = [("x-colony-task", address.as_str())];
    let call = client.post_with("/v1/chat/completions", &request, &headers);
    // The call is abandoned when the attempt times out or the claim is lost (the
    // gateway settles what was generated when the caller leaves).
    let answer = match crate::lease::while_held(&lease, claimed, call).await {
        Err(why) => {
            eprintln!("colony worker: abandoned the model call for {address}: {why}");
            return Ok(());
        }
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            // Give the task back at once rather than sit on it while waiting.
            let release = LeaseRequest {
                justification: Some(format!("the model call was refused: {error}")),
                ..LeaseRequest::default()
            };
            let _ = lease.act("release", release).await;
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
        return give_back_as_signalled(&lease, &address, &signal).await;
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
        lease.fail(reason).await?;
        eprintln!("colony worker: {address}: failed (no decision in the answer)");
        return Ok(());
    };
    let justification = decision["justification"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{model} decided without saying why"));
    match decision["action"].as_str() {
        Some("decompose") => {
            decompose_as_told(client, &address, token, &decision, &justification).await?
        }
        _ => {
            let result = if decision["result"].is_null() {
                Value::String(content.clone())
            } else {
                decision["result"].clone()
            };
            let request = LeaseRequest {
                result: Some(result),
                justification: Some(justification.clone()),
                ..LeaseRequest::default()
            };
            lease.act("complete", request).await?;
            eprintln!("colony worker: {address}: completed ({justification})");
        }
    }
    Ok(())
}

/// The model signalled it will not do the task: rejected (failed) or given back.
async fn give_back_as_signalled(
    lease: &Lease<'_>,
    address: &str,
    signal: &Value,
) -> anyhow::Result<()> {
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
    let request = LeaseRequest {
        reason: Some(reason.clone()),
        justification: Some(reason.clone()),
        ..LeaseRequest::default()
    };
    lease.act(action, request).await?;
    eprintln!("colony worker: {address}: {reason}");
    Ok(())
}

/// The task decomposed into the subtasks the model proposed (at most 10), which
/// share what is left of its budget.
async fn decompose_as_told(
    client: &Client,
    address: &str,
    token: u64,
    decision: &Value,
    justification: &str,
) -> anyhow::Result<()> {
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
    let current: TaskView = client.get_as(&format!("/v1/tasks/{address}")).await?;
    let remaining = current.budget.map_or(0, |b| b.remaining_micro_usd);
    let shares = budget_shares(remaining, subtasks.len());
    for (subtask, share) in subtasks.iter_mut().zip(shares) {
        if share > 0 {
            subtask.budget_usd = Some(Usd::Text(micro_usd_text(share)));
        }
    }
    let count = subtasks.len();
    let request = DecomposeRequest {
        lease_token: token,
        subtasks,
        on_child_death: Default::default(),
        justification: Some(justification.to_string()),
    };
    client
        .post_as::<TaskView>(&format!("/v1/tasks/{address}/decompose"), &request)
        .await?;
    eprintln!("colony worker: {address}: decomposed into {count} subtasks ({justification})");
    Ok(())
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
