//! A message as the bus carries it: the parts a publish gives, the encoded tail
//! built once per message, and one delivery of it to one subscription.

use std::sync::Arc;

use colony_kernel::Priority;

use crate::ws;

/// A message as it is queued for delivery: the JSON of a `msg` frame after its
/// `sid` (and `delivery`) fields, built once however many subscribers get it.
#[derive(Debug)]
pub struct Msg {
    pub priority: Priority,
    /// `"subject":"...","data":...,...}`: the rest of the frame. It begins with the
    /// subject, which is read from it ([`Msg::subject`]) rather than kept twice (an
    /// allocation per message less).
    pub tail: Box<[u8]>,
    subject_len: usize,
    /// Stream sequence number (0 for a message that is not stored).
    pub seq: u64,
    pub at_ms: u64,
}

/// What every tail begins with, before the subject.
const SUBJECT_AT: &[u8] = b"\"subject\":\"";

impl Msg {
    pub fn subject(&self) -> &str {
        std::str::from_utf8(&self.tail[SUBJECT_AT.len()..SUBJECT_AT.len() + self.subject_len])
            .expect("a tail's subject is checked when the message is made")
    }

    /// A message another node relayed: its tail as that node made it. `None` when
    /// the tail does not begin with `subject`, as every tail does.
    pub fn relayed(subject: &str, priority: Priority, tail: Box<[u8]>) -> Option<Msg> {
        let rest = tail
            .strip_prefix(SUBJECT_AT)?
            .strip_prefix(subject.as_bytes())?;
        if rest.first() != Some(&b'"') {
            return None;
        }
        Some(Msg {
            priority,
            tail,
            subject_len: subject.len(),
            seq: 0,
            at_ms: 0,
        })
    }
}

/// The parts of a published message.
#[derive(Clone, Copy, Debug)]
pub struct MsgParts<'a> {
    pub subject: &'a str,
    /// Raw JSON.
    pub data: &'a str,
    pub priority: Priority,
    pub from: &'a str,
    /// Raw JSON object of strings.
    pub headers: Option<&'a str>,
    pub reply_to: Option<&'a str>,
}

impl MsgParts<'_> {
    /// The frame tail; `stream` adds the stream's name, sequence number and time.
    pub fn tail(&self, stream: Option<(&str, u64, u64)>) -> Vec<u8> {
        let stored = stream.map(|(name, seq, at_ms)| {
            format!(",\"stream\":\"{name}\",\"seq\":{seq},\"time_ms\":{at_ms}")
        });
        // The exact length, so that the tail is made once and never copied to shrink
        // it (`to_msg` boxes it).
        let exact = "\"subject\":\"\",\"data\":,\"priority\":\"\",\"from\":\"\"}".len()
            + self.subject.len()
            + self.data.len()
            + self.priority.as_str().len()
            + self.from.len()
            + self.headers.map_or(0, |h| ",\"headers\":".len() + h.len())
            + self
                .reply_to
                .map_or(0, |r| ",\"reply_to\":\"\"".len() + r.len())
            + stored.as_ref().map_or(0, String::len);
        let mut tail = String::with_capacity(exact);
        tail.push_str("\"subject\":\""); // SUBJECT_AT
        tail.push_str(self.subject);
        tail.push_str("\",\"data\":");
        tail.push_str(self.data);
        tail.push_str(",\"priority\":\"");
        tail.push_str(self.priority.as_str());
        tail.push_str("\",\"from\":\"");
        tail.push_str(self.from);
        tail.push('"');
        if let Some(headers) = self.headers {
            tail.push_str(",\"headers\":");
            tail.push_str(headers);
        }
        if let Some(reply_to) = self.reply_to {
            tail.push_str(",\"reply_to\":\"");
            tail.push_str(reply_to);
            tail.push('"');
        }
        if let Some(stored) = &stored {
            tail.push_str(stored);
        }
        tail.push('}');
        debug_assert_eq!(tail.len(), exact, "the tail's length was foreseen");
        tail.into_bytes()
    }

    pub fn to_msg(&self, stream: Option<(&str, u64, u64)>) -> Msg {
        Msg {
            priority: self.priority,
            tail: self.tail(stream).into_boxed_slice(),
            subject_len: self.subject.len(),
            seq: stream.map_or(0, |s| s.1),
            at_ms: stream.map_or(0, |s| s.2),
        }
    }
}

/// A subscription's id as its deliveries carry it: the head of their `msg` frames,
/// `{"op":"msg","sid":"<sid>",`, made once when the subscription is made, so that a
/// delivery copies it whole. A client's sid is checked before (letters, digits and
/// `-_.:`): nothing in it needs escaping.
#[derive(Clone)]
pub struct Sid(Arc<[u8]>);

/// What every head begins with, before the sid.
const SID_AT: &[u8] = b"{\"op\":\"msg\",\"sid\":\"";

/// What every head ends with, after the sid.
const SID_END: &[u8] = b"\",";

