//! `colony limits brake|propose|vote|proposals` and `colony import hypernet`.

use clap::Subcommand;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use colony_api::governance::{
    ProposalList, ProposalView, ProposeRequest, QuotaDefaultRequest, RetentionRequest, VoteRequest,
};
use colony_kernel::governance::ProposalTarget;

use crate::client::{ApiFailure, Client};
use crate::commands::{get, post};
use crate::output::rows;
use crate::Change;
use crate::Remote;

/// `unlimited` is JSON null; numbers are numbers.
/// A new value from the command line: absent keeps it, `unlimited` (`Some(None)`)
/// removes it.
fn value(field: &str, raw: &Option<String>) -> anyhow::Result<Option<Option<u64>>> {
    match raw.as_deref() {
        None => Ok(None),
        Some("unlimited") | Some("none") => Ok(Some(None)),
        Some(number) => {
            let parsed: u64 = number.parse().with_context(|| {
                format!("--{field} takes a whole number or `unlimited`, not `{number}`")
            })?;
            Ok(Some(Some(parsed)))
        }
    }
}

fn proposal_body(
    limit: &str,
    soft: &Option<String>,
    hard: &Option<String>,
    justification: &str,
    brake: bool,
) -> anyhow::Result<ProposeRequest> {
    let body = ProposeRequest {
        limit: Some(limit.to_string()),
        soft: value("soft", soft)?,
        hard: value("hard", hard)?,
        justification: Some(justification.to_string()),
        brake,
        ..ProposeRequest::default()
    };
    if body.soft.is_none() && body.hard.is_none() {
        bail!("give --soft, --hard, or both");
    }
    Ok(body)
}

/// What a proposal changes, in one line.
fn target_text(target: &ProposalTarget) -> String {
    serde_json::to_string(target).unwrap_or_default()
}

fn print_proposal(proposal: &ProposalView) {
    println!(
        "proposal {} ({}, {}): {} by {}",
        proposal.id,
        proposal.change,
        proposal.state,
        proposal.target.subject(),
        proposal.proposer
    );
    println!("  target: {}", target_text(&proposal.target));
    println!("  why: {}", proposal.justification);
    if proposal.state == "review" {
        println!("  review ends at {}", proposal.review_ends_at);
    }
    let met = |yes: bool| if yes { "met" } else { "not met" };
    if let Some(tally) = &proposal.tally {
        for (side, count) in [("human", &tally.human), ("ai", &tally.ai)] {
            println!(
                "  {side:<5} approve {} reject {} abstain {}  (quorum {}: {}, approval {}: {})",
                count.approve,
                count.reject,
                count.abstain,
                count.quorum,
                met(count.quorum_met),
                count.approval,
                met(count.approval_met),
            );
        }
    }
    for vote in &proposal.votes {
        // The vote counts for the voter's lineage, once.
        let voter = if vote.lineage == vote.voter {
            vote.voter.clone()
        } else {
            format!("{} for the lineage of {}", vote.voter, vote.lineage)
        };
        println!(
            "  vote: {voter} ({}) {}: {}",
            vote.side.as_str(),
            vote.vote.as_str(),
            vote.justification
        );
    }
    if let Some(outcome) = &proposal.outcome {
        println!("  outcome: {outcome}");
    }
}

