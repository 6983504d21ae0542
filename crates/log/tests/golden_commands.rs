//! The command log's format, pinned: the encoded bytes of one command of every
//! `CommandBody` variant, as written to `commands/` (postcard), held in
//! `tests/golden/commands.hex`. Reordering a variant, or adding a field to one,
//! changes what is on disk: this test fails until `DATA_FORMAT` is bumped (with a
//! migration note in docs/configuration.md) and the file is blessed again with
//! `COLONY_BLESS=1 cargo test -p colony-log --test golden_commands`. A new variant
//! (appended last, which leaves every older encoding as it was) is blessed without a
//! bump. The state those commands reach (`state.hex`) and the decision records they
//! leave (`records.jsonl`) are pinned below the same way.

use colony_kernel::alerts::{AlertReport, AlertScope, Threshold};
use colony_kernel::artifacts::NewArtifact;
use colony_kernel::edge::EdgeLeaseRequest;
use colony_kernel::governance::{Change, ProposalTarget, VoteChoice};
use colony_kernel::grants::GrantWhat;
use colony_kernel::streams::{EdgeUsage, StreamSpec};
use colony_kernel::tasks::{ChildDeathPolicy, NewTask};
use colony_kernel::workers::NewWorker;
use colony_kernel::*;

const GOLDEN: &str = "tests/golden/commands.hex";

/// The variant's name; a match without a wildcard, so that a new variant cannot
/// be added without this test knowing it.
fn variant(body: &CommandBody) -> &'static str {
    match body {
        CommandBody::Genesis(_) => "Genesis",
        CommandBody::CreatePrincipal(_) => "CreatePrincipal",
        CommandBody::RemovePrincipal { .. } => "RemovePrincipal",
        CommandBody::CreateToken(_) => "CreateToken",
        CommandBody::RequestGrant { .. } => "RequestGrant",
        CommandBody::DecideGrant { .. } => "DecideGrant",
        CommandBody::RevokeToken { .. } => "RevokeToken",
        CommandBody::Reserve { .. } => "Reserve",
        CommandBody::Commit { .. } => "Commit",
        CommandBody::Settle { .. } => "Settle",
        CommandBody::Release { .. } => "Release",
        CommandBody::Grant { .. } => "Grant",
        CommandBody::Free { .. } => "Free",
        CommandBody::Propose { .. } => "Propose",
        CommandBody::Vote { .. } => "Vote",
        CommandBody::PostTask(_) => "PostTask",
        CommandBody::ClaimTask { .. } => "ClaimTask",
        CommandBody::RegisterWorker(_) => "RegisterWorker",
        CommandBody::WorkerHeartbeat { .. } => "WorkerHeartbeat",
        CommandBody::LeaveWorker { .. } => "LeaveWorker",
        CommandBody::ClaimSpecificTask { .. } => "ClaimSpecificTask",
        CommandBody::UpdateTask { .. } => "UpdateTask",
        CommandBody::ReleaseQuarantine { .. } => "ReleaseQuarantine",
        CommandBody::RequeueTask { .. } => "RequeueTask",
        CommandBody::ReportHealth(_) => "ReportHealth",
        CommandBody::Supervise { .. } => "Supervise",
        CommandBody::Tick => "Tick",
        CommandBody::DefineStream(_) => "DefineStream",
        CommandBody::DeleteStream { .. } => "DeleteStream",
        CommandBody::WorkerDisconnected { .. } => "WorkerDisconnected",
        CommandBody::ChargeEdge { .. } => "ChargeEdge",
        CommandBody::DeployArtifact(_) => "DeployArtifact",
        CommandBody::SetArtifactRun { .. } => "SetArtifactRun",
        CommandBody::Alert(_) => "Alert",
        CommandBody::LeaseEdge(_) => "LeaseEdge",
        CommandBody::CancelTask { .. } => "CancelTask",
        CommandBody::SetTaskPriority { .. } => "SetTaskPriority",
        CommandBody::RecordToolCall(_) => "RecordToolCall",
        CommandBody::AdmitNode { .. } => "AdmitNode",
        CommandBody::RemoveNode { .. } => "RemoveNode",
        CommandBody::RenewWorkers { .. } => "RenewWorkers",
        CommandBody::RenewLeases { .. } => "RenewLeases",
        CommandBody::DeclareWorkerLost { .. } => "DeclareWorkerLost",
    }
}

