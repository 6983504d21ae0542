//! Durable streams in a cluster: kept by the cluster, copied on every node.
//!
//! On one node a stream's messages are appended to its own log by the writer thread
//! (`streams.rs`). In a cluster a [`StreamReplica`] (colony-cluster's, on JetStream)
//! is attached: a message captured on any node goes to the cluster's copy of the
//! stream, which numbers it, and its publisher is told the number once that copy
//! holds it durably. Every node follows every stream's copy and stores what it
//! gets under the same number ([`Streams::store_replicated`]), so a stream holds the
//! same messages in the same order on every node and a consumer may attach to any.
//! Consumers (their positions and acknowledgements) stay on their node.

use std::sync::Arc;

use colony_kernel::streams::StreamSpec;
use colony_log::{SegmentLog, SegmentOptions};

use crate::streams::{decode, Streams};
use crate::Conn;

/// The subject of a stored message that stands for one that was not a record.
pub const SKIPPED_SUBJECT: &str = "colony.streams.skipped";

/// Where a cluster keeps its streams.
pub trait StreamReplica: Send + Sync {
    /// Sends a captured message (its stored record) to the cluster's copy of
    /// `stream`; `reply` is told `ok` with its number once that copy holds it.
    /// `Err` when it cannot take more now.
    fn append(
        &self,
        stream: &str,
        record: Vec<u8>,
        reply: Option<(Arc<Conn>, String)>,
    ) -> Result<(), String>;
    /// Starts (or restarts, after a change of definition) copying the cluster's
    /// `spec.name` here from number `next_seq` on.
    fn follow(&self, spec: &StreamSpec, next_seq: u64);
    /// Stops copying `name`, and drops the cluster's copy of it.
    fn forget(&self, name: &str);
}

impl Streams {
    /// From now on captured messages go to `replica`, and every stream is copied
    /// from it. False when one was attached already.
    pub fn replicate_through(&self, replica: Arc<dyn StreamReplica>) -> bool {
        if self.replica.set(Arc::clone(&replica)).is_err() {
            return false;
        }
        for stream in self.list() {
            replica.follow(&stream.spec(), stream.info().last_seq + 1);
        }
        true
    }

    /// Stores message `seq` of `name` as the cluster's copy numbered it. A number
    /// already stored is ignored; past a gap (the cluster's copy dropped messages
    /// this node never had, by its retention) the node's copy starts again at `seq`.
    pub fn store_replicated(&self, name: &str, seq: u64, record: &[u8]) -> Result<(), String> {
        let Some(stream) = self.get(name) else {
            return Ok(()); // deleted meanwhile
        };
        // Something else with access to the cluster's copy published a message that
        // is not a record: it keeps its number, as a record saying so.
        let placeholder;
        let (message, record) = match decode(name, seq, record) {
            Ok(message) => (message, record),
            Err(error) => {
                tracing::warn!(stream = %name, seq, "the cluster's copy holds a message that is not a record: {error}");
                placeholder = crate::streams::placeholder_record(
                    colony_pipeline::sequencer::now_ms(),
                    SKIPPED_SUBJECT,
                );
                (
                    decode(name, seq, placeholder.as_bytes())?,
                    placeholder.as_bytes(),
                )
            }
        };
        {
            let mut inner = stream.inner.lock().expect("stream lock");
            if seq < inner.next_seq {
                return Ok(());
            }
            if seq > inner.next_seq {
                tracing::warn!(
                    stream = %name,
                    from = inner.next_seq,
                    to = seq,
                    "the cluster's copy of the stream no longer holds what this node missed; this node's copy starts again at {seq}"
                );
                let options = SegmentOptions {
                    segment_bytes_max: self.segment_bytes,
                    trimmed_start: true,
                };
                inner.log = SegmentLog::create_at(&self.dir.join(name), options, seq)
                    .map_err(|error| error.to_string())?;
                inner.msgs.clear();
                inner.bytes = 0;
                inner.next_seq = seq;
            }
            let stored = inner.log.append(record).map_err(|e| e.to_string())?;
            debug_assert_eq!(stored, seq);
            inner.log.sync().map_err(|e| e.to_string())?;
            inner.next_seq = seq + 1;
            inner.bytes += message.record.len() as u64;
            inner.msgs.push_back(Arc::new(message));
            inner.retain(colony_pipeline::sequencer::now_ms());
        }
        stream.wake();
        Ok(())
    }

    /// Brings the streams in line with the kernel's definitions (in a cluster a
    /// stream defined or deleted on another node): opens the missing, closes the gone.
    pub fn reconcile(&self, specs: &[StreamSpec]) {
        for spec in specs {
            let current = self.get(&spec.name).map(|stream| stream.spec());
            if current.as_ref() != Some(spec) {
                if let Err(error) = self.define(spec.clone()) {
                    tracing::warn!("cannot open stream {}: {error}", spec.name);
                }
            }
        }
        for stream in self.list() {
            if !specs.iter().any(|spec| spec.name == stream.name) {
                self.delete(&stream.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BusConfig;

    fn record(n: u64) -> String {
        serde_json::json!({
            "at_ms": colony_pipeline::sequencer::now_ms(),
            "subject": "orders.new", "data": n, "priority": "normal", "from": "1.1",
        })
        .to_string()
    }

    /// Stored under the cluster's numbers: a repeat is ignored, a gap starts the
    /// node's copy again where the cluster's is, and a message that is not a record
    /// keeps its number; all of it as it was after a restart.
    #[test]
    fn a_copy_keeps_the_clusters_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::streams::tests::orders();
        let config = BusConfig::default();
        let streams = Streams::open(dir.path(), &config, [spec.clone()]).unwrap();
        streams
            .store_replicated("orders", 1, record(1).as_bytes())
            .unwrap();
        streams
            .store_replicated("orders", 2, record(2).as_bytes())
            .unwrap();
        streams
            .store_replicated("orders", 2, record(9).as_bytes())
            .unwrap();
        let info = streams.get("orders").unwrap().info();
        assert_eq!((info.first_seq, info.last_seq, info.messages), (1, 2, 2));
        streams
            .store_replicated("orders", 5, record(5).as_bytes())
            .unwrap();
        streams
            .store_replicated("orders", 6, b"not a record")
            .unwrap();
        let stream = streams.get("orders").unwrap();
        let info = stream.info();
        assert_eq!((info.first_seq, info.last_seq, info.messages), (5, 6, 2));
        assert_eq!(stream.get(5).unwrap().msg.subject(), "orders.new");
        assert_eq!(stream.get(6).unwrap().msg.subject(), SKIPPED_SUBJECT);
        streams.shutdown();
        drop(streams);
        let streams = Streams::open(dir.path(), &config, [spec]).unwrap();
        let info = streams.get("orders").unwrap().info();
        assert_eq!((info.first_seq, info.last_seq, info.messages), (5, 6, 2));
        streams.shutdown();
    }
}
