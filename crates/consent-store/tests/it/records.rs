//! The consent record chain catches edits, removals, insertions and reordering on disk.

use std::path::Path;

use consent_store::{ConsentRecord, NewRecord, RecordPayload, RecordSource, Store, VerifyError};
use serde_json::{Value, json};

fn store_with_records(dir: &Path, n: u64) -> Store {
    let store = Store::open(dir).unwrap();
    let mut log = store.records().unwrap();
    let sources = [
        RecordSource::Default,
        RecordSource::User,
        RecordSource::Server,
        RecordSource::Restore,
    ];
    for i in 0..n {
        let payload = if i % 2 == 0 {
            RecordPayload::Full(json!({"consent": [{"standard": "Adobe", "version": "2.0",
                "value": {"collect": {"val": if i % 4 == 0 { "y" } else { "n" }}}}]}))
        } else {
            RecordPayload::hashed(&json!({"general": "out"}))
        };
        log.append(
            NewRecord::new(
                1_764_000_000_000 + i,
                "Adobe",
                "2.0",
                sources[i as usize % 4],
                payload,
            )
            .with_notice_version(format!("policy-{}", i / 3)),
        )
        .unwrap();
    }
    store
}

fn lines(store: &Store) -> Vec<String> {
    let path = store.dir().join(consent_store::RECORDS_FILE);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(store: &Store, lines: &[String]) {
    let path = store.dir().join(consent_store::RECORDS_FILE);
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// Applies `tamper` to the lines of a fresh 6-record log and checks what `verify` says.
fn check(tamper: impl FnOnce(&mut Vec<String>), expected: impl Fn(&VerifyError) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_records(dir.path(), 6);
    let log = store.records().unwrap();
    assert_eq!(log.verify().unwrap().count, 6);
    let mut l = lines(&store);
    tamper(&mut l);
    write_lines(&store, &l);
    let err = log.verify().unwrap_err();
    assert!(expected(&err), "unexpected {err:?}");
}

fn edit(line: &mut String, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(line).unwrap();
    f(&mut v);
    *line = serde_json::to_string(&v).unwrap();
}

#[test]
fn verify_catches_an_edited_payload() {
    check(
        |l| {
            edit(&mut l[0], |v| {
                let val = &mut v["payload"]["consent"][0]["value"]["collect"]["val"];
                assert_eq!(val, &json!("y"));
                *val = json!("n");
            });
        },
        |e| matches!(e, VerifyError::Hash { line: 1 }),
    );
}

#[test]
fn verify_catches_an_edited_timestamp_source_or_notice() {
    check(
        |l| edit(&mut l[0], |v| v["timestamp_ms"] = json!(1)),
        |e| matches!(e, VerifyError::Hash { line: 1 }),
    );
    check(
        |l| edit(&mut l[1], |v| v["source"] = json!("restore")),
        |e| matches!(e, VerifyError::Hash { line: 2 }),
    );
    check(
        |l| edit(&mut l[5], |v| v["notice_version"] = json!("policy-9")),
        |e| matches!(e, VerifyError::Hash { line: 6 }),
    );
}

#[test]
fn verify_catches_a_rehashed_edit_by_the_broken_link() {
    // Someone who edits a record and recomputes its hash breaks the next record's link.
    check(
        |l| {
            let mut record: ConsentRecord = serde_json::from_str(&l[1]).unwrap();
            record.timestamp_ms += 1;
            let mut value = serde_json::to_value(&record).unwrap();
            value.as_object_mut().unwrap().remove("hash");
            let digest = {
                use sha2::Digest;
                sha2::Sha256::digest(consent_store::canonical_json(&value).as_bytes())
            };
            record.hash = digest.iter().map(|b| format!("{b:02x}")).collect();
            l[1] = serde_json::to_string(&record).unwrap();
        },
        |e| matches!(e, VerifyError::Chain { line: 3 }),
    );
}

#[test]
fn verify_catches_removal_and_reordering() {
    check(
        |l| drop(l.remove(2)),
        |e| {
            matches!(
                e,
                VerifyError::Sequence {
                    line: 3,
                    expected: 3,
                    found: 4
                }
            )
        },
    );
    check(
        |l| l.swap(1, 3),
        |e| matches!(e, VerifyError::Sequence { line: 2, .. }),
    );
    check(
        |l| drop(l.remove(0)),
        |e| matches!(e, VerifyError::Sequence { line: 1, .. }),
    );
    check(
        |l| l.insert(2, l[2].clone()),
        |e| matches!(e, VerifyError::Sequence { line: 4, .. }),
    );
    check(
        |l| l[3].push_str(" x"),
        |e| matches!(e, VerifyError::Malformed { line: 4 }),
    );
}

#[test]
fn export_is_json_lines_of_verified_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_records(dir.path(), 4);
    let log = store.records().unwrap();
    let mut out = Vec::new();
    let head = log.export_jsonl(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let exported: Vec<ConsentRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, log.records().unwrap());
    assert_eq!(exported.len(), 4);
    assert_eq!(exported[3].hash, head.hash);
    assert_eq!(exported[1].payload, None);
    assert!(
        exported[1]
            .payload_hash
            .as_ref()
            .is_some_and(|h| h.len() == 64)
    );
    assert_eq!(exported[2].source, RecordSource::Server);

    let mut l = lines(&store);
    l.swap(0, 1);
    write_lines(&store, &l);
    let mut out = Vec::new();
    assert!(log.export_jsonl(&mut out).is_err());
    assert!(out.is_empty(), "nothing is exported from a broken chain");
}

/// Found by fuzzing (`fuzz/fuzz_targets/record_log_recovery.rs`): a line with its `payload`
/// written twice, a forged copy first and the hashed one last, verified (a JSON value keeps the
/// last copy) and then failed to read (`records()` refuses a field written twice). `verify`
/// refuses it too now.
#[test]
fn verify_catches_a_field_written_twice() {
    check(
        |l| {
            let original = l[0].clone();
            let payload_at = original.find("\"payload\":").unwrap();
            let forged = "\"payload\":{\"general\":\"out\"},";
            l[0] = format!(
                "{}{forged}{}",
                &original[..payload_at],
                &original[payload_at..]
            );
        },
        |e| matches!(e, VerifyError::Malformed { line: 1 }),
    );
}
