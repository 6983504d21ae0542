//! `colony up` and the standard OpenTelemetry variables: a setting Colony cannot
//! honour stops it at start, naming the variable (never a node that believes it is
//! traced when it is not); a collector that cannot be reached costs the node nothing
//! (its calls are answered, and it stops cleanly).

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::common;

#[test]
fn a_protocol_colony_cannot_export_in_stops_it_at_start_naming_the_variable() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(common::COLONY)
        .args(["up", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("http/protobuf"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_cannot_be_reached_costs_the_node_nothing() {
    let data = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    // Nothing listens there: every export fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (mut node, url) = common::start_with_env(
        data.path(),
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ],
    );
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    for n in 0..20 {
        let answer = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&token)
            .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .json(&json!({"model": "colony-scripted", "messages": [{"role": "user", "content": format!("call {n}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || node.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the node stopped with {status}");
}
