//! The kernel's state and [`State::apply`], the one door every change goes through.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandBody, CreatePrincipal, Required};
use crate::event::{Applied, Decision, Effect, Event, Reason};
use crate::genesis::{Genesis, QuotaConfig};
use crate::ledger::{
    Balance, Reservation, ReservationId, ReservationState, Resource, ResourceKind,
};
use crate::limits::LimitName;
use crate::limits::{Gate, Limit, LimitSpec, OnSoft, QueuedAdmission, BUILTIN_LIMITS};
use crate::principal::{Principal, PrincipalId, PrincipalKind, Role, TokenHash};
use crate::{validate_address, JUSTIFICATION_BYTES_MAX, NAME_BYTES_MAX, PRINCIPAL_DEPTH_MAX};

mod admission;
mod alerts;
mod anomaly;
mod artifacts;
mod board;
mod board_reads;
mod book;
mod brakes;
mod claims;
mod classify;
mod cluster;
mod decompose;
mod directory;
mod edge;
mod finished;
mod genesis;
mod governance;
mod grants;
mod invariants;
mod ledger;
mod limit_table;
mod lineage;
mod outcomes;
mod principals;
mod proposals;
mod relaxation;
mod retention;
mod roster;
mod sessions;
mod streams;
mod task_control;
mod task_index;
mod task_leases;
mod task_updates;
mod tasks;
mod tokens;
mod tool_calls;
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
    /// `quotas.toml`: empty in the empty state, genesis's after.
    quotas: QuotaConfig,
    /// The principals, by id.
    principals: roster::Roster,
    /// Every token, found by id and by hash.
    tokens: tokens::Keyring,
    /// Requests for more (scopes, roles, quotas, tool calls), and when they end.
    grants: grants::Requests,
    /// Principals' addresses, numbering and category counts.
    directory: directory::Directory,
    /// The system-wide limits in force.
    limits: limit_table::LimitTable,
    /// Balances, reservations and holds, and when reservations expire.
    book: book::Book,
    /// Governance: its configuration, the proposals and what they wait for.
    governance: proposals::Proposals,
    /// The live tasks, the board's configuration and the last root number.
    tasks: board::Board,
    /// The board's indexes: claimable tasks, what waits on what, tasks by status.
    index: task_index::TaskIndex,
    /// `retention.toml`'s `[tasks]`: the shipped defaults in the empty state,
    /// genesis's after.
    retention: crate::retention::RetentionConfig,
    /// Finished trees still in the live state, and the tasks retired so far.
    finished: finished::Finished,
    /// When leases end and backoffs are over; leases held; implicit sessions.
    leases: task_leases::TaskLeases,
    /// Worker sessions, their deadlines and the tasks leased to each.
    workers: sessions::Sessions,
    /// Durable bus streams, by name.
    streams: streams::Streams,
    /// What each principal did, against `anomaly.toml`, and who is quarantined.
    anomaly: anomaly::Watch,
    /// Deployed artifacts, by their principal.
    artifacts: artifacts::Deployed,
    /// Alert thresholds standing raised, and the latest alerts.
    alerts: alerts::Alerts,
    /// What each node of a cluster holds of the edge allowances, and when.
    edge_leases: edge::Leases,
    /// A cluster's admitted node keys (none on an embedded node).
    cluster_nodes: cluster::Admitted,
    /// In a cluster, where the last command applied stood in the cluster's log.
    log_place: Option<crate::cluster::LogPlace>,
}