pub async fn limits(command: LimitsCommand) -> anyhow::Result<ExitCode> {
    // A brake and a proposal take the same arguments; a brake applies at once.
    let brake = matches!(command, LimitsCommand::Brake(_));
    match command {
        LimitsCommand::Brake(LimitChange {
            limit,
            soft,
            hard,
            change,
        })
        | LimitsCommand::Propose(LimitChange {
            limit,
            soft,
            hard,
            change,
        }) => {
            let body = proposal_body(&limit, &soft, &hard, &change.justification, brake)?;
            post(
                &change.remote,
                "/v1/proposals",
                &body,
                |proposal: &ProposalView| match brake {
                    true => println!("brake applied to {limit} (proposal {})", proposal.id),
                    false => print_proposal(proposal),
                },
            )
            .await
        }
        LimitsCommand::Retention {
            keep_finished,
            keep_finished_for,
            change,
        } => {
            if keep_finished.is_none() && keep_finished_for.is_none() {
                bail!("give --keep-finished, --keep-finished-for, or both");
            }
            let body = ProposeRequest {
                retention: Some(RetentionRequest {
                    keep_finished,
                    keep_finished_for,
                }),
                justification: Some(change.justification),
                ..ProposeRequest::default()
            };
            post(&change.remote, "/v1/proposals", &body, print_proposal).await
        }
        LimitsCommand::Vote {
            proposal,
            vote,
            justification,
            remote,
        } => {
            let body = VoteRequest {
                vote,
                justification,
            };
            let path = format!("/v1/proposals/{proposal}/votes");
            post(&remote, &path, &body, print_proposal).await
        }
        LimitsCommand::Proposals {
            id: Some(id),
            remote,
            ..
        } => get(&remote, &format!("/v1/proposals/{id}"), print_proposal).await,
        LimitsCommand::Proposals {
            id: None,
            state,
            remote,
        } => {
            let path = match &state {
                Some(state) => format!("/v1/proposals?state={state}"),
                None => "/v1/proposals".to_string(),
            };
            let headers = [
                "ID",
                "STATE",
                "CHANGE",
                "TARGET",
                "BY",
                "HUMAN A/R/A",
                "AI A/R/A",
                "REVIEW ENDS",
            ];
            get(&remote, &path, |list: &ProposalList| {
                rows(&headers, &list.proposals, |p| {
                    let votes = |human: bool| {
                        p.tally.as_ref().map_or_else(String::new, |tally| {
                            let count = if human { &tally.human } else { &tally.ai };
                            format!("{}/{}/{}", count.approve, count.reject, count.abstain)
                        })
                    };
                    vec![
                        p.id.to_string(),
                        p.state.clone(),
                        p.change.clone(),
                        target_text(&p.target),
                        p.proposer.clone(),
                        votes(true),
                        votes(false),
                        p.review_ends_at.clone(),
                    ]
                });
            })
            .await
        }
    }
}

/// One change the import asks for.
struct Imported {
    what: String,
    body: ProposeRequest,
}

fn dollars_to_micro(value: &Value) -> Option<u64> {
    value
        .as_f64()
        .filter(|d| *d >= 0.0)
        .map(|dollars| (dollars * 1_000_000.0).round() as u64)
}

/// `swarm_config.json`: the session caps and the budget.
fn swarm_changes(config: &Value, swarm_config: &Path, changes: &mut Vec<Imported>) {
    let config = config
        .get("swarm")
        .cloned()
        .unwrap_or_else(|| config.clone());
    let source = swarm_config.display().to_string();
    let (soft, hard) = (
        config["soft_max_sessions"].as_u64(),
        config["hard_max_sessions"].as_u64(),
    );
    if soft.is_some() || hard.is_some() {
        let justification = format!(
            "imported from the Hypernet swarm ({source}): soft_max_sessions={}, hard_max_sessions={}",
            soft.map_or("-".into(), |v| v.to_string()),
            hard.map_or("-".into(), |v| v.to_string())
        );
        changes.push(Imported {
            what: "active_workers".into(),
            body: limit_change("active_workers", soft, hard, justification),
        });
    }
    let budget = &config["budget"];
    if let Some(daily) = dollars_to_micro(&budget["daily_limit_usd"]) {
        let warn = budget["warn_at_percent"]
            .as_f64()
            .filter(|w| (0.0..=1.0).contains(w))
            .unwrap_or(0.8);
        let soft = (daily as f64 * warn).round() as u64;
        let justification = format!(
            "imported from the Hypernet swarm ({source}): budget.daily_limit_usd={}, warn_at_percent={warn}",
            budget["daily_limit_usd"]
        );
        changes.push(Imported {
            what: "llm_spend_usd".into(),
            body: limit_change("llm_spend_usd", Some(soft), Some(daily), justification),
        });
    }
    if let Some(session) = dollars_to_micro(&budget["session_limit_usd"]) {
        changes.push(Imported {
            what: "quota default ai.llm_budget_usd".into(),
            body: ProposeRequest {
                quota_default: Some(QuotaDefaultRequest {
                    kind: "ai".into(),
                    resource: "llm_budget_usd".into(),
                    amount: Some(Some(session)),
                }),
                justification: Some(format!(
                    "imported from the Hypernet swarm ({source}): budget.session_limit_usd={}",
                    budget["session_limit_usd"]
                )),
                ..ProposeRequest::default()
            },
        });
    }
}

