//! A swarm against one embedded node (issue 30's load generator, first version):
//! N agents, each an AI principal with a worker session over HTTP (colony-client),
//! heartbeating every 2 s, claiming tasks that a poster puts on the board at one per
//! agent per minute, making one LLM call per task through the gateway (its offline
//! scripted model), publishing one bus message per task, and completing it. For
//! each N it prints commands/s, the command and decision logs' bytes per agent-hour,
//! resident memory per agent (the process holds the node and the agents' clients),
//! and p50/p99 of heartbeats, claims and gateway calls; it stops growing N at the
//! first that breaks a bound (p99 claim over 100 ms, or any error). Agents join
//! evenly over one heartbeat interval (2 s). Prints figures; asserts nothing.
//!
//! `cargo bench -p colony --bench swarm` (N = 100, 300, 1000, 3000; 60 s each), or
//! `-- quick` (N = 100, 1000; 20 s each), or `-- N SECONDS` for one size; `-- idle
//! ...` before any of these: the agents only heartbeat (what an idle session costs);
//! `-- wait ...` instead of `idle`: the agents' claims wait on the node for work
//! (`wait_ms`, a long poll) instead of polling every 5 s; `-- clients K ...` before
//! all: the agents run in K client processes (this binary, started again), so that
//! the node's process holds only the node (its memory per agent is then the node's
//! alone) and the agents' sockets count against the clients' file limits, not the
//! node's.
//!
//! Besides each call's latency it prints the dispatch latency: from a task's post to
//! its claim's answer (how long posted work waits for an idle agent). A waiting
//! claim's own duration is time spent idle, not latency: in `wait` mode the bound is
//! on dispatch's p99 instead of the claim's.

#[path = "swarm/clients.rs"]
mod clients;
#[path = "swarm/measure.rs"]
mod measure;

use std::sync::atomic::{AtomicU64, Ordering};

use clients::{spawn_clients, ClientFigures};
use measure::{actions_between, log_bytes, percentile, rss_kib};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony_client::api::gateway::ChatRequest;
use colony_client::api::tasks::{ClaimRequest, TaskRequest};
use colony_client::api::workers::{RegisterAnswer, RegisterRequest};
use colony_client::{Client, Held};
use colony_node::{Node, NodeConfig};
use serde_json::{json, Map};

/// The allocator the `colony` binary ships with (`crates/colony/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIMITS: &str = "[limits.concurrent_api_requests]\nsoft = 100000\nhard = 200000\n\
    [limits.ai_accounts]\nsoft = 100000\nhard = 200000\n\
    [limits.active_workers]\nsoft = 100000\nhard = 200000\n\
    [limits.tasks_per_worker]\nsoft = 100\nhard = 200\n\
    [limits.task_queue_depth]\nhard = \"unlimited\"\n\
    [limits.llm_spend_usd]\nsoft = \"unlimited\"\nhard = \"unlimited\"\n";
const QUOTAS: &str = "[ledger]\nreservations_per_principal_max = 100000\n\
    [defaults.human]\nllm_budget_usd = \"unlimited\"\nio_ops = \"unlimited\"\n\
    [defaults.ai]\nllm_budget_usd = \"unlimited\"\nio_ops = \"unlimited\"\n";
const HTTP: &str = "[http]\nrequests_in_flight_per_principal_max = 100000\n";

/// What breaks a size: a p99 claim above this.
const CLAIM_P99_BOUND_MS: f64 = 100.0;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const TASK_EVERY_PER_AGENT: Duration = Duration::from_secs(60);
/// How long idle agents are given to register before their cost is measured.
const IDLE_SETTLE: Duration = Duration::from_secs(10);

/// What the agents do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Heartbeat, and claim every 5 s when there was nothing.
    Work,
    /// Only heartbeat.
    Idle,
    /// Heartbeat, and claim with `wait_ms` (a long poll).
    Wait,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        match text {
            "work" => Some(Mode::Work),
            "idle" => Some(Mode::Idle),
            "wait" => Some(Mode::Wait),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Work => "work",
            Mode::Idle => "idle",
            Mode::Wait => "wait",
        }
    }
}

/// The longest a claim waits on the node in `wait` mode.
const CLAIM_WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Figures {
    heartbeats: Mutex<Vec<u64>>,
    claims: Mutex<Vec<u64>>,
    /// From a task's post to its claim's answer.
    dispatch: Mutex<Vec<u64>>,
    calls: Mutex<Vec<u64>>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    completed: AtomicU64,
}

impl Figures {
    fn time(&self, into: &Mutex<Vec<u64>>, since: Instant) {
        into.lock()
            .unwrap()
            .push(since.elapsed().as_micros() as u64);
    }

    fn error(&self, what: &str, error: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(format!("{what}: {error}"));
        }
    }
}

