//! Making and revoking tokens. A principal makes its own; an admin makes and
//! revokes anyone's. A principal's first token is made with it (scope `*`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{forbidden, invalid, not_found, State};
use crate::command::Command;
use crate::event::{Effect, Event};
use crate::principal::{PrincipalId, Role, TokenHash};
use crate::tokens::*;

/// The part of the state that holds tokens: each by id, and every hash to its id
/// (revoked and expired ones too, so that the node can say which a presented
/// token is). Its fields are in the order the state held them before it had
/// parts: a snapshot's encoding is the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Keyring {
    by_hash: BTreeMap<TokenHash, u64>,
    by_id: BTreeMap<u64, Token>,
    last_id: u64,
}

impl Keyring {
    #[inline]
    pub(super) fn by_hash(&self, hash: &TokenHash) -> Option<&Token> {
        self.by_id.get(self.by_hash.get(hash)?)
    }

    pub(super) fn knows(&self, hash: &TokenHash) -> bool {
        self.by_hash.contains_key(hash)
    }

    #[inline]
    pub(super) fn get(&self, id: u64) -> Option<&Token> {
        self.by_id.get(&id)
    }

    /// Token `id` to change: never its hash, by which it is found (the
    /// invariants find such a change out).
    pub(super) fn edit(&mut self, id: u64) -> Option<&mut Token> {
        self.by_id.get_mut(&id)
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Token> {
        self.by_id.values()
    }

    /// Tokens are numbered 1, 2, 3... in the order they are made.
    pub(super) fn take_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Records a token (its hash must be new).
    pub(super) fn file(&mut self, token: Token) {
        self.by_hash.insert(token.hash, token.id);
        self.by_id.insert(token.id, token);
    }

    /// Revokes every live token of `principal`.
    fn revoke_all(&mut self, principal: PrincipalId, at_ms: u64, by: &str) {
        for token in self.by_id.values_mut() {
            if token.principal == principal && token.revoked.is_none() {
                token.revoked = Some((at_ms, by.to_string()));
            }
        }
    }

    /// Forgets token `id`: its hash becomes unknown.
    fn forget(&mut self, id: u64) {
        if let Some(token) = self.by_id.remove(&id) {
            self.by_hash.remove(&token.hash);
        }
    }

    /// Its invariants: every token found by its hash, and every hash to its token.
    pub(super) fn check(&self) -> Result<(), String> {
        for (hash, id) in &self.by_hash {
            match self.by_id.get(id) {
                Some(token) if token.hash == *hash => {}
                _ => return Err(format!("token hash of id {id} resolves to no such token")),
            }
        }
        for token in self.by_id.values() {
            if self.by_hash.get(&token.hash) != Some(&token.id) {
                return Err(format!("token {} is not found by its hash", token.id));
            }
        }
        Ok(())
    }
}

impl State {
    /// The token with this hash (live, expired or revoked) and its principal.
    pub fn token_by_hash(&self, hash: &TokenHash) -> Option<(&Token, &crate::Principal)> {
        let token = self.tokens.by_hash(hash)?;
        Some((token, self.principals.get(token.principal)?))
    }

    pub fn token(&self, id: u64) -> Option<&Token> {
        self.tokens.get(id)
    }

    /// A principal's tokens, oldest first.
    pub fn tokens_of(&self, principal: PrincipalId) -> impl Iterator<Item = &Token> {
        self.tokens.all().filter(move |t| t.principal == principal)
    }

    /// Records a token (its hash must be new).
    pub(super) fn insert_token(&mut self, token: Token) {
        self.tokens.file(token);
    }

    pub(super) fn next_token_id(&mut self) -> u64 {
        self.tokens.take_id()
    }

    /// Whether `actor` may manage `principal`'s tokens: its own, or an admin's.
    fn may_manage(&self, actor: PrincipalId, principal: PrincipalId) -> bool {
        actor == principal
            || self
                .principals
                .get(actor)
                .is_some_and(|p| p.roles.contains(&Role::Admin))
    }

