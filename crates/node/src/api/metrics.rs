//! `GET /metrics`: the node's figures, read at each scrape (`exposition.rs` writes
//! them).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use colony_kernel::PrincipalKind;

use super::exposition::{self, Kind, Labels, Scrape};
use super::AppState;
use crate::auth::Caller;
use crate::metrics::DECISION_NAMES;
use crate::ApiError;
use colony_api::ErrorBody;

/// A node of a cluster: where it is in the stream, and what its bus relayed.
fn cluster_families(
    scrape: &mut Scrape,
    cluster: &colony_cluster::Cluster,
    relay: Option<&colony_cluster::bus_relay::BusRelay>,
) {
    let signing = cluster.signing();
    let applied = cluster.applied_seq();
    let last = cluster.stream_last_seq().max(applied);
    for (name, kind, help, value) in [
        (
            "colony_cluster_connected",
            Kind::Gauge,
            "1 while this node holds a connection to the cluster's NATS servers.",
            u64::from(cluster.connected()),
        ),
        (
            "colony_cluster_applied_seq",
            Kind::Gauge,
            "The last command of the cluster's log this node applied.",
            applied,
        ),
        (
            "colony_cluster_stream_last_seq",
            Kind::Gauge,
            "The cluster's log's last command, as this node last saw it.",
            last,
        ),
        (
            "colony_cluster_stream_first_seq",
            Kind::Gauge,
            "The cluster's log's first command, as this node last saw it (the ones before it were compacted away).",
            cluster.stream_first_seq(),
        ),
        (
            "colony_cluster_lag",
            Kind::Gauge,
            "Commands of the cluster's log this node has yet to apply.",
            last - applied,
        ),
        (
            "colony_cluster_live_nodes",
            Kind::Gauge,
            "Nodes heard from in the last 3 s, this one included.",
            cluster.live_nodes(),
        ),
        (
            "colony_cluster_divergences_total",
            Kind::Counter,
            "Checkpoints of other nodes whose decision-log hash disagreed with this node's at the same record (must stay 0).",
            cluster.divergences(),
        ),
        (
            "colony_cluster_reports_refused_total",
            Kind::Counter,
            "Reports on NATS said to be from a node that were not taken: unsigned, badly signed, or from a key not admitted under that name.",
            cluster.reports_refused(),
        ),
        (
            "colony_cluster_signatures_total",
            Kind::Counter,
            "Signatures this node made over its own commands (one covers the commands proposed together).",
            signing.signatures,
        ),
        (
            "colony_cluster_signed_commands_total",
            Kind::Counter,
            "Commands this node signed.",
            signing.signed_commands,
        ),
        (
            "colony_cluster_signature_checks_total",
            Kind::Counter,
            "Signatures of other nodes' commands this node checked (each group's once).",
            signing.checks,
        ),
        (
            "colony_cluster_checked_commands_total",
            Kind::Counter,
            "Other nodes' commands whose signature this node holds checked.",
            signing.checked_commands,
        ),
    ] {
        scrape.one(name, kind, help, value);
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
            scrape.counter(name, help, counter);
        }
    }
}

/// The node's figures in the OpenMetrics text format (which Prometheus scrapes).
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 403, body = ErrorBody), (status = 200, description = "OpenMetrics text format 1.0.0", content_type = "application/openmetrics-text", body = String)))]
pub async fn render(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    app.check_read(&caller, "metrics", app.shared.read.metrics)?;
    let mut scrape = Scrape::default();
    limit_families(&mut scrape, &super::limits::current(&app));
    state_families(&mut scrape, &app.shared.state.read().expect("state lock"));
    pipeline_families(&mut scrape, &app.shared.metrics);
    http_families(&mut scrape, &app.shared);
    if let Some(cluster) = &app.shared.cluster {
        cluster_families(&mut scrape, cluster, app.shared.relay.as_deref());
    }
    scrape.one(
        "colony_decision_log_records",
        Kind::Gauge,
        "Records in the decision log.",
        app.shared.audit.last_index(),
    );
    bus_families(&mut scrape, &app.shared.bus.metrics);
    Ok(([(CONTENT_TYPE, exposition::CONTENT_TYPE)], scrape.encode()))
}

