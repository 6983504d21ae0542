//! Proximity alerts against a real node: thresholds crossed by creating and removing
//! principals become decisions, are published on the bus, kept, and delivered to
//! real HTTP webhooks (signed, retried, in Slack's shape too), and a webhook that
//! never answers leaves dead letters.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use common::bus::{Client, PATIENCE};

/// What a webhook receiver got: (signature header, delivery header, body).
type Received = Arc<Mutex<Vec<(Option<String>, Option<String>, String)>>>;

/// A webhook on a free port that answers `fail_first` requests with 500, then 200
/// (or always `always` when given).
async fn receiver(fail_first: usize, always: Option<StatusCode>) -> (String, Received) {
    let received: Received = Arc::default();
    let seen = Arc::clone(&received);
    let calls = Arc::new(Mutex::new(0usize));
    let app = Router::new().route(
        "/hook/secret-path",
        post(move |headers: HeaderMap, body: String| {
            let seen = Arc::clone(&seen);
            let calls = Arc::clone(&calls);
            async move {
                let header =
                    |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
                let mut n = calls.lock().unwrap();
                *n += 1;
                if let Some(status) = always {
                    return status;
                }
                if *n <= fail_first {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                seen.lock().unwrap().push((
                    header("x-colony-signature"),
                    header("x-colony-delivery"),
                    body,
                ));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook/secret-path", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shipped `limits.toml` with `ai_accounts` at these soft and hard values.
fn limits_with_ai_accounts(soft: u64, hard: u64) -> String {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/limits.toml"),
    )
    .unwrap();
    let limits = shipped.replacen(
        "soft = 10               # Hypernet max_ai_accounts soft\nhard = 50",
        &format!("soft = {soft}\nhard = {hard}"),
        1,
    );
    assert_ne!(
        limits, shipped,
        "the shipped ai_accounts limit is where the test looks"
    );
    limits
}

async fn alerts(base: &str, admin: &str) -> Vec<Value> {
    common::get_json(base, admin, "/v1/alerts").await["alerts"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossings_become_decisions_on_the_bus_and_at_the_webhooks() {
    let (signed_url, signed) = receiver(2, None).await;
    let (slack_url, slack) = receiver(0, None).await;
    let (dead_url, _) = receiver(0, Some(StatusCode::SERVICE_UNAVAILABLE)).await;
    let limits = limits_with_ai_accounts(2, 5);
    let alerts_toml = format!(
        r#"
[alerts]
check_every = "50ms"
hysteresis = "30%"
thresholds = ["80%"]
soft = true

[[webhooks]]
url = "{signed_url}"
secret = "s3cret"
backoff = "10ms"

[[webhooks]]
url = "{slack_url}"
format = "slack"

[[webhooks]]
url = "{dead_url}"
attempts = 2
backoff = "10ms"
"#
    );
    let config = common::genesis_dir(&[("limits.toml", &limits), ("alerts.toml", &alerts_toml)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let mut watcher = Client::connect(&node, &admin).await;
    watcher.sub("alerts", "colony.alerts.>").await;

    let mut made = Vec::new();
    for n in 0..2 {
        made.push(
            common::create_principal(&base, &admin, &format!("a{n}"), "ai", &[])
                .await
                .0,
        );
    }
    // Usage 2 reaches the soft value.
    let first = watcher.recv().await;
    assert_eq!(first["subject"], "colony.alerts.ai_accounts");
    assert_eq!(first["data"]["threshold"], "soft");
    assert_eq!(first["data"]["kind"], "raise");
    for n in 2..4 {
        made.push(
            common::create_principal(&base, &admin, &format!("a{n}"), "ai", &[])
                .await
                .0,
        );
    }
    // Usage 4 is 80% of 5.
    let second = watcher.recv().await;
    assert_eq!(second["data"]["threshold"], "80%");
    assert_eq!(second["data"]["threshold_value"], 4);
    // Hovering: 3 (not below 4 less 30%), then 4 again: no new alert.
    let remove = |address: String| {
        let (base, admin) = (base.clone(), admin.clone());
        async move {
            common::post_json(
                &base,
                &admin,
                &format!("/v1/principals/{address}/remove"),
                &json!({"justification": "the alert test"}),
            )
            .await
        }
    };
    remove(made.pop().unwrap()).await;
    made.push(
        common::create_principal(&base, &admin, "a5", "ai", &[])
            .await
            .0,
    );
    // Down to 2: below 2.8, the 80% threshold clears (the soft one stands).
    remove(made.pop().unwrap()).await;
    remove(made.pop().unwrap()).await;
    let third = watcher.recv().await;
    assert_eq!(third["data"]["kind"], "clear");
    assert_eq!(third["data"]["threshold"], "80%");

    let kept = alerts(&base, &admin).await;
    let kinds: Vec<String> = kept
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["kind"].as_str().unwrap(),
                a["threshold"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(kinds, vec!["raise soft", "raise 80%", "clear 80%"]);
    let listed = common::get_json(&base, &admin, "/v1/alerts").await;
    assert_eq!(
        listed["raised"],
        json!([{"figure": "ai_accounts", "principal": null, "threshold": "soft"}])
    );
    assert_eq!(listed["raised_total"], 1);
    assert_eq!(listed["webhooks"], 3);
    // The durable stream the first start defined keeps them for consumers.
    let stream = common::get_json(&base, &admin, "/v1/streams/alerts").await;
    assert_eq!(stream["stream"]["messages"], 3, "{stream}");
    // Each is a decision in the log, with its justification.
    let seq = kept[0]["seq"].as_u64().unwrap();
    let record = common::get_json(
        &base,
        &admin,
        &format!("/v1/audit?after={}&limit=1", seq - 1),
    )
    .await;
    assert_eq!(record["records"][0]["action"], "alert.raise");
    assert!(record["records"][0]["justification"]
        .as_str()
        .unwrap()
        .contains("ai_accounts reached its soft threshold"));

    // The signed webhook got all three, in order, after two failures, each signed.
    let got = until("three signed deliveries", async || {
        let got = signed.lock().unwrap().clone();
        (got.len() == 3).then_some(got)
    })
    .await;
    for ((signature, delivery, body), alert) in got.iter().zip(&kept) {
        assert_eq!(
            signature.as_deref(),
            Some(colony_alerts::sign("s3cret", body.as_bytes()).as_str())
        );
        assert_eq!(delivery.clone(), Some(format!("alert-{}", alert["id"])));
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(&body["alert"], alert);
        assert!(body["text"]
            .as_str()
            .unwrap()
            .contains(alert["summary"].as_str().unwrap()));
    }
    let got = until("three Slack messages", async || {
        let got = slack.lock().unwrap().clone();
        (got.len() == 3).then_some(got)
    })
    .await;
    let message: Value = serde_json::from_str(&got[0].2).unwrap();
    assert_eq!(message.as_object().unwrap().len(), 1, "{message}");
    assert!(message["text"]
        .as_str()
        .unwrap()
        .contains("limit ai_accounts reached its soft threshold"));
    assert_eq!(got[0].0, None, "no secret, no signature");

    // The webhook that always fails: each delivery a dead letter, its path not shown.
    let dead = until("three dead letters", async || {
        let dead = common::get_json(&base, &admin, "/v1/alerts/dead-letters").await;
        let list = dead["dead_letters"].as_array().unwrap().clone();
        (list.len() == 3).then_some(list)
    })
    .await;
    assert_eq!(dead[0]["attempts"], 2);
    assert!(
        dead[0]["error"].as_str().unwrap().contains("503"),
        "{}",
        dead[0]
    );
    assert!(!dead[0]["webhook"].as_str().unwrap().contains("secret-path"));
    let file = std::fs::read_to_string(data.path().join("alerts/dead-letters.jsonl")).unwrap();
    assert_eq!(file.lines().count(), 3);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_alerts_toml_stops_the_node_naming_the_line() {
    let config = common::genesis_dir(&[("alerts.toml", "[alerts]\nthresholds = [\"eighty\"]\n")]);
    let data = tempfile::tempdir().unwrap();
    let error = colony_node::Node::start(common::node_config(data.path(), config.path()))
        .await
        .err()
        .expect("the node refuses the file");
    let text = error.to_string();
    assert!(
        text.contains("alerts.toml:2") && text.contains("eighty"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_report_goes_to_the_webhooks() {
    let (url, got) = receiver(0, None).await;
    let alerts_toml = format!(
        "[alerts]\nsoft = false\nthresholds = [\"100%\"]\n\n[reports]\nevery = \"300ms\"\n\n[[webhooks]]\nurl = \"{url}\"\nsecret = \"k\"\n"
    );
    let config = common::genesis_dir(&[("alerts.toml", &alerts_toml)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    common::create_principal(&base, &admin, "reported", "ai", &[]).await;
    // The first report whose window holds the creation.
    let (signature, delivery, body) = until("a report naming the new principal", async || {
        got.lock()
            .unwrap()
            .iter()
            .find_map(|(signature, delivery, body)| {
                let parsed: Value = serde_json::from_str(body).ok()?;
                (parsed["report"]["principals_created"]["count"] == 1)
                    .then(|| (signature.clone(), delivery.clone(), body.clone()))
            })
    })
    .await;
    assert!(delivery.unwrap().starts_with("report-"));
    assert_eq!(
        signature.unwrap(),
        colony_alerts::sign("k", body.as_bytes())
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["text"]
        .as_str()
        .unwrap()
        .starts_with("# Colony: what happened"));
    assert_eq!(body["node"], base);
    node.shutdown().await.unwrap();
}

/// Quotas are watched for every principal with standing, a few hundred at a time
/// under one read of the kernel's state: a principal past the first few hundred is
/// watched as the first is, and only its own quota alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_crossing_is_seen_among_hundreds_of_principals() {
    let limits = limits_with_ai_accounts(1000, 1000);
    let alerts_toml = "[alerts]\ncheck_every = \"50ms\"\nthresholds = [\"100%\"]\nsoft = false\n\n[alerts.quotas]\nthresholds = [\"50%\"]\nresources = [\"llm_budget_usd\"]\n";
    let config = common::genesis_dir(&[("limits.toml", &limits), ("alerts.toml", alerts_toml)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let mut last = (String::new(), String::new());
    for n in 0..600 {
        last = common::create_principal(&base, &admin, &format!("q{n}"), "ai", &[]).await;
    }
    let (address, token) = last;
    // 60% of the principal's 2 000 000 reserved.
    let reserved = common::post_json(
        &base,
        &token,
        "/v1/ledger/reserve",
        &json!({"resource": "llm_budget_usd", "amount": 1_200_000, "justification": "most of it"}),
    )
    .await;
    assert!(reserved["reservation"].is_u64(), "{reserved}");
    let raised = until("the quota's alert", async || {
        alerts(&base, &admin)
            .await
            .into_iter()
            .find(|alert| alert["kind"] == "raise")
    })
    .await;
    assert_eq!(raised["threshold"], "50%", "{raised}");
    assert_eq!(raised["figure"], "quota.llm_budget_usd", "{raised}");
    let listed = common::get_json(&base, &admin, "/v1/alerts").await;
    assert_eq!(listed["raised_total"], 1, "{listed}");
    assert_eq!(listed["raised"][0]["principal"], address, "{listed}");
    node.shutdown().await.unwrap();
}
