//! The decision log: every kernel event as a JSON record, hash-chained.
//!
//! A stored record is one JSON object whose last field is `"hash"`. The hash is the
//! SHA-256, in hex, of the record's bytes without that field: the same object closed
//! right after `prev_hash`. Each record's `prev_hash` is the hash of the one before
//! (64 zeros for the first), so changing any byte of any record breaks the chain at
//! that record, and the head hash commits to the whole history.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use colony_kernel::{Command, Event, State};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::segment::{list_segments, parse_frame};
use crate::Error;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];
const HASH_SUFFIX_BYTES: usize = ",\"hash\":\"\"}".len() + 64;

/// One decision, as stored and served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the decision log, from 1.
    pub seq: u64,
    /// When the command was logged, RFC 3339 in UTC.
    pub at: String,
    pub at_ms: u64,
    /// Sequence number of the command that caused the decision.
    pub command: u64,
    /// This record's place among the command's events, from 0, and their number.
    pub event: u32,
    pub events: u32,
    /// Address of the principal that acted.
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub decision: String,
    pub reason: serde_json::Value,
    /// What the decision did (`effect`) and the soft limits it crossed (`warnings`).
    pub detail: serde_json::Value,
    pub justification: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize)]
struct RecordBody<'a> {
    seq: u64,
    at: &'a str,
    at_ms: u64,
    command: u64,
    event: u32,
    events: u32,
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    decision: &'a str,
    reason: &'a colony_kernel::Reason,
    detail: Detail<'a>,
    justification: &'a str,
    prev_hash: &'a str,
}

#[derive(Serialize)]
struct Detail<'a> {
    effect: &'a colony_kernel::Effect,
    warnings: &'a [colony_kernel::Reason],
}

/// Encodes the events of one command as chained records, appending their bytes to
/// `out` (one `Vec` per record) and moving `head` forward.
pub fn encode_events(
    command: &Command,
    events: &[Event],
    skip: usize,
    state: &State,
    head: &mut ChainHead,
    out: &mut Vec<Vec<u8>>,
) {
    let actor = state
        .principal(command.actor)
        .map(|principal| principal.address.clone())
        .unwrap_or_else(|| format!("unknown:{}", command.actor));
    let at = format_time(command.at_ms);
    for (position, event) in events.iter().enumerate().skip(skip) {
        let mut prev_hex = [0u8; 64];
        let prev_hash = hex_of(&head.hash, &mut prev_hex);
        let body = RecordBody {
            seq: head.seq + 1,
            at: &at,
            at_ms: command.at_ms,
            command: command.seq,
            event: position as u32,
            events: events.len() as u32,
            actor: &actor,
            action: event.action,
            subject: &event.subject,
            decision: event.decision.as_str(),
            reason: &event.reason,
            detail: Detail {
                effect: &event.effect,
                warnings: &event.warnings,
            },
            justification: &command.justification,
            prev_hash,
        };
        // Room for the record and its hash at once: growing the buffer as it is
        // written copied it over and over (a record is a few hundred bytes).
        let mut bytes = Vec::with_capacity(RECORD_CAPACITY);
        serde_json::to_writer(&mut bytes, &body).expect("records serialize");
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        bytes.pop();
        bytes.extend_from_slice(b",\"hash\":\"");
        let mut hash_hex = [0u8; 64];
        bytes.extend_from_slice(hex_of(&hash, &mut hash_hex).as_bytes());
        bytes.extend_from_slice(b"\"}");
        head.seq += 1;
        head.hash = hash;
        out.push(bytes);
    }
}

/// A record's bytes are first written into this much room.
const RECORD_CAPACITY: usize = 1024;

/// `hash` in lower-case hex, written into `room`.
fn hex_of<'a>(hash: &[u8; 32], room: &'a mut [u8; 64]) -> &'a str {
    hex::encode_to_slice(hash, room).expect("64 hex digits for 32 bytes");
    std::str::from_utf8(room).expect("hex digits are ASCII")
}

/// The end of the chain: the last record's number and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH,
        }
    }
}

/// Where a record stands: the fields recovery needs, read from its bytes.
#[derive(Deserialize)]
pub(crate) struct RecordPosition {
    pub command: u64,
    pub event: u32,
    pub events: u32,
}

