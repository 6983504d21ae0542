//! One function per subcommand: parse, call, print.
//!
//! Why ~700 lines: `up` and the small commands (principals, ledger, audit) that print
//! one table each; the next split is one file per command group, as `tasks.rs`,
//! `governance.rs` and `bus.rs` already are (the architecture issue).

use std::process::ExitCode;

use anyhow::Context;
use colony_node::{Node, NodeConfig};
use serde_json::{json, Value};

use colony_api::audit::AuditPage;
use colony_api::ledger::{
    CommitRequest, Committed, LedgerView, ReleaseRequest, Released, ReserveRequest, Reserved,
};
use colony_api::limits::LimitList;
use colony_api::principals::{
    CreateAnswer, CreatePrincipal, PrincipalAction, PrincipalList, PrincipalView,
};
use colony_api::streams::{CreateStream, StreamDefined, StreamList};
use colony_api::Justified;

use crate::client::{ApiFailure, Client};
use crate::output::{amount, opt, table, text};
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
    let client = Client::new(&remote)?;
    call(&remote, client.get("/v1/limits"), |list: &LimitList| {
        let rows: Vec<Vec<String>> = list
            .limits
            .iter()
            .map(|limit| {
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
            let body = CreatePrincipal {
                name,
                kind,
                justification: Some(justification),
                roles,
                parent,
                address,
                priority: colony_kernel::Priority::parse(&priority).ok_or_else(|| {
                    anyhow::anyhow!("--priority is low, normal, high or critical, not `{priority}`")
                })?,
            };
            call(
                &remote,
                client.post("/v1/principals", &body),
                |answer: &CreateAnswer| {
                    let (token, warnings) = match answer {
                        CreateAnswer::Queued(queued) => {
                            println!(
                                "queued (ticket {}, position {}): {}",
                                queued.ticket, queued.position, queued.message
                            );
                            (&queued.token, &queued.warnings)
                        }
                        CreateAnswer::Created(created) => {
                            println!("created {} (id {})", created.address, created.id);
                            (&created.token, &created.warnings)
                        }
                    };
                    for warning in warnings {
                        println!("warning: {}", warning.message);
                    }
                    println!("token: {token}");
                    println!("(the token is shown once; store it now)");
                },
            )
            .await
        }
        PrincipalsCommand::List { all, remote } => {
            let client = Client::new(&remote)?;
            let path = if all {
                "/v1/principals?all=true"
            } else {
                "/v1/principals"
            };
            call(&remote, client.get(path), |list: &PrincipalList| {
                let rows: Vec<Vec<String>> = list
                    .principals
                    .iter()
                    .map(|p| {
                        vec![
                            p.address.clone(),
                            p.name.clone(),
                            p.kind.clone(),
                            p.roles.join(","),
                            p.state.clone(),
                            opt(&p.parent),
                            p.created_at.clone(),
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
            let body = Justified {
                justification: Some(justification),
            };
            call(&remote, client.post(&path, &body), |_: &PrincipalAction| {
                println!("removed {address}");
            })
            .await
        }
        PrincipalsCommand::Show { address, remote } => {
            let client = Client::new(&remote)?;
            let path = format!("/v1/principals/{address}");
            call(&remote, client.get(&path), |p: &PrincipalView| {
                println!("{} {} ({}), {}", p.address, p.name, p.kind, p.state);
                if let Some(quarantine) = &p.quarantine {
                    let evidence = &quarantine.evidence;
                    println!(
                        "quarantined since {}: {} {} in a window, past {} ({})",
                        quarantine.since,
                        evidence.count,
                        evidence.signal.as_str(),
                        evidence.threshold,
                        match evidence.rule {
                            colony_kernel::anomaly::EvidenceRule::Ceiling => "ceiling",
                            colony_kernel::anomaly::EvidenceRule::Baseline => "baseline",
                        }
                    );
                    println!(
                        "released {} reservations; revoked leases {:?}; ended workers {:?}",
                        quarantine.released_reservations,
                        quarantine.revoked_leases,
                        quarantine.ended_workers
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
            let body = Justified {
                justification: Some(justification),
            };
            call(&remote, client.post(&path, &body), |_: &PrincipalAction| {
                println!("released {address} from quarantine");
            })
            .await
        }
    }
}

pub async fn ledger(command: LedgerCommand) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Me { remote } => {
            let client = Client::new(&remote)?;
            call(
                &remote,
                client.get("/v1/ledger/me"),
                |ledger: &LedgerView| {
                    println!("principal {}", ledger.principal);
                    let rows: Vec<Vec<String>> = ledger
                        .balances
                        .iter()
                        .map(|(name, b)| {
                            let unit = b.unit.as_str();
                            vec![
                                name.clone(),
                                b.kind.clone(),
                                amount(b.quota, unit),
                                amount(Some(b.used), unit),
                                amount(Some(b.reserved), unit),
                                amount(b.available, unit),
                                amount(Some(b.shortfall), unit),
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
                    let reservations = ledger.reservations.len();
                    println!("{reservations} open reservation(s)");
                },
            )
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
            let body = ReserveRequest {
                resource,
                amount: requested,
                justification: Some(justification),
                ttl_ms,
            };
            call(
                &remote,
                client.post("/v1/ledger/reserve", &body),
                |reserved: &Reserved| {
                    println!(
                        "reservation {} holds {} {} until {}",
                        reserved.reservation, reserved.amount, reserved.unit, reserved.expires_at
                    );
                    for warning in &reserved.warnings {
                        println!("warning: {}", warning.message);
                    }
                },
            )
            .await
        }
        LedgerCommand::Commit {
            reservation,
            actual,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = CommitRequest {
                reservation,
                actual,
                justification: None,
            };
            call(
                &remote,
                client.post("/v1/ledger/commit", &body),
                |committed: &Committed| {
                    println!(
                        "charged {}, refunded {}, shortfall {}",
                        committed.charged, committed.refunded, committed.shortfall
                    );
                },
            )
            .await
        }
        LedgerCommand::Release {
            reservation,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = ReleaseRequest {
                reservation,
                justification: None,
            };
            call(
                &remote,
                client.post("/v1/ledger/release", &body),
                |_: &Released| {
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
            let last = match client.get_as::<AuditPage>("/v1/audit?limit=1").await {
                Ok(page) => page.last_seq,
                Err(error) => return call(&remote, async { Err(error) }, |_: &Value| {}).await,
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
                let page: AuditPage = client
                    .get_as(&format!("/v1/audit?after={after}&limit={limit}{filter}"))
                    .await?;
                for record in page.records {
                    tail.push_back(record);
                    if tail.len() > limit {
                        tail.pop_front();
                    }
                }
                let next = page.next_after;
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
                let page: AuditPage = client
                    .get_as(&format!("/v1/audit?after={after}&limit=1000{filter}"))
                    .await?;
                print_records(&page.records, remote.json, true);
                let next = page.next_after;
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
            match serde_json::from_value::<colony_log::audit::AuditRecord>(record.clone()) {
                Ok(record) => vec![
                    record.seq.to_string(),
                    record.at,
                    record.actor,
                    record.action,
                    record.subject,
                    record.decision,
                    text(&record.reason["code"]),
                    record.justification,
                ],
                Err(error) => vec![format!("(a record this CLI cannot read: {error})")],
            }
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
    call(remote, client.get("/v1/streams"), |list: &StreamList| {
        let rows: Vec<Vec<String>> = list
            .streams
            .iter()
            .map(|stream| {
                vec![
                    stream.name.clone(),
                    stream.subjects.join(","),
                    stream.messages.to_string(),
                    stream.bytes.to_string(),
                    format!("{}..{}", stream.first_seq, stream.last_seq),
                    stream.dead_letter_subject.clone(),
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
pub async fn stream_add(remote: &Remote, mut body: CreateStream) -> anyhow::Result<ExitCode> {
    if body.justification.is_none() {
        body.justification = Some(format!("define stream {}", body.name));
    }
    let client = Client::new(remote)?;
    call(
        remote,
        client.post("/v1/streams", &body),
        |defined: &StreamDefined| {
            println!(
                "stream {} stores {} (decision {})",
                defined.stream.name,
                defined.stream.subjects.join(", "),
                defined.seq
            );
        },
    )
    .await
}
