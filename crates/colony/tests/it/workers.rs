//! Real worker processes (`colony worker --exec`) against a real node: a worker killed
//! with `kill -9` mid-task, one stopped with SIGSTOP past its timeout, the task's
//! scoped token, and the sandbox (bubblewrap, limits, what a command is charged).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;
use common::{config_with, start_with_config, COLONY};

const FAST_WORKERS: &str = "[workers]\nheartbeat = \"100ms\"\ntimeout = \"500ms\"\n";

struct Swarm {
    node: Child,
    url: String,
    admin: String,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Swarm {
    fn start() -> Swarm {
        // `--sandbox auto` (the default) fails closed without bubblewrap.
        common::bwrap();
        let data = tempfile::tempdir().unwrap();
        let config = config_with(&[("tasks.toml", FAST_WORKERS)]);
        let (node, url) = start_with_config(data.path(), config.path());
        let admin = std::fs::read_to_string(data.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        Swarm {
            node,
            url,
            admin,
            runtime,
            http: reqwest::Client::new(),
            _dirs: (data, config),
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.url);
        self.runtime.block_on(async {
            let request = if method == "GET" {
                self.http.get(url)
            } else {
                self.http.post(url).json(&body)
            };
            request
                .bearer_auth(&self.admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    fn principal(&self, name: &str) -> (String, String) {
        let created = self.call(
            "POST",
            "/v1/principals",
            json!({"name": name, "kind": "ai", "justification": "a worker process"}),
        );
        (
            created["address"].as_str().unwrap().into(),
            created["token"].as_str().unwrap().into(),
        )
    }

    /// A worker in its own process group, so that its command dies or stops with it.
    fn worker(&self, token: &str, exec: &str, extra: &[&str]) -> Child {
        Command::new(COLONY)
            .args([
                "worker",
                "--capabilities",
                "code",
                "--poll-ms",
                "50",
                "--exec",
                exec,
            ])
            .args(extra)
            .env("COLONY_URL", &self.url)
            .env("COLONY_TOKEN", token)
            .env("COLONY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut(&Swarm) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn post_task(&self) -> String {
        let task = self.call(
            "POST",
            "/v1/tasks",
            json!({"title": "port the parser", "capabilities": ["code"], "justification": "test"}),
        );
        task["address"].as_str().unwrap().to_string()
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.node.wait();
    }
}

fn signal_group(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

fn wait_exit(child: &mut Child, seconds: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the worker did not exit");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_worker_killed_mid_task_is_replaced_and_its_task_finished_from_the_checkpoint() {
    let swarm = Swarm::start();
    let (_, first) = swarm.principal("first");
    let (second_address, second) = swarm.principal("second");
    let task = swarm.post_task();
    let mut dying = swarm.worker(&first, r#"echo 'checkpoint: {"step": 1}'; sleep 60"#, &[]);
    swarm.wait_for("the checkpoint", |s| {
        s.call("GET", &format!("/v1/tasks/{task}"), json!({}))["checkpoint"]["step"] == 1
    });
    signal_group(&dying, "-KILL");
    dying.wait().unwrap();

    let mut rescuer = swarm.worker(
        &second,
        r#"echo "{\"resumed_from\": $COLONY_CHECKPOINT}""#,
        &["--max-tasks", "1"],
    );
    assert!(wait_exit(&mut rescuer, 20).success());
    let finished = swarm.call("GET", &format!("/v1/tasks/{task}"), json!({}));
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["result"]["resumed_from"]["step"], 1);
    let attempts = finished["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "worker_lost");
    assert_eq!(attempts[1]["worker"], second_address.as_str());
    let workers = swarm.call("GET", "/v1/workers", json!({}));
    assert!(workers["workers"][0]["evidence"]
        .as_str()
        .unwrap()
        .contains("no heartbeat since"));
}

#[test]
fn a_stopped_worker_past_its_timeout_cannot_complete_its_old_task() {
    let swarm = Swarm::start();
    let (stopped_address, stopped) = swarm.principal("stopped");
    let (_, steady) = swarm.principal("steady");
    let task = swarm.post_task();
    let mut sleeper = swarm.worker(
        &stopped,
        r#"echo 'checkpoint: {"step": 1}'; sleep 1; echo late"#,
        &[],
    );
    swarm.wait_for("the checkpoint", |s| {
        s.call("GET", &format!("/v1/tasks/{task}"), json!({}))["checkpoint"]["step"] == 1
    });
    signal_group(&sleeper, "-STOP");
    swarm.wait_for("the stopped worker to be declared lost", |s| {
        s.call("GET", "/v1/workers", json!({}))["workers"][0]["state"] == "lost"
    });
    let mut steady_worker = swarm.worker(&steady, "echo finished-by-steady", &["--max-tasks", "1"]);
    assert!(wait_exit(&mut steady_worker, 20).success());
    signal_group(&sleeper, "-CONT");
    let status = wait_exit(&mut sleeper, 20);
    assert_eq!(
        status.code(),
        Some(3),
        "the resumed worker stops: its session and claim are gone"
    );
    let finished = swarm.call("GET", &format!("/v1/tasks/{task}"), json!({}));
    assert_eq!(
        (finished["status"].as_str(), finished["result"].as_str()),
        (Some("completed"), Some("finished-by-steady"))
    );
    let audit = swarm.call(
        "GET",
        &format!("/v1/audit?actor={stopped_address}&limit=1000"),
        json!({}),
    );
    let refused = audit["records"].as_array().unwrap().iter().any(|r| {
        r["decision"] == "denied"
            && (r["reason"]["code"] == "stale_lease" || r["reason"]["code"] == "worker_gone")
    });
    assert!(
        refused,
        "the late worker's calls were refused and recorded: {audit}"
    );
}

/// The command a worker runs gets a token scoped to its task (never the worker's
/// own): it reads its task, is refused the board, and the token is revoked when the
/// command ends.
#[test]
fn the_command_gets_a_token_scoped_to_its_task_only() {
    let swarm = Swarm::start();
    let (address, token) = swarm.principal("scoped");
    let task = swarm.post_task();
    let exec = "status() { curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: Bearer $COLONY_TOKEN\" \"$COLONY_URL$1\"; }; \
                echo \"$(status /v1/tasks/$COLONY_TASK) $(status /v1/tasks) $(status /v1/ledger/me)\"";
    let mut worker = swarm.worker(&token, exec, &["--max-tasks", "1", "--allow-net"]);
    swarm.wait_for("the task to complete", |s| {
        s.call("GET", &format!("/v1/tasks/{task}"), Value::Null)["status"] == "completed"
    });
    let finished = swarm.call("GET", &format!("/v1/tasks/{task}"), Value::Null);
    assert_eq!(
        finished["result"], "200 403 403",
        "its task yes, the board and the ledger no: {finished}"
    );
    assert!(worker.wait().unwrap().success());
    let tokens = swarm.call(
        "GET",
        &format!("/v1/principals/{address}/tokens"),
        Value::Null,
    );
    let scoped = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scopes"] == json!([format!("task:{task}")]))
        .unwrap_or_else(|| panic!("no task token in {tokens}"));
    assert_eq!(scoped["state"], "revoked", "{scoped}");
}

/// Under bubblewrap a command reads nothing of the host outside its work directory,
/// opens no connection, and is stopped at its CPU and memory limits; what it used
/// is charged to the worker's quotas.
#[test]
fn the_sandbox_holds_and_what_the_command_used_is_charged() {
    common::bwrap();
    let swarm = Swarm::start();
    let (address, token) = swarm.principal("boxed");
    let outside = tempfile::Builder::new()
        .prefix("colony-secret-")
        .tempdir_in(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp"))
        .unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "the worker's secret").unwrap();
    let escape = format!(
        "cat {} 2>/dev/null || echo cannot-read; \
         curl -s -m 2 -o /dev/null {}/healthz && echo connected || echo no-network; \
         echo kept > mine.txt && cat mine.txt; pwd",
        secret.display(),
        swarm.url
    );
    let task = swarm.post_task();
    let mut worker = swarm.worker(&token, &escape, &["--max-tasks", "1", "--sandbox", "bwrap"]);
    swarm.wait_for("the task to complete", |s| {
        s.call("GET", &format!("/v1/tasks/{task}"), Value::Null)["status"] == "completed"
    });
    assert!(worker.wait().unwrap().success());
    let done = swarm.call("GET", &format!("/v1/tasks/{task}"), Value::Null);
    let result = done["result"].as_str().unwrap_or_else(|| panic!("{done}"));
    let lines: Vec<&str> = result.lines().collect();
    assert_eq!(
        lines[..3],
        ["cannot-read", "no-network", "kept"],
        "{result}"
    );
    assert!(
        lines[3].contains("colony-task-"),
        "its own work directory: {result}"
    );

    // A CPU burner is stopped at its limit; a memory hog cannot have its memory.
    for (exec, limit) in [
        ("while :; do :; done", "--cpu-seconds"),
        (
            "dd if=/dev/zero of=/dev/null bs=300M count=1",
            "--memory-mib",
        ),
    ] {
        let value = if limit == "--cpu-seconds" { "1" } else { "64" };
        let task = swarm.post_task();
        let mut worker = swarm.worker(
            &token,
            exec,
            &["--max-tasks", "1", "--sandbox", "bwrap", limit, value],
        );
        swarm.wait_for("the attempt to fail", |s| {
            let task = s.call("GET", &format!("/v1/tasks/{task}"), Value::Null);
            task["failures"].as_u64().unwrap_or(0) > 0
                || task["status"] == "failed"
                || task["status"] == "dead"
        });
        let _ = worker.kill();
        let _ = worker.wait();
    }
    // The burner's second of CPU was reserved before and charged after.
    let audit = swarm.call(
        "GET",
        &format!("/v1/audit?actor={address}&limit=1000"),
        Value::Null,
    );
    let records = audit["records"].as_array().unwrap();
    let charged: Vec<u64> = records
        .iter()
        .filter(|r| {
            r["action"] == "ledger.commit" && r["detail"]["effect"]["resource"] == "compute_ms"
        })
        .map(|r| r["detail"]["effect"]["charged"].as_u64().unwrap())
        .collect();
    // Stopped at its one second, as measured by the kernel's accounting of the
    // process (user plus system time): on a loaded virtual machine that can be
    // less than the CPU limit that stopped it (853 ms was seen in CI).
    assert!(
        charged.iter().any(|ms| (500..=1_200).contains(ms)),
        "{charged:?}"
    );
    assert!(
        records.iter().any(|r| r["action"] == "ledger.commit"
            && r["detail"]["effect"]["resource"] == "memory_bytes"
            && r["detail"]["effect"]["charged"].as_u64().unwrap() > 0),
        "peak memory recorded: {audit}"
    );
}

/// Issue 26: without bubblewrap, `--sandbox auto` (the default) refuses to start
/// the worker and says how to go on; `--sandbox none` starts, saying so loudly.
#[test]
fn issue_26_without_bubblewrap_the_default_sandbox_fails_closed() {
    let swarm = Swarm::start();
    let (_, token) = swarm.principal("unboxed");
    // A PATH that holds a shell but no bubblewrap.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/bin/sh", bin.path().join("sh")).unwrap();
    let run = |extra: &[&str]| {
        Command::new(COLONY)
            .args(["worker", "--capabilities", "code", "--exec", "true"])
            .args(["--max-tasks", "0"])
            .args(extra)
            .env("PATH", bin.path())
            .env("COLONY_URL", &swarm.url)
            .env("COLONY_TOKEN", &token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = run(&[]).wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("bubblewrap is not installed")
            && said.contains("apt-get install bubblewrap")
            && said.contains("--sandbox none"),
        "{said}"
    );
    let unboxed = run(&["--sandbox", "none"]).wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&unboxed.stderr);
    assert!(said.contains("WARNING: --sandbox none"), "{said}");
}

/// Whether process `pid` still runs (a zombie counts as gone).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A command that starts a child of its own and hangs, writing the child's pid to
/// `pidfile` (unsandboxed, so that the test sees the pid as the host does).
fn hanging(pidfile: &std::path::Path) -> String {
    format!("sleep 600 & echo $! > {}; sleep 600", pidfile.display())
}

fn wait_for_pid(swarm: &Swarm, pidfile: &std::path::Path) -> u32 {
    swarm.wait_for("the command to start", |_| {
        std::fs::read_to_string(pidfile).is_ok_and(|t| t.trim().parse::<u32>().is_ok())
    });
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Issue 26: a command that hangs is stopped, with everything it started, when its
/// attempt's deadline passes, however often the worker renewed its lease; the
/// attempt is recorded as timed out and the worker goes on.
#[test]
fn issue_26_a_hung_command_is_killed_with_its_group_at_the_attempts_deadline() {
    let swarm = Swarm::start();
    let (_, token) = swarm.principal("hung");
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let task = swarm.call(
        "POST",
        "/v1/tasks",
        json!({"title": "hangs", "capabilities": ["code"], "attempt_timeout": "2s",
               "max_attempts": 1, "justification": "test"}),
    )["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut worker = swarm.worker(&token, &hanging(&pidfile), &["--sandbox", "none"]);
    let child = wait_for_pid(&swarm, &pidfile);
    assert!(running(child));
    swarm.wait_for("the attempt to time out", |s| {
        s.call("GET", &format!("/v1/tasks/{task}"), Value::Null)["status"] == "dead"
    });
    let seen = swarm.call("GET", &format!("/v1/tasks/{task}"), Value::Null);
    assert_eq!(seen["attempts"][0]["outcome"], "timed_out", "{seen}");
    swarm.wait_for("the command's child to be killed", |_| !running(child));
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker goes on to other work"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Issue 26: when the poster cancels the task, the worker's next renewal is refused
/// and it stops the command with everything it started.
#[test]
fn issue_26_a_cancelled_tasks_command_is_stopped() {
    let swarm = Swarm::start();
    let (_, token) = swarm.principal("cancelled");
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let task = swarm.post_task();
    let mut worker = swarm.worker(&token, &hanging(&pidfile), &["--sandbox", "none"]);
    let child = wait_for_pid(&swarm, &pidfile);
    let cancelled = swarm.call(
        "POST",
        &format!("/v1/tasks/{task}/cancel"),
        json!({"justification": "no longer needed"}),
    );
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    swarm.wait_for("the command's child to be killed", |_| !running(child));
    assert!(worker.try_wait().unwrap().is_none(), "the worker goes on");
    let _ = worker.kill();
    let _ = worker.wait();
}
