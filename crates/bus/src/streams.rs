//! Durable streams: messages on a stream's subjects are appended to its own
//! segment log (`<data>/streams/<name>/`), synced in groups by one writer thread,
//! and only then delivered to its consumers and acknowledged to the publisher.
//! Streams are defined by kernel decisions (`DefineStream`), so their definitions
//! survive restarts with the rest of the state; their messages are read back from
//! the logs at start.
//!
//! Retention (`max_msgs`, `max_bytes`, `max_age_ms`) drops the oldest messages in
//! memory and deletes whole log segments once every record in them is dropped.
//! Expired messages are skipped by readers even before an append evicts them.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock, Weak};

use colony_api::bus::{Answer, NodeFrame, Refusal, RefusalError};
use colony_kernel::streams::StreamSpec;
use colony_kernel::Priority;
use colony_log::{SegmentLog, SegmentOptions};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::subject::{Tokens, Trie};
use super::{Conn, Msg, MsgParts};

/// Appends the writer takes in one group before syncing.
const WRITER_BATCH_MAX: usize = 4_096;
/// Entries a reader looks at in one call before giving its cursor back.
const SCAN_MAX: usize = 4_096;

/// A message as stored on disk (JSON).
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    at_ms: u64,
    #[serde(borrow)]
    subject: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    priority: Priority,
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    headers: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<Cow<'a, str>>,
}

/// The record that stands, under its number, for a message of a cluster's copy that
/// is not a record: from the system, on `subject`, without data.
pub(crate) fn placeholder_record(at_ms: u64, subject: &str) -> String {
    let record = Record {
        at_ms,
        subject: Cow::Borrowed(subject),
        data: raw("null"),
        priority: Priority::Normal,
        from: Cow::Borrowed("0.1"),
        headers: None,
        reply_to: None,
    };
    serde_json::to_string(&record).expect("a record serializes")
}

/// A stored message: what consumers get, and its data for dead letters.
#[derive(Debug)]
pub struct Stored {
    pub msg: Arc<Msg>,
    /// The record as stored (JSON), for dead letters and `GET` reads.
    pub record: Box<str>,
}

pub(crate) fn decode(name: &str, seq: u64, record: &[u8]) -> Result<Stored, String> {
    let text = std::str::from_utf8(record).map_err(|e| e.to_string())?;
    let parsed: Record = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let parts = MsgParts {
        subject: &parsed.subject,
        data: parsed.data.get(),
        priority: parsed.priority,
        from: &parsed.from,
        headers: parsed.headers.map(RawValue::get),
        reply_to: parsed.reply_to.as_deref(),
    };
    Ok(Stored {
        msg: Arc::new(parts.to_msg(Some((name, seq, parsed.at_ms)))),
        record: text.into(),
    })
}

pub(crate) struct Inner {
    pub(crate) spec: StreamSpec,
    pub(crate) log: SegmentLog,
    pub(crate) msgs: VecDeque<Arc<Stored>>,
    pub(crate) bytes: u64,
    /// Sequence number the next message gets.
    pub(crate) next_seq: u64,
}

impl Inner {
    fn first_seq(&self) -> u64 {
        self.msgs.front().map_or(self.next_seq, |s| s.msg.seq)
    }

    fn expired(&self, stored: &Stored, now_ms: u64) -> bool {
        self.spec
            .max_age_ms
            .is_some_and(|age| stored.msg.at_ms.saturating_add(age) < now_ms)
    }

    /// Drops what retention says must go; deletes segments nobody can read.
    pub(crate) fn retain(&mut self, now_ms: u64) {
        let mut evicted = false;
        while let Some(front) = self.msgs.front() {
            let over_msgs = self
                .spec
                .max_msgs
                .is_some_and(|max| self.msgs.len() as u64 > max);
            let over_bytes = self.spec.max_bytes.is_some_and(|max| self.bytes > max);
            if !(over_msgs || over_bytes || self.expired(front, now_ms)) {
                break;
            }
            let front = self.msgs.pop_front().expect("front exists");
            self.bytes -= front.record.len() as u64;
            evicted = true;
        }
        if evicted {
            let first = self.first_seq();
            if let Err(error) = self.log.remove_segments_before(first) {
                tracing::warn!(stream = %self.spec.name, "cannot delete old segments: {error}");
            }
        }
    }

    fn position(&self, seq: u64) -> usize {
        seq.saturating_sub(self.first_seq()) as usize
    }
}

/// One stream.
pub struct Stream {
    pub name: String,
    pub(crate) inner: Mutex<Inner>,
    waiters: Mutex<Vec<Weak<Conn>>>,
    deleted: AtomicBool,
}

/// What `GET /v1/streams` shows (the API's type).
pub use colony_api::streams::StreamInfo;

