//! Gateway overhead: the same chat completion sent at a fixed rate straight to the
//! mock upstream (`colony mock-llm`), through Colony's gateway (`colony up`), and
//! through the LiteLLM proxy (PyPI `litellm[proxy]`, when its `litellm` command is
//! on the PATH), all separate processes on loopback. Direct and through Colony
//! alternate second by second (same machine conditions for both). Prints p50/p99 of
//! each, the latency each proxy adds, and the ratio.
//!
//! With `traced`, a second Colony node exports every call's spans over OTLP/HTTP to a
//! sink in this process (which reads and acknowledges each export), and joins the
//! alternation: what tracing costs, side by side.
//!
//! Run: `cargo bench -p colony --bench gateway [-- quick] [rate=N] [no-litellm] [traced]`.
//! LiteLLM cannot keep up with 1 000 requests a second on two cores (its queue, and
//! so the run, grows long): compare it at `rate=100` too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn colony() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_colony"));
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

async fn wait_until_ok(url: &str, token: Option<&str>) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Ok(response) = request.send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Figures {
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    sent: u64,
}

/// One place to send the benchmark's chat completion to, and what it measured.
struct Target {
    name: &'static str,
    url: String,
    token: String,
    client: reqwest::Client,
    latencies_ns: Vec<u64>,
    errors: u64,
    sent: u64,
}

fn body() -> serde_json::Value {
    json!({"model": "mock-mini", "messages": [{"role": "user", "content": "How far is the moon?"}], "max_tokens": 16})
}

impl Target {
    /// A target with warm connections.
    async fn new(name: &'static str, url: String, token: String) -> Target {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        for _ in 0..50 {
            let _ = client
                .post(&url)
                .bearer_auth(&token)
                .json(&body())
                .send()
                .await
                .map(|r| r.bytes());
        }
        Target {
            name,
            url,
            token,
            client,
            latencies_ns: Vec::new(),
            errors: 0,
            sent: 0,
        }
    }

    /// Sends `rate` requests a second for `seconds` (open loop), measures each, and
    /// waits for the last answer.
    async fn load(&mut self, rate: u64, seconds: u64) {
        let total = rate * seconds;
        let period = Duration::from_secs(1) / rate as u32;
        let start = tokio::time::Instant::now();
        let mut handles = Vec::with_capacity(total as usize);
        for n in 0..total {
            tokio::time::sleep_until(start + period * n as u32).await;
            let (client, url, token) = (self.client.clone(), self.url.clone(), self.token.clone());
            handles.push(tokio::spawn(async move {
                let sent = Instant::now();
                let ok = match client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body())
                    .send()
                    .await
                {
                    Ok(response) => {
                        response.status().is_success() && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                (sent.elapsed(), ok)
            }));
        }
        self.sent += total;
        for handle in handles {
            let (latency, ok) = handle.await.unwrap();
            if ok {
                self.latencies_ns.push(latency.as_nanos() as u64);
            } else {
                self.errors += 1;
            }
        }
    }

    fn figures(&mut self, rate: u64) -> Figures {
        let latencies = &mut self.latencies_ns;
        latencies.sort_unstable();
        let at = |q: f64| {
            if latencies.is_empty() {
                f64::NAN
            } else {
                latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] as f64
                    / 1_000.0
            }
        };
        let figures = Figures {
            p50_us: at(0.5),
            p99_us: at(0.99),
            errors: self.errors,
            sent: self.sent,
        };
        println!(
            "{:>18}: {} requests at {rate}/s: p50 {:.0} us, p99 {:.0} us, {} errors",
            self.name, self.sent, figures.p50_us, figures.p99_us, self.errors
        );
        figures
    }
}

/// An OTLP/HTTP sink: reads each export whole and answers 200, as a collector does;
/// counts the exports and their bytes.
async fn otlp_sink() -> (
    SocketAddr,
    std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let seen = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    // One request: its head, then content-length bytes of body.
                    let head_end = loop {
                        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < head_end + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buffer.drain(..head_end + length);
                    seen[0].fetch_add(1, Ordering::Relaxed);
                    seen[1].fetch_add(length as u64, Ordering::Relaxed);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, counts)
}

