//! `colony tasks post|list|show|tree|dead|requeue|cancel|priority`.

use clap::Subcommand;
use std::process::ExitCode;

use serde_json::{json, Value};

use colony_api::streams::Duration;
use colony_api::tasks::{PriorityRequest, TaskList, TaskRequest, TaskView, Usd};
use colony_kernel::Priority;

use crate::client::Client;
use crate::commands::{call, get, parse_priority, post};
use crate::output::{opt, rows, text};
use crate::Change;
use crate::Remote;

fn row(task: &TaskView) -> Vec<String> {
    vec![
        task.address.to_string(),
        task.status.clone(),
        task.priority.as_str().to_string(),
        task.effective_priority.to_string(),
        task.capabilities.join(","),
        task.lease
            .as_ref()
            .map(|l| l.holder.clone())
            .unwrap_or_default(),
        format!("{}/{}", task.failures, task.max_attempts),
        task.title.clone(),
    ]
}

const HEADERS: [&str; 8] = [
    "ADDRESS",
    "STATUS",
    "PRIORITY",
    "EFFECTIVE",
    "NEEDS",
    "HOLDER",
    "FAILED",
    "TITLE",
];

fn show(task: &TaskView) {
    println!("{}  {}  [{}]", task.address, task.title, task.status);
    if task.archived {
        println!("  archived: its tree left the board by the retention rule (retention.toml)");
    }
    println!(
        "  priority {} (effective {}), needs [{}], attempts failed {}/{}",
        task.priority.as_str(),
        task.effective_priority,
        task.capabilities.join(", "),
        task.failures,
        task.max_attempts
    );
    if let Some(budget) = &task.budget {
        println!(
            "  budget: {} micro-dollars, {} spent, {} left",
            budget.total_micro_usd, budget.spent_micro_usd, budget.remaining_micro_usd
        );
    }
    if let Some(lease) = &task.lease {
        println!(
            "  held by {} until {} (token {}); the attempt times out at {}",
            lease.holder, lease.expires_at, lease.token, lease.attempt_deadline
        );
    }
    for reason in &task.dead_reasons {
        println!("  dead: {reason}");
    }
    for attempt in task.attempts.iter().flatten() {
        println!(
            "  attempt {} by {}: {} {}",
            attempt.number,
            attempt.worker,
            opt(&attempt.outcome),
            opt(&attempt.reason)
        );
    }
    for step in task.history.iter().flatten() {
        println!(
            "  {}  {} -> {}  by {}: {}",
            step.at,
            opt(&step.from),
            step.to,
            step.by,
            step.justification
        );
    }
}

pub async fn run(command: TasksCommand) -> anyhow::Result<ExitCode> {
    match command {
        TasksCommand::Post {
            title,
            description,
            priority,
            capabilities,
            depends_on,
            budget_usd,
            max_attempts,
            attempt_timeout,
            change,
        } => {
            let body = TaskRequest {
                title,
                description,
                priority: parse_priority(&priority)?,
                capabilities,
                depends_on,
                budget_usd: budget_usd.map(Usd::Text),
                max_attempts,
                attempt_timeout: attempt_timeout.map(Duration::Text),
                justification: Some(change.justification),
            };
            post(&change.remote, "/v1/tasks", &body, |task: &TaskView| {
                println!("posted {} ({})", task.address, task.status);
            })
            .await
        }
        TasksCommand::List {
            status,
            capability,
            limit,
            remote,
        } => {
            let mut path = format!("/v1/tasks?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            if let Some(capability) = capability {
                path.push_str(&format!("&capability={capability}"));
            }
            get(&remote, &path, |list: &TaskList| {
                rows(&HEADERS, &list.tasks, row)
            })
            .await
        }
        TasksCommand::Show { address, remote } => {
            get(&remote, &format!("/v1/tasks/{address}"), show).await
        }
        TasksCommand::Tree { address, remote } => tree(&remote, address).await,
        TasksCommand::Dead { remote } => {
            get(&remote, "/v1/tasks/dead", |list: &TaskList| {
                rows(&["ADDRESS", "TITLE", "WHY"], &list.tasks, |task| {
                    vec![
                        task.address.to_string(),
                        task.title.clone(),
                        task.dead_reasons.last().cloned().unwrap_or_default(),
                    ]
                });
            })
            .await
        }
        TasksCommand::Requeue { address, change } => {
            let path = format!("/v1/tasks/{address}/requeue");
            post(
                &change.remote,
                &path,
                &change.justified(),
                |task: &TaskView| {
                    println!("requeued {} ({})", task.address, task.status);
                },
            )
            .await
        }
        TasksCommand::Cancel { address, change } => {
            let path = format!("/v1/tasks/{address}/cancel");
            post(
                &change.remote,
                &path,
                &change.justified(),
                |task: &TaskView| {
                    println!("cancelled {} ({})", task.address, task.status);
                    for child in task.children.iter().flatten() {
                        println!("  {}  [{}]", child.address, child.status);
                    }
                },
            )
            .await
        }
        TasksCommand::Priority {
            address,
            priority,
            change,
        } => {
            let body = PriorityRequest {
                priority: parse_priority(&priority)?,
                justification: Some(change.justification),
            };
            let path = format!("/v1/tasks/{address}/priority");
            post(&change.remote, &path, &body, |task: &TaskView| {
                println!(
                    "{} is now {} (effective {})",
                    task.address,
                    task.priority.as_str(),
                    task.effective_priority
                );
            })
            .await
        }
    }
}