/// One agent: a session, heartbeats, and tasks claimed, called for, announced and
/// completed until `until`.
async fn agent(
    client: Client,
    figures: Arc<Figures>,
    until: Instant,
    mode: Mode,
    start_after: Duration,
) {
    // Agents join over one heartbeat interval, as a swarm that starts does, rather
    // than in the same millisecond.
    tokio::time::sleep(start_after).await;
    let session = match client
        .register_worker(&RegisterRequest {
            capabilities: vec!["swarm".into()],
            model: Some("colony-scripted".into()),
            profile: None,
            justification: Some("a swarm agent".into()),
        })
        .await
    {
        Ok(RegisterAnswer::Registered(session)) => session.worker,
        Ok(RegisterAnswer::Queued(queued)) => {
            figures.error("register", format!("queued at {}", queued.position));
            return;
        }
        Err(error) => {
            figures.error("register", error);
            return;
        }
    };
    let beats = {
        let (client, figures) = (client.clone(), Arc::clone(&figures));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HEARTBEAT_EVERY);
            every.tick().await;
            while Instant::now() < until {
                every.tick().await;
                let started = Instant::now();
                match client.worker_heartbeat(session).await {
                    Ok(_) => figures.time(&figures.heartbeats, started),
                    Err(error) => figures.error("heartbeat", error),
                }
            }
        })
    };
    if mode == Mode::Idle {
        // Only alive: what a session costs when it does nothing.
        let _ = beats.await;
        let _ = client.leave(session).await;
        return;
    }
    while Instant::now() < until {
        let started = Instant::now();
        let wait_ms = (mode == Mode::Wait).then(|| {
            until
                .saturating_duration_since(started)
                .min(CLAIM_WAIT)
                .as_millis() as u64
        });
        let claimed = client
            .claim(&ClaimRequest {
                worker: Some(session),
                wait_ms,
                ..ClaimRequest::default()
            })
            .await;
        let claimed = match claimed {
            Ok(claimed) => {
                // A waiting claim's duration is time spent idle, not latency.
                if mode == Mode::Work {
                    figures.time(&figures.claims, started);
                }
                claimed
            }
            Err(error) => {
                figures.error("claim", error);
                None
            }
        };
        let Some(claimed) = claimed else {
            if mode == Mode::Work {
                // Nothing to do: look again in a while, as a worker would.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            continue;
        };
        if let Some(posted_ms) = claimed
            .task
            .description
            .strip_prefix("posted_at_ms=")
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            let waited_ms = unix_ms().saturating_sub(posted_ms);
            figures.dispatch.lock().unwrap().push(waited_ms * 1_000);
        }
        let held = Held {
            address: claimed.task.address.clone(),
            lease_token: claimed.lease.token,
        };
        let request = ChatRequest {
            model: "colony-scripted".into(),
            messages: vec![json!({"role": "user", "content": claimed.task.title})],
            max_tokens: Some(64),
            stream: None,
            rest: Map::new(),
        };
        let started = Instant::now();
        match client.chat(&request, Some(&held.address)).await {
            Ok(_) => figures.time(&figures.calls, started),
            Err(error) => figures.error("llm call", error),
        }
        if let Err(error) = client
            .publish(
                "work.swarm",
                json!({"done": held.address}),
                "a swarm agent reports",
            )
            .await
        {
            figures.error("publish", error);
        }
        match client.complete(&held, json!({"ok": true}), "done").await {
            Ok(_) => {
                figures.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => figures.error("complete", error),
        }
    }
    beats.abort();
    let _ = client.leave(session).await;
}