/// What a consumer reads next.
pub enum Next {
    Msg(Arc<Stored>),
    /// Nothing matching yet; continue from this sequence number later.
    Caught(u64),
}

impl Stream {
    pub fn spec(&self) -> StreamSpec {
        self.inner.lock().expect("stream lock").spec.clone()
    }

    pub fn info(&self) -> StreamInfo {
        let inner = self.inner.lock().expect("stream lock");
        let spec = &inner.spec;
        StreamInfo {
            name: spec.name.clone(),
            subjects: spec.subjects.clone(),
            max_age_ms: spec.max_age_ms,
            max_bytes: spec.max_bytes,
            max_msgs: spec.max_msgs,
            ack_wait_ms: spec.ack_wait_ms,
            max_deliver: spec.max_deliver,
            dead_letter_subject: spec.dead_letter_subject(),
            messages: inner.msgs.len(),
            bytes: inner.bytes,
            first_seq: inner.first_seq(),
            last_seq: inner.next_seq - 1,
        }
    }

    /// The sequence number of the first message stored at or after `at_ms`.
    pub fn seq_at_time(&self, at_ms: u64) -> u64 {
        let inner = self.inner.lock().expect("stream lock");
        let index = inner.msgs.partition_point(|s| s.msg.at_ms < at_ms);
        inner.msgs.get(index).map_or(inner.next_seq, |s| s.msg.seq)
    }

    /// The first live message at or after `from_seq` whose subject matches `filter`.
    pub fn next(&self, from_seq: u64, filter: Option<&str>, now_ms: u64) -> Next {
        let inner = self.inner.lock().expect("stream lock");
        let start = inner.position(from_seq);
        for stored in inner.msgs.iter().skip(start).take(SCAN_MAX) {
            if inner.expired(stored, now_ms) {
                continue;
            }
            if filter.is_none_or(|f| super::subject::matches(f, stored.msg.subject())) {
                return Next::Msg(Arc::clone(stored));
            }
        }
        let scanned_to = inner
            .msgs
            .iter()
            .skip(start)
            .take(SCAN_MAX)
            .next_back()
            .map_or(from_seq.max(inner.first_seq()), |s| s.msg.seq + 1);
        Next::Caught(scanned_to)
    }

    /// A message by sequence number, if it is still kept.
    pub fn get(&self, seq: u64) -> Option<Arc<Stored>> {
        let inner = self.inner.lock().expect("stream lock");
        if seq < inner.first_seq() {
            return None;
        }
        inner.msgs.get(inner.position(seq)).cloned()
    }

    /// Wakes `conn` whenever a message is stored. A connection is listed once however
    /// many consumers it opens on the stream, and closed connections are forgotten
    /// here too (not only when a message is stored): a client that subscribes and
    /// unsubscribes in a loop, or reconnects in a loop to a quiet stream, cannot grow
    /// the list (each entry would keep its connection's memory and be woken per message).
    pub fn watch(&self, conn: &Arc<Conn>) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        let mut listed = false;
        waiters.retain(|w| match w.upgrade() {
            Some(other) => {
                listed |= Arc::ptr_eq(&other, conn);
                true
            }
            None => false,
        });
        if !listed {
            waiters.push(Arc::downgrade(conn));
        }
    }

    /// How many connections are woken when a message is stored.
    #[cfg(test)]
    pub(crate) fn watchers(&self) -> usize {
        self.waiters.lock().expect("waiters lock").len()
    }

    pub(crate) fn wake(&self) {
        self.waiters
            .lock()
            .expect("waiters lock")
            .retain(|w| match w.upgrade() {
                Some(conn) => {
                    conn.notify.notify_one();
                    true
                }
                None => false,
            });
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }
}

struct Append {
    stream: Arc<Stream>,
    record: Vec<u8>,
    /// Who to tell, with the publish's `id` (raw JSON).
    reply: Option<(Arc<Conn>, String)>,
}

/// Every stream of a node, and the writer thread.
pub struct Streams {
    pub(crate) dir: PathBuf,
    pub(crate) segment_bytes: u64,
    /// In a cluster, where the streams are kept (`stream_replica.rs`).
    pub(crate) replica: std::sync::OnceLock<Arc<dyn crate::stream_replica::StreamReplica>>,
    by_name: RwLock<BTreeMap<String, Arc<Stream>>>,
    capture: RwLock<Trie<Arc<Stream>>>,
    writer: Mutex<Option<SyncSender<Append>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A stream log that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("stream {name}: {source}")]
pub struct StreamError {
    pub name: String,
    pub source: colony_log::Error,
}

