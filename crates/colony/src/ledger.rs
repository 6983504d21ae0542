//! `colony ledger me|reserve|commit|release`.

use clap::Subcommand;
use std::process::ExitCode;

use colony_api::ledger::{
    CommitRequest, Committed, LedgerView, ReleaseRequest, Released, ReserveRequest, Reserved,
};

use crate::commands::{get, post};
use crate::output::{amount, rows};
use crate::Remote;

pub async fn run(command: LedgerCommand) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Me { remote } => {
            let headers = [
                "RESOURCE",
                "KIND",
                "QUOTA",
                "USED",
                "RESERVED",
                "AVAILABLE",
                "SHORTFALL",
            ];
            get(&remote, "/v1/ledger/me", |ledger: &LedgerView| {
                println!("principal {}", ledger.principal);
                rows(&headers, &ledger.balances, |(name, b)| {
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
                });
                let reservations = ledger.reservations.len();
                println!("{reservations} open reservation(s)");
            })
            .await
        }
        LedgerCommand::Reserve {
            resource,
            amount: requested,
            justification,
            ttl_ms,
            remote,
        } => {
            let body = ReserveRequest {
                resource,
                amount: requested,
                justification: Some(justification),
                ttl_ms,
            };
            post(
                &remote,
                "/v1/ledger/reserve",
                &body,
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
            let body = CommitRequest {
                reservation,
                actual,
                justification: None,
            };
            post(
                &remote,
                "/v1/ledger/commit",
                &body,
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
            let body = ReleaseRequest {
                reservation,
                justification: None,
            };
            post(&remote, "/v1/ledger/release", &body, |_: &Released| {
                println!("released {reservation}");
            })
            .await
        }
    }
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Show your balances and open reservations.
    Me {
        #[command(flatten)]
        remote: Remote,
    },
    /// Set aside an amount before an action (money in micro-dollars).
    Reserve {
        resource: String,
        amount: u64,
        #[arg(long, short = 'j')]
        justification: String,
        /// How long the reservation lives, in milliseconds.
        #[arg(long)]
        ttl_ms: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Charge the actual amount of a reservation; the rest is refunded.
    Commit {
        reservation: u64,
        actual: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Give a reservation back in full.
    Release {
        reservation: u64,
        #[command(flatten)]
        remote: Remote,
    },
}
