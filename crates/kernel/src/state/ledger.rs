//! The ledger: quota chains (a principal and its ancestors), reservations, commits
//! (overruns charged up to what remains), releases and expiries, grants, frees, and
//! the flows charged at once (`io_ops`, kept bytes).

use super::Effects;
use super::*;

impl State {
    /// The principal and its ancestors, nearest first: at most
    /// [`PRINCIPAL_DEPTH_MAX`] of them, which creation guarantees (parents are
    /// created before their children, so there is no cycle either).
    pub(super) fn chain(&self, principal: PrincipalId) -> Vec<PrincipalId> {
        let mut chain = vec![principal];
        let mut current = principal;
        while let Some(parent) = self.principals.get(current).and_then(|p| p.parent) {
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
    pub(super) fn check_chain(
        &mut self,
        chain: &[PrincipalId],
        resource: Resource,
        amount: u64,
    ) -> Result<(), Reason> {
        let window_ms = self.quotas.window_ms(resource);
        let now_ms = self.now_ms;
        for principal in chain {
            let Some(balance) = self.book.balance_mut(*principal, resource) else {
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
                    principal: self.principals.known(*principal).address.clone(),
                    refill_at_ms,
                });
            }
        }
        Ok(())
    }

    /// Consumes `amount` of a flow at once, without a reservation; in the governance
    /// `lane`, counted but never refused (usage may pass the quota, and the next
    /// ordinary command meets the result).
    pub(super) fn charge_flow(
        &mut self,
        principal: PrincipalId,
        resource: Resource,
        amount: u64,
        lane: bool,
    ) -> Result<(), Reason> {
        let chain = self.chain(principal);
        // Checking nothing still rolls the windows along the chain.
        self.check_chain(&chain, resource, if lane { 0 } else { amount })?;
        for member in chain {
            if let Some(balance) = self.book.balance_mut(member, resource) {
                balance.used = balance.used.saturating_add(amount);
            }
        }
        Ok(())
    }

