//! Finished task trees leave the live state by the retention rule, as decisions.

use colony_kernel::retention::{RetentionConfig, RetireCause};
use colony_kernel::tasks::*;
use colony_kernel::*;

use crate::common;
use common::*;

fn sim_keeping(keep_finished: u64, keep_for_ms: u64) -> Sim {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    genesis.retention = RetentionConfig {
        keep_finished,
        keep_finished_for_ms: keep_for_ms,
    };
    Sim::with(genesis)
}

/// Claims the task at `address` (the only claimable one) and completes it.
fn finish(sim: &mut Sim, worker: PrincipalId, address: &str) -> Applied {
    let (claimed, token) = claim(sim, worker, &[]).expect("claimable");
    assert_eq!(claimed, address);
    update(
        sim,
        worker,
        address,
        token,
        TaskUpdate::Complete("\"done\"".into()),
    )
}

fn retirements(applied: &Applied) -> Vec<(TaskAddress, u64, RetireCause)> {
    applied
        .events
        .iter()
        .filter_map(|event| match &event.effect {
            Effect::TasksRetired {
                root, tasks, cause, ..
            } => Some((root.clone(), *tasks, *cause)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_oldest_finished_tree_leaves_once_more_are_kept_than_the_rule_allows() {
    let mut sim = sim_keeping(2, 7 * 86_400_000);
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let mut addresses: Vec<TaskAddress> = Vec::new();
    for n in 0..3 {
        let address = post_plain(&mut sim, &format!("task {n}"));
        sim.advance(1_000);
        let applied = finish(&mut sim, worker, &address);
        if n < 2 {
            assert!(retirements(&applied).is_empty(), "two are kept");
            assert!(applied.retired.is_empty());
        } else {
            assert_eq!(
                retirements(&applied),
                vec![(addresses[0].clone(), 1, RetireCause::Count)],
                "the third finished task sends the first away, in the same decision"
            );
            assert_eq!(applied.retired.len(), 1);
            let gone = &applied.retired[0];
            assert_eq!(gone.address, addresses[0]);
            assert_eq!(gone.status, TaskStatus::Completed);
            assert_eq!(
                gone.result.as_deref(),
                Some("\"done\""),
                "whole, as it stood"
            );
        }
        addresses.push(address);
    }
    assert!(sim.state.task(&addresses[0]).is_none());
    assert!(sim.state.task(&addresses[1]).is_some());
    assert!(sim.state.may_be_archived(&addresses[0]));
    assert!(sim.state.may_be_archived(&format!("{}.3", addresses[0])));
    assert!(
        !sim.state.may_be_archived(&addresses[1]),
        "live: its tree is not archived"
    );
    assert!(!sim.state.may_be_archived(&format!("{}.1", addresses[1])));
    assert!(!sim.state.may_be_archived("0.7.1.00099"), "never posted");
    assert!(!sim.state.may_be_archived("0.7.2.00001"));
    assert!(!sim.state.may_be_archived("0.7.1."));
    assert_eq!(sim.state.task_count(TaskStatus::Completed), 2);
    assert_eq!(sim.state.retired_tasks(), 1);
    assert_eq!(sim.state.finished_kept(), (2, 2));
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_finished_tree_leaves_when_it_is_older_than_the_rule_and_time_says_when() {
    let mut sim = sim_keeping(100, 60_000);
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let address = post_plain(&mut sim, "short-lived");
    let finished_at = sim.now_ms;
    finish(&mut sim, worker, &address);
    assert_eq!(sim.state.next_due_ms(), Some(finished_at + 60_000));
    sim.advance(59_999);
    assert!(retirements(&sim.run(PrincipalId::SYSTEM, CommandBody::Tick)).is_empty());
    sim.advance(1);
    let tick = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert_eq!(
        retirements(&tick),
        vec![(address.clone(), 1, RetireCause::Age)]
    );
    assert!(sim.state.task(&address).is_none());
    assert_eq!(sim.state.next_due_ms(), None, "nothing else is due");
}

#[test]
fn a_tree_leaves_whole_and_only_once_every_task_in_it_is_finished() {
    let mut sim = sim_keeping(1, 7 * 86_400_000);
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let root = post_plain(&mut sim, "plan");
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    let decompose = TaskUpdate::Decompose {
        subtasks: vec![
            new_task("one", Priority::Normal, &[]),
            new_task("two", Priority::Normal, &[]),
        ],
        on_child_death: ChildDeathPolicy::Fail,
    };
    assert!(update(&mut sim, worker, &root, token, decompose)
        .primary()
        .decision
        .is_allowed());
    let first = finish(&mut sim, worker, &format!("{root}.1"));
    assert!(
        retirements(&first).is_empty(),
        "a finished subtask stays while its tree is open"
    );
    let last = finish(&mut sim, worker, &format!("{root}.2"));
    assert!(last
        .retired
        .iter()
        .all(|task| task.status == TaskStatus::Completed));
    // Three tasks finished, one kept: the whole tree leaves at once.
    assert_eq!(
        retirements(&last),
        vec![(root.clone(), 3, RetireCause::Count)]
    );
    let mut gone: Vec<_> = last.retired.iter().map(|t| t.address.clone()).collect();
    gone.sort();
    assert_eq!(gone, vec![root.clone(), root.child(1), root.child(2)]);
    assert_eq!(sim.state.tasks().count(), 0);
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_dead_task_stays_while_an_open_task_waits_on_it_and_a_requeue_keeps_it() {
    let mut sim = sim_keeping(10, 60_000);
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let mut doomed = new_task("doomed", Priority::Normal, &[]);
    doomed.max_attempts = Some(1);
    let dead = post(&mut sim, PrincipalId::ADMIN, doomed).unwrap();
    let mut waiting = new_task("after it", Priority::Normal, &[]);
    waiting.depends_on = vec![dead.to_string()];
    let waiter = post(&mut sim, PrincipalId::ADMIN, waiting).unwrap();
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    update(
        &mut sim,
        worker,
        &dead,
        token,
        TaskUpdate::Fail("broke".into()),
    );
    assert_eq!(status(&sim, &dead), TaskStatus::Dead);
    sim.advance(120_000);
    let tick = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert!(retirements(&tick).is_empty());
    assert!(
        sim.state.task(&dead).is_some(),
        "{waiter} waits on it: it stays for a requeue"
    );
    let requeued = sim.run(
        PrincipalId::ADMIN,
        CommandBody::RequeueTask {
            address: dead.clone(),
        },
    );
    assert!(requeued.primary().decision.is_allowed());
    assert_eq!(sim.state.finished_kept(), (0, 0), "open again: not filed");
    // It dies again; once its waiter is cancelled nothing waits, and both leave.
    let (_, token) = claim(&mut sim, worker, &[]).unwrap();
    update(
        &mut sim,
        worker,
        &dead,
        token,
        TaskUpdate::Fail("again".into()),
    );
    let cancelled = sim.run(
        PrincipalId::ADMIN,
        CommandBody::CancelTask {
            address: waiter.clone(),
        },
    );
    assert!(cancelled.primary().decision.is_allowed());
    sim.advance(60_000);
    let tick = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    let mut gone: Vec<_> = retirements(&tick).into_iter().map(|r| r.0).collect();
    gone.sort();
    assert_eq!(gone, vec![dead, waiter]);
    sim.state.check_invariants().unwrap();
}

#[test]
fn a_task_depends_on_live_tasks_only_and_a_retired_dependency_counts_as_met() {
    let mut sim = sim_keeping(1, 7 * 86_400_000);
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    let first = post_plain(&mut sim, "first");
    let mut later = new_task("later", Priority::Normal, &["other"]);
    later.depends_on = vec![first.to_string()];
    let later = post(&mut sim, PrincipalId::ADMIN, later).unwrap();
    finish(&mut sim, worker, &first);
    assert_eq!(status(&sim, &later), TaskStatus::Pending);
    let second = post_plain(&mut sim, "second");
    finish(&mut sim, worker, &second);
    assert!(
        sim.state.task(&first).is_none(),
        "one finished task is kept"
    );
    let mut late = new_task("too late", Priority::Normal, &[]);
    late.depends_on = vec![first.to_string()];
    let refused = post(&mut sim, PrincipalId::ADMIN, late).unwrap_err();
    assert_eq!(refused.code(), "not_found");
    sim.state.check_invariants().unwrap();
}

#[test]
fn genesis_refuses_a_rule_that_keeps_nothing() {
    let mut genesis = Genesis::for_tests(ADMIN_TOKEN);
    genesis.retention.keep_finished = 0;
    let mut state = State::new();
    let applied = state.apply(&Command::new(
        1,
        1_000,
        PrincipalId::SYSTEM,
        "first start",
        CommandBody::Genesis(Box::new(genesis)),
    ));
    assert!(!applied.primary().decision.is_allowed());
    assert!(format!("{:?}", applied.primary().reason).contains("keep_finished"));
}

#[test]
fn the_retention_rule_changes_by_a_passed_proposal_and_then_applies() {
    use colony_kernel::governance::{ChangeKind, ProposalTarget, VoteChoice};
    let week = 7 * 86_400_000;
    let mut sim = sim_keeping(3, week);
    let human = sim.create_ok(PrincipalKind::Human, None);
    let ai = sim.create_ok(PrincipalKind::Ai, None);
    let worker = sim.create_ok(PrincipalKind::Ai, None);
    for n in 0..3 {
        let address = post_plain(&mut sim, &format!("task {n}"));
        sim.advance(1_000);
        assert!(retirements(&finish(&mut sim, worker, &address)).is_empty());
    }
    let propose = |sim: &mut Sim, rule: RetentionConfig, brake_only: bool| {
        sim.run(
            human,
            CommandBody::Propose {
                target: ProposalTarget::Retention(rule),
                brake_only,
            },
        )
        .primary()
        .clone()
    };
    let keeping = |keep_finished, keep_finished_for_ms| RetentionConfig {
        keep_finished,
        keep_finished_for_ms,
    };
    // Out of range, unchanged, or as a brake: refused, and nothing opens.
    for (rule, brake) in [
        (keeping(0, week), false),
        (keeping(1, 10), false),
        (keeping(3, week), false),
        (keeping(1, week), true),
    ] {
        let refused = propose(&mut sim, rule.clone(), brake);
        assert!(!refused.decision.is_allowed(), "{rule:?} brake {brake}");
    }
    assert!(sim.state.proposals().next().is_none());

    let opened = propose(&mut sim, keeping(1, week), false);
    let Effect::ProposalOpened {
        proposal, change, ..
    } = opened.effect
    else {
        panic!("{opened:?}");
    };
    assert_eq!(change, ChangeKind::Retention);
    assert_eq!(opened.subject, "retention:tasks");
    for voter in [human, ai] {
        let voted = sim.run(
            voter,
            CommandBody::Vote {
                proposal,
                choice: VoteChoice::Approve,
            },
        );
        assert!(voted.primary().decision.is_allowed());
    }
    // Nothing changes during the review.
    sim.advance(9_999);
    sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    assert_eq!(sim.state.retention().keep_finished, 3);
    sim.advance(1);
    let decided = sim.run(PrincipalId::SYSTEM, CommandBody::Tick);
    let changed = decided
        .events
        .iter()
        .find_map(|event| match &event.effect {
            Effect::RetentionChanged { rule, previous, .. } => {
                Some((rule.clone(), previous.clone()))
            }
            _ => None,
        })
        .expect("the rule changed when the review ended");
    assert_eq!(changed, (keeping(1, week), keeping(3, week)));
    assert_eq!(sim.state.retention(), &keeping(1, week));
    // The new rule applies: the two oldest finished trees leave.
    let mut retired = retirements(&decided);
    if retired.is_empty() {
        retired = retirements(&sim.run(PrincipalId::SYSTEM, CommandBody::Tick));
    }
    assert_eq!(retired.len(), 2, "{retired:?}");
    assert!(retired
        .iter()
        .all(|(_, _, cause)| *cause == RetireCause::Count));
}
