//! The bus's durable streams kept in JetStream (see `colony_bus::stream_replica`).
//!
//! Each Colony stream `NAME` is the JetStream stream `<stream>_S_NAME` (file
//! storage, the cluster's replicas, the same limits of messages, bytes and age) on
//! the subject `colony.streams.<stream>.NAME`. A message captured on any node is
//! published there, in the order captured on that node; its publisher is told the
//! number JetStream gave it once a quorum holds it. Every node follows each stream
//! with an ordered consumer from the number after its own last and stores what comes
//! under the same number, so all nodes hold the same stream.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream;
use colony_api::bus::{Answer, NodeFrame, Refusal, RefusalError};
use colony_bus::stream_replica::StreamReplica;
use colony_bus::{Bus, Conn};
use colony_kernel::streams::StreamSpec;
use tokio::sync::mpsc;

use crate::cluster::{Cluster, Inner};
use crate::follow::{Ended, STALLED_AFTER};

/// Captured messages waiting to be sent to JetStream, at most; past it a publish is
/// refused (`backpressure`), never waited for.
pub const STREAM_APPEND_QUEUE_MAX: usize = 65_536;

/// One captured message on its way to JetStream.
struct Outgoing {
    stream: String,
    record: Vec<u8>,
    reply: Option<(Arc<Conn>, String)>,
}

/// A node's copy of the cluster's streams.
pub struct StreamMirror {
    inner: Arc<Inner>,
    bus: Weak<Bus>,
    outbound: mpsc::Sender<Outgoing>,
    /// The task following each stream.
    followers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl StreamMirror {
    /// Keeps `bus`'s streams in the cluster's JetStream from now on.
    pub fn start(cluster: &Cluster, bus: &Arc<Bus>) -> Arc<StreamMirror> {
        let (outbound, queued) = mpsc::channel(STREAM_APPEND_QUEUE_MAX);
        let mirror = Arc::new(StreamMirror {
            inner: Arc::clone(&cluster.inner),
            bus: Arc::downgrade(bus),
            outbound,
            followers: Mutex::new(HashMap::new()),
        });
        tokio::spawn(send_loop(
            Arc::clone(&mirror.inner),
            Arc::downgrade(bus),
            queued,
        ));
        bus.streams
            .replicate_through(Arc::clone(&mirror) as Arc<dyn StreamReplica>);
        mirror
    }
}

fn js_name(inner: &Inner, stream: &str) -> String {
    format!("{}_S_{stream}", inner.config.stream)
}

fn js_subject(inner: &Inner, stream: &str) -> String {
    format!("colony.streams.{}.{stream}", inner.config.stream)
}

/// The JetStream stream that keeps Colony's stream `spec`.
fn js_config(inner: &Inner, spec: &StreamSpec) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: js_name(inner, &spec.name),
        subjects: vec![js_subject(inner, &spec.name)],
        storage: jetstream::stream::StorageType::File,
        num_replicas: inner.config.replicas,
        max_messages: spec
            .max_msgs
            .map_or(-1, |max| max.min(i64::MAX as u64) as i64),
        max_bytes: spec
            .max_bytes
            .map_or(-1, |max| max.min(i64::MAX as u64) as i64),
        max_age: spec
            .max_age_ms
            .map_or(Duration::ZERO, Duration::from_millis),
        description: Some(format!("Colony's durable bus stream {}", spec.name)),
        ..Default::default()
    }
}

/// Publishes captured messages in order, one at a time, and answers each publisher
/// once JetStream acknowledged its message. A stream's JetStream copy is made (if
/// missing) before its first message: the follower that also makes it may not have
/// run yet. "No stream found" (a stream just made, or electing a leader after a
/// server died) means the message was not stored: it is sent again, for up to two
/// `ack_timeout`s, before the next one, so that the order holds.
async fn send_loop(inner: Arc<Inner>, bus: Weak<Bus>, mut queued: mpsc::Receiver<Outgoing>) {
    let mut made = std::collections::HashSet::new();
    while let Some(out) = queued.recv().await {
        if !made.contains(&out.stream) {
            let spec = bus
                .upgrade()
                .and_then(|bus| bus.streams.get(&out.stream))
                .map(|stream| stream.spec());
            let Some(spec) = spec else {
                answer_publisher(out.reply, refused(&out.stream, "the stream was deleted"));
                continue;
            };
            if let Err(error) = inner
                .jetstream
                .get_or_create_stream(js_config(&inner, &spec))
                .await
            {
                answer_publisher(out.reply, refused(&out.stream, &error.to_string()));
                continue;
            }
            made.insert(out.stream.clone());
        }
        let subject = js_subject(&inner, &out.stream);
        let deadline = tokio::time::Instant::now() + inner.config.ack_timeout * 2;
        let answer = loop {
            let acked = async {
                inner
                    .jetstream
                    .publish(subject.clone(), out.record.clone().into())
                    .await?
                    .await
            }
            .await;
            match acked {
                Ok(ack) => {
                    break Ok(Answer {
                        stream: Some(out.stream.clone()),
                        seq: Some(ack.sequence),
                        ..Answer::default()
                    })
                }
                Err(error)
                    if error.kind() == jetstream::context::PublishErrorKind::StreamNotFound
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => break refused(&out.stream, &error.to_string()),
            }
        };
        answer_publisher(out.reply, answer);
    }
}

