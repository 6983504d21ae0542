//! Requests for more (a scope, a role, a quota) and their approval, application and
//! end. See `grants.rs` for the rules.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{forbidden, invalid, not_found, State};
use crate::command::Command;
use crate::event::{Effect, Event};
use crate::governance::Side;
use crate::grants::*;
use crate::principal::{PrincipalKind, Role};

/// The part of the state that holds grant requests, by id, and the times they end
/// (an active grant's end, a tool call's request's deadline for its answer). Its
/// index is its own. Its fields are in the order the state held them before it
/// had parts: a snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Requests {
    all: BTreeMap<u64, Grant>,
    /// `(at_ms, id)` of each grant waiting for its end.
    ends: BTreeSet<(u64, u64)>,
}

impl Requests {
    pub(super) fn get(&self, id: u64) -> Option<&Grant> {
        self.all.get(&id)
    }

    /// Grant `id` to change: never its `expires_at_ms` (see
    /// [`Requests::until`] and [`Requests::unschedule`]).
    pub(super) fn edit(&mut self, id: u64) -> Option<&mut Grant> {
        self.all.get_mut(&id)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Grant> {
        self.all.values()
    }

    /// Files a new request, waiting for its end when it has one.
    fn file(&mut self, grant: Grant) {
        if let Some(at_ms) = grant.expires_at_ms {
            self.ends.insert((at_ms, grant.id));
        }
        self.all.insert(grant.id, grant);
    }

    /// Grant `id` ends at `at_ms`.
    fn until(&mut self, id: u64, at_ms: u64) {
        if let Some(grant) = self.all.get_mut(&id) {
            grant.expires_at_ms = Some(at_ms);
            self.ends.insert((at_ms, id));
        }
    }

    /// Grant `id` waits for its end no more (decided, or used); its
    /// `expires_at_ms` stays as a record.
    pub(super) fn unschedule(&mut self, id: u64) {
        if let Some(at_ms) = self.all.get(&id).and_then(|g| g.expires_at_ms) {
            self.ends.remove(&(at_ms, id));
        }
    }

    /// The first grant whose end came by `now_ms`, no longer waiting for it.
    #[inline]
    fn due(&mut self, now_ms: u64) -> Option<u64> {
        let &(at_ms, id) = self.ends.first()?;
        if at_ms > now_ms {
            return None;
        }
        self.ends.pop_first();
        Some(id)
    }

    #[inline]
    fn next_due_ms(&self) -> Option<u64> {
        self.ends.first().map(|(at_ms, _)| *at_ms)
    }

    fn forget(&mut self, id: u64) {
        self.unschedule(id);
        self.all.remove(&id);
    }

    /// Its invariants: a grant waits for its end exactly when `waits_for_end`
    /// says it should.
    pub(super) fn check(&self, waits_for_end: impl Fn(&Grant) -> bool) -> Result<(), String> {
        for grant in self.all.values() {
            let due = grant
                .expires_at_ms
                .is_some_and(|at| self.ends.contains(&(at, grant.id)));
            if waits_for_end(grant) != due {
                return Err(format!(
                    "grant {} is {} but {} due to end",
                    grant.id,
                    grant.state.as_str(),
                    if due { "is" } else { "is not" }
                ));
            }
        }
        if self.ends.len() != self.all.values().filter(|g| waits_for_end(g)).count() {
            return Err("a grant end is due for a grant that is not active".into());
        }
        Ok(())
    }
}

impl State {
    pub fn grant_request(&self, id: u64) -> Option<&Grant> {
        self.grants.get(id)
    }

    /// Every grant kept, oldest first.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.all()
    }

    pub(super) fn grants_next_due_ms(&self) -> Option<u64> {
        self.grants.next_due_ms()
    }