fn task(title: &str) -> NewTask {
    NewTask {
        title: title.into(),
        description: "pinned".into(),
        priority: Priority::High,
        capabilities: vec!["rust".into()],
        depends_on: vec!["1".into()],
        budget_micro_usd: Some(500_000),
        max_attempts: Some(3),
        attempt_timeout_ms: Some(1_800_000),
    }
}

/// One command of every variant, with every optional part present.
fn bodies() -> Vec<CommandBody> {
    let mut principal = CreatePrincipal::new("pinned", PrincipalKind::Ai, [7; 32]);
    principal.parent = Some(PrincipalId(2));
    principal.roles = vec![Role::Member];
    principal.scopes = vec!["tasks".into()];
    let usage = EdgeUsage {
        principal: PrincipalId(3),
        io_ops: 12,
        data_bytes: 3_400,
    };
    // The genesis as it was pinned: the defaults have since gained a vote rule for
    // retention changes (a value, not an encoding, change; `ChangeKind::Retention`
    // was appended last, so older logs decode as they are).
    let mut genesis = Genesis::for_tests([1; 32]);
    genesis
        .governance
        .rules
        .remove(&colony_kernel::governance::ChangeKind::Retention);
    vec![
        CommandBody::Genesis(Box::new(genesis)),
        CommandBody::CreatePrincipal(principal),
        CommandBody::RemovePrincipal {
            principal: PrincipalId(4),
        },
        CommandBody::CreateToken(Box::new(NewToken {
            principal: PrincipalId(2),
            name: "ci".into(),
            scopes: vec!["read".into(), "bus:work.>".into()],
            ttl_ms: Some(3_600_000),
            hash: [9; 32],
        })),
        CommandBody::RequestGrant {
            what: GrantWhat::Quota {
                resource: Resource::IoOps,
                amount: 50_000,
            },
            ttl_ms: 7_200_000,
        },
        CommandBody::DecideGrant {
            grant: 41,
            approve: true,
        },
        CommandBody::RevokeToken {
            principal: PrincipalId(2),
            token: 3,
        },
        CommandBody::Reserve {
            resource: Resource::LlmBudgetUsd,
            amount: 50_000,
            ttl_ms: Some(60_000),
        },
        CommandBody::Commit {
            reservation: 17,
            actual: 31_000,
        },
        CommandBody::Settle {
            reservation: 18,
            actual: 34,
            task: Some((TaskAddress::parse("0.7.1.00001").unwrap(), 12)),
        },
        CommandBody::Release { reservation: 19 },
        CommandBody::Grant {
            to: PrincipalId(5),
            resource: Resource::ComputeMs,
            amount: 60_000,
        },
        CommandBody::Free {
            resource: Resource::DiskBytes,
            amount: 4_096,
        },
        CommandBody::Propose {
            target: ProposalTarget::Limit {
                limit: "ai_accounts".into(),
                soft: Change::Keep,
                hard: Change::Set(50),
            },
            brake_only: false,
        },
        CommandBody::Vote {
            proposal: 2,
            choice: VoteChoice::Approve,
        },
        CommandBody::PostTask(Box::new(task("post"))),
        CommandBody::ClaimTask {
            capabilities: vec!["rust".into()],
            lease_ms: Some(30_000),
            worker: Some(8),
        },
        CommandBody::RegisterWorker(Box::new(NewWorker {
            capabilities: vec!["rust".into()],
            model: Some("gpt-4o-mini".into()),
            profile: Some("coders".into()),
        })),
        CommandBody::WorkerHeartbeat { worker: 8 },
        CommandBody::LeaveWorker { worker: 8 },
        CommandBody::ClaimSpecificTask {
            address: TaskAddress::parse("0.7.1.00002").unwrap(),
            lease_ms: Some(10_000),
        },
        CommandBody::UpdateTask {
            address: TaskAddress::parse("0.7.1.00001").unwrap(),
            token: 12,
            update: TaskUpdate::Decompose {
                subtasks: vec![task("child")],
                on_child_death: ChildDeathPolicy::Redecompose,
            },
        },
        CommandBody::ReleaseQuarantine {
            principal: PrincipalId(6),
        },
        CommandBody::RequeueTask {
            address: TaskAddress::parse("0.7.1.00003").unwrap(),
        },
        CommandBody::ReportHealth(NodeHealth {
            requests: 1_000,
            errors: 2,
            anomalies: 1,
        }),
        CommandBody::Supervise {
            profile: "coders".into(),
            action: SupervisorAction::Replace,
            pid: Some(4242),
        },
        CommandBody::Tick,
        CommandBody::DefineStream(Box::new(StreamSpec {
            name: "orders".into(),
            subjects: vec!["orders.>".into()],
            max_age_ms: Some(604_800_000),
            max_bytes: Some(1 << 30),
            max_msgs: Some(1_000_000),
            ack_wait_ms: 30_000,
            max_deliver: 5,
        })),
        CommandBody::DeleteStream {
            name: "orders".into(),
        },
        CommandBody::WorkerDisconnected {
            worker: 8,
            disconnected_at_ms: 1_700_000_000_000,
            grace_ms: 10_000,
        },
        CommandBody::ChargeEdge {
            usage: vec![usage.clone()],
        },
        CommandBody::DeployArtifact(Box::new(NewArtifact {
            name: "alert-tasks".into(),
            digest: "ab".repeat(32),
            bytes: 12_345,
            token_hash: [5; 32],
            quotas: vec![(Resource::ComputeMs, 1_000)],
            run: true,
        })),
        CommandBody::SetArtifactRun {
            artifact: PrincipalId(9),
            run: false,
        },
        CommandBody::Alert(Box::new(AlertReport {
            scope: AlertScope::Quota {
                principal: PrincipalId(2),
                resource: Resource::IoOps,
            },
            threshold: Threshold::Percent(80),
            raised: true,
            usage: 8_100,
            at: 8_000,
            of: Some(10_000),
        })),
        CommandBody::LeaseEdge(Box::new(EdgeLeaseRequest {
            node: "node-1".into(),
            usage: vec![usage],
            io_ops: vec![(PrincipalId(3), 500)],
            data_bytes: 65_536,
            ttl_ms: 30_000,
        })),
        CommandBody::CancelTask {
            address: TaskAddress::parse("0.7.1.00004").unwrap(),
        },
        CommandBody::SetTaskPriority {
            address: TaskAddress::parse("0.7.1.00005").unwrap(),
            priority: Priority::Critical,
        },
        CommandBody::RecordToolCall(Box::new(colony_kernel::tool_calls::ToolCallRecord {
            tool: "files__read_file".into(),
            arguments_sha256: "ab".repeat(32),
            arguments_bytes: 42,
            outcome: colony_kernel::tool_calls::ToolOutcome::Ok,
            result_bytes: 1_234,
            duration_ms: 17,
            charges: vec![(41, 1)],
            grant: Some(40),
        })),
        CommandBody::AdmitNode {
            name: "node-2".into(),
            key: [2; 32],
        },
        CommandBody::RemoveNode { key: [3; 32] },
        CommandBody::RenewWorkers {
            heard: vec![colony_kernel::workers::WorkerHeard {
                worker: 8,
                at_ms: 9_000,
            }],
        },
        CommandBody::DeclareWorkerLost {
            worker: 8,
            last_heard_ms: 9_000,
        },
        CommandBody::RenewLeases {
            heard: vec![colony_kernel::tasks::LeaseHeard {
                address: TaskAddress::parse("0.7.1.00001").unwrap(),
                token: 12,
                at_ms: 9_000,
            }],
        },
    ]
}

