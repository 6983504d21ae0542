//! A seeded simulation that attacks the kernel: random and adversarial command
//! streams (random principals and depths, amounts from zero to absurd, brakes and
//! raises, decompositions, stale tokens, clock jumps) with
//! [`State::check_invariants`] asserted after every step, and replay compared at the
//! end. A failing seed is printed; `COLONY_SIM_SEED=N cargo test -p colony-kernel
//! --test it simulation` replays exactly that seed. `COLONY_SIM_SEEDS` sets how many
//! seeds run (default 2 000).

use colony_kernel::governance::*;
use colony_kernel::grants::GrantWhat;
use colony_kernel::tasks::*;
use colony_kernel::workers::NewWorker;
use colony_kernel::*;

use crate::common;
use common::ADMIN_TOKEN;

const STEPS: usize = 250;

/// SplitMix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An amount: usually small, sometimes zero, sometimes absurd.
    fn amount(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX - self.below(3),
            2 => self.below(1 << 53),
            _ => self.below(5_000),
        }
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize].clone())
    }
}

/// Small limits so that they are reached, queued and braked often.
fn genesis() -> Genesis {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    for limit in &mut genesis.limits {
        match limit.name.as_str() {
            "ai_accounts" => {
                (limit.soft, limit.hard, limit.on_soft) = (Some(6), Some(12), OnSoft::Queue);
                limit.queue_max = 10;
                limit.brake_floor = 1;
            }
            "active_workers" => {
                (limit.soft, limit.hard, limit.on_soft) = (Some(2), Some(5), OnSoft::Queue);
                limit.queue_max = 10;
            }
            "task_queue_depth" => (limit.soft, limit.hard) = (Some(20), Some(40)),
            "data_creation_bytes" => (limit.soft, limit.hard) = (Some(20_000), Some(60_000)),
            _ => {}
        }
    }
    // Low thresholds, so that quarantines and releases happen within a stream.
    genesis.anomaly = Some(colony_kernel::anomaly::AnomalyConfig {
        window_ms: 10_000,
        warmup_windows: 2,
        factor: 3,
        bounds: [(40, 12), (25, 8), (50_000, 10_000), (8, 3), (1_000, 100)]
            .map(|(ceiling, min)| colony_kernel::anomaly::SignalBound { ceiling, min }),
    });
    genesis.governance.brake_ttl_ms = Some(30_000);
    genesis.governance.review_period_ms = 20_000;
    genesis.governance.brakes_per_hour_max = 4;
    genesis.governance.open_proposals_per_principal_max = 3;
    // Finished trees leave often: by count within a stream, by age within minutes.
    genesis.retention = colony_kernel::retention::RetentionConfig {
        keep_finished: 6,
        keep_finished_for_ms: 120_000,
    };
    genesis
}

struct World {
    state: State,
    commands: Vec<Command>,
    now_ms: u64,
    principals: Vec<PrincipalId>,
    reservations: Vec<ReservationId>,
    /// Claimed tasks with their tokens (some go stale: that is part of the attack).
    claims: Vec<(PrincipalId, TaskAddress, u64)>,
    workers: Vec<(PrincipalId, u64)>,
    proposals: Vec<u64>,
    next_token: u64,
    /// Tokens made: `(principal, id)`.
    tokens: Vec<(PrincipalId, u64)>,
    grants: Vec<u64>,
}

impl World {
    fn new() -> World {
        let mut world = World {
            state: State::new(),
            commands: Vec::new(),
            now_ms: 1_000_000,
            principals: vec![PrincipalId::ADMIN],
            reservations: Vec::new(),
            claims: Vec::new(),
            workers: Vec::new(),
            proposals: Vec::new(),
            next_token: 100,
            tokens: Vec::new(),
            grants: Vec::new(),
        };
        let applied = world.run(
            PrincipalId::SYSTEM,
            CommandBody::Genesis(Box::new(genesis())),
        );
        assert!(applied.primary().decision.is_allowed());
        world
    }

