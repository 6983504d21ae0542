//! Cluster mode against the embedded node, side by side. Prints figures; asserts
//! nothing.
//!
//! 1. Durable commands over HTTP (reserve+commit pairs, 64 clients spread over the
//!    nodes) and claims (claim then complete, 64 workers): one node embedded, one
//!    node on a three-server JetStream cluster, three nodes on it.
//! 2. The bus across nodes: a publisher on one node, 50 subscribers on the other
//!    two, against the same fan-out through the three `nats-server`s alone.
//!
//! Everything (nodes, clients, the three `nats-server` processes) shares this
//! machine's cores. Run: `cargo bench -p colony --bench cluster` (`-- quick` for a
//! short run; `-- any-server` lets each node keep the server its client picked
//! instead of moving to the command stream's leader). The three servers share the
//! machine's cores, so each runs its Go runtime on its share of them (`GOMAXPROCS`,
//! at least 1; `-- servers-on-all-cores` for the Go default, every core each).

use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_node::{Node, NodeConfig};
use serde_json::json;

#[path = "common/cpu.rs"]
mod cpu;
#[path = "cluster/http.rs"]
mod http;
#[path = "cluster/measure.rs"]
mod measure;
#[allow(dead_code)]
#[path = "../tests/common/nats.rs"]
mod nats;
#[path = "../../node/tests/common/tools.rs"]
mod tools;

use measure::{ed25519_costs, Cpu, Traffic};
use nats::NatsCluster;

/// The allocator the `colony` binary ships with (`crates/colony/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIMITS: &str = "[limits.concurrent_api_requests]\nsoft = 4096\nhard = 8192\n\
    [limits.ai_accounts]\nsoft = 1000\nhard = 2000\n[limits.task_queue_depth]\nhard = \"unlimited\"\n";
const QUOTAS: &str = "[ledger]\nreservations_per_principal_max = 100000\n\
    [defaults.human]\nllm_budget_usd = \"unlimited\"\nio_ops = \"unlimited\"\n\
    [defaults.ai]\nio_ops = \"unlimited\"\n";

struct Setup {
    nodes: Vec<Node>,
    bases: Vec<String>,
    token: String,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start(nodes: usize, nats: Option<&NatsCluster>, prefer_leader: bool) -> Setup {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("limits.toml"), LIMITS).unwrap();
    std::fs::write(config.path().join("quotas.toml"), QUOTAS).unwrap();
    std::fs::write(
        config.path().join("governance.toml"),
        "[governance]\nreview_period = \"24h\"\n",
    )
    .unwrap();
    let mut setup = Setup {
        nodes: Vec::new(),
        bases: Vec::new(),
        token: String::new(),
        _dirs: Vec::new(),
    };
    for index in 0..nodes {
        let data = tempfile::tempdir().unwrap();
        let cluster = nats.map(|nats| {
            let mut cluster =
                colony_cluster::ClusterConfig::new(&[nats.urls()], &format!("bench-{index}"))
                    .unwrap();
            cluster.prefer_leader = prefer_leader;
            cluster
        });
        let node = Node::start(NodeConfig {
            data_dir: data.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            config_dir: config.path().to_path_buf(),
            config_dir_required: true,
            cluster,
            ..NodeConfig::default()
        })
        .await
        .unwrap();
        if index == 0 {
            setup.token = std::fs::read_to_string(data.path().join("admin.token"))
                .unwrap()
                .trim()
                .to_string();
        }
        setup.bases.push(format!("http://{}", node.local_addr()));
        if index > 0 {
            // Only admitted nodes write the cluster's log (issue 31).
            let admitted = client()
                .post(format!("{}/v1/cluster/nodes", setup.bases[0]))
                .bearer_auth(&setup.token)
                .json(&json!({"name": format!("bench-{index}"), "public_key": node.public_key(), "justification": "a node of the benchmark's cluster"}))
                .send()
                .await
                .unwrap();
            assert!(admitted.status().is_success(), "admitting bench-{index}");
        }
        setup.nodes.push(node);
        setup._dirs.push(data);
    }
    setup._dirs.push(config);
    setup
}