impl Streams {
    /// Opens the logs of `specs` under `<data_dir>/streams/` and starts the writer.
    pub fn open(
        data_dir: &Path,
        config: &super::BusConfig,
        specs: impl IntoIterator<Item = StreamSpec>,
    ) -> Result<Streams, StreamError> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.stream_append_queue_max);
        let streams = Streams {
            dir: data_dir.join("streams"),
            segment_bytes: config.stream_segment_bytes,
            by_name: RwLock::new(BTreeMap::new()),
            capture: RwLock::new(Trie::new()),
            writer: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(None),
            replica: std::sync::OnceLock::new(),
        };
        for spec in specs {
            streams.define(spec)?;
        }
        let handle = std::thread::Builder::new()
            .name("colony-streams".into())
            .spawn(move || write_loop(receiver))
            .expect("spawn the stream writer thread");
        *streams.writer_thread.lock().expect("writer lock") = Some(handle);
        Ok(streams)
    }

    /// Opens (or updates the definition of) a stream.
    pub fn define(&self, spec: StreamSpec) -> Result<Arc<Stream>, StreamError> {
        let mut by_name = self.by_name.write().expect("streams lock");
        let mut capture = self.capture.write().expect("capture lock");
        if let Some(existing) = by_name.get(&spec.name) {
            let old = {
                let mut inner = existing.inner.lock().expect("stream lock");
                std::mem::replace(&mut inner.spec, spec.clone())
            };
            for subject in &old.subjects {
                capture.remove(subject, |s| Arc::ptr_eq(s, existing));
            }
            for subject in &spec.subjects {
                capture.insert(subject, Arc::clone(existing));
            }
            if let Some(replica) = self.replica.get().filter(|_| old != spec) {
                replica.follow(&spec, existing.info().last_seq + 1);
            }
            return Ok(Arc::clone(existing));
        }
        let dir = self.dir.join(&spec.name);
        let mut msgs = VecDeque::new();
        let mut bytes = 0;
        let options = SegmentOptions {
            segment_bytes_max: self.segment_bytes,
            trimmed_start: true,
        };
        let name = spec.name.clone();
        let (log, report) = SegmentLog::open(&dir, options, 1, |seq, record| {
            match decode(&name, seq, record) {
                Ok(stored) => {
                    bytes += stored.record.len() as u64;
                    msgs.push_back(Arc::new(stored));
                }
                Err(error) => {
                    tracing::warn!(stream = %name, seq, "skipping an unreadable stored message: {error}")
                }
            }
            Ok(())
        })
        .map_err(|source| StreamError {
            name: spec.name.clone(),
            source,
        })?;
        let next_seq = log.next_index();
        if let Some((file, cut)) = &report.truncated {
            tracing::warn!(stream = %name, file = %file.display(), bytes = cut, "cut a torn tail off a stream log");
        }
        let mut inner = Inner {
            spec: spec.clone(),
            log,
            msgs,
            bytes,
            next_seq,
        };
        inner.retain(colony_pipeline::sequencer::now_ms());
        tracing::info!(stream = %name, messages = inner.msgs.len(), last_seq = next_seq - 1, "stream opened");
        let stream = Arc::new(Stream {
            name: name.clone(),
            inner: Mutex::new(inner),
            waiters: Mutex::new(Vec::new()),
            deleted: AtomicBool::new(false),
        });
        for subject in &spec.subjects {
            capture.insert(subject, Arc::clone(&stream));
        }
        by_name.insert(name, Arc::clone(&stream));
        if let Some(replica) = self.replica.get() {
            replica.follow(&spec, next_seq);
        }
        Ok(stream)
    }

    /// Forgets a stream and deletes its messages.
    pub fn delete(&self, name: &str) {
        let Some(stream) = self.by_name.write().expect("streams lock").remove(name) else {
            return;
        };
        stream.deleted.store(true, Ordering::Relaxed);
        let spec = stream.spec();
        let mut capture = self.capture.write().expect("capture lock");
        for subject in &spec.subjects {
            capture.remove(subject, |s| Arc::ptr_eq(s, &stream));
        }
        if let Some(replica) = self.replica.get() {
            replica.forget(name);
        }
        let dir = self.dir.join(name);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(stream = %name, "cannot delete {}: {error}", dir.display());
        }
        stream.wake();
    }

    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.by_name
            .read()
            .expect("streams lock")
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.by_name
            .read()
            .expect("streams lock")
            .values()
            .cloned()
            .collect()
    }

    /// The stream that stores messages on the subject of `tokens`, if any.
    pub fn capturing(&self, tokens: &Tokens) -> Option<Arc<Stream>> {
        let capture = self.capture.read().expect("capture lock");
        if capture.is_empty() {
            return None;
        }
        // Walked without collecting: every publish asks (overlaps are refused, so
        // at most one stream matches).
        let mut found = None;
        capture.visit_tokens(tokens, &mut |stream: &Arc<Stream>| {
            if found.is_none() {
                found = Some(Arc::clone(stream));
            }
        });
        found
    }

    /// Queues a message for storage. The publisher (when `reply` names it) gets
    /// `ok` with the sequence number once the message is on disk. `Err` when the
    /// writer's queue is full.
    pub fn append(
        &self,
        stream: &Arc<Stream>,
        parts: &MsgParts,
        reply: Option<(Arc<Conn>, String)>,
    ) -> Result<(), String> {
        let record = Record {
            at_ms: colony_pipeline::sequencer::now_ms(),
            subject: Cow::Borrowed(parts.subject),
            data: raw(parts.data),
            priority: parts.priority,
            from: Cow::Borrowed(parts.from),
            headers: parts.headers.map(raw),
            reply_to: parts.reply_to.map(Cow::Borrowed),
        };
        let record = serde_json::to_vec(&record).expect("a record serializes");
        if let Some(replica) = self.replica.get() {
            return replica.append(&stream.name, record, reply);
        }
        let append = Append {
            stream: Arc::clone(stream),
            record,
            reply,
        };
        let writer = self.writer.lock().expect("writer lock");
        let Some(sender) = writer.as_ref() else {
            return Err("the node is shutting down".into());
        };
        match sender.try_send(append) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(format!(
                "stream {} cannot keep up: its writer's queue is full; retry shortly",
                stream.name
            )),
            Err(TrySendError::Disconnected(_)) => Err("the node is shutting down".into()),
        }
    }

    /// Stops the writer once every queued append is stored.
    pub fn shutdown(&self) {
        self.writer.lock().expect("writer lock").take();
        if let Some(handle) = self.writer_thread.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }
}

