//! The bus against NATS core and Redis pub/sub on the same machine, with equivalent
//! clients: `cargo bench -p colony --bench bus [-- quick]`.
//!
//! For each server (a `colony up` child process, `nats-server`, `redis-server`, all
//! from this machine): resident memory per idle connection (15 000 of them, the
//! process file limit here being 20 000), then with 5 000 idle connections held open:
//! fan-out (one publisher, 50 subscribers), many-to-many (10 publishers, 10
//! subscribers each getting every subject), and latency p50/p99 at a fixed rate.
//! Clients: tokio-tungstenite for Colony's WebSocket protocol; for NATS and Redis,
//! their text protocols written directly over tokio TCP (no library), all in this
//! one process. Prints a table and the ratios. Needs `nats-server` and
//! `redis-server` (Debian packages of those names) on the PATH.
//!
//! `-- callgrind`: the node's instructions per delivery instead, run under valgrind's
//! callgrind on a fixed workload (`bus/callgrind.rs`), stable where wall-clock
//! figures on a shared machine are not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

#[path = "common/cpu.rs"]
mod cpu;
use cpu::{cpu_ns, sleeps};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Colony,
    Nats,
    Redis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Colony => "colony",
            Kind::Nats => "nats-server",
            Kind::Redis => "redis-server",
        }
    }
}

struct Server {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis")
}

async fn wait_for_port(addr: SocketAddr, patience: Duration) {
    let deadline = Instant::now() + patience;
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(kind: Kind) -> Server {
    start_wrapped(kind, &[], Duration::from_secs(30)).await
}

/// A server whose command line starts with `wrapper` (`valgrind ...`), given
/// `patience` to start listening.
async fn start_wrapped(kind: Kind, wrapper: &[String], patience: Duration) -> Server {
    let command = |program: &str| {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut token = String::new();
    let child = match kind {
        Kind::Colony => {
            let config = dir.path().join("config");
            std::fs::create_dir_all(&config).unwrap();
            for file in ["limits.toml", "governance.toml", "tasks.toml"] {
                std::fs::copy(shipped_config().join(file), config.join(file)).unwrap();
            }
            // The benchmark measures the bus, not the quotas: unlimited io_ops and
            // data, and queues large enough that nothing is dropped.
            let quotas = std::fs::read_to_string(shipped_config().join("quotas.toml"))
                .unwrap()
                .replace("io_ops = 100000", "io_ops = \"unlimited\"");
            std::fs::write(config.join("quotas.toml"), quotas).unwrap();
            let limits = std::fs::read_to_string(config.join("limits.toml"))
                .unwrap()
                .replace(
                    "hard = 268435456        # 256 MiB a minute",
                    "hard = \"unlimited\"",
                );
            std::fs::write(config.join("limits.toml"), limits).unwrap();
            std::fs::write(
                config.join("bus.toml"),
                "[bus]\noutbound_msgs_max = 1000000\noutbound_bytes_max = 268435456\nconnections_max = 19000\nconnections_per_principal_max = 19000\n",
            )
            .unwrap();
            // COLONY_BENCH_BINARY: another build of colony, to compare two builds in
            // alternating runs of the same benchmark.
            let binary = std::env::var("COLONY_BENCH_BINARY")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_colony").to_string());
            let child = command(&binary)
                .args(["up", "--listen", &addr.to_string()])
                .arg("--data")
                .arg(dir.path().join("data"))
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "warn")
                // mimalloc (the binary's allocator) gives freed memory back to the
                // system after a delay, and only on its next allocations: the
                // memory the node set up at its start would still be resident, and
                // be reused for the connections, hiding what they cost.
                .env("MIMALLOC_PURGE_DELAY", "0")
                .spawn()
                .expect("run the colony binary");
            let token_file = dir.path().join("data/admin.token");
            let deadline = Instant::now() + patience;
            while !token_file.exists() {
                assert!(Instant::now() < deadline, "colony did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            wait_for_port(addr, patience).await;
            token = std::fs::read_to_string(token_file)
                .unwrap()
                .trim()
                .to_string();
            child
        }
        Kind::Nats => {
            let config = dir.path().join("nats.conf");
            std::fs::write(
                &config,
                format!("listen: 127.0.0.1:{port}\nmax_pending: 268435456\nwrite_deadline: \"60s\"\nmax_connections: 64000\n"),
            )
            .unwrap();
            let child = command("nats-server")
                .arg("-c")
                .arg(&config)
                .spawn()
                .expect("nats-server is installed (apt-get install nats-server)");
            wait_for_port(addr, patience).await;
            child
        }
        Kind::Redis => {
            let child = command("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args([
                    "--client-output-buffer-limit",
                    "pubsub 0 0 0",
                    "--maxclients",
                    "19000",
                ])
                .spawn()
                .expect("redis-server is installed (apt-get install redis-server)");
            wait_for_port(addr, patience).await;
            child
        }
    };
    Server {
        kind,
        child,
        addr,
        token,
        _dir: dir,
    }
}

#[path = "bus/client.rs"]
mod client;
#[path = "common/memory.rs"]
mod memory;

use client::{Client, Publisher};
use memory::settled_rss_kib;

/// A payload of `size` bytes starting with the send time in nanoseconds since `epoch`.
fn payload(epoch: Instant, size: usize) -> String {
    let mut text = format!("{:020}", epoch.elapsed().as_nanos());
    while text.len() < size {
        text.push('x');
    }
    text
}

/// When `payload` was sent and how long it took to arrive, in nanoseconds.
fn latency_ns(epoch: Instant, payload: &str) -> (u64, u64) {
    let sent: u64 = payload[..20].parse().unwrap();
    (
        sent,
        (epoch.elapsed().as_nanos() as u64).saturating_sub(sent),
    )
}

/// Publishes `messages` payloads of `size` bytes on `subject`, flushing every 256.
async fn publish_many(
    publisher: &mut Publisher,
    subject: &str,
    messages: u64,
    epoch: Instant,
    size: usize,
) {
    for n in 0..messages {
        publisher.publish(subject, &payload(epoch, size)).await;
        if n % 256 == 255 {
            publisher.flush().await;
        }
    }
    publisher.flush().await;
}

/// Every publisher at once sends `each` messages on its own `bench.m.<index>`; the
/// publishers (kept open) once all have sent.
async fn publish_from_all(
    publishers: Vec<Publisher>,
    each: u64,
    epoch: Instant,
    size: usize,
) -> Vec<Publisher> {
    let senders: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut publisher)| {
            tokio::spawn(async move {
                publish_many(&mut publisher, &format!("bench.m.{p}"), each, epoch, size).await;
                publisher
            })
        })
        .collect();
    let mut sent = Vec::new();
    for sender in senders {
        sent.push(sender.await.unwrap());
    }
    sent
}

