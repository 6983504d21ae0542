//! Signed chain heads (`colony_log::heads`): every `every` records or `interval`
//! while records arrive, whichever comes first, the node signs the decision log's
//! newest durable head with its key (`identity.rs`), keeps it (the newest `kept` in
//! `<data>/audit-heads.jsonl`), publishes it on the bus (`colony.audit.heads`) and,
//! when `audit.toml` says so, hands it to the alert webhooks: copies outside the
//! data directory that a rewritten history cannot match. `GET /v1/audit/head`
//! answers the newest. Read at every start from `audit.toml` (optional):
//!
//! ```toml
//! [heads]
//! every = 1000        # records between two heads at most (1 to 1000000)
//! interval = "10s"    # time between two heads while records arrive (100ms to 1h)
//! kept = 10000        # heads kept in the data directory (10 to 1000000)
//! webhooks = false    # also POST each head to alerts.toml's webhooks
//! ```

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use colony_log::heads::{sign_head, SignedHead};
use ed25519_dalek::SigningKey;
use serde::Deserialize;
use toml::Spanned;

use crate::genesis::{parse_duration_ms, read_optional, ConfigError, Source};

/// The subject every signed head is published on.
pub const HEADS_SUBJECT: &str = "colony.audit.heads";
/// The file the newest heads are kept in.
pub const HEADS_FILE: &str = "audit-heads.jsonl";
/// How often the signer looks at the log.
pub(crate) const LOOK_EVERY_MS: u64 = 100;

/// `audit.toml`'s `[heads]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadsConfig {
    pub every: u64,
    pub interval_ms: u64,
    pub kept: usize,
    pub webhooks: bool,
}

impl Default for HeadsConfig {
    fn default() -> Self {
        HeadsConfig {
            every: 1_000,
            interval_ms: 10_000,
            kept: 10_000,
            webhooks: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    heads: Option<Section>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    every: Option<Spanned<u64>>,
    interval: Option<Spanned<String>>,
    kept: Option<Spanned<usize>>,
    webhooks: Option<bool>,
}

impl HeadsConfig {
    /// `audit.toml` in `dir`, or the defaults.
    pub fn load(dir: &Path) -> Result<HeadsConfig, ConfigError> {
        match read_optional(dir, "audit.toml")? {
            Some((file, text)) => HeadsConfig::parse(&file, &text),
            None => Ok(HeadsConfig::default()),
        }
    }

    pub fn parse(file: &Path, text: &str) -> Result<HeadsConfig, ConfigError> {
        let source = Source { file, text };
        let mut config = HeadsConfig::default();
        let Some(section) = source.parse::<File>()?.heads else {
            return Ok(config);
        };
        if let Some(every) = section.every {
            if !(1..=1_000_000).contains(every.get_ref()) {
                return Err(source.error(Some(every.span()), "heads.every is 1 to 1000000"));
            }
            config.every = *every.get_ref();
        }
        if let Some(interval) = section.interval {
            config.interval_ms = parse_duration_ms(interval.get_ref())
                .and_then(|ms| {
                    (100..=3_600_000)
                        .contains(&ms)
                        .then_some(ms)
                        .ok_or_else(|| "between 100ms and 1h".to_string())
                })
                .map_err(|m| source.error(Some(interval.span()), format!("heads.interval: {m}")))?;
        }
        if let Some(kept) = section.kept {
            if !(10..=1_000_000).contains(kept.get_ref()) {
                return Err(source.error(Some(kept.span()), "heads.kept is 10 to 1000000"));
            }
            config.kept = *kept.get_ref();
        }
        config.webhooks = section.webhooks.unwrap_or(false);
        Ok(config)
    }
}

/// The node's signer of heads, and the newest head.
pub struct Heads {
    key: SigningKey,
    config: HeadsConfig,
    file: PathBuf,
    state: Mutex<Signed>,
    /// The last checkpoint told to the cluster (a multiple of `every`).
    checkpointed: std::sync::atomic::AtomicU64,
}

struct Signed {
    newest: Option<SignedHead>,
    /// When the signer last signed (or started).
    at_ms: u64,
    /// Lines in the file (it is cut back to `kept` past twice as many).
    lines: usize,
}

impl Heads {
    /// The signer over `data_dir`, with the heads it kept.
    pub fn open(key: SigningKey, data_dir: &Path, config: HeadsConfig) -> Result<Heads, String> {
        let file = data_dir.join(HEADS_FILE);
        let (newest, lines) = match std::fs::read_to_string(&file) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                let newest = lines
                    .last()
                    .and_then(|line| serde_json::from_str::<SignedHead>(line).ok());
                (newest, lines.len())
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (None, 0),
            Err(error) => return Err(format!("{}: {error}", file.display())),
        };
        Ok(Heads {
            key,
            config,
            file,
            state: Mutex::new(Signed {
                newest,
                at_ms: crate::sequencer::now_ms(),
                lines,
            }),
            checkpointed: Default::default(),
        })
    }

    /// The node's public key, standard base64.
    pub fn public_key(&self) -> String {
        colony_log::heads::encode_key(&self.key.verifying_key())
    }

    /// The newest signed head.
    pub fn newest(&self) -> Option<SignedHead> {
        self.state.lock().expect("heads lock").newest.clone()
    }

    /// Signs the log's newest durable head when it is due (or, `force`, whenever it
    /// is not signed yet); the head signed.
    /// The head goes into `heads.jsonl`, on the bus (`colony.audit.heads`) and, when
    /// `audit.toml` says so, to `webhooks`.
    pub fn sign_if_due(
        &self,
        audit: &colony_log::LogReader,
        bus: &crate::bus::Bus,
        webhooks: &colony_alerts::Webhooks,
        force: bool,
    ) -> Option<SignedHead> {
        let last = audit.last_index();
        let now_ms = crate::sequencer::now_ms();
        {
            let state = self.state.lock().expect("heads lock");
            let signed = state.newest.as_ref().map_or(0, |h| h.seq);
            let due = last > signed
                && (force
                    || last - signed >= self.config.every
                    || now_ms.saturating_sub(state.at_ms) >= self.config.interval_ms);
            if !due {
                return None;
            }
        }
        let hash = record_hash(audit, last)?;
        let head = sign_head(&self.key, last, &hash, now_ms);
        let line = serde_json::to_string(&head).expect("a head serializes");
        {
            let mut state = self.state.lock().expect("heads lock");
            if state.newest.as_ref().is_some_and(|h| h.seq >= last) {
                return None;
            }
            if let Err(error) = self.keep(&line, &mut state) {
                tracing::error!("a signed head was not kept: {error}");
            }
            state.newest = Some(head.clone());
            state.at_ms = now_ms;
        }
        bus.publish_system(HEADS_SUBJECT, &line);
        if self.config.webhooks {
            webhooks.send(&colony_alerts::Delivery {
                id: format!("audit-head-{}", head.seq),
                json: line.clone(),
                text: format!(
                    "Colony signed its decision log's head at record {}: {}",
                    head.seq, head.head
                ),
            });
        }
        Some(head)
    }

    /// Appends the head to the file, cutting it back to the newest `kept` when it
    /// holds twice as many.
    fn keep(&self, line: &str, state: &mut Signed) -> std::io::Result<()> {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)?;
        writeln!(out, "{line}")?;
        state.lines += 1;
        if state.lines > 2 * self.config.kept {
            let text = std::fs::read_to_string(&self.file)?;
            let lines: Vec<&str> = text.lines().collect();
            let newest = &lines[lines.len().saturating_sub(self.config.kept)..];
            let tmp = self.file.with_extension("jsonl.tmp");
            std::fs::write(&tmp, format!("{}\n", newest.join("\n")))?;
            std::fs::rename(&tmp, &self.file)?;
            state.lines = newest.len();
        }
        Ok(())
    }
}