fn refused(stream: &str, error: &str) -> Result<Answer, Refusal> {
    Err(Refusal {
        id: None,
        error: RefusalError {
            code: "cluster_unavailable".into(),
            message: format!("the cluster's copy of stream {stream} did not take the message ({error}); it may still be stored"),
            details: serde_json::Map::new(),
        },
    })
}

/// Tells the publisher (when it asked, with an `id`) what became of its message.
fn answer_publisher(reply: Option<(Arc<Conn>, String)>, answer: Result<Answer, Refusal>) {
    let Some((conn, id)) = reply else {
        return;
    };
    let id = Some(colony_bus::frame_id(&id));
    match answer {
        Ok(answer) => conn.push_frame(NodeFrame::Ok(&Answer { id, ..answer })),
        Err(refusal) => conn.push_frame(NodeFrame::Err(&Refusal { id, ..refusal })),
    }
}

impl StreamReplica for StreamMirror {
    fn append(
        &self,
        stream: &str,
        record: Vec<u8>,
        reply: Option<(Arc<Conn>, String)>,
    ) -> Result<(), String> {
        if !self.inner.connected() {
            return Err(format!(
                "stream {stream} is kept by the cluster, and this node has lost its connection to it; retry shortly"
            ));
        }
        self.outbound
            .try_send(Outgoing {
                stream: stream.to_string(),
                record,
                reply,
            })
            .map_err(|_| {
                format!(
                    "stream {stream} cannot keep up: the cluster's queue is full; retry shortly"
                )
            })
    }

    fn follow(&self, spec: &StreamSpec, next_seq: u64) {
        let task = tokio::spawn(follow(
            Arc::clone(&self.inner),
            self.bus.clone(),
            spec.clone(),
            next_seq,
        ));
        if let Some(old) = self
            .followers
            .lock()
            .expect("followers lock")
            .insert(spec.name.clone(), task)
        {
            old.abort();
        }
    }

    fn forget(&self, name: &str) {
        if let Some(task) = self.followers.lock().expect("followers lock").remove(name) {
            task.abort();
        }
        let inner = Arc::clone(&self.inner);
        let name = js_name(&inner, name);
        tokio::spawn(async move {
            // Every node does it; all but the first find it gone.
            let _ = inner.jetstream.delete_stream(&name).await;
        });
    }
}

/// Creates the stream in JetStream when missing, then copies it here from
/// `next_seq` on, for as long as the node runs (again after a lost connection).
async fn follow(inner: Arc<Inner>, bus: Weak<Bus>, spec: StreamSpec, next: u64) {
    let what = format!("copying the cluster's stream {}", spec.name);
    crate::follow::keep_following(&Arc::clone(&inner), &what, next, |mut next| {
        let (inner, bus, spec) = (Arc::clone(&inner), bus.clone(), spec.clone());
        async move {
            let ended = follow_once(&inner, &bus, &spec, &mut next).await;
            (next, ended)
        }
    })
    .await;
}

async fn follow_once(
    inner: &Inner,
    bus: &Weak<Bus>,
    spec: &StreamSpec,
    next: &mut u64,
) -> Result<(), Ended> {
    let config = js_config(inner, spec);
    let stream = match inner.jetstream.get_or_create_stream(config.clone()).await {
        Ok(stream) => stream,
        Err(error) => return Err(error.to_string().into()),
    };
    // A definition changed since the stream was made: its limits follow.
    let _ = inner.jetstream.update_stream(config).await;
    let mut following = crate::follow::ordered_messages(inner, &stream, None, *next).await?;
    let mut stream = stream;
    loop {
        let message = match following.next(inner).await? {
            Some(Some(message)) => message,
            Some(None) => break,
            None => {
                // Idle, or stalled (see STALLED_AFTER): the stream says which.
                let last = stream
                    .info()
                    .await
                    .map_err(|error| error.to_string())?
                    .state
                    .last_sequence;
                if last >= *next {
                    return Err(format!(
                        "no message for {STALLED_AFTER:?} while the stream holds more"
                    )
                    .into());
                }
                continue;
            }
        };
        if inner.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let (message, seq) = crate::follow::numbered(message)?;
        let Some(bus) = bus.upgrade() else {
            return Ok(());
        };
        bus.streams
            .store_replicated(&spec.name, seq, &message.payload)
            .map_err(|error| format!("cannot store message {seq}: {error}"))?;
        *next = seq + 1;
    }
    Err(Ended::Lost("the stream's consumer ended".into()))
}
