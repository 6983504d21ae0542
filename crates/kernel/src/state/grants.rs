//! Requests for more (a scope, a role, a quota) and their approval, application and
//! end. See `grants.rs` for the rules.

use super::{forbidden, invalid, not_found, State};
use crate::command::Command;
use crate::event::{Effect, Event};
use crate::governance::Side;
use crate::grants::*;
use crate::principal::{PrincipalKind, Role};

impl State {
    pub fn grant_request(&self, id: u64) -> Option<&Grant> {
        self.grants.get(&id)
    }

    /// Every grant kept, oldest first.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.values()
    }

    pub(super) fn grants_next_due_ms(&self) -> Option<u64> {
        self.grant_expiries.first().map(|(at_ms, _)| *at_ms)
    }

    pub(super) fn request_grant(
        &mut self,
        command: &Command,
        what: &GrantWhat,
        ttl_ms: u64,
    ) -> Event {
        const ACTION: &str = "grant.request";
        let requester = &self.principals[&command.actor];
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
            .values()
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
            GrantWhat::ToolCall { .. } => {
                let at = command.at_ms.saturating_add(ttl_ms);
                self.grant_expiries.insert((at, command.seq));
                Some(at)
            }
            _ => None,
        };
        self.grants.insert(
            command.seq,
            Grant {
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
            },
        );
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
        let Some(grant) = self.grants.get(&id) else {
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
        let approver = &self.principals[&command.actor];
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
                    .and_then(|g| g.grants.quota_bound.get(resource).copied())
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
        let grant = self.grants.get_mut(&id).expect("found above");
        if let Some(at) = grant.expires_at_ms.take() {
            // A tool call's request stops waiting: it is decided.
            self.grant_expiries.remove(&(at, id));
        }
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
        grant.expires_at_ms = Some(expires_at_ms);
        let (requester, what) = (grant.requester, grant.what.clone());
        let applied = self.change(requester, &what, true);
        self.grants.get_mut(&id).expect("exists").applied = applied;
        self.grant_expiries.insert((expires_at_ms, id));
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
        while let Some(&(at_ms, id)) = self.grant_expiries.first() {
            if at_ms > self.now_ms {
                break;
            }
            self.grant_expiries.pop_first();
            let Some(grant) = self.grants.get_mut(&id) else {
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
                let Some(p) = self.principals.get_mut(&principal) else {
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
            .values()
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
            self.grants.remove(id);
        }
    }
}
