use std::sync::atomic::Ordering;
use std::sync::Arc;

use colony_kernel::{Genesis, PrincipalId, Reason, Resource};

use super::*;
use crate::test_kernel::kernel;

/// The io_ops quota of every principal in `Genesis::for_tests`.
const QUOTA: u64 = 10_000;

fn insufficient(spent: Result<(), Spent>) -> Resource {
    match spent {
        Err(Spent::Denied(Reason::InsufficientResource { resource, .. })) => resource,
        other => panic!("expected a refusal for want of a resource, got {other:?}"),
    }
}

/// Two sessions of one principal spend from their credits in turn: together they
/// pass exactly the quota, the next publish of each is refused, and once settled the
/// meter holds the whole spending for the flush, nothing reserved, nothing left.
#[test]
fn credits_spend_exactly_the_allowance_and_settle_what_was_spent() {
    let meters = Meters::new(kernel(Genesis::for_tests([1; 32])));
    let meter = meters.meter(PrincipalId::ADMIN);
    let mut credits = [Credit::default(), Credit::default()];
    let mut passed = 0;
    let mut refused = [false, false];
    let mut turn = 0;
    while refused != [true, true] {
        let which = turn % 2;
        turn += 1;
        if refused[which] {
            continue;
        }
        match meters.spend(&meter, &mut credits[which], "1.1", 10) {
            Ok(()) => passed += 1,
            Err(spent) => {
                assert_eq!(insufficient(Err(spent)), Resource::IoOps);
                refused[which] = true;
            }
        }
        assert!(turn < 3 * QUOTA as usize, "the spending ends");
    }
    assert_eq!(passed, QUOTA);
    let metrics = BusMetrics::default();
    for credit in &mut credits {
        meters.settle(&meter, credit, &metrics);
    }
    {
        let io_ops = meter.io_ops.lock().unwrap();
        assert_eq!(
            (io_ops.left, io_ops.reserved, io_ops.unflushed),
            (0, 0, QUOTA)
        );
    }
    let usage = meters.flush();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].io_ops, usage[0].data_bytes), (QUOTA, 10 * QUOTA));
}

/// Credit held across a refresh stays out of the allowance the refresh computes,
/// and settling gives back only what was not spent.
#[test]
fn a_refresh_counts_the_credit_held_and_settling_gives_back_the_rest() {
    let meters = Meters::new(kernel(Genesis::for_tests([1; 32])));
    let meter = meters.meter(PrincipalId::ADMIN);
    let mut credit = Credit::default();
    for _ in 0..10 {
        meters.spend(&meter, &mut credit, "1.1", 100).unwrap();
    }
    let reserved = credit.ops + credit.spent_ops;
    assert_eq!(reserved, CREDIT_OPS_MAX, "a share far from the limit");
    meters.refresh(colony_pipeline::sequencer::now_ms());
    assert_eq!(meter.io_ops.lock().unwrap().left, QUOTA - reserved);
    let metrics = BusMetrics::default();
    meters.settle(&meter, &mut credit, &metrics);
    let io_ops = meter.io_ops.lock().unwrap();
    assert_eq!(
        (io_ops.left, io_ops.reserved, io_ops.unflushed),
        (QUOTA - 10, 0, 10)
    );
    assert_eq!(meters.data.lock().unwrap().unflushed, 1_000);
    assert_eq!(*meter.data_unflushed.lock().unwrap(), 1_000);
}

/// Near the system's data limit the credit is no larger than the message: the
/// window passes exactly what it holds, and says so when it is full.
#[test]
fn the_data_window_passes_exactly_what_it_holds() {
    let mut genesis = Genesis::for_tests([1; 32]);
    for limit in &mut genesis.limits {
        if limit.name == "data_creation_bytes" {
            limit.hard = Some(1_000);
        }
    }
    let meters = Meters::new(kernel(genesis));
    let meter = meters.meter(PrincipalId::ADMIN);
    let mut credit = Credit::default();
    for _ in 0..10 {
        meters.spend(&meter, &mut credit, "1.1", 100).unwrap();
    }
    match meters.spend(&meter, &mut credit, "1.1", 100) {
        Err(Spent::Denied(Reason::HardLimit { limit, .. })) => {
            assert_eq!(limit, "data_creation_bytes")
        }
        other => panic!("the data window is full: {other:?}"),
    }
    let metrics = BusMetrics::default();
    meters.settle(&meter, &mut credit, &metrics);
    let data = meters.data.lock().unwrap();
    assert_eq!((data.left, data.reserved, data.unflushed), (0, 0, 1_000));
}

/// The tallies reach `/metrics` at the batch's end, not before.
#[test]
fn the_counters_are_added_once_a_batch() {
    let meters = Meters::new(kernel(Genesis::for_tests([1; 32])));
    let meter = meters.meter(PrincipalId::ADMIN);
    let metrics = BusMetrics::default();
    let mut credit = Credit::default();
    for _ in 0..3 {
        meters.spend(&meter, &mut credit, "1.1", 5).unwrap();
        credit.count(
            5,
            &Routed {
                delivered: 4,
                dropped: 1,
                ..Routed::default()
            },
        );
    }
    assert_eq!(metrics.published.load(Ordering::Relaxed), 0);
    meters.settle(&meter, &mut credit, &metrics);
    assert_eq!(metrics.published.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.published_bytes.load(Ordering::Relaxed), 15);
    assert_eq!(metrics.delivered.load(Ordering::Relaxed), 12);
    assert_eq!(metrics.dropped.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.rejected.load(Ordering::Relaxed), 0);
}

/// A refresh reads the kernel's state a chunk of meters at a time: every meter is
/// refreshed, whichever chunk it falls in, and the allowances follow the balances.
#[test]
fn a_refresh_in_chunks_reaches_every_meter() {
    let state = kernel(Genesis::for_tests([1; 32]));
    let meters = Meters::new(Arc::clone(&state));
    let admin = meters.meter(PrincipalId::ADMIN);
    let others: Vec<Arc<Meter>> = (0..3 * colony_pipeline::sequencer::ENTRIES_PER_STATE_READ
        as u64)
        .map(|n| meters.meter(PrincipalId(100_000 + n)))
        .collect();
    assert_eq!(admin.io_ops.lock().unwrap().left, QUOTA);
    // Allowances a refresh must put right, in every chunk.
    for meter in &others {
        meter.io_ops.lock().unwrap().left = 0;
    }
    // The whole quota charged by the kernel: the next refresh leaves nothing.
    crate::test_kernel::logged(
        &state,
        colony_kernel::CommandBody::ChargeEdge {
            usage: vec![colony_kernel::streams::EdgeUsage {
                principal: PrincipalId::ADMIN,
                io_ops: QUOTA,
                data_bytes: 0,
            }],
        },
    );
    meters.refresh(colony_pipeline::sequencer::now_ms());
    assert_eq!(admin.io_ops.lock().unwrap().left, 0);
    // Principals the kernel does not know have no quota to hold them: each was
    // refreshed.
    assert!(others
        .iter()
        .all(|meter| meter.io_ops.lock().unwrap().left == u64::MAX));
}
