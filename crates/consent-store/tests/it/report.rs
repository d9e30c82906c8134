//! The typed reports and errors of the fixes for the store review: what recovery could not verify
//! and where it was, the lock error, the record log's anchor errors and `reanchor`.

use std::path::Path;

use consent_store::{
    AppendRecordError, Damage, DiskIo, EventQueue, FRAME_HEADER, FaultyIo, Io, MemIo, NewRecord,
    Op, OpenStoreError, QUARANTINE_DIR, QueueConfig, RecordPayload, RecordSource, Store,
    SyncPolicy, VerifyError,
};
use serde_json::json;

use crate::corrupt::{
    FRAME, all_files, big_segments, fill, flip, segments, small_segments, with_a_destroyed_end,
};

/// Ranges of sequence numbers as pairs, to compare with literals.
fn spans(ranges: &[std::ops::Range<u64>]) -> Vec<(u64, u64)> {
    ranges.iter().map(|r| (r.start, r.end)).collect()
}

#[test]
fn recovery_reports_what_it_could_not_verify_in_the_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), big_segments(), 1000);
    let seg = segments(dir.path()).pop().unwrap();
    flip(&seg, 100 * FRAME + FRAME_HEADER + 10);
    let quarantined = dir
        .path()
        .join(QUARANTINE_DIR)
        .join(seg.file_name().unwrap());

    let mut queue = EventQueue::open(DiskIo, dir.path(), big_segments()).unwrap();
    let report = queue.recovery().clone();
    assert!(!report.is_clean());
    assert_eq!(report.lost_events, 1);
    match report.damage.as_slice() {
        [
            Damage::Corrupt {
                path,
                quarantined: q,
                events,
                kept,
                lost,
                damaged_bytes,
            },
        ] => {
            assert_eq!(path, &seg);
            assert_eq!(q, &quarantined);
            assert_eq!(*events, 0..1000);
            assert_eq!(*kept, 999);
            assert_eq!(spans(lost), [(100, 101)]);
            assert_eq!(*damaged_bytes, FRAME);
        }
        other => panic!("{other:?}"),
    }
    let message = report.damage[0].to_string();
    assert!(message.contains(&seg.display().to_string()), "{message}");
    assert!(message.contains("100..101"), "{message}");
    assert!(quarantined.exists() && !seg.exists());

    // The next open reports it again, from the quarantine; appends went to a new segment.
    queue.append(b"after").unwrap();
    queue.sync().unwrap();
    drop(queue);
    let mut queue = EventQueue::open(DiskIo, dir.path(), big_segments()).unwrap();
    assert!(matches!(
        queue.recovery().damage.as_slice(),
        [Damage::Corrupt { path, lost, .. }] if *path == quarantined && spans(lost) == [(100, 101)]
    ));
    // Once every event it held is acknowledged, the quarantined file goes.
    queue.ack(1000).unwrap();
    queue.sync().unwrap();
    assert!(!quarantined.exists());
    drop(queue);
    let queue = EventQueue::open(DiskIo, dir.path(), big_segments()).unwrap();
    assert!(queue.recovery().is_clean(), "{:?}", queue.recovery());
}

#[test]
fn the_report_names_the_damaged_sealed_segment_not_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), small_segments(), 200);
    let segs = segments(dir.path());
    flip(&segs[1], 2048);
    let queue = EventQueue::open(DiskIo, dir.path(), small_segments()).unwrap();
    let message = queue.recovery().damage[0].to_string();
    assert!(message.contains("00000000000000000032.seg"), "{message}");
    assert!(!message.contains("00000000000000000064.seg"), "{message}");
    assert!(matches!(
        queue.recovery().damage.as_slice(),
        [Damage::Corrupt { events, lost, kept: 31, .. }] if *events == (32..64) && spans(lost) == [(48, 49)]
    ));

    // A destroyed end: the events up to the next segment were in this file.
    drop(queue);
    let (dir, segs) = with_a_destroyed_end();
    let mut queue = EventQueue::open(DiskIo, dir.path(), small_segments()).unwrap();
    assert!(matches!(
        queue.recovery().damage.as_slice(),
        [Damage::Corrupt { path, events, lost, kept: 16, .. }]
            if *path == segs[1] && *events == (32..64) && spans(lost) == [(48, 64)]
    ));
    assert_eq!(queue.recovery().lost_events, 16);
    queue.purge().unwrap();
    assert_eq!(all_files(dir.path()), [dir.path().join("head")]);
}

