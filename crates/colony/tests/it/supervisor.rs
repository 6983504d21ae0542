//! The supervisor keeps `colony worker` processes alive: it replaces a crashed one and
//! scales with the work, within its profile and the limits.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;
use common::{config_with, start_with_config, COLONY};

/// Kills the node (and so, through the supervisor, its workers) if the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

fn get(runtime: &tokio::runtime::Runtime, http: &reqwest::Client, url: &str, token: &str) -> Value {
    runtime.block_on(async {
        http.get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn the_supervisor_replaces_crashed_workers_and_scales_with_the_work() {
    // Its workers run `--exec` under `--sandbox auto`, which fails closed without it.
    common::bwrap();
    let supervisor = format!(
        r#"[supervisor]
spawn_cooldown = "50ms"
idle_shutdown = "500ms"
restart_backoff_base = "100ms"

[[supervisor.profiles]]
name = "coders"
command = ["{COLONY}", "worker", "--poll-ms", "50", "--exec", "sleep 0.3; echo ok"]
capabilities = ["code"]
min = 1
max = 3
"#
    );
    let tasks = "[workers]\nheartbeat = \"100ms\"\ntimeout = \"500ms\"\n";
    let config = config_with(&[("supervisor.toml", &supervisor), ("tasks.toml", tasks)]);
    let data = tempfile::tempdir().unwrap();
    let (node, url) = start_with_config(data.path(), config.path());
    let mut node = KillOnDrop(node);
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let status = || get(&runtime, &http, &format!("{url}/v1/supervisor"), &admin);
    let pids = |status: &Value| -> Vec<u64> {
        status["profiles"][0]["pids"]
            .as_array()
            .map(|pids| pids.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };

    wait_for("the first worker", || pids(&status()).len() == 1);
    let first = pids(&status())[0];
    wait_for("its session", || {
        get(&runtime, &http, &format!("{url}/v1/workers"), &admin)["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["state"] == "active")
    });

    // A crash is replaced.
    assert!(Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap()
        .success());
    wait_for("a replacement", || {
        pids(&status()).first().is_some_and(|pid| *pid != first)
    });

    // Six tasks: it scales up to its maximum of 3, never beyond, then back to 1.
    runtime.block_on(async {
        for index in 0..6 {
            let body = json!({"title": format!("job {index}"), "capabilities": ["code"], "justification": "work"});
            let response = http.post(format!("{url}/v1/tasks")).bearer_auth(&admin).json(&body).send().await.unwrap();
            assert!(response.status().is_success());
        }
    });
    let mut most = 0;
    wait_for("every task done", || {
        most = most.max(pids(&status()).len());
        let tasks = get(
            &runtime,
            &http,
            &format!("{url}/v1/tasks?status=completed"),
            &admin,
        );
        tasks["tasks"].as_array().unwrap().len() == 6
    });
    assert!((2..=3).contains(&most), "scaled to {most}");
    wait_for("scaling back down to the minimum", || {
        pids(&status()).len() == 1
    });

    let audit = get(
        &runtime,
        &http,
        &format!("{url}/v1/audit?address=0.1&limit=1000"),
        &admin,
    );
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in [
        "supervisor.spawn",
        "supervisor.crash",
        "supervisor.replace",
        "supervisor.despawn",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let justified = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "supervisor.spawn")
        .all(|r| r["justification"].as_str().unwrap().contains("desired"));
    assert!(justified);

    // A clean stop takes the workers down with the node.
    let last = pids(&status());
    assert!(Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(node.0.wait().unwrap().success());
    for pid in last {
        let alive = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(!alive, "worker {pid} outlived the node");
    }
}
