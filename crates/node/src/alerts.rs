//! The alert watcher: every `check_every` it reads the limits (and the quotas
//! `alerts.toml` watches), asks `colony-alerts` which thresholds were crossed, and
//! submits each crossing to the kernel, where it becomes a decision (`alert.raise`,
//! `alert.clear`). What the kernel records is published on `colony.alerts.<figure>`
//! and handed to the webhooks, which never make the watcher wait.

use std::sync::Arc;
use std::time::Duration;

use colony_alerts::{crossings, AlertsConfig, Cooldown, Delivery, Figure, Rules};
use colony_api::alerts::AlertDelivery;
use colony_kernel::alerts::{Alert, AlertReport, AlertScope};
use colony_kernel::{CommandBody, Effect, PrincipalId, PrincipalKind, Resource};

use crate::app::{AppState, Shared};
use crate::sequencer::{now_ms, ENTRIES_PER_STATE_READ};

/// Crossings submitted per check at most (the rest wait for the next check).
pub const CROSSINGS_PER_CHECK_MAX: usize = 256;

/// The figures to watch now: every limit, and the watched quotas of every principal
/// with standing (under `quota_rules`).
fn figures<'a>(
    app: &AppState,
    config: &'a AlertsConfig,
    quota_rules: Option<&'a Rules>,
) -> Vec<(Figure, &'a Rules)> {
    let limits = crate::api::current_limits(app);
    let mut out: Vec<(Figure, &Rules)> = limits
        .iter()
        .map(|limit| {
            let name = limit.spec.name.as_str();
            let figure = Figure {
                scope: AlertScope::Limit {
                    limit: name.to_string(),
                },
                usage: limit.usage,
                soft: limit.spec.soft,
                hard: limit.spec.hard,
            };
            (figure, config.rules_of(name))
        })
        .collect();
    let (Some(quotas), Some(rules)) = (&config.quotas, quota_rules) else {
        return out;
    };
    let now = now_ms();
    let watched_now = |p: &colony_kernel::Principal| {
        p.standing && !matches!(p.kind, PrincipalKind::System | PrincipalKind::Node)
    };
    let watched: Vec<PrincipalId> = app
        .shared
        .state
        .read()
        .expect("state lock")
        .principals()
        .filter(|p| watched_now(p))
        .map(|p| p.id)
        .collect();
    let resources: Vec<Resource> = Resource::ALL
        .into_iter()
        .filter(|resource| quotas.resources.contains(resource))
        .collect();
    for chunk in watched.chunks(ENTRIES_PER_STATE_READ) {
        let state = app.shared.state.read().expect("state lock");
        // One that lost its standing since the list was made is no longer watched.
        for principal in chunk
            .iter()
            .filter(|id| state.principal(**id).is_some_and(watched_now))
        {
            for resource in &resources {
                let Some(balance) = state.balance_at(*principal, *resource, now) else {
                    continue;
                };
                let figure = Figure {
                    scope: AlertScope::Quota {
                        principal: *principal,
                        resource: *resource,
                    },
                    usage: balance.used.saturating_add(balance.reserved),
                    soft: None,
                    hard: balance.quota,
                };
                out.push((figure, rules));
            }
        }
    }
    out
}

/// The crossings of every watched figure now, less the raises the cooldown holds
/// back (before the per-check bound, so held-back raises never crowd others out).
fn check(app: &AppState, config: &AlertsConfig, cooldown: &mut Cooldown) -> Vec<AlertReport> {
    let quota_rules = config.quotas.as_ref().map(|quotas| Rules {
        percents: quotas.percents.clone(),
        soft: false,
    });
    let figures = figures(app, config, quota_rules.as_ref());
    let now = now_ms();
    let mut reports = Vec::new();
    for chunk in figures.chunks(ENTRIES_PER_STATE_READ) {
        let state = app.shared.state.read().expect("state lock");
        for (figure, rules) in chunk {
            reports.extend(
                crossings(figure, rules, config.hysteresis_pct, |t| {
                    state.alert_raised(&figure.scope, t)
                })
                .into_iter()
                .filter(|report| cooldown.admit(report, now, config.cooldown_ms)),
            );
            if reports.len() >= CROSSINGS_PER_CHECK_MAX {
                reports.truncate(CROSSINGS_PER_CHECK_MAX);
                return reports;
            }
        }
    }
    reports
}