#[test]
fn a_torn_tail_is_cut_and_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), small_segments(), 10);
    let seg = segments(dir.path()).pop().unwrap();
    let data = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &data[..data.len() - 7]).unwrap();
    let queue = EventQueue::open(DiskIo, dir.path(), small_segments()).unwrap();
    assert!(queue.recovery().is_clean());
    assert_eq!(queue.recovery().torn_bytes, FRAME - 7);
    assert_eq!(queue.len(), 9);
    assert!(
        !dir.path().join(QUARANTINE_DIR).exists(),
        "no quarantine for a torn tail"
    );
    assert_eq!(all_files(dir.path()), [seg]);
}

#[test]
fn the_lock_error_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(OpenStoreError::Locked { dir: locked }) => assert_eq!(locked, dir.path()),
        other => panic!("{other:?}"),
    }
    // Memory stores lock their own file system only.
    let io = MemIo::new();
    let _a = Store::with_io(io.clone(), "/data").unwrap();
    assert!(matches!(
        Store::with_io(io.clone(), "/data"),
        Err(OpenStoreError::Locked { .. })
    ));
    assert!(Store::with_io(MemIo::new(), "/data").is_ok());
}

fn record(i: u64) -> NewRecord {
    NewRecord::new(
        i,
        "Adobe",
        "1.0",
        RecordSource::User,
        RecordPayload::Full(json!({"general": "in"})),
    )
}

