//! `colony principals add|list|show|remove|release`.

use clap::Subcommand;
use std::process::ExitCode;

use colony_api::principals::{
    CreateAnswer, CreatePrincipal, PrincipalAction, PrincipalList, PrincipalView,
};
use colony_api::Justified;

use crate::client::Client;
use crate::commands::call;
use crate::output::{opt, table};
use crate::Change;
use crate::Remote;

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
            change: Change {
                justification,
                remote,
            },
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
            change: Change {
                justification,
                remote,
            },
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