/// Checks that `bytes` is a well-formed record whose hash matches its content and
/// whose `prev_hash` is `prev`; returns its own hash.
pub fn check_record(bytes: &[u8], expected_seq: u64, prev: &[u8; 32]) -> Result<[u8; 32], String> {
    if bytes.len() < HASH_SUFFIX_BYTES || !bytes.ends_with(b"\"}") {
        return Err("record does not end with its hash".into());
    }
    let split = bytes.len() - HASH_SUFFIX_BYTES;
    let suffix = &bytes[split..];
    if !suffix.starts_with(b",\"hash\":\"") {
        return Err("record does not end with its hash".into());
    }
    let stored_hex = &suffix[9..9 + 64];
    let mut stored = [0u8; 32];
    hex::decode_to_slice(stored_hex, &mut stored).map_err(|_| "hash is not hex".to_string())?;
    let mut body = bytes[..split].to_vec();
    body.push(b'}');
    let computed: [u8; 32] = Sha256::digest(&body).into();
    if computed != stored {
        return Err(format!(
            "content hashes to {} but the record says {}",
            hex::encode(computed),
            hex::encode(stored)
        ));
    }
    #[derive(Deserialize)]
    struct Chain {
        seq: u64,
        prev_hash: String,
    }
    let chain: Chain = serde_json::from_slice(&body)
        .map_err(|error| format!("record is not valid JSON: {error}"))?;
    if chain.seq != expected_seq {
        return Err(format!(
            "record says seq {} where {expected_seq} was expected",
            chain.seq
        ));
    }
    if chain.prev_hash != hex::encode(prev) {
        return Err(format!(
            "prev_hash {} does not match the previous record's hash {}",
            chain.prev_hash,
            hex::encode(prev)
        ));
    }
    Ok(computed)
}

/// What `colony audit verify` prints on success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub head_hash: String,
    /// Signed heads the chain was checked against.
    pub heads: u64,
    /// The first record verified: 1, or the first kept after a pruning's cut.
    pub from: u64,
    /// Signed heads of records pruned away, which could not be checked.
    pub heads_before_cut: u64,
}