    /// Counts `bytes` toward `data_creation_bytes`; refused past its hard value,
    /// except in the governance lane.
    pub(super) fn count_kept_bytes(&mut self, bytes: u64, lane: bool) -> Result<(), Reason> {
        let Some(limit) = self.limits.edit(&LimitName::DataCreationBytes) else {
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

    pub(super) fn reserve(
        &mut self,
        actor: PrincipalId,
        actor_address: &str,
        resource: Resource,
        amount: u64,
        ttl_ms: Option<u64>,
    ) -> Event {
        const ACTION: &str = "ledger.reserve";
        let quotas = &self.quotas;
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
        if self.book.open_of(actor) >= open_max {
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
            Resource::LlmBudgetUsd => Some(LimitName::LlmSpendUsd),
            Resource::DiskBytes => Some(LimitName::DataCreationBytes),
            _ => None,
        };
        if let Some(limit) = system_limit.and_then(|name| self.limits.edit(&name)) {
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
            if let Some(balance) = self.book.balance_mut(*member, resource) {
                balance.reserved = balance.reserved.saturating_add(amount);
            }
        }
        let id = self.last_seq;
        let expires_at_ms = self.now_ms.saturating_add(ttl_ms);
        self.book.file(Reservation {
            id,
            principal: actor,
            resource,
            amount,
            created_at_ms: self.now_ms,
            expires_at_ms,
            chain,
            state: ReservationState::Reserved,
        });
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

    pub(super) fn own_reservation(
        &self,
        actor: PrincipalId,
        id: ReservationId,
        action: &'static str,
    ) -> Result<(), Box<Event>> {
        match self.book.reservation(id) {
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

    pub(super) fn commit(
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
        let reservation = self.book.reservation(id).expect("checked above").clone();
        if reservation.state != ReservationState::Reserved {
            return Event::denied(
                ACTION,
                actor_address,
                invalid(format!("reservation {id} is already committed")),
            );
        }
        let resource = reservation.resource;
        let window_ms = self.quotas.window_ms(resource);
        // Take the reservation off every balance, then charge what fits everywhere:
        // an overrun is charged up to what remains and the rest recorded as shortfall.
        let mut room = u64::MAX;
        for member in &reservation.chain {
            if let Some(balance) = self.book.balance_mut(*member, resource) {
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
            if let Some(balance) = self.book.balance_mut(*member, resource) {
                balance.used = balance.used.saturating_add(charged);
            }
        }
        if let Some(balance) = self.book.balance_mut(actor, resource) {
            balance.shortfall = balance.shortfall.saturating_add(shortfall);
        }
        match resource {
            Resource::LlmBudgetUsd => {
                if let Some(limit) = self.limits.edit(&LimitName::LlmSpendUsd) {
                    limit.roll_window(self.now_ms);
                    limit.reserved = limit.reserved.saturating_sub(reservation.amount);
                    limit.usage = limit.usage.saturating_add(actual);
                }
            }
            Resource::DiskBytes => {
                if let Some(limit) = self.limits.edit(&LimitName::DataCreationBytes) {
                    limit.roll_window(self.now_ms);
                    limit.usage = limit.usage.saturating_add(charged);
                }
            }
            _ => {}
        }
        if resource.kind() == ResourceKind::Gauge {
            self.book.hold(id, charged);
        } else {
            self.book.forget(id);
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
    pub(super) fn release(&mut self, id: ReservationId, action: &'static str) -> Event {
        let reservation = self.book.reservation(id).expect("caller checked").clone();
        let resource = reservation.resource;
        let amount = match reservation.state {
            ReservationState::Reserved => reservation.amount,
            ReservationState::Held { actual } => actual,
        };
        for member in &reservation.chain {
            if let Some(balance) = self.book.balance_mut(*member, resource) {
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
            if let Some(limit) = self.limits.edit(&LimitName::LlmSpendUsd) {
                limit.reserved = limit.reserved.saturating_sub(amount);
            }
        }
        self.book.forget(id);
        let subject = self.principals.known(reservation.principal).address.clone();
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

    pub(super) fn expire_due(&mut self, events: &mut Vec<Event>) {
        while let Some((at_ms, id)) = self.book.expired(self.now_ms) {
            let mut event = self.release(id, "ledger.expire");
            event.decision = Decision::Expired;
            event.reason = Reason::ReservationExpired {
                expired_at_ms: at_ms,
            };
            events.push(event);
        }
    }

    pub(super) fn grant(
        &mut self,
        actor: PrincipalId,
        actor_address: &str,
        to: PrincipalId,
        resource: Resource,
        amount: u64,
    ) -> Event {
        const ACTION: &str = "ledger.grant";
        let Some(child) = self.principals.get(to).filter(|p| p.standing) else {
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
        let own_quota = self.book.balance(actor, resource).and_then(|b| b.quota);
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
        let balance = self.book.balance_or_new(to, resource);
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

    pub(super) fn free(
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
        let used = self.book.balance(actor, resource).map_or(0, |b| b.used);
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
            if let Some(balance) = self.book.balance_mut(member, resource) {
                balance.used = balance.used.saturating_sub(amount);
            }
        }
        Event::allowed(ACTION, actor_address, Effect::Freed { resource, amount })
    }

    /// An LLM call's settlement: the commit, and the task's charge while its lease
    /// holds, decided together. A lost lease does not undo the commit (the upstream
    /// was paid); the task is then not charged, and the decision says why.
    pub(super) fn settle(
        &mut self,
        fx: &mut Effects,
        actor: PrincipalId,
        actor_address: &str,
        reservation: ReservationId,
        actual: u64,
        task: Option<&(crate::TaskAddress, u64)>,
    ) -> Event {
        let mut event = self.commit(actor, actor_address, reservation, actual);
        event.action = "llm.settle";
        if !event.decision.is_allowed() || actual == 0 {
            return event;
        }
        if let Some((address, token)) = task {
            let charge = match self.check_lease(address, actor, *token) {
                Ok(()) => self.spend_task_budget_counted(address, actual, false),
                Err(reason) => Event::denied("task.spend", address.to_string(), reason),
            };
            fx.consequences.push(charge);
        }
        event
    }
}
