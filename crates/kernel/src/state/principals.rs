//! Principals: creation (validated, gated by the account limits and
//! `data_creation_bytes`, or queued past soft), their counts, and removal.

use super::*;

impl State {
    pub(super) fn create_principal(
        &mut self,
        command: &Command,
        request: &CreatePrincipal,
        admitted: Option<&QueuedAdmission>,
    ) -> Event {
        self.create_principal_as(command, request, admitted, true)
    }

    /// Creates a principal; with `may_queue` false, a limit that would queue the
    /// creation refuses it instead (a creation that is part of another decision,
    /// such as a deploy, cannot wait in the admission queue).
    pub(super) fn create_principal_as(
        &mut self,
        command: &Command,
        request: &CreatePrincipal,
        admitted: Option<&QueuedAdmission>,
        may_queue: bool,
    ) -> Event {
        const ACTION: &str = "principal.create";
        let subject = request
            .address
            .clone()
            .unwrap_or_else(|| request.kind.address_prefix().to_string());
        if let Err(message) = self.validate_creation(request) {
            return Event::denied(ACTION, subject, invalid(message));
        }
        if let Err(message) = self.may_spawn(command.actor, request) {
            return Event::denied(ACTION, subject, forbidden(message));
        }
        let account_limit = match request.kind {
            PrincipalKind::Human => Some(LimitName::HumanAccounts),
            PrincipalKind::Ai => Some(LimitName::AiAccounts),
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
        let category_usage = self.directory.in_category(&category);
        let mut warnings = Vec::new();
        let mut queue_reason = None;
        let gates = [
            (account_limit, 1, None),
            (Some(LimitName::TotalNodes), 1, None),
            (Some(LimitName::NodesPerCategory), 1, Some(category_usage)),
            (Some(LimitName::DataCreationBytes), data_bytes, None),
        ];
        for (name, amount, usage_override) in gates {
            let Some(name) = name else { continue };
            let Some(limit) = self.limits.edit(&name) else {
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
                Gate::Queue(reason) if !may_queue => return Event::denied(ACTION, subject, reason),
                Gate::Queue(reason) if admitted.is_none() => queue_reason = Some((name, reason)),
                Gate::Queue(reason) => warnings.push(reason),
                Gate::Deny(reason) => return Event::denied(ACTION, subject, reason),
            }
        }
        if let Some((limit_name, reason)) = queue_reason {
            let actor_is_admin = self.principals.known(command.actor).is_admin();
            let limit = self.limits.edit(&limit_name).expect("gated above");
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
        if let Some(limit) = self.limits.edit(&LimitName::DataCreationBytes) {
            limit.usage = limit.usage.saturating_add(data_bytes);
        }
        let address = self.insert_principal(command, request);
        let id = self.directory.id_of(&address).expect("just entered");
        let principal = self.principals.known(id);
        let effect = Effect::PrincipalCreated {
            id: principal.id,
            address: address.clone(),
            kind: principal.kind,
            parent: principal
                .parent
                .map(|parent| self.principals.known(parent).address.clone()),
        };
        let mut event = Event::allowed(ACTION, address, effect).with_warnings(warnings);
        if let Some(queued) = admitted {
            event.decision = Decision::Admitted;
            event.reason = Reason::LimitAllows {
                limit: account_limit.map_or("", LimitName::as_str).to_string(),
                ticket: queued.ticket,
                waited_ms: command.at_ms - queued.queued_at_ms,
            };
        }
        event
    }

    /// An admin creates any principal; anyone else who may act spawns only children
    /// of its own: AIs or artifacts, under itself, with no role it lacks and never
    /// admin, at the next address.
    fn may_spawn(&self, actor: PrincipalId, request: &CreatePrincipal) -> Result<(), String> {
        let Some(creator) = self.principals.get(actor) else {
            return Err("no such creator".into());
        };
        if creator.is_admin() {
            return Ok(());
        }
        if request.parent != Some(actor) {
            return Err(format!(
                "{} may create only children of its own (parent {}); admins create others",
                creator.address, creator.address
            ));
        }
        if !matches!(request.kind, PrincipalKind::Ai | PrincipalKind::Artifact) {
            return Err(
                "a principal spawns AIs and artifacts; only admins create humans and nodes".into(),
            );
        }
        if request.roles.contains(&Role::Admin)
            || request
                .roles
                .iter()
                .any(|role| !creator.roles.contains(role))
        {
            return Err("a child has no role its parent lacks, and never admin".into());
        }
        if request.address.is_some() {
            return Err("a spawned child takes the next address".into());
        }
        Ok(())
    }

    pub(super) fn validate_creation(&self, request: &CreatePrincipal) -> Result<(), String> {
        if request.name.trim().is_empty() || request.name.len() > NAME_BYTES_MAX {
            return Err(format!("a name is 1 to {NAME_BYTES_MAX} bytes"));
        }
        if request.name.chars().any(char::is_control) {
            return Err("a name holds no control characters".to_string());
        }
        if request.kind == PrincipalKind::System {
            return Err("there is only one system principal".to_string());
        }
        if self.tokens.knows(&request.token_hash) {
            return Err("this token is already in use".to_string());
        }
        if let Some(parent) = request.parent {
            if !self.principals.get(parent).is_some_and(|p| p.standing) {
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
            if self.directory.is_taken(address) {
                return Err(format!("address `{address}` is taken"));
            }
        }
        Ok(())
    }

    /// Creates the principal and its balances; the caller has validated and gated.
    pub(super) fn insert_principal(
        &mut self,
        command: &Command,
        request: &CreatePrincipal,
    ) -> String {
        let id = self.principals.take_id();
        let prefix = request.kind.address_prefix();
        let address = match &request.address {
            Some(address) => address.clone(),
            None => self.directory.next_free(prefix),
        };
        let mut roles = if request.roles.is_empty() {
            vec![Role::Member]
        } else {
            request.roles.clone()
        };
        roles.sort();
        roles.dedup();
        // An admin's (or genesis's) creation is independent: the root of a new
        // lineage. Anyone else spawns only under itself, into its own lineage.
        let root = match self.principals.get(command.actor) {
            Some(creator) if !creator.is_admin() => request
                .parent
                .and_then(|parent| self.principals.get(parent))
                .map_or(creator.root, |parent| parent.root),
            _ => id,
        };
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
            root,
            token_hash: request.token_hash,
        };
        let quotas = &self.quotas;
        for resource in Resource::ALL {
            let balance = Balance::with_quota(quotas.default_quota(request.kind, resource));
            *self.book.balance_or_new(id, resource) = balance;
        }
        let token = self.next_token_id();
        let creator = self
            .principals
            .get(command.actor)
            .map_or_else(|| address.clone(), |p| p.address.clone());
        self.insert_token(crate::tokens::Token {
            id: token,
            principal: id,
            name: "primary".to_string(),
            scopes: if request.scopes.is_empty() {
                vec!["*".to_string()]
            } else {
                request.scopes.clone()
            },
            created_at_ms: command.at_ms,
            created_by: creator,
            expires_at_ms: None,
            revoked: None,
            hash: principal.token_hash,
        });
        self.directory.enter(address.clone(), id);
        self.principals.add(principal);
        self.count_principal(request.kind, &address, 1);
        address
    }

    pub(super) fn count_principal(&mut self, kind: PrincipalKind, address: &str, delta: i64) {
        let category = address.split('.').next().unwrap_or("0").to_string();
        let fullest = self.directory.count(category, delta);
        let account_limit = match kind {
            PrincipalKind::Human => Some(LimitName::HumanAccounts),
            PrincipalKind::Ai => Some(LimitName::AiAccounts),
            _ => None,
        };
        for name in [account_limit, Some(LimitName::TotalNodes)]
            .into_iter()
            .flatten()
        {
            if let Some(limit) = self.limits.edit(&name) {
                limit.usage = limit.usage.saturating_add_signed(delta);
            }
        }
        if let Some(limit) = self.limits.edit(&LimitName::NodesPerCategory) {
            limit.usage = fullest;
        }
    }

    pub(super) fn remove_principal(&mut self, command: &Command, target: PrincipalId) -> Event {
        const ACTION: &str = "principal.remove";
        let Some(principal) = self.principals.get(target).filter(|p| p.standing) else {
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
        let actor_is_admin = self.principals.known(command.actor).is_admin();
        if !actor_is_admin && !self.chain(target).contains(&command.actor) {
            return Event::denied(
                ACTION,
                address,
                forbidden("only admins remove principals, and parents their own descendants"),
            );
        }
        // Its descendants go with it (a child never outlives its parent), deepest
        // first; found by walking each principal's bounded ancestry, never recursing.
        let mut descendants: Vec<(usize, PrincipalId)> = self
            .principals
            .all()
            .filter(|p| p.standing && p.id != target)
            .filter_map(|p| {
                let chain = self.chain(p.id);
                chain.contains(&target).then_some((chain.len(), p.id))
            })
            .collect();
        descendants.sort_by(|a, b| b.cmp(a));
        let by = self.principals.known(command.actor).address.clone();
        let mut released = 0;
        for (_, descendant) in descendants {
            released += self.take_standing(descendant, command.at_ms, &by, ACTION);
        }
        released += self.take_standing(target, command.at_ms, &by, ACTION);
        Event::allowed(
            ACTION,
            address.clone(),
            Effect::PrincipalRemoved {
                id: target,
                address,
                released_reservations: released,
            },
        )
    }

    /// Takes `target`'s standing: reservations released, tokens revoked, counts
    /// lowered. Returns the reservations released.
    fn take_standing(
        &mut self,
        target: PrincipalId,
        at_ms: u64,
        by: &str,
        action: &'static str,
    ) -> usize {
        let held: Vec<ReservationId> = self.reservations_of(target).map(|r| r.id).collect();
        for reservation in &held {
            self.release(*reservation, action);
        }
        let principal = self.principals.edit(target).expect("exists");
        principal.standing = false;
        let (kind, address) = (principal.kind, principal.address.clone());
        self.revoke_all_tokens(target, at_ms, by);
        self.count_principal(kind, &address, -1);
        self.forget_artifact(target);
        self.forget_alerts_of(target);
        held.len()
    }
}
