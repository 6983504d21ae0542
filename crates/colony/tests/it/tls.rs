//! `colony up --tls-self-signed`: a certificate made for the node's names on first
//! start and kept, its fingerprint printed, and the CLI (HTTP and the bus over wss://)
//! trusting it with --ca-file.

use std::path::Path;
use std::process::Command;

use crate::common;
use common::{start_with_args, COLONY};

fn cli(url: &str, token: &str, ca_file: Option<&Path>, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(COLONY);
    command
        .args(args)
        .env("COLONY_URL", url)
        .env("COLONY_TOKEN", token)
        .env_remove("COLONY_CA_FILE")
        .env_remove("SSL_CERT_FILE");
    if let Some(ca_file) = ca_file {
        command.arg("--ca-file").arg(ca_file);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn a_self_signed_node_is_reached_with_its_certificate() {
    let data = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    let (mut node, url) = start_with_args(data.path(), &config, &["--tls-self-signed"], &[]);
    assert!(url.starts_with("https://"), "{url}");
    let certificate = data.path().join("tls/cert.pem");
    assert!(certificate.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    let token = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let url = url.replace("127.0.0.1", "localhost");

    let (ok, out) = cli(&url, &token, Some(&certificate), &["limits", "--json"]);
    assert!(ok, "{out}");
    assert!(out.contains("ai_accounts"), "{out}");
    // Without the certificate the CLI refuses the connection, saying why.
    let (ok, out) = cli(&url, &token, None, &["limits"]);
    assert!(!ok);
    assert!(
        out.to_lowercase().contains("certificate") || out.contains("error sending request"),
        "{out}"
    );
    // The bus over wss://.
    let (ok, out) = cli(
        &url,
        &token,
        Some(&certificate),
        &["bus", "pub", "tls.check", "{\"over\":\"wss\"}"],
    );
    assert!(ok, "{out}");

    // Restarted, the node keeps its certificate (same fingerprint).
    let before = std::fs::read(&certificate).unwrap();
    node.kill().unwrap();
    let _ = node.wait();
    let (mut node, _) = start_with_args(data.path(), &config, &["--tls-self-signed"], &[]);
    assert_eq!(std::fs::read(&certificate).unwrap(), before);
    node.kill().unwrap();
    let _ = node.wait();
}
