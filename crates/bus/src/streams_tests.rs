//! Tests of a stream's list of connections to wake, in process.

use std::sync::Arc;

use colony_kernel::{streams::StreamSpec, PrincipalId};

use super::Streams;
use crate::{conn::Conn, BusConfig};

/// A stream `orders` of `orders.>`, with the usual redelivery.
pub(crate) fn orders() -> StreamSpec {
    StreamSpec {
        name: "orders".into(),
        subjects: vec!["orders.>".into()],
        max_age_ms: None,
        max_bytes: None,
        max_msgs: None,
        ack_wait_ms: 30_000,
        max_deliver: 5,
    }
}

fn conn(id: u64, config: &BusConfig) -> Arc<Conn> {
    Arc::new(Conn::new(
        id,
        PrincipalId::ADMIN,
        "1.1".into(),
        (1, None),
        config,
    ))
}

/// A client that opens consumers in a loop on one connection, or connects, opens
/// one and leaves in a loop while nothing is stored, leaves one entry per live
/// connection: the list never grows with the loop.
#[test]
fn a_subscribe_loop_does_not_grow_the_wake_list() {
    let dir = tempfile::tempdir().unwrap();
    let config = BusConfig::default();
    let streams = Streams::open(dir.path(), &config, [orders()]).unwrap();
    let stream = streams.get("orders").unwrap();
    let steady = conn(1, &config);
    for _ in 0..10_000 {
        stream.watch(&steady);
    }
    assert_eq!(stream.watchers(), 1);
    for id in 2..10_000 {
        let passing = conn(id, &config);
        stream.watch(&passing);
        assert_eq!(stream.watchers(), 2);
    }
    stream.watch(&steady);
    assert_eq!(stream.watchers(), 1, "closed connections are forgotten");
    streams.shutdown();
}
