//! Durable local persistence for consent: a cookie jar, the consent state, a queue of events waiting
//! for consent or for the server, and a hash-chained log of consent records, all as plain files in
//! one data directory (no database server).
//!
//! # What is guaranteed
//!
//! - **Crashes.** Every file survives `kill -9` or a power loss at any instant: files are either
//!   append-only with checksummed frames, whose torn tail is dropped on recovery, or replaced whole
//!   by writing a temporary file, syncing it, renaming it and syncing the directory. Every
//!   directory the store creates is synced into its parent. An event reported durable, a saved
//!   state, a saved jar and an appended consent record are found after a crash.
//! - **Damage** that a crash cannot cause (bad media, an outside write) is found and reported,
//!   never silently cut: the queue keeps every event that still verifies, quarantines the damaged
//!   file byte for byte and lists what it could not verify ([`EventQueue::recovery`]); the record
//!   log's [`verify`](RecordLog::verify) reports edits, removals, records cut off the end, a
//!   deleted log and a rewritten chain, against a head anchored in the state file. Bad input never
//!   panics: it is a typed error or a typed report. The limits (what a damaged last frame, or an
//!   attacker who can write every file, can still do) are in the documentation of [`EventQueue`]
//!   and [`RecordLog`].
//! - **One process at a time.** [`Store::open`] locks the data directory ([`LOCK_FILE`], an OS
//!   lock that dies with the process); a second `Store` on it, in any process, gets
//!   [`OpenStoreError::Locked`].
//! - **Sequence numbers** of the queue are never given twice to durable events, and
//!   [`EventQueue::peek`] only hands out durable ones.
//! - **Deletion.** Acknowledged events leave the queue's files at the next sync or group commit
//!   (payloads zeroed in place, whole segments deleted); [`EventQueue::purge`] deletes every waiting
//!   event, quarantined ones included, durably before it returns.
//!
//! | part | file(s) in the data directory | type |
//! |---|---|---|
//! | cookie jar | `cookies.json` | [`CookieJar`] |
//! | consent state | `state.bin` | [`StateFile`] |
//! | event queue | `queue/*.seg`, `queue/head`, `queue/quarantine/` | [`EventQueue`] |
//! | consent records | `records.jsonl` (anchored in `state.bin`) | [`RecordLog`] |
//! | lock | `lock` | [`Store`] |
//!
//! All I/O goes through the [`Io`] trait: [`DiskIo`] in production, [`MemIo`] for an in-memory
//! [`MemoryStore`] with the same API (that can also simulate a power loss), and [`FaultyIo`] to fail
//! writes, syncs or renames on a schedule in tests.
//!
//! ```
//! use consent_store::{NewRecord, QueueConfig, RecordPayload, RecordSource, StateFile, Store};
//! use serde_json::{json, Value};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//!
//! // Events collected while consent is pending wait in the queue, across restarts.
//! let mut queue = store.queue(QueueConfig::default())?;
//! queue.append(br#"{"eventType":"web.webpagedetails.pageViews"}"#)?;
//! queue.sync()?;
//!
//! // The user opts in: record it, persist the state, release the queue.
//! let mut records = store.records()?;
//! let consent = json!({"general": "in"});
//! records.append(NewRecord::new(1_764_000_000_000, "Adobe", "1.0", RecordSource::User,
//!     RecordPayload::Full(consent.clone())))?;
//! let state: StateFile<Value> = store.state(1);
//! state.save(&consent)?;
//! for event in queue.peek(100)? {
//!     // ... send it, and once the server took it:
//!     queue.ack(event.seq)?;
//! }
//! assert!(queue.is_empty());
//! records.verify()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod anchor;
mod cookies;
mod fault;
mod fsutil;
mod io;
mod queue;
mod records;
mod state;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cookie_store;

pub use crate::cookies::{CookieJar, LoadCookiesError, SaveCookiesError};
pub use crate::fault::{FaultyFile, FaultyIo, Op};
pub use crate::fsutil::FsError;
pub use crate::io::{DirLock, DiskFile, DiskIo, Io, IoFile, MemFile, MemIo};
pub use crate::queue::{
    AckError, AppendError, Appended, Damage, Event, EventQueue, FRAME_HEADER, OpenQueueError,
    PurgeError, QUARANTINE_DIR, QueueConfig, QueueStats, ReadError, RecoveryReport, SyncError,
    SyncPolicy,
};
pub use crate::records::{
    AnchorError, AppendRecordError, ChainHead, ConsentRecord, ExportError, GENESIS_HASH, NewRecord,
    OpenRecordsError, RecordLog, RecordPayload, RecordSource, VerifyError, canonical_json,
};
pub use crate::state::{LoadStateError, PersistedConsent, SaveStateError, StateFile};

/// File name of the cookie jar in the data directory.
pub const COOKIES_FILE: &str = "cookies.json";
/// File name of the consent state in the data directory.
pub const STATE_FILE: &str = "state.bin";
/// Directory name of the event queue in the data directory.
pub const QUEUE_DIR: &str = "queue";
/// File name of the consent record log in the data directory.
pub const RECORDS_FILE: &str = "records.jsonl";
/// File name of the lock file in the data directory (see [`Store::open`]).
pub const LOCK_FILE: &str = "lock";

/// The data directory and the stores in it.
///
/// A `Store` holds the data directory's lock and knows where things are; each part is opened from
/// it and owns its files. Every part opened from it keeps the lock too, so the directory stays
/// locked until the `Store`, its clones and every part opened from them are dropped. Open the
/// queue and the record log once each: two handles appending to the same queue or log would
/// interleave.
#[derive(Debug, Clone)]
pub struct Store<I: Io = DiskIo> {
    io: I,
    dir: PathBuf,
    lock: Arc<DirLock>,
}

