//! The store: command log, decision log and snapshots, recovered together.

use std::path::{Path, PathBuf};

use colony_kernel::{Applied, Command, State};

use crate::audit::{check_record, encode_events, ChainHead, RecordPosition};
use crate::segment::{LogReader, SegmentLog, SegmentOptions};
use crate::{snapshot, Error};

/// The version of what a data directory holds: the commands' encoding, the snapshots'
/// encoding of the kernel state, and the kernel's rules that replay turns commands into
/// decisions with. Bumped by any change that makes older data unreadable or replay
/// differently; [`Store::open`] refuses a directory of another version rather than
/// misread it.
pub const DATA_FORMAT: u32 = 11;

/// The file in a data directory that names its format: `colony-data-format <N>`.
pub const FORMAT_FILE: &str = "FORMAT";

/// Checks the data directory's format; writes the marker in a directory that holds no
/// commands yet when `create` is set.
pub fn check_format(dir: &Path, create: bool) -> Result<(), Error> {
    let path = dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text
                .trim()
                .strip_prefix("colony-data-format ")
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| Error::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!("expected `colony-data-format <N>`, found {:?}", text.trim()),
                })?;
            if found != DATA_FORMAT {
                return Err(Error::Format {
                    path,
                    found,
                    expected: DATA_FORMAT,
                    note: "",
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let commands = dir.join("commands");
            let holds_commands = std::fs::read_dir(&commands)
                .map(|entries| {
                    entries.flatten().any(|entry| {
                        entry.path().extension().is_some_and(|e| e == "seg")
                            && entry.metadata().is_ok_and(|m| m.len() > 0)
                    })
                })
                .unwrap_or(false);
            if holds_commands {
                return Err(Error::Format {
                    path,
                    found: 0,
                    expected: DATA_FORMAT,
                    note: " (written before data formats were numbered)",
                });
            }
            if create {
                let temporary = dir.join(format!("{FORMAT_FILE}.tmp"));
                let mut file = std::fs::File::create(&temporary).map_err(Error::io(&temporary))?;
                std::io::Write::write_all(
                    &mut file,
                    format!("colony-data-format {DATA_FORMAT}\n").as_bytes(),
                )
                .and_then(|()| file.sync_all())
                .map_err(Error::io(&temporary))?;
                std::fs::rename(&temporary, &path).map_err(Error::io(&path))?;
                crate::segment::sync_dir(dir)?;
            }
            Ok(())
        }
        Err(error) => Err(Error::Io {
            path,
            source: error,
        }),
    }
}

#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub segment: SegmentOptions,
    /// Replay from the first command even if a snapshot exists.
    pub ignore_snapshots: bool,
}

/// What recovery did, for the log line at start-up.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// The snapshot the state was loaded from, if any.
    pub snapshot: Option<PathBuf>,
    pub snapshot_seq: u64,
    /// Commands applied on top of the snapshot.
    pub replayed: u64,
    /// Decision records rebuilt from the command log (their batch was cut short).
    pub regenerated: u64,
    /// Torn tails cut off: file and bytes.
    pub truncated: Vec<(PathBuf, u64)>,
}

/// The durable side of a node. One writer: the node's sequencer.
///
/// [`Store::append`] encodes a command and its decision records and buffers them;
/// [`Store::sync`] makes them durable. A writer that encodes on one thread and
/// writes on another splits the store with [`Store::split`].
pub struct Store {
    encoder: RecordEncoder,
    writer: LogWriter,
}

/// Encodes commands and chains their decision records (the chain's head lives here).
pub struct RecordEncoder {
    head: ChainHead,
}

/// One command and its decision records, encoded and chained, ready to be written.
#[derive(Clone, Debug)]
pub struct EncodedRecords {
    pub seq: u64,
    command: Vec<u8>,
    records: Vec<Vec<u8>>,
}

/// Writes encoded records to the command and decision logs and syncs them.
pub struct LogWriter {
    dir: PathBuf,
    commands: SegmentLog,
    audit: SegmentLog,
    archive: crate::TaskArchive,
}

impl RecordEncoder {
    /// Encodes a command and the decision records of its events. `state` is the state
    /// after applying it (for actor addresses).
    pub fn encode(
        &mut self,
        command: &Command,
        applied: &Applied,
        state: &State,
    ) -> EncodedRecords {
        let mut records = Vec::with_capacity(applied.events.len());
        encode_events(
            command,
            &applied.events,
            0,
            state,
            &mut self.head,
            &mut records,
        );
        EncodedRecords {
            seq: command.seq,
            // Room for a usual command at once, rather than growing as it is written.
            command: postcard::to_extend(command, Vec::with_capacity(256))
                .expect("commands serialize"),
            records,
        }
    }

