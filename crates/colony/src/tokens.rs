//! `colony tokens create|list|revoke|rotate`: a principal's tokens, each with
//! scopes, an optional expiry and a name.

use std::process::ExitCode;

use clap::Subcommand;
use colony_api::ledger::LedgerView;
use colony_api::streams::Duration;
use colony_api::tokens::{CreateToken, TokenCreated, TokenList, TokenRevoked};

use crate::client::Client;
use crate::commands::call;
use crate::output::{opt, rows};
use crate::Change;
use crate::Remote;

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Make a token (the secret is printed once): `--scope read --scope llm`.
    Create {
        /// What it is for.
        #[arg(long)]
        name: String,
        /// llm, bus, tasks, ledger, governance, read, admin, spawn, tokens,
        /// bus:PATTERN or task:ADDRESS (repeatable; no wider than your token's).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it works, such as 30m or 7d (default: until revoked).
        #[arg(long)]
        ttl: Option<String>,
        /// Whose token (default: yours; an admin's for anyone).
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        change: Change,
    },
    /// List tokens without their secrets.
    List {
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a token at once (its bus connections close).
    Revoke {
        id: u64,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, short = 'j')]
        justification: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a new token with the same name, scopes and expiry, then revoke the old.
    Rotate {
        id: u64,
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        change: Change,
    },
}

/// The principal named, or the caller's own.
async fn whose(client: &Client, principal: Option<String>) -> anyhow::Result<String> {
    match principal {
        Some(address) => Ok(address),
        None => Ok(client
            .get_as::<LedgerView>("/v1/ledger/me")
            .await?
            .principal),
    }
}

fn print_created(created: &TokenCreated) {
    println!(
        "token {} ({}), scopes {}, {}",
        created.id,
        created.name,
        created.scopes.join(" "),
        created
            .expires_at
            .as_ref()
            .map_or("until revoked".to_string(), |at| format!("until {at}"))
    );
    println!("{}", created.token);
    println!("(the token is shown once; store it now)");
}

pub async fn run(command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Create {
            name,
            scopes,
            ttl,
            principal,
            change,
        } => {
            let client = Client::new(&change.remote)?;
            let address = whose(&client, principal).await?;
            let body = CreateToken {
                name,
                scopes,
                ttl: ttl.map(Duration::Text),
                justification: Some(change.justification),
            };
            let path = format!("/v1/principals/{address}/tokens");
            call(&change.remote, client.post(&path, &body), print_created).await
        }
        TokensCommand::List { principal, remote } => {
            let client = Client::new(&remote)?;
            let address = whose(&client, principal).await?;
            let path = format!("/v1/principals/{address}/tokens");
            let headers = [
                "ID", "NAME", "SCOPES", "STATE", "CREATED", "EXPIRES", "REVOKED",
            ];
            call(&remote, client.get(&path), |list: &TokenList| {
                rows(&headers, &list.tokens, |t| {
                    vec![
                        t.id.to_string(),
                        t.name.clone(),
                        t.scopes.join(" "),
                        t.state.clone(),
                        t.created_at.clone(),
                        opt(&t.expires_at),
                        opt(&t.revoked_at),
                    ]
                });
            })
            .await
        }
        TokensCommand::Revoke {
            id,
            principal,
            justification,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let address = whose(&client, principal).await?;
            let mut path = format!("/v1/principals/{address}/tokens/{id}");
            if let Some(why) = justification {
                path.push_str(&format!("?justification={}", encode(&why)));
            }
            call(&remote, client.delete(&path), |revoked: &TokenRevoked| {
                println!(
                    "revoked token {} of {} ({} bus connection(s) closed)",
                    revoked.token, revoked.principal, revoked.closed_connections
                );
            })
            .await
        }
        TokensCommand::Rotate {
            id,
            principal,
            change: Change {
                justification,
                remote,
            },
        } => {
            let client = Client::new(&remote)?;
            let address = whose(&client, principal).await?;
            let path = format!("/v1/principals/{address}/tokens");
            let list: TokenList = client.get_as(&path).await?;
            let old = list
                .tokens
                .iter()
                .find(|t| t.id == id)
                .ok_or_else(|| anyhow::anyhow!("{address} has no token {id}"))?;
            let now = colony_node::sequencer::now_ms();
            let ttl = match old.expires_at_ms {
                Some(at) if at <= now => anyhow::bail!("token {id} has expired; make a new one"),
                Some(at) => Some(Duration::Millis(at - now)),
                None => None,
            };
            let body = CreateToken {
                name: old.name.clone(),
                scopes: old.scopes.clone(),
                ttl,
                justification: Some(format!("{justification} (rotating token {id})")),
            };
            let created: TokenCreated = client.post_as(&path, &body).await?;
            let revoke = format!(
                "{path}/{id}?justification={}",
                encode(&format!("rotated: replaced by token {}", created.id))
            );
            call(&remote, client.delete(&revoke), |_: &TokenRevoked| {
                println!("token {id} is revoked; its replacement:");
                print_created(&created);
            })
            .await
        }
    }
}

/// `text` for a URL's query (letters, digits and `-_.~` kept; the rest escaped).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