    pub(super) fn request_grant(
        &mut self,
        command: &Command,
        what: &GrantWhat,
        ttl_ms: u64,
    ) -> Event {
        const ACTION: &str = "grant.request";
        let requester = &self.principals.known(command.actor);
        let address = requester.address.clone();
        if ttl_ms == 0 || ttl_ms > GRANT_TTL_MAX_MS {
            let message = format!(
                "a grant lasts 1 ms to {} days",
                GRANT_TTL_MAX_MS / 86_400_000
            );
            return Event::denied(ACTION, address, invalid(message));
        }
        let pending = self
            .grants
            .all()
            .filter(|g| g.requester == command.actor && g.state == GrantState::Pending)
            .count();
        if pending >= PENDING_GRANTS_PER_PRINCIPAL_MAX {
            let message = format!(
                "{address} has {pending} requests pending, the most allowed; wait for one to be decided"
            );
            return Event::denied(ACTION, address, invalid(message));
        }
        let check = match what {
            GrantWhat::Scope { token, scope } => match self.tokens.get(*token) {
                Some(t) if t.principal == command.actor && t.revoked.is_none() => {
                    match crate::tokens::Scope::parse(scope) {
                        Err(message) => Err(message),
                        Ok(crate::tokens::Scope::All) => {
                            Err("ask for a named scope, not `*`".to_string())
                        }
                        Ok(_) if t.scopes.iter().any(|s| s == scope || s == "*") => {
                            Err(format!("token {token} already has `{scope}`"))
                        }
                        Ok(_) => Ok(()),
                    }
                }
                _ => Err(format!("token {token} is not a live token of {address}")),
            },
            GrantWhat::Role { role } if requester.roles.contains(role) => {
                Err(format!("{address} already has the role {}", role.as_str()))
            }
            GrantWhat::Role { .. } => Ok(()),
            GrantWhat::Quota { resource, amount } => {
                match self.book.balance(command.actor, *resource) {
                    _ if *amount == 0 => Err("ask for more than nothing".to_string()),
                    Some(balance) if balance.quota.is_none() => Err(format!(
                        "{address}'s {} is unlimited already",
                        resource.as_str()
                    )),
                    Some(_) => Ok(()),
                    None => Err(format!("{address} has no {} quota", resource.as_str())),
                }
            }
            GrantWhat::ToolCall {
                tool,
                arguments_sha256,
            } => crate::tool_calls::check_tool_name(tool)
                .and_then(|()| crate::tool_calls::check_sha256(arguments_sha256)),
        };
        if let Err(message) = check {
            return Event::denied(ACTION, address, invalid(message));
        }
        // A tool call's request waits for its decision only `ttl` (the call is held
        // open meanwhile); any other waits until someone decides it.
        let answer_by = match what {
            GrantWhat::ToolCall { .. } => Some(command.at_ms.saturating_add(ttl_ms)),
            _ => None,
        };
        self.grants.file(Grant {
            id: command.seq,
            requester: command.actor,
            requester_address: address.clone(),
            what: what.clone(),
            ttl_ms,
            justification: command.justification.clone(),
            state: GrantState::Pending,
            created_at_ms: command.at_ms,
            approvals: Vec::new(),
            decided_by: None,
            decided_at_ms: None,
            expires_at_ms: answer_by,
            applied: false,
        });
        self.forget_old_grants();
        Event::allowed(
            ACTION,
            address.clone(),
            Effect::GrantRequested {
                grant: command.seq,
                requester: address,
            },
        )
    }

    pub(super) fn decide_grant(&mut self, command: &Command, id: u64, approve: bool) -> Event {
        let action = if approve {
            "grant.approve"
        } else {
            "grant.deny"
        };
        let Some(grant) = self.grants.get(id) else {
            return Event::denied(action, id.to_string(), not_found("grant", id));
        };
        let subject = grant.requester_address.clone();
        if grant.state != GrantState::Pending {
            let message = format!("grant {id} is {}, not pending", grant.state.as_str());
            return Event::denied(action, subject, invalid(message));
        }
        if grant.requester == command.actor {
            return Event::denied(
                action,
                subject,
                forbidden("nobody approves or denies their own request"),
            );
        }
        let approver = &self.principals.known(command.actor);
        if self.same_lineage(command.actor, grant.requester) {
            let message = format!(
                "{} is of the lineage of {}, as the requester {} is: nobody approves or denies a request of its own lineage",
                approver.address,
                self.lineage_address(approver),
                grant.requester_address
            );
            return Event::denied(action, subject, forbidden(message));
        }
        // The side an approval counts on is its lineage's: an AI spawned by a human
        // approves for the human side, and two approvals of one lineage are one.
        let side = match approver.kind {
            PrincipalKind::Human | PrincipalKind::Ai => self.lineage_side(approver),
            _ => None,
        };
        let is_admin = approver.roles.contains(&Role::Admin);
        let (needs_both_sides, eligible, who) = match &grant.what {
            GrantWhat::Scope { .. } | GrantWhat::Role { .. } => (false, is_admin, "an admin"),
            GrantWhat::ToolCall { .. } => (
                false,
                approver.kind == PrincipalKind::Human
                    && (is_admin || approver.roles.contains(&Role::Member)),
                "a human member or admin of another lineage",
            ),
            GrantWhat::Quota { resource, amount } => {
                let bound = self
                    .governance
                    .config()
                    .grants
                    .quota_bound
                    .get(resource)
                    .copied()
                    .unwrap_or(0);
                if *amount <= bound {
                    (
                        false,
                        approver.kind == PrincipalKind::Human,
                        "a human member or admin",
                    )
                } else {
                    (true, side.is_some(), "a human and an AI, one of each side")
                }
            }
        };
        if !eligible {
            return Event::denied(
                action,
                subject,
                forbidden(format!("grant {id} is decided by {who}")),
            );
        }
        let by = approver.address.clone();
        let now = command.at_ms;
        // A tool call's request stops waiting: it is decided.
        self.grants.unschedule(id);
        let grant = self.grants.edit(id).expect("found above");
        grant.expires_at_ms = None;
        if !approve {
            grant.state = GrantState::Denied;
            grant.decided_by = Some(by);
            grant.decided_at_ms = Some(now);
            return Event::allowed(action, subject, Effect::GrantDenied { grant: id });
        }
        let side = side.expect("eligible approvers have a side");
        grant.approvals.retain(|(address, _)| *address != by);
        grant.approvals.push((by.clone(), side));
        let both = grant.approvals.iter().any(|(_, s)| *s == Side::Human)
            && grant.approvals.iter().any(|(_, s)| *s == Side::Ai);
        if needs_both_sides && !both {
            return Event::allowed(
                action,
                subject,
                Effect::GrantApproved {
                    grant: id,
                    active: false,
                    expires_at_ms: None,
                },
            );
        }
        let expires_at_ms = now.saturating_add(grant.ttl_ms);
        grant.state = GrantState::Active;
        grant.decided_by = Some(by);
        grant.decided_at_ms = Some(now);
        let (requester, what) = (grant.requester, grant.what.clone());
        let applied = self.change(requester, &what, true);
        self.grants.edit(id).expect("exists").applied = applied;
        self.grants.until(id, expires_at_ms);
        Event::allowed(
            action,
            subject,
            Effect::GrantApproved {
                grant: id,
                active: true,
                expires_at_ms: Some(expires_at_ms),
            },
        )
    }

