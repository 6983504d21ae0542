//! `colony alerts`: the latest alerts and what stands raised, from the real binary.

use crate::common;

use common::*;

/// `colony ARGS` against the node, which must succeed; what it printed.
fn colony(url: &str, token: &str, args: &[&str]) -> String {
    let (ok, text) = cli(url, token, args);
    assert!(ok, "{text}");
    text
}

#[test]
fn alerts_from_the_command_line() {
    let config = config_with(&[(
        "alerts.toml",
        "[alerts]\ncheck_every = \"50ms\"\nthresholds = [\"1%\"]\nsoft = false\n",
    )]);
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start_with_config(data.path(), config.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let admin = admin.trim();
    colony(
        &url,
        admin,
        &[
            "principals",
            "add",
            "--name",
            "a1",
            "--kind",
            "ai",
            "-j",
            "one agent",
        ],
    );
    // 1 of ai_accounts' 50 reaches 1%: the watcher records it within its period.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listed = loop {
        let listed: serde_json::Value =
            serde_json::from_str(&colony(&url, admin, &["alerts", "--json"])).unwrap();
        if listed["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["figure"] == "ai_accounts")
        {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an alert in time: {listed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(listed["raised"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["figure"] == "ai_accounts" && r["threshold"] == "1%"));
    let table = colony(&url, admin, &["alerts"]);
    assert!(
        table.contains("ai_accounts") && table.contains("raise"),
        "{table}"
    );
    assert!(
        table.contains("raised now: ") && table.contains("ai_accounts 1%"),
        "{table}"
    );
    let dead = colony(&url, admin, &["alerts", "--dead-letters"]);
    assert!(
        dead.contains("DELIVERY") && dead.contains("WEBHOOK"),
        "{dead}"
    );
    node.kill().unwrap();
    node.wait().unwrap();
}