impl Setup {
    /// `GET {base}{path}` on a node, as the admin.
    async fn get(&self, base: &str, path: &str) -> reqwest::Response {
        client()
            .get(format!("{base}{path}"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// Over all nodes: commands signed per signature, and other nodes' commands
    /// checked per signature checked (from `/metrics`); `None` on an embedded node.
    async fn signing(&self) -> Option<(f64, f64)> {
        let mut sums = [0u64; 4];
        for base in &self.bases {
            let text = self.get(base, "/metrics").await.text().await.unwrap();
            for (sum, name) in sums.iter_mut().zip([
                "colony_cluster_signatures_total ",
                "colony_cluster_signed_commands_total ",
                "colony_cluster_signature_checks_total ",
                "colony_cluster_checked_commands_total ",
            ]) {
                *sum += text
                    .lines()
                    .find_map(|line| line.strip_prefix(name))?
                    .parse::<u64>()
                    .unwrap();
            }
        }
        let per = |commands: u64, signatures: u64| commands as f64 / signatures.max(1) as f64;
        Some((per(sums[1], sums[0]), per(sums[3], sums[2])))
    }

    /// How many nodes are connected to the server leading the command stream, how
    /// many have their consumer of it there too, of how many (from `GET
    /// /v1/cluster`); `None` on an embedded node.
    async fn on_leader(&self) -> Option<(usize, usize, usize)> {
        let (mut on, mut following) = (0, 0);
        for base in &self.bases {
            let view: colony_api::cluster::ClusterView =
                self.get(base, "/v1/cluster").await.json().await.unwrap();
            let leader = view.stream?.leader;
            on += usize::from(view.server.is_some() && view.server == leader);
            following += usize::from(view.follows_from.is_some() && view.follows_from == leader);
        }
        Some((on, following, self.bases.len()))
    }

    async fn stop(self) {
        for node in self.nodes {
            node.shutdown().await.unwrap();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// Reserve+commit pairs for `seconds` from `clients` clients spread over the nodes,
/// each on its own kept-alive connection: (durable commands per second, p50 ms, p99
/// ms).
async fn durable(setup: &Setup, clients: usize, seconds: u64) -> (f64, f64, f64) {
    #[derive(serde::Deserialize)]
    struct Reserved {
        reservation: u64,
    }
    const RESERVE: &[u8] =
        br#"{"resource":"llm_budget_usd","amount":1000,"justification":"bench"}"#;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for index in 0..clients {
        let base = setup.bases[index % setup.bases.len()].clone();
        let (token, latencies) = (setup.token.clone(), Arc::clone(&latencies));
        tasks.push(tokio::spawn(async move {
            let mut connection = http::Connection::open(&base, &token).await;
            let mut mine = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let answer = connection.post("/v1/ledger/reserve", RESERVE).await;
                assert!(
                    (200..300).contains(&answer.status),
                    "{}",
                    String::from_utf8_lossy(&answer.body)
                );
                let reserved: Reserved = serde_json::from_slice(&answer.body).unwrap();
                mine.push(started.elapsed());
                let started = Instant::now();
                let commit = format!(r#"{{"reservation":{},"actual":700}}"#, reserved.reservation);
                let answer = connection
                    .post("/v1/ledger/commit", commit.as_bytes())
                    .await;
                assert!(
                    (200..300).contains(&answer.status),
                    "{}",
                    String::from_utf8_lossy(&answer.body)
                );
                mine.push(started.elapsed());
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e3;
    (
        latencies.len() as f64 / seconds as f64,
        percentile(0.5),
        percentile(0.99),
    )
}

/// Posts `tasks` tasks, then 64 workers spread over the nodes claim and complete
/// them: claims per second.
async fn claims(setup: &Setup, tasks: usize) -> f64 {
    let http = client();
    let mut posts = Vec::new();
    for index in 0..tasks {
        let base = setup.bases[index % setup.bases.len()].clone();
        let (http, token) = (http.clone(), setup.token.clone());
        posts.push(tokio::spawn(async move {
            let response = http
                .post(format!("{base}/v1/tasks"))
                .bearer_auth(&token)
                .json(&json!({"title": format!("job {index}"), "justification": "bench"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        }));
        if posts.len() >= 256 {
            for post in posts.drain(..) {
                post.await.unwrap();
            }
        }
    }
    for post in posts {
        post.await.unwrap();
    }
    let mut workers = Vec::new();
    for index in 0..64 {
        let created: serde_json::Value = http
            .post(format!("{}/v1/principals", setup.bases[0]))
            .bearer_auth(&setup.token)
            .json(&json!({"name": format!("worker {index}-{}", setup.token.len()), "kind": "ai", "justification": "bench"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        workers.push(created["token"].as_str().unwrap().to_string());
    }
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for (index, token) in workers.into_iter().enumerate() {
        let base = setup.bases[index % setup.bases.len()].clone();
        let (http, done) = (http.clone(), Arc::clone(&done));
        clients.push(tokio::spawn(async move {
            loop {
                let response = http
                    .post(format!("{base}/v1/tasks/claim"))
                    .bearer_auth(&token)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                if response.status() == reqwest::StatusCode::NO_CONTENT {
                    return; // the board is empty
                }
                assert!(
                    response.status().is_success(),
                    "{}",
                    response.text().await.unwrap()
                );
                let claim: serde_json::Value = response.json().await.unwrap();
                let address = claim["task"]["address"].as_str().unwrap();
                let response = http
                    .post(format!("{base}/v1/tasks/{address}/complete"))
                    .bearer_auth(&token)
                    .json(&json!({"lease_token": claim["lease"]["token"], "result": "ok"}))
                    .send()
                    .await
                    .unwrap();
                assert!(
                    response.status().is_success(),
                    "{}",
                    response.text().await.unwrap()
                );
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    done.load(std::sync::atomic::Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let seconds = if quick { 3 } else { 10 };
    let tasks = if quick { 2_000 } else { 10_000 };
    // `-- only N`: only the setups of N nodes (for a profiler).
    let only: Option<usize> = std::env::args()
        .skip_while(|a| a != "only")
        .nth(1)
        .and_then(|n| n.parse().ok());
    // `-- durable-only`: the durable commands alone (no claims, no fan-out), so that
    // a whole-process counter (`perf stat`) measures that workload.
    let durable_only = std::env::args().any(|a| a == "durable-only");
    let prefer_leader = !std::env::args().any(|a| a == "any-server");
    // `-- servers-on-all-cores`: every nats-server's Go runtime schedules over all
    // of the machine's cores (its default), as if each had the machine to itself.
    let all_cores = std::env::args().any(|a| a == "servers-on-all-cores");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("== durable commands (reserve+commit, 64 clients) and claims (64 workers) ==");
        let nats = if all_cores {
            println!("(each nats-server's Go runtime on all of the machine's cores)");
            NatsCluster::start(3)
        } else {
            println!(
                "(each nats-server's Go runtime on its share of the machine's cores: GOMAXPROCS={})",
                NatsCluster::share_of_cores(3)
            );
            NatsCluster::start_sharing_cores(3)
        };
        // Each setup's durable commands/s and claims/s.
        let mut rates: Vec<(usize, bool, f64, f64)> = Vec::new();
        for (label, nodes, on_nats) in [
            ("1 node, embedded", 1, false),
            ("1 node on NATS (3 servers, R3)", 1, true),
            ("3 nodes on NATS (3 servers, R3)", 3, true),
        ] {
            if only.is_some_and(|only| only != nodes) {
                continue;
            }
            let setup = start(nodes, on_nats.then_some(&nats), prefer_leader).await;
            let cpu_before = Cpu::read(&nats);
            let traffic_before = Traffic::read(&nats).await;
            let threads_before = cpu::cpu_ns_by_name(std::process::id());
            let (rate, p50, p99) = durable(&setup, 64, seconds).await;
            let cpu = Cpu::read(&nats).since(&cpu_before);
            let traffic = Traffic::read(&nats).await.since(&traffic_before);
            let threads = cpu::cpu_ns_by_name(std::process::id());
            let claimed = if durable_only {
                0.0
            } else {
                claims(&setup, tasks).await
            };
            rates.push((nodes, on_nats, rate, claimed));
            println!(
                "{label:<34} {rate:>7.0} durable commands/s (p50 {p50:.2} ms, p99 {p99:.2} ms), {claimed:>6.0} claims/s"
            );
            let commands = rate * seconds as f64;
            let nats_ns = if on_nats { cpu.nats_ns } else { 0 };
            // How much of the machine the run used: near all of it, the setup is
            // bound by its CPU; well below, by waiting (an fsync, a round trip).
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let busy = (cpu.own_ns + nats_ns) as f64 / (seconds as f64 * 1e9 * cores);
            println!(
                "{:<34} CPU per durable command: {:.0} us in the benchmark's process (nodes and clients), {:.0} us in the nats-servers; the cores {:.0}% busy",
                "",
                cpu.own_ns as f64 / commands / 1e3,
                nats_ns as f64 / commands / 1e3,
                busy * 100.0,
            );
            let by_thread: Vec<String> = threads
                .iter()
                .map(|(name, ns)| (name, ns - threads_before.get(name).copied().unwrap_or(0)))
                .filter(|(_, ns)| *ns > 0)
                .map(|(name, ns)| format!("{name} {:.0}", ns as f64 / commands / 1e3))
                .collect();
            println!("{:<34} by thread, us per command: {}", "", by_thread.join(", "));
            if on_nats {
                if let Some((on, following, of)) = setup.on_leader().await {
                    println!("{:<34} nodes on the server leading the command stream: {on} of {of}, their consumer of it there: {following} of {of}", "");
                }
                println!(
                    "{:<34} through the nats-servers per durable command: {:.2} messages in, {:.2} out, {:.0} bytes in, {:.0} out",
                    "",
                    traffic.in_msgs as f64 / commands,
                    traffic.out_msgs as f64 / commands,
                    traffic.in_bytes as f64 / commands,
                    traffic.out_bytes as f64 / commands,
                );
            }
            if let Some((signed, checked)) = setup.signing().await {
                // What that costs: one signature made per `signed` commands, and each
                // of the other nodes checks one per `checked`, at this box's price of
                // a signature and of a check.
                let (sign_us, verify_us) = ed25519_costs();
                let work = sign_us / signed
                    + (nodes - 1) as f64 * if checked > 0.0 { verify_us / checked } else { 0.0 };
                let budget = 2e6 / rate;
                println!(
                    "{:<34} {signed:.1} commands per signature made, {checked:.1} per signature checked: \
                     {work:.1} us of signing work per command ({sign_us:.0} us a signature, {verify_us:.0} us a check), \
                     {:.1}% of the two cores' {budget:.0} us per command at this rate",
                    "",
                    100.0 * work / budget
                );
            }
            if nodes == 3 && !durable_only {
                let messages = if quick { 2_000 } else { 20_000 };
                println!("== fan-out across nodes: 1 publisher, {FANOUT_SUBSCRIBERS} subscribers on the other nodes, {messages} messages of 128 bytes ==");
                let (rate, share) =
                    colony_fanout(&setup.bases[0], &setup.bases[1..], &setup.token, messages).await;
                println!("colony, 3 nodes on NATS             {rate:>9.0} deliveries/s ({:.1}% delivered)", share * 100.0);
                let (rate, share) = nats_fanout(&nats, messages).await;
                println!("nats-server alone, 3 servers        {rate:>9.0} deliveries/s ({:.1}% delivered)", share * 100.0);
            }
            setup.stop().await;
            if on_nats {
                // The next setup starts from an empty stream.
                purge(&nats).await;
            }
        }
        // Issue 30's yardstick: three nodes against one embedded node, same run.
        let of = |nodes: usize, on_nats: bool| {
            rates
                .iter()
                .find(|(n, nats, _, _)| *n == nodes && *nats == on_nats)
                .map(|(_, _, rate, claimed)| (*rate, *claimed))
        };
        if let (Some(three), Some(one)) = (of(3, true), of(1, false)) {
            println!(
                "3 nodes / 1 node embedded: {:.2}x durable commands/s, {:.2}x claims/s",
                three.0 / one.0,
                if one.1 > 0.0 { three.1 / one.1 } else { 0.0 }
            );
        }
    });
}

/// Messages published in the fan-out, and their subscribers.
const FANOUT_SUBSCRIBERS: usize = 50;
const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A publisher on `publisher`, 50 subscribers spread over `subscribers`, over the
/// bus's WebSocket: deliveries per second, and the share delivered.
async fn colony_fanout(
    publisher: &str,
    subscribers: &[String],
    token: &str,
    messages: usize,
) -> (f64, f64) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let connect = |base: &str| {
        let mut request = format!("{}/v1/bus", base.replacen("http", "ws", 1))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        async move { tokio_tungstenite::connect_async(request).await.unwrap().0 }
    };
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for index in 0..FANOUT_SUBSCRIBERS {
        let mut ws = connect(&subscribers[index % subscribers.len()]).await;
        ws.send(Message::text(
            r#"{"op":"sub","sid":"f","subject":"fan.>","id":1}"#,
        ))
        .await
        .unwrap();
        // The subscription's answer.
        while let Some(Ok(frame)) = ws.next().await {
            if frame.to_text().unwrap_or("").contains("\"ok\"") {
                break;
            }
        }
        let received = Arc::clone(&received);
        readers.push(tokio::spawn(async move {
            let mut mine = 0;
            while mine < messages {
                match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                    Ok(Some(Ok(frame))) if frame.to_text().unwrap_or("").contains("\"msg\"") => {
                        mine += 1;
                        received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
        }));
    }
    let mut ws = connect(publisher).await;
    let started = Instant::now();
    for n in 0..messages {
        let frame = format!(
            r#"{{"op":"pub","subject":"fan.{}","data":"{PAYLOAD}"}}"#,
            n % 16
        );
        ws.feed(Message::text(frame)).await.unwrap();
    }
    ws.flush().await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    (
        got as f64 / elapsed,
        got as f64 / (messages * FANOUT_SUBSCRIBERS) as f64,
    )
}

/// The same fan-out through the NATS cluster alone (NATS's text protocol): a
/// publisher on the first server, subscribers on the others.
async fn nats_fanout(nats: &NatsCluster, messages: usize) -> (f64, f64) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for index in 0..FANOUT_SUBSCRIBERS {
        let port = nats.servers[1 + index % (nats.servers.len() - 1)].port;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::with_capacity(64 << 10, read);
        write
            .write_all(b"CONNECT {\"verbose\":false}\r\nSUB fan.> 1\r\nPING\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            read.read_line(&mut line).await.unwrap();
            if line.starts_with("PONG") {
                break;
            }
        }
        let received = Arc::clone(&received);
        readers.push(tokio::spawn(async move {
            let _write = write;
            let mut mine = 0;
            let mut line = String::new();
            let mut payload = vec![0u8; PAYLOAD.len() + 2];
            while mine < messages {
                line.clear();
                match tokio::time::timeout(Duration::from_secs(5), read.read_line(&mut line)).await
                {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
                if line.starts_with("MSG") {
                    read.read_exact(&mut payload).await.unwrap();
                    mine += 1;
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    // Let the subscriptions reach the first server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", nats.servers[0].port))
        .await
        .unwrap();
    let mut write = tokio::io::BufWriter::with_capacity(64 << 10, stream);
    write
        .write_all(b"CONNECT {\"verbose\":false}\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    for n in 0..messages {
        let frame = format!("PUB fan.{} {}\r\n{PAYLOAD}\r\n", n % 16, PAYLOAD.len());
        write.write_all(frame.as_bytes()).await.unwrap();
    }
    write.flush().await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    (
        got as f64 / elapsed,
        got as f64 / (messages * FANOUT_SUBSCRIBERS) as f64,
    )
}

/// Deletes the command stream, so that the next setup installs genesis anew.
async fn purge(nats: &NatsCluster) {
    let client = async_nats::connect(nats.servers[0].url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    jetstream.delete_stream("COLONY_COMMANDS").await.unwrap();
}
