//! `colony artifacts deploy|list|show|logs|stop|start`: WebAssembly artifacts that
//! run inside Colony on their own quotas (docs/artifacts.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use clap::Subcommand;
use colony_api::artifacts::{ArtifactList, ArtifactLogs, ArtifactView, DeployArtifact};

use crate::commands::{get, post};
use crate::output::{opt, rows};
use crate::Change;
use crate::Remote;

#[derive(Subcommand)]
pub enum ArtifactsCommand {
    /// Deploy a module (`.wasm`, or `.wat` text) as an artifact under you.
    Deploy {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// A quota of its own, such as compute_ms=2000 (repeatable; in the
        /// resource's unit, micro-dollars for llm_budget_usd).
        #[arg(long = "quota", value_name = "RESOURCE=AMOUNT")]
        quotas: Vec<String>,
        /// Deploy it stopped.
        #[arg(long)]
        stopped: bool,
        #[command(flatten)]
        change: Change,
    },
    /// List artifacts with their state and usage.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one artifact: state, usage, balances, last error.
    Show {
        address: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print what an artifact logged (--after SEQ for newer lines).
    Logs {
        address: String,
        #[arg(long)]
        after: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop an artifact after its current turn.
    Stop {
        address: String,
        #[command(flatten)]
        change: Change,
    },
    /// Start an artifact afresh.
    Start {
        address: String,
        #[command(flatten)]
        change: Change,
    },
}

fn print(artifact: &ArtifactView) {
    let usage = &artifact.usage;
    println!(
        "artifact {} ({}) by {}: {}{}",
        artifact.address,
        artifact.name,
        artifact.deployer,
        artifact.state,
        artifact
            .exhausted
            .as_ref()
            .map(|r| format!(" of {r}"))
            .unwrap_or_default()
    );
    println!(
        "  turns {}, runs {}, compute {} ms ({} fuel), host calls {}, memory {} bytes, stored {} bytes",
        usage.turns,
        usage.runs,
        usage.compute_ms,
        usage.fuel,
        usage.host_calls,
        usage.memory_bytes,
        usage.kv_bytes
    );
    for (resource, balance) in &artifact.balances {
        println!(
            "  {resource}: used {} of {}",
            balance.used,
            balance
                .quota
                .map_or_else(|| "unlimited".to_string(), |q| q.to_string())
        );
    }
    if let Some(error) = &artifact.last_error {
        println!("  last error: {error}");
    }
    println!("  module {} ({} bytes)", artifact.digest, artifact.bytes);
}

pub async fn run(command: ArtifactsCommand) -> anyhow::Result<ExitCode> {
    let stopping = matches!(command, ArtifactsCommand::Stop { .. });
    match command {
        ArtifactsCommand::Deploy {
            file,
            name,
            quotas,
            stopped,
            change,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (wasm_base64, wat) = if bytes.starts_with(b"\0asm") {
                (
                    Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                    None,
                )
            } else {
                let text = String::from_utf8(bytes).with_context(|| {
                    format!("{} is neither binary WebAssembly nor text", file.display())
                })?;
                (None, Some(text))
            };
            let mut map = std::collections::BTreeMap::new();
            for quota in quotas {
                let (resource, amount) = quota
                    .split_once('=')
                    .with_context(|| format!("--quota {quota}: write RESOURCE=AMOUNT"))?;
                let amount: u64 = amount
                    .parse()
                    .with_context(|| format!("--quota {quota}: the amount is a whole number"))?;
                map.insert(resource.to_string(), amount);
            }
            let body = DeployArtifact {
                name,
                wasm_base64,
                wat,
                quotas: (!map.is_empty()).then_some(map),
                run: Some(!stopped),
                justification: Some(change.justification),
            };
            post(&change.remote, "/v1/artifacts", &body, print).await
        }
        ArtifactsCommand::List { remote } => {
            let headers = [
                "ADDRESS",
                "NAME",
                "BY",
                "STATE",
                "TURNS",
                "COMPUTE_MS",
                "MEMORY",
                "LAST ERROR",
            ];
            get(&remote, "/v1/artifacts", |list: &ArtifactList| {
                rows(&headers, &list.artifacts, |a| {
                    vec![
                        a.address.clone(),
                        a.name.clone(),
                        a.deployer.clone(),
                        a.state.clone(),
                        a.usage.turns.to_string(),
                        a.usage.compute_ms.to_string(),
                        a.usage.memory_bytes.to_string(),
                        opt(&a.last_error),
                    ]
                });
            })
            .await
        }
        ArtifactsCommand::Show { address, remote } => {
            get(&remote, &format!("/v1/artifacts/{address}"), print).await
        }
        ArtifactsCommand::Logs {
            address,
            after,
            remote,
        } => {
            let path = match after {
                Some(after) => format!("/v1/artifacts/{address}/logs?after={after}"),
                None => format!("/v1/artifacts/{address}/logs"),
            };
            get(&remote, &path, |logs: &ArtifactLogs| {
                for line in &logs.lines {
                    println!("{} {} {}", line.seq, line.at, line.text);
                }
            })
            .await
        }
        ArtifactsCommand::Stop { address, change }
        | ArtifactsCommand::Start { address, change } => {
            let verb = if stopping { "stop" } else { "start" };
            let path = format!("/v1/artifacts/{address}/{verb}");
            post(&change.remote, &path, &change.justified(), print).await
        }
    }
}
