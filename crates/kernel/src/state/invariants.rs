//! [`State::check_invariants`]: what must hold between any two commands. The seeded
//! simulation (`tests/it/simulation.rs`) asserts it after every step of random and
//! adversarial command streams; a failure names the first broken invariant.

use std::collections::BTreeMap;

use super::State;
use crate::ledger::{ReservationState, Resource};
use crate::limits::LimitName;
use crate::principal::{PrincipalId, PrincipalKind};
use crate::tasks::TaskStatus;
use crate::workers::WorkerState;
use crate::PRINCIPAL_DEPTH_MAX;

impl State {
    /// Checks every invariant of the state; the first one broken, explained.
    ///
    /// - Ledger conservation: each balance's `reserved` is exactly the open
    ///   reservations held at it plus the task budgets its chain pays for plus the
    ///   nodes' edge leases of io_ops; `llm_spend_usd`'s reserved amount is exactly
    ///   the open LLM reservations and `data_creation_bytes`'s the nodes' edge
    ///   leases; each edge lease has its one expiry entry.
    /// - Usage equals what it counts: accounts, open tasks, active workers (explicit
    ///   and implicit sessions), leases per principal, open reservations per principal.
    /// - One lease per task, held exactly by the claimed and in-progress tasks, each
    ///   with one expiry; claimable tasks are indexed once.
    /// - No reservation without its holds: each reserved one has its expiry entry.
    /// - Every artifact is a standing principal of kind artifact, under its deployer.
    /// - Tasks indexed by their status, once each; finished trees filed once, whole
    ///   and finished, and past the retention rule only by what one command may
    ///   retire.
    /// - Queues within their bounds; principal ancestry within its bound; due times
    ///   (reviews, brake expiries) only for proposals that wait for them.
    pub fn check_invariants(&self) -> Result<(), String> {
        if !self.is_initialized() {
            return Ok(());
        }
        self.check_ledger()?;
        self.check_counts()?;
        self.check_board()?;
        self.check_retention()?;
        self.check_governance()?;
        self.check_artifacts()?;
        self.check_alerts()?;
        self.limits.check()
    }

    /// Alerts within their bound, numbered in order; a quota alert stands raised
    /// only for a principal with standing.
    fn check_alerts(&self) -> Result<(), String> {
        self.alerts
            .check(|principal| self.principals.get(principal).is_some_and(|p| p.standing))
    }

    fn check_ledger(&self) -> Result<(), String> {
        let mut expected: BTreeMap<(PrincipalId, Resource), u64> = BTreeMap::new();
        let mut llm_reserved = 0u64;
        self.book.check()?;
        for reservation in self.book.reservations() {
            if reservation.state != ReservationState::Reserved {
                continue;
            }
            if reservation.chain != self.chain(reservation.principal) {
                return Err(format!(
                    "reservation {} is held at {:?}, not its principal's chain",
                    reservation.id, reservation.chain
                ));
            }
            for member in &reservation.chain {
                *expected.entry((*member, reservation.resource)).or_insert(0) += reservation.amount;
            }
            if reservation.resource == Resource::LlmBudgetUsd {
                llm_reserved += reservation.amount;
            }
        }
        for task in self.tasks.all() {
            if let Some(budget) = &task.budget {
                for member in self.chain(budget.payer) {
                    *expected
                        .entry((member, Resource::LlmBudgetUsd))
                        .or_insert(0) += budget.remaining_micro_usd;
                }
            }
        }
        for lease in self.edge_leases.all() {
            for leased in lease.io_ops.values() {
                for member in &leased.chain {
                    *expected.entry((*member, Resource::IoOps)).or_insert(0) += leased.amount;
                }
            }
        }
        for ((principal, resource), balance) in self.book.balances() {
            let want = expected.get(&(*principal, *resource)).copied().unwrap_or(0);
            if balance.reserved != want {
                return Err(format!(
                    "{principal} {resource}: reserved {} but its reservations and task budgets hold {want}",
                    balance.reserved
                ));
            }
        }
        if let Some(limit) = self.limits.get(&LimitName::DataCreationBytes) {
            let leased = self.edge_leased_data_bytes();
            if limit.reserved != leased {
                return Err(format!(
                    "data_creation_bytes reserved {} but the nodes' edge leases hold {leased}",
                    limit.reserved
                ));
            }
        }
        self.edge_leases.check()?;
        if let Some(limit) = self.limits.get(&LimitName::LlmSpendUsd) {
            if limit.reserved != llm_reserved {
                return Err(format!(
                    "llm_spend_usd reserved {} but open LLM reservations hold {llm_reserved}",
                    limit.reserved
                ));
            }
        }
        Ok(())
    }