/// A record that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("decision record {seq} ({file}, byte offset {offset}) does not verify: {reason}")]
pub struct VerifyFailure {
    pub seq: u64,
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// Recomputes the whole chain of the decision log in `data_dir/audit`. Never repairs:
/// a torn tail is reported like any other damage.
pub fn verify_audit(data_dir: &Path) -> Result<VerifyReport, VerifyFailure> {
    verify_audit_against(data_dir, &[])
}

/// [`verify_audit`], and the chain's hash at each of `heads`' sequence numbers
/// equal to the head signed there (their signatures are the caller's to check):
/// a history rewritten with every hash recomputed after the change fails at the
/// first signed head after it, naming the records between the last head that still
/// agrees and that one.
pub fn verify_audit_against(
    data_dir: &Path,
    heads: &[crate::heads::SignedHead],
) -> Result<VerifyReport, VerifyFailure> {
    // A pruned log's cut is a signed head like the others: the chain's hash at the
    // last pruned record, which the first kept record's `prev_hash` must equal.
    let cut = crate::prune::audit_cut(data_dir).map_err(|error| VerifyFailure {
        seq: 0,
        file: data_dir.join("audit").join(crate::prune::CUT_FILE),
        offset: 0,
        reason: error.to_string(),
    })?;
    let mut expected: Vec<(u64, &str)> = heads
        .iter()
        .chain(cut.as_ref())
        .map(|h| (h.seq, h.head.as_str()))
        .collect();
    expected.sort();
    let mut next = 0;
    let mut agreed = 0;
    let mut from = None;
    let report = verify_chain(data_dir, |seq, hash, path, offset| {
        let first = *from.get_or_insert(seq);
        while let Some(&(at, head)) = expected.get(next) {
            if at > seq {
                break;
            }
            next += 1;
            if at == 0 {
                continue;
            }
            if at < first {
                // Signed for a record pruned away: nothing left to hold it to.
                continue;
            }
            if hex::encode(hash) != head {
                return Err(VerifyFailure {
                    seq: agreed + 1,
                    file: path.to_path_buf(),
                    offset,
                    reason: format!(
                        "the chain at record {seq} hashes to {}, but the head signed for record {seq} is {head}: a record from {} to {seq} was rewritten ({})",
                        hex::encode(hash),
                        agreed + 1,
                        if agreed == 0 {
                            "no earlier signed head to narrow it".to_string()
                        } else {
                            format!("the head signed for record {agreed} still agrees")
                        }
                    ),
                });
            }
            agreed = seq;
        }
        Ok(())
    })?;
    if let Some(&(at, _)) = expected.get(next) {
        return Err(VerifyFailure {
            seq: report.records + 1,
            file: data_dir.join("audit"),
            offset: 0,
            reason: format!(
                "the log ends at record {} but a head was signed for record {at}: records were removed",
                report.records
            ),
        });
    }
    let anchor = report.from - 1;
    let heads_before_cut = heads.iter().filter(|h| h.seq > 0 && h.seq < anchor).count() as u64;
    Ok(VerifyReport {
        heads: heads.len() as u64 - heads_before_cut,
        heads_before_cut,
        ..report
    })
}

/// Walks the chain, calling `at` with each record's seq, hash, file and offset.
fn verify_chain(
    data_dir: &Path,
    mut at: impl FnMut(u64, &[u8; 32], &Path, u64) -> Result<(), VerifyFailure>,
) -> Result<VerifyReport, VerifyFailure> {
    let dir = data_dir.join("audit");
    let fail = |seq, file: &Path, offset, reason: String| VerifyFailure {
        seq,
        file: file.to_path_buf(),
        offset,
        reason,
    };
    let files = list_segments(&dir).map_err(|error| fail(0, &dir, 0, error.to_string()))?;
    if files.is_empty() {
        return Err(fail(
            0,
            &dir,
            0,
            "no decision log here (is this a Colony data directory?)".into(),
        ));
    }
    let mut head = ChainHead::default();
    let first_index = files[0].0;
    if first_index > 1 {
        // Pruned: the chain starts from the first kept record's `prev_hash`, which
        // the caller holds to the signed cut (`audit/CUT`), reported as the head of
        // the record before it.
        let cut = crate::prune::audit_cut(data_dir)
            .map_err(|error| fail(first_index, &dir, 0, error.to_string()))?;
        let Some(cut) = cut else {
            return Err(fail(
                1,
                &files[0].1,
                0,
                format!("the decision log starts at record {first_index} and has no signed cut (audit/CUT): records before it were removed"),
            ));
        };
        if first_index > cut.seq + 1 {
            return Err(fail(
                cut.seq + 1,
                &files[0].1,
                0,
                format!(
                    "the log was cut after record {} but starts at record {first_index}: records between are missing",
                    cut.seq
                ),
            ));
        }
        let data = std::fs::read(&files[0].1)
            .map_err(|error| fail(first_index, &files[0].1, 0, error.to_string()))?;
        let payload =
            parse_frame(&data).map_err(|reason| fail(first_index, &files[0].1, 0, reason))?;
        #[derive(Deserialize)]
        struct Prev {
            prev_hash: String,
        }
        let prev: Prev = serde_json::from_slice(payload)
            .map_err(|error| fail(first_index, &files[0].1, 0, error.to_string()))?;
        hex::decode_to_slice(&prev.prev_hash, &mut head.hash)
            .map_err(|_| fail(first_index, &files[0].1, 0, "a bad prev_hash".into()))?;
        head.seq = first_index - 1;
        at(head.seq, &head.hash, &files[0].1, 0)?;
    }
    let from = head.seq + 1;
    for (first_index, path) in files {
        if first_index != head.seq + 1 {
            return Err(fail(
                head.seq + 1,
                &path,
                0,
                format!("segment starts at record {first_index}"),
            ));
        }
        let data = std::fs::read(&path)
            .map_err(|error| fail(head.seq + 1, &path, 0, error.to_string()))?;
        let mut offset = 0;
        while offset < data.len() {
            let seq = head.seq + 1;
            let payload = parse_frame(&data[offset..])
                .map_err(|reason| fail(seq, &path, offset as u64, reason))?;
            head.hash = check_record(payload, seq, &head.hash)
                .map_err(|reason| fail(seq, &path, offset as u64, reason))?;
            head.seq = seq;
            at(seq, &head.hash, &path, offset as u64)?;
            offset += 8 + payload.len();
        }
    }
    Ok(VerifyReport {
        records: head.seq,
        head_hash: hex::encode(head.hash),
        heads: 0,
        from,
        heads_before_cut: 0,
    })
}

/// Reads records through a [`crate::LogReader`], filtered, for `GET /v1/audit`.
pub struct AuditQuery<'a> {
    pub after: u64,
    pub limit: usize,
    pub actor: Option<&'a str>,
    /// Matches the subject or the actor, and addresses below it (`2.1` matches `2.1.loom`).
    pub address: Option<&'a str>,
    /// Bound on records examined in one query, so a rare filter cannot scan forever.
    pub scan_max: u64,
}

