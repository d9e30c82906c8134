//! Durable local persistence for consent: a cookie jar, the consent state, a queue of events waiting
//! for consent or for the server, and a tamper-evident log of consent records, all as plain files in
//! one data directory (no database server).
//!
//! Every file survives `kill -9` or a power loss at any instant: files are either append-only with
//! checksummed frames, whose torn tail is dropped on recovery, or replaced whole by writing a
//! temporary file, syncing it, renaming it and syncing the directory. Nothing acknowledged is lost.
//!
//! | part | file(s) in the data directory | type |
//! |---|---|---|
//! | cookie jar | `cookies.json` | [`CookieJar`] |
//! | consent state | `state.bin` | [`StateFile`] |
//! | event queue | `queue/*.seg`, `queue/head` | [`EventQueue`] |
//! | consent records | `records.jsonl` | [`RecordLog`] |
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

mod cookies;
mod fault;
mod fsutil;
mod io;
mod queue;
mod records;
mod state;

use std::path::{Path, PathBuf};

pub use cookie_store;

pub use crate::cookies::{CookieJar, LoadCookiesError, SaveCookiesError};
pub use crate::fault::{FaultyFile, FaultyIo, Op};
pub use crate::fsutil::FsError;
pub use crate::io::{DiskFile, DiskIo, Io, IoFile, MemFile, MemIo};
pub use crate::queue::{
    AckError, AppendError, Appended, Event, EventQueue, FRAME_HEADER, OpenQueueError, PurgeError,
    QueueConfig, QueueStats, ReadError, SyncError, SyncPolicy,
};
pub use crate::records::{
    AppendRecordError, ChainHead, ConsentRecord, ExportError, GENESIS_HASH, NewRecord,
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

/// The data directory and the stores in it.
///
/// A `Store` only knows where things are; each part is opened from it and owns its files. Open each
/// part once per process: two handles appending to the same queue or log would interleave.
#[derive(Debug, Clone)]
pub struct Store<I: Io = DiskIo> {
    io: I,
    dir: PathBuf,
}

/// A [`Store`] kept in memory, for tests and for apps that must not write to disk.
pub type MemoryStore = Store<MemIo>;

/// Why the data directory could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStoreError {
    /// The directory could not be created.
    #[error(transparent)]
    Io(#[from] FsError),
}

impl Store<DiskIo> {
    /// Opens the data directory `dir` on disk, creating it if needed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, OpenStoreError> {
        Self::with_io(DiskIo, dir)
    }
}

impl Store<MemIo> {
    /// A store in a fresh in-memory file system.
    pub fn in_memory() -> Self {
        let io = MemIo::new();
        let dir = PathBuf::from("/consent");
        // Creating a directory in memory cannot fail.
        let _ = io.create_dir_all(&dir);
        Self { io, dir }
    }
}

impl<I: Io> Store<I> {
    /// Opens the data directory `dir` through `io`, creating it if needed.
    pub fn with_io(io: I, dir: impl Into<PathBuf>) -> Result<Self, OpenStoreError> {
        let dir = dir.into();
        io.create_dir_all(&dir).map_err(|source| FsError {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        // The directory may be new: make its entry durable before anything relies on it.
        let parent_dir = fsutil::parent(&dir);
        io.sync_dir(parent_dir).map_err(|source| FsError {
            op: "sync directory",
            path: parent_dir.to_path_buf(),
            source,
        })?;
        Ok(Self { io, dir })
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
        CookieJar::new(self.io.clone(), self.dir.join(COOKIES_FILE))
    }

    /// The consent state file, in [`STATE_FILE`], whose current schema version is `version`.
    pub fn state<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        version: u32,
    ) -> StateFile<T, I> {
        StateFile::new(self.io.clone(), self.dir.join(STATE_FILE), version)
    }

    /// Opens and recovers the event queue, in [`QUEUE_DIR`].
    pub fn queue(&self, config: QueueConfig) -> Result<EventQueue<I>, OpenQueueError> {
        EventQueue::open(self.io.clone(), self.dir.join(QUEUE_DIR), config)
    }

    /// Opens the consent record log, in [`RECORDS_FILE`].
    pub fn records(&self) -> Result<RecordLog<I>, OpenRecordsError> {
        RecordLog::open(self.io.clone(), self.dir.join(RECORDS_FILE))
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
