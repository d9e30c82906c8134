//! The consent record log: an append-only, hash-chained JSON-lines file, whose head is anchored in
//! the state file next to it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::anchor::{AnchorError, ChainHead, GENESIS_HASH};
use crate::fsutil::{Context, FsError, parent, read_optional};
use crate::io::{DirLock, DiskIo, Io, IoFile};
use crate::state::{read_anchor, write_anchor};

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
    /// The consent expired and the default applied again.
    Expiry,
    /// A consent change the server did not confirm (a failed request): the stricter state applied
    /// locally.
    Unconfirmed,
    /// A decision the app made itself, never sent (for example a custom purpose).
    Local,
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
/// from the sync, in which case the record may or may not be there after a restart, or
/// [`Anchor`](Self::Anchor), in which case it is there.
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
    /// The record was appended and synced, but the anchor in the state file could not be moved to
    /// it. The log still verifies; the next append anchors it again.
    #[error("consent record appended, but its anchor could not be updated")]
    Anchor(#[source] AnchorError),
    /// When the log was opened, it did not reach the head anchored in the state file: records were
    /// cut off, the file was deleted, damaged or rewritten. Appending would bury that, so the log
    /// refuses until [`RecordLog::reanchor`] accepts what is left. [`RecordLog::verify`] says what
    /// is wrong.
    #[error(
        "consent record log {} does not match its anchor (record {anchored} was written, the log \
         holds {found}); it was cut, damaged or rewritten: appending is refused",
        path.display()
    )]
    Mismatch {
        /// The log file.
        path: PathBuf,
        /// Records anchored.
        anchored: u64,
        /// The last sequence number found in the log.
        found: u64,
    },
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
    /// The chain is intact but does not reach the anchor (the state file's, this handle's, or the
    /// caller's): records were cut off the end or the file was deleted.
    #[error("the log ends at record {found}, but record {expected} was written")]
    Truncated {
        /// Records expected.
        expected: u64,
        /// Records found.
        found: u64,
    },
    /// The chain is intact, but the record at the anchor's position is not the one anchored: the
    /// log was rewritten and its hashes recomputed.
    #[error("record on line {line} is not the record anchored there: the log was rewritten")]
    Rewritten {
        /// The line (the anchor's record count).
        line: usize,
    },
    /// The anchor in the state file could not be read.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
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
/// a consent record is evidence. Then it *anchors* the new head (record count and last hash) in
/// the state file next to the log ([`STATE_FILE`](crate::STATE_FILE) in the same directory),
/// replaced atomically. A line cut short by a crash is dropped when the log is opened, unless the
/// anchor says it was written whole: then it is damage, and the file is left as it is.
///
/// # What [`verify`](Self::verify) detects
///
/// It checks every record's hash, sequence number and link to the one before, and that the log
/// reaches both the head anchored in the state file and the head this handle knows. So it reports:
///
/// - an edited, removed, inserted or reordered record ([`VerifyError::Hash`], [`VerifyError::Chain`],
///   [`VerifyError::Sequence`], [`VerifyError::Malformed`]);
/// - records cut off the end, or the whole file deleted ([`VerifyError::Truncated`]);
/// - a rewritten log whose hashes were all recomputed ([`VerifyError::Rewritten`]), because its
///   head no longer matches the anchor.
///
/// A log that does not match its anchor when opened also refuses appends
/// ([`AppendRecordError::Mismatch`]), so new records cannot bury the damage.
///
/// # What it cannot detect
///
/// The hashes are not keyed and the anchor lives on the same device. Someone who can write every
/// file of the data directory can rewrite the log *and* the anchor consistently, or delete both
/// (a missing or first-format state file anchors nothing), or append well-formed records, and no
/// check on the device can tell. Against that, keep a copy of the head off the device: the facade
/// sends [`head`](Self::head) to the server, keeps the receipt the server signed, checks the
/// signature and calls [`verify_against`](Self::verify_against) with the receipt's head. A crash
/// between a record's sync and its anchor's leaves the log one record past the anchor, which
/// verifies.
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
    /// The state file holding the anchor.
    anchor_path: PathBuf,
    file: Option<I::File>,
    head: ChainHead,
    poisoned: bool,
    /// Set when the log did not match its anchor at open: appends are refused.
    mismatch: Option<(u64, u64)>,
    /// The data directory's lock, when opened from a [`Store`](crate::Store): held as long as this is.
    lock: Option<Arc<DirLock>>,
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
    /// Opens the log at `path`, creating it on the first append, with its anchor in the state file
    /// of the same directory ([`STATE_FILE`](crate::STATE_FILE)).
    ///
    /// A torn last line (one the anchor does not cover) is cut off. A log that does not reach its
    /// anchor opens all the same, so that it can be read and verified, but refuses appends.
    pub fn open(io: I, path: impl Into<PathBuf>) -> Result<Self, OpenRecordsError> {
        let path = path.into();
        let anchor_path = parent(&path).join(crate::STATE_FILE);
        let mut log = Self {
            io,
            path,
            anchor_path,
            file: None,
            head: ChainHead {
                count: 0,
                hash: GENESIS_HASH.to_owned(),
            },
            poisoned: false,
            mismatch: None,
            lock: None,
        };
        // An unreadable anchor anchors nothing here; `verify` reports it.
        let anchor = read_anchor(&log.io, &log.anchor_path)
            .ok()
            .flatten()
            .filter(|a| a.count > 0);
        let data = read_optional(&log.io, &log.path)?.unwrap_or_default();
        let (lines, complete) = complete_lines(&data);
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
        if let Some(anchor) = &anchor {
            // The anchored record must be there, whole, at its line.
            let anchored = usize::try_from(anchor.count - 1)
                .ok()
                .and_then(|i| lines.get(i))
                .and_then(|l| serde_json::from_slice::<ConsentRecord>(l).ok());
            let matches = anchored.is_some_and(|r| r.seq == anchor.count && r.hash == anchor.hash);
            if !matches {
                log.mismatch = Some((anchor.count, log.head.count));
            }
        }
        if complete < data.len() && log.mismatch.is_none() {
            // A torn line the anchor does not cover: a crash cut the last append short.
            let mut file = log.io.open_append(&log.path).ctx("open", &log.path)?;
            file.truncate(complete as u64).ctx("truncate", &log.path)?;
            file.sync().ctx("sync", &log.path)?;
        }
        Ok(log)
    }

    /// Keeps the data directory's lock alive as long as this log.
    pub(crate) fn holding(mut self, lock: Arc<DirLock>) -> Self {
        self.lock = Some(lock);
        self
    }

    /// The file the log lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last record appended, as this handle knows it.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// The state file that holds the anchor.
    pub fn anchor_path(&self) -> &Path {
        &self.anchor_path
    }

    /// Appends a record, chained to the last one, syncs it, then anchors it in the state file.
    pub fn append(&mut self, new: NewRecord) -> Result<ConsentRecord, AppendRecordError> {
        if let Some((anchored, found)) = self.mismatch {
            return Err(AppendRecordError::Mismatch {
                path: self.path.clone(),
                anchored,
                found,
            });
        }
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
        // Only after the record is durable: an anchor ahead of the log would be a false alarm.
        write_anchor(&self.io, &self.anchor_path, &self.head).map_err(AppendRecordError::Anchor)?;
        Ok(record)
    }

    /// Accepts the log as it is now: verifies its chain, cuts an incomplete last line, anchors its
    /// head in the state file and lets appends go on. Records cut off or damaged before that can
    /// no longer be detected, so call this only once [`verify`](Self::verify)'s report has been
    /// dealt with (kept, reported, exported).
    pub fn reanchor(&mut self) -> Result<ChainHead, VerifyError> {
        let (head, _) = self.verify_lines()?;
        let data = read_optional(&self.io, &self.path)?.unwrap_or_default();
        let (_, complete) = complete_lines(&data);
        if complete < data.len() {
            let mut file = self.io.open_append(&self.path).ctx("open", &self.path)?;
            file.truncate(complete as u64).ctx("truncate", &self.path)?;
            file.sync().ctx("sync", &self.path)?;
        }
        write_anchor(&self.io, &self.anchor_path, &head)?;
        self.head = head.clone();
        self.mismatch = None;
        self.file = None;
        self.poisoned = false;
        Ok(head)
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
    /// before, and that the log reaches the head anchored in the state file and the head this
    /// handle knows; returns the head of the verified chain. See [the type's
    /// documentation](Self#what-verify-detects) for what this detects and what it cannot.
    pub fn verify(&self) -> Result<ChainHead, VerifyError> {
        self.verify_anchored(None).map(|(head, _)| head)
    }

    /// Like [`verify`](Self::verify), and also checks that the log reaches `anchor`, a head kept
    /// elsewhere (for example in a receipt the server signed).
    pub fn verify_against(&self, anchor: &ChainHead) -> Result<ChainHead, VerifyError> {
        self.verify_anchored(Some(anchor)).map(|(head, _)| head)
    }

    /// Verifies the chain and every anchor; the head and the records.
    fn verify_anchored(
        &self,
        extra: Option<&ChainHead>,
    ) -> Result<(ChainHead, Vec<ConsentRecord>), VerifyError> {
        let (head, records, incomplete) = self.verify_all()?;
        let stored = read_anchor(&self.io, &self.anchor_path)?;
        for anchor in [stored.as_ref(), Some(&self.head), extra]
            .into_iter()
            .flatten()
        {
            check_anchor(&records, incomplete, anchor)?;
        }
        Ok((head, records))
    }

    fn verify_lines(&self) -> Result<(ChainHead, Vec<ConsentRecord>), VerifyError> {
        self.verify_all().map(|(head, records, _)| (head, records))
    }

    /// Checks the chain; also says whether the file ends in an incomplete line.
    fn verify_all(&self) -> Result<(ChainHead, Vec<ConsentRecord>, bool), VerifyError> {
        let data = read_optional(&self.io, &self.path)?.unwrap_or_default();
        let (lines, complete) = complete_lines(&data);
        let mut prev = GENESIS_HASH.to_owned();
        let mut records = Vec::with_capacity(lines.len());
        for (i, raw) in lines.iter().enumerate() {
            let line = i + 1;
            let value: Value =
                serde_json::from_slice(raw).map_err(|_| VerifyError::Malformed { line })?;
            // The record from the line's bytes, as `records()` reads it, not from `value`: a
            // `Value` keeps only the last of two equal keys, so a line with a field written
            // twice (the hashed copy last) would verify and then not read.
            let record: ConsentRecord =
                serde_json::from_slice(raw).map_err(|_| VerifyError::Malformed { line })?;
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
            complete < data.len(),
        ))
    }

    /// Verifies the log as [`verify`](Self::verify) does, then writes every record as one JSON
    /// object per line; nothing is written from a log that does not verify.
    pub fn export_jsonl<W: Write>(&self, out: &mut W) -> Result<ChainHead, ExportError> {
        let (head, records) = self.verify_anchored(None)?;
        for record in &records {
            serde_json::to_writer(&mut *out, record).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(head)
    }
}

