//! `colony grants request|list|approve|deny`: asking for more than one has, for a
//! while, and deciding others' requests.

use std::process::ExitCode;

use clap::Subcommand;
use colony_api::grants::{GrantList, GrantRequest, GrantView, QuotaAsk};
use colony_api::streams::Duration;

use crate::commands::{get, post};
use crate::output::{opt, rows};
use crate::Change;
use crate::Remote;

#[derive(Subcommand)]
pub enum GrantsCommand {
    /// Ask for a scope (on the token you use), a role, or more quota, for a while.
    Request {
        #[arg(long, conflicts_with_all = ["role", "resource"])]
        scope: Option<String>,
        #[arg(long, conflicts_with = "resource")]
        role: Option<String>,
        /// With --amount: more of this resource's quota.
        #[arg(long, requires = "amount")]
        resource: Option<String>,
        #[arg(long)]
        amount: Option<u64>,
        /// How long it lasts once approved, such as 2h (at most 30 days).
        #[arg(long)]
        ttl: String,
        #[command(flatten)]
        change: Change,
    },
    /// List grants (`--state pending` for those waiting for a decision).
    List {
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a pending grant (nobody approves their own).
    Approve {
        id: u64,
        #[command(flatten)]
        change: Change,
    },
    /// Deny a pending grant.
    Deny {
        id: u64,
        #[command(flatten)]
        change: Change,
    },
}

fn what(grant: &GrantView) -> String {
    match grant.kind.as_str() {
        "scope" => format!("scope {}", opt(&grant.scope)),
        "role" => format!("role {}", opt(&grant.role)),
        "tool_call" => format!(
            "one call of {} (arguments sha256 {})",
            opt(&grant.tool),
            grant
                .arguments_sha256
                .as_deref()
                .map_or("-", |d| &d[..d.len().min(16)])
        ),
        _ => format!("{} more {}", opt(&grant.amount), opt(&grant.resource)),
    }
}

fn print(grant: &GrantView) {
    println!(
        "grant {} for {}: {} ({}{})",
        grant.id,
        grant.requester,
        what(grant),
        grant.state,
        grant
            .expires_at
            .as_ref()
            .map(|at| format!(" until {at}"))
            .unwrap_or_default()
    );
}

pub async fn run(command: GrantsCommand) -> anyhow::Result<ExitCode> {
    let approving = matches!(command, GrantsCommand::Approve { .. });
    match command {
        GrantsCommand::Request {
            scope,
            role,
            resource,
            amount,
            ttl,
            change,
        } => {
            let body = GrantRequest {
                scope,
                role,
                quota: resource.map(|resource| QuotaAsk {
                    resource,
                    amount: amount.unwrap_or(0),
                }),
                ttl: Duration::Text(ttl),
                justification: Some(change.justification),
            };
            post(&change.remote, "/v1/grants", &body, print).await
        }
        GrantsCommand::List { state, remote } => {
            let path = match state {
                Some(state) => format!("/v1/grants?state={state}"),
                None => "/v1/grants".to_string(),
            };
            let headers = ["ID", "BY", "WHAT", "STATE", "APPROVALS", "UNTIL", "WHY"];
            get(&remote, &path, |list: &GrantList| {
                rows(&headers, &list.grants, |g| {
                    vec![
                        g.id.to_string(),
                        g.requester.clone(),
                        what(g),
                        g.state.clone(),
                        g.approvals
                            .iter()
                            .map(|a| format!("{} ({})", a.by, a.side))
                            .collect::<Vec<_>>()
                            .join(", "),
                        opt(&g.expires_at),
                        g.justification.clone(),
                    ]
                });
            })
            .await
        }
        GrantsCommand::Approve { id, change } | GrantsCommand::Deny { id, change } => {
            let verb = if approving { "approve" } else { "deny" };
            let path = format!("/v1/grants/{id}/{verb}");
            post(&change.remote, &path, &change.justified(), print).await
        }
    }
}
