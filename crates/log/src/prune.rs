//! Bounded logs that stay verifiable: the oldest segments of the command and decision
//! logs leave by a retention rule ([`LogRetention`], `retention.toml`'s `[logs]`),
//! deleted or moved to `archive/logs/`, never past what a restart needs (the oldest
//! snapshot kept) nor the segment being written.
//!
//! Each log records where it was cut, before any segment leaves (so that a crash in
//! between leaves extra segments, never a gap): `commands/CUT` holds the first command
//! kept ([`CommandsCut`]); `audit/CUT` is the node's signed head of the last record
//! pruned ([`crate::heads::SignedHead`]), so that the chain verifies from the first
//! record kept: its `prev_hash` must be the signed head, and no one who rewrites the
//! kept records can make it so again.

use std::path::Path;

use colony_kernel::Command;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::heads::SignedHead;
use crate::segment::{sync_dir, SegmentInfo};
use crate::{Error, SegmentLog};

/// The file in a log's directory that says where it was cut.
pub const CUT_FILE: &str = "CUT";

/// How long the logs keep their records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRetention {
    /// Segments all of whose records are older than this leave (`None`: any age).
    pub keep_for_ms: Option<u64>,
    /// While a log holds more bytes than this, its oldest segments leave (`None`: any
    /// size).
    pub keep_bytes: Option<u64>,
    /// Segments that leave are moved to `<data>/archive/logs/{commands,audit}/`
    /// (`true`) or deleted.
    pub archive: bool,
    /// Files of `<data>/archive/` (pruned log segments, the task archive's shards)
    /// not changed for this long are deleted (`None`: kept forever).
    pub archive_keep_for_ms: Option<u64>,
}

impl LogRetention {
    /// Keeps every record (the rule when none is configured).
    pub fn everything() -> LogRetention {
        LogRetention {
            keep_for_ms: None,
            keep_bytes: None,
            archive: true,
            archive_keep_for_ms: None,
        }
    }

    pub fn keeps_everything(&self) -> bool {
        self.keep_for_ms.is_none()
            && self.keep_bytes.is_none()
            && self.archive_keep_for_ms.is_none()
    }
}

/// What a node prunes its logs with: the rule, and the key that signs each cut.
#[derive(Clone, Debug)]
pub struct Pruning {
    pub rule: LogRetention,
    pub key: SigningKey,
}

/// `commands/CUT`: the command log starts at `first_kept`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandsCut {
    pub first_kept: u64,
    /// When it was cut, Unix milliseconds.
    pub cut_at_ms: u64,
}

/// What one pruning took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Segments taken from the command log, and the first command kept.
    pub command_segments: usize,
    pub first_command: u64,
    /// Segments taken from the decision log, and the first record kept.
    pub audit_segments: usize,
    pub first_record: u64,
    /// Bytes taken from both.
    pub bytes: u64,
    /// Files deleted from `<data>/archive/` by `archive_keep_for_ms`, and their bytes.
    pub archive_files: usize,
    pub archive_bytes: u64,
}

/// Reads a log's `CUT` file, if there is one.
pub fn read_cut<T: for<'de> Deserialize<'de>>(log_dir: &Path) -> Result<Option<T>, Error> {
    let path = log_dir.join(CUT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| Error::Corrupt {
                path,
                offset: 0,
                reason: format!("the cut does not parse: {error}"),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::io(&path)(error)),
    }
}

