//! `colony tasks post|list|show|tree|dead|requeue`.

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::client::Client;
use crate::commands::call;
use crate::output::{table, text};
use crate::TasksCommand;

fn rows(tasks: &Value) -> Vec<Vec<String>> {
    tasks
        .as_array()
        .into_iter()
        .flatten()
        .map(|task| {
            vec![
                text(&task["address"]),
                text(&task["status"]),
                text(&task["priority"]),
                task["effective_priority"].to_string(),
                task["capabilities"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect::<Vec<_>>()
                    .join(","),
                text(&task["lease"]["holder"]),
                format!("{}/{}", task["failures"], task["max_attempts"]),
                text(&task["title"]),
            ]
        })
        .collect()
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

fn show(task: &Value) {
    println!(
        "{}  {}  [{}]",
        text(&task["address"]),
        text(&task["title"]),
        text(&task["status"])
    );
    println!(
        "  priority {} (effective {}), needs [{}], attempts failed {}/{}",
        text(&task["priority"]),
        task["effective_priority"],
        task["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect::<Vec<_>>()
            .join(", "),
        task["failures"],
        task["max_attempts"]
    );
    if !task["budget"].is_null() {
        println!(
            "  budget: {} micro-dollars, {} spent, {} left",
            task["budget"]["total_micro_usd"],
            task["budget"]["spent_micro_usd"],
            task["budget"]["remaining_micro_usd"]
        );
    }
    if !task["lease"].is_null() {
        println!(
            "  held by {} until {} (token {})",
            text(&task["lease"]["holder"]),
            text(&task["lease"]["expires_at"]),
            task["lease"]["token"]
        );
    }
    for reason in task["dead_reasons"].as_array().into_iter().flatten() {
        println!("  dead: {}", text(reason));
    }
    for attempt in task["attempts"].as_array().into_iter().flatten() {
        println!(
            "  attempt {} by {}: {} {}",
            attempt["number"],
            text(&attempt["worker"]),
            text(&attempt["outcome"]),
            text(&attempt["reason"])
        );
    }
    for step in task["history"].as_array().into_iter().flatten() {
        println!(
            "  {}  {} -> {}  by {}: {}",
            text(&step["at"]),
            text(&step["from"]),
            text(&step["to"]),
            text(&step["by"]),
            text(&step["justification"])
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
            justification,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = json!({
                "title": title, "description": description, "priority": priority, "capabilities": capabilities,
                "depends_on": depends_on, "budget_usd": budget_usd, "max_attempts": max_attempts, "justification": justification,
            });
            call(&remote, client.post("/v1/tasks", &body), |task| {
                println!(
                    "posted {} ({})",
                    text(&task["address"]),
                    text(&task["status"])
                );
            })
            .await
        }
        TasksCommand::List {
            status,
            capability,
            limit,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let mut path = format!("/v1/tasks?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            if let Some(capability) = capability {
                path.push_str(&format!("&capability={capability}"));
            }
            call(&remote, client.get(&path), |value| {
                table(&HEADERS, &rows(&value["tasks"]))
            })
            .await
        }
        TasksCommand::Show { address, remote } => {
            let client = Client::new(&remote)?;
            call(&remote, client.get(&format!("/v1/tasks/{address}")), show).await
        }
        TasksCommand::Tree { address, remote } => {
            let client = Client::new(&remote)?;
            if remote.json {
                return call(&remote, client.get(&format!("/v1/tasks/{address}")), |_| {}).await;
            }
            // Walk down the children, one request per task (bounded by the depth
            // and breadth of the decomposition).
            let mut stack = vec![(address, 0usize)];
            let mut printed = 0;
            while let Some((address, depth)) = stack.pop() {
                let task = client.get(&format!("/v1/tasks/{address}")).await?;
                println!(
                    "{}{}  [{}]  {}",
                    "  ".repeat(depth),
                    text(&task["address"]),
                    text(&task["status"]),
                    text(&task["title"])
                );
                printed += 1;
                if printed >= 10_000 {
                    println!("(stopped after 10 000 tasks)");
                    break;
                }
                let children: Vec<String> = task["children"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| text(&c["address"]))
                    .collect();
                for child in children.into_iter().rev() {
                    stack.push((child, depth + 1));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Dead { remote } => {
            let client = Client::new(&remote)?;
            call(&remote, client.get("/v1/tasks/dead"), |value| {
                let rows: Vec<Vec<String>> = value["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|task| {
                        vec![
                            text(&task["address"]),
                            text(&task["title"]),
                            text(
                                task["dead_reasons"]
                                    .as_array()
                                    .and_then(|r| r.last())
                                    .unwrap_or(&Value::Null),
                            ),
                        ]
                    })
                    .collect();
                table(&["ADDRESS", "TITLE", "WHY"], &rows);
            })
            .await
        }
        TasksCommand::Requeue {
            address,
            justification,
            remote,
        } => {
            let client = Client::new(&remote)?;
            call(
                &remote,
                client.post(
                    &format!("/v1/tasks/{address}/requeue"),
                    &json!({"justification": justification}),
                ),
                |task| {
                    println!(
                        "requeued {} ({})",
                        text(&task["address"]),
                        text(&task["status"])
                    );
                },
            )
            .await
        }
    }
}

/// The old board's priorities: p0 is the most urgent.
fn board_priority(value: &Value) -> &'static str {
    match value.as_str().unwrap_or("p2") {
        "p0" | "critical" => "critical",
        "p1" | "high" => "high",
        "p3" | "low" => "low",
        _ => "normal",
    }
}

/// One old task to post: its old id, the request body, and the old ids of the open
/// tasks it waits for.
pub(crate) type BoardRequest = (String, Value, Vec<String>);

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
            let depends: Vec<String> = task["depends_on"].as_array().into_iter().flatten().map(text).collect();
            let open_deps: Vec<String> = depends.iter().filter(|d| open_ids.contains(*d)).cloned().collect();
            if !open_deps.iter().all(|d| placed.contains(d)) {
                return true;
            }
            let mut description = text(&task["description"]);
            for (key, label) in [("acceptance_criteria", "Acceptance criteria"), ("owned_paths", "Owned paths")] {
                let items: Vec<String> = task[key].as_array().into_iter().flatten().map(text).collect();
                if !items.is_empty() {
                    description.push_str(&format!("\n\n{label}:\n- {}", items.join("\n- ")));
                }
            }
            let body = json!({
                "title": text(&task["title"]),
                "description": description,
                "priority": board_priority(&task["priority"]),
                "justification": format!(
                    "imported from the Hypernet board ({source}): {id}, status {}{}, created by {}",
                    text(&task["status"]),
                    task["claimed_by"].as_str().map(|c| format!(", claimed by {c}")).unwrap_or_default(),
                    text(&task["created_by"])
                ),
            });
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
        body["depends_on"] = json!(depends
            .iter()
            .filter_map(|d| addresses.get(d))
            .collect::<Vec<_>>());
        let result = if dry_run {
            "dry run".to_string()
        } else {
            match client.post("/v1/tasks", &body).await {
                Ok(task) => {
                    let address = text(&task["address"]);
                    addresses.insert(id.clone(), address.clone());
                    format!("posted as {address} ({})", text(&task["status"]))
                }
                Err(error) => format!("not posted: {error}"),
            }
        };
        rows.push(vec![id, text(&body["title"]), result]);
    }
    if remote.json {
        crate::output::json(&json!({ "posted": addresses, "skipped": skipped }));
    } else {
        table(&["OLD ID", "TITLE", "RESULT"], &rows);
        for line in &skipped {
            println!("skipped {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
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
        assert_eq!(requests[0].1["priority"], "critical");
        assert!(requests[0].1["description"]
            .as_str()
            .unwrap()
            .contains("Acceptance criteria:\n- reads well"));
        assert!(requests[0].1["justification"]
            .as_str()
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