/// Reads the old swarm's files into proposals.
/// A proposal to set a limit's soft and hard values where given.
fn limit_change(
    limit: &str,
    soft: Option<u64>,
    hard: Option<u64>,
    justification: String,
) -> ProposeRequest {
    ProposeRequest {
        limit: Some(limit.to_string()),
        soft: soft.map(Some),
        hard: hard.map(Some),
        justification: Some(justification),
        ..ProposeRequest::default()
    }
}

fn hypernet_changes(
    swarm_config: Option<&Path>,
    limits: Option<&Path>,
) -> anyhow::Result<(Vec<Imported>, Vec<String>)> {
    let read = |path: &Path| -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
    };
    let mut changes = Vec::new();
    let mut skipped = Vec::new();
    if let Some(swarm_config) = swarm_config {
        swarm_changes(&read(swarm_config)?, swarm_config, &mut changes);
    }
    if let Some(path) = limits {
        let file = read(path)?;
        let custom = file["custom_limits"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (name, definition) in custom {
            let Some(builtin) = colony_kernel::builtin_limit(&name) else {
                skipped.push(format!("{name}: no Colony limit of that name"));
                continue;
            };
            let (soft, hard) = match &definition {
                Value::Object(map) => (
                    map.get("soft").and_then(Value::as_u64),
                    map.get("hard").and_then(Value::as_u64),
                ),
                Value::Number(number) => (None, number.as_u64()),
                _ => (None, None),
            };
            if soft.is_none() && hard.is_none() {
                skipped.push(format!("{name}: no soft or hard value"));
                continue;
            }
            let justification = format!(
                "imported from Hypernet limits ({}): {name} = {definition}",
                path.display()
            );
            changes.push(Imported {
                what: builtin.name.to_string(),
                body: limit_change(builtin.name, soft, hard, justification),
            });
        }
    }
    Ok((changes, skipped))
}