/// `(name, hex of the encoded command)` for every variant.
fn encoded() -> Vec<(&'static str, String)> {
    bodies()
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            let name = variant(&body);
            let mut command = Command::new(
                index as u64 + 1,
                1_700_000_000_000 + index as u64,
                PrincipalId(1),
                "pinned",
                body,
            );
            // Every other one as a cluster's node proposed it.
            if index % 2 == 1 {
                command.origin = Some(colony_kernel::cluster::Origin {
                    node: "node-1".into(),
                    key: [1; 32],
                    node_seq: 4_097 + index as u64,
                });
            }
            (name, hex::encode(postcard::to_stdvec(&command).unwrap()))
        })
        .collect()
}

/// A golden file: the `DATA_FORMAT` it was blessed at (its first line,
/// `colony-data-format N`), and the rest of it (empty when there is none yet).
fn golden(path: &std::path::Path) -> (Option<u32>, String) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let format = first
        .strip_prefix("colony-data-format ")
        .and_then(|n| n.parse().ok());
    (format, rest.to_string())
}

#[test]
fn every_command_variant_encodes_to_its_pinned_bytes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let (blessed_format, text) = golden(&path);
    let pinned: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .collect();
    let now = encoded();
    let names: std::collections::BTreeSet<&str> = now.iter().map(|(name, _)| *name).collect();
    assert_eq!(names.len(), now.len(), "one command per variant");
    let changed: Vec<&str> = now
        .iter()
        .filter(|(name, hex)| pinned.get(name).is_some_and(|pinned| pinned != hex))
        .map(|(name, _)| *name)
        .collect();
    let new: Vec<&str> = now
        .iter()
        .filter(|(name, _)| !pinned.contains_key(name))
        .map(|(name, _)| *name)
        .collect();
    let format = colony_log::DATA_FORMAT;
    if std::env::var_os("COLONY_BLESS").is_some() {
        assert!(
            changed.is_empty() || blessed_format != Some(format),
            "the encoding of {changed:?} changed but DATA_FORMAT is still {format}: bump it \
             (and say how to migrate in docs/configuration.md) before blessing"
        );
        let mut out = format!("colony-data-format {format}\n");
        for (name, hex) in &now {
            out.push_str(&format!("{name} {hex}\n"));
        }
        std::fs::write(&path, out).unwrap();
        return;
    }
    assert!(
        changed.is_empty(),
        "the on-disk encoding of {changed:?} changed (a reordered variant or a new field): \
         bump colony_log::DATA_FORMAT, note the migration in docs/configuration.md, and bless \
         with COLONY_BLESS=1 cargo test -p colony-log --test golden_commands"
    );
    assert!(
        new.is_empty(),
        "{new:?} have no pinned bytes: append new variants last and bless with COLONY_BLESS=1"
    );
    assert_eq!(
        blessed_format,
        Some(format),
        "{GOLDEN} was blessed at another DATA_FORMAT: bless it again with COLONY_BLESS=1"
    );
}