    /// Ends the grants whose time is up, reverting what they changed.
    pub(super) fn process_grants_due(&mut self, events: &mut Vec<Event>) {
        while let Some(id) = self.grants.due(self.now_ms) {
            let Some(grant) = self.grants.edit(id) else {
                continue;
            };
            // An active grant ends; a tool call's request not decided in time too.
            grant.state = GrantState::Expired;
            let (requester, what, applied) = (grant.requester, grant.what.clone(), grant.applied);
            let subject = grant.requester_address.clone();
            if applied {
                self.change(requester, &what, false);
            }
            events.push(Event::allowed(
                "grant.expire",
                subject,
                Effect::GrantExpired { grant: id },
            ));
        }
    }

    /// Gives (`give`) or takes back what a grant names; whether anything changed.
    fn change(&mut self, principal: crate::PrincipalId, what: &GrantWhat, give: bool) -> bool {
        match what {
            GrantWhat::Scope { token, scope } => {
                let Some(token) = self.tokens.edit(*token) else {
                    return false;
                };
                let held = token.scopes.iter().position(|s| s == scope);
                match (give, held) {
                    (true, None) => token.scopes.push(scope.clone()),
                    (false, Some(index)) => {
                        token.scopes.remove(index);
                    }
                    _ => return false,
                }
                true
            }
            GrantWhat::Role { role } => {
                let Some(p) = self.principals.edit(principal) else {
                    return false;
                };
                let held = p.roles.iter().position(|r| r == role);
                match (give, held) {
                    (true, None) => {
                        p.roles.push(*role);
                        p.roles.sort();
                    }
                    (false, Some(index)) => {
                        p.roles.remove(index);
                    }
                    _ => return false,
                }
                true
            }
            GrantWhat::Quota { resource, amount } => {
                let Some(quota) = self
                    .book
                    .balance_mut(principal, *resource)
                    .and_then(|b| b.quota.as_mut())
                else {
                    return false;
                };
                *quota = if give {
                    quota.saturating_add(*amount)
                } else {
                    quota.saturating_sub(*amount)
                };
                true
            }
            // The approval is the whole effect: the call it names runs once.
            GrantWhat::ToolCall { .. } => false,
        }
    }

    /// Past [`ENDED_GRANTS_KEPT_MAX`] ended grants, forgets the oldest.
    fn forget_old_grants(&mut self) {
        let ended: Vec<u64> = self
            .grants
            .all()
            .filter(|g| {
                matches!(
                    g.state,
                    GrantState::Denied | GrantState::Expired | GrantState::Used
                )
            })
            .map(|g| g.id)
            .collect();
        for id in ended
            .iter()
            .take(ended.len().saturating_sub(ENDED_GRANTS_KEPT_MAX))
        {
            self.grants.forget(*id);
        }
    }
}
