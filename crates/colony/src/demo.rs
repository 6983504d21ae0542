//! `colony up --demo`: a node with three supervised LLM workers on a sample goal, so
//! that a newcomer sees decomposition, claims, budgets, a limit warning, a worker
//! replaced, and the decision log, within a minute and with no API key.
//!
//! Without `OPENAI_API_KEY` (or `OPENAI_BASE_URL`) the workers use the offline
//! `colony-scripted` model, and every answer says `[scripted]`; with one, they use
//! `gpt-4o-mini` through the gateway.

use colony_api::audit::{DecisionPage, DecisionRecord};
use colony_api::tasks::{BudgetView, TaskRequest, TaskView, Usd};
use colony_api::workers::{SupervisorView, WorkerList};
use colony_kernel::Priority;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use colony_node::{Node, NodeConfig};

use crate::client::Client;
use crate::{Remote, UpArgs};

const GOAL: &str = "Write a short guide to Colony for newcomers";
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let real_model = std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.is_empty())
        || std::env::var("OPENAI_BASE_URL").is_ok_and(|k| !k.is_empty());
    let model = if real_model {
        "gpt-4o-mini"
    } else {
        "colony-scripted"
    };
    let (data, config_dir, supervisor) = demo_files(model)?;
    let node = Node::start(NodeConfig {
        data_dir: data.clone(),
        listen: args.listen,
        config_dir: config_dir.clone(),
        config_dir_required: true,
        supervisor: Some(supervisor),
        telemetry: colony_node::telemetry::TelemetryConfig::from_env(|name| {
            std::env::var(name).ok()
        })
        .map_err(|message| anyhow::anyhow!("OpenTelemetry: {message}"))?,
        ..NodeConfig::default()
    })
    .await
    .context("the demo node did not start")?;
    let url = format!("http://{}", node.local_addr());
    println!(
        "colony demo: a node on {url} (data in {}), three supervised workers using {model}",
        data.display()
    );
    if !real_model {
        println!("colony demo: no OPENAI_API_KEY: answers come from the offline scripted provider, marked [scripted]");
    }
    let token = std::fs::read_to_string(data.join("admin.token"))?
        .trim()
        .to_string();
    let client = Client::new(&Remote {
        url: url.clone(),
        token: Some(token),
        json: false,
        ca_file: None,
    })?;
    // Let the three workers register first (the third crosses active_workers' soft).
    wait_for_workers(&client, 3).await?;
    let goal_request = TaskRequest {
        title: GOAL.into(),
        capabilities: vec!["writing".into()],
        budget_usd: Some(Usd::Text("0.50".into())),
        priority: Priority::High,
        justification: Some("the demo's sample goal".into()),
        ..TaskRequest::default()
    };
    let posted: TaskView = client.post_as("/v1/tasks", &goal_request).await?;
    let goal = posted.address;
    println!("colony demo: posted the goal {goal}: {GOAL} (budget $0.50)\n");

    let started = Instant::now();
    let mut after = 0u64;
    let (outcome, killed) = follow_goal(&client, &goal, started, &mut after).await?;
    // The replacement of the killed worker, then what is left of the log.
    show_replacement(&client, after, killed).await?;
    let code = report(&client, &goal, outcome, started).await?;
    println!(
        "colony demo: the whole decision log is in {}; `colony audit verify --data {}` checks it",
        data.display(),
        data.display()
    );
    node.shutdown().await?;
    Ok(code)
}

/// The demo's data and configuration directories (the shipped genesis, with
/// `active_workers` small enough that the three workers cross its soft limit, a
/// warning, without reaching hard) and its supervised workers.
fn demo_files(
    model: &str,
) -> anyhow::Result<(
    std::path::PathBuf,
    std::path::PathBuf,
    colony_node::supervisor::SupervisorConfig,
)> {
    let root = std::env::temp_dir().join(format!("colony-demo-{}", std::process::id()));
    let data = root.join("data");
    let config_dir = root.join("config");
    std::fs::create_dir_all(&config_dir)?;
    let limits = colony_node::genesis::DEFAULT_LIMITS_TOML.replace(
        "soft = 15\nhard = 30\nbrake_floor = 2\non_soft = \"queue\"",
        "soft = 2\nhard = 4\non_soft = \"warn\"",
    );
    std::fs::write(config_dir.join("limits.toml"), limits)?;
    std::fs::write(
        config_dir.join("quotas.toml"),
        colony_node::genesis::DEFAULT_QUOTAS_TOML,
    )?;
    std::fs::write(
        config_dir.join("governance.toml"),
        colony_node::genesis::DEFAULT_GOVERNANCE_TOML,
    )?;
    std::fs::write(
        config_dir.join("tasks.toml"),
        colony_node::genesis::DEFAULT_TASKS_TOML,
    )?;
    let program = std::env::current_exe().context("cannot find the colony binary")?;
    let profile = colony_node::supervisor::Profile {
        name: "writers".into(),
        command: vec![
            program.display().to_string(),
            "worker".into(),
            "--capabilities".into(),
            "writing".into(),
            "--model".into(),
            model.into(),
            "--poll-ms".into(),
            "100".into(),
        ],
        capabilities: vec!["writing".into()],
        model: Some(model.into()),
        min: 3,
        max: 3,
    };
    let mut supervisor = colony_node::supervisor::SupervisorConfig::with_profiles(vec![profile]);
    supervisor.spawn_cooldown_ms = 200;
    supervisor.restart_backoff_base_ms = 500;
    Ok((data, config_dir, supervisor))
}