    fn check_counts(&self) -> Result<(), String> {
        let standing = |kind: PrincipalKind| {
            self.principals
                .all()
                .filter(|p| p.standing && p.kind == kind)
                .count() as u64
        };
        for (limit, kind) in [
            (LimitName::AiAccounts, PrincipalKind::Ai),
            (LimitName::HumanAccounts, PrincipalKind::Human),
        ] {
            let usage = self.limits.get(&limit).map_or(0, |l| l.usage);
            if usage != standing(kind) {
                return Err(format!(
                    "{limit} usage {usage}, but {} have standing",
                    standing(kind)
                ));
            }
        }
        self.check_tokens_and_grants()?;
        self.check_sessions()
    }

    /// Tokens found by their hashes and owned; grants due to end exactly when they
    /// wait for an end; principals within depth, the removed holding no live token.
    fn check_tokens_and_grants(&self) -> Result<(), String> {
        self.tokens.check()?;
        // An active grant is due to end; so is a tool call's request waiting for its
        // decision.
        let waits_for_end = |g: &crate::grants::Grant| match g.state {
            crate::grants::GrantState::Active => true,
            crate::grants::GrantState::Pending => {
                matches!(g.what, crate::grants::GrantWhat::ToolCall { .. })
            }
            _ => false,
        };
        self.grants.check(waits_for_end)?;
        for token in self.tokens.all() {
            if !self.principals.contains(token.principal) {
                return Err(format!("token {} belongs to no principal", token.id));
            }
        }
        for principal in self.principals.all() {
            if self.chain(principal.id).len() > PRINCIPAL_DEPTH_MAX {
                return Err(format!("{} is deeper than allowed", principal.address));
            }
            if !principal.standing
                && self
                    .tokens_of(principal.id)
                    .any(|token| token.revoked.is_none())
            {
                return Err(format!(
                    "{} was removed but holds an unrevoked token",
                    principal.address
                ));
            }
        }
        Ok(())
    }

    /// Worker sessions: `active_workers` counts them, the deadlines' index holds the
    /// active ones; the quarantined hold nothing; implicit sessions hold leases.
    fn check_sessions(&self) -> Result<(), String> {
        let active = self
            .workers
            .all()
            .filter(|w| w.state == WorkerState::Active)
            .count() as u64
            + self.leases.implicit_count() as u64;
        let usage = self
            .limits
            .get(&LimitName::ActiveWorkers)
            .map_or(0, |l| l.usage);
        if usage != active {
            return Err(format!(
                "active_workers usage {usage}, but {active} sessions (explicit and implicit) are active"
            ));
        }
        // The deadlines' index holds every active session at its deadline (what
        // loss detection and `active_workers` walk).
        self.workers.check()?;
        for principal in self.anomaly.quarantined() {
            let holds_anything = self.book.open_of(*principal) > 0
                || self.leases.held_by(*principal) > 0
                || self
                    .workers
                    .all()
                    .any(|w| w.principal == *principal && w.state == WorkerState::Active)
                || self
                    .limits
                    .all()
                    .any(|l| l.queue.iter().any(|q| q.actor == *principal));
            if holds_anything {
                return Err(format!(
                    "quarantined {principal} still holds reservations, leases, sessions or queue places"
                ));
            }
        }
        Ok(())
    }

