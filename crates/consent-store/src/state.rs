//! The consent state file: one versioned document, replaced atomically, with migrations.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::anchor::{AnchorError, ChainHead, GENESIS_HASH};
use crate::fsutil::{FsError, read_optional, write_atomic};
use crate::io::{DirLock, DiskIo, Io};

/// The first bytes of a state file written before the record log was anchored in it.
const MAGIC_V1: &[u8; 8] = b"CNSTATE1";
/// Magic, schema version, payload length, CRC-32C.
const HEADER_V1: usize = 8 + 4 + 4 + 4;
/// The first bytes of every state file written now.
const MAGIC: &[u8; 8] = b"CNSTATE2";
/// Magic, schema version, document length ([`NO_DOCUMENT`] when none), CRC-32C, then the record
/// log's anchor: its record count (u64 LE) and the last record's hash (64 hex digits).
const HEADER: usize = HEADER_V1 + 8 + 64;
/// The document length of a state file that holds only the record log's anchor.
const NO_DOCUMENT: u32 = u32::MAX;

/// Serialises every read-modify-write of a state file in this process, so that a
/// [`StateFile::save`] and a record log updating its anchor never lose each other's part (or write
/// the same temporary file at once). Other processes are kept out by the data directory's lock.
static WRITES: Mutex<()> = Mutex::new(());

fn writes() -> MutexGuard<'static, ()> {
    WRITES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A state file taken apart.
struct Decoded<'a> {
    version: u32,
    /// The document, when one was saved.
    doc: Option<&'a [u8]>,
    /// The record log's anchor, when the file has one (files of the first format have none).
    anchor: Option<ChainHead>,
}

/// The record log's anchor kept in the state file at `path`; `None` when there is no file or it
/// holds no anchor.
pub(crate) fn read_anchor<I: Io>(io: &I, path: &Path) -> Result<Option<ChainHead>, AnchorError> {
    let Some(bytes) = read_optional(io, path)? else {
        return Ok(None);
    };
    let decoded = decode(&bytes).map_err(|reason| AnchorError::CorruptState {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(decoded.anchor)
}

/// Replaces the record log's anchor in the state file at `path`, atomically and durably, keeping
/// its document. A state file that does not decode is left alone (its bytes are not lost) and the
/// anchor is not written.
pub(crate) fn write_anchor<I: Io>(
    io: &I,
    path: &Path,
    anchor: &ChainHead,
) -> Result<(), AnchorError> {
    let _guard = writes();
    let old = read_optional(io, path)?;
    let bytes = match &old {
        None => encode(0, None, Some(anchor)),
        Some(old) => {
            let decoded = decode(old).map_err(|reason| AnchorError::CorruptState {
                path: path.to_path_buf(),
                reason,
            })?;
            encode(decoded.version, decoded.doc, Some(anchor))
        }
    };
    // A document that was read back from the file fits the format again.
    let bytes = bytes.map_err(|_| AnchorError::CorruptState {
        path: path.to_path_buf(),
        reason: "document too large",
    })?;
    write_atomic(io, path, &bytes, true)?;
    Ok(())
}

/// What the SDK persists about consent, in the shape the caller gives it.
///
/// This is a convenience container for [`StateFile`]; the store does not look inside `engine` or
/// `permissions`, so the engine and the Opt-in Service can change their types and add a migration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersistedConsent<E, P> {
    /// The engine's persisted state.
    pub engine: E,
    /// Hashes of the last consent sent per `standard.version`, to skip repeated identical requests.
    pub consent_hashes: BTreeMap<String, String>,
    /// The Opt-in Service permissions.
    pub permissions: P,
}

/// A migration from one schema version to the next, on the raw JSON document.
type Migration = Box<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// A versioned document of type `T` kept in one file and replaced atomically.
///
/// The file holds a small header (magic, schema version, length, CRC-32C), the head of the consent
/// record log anchored there (see [`RecordLog`](crate::RecordLog)), and the document as JSON; files
/// of the first format, without the anchor, still load. [`save`](Self::save) keeps the anchor and
/// writes a temporary file, syncs it, renames it over the old one and syncs the
/// directory, so a crash at any instant leaves the old or the new document, never a mix.
/// [`load`](Self::load) runs the registered migrations, one version at a time, when the file was
/// written by an older schema, and refuses a file from a newer one.
///
/// ```
/// use consent_store::{MemoryStore, StateFile};
/// use serde_json::{json, Value};
///
/// let store = MemoryStore::in_memory();
/// // Version 1 stored {"consent": "in"}; version 2 calls it {"general": "in"}.
/// let v1: StateFile<Value, _> = store.state(1);
/// v1.save(&json!({"consent": "in"}))?;
///
/// let v2: StateFile<Value, _> = store.state(2).migration(1, |mut doc| {
///     let value = doc["consent"].take();
///     Ok(json!({ "general": value }))
/// });
/// assert_eq!(v2.load()?, Some(json!({"general": "in"})));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StateFile<T, I: Io = DiskIo> {
    io: I,
    path: PathBuf,
    version: u32,
    migrations: BTreeMap<u32, Migration>,
    marker: PhantomData<fn() -> T>,
    /// The data directory's lock, when opened from a [`Store`](crate::Store): held as long as this is.
    lock: Option<Arc<DirLock>>,
}

