//! The authorization matrix: every route and bus operation against every kind of
//! caller, with the expected answers read from the table in `docs/api.md` (section
//! "Authorization matrix"), so that the table and the code cannot drift.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const COLUMNS: [&str; 9] = [
    "admin", "human", "ai", "observer", "artifact", "noscope", "expired", "revoked", "none",
];

struct Row {
    operation: String,
    body: Option<String>,
    expected: BTreeMap<&'static str, String>,
}

/// The rows of the matrix in docs/api.md.
fn matrix() -> Vec<Row> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md"))
            .unwrap();
    let section = text
        .split("## Authorization matrix")
        .nth(1)
        .expect("docs/api.md has an Authorization matrix section");
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 2 + COLUMNS.len(), "a malformed row: {line}");
        let expected = COLUMNS
            .iter()
            .zip(&cells[2..])
            .map(|(column, cell)| {
                assert!(
                    matches!(*cell, "ok" | "401" | "403"),
                    "cell {cell:?} in {line}"
                );
                (*column, cell.to_string())
            })
            .collect();
        rows.push(Row {
            operation: cells[0].trim_matches('`').to_string(),
            body: (!cells[1].is_empty()).then(|| cells[1].trim_matches('`').to_string()),
            expected,
        });
    }
    assert!(rows.len() > 40, "the matrix lists every route");
    rows
}

struct Callers {
    tokens: BTreeMap<&'static str, Option<String>>,
    addresses: BTreeMap<&'static str, String>,
}