    fn check_board(&self) -> Result<(), String> {
        let open = self.tasks.all().filter(|t| t.status.is_open()).count() as u64;
        let usage = self
            .limits
            .get(&LimitName::TaskQueueDepth)
            .map_or(0, |l| l.usage);
        if usage != open {
            return Err(format!(
                "task_queue_depth usage {usage}, but {open} tasks are open"
            ));
        }
        for task in self.tasks.all() {
            let kept = task.budget.as_ref().map_or(0, |b| b.remaining_micro_usd);
            if !task.status.is_open() && kept > 0 {
                return Err(format!(
                    "{} is {} and still holds {kept} micro-dollars of budget",
                    task.address,
                    task.status.as_str()
                ));
            }
        }
        let mut leases: BTreeMap<PrincipalId, u32> = BTreeMap::new();
        let mut leased = 0;
        for task in self.tasks.all() {
            let should_hold = matches!(task.status, TaskStatus::Claimed | TaskStatus::InProgress);
            match (&task.lease, should_hold) {
                (Some(lease), true) => {
                    if lease.expires_at_ms > lease.attempt_deadline_ms {
                        return Err(format!(
                            "{}'s lease runs past its attempt's deadline",
                            task.address
                        ));
                    }
                    leased += 1;
                    *leases.entry(lease.holder).or_insert(0) += 1;
                    if !self.leases.ends_at(&task.address, lease.expires_at_ms) {
                        return Err(format!("{}'s lease has no expiry entry", task.address));
                    }
                }
                (None, false) => {}
                (lease, _) => {
                    return Err(format!(
                        "{} is {} with lease {:?}",
                        task.address,
                        task.status.as_str(),
                        lease.as_ref().map(|l| l.token)
                    ))
                }
            }
            let indexed = self.index.is_offered(&task.address);
            if indexed != (task.status == TaskStatus::Pending) {
                return Err(format!(
                    "{} is {} but {}indexed as claimable",
                    task.address,
                    task.status.as_str(),
                    if indexed { "" } else { "not " }
                ));
            }
            if let Some(budget) = &task.budget {
                if !task.status.is_open() && budget.remaining_micro_usd > 0 {
                    return Err(format!(
                        "{} ended with {} micro-dollars still held",
                        task.address, budget.remaining_micro_usd
                    ));
                }
            }
        }
        self.leases.check(leased, &leases)?;
        self.index.check()
    }

    /// One vote per lineage, each on its root's side; no proposal passed unless
    /// distinct roots of each kind met the quorum; no brake confirmed by its own
    /// lineage or its own side.
    fn check_lineage_votes(&self, proposal: &crate::governance::Proposal) -> Result<(), String> {
        use crate::governance::{ChangeKind, ProposalState, Side, VoteChoice};
        let id = proposal.id;
        let mut roots = std::collections::BTreeSet::new();
        let (mut human_roots, mut ai_roots) = (0u64, 0u64);
        for (voter, vote) in &proposal.votes {
            if self.lineage_root(*voter) != vote.root {
                return Err(format!("proposal {id}: {voter}'s vote names another root"));
            }
            if !roots.insert(vote.root) {
                return Err(format!("proposal {id}: two votes of lineage {}", vote.root));
            }
            let root_side = self
                .principals
                .get(vote.root)
                .and_then(|root| match root.kind {
                    PrincipalKind::Human => Some(Side::Human),
                    PrincipalKind::Ai => Some(Side::Ai),
                    _ => None,
                });
            if root_side != Some(vote.side) {
                return Err(format!("proposal {id}: {voter} voted off its root's side"));
            }
            if vote.choice != VoteChoice::Veto {
                match vote.side {
                    Side::Human => human_roots += 1,
                    Side::Ai => ai_roots += 1,
                }
            }
        }
        let passed_vote = matches!(
            proposal.state,
            ProposalState::Applied | ProposalState::RolledBack
        ) && proposal.kind != ChangeKind::Brake;
        if passed_vote {
            let rule = self
                .governance
                .config()
                .rule(proposal.kind)
                .ok_or(format!("proposal {id} passed without a rule"))?;
            if human_roots < rule.human_quorum as u64 || ai_roots < rule.ai_quorum as u64 {
                return Err(format!(
                    "proposal {id} passed with {human_roots} human and {ai_roots} AI lineages voting, quorums {} and {}",
                    rule.human_quorum, rule.ai_quorum
                ));
            }
        }
        if let Some(by) = &proposal.confirmed_by {
            let confirmer = self
                .directory
                .id_of(by)
                .ok_or(format!("brake {id} confirmed by unknown {by}"))?;
            if proposal.proposer != PrincipalId::SYSTEM
                && self.same_lineage(confirmer, proposal.proposer)
            {
                return Err(format!("brake {id} confirmed by its own lineage ({by})"));
            }
        }
        Ok(())
    }

    fn check_governance(&self) -> Result<(), String> {
        self.governance.check()?;
        for proposal in self.governance.all() {
            self.check_lineage_votes(proposal)?;
        }
        Ok(())
    }

    fn check_artifacts(&self) -> Result<(), String> {
        for artifact in self.artifacts.all() {
            let principal = self
                .principals
                .get(artifact.principal)
                .ok_or_else(|| format!("artifact {} has no principal", artifact.address))?;
            if !principal.standing || principal.kind != PrincipalKind::Artifact {
                return Err(format!(
                    "artifact {} is kept but its principal has no standing or is not an artifact",
                    artifact.address
                ));
            }
            if principal.parent != Some(artifact.deployer) {
                return Err(format!(
                    "artifact {} is not a child of its deployer",
                    artifact.address
                ));
            }
        }
        Ok(())
    }
}
