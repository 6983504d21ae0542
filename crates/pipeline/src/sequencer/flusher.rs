//! The flusher thread: writes each group, syncs once, then answers the group's
//! callers and tells the sink; writes snapshots; stops the node on a panic.

use super::*;

/// The thread that writes and syncs the logs, then answers.
pub(crate) struct Flusher {
    pub(crate) writer: LogWriter,
    /// How long commands answered once decided may wait for their sync.
    pub(crate) decided_sync_within: Duration,
    /// This many waiting commands are synced at once.
    pub(crate) urgent_commands: usize,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: Arc<EventTap>,
    pub(crate) snapshots_dir: std::path::PathBuf,
    pub(crate) snapshot_busy: Arc<AtomicBool>,
    pub(crate) snapshot_writer: Option<std::thread::JoinHandle<()>>,
    /// Tells readers the last command synced.
    pub(crate) durable: tokio::sync::watch::Sender<u64>,
    /// How the logs are pruned after a snapshot, if they are.
    pub(crate) pruning: Option<colony_log::prune::Pruning>,
    /// The time pruning measures ages against.
    pub(crate) clock: Arc<dyn Clock>,
}

impl Flusher {
    pub(crate) fn run(mut self, handoff: &Handoff) {
        loop {
            let group = {
                let mut waiting = handoff.waiting.lock().expect("handoff lock");
                loop {
                    if waiting.is_empty() {
                        waiting = handoff.filled.wait(waiting).expect("handoff lock");
                        continue;
                    }
                    if waiting.urgent(self.urgent_commands) || handoff.hurried(&waiting) {
                        break;
                    }
                    // Only commands already answered wait: sync them within the bound,
                    // with whatever else comes meanwhile.
                    let deadline =
                        waiting.first_at.unwrap_or_else(Instant::now) + self.decided_sync_within;
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    waiting = handoff
                        .filled
                        .wait_timeout(waiting, deadline - now)
                        .expect("handoff lock")
                        .0;
                }
                handoff.set_syncing(true);
                std::mem::take(&mut *waiting)
            };
            handoff.taken.notify_all();
            let last = group.last;
            self.flush(group);
            handoff.set_syncing(false);
            if last {
                break;
            }
        }
        if let Some(writer) = self.snapshot_writer.take() {
            let _ = writer.join();
        }
    }

    pub(crate) fn flush(&mut self, group: Group) {
        if !group.records.is_empty() {
            let started = Instant::now();
            for records in &group.records {
                if let Err(error) = self.writer.append(records) {
                    tracing::error!("cannot append to the log, stopping: {error}");
                    std::process::abort();
                }
            }
            if let Err(error) = self.writer.sync() {
                // The kernel state is ahead of the disk and callers would be told their
                // commands are durable: the only safe move is to stop here.
                tracing::error!("cannot make the log durable, stopping: {error}");
                std::process::abort();
            }
            if let Err(error) = self.writer.archive(&group.retired) {
                // Retired tasks would be readable from neither the state nor the
                // archive once a snapshot without them is written: stop before that
                // (a restart replays the log and writes them).
                tracing::error!("cannot write the task archive, stopping: {error}");
                std::process::abort();
            }
            self.metrics.record_batch(
                group.records.len() as u64,
                started.elapsed(),
                &group.decisions,
            );
            if let Some(last) = group.records.last() {
                self.durable.send_replace(last.seq);
            }
        }
        for (reply, outcome) in group.replies {
            // A caller that went away (timeout, disconnect) just misses its answer;
            // the command stands.
            let _ = reply.send(outcome);
        }
        if let Some(sink) = self.events.sink.get() {
            if !group.offered.is_empty() {
                sink.offer(&group.offered);
            }
            if !group.admitted.is_empty() {
                sink.admitted(&group.admitted);
            }
            for (command, events) in &group.published {
                sink.decided(command, events);
            }
        }
        if let Some((seq, payload)) = group.snapshot {
            self.write_snapshot(seq, payload, group.last);
        }
    }

    /// Writes a snapshot of durable commands: on a helper thread, or here when it
    /// is the last.
    pub(crate) fn write_snapshot(&mut self, seq: u64, payload: Vec<u8>, here: bool) {
        if let Some(writer) = self.snapshot_writer.take() {
            let _ = writer.join();
        }
        // Every snapshot on disk is whole now: the logs before the oldest are not
        // needed for a restart.
        self.prune();
        let dir = self.snapshots_dir.clone();
        let metrics = Arc::clone(&self.metrics);
        let busy = Arc::clone(&self.snapshot_busy);
        let write = move || {
            match snapshot::write_snapshot(&dir, seq, &payload) {
                Ok(path) => {
                    metrics.snapshots.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(file = %path.display(), "snapshot written at command {seq}");
                }
                Err(error) => {
                    tracing::warn!("snapshot at command {seq} failed (the log is intact): {error}")
                }
            }
            busy.store(false, Ordering::Release);
        };
        if here {
            write();
        } else {
            self.snapshot_writer = Some(std::thread::spawn(write));
        }
    }

    /// Prunes the logs by the rule, never past the oldest snapshot kept. A failure
    /// is logged and changes nothing the node needs: the logs stay as they were, or
    /// hold a few segments more than the rule wants.
    fn prune(&mut self) {
        let Some(pruning) = &self.pruning else {
            return;
        };
        let oldest = match colony_log::snapshot::oldest_kept(&self.snapshots_dir) {
            Ok(Some(oldest)) => oldest,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!("cannot list the snapshots, so the logs are not pruned: {error}");
                return;
            }
        };
        let started = Instant::now();
        let pruned =
            self.writer
                .prune(&pruning.rule, oldest + 1, self.clock.now_ms(), &pruning.key);
        if let Ok(report) = &pruned {
            if report.archive_files > 0 {
                tracing::info!(
                    files = report.archive_files,
                    bytes = report.archive_bytes,
                    "deleted archive files not changed within retention.toml [archive] keep_for"
                );
            }
        }
        match pruned {
            Ok(report) if report.command_segments + report.audit_segments > 0 => {
                tracing::info!(
                    command_segments = report.command_segments,
                    first_command = report.first_command,
                    audit_segments = report.audit_segments,
                    first_record = report.first_record,
                    bytes = report.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "pruned the logs (retention.toml [logs])"
                );
                self.metrics.pruned_segments.fetch_add(
                    (report.command_segments + report.audit_segments) as u64,
                    Ordering::Relaxed,
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("pruning the logs failed (they are intact): {error}"),
        }
    }
}
