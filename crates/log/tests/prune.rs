//! Bounded logs: pruning by age and by size, never past the oldest snapshot kept,
//! and a chain that still verifies from its signed cut.

use std::path::Path;

use colony_kernel::{Command, CommandBody, Genesis, PrincipalId, Resource, State};
use colony_log::prune::{audit_cut, commands_cut, LogRetention};
use colony_log::{snapshot, verify_audit, verify_replay, SegmentOptions, Store, StoreOptions};
use ed25519_dalek::SigningKey;

const START_MS: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

fn options() -> StoreOptions {
    StoreOptions {
        // Small segments, so that a few hundred commands make many.
        segment: SegmentOptions {
            segment_bytes_max: 1 << 10,
            trimmed_start: false,
        },
        ..StoreOptions::default()
    }
}

/// Genesis, then reservations one minute apart up to command `count`; a snapshot at
/// `snapshot_at`. Returns the store (open) and the state.
fn write(dir: &Path, count: u64, snapshot_at: u64) -> (Store, State) {
    let (mut store, mut state, _) = Store::open(dir, options()).unwrap();
    for seq in 1..=count {
        let body = if seq == 1 {
            CommandBody::Genesis(Box::new(Genesis::for_tests([1; 32])))
        } else {
            CommandBody::Reserve {
                resource: Resource::ComputeMs,
                amount: 1,
                ttl_ms: Some(1_000),
            }
        };
        let actor = if seq == 1 {
            PrincipalId::SYSTEM
        } else {
            PrincipalId::ADMIN
        };
        let command = Command::new(seq, START_MS + seq * MINUTE, actor, "a step", body);
        let applied = state.apply(&command);
        store.append(&command, &applied, &state).unwrap();
        store.sync().unwrap();
        if seq == snapshot_at {
            let payload = snapshot::encode_state(&state);
            snapshot::write_snapshot(&dir.join("snapshots"), seq, &payload).unwrap();
        }
    }
    (store, state)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

#[test]
fn old_segments_leave_by_age_never_past_the_snapshot_and_the_chain_verifies_from_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (mut store, state) = write(data, 400, 300);
    let before = segment_files(&data.join("commands"));
    assert!(before > 5, "{before} segments");
    let whole = verify_audit(data).unwrap();
    // Keep an hour: everything but the last hour may go, but commands after the
    // snapshot (at 300) stay for replay.
    let rule = LogRetention {
        keep_for_ms: Some(60 * MINUTE),
        keep_bytes: None,
        archive: true,
        archive_keep_for_ms: None,
    };
    let now = START_MS + 401 * MINUTE;
    let report = store.prune(&rule, 301, now, &key()).unwrap();
    assert!(
        report.command_segments > 0 && report.audit_segments > 0,
        "{report:?}"
    );
    assert!(
        report.first_command <= 301,
        "never past the snapshot: {report:?}"
    );
    assert!(report.first_record > 1);
    assert_eq!(
        commands_cut(data).unwrap().unwrap().first_kept,
        report.first_command
    );
    let archived = segment_files(&data.join("archive/logs/commands"));
    assert_eq!(archived, report.command_segments, "moved, not deleted");
    drop(store);

    // A restart replays from the snapshot; the chain verifies from the cut.
    let (_, reopened, recovery) = Store::open(data, options()).unwrap();
    assert_eq!(reopened, state);
    assert_eq!(recovery.snapshot_seq, 300);
    let verified = verify_audit(data).unwrap();
    assert_eq!(verified.records, whole.records);
    assert_eq!(verified.head_hash, whole.head_hash);
    assert_eq!(verified.from, report.first_record);
    let cut = audit_cut(data).unwrap().unwrap();
    assert_eq!(cut.seq, report.first_record - 1);
    cut.verify(&[key().verifying_key()]).unwrap();
    let replay = verify_replay(data).unwrap_err().to_string();
    assert!(replay.contains("was pruned before"), "{replay}");
}