/// Subscribers that each expect `expected` messages; returns when all have them,
/// with the time the last one finished and every latency sample (when `sample`).
async fn run_subscribers(
    subscribers: Vec<Client>,
    expected: u64,
    epoch: Instant,
    sample: bool,
) -> Vec<tokio::task::JoinHandle<(Instant, Vec<(u64, u64)>)>> {
    subscribers
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for _ in 0..expected {
                    let payload =
                        tokio::time::timeout(Duration::from_secs(120), client.next_payload())
                            .await
                            .expect("messages keep coming");
                    if sample {
                        latencies.push(latency_ns(epoch, &payload));
                    }
                }
                (Instant::now(), latencies)
            })
        })
        .collect()
}

/// Prints the three bursts whose slowest delivery came latest, with when each was
/// sent (from the first burst): where a high p99 comes from (one late burst holds
/// 2% of the samples of a quick run).
fn slowest_bursts(kind: Kind, bursts: &[u64], samples: &[(u64, u64)]) {
    let mut worst = vec![0u64; bursts.len()];
    for &(sent, latency) in samples {
        let burst = bursts
            .partition_point(|&start| start <= sent)
            .saturating_sub(1);
        worst[burst] = worst[burst].max(latency);
    }
    let mut order: Vec<usize> = (0..bursts.len()).collect();
    order.sort_unstable_by_key(|&burst| std::cmp::Reverse(worst[burst]));
    let line: Vec<String> = order
        .iter()
        .take(3)
        .map(|&burst| {
            format!(
                "#{burst} at +{} ms: {} us",
                (bursts[burst] - bursts[0]) / 1_000_000,
                worst[burst] / 1_000
            )
        })
        .collect();
    println!(
        "{:>12}: slowest bursts (of {}): {}",
        kind.name(),
        bursts.len(),
        line.join(", ")
    );
}

/// The server's and the clients' threads' sleeps since `before`, per thousand
/// deliveries: how well each side batches (a thread that sleeps after every
/// delivery is a thousand).
fn sleeps_per_thousand(pid: u32, before: (u64, u64), deliveries: u64) -> String {
    let per = |now: u64, before: u64| (now - before) as f64 * 1000.0 / deliveries as f64;
    format!(
        "thread sleeps per 1000 deliveries: server {:.1}, clients {:.1}",
        per(sleeps(pid), before.0),
        per(sleeps(std::process::id()), before.1)
    )
}

struct Figures {
    kind: Kind,
    idle: usize,
    rss_per_idle_bytes: f64,
    fanout_msgs_per_s: f64,
    fanout_cpu_ns: f64,
    many_msgs_per_s: f64,
    many_cpu_ns: f64,
    latency_p50_us: f64,
    latency_p99_us: f64,
    latency_rate: u64,
}

