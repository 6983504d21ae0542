//! Cluster mode on a real JetStream cluster: three `nats-server` processes on
//! loopback and three `colony up --cluster` nodes, all started here. Limits hold
//! exactly across the nodes, a node killed with `kill -9` under load loses nothing
//! acknowledged and catches up to the same chain head, and writes go on when one
//! NATS server of three is killed.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;
use common::nats::NatsCluster;
use common::{config_with, start_with_args, COLONY};

fn start_node(data: &Path, config: &Path, nats: &str, name: &str) -> (Child, String) {
    start_with_args(data, config, &["--cluster", nats, "--node-name", name], &[])
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Waits (at most 30 s) until `check` holds for what every node answers at `path`.
async fn until_all(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    path: &str,
    check: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for url in urls {
        loop {
            let answer = get(http, &format!("{url}{path}"), token).await;
            if check(&answer) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url}{path} never got there: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The hash of decision record `index` on the node at `url`.
async fn record_hash(http: &reqwest::Client, url: &str, token: &str, index: u64) -> String {
    let page = get(
        http,
        &format!("{url}/v1/audit?after={}&limit=1", index - 1),
        token,
    )
    .await;
    page["records"][0]["hash"].as_str().unwrap().to_string()
}

/// Reserves and commits in a loop on `url` until `stop`, recording each commit the
/// node acknowledged.
fn writer(
    http: reqwest::Client,
    url: String,
    token: String,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    count: Arc<AtomicUsize>,
    node_count: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut refusals = 0;
        while !stop.load(Ordering::SeqCst) {
            let reserve = http
                .post(format!("{url}/v1/ledger/reserve"))
                .bearer_auth(&token)
                .json(&json!({"resource": "disk_bytes", "amount": 10, "justification": "load"}))
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            // A node killed, or a request that outlived its timeout while a NATS
            // server was lost: try again shortly.
            let Ok(response) = reserve else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(body) = response.json::<Value>().await else {
                continue;
            };
            let Some(reservation) = body["reservation"].as_u64() else {
                // Refused (a 503 while a NATS server is lost): shown if the test
                // fails, and tried again shortly.
                if refusals < 3 {
                    eprintln!("a reserve on {url} refused: {body}");
                }
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let commit = http
                .post(format!("{url}/v1/ledger/commit"))
                .bearer_auth(&token)
                .json(&json!({"reservation": reservation, "actual": 7}))
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            let Ok(response) = commit else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if response.status().is_success() {
                acknowledged.lock().unwrap().push(reservation);
                count.fetch_add(1, Ordering::SeqCst);
                node_count.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

/// Waits until `count` has grown by `more` (at most 120 s: on a machine loaded by
/// other work, JetStream's servers may take a while to elect a leader again).
async fn acks_grow(count: &AtomicUsize, more: usize) {
    let target = count.load(Ordering::SeqCst) + more;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "writes stalled at {} acknowledged commits",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The AI accounts' io_ops in this test, a window of an hour.
const AI_IO_OPS: u64 = 3_000;

type BusSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bus connection to the node at `url` with `token`.
async fn bus_connect(url: &str, token: &str) -> BusSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/v1/bus", url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Publishes of one principal through one bus connection, until `stop`: how many
/// the node let through.
async fn publisher(url: String, token: String, subject: String, stop: Arc<AtomicBool>) -> u64 {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = bus_connect(&url, &token).await;
    let mut accepted = 0;
    let mut id = 0u64;
    while !stop.load(Ordering::SeqCst) {
        id += 1;
        let frame = json!({"op": "pub", "subject": subject, "data": id, "id": id});
        ws.send(Message::text(frame.to_string())).await.unwrap();
        loop {
            let Message::Text(text) = ws.next().await.unwrap().unwrap() else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] != id {
                continue;
            }
            if answer["op"] == "ok" {
                accepted += 1;
            } else {
                // Refused until this node's next lease (`lease_spent`, the cluster
                // has room) or for good (`insufficient_resource`): try again shortly.
                let code = answer["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    ["lease_spent", "insufficient_resource"].contains(&code),
                    "{answer}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            break;
        }
    }
    accepted
}

async fn publishes_hold_to_the_quota(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    address: &str,
) {
    let io_ops = |me: &Value| me["balances"]["io_ops"].clone();
    let me_url = format!("{}/v1/ledger/me", urls[0]);
    let before = io_ops(&get(http, &me_url, token).await);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<_> = urls
        .iter()
        .map(|url| {
            tokio::spawn(publisher(
                url.clone(),
                token.to_string(),
                format!("agents.{address}.load"),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // Until the quota is spent: the charged usage stops growing for three rounds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Instant::now());
    loop {
        let used = io_ops(&get(http, &me_url, token).await)["used"]
            .as_u64()
            .unwrap();
        if used != last.0 {
            last = (used, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing never ran dry: {used}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut accepted = 0;
    for count in counts {
        accepted += count.await.unwrap();
    }
    // Every publish let through is charged (by each node's next round).
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let balance = io_ops(&get(http, &me_url, token).await);
        if balance["used"].as_u64() == Some(accepted) {
            break balance;
        }
        assert!(
            Instant::now() < deadline,
            "{accepted} publishes let through, {balance} charged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        after["shortfall"], 0,
        "nothing spent past the quota: {after}"
    );
    if before["refill_at"] == after["refill_at"] {
        assert!(
            (AI_IO_OPS - 10..=AI_IO_OPS).contains(&accepted),
            "{accepted} publishes of a quota of {AI_IO_OPS} on three nodes"
        );
    } else {
        // The hour turned meanwhile: two windows' worth at most.
        assert!(accepted <= 2 * AI_IO_OPS, "{accepted}");
    }
}

/// The first `count` messages of stream `name` read through a bus connection to
/// `url`: their numbers and data.
async fn stream_read(url: &str, token: &str, name: &str, count: usize) -> Vec<(u64, String)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = bus_connect(url, token).await;
    let sub = json!({"op": "sub", "sid": "s", "subject": ">", "stream": name, "from_seq": 1});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while read.len() < count {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{url}: only {read:?} of stream {name}"))
            .unwrap()
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["op"] == "msg" {
            read.push((frame["seq"].as_u64().unwrap(), frame["data"].to_string()));
        }
    }
    read
}

/// `colony bus sub ARGS` against a node, its lines gathered as they come.
struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    /// Starts it and waits until it says it is subscribed.
    fn start(url: &str, token: &str, args: &[&str]) -> Subscriber {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(COLONY)
            .args(["bus", "sub"])
            .args(args)
            .env("COLONY_URL", url)
            .env("COLONY_TOKEN", token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with("subscribed to"), "{line}");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let gathered = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                gathered.lock().unwrap().push(line);
            }
        });
        Subscriber { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.lines().len() < count {
            assert!(Instant::now() < deadline, "got only {:?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `colony bus pub SUBJECT DATA` against a node.
/// A refusal a client tries again after (a node's first lease of allowance can take
/// a few rounds on a loaded machine; a stream's leader may be being elected).
fn bus_pub(url: &str, token: &str, subject: &str, data: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new(COLONY)
            .args(["bus", "pub", subject, data])
            .env("COLONY_URL", url)
            .env("COLONY_TOKEN", token)
            .output()
            .unwrap();
        if output.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let retryable = [
            "hard_limit",
            "insufficient_resource",
            "lease_spent",
            "cluster_unavailable",
        ]
            .iter()
            .any(|code| stderr.contains(code));
        assert!(retryable && Instant::now() < deadline, "{stderr}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Publishes `payload` on `subject` with NATS's own text protocol.
fn publish_raw(port: u16, subject: &str, payload: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    let mut writer = stream;
    write!(
        writer,
        "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n",
        payload.len()
    )
    .unwrap();
    writer.write_all(payload).unwrap();
    writer.write_all(b"\r\nPING\r\n").unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(!line.starts_with("-ERR"), "{line}");
        if line.starts_with("PONG") {
            return;
        }
    }
}

/// The nodes' processes, killed if the test ends before stopping them.
struct Nodes(Vec<Option<Child>>);

impl std::ops::Deref for Nodes {
    type Target = Vec<Option<Child>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Nodes {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.0.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop_gracefully(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "colony up stopped with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_jetstream_keep_one_log_exact_limits_and_lose_nothing() {
    let mut nats = NatsCluster::start(3);
    let servers = nats.urls();
    // The admin is the load generator here: its io_ops (100 000 a minute) would run
    // out under the write load of twelve writers on three nodes.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/quotas.toml"),
    )
    .unwrap();
    assert!(shipped.contains("io_ops = 100000\n"));
    assert!(shipped.contains("io_ops = 10000\n"));
    assert!(shipped.contains("io_ops = \"1m\""));
    // The AI accounts get 3 000 io_ops an hour: the publishes of one on three nodes
    // at once are held to exactly that.
    let config = config_with(&[(
        "quotas.toml",
        &shipped
            .replace("io_ops = 100000\n", "io_ops = \"unlimited\"\n")
            .replace("io_ops = 10000\n", &format!("io_ops = {AI_IO_OPS}\n"))
            .replace("io_ops = \"1m\"", "io_ops = \"1h\""),
    )]);
    let data: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Nodes(Vec::new());
    let mut urls = Vec::new();
    for (i, dir) in data.iter().enumerate() {
        let (child, url) = start_node(
            dir.path(),
            config.path(),
            &servers,
            &format!("node-{}", i + 1),
        );
        nodes.push(Some(child));
        urls.push(url);
    }
    // The first node installed genesis; the others found it in the stream.
    let token = std::fs::read_to_string(data[0].path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    assert!(!data[1].path().join("admin.token").exists());
    assert!(!data[2].path().join("admin.token").exists());
    let http = reqwest::Client::new();

    // 64 clients spread over the three nodes race to create AI accounts: exactly the
    // hard value succeed, and every node counts the same.
    let limit = get(&http, &format!("{}/v1/limits/ai_accounts", urls[0]), &token).await;
    let hard = limit["hard"].as_u64().unwrap();
    assert_eq!(limit["usage"], 0);
    assert!(hard < 64, "the race needs more clients than the hard value");
    let mut racers = Vec::new();
    for i in 0..64 {
        let (http, url, token) = (http.clone(), urls[i % 3].clone(), token.clone());
        racers.push(tokio::spawn(async move {
            let response = http
                .post(format!("{url}/v1/principals"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("racer-{i}"), "kind": "ai", "justification": "the race"}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }));
    }
    let mut created = 0;
    let mut racer = None;
    for racer_task in racers {
        let (status, body) = racer_task.await.unwrap();
        if status.is_success() {
            created += 1;
            racer = Some(body);
        } else {
            assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert_eq!(body["error"]["limit"], "ai_accounts", "{body}");
        }
    }
    assert_eq!(created, hard, "exactly the hard value of AI accounts");
    until_all(&http, &urls, &token, "/v1/limits/ai_accounts", |limit| {
        limit["usage"].as_u64() == Some(hard)
    })
    .await;

    // One AI account publishes as fast as it can on all three nodes at once: the
    // nodes' leases hold it to its quota exactly, every publish let through is
    // charged, and nothing is charged past the quota.
    let racer = racer.unwrap();
    publishes_hold_to_the_quota(
        &http,
        &urls,
        racer["token"].as_str().unwrap(),
        racer["address"].as_str().unwrap(),
    )
    .await;

    // The bus across nodes: a subscriber on node-3 gets what is published on
    // node-1; a queue group with members on node-2 and node-3 gets each message of
    // node-1 once in the whole cluster.
    let plain = Subscriber::start(&urls[2], &token, &["demo.>"]);
    bus_pub(&urls[0], &token, "demo.hello", "\"from node-1\"");
    plain.wait_for(1).await;
    assert!(
        plain.lines()[0].contains("from node-1"),
        "{:?}",
        plain.lines()
    );
    let members = [
        Subscriber::start(&urls[1], &token, &["jobs.*", "--queue", "workers"]),
        Subscriber::start(&urls[2], &token, &["jobs.*", "--queue", "workers"]),
    ];
    let received = || members.iter().flat_map(|m| m.lines()).collect::<Vec<_>>();
    // Until a member has one (the queue subscriptions reach NATS), then 30 more.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    while received().is_empty() {
        assert!(Instant::now() < deadline, "no queue member got a message");
        probes += 1;
        bus_pub(
            &urls[0],
            &token,
            &format!("jobs.probe{probes}"),
            "\"probe\"",
        );
    }
    for job in 0..30 {
        bus_pub(
            &urls[0],
            &token,
            &format!("jobs.j{job}"),
            &format!("\"job {job}\""),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received()
        .iter()
        .filter(|line| line.contains("\"job "))
        .count()
        < 30
    {
        assert!(
            Instant::now() < deadline,
            "queue members got {:?}",
            received()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jobs: Vec<String> = received()
        .into_iter()
        .filter(|line| line.contains("\"job "))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = jobs.iter().collect();
    assert_eq!(
        (jobs.len(), distinct.len()),
        (30, 30),
        "each job once: {jobs:?}"
    );
    drop(members);
    drop(plain);

    // A durable stream is the cluster's: defined on node-1, it captures what is
    // published on every node, in one order, and a consumer on any node reads it all.
    let defined = http
        .post(format!("{}/v1/streams", urls[0]))
        .bearer_auth(&token)
        .json(&json!({"name": "orders", "subjects": ["orders.>"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(defined.status(), reqwest::StatusCode::CREATED);
    for url in &urls {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{url}/v1/streams/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
        {
            assert!(Instant::now() < deadline, "{url} never opened the stream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (i, url) in urls.iter().enumerate() {
        bus_pub(url, &token, &format!("orders.n{i}"), &i.to_string());
    }
    until_all(&http, &urls, &token, "/v1/streams/orders", |info| {
        info["stream"]["last_seq"] == 3 && info["stream"]["messages"] == 3
    })
    .await;
    let read: Vec<Vec<(u64, String)>> = {
        let mut read = Vec::new();
        for url in &urls {
            read.push(stream_read(url, &token, "orders", 3).await);
        }
        read
    };
    assert!(
        read.iter().all(|r| *r == read[0]),
        "one order on every node: {read:?}"
    );
    let mut values: Vec<&String> = read[0].iter().map(|(_, value)| value).collect();
    values.sort();
    assert_eq!(values, ["0", "1", "2"], "{read:?}");

    // Junk on the command subject (from anything with access to NATS) is decided as
    // a tick on every node alike, so the numbers stay aligned.
    publish_raw(
        nats.servers[0].port,
        "colony.cluster.COLONY_COMMANDS.commands",
        b"not a command",
    );
    until_all(&http, &urls, &token, "/v1/audit?limit=1000", |page| {
        page["records"].as_array().unwrap().iter().any(|record| {
            record["justification"]
                == "a message in the cluster's log that is not a command: skipped"
        })
    })
    .await;

    // Write load on all three nodes; node-2 is killed with kill -9 in the middle of
    // it, then one NATS server of three: the writes on the others go on.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let per_node: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let writers: Vec<_> = (0..12)
        .map(|i| {
            writer(
                http.clone(),
                urls[i % 3].clone(),
                token.clone(),
                Arc::clone(&stop),
                Arc::clone(&acknowledged),
                Arc::clone(&count),
                Arc::clone(&per_node[i % 3]),
            )
        })
        .collect();
    acks_grow(&count, 200).await;
    let mut killed = nodes[1].take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    acks_grow(&count, 200).await;
    nats.servers[2].kill();
    // Writes go on at both living nodes.
    acks_grow(&per_node[0], 100).await;
    acks_grow(&per_node[2], 100).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    // While node-2 is down the durable stream gets one more message.
    bus_pub(&urls[0], &token, "orders.late", "\"late\"");

    // node-2 comes back on its own data and catches up from the stream.
    let (child, url) = start_node(data[1].path(), config.path(), &servers, "node-2");
    nodes[1] = Some(child);
    urls[1] = url;
    let cluster = get(&http, &format!("{}/v1/cluster", urls[0]), &token).await;
    assert_eq!(cluster["mode"], "nats");
    let last = cluster["stream"]["last_seq"].as_u64().unwrap();
    until_all(&http, &urls, &token, "/v1/cluster", |view| {
        view["applied_seq"].as_u64() >= Some(last)
    })
    .await;
    // ...and its copy of the durable stream catches up too.
    until_all(&http, &urls, &token, "/v1/streams/orders", |info| {
        info["stream"]["last_seq"] == 4
    })
    .await;
    let late = stream_read(&urls[1], &token, "orders", 4).await;
    assert_eq!(late[3], (4, "\"late\"".to_string()), "{late:?}");

    // No acknowledged commit is missing on any node, and the ledger agrees.
    let mut commits_at = Vec::new();
    for url in &urls {
        let mut after = 0;
        let mut commits = std::collections::BTreeMap::new();
        loop {
            let page = get(
                &http,
                &format!("{url}/v1/audit?after={after}&limit=1000"),
                &token,
            )
            .await;
            let records = page["records"].as_array().unwrap();
            if records.is_empty() {
                break;
            }
            for record in records {
                if record["action"] == "ledger.commit" && record["decision"] == "allowed" {
                    commits.insert(
                        record["detail"]["effect"]["reservation"].as_u64().unwrap(),
                        record["seq"].as_u64().unwrap(),
                    );
                }
            }
            after = page["next_after"].as_u64().unwrap();
        }
        commits_at.push(commits);
    }
    let distinct: std::collections::BTreeSet<_> = acknowledged.iter().collect();
    assert_eq!(
        distinct.len(),
        acknowledged.len(),
        "a reservation acknowledged twice"
    );
    for (url, commits) in urls.iter().zip(&commits_at) {
        let missing: Vec<_> = acknowledged
            .iter()
            .filter(|r| !commits.contains_key(r))
            .collect();
        assert!(
            missing.is_empty(),
            "{url} lacks {} acknowledged commits of {} ({} commits there): {missing:?}; elsewhere: {:?}",
            missing.len(),
            acknowledged.len(),
            commits.len(),
            commits_at
                .iter()
                .map(|c| missing.iter().map(|r| c.get(r)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
    }
    let committed = 7 * acknowledged.len() as u64;
    until_all(&http, &urls, &token, "/v1/ledger/me", |me| {
        me["balances"]["disk_bytes"]["used"].as_u64() >= Some(committed)
    })
    .await;

    // The same chain: the last record every node holds has the same hash on all.
    let mut common_index = u64::MAX;
    for url in &urls {
        let page = get(&http, &format!("{url}/v1/audit?limit=1"), &token).await;
        common_index = common_index.min(page["last_seq"].as_u64().unwrap());
    }
    let mut hashes = Vec::new();
    for url in &urls {
        hashes.push(record_hash(&http, url, &token, common_index).await);
    }
    assert!(
        hashes.iter().all(|hash| *hash == hashes[0]),
        "record {common_index} differs between nodes: {hashes:?}"
    );

    // Every node knows the others.
    let view = get(&http, &format!("{}/v1/cluster", urls[2]), &token).await;
    let names: Vec<&str> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"], "{view}");

    // /metrics says where each node is in the log and what its bus relayed.
    let figure = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = http
            .get(format!("{}/metrics", urls[2]))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if figure(&metrics, "colony_cluster_live_nodes") == 3 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "never three live nodes: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(figure(&metrics, "colony_cluster_connected"), 1);
    assert!(figure(&metrics, "colony_cluster_applied_seq") >= last);
    assert!(
        figure(&metrics, "colony_cluster_relayed_in_total") > 0,
        "node-3 got node-1's publishes"
    );
    figure(&metrics, "colony_cluster_lag");
    figure(&metrics, "colony_cluster_relay_dropped_total");

    // Without NATS a node refuses writes with a clear 503 and serves reads marked
    // stale.
    nats.servers[0].kill();
    nats.servers[1].kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = http
            .get(format!("{}/v1/limits/ai_accounts", urls[0]))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(read.status().is_success());
        if read.headers().get("x-colony-stale").is_some() {
            let limit: Value = read.json().await.unwrap();
            assert_eq!(limit["usage"].as_u64(), Some(hard));
            break;
        }
        assert!(Instant::now() < deadline, "reads were never marked stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = http
        .post(format!("{}/v1/principals", urls[0]))
        .bearer_auth(&token)
        .json(&json!({"name": "late", "kind": "human", "justification": "no NATS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cluster_unavailable", "{body}");

    // Stopped, every node's log verifies offline.
    for node in nodes.iter_mut() {
        stop_gracefully(node.take().unwrap());
    }
    for dir in &data {
        let output = Command::new(COLONY)
            .args(["audit", "verify", "--data"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
