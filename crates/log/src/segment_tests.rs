//! Tests of segment logs: framing, torn tails, damage, rotation.

use super::*;

fn open(dir: &Path) -> Result<(SegmentLog, OpenReport, Vec<Vec<u8>>), Error> {
    let mut records = Vec::new();
    let (log, report) = SegmentLog::open(
        dir,
        SegmentOptions {
            segment_bytes_max: 100,
            trimmed_start: false,
        },
        1,
        |_, payload| {
            records.push(payload.to_vec());
            Ok(())
        },
    )?;
    Ok((log, report, records))
}

fn write(dir: &Path, count: usize) {
    let (mut log, _, _) = open(dir).unwrap();
    for i in 0..count {
        log.append(format!("record number {i}").as_bytes()).unwrap();
    }
    log.sync().unwrap();
}

#[test]
fn records_survive_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 20);
    assert!(
        list_segments(dir.path()).unwrap().len() > 3,
        "small segments roll"
    );
    let (log, report, records) = open(dir.path()).unwrap();
    assert_eq!(report.records, 20);
    assert_eq!(records[13], b"record number 13");
    let mut seen = Vec::new();
    log.reader()
        .scan(7, |index, payload| {
            seen.push((index, payload.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen.len(), 14);
    assert_eq!(seen[0], (7, b"record number 6".to_vec()));
    assert_eq!(log.reader().last_index(), 20);
}

#[test]
fn torn_tail_is_cut_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 3);
    let path = list_segments(dir.path()).unwrap().pop().unwrap().1;
    let whole = std::fs::read(&path).unwrap();
    let frame = b"a record that was being written";
    let mut framed = (frame.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&crc32fast::hash(frame).to_le_bytes());
    framed.extend_from_slice(frame);
    for cut in 1..framed.len() {
        let mut torn = whole.clone();
        torn.extend_from_slice(&framed[..cut]);
        std::fs::write(&path, &torn).unwrap();
        let (_, report, _) = open(dir.path()).unwrap();
        assert_eq!(
            report.truncated.as_ref().map(|t| t.1),
            Some(cut as u64),
            "cut at {cut}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), whole);
    }
    // Zeros left by a crash after the file grew are a torn tail too.
    let mut zeros = whole.clone();
    zeros.extend_from_slice(&[0; 40]);
    std::fs::write(&path, &zeros).unwrap();
    assert!(open(dir.path()).unwrap().1.truncated.is_some());
}

#[test]
fn damage_before_the_tail_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 20);
    let (first, path) = list_segments(dir.path()).unwrap().remove(0);
    assert_eq!(first, 1);
    let mut data = std::fs::read(&path).unwrap();
    data[10] ^= 0x01;
    std::fs::write(&path, &data).unwrap();
    match open(dir.path()) {
        Err(Error::Corrupt {
            path: bad, offset, ..
        }) => {
            assert_eq!(bad, path);
            assert_eq!(offset, 0);
        }
        other => panic!("expected corruption, got {:?}", other.map(|r| r.1)),
    }
}

#[test]
fn a_bad_record_followed_by_good_ones_in_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) =
        SegmentLog::open(dir.path(), SegmentOptions::default(), 1, |_, _| Ok(())).unwrap();
    for i in 0..5 {
        log.append(format!("r{i}").as_bytes()).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let path = list_segments(dir.path()).unwrap().pop().unwrap().1;
    let mut data = std::fs::read(&path).unwrap();
    data[8] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    assert!(matches!(
        SegmentLog::open(dir.path(), SegmentOptions::default(), 1, |_, _| Ok(())),
        Err(Error::Corrupt { offset: 0, .. })
    ));
}
