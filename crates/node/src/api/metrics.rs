use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use colony_kernel::PrincipalKind;

use super::AppState;
use crate::auth::Caller;
use crate::metrics::DECISION_NAMES;
use crate::ApiError;
use colony_api::ErrorBody;

/// Writes one metric family: its help, its type, and its samples.
fn family(text: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(text, "{name}{labels} {value}");
    }
}

fn single(counter: &AtomicU64) -> [(String, u64); 1] {
    [(String::new(), counter.load(Ordering::Relaxed))]
}

/// A node of a cluster: where it is in the stream, and what its bus relayed.
fn cluster_families(
    text: &mut String,
    cluster: &colony_cluster::Cluster,
    relay: Option<&colony_cluster::bus_relay::BusRelay>,
) {
    let signing = cluster.signing();
    let applied = cluster.applied_seq();
    let last = cluster.stream_last_seq().max(applied);
    for (name, kind, help, value) in [
        (
            "colony_cluster_connected",
            "gauge",
            "1 while this node holds a connection to the cluster's NATS servers.",
            u64::from(cluster.connected()),
        ),
        (
            "colony_cluster_applied_seq",
            "gauge",
            "The last command of the cluster's log this node applied.",
            applied,
        ),
        (
            "colony_cluster_stream_last_seq",
            "gauge",
            "The cluster's log's last command, as this node last saw it.",
            last,
        ),
        (
            "colony_cluster_stream_first_seq",
            "gauge",
            "The cluster's log's first command, as this node last saw it (the ones before it were compacted away).",
            cluster.stream_first_seq(),
        ),
        (
            "colony_cluster_lag",
            "gauge",
            "Commands of the cluster's log this node has yet to apply.",
            last - applied,
        ),
        (
            "colony_cluster_live_nodes",
            "gauge",
            "Nodes heard from in the last 3 s, this one included.",
            cluster.live_nodes(),
        ),
        (
            "colony_cluster_divergences_total",
            "counter",
            "Checkpoints of other nodes whose decision-log hash disagreed with this node's at the same record (must stay 0).",
            cluster.divergences(),
        ),
        (
            "colony_cluster_reports_refused_total",
            "counter",
            "Reports on NATS said to be from a node that were not taken: unsigned, badly signed, or from a key not admitted under that name.",
            cluster.reports_refused(),
        ),
        (
            "colony_cluster_signatures_total",
            "counter",
            "Signatures this node made over its own commands (one covers the commands proposed together).",
            signing.signatures,
        ),
        (
            "colony_cluster_signed_commands_total",
            "counter",
            "Commands this node signed.",
            signing.signed_commands,
        ),
        (
            "colony_cluster_signature_checks_total",
            "counter",
            "Signatures of other nodes' commands this node checked (each group's once).",
            signing.checks,
        ),
        (
            "colony_cluster_checked_commands_total",
            "counter",
            "Other nodes' commands whose signature this node holds checked.",
            signing.checked_commands,
        ),
    ] {
        family(text, name, kind, help, &[(String::new(), value)]);
    }
    if let Some(relay) = relay {
        for (name, help, counter) in [
            (
                "colony_cluster_relayed_out_total",
                "Bus messages this node relayed to the other nodes.",
                &relay.relayed_out,
            ),
            (
                "colony_cluster_relayed_in_total",
                "Bus messages relayed to this node by the others.",
                &relay.relayed_in,
            ),
            (
                "colony_cluster_relay_dropped_total",
                "Bus messages not relayed because the relay's queue was full.",
                &relay.dropped,
            ),
        ] {
            family(text, name, "counter", help, &single(counter));
        }
    }
}