fn classify(status: u16) -> String {
    match status {
        401 | 403 => status.to_string(),
        _ => "ok".to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_bus_operation_answers_every_caller_as_the_table_says() {
    let rows = matrix();
    // The matrix makes a few hundred principals: room for them.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/limits.toml"),
    )
    .unwrap();
    let roomy = shipped.replace(
        "[limits.ai_accounts]\nsoft = 10               # Hypernet max_ai_accounts soft\nhard = 50 ",
        "[limits.ai_accounts]\nsoft = 1000\nhard = 5000 ",
    );
    assert_ne!(roomy, shipped, "the test raises ai_accounts");
    let config = common::genesis_dir(&[("limits.toml", &roomy)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let http = reqwest::Client::new();

    // The callers.
    let mut tokens = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    tokens.insert("admin", Some(admin.clone()));
    addresses.insert("admin", "1.1".to_string());
    for (column, kind, roles) in [
        ("human", "human", vec!["member"]),
        ("ai", "ai", vec!["member"]),
        ("observer", "ai", vec!["observer"]),
        ("artifact", "artifact", vec!["member"]),
        ("noscope", "ai", vec!["member"]),
        ("expired", "ai", vec!["member"]),
        ("revoked", "ai", vec!["member"]),
    ] {
        let (address, token) = common::create_principal(&base, &admin, column, kind, &roles).await;
        addresses.insert(column, address.clone());
        let token = match column {
            "noscope" | "expired" | "revoked" => {
                let ttl = if column == "expired" {
                    json!(1)
                } else {
                    Value::Null
                };
                let mut body = json!({"name": column, "scopes": if column == "noscope" { json!(["task:0.7.1.99999"]) } else { json!(["*"]) }, "justification": "the matrix"});
                if column != "noscope" {
                    body["scopes"] = json!([
                        "read",
                        "llm",
                        "bus",
                        "tasks",
                        "ledger",
                        "governance",
                        "tokens"
                    ]);
                }
                if !ttl.is_null() {
                    body["ttl"] = ttl;
                }
                let made = common::post_json(
                    &base,
                    &token,
                    &format!("/v1/principals/{address}/tokens"),
                    &body,
                )
                .await;
                let secret = made["token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{made}"))
                    .to_string();
                if column == "expired" {
                    let at = made["expires_at_ms"].as_u64().unwrap();
                    while colony_node::sequencer::now_ms() <= at {
                        tokio::task::yield_now().await;
                    }
                }
                if column == "revoked" {
                    let id = made["id"].as_u64().unwrap();
                    let status = http
                        .delete(format!("{base}/v1/principals/{address}/tokens/{id}"))
                        .bearer_auth(&admin)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert_eq!(status, 200);
                }
                secret
            }
            _ => token,
        };
        tokens.insert(column, Some(token));
    }
    tokens.insert("none", None);
    addresses.insert("none", "2.999".to_string());
    let callers = Callers { tokens, addresses };

    // What the paths name.
    let task = common::post_json(
        &base,
        &admin,
        "/v1/tasks",
        &json!({"title": "the matrix's task", "justification": "matrix"}),
    )
    .await;
    let task = task["address"].as_str().unwrap().to_string();
    // A brake by a lineage of its own, which every column may vote on (nobody
    // votes on a brake of its own lineage).
    let (_, braker) = common::create_principal(&base, &admin, "braker", "ai", &["member"]).await;
    let proposal = common::post_json(
        &base,
        &braker,
        "/v1/proposals",
        &json!({"limit": "human_accounts", "soft": 2, "justification": "matrix"}),
    )
    .await;
    let proposal = proposal["id"].as_u64().unwrap().to_string();
    common::bus::create_stream(
        &base,
        &admin,
        json!({"name": "matrix", "subjects": ["work.matrix.>"]}),
    )
    .await;
    let artifact = common::post_json(
        &base,
        &admin,
        "/v1/artifacts",
        &json!({"name": "matrix", "wat": "(module (memory (export \"memory\") 1) (func (export \"run\") (result i32) i32.const 0))", "run": false, "justification": "matrix"}),
    )
    .await;
    let artifact = artifact["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{artifact}"))
        .to_string();

    let mut mismatches = Vec::new();
    let mut n = 0u32;
    for row in &rows {
        for column in COLUMNS {
            n += 1;
            let token = callers.tokens[column].clone();
            let own = &callers.addresses[column];
            let victim = if row.operation.contains("{victim}")
                || row.body.as_deref().is_some_and(|b| b.contains("{victim}"))
            {
                common::create_principal(&base, &admin, &format!("victim{n}"), "ai", &["member"])
                    .await
                    .0
            } else {
                String::new()
            };
            let child = if row.operation.contains("{child}")
                || row.body.as_deref().is_some_and(|b| b.contains("{child}"))
            {
                let body = json!({"name": format!("child{n}"), "kind": "ai", "parent": own, "justification": "the matrix"});
                let made = common::post_json(&base, &admin, "/v1/principals", &body).await;
                made["address"].as_str().unwrap_or("2.999").to_string()
            } else {
                String::new()
            };
            let grant = if row.operation.contains("{grant}") {
                let (_, asker) = common::create_principal(
                    &base,
                    &admin,
                    &format!("asker{n}"),
                    "ai",
                    &["member"],
                )
                .await;
                let asked = common::post_json(
                    &base,
                    &asker,
                    "/v1/grants",
                    &json!({"quota": {"resource": "io_ops", "amount": 1}, "ttl": "1h", "justification": "the matrix"}),
                )
                .await;
                asked["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{asked}"))
                    .to_string()
            } else {
                String::new()
            };
            let fill = |text: &str| {
                text.replace("{self}", own)
                    .replace("{grant}", &grant)
                    .replace("{child}", &child)
                    .replace("{victim}", &victim)
                    .replace("{task}", &task)
                    .replace("{proposal}", &proposal)
                    .replace("{stream}", "matrix")
                    .replace("{artifact}", &artifact)
                    .replace("{n}", &n.to_string())
            };
            let operation = fill(&row.operation);
            let (verb, rest) = operation.split_once(' ').unwrap();
            let answer = if verb == "BUS" {
                bus(&node, token.as_deref(), rest).await
            } else {
                let method = reqwest::Method::from_bytes(verb.as_bytes()).unwrap();
                let mut request = http.request(method, format!("{base}{rest}"));
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                if let Some(body) = &row.body {
                    request = request
                        .header("content-type", "application/json")
                        .body(fill(body));
                }
                classify(request.send().await.unwrap().status().as_u16())
            };
            if answer != row.expected[column] {
                mismatches.push(format!(
                    "{} as {column}: expected {}, got {answer}",
                    row.operation, row.expected[column]
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} cells differ from docs/api.md:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    node.shutdown().await.unwrap();
}

/// A bus operation (`connect`, `pub SUBJECT`, `sub PATTERN`): `401`/`403` when the
/// connection or the operation is refused for authorization, `ok` otherwise.
async fn bus(node: &colony_node::Node, token: Option<&str>, operation: &str) -> String {
    let mut request = format!("ws://{}/v1/bus", node.local_addr())
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut ws = match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            return classify(response.status().as_u16())
        }
        Err(other) => panic!("the bus did not answer: {other}"),
    };
    let frame = match operation.split_once(' ') {
        None => return "ok".to_string(),
        Some(("pub", subject)) => json!({"op": "pub", "subject": subject, "data": "m", "id": "m"}),
        Some(("sub", pattern)) => json!({"op": "sub", "sid": "m", "subject": pattern, "id": "m"}),
        Some(other) => panic!("no bus operation {other:?}"),
    };
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(common::bus::PATIENCE, ws.next())
            .await
            .expect("an answer in time")
            .expect("the connection is open")
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let answer: Value = serde_json::from_str(&text).unwrap();
        if answer["id"] != "m" {
            continue;
        }
        return match (answer["op"].as_str(), answer["error"]["code"].as_str()) {
            (Some("err"), Some("forbidden")) => "403".to_string(),
            _ => "ok".to_string(),
        };
    }
}

/// Whether a matrix row's path (with its placeholders filled or named) is one the
/// route template serves: the same segments, a `{parameter}` matching any one.
fn serves(template: &str, row: &str) -> bool {
    let (template, row): (Vec<&str>, Vec<&str>) = (
        template.split('/').collect(),
        row.split(['/', '?']).collect(),
    );
    template.len() <= row.len()
        && template.iter().zip(&row).all(|(wanted, given)| {
            wanted.starts_with('{') || wanted == given || given.starts_with('{')
        })
        && (template.len() == row.len() || row[template.len()..].iter().all(|s| s.contains('=')))
}

/// The matrix covers the route table: every route a token reaches has a row.
#[test]
fn the_matrix_has_a_row_for_every_route_in_the_table() {
    let rows = matrix();
    let mut missing = Vec::new();
    for route in colony_node::api::routes::table() {
        if route.scope.is_none() {
            continue; // the open lane: no token, nothing to authorize
        }
        let covered = rows.iter().any(|row| {
            let Some((verb, path)) = row.operation.split_once(' ') else {
                return false;
            };
            let verb = if verb == "BUS" { "GET" } else { verb };
            let path = if row.operation.starts_with("BUS ") {
                "/v1/bus"
            } else {
                path
            };
            verb == route.method.as_str() && serves(&route.path, path)
        });
        if !covered {
            missing.push(format!("{} {}", route.method, route.path));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/api.md's authorization matrix has no row for: {missing:#?}"
    );
}
