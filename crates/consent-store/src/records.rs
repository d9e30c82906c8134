//! The consent record log: an append-only, hash-chained JSON-lines file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::fsutil::{Context, FsError, parent, read_optional};
use crate::io::{DiskIo, Io, IoFile};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where a consent decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RecordSource {
    /// The configured default consent.
    Default,
    /// The user (a `setConsent` call).
    User,
    /// The server's answer (for example a consent cookie it set).
    Server,
    /// Restored from persisted state at startup.
    Restore,
}

/// What a record keeps of the consent payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordPayload {
    /// The payload itself.
    Full(Value),
    /// Only a hash of it, for example when the payload must not be kept.
    Hash(String),
}

impl RecordPayload {
    /// Keeps only the SHA-256 of the payload's canonical JSON (object keys sorted), in hex.
    pub fn hashed(payload: &Value) -> Self {
        Self::Hash(hex(&Sha256::digest(canonical_json(payload).as_bytes())))
    }
}

/// A consent change to record; [`RecordLog::append`] adds the sequence number and the hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewRecord {
    /// When the change happened, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The consent standard, for example `Adobe` or `IAB TCF`.
    pub standard: String,
    /// The standard's version, for example `1.0` or `2.0`.
    pub version: String,
    /// Where the decision came from.
    pub source: RecordSource,
    /// The payload or its hash.
    pub payload: RecordPayload,
    /// The notice or policy version the consent was given under, if known.
    pub notice_version: Option<String>,
}

impl NewRecord {
    /// A record of `payload` in `standard` `version`, from `source`, at `timestamp_ms`.
    pub fn new(
        timestamp_ms: u64,
        standard: impl Into<String>,
        version: impl Into<String>,
        source: RecordSource,
        payload: RecordPayload,
    ) -> Self {
        Self {
            timestamp_ms,
            standard: standard.into(),
            version: version.into(),
            source,
            payload,
            notice_version: None,
        }
    }

    /// Sets the notice or policy version the consent was given under.
    pub fn with_notice_version(mut self, notice_version: impl Into<String>) -> Self {
        self.notice_version = Some(notice_version.into());
        self
    }
}

/// A stored consent record, one line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConsentRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When the change happened, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The consent standard.
    pub standard: String,
    /// The standard's version.
    pub version: String,
    /// Where the decision came from.
    pub source: RecordSource,
    /// The payload, when it is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The payload's hash, when only that is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hash: Option<String>,
    /// The notice or policy version the consent was given under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_version: Option<String>,
    /// The `hash` of the previous record ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// SHA-256, in hex, of the canonical JSON of this record without its `hash` field.
    pub hash: String,
}

/// The last record of a verified chain: keep it somewhere else (the state file, the server) to also
/// detect records cut off the end of the log, which the chain alone cannot show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Number of records (the last `seq`).
    pub count: u64,
    /// The last record's hash ([`GENESIS_HASH`] when empty).
    pub hash: String,
}

/// Why the record log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenRecordsError {
    /// The file could not be read or repaired.
    #[error(transparent)]
    Io(#[from] FsError),
    /// The last complete line is not a record, so the chain cannot be continued.
    #[error("consent record log {} is corrupt at line {line}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },
}