/// Writes a log's `CUT` file atomically (a temporary file, synced, renamed).
fn write_cut(log_dir: &Path, cut: &impl Serialize) -> Result<(), Error> {
    let path = log_dir.join(CUT_FILE);
    let temporary = log_dir.join("CUT.tmp");
    let bytes = serde_json::to_vec_pretty(cut).expect("cuts serialize");
    let file = std::fs::File::create(&temporary).map_err(Error::io(&temporary))?;
    use std::io::Write;
    (&file)
        .write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(Error::io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(Error::io(&path))?;
    sync_dir(log_dir)
}

/// The first index to keep in a log whose segments are `segments` (the last being
/// written): past every segment the rule sends away, never past `limit`. `time_of`
/// reads a record's time; a segment is older than the cutoff when the first record
/// of the next one is.
fn first_kept(
    segments: &[SegmentInfo],
    rule: &LogRetention,
    now_ms: u64,
    limit: u64,
    mut time_of: impl FnMut(u64) -> Result<u64, Error>,
) -> Result<u64, Error> {
    let Some(first) = segments.first() else {
        return Ok(1);
    };
    let mut kept_bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut keep_from = first.first_index;
    for pair in segments.windows(2) {
        let (segment, next) = (pair[0], pair[1]);
        if next.first_index > limit {
            break;
        }
        let too_big = rule.keep_bytes.is_some_and(|max| kept_bytes > max);
        let too_old = match rule.keep_for_ms {
            Some(keep_for) => time_of(next.first_index)? < now_ms.saturating_sub(keep_for),
            None => false,
        };
        if !(too_big || too_old) {
            break;
        }
        kept_bytes -= segment.bytes;
        keep_from = next.first_index;
    }
    Ok(keep_from)
}

/// Reads record `index` of a log.
fn record(log: &SegmentLog, index: u64) -> Result<Vec<u8>, Error> {
    let mut found = None;
    log.reader().scan(index, |at, bytes| {
        if at == index {
            found = Some(bytes.to_vec());
        }
        std::ops::ControlFlow::Break(())
    })?;
    found.ok_or_else(|| Error::Mismatch(format!("record {index} is not in the log")))
}

#[derive(Deserialize)]
struct RecordTime {
    at_ms: u64,
    prev_hash: String,
}

fn record_time(log: &SegmentLog, index: u64) -> Result<RecordTime, Error> {
    serde_json::from_slice(&record(log, index)?)
        .map_err(|error| Error::Mismatch(format!("decision record {index} is unreadable: {error}")))
}

/// Prunes both logs of `data` by `rule`: commands before `keep_from_command` may
/// leave (the oldest snapshot kept is at `keep_from_command - 1`); `key` signs the
/// decision log's cut.
pub(crate) fn prune(
    data: &Path,
    commands: &mut SegmentLog,
    audit: &mut SegmentLog,
    rule: &LogRetention,
    keep_from_command: u64,
    now_ms: u64,
    key: &SigningKey,
) -> Result<PruneReport, Error> {
    let mut report = PruneReport::default();
    if rule.keeps_everything() {
        return Ok(report);
    }
    let archive = |log: &str| {
        rule.archive
            .then(|| data.join("archive").join("logs").join(log))
    };

    let segments = commands.segments();
    let keep_commands = first_kept(&segments, rule, now_ms, keep_from_command, |index| {
        let command: Command =
            postcard::from_bytes(&record(commands, index)?).map_err(|error| {
                Error::Mismatch(format!("command {index} does not decode: {error}"))
            })?;
        Ok(command.at_ms)
    })?;
    report.first_command = keep_commands;
    if keep_commands > segments[0].first_index {
        write_cut(
            &data.join("commands"),
            &CommandsCut {
                first_kept: keep_commands,
                cut_at_ms: now_ms,
            },
        )?;
        report.bytes += bytes_before(&segments, keep_commands);
        report.command_segments =
            commands.take_segments_before(keep_commands, archive("commands").as_deref())?;
    }

    let segments = audit.segments();
    let keep_records = first_kept(&segments, rule, now_ms, u64::MAX, |index| {
        Ok(record_time(audit, index)?.at_ms)
    })?;
    report.first_record = keep_records;
    if keep_records > segments[0].first_index {
        // The chain's head at the cut is the first kept record's `prev_hash`: signed
        // here, before anything leaves.
        let first = record_time(audit, keep_records)?;
        let last_pruned = record_time(audit, keep_records - 1)?;
        let mut head = [0u8; 32];
        hex::decode_to_slice(&first.prev_hash, &mut head).map_err(|_| {
            Error::Mismatch(format!(
                "decision record {keep_records} has a bad prev_hash"
            ))
        })?;
        let cut = crate::heads::sign_head(key, keep_records - 1, &head, last_pruned.at_ms);
        write_cut(&data.join("audit"), &cut)?;
        report.bytes += bytes_before(&segments, keep_records);
        report.audit_segments =
            audit.take_segments_before(keep_records, archive("audit").as_deref())?;
    }
    if let Some(keep_for) = rule.archive_keep_for_ms {
        let cutoff = now_ms.saturating_sub(keep_for);
        for dir in [
            data.join("archive").join("logs").join("commands"),
            data.join("archive").join("logs").join("audit"),
            data.join("archive").join("tasks"),
        ] {
            sweep(&dir, cutoff, &mut report)?;
        }
    }
    Ok(report)
}

/// Deletes the files of `dir` last changed before `cutoff_ms` (Unix milliseconds).
/// A task-archive shard is appended to while trees of its thousand roots retire, so
/// one not changed for that long holds only trees that long retired.
fn sweep(dir: &Path, cutoff_ms: u64, report: &mut PruneReport) -> Result<(), Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(Error::io(dir)(error)),
    };
    let mut deleted = false;
    for entry in entries {
        let entry = entry.map_err(Error::io(dir))?;
        let path = entry.path();
        let metadata = entry.metadata().map_err(Error::io(&path))?;
        if !metadata.is_file() {
            continue;
        }
        let changed_ms = metadata
            .modified()
            .ok()
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(u64::MAX, |since| since.as_millis() as u64);
        if changed_ms < cutoff_ms {
            std::fs::remove_file(&path).map_err(Error::io(&path))?;
            report.archive_files += 1;
            report.archive_bytes += metadata.len();
            deleted = true;
        }
    }
    if deleted {
        sync_dir(dir)?;
    }
    Ok(())
}

fn bytes_before(segments: &[SegmentInfo], index: u64) -> u64 {
    segments
        .windows(2)
        .filter(|pair| pair[1].first_index <= index)
        .map(|pair| pair[0].bytes)
        .sum()
}

/// The decision log's cut, if it was pruned.
pub fn audit_cut(data: &Path) -> Result<Option<SignedHead>, Error> {
    read_cut(&data.join("audit"))
}

/// The command log's cut, if it was pruned.
pub fn commands_cut(data: &Path) -> Result<Option<CommandsCut>, Error> {
    read_cut(&data.join("commands"))
}