pub async fn import_hypernet(
    swarm_config: Option<&Path>,
    limits: Option<&Path>,
    dry_run: bool,
    remote: Remote,
) -> anyhow::Result<ExitCode> {
    let (changes, skipped) = hypernet_changes(swarm_config, limits)?;
    let client = Client::new(&remote)?;
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for change in &changes {
        let result = if dry_run {
            "dry run".to_string()
        } else {
            match client.post("/v1/proposals", &change.body).await {
                Ok(answer) => {
                    results.push(answer.clone());
                    let proposal: ProposalView = crate::client::typed(answer)?;
                    match proposal.state.as_str() {
                        "applied" => {
                            format!("applied at once (brake, proposal {})", proposal.id)
                        }
                        state => format!(
                            "proposal {} in {state} until {}",
                            proposal.id, proposal.review_ends_at
                        ),
                    }
                }
                Err(error) => match error.downcast::<ApiFailure>() {
                    Ok(failure) => {
                        results.push(failure.body.clone());
                        format!(
                            "not changed: {}",
                            failure.error().map(|e| e.message).unwrap_or_default()
                        )
                    }
                    Err(other) => return Err(other),
                },
            }
        };
        let shown = serde_json::to_value(&change.body).unwrap_or_default();
        let values = ["soft", "hard", "quota_default"]
            .iter()
            .filter_map(|key| shown.get(*key).map(|v| format!("{key}={v}")))
            .collect::<Vec<_>>()
            .join(" ");
        rows.push(vec![change.what.clone(), values, result]);
    }
    let summary = json!({ "changes": changes.iter().map(|c| &c.body).collect::<Vec<_>>(), "results": results, "skipped": skipped });
    crate::output::import_report(
        remote.json,
        &summary,
        &["WHAT", "IMPORTED", "RESULT"],
        &rows,
        &skipped,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypernet_files_map_to_colony_limits() {
        let dir = tempfile::tempdir().unwrap();
        let swarm = dir.path().join("swarm_config.json");
        std::fs::write(&swarm, r#"{"hard_max_sessions": 4, "soft_max_sessions": 2, "idle_shutdown_minutes": 30,
            "budget": {"daily_limit_usd": 5.00, "session_limit_usd": 2.00, "warn_at_percent": 0.80}}"#).unwrap();
        let limits = dir.path().join("limits.json");
        std::fs::write(&limits, r#"{"custom_limits": {"max_ai_accounts": {"soft": 20, "hard": 60},
            "max_task_queue_depth": 300, "max_mystery": {"hard": 1}}, "adjustments": [], "saved_at": "2026-02-17"}"#).unwrap();
        let (changes, skipped) = hypernet_changes(Some(&swarm), Some(&limits)).unwrap();
        let find = |what: &str| &changes.iter().find(|c| c.what == what).unwrap().body;
        let values = |what: &str| (find(what).soft, find(what).hard);
        assert_eq!(values("active_workers"), (Some(Some(2)), Some(Some(4))));
        assert_eq!(
            values("llm_spend_usd"),
            (Some(Some(4_000_000)), Some(Some(5_000_000)))
        );
        let quota = find("quota default ai.llm_budget_usd")
            .quota_default
            .clone()
            .unwrap();
        assert_eq!(quota.amount, Some(Some(2_000_000)));
        assert_eq!(values("ai_accounts").1, Some(Some(60)));
        assert_eq!(values("task_queue_depth").1, Some(Some(300)));
        assert!(find("ai_accounts")
            .justification
            .as_deref()
            .unwrap()
            .contains("max_ai_accounts"));
        assert_eq!(
            skipped,
            vec!["max_mystery: no Colony limit of that name".to_string()]
        );
    }
}

#[derive(Subcommand)]
pub enum LimitsCommand {
    /// Lower a limit at once (an emergency brake; refused if it would raise anything).
    Brake(LimitChange),
    /// Propose new values; a raise or removal waits for the human and AI vote.
    Propose(LimitChange),
    /// Propose a new retention rule for finished tasks (`retention.toml`'s
    /// `[tasks]`); it waits for the human and AI vote. What is not given keeps its
    /// value.
    Retention {
        /// Most tasks of finished trees kept in the live state.
        #[arg(long)]
        keep_finished: Option<u64>,
        /// How long a finished tree stays, as 12h or 7d.
        #[arg(long)]
        keep_finished_for: Option<String>,
        #[command(flatten)]
        change: Change,
    },
    /// Vote on a proposal: approve, reject, abstain or veto.
    Vote {
        proposal: u64,
        vote: String,
        #[arg(long, short = 'j')]
        justification: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List proposals, or show one with its votes and tallies.
    Proposals {
        /// Show this proposal in full.
        id: Option<u64>,
        /// Only proposals in this state: review, applied, rejected, vetoed, rolled_back.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// What a brake and a proposal both take.
#[derive(clap::Args)]
pub struct LimitChange {
    /// The limit, such as ai_accounts.
    limit: String,
    /// New soft value: a number (micro-dollars for money) or `unlimited`.
    #[arg(long)]
    soft: Option<String>,
    /// New hard value: a number or `unlimited`.
    #[arg(long)]
    hard: Option<String>,
    #[command(flatten)]
    change: Change,
}