    pub fn head(&self) -> ChainHead {
        self.head
    }
}

impl LogWriter {
    /// Buffers encoded records; durable after [`LogWriter::sync`]. Records must come
    /// in the order they were encoded.
    pub fn append(&mut self, encoded: &EncodedRecords) -> Result<(), Error> {
        let index = self.commands.append(&encoded.command)?;
        assert_eq!(
            index, encoded.seq,
            "command log index and command seq agree"
        );
        for record in &encoded.records {
            self.audit.append(record)?;
        }
        Ok(())
    }

    /// Makes everything appended durable: the command log first, then the decision log.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.commands.sync()?;
        self.audit.sync()
    }

    pub fn audit_reader(&self) -> LogReader {
        self.audit.reader()
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// Prunes both logs by `rule` (module [`crate::prune`]): commands before
    /// `keep_from_command` (past the oldest snapshot kept) may leave; `key` signs the
    /// decision log's cut.
    pub fn prune(
        &mut self,
        rule: &crate::prune::LogRetention,
        keep_from_command: u64,
        now_ms: u64,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<crate::prune::PruneReport, Error> {
        crate::prune::prune(
            &self.dir,
            &mut self.commands,
            &mut self.audit,
            rule,
            keep_from_command,
            now_ms,
            key,
        )
    }

    /// Writes retired tasks to the task archive, durably. Called once the commands
    /// that retired them are durable, and before a snapshot without them is written.
    pub fn archive(&mut self, tasks: &[colony_kernel::tasks::Task]) -> Result<(), Error> {
        self.archive.write(tasks)
    }
}

/// Replay needs every command after the snapshot: a command log pruned past it
/// cannot rebuild the state.
fn check_replayable(dir: &Path, first_kept: u64, last_seq: u64) -> Result<(), Error> {
    if first_kept > last_seq + 1 {
        return Err(Error::Mismatch(format!(
            "the command log was pruned before command {} (retention.toml [logs]) but no usable snapshot at or after command {} is in {}: the state cannot be rebuilt. Restore the snapshots directory from a backup, or move the archived segments (archive/logs/commands/) back into commands/ and remove commands/CUT",
            first_kept,
            first_kept - 1,
            dir.join("snapshots").display()
        )));
    }
    Ok(())
}

/// Where the decision log's chain ends: the head to chain the next record to, and
/// the position (command, event) of its last record, if it has one.
fn chain_tail(
    audit: &SegmentLog,
    records: u64,
) -> Result<(ChainHead, Option<RecordPosition>), Error> {
    let mut head = ChainHead::default();
    if records == 0 {
        return Ok((head, None));
    }
    let mut last_audit: Vec<u8> = Vec::new();
    audit.reader().scan(records, |_, bytes| {
        last_audit = bytes.to_vec();
        std::ops::ControlFlow::Break(())
    })?;
    #[derive(serde::Deserialize)]
    struct Tail {
        hash: String,
    }
    let tail: Tail = serde_json::from_slice(&last_audit)
        .map_err(|error| Error::Mismatch(format!("last decision record is unreadable: {error}")))?;
    hex::decode_to_slice(&tail.hash, &mut head.hash)
        .map_err(|_| Error::Mismatch("last decision record has a bad hash".into()))?;
    head.seq = records;
    let position: RecordPosition = serde_json::from_slice(&last_audit)
        .map_err(|error| Error::Mismatch(format!("last decision record is unreadable: {error}")))?;
    Ok((head, Some(position)))
}

/// The newest snapshot whose commands' events are all in the decision log (one
/// past the log's end cannot be used: the events of the commands between would be
/// lost), or an empty state.
fn newest_usable_snapshot(
    dir: &Path,
    options: &StoreOptions,
    complete_through: u64,
    report: &mut RecoveryReport,
) -> Result<State, Error> {
    if !options.ignore_snapshots {
        if let Some((snapshot_state, path)) = snapshot::load_latest(&dir.join("snapshots"))? {
            if snapshot_state.last_seq <= complete_through {
                report.snapshot_seq = snapshot_state.last_seq;
                report.snapshot = Some(path);
                return Ok(snapshot_state);
            }
        }
    }
    Ok(State::new())
}

impl Store {
    /// Opens `dir` (creating it), loads the newest snapshot, replays the command log
    /// after it, and rebuilds any decision records a crash cut off.
    pub fn open(
        dir: &Path,
        options: StoreOptions,
    ) -> Result<(Store, State, RecoveryReport), Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        check_format(dir, true)?;
        let mut report = RecoveryReport::default();

        // A pruned log starts past its first record, where its cut says.
        let audit_cut = crate::prune::audit_cut(dir)?;
        let commands_cut = crate::prune::commands_cut(dir)?;
        let trimmed = |cut: bool| SegmentOptions {
            trimmed_start: cut || options.segment.trimmed_start,
            ..options.segment.clone()
        };

        // The decision log first: where it ends says which events already exist.
        let (audit, audit_report) = SegmentLog::open(
            &dir.join("audit"),
            trimmed(audit_cut.is_some()),
            u64::MAX,
            |_, _| Ok(()),
        )?;
        report.truncated.extend(audit_report.truncated);
        let (mut head, audit_position) = chain_tail(&audit, audit_report.records)?;
        // Events of commands up to `complete_through` are all in the decision log.
        let (complete_through, partial) = match &audit_position {
            None => (0, None),
            Some(p) if p.event + 1 == p.events => (p.command, None),
            Some(p) => (p.command - 1, Some((p.command, p.event as usize + 1))),
        };

        let mut state = newest_usable_snapshot(dir, &options, complete_through, &mut report)?;
        if let Some(cut) = &audit_cut {
            check_starts_by(&audit, cut.seq + 1, &dir.join("audit"))?;
        }
        if let Some(cut) = &commands_cut {
            check_replayable(dir, cut.first_kept, state.last_seq)?;
        }
        let mut audit = audit;
        let archive = crate::TaskArchive::new(dir);
        let mut scratch = Vec::new();
        let mut regenerated = 0;
        let commands_dir = dir.join("commands");
        let (commands, commands_report) = SegmentLog::open(
            &commands_dir,
            trimmed(commands_cut.is_some()),
            state.last_seq + 1,
            |index, bytes| {
                let command: Command =
                    postcard::from_bytes(bytes).map_err(|error| Error::Corrupt {
                        path: commands_dir.clone(),
                        offset: 0,
                        reason: format!(
                            "command {index} passed its checksum but does not decode: {error}"
                        ),
                    })?;
                if command.seq != index || command.at_ms < state.now_ms {
                    return Err(Error::Corrupt {
                        path: commands_dir.clone(),
                        offset: 0,
                        reason: format!(
                            "command {index} carries seq {} and time {}",
                            command.seq, command.at_ms
                        ),
                    });
                }
                let applied = state.apply(&command);
                // What this command retired is written again: the archive may have
                // missed it when the node stopped before writing it.
                archive.write(&applied.retired)?;
                let skip = match partial {
                    _ if command.seq <= complete_through => return Ok(()),
                    Some((seq, skip)) if seq == command.seq => skip,
                    _ => 0,
                };
                scratch.clear();
                encode_events(
                    &command,
                    &applied.events,
                    skip,
                    &state,
                    &mut head,
                    &mut scratch,
                );
                for record in &scratch {
                    audit.append(record)?;
                    regenerated += 1;
                }
                Ok(())
            },
        )?;
        report.truncated.extend(commands_report.truncated);
        if let Some(cut) = &commands_cut {
            check_starts_by(&commands, cut.first_kept, &commands_dir)?;
        }
        report.replayed = state.last_seq - report.snapshot_seq;
        report.regenerated = regenerated;
        if complete_through > state.last_seq || partial.is_some_and(|(seq, _)| seq > state.last_seq)
        {
            return Err(Error::Mismatch(format!(
                "the decision log has events of command {} but the command log ends at {}; \
                 the command log lost its tail. Move {} aside to rebuild the decision log from the commands",
                complete_through.max(partial.map_or(0, |p| p.0)),
                state.last_seq,
                dir.join("audit").display()
            )));
        }
        audit.sync()?;
        let store = Store {
            encoder: RecordEncoder { head },
            writer: LogWriter {
                dir: dir.to_path_buf(),
                commands,
                audit,
                archive,
            },
        };
        Ok((store, state, report))
    }

    /// Buffers a command and the decision records of its events. `state` is the
    /// state after applying it (for actor addresses). Durable after [`Store::sync`].
    pub fn append(
        &mut self,
        command: &Command,
        applied: &Applied,
        state: &State,
    ) -> Result<(), Error> {
        let encoded = self.encoder.encode(command, applied, state);
        self.writer.append(&encoded)
    }

    /// Makes everything appended durable: the command log first, then the decision log.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.writer.sync()
    }

    /// See [`LogWriter::prune`].
    pub fn prune(
        &mut self,
        rule: &crate::prune::LogRetention,
        keep_from_command: u64,
        now_ms: u64,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<crate::prune::PruneReport, Error> {
        self.writer.prune(rule, keep_from_command, now_ms, key)
    }

    /// Writes tasks a command retired (`Applied::retired`) to the task archive,
    /// durably; call it once that command is synced.
    pub fn archive(&mut self, tasks: &[colony_kernel::tasks::Task]) -> Result<(), Error> {
        self.writer.archive(tasks)
    }

    pub fn audit_reader(&self) -> LogReader {
        self.writer.audit_reader()
    }

    pub fn head(&self) -> ChainHead {
        self.encoder.head()
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.writer.snapshots_dir()
    }

    /// Splits the store for a writer that encodes on one thread (where the state
    /// is) and writes and syncs on another.
    pub fn split(self) -> (RecordEncoder, LogWriter) {
        (self.encoder, self.writer)
    }
}

