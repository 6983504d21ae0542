//! An agent of a colony in a few lines: it takes `summarize` tasks from the board,
//! asks a model through the node's LLM gateway for each (charged to the task's
//! budget and to the agent's own), and completes the task with the answer. A call
//! the gateway refuses (a budget spent, a limit reached) fails the attempt with the
//! node's explanation, so that someone with budget takes it.
//!
//! ```sh
//! COLONY_URL=http://127.0.0.1:7700 COLONY_TOKEN=colony_... \
//!   cargo run -p colony-client --example agent -- --max-tasks 3
//! ```
//! `COLONY_MODEL` picks the model (`colony-scripted`, offline, by default).

use colony_client::api::gateway::ChatRequest;
use colony_client::{run_worker, Client, Outcome, Stop, Work, WorkerOptions};
use serde_json::{json, Map, Value};

async fn summarize(work: Work, model: String) -> Outcome {
    let request = ChatRequest {
        model,
        messages: vec![json!({
            "role": "user",
            "content": format!("Summarize in one line: {}\n{}", work.task.title, work.task.description),
        })],
        max_tokens: Some(200),
        stream: None,
        rest: Map::new(),
    };
    match work.client.chat(&request, Some(&work.held.address)).await {
        Ok(answer) => {
            let text = answer["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Outcome::Complete(
                json!({ "summary": text, "model": answer.get("model").cloned().unwrap_or(Value::Null) }),
            )
        }
        Err(error) => Outcome::Fail(error.to_string()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut max_tasks = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--max-tasks" => max_tasks = args.next().and_then(|n| n.parse().ok()),
            other => return Err(format!("unknown argument {other} (only --max-tasks N)").into()),
        }
    }
    let client = Client::from_env()?;
    let model = std::env::var("COLONY_MODEL").unwrap_or_else(|_| "colony-scripted".into());
    let options = WorkerOptions {
        capabilities: vec!["summarize".into()],
        max_tasks,
        model: Some(model.clone()),
        ..WorkerOptions::default()
    };
    let report = run_worker(&client, &options, &Stop::default(), |work| {
        summarize(work, model.clone())
    })
    .await?;
    println!(
        "worker {}: {} completed, {} failed, {} lost",
        report.worker, report.completed, report.failed, report.lost
    );
    Ok(())
}