fn raw(json: &str) -> &RawValue {
    // Callers pass JSON the bus already parsed as a RawValue.
    serde_json::from_str(json).expect("raw JSON from a parsed frame")
}

fn write_loop(receiver: Receiver<Append>) {
    let mut batch = Vec::with_capacity(WRITER_BATCH_MAX);
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < WRITER_BATCH_MAX {
            match receiver.try_recv() {
                Ok(append) => batch.push(append),
                Err(_) => break,
            }
        }
        let mut stored = Vec::with_capacity(batch.len());
        let mut touched: Vec<Arc<Stream>> = Vec::new();
        for append in batch.drain(..) {
            if append.stream.is_deleted() {
                if let Some((conn, id)) = append.reply {
                    conn.push_frame(NodeFrame::Err(&Refusal {
                        id: Some(crate::frame_id(&id)),
                        error: RefusalError {
                            code: "not_found".into(),
                            message: format!("stream {} was deleted", append.stream.name),
                            details: serde_json::Map::new(),
                        },
                    }));
                }
                continue;
            }
            let seq = {
                let mut inner = append.stream.inner.lock().expect("stream lock");
                match inner.log.append(&append.record) {
                    Ok(seq) => {
                        inner.next_seq = seq + 1;
                        seq
                    }
                    Err(error) => {
                        tracing::error!(stream = %append.stream.name, "cannot append, stopping: {error}");
                        std::process::abort();
                    }
                }
            };
            if !touched.iter().any(|s| Arc::ptr_eq(s, &append.stream)) {
                touched.push(Arc::clone(&append.stream));
            }
            stored.push((seq, append));
        }
        for stream in &touched {
            if let Err(error) = stream.inner.lock().expect("stream lock").log.sync() {
                // Publishers would be told their messages are durable: stop instead.
                tracing::error!(stream = %stream.name, "cannot make a stream durable, stopping: {error}");
                std::process::abort();
            }
        }
        let now_ms = colony_pipeline::sequencer::now_ms();
        for (seq, append) in stored {
            let message = match decode(&append.stream.name, seq, &append.record) {
                Ok(message) => message,
                Err(error) => {
                    tracing::error!("a record the node wrote does not decode: {error}");
                    continue;
                }
            };
            {
                let mut inner = append.stream.inner.lock().expect("stream lock");
                inner.bytes += message.record.len() as u64;
                inner.msgs.push_back(Arc::new(message));
                inner.retain(now_ms);
            }
            if let Some((conn, id)) = append.reply {
                conn.push_frame(NodeFrame::Ok(&Answer {
                    id: Some(crate::frame_id(&id)),
                    stream: Some(append.stream.name.clone()),
                    seq: Some(seq),
                    ..Answer::default()
                }));
            }
        }
        for stream in touched {
            stream.wake();
        }
    }
}

#[cfg(test)]
#[path = "streams_tests.rs"]
pub(crate) mod tests;