    fn run(&mut self, actor: PrincipalId, body: CommandBody) -> Applied {
        let command = Command::new(
            self.state.last_seq + 1,
            self.now_ms,
            actor,
            "simulated",
            body,
        );
        self.commands.push(command.clone());
        let applied = self.state.apply(&command);
        // Every effect reads back from its JSON as it was (clients of the API read
        // them as `Effect`).
        for event in &applied.events {
            let json = serde_json::to_string(&event.effect).expect("an effect serializes");
            let back: Effect = serde_json::from_str(&json).expect("an effect reads back");
            assert_eq!(back, event.effect, "{json}");
        }
        applied
    }

    fn actor(&mut self, rng: &mut Rng) -> PrincipalId {
        self.principals.clone()[rng.below(self.principals.len() as u64) as usize]
    }

    fn subtasks(rng: &mut Rng) -> Vec<NewTask> {
        let count = match rng.below(8) {
            0 => 0,
            1 => SUBTASKS_MAX as u64 + 1,
            _ => 1 + rng.below(5),
        };
        (0..count)
            .map(|i| {
                let mut task = task(rng);
                if i > 0 && rng.chance(30) {
                    task.depends_on = vec![rng.below(i + 2).to_string()];
                }
                task
            })
            .collect()
    }

    /// One random command, and what it teaches the world.
    fn step(&mut self, rng: &mut Rng) {
        let actor = self.actor(rng);
        match rng.below(27) {
            0 | 1 => {
                self.next_token += 1;
                let kind = [PrincipalKind::Ai, PrincipalKind::Human, PrincipalKind::Ai]
                    [rng.below(3) as usize];
                let mut request = CreatePrincipal::new(
                    format!("p{}", self.next_token),
                    kind,
                    token(self.next_token),
                );
                // Deep chains: often the parent is the newest principal.
                if rng.chance(60) {
                    request.parent = self.principals.last().copied();
                }
                let creator = if rng.chance(80) {
                    PrincipalId::ADMIN
                } else {
                    actor
                };
                // Spawning: a member creating a child under itself (or trying more).
                if creator != PrincipalId::ADMIN && rng.chance(60) {
                    request.parent = Some(creator);
                    request.scopes = vec!["llm".into(), "tasks".into()];
                }
                let applied = self.run(creator, CommandBody::CreatePrincipal(request));
                for event in &applied.events {
                    if let Effect::PrincipalCreated { id, .. } = event.effect {
                        self.principals.push(id);
                    }
                }
            }
            2 => {
                if let Some(target) = rng.pick(&self.principals) {
                    let body = if rng.chance(50) {
                        CommandBody::RemovePrincipal { principal: target }
                    } else {
                        CommandBody::ReleaseQuarantine { principal: target }
                    };
                    let who = if rng.chance(70) {
                        PrincipalId::ADMIN
                    } else {
                        actor
                    };
                    self.run(who, body);
                }
            }
            3 | 4 => {
                let resource = Resource::ALL[rng.below(Resource::ALL.len() as u64) as usize];
                let ttl_ms = rng.chance(30).then(|| rng.amount());
                let applied = self.run(
                    actor,
                    CommandBody::Reserve {
                        resource,
                        amount: rng.amount(),
                        ttl_ms,
                    },
                );
                if let Effect::Reserved { reservation, .. } = applied.primary().effect {
                    self.reservations.push(reservation);
                }
            }
            5 => {
                if let Some(reservation) = rng.pick(&self.reservations) {
                    let owner = self
                        .state
                        .reservation(reservation)
                        .map_or(actor, |r| r.principal);
                    let who = if rng.chance(85) { owner } else { actor };
                    let body = match rng.below(10) {
                        0..=4 => CommandBody::Commit {
                            reservation,
                            actual: rng.amount(),
                        },
                        5..=7 => CommandBody::Settle {
                            reservation,
                            actual: rng.amount(),
                            task: self
                                .claims
                                .last()
                                .map(|(_, address, token)| (address.clone(), *token)),
                        },
                        _ => CommandBody::Release { reservation },
                    };
                    self.run(who, body);
                }
            }
            6 => {
                if let Some(to) = rng.pick(&self.principals) {
                    let resource = Resource::ALL[rng.below(Resource::ALL.len() as u64) as usize];
                    let parent = self
                        .state
                        .principal(to)
                        .and_then(|p| p.parent)
                        .unwrap_or(actor);
                    self.run(
                        parent,
                        CommandBody::Grant {
                            to,
                            resource,
                            amount: rng.amount(),
                        },
                    );
                }
                self.run(
                    actor,
                    CommandBody::Free {
                        resource: Resource::DiskBytes,
                        amount: rng.amount(),
                    },
                );
            }
            7 | 8 => {
                let mut new = task(rng);
                if rng.chance(40) {
                    new.budget_micro_usd = Some(rng.amount());
                }
                if rng.chance(20) {
                    if let Some(other) = self.state.tasks().last() {
                        new.depends_on = vec![other.address.to_string()];
                    }
                }
                self.run(actor, CommandBody::PostTask(Box::new(new)));
            }
            9 | 10 => {
                let worker = self
                    .workers
                    .iter()
                    .find(|(p, _)| *p == actor)
                    .map(|(_, w)| *w)
                    .filter(|_| rng.chance(50));
                let applied = self.run(
                    actor,
                    CommandBody::ClaimTask {
                        capabilities: vec![],
                        lease_ms: rng.chance(20).then(|| rng.amount()),
                        worker,
                    },
                );
                if let Effect::TaskClaimed { address, token, .. } = &applied.primary().effect {
                    self.claims.push((actor, address.clone(), *token));
                }
            }
            11..=13 => {
                // Mostly the newest claim (likely still held), sometimes any (stale).
                let claim = if rng.chance(60) {
                    self.claims.last().cloned()
                } else {
                    rng.pick(&self.claims)
                };
                if let Some((_, address, token)) = claim.clone().filter(|_| rng.chance(15)) {
                    // The node renews leases it heard heartbeat (some stale, some
                    // heard a while ago).
                    let heard = LeaseHeard {
                        address,
                        token,
                        at_ms: self.now_ms.saturating_sub(rng.below(60_000)),
                    };
                    self.run(
                        PrincipalId::SYSTEM,
                        CommandBody::RenewLeases { heard: vec![heard] },
                    );
                } else if let Some((holder, address, token)) = claim {
                    let who = if rng.chance(90) { holder } else { actor };
                    let token = if rng.chance(90) { token } else { token + 1 };
                    let update = match rng.below(9) {
                        0 => TaskUpdate::Heartbeat,
                        1 => TaskUpdate::Checkpoint("c".repeat(rng.below(3_000) as usize)),
                        2 | 3 => TaskUpdate::Complete("r".repeat(rng.below(500) as usize)),
                        4 => TaskUpdate::Fail("it broke".into()),
                        5 => TaskUpdate::Release,
                        6 => TaskUpdate::Spend(rng.amount()),
                        _ => TaskUpdate::Decompose {
                            subtasks: {
                                let mut subtasks = World::subtasks(rng);
                                for subtask in &mut subtasks {
                                    if rng.chance(30) {
                                        subtask.budget_micro_usd = Some(rng.below(2_000));
                                    }
                                }
                                subtasks
                            },
                            on_child_death: if rng.chance(50) {
                                ChildDeathPolicy::Fail
                            } else {
                                ChildDeathPolicy::Redecompose
                            },
                        },
                    };
                    self.run(
                        who,
                        CommandBody::UpdateTask {
                            address,
                            token,
                            update,
                        },
                    );
                }
            }
            14 => {
                let applied = self.run(
                    actor,
                    CommandBody::RegisterWorker(Box::new(NewWorker {
                        capabilities: vec![],
                        model: None,
                        profile: None,
                    })),
                );
                for event in &applied.events {
                    if let Effect::WorkerRegistered { worker, .. } = event.effect {
                        self.workers.push((actor, worker));
                    }
                }
            }
            15 => {
                if let Some((owner, worker)) = rng.pick(&self.workers) {
                    let body = if rng.chance(70) {
                        CommandBody::WorkerHeartbeat { worker }
                    } else {
                        CommandBody::LeaveWorker { worker }
                    };
                    self.run(owner, body);
                }
            }
            16 | 17 => {
                let limit = [
                    "ai_accounts",
                    "active_workers",
                    "task_queue_depth",
                    "data_creation_bytes",
                ][rng.below(4) as usize];
                let value = |rng: &mut Rng| match rng.below(5) {
                    0 => Change::Keep,
                    1 => Change::Unlimited,
                    _ => Change::Set(rng.below(60)),
                };
                // One in four asks for a new retention rule (in range or not).
                let target = if rng.below(4) == 0 {
                    ProposalTarget::Retention(colony_kernel::retention::RetentionConfig {
                        keep_finished: rng.below(20),
                        keep_finished_for_ms: [0, 500, 5_000, 60_000][rng.below(4) as usize],
                    })
                } else {
                    ProposalTarget::Limit {
                        limit: limit.into(),
                        soft: value(rng),
                        hard: value(rng),
                    }
                };
                let applied = self.run(
                    actor,
                    CommandBody::Propose {
                        target,
                        brake_only: rng.chance(50),
                    },
                );
                match applied.primary().effect {
                    Effect::ProposalOpened { proposal, .. }
                    | Effect::LimitChanged { proposal, .. } => self.proposals.push(proposal),
                    _ => {}
                }
            }
            18 => {
                if let Some(proposal) = rng.pick(&self.proposals) {
                    let choice = [
                        VoteChoice::Approve,
                        VoteChoice::Approve,
                        VoteChoice::Reject,
                        VoteChoice::Abstain,
                        VoteChoice::Veto,
                    ][rng.below(5) as usize];
                    // Sock puppets: often the voter's whole lineage (everything
                    // its root spawned) votes the same way right after it.
                    let mut voters = vec![actor];
                    let mut choice = choice;
                    if rng.chance(15) {
                        // A drive for consensus: everyone approves (each lineage's
                        // second voice refused), so that proposals do pass.
                        voters = self.principals.clone();
                        choice = VoteChoice::Approve;
                    } else if rng.chance(50) {
                        let root = self.state.lineage_root(actor);
                        voters.extend(
                            self.principals
                                .iter()
                                .copied()
                                .filter(|p| *p != actor && self.state.lineage_root(*p) == root),
                        );
                    }
                    for voter in voters {
                        self.run(voter, CommandBody::Vote { proposal, choice });
                    }
                }
            }
            19 => {
                // Tokens: made with scopes good and bad, revoked, by owners and others.
                let owner = if rng.chance(70) {
                    actor
                } else {
                    self.actor(rng)
                };
                if rng.chance(60) || self.tokens.is_empty() {
                    self.next_token += 1;
                    let scopes = match rng.below(5) {
                        0 => vec!["*".to_string()],
                        1 => vec!["admin".to_string()],
                        2 => vec!["bus:a.>".to_string(), "task:0.7.1.00001".to_string()],
                        3 => vec![],
                        _ => vec!["read".to_string(), "llm".to_string()],
                    };
                    let body = CommandBody::CreateToken(Box::new(NewToken {
                        principal: owner,
                        name: "t".repeat(1 + rng.below(70) as usize),
                        scopes,
                        ttl_ms: rng.chance(50).then(|| rng.below(120_000)),
                        hash: token(self.next_token),
                    }));
                    let applied = self.run(actor, body);
                    if let Effect::TokenCreated { token, .. } = applied.primary().effect {
                        self.tokens.push((owner, token));
                    }
                } else if let Some((principal, token)) = rng.pick(&self.tokens) {
                    self.run(actor, CommandBody::RevokeToken { principal, token });
                }
            }
            20 => {
                // Grants: asked for (scopes, roles, quotas of every size) and decided.
                if rng.chance(50) || self.grants.is_empty() {
                    let what = match rng.below(5) {
                        4 => GrantWhat::ToolCall {
                            tool: "files__delete".into(),
                            arguments_sha256: if rng.chance(90) {
                                "ab".repeat(32)
                            } else {
                                "nope".into()
                            },
                        },
                        0 => GrantWhat::Role {
                            role: [Role::Admin, Role::Member, Role::Observer]
                                [rng.below(3) as usize],
                        },
                        1 => GrantWhat::Scope {
                            token: rng.pick(&self.tokens).map_or(1, |(_, t)| t),
                            scope: "ledger".into(),
                        },
                        _ => GrantWhat::Quota {
                            resource: Resource::ALL[rng.below(Resource::ALL.len() as u64) as usize],
                            amount: rng.amount(),
                        },
                    };
                    let ttl_ms = match rng.below(4) {
                        0 => 0,
                        1 => u64::MAX,
                        _ => rng.below(600_000),
                    };
                    let applied = self.run(actor, CommandBody::RequestGrant { what, ttl_ms });
                    if applied.primary().decision.is_allowed() {
                        self.grants.push(self.state.last_seq);
                    }
                } else if let Some(grant) = rng.pick(&self.grants) {
                    let approver = if rng.chance(50) {
                        PrincipalId::ADMIN
                    } else {
                        actor
                    };
                    if rng.chance(30) {
                        // A tool call recorded under it (usable or not), settling
                        // some reservation (anyone's, any amount).
                        let charges = rng
                            .pick(&self.reservations)
                            .map(|r| vec![(r, rng.below(3))])
                            .unwrap_or_default();
                        let record = colony_kernel::tool_calls::ToolCallRecord {
                            tool: "files__delete".into(),
                            arguments_sha256: "ab".repeat(32),
                            arguments_bytes: rng.below(100),
                            outcome: colony_kernel::tool_calls::ToolOutcome::Ok,
                            result_bytes: rng.below(100),
                            duration_ms: rng.below(100),
                            charges,
                            grant: rng.chance(80).then_some(grant),
                        };
                        self.run(actor, CommandBody::RecordToolCall(Box::new(record)));
                    } else {
                        let approve = rng.chance(80);
                        self.run(approver, CommandBody::DecideGrant { grant, approve });
                    }
                }
            }
            22 => {
                // Artifacts: deployed with absurd sizes and quotas, started and
                // stopped by anyone, removed with their deployers.
                if rng.chance(60) {
                    self.next_token += 1;
                    let quotas = match rng.below(3) {
                        0 => Vec::new(),
                        1 => vec![(Resource::ComputeMs, rng.amount())],
                        _ => vec![
                            (Resource::DiskBytes, rng.amount()),
                            (Resource::DiskBytes, 1),
                        ],
                    };
                    let new = colony_kernel::artifacts::NewArtifact {
                        name: format!("a{}", self.next_token),
                        digest: if rng.chance(90) {
                            "ab".repeat(32)
                        } else {
                            "XYZ".into()
                        },
                        bytes: rng.amount(),
                        token_hash: token(self.next_token),
                        quotas,
                        run: rng.chance(50),
                    };
                    let applied = self.run(actor, CommandBody::DeployArtifact(Box::new(new)));
                    if let Effect::ArtifactDeployed { id, .. } = applied.primary().effect {
                        self.principals.push(id);
                    }
                } else if let Some(artifact) = rng.pick(&self.principals) {
                    let run = rng.chance(50);
                    self.run(actor, CommandBody::SetArtifactRun { artifact, run });
                }
            }
            23 => {
                // Alerts: crossings reported by the system (and, refused, by
                // anyone else), raised twice, cleared unraised, for principals
                // that are gone.
                let scope = if rng.chance(50) {
                    colony_kernel::alerts::AlertScope::Limit {
                        limit: ["ai_accounts", "task_queue_depth", "no_such"]
                            [rng.below(3) as usize]
                            .into(),
                    }
                } else {
                    colony_kernel::alerts::AlertScope::Quota {
                        principal: rng.pick(&self.principals).unwrap_or(PrincipalId::SYSTEM),
                        resource: Resource::IoOps,
                    }
                };
                let threshold = match rng.below(3) {
                    0 => colony_kernel::alerts::Threshold::Soft,
                    1 => colony_kernel::alerts::Threshold::Percent(80),
                    _ => colony_kernel::alerts::Threshold::Percent(rng.below(120) as u8),
                };
                let report = colony_kernel::alerts::AlertReport {
                    scope,
                    threshold,
                    raised: rng.chance(60),
                    usage: rng.amount(),
                    at: rng.amount(),
                    of: Some(rng.amount()),
                };
                let by = if rng.chance(90) {
                    PrincipalId::SYSTEM
                } else {
                    actor
                };
                self.run(by, CommandBody::Alert(Box::new(report)));
            }
            24 => {
                // A cluster's nodes renew their edge leases (and, refused, anyone
                // else; a bad name, too many, a ttl out of range); some stop
                // renewing and their leases expire.
                let node = ["node-1", "node-2", "node-3", ""][rng.below(4) as usize];
                let mut usage = Vec::new();
                for _ in 0..rng.below(4) {
                    let principal = rng.pick(&self.principals).unwrap_or(PrincipalId::ADMIN);
                    usage.push(colony_kernel::streams::EdgeUsage {
                        principal,
                        io_ops: rng.amount(),
                        data_bytes: rng.amount(),
                    });
                }
                let mut io_ops = Vec::new();
                for _ in 0..rng.below(5) {
                    let principal = rng.pick(&self.principals).unwrap_or(PrincipalId::ADMIN);
                    io_ops.push((principal, rng.amount()));
                }
                let request = colony_kernel::edge::EdgeLeaseRequest {
                    node: node.into(),
                    usage,
                    io_ops,
                    data_bytes: rng.amount(),
                    ttl_ms: [0, 1_000, 30_000, 60_001][rng.below(4) as usize],
                };
                let by = if rng.chance(90) {
                    PrincipalId::SYSTEM
                } else {
                    actor
                };
                self.run(by, CommandBody::LeaseEdge(Box::new(request)));
            }
            25 | 26 => {
                // A poster (or anyone) cancels a task, or changes its priority:
                // open or finished, root or deep in a tree, held or waiting.
                let addresses: Vec<TaskAddress> = self
                    .state
                    .tasks()
                    .filter(|t| t.status.is_open() || rng.chance(10))
                    .map(|t| t.address.clone())
                    .collect();
                if let Some(address) = rng.pick(&addresses) {
                    let poster = self
                        .state
                        .task(&address)
                        .and_then(|t| self.state.principal_by_address(&t.created_by))
                        .map_or(actor, |p| p.id);
                    let by = if rng.chance(60) { poster } else { actor };
                    let body = if rng.chance(60) {
                        CommandBody::CancelTask { address }
                    } else {
                        let priority = [
                            Priority::Low,
                            Priority::Normal,
                            Priority::High,
                            Priority::Critical,
                        ][rng.below(4) as usize];
                        CommandBody::SetTaskPriority { address, priority }
                    };
                    self.run(by, body);
                }
            }
            _ => {
                // Time passes: a little, or a jump past every deadline.
                self.now_ms += match rng.below(10) {
                    0 => 3_600_000 + rng.below(86_400_000),
                    1..=3 => rng.below(60_000),
                    _ => rng.below(2_000),
                };
                if self
                    .state
                    .next_due_ms()
                    .is_some_and(|due| due <= self.now_ms)
                {
                    self.run(PrincipalId::SYSTEM, CommandBody::Tick);
                }
            }
        }
    }
}