/// Prometheus text format, version 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 403, body = ErrorBody), (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn render(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    app.check_read(&caller, "metrics", app.shared.read.metrics)?;
    let limits = super::limits::current(&app);
    let metrics = &app.shared.metrics;
    let mut text = String::new();
    let per_limit = |value: &dyn Fn(&colony_kernel::Limit) -> Option<u64>| -> Vec<(String, u64)> {
        limits
            .iter()
            .filter_map(|limit| {
                value(limit).map(|v| {
                    (
                        format!(
                            "{{limit=\"{}\",unit=\"{}\"}}",
                            limit.spec.name, limit.spec.unit
                        ),
                        v,
                    )
                })
            })
            .collect()
    };
    family(
        &mut text,
        "colony_limit_usage",
        "gauge",
        "Current usage of each system-wide limit (with reservations).",
        &per_limit(&|l| Some(l.committed_and_reserved())),
    );
    family(
        &mut text,
        "colony_limit_soft",
        "gauge",
        "Soft value of each limit (absent when unlimited).",
        &per_limit(&|l| l.spec.soft),
    );
    family(
        &mut text,
        "colony_limit_hard",
        "gauge",
        "Hard value of each limit (absent when unlimited).",
        &per_limit(&|l| l.spec.hard),
    );
    family(
        &mut text,
        "colony_limit_queued",
        "gauge",
        "Requests waiting in each limit's admission queue.",
        &per_limit(&|l| Some(l.queue.len() as u64)),
    );
    let principals: Vec<(String, u64)> = {
        let state = app.shared.state.read().expect("state lock");
        [
            PrincipalKind::Human,
            PrincipalKind::Ai,
            PrincipalKind::Artifact,
            PrincipalKind::Node,
        ]
        .into_iter()
        .map(|kind| {
            let count = state
                .principals()
                .filter(|p| p.kind == kind && p.standing)
                .count() as u64;
            (format!("{{kind=\"{}\"}}", kind.as_str()), count)
        })
        .collect()
    };
    family(
        &mut text,
        "colony_principals",
        "gauge",
        "Principals with standing, by kind.",
        &principals,
    );
    let (tasks, archived): (Vec<(String, u64)>, u64) = {
        use colony_kernel::tasks::TaskStatus;
        let state = app.shared.state.read().expect("state lock");
        let tasks = TaskStatus::ALL
            .into_iter()
            .map(|status| {
                (
                    format!("{{status=\"{}\"}}", status.as_str()),
                    state.task_count(status) as u64,
                )
            })
            .collect();
        (tasks, state.retired_tasks())
    };
    family(
        &mut text,
        "colony_tasks",
        "gauge",
        "Tasks in the live state, by status (finished ones until retention.toml retires them).",
        &tasks,
    );
    family(
        &mut text,
        "colony_tasks_archived_total",
        "counter",
        "Finished tasks retired from the live state to the task archive.",
        &[(String::new(), archived)],
    );
    let decisions: Vec<(String, u64)> = DECISION_NAMES
        .iter()
        .zip(&metrics.decisions)
        .map(|(name, count)| {
            (
                format!("{{decision=\"{name}\"}}"),
                count.load(Ordering::Relaxed),
            )
        })
        .collect();
    family(
        &mut text,
        "colony_decisions_total",
        "counter",
        "Kernel decisions, by outcome.",
        &decisions,
    );
    family(
        &mut text,
        "colony_commands_total",
        "counter",
        "Commands made durable.",
        &single(&metrics.commands),
    );
    family(
        &mut text,
        "colony_log_batches_total",
        "counter",
        "Group commits (one sync each).",
        &single(&metrics.batches),
    );
    family(
        &mut text,
        "colony_log_sync_microseconds_total",
        "counter",
        "Time spent syncing the log.",
        &single(&metrics.sync_micros_total),
    );
    family(
        &mut text,
        "colony_log_sync_microseconds_max",
        "gauge",
        "Longest single sync since start.",
        &single(&metrics.sync_micros_max),
    );
    family(
        &mut text,
        "colony_snapshots_total",
        "counter",
        "Snapshots written since start.",
        &single(&metrics.snapshots),
    );
    family(
        &mut text,
        "colony_log_pruned_segments_total",
        "counter",
        "Segments of the command and decision logs pruned since start (retention.toml [logs]).",
        &single(&metrics.pruned_segments),
    );
    family(
        &mut text,
        "colony_http_requests_total",
        "counter",
        "Authenticated-route HTTP requests.",
        &single(&metrics.http_requests),
    );
    family(
        &mut text,
        "colony_http_rejected_total",
        "counter",
        "Requests refused by the concurrent_api_requests hard limit.",
        &single(&metrics.http_rejected),
    );
    family(
        &mut text,
        "colony_http_body_bytes_held",
        "gauge",
        "Bytes of request bodies being read or served (bounded by body_bytes_in_flight_max).",
        &[(String::new(), app.shared.body_bytes.total())],
    );
    let outbox = app.shared.submitter.outbox();
    for (name, kind, help, counter) in [
        (
            "colony_outbox_pending",
            "gauge",
            "Background commands (settlements, charges, releases) being sent until decided.",
            &outbox.pending,
        ),
        (
            "colony_outbox_retries_total",
            "counter",
            "Background commands refused (a full queue, a lost cluster link) and sent again.",
            &outbox.retries,
        ),
        (
            "colony_outbox_abandoned_total",
            "counter",
            "Background commands given up on (the node stopping), each logged as an error.",
            &outbox.abandoned,
        ),
    ] {
        family(&mut text, name, kind, help, &single(counter));
    }
    family(
        &mut text,
        "colony_http_refused_per_principal_total",
        "counter",
        "Requests refused because their principal had requests_in_flight_per_principal_max being served.",
        &single(&metrics.http_refused_per_principal),
    );
    family(
        &mut text,
        "colony_http_priority_capped_total",
        "counter",
        "Requests that declared a priority above their caller's (capped to it).",
        &single(&metrics.http_priority_capped),
    );
    family(
        &mut text,
        "colony_http_in_flight",
        "gauge",
        "Requests being served now.",
        &single(&app.shared.in_flight),
    );
    let connections = &app.shared.connections;
    for (name, kind, help, value) in [
        (
            "colony_http_connections",
            "gauge",
            "Open HTTP connections (upgraded bus connections are counted by the bus).",
            connections.open(),
        ),
        (
            "colony_http_connections_unauthenticated",
            "gauge",
            "Open HTTP connections that have not yet made an authenticated request.",
            connections.unauthenticated() as u64,
        ),
        (
            "colony_http_connections_evicted_total",
            "counter",
            "Unauthenticated connections closed to make room for new ones.",
            connections
                .evicted
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    ] {
        family(&mut text, name, kind, help, &[(String::new(), value)]);
    }
    if let Some(cluster) = &app.shared.cluster {
        cluster_families(&mut text, cluster, app.shared.relay.as_deref());
    }
    family(
        &mut text,
        "colony_decision_log_records",
        "gauge",
        "Records in the decision log.",
        &[(String::new(), app.shared.audit.last_index())],
    );
    let bus = &app.shared.bus.metrics;
    for (name, kind, help, counter) in [
        (
            "colony_bus_connections",
            "gauge",
            "Open bus (WebSocket) connections.",
            &bus.connections,
        ),
        (
            "colony_bus_connections_total",
            "counter",
            "Bus connections ever opened.",
            &bus.connections_total,
        ),
        (
            "colony_bus_connections_refused_per_principal_total",
            "counter",
            "Bus connections refused because their principal held connections_per_principal_max.",
            &bus.refused_per_principal,
        ),
        (
            "colony_bus_worker_ops_refused_total",
            "counter",
            "Worker commands (hello, heartbeat, bye) refused because the connection had its maximum waiting for decisions.",
            &bus.worker_ops_refused,
        ),
        (
            "colony_bus_published_total",
            "counter",
            "Messages published on the bus.",
            &bus.published,
        ),
        (
            "colony_bus_published_bytes_total",
            "counter",
            "Bytes of message data published.",
            &bus.published_bytes,
        ),
        (
            "colony_bus_delivered_total",
            "counter",
            "Messages queued for subscribers.",
            &bus.delivered,
        ),
        (
            "colony_bus_dropped_total",
            "counter",
            "Messages dropped by drop_oldest subscriptions.",
            &bus.dropped,
        ),
        (
            "colony_bus_rejected_total",
            "counter",
            "Deliveries refused by reject_publisher subscriptions.",
            &bus.rejected,
        ),
        (
            "colony_bus_slow_disconnects_total",
            "counter",
            "Connections closed as slow consumers or for not reading.",
            &bus.slow_disconnects,
        ),
        (
            "colony_bus_denied_total",
            "counter",
            "Publishes and subscriptions denied (authorization, quotas, limits).",
            &bus.denied,
        ),
        (
            "colony_bus_bad_frames_total",
            "counter",
            "Malformed frames received.",
            &bus.bad_frames,
        ),
    ] {
        family(&mut text, name, kind, help, &single(counter));
    }
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
