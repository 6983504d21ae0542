//! `GET /v1/reports/summary?since=24h&format=json|md`: a window of the decision log
//! summed up for people (seed 001's "human-readable summaries"). Read through the
//! read policy's `audit` entry: it reads the whole log.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_api::reports::{DenialCount, Figure, Spend, Summary, SummaryQuery};
use colony_api::ErrorBody;
use serde::Deserialize;
use serde_json::Value;

use super::{AppState, Params};
use crate::auth::Caller;
use crate::ApiError;

/// Most decision records one report reads (the newest of the window).
pub const REPORT_RECORDS_MAX: u64 = 500_000;
/// Longest window a report covers.
pub const REPORT_WINDOW_MAX_MS: u64 = 30 * 24 * 3_600 * 1_000;
/// Records named per figure.
const EXAMPLES: usize = 5;

/// What a report reads of a decision record.
#[derive(Deserialize)]
struct Record {
    seq: u64,
    at_ms: u64,
    actor: String,
    action: String,
    decision: String,
    #[serde(default)]
    reason: Value,
    #[serde(default)]
    detail: Value,
    #[serde(default)]
    justification: String,
}

fn note(figure: &mut Figure, seq: u64) {
    figure.count += 1;
    if figure.records.len() < EXAMPLES {
        figure.records.push(seq);
    }
}

fn spend(map: &mut BTreeMap<String, Spend>, who: &str, micro_usd: u64, seq: u64) {
    let entry = map.entry(who.to_string()).or_insert_with(|| Spend {
        who: who.to_string(),
        ..Spend::default()
    });
    entry.calls += 1;
    entry.micro_usd += micro_usd;
    if entry.records.len() < EXAMPLES {
        entry.records.push(seq);
    }
}