impl Sid {
    pub fn new(sid: &str) -> Sid {
        let mut head = Vec::with_capacity(SID_AT.len() + sid.len() + SID_END.len());
        head.extend_from_slice(SID_AT);
        head.extend_from_slice(sid.as_bytes());
        head.extend_from_slice(SID_END);
        Sid(head.into())
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[SID_AT.len()..self.0.len() - SID_END.len()])
            .expect("a head is made from a str")
    }

    fn head(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message for one subscription of a connection.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub sid: Sid,
    pub msg: Arc<Msg>,
    /// How many times a stream message has been delivered to this consumer
    /// (0 for core messages, which carry no count).
    pub delivery: u32,
}

impl Delivery {
    /// Bytes the frame takes in the queue and on the wire, near enough.
    pub fn size(&self) -> usize {
        19 + self.sid.head().len() + self.msg.tail.len()
    }

    /// Appends the whole WebSocket frame: the subscription's head, the delivery
    /// count of a stream message, the message's tail.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let head = self.sid.head();
        let tail = &self.msg.tail;
        // Two paths, not an empty count copied: a core message (nearly every one)
        // then costs two copies, not three (about 20 instructions a delivery less,
        // by callgrind).
        if self.delivery == 0 {
            let length = head.len() + tail.len();
            out.reserve(ws::HEADER_BYTES_MAX + length);
            ws::encode_header(ws::OP_TEXT, length, out);
            out.extend_from_slice(head);
            out.extend_from_slice(tail);
            return;
        }
        let count = format!("\"delivery\":{},", self.delivery);
        let length = head.len() + count.len() + tail.len();
        out.reserve(ws::HEADER_BYTES_MAX + length);
        ws::encode_header(ws::OP_TEXT, length, out);
        out.extend_from_slice(head);
        out.extend_from_slice(count.as_bytes());
        out.extend_from_slice(tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame's payload, its header read as RFC 6455 says.
    fn payload(frame: &[u8]) -> serde_json::Value {
        assert_eq!(frame[0], 0x81, "a final text frame");
        let (length, at) = match frame[1] {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            short => (short as usize, 2),
        };
        assert_eq!(
            frame.len(),
            at + length,
            "the header says the frame's length"
        );
        serde_json::from_slice(&frame[at..]).unwrap()
    }

    #[test]
    fn a_tail_is_made_to_its_exact_length() {
        let parts = MsgParts {
            subject: "orders.new",
            data: r#"{"n":1}"#,
            priority: Priority::Critical,
            from: "0.1",
            headers: Some(r#"{"trace":"abc"}"#),
            reply_to: Some("agents.0.1.inbox.9"),
        };
        for stream in [None, Some(("orders", 5, 1_700_000_000_000))] {
            let tail = parts.tail(stream);
            assert_eq!(tail.capacity(), tail.len());
            let frame: serde_json::Value =
                serde_json::from_slice(&[b"{".as_slice(), &tail].concat()).unwrap();
            assert_eq!(frame["headers"]["trace"], "abc");
            assert_eq!(
                frame["seq"],
                stream.map_or(serde_json::Value::Null, |s| s.1.into())
            );
        }
    }

    #[test]
    fn a_message_reads_its_subject_from_its_tail_and_a_relayed_one_is_checked() {
        let parts = MsgParts {
            subject: "orders.new",
            data: "1",
            priority: Priority::Low,
            from: "0.1",
            headers: None,
            reply_to: None,
        };
        let msg = parts.to_msg(Some(("orders", 3, 9)));
        assert_eq!(msg.subject(), "orders.new");
        let relayed = Msg::relayed("orders.new", Priority::Low, msg.tail.clone()).unwrap();
        assert_eq!(relayed.subject(), "orders.new");
        assert_eq!(relayed.tail, msg.tail);
        // A subject the tail does not begin with, or only begins with, is refused.
        for other in ["orders", "orders.ne", "orders.new.x", "x"] {
            assert!(Msg::relayed(other, Priority::Low, msg.tail.clone()).is_none());
        }
        assert!(Msg::relayed("a", Priority::Low, b"{}".to_vec().into()).is_none());
    }

    #[test]
    fn a_delivery_is_one_whole_frame() {
        for (data_bytes, count) in [(3, 0), (200, 0), (200, 7), (70_000, 4_000_000_000)] {
            let data = format!("\"{}\"", "x".repeat(data_bytes));
            let parts = MsgParts {
                subject: "work.a",
                data: &data,
                priority: Priority::High,
                from: "2.7",
                headers: None,
                reply_to: Some("agents.2.7.inbox.1"),
            };
            for sid in ["s", &"q".repeat(64), &"l".repeat(200)] {
                let delivery = Delivery {
                    sid: Sid::new(sid),
                    msg: Arc::new(parts.to_msg(None)),
                    delivery: count,
                };
                let mut out = b"before".to_vec();
                delivery.encode(&mut out);
                let frame = payload(&out[6..]);
                assert_eq!(frame["op"], "msg");
                assert_eq!(frame["sid"], sid);
                assert_eq!(frame["subject"], "work.a");
                assert_eq!(frame["data"].as_str().unwrap().len(), data_bytes);
                assert_eq!(frame["reply_to"], "agents.2.7.inbox.1");
                match count {
                    0 => assert!(frame.get("delivery").is_none()),
                    n => assert_eq!(frame["delivery"], n),
                }
            }
        }
    }
}
