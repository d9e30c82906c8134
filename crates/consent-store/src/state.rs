//! The consent state file: one versioned document, replaced atomically, with migrations.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fsutil::{FsError, read_optional, write_atomic};
use crate::io::{DiskIo, Io};

/// The first bytes of every state file.
const MAGIC: &[u8; 8] = b"CNSTATE1";
/// Magic, schema version, payload length, CRC-32C.
const HEADER: usize = 8 + 4 + 4 + 4;

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
/// The file holds a small header (magic, schema version, length, CRC-32C) and the document as JSON.
/// [`save`](Self::save) writes a temporary file, syncs it, renames it over the old one and syncs the
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
        }
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
        let (found, payload) = decode(&bytes).map_err(|reason| LoadStateError::Corrupt {
            path: self.path.clone(),
            reason,
        })?;
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

    /// Replaces the document atomically and durably.
    pub fn save(&self, state: &T) -> Result<(), SaveStateError> {
        let payload = serde_json::to_vec(state)?;
        let len =
            u32::try_from(payload.len()).map_err(|_| SaveStateError::TooLarge(payload.len()))?;
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.version.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[8..16]), &payload);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&payload);
        write_atomic(&self.io, &self.path, &bytes, true)?;
        Ok(())
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Splits a state file into its schema version and payload, checking magic, length and checksum.
fn decode(bytes: &[u8]) -> Result<(u32, &[u8]), &'static str> {
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err("bad magic");
    }
    let version = le_u32(bytes, 8).ok_or("truncated header")?;
    let len = le_u32(bytes, 12).ok_or("truncated header")?;
    let crc = le_u32(bytes, 16).ok_or("truncated header")?;
    let payload = bytes.get(HEADER..).ok_or("truncated header")?;
    if usize::try_from(len).ok() != Some(payload.len()) {
        return Err("length mismatch");
    }
    if crc32c::crc32c_append(crc32c::crc32c(&bytes[8..16]), payload) != crc {
        return Err("checksum mismatch");
    }
    Ok((version, payload))
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
}
