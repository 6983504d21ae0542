//! One function per subcommand: parse, call, print.
//!
//! Why ~680 lines: `up` and the small commands (principals, ledger, audit) that print
//! one table each; the next split is one file per command group, as `tasks.rs`,
//! `governance.rs` and `bus.rs` already are (the architecture issue).

use std::process::ExitCode;

use anyhow::Context;
use colony_node::{Node, NodeConfig};
use serde_json::{json, Value};

use crate::client::{ApiFailure, Client};
use crate::output::{amount, table, text};
use crate::{AuditCommand, LedgerCommand, PrincipalsCommand, Remote, UpArgs};

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.demo {
        return crate::demo::run(args).await;
    }
    let mut config = NodeConfig {
        data_dir: args.data.clone(),
        listen: args.listen,
        ..NodeConfig::default()
    };
    if let Some(dir) = args.config {
        config.config_dir = dir;
        config.config_dir_required = true;
    }
    config.sequencer.snapshot_every_commands = args.snapshot_every.max(1);
    // Fault injection for the tests of a failing node (debug builds only).
    if cfg!(debug_assertions) {
        config.sequencer.fault_panic_on_justification =
            std::env::var("COLONY_FAULT_PANIC_ON_JUSTIFICATION").ok();
    }
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
    let node = Node::start(config)
        .await
        .context("the node did not start")?;
    let secure = node.tls().is_some();
    println!(
        "colony: listening on {} (data in {}); agent bus on {}://{}/v1/bus",
        node.base_url(),
        args.data.display(),
        if secure { "wss" } else { "ws" },
        node.local_addr()
    );
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
    println!(
        "colony: try `colony limits` or `curl {}{}/healthz`; Ctrl-C stops",
        if secure {
            "--cacert <certificate> "
        } else {
            ""
        },
        node.base_url()
    );
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

