//! Property test of every JSON body the node takes: random JSON (with the field names
//! the routes know, so that it gets past the first checks) and mutated valid bodies,
//! sent to every route that takes a body. The node never answers 5xx and never drops
//! the connection.

use crate::common;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

const FIELDS: &[&str] = &[
    "name",
    "kind",
    "justification",
    "roles",
    "parent",
    "address",
    "priority",
    "resource",
    "amount",
    "ttl_ms",
    "reservation",
    "actual",
    "to",
    "limit",
    "soft",
    "hard",
    "brake",
    "quota_default",
    "vote",
    "title",
    "description",
    "capabilities",
    "depends_on",
    "budget_usd",
    "lease_token",
    "lease_ms",
    "checkpoint",
    "result",
    "reason",
    "subtasks",
    "on_child_death",
    "amount_usd",
    "model",
    "messages",
    "max_tokens",
    "stream",
    "system",
    "subjects",
    "max_age",
    "max_bytes",
    "max_msgs",
    "worker",
    "timeout_ms",
    "role",
    "content",
    "assignee",
    "tags",
];

/// Routes that take a body, with a valid body for each.
fn routes() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/v1/principals",
            json!({"name": "n", "kind": "ai", "justification": "j"}),
        ),
        ("/v1/principals/2.1/release", json!({"justification": "j"})),
        ("/v1/principals/2.1/remove", json!({"justification": "j"})),
        (
            "/v1/ledger/reserve",
            json!({"resource": "disk_bytes", "amount": 10, "justification": "j"}),
        ),
        ("/v1/ledger/commit", json!({"reservation": 3, "actual": 5})),
        ("/v1/ledger/release", json!({"reservation": 3})),
        (
            "/v1/ledger/grant",
            json!({"to": "2.1", "resource": "io_ops", "amount": 5, "justification": "j"}),
        ),
        (
            "/v1/ledger/free",
            json!({"resource": "disk_bytes", "amount": 1, "justification": "j"}),
        ),
        (
            "/v1/proposals",
            json!({"limit": "ai_accounts", "hard": 40, "justification": "j"}),
        ),
        (
            "/v1/proposals/1/votes",
            json!({"vote": "approve", "justification": "j"}),
        ),
        (
            "/v1/tasks",
            json!({"title": "t", "justification": "j", "budget_usd": "0.01"}),
        ),
        (
            "/v1/tasks/claim",
            json!({"capabilities": [], "justification": "j"}),
        ),
        (
            "/v1/tasks/0.7.1.00001/heartbeat",
            json!({"lease_token": 1, "justification": "j"}),
        ),
        (
            "/v1/tasks/0.7.1.00001/checkpoint",
            json!({"lease_token": 1, "checkpoint": {"a": 1}}),
        ),
        (
            "/v1/tasks/0.7.1.00001/complete",
            json!({"lease_token": 1, "result": "r"}),
        ),
        (
            "/v1/tasks/0.7.1.00001/fail",
            json!({"lease_token": 1, "reason": "r"}),
        ),
        (
            "/v1/tasks/0.7.1.00001/spend",
            json!({"lease_token": 1, "amount_usd": "0.001"}),
        ),
        (
            "/v1/tasks/0.7.1.00001/decompose",
            json!({"lease_token": 1, "subtasks": [{"title": "a"}], "justification": "j"}),
        ),
        (
            "/v1/tasks/0.7.1.00001/requeue",
            json!({"justification": "j"}),
        ),
        (
            "/v1/workers",
            json!({"capabilities": ["c"], "justification": "j"}),
        ),
        ("/v1/workers/1/heartbeat", json!({})),
        (
            "/v1/streams",
            json!({"name": "s", "subjects": ["a.>"], "justification": "j"}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "colony-scripted", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
        ),
        (
            "/v1/messages",
            json!({"model": "colony-scripted", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/tasks",
            json!({"title": "t", "description": "d", "priority": "normal"}),
        ),
        ("/tasks/0.7.1.00001/claim", json!({"assignee": "2.1"})),
        (
            "/tasks/0.7.1.00001/complete",
            json!({"assignee": "2.1", "result": "r"}),
        ),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..3).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,24}".prop_map(Value::from),
        Just(Value::from("0.001")),
        Just(Value::from("ai")),
        Just(Value::from("2.1")),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(FIELDS), inner), 0..7).prop_map(
                |pairs| {
                    Value::Object(
                        pairs
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect::<Map<_, _>>(),
                    )
                }
            ),
        ]
    })
}

#[derive(Clone, Debug)]
enum Body {
    Random(Value),
    Mutated(Vec<(usize, u8, bool)>),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        json_value().prop_map(Body::Random),
        proptest::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..6)
            .prop_map(Body::Mutated),
    ]
}

#[test]
fn no_json_body_makes_the_node_answer_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let providers = "[gateway]\ndefault_model = \"colony-scripted\"\n\n[[upstreams]]\nname = \"scripted\"\nkind = \"scripted\"\n\n[[models]]\nname = \"colony-scripted\"\nupstream = \"scripted\"\ninput_usd_per_million = \"1.00\"\noutput_usd_per_million = \"2.00\"\n";
    let node = runtime.block_on(common::start_with_gateway(providers, &|_| None));
    let client = reqwest::Client::new();
    let routes = routes();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 600,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(0..routes.len(), body()), |(route, body)| {
            let (path, valid) = &routes[route];
            let bytes = match body {
                Body::Random(value) => serde_json::to_vec(&value).unwrap(),
                Body::Mutated(edits) => {
                    let mut bytes = serde_json::to_vec(valid).unwrap();
                    for (at, byte, insert) in edits {
                        let at = at % bytes.len();
                        if insert {
                            bytes.insert(at, byte);
                        } else {
                            bytes[at] = byte;
                        }
                    }
                    bytes
                }
            };
            let (status, text) = runtime.block_on(async {
                let response = client
                    .post(format!("{}{path}", node.base))
                    .bearer_auth(&node.admin)
                    .header("content-type", "application/json")
                    .body(bytes.clone())
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("{path}: the connection failed: {error}"));
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            });
            prop_assert!(
                status < 500,
                "{} answered {} to {}: {}",
                path,
                status,
                String::from_utf8_lossy(&bytes),
                text
            );
            Ok(())
        })
        .unwrap();
    let health = runtime
        .block_on(reqwest::get(format!("{}/healthz", node.base)))
        .unwrap();
    assert_eq!(health.status(), 200);
}
