//! Tests of the limit catalogue, the gate and the admission queue.

mod tests {
    use super::super::*;

    fn limit(soft: Option<u64>, hard: Option<u64>, on_soft: OnSoft) -> Limit {
        let spec = LimitSpec {
            name: "ai_accounts".into(),
            unit: "accounts".into(),
            description: String::new(),
            soft,
            hard,
            on_soft,
            window_ms: None,
            queue_max: 10,
            brake_floor: 0,
        };
        Limit::new(spec, "0.1".into(), 0, "tests".into())
    }

    fn check(
        usage: u64,
        soft: Option<u64>,
        hard: Option<u64>,
        on_soft: OnSoft,
        expected: &str,
        state: LimitState,
    ) {
        let mut limit = limit(soft, hard, on_soft);
        limit.usage = usage;
        let gate = match limit.gate(1) {
            Gate::Allow => "allow",
            Gate::Warn(_) => "warn",
            Gate::Queue(_) => "queue",
            Gate::Deny(_) => "deny",
        };
        assert_eq!(gate, expected, "usage {usage} soft {soft:?} hard {hard:?}");
        assert_eq!(limit.state(), state, "state at usage {usage}");
    }

    #[test]
    fn gate_table() {
        use LimitState::*;
        use OnSoft::Warn as W;
        check(0, Some(2), Some(4), W, "allow", Ok);
        check(1, Some(2), Some(4), W, "allow", Ok);
        check(2, Some(2), Some(4), W, "warn", LimitState::Warn);
        check(3, Some(2), Some(4), W, "warn", LimitState::Warn);
        check(4, Some(2), Some(4), W, "deny", Blocked);
        check(9, Some(2), Some(4), W, "deny", Blocked);
        check(
            2,
            Some(2),
            Some(4),
            OnSoft::Queue,
            "queue",
            LimitState::Queue,
        );
        check(1_000_000, None, None, W, "allow", Ok);
        check(4, None, Some(5), W, "allow", Ok);
        check(5, None, Some(5), W, "deny", Blocked);
        check(0, Some(0), Some(0), W, "deny", Blocked);
    }

    #[test]
    fn rate_window_turns() {
        let mut limit = limit(None, Some(10), OnSoft::Warn);
        limit.kind = LimitKind::Rate;
        limit.spec.window_ms = Some(1_000);
        limit.roll_window(5_500);
        limit.usage = 10;
        limit.roll_window(5_999);
        assert_eq!(limit.usage, 10);
        limit.roll_window(6_000);
        assert_eq!(limit.usage, 0);
        assert_eq!(limit.window_start_ms, 6_000);
    }

    #[test]
    fn hypernet_names_resolve() {
        assert_eq!(
            builtin_limit("max_ai_accounts").unwrap().name,
            "ai_accounts"
        );
        assert_eq!(
            builtin_limit("max_concurrent_workers").unwrap().name,
            "active_workers"
        );
        assert_eq!(
            builtin_limit("max_task_queue_depth").unwrap().name,
            "task_queue_depth"
        );
        assert!(builtin_limit("nonsense").is_none());
    }
}

mod names {
    use super::super::*;

    #[test]
    fn every_builtin_limit_has_a_name_and_back() {
        assert_eq!(LimitName::ALL.len(), BUILTIN_LIMITS.len());
        for name in LimitName::ALL {
            assert_eq!(LimitName::parse(name.as_str()), Some(name));
            assert_eq!(name.builtin().name, name.as_str());
        }
        assert_eq!(
            LimitName::parse("max_ai_accounts"),
            Some(LimitName::AiAccounts)
        );
        assert_eq!(LimitName::parse("no_such_limit"), None);
    }
}