    pub(super) fn create_token(&mut self, command: &Command, new: &NewToken) -> Event {
        const ACTION: &str = "token.create";
        let Some(principal) = self.principals.get(new.principal).filter(|p| p.standing) else {
            return Event::denied(
                ACTION,
                new.principal.to_string(),
                not_found("principal", new.principal),
            );
        };
        let address = principal.address.clone();
        if !self.may_manage(command.actor, new.principal) {
            return Event::denied(
                ACTION,
                address,
                forbidden("a principal makes its own tokens; only admins make others'"),
            );
        }
        let is_admin = principal.roles.contains(&Role::Admin);
        if let Err(message) = check_new(new, is_admin) {
            return Event::denied(ACTION, address, invalid(message));
        }
        if self.tokens.knows(&new.hash) {
            return Event::denied(ACTION, address, invalid("this token is already in use"));
        }
        let now = command.at_ms;
        let live = self
            .tokens_of(new.principal)
            .filter(|t| t.is_live(now))
            .count();
        if live >= TOKENS_PER_PRINCIPAL_MAX {
            let message =
                format!("{address} holds {live} live tokens, the most allowed; revoke some first");
            return Event::denied(ACTION, address, invalid(message));
        }
        self.forget_old_tokens(new.principal, now);
        let id = self.next_token_id();
        let expires_at_ms = new.ttl_ms.map(|ttl| now.saturating_add(ttl));
        let actor_address = self
            .principals
            .get(command.actor)
            .map_or_else(String::new, |p| p.address.clone());
        self.insert_token(Token {
            id,
            principal: new.principal,
            name: new.name.clone(),
            scopes: new.scopes.clone(),
            created_at_ms: now,
            created_by: actor_address,
            expires_at_ms,
            revoked: None,
            hash: new.hash,
        });
        Event::allowed(
            ACTION,
            address.clone(),
            Effect::TokenCreated {
                principal: address,
                token: id,
                expires_at_ms,
            },
        )
    }

    pub(super) fn revoke_token(
        &mut self,
        command: &Command,
        principal: PrincipalId,
        id: u64,
    ) -> Event {
        const ACTION: &str = "token.revoke";
        let Some(owner) = self.principals.get(principal) else {
            return Event::denied(
                ACTION,
                principal.to_string(),
                not_found("principal", principal),
            );
        };
        let address = owner.address.clone();
        if !self.may_manage(command.actor, principal) {
            return Event::denied(
                ACTION,
                address,
                forbidden("a principal revokes its own tokens; only admins revoke others'"),
            );
        }
        let by = self
            .principals
            .get(command.actor)
            .map_or_else(String::new, |p| p.address.clone());
        match self.tokens.edit(id).filter(|t| t.principal == principal) {
            None => Event::denied(ACTION, address, not_found("token", id)),
            Some(token) if token.revoked.is_some() => Event::denied(
                ACTION,
                address,
                invalid(format!("token {id} is already revoked")),
            ),
            Some(token) => {
                token.revoked = Some((command.at_ms, by));
                Event::allowed(
                    ACTION,
                    address.clone(),
                    Effect::TokenRevoked {
                        principal: address,
                        token: id,
                    },
                )
            }
        }
    }

    /// Revokes every token of a removed principal.
    pub(super) fn revoke_all_tokens(&mut self, principal: PrincipalId, at_ms: u64, by: &str) {
        self.tokens.revoke_all(principal, at_ms, by);
    }

    /// Past [`TOKEN_RECORDS_PER_PRINCIPAL_MAX`] records, forgets the oldest revoked or
    /// expired ones (their hashes become unknown).
    fn forget_old_tokens(&mut self, principal: PrincipalId, now_ms: u64) {
        let records: Vec<(u64, bool)> = self
            .tokens_of(principal)
            .map(|t| (t.id, t.is_live(now_ms)))
            .collect();
        let mut excess = (records.len() + 1).saturating_sub(TOKEN_RECORDS_PER_PRINCIPAL_MAX);
        for (id, live) in records {
            if excess == 0 {
                break;
            }
            if !live {
                self.tokens.forget(id);
                excess -= 1;
            }
        }
    }
}

/// Checks a new token's name, scopes and time to live.
fn check_new(new: &NewToken, principal_is_admin: bool) -> Result<(), String> {
    if new.name.trim().is_empty()
        || new.name.len() > TOKEN_NAME_BYTES_MAX
        || new.name.chars().any(char::is_control)
    {
        return Err(format!(
            "a token's name is 1 to {TOKEN_NAME_BYTES_MAX} bytes without control characters"
        ));
    }
    if new.scopes.is_empty() || new.scopes.len() > SCOPES_PER_TOKEN_MAX {
        return Err(format!("a token has 1 to {SCOPES_PER_TOKEN_MAX} scopes"));
    }
    for text in &new.scopes {
        match Scope::parse(text)? {
            Scope::All => {
                return Err("`*` is only a principal's first token's; name the scopes".into())
            }
            Scope::Named("admin") if !principal_is_admin => {
                return Err("only an admin's token can have the `admin` scope".into())
            }
            _ => {}
        }
    }
    if let Some(ttl) = new.ttl_ms {
        if ttl == 0 || ttl > TOKEN_TTL_MAX_MS {
            return Err(format!(
                "a token lives 1 ms to {} days",
                TOKEN_TTL_MAX_MS / 86_400_000
            ));
        }
    }
    Ok(())
}
