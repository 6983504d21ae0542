//! Issue 31: only the cluster's admitted nodes write its log. The genesis command's
//! key is the first; an admin admits others; a command from another key, or one
//! whose node sequence number was taken before, is refused with the evidence and
//! changes nothing.

use colony_kernel::cluster::{Origin, REPLAY_WINDOW};
use colony_kernel::*;

use crate::common::*;

const FIRST: [u8; 32] = [1; 32];
const SECOND: [u8; 32] = [2; 32];

struct Cluster {
    state: State,
    now_ms: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let mut cluster = Cluster {
            state: State::new(),
            now_ms: 1_000_000,
        };
        let applied = cluster.run(
            PrincipalId::SYSTEM,
            CommandBody::Genesis(Box::new(Genesis::for_tests(ADMIN_TOKEN))),
            Some(origin("node-1", FIRST, REPLAY_WINDOW + 1)),
        );
        assert!(applied.primary().decision.is_allowed());
        cluster
    }

    fn run(&mut self, actor: PrincipalId, body: CommandBody, origin: Option<Origin>) -> Applied {
        self.now_ms += 1;
        let mut command = Command::new(self.state.last_seq + 1, self.now_ms, actor, "test", body);
        command.origin = origin;
        let applied = self.state.apply(&command);
        self.state.check_invariants().unwrap();
        applied
    }
}

fn origin(node: &str, key: [u8; 32], node_seq: u64) -> Origin {
    Origin {
        node: node.into(),
        key,
        node_seq,
    }
}

fn post(title: &str) -> CommandBody {
    CommandBody::PostTask(Box::new(colony_kernel::tasks::NewTask {
        title: title.into(),
        description: String::new(),
        priority: Priority::Normal,
        capabilities: Vec::new(),
        depends_on: Vec::new(),
        budget_micro_usd: None,
        max_attempts: None,
        attempt_timeout_ms: None,
    }))
}

#[test]
fn genesis_admits_its_node_and_an_admin_admits_the_next() {
    let mut cluster = Cluster::new();
    let first = cluster.state.cluster_node(&FIRST).unwrap();
    assert_eq!(
        (first.name.as_str(), first.admitted_by.as_str()),
        ("node-1", "genesis")
    );
    // A command signed by a key nobody admitted: refused, with the evidence.
    let tasks_before = cluster.state.tasks().count();
    let refused = cluster.run(
        PrincipalId::ADMIN,
        post("forged"),
        Some(origin("intruder", SECOND, 1)),
    );
    let event = refused.primary();
    assert_eq!(
        (event.action, event.decision),
        ("cluster.refused", Decision::Denied)
    );
    let why = format!("{:?}", event.reason);
    assert!(
        why.contains("not one of the cluster's admitted nodes") && why.contains("intruder"),
        "{why}"
    );
    assert_eq!(
        cluster.state.tasks().count(),
        tasks_before,
        "nothing was applied"
    );
    // Only an admin admits; then the node's commands are applied.
    let admit = CommandBody::AdmitNode {
        name: "node-2".into(),
        key: SECOND,
    };
    let mut member = CreatePrincipal::new("member", PrincipalKind::Human, [9; 32]);
    member.roles = vec![Role::Member];
    let member = match cluster
        .run(
            PrincipalId::ADMIN,
            CommandBody::CreatePrincipal(member),
            Some(origin("node-1", FIRST, REPLAY_WINDOW + 2)),
        )
        .primary()
        .effect
    {
        Effect::PrincipalCreated { id, .. } => id,
        ref other => panic!("{other:?}"),
    };
    let by_member = cluster.run(
        member,
        admit.clone(),
        Some(origin("node-1", FIRST, REPLAY_WINDOW + 20)),
    );
    assert_eq!(by_member.primary().decision, Decision::Denied);
    let admitted = cluster.run(
        PrincipalId::ADMIN,
        admit.clone(),
        Some(origin("node-1", FIRST, REPLAY_WINDOW + 3)),
    );
    assert!(admitted.primary().decision.is_allowed(), "{admitted:?}");
    let again = cluster.run(
        PrincipalId::ADMIN,
        admit,
        Some(origin("node-1", FIRST, REPLAY_WINDOW + 4)),
    );
    assert_eq!(
        again.primary().decision,
        Decision::Denied,
        "admitted already"
    );
    let posted = cluster.run(
        PrincipalId::ADMIN,
        post("real"),
        Some(origin("node-2", SECOND, 1)),
    );
    assert!(posted.primary().decision.is_allowed(), "{posted:?}");
    // The last node is never removed; another is, and its commands stop.
    let remove = |key| CommandBody::RemoveNode { key };
    let removed = cluster.run(
        PrincipalId::ADMIN,
        remove(SECOND),
        Some(origin("node-1", FIRST, REPLAY_WINDOW + 5)),
    );
    assert!(removed.primary().decision.is_allowed());
    let last = cluster.run(
        PrincipalId::ADMIN,
        remove(FIRST),
        Some(origin("node-1", FIRST, REPLAY_WINDOW + 6)),
    );
    assert_eq!(last.primary().decision, Decision::Denied);
    let after = cluster.run(
        PrincipalId::ADMIN,
        post("late"),
        Some(origin("node-2", SECOND, 2)),
    );
    assert_eq!(after.primary().action, "cluster.refused");
}

#[test]
fn a_command_published_again_is_refused_and_changes_nothing() {
    let mut cluster = Cluster::new();
    let seq = REPLAY_WINDOW + 10;
    let first = cluster.run(
        PrincipalId::ADMIN,
        post("once"),
        Some(origin("node-1", FIRST, seq)),
    );
    assert!(first.primary().decision.is_allowed());
    let tasks = cluster.state.tasks().count();
    let replayed = cluster.run(
        PrincipalId::ADMIN,
        post("once"),
        Some(origin("node-1", FIRST, seq)),
    );
    assert_eq!(replayed.primary().action, "cluster.refused");
    assert!(format!("{:?}", replayed.primary().reason).contains("applied before"));
    assert_eq!(cluster.state.tasks().count(), tasks);
    // Out of order within the window is fine; far behind it is refused.
    let earlier = cluster.run(
        PrincipalId::ADMIN,
        post("earlier"),
        Some(origin("node-1", FIRST, seq - 3)),
    );
    assert!(earlier.primary().decision.is_allowed());
    cluster.run(
        PrincipalId::ADMIN,
        post("far ahead"),
        Some(origin("node-1", FIRST, seq + 2 * REPLAY_WINDOW)),
    );
    let stale = cluster.run(
        PrincipalId::ADMIN,
        post("stale"),
        Some(origin("node-1", FIRST, seq + 1)),
    );
    assert!(format!("{:?}", stale.primary().reason).contains("older than the replay window"));
    // An embedded node's commands carry no origin and are never checked.
    let mut embedded = Sim::new();
    let applied = embedded.run(PrincipalId::ADMIN, post("embedded"));
    assert!(applied.primary().decision.is_allowed());
}