/// Runs a call and prints either the table (via `show`) or JSON; API errors become
/// exit code 1 with the error printed.
pub(crate) async fn call(
    remote: &Remote,
    request: impl std::future::Future<Output = anyhow::Result<Value>>,
    show: impl FnOnce(&Value),
) -> anyhow::Result<ExitCode> {
    match request.await {
        Ok(value) if remote.json => {
            crate::output::json(&value);
            Ok(ExitCode::SUCCESS)
        }
        Ok(value) => {
            show(&value);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => match error.downcast::<ApiFailure>() {
            Ok(failure) if remote.json => {
                crate::output::json(&failure.body);
                Ok(ExitCode::FAILURE)
            }
            Ok(failure) => {
                eprintln!("error: {failure}");
                if let Some(details) = failure.body["error"].as_object() {
                    for (key, value) in details
                        .iter()
                        .filter(|(k, _)| *k != "code" && *k != "message")
                    {
                        eprintln!("  {key}: {}", text(value));
                    }
                }
                Ok(ExitCode::FAILURE)
            }
            Err(other) => Err(other),
        },
    }
}

pub async fn limits(remote: Remote) -> anyhow::Result<ExitCode> {
    let client = Client::new(&remote)?;
    call(&remote, client.get("/v1/limits"), |value| {
        let rows: Vec<Vec<String>> = value["limits"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|limit| {
                let unit = limit["unit"].as_str().unwrap_or("");
                let window = limit["window_ms"]
                    .as_u64()
                    .map(|ms| {
                        format!(
                            "/{}",
                            humantime::format_duration(std::time::Duration::from_millis(ms))
                        )
                    })
                    .unwrap_or_default();
                vec![
                    text(&limit["name"]),
                    amount(&limit["usage"], unit),
                    amount(&limit["soft"], unit),
                    amount(&limit["hard"], unit),
                    text(&limit["state"]),
                    text(&limit["on_soft"]),
                    format!("{}{window}", if unit == "micro_usd" { "usd" } else { unit }),
                    text(&limit["enforcement"]),
                ]
            })
            .collect();
        table(
            &[
                "LIMIT", "USAGE", "SOFT", "HARD", "STATE", "ON_SOFT", "UNIT", "ENFORCED",
            ],
            &rows,
        );
    })
    .await
}

pub async fn principals(command: PrincipalsCommand) -> anyhow::Result<ExitCode> {
    match command {
        PrincipalsCommand::Add {
            name,
            kind,
            justification,
            roles,
            parent,
            address,
            priority,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = json!({
                "name": name, "kind": kind, "justification": justification, "roles": roles,
                "parent": parent, "address": address, "priority": priority,
            });
            call(&remote, client.post("/v1/principals", &body), |value| {
                if value["status"] == "queued" {
                    println!(
                        "queued (ticket {}, position {}): {}",
                        value["ticket"],
                        value["position"],
                        text(&value["message"])
                    );
                } else {
                    println!("created {} (id {})", text(&value["address"]), value["id"]);
                }
                for warning in value["warnings"].as_array().into_iter().flatten() {
                    println!("warning: {}", text(&warning["message"]));
                }
                println!("token: {}", text(&value["token"]));
                println!("(the token is shown once; store it now)");
            })
            .await
        }
        PrincipalsCommand::List { all, remote } => {
            let client = Client::new(&remote)?;
            let path = if all {
                "/v1/principals?all=true"
            } else {
                "/v1/principals"
            };
            call(&remote, client.get(path), |value| {
                let rows: Vec<Vec<String>> = value["principals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let roles: Vec<String> = p["roles"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text)
                            .collect();
                        vec![
                            text(&p["address"]),
                            text(&p["name"]),
                            text(&p["kind"]),
                            roles.join(","),
                            text(&p["state"]),
                            text(&p["parent"]),
                            text(&p["created_at"]),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ADDRESS", "NAME", "KIND", "ROLES", "STATE", "PARENT", "CREATED",
                    ],
                    &rows,
                );
            })
            .await
        }
        PrincipalsCommand::Remove {
            address,
            justification,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let path = format!("/v1/principals/{address}/remove");
            call(
                &remote,
                client.post(&path, &json!({ "justification": justification })),
                |_| {
                    println!("removed {address}");
                },
            )
            .await
        }
        PrincipalsCommand::Show { address, remote } => {
            let client = Client::new(&remote)?;
            let path = format!("/v1/principals/{address}");
            call(&remote, client.get(&path), |p| {
                println!(
                    "{} {} ({}), {}",
                    text(&p["address"]),
                    text(&p["name"]),
                    text(&p["kind"]),
                    text(&p["state"])
                );
                if let Some(quarantine) = p["quarantine"].as_object() {
                    let evidence = &quarantine["evidence"];
                    println!(
                        "quarantined since {}: {} {} in a window, past {} ({})",
                        text(&quarantine["since"]),
                        evidence["count"],
                        text(&evidence["signal"]),
                        evidence["threshold"],
                        text(&evidence["rule"])
                    );
                    println!(
                        "released {} reservations; revoked leases {}; ended workers {}",
                        quarantine["released_reservations"],
                        quarantine["revoked_leases"],
                        quarantine["ended_workers"]
                    );
                }
            })
            .await
        }
        PrincipalsCommand::Release {
            address,
            justification,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let path = format!("/v1/principals/{address}/release");
            call(
                &remote,
                client.post(&path, &json!({ "justification": justification })),
                |_| {
                    println!("released {address} from quarantine");
                },
            )
            .await
        }
    }
}

pub async fn ledger(command: LedgerCommand) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Me { remote } => {
            let client = Client::new(&remote)?;
            call(&remote, client.get("/v1/ledger/me"), |value| {
                println!("principal {}", text(&value["principal"]));
                let rows: Vec<Vec<String>> = value["balances"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, b)| {
                        let unit = b["unit"].as_str().unwrap_or("");
                        vec![
                            name.clone(),
                            text(&b["kind"]),
                            amount(&b["quota"], unit),
                            amount(&b["used"], unit),
                            amount(&b["reserved"], unit),
                            amount(&b["available"], unit),
                            amount(&b["shortfall"], unit),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "RESOURCE",
                        "KIND",
                        "QUOTA",
                        "USED",
                        "RESERVED",
                        "AVAILABLE",
                        "SHORTFALL",
                    ],
                    &rows,
                );
                let reservations = value["reservations"].as_array().map_or(0, Vec::len);
                println!("{reservations} open reservation(s)");
            })
            .await
        }
        LedgerCommand::Reserve {
            resource,
            amount: requested,
            justification,
            ttl_ms,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = json!({ "resource": resource, "amount": requested, "justification": justification, "ttl_ms": ttl_ms });
            call(&remote, client.post("/v1/ledger/reserve", &body), |value| {
                println!(
                    "reservation {} holds {} {} until {}",
                    value["reservation"],
                    value["amount"],
                    text(&value["unit"]),
                    text(&value["expires_at"])
                );
                for warning in value["warnings"].as_array().into_iter().flatten() {
                    println!("warning: {}", text(&warning["message"]));
                }
            })
            .await
        }
        LedgerCommand::Commit {
            reservation,
            actual,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = json!({ "reservation": reservation, "actual": actual });
            call(&remote, client.post("/v1/ledger/commit", &body), |value| {
                println!(
                    "charged {}, refunded {}, shortfall {}",
                    value["charged"], value["refunded"], value["shortfall"]
                );
            })
            .await
        }
        LedgerCommand::Release {
            reservation,
            remote,
        } => {
            let client = Client::new(&remote)?;
            call(
                &remote,
                client.post("/v1/ledger/release", &json!({ "reservation": reservation })),
                |_| {
                    println!("released {reservation}");
                },
            )
            .await
        }
    }
}

