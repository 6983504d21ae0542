//! The dashboard's figures: page weight, time to first render in headless Chromium
//! with 10 000 tasks and 1 000 principals, and the node's request latency with ten
//! dashboards open (`cargo bench -p colony --bench dashboard`).

#[path = "../../node/tests/common/tools.rs"]
mod tools;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const PRINCIPALS: usize = 1_000;
const TASKS: usize = 10_000;
const PARALLEL: usize = 16;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (browser, driver) = tools::chromium();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    let config = tempfile::tempdir().unwrap();
    for file in ["quotas.toml", "governance.toml", "tasks.toml"] {
        std::fs::copy(shipped.join(file), config.path().join(file)).unwrap();
    }
    let limits = std::fs::read_to_string(shipped.join("limits.toml"))
        .unwrap()
        .replacen(
            "soft = 10               # Hypernet max_ai_accounts soft\nhard = 50",
            "soft = 1500\nhard = 2000",
            1,
        )
        .replacen(
            "soft = 200              # Hypernet max_task_queue_depth\nhard = 500",
            "soft = 15000\nhard = 20000",
            1,
        );
    std::fs::write(config.path().join("limits.toml"), limits).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut node = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["up", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .arg("--config")
        .arg(config.path())
        .env("COLONY_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut base = String::new();
    let link = loop {
        let line = lines.next().expect("colony up prints its link").unwrap();
        if let Some(rest) = line.strip_prefix("colony: listening on ") {
            base = rest.split_whitespace().next().unwrap().to_string();
        }
        if let Some(rest) = line.strip_prefix("colony: dashboard at ") {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    let started = std::time::Instant::now();
    let http = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        let (http, base, admin) = (http.clone(), base.clone(), admin.clone());
        async move {
            let response = http
                .post(format!("{base}{path}"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.text().await.unwrap()
            );
        }
    };
    let mut pending = Vec::new();
    for n in 0..PRINCIPALS + TASKS {
        let (path, body) = if n < PRINCIPALS {
            (
                "/v1/principals".to_string(),
                serde_json::json!({"name": format!("agent-{n}"), "kind": "ai", "justification": "bench"}),
            )
        } else {
            (
                "/v1/tasks".to_string(),
                serde_json::json!({"title": format!("task {n}"), "justification": "bench"}),
            )
        };
        pending.push(tokio::spawn(post(path, body)));
        if pending.len() == PARALLEL {
            for task in pending.drain(..) {
                task.await.unwrap();
            }
        }
    }
    for task in pending {
        task.await.unwrap();
    }
    println!(
        "filled: {PRINCIPALS} principals and {TASKS} tasks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tools::run_python(
        "selenium",
        "dashboard_bench.py",
        vec![
            base,
            link,
            admin,
            browser.display().to_string(),
            driver.display().to_string(),
        ],
    )
    .await;
    node.kill().unwrap();
    node.wait().unwrap();
}
