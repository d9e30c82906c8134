//! Fuzzes the recovery of consent-store's hash-chained consent record log (`RecordLog::open`,
//! `verify`, `records`, `export_jsonl` on `DiskIo`) from arbitrary file bytes. The input is the
//! `records.jsonl` file; when it contains the marker `\0STATE\0`, the bytes after the marker are
//! written as the `state.bin` next to it, which holds the log's anchor (the seeds carry real
//! ones). Each input gets a fresh temporary directory (on `/dev/shm` when it exists).
//!
//! Properties checked, besides never panicking:
//! - `open` returns the log or a typed `OpenRecordsError`; `verify`, `records` and
//!   `export_jsonl` return a value or a typed error; opening twice gives the same head and the
//!   same verification result (recovery is idempotent);
//! - when the log verifies: its head is the one `open` found, `records()` gives exactly `count`
//!   records numbered 1..=count ending in the head's hash, `verify_against(head)` accepts it,
//!   the export is a log that verifies on its own to the same head and the same records, and an
//!   append is accepted, after which the log (also reopened) verifies with one more record.
//!
//! A finding of the first runs is fixed and checked here: a line that repeats a key verified
//! (the `serde_json::Value` of the line keeps the last copy) and then did not read (regression
//! test `verify_catches_a_field_written_twice` in consent-store).
#![no_main]

use std::path::Path;

use consent_store::{
    DiskIo, GENESIS_HASH, NewRecord, RecordLog, RecordPayload, RecordSource, STATE_FILE,
};
use libfuzzer_sys::fuzz_target;

const MARKER: &[u8] = b"\0STATE\0";

fn temp_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("records-fuzz")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("a temporary directory")
}

fn open(path: &Path) -> Option<RecordLog> {
    match RecordLog::open(DiskIo, path) {
        Ok(log) => Some(log),
        Err(err) => {
            let _ = err.to_string();
            None
        }
    }
}

fn outcome(log: &RecordLog) -> String {
    match log.verify() {
        Ok(head) => format!("ok {head:?}"),
        Err(err) => format!("err {err}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (records, state) = match data.windows(MARKER.len()).position(|w| w == MARKER) {
        Some(i) => (&data[..i], Some(&data[i + MARKER.len()..])),
        None => (data, None),
    };
    let root = temp_root();
    let path = root.path().join("records.jsonl");
    std::fs::write(&path, records).expect("write the log");
    if let Some(state) = state {
        std::fs::write(root.path().join(STATE_FILE), state).expect("write the state file");
    }

    let Some(mut log) = open(&path) else {
        // Refused once, refused again, with the same error.
        let again = RecordLog::open(DiskIo, &path)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(again.is_err(), "the log opened the second time only");
        return;
    };
    let _ = log.records();
    let verified = log.verify();
    let first = outcome(&log);
    let opened_head = log.head().clone();
    {
        let again = open(&path).expect("the log opened once, not twice");
        assert_eq!(
            again.head(),
            &opened_head,
            "a second open finds another head"
        );
        assert_eq!(outcome(&again), first, "a second open verifies differently");
    }
    let Ok(head) = verified else {
        return;
    };

    assert_eq!(head, opened_head, "verify and open disagree on the head");
    let records = match log.records() {
        Ok(records) => records,
        Err(err) => panic!("a verified log does not read: {err:?}"),
    };
    assert_eq!(records.len() as u64, head.count);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
    }
    let last_hash = records.last().map_or(GENESIS_HASH, |r| r.hash.as_str());
    assert_eq!(last_hash, head.hash);
    assert_eq!(
        log.verify_against(&head)
            .expect("verifies against its own head"),
        head
    );

    let mut exported = Vec::new();
    assert_eq!(
        log.export_jsonl(&mut exported)
            .expect("a verified log exports"),
        head
    );
    let copy_root = temp_root();
    let copy_path = copy_root.path().join("records.jsonl");
    std::fs::write(&copy_path, &exported).expect("write the export");
    let copy = open(&copy_path).expect("an export opens");
    assert_eq!(copy.verify().expect("an export verifies"), head);
    assert_eq!(copy.records().expect("an export reads"), records);

    let payload = RecordPayload::Full(serde_json::json!({"general": "in"}));
    let new = NewRecord::new(
        1_764_000_000_000,
        "Adobe",
        "1.0",
        RecordSource::User,
        payload,
    );
    let appended = log
        .append(new)
        .expect("a log that verifies accepts an append");
    assert_eq!(appended.seq, head.count + 1);
    assert_eq!(appended.prev_hash, head.hash);
    let after = log.verify().expect("the log verifies after an append");
    assert_eq!(after.count, head.count + 1);
    drop(log);
    let reopened = open(&path).expect("the log reopens after an append");
    assert_eq!(reopened.verify().expect("and verifies"), after);
});
