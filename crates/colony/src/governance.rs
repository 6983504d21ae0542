//! `colony limits brake|propose|vote|proposals` and `colony import hypernet`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::client::{ApiFailure, Client};
use crate::commands::call;
use crate::output::{table, text};
use crate::{LimitsCommand, Remote};

/// `unlimited` is JSON null; numbers are numbers.
fn value(field: &str, raw: &Option<String>) -> anyhow::Result<Option<Value>> {
    match raw.as_deref() {
        None => Ok(None),
        Some("unlimited") | Some("none") => Ok(Some(Value::Null)),
        Some(number) => {
            let parsed: u64 = number.parse().with_context(|| {
                format!("--{field} takes a whole number or `unlimited`, not `{number}`")
            })?;
            Ok(Some(json!(parsed)))
        }
    }
}

fn proposal_body(
    limit: &str,
    soft: &Option<String>,
    hard: &Option<String>,
    justification: &str,
    brake: bool,
) -> anyhow::Result<Value> {
    let mut body = json!({ "limit": limit, "justification": justification, "brake": brake });
    if let Some(soft) = value("soft", soft)? {
        body["soft"] = soft;
    }
    if let Some(hard) = value("hard", hard)? {
        body["hard"] = hard;
    }
    if body.get("soft").is_none() && body.get("hard").is_none() {
        bail!("give --soft, --hard, or both");
    }
    Ok(body)
}

fn print_proposal(proposal: &Value) {
    let state = text(&proposal["state"]);
    println!(
        "proposal {} ({}, {}): {} by {}",
        proposal["id"],
        text(&proposal["change"]),
        state,
        text(&proposal["limit"]),
        text(&proposal["proposer"])
    );
    println!("  target: {}", proposal["target"]);
    println!("  why: {}", text(&proposal["justification"]));
    if state == "review" {
        println!("  review ends at {}", text(&proposal["review_ends_at"]));
    }
    for side in ["human", "ai"] {
        let tally = &proposal["tally"][side];
        if tally.is_object() {
            println!(
                "  {side:<5} approve {} reject {} abstain {}  (quorum {}: {}, approval {}: {})",
                tally["approve"],
                tally["reject"],
                tally["abstain"],
                tally["quorum"],
                if tally["quorum_met"] == true {
                    "met"
                } else {
                    "not met"
                },
                text(&tally["approval"]),
                if tally["approval_met"] == true {
                    "met"
                } else {
                    "not met"
                },
            );
        }
    }
    for vote in proposal["votes"].as_array().into_iter().flatten() {
        println!(
            "  vote: {} ({}) {}: {}",
            text(&vote["voter"]),
            text(&vote["side"]),
            text(&vote["vote"]),
            text(&vote["justification"])
        );
    }
    if let Some(outcome) = proposal["outcome"].as_str() {
        println!("  outcome: {outcome}");
    }
}

pub async fn limits(command: LimitsCommand) -> anyhow::Result<ExitCode> {
    match command {
        LimitsCommand::Brake {
            limit,
            soft,
            hard,
            justification,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = proposal_body(&limit, &soft, &hard, &justification, true)?;
            call(&remote, client.post("/v1/proposals", &body), |proposal| {
                println!("brake applied to {limit} (proposal {})", proposal["id"]);
            })
            .await
        }
        LimitsCommand::Propose {
            limit,
            soft,
            hard,
            justification,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = proposal_body(&limit, &soft, &hard, &justification, false)?;
            call(&remote, client.post("/v1/proposals", &body), print_proposal).await
        }
        LimitsCommand::Vote {
            proposal,
            vote,
            justification,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = json!({ "vote": vote, "justification": justification });
            call(
                &remote,
                client.post(&format!("/v1/proposals/{proposal}/votes"), &body),
                print_proposal,
            )
            .await
        }
        LimitsCommand::Proposals {
            id: Some(id),
            remote,
            ..
        } => {
            let client = Client::new(&remote)?;
            call(
                &remote,
                client.get(&format!("/v1/proposals/{id}")),
                print_proposal,
            )
            .await
        }
        LimitsCommand::Proposals {
            id: None,
            state,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let path = match &state {
                Some(state) => format!("/v1/proposals?state={state}"),
                None => "/v1/proposals".to_string(),
            };
            call(&remote, client.get(&path), |value| {
                let rows: Vec<Vec<String>> = value["proposals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let votes = |side: &str| {
                            let tally = &p["tally"][side];
                            format!(
                                "{}/{}/{}",
                                tally["approve"], tally["reject"], tally["abstain"]
                            )
                        };
                        vec![
                            p["id"].to_string(),
                            text(&p["state"]),
                            text(&p["change"]),
                            p["target"].to_string(),
                            text(&p["proposer"]),
                            votes("human"),
                            votes("ai"),
                            text(&p["review_ends_at"]),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "STATE",
                        "CHANGE",
                        "TARGET",
                        "BY",
                        "HUMAN A/R/A",
                        "AI A/R/A",
                        "REVIEW ENDS",
                    ],
                    &rows,
                );
            })
            .await
        }
    }
}

