//! Artifacts on a real node (in this process): turns per second and memory per idle
//! artifact. Prints figures; asserts nothing about time.
//!
//! 1. Turns per second: artifacts whose `run` makes its turn's 64 host calls and asks
//!    for more (so a turn is short: its cost is the runtime's and the kernel's, four
//!    decisions a turn), and artifacts that spin (a turn is `turn_ms` of compute).
//! 2. Memory per idle artifact: the process's resident memory before and after
//!    deploying artifacts that wait for messages, divided by how many.
//!
//! Run: `cargo bench -p colony-node --bench artifacts` (`-- quick` for a short run).

use std::time::{Duration, Instant};

use colony_node::genesis::ArtifactsSetup;
use colony_node::{Node, NodeConfig};
use serde_json::{json, Value};

/// The allocator the `colony` binary ships with (`crates/colony/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHATTY: &str = r#"(module
  (import "colony" "kv_get" (func $get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "k")
  (func (export "run") (result i32)
    (local $i i32)
    (loop $next
      (drop (call $get (i32.const 0) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 64))))
    (i32.const 1)))"#;

const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "run") (result i32) (loop $l (br $l)) (i32.const 1)))"#;

const IDLE: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "run") (result i32) (i32.const 2)))"#;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

struct Bench {
    node: Node,
    base: String,
    admin: String,
    http: reqwest::Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Bench {
    async fn start() -> Bench {
        let data = tempfile::tempdir().unwrap();
        let config = tempfile::tempdir().unwrap();
        let unlimited = "llm_budget_usd = \"unlimited\"\ndisk_bytes = \"unlimited\"\ncompute_ms = \"unlimited\"\nio_ops = \"unlimited\"\nmemory_bytes = \"unlimited\"\n";
        std::fs::write(
            config.path().join("limits.toml"),
            "[limits.ai_accounts]\nsoft = 1000\nhard = 1000\n[limits.total_nodes]\nsoft = 100000\nhard = 100000\n[limits.nodes_per_category]\nsoft = 100000\nhard = 100000\n[limits.data_creation_bytes]\nsoft = \"unlimited\"\nhard = \"unlimited\"\n",
        )
        .unwrap();
        std::fs::write(
            config.path().join("quotas.toml"),
            format!("[ledger]\nreservations_per_principal_max = 100000\n[defaults.human]\n{unlimited}[defaults.ai]\n{unlimited}[defaults.artifact]\n{unlimited}"),
        )
        .unwrap();
        std::fs::write(
            config.path().join("governance.toml"),
            "[governance]\nreview_period = \"24h\"\n",
        )
        .unwrap();
        let runtime = colony_artifacts::RuntimeConfig {
            idle_wake_ms: 3_600_000,
            idle_wake_max_ms: 3_600_000,
            ..Default::default()
        };
        let node = Node::start(NodeConfig {
            data_dir: data.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            config_dir: config.path().to_path_buf(),
            config_dir_required: true,
            artifacts: Some(ArtifactsSetup {
                runtime,
                kick: Vec::new(),
            }),
            ..NodeConfig::default()
        })
        .await
        .unwrap();
        let admin = std::fs::read_to_string(data.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        Bench {
            base: format!("http://{}", node.local_addr()),
            node,
            admin,
            http: reqwest::Client::new(),
            _dirs: (data, config),
        }
    }

    async fn deploy(&self, name: &str, wat: &str) -> String {
        self.deploy_as(&self.admin, name, wat).await
    }

    /// A new AI principal's token (a deployer holds at most 64 artifacts).
    async fn deployer(&self, name: &str) -> String {
        let made: Value = self
            .http
            .post(format!("{}/v1/principals", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({"name": name, "kind": "ai", "justification": "benchmark"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        made["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{made}"))
            .to_string()
    }

    async fn deploy_as(&self, token: &str, name: &str, wat: &str) -> String {
        let made: Value = self
            .http
            .post(format!("{}/v1/artifacts", self.base))
            .bearer_auth(token)
            .json(&json!({"name": name, "wat": wat, "justification": "benchmark"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        made["address"]
            .as_str()
            .unwrap_or_else(|| panic!("{made}"))
            .to_string()
    }

    async fn list(&self) -> Vec<Value> {
        let list: Value = self
            .http
            .get(format!("{}/v1/artifacts", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["artifacts"].as_array().unwrap().clone()
    }

    async fn stop_all(&self) {
        for artifact in self.list().await {
            let address = artifact["address"].as_str().unwrap();
            self.http
                .post(format!("{}/v1/artifacts/{address}/stop", self.base))
                .bearer_auth(&self.admin)
                .json(&json!({"justification": "benchmark over"}))
                .send()
                .await
                .unwrap();
        }
    }

    /// Turns and runs of all artifacts so far.
    async fn totals(&self) -> (u64, u64) {
        self.list().await.iter().fold((0, 0), |(t, r), a| {
            (
                t + a["usage"]["turns"].as_u64().unwrap_or(0),
                r + a["usage"]["runs"].as_u64().unwrap_or(0),
            )
        })
    }
}

async fn turns(bench: &Bench, kind: &str, wat: &str, count: usize, seconds: u64) {
    for n in 0..count {
        bench.deploy(&format!("{kind}{n}"), wat).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (turns0, runs0) = bench.totals().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (turns1, runs1) = bench.totals().await;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{count} {kind} artifacts: {:.0} turns/s, {:.0} runs/s",
        (turns1 - turns0) as f64 / elapsed,
        (runs1 - runs0) as f64 / elapsed
    );
    bench.stop_all().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn idle_memory(count: usize) {
    let bench = Bench::start().await;
    // Warm up: one artifact, so that the engine and the module cache exist.
    bench.deploy("warm", IDLE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut deployers = Vec::new();
    for n in 0..count.div_ceil(50) {
        deployers.push(bench.deployer(&format!("deployer{n}")).await);
    }
    let before = rss_kib();
    for n in 0..count {
        bench
            .deploy_as(&deployers[n / 50], &format!("idle{n}"), IDLE)
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let idle = bench
            .list()
            .await
            .iter()
            .filter(|a| a["state"] == "idle")
            .count();
        if idle > count || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = rss_kib();
    println!(
        "{count} idle artifacts: resident memory {before} KiB -> {after} KiB: {:.1} KiB per idle artifact",
        (after.saturating_sub(before)) as f64 / count as f64
    );
    bench.node.shutdown().await.unwrap();
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("== artifact turns (runtime defaults: turn_ms 20, 64 host calls a turn) ==");
        let seconds = if quick { 2 } else { 5 };
        let bench = Bench::start().await;
        turns(&bench, "chatty", CHATTY, 1, seconds).await;
        turns(&bench, "chatty-x8-", CHATTY, 8, seconds).await;
        turns(&bench, "spin", SPIN, 4, seconds).await;
        bench.node.shutdown().await.unwrap();
        println!("== memory per idle artifact ==");
        idle_memory(if quick { 200 } else { 1_000 }).await;
    });
}
