//! Artifacts from the command line, as the README shows them: the shipped kick
//! artifact, a WAT module that runs until its compute is exhausted, and the C
//! example built for wasm32 with Debian's clang, working the task board.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;
use common::{start, COLONY};

fn colony(url: &str, token: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(COLONY)
        .args(args)
        .arg("--json")
        .env("COLONY_URL", url)
        .env("COLONY_TOKEN", token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {text}"))
}

fn wait_for(what: &str, mut done: impl FnMut() -> Option<serde_json::Value>) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn deploy_watch_run_until_exhausted_and_a_c_artifact_works_the_board() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = tempfile::tempdir().unwrap();
    let (mut node, url) = start(data.path());
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    // The kick artifact of config/genesis/artifacts.toml runs from the first start.
    let list = colony(&url, &admin, &["artifacts", "list"]);
    assert_eq!(list["artifacts"][0]["name"], "alert-tasks", "{list}");

    // The README's counter: it runs until its compute is exhausted.
    let counter = root.join("examples/artifacts/counter.wat");
    let made = colony(
        &url,
        &admin,
        &[
            "artifacts",
            "deploy",
            counter.to_str().unwrap(),
            "--name",
            "counter",
            "--quota",
            "compute_ms=300",
            "-j",
            "watch an artifact run until exhausted",
        ],
    );
    let address = made["address"].as_str().unwrap().to_string();
    let shown = wait_for("exhausted", || {
        let shown = colony(&url, &admin, &["artifacts", "show", &address]);
        (shown["state"] == "exhausted").then_some(shown)
    });
    assert_eq!(shown["exhausted"], "compute_ms", "{shown}");
    let used = shown["balances"]["compute_ms"]["used"].as_u64().unwrap();
    assert!((270..=300).contains(&used), "{shown}");
    assert!(shown["usage"]["runs"].as_u64().unwrap() > 0);

    // The C example, built offline with clang for wasm32.
    let clang = common::clang();
    let wasm = data.path().join("word_count.wasm");
    let built = Command::new(clang)
        .args([
            "--target=wasm32",
            "-O2",
            "-nostdlib",
            "-Wl,--no-entry",
            "-o",
        ])
        .arg(&wasm)
        .arg(root.join("examples/artifacts/c/word_count.c"))
        .status()
        .unwrap();
    assert!(built.success());
    let made = colony(
        &url,
        &admin,
        &[
            "artifacts",
            "deploy",
            wasm.to_str().unwrap(),
            "--name",
            "word-count",
            "-j",
            "counts words for the board",
        ],
    );
    let counter_address = made["address"].as_str().unwrap().to_string();
    let task = colony(
        &url,
        &admin,
        &[
            "tasks",
            "post",
            "count these",
            "--description",
            "the quick brown fox jumps",
            "--capability",
            "count-words",
            "-j",
            "a test",
        ],
    );
    let task_address = task["address"].as_str().unwrap().to_string();
    let done = wait_for("completed", || {
        let task = colony(&url, &admin, &["tasks", "show", &task_address]);
        (task["status"] == "completed").then_some(task)
    });
    assert_eq!(done["result"], "5 words", "{done}");
    let logs = colony(&url, &admin, &["artifacts", "logs", &counter_address]);
    assert!(
        logs["lines"][0]["text"]
            .as_str()
            .unwrap()
            .contains("5 words"),
        "{logs}"
    );
    // Stopped from the command line.
    let stopped = colony(
        &url,
        &admin,
        &["artifacts", "stop", &counter_address, "-j", "enough"],
    );
    assert_eq!(stopped["run"], false);

    node.kill().unwrap();
    node.wait().unwrap();
}
