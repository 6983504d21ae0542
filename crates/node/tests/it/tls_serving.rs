//! A node serving HTTPS and wss:// on one port, with a certificate from a CA the test
//! made: the official openai Python package, Python websockets and curl over TLS, and
//! plain HTTP to the TLS port refused cleanly.

use crate::common;

use colony_node::tls::TlsSource;
use colony_node::{Node, NodeConfig};

async fn tls_node(ca: &common::TestCa) -> (Node, String, tempfile::TempDir, tempfile::TempDir) {
    let config = common::genesis_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig {
        tls: Some(TlsSource::Files {
            cert: ca.cert_file.clone(),
            key: ca.key_file.clone(),
        }),
        ..common::node_config(data.path(), config.path())
    })
    .await
    .unwrap();
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    (node, admin, config, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_speak_https_and_wss_to_the_node() {
    let ca = common::test_ca();
    let (node, admin, _config, _data) = tls_node(&ca).await;
    let base = format!("https://localhost:{}", node.local_addr().port());
    common::run_python(
        "openai",
        "tls_clients.py",
        vec![base, admin, ca.ca_file.display().to_string()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_https_and_plain_http_is_refused_cleanly() {
    let ca = common::test_ca();
    let (node, admin, _config, _data) = tls_node(&ca).await;
    let port = node.local_addr().port();
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--cacert"])
        .arg(&ca.ca_file)
        .arg("-H")
        .arg(format!("Authorization: Bearer {admin}"))
        .arg(format!("https://localhost:{port}/v1/limits/ai_accounts"))
        .output()
        .await
        .expect("curl is on the machine");
    let body = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(body.contains("\"name\":\"ai_accounts\""), "{body}");
    // Without the CA, curl refuses the certificate.
    let refused = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error"])
        .arg(format!("https://localhost:{port}/healthz"))
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    // Plain HTTP to the TLS port: a clear answer, not a hang or garbage.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let body: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "tls_required", "{body}");
}