/// Until `count` workers are active (at most 30 s).
async fn wait_for_workers(client: &Client, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workers: WorkerList = client.get_as("/v1/workers").await?;
        let active = workers
            .workers
            .iter()
            .filter(|w| w.state == "active")
            .count();
        if active >= count || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Prints the decision log as it grows until the goal is completed or dead (or the
/// demo's time runs out), killing one worker once the goal is split: the goal's
/// end, and whether a worker was killed.
async fn follow_goal(
    client: &Client,
    goal: &str,
    started: Instant,
    after: &mut u64,
) -> anyhow::Result<(anyhow::Result<TaskView>, bool)> {
    let mut killed = false;
    let outcome = loop {
        // The decision log, as it grows.
        let page: DecisionPage = client
            .get_as(&format!("/v1/audit?after={}&limit=200", *after))
            .await?;
        for record in &page.records {
            *after = (*after).max(record.seq);
            print_decision(record);
        }
        let task: TaskView = client.get_as(&format!("/v1/tasks/{goal}")).await?;
        // Once the goal is split, one worker is killed: the supervisor replaces it.
        if !killed && task.children.as_ref().is_some_and(|c| !c.is_empty()) {
            let status: SupervisorView = client.get_as("/v1/supervisor").await?;
            let first = status.profiles.first().and_then(|p| p.pids.first());
            if let Some(pid) = first {
                println!("colony demo: -- killing worker process {pid} (SIGKILL) to show that it is replaced --");
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
                killed = true;
            }
        }
        match task.status.as_str() {
            "completed" => break Ok(task),
            "dead" => {
                break Err(anyhow::anyhow!(
                    "the goal went to the dead-letter queue: {}",
                    task.dead_reasons.join("; ")
                ))
            }
            _ => {}
        }
        if started.elapsed() > DEMO_TIMEOUT {
            break Err(anyhow::anyhow!(
                "the goal did not finish within {DEMO_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    Ok((outcome, killed))
}

/// Waits (at most 10 s) for the killed worker's replacement, then prints what is
/// left of the log.
async fn show_replacement(client: &Client, after: u64, killed: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while killed && Instant::now() < deadline {
        let status: SupervisorView = client.get_as("/v1/supervisor").await?;
        let page: DecisionPage = client
            .get_as(&format!("/v1/audit?after={after}&limit=500"))
            .await?;
        let replaced = page
            .records
            .iter()
            .any(|r| r.action == "supervisor.replace" || r.action == "supervisor.spawn");
        if replaced && status.profiles.first().is_some_and(|p| p.pids.len() >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page: DecisionPage = client
        .get_as(&format!("/v1/audit?after={after}&limit=500"))
        .await?;
    for record in &page.records {
        print_decision(record);
    }
    Ok(())
}

/// How the goal's budget was spent and shared (or why it failed): the exit code.
async fn report(
    client: &Client,
    goal: &str,
    outcome: anyhow::Result<TaskView>,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    Ok(match outcome {
        Ok(task) => {
            let mut shares = Vec::new();
            for child in task.children.iter().flatten() {
                let subtask: TaskView = client
                    .get_as(&format!("/v1/tasks/{}", child.address))
                    .await?;
                shares.push((child.address.clone(), subtask.budget));
            }
            let total =
                |budget: &Option<BudgetView>| budget.as_ref().map_or(0, |b| b.total_micro_usd);
            let spent =
                |budget: &Option<BudgetView>| budget.as_ref().map_or(0, |b| b.spent_micro_usd);
            let shared: u64 = shares.iter().map(|(_, budget)| total(budget)).sum();
            let budget = &task.budget;
            println!(
                "\ncolony demo: the goal {goal} is completed in {:.1} s: {} subtasks; of its budget of {} micro-USD \
                 it spent {} itself and passed {shared} on to its subtasks",
                started.elapsed().as_secs_f64(),
                shares.len(),
                total(budget),
                spent(budget),
            );
            for (child, budget) in &shares {
                println!(
                    "colony demo: subtask {child}: {} of its {} micro-USD share spent",
                    spent(budget),
                    total(budget),
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("\ncolony demo: {error:#}");
            ExitCode::FAILURE
        }
    })
}

fn print_decision(record: &DecisionRecord) {
    let action = record.action.as_str();
    if action == "time.tick" || action == "node.health" || action == "edge.charge" {
        return;
    }
    // Claims that found nothing to do.
    if action == "task.claim" && !record.subject.starts_with("0.7") {
        return;
    }
    let mut why = record.justification.clone();
    if why.len() > 90 {
        let mut end = 90;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
        why.push('…');
    }
    let reason = Some(record.reason.code.as_str())
        .filter(|c| *c != "ok")
        .map(|c| format!(" [{c}]"))
        .unwrap_or_default();
    let warnings = &record.detail.warnings;
    let warnings = if warnings.is_empty() {
        String::new()
    } else {
        let each: Vec<String> = warnings
            .iter()
            .map(|w| {
                let figure = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
                format!(
                    "{} past soft ({} of {})",
                    w.limit.as_deref().unwrap_or("?"),
                    figure(w.usage),
                    figure(w.soft)
                )
            })
            .collect();
        format!(" WARNING {}", each.join(", "))
    };
    println!(
        "{:>5} {:<6} {:<22} {:<16} {}{reason}{warnings}  {why}",
        record.seq, record.actor, action, record.subject, record.decision,
    );
}
