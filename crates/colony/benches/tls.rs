//! What TLS costs a node: new connections per second (TCP + TLS handshake + one
//! request) against plain TCP + one request; the latency of a gateway call (the
//! offline `colony-scripted` model) over a kept-alive HTTPS connection against plain
//! HTTP; and the node's memory per idle `wss://` bus connection against `ws://`.
//! The node runs as a separate `colony up` process (its RSS is what is measured),
//! with a certificate from a CA this program makes. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p colony --bench tls` (`-- --quick` for fewer rounds).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(dead_code)]
#[path = "common/memory.rs"]
mod memory;

use memory::rss_kib;

const COLONY: &str = env!("CARGO_BIN_EXE_colony");

struct Node {
    child: Child,
    addr: SocketAddr,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ca {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

fn make_ca() -> Ca {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    Ca {
        ca_pem: ca.pem(),
        cert,
        key,
        _dir: dir,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(tls: Option<&Ca>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    for file in [
        "limits.toml",
        "governance.toml",
        "tasks.toml",
        "quotas.toml",
    ] {
        std::fs::copy(shipped.join(file), config.join(file)).unwrap();
    }
    // Measure the transport, not the quotas or the anomaly detector.
    let quotas = std::fs::read_to_string(config.join("quotas.toml"))
        .unwrap()
        .replace("io_ops = 100000", "io_ops = \"unlimited\"");
    std::fs::write(config.join("quotas.toml"), quotas).unwrap();
    std::fs::write(config.join("anomaly.toml"), "[anomaly]\nenabled = false\n").unwrap();
    std::fs::write(
        config.join("bus.toml"),
        "[bus]\nconnections_max = 19000\nconnections_per_principal_max = 19000\n",
    )
    .unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut command = Command::new(COLONY);
    command
        .args(["up", "--listen", &addr.to_string(), "--data"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("COLONY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(ca) = tls {
        command
            .arg("--tls-cert")
            .arg(&ca.cert)
            .arg("--tls-key")
            .arg(&ca.key);
    }
    let child = command.spawn().unwrap();
    let token_file = dir.path().join("data/admin.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(addr).await.is_ok() && token_file.exists() {
            break;
        }
        assert!(Instant::now() < deadline, "the node did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    Node {
        child,
        addr,
        token,
        _dir: dir,
    }
}

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No resumption: every connection pays a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

use rustls_pki_types::pem::PemObject;

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

/// New connections per second, each answering one request.
async fn connections_per_second(
    node: &Node,
    tls: Option<Arc<rustls::ClientConfig>>,
    count: usize,
) -> f64 {
    let started = Instant::now();
    for _ in 0..count {
        let tcp = TcpStream::connect(node.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut answer = Vec::new();
        match &tls {
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let mut stream = connector.connect(name, tcp).await.unwrap();
                stream.write_all(HEALTH).await.unwrap();
                let _ = stream.read_to_end(&mut answer).await;
            }
            None => {
                let mut stream = tcp;
                stream.write_all(HEALTH).await.unwrap();
                stream.read_to_end(&mut answer).await.unwrap();
            }
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"));
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// Latencies (µs) of gateway calls over one kept-alive connection.
async fn gateway_latencies(node: &Node, tls: Option<&Ca>, calls: usize) -> Vec<u64> {
    let (scheme, client) = match tls {
        Some(ca) => (
            "https",
            reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap())
                .build()
                .unwrap(),
        ),
        None => ("http", reqwest::Client::new()),
    };
    let url = format!(
        "{scheme}://localhost:{}/v1/chat/completions",
        node.addr.port()
    );
    let body = serde_json::json!({"model": "colony-scripted", "max_tokens": 16,
        "messages": [{"role": "user", "content": "how long is a TLS handshake"}]});
    let mut latencies = Vec::with_capacity(calls);
    for round in 0..calls + 50 {
        let started = Instant::now();
        let response = client
            .post(&url)
            .bearer_auth(&node.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await.unwrap();
        if round >= 50 {
            latencies.push(started.elapsed().as_micros() as u64);
        }
    }
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Bytes of the node's RSS per idle bus connection.
async fn idle_bus_bytes(node: &Node, tls: Option<&Ca>, count: usize) -> f64 {
    let pid = node.child.id();
    let connector = tls.map(|ca| tokio_tungstenite::Connector::Rustls(client_config(ca)));
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = format!(
        "{scheme}://localhost:{}/v1/bus?token={}",
        node.addr.port(),
        node.token
    );
    // Warm the node up first, so that its first allocations are not counted.
    let mut held = Vec::with_capacity(count);
    for _ in 0..50 {
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            None,
            true,
            connector.clone(),
        )
        .await
        .unwrap();
        held.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    for _ in 0..count {
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            None,
            true,
            connector.clone(),
        )
        .await
        .unwrap();
        held.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    (after.saturating_sub(before) * 1024) as f64 / count as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (handshakes, calls, idle) = if quick {
        (200, 300, 500)
    } else {
        (2_000, 3_000, 3_000)
    };
    let ca = make_ca();
    let plain = start(None).await;
    let secure = start(Some(&ca)).await;
    let config = client_config(&ca);

    let plain_rate = connections_per_second(&plain, None, handshakes).await;
    let tls_rate = connections_per_second(&secure, Some(Arc::clone(&config)), handshakes).await;
    println!(
        "new connections + one request, sequential: plain {plain_rate:.0}/s, TLS (full handshake, ECDSA P-256) {tls_rate:.0}/s"
    );

    let plain_latency = gateway_latencies(&plain, None, calls).await;
    let tls_latency = gateway_latencies(&secure, Some(&ca), calls).await;
    println!(
        "gateway call (colony-scripted, kept-alive connection, {calls} calls): plain p50 {} µs p99 {} µs; TLS p50 {} µs p99 {} µs",
        percentile(&plain_latency, 0.5),
        percentile(&plain_latency, 0.99),
        percentile(&tls_latency, 0.5),
        percentile(&tls_latency, 0.99),
    );

    let plain_bytes = idle_bus_bytes(&plain, None, idle).await;
    let tls_bytes = idle_bus_bytes(&secure, Some(&ca), idle).await;
    println!(
        "node memory per idle bus connection ({idle} connections): ws {plain_bytes:.0} bytes, wss {tls_bytes:.0} bytes"
    );
}