/// Watches (and sends the periodic reports) until the node stops (the task is
/// aborted).
pub(crate) async fn watch(shared: Arc<Shared>, node_url: String) {
    tokio::join!(
        check_loop(Arc::clone(&shared), node_url.clone()),
        report_loop(shared, node_url)
    );
}

/// Sends a summary of each `[reports] every` window to the webhooks.
async fn report_loop(shared: Arc<Shared>, node_url: String) {
    let (Some(every_ms), false) = (
        shared.alerts.config.report_every_ms,
        shared.alerts.webhooks.is_empty(),
    ) else {
        return;
    };
    let mut every = tokio::time::interval(Duration::from_millis(every_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is at once: a report covers a whole window
                        // Each report starts where the last one ended: a tick delayed by a loaded machine
                        // (or a slow sync) must not leave records between two windows, in no report.
    let mut last_until: Option<u64> = None;
    loop {
        every.tick().await;
        if !watches(&shared) {
            continue;
        }
        let decided = shared.state.read().expect("state lock").last_seq;
        if !shared.submitter.synced_through(decided).await {
            return;
        }
        let until = now_ms();
        let from = last_until.unwrap_or_else(|| until.saturating_sub(every_ms));
        last_until = Some(until);
        let reader = shared.audit.clone();
        let built =
            tokio::task::spawn_blocking(move || crate::api::build_report(&reader, from, until))
                .await;
        let summary = match built {
            Ok(Ok(summary)) => summary,
            Ok(Err(error)) => {
                tracing::warn!("the periodic report cannot read the log: {error}");
                continue;
            }
            Err(error) => {
                tracing::warn!("the periodic report failed: {error}");
                continue;
            }
        };
        let text = crate::api::report_markdown(&summary);
        let body = colony_api::alerts::ReportDelivery {
            report: summary,
            text: text.clone(),
            node: node_url.clone(),
        };
        shared.alerts.webhooks.send(&Delivery {
            id: format!("report-{until}"),
            json: serde_json::to_string(&body).expect("a report serializes"),
            text,
        });
    }
}

/// In a cluster one node watches (every node would raise the same crossing and
/// send the same report): the live node whose name sorts first.
fn watches(shared: &Shared) -> bool {
    shared
        .cluster
        .as_ref()
        .is_none_or(|cluster| cluster.watches())
}

async fn check_loop(shared: Arc<Shared>, node_url: String) {
    let app = AppState { shared };
    let every_ms = app.shared.alerts.config.check_every_ms;
    let mut cooldown = Cooldown::default();
    let mut every = tokio::time::interval(Duration::from_millis(every_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !watches(&app.shared)
            || !app
                .shared
                .state
                .read()
                .expect("state lock")
                .is_initialized()
        {
            continue;
        }
        for report in check(&app, &app.shared.alerts.config, &mut cooldown) {
            let justification = format!(
                "alerts.toml: {} {} its {} threshold (usage {}{})",
                match &report.scope {
                    AlertScope::Limit { limit } => limit.clone(),
                    AlertScope::Quota {
                        principal,
                        resource,
                    } => format!("quota {resource} of principal {}", principal.0),
                },
                if report.raised {
                    "reached"
                } else {
                    "fell back below"
                },
                report.threshold,
                report.usage,
                report.of.map(|of| format!(" of {of}")).unwrap_or_default(),
            );
            let outcome = app
                .shared
                .submitter
                .submit(
                    PrincipalId::SYSTEM,
                    justification,
                    CommandBody::Alert(Box::new(report)),
                )
                .await;
            match outcome {
                Ok(outcome) => {
                    if let Effect::AlertRecorded { alert } = &outcome.primary.effect {
                        announce(&app, alert, &node_url);
                    }
                }
                Err(error) => {
                    tracing::warn!("an alert was not recorded: {}", error.message);
                    break;
                }
            }
        }
    }
}

/// Publishes what the kernel recorded and hands it to the webhooks.
fn announce(app: &AppState, alert: &Alert, node_url: &str) {
    let view = crate::api::alert_view(alert);
    let data = serde_json::to_string(&view).expect("an alert serializes");
    app.shared
        .bus
        .publish_system(&format!("colony.alerts.{}", view.figure), &data);
    let text = format!("Colony {}: {}", node_url, view.summary);
    let body = AlertDelivery {
        alert: view,
        text: text.clone(),
        node: node_url.to_string(),
    };
    app.shared.alerts.webhooks.send(&Delivery {
        id: format!("alert-{}", alert.id),
        json: serde_json::to_string(&body).expect("a delivery serializes"),
        text,
    });
}