/// Starts `colony up` over `dir` (its data in `dir/data`) with `env`; its base URL
/// and admin token once it answers.
async fn start_colony(dir: &Path, config: &Path, env: &[(&str, String)]) -> (Proc, String, String) {
    let node_addr = free_addr();
    let node = Proc(
        colony()
            .args(["up", "--listen", &node_addr.to_string()])
            .arg("--data")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .spawn()
            .unwrap(),
    );
    let token_file = dir.join("data/admin.token");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !token_file.exists() {
        assert!(Instant::now() < deadline, "colony did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let base = format!("http://{node_addr}");
    wait_until_ok(&format!("{base}/v1/models"), Some(&token)).await;
    (node, base, token)
}

fn args_skip_litellm() -> bool {
    std::env::args().any(|a| a == "no-litellm")
}

fn has_litellm() -> bool {
    Command::new("litellm")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn write_colony_config(dir: &Path, upstream: &str) -> PathBuf {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    for file in [
        "limits.toml",
        "quotas.toml",
        "governance.toml",
        "tasks.toml",
    ] {
        std::fs::copy(shipped.join(file), config.join(file)).unwrap();
    }
    // Budgets, limits and queues sized so that nothing but the path itself is measured.
    let quotas: String = std::fs::read_to_string(config.join("quotas.toml"))
        .unwrap()
        .lines()
        .map(|line| {
            if (line.starts_with("io_ops =") || line.starts_with("llm_budget_usd ="))
                && !line.contains("\"1m\"")
            {
                format!("{} = \"unlimited\"\n", line.split(' ').next().unwrap())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(config.join("quotas.toml"), quotas).unwrap();
    let limits = std::fs::read_to_string(config.join("limits.toml"))
        .unwrap()
        .replace("soft = \"4.00\"", "soft = \"unlimited\"")
        .replace("hard = \"5.00\"", "hard = \"unlimited\"");
    std::fs::write(config.join("limits.toml"), limits).unwrap();
    std::fs::write(
        config.join("providers.toml"),
        format!(
            "[gateway]\ndefault_model = \"mock-mini\"\ntokens_per_minute_per_principal = \"unlimited\"\nconcurrent_per_principal = 100000\n\n\
             [[upstreams]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\napi_key_envs = []\n\n\
             [[models]]\nname = \"mock-mini\"\nupstream = \"mock\"\ninput_usd_per_million = \"0.15\"\noutput_usd_per_million = \"0.60\"\n"
        ),
    )
    .unwrap();
    config
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let rate: u64 = args
        .iter()
        .find_map(|a| a.strip_prefix("rate="))
        .map_or(1_000, |r| r.parse().unwrap());
    let seconds = if quick { 2 } else { 10 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mock_addr = free_addr();
        let _mock = Proc(colony().args(["mock-llm", "--listen", &mock_addr.to_string()]).spawn().unwrap());
        let upstream = format!("http://{mock_addr}/v1");
        wait_until_ok(&format!("{upstream}/models"), None).await;

        let config = write_colony_config(dir.path(), &upstream);
        let (_node, base, token) = start_colony(dir.path(), &config, &[]).await;

        // Direct and through Colony alternate second by second, so that both see the
        // same machine (a shared 2-core box drifts from minute to minute).
        let mut direct = Target::new("mock, direct", format!("{upstream}/chat/completions"), "good".into()).await;
        let mut through = Target::new("colony gateway", format!("{base}/v1/chat/completions"), token).await;
        let mut traced = None;
        if args.iter().any(|a| a == "traced") {
            let (sink, counts) = otlp_sink().await;
            let traced_dir = dir.path().join("traced");
            std::fs::create_dir_all(&traced_dir).unwrap();
            let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{sink}"))];
            let (node, base, token) = start_colony(&traced_dir, &config, &env).await;
            let target = Target::new("colony, traced", format!("{base}/v1/chat/completions"), token).await;
            traced = Some((node, target, counts));
        }
        for _ in 0..seconds {
            direct.load(rate, 1).await;
            through.load(rate, 1).await;
            if let Some((_, target, _)) = traced.as_mut() {
                target.load(rate, 1).await;
            }
        }
        let direct = direct.figures(rate);
        let colony = through.figures(rate);
        let added = |f: &Figures| (f.p50_us - direct.p50_us, f.p99_us - direct.p99_us);
        let (c50, c99) = added(&colony);
        println!("colony gateway adds: p50 {c50:.0} us, p99 {c99:.0} us ({} of {} requests failed)", colony.errors, colony.sent);
        if let Some((node, mut target, counts)) = traced {
            let figures = target.figures(rate);
            let (t50, t99) = added(&figures);
            println!("colony, traced adds: p50 {t50:.0} us, p99 {t99:.0} us ({} of {} requests failed)", figures.errors, figures.sent);
            drop(node);
            let [exports, bytes] = &*counts;
            println!(
                "spans exported so far: {} OTLP requests, {} KiB",
                exports.load(std::sync::atomic::Ordering::Relaxed),
                bytes.load(std::sync::atomic::Ordering::Relaxed) / 1024
            );
        }

        if args_skip_litellm() {
            println!("litellm skipped (no-litellm)");
        } else if has_litellm() {
            let litellm_addr = free_addr();
            let litellm_config = dir.path().join("litellm.yaml");
            std::fs::write(
                &litellm_config,
                format!(
                    "model_list:\n  - model_name: mock-mini\n    litellm_params:\n      model: openai/mock-mini\n      api_base: {upstream}\n      api_key: good\n"
                ),
            )
            .unwrap();
            // LiteLLM refuses to start without a master key; the client presents it.
            let master_key = "sk-6f1d2c7a9b8e4f3a0c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b";
            let _litellm = Proc(
                Command::new("litellm")
                    .env("LITELLM_MASTER_KEY", master_key)
                    .arg("--config")
                    .arg(&litellm_config)
                    .args(["--host", "127.0.0.1", "--port", &litellm_addr.port().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            wait_until_ok(&format!("http://{litellm_addr}/health/liveliness"), None).await;
            // LiteLLM's added latency is far above the machine's drift: one run.
            let mut litellm = Target::new("litellm proxy", format!("http://{litellm_addr}/v1/chat/completions"), master_key.into()).await;
            litellm.load(rate, seconds).await;
            let litellm = litellm.figures(rate);
            let (l50, l99) = added(&litellm);
            println!("litellm proxy adds: p50 {l50:.0} us, p99 {l99:.0} us ({} of {} requests failed)", litellm.errors, litellm.sent);
            println!(
                "litellm's added latency / colony's: p50 {:.1}x, p99 {:.1}x",
                l50 / c50.max(1.0),
                l99 / c99.max(1.0)
            );
        } else {
            println!("litellm is not installed (pip install 'litellm[proxy]'): no side-by-side figure");
        }
    });
}