/// One size: the node's figures while `agents` work for `seconds`, driven from this
/// process (`processes` 0) or from that many client processes.
async fn run(agents: usize, seconds: u64, mode: Mode, processes: usize) -> bool {
    let idle = mode == Mode::Idle;
    let config = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    for file in ["governance.toml", "tasks.toml", "providers.toml"] {
        std::fs::copy(shipped.join(file), config.path().join(file)).unwrap();
    }
    std::fs::write(config.path().join("limits.toml"), LIMITS).unwrap();
    std::fs::write(config.path().join("quotas.toml"), QUOTAS).unwrap();
    std::fs::write(config.path().join("http.toml"), HTTP).unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        data_dir: data.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        config_dir: config.path().to_path_buf(),
        config_dir_required: true,
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", node.local_addr());
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(colony_client::IDLE_CONNECTION_KEPT)
        .build()
        .unwrap();
    let admin = Client::with_http(&url, admin.trim(), http.clone()).unwrap();
    let rss_before = rss_kib();
    // The agents' principals.
    let mut tokens = Vec::with_capacity(agents);
    for n in 0..agents {
        let created: serde_json::Value = http
            .post(format!("{url}/v1/principals"))
            .bearer_auth(admin_token(&data))
            .json(&json!({"name": format!("agent-{n}"), "kind": "ai", "roles": ["member"], "justification": "a swarm agent"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = created["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"));
        tokens.push(token.to_string());
    }
    let figures = Arc::new(Figures::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let (commands_at_start, log_at_start) = (node.last_seq(), log_bytes(&data));
    let mut tasks = Vec::new();
    let mut children = Vec::new();
    // Idle agents leave after the window closes, so that leaving is not measured.
    let leave_at = if idle { until + IDLE_SETTLE } else { until };
    if processes == 0 {
        for (index, token) in tokens.iter().enumerate() {
            let client = Client::with_http(&url, token, http.clone()).unwrap();
            tasks.push(tokio::spawn(agent(
                client,
                Arc::clone(&figures),
                leave_at,
                mode,
                stagger(index, agents),
            )));
        }
    } else {
        let leave_ms = unix_ms() + leave_at.duration_since(Instant::now()).as_millis() as u64;
        for share in tokens.chunks(agents.div_ceil(processes)) {
            children.push(spawn_clients(&url, share, leave_ms, mode));
        }
    }
    // The poster: one task per agent per minute, spread evenly.
    let poster = {
        let (admin, figures) = (admin.clone(), Arc::clone(&figures));
        tokio::spawn(async move {
            let every = TASK_EVERY_PER_AGENT.as_micros() as u64 / agents.max(1) as u64;
            let mut tick = tokio::time::interval(Duration::from_micros(every.max(1)));
            let mut n = 0u64;
            while !idle && Instant::now() < until {
                tick.tick().await;
                n += 1;
                let task = TaskRequest {
                    title: format!("swarm task {n}"),
                    description: format!("posted_at_ms={}", unix_ms()),
                    capabilities: vec!["swarm".into()],
                    justification: Some("the swarm's work".into()),
                    ..TaskRequest::default()
                };
                if let Err(error) = admin.post_task(&task).await {
                    figures.error("post", error);
                }
            }
        })
    };
    // Idle sessions are measured once all have registered and until they leave: what
    // being alive costs, without what joining and leaving do.
    let mut measured_from = (started, commands_at_start, log_at_start);
    let mut window_ms = (unix_ms(), 0);
    let rss_peak = {
        let mut peak = 0;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(500)).await;
            peak = peak.max(rss_kib());
            if idle && measured_from.0 == started && started.elapsed() >= IDLE_SETTLE {
                measured_from = (Instant::now(), node.last_seq(), log_bytes(&data));
                window_ms.0 = unix_ms();
            }
        }
        peak
    };
    let (measured_until, commands_at_until, log_at_until) =
        (Instant::now(), node.last_seq(), log_bytes(&data));
    window_ms.1 = unix_ms();
    if idle {
        println!(
            "       what the log holds from the idle window: {}",
            actions_between(&http, &url, &admin_token(&data), window_ms).await
        );
    }
    let _ = poster.await;
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    for child in children {
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        match serde_json::from_slice::<ClientFigures>(&output.stdout) {
            Ok(theirs) => theirs.merge_into(&figures),
            Err(error) => figures.error(
                "client process",
                format!(
                    "{error}: {}",
                    String::from_utf8_lossy(&output.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
            ),
        }
    }
    let (elapsed, commands, (commands_log, decision_log), log_at_start) = if idle {
        (
            (measured_until - measured_from.0).as_secs_f64(),
            commands_at_until - measured_from.1,
            log_at_until,
            measured_from.2,
        )
    } else {
        (
            started.elapsed().as_secs_f64(),
            node.last_seq() - commands_at_start,
            log_bytes(&data),
            log_at_start,
        )
    };
    let agent_hours = agents as f64 * elapsed / 3_600.0;
    let mut beats = figures.heartbeats.lock().unwrap().clone();
    let mut claims = figures.claims.lock().unwrap().clone();
    let mut calls = figures.calls.lock().unwrap().clone();
    let mut dispatch = figures.dispatch.lock().unwrap().clone();
    let claim_p99 = percentile(&mut claims, 0.99);
    let dispatch_p99 = percentile(&mut dispatch, 0.99);
    let errors = figures.errors.load(Ordering::Relaxed);
    let whose = if processes == 0 {
        String::new()
    } else {
        format!(" (the node's alone: agents in {processes} client processes)")
    };
    println!(
        "{agents:>6} agents {elapsed:>5.0} s: {:>7.0} commands/s; logs per agent-hour: commands {:>9.0} B, decisions {:>9.0} B; RSS {:>6.1} KiB/agent{whose}; heartbeat p50/p99 {:.2}/{:.2} ms ({} beats); claim p50/p99 {:.2}/{claim_p99:.2} ms ({}); dispatch p50/p99 {:.2}/{dispatch_p99:.2} ms ({}); gateway p50/p99 {:.2}/{:.2} ms ({}); {} completed; {errors} errors",
        commands as f64 / elapsed,
        (commands_log - log_at_start.0) as f64 / agent_hours,
        (decision_log - log_at_start.1) as f64 / agent_hours,
        rss_peak.saturating_sub(rss_before) as f64 / agents as f64,
        percentile(&mut beats, 0.5),
        percentile(&mut beats, 0.99),
        beats.len(),
        percentile(&mut claims, 0.5),
        claims.len(),
        percentile(&mut dispatch, 0.5),
        dispatch.len(),
        percentile(&mut calls, 0.5),
        percentile(&mut calls, 0.99),
        calls.len(),
        figures.completed.load(Ordering::Relaxed),
    );
    let metrics = http
        .get(format!("{url}/metrics"))
        .bearer_auth(admin_token(&data))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    let metric = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    // Where a command's time may go besides its own work: the log's group commits.
    if let (Some(batches), Some(synced), Some(sync_total), Some(sync_max)) = (
        metric("colony_log_batches_total"),
        metric("colony_commands_total"),
        metric("colony_log_sync_microseconds_total"),
        metric("colony_log_sync_microseconds_max"),
    ) {
        // The syncs over 8 ms, from the histogram's cumulative buckets.
        let slow = |bound: &str| {
            let at = |le: &str| metric(&format!("colony_log_sync_seconds_bucket{{le=\"{le}\"}}"));
            Some(at("+Inf")? - at(bound)?)
        };
        let over = [("0.008", "8"), ("0.032", "32"), ("0.128", "128")]
            .iter()
            .filter_map(|(bound, ms)| Some(format!("{:.0} over {ms} ms", slow(bound)?)))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "       the node's log since its start: {batches:.0} group commits of {:.1} commands, each sync {:.2} ms on average, the longest {:.2} ms ({over})",
            synced / batches.max(1.0),
            sync_total / batches.max(1.0) / 1e3,
            sync_max / 1e3
        );
    }
    let first_error = figures.first_error.lock().unwrap().clone();
    if let Some(first) = first_error {
        println!("       first error: {first}");
        let evicted = metrics
            .lines()
            .find_map(|line| line.strip_prefix("colony_http_connections_evicted_total "))
            .unwrap_or("?");
        println!("       connections the node closed to make room (unauthenticated or past its descriptors): {evicted}");
    }
    node.shutdown().await.unwrap();
    let bounded = match mode {
        Mode::Wait => dispatch_p99,
        Mode::Work | Mode::Idle => claim_p99,
    };
    bounded <= CLAIM_P99_BOUND_MS && errors == 0
}

/// When the `index`-th of `count` agents starts: evenly over one heartbeat interval.
fn stagger(index: usize, count: usize) -> Duration {
    HEARTBEAT_EVERY.mul_f64(index as f64 / count.max(1) as f64)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn admin_token(data: &tempfile::TempDir) -> String {
    std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [role, url, leave_ms, mode] = &args[..] {
        if role == "swarm-client" {
            let mode = Mode::parse(mode).expect("work, idle or wait");
            clients::client_process(url, leave_ms.parse().unwrap(), mode);
            return;
        }
    }
    let (processes, args) = match &args[..] {
        [flag, count, rest @ ..] if flag == "clients" => (count.parse().unwrap(), rest),
        rest => (0, rest),
    };
    let mode = args
        .first()
        .and_then(|a| Mode::parse(a))
        .unwrap_or(Mode::Work);
    let args = &args[usize::from(mode != Mode::Work)..];
    let plan: Vec<(usize, u64)> = match args {
        [quick] if quick == "quick" => vec![(100, 20), (1_000, 20)],
        [n, seconds] => vec![(n.parse().unwrap(), seconds.parse().unwrap())],
        _ => vec![(100, 60), (300, 60), (1_000, 60), (3_000, 60)],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match mode {
        Mode::Idle => println!("== idle sessions on one embedded node: each agent only heartbeats, every 2 s =="),
        Mode::Work => println!("== a swarm on one embedded node: heartbeat every 2 s, a task a minute per agent, one LLM call and one publish per task; an idle agent claims every 5 s =="),
        Mode::Wait => println!("== a swarm on one embedded node: heartbeat every 2 s, a task a minute per agent, one LLM call and one publish per task; an idle agent's claim waits on the node (wait_ms) =="),
    }
    let bound = match mode {
        Mode::Wait => "p99 dispatch",
        Mode::Work | Mode::Idle => "p99 claim",
    };
    for (agents, seconds) in plan {
        let held = runtime.block_on(run(agents, seconds, mode, processes));
        if !held {
            println!(
                "the first size that breaks a bound ({bound} over {CLAIM_P99_BOUND_MS} ms, or an error): {agents} agents"
            );
            break;
        }
    }
}