/// Why a record could not be appended. The log is unchanged unless the error is [`Io`](Self::Io)
/// from the sync, in which case the record may or may not be there after a restart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendRecordError {
    /// The record could not be serialized.
    #[error("cannot serialize the consent record")]
    Encode(#[from] serde_json::Error),
    /// A write or sync failed; reopen the log.
    #[error(transparent)]
    Io(#[from] FsError),
    /// An earlier write failed; reopen the log.
    #[error("consent record log is unusable after an I/O error; reopen it")]
    Poisoned,
}

/// What [`RecordLog::verify`] found wrong. Lines count from 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] FsError),
    /// A line is not a record.
    #[error("line {line} is not a consent record")]
    Malformed {
        /// The line.
        line: usize,
    },
    /// A record's content does not match its hash: it was edited.
    #[error("record on line {line} does not match its hash")]
    Hash {
        /// The line.
        line: usize,
    },
    /// A record does not point at the one before it: a record was removed, inserted or moved.
    #[error("record on line {line} does not follow the record before it")]
    Chain {
        /// The line.
        line: usize,
    },
    /// Sequence numbers are not 1, 2, 3, ...: a record was removed, inserted or moved.
    #[error("record on line {line} has sequence number {found}, expected {expected}")]
    Sequence {
        /// The line.
        line: usize,
        /// The expected sequence number.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// The chain is intact but does not end where the caller's anchor says: records were cut off.
    #[error("the log ends at record {found}, but record {expected} was written")]
    Truncated {
        /// Records expected.
        expected: u64,
        /// Records found.
        found: u64,
    },
}

/// Why the log could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The log does not verify; nothing was written.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Writing to the destination failed.
    #[error("cannot write the export")]
    Write(#[from] std::io::Error),
}

/// The append-only log of every consent change, each record carrying the hash of the one before.
///
/// Each append writes one JSON line and syncs it before returning, whatever the queue's policy:
/// a consent record is evidence. A line cut short by a crash is dropped when the log is opened.
///
/// ```
/// use consent_store::{MemoryStore, NewRecord, RecordPayload, RecordSource};
/// use serde_json::json;
///
/// let store = MemoryStore::in_memory();
/// let mut log = store.records()?;
/// let payload = RecordPayload::Full(json!({"general": "in"}));
/// log.append(NewRecord::new(1_764_000_000_000, "Adobe", "1.0", RecordSource::User, payload))?;
/// let head = log.verify()?;
/// assert_eq!(head.count, 1);
/// let mut out = Vec::new();
/// log.export_jsonl(&mut out)?;
/// assert!(String::from_utf8(out)?.contains(r#""standard":"Adobe""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RecordLog<I: Io = DiskIo> {
    io: I,
    path: PathBuf,
    file: Option<I::File>,
    head: ChainHead,
    poisoned: bool,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// JSON with object keys sorted at every level, so a hash does not depend on key order: the
/// engine's canonical form ([`consent_core::hash::canonical_json`]), which its consent hashes use too.
pub use consent_core::hash::canonical_json;

/// The hash of a record given as JSON, ignoring its `hash` field.
fn record_hash(mut value: Value) -> String {
    if let Value::Object(map) = &mut value {
        map.remove("hash");
    }
    hex(&Sha256::digest(canonical_json(&value).as_bytes()))
}

/// Splits a log into complete lines; the length of what they cover (a torn tail excluded).
fn complete_lines(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines = data[..complete]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    (lines, complete)
}

impl<I: Io> RecordLog<I> {
    /// Opens the log at `path`, creating it on the first append; a torn last line is cut off.
    pub fn open(io: I, path: impl Into<PathBuf>) -> Result<Self, OpenRecordsError> {
        let path = path.into();
        let mut log = Self {
            io,
            path,
            file: None,
            head: ChainHead {
                count: 0,
                hash: GENESIS_HASH.to_owned(),
            },
            poisoned: false,
        };
        let Some(data) = read_optional(&log.io, &log.path)? else {
            return Ok(log);
        };
        let (lines, complete) = complete_lines(&data);
        if complete < data.len() {
            let mut file = log.io.open_append(&log.path).ctx("open", &log.path)?;
            file.truncate(complete as u64).ctx("truncate", &log.path)?;
            file.sync().ctx("sync", &log.path)?;
        }
        if let Some(last) = lines.last() {
            let record: ConsentRecord =
                serde_json::from_slice(last).map_err(|_| OpenRecordsError::Corrupt {
                    path: log.path.clone(),
                    line: lines.len(),
                })?;
            log.head = ChainHead {
                count: record.seq,
                hash: record.hash,
            };
        }
        Ok(log)
    }

    /// The file the log lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last record appended, as this handle knows it.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// Appends a record, chained to the last one, and syncs it.
    pub fn append(&mut self, new: NewRecord) -> Result<ConsentRecord, AppendRecordError> {
        if self.poisoned {
            return Err(AppendRecordError::Poisoned);
        }
        let (payload, payload_hash) = match new.payload {
            RecordPayload::Full(v) => (Some(v), None),
            RecordPayload::Hash(h) => (None, Some(h)),
        };
        let mut record = ConsentRecord {
            seq: self.head.count + 1,
            timestamp_ms: new.timestamp_ms,
            standard: new.standard,
            version: new.version,
            source: new.source,
            payload,
            payload_hash,
            notice_version: new.notice_version,
            prev_hash: self.head.hash.clone(),
            hash: String::new(),
        };
        record.hash = record_hash(serde_json::to_value(&record)?);
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        if self.file.is_none() {
            let file = self.io.open_append(&self.path).ctx("open", &self.path)?;
            // The file may be new: make its directory entry durable before relying on it.
            let dir = parent(&self.path);
            self.io.sync_dir(dir).ctx("sync directory", dir)?;
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(AppendRecordError::Poisoned);
        };
        let written = file.write_all(&line).ctx("write", &self.path);
        let synced = written.and_then(|()| file.sync().ctx("sync", &self.path));
        if let Err(e) = synced {
            self.poisoned = true;
            return Err(e.into());
        }
        self.head = ChainHead {
            count: record.seq,
            hash: record.hash.clone(),
        };
        Ok(record)
    }

    /// Reads every record, checking nothing.
    pub fn records(&self) -> Result<Vec<ConsentRecord>, VerifyError> {
        let data = read_optional(&self.io, &self.path)?.unwrap_or_default();
        let (lines, _) = complete_lines(&data);
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_slice(l).map_err(|_| VerifyError::Malformed { line: i + 1 })
            })
            .collect()
    }

    /// Reads the log from disk and checks every record's hash, sequence number and link to the one
    /// before; returns the head of the verified chain.
    ///
    /// This detects any edit, removal, insertion or reordering of records, except removing records
    /// from the end: compare the result with an anchor kept elsewhere ([`verify_against`](Self::verify_against)).
    pub fn verify(&self) -> Result<ChainHead, VerifyError> {
        self.verify_lines().map(|(head, _)| head)
    }

    /// Like [`verify`](Self::verify), and also checks that the log reaches `anchor`, a head saved
    /// earlier.
    pub fn verify_against(&self, anchor: &ChainHead) -> Result<ChainHead, VerifyError> {
        let (head, records) = self.verify_lines()?;
        let reached = usize::try_from(anchor.count)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| records.get(i))
            .map_or(GENESIS_HASH, |r| r.hash.as_str());
        if head.count < anchor.count {
            return Err(VerifyError::Truncated {
                expected: anchor.count,
                found: head.count,
            });
        }
        if reached != anchor.hash {
            return Err(VerifyError::Chain {
                line: usize::try_from(anchor.count).unwrap_or(0),
            });
        }
        Ok(head)
    }

    fn verify_lines(&self) -> Result<(ChainHead, Vec<ConsentRecord>), VerifyError> {
        let data = read_optional(&self.io, &self.path)?.unwrap_or_default();
        let (lines, _) = complete_lines(&data);
        let mut prev = GENESIS_HASH.to_owned();
        let mut records = Vec::with_capacity(lines.len());
        for (i, raw) in lines.iter().enumerate() {
            let line = i + 1;
            let value: Value =
                serde_json::from_slice(raw).map_err(|_| VerifyError::Malformed { line })?;
            let record: ConsentRecord = serde_json::from_value(value.clone())
                .map_err(|_| VerifyError::Malformed { line })?;
            if record_hash(value) != record.hash {
                return Err(VerifyError::Hash { line });
            }
            if record.seq != line as u64 {
                return Err(VerifyError::Sequence {
                    line,
                    expected: line as u64,
                    found: record.seq,
                });
            }
            if record.prev_hash != prev {
                return Err(VerifyError::Chain { line });
            }
            prev.clone_from(&record.hash);
            records.push(record);
        }
        Ok((
            ChainHead {
                count: records.len() as u64,
                hash: prev,
            },
            records,
        ))
    }

    /// Verifies the log, then writes every record as one JSON object per line.
    pub fn export_jsonl<W: Write>(&self, out: &mut W) -> Result<ChainHead, ExportError> {
        let (head, records) = self.verify_lines()?;
        for record in &records {
            serde_json::to_writer(&mut *out, record).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemIo;
    use serde_json::json;

    fn log_with(io: &MemIo, n: u64) -> RecordLog<MemIo> {
        io.create_dir_all(Path::new("/d")).unwrap();
        let mut log = RecordLog::open(io.clone(), "/d/records.jsonl").unwrap();
        for i in 0..n {
            let value = if i % 2 == 0 { "in" } else { "out" };
            let payload = if i % 3 == 0 {
                RecordPayload::hashed(&json!({"general": value}))
            } else {
                RecordPayload::Full(json!({"general": value, "z": [1, {"b": 2, "a": 1}]}))
            };
            log.append(
                NewRecord::new(1000 + i, "Adobe", "1.0", RecordSource::User, payload)
                    .with_notice_version("2026-01"),
            )
            .unwrap();
        }
        log
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": [{"d": 1, "c": "x\"y"}], "a": null});
        assert_eq!(canonical_json(&v), r#"{"a":null,"b":[{"c":"x\"y","d":1}]}"#);
    }

    #[test]
    fn chain_verifies_and_survives_reopen() {
        let io = MemIo::new();
        let log = log_with(&io, 5);
        let head = log.verify().unwrap();
        assert_eq!(head.count, 5);
        assert_eq!(&head, log.head());
        io.crash();
        let mut log = RecordLog::open(io.clone(), "/d/records.jsonl").unwrap();
        assert_eq!(log.head(), &head);
        let payload = RecordPayload::Full(json!({"general": "in"}));
        let r = log
            .append(NewRecord::new(
                9,
                "Adobe",
                "1.0",
                RecordSource::Restore,
                payload,
            ))
            .unwrap();
        assert_eq!((r.seq, r.prev_hash.as_str()), (6, head.hash.as_str()));
        assert_eq!(log.verify_against(&head).unwrap().count, 6);
    }

    #[test]
    fn torn_last_line_is_dropped() {
        let io = MemIo::new();
        let log = log_with(&io, 3);
        let head = log.verify().unwrap();
        drop(log);
        let mut data = io.read(Path::new("/d/records.jsonl")).unwrap();
        data.extend_from_slice(br#"{"seq":4,"timest"#);
        io.replace(Path::new("/d/records.jsonl"), data).unwrap();
        let log = RecordLog::open(io.clone(), "/d/records.jsonl").unwrap();
        assert_eq!(log.verify().unwrap(), head);
    }

    #[test]
    fn truncation_is_caught_by_an_anchor() {
        let io = MemIo::new();
        let log = log_with(&io, 4);
        let anchor = log.verify().unwrap();
        let data = io.read(Path::new("/d/records.jsonl")).unwrap();
        let (lines, _) = complete_lines(&data);
        let mut cut = lines[..3].join(&b'\n');
        cut.push(b'\n');
        io.replace(Path::new("/d/records.jsonl"), cut).unwrap();
        assert_eq!(log.verify().unwrap().count, 3);
        assert!(matches!(
            log.verify_against(&anchor),
            Err(VerifyError::Truncated {
                expected: 4,
                found: 3
            })
        ));
    }
}
