//! A kernel with a clock the test controls, shared by the kernel's tests.
#![allow(dead_code)]

use colony_kernel::*;

pub const ADMIN_TOKEN: TokenHash = [1; 32];
pub const USD: u64 = MICRO_USD_PER_USD;

/// A kernel with a clock the test controls.
pub struct Sim {
    pub state: State,
    pub now_ms: u64,
    pub next_token: u8,
}

impl Sim {
    pub fn new() -> Sim {
        Sim::with(Genesis::for_tests(ADMIN_TOKEN))
    }

    pub fn with(genesis: Genesis) -> Sim {
        let mut sim = Sim {
            state: State::new(),
            now_ms: 1_000_000,
            next_token: 10,
        };
        let applied = sim.run(PrincipalId::SYSTEM, CommandBody::Genesis(Box::new(genesis)));
        assert!(applied.primary().decision.is_allowed());
        sim
    }

    pub fn run(&mut self, actor: PrincipalId, body: CommandBody) -> Applied {
        let command = Command::new(self.state.last_seq + 1, self.now_ms, actor, "test", body);
        self.state.apply(&command)
    }

    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    pub fn create(&mut self, kind: PrincipalKind, parent: Option<PrincipalId>) -> Applied {
        self.next_token += 1;
        let mut request =
            CreatePrincipal::new(format!("p{}", self.next_token), kind, [self.next_token; 32]);
        request.parent = parent;
        self.run(PrincipalId::ADMIN, CommandBody::CreatePrincipal(request))
    }

    pub fn create_ok(&mut self, kind: PrincipalKind, parent: Option<PrincipalId>) -> PrincipalId {
        let applied = self.create(kind, parent);
        match &applied.primary().effect {
            Effect::PrincipalCreated { id, .. } => *id,
            other => panic!(
                "expected a creation, got {other:?} ({:?})",
                applied.primary().reason
            ),
        }
    }

    pub fn reserve(
        &mut self,
        actor: PrincipalId,
        resource: Resource,
        amount: u64,
    ) -> Result<ReservationId, Reason> {
        let applied = self.run(
            actor,
            CommandBody::Reserve {
                resource,
                amount,
                ttl_ms: None,
            },
        );
        let event = applied.primary();
        match &event.effect {
            Effect::Reserved { reservation, .. } => Ok(*reservation),
            _ => Err(event.reason.clone()),
        }
    }

    pub fn commit(&mut self, actor: PrincipalId, reservation: ReservationId, actual: u64) -> Event {
        self.run(
            actor,
            CommandBody::Commit {
                reservation,
                actual,
            },
        )
        .primary()
        .clone()
    }

    pub fn balance(&self, principal: PrincipalId, resource: Resource) -> Balance {
        self.state
            .balances_at(principal, self.now_ms)
            .into_iter()
            .find(|(r, _)| *r == resource)
            .map(|(_, b)| b)
            .unwrap()
    }
}

// --- The task board ---

pub fn new_task(
    title: &str,
    priority: Priority,
    capabilities: &[&str],
) -> colony_kernel::tasks::NewTask {
    colony_kernel::tasks::NewTask {
        title: title.to_string(),
        description: String::new(),
        priority,
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        depends_on: Vec::new(),
        budget_micro_usd: None,
        max_attempts: None,
        attempt_timeout_ms: None,
    }
}

pub fn post(
    sim: &mut Sim,
    actor: PrincipalId,
    task: colony_kernel::tasks::NewTask,
) -> Result<TaskAddress, Reason> {
    let applied = sim.run(actor, CommandBody::PostTask(Box::new(task)));
    match &applied.primary().effect {
        Effect::TaskChanged { address, .. } => Ok(address.clone()),
        _ => Err(applied.primary().reason.clone()),
    }
}

/// Claims; returns the task and its token, or `None` when nothing fits.
pub fn claim(
    sim: &mut Sim,
    worker: PrincipalId,
    capabilities: &[&str],
) -> Option<(TaskAddress, u64)> {
    let body = CommandBody::ClaimTask {
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        lease_ms: None,
        worker: None,
    };
    let applied = sim.run(worker, body);
    match &applied.primary().effect {
        Effect::TaskClaimed { address, token, .. } => Some((address.clone(), *token)),
        Effect::NothingToClaim => None,
        other => panic!("claim: {other:?} {:?}", applied.primary().reason),
    }
}

/// A task address the test knows is one.
pub fn task(address: &str) -> TaskAddress {
    TaskAddress::parse(address).expect("a task address")
}

pub fn update(
    sim: &mut Sim,
    worker: PrincipalId,
    address: &str,
    token: u64,
    update: TaskUpdate,
) -> Applied {
    sim.run(
        worker,
        CommandBody::UpdateTask {
            address: task(address),
            token,
            update,
        },
    )
}

pub fn status(sim: &Sim, address: &str) -> colony_kernel::tasks::TaskStatus {
    sim.state.task(address).unwrap().status
}

/// The tests' genesis with one limit changed.
pub fn genesis_with_limit(name: &str, change: impl FnOnce(&mut LimitSpec)) -> Genesis {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    change(
        genesis
            .limits
            .iter_mut()
            .find(|limit| limit.name == name)
            .unwrap_or_else(|| panic!("no limit {name} in the tests' genesis")),
    );
    genesis
}

/// Posts a task without requirements, as the admin; its address.
pub fn post_plain(sim: &mut Sim, title: &str) -> TaskAddress {
    post(
        sim,
        PrincipalId::ADMIN,
        new_task(title, Priority::Normal, &[]),
    )
    .unwrap()
}
