//! Tamper evidence of the record log on real files: the head anchored in the state file shows
//! records cut off the end, a deleted log, a rewritten chain with recomputed hashes and a damaged
//! last line, and appends cannot bury any of it.

use std::path::{Path, PathBuf};

use consent_store::{
    ConsentRecord, GENESIS_HASH, NewRecord, RecordPayload, RecordSource, Store, canonical_json,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn record(i: u64) -> NewRecord {
    let value = if i.is_multiple_of(2) { "in" } else { "out" };
    NewRecord::new(
        1_764_000_000_000 + i,
        "Adobe",
        "1.0",
        RecordSource::User,
        RecordPayload::Full(json!({ "general": value })),
    )
}

/// A data directory whose log holds `n` records; the path of the log.
fn log_with(dir: &Path, n: u64) -> PathBuf {
    let store = Store::open(dir).unwrap();
    let mut log = store.records().unwrap();
    for i in 0..n {
        log.append(record(i)).unwrap();
    }
    assert_eq!(log.verify().unwrap().count, n);
    dir.join(consent_store::RECORDS_FILE)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn records_cut_off_the_end_are_detected_by_the_same_handle_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 5);
    let store = Store::open(dir.path()).unwrap();
    let log = store.records().unwrap();
    assert_eq!(log.head().count, 5);
    let mut l = lines(&path);
    l.truncate(3);
    write_lines(&path, &l);
    assert!(
        log.verify().is_err(),
        "the handle knows 5 records were written"
    );
    drop(log);

    let mut log = store.records().unwrap();
    assert!(log.verify().is_err(), "the anchor says 5 after a reopen");
    let before = std::fs::read(&path).unwrap();
    assert!(
        log.append(record(9)).is_err(),
        "appending from the cut would hide it"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "nothing was appended"
    );
    let mut out = Vec::new();
    assert!(log.export_jsonl(&mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn a_deleted_log_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 4);
    std::fs::remove_file(&path).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.records().unwrap();
    let err = log.verify().unwrap_err();
    assert!(err.to_string().contains('4'), "{err}");
    assert!(log.append(record(4)).is_err());
}

#[test]
fn a_rewritten_chain_with_recomputed_hashes_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 5);
    // Record 2 said "out"; make it "in" and recompute every hash and link from there on.
    let mut prev = GENESIS_HASH.to_owned();
    let mut rewritten = Vec::new();
    for line in lines(&path) {
        let mut record: ConsentRecord = serde_json::from_str(&line).unwrap();
        if record.seq == 2 {
            record.payload = Some(json!({"general": "in"}));
        }
        record.prev_hash = prev.clone();
        let mut value = serde_json::to_value(&record).unwrap();
        value.as_object_mut().unwrap().remove("hash");
        let digest = Sha256::digest(canonical_json(&value).as_bytes());
        record.hash = digest.iter().map(|b| format!("{b:02x}")).collect();
        prev.clone_from(&record.hash);
        rewritten.push(serde_json::to_string(&record).unwrap());
    }
    write_lines(&path, &rewritten);
    let v: Value = serde_json::from_str(&lines(&path)[1]).unwrap();
    assert_eq!(v["payload"]["general"], "in");

    let store = Store::open(dir.path()).unwrap();
    let mut log = store.records().unwrap();
    assert!(
        log.verify().is_err(),
        "the chain is whole, but not the one anchored"
    );
    assert!(log.append(record(5)).is_err());
}

#[test]
fn a_damaged_last_newline_is_not_taken_for_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 5);
    let mut data = std::fs::read(&path).unwrap();
    let last = data.len() - 1;
    assert_eq!(data[last], b'\n');
    data[last] = b' ';
    std::fs::write(&path, &data).unwrap();

    let store = Store::open(dir.path()).unwrap();
    let mut log = store.records().unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        data,
        "an anchored record is not cut off as if it were torn"
    );
    assert!(log.verify().is_err());
    assert!(log.append(record(5)).is_err());
}

#[test]
fn a_torn_line_after_the_anchor_is_still_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_with(dir.path(), 3);
    let mut data = std::fs::read(&path).unwrap();
    let whole = data.len();
    data.extend_from_slice(br#"{"seq":4,"timest"#);
    std::fs::write(&path, &data).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.records().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
    assert_eq!(log.verify().unwrap().count, 3);
    log.append(record(3)).unwrap();
    assert_eq!(log.verify().unwrap().count, 4);
}