/// Records found by an [`AuditQuery`], as raw JSON, and where to continue.
pub struct AuditPage {
    pub records: Vec<Vec<u8>>,
    /// The last record examined: pass it as `after` to continue.
    pub next_after: u64,
}

impl AuditQuery<'_> {
    pub fn run(&self, reader: &crate::LogReader) -> Result<AuditPage, Error> {
        #[derive(Deserialize)]
        struct Who<'b> {
            #[serde(borrow)]
            actor: std::borrow::Cow<'b, str>,
            #[serde(borrow)]
            subject: std::borrow::Cow<'b, str>,
        }
        let mut page = AuditPage {
            records: Vec::new(),
            next_after: self.after,
        };
        let mut examined = 0;
        let filtering = self.actor.is_some() || self.address.is_some();
        reader.scan(self.after + 1, |index, bytes| {
            examined += 1;
            page.next_after = index;
            let keep = !filtering
                || serde_json::from_slice::<Who>(bytes).is_ok_and(|who| {
                    self.actor.is_none_or(|actor| who.actor == actor)
                        && self.address.is_none_or(|address| {
                            under(&who.subject, address) || under(&who.actor, address)
                        })
                });
            if keep {
                page.records.push(bytes.to_vec());
            }
            if page.records.len() >= self.limit || examined >= self.scan_max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(page)
    }
}

fn under(candidate: &str, address: &str) -> bool {
    candidate == address
        || candidate
            .strip_prefix(address)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with(':'))
}

/// Formats Unix milliseconds as RFC 3339 in UTC with milliseconds.
pub fn format_time(at_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_kernel::{CommandBody, Genesis, PrincipalId};

    fn chain(count: usize) -> Vec<Vec<u8>> {
        let mut state = State::new();
        let mut head = ChainHead::default();
        let mut out = Vec::new();
        let genesis = Command::new(
            1,
            1_700_000_000_000,
            PrincipalId::SYSTEM,
            "start",
            CommandBody::Genesis(Box::new(Genesis::for_tests([1; 32]))),
        );
        let applied = state.apply(&genesis);
        encode_events(&genesis, &applied.events, 0, &state, &mut head, &mut out);
        for seq in 2..=count as u64 {
            let command = Command::new(
                seq,
                1_700_000_000_000 + seq,
                PrincipalId::SYSTEM,
                "tick \"quoted\"",
                CommandBody::Tick,
            );
            let applied = state.apply(&command);
            encode_events(&command, &applied.events, 0, &state, &mut head, &mut out);
        }
        out
    }

    #[test]
    fn records_chain_and_every_byte_matters() {
        let records = chain(4);
        let mut prev = GENESIS_HASH;
        for (index, record) in records.iter().enumerate() {
            prev = check_record(record, index as u64 + 1, &prev).unwrap();
        }
        let parsed: AuditRecord = serde_json::from_slice(&records[1]).unwrap();
        assert_eq!(parsed.action, "time.tick");
        assert_eq!(parsed.at, "2023-11-14T22:13:20.002Z");
        let prev = check_record(&records[0], 1, &GENESIS_HASH).unwrap();
        for position in 0..records[1].len() {
            let mut changed = records[1].clone();
            changed[position] ^= 0x04;
            assert!(
                check_record(&changed, 2, &prev).is_err(),
                "a change at byte {position} went unnoticed"
            );
        }
        assert!(
            check_record(&records[2], 3, &prev).is_err(),
            "a record out of place breaks the chain"
        );
    }

    #[test]
    fn address_filter_matches_descendants_only() {
        assert!(under("2.1", "2.1"));
        assert!(under("2.1.loom", "2.1"));
        assert!(!under("2.10", "2.1"));
        assert!(!under("2", "2.1"));
    }
}