/// Checks that verified `records` reach `anchor`: its record is there and is the one anchored.
/// `incomplete` says the file ends in a line without its newline, which, when the anchor covers
/// it, is a damaged record rather than a cut.
fn check_anchor(
    records: &[ConsentRecord],
    incomplete: bool,
    anchor: &ChainHead,
) -> Result<(), VerifyError> {
    let Some(index) = anchor.count.checked_sub(1) else {
        return Ok(());
    };
    let found = records.len() as u64;
    match usize::try_from(index).ok().and_then(|i| records.get(i)) {
        Some(record) if record.hash == anchor.hash => Ok(()),
        Some(_) => Err(VerifyError::Rewritten {
            line: usize::try_from(anchor.count).unwrap_or(usize::MAX),
        }),
        None if incomplete => Err(VerifyError::Malformed {
            line: records.len() + 1,
        }),
        None => Err(VerifyError::Truncated {
            expected: anchor.count,
            found,
        }),
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
        let truncated = |r: Result<ChainHead, VerifyError>| {
            matches!(
                r,
                Err(VerifyError::Truncated {
                    expected: 4,
                    found: 3
                })
            )
        };
        assert!(truncated(log.verify()), "the state file's anchor");
        assert!(truncated(log.verify_against(&anchor)));
        // Without the state file (deleted with the records: what an attacker who can write every
        // file can do), only an anchor kept elsewhere, such as a server receipt, still shows it.
        io.remove_file(Path::new("/d/state.bin")).unwrap();
        let fresh = RecordLog::open(io.clone(), "/d/records.jsonl").unwrap();
        assert_eq!(fresh.verify().unwrap().count, 3);
        assert!(truncated(fresh.verify_against(&anchor)));
    }
}