async fn open_idle(server: &Server, count: usize) -> Vec<Client> {
    let server_addr = server.addr;
    let mut idle = Vec::with_capacity(count);
    let mut pending = futures_util::stream::iter(0..count)
        .map(|_| Client::connect(server, true))
        .buffer_unordered(64);
    while let Some(client) = pending.next().await {
        idle.push(client);
    }
    let _ = server_addr;
    idle
}

async fn measure(kind: Kind, quick: bool) -> Figures {
    let server = start(kind).await;
    let pid = server.child.id();
    let idle_count = 15_000;
    // Memory per idle connection: resident memory before and after 15 000 of them.
    let mut warm = Client::connect(&server, false).await;
    warm.round_trip().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = settled_rss_kib(pid).await;
    let first = idle_count / 3;
    let mut idle = open_idle(&server, first).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let middle = settled_rss_kib(pid).await;
    idle.extend(open_idle(&server, idle_count - first).await);
    for client in idle.iter_mut().rev().take(10) {
        client.round_trip().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = settled_rss_kib(pid).await;
    let rss_per_idle_bytes = (after.saturating_sub(before) * 1024) as f64 / idle_count as f64;
    // What one more idle connection costs once the server's allocator has settled
    // (the first ones also pay for free lists and arenas set up under the load of
    // opening them, and land partly in memory freed before).
    let marginal = (after.saturating_sub(middle) * 1024) as f64 / (idle_count - first) as f64;
    println!(
        "{:>12}: {idle_count} idle connections: RSS {before} KiB -> {after} KiB, {rss_per_idle_bytes:.0} bytes each ({marginal:.0} bytes each for the last {})",
        kind.name(),
        idle_count - first
    );
    // Keep 5 000 open during the workloads.
    idle.truncate(5_000);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let epoch = Instant::now();
    let size = 128;

    // Fan-out: one publisher, 50 subscribers.
    let subscribers_n = 50;
    let messages: u64 = if quick { 20_000 } else { 100_000 };
    let mut subscribers = Vec::new();
    for _ in 0..subscribers_n {
        let mut client = Client::connect(&server, false).await;
        client.subscribe(&["bench.fan".to_string()]).await;
        subscribers.push(client);
    }
    let mut publisher = Publisher::connect(&server).await;
    let handles = run_subscribers(subscribers, messages, epoch, false).await;
    let (cpu_before, clients_before) = (cpu_ns(pid), cpu_ns(std::process::id()));
    let sleeps_before = (sleeps(pid), sleeps(std::process::id()));
    let started = Instant::now();
    publish_many(&mut publisher, "bench.fan", messages, epoch, size).await;
    let mut last = started;
    for handle in handles {
        last = last.max(handle.await.unwrap().0);
    }
    let fanout_msgs_per_s = (messages * subscribers_n) as f64 / (last - started).as_secs_f64();
    let fanout_cpu_ns = (cpu_ns(pid) - cpu_before) as f64 / (messages * subscribers_n) as f64;
    let clients_ns =
        (cpu_ns(std::process::id()) - clients_before) as f64 / (messages * subscribers_n) as f64;
    println!(
        "{:>12}: fan-out 1 -> {subscribers_n}, {messages} messages of {size} B: {fanout_msgs_per_s:.0} deliveries/s, server CPU {fanout_cpu_ns:.0} ns per delivery (the clients' {clients_ns:.0} ns), {}",
        kind.name(),
        sleeps_per_thousand(pid, sleeps_before, messages * subscribers_n)
    );

    // Many to many: 10 publishers on their own subjects, 10 subscribers to all.
    let publishers_n = 10u64;
    let per_publisher = messages / publishers_n;
    let subjects: Vec<String> = (0..publishers_n).map(|p| format!("bench.m.{p}")).collect();
    let mut subscribers = Vec::new();
    for _ in 0..10 {
        let mut client = Client::connect(&server, false).await;
        if kind == Kind::Redis {
            client.subscribe(&subjects).await;
        } else {
            client.subscribe(&["bench.m.*".to_string()]).await;
        }
        subscribers.push(client);
    }
    let mut publishers = Vec::new();
    for _ in 0..publishers_n {
        publishers.push(Publisher::connect(&server).await);
    }
    let handles = run_subscribers(subscribers, per_publisher * publishers_n, epoch, false).await;
    let (cpu_before, clients_before) = (cpu_ns(pid), cpu_ns(std::process::id()));
    let sleeps_before = (sleeps(pid), sleeps(std::process::id()));
    let started = Instant::now();
    let keep = publish_from_all(publishers, per_publisher, epoch, size).await;
    let mut last = started;
    for handle in handles {
        last = last.max(handle.await.unwrap().0);
    }
    let many_msgs_per_s =
        (per_publisher * publishers_n * 10) as f64 / (last - started).as_secs_f64();
    let many_cpu_ns =
        (cpu_ns(pid) - cpu_before) as f64 / (per_publisher * publishers_n * 10) as f64;
    let clients_ns = (cpu_ns(std::process::id()) - clients_before) as f64
        / (per_publisher * publishers_n * 10) as f64;
    println!(
        "{:>12}: many-to-many 10 x 10, {} messages: {many_msgs_per_s:.0} deliveries/s, server CPU {many_cpu_ns:.0} ns per delivery (the clients' {clients_ns:.0} ns), {}",
        kind.name(),
        per_publisher * publishers_n,
        sleeps_per_thousand(pid, sleeps_before, per_publisher * publishers_n * 10)
    );
    drop(keep);

    // Latency at a fixed rate: one publisher, 50 subscribers.
    let rate: u64 = 5_000;
    let seconds = if quick { 1 } else { 3 };
    let total = rate * seconds;
    let mut subscribers = Vec::new();
    for _ in 0..subscribers_n {
        let mut client = Client::connect(&server, false).await;
        client.subscribe(&["bench.lat".to_string()]).await;
        subscribers.push(client);
    }
    let mut publisher = Publisher::connect(&server).await;
    let handles = run_subscribers(subscribers, total, epoch, true).await;
    let tick = Duration::from_secs(1) / (rate / 100) as u32;
    let mut interval = tokio::time::interval(tick);
    let mut sent = 0;
    let mut bursts = Vec::new();
    while sent < total {
        interval.tick().await;
        bursts.push(epoch.elapsed().as_nanos() as u64);
        for _ in 0..100 {
            publisher.publish("bench.lat", &payload(epoch, size)).await;
            sent += 1;
        }
        publisher.flush().await;
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.unwrap().1);
    }
    slowest_bursts(kind, &bursts, &latencies);
    let mut latencies: Vec<u64> = latencies.into_iter().map(|(_, latency)| latency).collect();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] as f64 / 1_000.0
    };
    let (p50, p99) = (at(0.50), at(0.99));
    println!(
        "{:>12}: latency at {rate} msg/s x {subscribers_n} subscribers (bursts of 100 every {tick:?}): p50 {p50:.0} us, p99 {p99:.0} us",
        kind.name()
    );
    drop(idle);
    drop(warm);
    Figures {
        kind,
        idle: idle_count,
        rss_per_idle_bytes,
        fanout_msgs_per_s,
        fanout_cpu_ns,
        many_msgs_per_s,
        many_cpu_ns,
        latency_p50_us: p50,
        latency_p99_us: p99,
        latency_rate: rate,
    }
}