/// A pruned log must start at or before its cut's first kept record: later is a gap.
fn check_starts_by(log: &SegmentLog, first_kept: u64, dir: &Path) -> Result<(), Error> {
    let first = log.segments().first().map_or(1, |s| s.first_index);
    if first > first_kept {
        return Err(Error::Corrupt {
            path: dir.to_path_buf(),
            offset: 0,
            reason: format!(
                "the log was cut to start at record {first_kept} but its first segment starts at {first}: records between are missing"
            ),
        });
    }
    Ok(())
}

/// Replays the command log from the first command and checks that it reproduces
/// every stored decision record, byte for byte. Returns the number of records.
pub fn verify_replay(dir: &Path) -> Result<u64, Error> {
    check_format(dir, false)?;
    let pruned = |what: String| {
        Error::Mismatch(format!(
            "the {what} (retention.toml [logs]): a replay needs every command and record from the first. Verify the chain without --replay (it starts at the signed cut), or run this on a copy with the archived segments (archive/logs/) back in place"
        ))
    };
    if let Some(cut) = crate::prune::audit_cut(dir)? {
        return Err(pruned(format!(
            "decision log was pruned before record {}",
            cut.seq + 1
        )));
    }
    if let Some(cut) = crate::prune::commands_cut(dir)? {
        return Err(pruned(format!(
            "command log was pruned before command {}",
            cut.first_kept
        )));
    }
    let reader = LogReader::open(&dir.join("audit"))?;
    let commands_dir = dir.join("commands");
    let commands = LogReader::open(&commands_dir)?;
    let mut state = State::new();
    let mut head = ChainHead::default();
    let mut produced = Vec::new();
    let mut checked = 0u64;
    let mut failure: Option<Error> = None;
    let mut replay = |index: u64, bytes: &[u8]| -> Result<(), Error> {
        let command: Command = postcard::from_bytes(bytes).map_err(|error| Error::Corrupt {
            path: commands_dir.clone(),
            offset: 0,
            reason: format!("command {index} does not decode: {error}"),
        })?;
        let applied = state.apply(&command);
        produced.clear();
        let mut prev = head.hash;
        encode_events(
            &command,
            &applied.events,
            0,
            &state,
            &mut head,
            &mut produced,
        );
        let first = head.seq + 1 - produced.len() as u64;
        for (offset, record) in produced.iter().enumerate() {
            let seq = first + offset as u64;
            let mut stored = None;
            reader.scan(seq, |_, bytes| {
                stored = Some(bytes.to_vec());
                std::ops::ControlFlow::Break(())
            })?;
            match stored {
                Some(stored) if &stored == record => {
                    prev = check_record(&stored, seq, &prev)
                        .map_err(|reason| Error::Mismatch(format!("record {seq}: {reason}")))?;
                    checked += 1;
                }
                Some(_) => {
                    return Err(Error::Mismatch(format!(
                        "record {seq} differs from what command {index} produces on replay"
                    )))
                }
                None => {
                    return Err(Error::Mismatch(format!(
                        "record {seq} of command {index} is missing"
                    )))
                }
            }
        }
        Ok(())
    };
    commands.scan(1, |index, bytes| match replay(index, bytes) {
        Ok(()) => std::ops::ControlFlow::Continue(()),
        Err(error) => {
            failure = Some(error);
            std::ops::ControlFlow::Break(())
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    if checked != reader.last_index() {
        return Err(Error::Mismatch(format!(
            "{} records stored, {checked} produced by replay",
            reader.last_index()
        )));
    }
    Ok(checked)
}