impl<T, I: Io> fmt::Debug for StateFile<T, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("migrations", &self.migrations.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a state file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadStateError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] FsError),
    /// The file is not a state file or its checksum does not match.
    #[error("state file {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file was written by a newer schema than this program knows.
    #[error("state file has schema version {found}, newer than the supported {supported}")]
    Newer {
        /// The version in the file.
        found: u32,
        /// The newest version this program reads.
        supported: u32,
    },
    /// No migration is registered from this version.
    #[error("no migration from state schema version {from}")]
    MissingMigration {
        /// The version that has no migration.
        from: u32,
    },
    /// A migration refused the document.
    #[error("migration from state schema version {from} failed: {message}")]
    Migration {
        /// The version migrated from.
        from: u32,
        /// The migration's message.
        message: String,
    },
    /// The document does not match the expected type.
    #[error("state document does not match its type")]
    Decode(#[from] serde_json::Error),
}

/// Why a state file could not be saved; the previous document is still in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveStateError {
    /// The document could not be serialized.
    #[error("cannot serialize the state document")]
    Encode(#[from] serde_json::Error),
    /// A write, sync or rename failed.
    #[error(transparent)]
    Io(#[from] FsError),
    /// The document is larger than the format's 4 GiB limit.
    #[error("state document of {0} bytes is too large")]
    TooLarge(usize),
}

impl<T: Serialize + DeserializeOwned, I: Io> StateFile<T, I> {
    /// A state file at `path` whose current schema version is `version`.
    pub fn new(io: I, path: impl Into<PathBuf>, version: u32) -> Self {
        Self {
            io,
            path: path.into(),
            version,
            migrations: BTreeMap::new(),
            marker: PhantomData,
            lock: None,
        }
    }

    /// Keeps the data directory's lock alive as long as this state file.
    pub(crate) fn holding(mut self, lock: Arc<DirLock>) -> Self {
        self.lock = Some(lock);
        self
    }

    /// Registers the migration from schema version `from` to `from + 1`.
    pub fn migration(
        mut self,
        from: u32,
        migrate: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.migrations.insert(from, Box::new(migrate));
        self
    }

    /// The file this state lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version written by [`save`](Self::save).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Reads the document, migrating it to the current version; `None` when no state was saved yet.
    ///
    /// Loading never writes: a migrated document is written in the new version by the next `save`.
    pub fn load(&self) -> Result<Option<T>, LoadStateError> {
        let Some(bytes) = read_optional(&self.io, &self.path)? else {
            return Ok(None);
        };
        let decoded = decode(&bytes).map_err(|reason| LoadStateError::Corrupt {
            path: self.path.clone(),
            reason,
        })?;
        // A file that only holds the record log's anchor: no state was saved yet.
        let Some(payload) = decoded.doc else {
            return Ok(None);
        };
        let found = decoded.version;
        if found > self.version {
            return Err(LoadStateError::Newer {
                found,
                supported: self.version,
            });
        }
        if found == self.version {
            return Ok(Some(serde_json::from_slice(payload)?));
        }
        let mut doc: Value = serde_json::from_slice(payload)?;
        for from in found..self.version {
            let migrate = self
                .migrations
                .get(&from)
                .ok_or(LoadStateError::MissingMigration { from })?;
            doc = migrate(doc).map_err(|message| LoadStateError::Migration { from, message })?;
        }
        Ok(Some(serde_json::from_value(doc)?))
    }

    /// Replaces the document atomically and durably, keeping the record log's anchor.
    ///
    /// A file that does not decode is replaced all the same (that is how a damaged state is
    /// repaired); the anchor it may have held is lost with it, so the record log can no longer
    /// show records cut off its end until its next append anchors it again.
    pub fn save(&self, state: &T) -> Result<(), SaveStateError> {
        let payload = serde_json::to_vec(state)?;
        let _guard = writes();
        let anchor = read_optional(&self.io, &self.path)?
            .and_then(|old| decode(&old).ok().and_then(|d| d.anchor));
        let bytes = encode(self.version, Some(&payload), anchor.as_ref())
            .map_err(SaveStateError::TooLarge)?;
        write_atomic(&self.io, &self.path, &bytes, true)?;
        Ok(())
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// A state file of the current format; the error is the document's length when it is too large.
fn encode(version: u32, doc: Option<&[u8]>, anchor: Option<&ChainHead>) -> Result<Vec<u8>, usize> {
    let len = match doc {
        None => NO_DOCUMENT,
        Some(doc) => u32::try_from(doc.len())
            .ok()
            .filter(|&len| len != NO_DOCUMENT)
            .ok_or(doc.len())?,
    };
    let doc = doc.unwrap_or_default();
    let mut bytes = Vec::with_capacity(HEADER + doc.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let (count, hash) = anchor.map_or((0, GENESIS_HASH), |a| (a.count, a.hash.as_str()));
    bytes.extend_from_slice(&count.to_le_bytes());
    // A hash that is not 64 hex digits cannot come from the record log; write the genesis hash
    // rather than a file that would not decode.
    let hash = if is_hash(hash.as_bytes()) {
        hash
    } else {
        GENESIS_HASH
    };
    bytes.extend_from_slice(hash.as_bytes());
    bytes.extend_from_slice(doc);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[8..16]), &bytes[HEADER_V1..]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

fn is_hash(bytes: &[u8]) -> bool {
    bytes.len() == 64 && bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Takes a state file apart, checking magic, lengths and checksum.
fn decode(bytes: &[u8]) -> Result<Decoded<'_>, &'static str> {
    let magic = bytes.get(..8);
    if magic == Some(MAGIC_V1.as_slice()) {
        return decode_v1(bytes);
    }
    if magic != Some(MAGIC.as_slice()) {
        return Err("bad magic");
    }
    let version = le_u32(bytes, 8).ok_or("truncated header")?;
    let len = le_u32(bytes, 12).ok_or("truncated header")?;
    let crc = le_u32(bytes, 16).ok_or("truncated header")?;
    let count = le_u64(bytes, HEADER_V1).ok_or("truncated header")?;
    let hash = bytes.get(HEADER_V1 + 8..HEADER).ok_or("truncated header")?;
    let doc = bytes.get(HEADER..).ok_or("truncated header")?;
    let expected_len = if len == NO_DOCUMENT { 0 } else { len };
    if usize::try_from(expected_len).ok() != Some(doc.len()) {
        return Err("length mismatch");
    }
    if crc32c::crc32c_append(crc32c::crc32c(&bytes[8..16]), &bytes[HEADER_V1..]) != crc {
        return Err("checksum mismatch");
    }
    if !is_hash(hash) {
        return Err("bad record log anchor");
    }
    let hash = String::from_utf8(hash.to_vec()).map_err(|_| "bad record log anchor")?;
    Ok(Decoded {
        version,
        doc: (len != NO_DOCUMENT).then_some(doc),
        anchor: Some(ChainHead { count, hash }),
    })
}

/// A state file of the first format: a document and no anchor.
fn decode_v1(bytes: &[u8]) -> Result<Decoded<'_>, &'static str> {
    let version = le_u32(bytes, 8).ok_or("truncated header")?;
    let len = le_u32(bytes, 12).ok_or("truncated header")?;
    let crc = le_u32(bytes, 16).ok_or("truncated header")?;
    let payload = bytes.get(HEADER_V1..).ok_or("truncated header")?;
    if usize::try_from(len).ok() != Some(payload.len()) {
        return Err("length mismatch");
    }
    if crc32c::crc32c_append(crc32c::crc32c(&bytes[8..16]), payload) != crc {
        return Err("checksum mismatch");
    }
    Ok(Decoded {
        version,
        doc: Some(payload),
        anchor: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemIo;
    use serde_json::json;

    fn file(io: &MemIo, version: u32) -> StateFile<Value, MemIo> {
        io.create_dir_all(Path::new("/d")).unwrap();
        StateFile::new(io.clone(), "/d/state", version)
    }

    #[test]
    fn missing_file_loads_as_none() {
        assert_eq!(file(&MemIo::new(), 1).load().unwrap(), None);
    }

    #[test]
    fn round_trips_typed_state() {
        let io = MemIo::new();
        io.create_dir_all(Path::new("/d")).unwrap();
        let f: StateFile<PersistedConsent<Value, Vec<String>>, _> =
            StateFile::new(io.clone(), "/d/state", 3);
        let mut state = PersistedConsent {
            engine: json!({"general": "pending"}),
            permissions: vec!["aa".to_owned()],
            ..Default::default()
        };
        state
            .consent_hashes
            .insert("Adobe.1.0".into(), "e385c3ab".into());
        f.save(&state).unwrap();
        io.crash();
        assert_eq!(f.load().unwrap(), Some(state));
    }

    #[test]
    fn every_corruption_is_a_typed_error() {
        let io = MemIo::new();
        let f = file(&io, 1);
        f.save(&json!({"a": 1})).unwrap();
        let good = io.read(Path::new("/d/state")).unwrap();
        for cut in 0..good.len() {
            io.replace(Path::new("/d/state"), good[..cut].to_vec())
                .unwrap();
            assert!(
                matches!(f.load(), Err(LoadStateError::Corrupt { .. })),
                "cut at {cut}"
            );
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            io.replace(Path::new("/d/state"), bad).unwrap();
            assert!(f.load().is_err(), "flip at {at}");
        }
    }

    #[test]
    fn migrations_run_in_order_and_newer_files_are_refused() {
        let io = MemIo::new();
        file(&io, 1).save(&json!([])).unwrap();
        let v3 = file(&io, 3)
            .migration(1, |mut v| {
                v.as_array_mut().ok_or("not an array")?.push(json!(1));
                Ok(v)
            })
            .migration(2, |mut v| {
                v.as_array_mut().ok_or("not an array")?.push(json!(2));
                Ok(v)
            });
        assert_eq!(v3.load().unwrap(), Some(json!([1, 2])));
        assert!(matches!(
            file(&io, 2).load(),
            Err(LoadStateError::MissingMigration { from: 1 })
        ));
        v3.save(&json!([])).unwrap();
        assert!(matches!(
            file(&io, 2).load(),
            Err(LoadStateError::Newer {
                found: 3,
                supported: 2
            })
        ));
        let failing = file(&io, 4).migration(3, |_| Err("no".into()));
        assert!(matches!(
            failing.load(),
            Err(LoadStateError::Migration { from: 3, .. })
        ));
    }

    #[test]
    fn files_of_the_first_format_still_load() {
        let io = MemIo::new();
        let f = file(&io, 1);
        let payload = br#"{"general":"in"}"#;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC_V1);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[8..16]), payload);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(payload);
        io.create(Path::new("/d/state")).unwrap();
        io.replace(Path::new("/d/state"), bytes).unwrap();
        assert_eq!(f.load().unwrap(), Some(json!({"general": "in"})));
        assert_eq!(read_anchor(&io, Path::new("/d/state")).unwrap(), None);
    }

    #[test]
    fn the_anchor_and_the_document_keep_each_other() {
        let io = MemIo::new();
        let f = file(&io, 2);
        let path = Path::new("/d/state");
        let anchor = ChainHead {
            count: 7,
            hash: "ab".repeat(32),
        };
        // An anchor alone: no state saved yet.
        write_anchor(&io, path, &anchor).unwrap();
        assert_eq!(f.load().unwrap(), None);
        f.save(&json!({"general": "out"})).unwrap();
        assert_eq!(read_anchor(&io, path).unwrap(), Some(anchor.clone()));
        let newer = ChainHead {
            count: 8,
            hash: "cd".repeat(32),
        };
        write_anchor(&io, path, &newer).unwrap();
        io.crash();
        assert_eq!(f.load().unwrap(), Some(json!({"general": "out"})));
        assert_eq!(read_anchor(&io, path).unwrap(), Some(newer));
        // A damaged state file is not overwritten by an anchor update.
        let mut bad = io.read(path).unwrap();
        bad[30] ^= 1;
        io.replace(path, bad.clone()).unwrap();
        assert!(matches!(
            write_anchor(&io, path, &anchor),
            Err(AnchorError::CorruptState { .. })
        ));
        assert_eq!(io.read(path).unwrap(), bad);
    }
}