impl Heads {
    /// In a cluster, tells it this node's chain hash at the newest multiple of
    /// `every` it has: the same record on every node, so that the nodes compare them
    /// (a divergence must never happen).
    pub fn checkpoint(
        &self,
        audit: &colony_log::LogReader,
        cluster: Option<&colony_cluster::Cluster>,
    ) {
        let Some(cluster) = cluster else {
            return;
        };
        let last = audit.last_index();
        let at = last / self.config.every * self.config.every;
        let done = self.checkpointed.load(std::sync::atomic::Ordering::Relaxed);
        if at == 0 || at <= done {
            return;
        }
        if let Some(hash) = record_hash(audit, at) {
            cluster.checkpoint(at, hex::encode(hash));
            self.checkpointed
                .store(at, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The chain hash of record `seq`.
fn record_hash(reader: &colony_log::LogReader, seq: u64) -> Option<[u8; 32]> {
    #[derive(Deserialize)]
    struct Hash {
        seq: u64,
        hash: String,
    }
    let mut found = None;
    let _ = reader.scan(seq, |_, bytes| {
        if let Ok(record) = serde_json::from_slice::<Hash>(bytes) {
            let mut hash = [0u8; 32];
            if record.seq == seq && hex::decode_to_slice(&record.hash, &mut hash).is_ok() {
                found = Some(hash);
            }
        }
        ControlFlow::Break(())
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_with_its_bounds() {
        let file = Path::new("audit.toml");
        assert_eq!(
            HeadsConfig::parse(file, "").unwrap(),
            HeadsConfig::default()
        );
        let config = HeadsConfig::parse(
            file,
            "[heads]\nevery = 10\ninterval = \"1s\"\nkept = 20\nwebhooks = true\n",
        )
        .unwrap();
        assert_eq!(
            config,
            HeadsConfig {
                every: 10,
                interval_ms: 1_000,
                kept: 20,
                webhooks: true
            }
        );
        for (text, key) in [
            ("[heads]\nevery = 0\n", "every"),
            ("[heads]\ninterval = \"1ms\"\n", "interval"),
            ("[heads]\nkept = 1\n", "kept"),
            ("[heads]\nbogus = 1\n", "bogus"),
        ] {
            let error = HeadsConfig::parse(file, text).unwrap_err().to_string();
            assert!(
                error.contains(key) && error.starts_with("audit.toml:"),
                "{error}"
            );
        }
    }
}
