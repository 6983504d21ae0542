//! The OpenAPI document: generated from the handlers and `colony-api`'s types, served
//! at `/v1/openapi.json`, checked into `docs/openapi.json`, and held to by a live node
//! under Schemathesis (server errors and response schemas).

use crate::common;

use std::path::Path;

fn checked_in() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

/// `docs/openapi.json` is the generated document. After changing the API, write it
/// anew with `COLONY_BLESS=1 cargo test -p colony-node --test it openapi`.
#[test]
fn the_checked_in_document_is_the_generated_one() {
    let generated = colony_node::api::routes::openapi_document();
    if std::env::var_os("COLONY_BLESS").is_some() {
        std::fs::write(checked_in(), &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(checked_in()).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/openapi.json differs from the API's generated document; if the change is \
         meant, run `COLONY_BLESS=1 cargo test -p colony-node --test it openapi` and commit it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_its_document_without_a_token() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, _admin) = common::start(data.path(), config.path()).await;
    let response = reqwest::get(format!("{base}/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served = response.text().await.unwrap();
    assert_eq!(served, colony_node::api::routes::openapi_document());
    let document: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    // Every route the router serves is in the document.
    for path in [
        "/healthz",
        "/v1/limits/{name}",
        "/v1/principals/{address}/release",
        "/v1/ledger/reserve",
        "/v1/tasks/{address}/{action}",
        "/v1/workers/{id}/heartbeat",
        "/v1/streams/{name}",
        "/v1/chat/completions",
        "/v1/messages",
        "/tasks/mine/{assignee}",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} is not in the document"
        );
    }
    node.shutdown().await.unwrap();
}

/// Schemathesis (from PyPI, in the tests' virtual environment) generates requests from
/// the served document, valid and not, for every operation, in every phase (examples,
/// coverage, fuzzing, stateful sequences), as the admin; no answer may be a server
/// error, and every documented answer must match its schema. The seed is fixed so
/// that a failure reproduces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_its_schema() {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let python = tokio::task::spawn_blocking(common::python).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let schema = format!("{base}/v1/openapi.json");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-m", "schemathesis.cli", "run", &schema])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--workers",
                "1",
                "--no-color",
            ])
            .args(["-H", &format!("Authorization: Bearer {admin}")])
            .args(["-H", &format!("x-api-key: {admin}")])
            // Hypothesis keeps its example database in the working directory.
            .current_dir(scratch.path())
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "the node still serves after the run");
    node.shutdown().await.unwrap();
}
