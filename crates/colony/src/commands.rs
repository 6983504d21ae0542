//! One function per subcommand: parse, call, print.
//!
//! The command groups have files of their own (`principals.rs`, `ledger.rs`,
//! `audit.rs`, `tasks.rs`, `governance.rs`, `tokens.rs`, `grants.rs`, `bus.rs`).

use std::process::ExitCode;

use anyhow::Context;
use colony_node::{Node, NodeConfig};
use serde_json::Value;

use colony_api::limits::LimitList;
use colony_api::streams::{CreateStream, StreamDefined, StreamList};

use crate::client::{ApiFailure, Client};
use crate::output::{amount, rows, text};
use crate::{Remote, UpArgs};

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.demo {
        return crate::demo::run(args).await;
    }
    let config = node_config(&args)?;
    let node = Node::start(config)
        .await
        .context("the node did not start")?;
    print_banner(&node, &args);
    tokio::select! {
        _ = wait_for_signal() => {}
        reason = node.failed() => {
            // Nothing more is decided or written: the state may be half changed.
            // A supervisor (systemd, Kubernetes) restarts the node from its log.
            eprintln!("colony: the node cannot go on: {reason}");
            eprintln!("colony: exiting with status 70 without a snapshot; the log holds every command answered as durable");
            // The requests in flight are answered (503) before the process goes.
            node.abandon(std::time::Duration::from_secs(2)).await;
            return Ok(ExitCode::from(70));
        }
    }
    eprintln!(
        "colony: stopping: finishing requests in flight, syncing the log, writing a snapshot"
    );
    node.shutdown().await?;
    eprintln!("colony: stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// The node `colony up` starts, from its flags and the environment.
fn node_config(args: &UpArgs) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig {
        data_dir: args.data.clone(),
        listen: args.listen,
        ..NodeConfig::default()
    };
    if let Some(dir) = args.config.clone() {
        config.config_dir = dir;
        config.config_dir_required = true;
    }
    config.sequencer.snapshot_every_commands = args.snapshot_every.max(1);
    // OpenTelemetry: the standard variables say where the gateway's spans go.
    config.telemetry =
        colony_node::telemetry::TelemetryConfig::from_env(|name| std::env::var(name).ok())
            .map_err(|message| anyhow::anyhow!("OpenTelemetry: {message}"))?;
    let cluster_file = colony_cluster::load_file(&config.config_dir)?;
    config.cluster = colony_cluster::ClusterConfig::resolve(
        cluster_file,
        &args.cluster,
        args.node_name.as_deref(),
    )?;
    // Fault injection for the tests of a failing node (test builds only).
    config.sequencer.fault_from_env();
    config.tls = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => Some(colony_node::tls::TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (_, _, true) => Some(colony_node::tls::TlsSource::SelfSigned {
            names: node_names(args.listen),
        }),
        _ => None,
    };
    if let Some(workers) = args.workers {
        let program = std::env::current_exe().context("cannot find the colony binary")?;
        let mut command = vec![program.display().to_string(), "worker".into()];
        // Without --worker-exec, LLM workers: the model comes to them as COLONY_MODEL.
        if let Some(exec) = args.worker_exec.clone() {
            command.extend(["--exec".to_string(), exec]);
        }
        let profile = colony_node::supervisor::Profile {
            name: "default".into(),
            command,
            capabilities: args.worker_capabilities.clone(),
            model: args.worker_model.clone(),
            min: workers,
            max: args.workers_max.unwrap_or(workers).max(workers).max(1),
        };
        config.supervisor = Some(colony_node::supervisor::SupervisorConfig::with_profiles(
            vec![profile],
        ));
    }
    Ok(config)
}

