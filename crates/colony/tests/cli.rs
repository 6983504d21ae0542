//! The CLI as people use it, against a real node: governance and the Hypernet import.

use std::process::Command;

mod common;
use common::{start, COLONY};

/// Runs `colony ARGS` against the node; returns success and what it printed.
fn colony(url: &str, token: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(COLONY)
        .args(args)
        .env("COLONY_URL", url)
        .env("COLONY_TOKEN", token)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn json(url: &str, token: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, text) = colony(url, token, &all);
    assert!(ok, "{args:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {text}"))
}

fn token_of(created: &serde_json::Value) -> String {
    created["token"].as_str().unwrap().to_string()
}

#[test]
fn principals_limits_and_governance_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    let ai = json(
        &url,
        &admin,
        &[
            "principals",
            "add",
            "--name",
            "keystone",
            "--kind",
            "ai",
            "-j",
            "reviews code",
        ],
    );
    assert_eq!(ai["address"], "2.1");
    let ai_token = token_of(&ai);
    let (ok, table) = colony(&url, &admin, &["principals", "list"]);
    assert!(
        ok && table.contains("keystone") && table.contains("ADDRESS"),
        "{table}"
    );

    // Brake from the command line, as the AI.
    let (ok, text) = colony(
        &url,
        &ai_token,
        &[
            "limits",
            "brake",
            "ai_accounts",
            "--hard",
            "20",
            "-j",
            "slow down",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = colony(
        &url,
        &ai_token,
        &[
            "limits",
            "brake",
            "ai_accounts",
            "--hard",
            "unlimited",
            "-j",
            "oops",
        ],
    );
    assert!(!ok && text.contains("a brake only lowers"), "{text}");
    let (ok, limits) = colony(&url, &admin, &["limits"]);
    assert!(
        ok && limits
            .lines()
            .any(|l| l.starts_with("ai_accounts") && l.contains(" 20 ")),
        "{limits}"
    );

    // Propose, vote, list.
    let proposal = json(
        &url,
        &admin,
        &[
            "limits",
            "propose",
            "ai_accounts",
            "--hard",
            "30",
            "-j",
            "room to grow",
        ],
    );
    let id = proposal["id"].to_string();
    assert_eq!(proposal["state"], "review");
    let voted = json(
        &url,
        &ai_token,
        &["limits", "vote", &id, "approve", "-j", "agreed"],
    );
    assert_eq!(voted["tally"]["ai"]["approve"], 1);
    let (ok, listed) = colony(&url, &admin, &["limits", "proposals", "--state", "review"]);
    assert!(
        ok && listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("review") && l.contains("1/0/0")),
        "{listed}"
    );
    let (ok, shown) = colony(&url, &admin, &["limits", "proposals", &id]);
    assert!(
        ok && shown.contains("room to grow") && shown.contains("vote: 2.1 (ai) approve: agreed"),
        "{shown}"
    );

    node.kill().unwrap();
    node.wait().unwrap();
}

#[test]
fn hypernet_settings_import_through_governance() {
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let files = tempfile::tempdir().unwrap();
    let swarm = files.path().join("swarm_config.json");
    std::fs::write(
        &swarm,
        r#"{"hard_max_sessions": 4, "soft_max_sessions": 2,
        "budget": {"daily_limit_usd": 5.00, "session_limit_usd": 2.00, "warn_at_percent": 0.80}}"#,
    )
    .unwrap();
    let limits = files.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"custom_limits": {"max_ai_accounts": {"soft": 20, "hard": 60}}}"#,
    )
    .unwrap();

    let (ok, text) = colony(
        &url,
        &admin,
        &[
            "import",
            "hypernet",
            "--swarm-config",
            swarm.to_str().unwrap(),
            "--limits",
            limits.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    // Lower than Colony's defaults: applied at once. Equal: unchanged. Higher: a vote.
    assert!(
        text.lines()
            .any(|l| l.starts_with("active_workers") && l.contains("applied at once")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("llm_spend_usd") && l.contains("not changed")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ai_accounts") && l.contains("in review")),
        "{text}"
    );

    let old = json(&url, &admin, &["limits"]);
    let workers = old["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "active_workers")
        .unwrap();
    assert_eq!(
        (workers["soft"].as_u64(), workers["hard"].as_u64()),
        (Some(2), Some(4))
    );
    assert!(workers["set_via"].as_str().unwrap().starts_with("proposal"));

    // The old swarm's routes answer in their old shapes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{url}{path}")).bearer_auth(&admin).send();
        let all: serde_json::Value = get("/limits").await.unwrap().json().await.unwrap();
        assert_eq!(all["limits"]["max_ai_accounts"]["hard"], 50);
        assert_eq!(all["limits"]["max_concurrent_workers"]["hard"], 4);
        let one: serde_json::Value = get("/limits/max_ai_accounts")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (one["name"].as_str(), one["soft"].as_u64()),
            (Some("max_ai_accounts"), Some(10))
        );
        let check: serde_json::Value = get("/limits/check/max_concurrent_workers?current=4")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (check["allowed"].as_bool(), check["status"].as_str()),
            (Some(false), Some("blocked"))
        );
        let check: serde_json::Value = get("/limits/check/max_concurrent_workers?current=2")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (check["allowed"].as_bool(), check["warning"].as_bool()),
            (Some(true), Some(true))
        );
        let missing = get("/limits/check/nothing").await.unwrap();
        assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    });
    node.kill().unwrap();
    node.wait().unwrap();
}
