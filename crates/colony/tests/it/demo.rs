//! `colony up --demo` finishes its sample goal, offline: LLM workers (scripted model)
//! decompose and complete it through the gateway, one is killed and replaced, the
//! third registration crosses active_workers' soft limit, and the log verifies.

use crate::common;

use std::process::Command;
use std::time::Duration;

#[test]
fn the_demo_finishes_its_sample_goal() {
    let mut child = Command::new(common::COLONY)
        .args(["up", "--demo", "--listen", "127.0.0.1:0"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The demo stops itself within two minutes; past three it is stuck.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the demo did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "offline scripted provider",
        "task.decompose",
        "[scripted] two halves are easier to review",
        "ledger.reserve",
        "llm.settle",
        "WARNING active_workers past soft",
        "killing worker process",
        "supervisor.replace",
        "is completed",
    ] {
        assert!(
            stdout.contains(expected),
            "the demo did not show {expected:?}:\n{stdout}"
        );
    }
    // The subtasks got shares of the goal's budget, and their own calls were charged
    // to them.
    let shares: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("micro-USD share spent"))
        .collect();
    assert_eq!(shares.len(), 2, "{stdout}");
    for line in shares {
        let spent: u64 = line
            .split(": ")
            .nth(2)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unreadable share line {line:?}"));
        assert!(spent > 0, "a subtask's call was not charged to it: {line}");
    }
    // The log it leaves verifies.
    let data = stdout
        .lines()
        .find_map(|l| l.strip_prefix("colony demo: the whole decision log is in "))
        .and_then(|rest| rest.split(';').next())
        .expect("the demo says where its log is")
        .to_string();
    let verify = Command::new(common::COLONY)
        .args(["audit", "verify", "--data", &data])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let _ = std::fs::remove_dir_all(std::path::Path::new(&data).parent().unwrap());
}
