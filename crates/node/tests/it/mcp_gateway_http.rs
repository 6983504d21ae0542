//! Issue 28: an upstream MCP server reached over Streamable HTTP (the official
//! Python SDK's server, tests/python/mcp_upstream.py `--http`, behind a bearer
//! token): its tools offered as `remote__*` under the same rules as a program's, the
//! token read from `bearer_token_file`; a server that refuses the node's token is
//! not offered and does not hold the node; a misconfigured entry stops the start.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use super::mcp::Mcp;
use crate::common;

/// The upstream, running until dropped, and its URL.
async fn http_upstream(token: &str, dir: &std::path::Path) -> (tokio::process::Child, String) {
    upstream_with(token, dir, &[], "http").await
}

/// The upstream with more arguments (`--tls CERT KEY`, `--require-header N=V`).
async fn upstream_with(
    token: &str,
    dir: &std::path::Path,
    more: &[&str],
    scheme: &str,
) -> (tokio::process::Child, String) {
    let python = tokio::task::spawn_blocking(common::python).await.unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/mcp_upstream.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .args(["--http", token])
        .args(more)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the upstream MCP server starts");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the upstream says where it listens within 60 s")
    .unwrap()
    .expect("a `listening PORT` line");
    let port = line.strip_prefix("listening ").expect("listening PORT");
    (child, format!("{scheme}://127.0.0.1:{port}/mcp"))
}

