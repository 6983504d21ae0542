//! The kernel's state and [`State::apply`], the one door every change goes through.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandBody, CreatePrincipal};
use crate::event::{Applied, Decision, Effect, Event, Reason};
use crate::genesis::{Genesis, QuotaConfig};
use crate::governance::{GovernanceConfig, Proposal, StabilityFigures};
use crate::ledger::{
    Balance, Reservation, ReservationId, ReservationState, Resource, ResourceKind,
};
use crate::limits::{Gate, Limit, LimitSpec, OnSoft, QueuedAdmission, BUILTIN_LIMITS};
use crate::principal::{Principal, PrincipalId, PrincipalKind, Role, TokenHash};
use crate::{validate_address, JUSTIFICATION_BYTES_MAX, NAME_BYTES_MAX, PRINCIPAL_DEPTH_MAX};

mod anomaly;
mod governance;
mod invariants;
mod streams;
mod tasks;
mod workers;

const SYSTEM_ADDRESS: &str = "0.1";
const ADMIN_ADDRESS: &str = "1.1";

/// Everything the kernel knows. Changed only by [`State::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Sequence number of the last command applied.
    pub last_seq: u64,
    /// Time of the last command applied, in Unix milliseconds.
    pub now_ms: u64,
    quotas: Option<QuotaConfig>,
    next_principal_id: u64,
    principals: BTreeMap<PrincipalId, Principal>,
    by_token: BTreeMap<TokenHash, PrincipalId>,
    by_address: BTreeMap<String, PrincipalId>,
    /// Next instance number under each address prefix.
    next_number: BTreeMap<String, u64>,
    /// Live principals under each top-level category.
    category_counts: BTreeMap<String, u64>,
    limits: BTreeMap<String, Limit>,
    balances: BTreeMap<(PrincipalId, Resource), Balance>,
    reservations: BTreeMap<ReservationId, Reservation>,
    /// Reservations in the order their time runs out.
    expiries: BTreeSet<(u64, ReservationId)>,
    open_reservations: BTreeMap<PrincipalId, u32>,
    governance: Option<GovernanceConfig>,
    proposals: BTreeMap<u64, Proposal>,
    next_proposal_id: u64,
    /// Proposals in review, by the time their review ends.
    reviews: BTreeSet<(u64, u64)>,
    /// Unconfirmed brakes, by the time their values go back.
    brake_expiries: BTreeSet<(u64, u64)>,
    /// When each principal applied its brakes of the last hour.
    recent_brakes: BTreeMap<PrincipalId, Vec<u64>>,
    /// Figures of the current stability window.
    stability: StabilityFigures,
    task_config: Option<crate::tasks::TaskConfig>,
    tasks: BTreeMap<String, crate::tasks::Task>,
    next_task_number: u64,
    /// Claimable tasks by static score, then by the time they became claimable.
    ready: BTreeMap<u32, BTreeSet<(u64, String)>>,
    ready_score: BTreeMap<String, u32>,
    /// Open tasks that wait on each task.
    dependents: BTreeMap<String, BTreeSet<String>>,
    lease_expiries: BTreeSet<(u64, String)>,
    backoffs: BTreeSet<(u64, String)>,
    leases_held: BTreeMap<PrincipalId, u32>,
    /// Principals holding leases without a worker session: each holds one unit of
    /// `active_workers` until its last lease ends.
    implicit_sessions: BTreeSet<PrincipalId>,
    workers: BTreeMap<u64, crate::workers::WorkerSession>,
    worker_deadlines: BTreeSet<(u64, u64)>,
    /// Tasks leased to each worker session.
    worker_leases: BTreeMap<u64, BTreeSet<String>>,
    /// Durable bus streams, by name.
    streams: BTreeMap<String, crate::streams::StreamSpec>,
    /// `anomaly.toml`: `None` watches nothing.
    anomaly: Option<crate::anomaly::AnomalyConfig>,
    /// What each principal did in the current window, and its baselines.
    activity: BTreeMap<PrincipalId, crate::anomaly::Activity>,
    /// Quarantined principals, with the evidence.
    quarantined: BTreeMap<PrincipalId, crate::anomaly::Quarantine>,
    /// Events decided while applying the primary decision, emitted right after it.
    /// Always empty between commands.
    #[serde(skip)]
    consequences: Vec<Event>,
    /// Tasks that became claimable while applying the current command; moved into
    /// [`Applied::offered`]. Always empty between commands.
    #[serde(skip)]
    offered: Vec<String>,
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// Applies one command: decides, changes the state, and says why.
    ///
    /// # Panics
    /// When `command.seq` is not the next sequence number or time goes backwards:
    /// both are bugs in the caller, never operating errors.
    pub fn apply(&mut self, command: &Command) -> Applied {
        assert_eq!(
            command.seq,
            self.last_seq + 1,
            "commands are applied in order without gaps"
        );
        assert!(
            command.at_ms >= self.now_ms,
            "command time never goes backwards"
        );
        self.last_seq = command.seq;
        self.now_ms = command.at_ms;
        let mut events = Vec::new();
        if let (CommandBody::ReportHealth(health), PrincipalId::SYSTEM) =
            (&command.body, command.actor)
        {
            // The node's figures belong to the window they were observed in, which
            // may be the one that closes below.
            self.add_health(health);
        }
        self.expire_due(&mut events);
        self.process_governance_due(&mut events);
        self.process_workers_due(&mut events);
        self.process_tasks_due(&mut events);
        let primary = self.decide(command);
        if command.actor != PrincipalId::SYSTEM {
            self.count_decision(&primary);
        }
        let primary_index = events.len();
        events.push(primary);
        events.append(&mut self.consequences);
        if command.actor != PrincipalId::SYSTEM && self.anomaly.is_some() {
            self.observe(command.actor, primary_index, &mut events);
        }
        self.admit_waiting(&mut events);
        Applied {
            events,
            primary_index,
            offered: std::mem::take(&mut self.offered),
        }
    }

    /// Whether genesis has been applied.
    pub fn is_initialized(&self) -> bool {
        self.quotas.is_some()
    }

    pub fn quota_config(&self) -> Option<&QuotaConfig> {
        self.quotas.as_ref()
    }

    pub fn principal(&self, id: PrincipalId) -> Option<&Principal> {
        self.principals.get(&id)
    }

    /// The principal with standing that holds the token with this hash.
    pub fn principal_by_token(&self, token_hash: &TokenHash) -> Option<&Principal> {
        self.by_token
            .get(token_hash)
            .and_then(|id| self.principals.get(id))
    }

    pub fn principal_by_address(&self, address: &str) -> Option<&Principal> {
        self.by_address
            .get(address)
            .and_then(|id| self.principals.get(id))
    }

    /// All principals ever created, by id, including removed ones.
    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.principals.values()
    }

    pub fn limit(&self, name: &str) -> Option<&Limit> {
        self.limits.get(name)
    }

    pub fn limits(&self) -> impl Iterator<Item = &Limit> {
        self.limits.values()
    }

    /// A copy of a limit as it stands at `now_ms` (a rate window may have turned
    /// since the last command).
    pub fn limit_at(&self, name: &str, now_ms: u64) -> Option<Limit> {
        let mut limit = self.limits.get(name)?.clone();
        limit.roll_window(now_ms.max(self.now_ms));
        Some(limit)
    }

    /// A principal's balances as they stand at `now_ms` (flow windows rolled).
    pub fn balances_at(&self, principal: PrincipalId, now_ms: u64) -> Vec<(Resource, Balance)> {
        let Some(quotas) = &self.quotas else {
            return Vec::new();
        };
        Resource::ALL
            .into_iter()
            .filter_map(|resource| {
                let mut balance = self.balances.get(&(principal, resource))?.clone();
                if resource.kind() == ResourceKind::Flow {
                    balance.roll_window(now_ms.max(self.now_ms), quotas.window_ms(resource));
                }
                Some((resource, balance))
            })
            .collect()
    }

    pub fn reservation(&self, id: ReservationId) -> Option<&Reservation> {
        self.reservations.get(&id)
    }

    /// Open reservations and holds of a principal.
    pub fn reservations_of(&self, principal: PrincipalId) -> impl Iterator<Item = &Reservation> {
        self.reservations
            .values()
            .filter(move |reservation| reservation.principal == principal)
    }

    /// When the next time-driven change (a reservation expiry) is due. The node logs
    /// a [`CommandBody::Tick`] once that time has come.
    pub fn next_due_ms(&self) -> Option<u64> {
        let expiry = self.expiries.first().map(|(at_ms, _)| *at_ms);
        [
            expiry,
            self.governance_next_due_ms(),
            self.tasks_next_due_ms(),
            self.workers_next_due_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn decide(&mut self, command: &Command) -> Event {
        let action = command.body.name();
        if let CommandBody::Genesis(genesis) = &command.body {
            return self.genesis(command, genesis);
        }
        if self.quotas.is_none() {
            return Event::denied(
                action,
                "kernel",
                invalid("genesis has not been applied yet"),
            );
        }
        let actor = match self.principals.get(&command.actor) {
            Some(principal) if principal.standing => principal,
            _ => {
                return Event::denied(
                    action,
                    command.actor.to_string(),
                    Reason::NoStanding {
                        actor: command.actor,
                    },
                )
            }
        };
        let actor_address = actor.address.clone();
        let (actor_is_admin, actor_may_act, actor_is_system) = (
            actor.is_admin(),
            actor.may_act(),
            actor.kind == PrincipalKind::System,
        );
        if command.justification.len() > JUSTIFICATION_BYTES_MAX {
            return Event::denied(
                action,
                actor_address,
                invalid(format!(
                    "a justification is at most {JUSTIFICATION_BYTES_MAX} bytes"
                )),
            );
        }
        if !actor_may_act {
            return Event::denied(
                action,
                actor_address,
                forbidden("observers may read but not act"),
            );
        }
        if let Some(quarantine) = self.quarantined.get(&command.actor) {
            return Event::denied(
                action,
                actor_address,
                Reason::Quarantined {
                    since_ms: quarantine.since_ms,
                    evidence: Box::new(quarantine.evidence.clone()),
                },
            );
        }
        if !actor_is_system {
            // The governance lane: proposals, votes, and an admin's administration
            // are counted but never refused by a quota or a limit, so that no burst
            // of other work can keep the colony from being governed.
            let lane = command.body.in_governance_lane(actor_is_admin);
            // Every command is an I/O operation of its actor: this is what keeps a
            // misbehaving agent from flooding the log.
            if lane {
                self.charge_flow_unchecked(command.actor, Resource::IoOps, 1);
            } else if let Err(reason) = self.charge_flow(command.actor, Resource::IoOps, 1) {
                return Event::denied(action, actor_address, reason);
            }
            // Every byte an agent makes Colony keep counts toward
            // `data_creation_bytes`: the justification (kept in the decision log
            // whatever the decision) and what a task update stores. Creations count
            // what they create themselves.
            let kept = command.justification.len() as u64 + command.body.stored_bytes();
            if let Err(reason) = self.count_kept_bytes(kept, lane) {
                return Event::denied(action, actor_address, reason);
            }
        }
        match &command.body {
            CommandBody::Genesis(_) => unreachable!("handled above"),
            CommandBody::PostTask(new) => self.post_task(command, &actor_address, new),
            CommandBody::ClaimTask {
                capabilities,
                lease_ms,
                worker,
            } => self.claim_task(command, &actor_address, capabilities, *lease_ms, *worker),
            CommandBody::RegisterWorker(new) => {
                self.register_worker(command, &actor_address, new, None)
            }
            CommandBody::WorkerHeartbeat { worker } => self.worker_heartbeat(command, *worker),
            CommandBody::LeaveWorker { worker } => self.leave_worker(command, *worker),
            CommandBody::ClaimSpecificTask { address, lease_ms } => {
                self.claim_specific_task(command, &actor_address, address, *lease_ms)
            }
            CommandBody::UpdateTask {
                address,
                token,
                update,
            } => self.update_task(command, &actor_address, address, *token, update),
            CommandBody::RequeueTask { address } => {
                if !actor_is_admin {
                    return Event::denied(
                        action,
                        actor_address,
                        forbidden("only admins requeue dead tasks"),
                    );
                }
                self.requeue_task(&actor_address, address, &command.justification)
            }
            CommandBody::Propose { target, brake_only } => {
                self.propose(command, target, *brake_only)
            }
            CommandBody::Vote { proposal, choice } => self.vote(command, *proposal, *choice),
            CommandBody::Supervise { profile, pid, .. } => {
                if actor_is_system {
                    Event::allowed(
                        action,
                        format!("profile:{profile}"),
                        Effect::Supervised { pid: *pid },
                    )
                } else {
                    Event::denied(
                        action,
                        actor_address,
                        forbidden("only the node's supervisor records this"),
                    )
                }
            }
            CommandBody::ReportHealth(_) => {
                if actor_is_system {
                    Event::allowed(action, "health", Effect::None)
                } else {
                    Event::denied(
                        action,
                        actor_address,
                        forbidden("only the node reports its health"),
                    )
                }
            }
            CommandBody::Tick => {
                if actor_is_system {
                    Event::allowed(action, "time", Effect::None)
                } else {
                    Event::denied(
                        action,
                        actor_address,
                        forbidden("only the system logs ticks"),
                    )
                }
            }
            CommandBody::DefineStream(spec) => {
                if !actor_is_admin {
                    return Event::denied(
                        action,
                        actor_address,
                        forbidden("only admins define streams"),
                    );
                }
                self.define_stream(spec)
            }
            CommandBody::DeleteStream { name } => {
                if !actor_is_admin {
                    return Event::denied(
                        action,
                        actor_address,
                        forbidden("only admins delete streams"),
                    );
                }
                self.delete_stream(name)
            }
            CommandBody::WorkerDisconnected {
                worker,
                disconnected_at_ms,
                grace_ms,
            } => {
                if !actor_is_system {
                    return Event::denied(
                        action,
                        actor_address,
                        forbidden("only the node reports dropped connections"),
                    );
                }
                self.worker_disconnected(*worker, *disconnected_at_ms, *grace_ms)
            }
            CommandBody::ChargeEdge { usage } => {
                if !actor_is_system {
                    return Event::denied(
                        action,
                        actor_address,
                        forbidden("only the node reports edge usage"),
                    );
                }
                self.charge_edge(usage)
            }
            CommandBody::CreatePrincipal(request) => {
                if !actor_is_admin {
                    return Event::denied(
                        action,
                        actor_address,
                        forbidden("only admins create principals"),
                    );
                }
                self.create_principal(command, request, None)
            }
            CommandBody::ReleaseQuarantine { principal } => {
                self.release_quarantine(command, *principal)
            }
            CommandBody::RemovePrincipal { principal } => {
                if !actor_is_admin {
                    return Event::denied(
                        action,
                        actor_address,
                        forbidden("only admins remove principals"),
                    );
                }
                self.remove_principal(command, *principal)
            }
            CommandBody::Reserve {
                resource,
                amount,
                ttl_ms,
            } => self.reserve(command.actor, &actor_address, *resource, *amount, *ttl_ms),
            CommandBody::Commit {
                reservation,
                actual,
            } => self.commit(command.actor, &actor_address, *reservation, *actual),
            CommandBody::Release { reservation } => {
                match self.own_reservation(command.actor, *reservation, action) {
                    Ok(()) => self.release(*reservation, action),
                    Err(event) => *event,
                }
            }
            CommandBody::Grant {
                to,
                resource,
                amount,
            } => self.grant(command.actor, &actor_address, *to, *resource, *amount),
            CommandBody::Free { resource, amount } => {
                self.free(command.actor, &actor_address, *resource, *amount)
            }
        }
    }

    fn genesis(&mut self, command: &Command, genesis: &Genesis) -> Event {
        const ACTION: &str = "genesis";
        if self.quotas.is_some() {
            return Event::denied(ACTION, "kernel", invalid("genesis was already applied"));
        }
        if command.actor != PrincipalId::SYSTEM {
            return Event::denied(
                ACTION,
                "kernel",
                forbidden("only the system applies genesis"),
            );
        }
        let set_via = format!("genesis ({})", genesis.source);
        let mut specs: BTreeMap<String, LimitSpec> = genesis
            .limits
            .iter()
            .map(|spec| (spec.name.clone(), spec.clone()))
            .collect();
        // A built-in limit that the configuration leaves out exists, unlimited, so
        // that governance can set it later and `colony limits` shows it.
        for builtin in BUILTIN_LIMITS {
            specs
                .entry(builtin.name.to_string())
                .or_insert_with(|| LimitSpec {
                    name: builtin.name.to_string(),
                    unit: builtin.unit.to_string(),
                    description: builtin.description.to_string(),
                    soft: None,
                    hard: None,
                    on_soft: OnSoft::Warn,
                    window_ms: builtin.default_window_ms,
                    queue_max: 1_000,
                    brake_floor: 0,
                });
        }
        for (name, spec) in specs {
            let limit = Limit::new(
                spec,
                SYSTEM_ADDRESS.to_string(),
                command.at_ms,
                set_via.clone(),
            );
            self.limits.insert(name, limit);
        }
        self.quotas = Some(genesis.quotas.clone());
        self.governance = Some(genesis.governance.clone());
        self.anomaly = genesis.anomaly.clone();
        self.task_config = Some(genesis.tasks.clone());
        if let Some(relaxation) = &genesis.governance.relaxation {
            self.stability.window_start_ms =
                command.at_ms - command.at_ms % relaxation.window_ms.max(1);
        }
        let system = Principal {
            id: PrincipalId::SYSTEM,
            address: SYSTEM_ADDRESS.to_string(),
            name: "colony".to_string(),
            kind: PrincipalKind::System,
            roles: vec![Role::Admin],
            standing: true,
            parent: None,
            created_at_ms: command.at_ms,
            created_by: PrincipalId::SYSTEM,
            token_hash: [0; 32],
        };
        self.by_address.insert(system.address.clone(), system.id);
        self.principals.insert(system.id, system);
        self.next_principal_id = 1;
        let mut admin_request = CreatePrincipal::new(
            genesis.admin_name.clone(),
            PrincipalKind::Human,
            genesis.admin_token_hash,
        );
        admin_request.roles = vec![Role::Admin, Role::Member];
        admin_request.address = Some(ADMIN_ADDRESS.to_string());
        let admin = self.insert_principal(command, &admin_request);
        let mut event = Event::allowed(
            ACTION,
            "kernel",
            Effect::GenesisApplied {
                limits: self.limits.len(),
                admin: admin.clone(),
            },
        );
        event.subject = admin;
        event
    }

    fn create_principal(
        &mut self,
        command: &Command,
        request: &CreatePrincipal,
        admitted: Option<&QueuedAdmission>,
    ) -> Event {
        const ACTION: &str = "principal.create";
        let subject = request
            .address
            .clone()
            .unwrap_or_else(|| request.kind.address_prefix().to_string());
        if let Err(message) = self.validate_creation(request) {
            return Event::denied(ACTION, subject, invalid(message));
        }
        let account_limit = match request.kind {
            PrincipalKind::Human => Some("human_accounts"),
            PrincipalKind::Ai => Some("ai_accounts"),
            _ => None,
        };
        // The justification was counted where the command entered.
        let data_bytes = request.data_bytes();
        let category = request
            .kind
            .address_prefix()
            .split('.')
            .next()
            .unwrap_or("0")
            .to_string();
        let category_usage = self.category_counts.get(&category).copied().unwrap_or(0);
        let mut warnings = Vec::new();
        let mut queue_reason = None;
        let gates = [
            (account_limit, 1, None),
            (Some("total_nodes"), 1, None),
            (Some("nodes_per_category"), 1, Some(category_usage)),
            (Some("data_creation_bytes"), data_bytes, None),
        ];
        for (name, amount, usage_override) in gates {
            let Some(name) = name else { continue };
            let Some(limit) = self.limits.get_mut(name) else {
                continue;
            };
            limit.roll_window(command.at_ms);
            let gate = match usage_override {
                // nodes_per_category is checked against the category being filled.
                Some(usage) => {
                    let mut view = limit.clone();
                    view.usage = usage;
                    view.gate(amount)
                }
                None => limit.gate(amount),
            };
            match gate {
                Gate::Allow => {}
                Gate::Warn(reason) => warnings.push(reason),
                Gate::Queue(reason) if admitted.is_none() => queue_reason = Some((name, reason)),
                Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Event::denied(ACTION, subject, reason),
            }
        }
        if let Some((limit_name, reason)) = queue_reason {
            let actor_is_admin = self.principals[&command.actor].is_admin();
            let limit = self.limits.get_mut(limit_name).expect("gated above");
            if let Err(reason) = limit.queue_room(command.actor, actor_is_admin) {
                return Event::denied(ACTION, subject, reason);
            }
            let position = limit.enqueue(QueuedAdmission {
                ticket: command.seq,
                priority: request.priority,
                queued_at_ms: command.at_ms,
                actor: command.actor,
                justification: command.justification.clone(),
                request: crate::limits::AdmissionRequest::CreatePrincipal(request.clone()),
            });
            return Event {
                action: ACTION,
                subject,
                decision: Decision::Queued,
                reason,
                warnings,
                effect: Effect::PrincipalQueued {
                    ticket: command.seq,
                    limit: limit_name.to_string(),
                    position,
                },
            };
        }
        if let Some(limit) = self.limits.get_mut("data_creation_bytes") {
            limit.usage = limit.usage.saturating_add(data_bytes);
        }
        let address = self.insert_principal(command, request);
        let principal = &self.principals[&self.by_address[&address]];
        let effect = Effect::PrincipalCreated {
            id: principal.id,
            address: address.clone(),
            kind: principal.kind,
            parent: principal
                .parent
                .map(|parent| self.principals[&parent].address.clone()),
        };
        let mut event = Event::allowed(ACTION, address, effect).with_warnings(warnings);
        if let Some(queued) = admitted {
            event.decision = Decision::Admitted;
            event.reason = Reason::LimitAllows {
                limit: account_limit.unwrap_or("").to_string(),
                ticket: queued.ticket,
                waited_ms: command.at_ms - queued.queued_at_ms,
            };
        }
        event
    }

    fn validate_creation(&self, request: &CreatePrincipal) -> Result<(), String> {
        if request.name.trim().is_empty() || request.name.len() > NAME_BYTES_MAX {
            return Err(format!("a name is 1 to {NAME_BYTES_MAX} bytes"));
        }
        if request.name.chars().any(char::is_control) {
            return Err("a name holds no control characters".to_string());
        }
        if request.kind == PrincipalKind::System {
            return Err("there is only one system principal".to_string());
        }
        if self.by_token.contains_key(&request.token_hash) {
            return Err("this token is already in use".to_string());
        }
        if let Some(parent) = request.parent {
            if !self.principals.get(&parent).is_some_and(|p| p.standing) {
                return Err(format!("parent {parent} does not exist or has no standing"));
            }
            let depth = self.chain(parent).len();
            if depth >= PRINCIPAL_DEPTH_MAX {
                return Err(format!(
                    "parent {parent} is already {depth} levels deep; a principal's ancestry is at most {PRINCIPAL_DEPTH_MAX} levels, itself included"
                ));
            }
        }
        if let Some(address) = &request.address {
            validate_address(address).map_err(|error| format!("address `{address}`: {error}"))?;
            let prefix = request.kind.address_prefix();
            if !address.starts_with(&format!("{prefix}.")) {
                return Err(format!(
                    "a {} lives under `{prefix}.`",
                    request.kind.as_str()
                ));
            }
            if self.by_address.contains_key(address) {
                return Err(format!("address `{address}` is taken"));
            }
        }
        Ok(())
    }

    /// Creates the principal and its balances; the caller has validated and gated.
    fn insert_principal(&mut self, command: &Command, request: &CreatePrincipal) -> String {
        let id = PrincipalId(self.next_principal_id);
        self.next_principal_id += 1;
        let prefix = request.kind.address_prefix();
        let address = match &request.address {
            Some(address) => address.clone(),
            None => loop {
                let number = self.next_number.entry(prefix.to_string()).or_insert(1);
                let candidate = format!("{prefix}.{number}");
                *number += 1;
                if !self.by_address.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let mut roles = if request.roles.is_empty() {
            vec![Role::Member]
        } else {
            request.roles.clone()
        };
        roles.sort();
        roles.dedup();
        let principal = Principal {
            id,
            address: address.clone(),
            name: request.name.clone(),
            kind: request.kind,
            roles,
            standing: true,
            parent: request.parent,
            created_at_ms: command.at_ms,
            created_by: command.actor,
            token_hash: request.token_hash,
        };
        let quotas = self.quotas.as_ref().expect("genesis applied");
        for resource in Resource::ALL {
            let balance = Balance::with_quota(quotas.default_quota(request.kind, resource));
            self.balances.insert((id, resource), balance);
        }
        self.by_token.insert(principal.token_hash, id);
        self.by_address.insert(address.clone(), id);
        self.principals.insert(id, principal);
        self.count_principal(request.kind, &address, 1);
        address
    }

    fn count_principal(&mut self, kind: PrincipalKind, address: &str, delta: i64) {
        let category = address.split('.').next().unwrap_or("0").to_string();
        let count = self.category_counts.entry(category).or_insert(0);
        *count = count.saturating_add_signed(delta);
        let fullest = self.category_counts.values().copied().max().unwrap_or(0);
        let account_limit = match kind {
            PrincipalKind::Human => Some("human_accounts"),
            PrincipalKind::Ai => Some("ai_accounts"),
            _ => None,
        };
        for name in [account_limit, Some("total_nodes")].into_iter().flatten() {
            if let Some(limit) = self.limits.get_mut(name) {
                limit.usage = limit.usage.saturating_add_signed(delta);
            }
        }
        if let Some(limit) = self.limits.get_mut("nodes_per_category") {
            limit.usage = fullest;
        }
    }

    fn remove_principal(&mut self, command: &Command, target: PrincipalId) -> Event {
        const ACTION: &str = "principal.remove";
        let Some(principal) = self.principals.get(&target).filter(|p| p.standing) else {
            return Event::denied(ACTION, target.to_string(), not_found("principal", target));
        };
        let address = principal.address.clone();
        if principal.kind == PrincipalKind::System || target == command.actor {
            return Event::denied(
                ACTION,
                address,
                forbidden("neither the system nor oneself can be removed"),
            );
        }
        let kind = principal.kind;
        let token_hash = principal.token_hash;
        let held: Vec<ReservationId> = self.reservations_of(target).map(|r| r.id).collect();
        for reservation in &held {
            self.release(*reservation, ACTION);
        }
        let principal = self.principals.get_mut(&target).expect("checked above");
        principal.standing = false;
        self.by_token.remove(&token_hash);
        self.count_principal(kind, &address, -1);
        Event::allowed(
            ACTION,
            address.clone(),
            Effect::PrincipalRemoved {
                id: target,
                address,
                released_reservations: held.len(),
            },
        )
    }

    /// Admits queued requests, best first, while their limit is below soft.
    fn admit_waiting(&mut self, events: &mut Vec<Event>) {
        let waiting: Vec<String> = self
            .limits
            .values()
            .filter(|limit| !limit.queue.is_empty())
            .map(|l| l.spec.name.clone())
            .collect();
        for name in waiting {
            loop {
                let limit = &self.limits[&name];
                let Some(front) = limit.queue.first() else {
                    break;
                };
                if !matches!(limit.gate(1), Gate::Allow | Gate::Warn(_)) {
                    break;
                }
                let queued = front.clone();
                self.limits.get_mut(&name).expect("exists").queue.remove(0);
                let actor_ok = self
                    .principals
                    .get(&queued.actor)
                    .is_some_and(|p| p.standing)
                    && !self.quarantined.contains_key(&queued.actor);
                let body = match &queued.request {
                    crate::limits::AdmissionRequest::CreatePrincipal(request) => {
                        CommandBody::CreatePrincipal(request.clone())
                    }
                    crate::limits::AdmissionRequest::RegisterWorker(new) => {
                        CommandBody::RegisterWorker(Box::new(new.clone()))
                    }
                };
                let command = Command::new(
                    queued.ticket,
                    self.now_ms,
                    queued.actor,
                    queued.justification.clone(),
                    body,
                );
                let event = match (&queued.request, actor_ok) {
                    (_, false) => Event::denied(
                        command.body.name(),
                        format!("ticket:{}", queued.ticket),
                        Reason::NoStanding {
                            actor: queued.actor,
                        },
                    ),
                    (crate::limits::AdmissionRequest::CreatePrincipal(request), true) => {
                        self.create_principal(&command, request, Some(&queued))
                    }
                    (crate::limits::AdmissionRequest::RegisterWorker(new), true) => {
                        let address = self.principals[&queued.actor].address.clone();
                        self.register_worker(&command, &address, new, Some(&queued))
                    }
                };
                events.push(event);
            }
        }
    }

    /// The principal and its ancestors, nearest first: at most
    /// [`PRINCIPAL_DEPTH_MAX`] of them, which creation guarantees (parents are
    /// created before their children, so there is no cycle either).
    fn chain(&self, principal: PrincipalId) -> Vec<PrincipalId> {
        let mut chain = vec![principal];
        let mut current = principal;
        while let Some(parent) = self.principals.get(&current).and_then(|p| p.parent) {
            if chain.len() >= PRINCIPAL_DEPTH_MAX {
                // Unreachable through `apply`; never a panic on the decide thread.
                break;
            }
            chain.push(parent);
            current = parent;
        }
        chain
    }

    /// Rolls flow windows along the chain and finds the tightest balance.
    fn check_chain(
        &mut self,
        chain: &[PrincipalId],
        resource: Resource,
        amount: u64,
    ) -> Result<(), Reason> {
        let window_ms = self
            .quotas
            .as_ref()
            .expect("genesis applied")
            .window_ms(resource);
        let now_ms = self.now_ms;
        for principal in chain {
            let Some(balance) = self.balances.get_mut(&(*principal, resource)) else {
                continue;
            };
            if resource.kind() == ResourceKind::Flow {
                balance.roll_window(now_ms, window_ms);
            }
            let available = balance.available();
            if amount > available {
                let refill_at_ms = (resource.kind() == ResourceKind::Flow)
                    .then(|| balance.window_start_ms + window_ms);
                return Err(Reason::InsufficientResource {
                    resource,
                    requested: amount,
                    available,
                    principal: self.principals[principal].address.clone(),
                    refill_at_ms,
                });
            }
        }
        Ok(())
    }

    /// Consumes `amount` of a flow at once, without a reservation.
    fn charge_flow(
        &mut self,
        principal: PrincipalId,
        resource: Resource,
        amount: u64,
    ) -> Result<(), Reason> {
        let chain = self.chain(principal);
        self.check_chain(&chain, resource, amount)?;
        for member in chain {
            if let Some(balance) = self.balances.get_mut(&(member, resource)) {
                balance.used = balance.used.saturating_add(amount);
            }
        }
        Ok(())
    }

    /// Counts a flow without checking it (the governance lane): usage may pass the
    /// quota, and the next ordinary command meets the result.
    fn charge_flow_unchecked(&mut self, principal: PrincipalId, resource: Resource, amount: u64) {
        let window_ms = self
            .quotas
            .as_ref()
            .expect("genesis applied")
            .window_ms(resource);
        let now_ms = self.now_ms;
        for member in self.chain(principal) {
            if let Some(balance) = self.balances.get_mut(&(member, resource)) {
                balance.roll_window(now_ms, window_ms);
                balance.used = balance.used.saturating_add(amount);
            }
        }
    }

    /// Counts `bytes` toward `data_creation_bytes`; refused past its hard value,
    /// except in the governance lane.
    fn count_kept_bytes(&mut self, bytes: u64, lane: bool) -> Result<(), Reason> {
        let Some(limit) = self.limits.get_mut("data_creation_bytes") else {
            return Ok(());
        };
        limit.roll_window(self.now_ms);
        if !lane {
            if let Gate::Deny(reason) = limit.gate(bytes) {
                return Err(reason);
            }
        }
        limit.usage = limit.usage.saturating_add(bytes);
        Ok(())
    }

    fn reserve(
        &mut self,
        actor: PrincipalId,
        actor_address: &str,
        resource: Resource,
        amount: u64,
        ttl_ms: Option<u64>,
    ) -> Event {
        const ACTION: &str = "ledger.reserve";
        let quotas = self.quotas.as_ref().expect("genesis applied");
        if amount == 0 {
            return Event::denied(ACTION, actor_address, invalid("amount must be at least 1"));
        }
        let ttl_ms = ttl_ms.unwrap_or(quotas.reservation_ttl_ms);
        if ttl_ms == 0 || ttl_ms > quotas.reservation_ttl_max_ms {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!(
                    "ttl_ms must be between 1 and {}",
                    quotas.reservation_ttl_max_ms
                )),
            );
        }
        let open_max = quotas.reservations_per_principal_max;
        if self.open_reservations.get(&actor).copied().unwrap_or(0) >= open_max {
            return Event::denied(
                ACTION,
                actor_address,
                Reason::TooManyReservations { max: open_max },
            );
        }
        let chain = self.chain(actor);
        if let Err(reason) = self.check_chain(&chain, resource, amount) {
            return Event::denied(ACTION, actor_address, reason);
        }
        let mut warnings = Vec::new();
        let system_limit = match resource {
            Resource::LlmBudgetUsd => Some("llm_spend_usd"),
            Resource::DiskBytes => Some("data_creation_bytes"),
            _ => None,
        };
        if let Some(limit) = system_limit.and_then(|name| self.limits.get_mut(name)) {
            limit.roll_window(self.now_ms);
            match limit.gate(amount) {
                Gate::Allow => {}
                Gate::Warn(reason) | Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Event::denied(ACTION, actor_address, reason),
            }
            if resource == Resource::LlmBudgetUsd {
                limit.reserved = limit.reserved.saturating_add(amount);
            }
        }
        for member in &chain {
            if let Some(balance) = self.balances.get_mut(&(*member, resource)) {
                balance.reserved = balance.reserved.saturating_add(amount);
            }
        }
        let id = self.last_seq;
        let expires_at_ms = self.now_ms.saturating_add(ttl_ms);
        self.reservations.insert(
            id,
            Reservation {
                id,
                principal: actor,
                resource,
                amount,
                created_at_ms: self.now_ms,
                expires_at_ms,
                chain,
                state: ReservationState::Reserved,
            },
        );
        self.expiries.insert((expires_at_ms, id));
        *self.open_reservations.entry(actor).or_insert(0) += 1;
        Event::allowed(
            ACTION,
            actor_address,
            Effect::Reserved {
                reservation: id,
                resource,
                amount,
                expires_at_ms,
            },
        )
        .with_warnings(warnings)
    }

    fn own_reservation(
        &self,
        actor: PrincipalId,
        id: ReservationId,
        action: &'static str,
    ) -> Result<(), Box<Event>> {
        match self.reservations.get(&id) {
            None => Err(Box::new(Event::denied(
                action,
                format!("reservation:{id}"),
                not_found("reservation", id),
            ))),
            Some(reservation) if reservation.principal != actor => Err(Box::new(Event::denied(
                action,
                format!("reservation:{id}"),
                forbidden("a reservation is committed or released by the principal that made it"),
            ))),
            Some(_) => Ok(()),
        }
    }

    fn commit(
        &mut self,
        actor: PrincipalId,
        actor_address: &str,
        id: ReservationId,
        actual: u64,
    ) -> Event {
        const ACTION: &str = "ledger.commit";
        if let Err(event) = self.own_reservation(actor, id, ACTION) {
            return *event;
        }
        let reservation = self.reservations.get(&id).expect("checked above").clone();
        if reservation.state != ReservationState::Reserved {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!("reservation {id} is already committed")),
            );
        }
        let resource = reservation.resource;
        let window_ms = self
            .quotas
            .as_ref()
            .expect("genesis applied")
            .window_ms(resource);
        // Take the reservation off every balance, then charge what fits everywhere:
        // an overrun is charged up to what remains and the rest recorded as shortfall.
        let mut room = u64::MAX;
        for member in &reservation.chain {
            if let Some(balance) = self.balances.get_mut(&(*member, resource)) {
                if resource.kind() == ResourceKind::Flow {
                    balance.roll_window(self.now_ms, window_ms);
                }
                balance.reserved = balance.reserved.saturating_sub(reservation.amount);
                room = room.min(balance.available());
            }
        }
        let charged = actual.min(room);
        let shortfall = actual - charged;
        for member in &reservation.chain {
            if let Some(balance) = self.balances.get_mut(&(*member, resource)) {
                balance.used = balance.used.saturating_add(charged);
            }
        }
        if let Some(balance) = self.balances.get_mut(&(actor, resource)) {
            balance.shortfall = balance.shortfall.saturating_add(shortfall);
        }
        self.expiries.remove(&(reservation.expires_at_ms, id));
        match resource {
            Resource::LlmBudgetUsd => {
                if let Some(limit) = self.limits.get_mut("llm_spend_usd") {
                    limit.roll_window(self.now_ms);
                    limit.reserved = limit.reserved.saturating_sub(reservation.amount);
                    limit.usage = limit.usage.saturating_add(actual);
                }
            }
            Resource::DiskBytes => {
                if let Some(limit) = self.limits.get_mut("data_creation_bytes") {
                    limit.roll_window(self.now_ms);
                    limit.usage = limit.usage.saturating_add(charged);
                }
            }
            _ => {}
        }
        if resource.kind() == ResourceKind::Gauge {
            let held = self.reservations.get_mut(&id).expect("exists");
            held.state = ReservationState::Held { actual: charged };
        } else {
            self.forget_reservation(id, actor);
        }
        let effect = Effect::Committed {
            reservation: id,
            resource,
            reserved: reservation.amount,
            actual,
            charged,
            refunded: reservation.amount.saturating_sub(actual),
            shortfall,
        };
        Event::allowed(ACTION, actor_address, effect)
    }

    /// Gives a reservation or hold back in full. The caller has checked ownership.
    fn release(&mut self, id: ReservationId, action: &'static str) -> Event {
        let reservation = self.reservations.get(&id).expect("caller checked").clone();
        let resource = reservation.resource;
        let amount = match reservation.state {
            ReservationState::Reserved => reservation.amount,
            ReservationState::Held { actual } => actual,
        };
        for member in &reservation.chain {
            if let Some(balance) = self.balances.get_mut(&(*member, resource)) {
                match reservation.state {
                    ReservationState::Reserved => {
                        balance.reserved = balance.reserved.saturating_sub(amount)
                    }
                    ReservationState::Held { .. } => {
                        balance.used = balance.used.saturating_sub(amount)
                    }
                }
            }
        }
        if reservation.state == ReservationState::Reserved && resource == Resource::LlmBudgetUsd {
            if let Some(limit) = self.limits.get_mut("llm_spend_usd") {
                limit.reserved = limit.reserved.saturating_sub(amount);
            }
        }
        self.expiries.remove(&(reservation.expires_at_ms, id));
        self.forget_reservation(id, reservation.principal);
        let subject = self.principals[&reservation.principal].address.clone();
        Event::allowed(
            action,
            subject,
            Effect::Released {
                reservation: id,
                resource,
                amount,
            },
        )
    }

    fn forget_reservation(&mut self, id: ReservationId, principal: PrincipalId) {
        self.reservations.remove(&id);
        if let Some(count) = self.open_reservations.get_mut(&principal) {
            *count -= 1;
            if *count == 0 {
                self.open_reservations.remove(&principal);
            }
        }
    }

    fn expire_due(&mut self, events: &mut Vec<Event>) {
        while let Some(&(at_ms, id)) = self.expiries.first() {
            if at_ms > self.now_ms {
                break;
            }
            let mut event = self.release(id, "ledger.expire");
            event.decision = Decision::Expired;
            event.reason = Reason::ReservationExpired {
                expired_at_ms: at_ms,
            };
            events.push(event);
        }
    }

    fn grant(
        &mut self,
        actor: PrincipalId,
        actor_address: &str,
        to: PrincipalId,
        resource: Resource,
        amount: u64,
    ) -> Event {
        const ACTION: &str = "ledger.grant";
        let Some(child) = self.principals.get(&to).filter(|p| p.standing) else {
            return Event::denied(ACTION, to.to_string(), not_found("principal", to));
        };
        let child_address = child.address.clone();
        if child.parent != Some(actor) {
            return Event::denied(
                ACTION,
                child_address,
                forbidden(format!(
                    "only the parent of {} may grant it quota",
                    child.address
                )),
            );
        }
        let own_quota = self.balances.get(&(actor, resource)).and_then(|b| b.quota);
        if own_quota.is_some_and(|quota| amount > quota) {
            return Event::denied(
                ACTION,
                child_address,
                invalid(format!(
                    "cannot grant {amount} {resource}: {actor_address}'s own quota is {}",
                    own_quota.unwrap_or(0)
                )),
            );
        }
        let balance = self.balances.entry((to, resource)).or_default();
        balance.quota = Some(amount);
        Event::allowed(
            ACTION,
            child_address.clone(),
            Effect::Granted {
                to: child_address,
                resource,
                amount,
            },
        )
    }

    fn free(
        &mut self,
        actor: PrincipalId,
        actor_address: &str,
        resource: Resource,
        amount: u64,
    ) -> Event {
        const ACTION: &str = "ledger.free";
        if resource != Resource::DiskBytes {
            return Event::denied(
                ACTION,
                actor_address,
                invalid("only disk_bytes can be freed; other stock is spent"),
            );
        }
        let used = self.balances.get(&(actor, resource)).map_or(0, |b| b.used);
        if amount == 0 || amount > used {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!(
                    "amount must be between 1 and the {used} bytes in use"
                )),
            );
        }
        for member in self.chain(actor) {
            if let Some(balance) = self.balances.get_mut(&(member, resource)) {
                balance.used = balance.used.saturating_sub(amount);
            }
        }
        Event::allowed(ACTION, actor_address, Effect::Freed { resource, amount })
    }
}

fn invalid(message: impl Into<String>) -> Reason {
    Reason::Invalid {
        message: message.into(),
    }
}

fn forbidden(message: impl Into<String>) -> Reason {
    Reason::Forbidden {
        message: message.into(),
    }
}

fn not_found(what: &str, id: impl std::fmt::Display) -> Reason {
    Reason::NotFound {
        what: what.to_string(),
        id: id.to_string(),
    }
}
