//! `colony principals add|list|show|remove|release`.

use clap::Subcommand;
use std::process::ExitCode;

use crate::commands::{get, parse_priority, post};
use crate::output::{opt, rows};
use crate::Change;
use crate::Remote;
use colony_api::principals::{
    CreateAnswer, CreatePrincipal, PrincipalAction, PrincipalList, PrincipalView,
};

pub async fn run(command: PrincipalsCommand) -> anyhow::Result<ExitCode> {
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
            let body = CreatePrincipal {
                name,
                kind,
                justification: Some(justification),
                roles,
                parent,
                address,
                priority: parse_priority(&priority)?,
            };
            post(&remote, "/v1/principals", &body, |answer: &CreateAnswer| {
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
            })
            .await
        }
        PrincipalsCommand::List { all, remote } => {
            let path = if all {
                "/v1/principals?all=true"
            } else {
                "/v1/principals"
            };
            let headers = [
                "ADDRESS", "NAME", "KIND", "ROLES", "STATE", "PARENT", "CREATED",
            ];
            get(&remote, path, |list: &PrincipalList| {
                rows(&headers, &list.principals, |p| {
                    vec![
                        p.address.clone(),
                        p.name.clone(),
                        p.kind.clone(),
                        p.roles.join(","),
                        p.state.clone(),
                        opt(&p.parent),
                        p.created_at.clone(),
                    ]
                });
            })
            .await
        }
        PrincipalsCommand::Remove { address, change } => {
            act(&address, "remove", "removed", &change).await
        }
        PrincipalsCommand::Show { address, remote } => {
            let path = format!("/v1/principals/{address}");
            get(&remote, &path, |p: &PrincipalView| {
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
        PrincipalsCommand::Release { address, change } => {
            act(&address, "release", "released from quarantine", &change).await
        }
    }
}

/// `POST /v1/principals/{address}/{action}` with only a justification.
async fn act(address: &str, action: &str, done: &str, change: &Change) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/principals/{address}/{action}");
    post(
        &change.remote,
        &path,
        &change.justified(),
        |_: &PrincipalAction| {
            println!("{done} {address}");
        },
    )
    .await
}

#[derive(Subcommand)]
pub enum PrincipalsCommand {
    /// Create a principal and print its address and token (admins only).
    Add {
        /// A name for people to read.
        #[arg(long)]
        name: String,
        /// human, ai, artifact or node.
        #[arg(long)]
        kind: String,
        /// Why it is created (recorded in the decision log).
        #[arg(long, short = 'j')]
        justification: String,
        /// Roles: admin, member, observer (repeatable; default member).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Address of the parent whose quotas bound this principal.
        #[arg(long)]
        parent: Option<String>,
        /// A specific address under the kind's prefix (such as 2.1.loom).
        #[arg(long)]
        address: Option<String>,
        /// low, normal, high or critical: order in a soft-limit admission queue.
        #[arg(long, default_value = "normal")]
        priority: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List principals.
    List {
        /// Include removed principals.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a principal: its token stops working and its reservations are released.
    Remove {
        address: String,
        #[command(flatten)]
        change: Change,
    },
    /// Show one principal: its state (active, quarantined, removed) and, when
    /// quarantined, the evidence.
    Show {
        address: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lift a quarantine (a human member or admin).
    Release {
        address: String,
        #[command(flatten)]
        change: Change,
    },
}