/// Every limit's usage, soft and hard values, and queue.
fn limit_families(scrape: &mut Scrape, limits: &[colony_kernel::Limit]) {
    let per_limit = |value: &dyn Fn(&colony_kernel::Limit) -> Option<u64>| -> Vec<(Labels, u64)> {
        limits
            .iter()
            .filter_map(|limit| {
                value(limit).map(|v| {
                    (
                        vec![
                            ("limit", limit.spec.name.to_string()),
                            ("unit", limit.spec.unit.to_string()),
                        ],
                        v,
                    )
                })
            })
            .collect()
    };
    scrape.family(
        "colony_limit_usage",
        Kind::Gauge,
        "Current usage of each system-wide limit (with reservations).",
        per_limit(&|l| Some(l.committed_and_reserved())),
    );
    scrape.family(
        "colony_limit_soft",
        Kind::Gauge,
        "Soft value of each limit (absent when unlimited).",
        per_limit(&|l| l.spec.soft),
    );
    scrape.family(
        "colony_limit_hard",
        Kind::Gauge,
        "Hard value of each limit (absent when unlimited).",
        per_limit(&|l| l.spec.hard),
    );
    scrape.family(
        "colony_limit_queued",
        Kind::Gauge,
        "Requests waiting in each limit's admission queue.",
        per_limit(&|l| Some(l.queue.len() as u64)),
    );
}

/// Principals by kind and tasks by status, from the kernel's state.
fn state_families(scrape: &mut Scrape, state: &colony_kernel::State) {
    let kinds = [
        PrincipalKind::Human,
        PrincipalKind::Ai,
        PrincipalKind::Artifact,
        PrincipalKind::Node,
    ];
    // One walk of the principals for all kinds.
    let mut counts = [0u64; 4];
    for principal in state.principals().filter(|p| p.standing) {
        if let Some(at) = kinds.iter().position(|kind| *kind == principal.kind) {
            counts[at] += 1;
        }
    }
    let principals: Vec<(Labels, u64)> = kinds
        .iter()
        .zip(counts)
        .map(|(kind, count)| (vec![("kind", kind.as_str().to_string())], count))
        .collect();
    scrape.family(
        "colony_principals",
        Kind::Gauge,
        "Principals with standing, by kind.",
        principals,
    );
    let (tasks, archived): (Vec<(Labels, u64)>, u64) = {
        use colony_kernel::tasks::TaskStatus;
        let tasks = TaskStatus::ALL
            .into_iter()
            .map(|status| {
                (
                    vec![("status", status.as_str().to_string())],
                    state.task_count(status) as u64,
                )
            })
            .collect();
        (tasks, state.retired_tasks())
    };
    scrape.family(
        "colony_tasks",
        Kind::Gauge,
        "Tasks in the live state, by status (finished ones until retention.toml retires them).",
        tasks,
    );
    scrape.one(
        "colony_tasks_archived_total",
        Kind::Counter,
        "Finished tasks retired from the live state to the task archive.",
        archived,
    );
}

/// What the pipeline decided and made durable.
fn pipeline_families(scrape: &mut Scrape, metrics: &crate::metrics::Metrics) {
    let decisions: Vec<(Labels, u64)> = DECISION_NAMES
        .iter()
        .zip(&metrics.decisions)
        .map(|(name, count)| {
            (
                vec![("decision", name.to_string())],
                count.load(Ordering::Relaxed),
            )
        })
        .collect();
    scrape.family(
        "colony_decisions_total",
        Kind::Counter,
        "Kernel decisions, by outcome.",
        decisions,
    );
    scrape.counter(
        "colony_commands_total",
        "Commands made durable.",
        &metrics.commands,
    );
    scrape.counter(
        "colony_log_batches_total",
        "Group commits (one sync each).",
        &metrics.batches,
    );
    scrape.counter(
        "colony_log_sync_microseconds_total",
        "Time spent syncing the log.",
        &metrics.sync_micros_total,
    );
    scrape.one(
        "colony_log_sync_microseconds_max",
        Kind::Gauge,
        "Longest single sync since start.",
        metrics.sync_micros_max.load(Ordering::Relaxed),
    );
    let sync_counts: Vec<u64> = metrics
        .sync_buckets
        .iter()
        .map(|bucket| bucket.load(Ordering::Relaxed))
        .collect();
    scrape.histogram(
        "colony_log_sync_seconds",
        "How long each group commit's sync of the logs took: every command of the group waits for it.",
        &colony_pipeline::metrics::SYNC_BOUNDS_SECONDS,
        &sync_counts,
        metrics.sync_micros_total.load(Ordering::Relaxed) as f64 / 1e6,
    );
    scrape.counter(
        "colony_snapshots_total",
        "Snapshots written since start.",
        &metrics.snapshots,
    );
    scrape.counter(
        "colony_log_pruned_segments_total",
        "Segments of the command and decision logs pruned since start (retention.toml [logs]).",
        &metrics.pruned_segments,
    );
}