/// `colony tasks tree`: the task and its subtasks, depth first, indented.
async fn tree(remote: &Remote, address: String) -> anyhow::Result<ExitCode> {
    let client = Client::new(remote)?;
    if remote.json {
        let path = format!("/v1/tasks/{address}");
        return call(remote, client.get(&path), |_: &TaskView| {}).await;
    }
    // Walk down the children, one request per task (bounded by the depth
    // and breadth of the decomposition).
    let mut stack = vec![(address, 0usize)];
    let mut printed = 0;
    while let Some((address, depth)) = stack.pop() {
        let task: TaskView = client.get_as(&format!("/v1/tasks/{address}")).await?;
        println!(
            "{}{}  [{}]  {}",
            "  ".repeat(depth),
            task.address,
            task.status,
            task.title
        );
        printed += 1;
        if printed >= 10_000 {
            println!("(stopped after 10 000 tasks)");
            break;
        }
        let children: Vec<String> = task
            .children
            .iter()
            .flatten()
            .map(|c| c.address.to_string())
            .collect();
        for child in children.into_iter().rev() {
            stack.push((child, depth + 1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The old board's priorities: p0 is the most urgent.
fn board_priority(value: &Value) -> Priority {
    match value.as_str().unwrap_or("p2") {
        "p0" | "critical" => Priority::Critical,
        "p1" | "high" => Priority::High,
        "p3" | "low" => Priority::Low,
        _ => Priority::Normal,
    }
}

/// One old task to post: its old id, the request body, and the old ids of the open
/// tasks it waits for.
pub(crate) type BoardRequest = (String, TaskRequest, Vec<String>);

/// Reads `TASK-BOARD.json` into the requests that post its open tasks, dependencies
/// first. Returns the requests (with the old ids) and what was skipped.
pub(crate) fn board_requests(board: &Value, source: &str) -> (Vec<BoardRequest>, Vec<String>) {
    let tasks: Vec<Value> = match &board["tasks"] {
        Value::Array(tasks) => tasks.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(id, t)| {
                let mut t = t.clone();
                if t.get("id").is_none() {
                    t["id"] = json!(id);
                }
                t
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut skipped = Vec::new();
    let open: Vec<&Value> = tasks
        .iter()
        .filter(|t| {
            let done = matches!(t["status"].as_str(), Some("completed") | Some("done"));
            if done {
                skipped.push(format!("{}: already completed", text(&t["id"])));
            }
            !done
        })
        .collect();
    let open_ids: std::collections::BTreeSet<String> =
        open.iter().map(|t| text(&t["id"])).collect();
    // Dependencies first: repeatedly take the tasks whose open dependencies are placed.
    let mut placed: Vec<String> = Vec::new();
    let mut requests = Vec::new();
    let mut remaining: Vec<&Value> = open;
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|task| {
            let id = text(&task["id"]);
            let depends: Vec<String> = task["depends_on"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let open_deps: Vec<String> = depends
                .iter()
                .filter(|d| open_ids.contains(*d))
                .cloned()
                .collect();
            if !open_deps.iter().all(|d| placed.contains(d)) {
                return true;
            }
            let mut description = text(&task["description"]);
            for (key, label) in [
                ("acceptance_criteria", "Acceptance criteria"),
                ("owned_paths", "Owned paths"),
            ] {
                let items: Vec<String> = task[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                if !items.is_empty() {
                    description.push_str(&format!("\n\n{label}:\n- {}", items.join("\n- ")));
                }
            }
            let body = TaskRequest {
                title: text(&task["title"]),
                description,
                priority: board_priority(&task["priority"]),
                justification: Some(format!(
                    "imported from the Hypernet board ({source}): {id}, status {}{}, created by {}",
                    text(&task["status"]),
                    task["claimed_by"]
                        .as_str()
                        .map(|c| format!(", claimed by {c}"))
                        .unwrap_or_default(),
                    text(&task["created_by"])
                )),
                ..TaskRequest::default()
            };
            requests.push((id.clone(), body, open_deps));
            placed.push(id);
            false
        });
        if remaining.len() == before {
            for task in remaining.drain(..) {
                skipped.push(format!(
                    "{}: its dependencies form a cycle",
                    text(&task["id"])
                ));
            }
        }
    }
    (requests, skipped)
}

pub async fn import_board(
    path: &std::path::Path,
    dry_run: bool,
    remote: crate::Remote,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let text_of_file =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let board: Value = serde_json::from_str(&text_of_file)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let (requests, skipped) = board_requests(&board, &path.display().to_string());
    let client = Client::new(&remote)?;
    let mut addresses: std::collections::BTreeMap<String, String> =
        std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for (id, mut body, depends) in requests {
        body.depends_on = depends
            .iter()
            .filter_map(|d| addresses.get(d).cloned())
            .collect();
        let result = if dry_run {
            "dry run".to_string()
        } else {
            match client.post_as::<TaskView>("/v1/tasks", &body).await {
                Ok(task) => {
                    addresses.insert(id.clone(), task.address.to_string());
                    format!("posted as {} ({})", task.address, task.status)
                }
                Err(error) => format!("not posted: {error}"),
            }
        };
        rows.push(vec![id, body.title.clone(), result]);
    }
    let summary = json!({ "posted": addresses, "skipped": skipped });
    crate::output::import_report(
        remote.json,
        &summary,
        &["OLD ID", "TITLE", "RESULT"],
        &rows,
        &skipped,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_board_maps_open_tasks_dependencies_first() {
        let board = json!({"tasks": [
            {"id": "task-002", "title": "review", "status": "pending", "priority": "p1", "depends_on": ["task-001", "task-000"]},
            {"id": "task-001", "title": "draft", "status": "claimed", "priority": "p0", "claimed_by": "loom",
             "acceptance_criteria": ["reads well"], "owned_paths": ["docs/"]},
            {"id": "task-000", "title": "old", "status": "completed"},
        ]});
        let (requests, skipped) = board_requests(&board, "TASK-BOARD.json");
        assert_eq!(
            requests.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            vec!["task-001", "task-002"]
        );
        assert_eq!(requests[0].1.priority, Priority::Critical);
        assert!(requests[0]
            .1
            .description
            .contains("Acceptance criteria:\n- reads well"));
        assert!(requests[0]
            .1
            .justification
            .as_deref()
            .unwrap()
            .contains("claimed by loom"));
        assert_eq!(
            requests[1].2,
            vec!["task-001".to_string()],
            "completed dependencies are already met"
        );
        assert_eq!(skipped, vec!["task-000: already completed".to_string()]);
    }
}

#[derive(Subcommand)]
pub enum TasksCommand {
    /// Post a task on the board.
    Post {
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// low, normal, high or critical.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// Capabilities a worker needs (repeatable).
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// Addresses of tasks this one waits for (repeatable).
        #[arg(long = "depends-on")]
        depends_on: Vec<String>,
        /// Dollars that travel with the task, such as 1.50.
        #[arg(long)]
        budget_usd: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// How long one attempt may take, such as 30m (the board's default when left
        /// out): past it the attempt fails as timed out.
        #[arg(long)]
        attempt_timeout: Option<String>,
        #[command(flatten)]
        change: Change,
    },
    /// List tasks.
    List {
        /// pending, blocked, claimed, in_progress, completed, failed, dead or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        capability: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one task with its attempts and history.
    Show {
        address: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a task and its subtasks as a tree.
    Tree {
        address: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// The dead-letter queue.
    Dead {
        #[command(flatten)]
        remote: Remote,
    },
    /// Put a dead task back on the board (admins).
    Requeue {
        address: String,
        #[command(flatten)]
        change: Change,
    },
    /// Cancel a task and its open subtasks (its poster, an ancestor of the poster,
    /// or an admin): their holders are stopped, the unspent budget comes back.
    Cancel {
        address: String,
        #[command(flatten)]
        change: Change,
    },
    /// Change an open task's priority: low, normal, high or critical.
    Priority {
        address: String,
        priority: String,
        #[command(flatten)]
        change: Change,
    },
}
