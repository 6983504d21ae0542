//! Recovery of the store after clean stops, crashes and damage.

use std::path::Path;

use colony_kernel::{
    Command, CommandBody, CreatePrincipal, Genesis, PrincipalId, PrincipalKind, Resource, State,
};
use colony_log::{snapshot, verify_audit, verify_replay, Error, Store, StoreOptions};

/// Applies `count` commands (genesis first) through a store, syncing in batches of 7.
fn run(dir: &Path, from: u64, count: u64) -> State {
    let (mut store, mut state, _) = Store::open(dir, StoreOptions::default()).unwrap();
    assert_eq!(state.last_seq, from - 1);
    for seq in from..from + count {
        let at_ms = 1_700_000_000_000 + seq * 10;
        let body = match seq {
            1 => CommandBody::Genesis(Box::new(Genesis::for_tests([1; 32]))),
            // Alerts, so that the log and the snapshots hold every shape the kernel
            // stores (postcard reads back no internally tagged enum).
            10 | 50 => alert(Some(PrincipalId::ADMIN), true),
            20 => alert(None, true),
            30 => alert(None, false),
            _ if seq % 3 == 0 => CommandBody::CreatePrincipal(CreatePrincipal::new(
                format!("agent {seq}"),
                PrincipalKind::Ai,
                [seq as u8; 32],
            )),
            _ => CommandBody::Reserve {
                resource: Resource::ComputeMs,
                amount: 5,
                ttl_ms: Some(25),
            },
        };
        let actor = if matches!(seq, 1 | 10 | 20 | 30 | 50) {
            PrincipalId::SYSTEM
        } else {
            PrincipalId::ADMIN
        };
        let command = Command::new(seq, at_ms, actor, format!("step {seq}"), body);
        let applied = state.apply(&command);
        store.append(&command, &applied, &state).unwrap();
        if seq % 7 == 0 {
            store.sync().unwrap();
        }
    }
    store.sync().unwrap();
    state
}

/// A proximity alert of a limit, or of a principal's quota.
fn alert(principal: Option<PrincipalId>, raised: bool) -> CommandBody {
    use colony_kernel::alerts::{AlertReport, AlertScope, Threshold};
    let scope = match principal {
        Some(principal) => AlertScope::Quota {
            principal,
            resource: Resource::ComputeMs,
        },
        None => AlertScope::Limit {
            limit: "ai_accounts".into(),
        },
    };
    CommandBody::Alert(Box::new(AlertReport {
        scope,
        threshold: Threshold::Percent(80),
        raised,
        usage: 9,
        at: 8,
        of: Some(10),
    }))
}

#[test]
fn reopen_restores_the_same_state_and_a_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let before = run(dir.path(), 1, 60);
    assert_eq!(before.alerts().count(), 3, "the alerts were recorded");
    assert_eq!(before.raised_alerts().count(), 1);
    let (_, after, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(after, before);
    assert_eq!(report.replayed, 60);
    assert_eq!(report.regenerated, 0);
    let verified = verify_audit(dir.path()).unwrap();
    assert!(
        verified.records >= 60,
        "expiries add records: {}",
        verified.records
    );
    assert_eq!(verify_replay(dir.path()).unwrap(), verified.records);
    // And the log goes on from where it stopped.
    run(dir.path(), 61, 10);
    verify_audit(dir.path()).unwrap();
}

#[test]
fn snapshot_shortens_replay_and_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let at_40 = run(dir.path(), 1, 40);
    snapshot::write_snapshot(
        &dir.path().join("snapshots"),
        40,
        &snapshot::encode_state(&at_40),
    )
    .unwrap();
    let before = run(dir.path(), 41, 20);
    let (_, after, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(report.snapshot_seq, 40);
    assert_eq!(report.replayed, 20);
    assert_eq!(after, before);
    let (_, from_zero, report) = Store::open(
        dir.path(),
        StoreOptions {
            ignore_snapshots: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.replayed, 60);
    assert_eq!(from_zero, before);
}

#[test]
fn decision_records_cut_off_by_a_crash_are_rebuilt_from_commands() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 1, 30);
    let whole = verify_audit(dir.path()).unwrap();
    // Cut the last three decision records, as if the crash came between the two syncs.
    let audit = dir.path().join("audit");
    let segment = std::fs::read_dir(&audit)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut data = std::fs::read(&segment).unwrap();
    let mut offsets = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        offsets.push(offset);
        offset += 8 + u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
    }
    data.truncate(offsets[offsets.len() - 3] + 5);
    std::fs::write(&segment, &data).unwrap();
    let (_, _, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(report.regenerated, 3);
    assert_eq!(report.truncated.len(), 1);
    assert_eq!(
        verify_audit(dir.path()).unwrap(),
        whole,
        "the same chain, to the same head"
    );
}

#[test]
fn one_changed_byte_is_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 1, 20);
    let audit = dir.path().join("audit");
    let segment = std::fs::read_dir(&audit)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut data = std::fs::read(&segment).unwrap();
    // Find record 5 and change one byte of its justification, fixing its checksum as
    // a careful forger would: only the hash chain can catch that.
    let mut offset = 0;
    for _ in 0..4 {
        offset += 8 + u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
    }
    let length = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
    let payload = offset + 8..offset + 8 + length;
    let text = String::from_utf8(data[payload.clone()].to_vec()).unwrap();
    let at = payload.start + text.find("step").unwrap();
    data[at] = b'S';
    let crc = crc32fast_hash(&data[payload.clone()]);
    data[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&segment, &data).unwrap();
    let failure = verify_audit(dir.path()).unwrap_err();
    assert_eq!(failure.seq, 5);
    assert_eq!(failure.offset, offset as u64);
    assert!(failure.reason.contains("hashes to"), "{}", failure.reason);
    assert!(matches!(verify_replay(dir.path()), Err(Error::Mismatch(_))));
}

fn crc32fast_hash(bytes: &[u8]) -> u32 {
    // The same CRC-32 (IEEE) the log uses, computed bit by bit.
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= *byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_data_directory_of_another_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 1, 10);
    let marker = dir.path().join(colony_log::FORMAT_FILE);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("colony-data-format {}\n", colony_log::DATA_FORMAT)
    );
    // Reopening the same format works.
    Store::open(dir.path(), StoreOptions::default()).unwrap();

    // Another version: refused, saying which and what to do.
    std::fs::write(&marker, "colony-data-format 999\n").unwrap();
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(error, colony_log::Error::Format { found: 999, .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("format 999") && message.contains("fresh --data"),
        "{message}"
    );
    assert!(colony_log::verify_replay(dir.path()).is_err());

    // Commands without a marker were written before formats were numbered.
    std::fs::remove_file(&marker).unwrap();
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(error, colony_log::Error::Format { found: 0, .. }),
        "{error}"
    );
    assert!(!marker.exists(), "a refused directory is left as it was");

    // A garbled marker is damage, named.
    std::fs::write(&marker, "hello").unwrap();
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(error, colony_log::Error::Corrupt { .. }),
        "{error}"
    );
}