/// The HTTP edge: requests, bodies, connections, and the background commands.
fn http_families(scrape: &mut Scrape, shared: &crate::app::Shared) {
    scrape.counter(
        "colony_http_requests_total",
        "Authenticated-route HTTP requests.",
        &shared.metrics.http_requests,
    );
    scrape.counter(
        "colony_http_rejected_total",
        "Requests refused by the concurrent_api_requests hard limit.",
        &shared.metrics.http_rejected,
    );
    scrape.one(
        "colony_http_body_bytes_held",
        Kind::Gauge,
        "Bytes of request bodies being read or served (bounded by body_bytes_in_flight_max).",
        shared.body_bytes.total(),
    );
    let outbox = shared.submitter.outbox();
    for (name, kind, help, counter) in [
        (
            "colony_outbox_pending",
            Kind::Gauge,
            "Background commands (settlements, charges, releases) being sent until decided.",
            &outbox.pending,
        ),
        (
            "colony_outbox_retries_total",
            Kind::Counter,
            "Background commands refused (a full queue, a lost cluster link) and sent again.",
            &outbox.retries,
        ),
        (
            "colony_outbox_abandoned_total",
            Kind::Counter,
            "Background commands given up on (the node stopping), each logged as an error.",
            &outbox.abandoned,
        ),
    ] {
        scrape.one(name, kind, help, counter.load(Ordering::Relaxed));
    }
    scrape.counter("colony_http_refused_per_principal_total", "Requests refused because their principal had requests_in_flight_per_principal_max being served.", &shared.metrics.http_refused_per_principal);
    scrape.counter(
        "colony_http_priority_capped_total",
        "Requests that declared a priority above their caller's (capped to it).",
        &shared.metrics.http_priority_capped,
    );
    scrape.one(
        "colony_http_in_flight",
        Kind::Gauge,
        "Requests being served now.",
        shared.in_flight.load(Ordering::Relaxed),
    );
    scrape.one(
        "colony_claims_waiting",
        Kind::Gauge,
        "Claims waiting for work (wait_ms), not counted among the requests being served.",
        shared.claim_waiters.len() as u64,
    );
    let connections = &shared.connections;
    for (name, kind, help, value) in [
        (
            "colony_http_connections",
            Kind::Gauge,
            "Open HTTP connections (upgraded bus connections are counted by the bus).",
            connections.open(),
        ),
        (
            "colony_http_connections_unauthenticated",
            Kind::Gauge,
            "Open HTTP connections that have not yet made an authenticated request.",
            connections.unauthenticated() as u64,
        ),
        (
            "colony_http_connections_evicted_total",
            Kind::Counter,
            "Unauthenticated connections closed to make room for new ones.",
            connections
                .evicted
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    ] {
        scrape.one(name, kind, help, value);
    }
}

/// The bus's connections and messages.
fn bus_families(scrape: &mut Scrape, bus: &crate::bus::BusMetrics) {
    for (name, kind, help, counter) in [
        (
            "colony_bus_connections",
            Kind::Gauge,
            "Open bus (WebSocket) connections.",
            &bus.connections,
        ),
        (
            "colony_bus_connections_parked",
            Kind::Gauge,
            "Idle bus connections waiting without a task of their own (nothing happened on them for 250 ms).",
            &bus.parked,
        ),
        (
            "colony_bus_connections_total",
            Kind::Counter,
            "Bus connections ever opened.",
            &bus.connections_total,
        ),
        (
            "colony_bus_connections_refused_per_principal_total",
            Kind::Counter,
            "Bus connections refused because their principal held connections_per_principal_max.",
            &bus.refused_per_principal,
        ),
        (
            "colony_bus_worker_ops_refused_total",
            Kind::Counter,
            "Worker commands (hello, heartbeat, bye) refused because the connection had its maximum waiting for decisions.",
            &bus.worker_ops_refused,
        ),
        (
            "colony_bus_published_total",
            Kind::Counter,
            "Messages published on the bus.",
            &bus.published,
        ),
        (
            "colony_bus_published_bytes_total",
            Kind::Counter,
            "Bytes of message data published.",
            &bus.published_bytes,
        ),
        (
            "colony_bus_delivered_total",
            Kind::Counter,
            "Messages queued for subscribers.",
            &bus.delivered,
        ),
        (
            "colony_bus_dropped_total",
            Kind::Counter,
            "Messages dropped by drop_oldest subscriptions.",
            &bus.dropped,
        ),
        (
            "colony_bus_rejected_total",
            Kind::Counter,
            "Deliveries refused by reject_publisher subscriptions.",
            &bus.rejected,
        ),
        (
            "colony_bus_slow_disconnects_total",
            Kind::Counter,
            "Connections closed as slow consumers or for not reading.",
            &bus.slow_disconnects,
        ),
        (
            "colony_bus_denied_total",
            Kind::Counter,
            "Publishes and subscriptions denied (authorization, quotas, limits).",
            &bus.denied,
        ),
        (
            "colony_bus_bad_frames_total",
            Kind::Counter,
            "Malformed frames received.",
            &bus.bad_frames,
        ),
    ] {
        scrape.one(name, kind, help, counter.load(Ordering::Relaxed));
    }
}