/// What applying one command produces besides the events returned in order: passed
/// explicitly (`fx`) to every part that produces it, and made into [`Applied`] at the
/// end of [`State::apply`]. Nothing of it lives in the state between commands.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Events decided while deciding the primary event, emitted right after it (a
    /// brake confirmed by a vote, a proposal closed, a task charged, a quarantine).
    pub(crate) consequences: Vec<Event>,
    /// Tasks that became claimable (`pending`), in order: offered to workers.
    pub(crate) offered: Vec<crate::TaskAddress>,
    /// Roots of trees one of whose tasks finished: checked once, at the end of the
    /// command, for whether the whole tree is finished.
    pub(crate) finishing: BTreeSet<crate::TaskAddress>,
    /// Tasks that left the live state, whole, for the node's archive.
    pub(crate) retired: Vec<crate::tasks::Task>,
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
        self.log_place = command.place.or(self.log_place);
        let mut events = Vec::new();
        let mut fx = Effects::default();
        if let (CommandBody::ReportHealth(health), PrincipalId::SYSTEM) =
            (&command.body, command.actor)
        {
            // The node's figures belong to the window they were observed in, which
            // may be the one that closes below.
            self.add_health(health);
        }
        self.expire_due(&mut events);
        self.expire_edge_leases(&mut events);
        self.process_governance_due(&mut events);
        self.process_grants_due(&mut events);
        self.process_workers_due(&mut fx, &mut events);
        self.process_tasks_due(&mut fx, &mut events);
        let primary = self.decide(command, &mut fx);
        if command.actor != PrincipalId::SYSTEM {
            self.count_decision(&primary);
        }
        let primary_index = events.len();
        events.push(primary);
        events.append(&mut fx.consequences);
        if command.actor != PrincipalId::SYSTEM && self.anomaly.is_on() {
            self.observe(&mut fx, command.actor, primary_index, &mut events);
        }
        self.admit_waiting(&mut events);
        self.note_finished_trees(&mut fx);
        self.retire_finished(&mut fx, &mut events);
        debug_assert!(
            fx.consequences.is_empty(),
            "consequences are decided with the primary event, never after it"
        );
        Applied {
            events,
            primary_index,
            offered: fx.offered,
            retired: fx.retired,
        }
    }

    /// The quarantine of `principal` or of one of its ancestors: a child never acts
    /// while its parent is quarantined.
    /// Why `actor` may not act now, as every command is checked first: it has no
    /// standing, it is an observer, or it is quarantined. What a node answers from
    /// the state without a command refuses as the command would.
    pub fn actor_refusal(&self, actor: PrincipalId) -> Option<Reason> {
        let Some(principal) = self.principals.get(actor).filter(|p| p.standing) else {
            return Some(Reason::NoStanding { actor });
        };
        if !principal.may_act() {
            return Some(forbidden("observers may read but not act"));
        }
        self.quarantine_over(actor)
            .map(|quarantine| Reason::Quarantined {
                since_ms: quarantine.since_ms,
                evidence: Box::new(quarantine.evidence.clone()),
            })
    }

    pub fn quarantine_over(&self, principal: PrincipalId) -> Option<&crate::anomaly::Quarantine> {
        let mut current = Some(principal);
        for _ in 0..crate::PRINCIPAL_DEPTH_MAX {
            let id = current?;
            if let Some(quarantine) = self.anomaly.quarantine_of(id) {
                return Some(quarantine);
            }
            current = self.principals.get(id).and_then(|p| p.parent);
        }
        None
    }

    /// Whether genesis has been applied: it is what creates the system principal.
    /// Until then every command but genesis is refused, and the configurations the
    /// state holds are the empty state's, which nothing reads.
    pub fn is_initialized(&self) -> bool {
        self.principals.get(PrincipalId::SYSTEM).is_some()
    }

    pub fn quota_config(&self) -> &QuotaConfig {
        &self.quotas
    }

    pub fn principal(&self, id: PrincipalId) -> Option<&Principal> {
        self.principals.get(id)
    }

    /// The principal with standing that holds a live token (neither revoked nor
    /// expired at the state's time) with this hash.
    pub fn principal_by_token(&self, token_hash: &TokenHash) -> Option<&Principal> {
        self.token_by_hash(token_hash)
            .filter(|(token, principal)| token.is_live(self.now_ms) && principal.standing)
            .map(|(_, principal)| principal)
    }

    pub fn principal_by_address(&self, address: &str) -> Option<&Principal> {
        self.directory
            .id_of(address)
            .and_then(|id| self.principals.get(id))
    }

    /// All principals ever created, by id, including removed ones.
    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.principals.all()
    }

    /// A limit by its Colony or Hypernet name.
    pub fn limit(&self, name: &str) -> Option<&Limit> {
        self.limits.get(&LimitName::parse(name)?)
    }

    /// A limit by its type.
    pub fn limit_named(&self, name: LimitName) -> Option<&Limit> {
        self.limits.get(&name)
    }

    fn limit_mut(&mut self, name: &str) -> Option<&mut Limit> {
        self.limits.edit(&LimitName::parse(name)?)
    }

    pub fn limits(&self) -> impl Iterator<Item = &Limit> {
        self.limits.all()
    }

    /// A copy of a limit as it stands at `now_ms` (a rate window may have turned
    /// since the last command).
    pub fn limit_at(&self, name: &str, now_ms: u64) -> Option<Limit> {
        self.limit_named_at(LimitName::parse(name)?, now_ms)
    }

    /// [`State::limit_at`] by the limit's type.
    pub fn limit_named_at(&self, name: LimitName, now_ms: u64) -> Option<Limit> {
        let mut limit = self.limits.get(&name)?.clone();
        limit.roll_window(now_ms.max(self.now_ms));
        Some(limit)
    }

    /// A principal's balances as they stand at `now_ms` (flow windows rolled).
    pub fn balances_at(&self, principal: PrincipalId, now_ms: u64) -> Vec<(Resource, Balance)> {
        Resource::ALL
            .into_iter()
            .filter_map(|resource| Some((resource, self.balance_at(principal, resource, now_ms)?)))
            .collect()
    }

    /// A principal's balance of one resource as it stands at `now_ms` (its flow
    /// window rolled), when it has one.
    pub fn balance_at(
        &self,
        principal: PrincipalId,
        resource: Resource,
        now_ms: u64,
    ) -> Option<Balance> {
        let mut balance = self.book.balance(principal, resource)?.clone();
        if resource.kind() == ResourceKind::Flow {
            balance.roll_window(now_ms.max(self.now_ms), self.quotas.window_ms(resource));
        }
        Some(balance)
    }

    pub fn reservation(&self, id: ReservationId) -> Option<&Reservation> {
        self.book.reservation(id)
    }

    /// Open reservations and holds of a principal.
    pub fn reservations_of(&self, principal: PrincipalId) -> impl Iterator<Item = &Reservation> {
        self.book
            .reservations()
            .filter(move |reservation| reservation.principal == principal)
    }

    /// When the next time-driven change (a reservation expiry) is due. The node logs
    /// a [`CommandBody::Tick`] once that time has come.
    pub fn next_due_ms(&self) -> Option<u64> {
        let expiry = self.book.next_expiry_ms();
        [
            expiry,
            self.governance_next_due_ms(),
            self.grants_next_due_ms(),
            self.tasks_next_due_ms(),
            self.workers_next_due_ms(),
            self.edge_leases_next_due_ms(),
            self.retention_next_due_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One command's decision: the checks every command passes (origin, genesis
    /// first, the actor), then one arm per kind of command handing it to the part
    /// that decides it. Over 120 lines because it is that table, one line or three
    /// per kind; each kind's logic is in its own file.
    fn decide(&mut self, command: &Command, fx: &mut Effects) -> Event {
        let action = command.body.name();
        if let Some(origin) = &command.origin {
            if let Err(refused) = self.check_origin(command, origin) {
                return *refused;
            }
        }
        if let CommandBody::Genesis(genesis) = &command.body {
            let event = self.genesis(command, genesis);
            if let (Some(origin), true) = (&command.origin, event.decision.is_allowed()) {
                self.admit_genesis_node(command, origin);
            }
            return event;
        }
        if !self.is_initialized() {
            return Event::denied(
                action,
                "kernel",
                invalid("genesis has not been applied yet"),
            );
        }
        let actor = match self.principals.get(command.actor) {
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
        let (actor_is_admin, actor_is_system) =
            (actor.is_admin(), actor.kind == PrincipalKind::System);
        if command.justification.len() > JUSTIFICATION_BYTES_MAX {
            return Event::denied(
                action,
                actor_address,
                invalid(format!(
                    "a justification is at most {JUSTIFICATION_BYTES_MAX} bytes"
                )),
            );
        }
        if let Some(reason) = self.actor_refusal(command.actor) {
            return Event::denied(action, actor_address, reason);
        }
        if !actor_is_system {
            // The governance lane: proposals, votes, and an admin's administration
            // are counted but never refused by a quota or a limit, so that no burst
            // of other work can keep the colony from being governed.
            let lane = command.body.in_governance_lane(actor_is_admin);
            // Every command is an I/O operation of its actor: this is what keeps a
            // misbehaving agent from flooding the log.
            if let Err(reason) = self.charge_flow(command.actor, Resource::IoOps, 1, lane) {
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
        // Roles, from one table (after the I/O charge: a refused command still costs
        // its actor one operation).
        match command.body.required() {
            Required::Admin(why) if !actor_is_admin => {
                return Event::denied(action, actor_address, forbidden(why))
            }
            Required::System(why) if !actor_is_system => {
                return Event::denied(action, actor_address, forbidden(why))
            }
            _ => {}
        }
        match &command.body {
            CommandBody::Genesis(_) => unreachable!("handled above"),
            CommandBody::PostTask(new) => self.post_task(fx, command, &actor_address, new),
            CommandBody::ClaimTask {
                capabilities,
                lease_ms,
                worker,
            } => self.claim_task(
                fx,
                command,
                &actor_address,
                capabilities,
                *lease_ms,
                *worker,
            ),
            CommandBody::RegisterWorker(new) => {
                self.register_worker(command, &actor_address, new, None)
            }
            CommandBody::WorkerHeartbeat { worker } => self.worker_heartbeat(command, *worker),
            CommandBody::LeaveWorker { worker } => self.leave_worker(fx, command, *worker),
            CommandBody::ClaimSpecificTask { address, lease_ms } => {
                self.claim_specific_task(fx, command, &actor_address, address, *lease_ms)
            }
            CommandBody::UpdateTask {
                address,
                token,
                update,
            } => self.update_task(fx, command, &actor_address, address, *token, update),
            CommandBody::RequeueTask { address } => {
                self.requeue_task(fx, &actor_address, address, &command.justification)
            }
            CommandBody::CancelTask { address } => {
                self.cancel_task(fx, command, &actor_address, address)
            }
            CommandBody::SetTaskPriority { address, priority } => {
                self.set_task_priority(command, address, *priority)
            }
            CommandBody::RecordToolCall(record) => {
                self.record_tool_call(fx, command, &actor_address, record)
            }
            CommandBody::AdmitNode { name, key } => {
                self.admit_node(command, &actor_address, name, key)
            }
            CommandBody::RemoveNode { key } => self.remove_node(key),
            CommandBody::Propose { target, brake_only } => {
                self.propose(command, target, *brake_only)
            }
            CommandBody::Vote { proposal, choice } => self.vote(fx, command, *proposal, *choice),
            CommandBody::Supervise { profile, pid, .. } => Event::allowed(
                action,
                format!("profile:{profile}"),
                Effect::Supervised { pid: *pid },
            ),
            CommandBody::ReportHealth(_) => Event::allowed(action, "health", Effect::None),
            CommandBody::Tick => Event::allowed(action, "time", Effect::None),
            CommandBody::DefineStream(spec) => self.define_stream(spec),
            CommandBody::DeleteStream { name } => self.delete_stream(name),
            CommandBody::WorkerDisconnected {
                worker,
                disconnected_at_ms,
                grace_ms,
            } => self.worker_disconnected(fx, *worker, *disconnected_at_ms, *grace_ms),
            CommandBody::RenewWorkers { heard } => self.renew_workers(heard),
            CommandBody::RenewLeases { heard } => self.renew_leases(heard),
            CommandBody::DeclareWorkerLost {
                worker,
                last_heard_ms,
            } => self.declare_worker_lost(fx, *worker, *last_heard_ms),
            CommandBody::ChargeEdge { usage } => self.charge_edge(fx, usage),
            CommandBody::LeaseEdge(request) => self.lease_edge(fx, request),
            CommandBody::CreatePrincipal(request) => self.create_principal(command, request, None),
            CommandBody::ReleaseQuarantine { principal } => {
                self.release_quarantine(command, *principal)
            }
            CommandBody::RemovePrincipal { principal } => {
                self.remove_principal(command, *principal)
            }
            CommandBody::CreateToken(new) => self.create_token(command, new),
            CommandBody::RequestGrant { what, ttl_ms } => {
                self.request_grant(command, what, *ttl_ms)
            }
            CommandBody::DecideGrant { grant, approve } => {
                self.decide_grant(command, *grant, *approve)
            }
            CommandBody::RevokeToken { principal, token } => {
                self.revoke_token(command, *principal, *token)
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
            CommandBody::Settle {
                reservation,
                actual,
                task,
            } => self.settle(
                fx,
                command.actor,
                &actor_address,
                *reservation,
                *actual,
                task.as_ref(),
            ),
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
            CommandBody::DeployArtifact(new) => self.deploy_artifact(command, &actor_address, new),
            CommandBody::SetArtifactRun { artifact, run } => {
                self.set_artifact_run(command, *artifact, *run)
            }
            CommandBody::Alert(report) => self.record_alert(command, report),
        }
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