/// A [`Store`] kept in memory, for tests and for apps that must not write to disk.
pub type MemoryStore = Store<MemIo>;

/// Why the data directory could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStoreError {
    /// The directory could not be created or locked.
    #[error(transparent)]
    Io(#[from] FsError),
    /// Another `Store`, in this process or another one, has the directory open.
    #[error(
        "data directory {} is already in use (its lock file {} is held by another Store, in this \
         process or another); only one may use it at a time",
        dir.display(),
        dir.join(LOCK_FILE).display()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
}

impl Store<DiskIo> {
    /// Opens the data directory `dir` on disk, creating it (and every missing parent, each synced)
    /// if needed, and locks it.
    ///
    /// The lock is an OS file lock on [`LOCK_FILE`] in the directory: it keeps out a second `Store`
    /// in this or any other process ([`OpenStoreError::Locked`]) and is released when the `Store`
    /// and every part opened from it are dropped, or when the process ends, even by `kill -9`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, OpenStoreError> {
        Self::with_io(DiskIo, dir)
    }
}

impl Store<MemIo> {
    /// A store in a fresh in-memory file system.
    pub fn in_memory() -> Self {
        let io = MemIo::new();
        let dir = PathBuf::from("/consent");
        // Creating a directory in memory cannot fail, and nothing else holds the new one's lock;
        // a lock that failed anyway would only leave this store without one.
        let _ = create_dir_synced(&io, &dir);
        let lock = io
            .lock(&dir.join(LOCK_FILE))
            .unwrap_or_else(|_| DirLock::new(()));
        Self {
            io,
            dir,
            lock: Arc::new(lock),
        }
    }
}

/// Creates `dir` and its missing parents, and makes each new directory's entry durable by syncing
/// the directory that holds it, from the top down.
fn create_dir_synced<I: Io>(io: &I, dir: &Path) -> Result<(), FsError> {
    // The directories that are missing, deepest first; listing one tells whether it exists.
    let mut missing = Vec::new();
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match io.list(ancestor) {
            Err(e) if e.kind() == ErrorKind::NotFound => missing.push(ancestor),
            _ => break,
        }
    }
    io.create_dir_all(dir).map_err(|source| FsError {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    // The data directory's own entry is synced even when it existed: an earlier run may have
    // created it and stopped before syncing.
    let mut parents: Vec<&Path> = missing.iter().rev().map(|d| fsutil::parent(d)).collect();
    let own = fsutil::parent(dir);
    if !parents.contains(&own) {
        parents.push(own);
    }
    for parent in parents {
        io.sync_dir(parent).map_err(|source| FsError {
            op: "sync directory",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

impl<I: Io> Store<I> {
    /// Opens the data directory `dir` through `io`, creating it if needed (every directory it
    /// creates is synced into its parent) and taking its lock with [`Io::lock`].
    pub fn with_io(io: I, dir: impl Into<PathBuf>) -> Result<Self, OpenStoreError> {
        let dir = dir.into();
        create_dir_synced(&io, &dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = match io.lock(&lock_path) {
            Ok(lock) => lock,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(OpenStoreError::Locked { dir });
            }
            Err(source) => {
                return Err(FsError {
                    op: "lock",
                    path: lock_path,
                    source,
                }
                .into());
            }
        };
        Ok(Self {
            io,
            dir,
            lock: Arc::new(lock),
        })
    }

    /// The I/O the store goes through.
    pub fn io(&self) -> &I {
        &self.io
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cookie jar, in [`COOKIES_FILE`].
    pub fn cookie_jar(&self) -> CookieJar<I> {
        CookieJar::new(self.io.clone(), self.dir.join(COOKIES_FILE)).holding(Arc::clone(&self.lock))
    }

    /// The consent state file, in [`STATE_FILE`], whose current schema version is `version`.
    pub fn state<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        version: u32,
    ) -> StateFile<T, I> {
        StateFile::new(self.io.clone(), self.dir.join(STATE_FILE), version)
            .holding(Arc::clone(&self.lock))
    }

    /// Opens and recovers the event queue, in [`QUEUE_DIR`]; what recovery found is in
    /// [`EventQueue::recovery`].
    pub fn queue(&self, config: QueueConfig) -> Result<EventQueue<I>, OpenQueueError> {
        EventQueue::open(self.io.clone(), self.dir.join(QUEUE_DIR), config)
            .map(|queue| queue.holding(Arc::clone(&self.lock)))
    }

    /// Opens the consent record log, in [`RECORDS_FILE`], anchored in [`STATE_FILE`].
    pub fn records(&self) -> Result<RecordLog<I>, OpenRecordsError> {
        RecordLog::open(self.io.clone(), self.dir.join(RECORDS_FILE))
            .map(|log| log.holding(Arc::clone(&self.lock)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_lays_out_the_data_directory() {
        let store = MemoryStore::in_memory();
        store
            .cookie_jar()
            .save(&cookie_store::CookieStore::default())
            .unwrap();
        store.state::<u32>(1).save(&7).unwrap();
        let mut q = store.queue(QueueConfig::default()).unwrap();
        q.append(b"e").unwrap();
        q.sync().unwrap();
        let payload = RecordPayload::Full(serde_json::json!({"general": "in"}));
        store
            .records()
            .unwrap()
            .append(NewRecord::new(
                1,
                "Adobe",
                "1.0",
                RecordSource::Default,
                payload,
            ))
            .unwrap();
        let mut names = store.io().list(store.dir()).unwrap();
        names.sort();
        assert_eq!(names, [COOKIES_FILE, RECORDS_FILE, STATE_FILE]);
        assert_eq!(
            store.io().list(&store.dir().join(QUEUE_DIR)).unwrap().len(),
            1
        );
    }
}