/// What a person starting a node needs to know: where it listens, its key, its
/// cluster, its certificate, the admin token and the dashboard.
fn print_banner(node: &Node, args: &UpArgs) {
    let secure = node.tls().is_some();
    if let Some(telemetry) = node.telemetry_endpoint() {
        println!("colony: the gateway's spans go to {telemetry} (OTLP)");
    }
    println!(
        "colony: listening on {} (data in {}); agent bus on {}://{}/v1/bus",
        node.base_url(),
        args.data.display(),
        if secure { "wss" } else { "ws" },
        node.local_addr()
    );
    println!(
        "colony: node key {} (in {}): it signs the decision log's heads, GET /v1/audit/head",
        node.public_key(),
        args.data
            .join(colony_node::identity::PUBLIC_KEY_FILE)
            .display()
    );
    if let Some(cluster) = node.cluster() {
        println!(
            "colony: node {} of a cluster; the command log is the JetStream stream {}, applied here through command {}",
            cluster.node_name(),
            cluster.stream_name(),
            node.last_seq()
        );
    }
    if let Some(tls) = node.tls() {
        println!(
            "colony: TLS certificate {} (SHA-256 {}); clients trust it with --ca-file {} or SSL_CERT_FILE",
            tls.cert_file.display(),
            tls.fingerprint,
            tls.cert_file.display()
        );
    }
    if let Some(file) = node.admin_token_file() {
        println!(
            "colony: first start: created the admin principal 1.1; its token is in {} (mode 0600)",
            file.display()
        );
    }
    // The dashboard's link carries the admin token in the fragment, which browsers
    // never send to a server; the page moves it to session storage at once.
    match std::fs::read_to_string(args.data.join("admin.token")) {
        Ok(token) => println!(
            "colony: dashboard at {}/#token={}",
            node.base_url(),
            token.trim()
        ),
        Err(_) => println!("colony: dashboard at {}/ (paste a token)", node.base_url()),
    }
    println!(
        "colony: try `colony limits` or `curl {}{}/healthz`; Ctrl-C stops",
        if secure {
            "--cacert <certificate> "
        } else {
            ""
        },
        node.base_url()
    );
}

