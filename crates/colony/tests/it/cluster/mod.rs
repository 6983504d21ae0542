//! Cluster mode on a real JetStream cluster: three `nats-server` processes on
//! loopback and three `colony up --cluster` nodes, all started here. Limits hold
//! exactly across the nodes, a node killed with `kill -9` under load loses nothing
//! acknowledged and catches up to the same chain head, writes go on when one NATS
//! server of three is killed, and the nodes follow the stream's leader.

mod bus;
mod compaction;
mod divergence;
mod leader;
mod nodes;
mod secure;
mod settlement;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;
use common::nats::NatsCluster;
use common::{config_with, COLONY};

use bus::*;
use nodes::*;

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
    let config = config_with(&[
        (
            "quotas.toml",
            &shipped
                .replace("io_ops = 100000\n", "io_ops = \"unlimited\"\n")
                .replace("io_ops = 10000\n", &format!("io_ops = {AI_IO_OPS}\n"))
                .replace("io_ops = \"1m\"", "io_ops = \"1h\""),
        ),
        // The log is compacted all along, down to its last 10 commands.
        ("cluster.toml", compaction::CLUSTER_TOML),
        // Checkpoints every 100 decision records, compared between the nodes.
        ("audit.toml", "[heads]\nevery = 100\ninterval = \"1s\"\n"),
    ]);
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

    // Only admitted nodes write the log: node-2's commands are refused until an
    // admin admits its key (the first node's came with genesis).
    let refused = http
        .post(format!("{}/v1/ledger/reserve", urls[1]))
        .bearer_auth(&token)
        .json(&json!({"resource": "disk_bytes", "amount": 1, "justification": "before admission"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    let refused: Value = refused.json().await.unwrap();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not one of the cluster's admitted nodes"),
        "{refused}"
    );
    for (i, dir) in data.iter().enumerate().skip(1) {
        admit(
            &http,
            &urls[0],
            &token,
            &format!("node-{}", i + 1),
            dir.path(),
        )
        .await;
    }
    until_all(&http, &urls, &token, "/v1/cluster", |view| {
        view["admitted"]
            .as_array()
            .is_some_and(|nodes| nodes.len() == 3)
    })
    .await;
    // Every node talks to the server leading the command stream, and moves when
    // leadership does; the rest of this test runs after such a move.
    leader::nodes_follow_the_streams_leader(&http, &urls, &token, &nats, "COLONY_COMMANDS").await;

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
    let subject = "colony.cluster.COLONY_COMMANDS.commands";
    publish_raw(nats.servers[0].port, subject, b"not a command");
    let skipped = |page: &Value, why: &str| {
        page["records"].as_array().unwrap().iter().any(|record| {
            record["justification"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("skipped: the cluster's log holds {why}"))
        })
    };
    until_all(&http, &urls, &token, "/v1/audit?limit=1000", |page| {
        skipped(page, "a message that is not a signed command")
    })
    .await;
    // A genuine command captured from the stream and published again is refused on
    // every node, with the evidence; the same command changed after it was signed
    // is not a command at all. Neither changes anything anywhere.
    let captured = last_command(nats.servers[0].port).await;
    let usage =
        get(&http, &format!("{}/v1/limits/ai_accounts", urls[0]), &token).await["usage"].clone();
    publish_raw(nats.servers[0].port, subject, &captured);
    let mut tampered = captured.clone();
    // A byte past the version byte: of the signature, a length or a command.
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x20;
    publish_raw(nats.servers[0].port, subject, &tampered);
    until_all(&http, &urls, &token, "/v1/audit?limit=1000", |page| {
        let replay_refused = page["records"].as_array().unwrap().iter().any(|record| {
            record["action"] == "cluster.refused"
                && record["reason"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("applied before")
        });
        replay_refused
            && (skipped(page, "a message said to be from")
                || skipped(page, "a message that is not"))
    })
    .await;
    until_all(&http, &urls, &token, "/v1/limits/ai_accounts", |limit| {
        limit["usage"] == usage
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
    // They tell each other their checkpoints (the chain hash at every 100th
    // record) and none disagrees.
    until_all(&http, &urls, &token, "/v1/cluster", |view| {
        let nodes = view["nodes"].as_array().unwrap();
        view["divergences"] == 0
            && nodes.len() == 3
            && nodes
                .iter()
                .all(|node| node["checkpoint_seq"].as_u64() >= Some(100))
    })
    .await;

    // /metrics says where each node is in the log and what its bus relayed.
    let metrics = until_metrics(&http, &urls[2], &token, "never three live nodes", |text| {
        figure(text, "colony_cluster_live_nodes") == 3
    })
    .await;
    assert_eq!(figure(&metrics, "colony_cluster_connected"), 1);
    assert!(figure(&metrics, "colony_cluster_applied_seq") >= last);
    assert!(
        figure(&metrics, "colony_cluster_relayed_in_total") > 0,
        "node-3 got node-1's publishes"
    );
    figure(&metrics, "colony_cluster_lag");
    figure(&metrics, "colony_cluster_relay_dropped_total");

    // The log was compacted under all of that (node-2 killed and back included); a
    // new node is turned away until seeded from a copy of a member's data.
    let node4 = compaction::compaction_and_seeding(
        &http,
        &mut nodes,
        &mut urls,
        data[2].path(),
        config.path(),
        &servers,
        &token,
    )
    .await;
    let seq = get(&http, &format!("{}/v1/audit?limit=1", urls[3]), &token).await["last_seq"]
        .as_u64()
        .unwrap();
    assert_eq!(
        record_hash(&http, &urls[3], &token, seq).await,
        record_hash(&http, &urls[0], &token, seq).await,
        "node-4 is on the same chain"
    );
    stop_gracefully(nodes[3].take().unwrap());
    compaction::a_gap_stops_a_returning_node(
        &http,
        &urls,
        node4.path(),
        config.path(),
        &servers,
        nats.servers[0].port,
        &token,
    )
    .await;

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
    for node in nodes.iter_mut().filter_map(Option::take) {
        stop_gracefully(node);
    }
    for dir in data.iter().chain([&node4]) {
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
