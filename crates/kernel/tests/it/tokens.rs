//! Tokens in the kernel: who makes and revokes them, their bounds, and that a
//! removed principal's tokens die with it.

use crate::common;

use colony_kernel::tokens::{TOKENS_PER_PRINCIPAL_MAX, TOKEN_RECORDS_PER_PRINCIPAL_MAX};
use colony_kernel::*;
use common::*;

fn new_token(principal: PrincipalId, name: &str, scopes: &[&str], hash: u8) -> CommandBody {
    CommandBody::CreateToken(Box::new(NewToken {
        principal,
        name: name.to_string(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ttl_ms: None,
        hash: [hash; 32],
    }))
}

fn token_id(applied: &Applied) -> u64 {
    match &applied.primary().effect {
        Effect::TokenCreated { token, .. } => *token,
        other => panic!(
            "expected a token, got {other:?} ({:?})",
            applied.primary().reason
        ),
    }
}

#[test]
fn a_principal_makes_and_revokes_its_own_tokens_and_an_admin_anyones() {
    let mut sim = Sim::new();
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let other = sim.create_ok(PrincipalKind::Ai, None);
    let own = token_id(&sim.run(agent, new_token(agent, "reader", &["read"], 200)));
    assert_eq!(sim.state.principal_by_token(&[200; 32]).unwrap().id, agent);
    let refused = sim.run(other, new_token(agent, "theirs", &["read"], 201));
    assert_eq!(refused.primary().decision, Decision::Denied);
    assert_eq!(refused.primary().reason.code(), "forbidden");
    let by_admin = token_id(&sim.run(PrincipalId::ADMIN, new_token(agent, "given", &["llm"], 202)));
    let revoked = sim.run(
        other,
        CommandBody::RevokeToken {
            principal: agent,
            token: own,
        },
    );
    assert_eq!(revoked.primary().decision, Decision::Denied);
    let revoked = sim.run(
        agent,
        CommandBody::RevokeToken {
            principal: agent,
            token: own,
        },
    );
    assert!(revoked.primary().decision.is_allowed());
    assert!(sim.state.principal_by_token(&[200; 32]).is_none());
    let (token, _) = sim.state.token_by_hash(&[200; 32]).unwrap();
    assert!(
        token.revoked.is_some(),
        "a revoked token stays known as revoked"
    );
    // Bad names, scopes and lives are refused.
    for (scopes, ttl) in [
        (vec!["*"], None),
        (vec!["admin"], None),
        (vec!["bus:a..b"], None),
        (vec!["task:x"], None),
        (vec![], None),
        (vec!["read"], Some(0)),
        (vec!["read"], Some(400 * 86_400_000)),
    ] {
        let body = CommandBody::CreateToken(Box::new(NewToken {
            principal: agent,
            name: "bad".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ttl_ms: ttl,
            hash: [203; 32],
        }));
        let refused = sim.run(agent, body);
        assert_eq!(
            refused.primary().reason.code(),
            "invalid",
            "{scopes:?} {ttl:?}"
        );
    }
    // Removing the principal revokes every token it holds.
    sim.run(
        PrincipalId::ADMIN,
        CommandBody::RemovePrincipal { principal: agent },
    );
    let (token, _) = sim.state.token_by_hash(&[202; 32]).unwrap();
    assert_eq!(token.id, by_admin);
    assert!(token.revoked.is_some());
    assert!(sim.state.check_invariants().is_ok());
}

#[test]
fn tokens_expire_and_their_number_is_bounded() {
    let mut sim = Sim::new();
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let body = CommandBody::CreateToken(Box::new(NewToken {
        principal: agent,
        name: "brief".into(),
        scopes: vec!["read".into()],
        ttl_ms: Some(1_000),
        hash: [100; 32],
    }));
    sim.run(agent, body);
    assert!(sim.state.principal_by_token(&[100; 32]).is_some());
    sim.advance(1_000);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert!(
        sim.state.principal_by_token(&[100; 32]).is_none(),
        "expired"
    );
    // The first token and the expired one: fill up to the live bound.
    for n in 0..TOKENS_PER_PRINCIPAL_MAX - 1 {
        let applied = sim.run(agent, new_token(agent, "more", &["read"], 101 + n as u8));
        assert!(applied.primary().decision.is_allowed(), "token {n}");
    }
    let refused = sim.run(agent, new_token(agent, "one too many", &["read"], 250));
    assert_eq!(refused.primary().reason.code(), "invalid");
    let last = sim.state.tokens_of(agent).last().unwrap().id;
    sim.run(
        agent,
        CommandBody::RevokeToken {
            principal: agent,
            token: last,
        },
    );
    // Revoked and expired records are forgotten past their bound, oldest first.
    for hash in 150..200u8 {
        let applied = sim.run(agent, new_token(agent, "again", &["read"], hash));
        assert!(applied.primary().decision.is_allowed(), "{hash}");
        let token = token_id(&applied);
        sim.run(
            agent,
            CommandBody::RevokeToken {
                principal: agent,
                token,
            },
        );
    }
    assert!(sim.state.tokens_of(agent).count() <= TOKEN_RECORDS_PER_PRINCIPAL_MAX);
    assert!(
        sim.state.token_by_hash(&[100; 32]).is_none(),
        "the oldest dead record is forgotten"
    );
    assert!(sim.state.check_invariants().is_ok());
}

#[test]
fn a_member_spawns_children_within_itself_that_do_not_outlive_it() {
    let mut sim = Sim::new();
    let parent = sim.create_ok(PrincipalKind::Ai, None);
    let spawn =
        |kind: PrincipalKind, parent_of: Option<PrincipalId>, roles: Vec<Role>, hash: u8| {
            let mut request = CreatePrincipal::new(format!("child{hash}"), kind, [hash; 32]);
            request.parent = parent_of;
            request.roles = roles;
            request.scopes = vec!["llm".into(), "tasks".into()];
            CommandBody::CreatePrincipal(request)
        };
    // Only under itself, only AIs and artifacts, no role it lacks.
    for (kind, under, roles) in [
        (PrincipalKind::Ai, None, vec![]),
        (PrincipalKind::Human, Some(parent), vec![]),
        (PrincipalKind::Ai, Some(parent), vec![Role::Admin]),
    ] {
        let refused = sim.run(parent, spawn(kind, under, roles.clone(), 60));
        assert_eq!(
            refused.primary().reason.code(),
            "forbidden",
            "{kind:?} {under:?} {roles:?}"
        );
    }
    let child = match &sim
        .run(parent, spawn(PrincipalKind::Ai, Some(parent), vec![], 61))
        .primary()
        .effect
    {
        Effect::PrincipalCreated { id, .. } => *id,
        other => panic!("{other:?}"),
    };
    let grandchild = match &sim
        .run(
            child,
            spawn(PrincipalKind::Artifact, Some(child), vec![], 62),
        )
        .primary()
        .effect
    {
        Effect::PrincipalCreated { id, .. } => *id,
        other => panic!("{other:?}"),
    };
    let (token, _) = sim.state.token_by_hash(&[61; 32]).unwrap();
    assert_eq!(token.scopes, vec!["llm".to_string(), "tasks".to_string()]);
    // Not another's child.
    let stranger = sim.create_ok(PrincipalKind::Ai, None);
    let refused = sim.run(stranger, CommandBody::RemovePrincipal { principal: child });
    assert_eq!(refused.primary().reason.code(), "forbidden");
    // The parent removes its child; the grandchild goes with it.
    let removed = sim.run(parent, CommandBody::RemovePrincipal { principal: child });
    assert!(
        removed.primary().decision.is_allowed(),
        "{:?}",
        removed.primary().reason
    );
    assert!(!sim.state.principal(grandchild).unwrap().standing);
    assert!(sim.state.principal_by_token(&[62; 32]).is_none());
    assert!(sim.state.check_invariants().is_ok());
}