/// One change the import asks for.
struct Imported {
    what: String,
    body: Value,
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
        let mut body = json!({ "limit": "active_workers", "justification": format!(
            "imported from the Hypernet swarm ({source}): soft_max_sessions={}, hard_max_sessions={}",
            soft.map_or("-".into(), |v| v.to_string()), hard.map_or("-".into(), |v| v.to_string())) });
        if let Some(soft) = soft {
            body["soft"] = json!(soft);
        }
        if let Some(hard) = hard {
            body["hard"] = json!(hard);
        }
        changes.push(Imported {
            what: "active_workers".into(),
            body,
        });
    }
    let budget = &config["budget"];
    if let Some(daily) = dollars_to_micro(&budget["daily_limit_usd"]) {
        let warn = budget["warn_at_percent"]
            .as_f64()
            .filter(|w| (0.0..=1.0).contains(w))
            .unwrap_or(0.8);
        let soft = (daily as f64 * warn).round() as u64;
        changes.push(Imported {
            what: "llm_spend_usd".into(),
            body: json!({ "limit": "llm_spend_usd", "soft": soft, "hard": daily, "justification": format!(
                "imported from the Hypernet swarm ({source}): budget.daily_limit_usd={}, warn_at_percent={warn}", budget["daily_limit_usd"]) }),
        });
    }
    if let Some(session) = dollars_to_micro(&budget["session_limit_usd"]) {
        changes.push(Imported {
            what: "quota default ai.llm_budget_usd".into(),
            body: json!({ "quota_default": {"kind": "ai", "resource": "llm_budget_usd", "amount": session},
                "justification": format!("imported from the Hypernet swarm ({source}): budget.session_limit_usd={}", budget["session_limit_usd"]) }),
        });
    }
}

/// Reads the old swarm's files into proposals.
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
            let mut body = json!({ "limit": builtin.name, "justification": format!(
                "imported from Hypernet limits ({}): {name} = {definition}", path.display()) });
            if let Some(soft) = soft {
                body["soft"] = json!(soft);
            }
            if let Some(hard) = hard {
                body["hard"] = json!(hard);
            }
            changes.push(Imported {
                what: builtin.name.to_string(),
                body,
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
                Ok(proposal) => {
                    results.push(proposal.clone());
                    match proposal["state"].as_str() {
                        Some("applied") => {
                            format!("applied at once (brake, proposal {})", proposal["id"])
                        }
                        Some(state) => format!(
                            "proposal {} in {state} until {}",
                            proposal["id"],
                            text(&proposal["review_ends_at"])
                        ),
                        None => "?".to_string(),
                    }
                }
                Err(error) => match error.downcast::<ApiFailure>() {
                    Ok(failure) => {
                        results.push(failure.body.clone());
                        format!(
                            "not changed: {}",
                            failure.body["error"]["message"].as_str().unwrap_or("")
                        )
                    }
                    Err(other) => return Err(other),
                },
            }
        };
        let values = ["soft", "hard", "quota_default"]
            .iter()
            .filter_map(|key| change.body.get(*key).map(|v| format!("{key}={v}")))
            .collect::<Vec<_>>()
            .join(" ");
        rows.push(vec![change.what.clone(), values, result]);
    }
    if remote.json {
        crate::output::json(
            &json!({ "changes": changes.iter().map(|c| &c.body).collect::<Vec<_>>(), "results": results, "skipped": skipped }),
        );
    } else {
        table(&["WHAT", "IMPORTED", "RESULT"], &rows);
        for line in &skipped {
            println!("skipped {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
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
        assert_eq!(
            (
                find("active_workers")["soft"].as_u64(),
                find("active_workers")["hard"].as_u64()
            ),
            (Some(2), Some(4))
        );
        assert_eq!(
            (
                find("llm_spend_usd")["soft"].as_u64(),
                find("llm_spend_usd")["hard"].as_u64()
            ),
            (Some(4_000_000), Some(5_000_000))
        );
        assert_eq!(
            find("quota default ai.llm_budget_usd")["quota_default"]["amount"],
            2_000_000
        );
        assert_eq!(find("ai_accounts")["hard"], 60);
        assert_eq!(find("task_queue_depth")["hard"], 300);
        assert!(find("ai_accounts")["justification"]
            .as_str()
            .unwrap()
            .contains("max_ai_accounts"));
        assert_eq!(
            skipped,
            vec!["max_mystery: no Colony limit of that name".to_string()]
        );
    }
}