/// Sums up the records from `from_ms` on.
pub(crate) fn build(
    reader: &colony_log::LogReader,
    from_ms: u64,
    until_ms: u64,
) -> Result<Summary, colony_log::Error> {
    let last = reader.last_index();
    let start = last.saturating_sub(REPORT_RECORDS_MAX) + 1;
    let mut summary = Summary {
        since: colony_api::format_time(from_ms),
        until: colony_api::format_time(until_ms),
        ..Summary::default()
    };
    let (mut by_principal, mut by_model) = (BTreeMap::new(), BTreeMap::new());
    let mut denials: BTreeMap<(String, Option<String>), DenialCount> = BTreeMap::new();
    let mut tools: BTreeMap<(String, String), colony_api::reports::ToolCalls> = BTreeMap::new();
    let mut first = true;
    reader.scan(start, |_, bytes| {
        let Ok(record) = serde_json::from_slice::<Record>(bytes) else {
            return ControlFlow::Continue(());
        };
        if first {
            summary.truncated = start > 1 && record.at_ms >= from_ms;
            first = false;
        }
        // The window is [from, until): consecutive reports count each record once.
        if record.at_ms < from_ms || record.at_ms >= until_ms {
            return ControlFlow::Continue(());
        }
        summary.records += 1;
        let allowed = matches!(record.decision.as_str(), "allowed" | "admitted");
        let seq = record.seq;
        if record.justification.starts_with("[mcp] ") {
            note(&mut summary.mcp_calls, seq);
        }
        if record.decision == "denied" {
            summary.denials += 1;
            let code = record.reason["code"].as_str().unwrap_or("").to_string();
            let limit = record.reason["limit"].as_str().map(str::to_string);
            let entry = denials
                .entry((code.clone(), limit.clone()))
                .or_insert_with(|| DenialCount {
                    code,
                    limit,
                    ..DenialCount::default()
                });
            entry.count += 1;
            if entry.records.len() < EXAMPLES {
                entry.records.push(seq);
            }
            return ControlFlow::Continue(());
        }
        match (record.action.as_str(), allowed) {
            ("llm.settle", true) => {
                let cost = record.detail["effect"]["charged"].as_u64().unwrap_or(0)
                    + record.detail["effect"]["shortfall"].as_u64().unwrap_or(0);
                summary.llm_calls += 1;
                summary.llm_micro_usd += cost;
                spend(&mut by_principal, &record.actor, cost, seq);
                let model = record
                    .justification
                    .strip_prefix("llm call to ")
                    .and_then(|rest| rest.split(':').next())
                    .unwrap_or("(unknown)");
                spend(&mut by_model, model, cost, seq);
            }
            ("task.post", true) => note(&mut summary.tasks_posted, seq),
            ("task.complete", true) => note(&mut summary.tasks_completed, seq),
            ("task.fail", true) => note(&mut summary.tasks_failed, seq),
            ("task.dead", _) => note(&mut summary.tasks_dead, seq),
            ("task.timed_out", _) => note(&mut summary.attempts_timed_out, seq),
            // The cancellation itself, not the announcements to its holders.
            ("task.cancel", true) if record.detail["effect"]["effect"] == "task_cancelled" => {
                note(&mut summary.tasks_cancelled, seq)
            }
            ("worker.register", true) => note(&mut summary.workers_registered, seq),
            ("worker.lost" | "worker.disconnected", _) => note(&mut summary.workers_lost, seq),
            ("supervisor.replace", _) => note(&mut summary.workers_replaced, seq),
            ("governance.propose", true) => note(&mut summary.proposals_opened, seq),
            ("governance.decide", _) => note(&mut summary.proposals_decided, seq),
            ("governance.brake_expired", _) => note(&mut summary.brakes_expired, seq),
            ("principal.quarantine", _) => note(&mut summary.quarantines, seq),
            ("principal.create", true) => note(&mut summary.principals_created, seq),
            ("alert.raise", true) => note(&mut summary.alerts_raised, seq),
            ("mcp.tool_call", true) => {
                let effect = &record.detail["effect"];
                let tool = effect["tool"].as_str().unwrap_or("(unknown)").to_string();
                let entry = tools
                    .entry((tool.clone(), record.actor.clone()))
                    .or_insert_with(|| colony_api::reports::ToolCalls {
                        tool,
                        who: record.actor.clone(),
                        ..Default::default()
                    });
                entry.calls += 1;
                if effect["outcome"] != "ok" {
                    entry.failed += 1;
                }
                if entry.records.len() < EXAMPLES {
                    entry.records.push(seq);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    })?;
    let by_cost = |map: BTreeMap<String, Spend>| {
        let mut list: Vec<Spend> = map.into_values().collect();
        list.sort_by(|a, b| b.micro_usd.cmp(&a.micro_usd).then(a.who.cmp(&b.who)));
        list
    };
    summary.spend_by_principal = by_cost(by_principal);
    summary.spend_by_model = by_cost(by_model);
    let mut denials: Vec<DenialCount> = denials.into_values().collect();
    denials.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
    summary.denials_by_reason = denials;
    let mut tools: Vec<_> = tools.into_values().collect();
    tools.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tool.cmp(&b.tool)));
    summary.tool_calls = tools;
    Ok(summary)
}

fn dollars(micro: u64) -> String {
    format!("${}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

fn links(records: &[u64]) -> String {
    records
        .iter()
        .map(|seq| format!("[{seq}](/v1/audit?after={}&limit=1)", seq - 1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The summary in Markdown, for people.
pub fn markdown(summary: &Summary) -> String {
    let mut text = format!(
        "# Colony: what happened from {} to {}\n\n{} decisions read{}.\n\n",
        summary.since,
        summary.until,
        summary.records,
        if summary.truncated {
            " (the newest of a busier window)"
        } else {
            ""
        }
    );
    text.push_str(&format!(
        "## LLM spend\n\n{} calls, {} in all.\n\n",
        summary.llm_calls,
        dollars(summary.llm_micro_usd)
    ));
    for (title, list) in [
        ("By principal", &summary.spend_by_principal),
        ("By model", &summary.spend_by_model),
    ] {
        if list.is_empty() {
            continue;
        }
        text.push_str(&format!(
            "| {title} | calls | spent | decisions |\n|---|---|---|---|\n"
        ));
        for spend in list {
            text.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                spend.who,
                spend.calls,
                dollars(spend.micro_usd),
                links(&spend.records)
            ));
        }
        text.push('\n');
    }
    text.push_str(&format!("## Denials\n\n{} in all.\n\n", summary.denials));
    if !summary.denials_by_reason.is_empty() {
        text.push_str("| reason | limit | count | decisions |\n|---|---|---|---|\n");
        for denial in &summary.denials_by_reason {
            text.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                denial.code,
                denial.limit.as_deref().unwrap_or(""),
                denial.count,
                links(&denial.records)
            ));
        }
        text.push('\n');
    }
    if !summary.tool_calls.is_empty() {
        text.push_str("## MCP tool calls\n\n| tool | by | calls | failed | decisions |\n|---|---|---|---|---|\n");
        for calls in &summary.tool_calls {
            text.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                calls.tool,
                calls.who,
                calls.calls,
                calls.failed,
                links(&calls.records)
            ));
        }
        text.push('\n');
    }
    text.push_str(
        "## Work, workers and governance\n\n| what | count | decisions |\n|---|---|---|\n",
    );
    for (what, figure) in [
        ("tasks posted", &summary.tasks_posted),
        ("tasks completed", &summary.tasks_completed),
        ("attempts failed", &summary.tasks_failed),
        ("tasks dead", &summary.tasks_dead),
        ("attempts timed out", &summary.attempts_timed_out),
        ("cancellations", &summary.tasks_cancelled),
        ("workers registered", &summary.workers_registered),
        ("workers lost", &summary.workers_lost),
        ("workers replaced", &summary.workers_replaced),
        ("principals created", &summary.principals_created),
        ("proposals opened", &summary.proposals_opened),
        ("proposals decided", &summary.proposals_decided),
        ("brakes expired", &summary.brakes_expired),
        ("quarantines", &summary.quarantines),
        ("alerts raised", &summary.alerts_raised),
        ("decisions over MCP", &summary.mcp_calls),
    ] {
        text.push_str(&format!(
            "| {what} | {} | {} |\n",
            figure.count,
            links(&figure.records)
        ));
    }
    text
}