/// The names a self-signed certificate is made for: localhost, the loopback
/// addresses, the listening address, and the host's name.
fn node_names(listen: std::net::SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// `--priority`: low, normal, high or critical.
pub(crate) fn parse_priority(priority: &str) -> anyhow::Result<colony_kernel::Priority> {
    colony_kernel::Priority::parse(priority).ok_or_else(|| {
        anyhow::anyhow!("--priority is low, normal, high or critical, not `{priority}`")
    })
}

/// `GET path`, shown as [`call`] does.
pub(crate) async fn get<T: serde::de::DeserializeOwned>(
    remote: &Remote,
    path: &str,
    show: impl FnOnce(&T),
) -> anyhow::Result<ExitCode> {
    let client = Client::new(remote)?;
    call(remote, client.get(path), show).await
}

/// `POST path` with `body`, shown as [`call`] does.
pub(crate) async fn post<T: serde::de::DeserializeOwned>(
    remote: &Remote,
    path: &str,
    body: &impl serde::Serialize,
    show: impl FnOnce(&T),
) -> anyhow::Result<ExitCode> {
    let client = Client::new(remote)?;
    call(remote, client.post(path, body), show).await
}

/// Runs a call and prints either the node's JSON as it came (`--json`) or, read as
/// the API's type `T`, what `show` makes of it; API errors become exit code 1 with
/// the error printed.
pub(crate) async fn call<T: serde::de::DeserializeOwned>(
    remote: &Remote,
    request: impl std::future::Future<Output = anyhow::Result<Value>>,
    show: impl FnOnce(&T),
) -> anyhow::Result<ExitCode> {
    match request.await {
        Ok(value) if remote.json => {
            crate::output::json(&value);
            Ok(ExitCode::SUCCESS)
        }
        Ok(value) => {
            show(&crate::client::typed::<T>(value)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => match error.downcast::<ApiFailure>() {
            Ok(failure) if remote.json => {
                crate::output::json(&failure.body);
                Ok(ExitCode::FAILURE)
            }
            Ok(failure) => {
                eprintln!("error: {failure}");
                for (key, value) in failure.error().map(|e| e.details).unwrap_or_default() {
                    eprintln!("  {key}: {}", text(&value));
                }
                Ok(ExitCode::FAILURE)
            }
            Err(other) => Err(other),
        },
    }
}

pub async fn limits(remote: Remote) -> anyhow::Result<ExitCode> {
    get(&remote, "/v1/limits", |list: &LimitList| {
        let headers = [
            "LIMIT", "USAGE", "SOFT", "HARD", "STATE", "ON_SOFT", "UNIT", "ENFORCED",
        ];
        rows(&headers, &list.limits, |limit| {
            let unit = limit.unit.as_str();
            let window = limit
                .window_ms
                .map(|ms| {
                    format!(
                        "/{}",
                        humantime::format_duration(std::time::Duration::from_millis(ms))
                    )
                })
                .unwrap_or_default();
            vec![
                limit.name.clone(),
                amount(Some(limit.usage), unit),
                amount(limit.soft, unit),
                amount(limit.hard, unit),
                limit.state.clone(),
                limit.on_soft.as_str().to_string(),
                format!("{}{window}", if unit == "micro_usd" { "usd" } else { unit }),
                limit.enforcement.as_str().to_string(),
            ]
        });
    })
    .await
}

/// `colony bus streams`.
pub async fn streams(remote: &Remote) -> anyhow::Result<ExitCode> {
    let headers = [
        "STREAM",
        "SUBJECTS",
        "MESSAGES",
        "BYTES",
        "SEQ",
        "DEAD LETTERS",
    ];
    get(remote, "/v1/streams", |list: &StreamList| {
        rows(&headers, &list.streams, |stream| {
            vec![
                stream.name.clone(),
                stream.subjects.join(","),
                stream.messages.to_string(),
                stream.bytes.to_string(),
                format!("{}..{}", stream.first_seq, stream.last_seq),
                stream.dead_letter_subject.clone(),
            ]
        });
    })
    .await
}

/// `colony bus stream-add`.
pub async fn stream_add(remote: &Remote, mut body: CreateStream) -> anyhow::Result<ExitCode> {
    if body.justification.is_none() {
        body.justification = Some(format!("define stream {}", body.name));
    }
    post(remote, "/v1/streams", &body, |defined: &StreamDefined| {
        println!(
            "stream {} stores {} (decision {})",
            defined.stream.name,
            defined.stream.subjects.join(", "),
            defined.seq
        );
    })
    .await
}

/// `colony alerts`: the latest alerts and what stands raised, or the dead letters.
pub async fn alerts(limit: usize, dead_letters: bool, remote: &Remote) -> anyhow::Result<ExitCode> {
    if dead_letters {
        let headers = ["DELIVERY", "AT", "WEBHOOK", "ATTEMPTS", "ERROR"];
        return get(
            remote,
            "/v1/alerts/dead-letters",
            |list: &colony_api::alerts::DeadLetterList| {
                rows(&headers, &list.dead_letters, |d| {
                    vec![
                        d.delivery.clone(),
                        d.at.clone(),
                        d.webhook.clone(),
                        d.attempts.to_string(),
                        d.error.clone(),
                    ]
                });
            },
        )
        .await;
    }
    let headers = [
        "ID",
        "AT",
        "KIND",
        "PRINCIPAL",
        "FIGURE",
        "THRESHOLD",
        "USAGE",
        "OF",
    ];
    get(
        remote,
        &format!("/v1/alerts?limit={limit}"),
        |list: &colony_api::alerts::AlertList| {
            rows(&headers, &list.alerts, |a| {
                vec![
                    a.id.to_string(),
                    a.at.clone(),
                    a.kind.clone(),
                    a.principal.clone().unwrap_or_default(),
                    a.figure.clone(),
                    a.threshold.clone(),
                    a.usage.to_string(),
                    a.of.map_or("-".into(), |of| of.to_string()),
                ]
            });
            let raised: Vec<String> = list
                .raised
                .iter()
                .map(|r| match &r.principal {
                    Some(p) => format!("{p} {} {}", r.figure, r.threshold),
                    None => format!("{} {}", r.figure, r.threshold),
                })
                .collect();
            let more = list.raised_total.saturating_sub(list.raised.len());
            println!(
                "\nraised now: {}{}",
                if raised.is_empty() {
                    "nothing".into()
                } else {
                    raised.join(", ")
                },
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
            println!(
                "webhooks: {} ({} dead letters; `colony alerts --dead-letters`)",
                list.webhooks, list.dead_letters
            );
        },
    )
    .await
}

/// `colony mock-llm`: the OpenAI-compatible mock upstream, plain or over TLS.
pub async fn mock_llm(
    listen: std::net::SocketAddr,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(colony_node::tls::ServerTls::load(
            &colony_node::tls::TlsSource::Files { cert, key },
            std::path::Path::new("."),
        )?),
        _ => None,
    };
    println!(
        "colony mock-llm: an OpenAI-compatible mock on {}://{}/v1",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    colony_node::listener::serve_router(
        listener,
        colony_mock_llm::router(Default::default()),
        tls.map(|tls| tls.config),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
