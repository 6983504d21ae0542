//! `colony audit tail|verify`: the decision log, read over HTTP or verified offline.

use clap::Subcommand;
use std::process::ExitCode;

use serde_json::{json, Value};

use colony_api::audit::AuditPage;

use crate::client::Client;
use crate::commands::call;
use crate::output::table;
use crate::Remote;

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            data,
            replay,
            json,
            head,
            key,
            keys_from,
        } => {
            let heads = match signed_heads(&data, &head, &key, &keys_from).await {
                Ok(heads) => heads,
                Err(error) => {
                    if json {
                        crate::output::json(&json!({ "ok": false, "heads": format!("{error:#}") }));
                    } else {
                        eprintln!("{error:#}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            verify(&data, replay, json, &heads)
        }
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
            match serde_json::from_value::<colony_api::audit::DecisionRecord>(record.clone()) {
                Ok(record) => vec![
                    record.seq.to_string(),
                    record.at,
                    record.actor,
                    record.action,
                    record.subject,
                    record.decision,
                    record.reason.code,
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

/// Most bytes of signed heads read from one file or URL.
const HEADS_BYTES_MAX: usize = 64 << 20;

/// A file's text, or a URL's (with `COLONY_TOKEN`), at most [`HEADS_BYTES_MAX`].
async fn read_source(source: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    if source.starts_with("http://") || source.starts_with("https://") {
        let mut request = reqwest::Client::new().get(source);
        if let Ok(token) = std::env::var("COLONY_TOKEN") {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("GET {source}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET {source}: {}",
            response.status()
        );
        let text = response
            .text()
            .await
            .with_context(|| format!("GET {source}"))?;
        anyhow::ensure!(
            text.len() <= HEADS_BYTES_MAX,
            "{source}: more than {HEADS_BYTES_MAX} bytes"
        );
        return Ok(text);
    }
    let size = std::fs::metadata(source)
        .with_context(|| format!("reading {source}"))?
        .len();
    anyhow::ensure!(
        size <= HEADS_BYTES_MAX as u64,
        "{source}: more than {HEADS_BYTES_MAX} bytes"
    );
    std::fs::read_to_string(source).with_context(|| format!("reading {source}"))
}

/// The keys a cluster trusts, as one of its nodes answers `GET /v1/cluster` (a URL,
/// or a file holding that answer): every admitted node's, and the answering node's
/// own (an embedded node admits none).
async fn cluster_keys(source: &str) -> anyhow::Result<Vec<String>> {
    let text = read_source(source).await?;
    let view: colony_api::cluster::ClusterView = serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("{source}: not a GET /v1/cluster answer: {error}"))?;
    let mut keys: Vec<String> = view.admitted.into_iter().map(|n| n.public_key).collect();
    if !view.public_key.is_empty() {
        keys.push(view.public_key);
    }
    anyhow::ensure!(!keys.is_empty(), "{source}: names no node key");
    Ok(keys)
}

/// The signed heads of `sources` (files or URLs), each signature checked against
/// `keys` and the keys of the clusters `keys_from` describe (or, without any, the
/// data directory's `node.pub`, said so).
async fn signed_heads(
    data: &std::path::Path,
    sources: &[String],
    keys: &[String],
    keys_from: &[String],
) -> anyhow::Result<Vec<colony_log::heads::SignedHead>> {
    use anyhow::Context;
    // A pruned decision log starts from its signed cut: held to the same keys.
    let cut = colony_log::prune::audit_cut(data).map_err(anyhow::Error::msg)?;
    if sources.is_empty() && cut.is_none() {
        anyhow::ensure!(
            keys.is_empty() && keys_from.is_empty(),
            "--key and --keys-from pin whose heads count: give them with --head"
        );
        return Ok(Vec::new());
    }
    let mut keys = keys.to_vec();
    for source in keys_from {
        keys.extend(cluster_keys(source).await?);
    }
    let trusted = if keys.is_empty() {
        let file = data.join(colony_node::identity::PUBLIC_KEY_FILE);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("no --key given and {} cannot be read", file.display()))?;
        eprintln!(
            "colony audit verify: trusting the data directory's own key ({}): pass --key to pin whose signatures count",
            file.display()
        );
        vec![colony_log::heads::decode_key(&text).map_err(anyhow::Error::msg)?]
    } else {
        keys.iter()
            .map(|key| colony_log::heads::decode_key(key).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    if let Some(cut) = &cut {
        cut.verify(&trusted).map_err(|error| {
            anyhow::anyhow!(
                "the decision log was pruned before record {}, and its cut ({}) does not verify: {error}",
                cut.seq + 1,
                data.join("audit").join(colony_log::prune::CUT_FILE).display()
            )
        })?;
    }
    let mut heads = Vec::new();
    for source in sources {
        let text = read_source(source).await?;
        let parsed = colony_log::heads::parse_heads(&text)
            .map_err(|error| anyhow::anyhow!("{source}: {error}"))?;
        for head in parsed {
            head.verify(&trusted)
                .map_err(|error| anyhow::anyhow!("{source}: {error}"))?;
            heads.push(head);
        }
    }
    Ok(heads)
}

fn verify(
    data: &std::path::Path,
    replay: bool,
    json_output: bool,
    heads: &[colony_log::heads::SignedHead],
) -> anyhow::Result<ExitCode> {
    match colony_log::verify_audit_against(data, heads) {
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
                    &json!({ "ok": true, "records": report.records, "from": report.from, "head_hash": report.head_hash, "replayed": replay, "signed_heads": report.heads, "signed_heads_pruned": report.heads_before_cut }),
                );
            } else {
                if report.from > 1 {
                    println!(
                        "verified decision records {} to {}; head hash {} (the log was pruned before record {}: the chain starts at its signed cut)",
                        report.from, report.records, report.head_hash, report.from
                    );
                } else {
                    println!(
                        "verified {} decision records; head hash {}",
                        report.records, report.head_hash
                    );
                }
                if report.heads_before_cut > 0 {
                    println!(
                        "{} signed head{} fall in the pruned records and could not be checked",
                        report.heads_before_cut,
                        if report.heads_before_cut == 1 {
                            ""
                        } else {
                            "s"
                        }
                    );
                }
                if report.heads > 0 {
                    println!(
                        "the chain matches {} signed head{}",
                        report.heads,
                        if report.heads == 1 { "" } else { "s" }
                    );
                }
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
        /// Signed heads to check the chain against (repeatable): a file holding one
        /// head as GET /v1/audit/head answers it, a JSON array of them or one per
        /// line (such as audit-heads.jsonl kept elsewhere), or that URL (with
        /// COLONY_TOKEN). A history rewritten with every hash recomputed fails.
        #[arg(long)]
        head: Vec<String>,
        /// Whose signatures count (standard base64 of an Ed25519 public key;
        /// repeatable). Without it or --keys-from, the data directory's node.pub is
        /// trusted.
        #[arg(long)]
        key: Vec<String>,
        /// Trust the keys of a cluster: a node's GET /v1/cluster (its URL, with
        /// COLONY_TOKEN, or a file holding the answer): every admitted node's key
        /// and the answering node's own (repeatable; ask a node other than the one
        /// whose data is verified).
        #[arg(long)]
        keys_from: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