fn task(rng: &mut Rng) -> NewTask {
    NewTask {
        title: format!("task {}", rng.below(1_000)),
        description: "d".repeat(rng.below(400) as usize),
        priority: [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ][rng.below(4) as usize],
        capabilities: vec![],
        depends_on: vec![],
        // Budgets, so that cancellations and deaths must give them back.
        budget_micro_usd: rng.chance(30).then(|| rng.below(2_000_000)),
        max_attempts: rng.chance(30).then(|| rng.below(4) as u32),
        // Short deadlines, so that attempts time out within a stream; some out of range.
        attempt_timeout_ms: match rng.below(4) {
            0 => None,
            1 => Some(rng.amount()),
            _ => Some(1_000 + rng.below(60_000)),
        },
    }
}

fn token(n: u64) -> TokenHash {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&n.to_le_bytes());
    hash[31] = 0xAB;
    hash
}

/// Runs one seed; the step and the invariant that broke, if one did.
fn simulate(seed: u64) -> Result<World, String> {
    let mut rng = Rng(seed);
    let mut world = World::new();
    for step in 0..STEPS {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            world.step(&mut rng);
        }));
        if let Err(panic) = caught {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(format!(
                "step {step}: the kernel panicked: {message}; last command: {:?}",
                world.commands.last()
            ));
        }
        if let Err(broken) = world.state.check_invariants() {
            return Err(format!(
                "step {step}: {broken}; last command: {:?}",
                world.commands.last()
            ));
        }
    }
    Ok(world)
}