#[test]
fn a_size_bound_keeps_the_newest_bytes_and_a_lost_snapshot_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (mut store, _) = write(data, 300, 290);
    let rule = LogRetention {
        keep_for_ms: None,
        keep_bytes: Some(6 << 10),
        archive: false,
        archive_keep_for_ms: None,
    };
    let report = store
        .prune(&rule, 291, START_MS + 301 * MINUTE, &key())
        .unwrap();
    assert!(report.command_segments > 0, "{report:?}");
    let kept: u64 = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(kept <= (6 << 10) + (2 << 10), "{kept} bytes kept");
    assert!(!data.join("archive/logs").exists(), "deleted, not moved");
    drop(store);
    verify_audit(data).unwrap();
    // Without the snapshots the pruned command log cannot rebuild the state.
    std::fs::remove_dir_all(data.join("snapshots")).unwrap();
    let error = Store::open(data, options()).err().unwrap().to_string();
    assert!(error.contains("pruned before command"), "{error}");
}

#[test]
fn a_pruned_chain_whose_start_was_rewritten_or_whose_cut_is_gone_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (mut store, _) = write(data, 300, 290);
    let rule = LogRetention {
        keep_for_ms: Some(30 * MINUTE),
        keep_bytes: None,
        archive: false,
        archive_keep_for_ms: None,
    };
    store
        .prune(&rule, 291, START_MS + 301 * MINUTE, &key())
        .unwrap();
    drop(store);
    let cut_file = data.join("audit").join("CUT");
    let genuine = std::fs::read(&cut_file).unwrap();
    // A different history before the kept records: the cut no longer matches.
    let mut cut: colony_log::heads::SignedHead = serde_json::from_slice(&genuine).unwrap();
    cut.head = "ab".repeat(32);
    std::fs::write(&cut_file, serde_json::to_vec(&cut).unwrap()).unwrap();
    let failure = verify_audit(data).unwrap_err();
    assert!(failure.reason.contains("signed"), "{failure}");
    // No cut at all: records were removed without a trace.
    std::fs::remove_file(&cut_file).unwrap();
    let failure = verify_audit(data).unwrap_err();
    assert!(failure.reason.contains("no signed cut"), "{failure}");
    std::fs::write(&cut_file, genuine).unwrap();
    verify_audit(data).unwrap();
}

#[test]
fn the_archive_keeps_what_changed_within_keep_for_and_nothing_else_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (mut store, _) = write(data, 100, 90);
    const DAY: u64 = 86_400_000;
    let now = START_MS + 1_000 * DAY;
    let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    // Pruned segments and task shards, some a year and more old, one a day old.
    let old = [
        data.join("archive/logs/commands/00000000000000000001.seg"),
        data.join("archive/logs/audit/00000000000000000001.seg"),
        data.join("archive/tasks/0.7.1.000000.jsonl"),
    ];
    let recent = data.join("archive/tasks/0.7.1.000001.jsonl");
    for (path, changed) in old
        .iter()
        .map(|path| (path, now - 400 * DAY))
        .chain([(&recent, now - DAY)])
    {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"{}\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(at(changed))
            .unwrap();
    }
    let whole = verify_audit(data).unwrap();
    // The logs keep everything; the archive keeps a year.
    let rule = LogRetention {
        keep_for_ms: None,
        keep_bytes: None,
        archive: true,
        archive_keep_for_ms: Some(365 * DAY),
    };
    let report = store.prune(&rule, 91, now, &key()).unwrap();
    assert_eq!(report.archive_files, 3, "{report:?}");
    assert_eq!(report.archive_bytes, 9);
    assert_eq!((report.command_segments, report.audit_segments), (0, 0));
    assert!(old.iter().all(|path| !path.exists()));
    assert!(recent.exists(), "changed a day ago: kept");
    // The logs are whole; a task of a deleted shard reads as not found.
    assert_eq!(verify_audit(data).unwrap().records, whole.records);
    assert_eq!(
        colony_log::TaskArchive::new(data)
            .get("0.7.1.00042")
            .unwrap(),
        None
    );
    // Forever deletes nothing.
    let forever = LogRetention {
        archive_keep_for_ms: None,
        ..rule
    };
    assert!(forever.keeps_everything());
    assert_eq!(
        store
            .prune(&forever, 91, now + 10_000 * DAY, &key())
            .unwrap()
            .archive_files,
        0
    );
    assert!(recent.exists());
}