/// The commands above as a node applies them, in order, a second apart: genesis the
/// system's, the rest the first admin's.
fn applied_in_order() -> Vec<Command> {
    bodies()
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            let actor = if index == 0 {
                PrincipalId::SYSTEM
            } else {
                PrincipalId(1)
            };
            Command::new(
                index as u64 + 1,
                1_700_000_000_000 + index as u64 * 1_000,
                actor,
                "pinned",
                body,
            )
        })
        .collect()
}

const GOLDEN_STATE: &str = "tests/golden/state.hex";

/// The state a node snapshots (`snapshots/`, postcard), pinned the same way: the
/// state reached by applying the commands above in order (genesis, then one of
/// every kind, many refused) is encoded to `tests/golden/state.hex` when blessed;
/// the test reads those bytes back as a [`State`] and writes it again, byte for
/// byte. A field added to, removed from or moved in the state or one of its parts
/// fails it (a snapshot of the old format would not read): bump `DATA_FORMAT` and
/// bless. A change of what the kernel decides does not (the pinned bytes still
/// read).
#[test]
fn a_snapshot_in_the_pinned_format_reads_back_byte_for_byte() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN_STATE);
    let format = colony_log::DATA_FORMAT;
    if std::env::var_os("COLONY_BLESS").is_some() {
        let mut state = State::new();
        for command in applied_in_order() {
            state.apply(&command);
        }
        let bytes = postcard::to_stdvec(&state).unwrap();
        let text = format!("colony-data-format {format}\n{}\n", hex::encode(bytes));
        std::fs::write(&path, text).unwrap();
        return;
    }
    let (blessed_format, text) = golden(&path);
    let pinned = hex::decode(text.trim())
        .unwrap_or_else(|error| panic!("{GOLDEN_STATE} holds no hex: {error}"));
    let read: State = postcard::from_bytes(&pinned).unwrap_or_else(|error| {
        panic!(
            "a snapshot of the pinned format no longer reads ({error}): the state's fields \
             changed; bump colony_log::DATA_FORMAT, note the migration in \
             docs/configuration.md, and bless with COLONY_BLESS=1 cargo test -p colony-log \
             --test golden_commands"
        )
    });
    assert!(
        read.last_seq > 1 && read.is_initialized(),
        "the pinned state holds more than genesis"
    );
    assert!(
        postcard::to_stdvec(&read).unwrap() == pinned,
        "a snapshot of the pinned format reads back differently: the state's fields changed; \
         bump colony_log::DATA_FORMAT and bless with COLONY_BLESS=1"
    );
    assert_eq!(
        blessed_format,
        Some(format),
        "{GOLDEN_STATE} was blessed at another DATA_FORMAT: bless it again with COLONY_BLESS=1"
    );
}

