//! Artifacts in the kernel: a deploy decided whole (principal, disk charge, quotas,
//! record) or not at all; who starts and stops them; removal gives the disk back.

use crate::common;

use colony_kernel::artifacts::NewArtifact;
use colony_kernel::*;
use common::*;

fn new(name: &str, bytes: u64, hash: u8, quotas: Vec<(Resource, u64)>) -> CommandBody {
    CommandBody::DeployArtifact(Box::new(NewArtifact {
        name: name.to_string(),
        digest: "0f".repeat(32),
        bytes,
        token_hash: [hash; 32],
        quotas,
        run: true,
    }))
}

fn deployed(applied: &Applied) -> PrincipalId {
    match &applied.primary().effect {
        Effect::ArtifactDeployed { id, .. } => *id,
        other => panic!(
            "expected a deploy, got {other:?} ({:?})",
            applied.primary().reason
        ),
    }
}

fn balance(sim: &Sim, who: PrincipalId, resource: Resource) -> Option<Balance> {
    sim.state
        .balances_at(who, sim.now_ms)
        .into_iter()
        .find(|(r, _)| *r == resource)
        .map(|(_, b)| b)
}

fn disk_used(sim: &Sim, who: PrincipalId) -> u64 {
    balance(sim, who, Resource::DiskBytes).map_or(0, |b| b.used)
}

#[test]
fn a_deploy_makes_an_artifact_child_charges_the_module_and_sets_its_quotas() {
    let mut sim = Sim::new();
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let applied = sim.run(
        agent,
        new("echo", 1_000, 50, vec![(Resource::ComputeMs, 500)]),
    );
    let id = deployed(&applied);
    let principal = sim.state.principal(id).unwrap();
    assert_eq!(principal.kind, PrincipalKind::Artifact);
    assert!(principal.address.starts_with("3."), "{}", principal.address);
    assert_eq!(principal.parent, Some(agent));
    assert_eq!(sim.state.principal_by_token(&[50; 32]).unwrap().id, id);
    assert_eq!(disk_used(&sim, agent), 1_000);
    assert_eq!(
        balance(&sim, id, Resource::ComputeMs).unwrap().quota,
        Some(500)
    );
    let record = sim.state.artifact(id).unwrap();
    assert_eq!(
        (record.name.as_str(), record.deployer, record.run),
        ("echo", agent, true)
    );
    assert_eq!(applied.primary().action, "artifact.deploy");
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_deploy_that_cannot_be_paid_for_changes_nothing() {
    let mut sim = Sim::new();
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let quota = balance(&sim, agent, Resource::DiskBytes).unwrap().quota;
    let principals_before = sim.state.principals().count();
    // More disk than the deployer has.
    if let Some(quota) = quota {
        let refused = sim.run(agent, new("big", quota + 1, 51, Vec::new()));
        assert_eq!(refused.primary().reason.code(), "insufficient_resource");
    }
    // Bad names, digests and sizes, and a quota wider than the deployer's own.
    for body in [
        new("", 10, 52, Vec::new()),
        new("no spaces", 10, 52, Vec::new()),
        new("zero", 0, 52, Vec::new()),
        new("huge", artifacts::ARTIFACT_BYTES_MAX + 1, 52, Vec::new()),
        new(
            "twice",
            10,
            52,
            vec![(Resource::IoOps, 1), (Resource::IoOps, 2)],
        ),
    ] {
        let refused = sim.run(agent, body);
        assert_eq!(refused.primary().decision, Decision::Denied);
        assert_eq!(refused.primary().reason.code(), "invalid");
    }
    let mut bad_digest = NewArtifact {
        name: "x".into(),
        digest: "AB".repeat(32),
        bytes: 10,
        token_hash: [53; 32],
        quotas: Vec::new(),
        run: false,
    };
    let refused = sim.run(
        agent,
        CommandBody::DeployArtifact(Box::new(bad_digest.clone())),
    );
    assert_eq!(refused.primary().reason.code(), "invalid");
    if let Some(own) = balance(&sim, agent, Resource::ComputeMs).unwrap().quota {
        bad_digest.digest = "ab".repeat(32);
        bad_digest.quotas = vec![(Resource::ComputeMs, own + 1)];
        let refused = sim.run(agent, CommandBody::DeployArtifact(Box::new(bad_digest)));
        assert_eq!(refused.primary().reason.code(), "invalid");
    }
    assert_eq!(sim.state.principals().count(), principals_before);
    assert_eq!(sim.state.artifacts().count(), 0);
    assert_eq!(disk_used(&sim, agent), 0);
    sim.state.check_invariants().unwrap();
}

#[test]
fn the_deployer_an_ancestor_or_an_admin_starts_and_stops_it() {
    let mut sim = Sim::new();
    let parent = sim.create_ok(PrincipalKind::Ai, None);
    let agent = {
        sim.next_token += 1;
        let mut request = CreatePrincipal::new("child", PrincipalKind::Ai, [sim.next_token; 32]);
        request.parent = Some(parent);
        match sim
            .run(parent, CommandBody::CreatePrincipal(request))
            .primary()
            .effect
        {
            Effect::PrincipalCreated { id, .. } => id,
            ref other => panic!("{other:?}"),
        }
    };
    let stranger = sim.create_ok(PrincipalKind::Ai, None);
    let artifact = deployed(&sim.run(agent, new("job", 10, 60, Vec::new())));
    let stop = |run| CommandBody::SetArtifactRun { artifact, run };
    let refused = sim.run(stranger, stop(false));
    assert_eq!(refused.primary().reason.code(), "forbidden");
    assert!(sim.state.artifact(artifact).unwrap().run);
    for (who, run) in [(agent, false), (parent, true), (PrincipalId::ADMIN, false)] {
        let applied = sim.run(who, stop(run));
        assert!(applied.primary().decision.is_allowed());
        assert_eq!(sim.state.artifact(artifact).unwrap().run, run);
    }
    assert_eq!(
        sim.run(agent, stop(true)).primary().action,
        "artifact.start"
    );
    let missing = sim.run(
        agent,
        CommandBody::SetArtifactRun {
            artifact: agent,
            run: true,
        },
    );
    assert_eq!(missing.primary().reason.code(), "not_found");
}

#[test]
fn removing_an_artifact_or_its_deployer_gives_the_disk_back() {
    let mut sim = Sim::new();
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let first = deployed(&sim.run(agent, new("one", 300, 70, Vec::new())));
    let _second = deployed(&sim.run(agent, new("two", 200, 71, Vec::new())));
    assert_eq!(disk_used(&sim, agent), 500);
    let removed = sim.run(agent, CommandBody::RemovePrincipal { principal: first });
    assert!(
        removed.primary().decision.is_allowed(),
        "{:?}",
        removed.primary().reason
    );
    assert_eq!(disk_used(&sim, agent), 200);
    assert_eq!(sim.state.artifacts().count(), 1);
    sim.run(
        PrincipalId::ADMIN,
        CommandBody::RemovePrincipal { principal: agent },
    );
    assert_eq!(sim.state.artifacts().count(), 0);
    sim.state.check_invariants().unwrap();
}