#[test]
fn random_adversarial_streams_keep_every_invariant() {
    let seeds: Vec<u64> = match std::env::var("COLONY_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("COLONY_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("COLONY_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(2_000u64);
            (1..=count).collect()
        }
    };
    for seed in seeds {
        if let Err(broken) = simulate(seed) {
            panic!("seed {seed} broke an invariant (replay: COLONY_SIM_SEED={seed}): {broken}");
        }
    }
}

/// The streams reach what they should attack: a simulation that never decomposes or
/// never lets a brake expire proves nothing about them.
#[test]
fn the_streams_reach_every_kind_of_decision_that_matters() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 1..=50 {
        let world = simulate(seed).unwrap_or_else(|broken| panic!("seed {seed}: {broken}"));
        let mut replayed = State::new();
        for command in &world.commands {
            for event in replayed.apply(command).events {
                seen.insert(format!("{} {:?}", event.action, event.decision));
            }
        }
    }
    for wanted in [
        ("principal.create", Decision::Queued),
        ("principal.create", Decision::Admitted),
        ("worker.register", Decision::Queued),
        ("worker.lost", Decision::Allowed),
        ("ledger.expire", Decision::Expired),
        ("task.decompose", Decision::Allowed),
        ("task.dead", Decision::Allowed),
        ("task.timed_out", Decision::Allowed),
        ("task.cancel", Decision::Allowed),
        ("task.cancel", Decision::Denied),
        ("task.priority", Decision::Allowed),
        ("task.retire", Decision::Allowed),
        ("task.renew_leases", Decision::Allowed),
        ("task.lease_expired", Decision::Allowed),
        ("task.spend", Decision::Allowed),
        ("llm.settle", Decision::Allowed),
        ("governance.brake_expired", Decision::Allowed),
        ("governance.brake_confirmed", Decision::Allowed),
        ("governance.propose", Decision::Denied),
        ("governance.decide", Decision::Allowed),
        ("governance.vote", Decision::Denied),
        ("principal.quarantine", Decision::Allowed),
        ("principal.release", Decision::Allowed),
        ("token.create", Decision::Allowed),
        ("token.revoke", Decision::Allowed),
        ("grant.approve", Decision::Allowed),
        ("grant.expire", Decision::Allowed),
        ("artifact.deploy", Decision::Allowed),
        ("artifact.deploy", Decision::Denied),
        ("artifact.stop", Decision::Allowed),
        ("alert.raise", Decision::Allowed),
        ("alert.raise", Decision::Denied),
        ("alert.clear", Decision::Allowed),
        ("edge.lease", Decision::Allowed),
        ("edge.lease", Decision::Denied),
        ("edge.lease", Decision::Expired),
    ] {
        let wanted = format!("{} {:?}", wanted.0, wanted.1);
        assert!(seen.contains(&wanted), "no {wanted} in 50 seeds");
    }
}