#[test]
fn anchor_errors_say_what_happened_and_reanchor_accepts_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let path = dir.path().join(consent_store::RECORDS_FILE);
    let mut log = store.records().unwrap();
    for i in 0..5 {
        log.append(record(i)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, kept).unwrap();
    drop(log);
    let mut log = store.records().unwrap();
    assert!(matches!(
        log.verify(),
        Err(VerifyError::Truncated {
            expected: 5,
            found: 3
        })
    ));
    assert!(matches!(
        log.append(record(9)),
        Err(AppendRecordError::Mismatch {
            anchored: 5,
            found: 3,
            ..
        })
    ));
    assert_eq!(log.reanchor().unwrap().count, 3);
    log.append(record(9)).unwrap();
    assert_eq!(log.verify().unwrap().count, 4);

    // A rewritten record at the anchor's position.
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines[3] = lines[3].replace(r#""timestamp_ms":9"#, r#""timestamp_ms":8"#);
    std::fs::write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    assert!(matches!(log.verify(), Err(VerifyError::Hash { line: 4 })));
}

#[test]
fn a_rehashed_log_is_reported_as_rewritten() {
    let io = MemIo::new();
    let store = Store::with_io(io.clone(), "/d").unwrap();
    let mut log = store.records().unwrap();
    for i in 0..3 {
        log.append(record(i)).unwrap();
    }
    let head = log.head().clone();
    // Another log, written elsewhere with other records, copied over this one whole.
    let other = Store::with_io(MemIo::new(), "/d").unwrap();
    let mut other_log = other.records().unwrap();
    for i in 10..13 {
        other_log.append(record(i)).unwrap();
    }
    let forged = other.io().read(Path::new("/d/records.jsonl")).unwrap();
    io.replace(Path::new("/d/records.jsonl"), forged).unwrap();
    assert!(matches!(
        log.verify(),
        Err(VerifyError::Rewritten { line: 3 })
    ));
    assert!(matches!(
        log.verify_against(&head),
        Err(VerifyError::Rewritten { line: 3 })
    ));
}

/// A crash (here a failed rename) between a record's sync and its anchor's leaves the log one
/// record past the anchor: no false alarm, and the next append anchors it again.
#[test]
fn a_record_past_its_anchor_is_not_a_false_alarm() {
    let store = Store::with_io(FaultyIo::new(MemIo::new()), "/d").unwrap();
    let mut log = store.records().unwrap();
    log.append(record(0)).unwrap();
    store.io().fail_next(Op::Rename);
    assert!(matches!(
        log.append(record(1)),
        Err(AppendRecordError::Anchor(_))
    ));
    store.io().inner().crash();
    drop(log);
    let mut log = store.records().unwrap();
    assert_eq!(log.verify().unwrap().count, 2);
    log.append(record(2)).unwrap();
    assert_eq!(log.verify().unwrap().count, 3);
}

#[test]
fn peek_waits_for_the_group_commit() {
    let config = QueueConfig::default().with_sync(SyncPolicy::GroupCommit(
        std::time::Duration::from_secs(3600),
    ));
    let store = Store::in_memory();
    let mut queue = store.queue(config).unwrap();
    let a = queue.append(b"a").unwrap();
    assert!(!a.durable);
    assert!(queue.peek(10).unwrap().is_empty());
    assert_eq!(queue.len(), 1);
    queue.sync().unwrap();
    assert_eq!(queue.peek(10).unwrap()[0].payload, b"a");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

    /// Damage anywhere (a run of random bytes over any segment): the queue opens, every event it
    /// does not report lost is there with its payload, numbering goes on after everything found,
    /// a second open sees the same, and a purge leaves no event on disk.
    #[test]
    fn damage_anywhere_is_kept_reported_or_a_true_tail(
        segment in 0usize..8,
        at in 0u64..(8 * FRAME),
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300),
    ) {
        let n = 60;
        let config = small_segments().with_segment_bytes(8 * FRAME);
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), config, n);
        let segs = segments(dir.path());
        let path = &segs[segment];
        let mut data = std::fs::read(path).unwrap();
        let at = (at as usize).min(data.len() - 1);
        let end = (at + bytes.len()).min(data.len());
        data[at..end].copy_from_slice(&bytes[..end - at]);
        std::fs::write(path, &data).unwrap();
        // Only damage to the last frames of the last segment can look like a torn tail.
        let last_segment = segment == segs.len() - 1;

        let mut queue = EventQueue::open(DiskIo, dir.path(), config).unwrap();
        let found: Vec<u64> = crate::corrupt::waiting(&queue);
        let lost: Vec<std::ops::Range<u64>> = queue
            .recovery()
            .damage
            .iter()
            .flat_map(|d| match d {
                Damage::Corrupt { lost, .. } => lost.clone(),
                Damage::Missing { events, .. } => vec![events.clone()],
                _ => Vec::new(),
            })
            .collect();
        let after_found = found.last().map_or(0, |s| s + 1);
        for seq in 0..n {
            let reported = lost.iter().any(|r| r.contains(&seq));
            let tail = last_segment && seq >= after_found;
            proptest::prop_assert!(
                found.contains(&seq) || reported || tail,
                "event {} is neither kept nor reported: found {:?}, lost {:?}", seq, found, lost
            );
            proptest::prop_assert!(!(found.contains(&seq) && reported), "event {} both", seq);
        }
        proptest::prop_assert_eq!(queue.len(), found.len() as u64, "len counts what can be read");
        let next = queue.append(b"next").unwrap().seq;
        proptest::prop_assert!(next >= after_found);
        if !last_segment {
            proptest::prop_assert_eq!(next, n, "sealed damage never gives a number again");
        }
        queue.sync().unwrap();
        drop(queue);

        let mut queue = EventQueue::open(DiskIo, dir.path(), config).unwrap();
        let again: Vec<u64> = queue
            .peek(usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .filter(|&s| s != next)
            .collect();
        proptest::prop_assert_eq!(&again, &found);
        queue.purge().unwrap();
        proptest::prop_assert_eq!(all_files(dir.path()), vec![dir.path().join("head")]);
    }
}