pub async fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { data, replay, json } => verify(&data, replay, json),
        AuditCommand::Tail {
            limit,
            actor,
            address,
            follow,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let limit = limit.clamp(1, 1000);
            let mut filter = String::new();
            if let Some(actor) = &actor {
                filter.push_str(&format!("&actor={actor}"));
            }
            if let Some(address) = &address {
                filter.push_str(&format!("&address={address}"));
            }
            let last = match client.get("/v1/audit?limit=1").await {
                Ok(value) => value["last_seq"].as_u64().unwrap_or(0),
                Err(error) => return call(&remote, async { Err(error) }, |_| {}).await,
            };
            // Unfiltered, the tail is the last `limit` records. Filtered, read forward
            // and keep the newest `limit` that match.
            let mut after = if filter.is_empty() {
                last.saturating_sub(limit as u64)
            } else {
                0
            };
            let mut tail = std::collections::VecDeque::new();
            loop {
                let page = client
                    .get(&format!("/v1/audit?after={after}&limit={limit}{filter}"))
                    .await?;
                for record in page["records"].as_array().into_iter().flatten() {
                    tail.push_back(record.clone());
                    if tail.len() > limit {
                        tail.pop_front();
                    }
                }
                let next = page["next_after"].as_u64().unwrap_or(after);
                if next == after || next >= last {
                    after = next;
                    break;
                }
                after = next;
            }
            print_records(tail.make_contiguous(), remote.json, false);
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                let page = client
                    .get(&format!("/v1/audit?after={after}&limit=1000{filter}"))
                    .await?;
                let records = page["records"].as_array().cloned().unwrap_or_default();
                print_records(&records, remote.json, true);
                let next = page["next_after"].as_u64().unwrap_or(after);
                if next == after {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                after = next;
            }
        }
    }
}

/// Decision records as a table, as rows one by one (when following), or as JSON lines.
fn print_records(records: &[Value], json_lines: bool, streaming: bool) {
    if json_lines {
        records.iter().for_each(|record| println!("{record}"));
        return;
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            vec![
                record["seq"].to_string(),
                text(&record["at"]),
                text(&record["actor"]),
                text(&record["action"]),
                text(&record["subject"]),
                text(&record["decision"]),
                text(&record["reason"]["code"]),
                text(&record["justification"]),
            ]
        })
        .collect();
    if streaming {
        rows.iter().for_each(|row| println!("{}", row.join("  ")));
    } else {
        table(
            &[
                "SEQ",
                "AT",
                "ACTOR",
                "ACTION",
                "SUBJECT",
                "DECISION",
                "REASON",
                "JUSTIFICATION",
            ],
            &rows,
        );
    }
}

fn verify(data: &std::path::Path, replay: bool, json_output: bool) -> anyhow::Result<ExitCode> {
    match colony_log::verify_audit(data) {
        Ok(report) => {
            if replay {
                if let Err(error) = colony_log::verify_replay(data) {
                    if json_output {
                        crate::output::json(&json!({ "ok": false, "replay": error.to_string() }));
                    } else {
                        eprintln!("the chain verifies, but replay does not: {error}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            }
            if json_output {
                crate::output::json(
                    &json!({ "ok": true, "records": report.records, "head_hash": report.head_hash, "replayed": replay }),
                );
            } else {
                println!(
                    "verified {} decision records; head hash {}",
                    report.records, report.head_hash
                );
                if replay {
                    println!("replaying the command log reproduces every record");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            if json_output {
                crate::output::json(
                    &json!({ "ok": false, "seq": failure.seq, "file": failure.file, "offset": failure.offset, "reason": failure.reason }),
                );
            } else {
                eprintln!("{failure}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `colony bus streams`.
pub async fn streams(remote: &Remote) -> anyhow::Result<ExitCode> {
    let client = Client::new(remote)?;
    call(remote, client.get("/v1/streams"), |value| {
        let rows: Vec<Vec<String>> = value["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|stream| {
                vec![
                    text(&stream["name"]),
                    stream["subjects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect::<Vec<_>>()
                        .join(","),
                    text(&stream["messages"]),
                    text(&stream["bytes"]),
                    format!(
                        "{}..{}",
                        text(&stream["first_seq"]),
                        text(&stream["last_seq"])
                    ),
                    text(&stream["dead_letter_subject"]),
                ]
            })
            .collect();
        table(
            &[
                "STREAM",
                "SUBJECTS",
                "MESSAGES",
                "BYTES",
                "SEQ",
                "DEAD LETTERS",
            ],
            &rows,
        );
    })
    .await
}

/// `colony bus stream-add`.
pub async fn stream_add(remote: &Remote, mut body: Value) -> anyhow::Result<ExitCode> {
    if let Some(object) = body.as_object_mut() {
        object.retain(|_, value| !value.is_null());
    }
    if body.get("justification").is_none() {
        body["justification"] = json!(format!("define stream {}", text(&body["name"])));
    }
    let client = Client::new(remote)?;
    call(remote, client.post("/v1/streams", &body), |value| {
        let stream = &value["stream"];
        println!(
            "stream {} stores {} (decision {})",
            text(&stream["name"]),
            stream["subjects"],
            text(&value["seq"])
        );
    })
    .await
}