/// What happened in a window, from the decision log: JSON, or Markdown with
/// `format=md`.
#[utoipa::path(get, path = "/v1/reports/summary", tag = "audit",
    params(("since" = Option<String>, Query, description = "like 24h (the default), at most 30 days"), ("format" = Option<String>, Query, description = "json (the default) or md")),
    responses((status = 200, body = Summary, description = "JSON, or text/markdown with format=md"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn summary(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<SummaryQuery>,
) -> Result<Response, ApiError> {
    app.check_read(&caller, "audit", app.shared.read.audit)?;
    let since = query.since.as_deref().unwrap_or("24h");
    let since_ms = crate::genesis::parse_duration_ms(since)
        .ok()
        .filter(|ms| (1..=REPORT_WINDOW_MAX_MS).contains(ms))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("since is a duration like 24h, at most 30 days (not {since:?})"),
            )
        })?;
    let markdown_wanted = match query.format.as_deref() {
        None | Some("json") => false,
        Some("md") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("format is json or md (not {other:?})"),
            ))
        }
    };
    let decided = app.shared.state.read().expect("state lock").last_seq;
    if !app.shared.submitter.synced_through(decided).await {
        return Err(ApiError::shutting_down());
    }
    // Up to now, this millisecond included.
    let until = crate::sequencer::now_ms().saturating_add(1);
    let reader = app.shared.audit.clone();
    let summary =
        tokio::task::spawn_blocking(move || build(&reader, until.saturating_sub(since_ms), until))
            .await
            .map_err(|error| ApiError::internal(error.to_string()))?
            .map_err(|error| ApiError::internal(error.to_string()))?;
    Ok(if markdown_wanted {
        (
            [(CONTENT_TYPE, "text/markdown; charset=utf-8")],
            markdown(&summary),
        )
            .into_response()
    } else {
        Json(summary).into_response()
    })
}