#[path = "bus/callgrind.rs"]
mod callgrind;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::args().any(|a| a == "callgrind") {
        runtime.block_on(callgrind::run());
        return;
    }
    let figures: Vec<Figures> = runtime.block_on(async {
        let mut figures = Vec::new();
        let only: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| ["colony", "nats", "redis"].contains(&a.as_str()))
            .collect();
        for kind in [Kind::Colony, Kind::Nats, Kind::Redis] {
            if !only.is_empty() && !only.iter().any(|o| kind.name().starts_with(o.as_str())) {
                continue;
            }
            figures.push(measure(kind, quick).await);
        }
        figures
    });
    println!();
    println!("| server | bytes per idle connection ({} open) | fan-out 1x50 deliveries/s (server ns/delivery) | many-to-many 10x10 deliveries/s (server ns/delivery) | latency p50 / p99 at {} msg/s x 50 |", figures[0].idle, figures[0].latency_rate);
    println!("|---|---|---|---|---|");
    for f in &figures {
        println!(
            "| {} | {:.0} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.0} us / {:.0} us |",
            f.kind.name(),
            f.rss_per_idle_bytes,
            f.fanout_msgs_per_s,
            f.fanout_cpu_ns,
            f.many_msgs_per_s,
            f.many_cpu_ns,
            f.latency_p50_us,
            f.latency_p99_us
        );
    }
    let Some(colony) = figures.iter().find(|f| f.kind == Kind::Colony) else {
        return;
    };
    for peer in figures.iter().filter(|f| f.kind != Kind::Colony) {
        println!(
            "colony / {}: memory per idle connection {:.2}x, fan-out {:.2}x (server CPU per delivery {:.2}x), many-to-many {:.2}x (CPU {:.2}x), p99 latency {:.2}x",
            peer.kind.name(),
            colony.rss_per_idle_bytes / peer.rss_per_idle_bytes.max(1.0),
            colony.fanout_msgs_per_s / peer.fanout_msgs_per_s,
            colony.fanout_cpu_ns / peer.fanout_cpu_ns,
            colony.many_msgs_per_s / peer.many_msgs_per_s,
            colony.many_cpu_ns / peer.many_cpu_ns,
            colony.latency_p99_us / peer.latency_p99_us,
        );
    }
}