/// Waits (30 s at most) until the dashboard shows each upstream as `want`s it: up
/// with its tools listed, or down with the reason. A CI run under load once listed
/// the tools before the node had reached an upstream, and once failed later in the
/// TLS test with its message cut from the log: this names the state it saw.
async fn settled(base: &str, admin: &str, want: &[(&str, bool)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let servers =
            common::get_json(base, admin, "/v1/dashboard").await["mcp"]["servers"].clone();
        let ready = want.iter().all(|(name, up)| {
            servers.as_array().is_some_and(|all| {
                all.iter().any(|s| {
                    s["name"] == json!(name)
                        && s["up"] == json!(up)
                        && if *up {
                            s["tools"].as_u64().unwrap_or(0) > 0
                        } else {
                            s["down_because"].is_string()
                        }
                })
            })
        });
        if ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstreams did not settle as {want:?} within 30 s: {servers}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_at_a_url_is_governed_like_a_program() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, url) = http_upstream("s3cret-token", dir.path()).await;
    let good = dir.path().join("good.token");
    std::fs::write(&good, "s3cret-token\n").unwrap();
    let bad = dir.path().join("bad.token");
    std::fs::write(&bad, "wrong").unwrap();
    let toml = format!(
        r#"
[[servers]]
name = "remote"
url = "{url}"
bearer_token_file = "{good}"
timeout = "3s"

[[servers.tools]]
name = "*"
io_ops = 2

[[servers.tools]]
name = "delete_note"
approval = "human"

[[servers]]
name = "refusing"
url = "{url}"
bearer_token_file = "{bad}"
start_timeout = "3s"

[[servers.tools]]
name = "*"
"#,
        good = good.display(),
        bad = bad.display(),
    );
    let config = common::genesis_dir(&[("mcp.toml", &toml)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let mcp = Mcp {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    let (agent_address, agent) =
        common::create_principal(&base, &admin, "remote-agent", "ai", &["member"]).await;

    settled(&base, &admin, &[("remote", true), ("refusing", false)]).await;
    let tools = mcp.tool_names(&agent).await;
    for tool in ["remote__read_note", "remote__delete_note", "remote__hang"] {
        assert!(tools.iter().any(|t| t == tool), "{tool} in {tools:?}");
    }
    assert!(
        !tools.iter().any(|t| t.starts_with("refusing__")),
        "a server that refused the node's token is not offered: {tools:?}"
    );

    // A read through the gateway: justified, charged, recorded.
    let read = mcp
        .call(
            &agent,
            "remote__read_note",
            json!({"name": "groceries", "justification": "what to buy"}),
        )
        .await;
    assert_ne!(read["isError"], json!(true), "{read}");
    assert_eq!(text(&read), "note groceries: remember the milk");
    let audit = common::get_json(
        &base,
        &admin,
        &format!("/v1/audit?actor={agent_address}&limit=100"),
    )
    .await;
    let recorded = audit["records"].as_array().unwrap().iter().any(|r| {
        r["action"] == "mcp.tool_call"
                && r.to_string().contains("remote__read_note")
                // Its two io_ops, charged in the record (a balance's `used` starts
                // again at every turn of the one-minute window).
                && r["detail"]["effect"]["charged"] == json!([["io_ops", 2]])
    });
    assert!(recorded, "{audit}");

    // Its deadline holds over HTTP too.
    let hung = mcp
        .call(
            &agent,
            "remote__hang",
            json!({"seconds": 30, "justification": "wait"}),
        )
        .await;
    assert_eq!(hung["isError"], json!(true), "{hung}");
    assert!(text(&hung).contains("within 3000 ms"), "{hung}");
    // A destructive call waits for a human: denied here by its absence (nothing
    // reaches the server); the read still works after the cut one.
    let again = mcp
        .call(
            &agent,
            "remote__read_note",
            json!({"name": "again", "justification": "still there"}),
        )
        .await;
    assert_eq!(text(&again), "note again: remember the milk", "{again}");
    assert!(!dir.path().join("deleted.txt").exists());
    node.shutdown().await.unwrap();
}

/// A server over TLS with a private CA and a header it requires: reached with
/// `ca_file` and `headers`; without the CA, or without the header, it is not offered
/// (and does not hold the node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_tls_is_checked_against_its_ca_and_sent_its_headers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::tools::test_ca();
    let (cert, key) = (
        ca.cert_file.display().to_string(),
        ca.key_file.display().to_string(),
    );
    let (_upstream, url) = upstream_with(
        "tls-token",
        dir.path(),
        &["--tls", &cert, &key, "--require-header", "X-Tenant=colony"],
        "https",
    )
    .await;
    let token = dir.path().join("upstream.token");
    std::fs::write(&token, "tls-token").unwrap();
    // A generous start: the refused servers fail at once (TLS, HTTP); only the Python
    // server's start on a loaded machine waits (5 s was once too little).
    let entry = |name: &str, extra: &str| {
        format!(
            "[[servers]]\nname = \"{name}\"\nurl = \"{url}\"\nbearer_token_file = \"{}\"\nstart_timeout = \"20s\"\n{extra}\n[[servers.tools]]\nname = \"*\"\n\n",
            token.display()
        )
    };
    let ca_file = format!("ca_file = \"{}\"", ca.ca_file.display());
    let toml = [
        entry(
            "secure",
            &format!("{ca_file}\nheaders = {{ \"X-Tenant\" = \"colony\" }}"),
        ),
        entry("untrusted", "headers = { \"X-Tenant\" = \"colony\" }"),
        entry("headless", &ca_file),
    ]
    .concat();
    let config = common::genesis_dir(&[("mcp.toml", &toml)]);
    let data = tempfile::tempdir().unwrap();
    let (node, base, admin) = common::start(data.path(), config.path()).await;
    let mcp = Mcp {
        base: base.clone(),
        http: reqwest::Client::new(),
    };
    let (_, agent) = common::create_principal(&base, &admin, "tls-agent", "ai", &["member"]).await;
    settled(
        &base,
        &admin,
        &[("secure", true), ("untrusted", false), ("headless", false)],
    )
    .await;
    let tools = mcp.tool_names(&agent).await;
    assert!(tools.iter().any(|t| t == "secure__read_note"), "{tools:?}");
    for refused in ["untrusted__", "headless__"] {
        assert!(
            !tools.iter().any(|t| t.starts_with(refused)),
            "{refused} is not offered: {tools:?}"
        );
    }
    let read = mcp
        .call(
            &agent,
            "secure__read_note",
            json!({"name": "vault", "justification": "over TLS"}),
        )
        .await;
    assert_eq!(text(&read), "note vault: remember the milk", "{read}");
    let servers = common::get_json(&base, &admin, "/v1/dashboard").await["mcp"]["servers"].clone();
    let up: Vec<(String, bool)> = servers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["up"] == json!(true),
            )
        })
        .collect();
    assert_eq!(
        up,
        [
            ("secure".to_string(), true),
            ("untrusted".to_string(), false),
            ("headless".to_string(), false)
        ],
        "{servers}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_server_at_a_url_stops_the_start_naming_it() {
    for (toml, expected) in [
        (
            "[[servers]]\nname = \"r\"\nurl = \"ftp://example.com/mcp\"\n",
            "http:// or https://",
        ),
        (
            "[[servers]]\nname = \"r\"\nurl = \"http://127.0.0.1:9/mcp\"\nread_only = [\"/tmp\"]\n",
            "runs elsewhere",
        ),
        (
            "[[servers]]\nname = \"r\"\nurl = \"http://127.0.0.1:9/mcp\"\nbearer_token_env = \"COLONY_TEST_SURELY_UNSET_TOKEN\"\n",
            "COLONY_TEST_SURELY_UNSET_TOKEN",
        ),
        (
            "[[servers]]\nname = \"r\"\nurl = \"http://127.0.0.1:9/mcp\"\nbearer_token_file = \"relative.token\"\n",
            "absolute path",
        ),
        (
            "[[servers]]\nname = \"r\"\ncommand = [\"true\"]\nbearer_token_env = \"X\"\n",
            "for a server at a `url`",
        ),
        (
            "[[servers]]\nname = \"r\"\ncommand = [\"true\"]\nheaders = { \"X-A\" = \"1\" }\n",
            "for a server at a `url`",
        ),
        (
            "[[servers]]\nname = \"r\"\nurl = \"https://127.0.0.1:9/mcp\"\nca_file = \"/surely/not/here/ca.pem\"\n",
            "ca_file",
        ),
        (
            "[[servers]]\nname = \"r\"\nurl = \"https://127.0.0.1:9/mcp\"\nheaders_env = { \"X-Api-Key\" = \"COLONY_TEST_SURELY_UNSET_KEY\" }\n",
            "COLONY_TEST_SURELY_UNSET_KEY",
        ),
        (
            "[[servers]]\nname = \"r\"\nurl = \"https://127.0.0.1:9/mcp\"\nheaders = { \"Authorization\" = \"Bearer x\" }\n",
            "set by the node",
        ),
    ] {
        let config = common::genesis_dir(&[("mcp.toml", toml)]);
        let data = tempfile::tempdir().unwrap();
        let error = match colony_node::Node::start(common::node_config(data.path(), config.path())).await {
            Ok(_) => panic!("started with {toml}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "{toml}: {error}");
    }
}
