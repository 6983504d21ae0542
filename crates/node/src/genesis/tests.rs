//! The genesis parsers against the shipped files and bad input.

use super::*;
use colony_kernel::PrincipalKind;

fn limits_error(text: &str) -> String {
    parse_limits(Path::new("limits.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn shipped_files_parse() {
    let config = builtin_defaults();
    assert!(config.limits.iter().any(|l| l.name == "ai_accounts"));
    assert!(config
        .limits
        .iter()
        .any(|l| l.name == "llm_spend_usd" && l.hard.is_some()));
    assert!(config.quotas.defaults.contains_key(&PrincipalKind::Ai));
}

#[test]
fn errors_name_file_line_and_key() {
    let cases = [
        (
            "[limits.ai_accounts]\nsoft = 60\nhard = 50\n",
            "limits.toml:2: limits.ai_accounts.soft (60) is above hard (50)",
        ),
        (
            "[limits.ai_acounts]\nsoft = 1\n",
            "limits.toml:1: limits.ai_acounts: unknown limit",
        ),
        (
            "[limits.ai_accounts]\nsoft = -1\n",
            "limits.toml:2: limits.ai_accounts.soft: -1 is negative",
        ),
        (
            "[limits.ai_accounts]\nsoft = 1.5\n",
            "limits.toml:2: limits.ai_accounts.soft: floats are not accepted",
        ),
        (
            "[limits.ai_accounts]\nsoftt = 1\n",
            "limits.toml:2: unknown field `softt`",
        ),
        ("[limits.ai_accounts]\nsoft = \n", "limits.toml:2:"),
        (
            "[limits.llm_spend_usd]\nhard = 50\n",
            "limits.toml:2: limits.llm_spend_usd.hard: money is written in dollars",
        ),
        (
            "[limits.llm_spend_usd]\nwindow = \"soon\"\n",
            "limits.toml:2: limits.llm_spend_usd.window",
        ),
        (
            "[limits.llm_spend_usd]\non_soft = \"queue\"\n",
            "limits.toml:2: limits.llm_spend_usd.on_soft: `queue` applies to count limits",
        ),
        (
            "[limits.ai_accounts]\non_soft = \"panic\"\n",
            "limits.toml:2: limits.ai_accounts.on_soft: `panic`",
        ),
        (
            "[limits.max_ai_accounts]\nhard = 1\n[limits.ai_accounts]\nhard = 2\n",
            "is set twice",
        ),
    ];
    for (text, expected) in cases {
        let message = limits_error(text);
        assert!(
            message.contains(expected),
            "for {text:?}:\n  got {message}\n  expected {expected}"
        );
    }
}

#[test]
fn quota_errors_name_the_key() {
    let error = parse_quotas(
        Path::new("quotas.toml"),
        "[defaults.ai]\nllm_budget = \"1.00\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("quotas.toml:2: defaults.ai.llm_budget: unknown resource"),
        "{error}"
    );
    let error = parse_quotas(Path::new("quotas.toml"), "[defaults.robot]\nio_ops = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("defaults.robot: unknown principal kind"),
        "{error}"
    );
}

#[test]
fn governance_errors_name_the_key() {
    let base = "[governance]\nreview_period = \"2s\"\n";
    let check = |extra: &str, expected: &str| {
        let text = format!("{base}{extra}");
        let message = parse_governance(Path::new("governance.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(expected),
            "for {extra:?}:\n  got {message}\n  expected {expected}"
        );
    };
    check("[governance.rules.raise]\nhuman_quorum = 1\nai_quorum = 1\nhuman_approval = \"3/2\"\nai_approval = \"1/2\"\n", "governance.toml:6: governance.rules.raise.human_approval: `3/2` must be between 0 and 1");
    check("[governance.rules.grow]\nhuman_quorum = 1\nai_quorum = 1\nhuman_approval = \"1/2\"\nai_approval = \"1/2\"\n", "unknown change kind");
    check("[governance.rules.raise]\nhuman_quorum = 1\nai_quorum = 1\nhuman_approval = \"1/2\"\nai_approval = \"1/2\"\nveto = [\"king\"]\n", "`king` is not admin");
    let error = parse_governance(
        Path::new("g.toml"),
        "[governance]\nreview_period = \"soon\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("g.toml:2: governance.review_period"),
        "{error}"
    );
    let config = parse_governance(Path::new("g.toml"), base).unwrap();
    assert_eq!(config.review_period_ms, 2_000);
    assert!(config.rules.is_empty(), "no rule: nothing can be raised");
}

#[test]
fn task_settings_parse_and_are_checked() {
    let config = parse_tasks(
        Path::new("tasks.toml"),
        "[workers]\nheartbeat = \"100ms\"\ntimeout = \"300ms\"\n",
    )
    .unwrap();
    assert_eq!(
        (
            config.worker_heartbeat_ms,
            config.worker_timeout_ms,
            config.lease_ms
        ),
        (100, 300, 30_000)
    );
    let error = parse_tasks(
        Path::new("tasks.toml"),
        "[workers]\nheartbeat = \"10s\"\ntimeout = \"5s\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("tasks.toml:2: workers.heartbeat must be shorter"),
        "{error}"
    );
    let error = parse_tasks(Path::new("tasks.toml"), "[tasks]\nleese = \"1s\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tasks.toml:2") && error.contains("unknown field"),
        "{error}"
    );
    assert_eq!(
        builtin_defaults().tasks,
        TaskConfig::defaults(),
        "the shipped file says the defaults"
    );
}

#[test]
fn dollars_are_exact() {
    assert_eq!(parse_usd("50.00"), Ok(50_000_000));
    assert_eq!(parse_usd("0.000001"), Ok(1));
    assert_eq!(parse_usd("3.3"), Ok(3_300_000));
    assert!(parse_usd("1.0000001").is_err());
    assert!(parse_usd("-1").is_err());
    assert!(parse_usd("1e3").is_err());
}

#[test]
fn hypernet_names_are_accepted() {
    let specs = parse_limits(
        Path::new("l.toml"),
        "[limits.max_ai_accounts]\nsoft = 10\nhard = 50\n",
    )
    .unwrap();
    assert_eq!(specs[0].name, "ai_accounts");
}

#[test]
fn artifacts_toml_reads_the_runtime_and_the_kick_artifacts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis");
    let shipped = load_artifacts(&dir).unwrap();
    assert_eq!(shipped.kick.len(), 1);
    assert_eq!(shipped.kick[0].name, "alert-tasks");
    assert!(shipped.kick[0].path.exists(), "{:?}", shipped.kick[0].path);
    assert_eq!(shipped.runtime, colony_artifacts::RuntimeConfig::default());
    let file = Path::new("artifacts.toml");
    let bad_quota = "[[artifact]]\nname = \"x\"\npath = \"x.wat\"\njustification = \"j\"\nquotas = { gold = 1 }\n";
    let error = parse_artifacts(file, bad_quota, &dir).unwrap_err();
    assert_eq!(error.line, Some(5), "{error:?}");
    let bad_runtime = "[runtime]\nturn_ms = 0\n";
    let error = parse_artifacts(file, bad_runtime, &dir).unwrap_err();
    assert!(error.message.contains("turn_ms"), "{error:?}");
    let unknown = "[runtime]\nturn_ms_typo = 3\n";
    assert!(parse_artifacts(file, unknown, &dir).is_err());
    assert_eq!(
        parse_artifacts(file, "", &dir).unwrap(),
        ArtifactsSetup::default()
    );
}

#[test]
fn the_shipped_http_toml_is_the_defaults_and_bad_values_name_their_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/genesis/http.toml");
    let shipped = parse_http(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let defaults = crate::listener::ListenConfig::default();
    assert_eq!(
        (
            shipped.header_timeout_ms,
            shipped.body_timeout_ms,
            shipped.tls_handshake_timeout_ms,
            shipped.unauthenticated_connections_max,
            shipped.connection_buffer_bytes_max,
            shipped.descriptors_reserved,
            shipped.requests_in_flight_per_principal_max,
            shipped.body_bytes_in_flight_max,
            shipped.body_bytes_in_flight_per_principal_max,
        ),
        (
            defaults.header_timeout_ms,
            defaults.body_timeout_ms,
            defaults.tls_handshake_timeout_ms,
            defaults.unauthenticated_connections_max,
            defaults.connection_buffer_bytes_max,
            defaults.descriptors_reserved,
            defaults.requests_in_flight_per_principal_max,
            defaults.body_bytes_in_flight_max,
            defaults.body_bytes_in_flight_per_principal_max,
        )
    );
    let set = parse_http(
        Path::new("http.toml"),
        "[http]\nbody_timeout = \"5s\"\nrequests_in_flight_per_principal_max = 8\n",
    )
    .unwrap();
    assert_eq!(set.body_timeout_ms, 5_000);
    assert_eq!(set.requests_in_flight_per_principal_max, 8);
    let error = |text: &str| {
        parse_http(Path::new("http.toml"), text)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error("[http]\n\nbody_timeout = \"1ms\"\n"),
        "http.toml:3: http.body_timeout: between 100ms and 1h"
    );
    assert_eq!(
        error("[http]\nconnection_buffer_bytes_max = 100\n"),
        "http.toml:2: http.connection_buffer_bytes_max is between 8192 and 1048576 (not 100)"
    );
    assert_eq!(
        error("[http]\nrequests_in_flight_per_principal_max = 0\n"),
        "http.toml:2: http.requests_in_flight_per_principal_max is between 1 and 1000000 (not 0)"
    );
    assert!(error("[http]\nbogus = 1\n").contains("bogus"));
    assert_eq!(
        error("[http]\nbody_bytes_in_flight_per_principal_max = 1000\n"),
        "http.toml:2: http.body_bytes_in_flight_per_principal_max is between 8388608 (an artifact's largest module) and 64 GiB (not 1000)"
    );
    assert!(error("[http]\nbody_bytes_in_flight_max = 10000000\n").contains("below"));
}

#[test]
fn retention_parses_is_checked_and_ships_its_defaults() {
    use colony_kernel::retention::RetentionConfig;
    let file = Path::new("retention.toml");
    let config = parse_retention(
        file,
        "[tasks]\nkeep_finished = 50\nkeep_finished_for = \"1h\"\n",
    )
    .unwrap();
    assert_eq!(
        (config.keep_finished, config.keep_finished_for_ms),
        (50, 3_600_000)
    );
    let error = parse_retention(file, "[tasks]\nkeep_finished = 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("retention.toml:2: tasks.keep_finished is at least 1"),
        "{error}"
    );
    let error = parse_retention(file, "[tasks]\nkeep_finished_for = \"10ms\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("retention.toml:2") && error.contains("1s"),
        "{error}"
    );
    let error = parse_retention(file, "[logs]\nkeep = \"1d\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field"), "{error}");
    assert_eq!(
        builtin_defaults().retention,
        RetentionConfig::defaults(),
        "the shipped file says the defaults"
    );
}

