//! Proximity alerts in the kernel: a threshold raised once until it is cleared,
//! reported only by the system, kept within their bound, forgotten with their
//! principal.

use crate::common;

use colony_kernel::alerts::{AlertReport, AlertScope, Threshold};
use colony_kernel::*;
use common::*;

fn report(scope: AlertScope, threshold: Threshold, raised: bool) -> CommandBody {
    CommandBody::Alert(Box::new(AlertReport {
        scope,
        threshold,
        raised,
        usage: 40,
        at: 40,
        of: Some(50),
    }))
}

fn limit() -> AlertScope {
    AlertScope::Limit {
        limit: "ai_accounts".into(),
    }
}

#[test]
fn a_threshold_alerts_once_until_it_clears() {
    let mut sim = Sim::new();
    let raise = sim.run(
        PrincipalId::SYSTEM,
        report(limit(), Threshold::Percent(80), true),
    );
    assert_eq!(raise.primary().decision, Decision::Allowed);
    assert_eq!(raise.primary().action, "alert.raise");
    assert!(sim.state.alert_raised(&limit(), Threshold::Percent(80)));
    // Hovering at the threshold: a second raise is refused, nothing is kept.
    let again = sim.run(
        PrincipalId::SYSTEM,
        report(limit(), Threshold::Percent(80), true),
    );
    assert_eq!(again.primary().decision, Decision::Denied);
    assert_eq!(sim.state.alerts().count(), 1);
    // Another threshold of the same limit is its own.
    let soft = sim.run(PrincipalId::SYSTEM, report(limit(), Threshold::Soft, true));
    assert_eq!(soft.primary().decision, Decision::Allowed);
    let clear = sim.run(
        PrincipalId::SYSTEM,
        report(limit(), Threshold::Percent(80), false),
    );
    assert_eq!(clear.primary().action, "alert.clear");
    assert_eq!(clear.primary().decision, Decision::Allowed);
    assert!(!sim.state.alert_raised(&limit(), Threshold::Percent(80)));
    let cleared_again = sim.run(
        PrincipalId::SYSTEM,
        report(limit(), Threshold::Percent(80), false),
    );
    assert_eq!(cleared_again.primary().decision, Decision::Denied);
    let ids: Vec<u64> = sim.state.alerts().map(|a| a.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let first = sim.state.alerts().next().unwrap();
    assert!(
        first
            .summary()
            .contains("limit ai_accounts reached its 80% threshold"),
        "{}",
        first.summary()
    );
}

#[test]
fn only_the_system_reports_and_only_real_figures() {
    let mut sim = Sim::new();
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let forged = sim.run(agent, report(limit(), Threshold::Soft, true));
    assert_eq!(forged.primary().decision, Decision::Denied);
    let unknown = AlertScope::Limit {
        limit: "no_such_limit".into(),
    };
    let applied = sim.run(PrincipalId::SYSTEM, report(unknown, Threshold::Soft, true));
    assert_eq!(applied.primary().decision, Decision::Denied);
    let zero = sim.run(
        PrincipalId::SYSTEM,
        report(limit(), Threshold::Percent(0), true),
    );
    assert_eq!(zero.primary().decision, Decision::Denied);
    assert_eq!(sim.state.alerts().count(), 0);
}

#[test]
fn a_quota_alert_goes_with_its_principal() {
    let mut sim = Sim::new();
    let agent = sim.create_ok(PrincipalKind::Ai, None);
    let scope = AlertScope::Quota {
        principal: agent,
        resource: Resource::IoOps,
    };
    let raised = sim.run(
        PrincipalId::SYSTEM,
        report(scope.clone(), Threshold::Percent(95), true),
    );
    assert_eq!(raised.primary().decision, Decision::Allowed);
    assert!(sim.state.alerts().next().unwrap().principal.is_some());
    sim.run(
        PrincipalId::ADMIN,
        CommandBody::RemovePrincipal { principal: agent },
    );
    assert!(!sim.state.alert_raised(&scope, Threshold::Percent(95)));
    let late = sim.run(
        PrincipalId::SYSTEM,
        report(scope, Threshold::Percent(80), true),
    );
    assert_eq!(late.primary().decision, Decision::Denied);
}

#[test]
fn the_kept_alerts_are_bounded() {
    let mut sim = Sim::new();
    for _ in 0..(colony_kernel::alerts::ALERTS_KEPT_MAX / 2 + 10) {
        sim.run(PrincipalId::SYSTEM, report(limit(), Threshold::Soft, true));
        sim.run(PrincipalId::SYSTEM, report(limit(), Threshold::Soft, false));
    }
    assert_eq!(
        sim.state.alerts().count(),
        colony_kernel::alerts::ALERTS_KEPT_MAX
    );
    sim.state.check_invariants().unwrap();
}