const GOLDEN_RECORDS: &str = "tests/golden/records.jsonl";

/// The decision log's bytes, pinned: the chained records (`audit/`, one JSON object
/// each) of the commands above applied in order, one per line in
/// `tests/golden/records.jsonl`. Old records verify whatever the encoder does now
/// (the chain is over the stored bytes), but every node of a cluster must chain the
/// same bytes for the same command, and `colony audit verify` and the signed heads
/// compare them: a change of a record's bytes (a renamed field, another order,
/// another number format) fails here first, with the first record that differs. A
/// change of what the kernel decides shows here too; when it is meant, bless with
/// `COLONY_BLESS=1 cargo test -p colony-log --test golden_commands`.
#[test]
fn the_decision_records_of_the_pinned_commands_keep_their_bytes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN_RECORDS);
    let mut state = State::new();
    let mut head = colony_log::audit::ChainHead::default();
    let mut records = Vec::new();
    for command in applied_in_order() {
        let applied = state.apply(&command);
        colony_log::audit::encode_events(
            &command,
            &applied.events,
            0,
            &state,
            &mut head,
            &mut records,
        );
    }
    let now: Vec<String> = records
        .iter()
        .map(|record| String::from_utf8(record.clone()).expect("records are UTF-8 JSON"))
        .collect();
    assert!(now.len() > bodies().len(), "every command left a record");
    let format = colony_log::DATA_FORMAT;
    if std::env::var_os("COLONY_BLESS").is_some() {
        let mut out = format!("colony-data-format {format}\n");
        for line in &now {
            out.push_str(line);
            out.push('\n');
        }
        std::fs::write(&path, out).unwrap();
        return;
    }
    let (_, text) = golden(&path);
    let pinned: Vec<&str> = text.lines().collect();
    if let Some(at) = (0..now.len().max(pinned.len()))
        .find(|&at| pinned.get(at).copied() != now.get(at).map(String::as_str))
    {
        panic!(
            "decision record {} differs from its pinned bytes ({GOLDEN_RECORDS}):\n pinned: {}\n now:    {}\n\
             if the change is meant (the kernel decides otherwise, or the record's format \
             changed, and every node of a cluster moves together), bless with COLONY_BLESS=1 \
             cargo test -p colony-log --test golden_commands",
            at + 1,
            pinned.get(at).unwrap_or(&"(none)"),
            now.get(at).map_or("(none)", String::as_str),
        );
    }
}