#[test]
fn log_retention_parses_sizes_and_ages_and_names_bad_values() {
    let file = Path::new("retention.toml");
    let rule = parse_log_retention(
        file,
        "[logs]\nkeep_for = \"30d\"\nkeep_bytes = \"20GiB\"\npruned = \"delete\"\n",
    )
    .unwrap();
    assert_eq!(rule.keep_for_ms, Some(30 * 86_400_000));
    assert_eq!(rule.keep_bytes, Some(20 << 30));
    assert!(!rule.archive);
    let rule = parse_log_retention(file, "[logs]\nkeep_for = \"forever\"\n").unwrap();
    assert!(
        rule.keeps_everything(),
        "forever and no size bound keep everything"
    );
    let error = parse_log_retention(file, "[logs]\nkeep_bytes = \"lots\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("retention.toml:2: logs.keep_bytes"),
        "{error}"
    );
    let error = parse_log_retention(file, "[logs]\npruned = \"shred\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("logs.pruned"), "{error}");
    let shipped = parse_log_retention(Path::new("retention.toml"), DEFAULT_RETENTION_TOML).unwrap();
    assert_eq!(
        (
            shipped.keep_for_ms,
            shipped.keep_bytes,
            shipped.archive,
            shipped.archive_keep_for_ms
        ),
        (Some(90 * 86_400_000), None, true, None)
    );
    // The archive: kept forever unless told, and never for less than a day.
    let rule = parse_log_retention(
        file,
        "[logs]
keep_for = \"forever\"
[archive]
keep_for = \"365d\"
",
    )
    .unwrap();
    assert_eq!(rule.archive_keep_for_ms, Some(365 * 86_400_000));
    assert!(!rule.keeps_everything(), "the archive has a bound");
    let error = parse_log_retention(
        file,
        "[archive]
keep_for = \"1h\"
",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("retention.toml:2: archive.keep_for: at least \"1d\""),
        "{error}"
    );
    assert_eq!(colony_config::parse_bytes("64KiB"), Ok(64 << 10));
    assert_eq!(colony_config::parse_bytes("500MB"), Ok(500_000_000));
    assert!(colony_config::parse_bytes("0").is_err());
    assert!(
        colony_config::parse_bytes("99999999999TiB").is_err(),
        "no overflow"
    );
}
