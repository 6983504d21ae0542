//! `colony audit tail|verify`: the decision log, read over HTTP or verified offline.

use clap::Subcommand;
use std::process::ExitCode;

use serde_json::{json, Value};

use colony_api::audit::AuditPage;

use crate::client::Client;
use crate::commands::call;
use crate::output::{table, text};
use crate::Remote;

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { data, replay, json } => verify(&data, replay, json),
        AuditCommand::Tail {
            limit,
            actor,
            address,
            follow,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let limit = limit.clamp(1, 1000);
            let mut filter = String::new();
            if let Some(actor) = &actor {
                filter.push_str(&format!("&actor={actor}"));
            }
            if let Some(address) = &address {
                filter.push_str(&format!("&address={address}"));
            }
            let last = match client.get_as::<AuditPage>("/v1/audit?limit=1").await {
                Ok(page) => page.last_seq,
                Err(error) => return call(&remote, async { Err(error) }, |_: &Value| {}).await,
            };
            // Unfiltered, the tail is the last `limit` records. Filtered, read forward
            // and keep the newest `limit` that match.
            let mut after = if filter.is_empty() {
                last.saturating_sub(limit as u64)
            } else {
                0
            };
            let mut tail = std::collections::VecDeque::new();
            loop {
                let page: AuditPage = client
                    .get_as(&format!("/v1/audit?after={after}&limit={limit}{filter}"))
                    .await?;
                for record in page.records {
                    tail.push_back(record);
                    if tail.len() > limit {
                        tail.pop_front();
                    }
                }
                let next = page.next_after;
                if next == after || next >= last {
                    after = next;
                    break;
                }
                after = next;
            }
            print_records(tail.make_contiguous(), remote.json, false);
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                let page: AuditPage = client
                    .get_as(&format!("/v1/audit?after={after}&limit=1000{filter}"))
                    .await?;
                print_records(&page.records, remote.json, true);
                let next = page.next_after;
                if next == after {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                after = next;
            }
        }
    }
}

/// Decision records as a table, as rows one by one (when following), or as JSON lines.
fn print_records(records: &[Value], json_lines: bool, streaming: bool) {
    if json_lines {
        records.iter().for_each(|record| println!("{record}"));
        return;
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            match serde_json::from_value::<colony_log::audit::AuditRecord>(record.clone()) {
                Ok(record) => vec![
                    record.seq.to_string(),
                    record.at,
                    record.actor,
                    record.action,
                    record.subject,
                    record.decision,
                    text(&record.reason["code"]),
                    record.justification,
                ],
                Err(error) => vec![format!("(a record this CLI cannot read: {error})")],
            }
        })
        .collect();
    if streaming {
        rows.iter().for_each(|row| println!("{}", row.join("  ")));
    } else {
        table(
            &[
                "SEQ",
                "AT",
                "ACTOR",
                "ACTION",
                "SUBJECT",
                "DECISION",
                "REASON",
                "JUSTIFICATION",
            ],
            &rows,
        );
    }
}

fn verify(data: &std::path::Path, replay: bool, json_output: bool) -> anyhow::Result<ExitCode> {
    match colony_log::verify_audit(data) {
        Ok(report) => {
            if replay {
                if let Err(error) = colony_log::verify_replay(data) {
                    if json_output {
                        crate::output::json(&json!({ "ok": false, "replay": error.to_string() }));
                    } else {
                        eprintln!("the chain verifies, but replay does not: {error}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            }
            if json_output {
                crate::output::json(
                    &json!({ "ok": true, "records": report.records, "head_hash": report.head_hash, "replayed": replay }),
                );
            } else {
                println!(
                    "verified {} decision records; head hash {}",
                    report.records, report.head_hash
                );
                if replay {
                    println!("replaying the command log reproduces every record");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            if json_output {
                crate::output::json(
                    &json!({ "ok": false, "seq": failure.seq, "file": failure.file, "offset": failure.offset, "reason": failure.reason }),
                );
            } else {
                eprintln!("{failure}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `colony report --since 24h`: the node's summary of a window, in Markdown (JSON
/// with `--json`).
pub async fn report(since: &str, remote: crate::Remote) -> anyhow::Result<ExitCode> {
    let client = Client::new(&remote)?;
    if remote.json {
        let path = format!("/v1/reports/summary?since={since}");
        return call(&remote, client.get(&path), |_: &Value| {}).await;
    }
    match client
        .get_text(&format!("/v1/reports/summary?since={since}&format=md"))
        .await
    {
        Ok(text) => {
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => call(&remote, async { Err(error) }, |_: &Value| {}).await,
    }
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print the newest decision records.
    Tail {
        /// How many records.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        /// Only records of this actor (an address).
        #[arg(long)]
        actor: Option<String>,
        /// Only records about this address or below it.
        #[arg(long)]
        address: Option<String>,
        /// Keep printing new records as they come.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Recompute the hash chain of a data directory's decision log (offline).
    Verify {
        /// Data directory.
        #[arg(long, env = "COLONY_DATA", default_value = "colony-data")]
        data: std::path::PathBuf,
        /// Also replay the command log and check that it reproduces every record.
        #[arg(long)]
        replay: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
