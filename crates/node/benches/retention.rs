//! What a node's history costs it, with and without the retention rule for finished
//! tasks (`retention.toml`). Prints figures; asserts nothing.
//!
//! For each number of completed tasks (each one post, claim and complete, written
//! through the store with group commit as a node writes them): the live tasks left in
//! the kernel's state, its snapshot's size (what a restart loads and what the state
//! holds in memory), the time to load that snapshot alone and a whole restart from it
//! (which also opens and checks the command and decision logs, whose length follows
//! history until the logs are pruned), the same restart once the logs were pruned up
//! to the snapshot (`retention.toml` `[logs]`), and the archive's size on disk.
//!
//! Run: `cargo bench -p colony-node --bench retention` (1 000, 10 000 and 1 000 000 tasks;
//! add `-- quick` for 1 000 and 100 000).

use std::path::Path;
use std::time::Instant;

use colony_kernel::retention::RetentionConfig;
use colony_kernel::tasks::NewTask;
use colony_kernel::{
    Command, CommandBody, CreatePrincipal, Effect, Genesis, PrincipalId, PrincipalKind, Priority,
    State, TaskUpdate,
};
use colony_log::prune::LogRetention;
use colony_log::{snapshot, Store, StoreOptions};

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let sizes: &[u64] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 10_000, 1_000_000]
    };
    println!("== completed tasks: live state, snapshot, restart, archive ==");
    println!(
        "{:>10} {:>18} {:>10} {:>14} {:>8} {:>9} {:>13} {:>13} {:>8}",
        "tasks",
        "retention",
        "live tasks",
        "snapshot bytes",
        "load s",
        "restart s",
        "pruned logs s",
        "archive bytes",
        "write s"
    );
    for &tasks in sizes {
        for (name, rule) in [
            ("keep 10000, 7d", RetentionConfig::defaults()),
            (
                "keep 1000, 7d",
                RetentionConfig {
                    keep_finished: 1_000,
                    ..RetentionConfig::defaults()
                },
            ),
            (
                "none (keeps all)",
                RetentionConfig {
                    keep_finished: u64::MAX,
                    keep_finished_for_ms: u64::MAX / 2,
                },
            ),
        ] {
            run(tasks, name, rule);
        }
    }
}

fn run(tasks: u64, name: &str, rule: RetentionConfig) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let state = write(dir.path(), tasks, rule);
    let written = started.elapsed();
    let live = state.tasks().count();
    let payload = snapshot::encode_state(&state);
    snapshot::write_snapshot(&dir.path().join("snapshots"), state.last_seq, &payload).unwrap();
    drop(state);
    let started = Instant::now();
    let (loaded, _) = snapshot::load_latest(&dir.path().join("snapshots"))
        .unwrap()
        .unwrap();
    let load = started.elapsed();
    drop(loaded);
    let started = Instant::now();
    let (_, restarted, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let restart = started.elapsed();
    assert_eq!(report.replayed, 0, "restarted from the snapshot");
    assert_eq!(restarted.tasks().count(), live);
    // The logs pruned up to the snapshot (retention.toml [logs]), then a restart again.
    let (mut store, state, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let everything_old = LogRetention {
        keep_for_ms: Some(1),
        keep_bytes: None,
        archive: false,
        archive_keep_for_ms: None,
    };
    store
        .prune(
            &everything_old,
            state.last_seq + 1,
            u64::MAX / 2,
            &ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        )
        .unwrap();
    drop((store, state));
    let started = Instant::now();
    let (_, pruned, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let restart_pruned = started.elapsed();
    assert_eq!(pruned.tasks().count(), live);
    println!(
        "{tasks:>10} {name:>18} {live:>10} {:>14} {:>8.3} {:>9.3} {:>13.3} {:>13} {:>8.1}",
        payload.len(),
        load.as_secs_f64(),
        restart.as_secs_f64(),
        restart_pruned.as_secs_f64(),
        dir_bytes(&dir.path().join("archive").join("tasks")),
        written.as_secs_f64()
    );
}

/// Genesis, one worker, then `tasks` tasks posted, claimed and completed, one
/// millisecond apart, synced every 1 024 commands (archiving what they retired).
fn write(dir: &Path, tasks: u64, rule: RetentionConfig) -> State {
    let (mut store, mut state, _) = Store::open(dir, StoreOptions::default()).unwrap();
    let mut retired = Vec::new();
    let mut push = |state: &mut State, store: &mut Store, actor, body| {
        let command = Command::new(
            state.last_seq + 1,
            1_700_000_000_000 + state.last_seq,
            actor,
            "bench",
            body,
        );
        let mut applied = state.apply(&command);
        store.append(&command, &applied, state).unwrap();
        retired.append(&mut applied.retired);
        if state.last_seq.is_multiple_of(1_024) {
            store.sync().unwrap();
            store.archive(&retired).unwrap();
            retired.clear();
        }
        applied
    };
    let mut genesis = Genesis::unlimited_for_benchmarks([1; 32]);
    genesis.retention = rule;
    push(
        &mut state,
        &mut store,
        PrincipalId::SYSTEM,
        CommandBody::Genesis(Box::new(genesis)),
    );
    let created = push(
        &mut state,
        &mut store,
        PrincipalId::ADMIN,
        CommandBody::CreatePrincipal(CreatePrincipal::new("w", PrincipalKind::Ai, [2; 32])),
    );
    let Effect::PrincipalCreated { id: worker, .. } = created.primary().effect else {
        panic!("{:?}", created.primary())
    };
    for n in 0..tasks {
        let task = NewTask {
            title: format!("task {n}"),
            description: "summarize one document".into(),
            priority: Priority::Normal,
            capabilities: vec!["writing".into()],
            depends_on: Vec::new(),
            budget_micro_usd: None,
            max_attempts: None,
            attempt_timeout_ms: None,
        };
        push(
            &mut state,
            &mut store,
            PrincipalId::ADMIN,
            CommandBody::PostTask(Box::new(task)),
        );
        let claimed = push(
            &mut state,
            &mut store,
            worker,
            CommandBody::ClaimTask {
                capabilities: vec!["writing".into()],
                lease_ms: None,
                worker: None,
            },
        );
        let Effect::TaskClaimed { address, token, .. } = &claimed.primary().effect else {
            panic!("{:?}", claimed.primary())
        };
        push(
            &mut state,
            &mut store,
            worker,
            CommandBody::UpdateTask {
                address: address.clone(),
                token: *token,
                update: TaskUpdate::Complete("{\"summary\":\"done\"}".into()),
            },
        );
    }
    store.sync().unwrap();
    store.archive(&retired).unwrap();
    state
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
