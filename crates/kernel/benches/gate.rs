//! In-process kernel throughput, on one core: pure gate decisions, and whole
//! commands applied (reserve + commit pairs). Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p colony-kernel --bench gate` (`COLONY_BENCH_ONLY=apply`, `claims`
//! or `decisions` runs one part, as for counting instructions under callgrind).

use std::hint::black_box;
use std::time::Instant;

use colony_kernel::{
    Command, CommandBody, CreatePrincipal, Effect, Genesis, Limit, LimitSpec, OnSoft, PrincipalId,
    PrincipalKind, Resource, State,
};

fn main() {
    let only = std::env::var("COLONY_BENCH_ONLY").ok();
    let wanted = |part: &str| only.as_deref().is_none_or(|only| only == part);
    if wanted("decisions") {
        gate_decisions();
    }
    if wanted("apply") {
        applied_commands();
    }
    if wanted("claims") {
        claims();
    }
}

/// Claims by 16 workers in turn over 200 000 posted tasks; every claim is checked
/// to hand out a task no one else got.
fn claims() {
    use colony_kernel::tasks::NewTask;
    let (mut state, _) = bench_state();
    let tasks = 200_000u64;
    let workers: Vec<PrincipalId> = (0..16u8)
        .map(|index| {
            let seq = state.last_seq + 1;
            let create = CreatePrincipal::new(
                format!("worker {index}"),
                PrincipalKind::Ai,
                [100 + index; 32],
            );
            let applied = state.apply(&Command::new(
                seq,
                1_000,
                PrincipalId::ADMIN,
                "bench",
                CommandBody::CreatePrincipal(create),
            ));
            let Effect::PrincipalCreated { id, .. } = applied.primary().effect else {
                panic!("bench worker")
            };
            id
        })
        .collect();
    for index in 0..tasks {
        let task = NewTask {
            title: format!("task {index}"),
            description: String::new(),
            priority: [
                colony_kernel::Priority::Low,
                colony_kernel::Priority::Normal,
                colony_kernel::Priority::High,
            ][(index % 3) as usize],
            capabilities: Vec::new(),
            depends_on: Vec::new(),
            budget_micro_usd: None,
            max_attempts: None,
            attempt_timeout_ms: None,
        };
        let seq = state.last_seq + 1;
        state.apply(&Command::new(
            seq,
            2_000,
            PrincipalId::ADMIN,
            "bench",
            CommandBody::PostTask(Box::new(task)),
        ));
    }
    let mut claimed = std::collections::BTreeSet::new();
    let started = Instant::now();
    let mut claims = 0u64;
    'outer: loop {
        for worker in &workers {
            let seq = state.last_seq + 1;
            let applied = state.apply(&Command::new(
                seq,
                3_000,
                *worker,
                "",
                CommandBody::ClaimTask {
                    capabilities: Vec::new(),
                    lease_ms: None,
                    worker: None,
                },
            ));
            match &applied.primary().effect {
                Effect::TaskClaimed { address, .. } => {
                    assert!(claimed.insert(address.clone()), "double claim of {address}");
                    claims += 1;
                }
                _ => break 'outer,
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(claims, tasks);
    println!(
        "kernel claims (16 workers, {tasks} tasks, one core, no I/O): {:.0} claims/s, 0 double claims",
        claims as f64 / seconds
    );
}

fn gate_decisions() {
    let spec = LimitSpec {
        name: "concurrent_api_requests".into(),
        unit: "requests".into(),
        description: String::new(),
        soft: Some(512),
        hard: Some(1024),
        on_soft: OnSoft::Warn,
        window_ms: None,
        queue_max: 0,
        brake_floor: 0,
    };
    let mut limit = Limit::new(spec, "0.1".into(), 0, "bench".into());
    let rounds = 50_000_000u64;
    let started = Instant::now();
    let mut allowed = 0u64;
    for i in 0..rounds {
        limit.usage = i & 1023;
        let gate = black_box(black_box(&limit).gate(black_box(1)));
        if matches!(gate, colony_kernel::Gate::Allow) {
            allowed += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "kernel gate decisions (Limit::gate, one core): {:.1} M decisions/s ({rounds} in {seconds:.2} s; {allowed} allowed)",
        rounds as f64 / seconds / 1e6
    );
}

/// A state with one AI principal whose quotas are unlimited.
pub fn bench_state() -> (State, PrincipalId) {
    let genesis = Genesis::unlimited_for_benchmarks([1; 32]);
    let mut state = State::new();
    state.apply(&Command::new(
        1,
        1_000,
        PrincipalId::SYSTEM,
        "bench",
        CommandBody::Genesis(Box::new(genesis)),
    ));
    let applied = state.apply(&Command::new(
        2,
        1_000,
        PrincipalId::ADMIN,
        "bench",
        CommandBody::CreatePrincipal(CreatePrincipal::new("bench", PrincipalKind::Ai, [2; 32])),
    ));
    let Effect::PrincipalCreated { id, .. } = applied.primary().effect else {
        panic!("bench principal")
    };
    (state, id)
}

fn applied_commands() {
    let (mut state, agent) = bench_state();
    let pairs = 1_000_000u64;
    let justification = "bench: one LLM call".to_string();
    let started = Instant::now();
    for i in 0..pairs {
        let seq = state.last_seq + 1;
        let at_ms = 2_000 + i / 100;
        let reserve = Command::new(
            seq,
            at_ms,
            agent,
            justification.clone(),
            CommandBody::Reserve {
                resource: Resource::LlmBudgetUsd,
                amount: 1_000,
                ttl_ms: None,
            },
        );
        let applied = state.apply(&reserve);
        black_box(&applied);
        let commit = Command::new(
            seq + 1,
            at_ms,
            agent,
            justification.clone(),
            CommandBody::Commit {
                reservation: seq,
                actual: 700,
            },
        );
        black_box(state.apply(&commit));
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "kernel apply (reserve+commit commands, one core, no I/O): {:.2} M commands/s ({} commands in {seconds:.2} s)",
        2.0 * pairs as f64 / seconds / 1e6,
        2 * pairs
    );
}
