//! Time from a worker's death to its task being claimed by another, over many
//! trials, on the kernel with a simulated clock: the node logs a tick when a worker's
//! deadline comes, and the other worker polls for work every 100 ms. Also counts
//! false positives: a slow worker that heartbeats just inside its timeout.
//!
//! Run: `cargo bench -p colony-kernel --bench failover`

use colony_kernel::tasks::{NewTask, TaskConfig};
use colony_kernel::workers::NewWorker;
use colony_kernel::{
    Command, CommandBody, CreatePrincipal, Effect, Genesis, PrincipalId, PrincipalKind, Priority,
    State,
};

struct Sim {
    state: State,
}

impl Sim {
    fn run(&mut self, at_ms: u64, actor: PrincipalId, body: CommandBody) -> colony_kernel::Applied {
        let at_ms = at_ms.max(self.state.now_ms);
        let seq = self.state.last_seq + 1;
        self.state
            .apply(&Command::new(seq, at_ms, actor, "failover bench", body))
    }

    /// Logs the ticks the node would log up to `until_ms`.
    fn ticks_until(&mut self, until_ms: u64) {
        while let Some(due) = self.state.next_due_ms().filter(|due| *due <= until_ms) {
            self.run(due, PrincipalId::SYSTEM, CommandBody::Tick);
        }
    }
}

fn main() {
    const POLL_MS: u64 = 100;
    let config = TaskConfig::defaults();
    let (heartbeat_ms, timeout_ms) = (config.worker_heartbeat_ms, config.worker_timeout_ms);
    let mut sim = Sim {
        state: State::new(),
    };
    sim.run(
        0,
        PrincipalId::SYSTEM,
        CommandBody::Genesis(Box::new(Genesis::unlimited_for_benchmarks([1; 32]))),
    );
    let mut principals = Vec::new();
    for index in 0..3u8 {
        let applied = sim.run(
            0,
            PrincipalId::ADMIN,
            CommandBody::CreatePrincipal(CreatePrincipal::new(
                format!("w{index}"),
                PrincipalKind::Ai,
                [10 + index; 32],
            )),
        );
        let Effect::PrincipalCreated { id, .. } = applied.primary().effect else {
            panic!()
        };
        principals.push(id);
    }
    let (dying, rescuer, slow) = (principals[0], principals[1], principals[2]);
    let register = |sim: &mut Sim, at: u64, who: PrincipalId| -> u64 {
        let applied = sim.run(
            at,
            who,
            CommandBody::RegisterWorker(Box::new(NewWorker {
                capabilities: vec![],
                model: None,
                profile: None,
            })),
        );
        let Effect::WorkerRegistered { worker, .. } = applied.primary().effect else {
            panic!("{:?}", applied.primary().reason)
        };
        worker
    };
    let slow_session = register(&mut sim, 0, slow);
    let rescuer_session = register(&mut sim, 0, rescuer);
    let mut rng = 0x5eed_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut now = 1_000;
    let mut samples = Vec::new();
    let mut false_positives = 0;
    let trials = 10_000;
    for trial in 0..trials {
        let session = register(&mut sim, now, dying);
        let task = NewTask {
            title: format!("t{trial}"),
            description: String::new(),
            priority: Priority::Normal,
            capabilities: vec![],
            depends_on: vec![],
            budget_micro_usd: None,
            max_attempts: None,
            attempt_timeout_ms: None,
        };
        sim.run(
            now,
            PrincipalId::ADMIN,
            CommandBody::PostTask(Box::new(task)),
        );
        let claimed = sim.run(
            now,
            dying,
            CommandBody::ClaimTask {
                capabilities: vec![],
                lease_ms: Some(600_000),
                worker: Some(session),
            },
        );
        let Effect::TaskClaimed { address, .. } = claimed.primary().effect.clone() else {
            panic!()
        };
        // Heartbeats every interval, then death at a random moment between two.
        let beats = 1 + next() % 5;
        for _ in 0..beats {
            now += heartbeat_ms;
            sim.ticks_until(now);
            sim.run(now, dying, CommandBody::WorkerHeartbeat { worker: session });
            sim.run(
                now,
                slow,
                CommandBody::WorkerHeartbeat {
                    worker: slow_session,
                },
            );
            sim.run(
                now,
                rescuer,
                CommandBody::WorkerHeartbeat {
                    worker: rescuer_session,
                },
            );
        }
        let death = now + next() % heartbeat_ms;
        // The rescuer polls every POLL_MS; the slow worker beats just inside its timeout.
        let mut poll = death - death % POLL_MS + POLL_MS;
        let rescued_at = loop {
            // The slow worker beats 1 ms before its deadline, whenever that falls.
            let slow_deadline = sim.state.worker(slow_session).unwrap().deadline_ms;
            if slow_deadline <= poll {
                sim.ticks_until(slow_deadline - 1);
                sim.run(
                    slow_deadline - 1,
                    slow,
                    CommandBody::WorkerHeartbeat {
                        worker: slow_session,
                    },
                );
            }
            sim.ticks_until(poll);
            if sim.state.worker(rescuer_session).unwrap().deadline_ms <= poll + heartbeat_ms {
                sim.run(
                    poll,
                    rescuer,
                    CommandBody::WorkerHeartbeat {
                        worker: rescuer_session,
                    },
                );
            }
            let applied = sim.run(
                poll,
                rescuer,
                CommandBody::ClaimTask {
                    capabilities: vec![],
                    lease_ms: Some(600_000),
                    worker: Some(rescuer_session),
                },
            );
            if let Effect::TaskClaimed {
                address: got,
                token,
                ..
            } = &applied.primary().effect
            {
                assert_eq!(got, &address);
                sim.run(
                    poll,
                    rescuer,
                    CommandBody::UpdateTask {
                        address: got.clone(),
                        token: *token,
                        update: colony_kernel::TaskUpdate::Complete("ok".into()),
                    },
                );
                break poll;
            }
            poll += POLL_MS;
            assert!(poll < death + 10 * timeout_ms, "never reassigned");
        };
        samples.push(rescued_at - death);
        if sim.state.worker(slow_session).unwrap().state
            != colony_kernel::workers::WorkerState::Active
        {
            false_positives += 1;
        }
        now = rescued_at + 1;
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    println!(
        "death to reassignment over {trials} trials (heartbeat {heartbeat_ms} ms, timeout {timeout_ms} ms, claims polled every {POLL_MS} ms):"
    );
    for (name, p) in [
        ("min", 0.0),
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("max", 1.0),
    ] {
        let ms = at(p);
        println!(
            "  {name}: {ms:>5} ms = {:.2} timeouts",
            ms as f64 / timeout_ms as f64
        );
    }
    println!("false positives (a worker heartbeating just inside its timeout declared lost): {false_positives}");
}
