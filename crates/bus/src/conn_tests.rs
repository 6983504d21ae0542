//! Tests of a connection's outbound lanes and backpressure, in process.

use super::*;
use crate::events::may_match_events;
use crate::MsgParts;

fn conn(msgs_max: usize, bytes_max: usize) -> Conn {
    let config = BusConfig {
        outbound_msgs_max: msgs_max,
        outbound_bytes_max: bytes_max,
        control_frames_max: 4,
        ..BusConfig::default()
    };
    Conn::new(1, PrincipalId::ADMIN, "1.1".into(), (1, None), &config)
}

fn delivery(priority: Priority, n: u32) -> Delivery {
    let parts = MsgParts {
        subject: "a.b",
        data: &n.to_string(),
        priority,
        from: "2.1",
        headers: None,
        reply_to: None,
    };
    Delivery {
        sid: crate::Sid::new("s"),
        msg: Arc::new(parts.to_msg(None)),
        delivery: 0,
    }
}

fn drained(conn: &Conn) -> Vec<serde_json::Value> {
    let mut buf = Vec::new();
    conn.drain_into(&mut buf, usize::MAX);
    let mut decoder_input = buf.as_slice();
    let mut frames = Vec::new();
    while !decoder_input.is_empty() {
        // Server frames are unmasked; lengths stay under 64 KiB here.
        let (length, header) = match decoder_input[1] {
            126 => (
                u16::from_be_bytes([decoder_input[2], decoder_input[3]]) as usize,
                4,
            ),
            short => (short as usize, 2),
        };
        frames.push(serde_json::from_slice(&decoder_input[header..header + length]).unwrap());
        decoder_input = &decoder_input[header + length..];
    }
    frames
}

#[test]
fn higher_priorities_are_written_first() {
    let conn = conn(100, 1 << 20);
    for (n, priority) in [
        Priority::Low,
        Priority::Normal,
        Priority::Critical,
        Priority::High,
        Priority::Normal,
    ]
    .into_iter()
    .enumerate()
    {
        conn.push(delivery(priority, n as u32), Backpressure::DropOldest);
    }
    let order: Vec<String> = drained(&conn)
        .iter()
        .map(|f| format!("{}:{}", f["priority"].as_str().unwrap(), f["data"]))
        .collect();
    assert_eq!(
        order,
        ["critical:2", "high:3", "normal:1", "normal:4", "low:0"]
    );
}

#[test]
fn drop_oldest_drops_the_least_urgent_first_and_says_so() {
    let conn = conn(3, 1 << 20);
    conn.push(delivery(Priority::High, 0), Backpressure::DropOldest);
    conn.push(delivery(Priority::Low, 1), Backpressure::DropOldest);
    conn.push(delivery(Priority::Normal, 2), Backpressure::DropOldest);
    assert_eq!(
        conn.push(delivery(Priority::Normal, 3), Backpressure::DropOldest),
        Pushed::Dropped(1)
    );
    // Everything queued is more urgent than a low message: it is the one dropped.
    conn.push(delivery(Priority::High, 4), Backpressure::DropOldest);
    assert_eq!(
        conn.push(delivery(Priority::Low, 5), Backpressure::DropOldest),
        Pushed::Dropped(1)
    );
    let frames = drained(&conn);
    assert_eq!(frames[0]["error"]["code"], "slow_consumer");
    assert_eq!(frames[0]["error"]["dropped"], 3);
    let data: Vec<u64> = frames[1..]
        .iter()
        .map(|f| f["data"].as_u64().unwrap())
        .collect();
    assert_eq!(data, [0, 4, 3]);
}

#[test]
fn reject_and_disconnect_policies() {
    let conn = conn(1, 1 << 20);
    assert_eq!(
        conn.push(delivery(Priority::Normal, 0), Backpressure::RejectPublisher),
        Pushed::Queued
    );
    assert_eq!(
        conn.push(
            delivery(Priority::Critical, 1),
            Backpressure::RejectPublisher
        ),
        Pushed::Rejected
    );
    assert_eq!(
        conn.push(delivery(Priority::Normal, 2), Backpressure::Disconnect),
        Pushed::Disconnected
    );
    assert!(conn.is_closing());
    assert_eq!(
        conn.push(delivery(Priority::Normal, 3), Backpressure::DropOldest),
        Pushed::Disconnected
    );
    let mut buf = Vec::new();
    let closing = conn.drain_into(&mut buf, usize::MAX);
    assert!(buf.is_empty(), "a disconnected queue is emptied");
    assert_eq!(closing.unwrap().0, ws::CLOSE_POLICY);
}

#[test]
fn byte_bound_holds_too() {
    let conn = conn(1000, 300);
    let mut queued = 0;
    for n in 0..20 {
        if conn.push(delivery(Priority::Normal, n), Backpressure::RejectPublisher) == Pushed::Queued
        {
            queued += 1;
        }
    }
    let out = conn.out.lock().unwrap();
    assert!(out.bytes <= 300);
    assert_eq!(out.msgs, queued);
    assert!(queued < 20);
}

#[test]
fn event_interest_by_pattern() {
    for (pattern, expected) in [
        ("colony.events.>", true),
        ("colony.events.decision.ledger.reserve", true),
        ("colony.*.alert", true),
        (">", true),
        ("*.>", true),
        ("colony.events", false),
        ("colony.dlq.>", false),
        ("agents.2.1.>", false),
    ] {
        assert_eq!(may_match_events(pattern), expected, "{pattern}");
    }
}