#[test]
fn a_replay_of_the_same_commands_reaches_the_same_state() {
    for seed in [7, 1_234, 99_999] {
        let world = simulate(seed).unwrap_or_else(|broken| panic!("seed {seed}: {broken}"));
        let mut replayed = State::new();
        for command in &world.commands {
            replayed.apply(command);
        }
        assert_eq!(replayed, world.state, "seed {seed} replayed differently");
    }
}

/// What the store keeps, commands and snapshots of the state, is postcard: every
/// command and every state the streams reach must come back from it as it was (a
/// `#[serde(tag)]` enum or a `#[serde(flatten)]` field would not).
#[test]
fn every_command_and_state_survives_the_stores_encoding() {
    for seed in 1..=20 {
        let world = simulate(seed).unwrap_or_else(|broken| panic!("seed {seed}: {broken}"));
        for command in &world.commands {
            let bytes = postcard::to_stdvec(command)
                .unwrap_or_else(|e| panic!("seed {seed}: {command:?} does not encode: {e}"));
            let back: Command = postcard::from_bytes(&bytes)
                .unwrap_or_else(|e| panic!("seed {seed}: {command:?} does not decode: {e}"));
            assert_eq!(&back, command, "seed {seed}");
        }
        let bytes = postcard::to_stdvec(&world.state)
            .unwrap_or_else(|e| panic!("seed {seed}: the state does not encode: {e}"));
        let back: State = postcard::from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("seed {seed}: the state does not decode: {e}"));
        assert_eq!(back, world.state, "seed {seed}");
    }
}
