//! The storage model both the database handle (`db.rs`) and the consent writer (`writer.rs`)
//! use: profiles, consent records and changes, the errors, and how a record is hashed. It
//! imports neither of them: `db` starts the `writer`, and both read this.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row as _;
use sqlx::any::AnyRow;

/// The hash that the first record of every chain points back to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which database a [`Db`](crate::Db) talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite, a file in WAL mode.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Opening the database or migrating it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL names no database this server supports.
    #[error("unsupported database URL {0:?}: expected sqlite://PATH, a file path or postgres://…")]
    UnsupportedUrl(String),
    /// Connecting failed.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// The writer's own SQLite connection could not be opened.
    #[error("cannot open the SQLite database for writing: {0}")]
    Writer(#[source] rusqlite::Error),
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Migrate {
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// What the database said.
        #[source]
        source: sqlx::Error,
    },
}

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite refused or failed a write.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON document did not parse.
    #[error("stored JSON is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The database has been closed.
    #[error("the database is closed")]
    Closed,
    /// The hash chain of an organisation and sandbox has no head row, although the writer
    /// creates one before every batch: the database was changed behind the server's back.
    #[error("the consent record chain of {org}/{sandbox} has no head")]
    MissingChainHead {
        /// The organisation.
        org: String,
        /// The sandbox.
        sandbox: String,
    },
}

/// The key of one profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    /// The IMS organisation.
    pub org: String,
    /// The sandbox.
    pub sandbox: String,
    /// The identity namespace, e.g. `ECID` or `CRMID`.
    pub namespace: String,
    /// The identity value.
    pub id: String,
}

/// One stored profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// `in`, `out` or `pending`.
    pub general: String,
    /// The XDM consents (`{"collect":{"val":"y"},"marketing":{…},"idSpecific":{…}}`).
    pub consents: Value,
    /// The marketing subscriptions (`{"<name>":{"val":"n", …}}`).
    pub subscriptions: Value,
    /// Milliseconds since the epoch of the last change.
    pub updated_at: i64,
}

/// One consent record.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRecord {
    /// Position in the organisation's and sandbox's chain, from 1.
    pub seq: i64,
    /// The profile's identity namespace.
    pub namespace: String,
    /// The profile's identity value.
    pub profile_id: String,
    /// What produced it (`edge:set-consent`, `preferences`, `one-click`, …).
    pub source: String,
    /// The change, as JSON.
    pub payload: Value,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// The hash of the record before.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// An edit of a profile's consents and subscriptions; returns whether it changed anything (and
/// must leave both untouched when it returns `false`).
pub type Edit = Box<dyn Fn(&mut Value, &mut Value) -> bool + Send + Sync>;

/// A consent change to apply to one profile.
pub struct ConsentChange {
    /// The new `general` decision, when the change makes one.
    pub general: Option<String>,
    /// Edits the consents and subscriptions in place. It may run more than once (a failed
    /// batch is retried), so it must be a pure function of its arguments (what it reports
    /// through state it captures is that of its last run, the one committed).
    ///
    /// A change whose edit changes nothing and that makes no `general` decision is not applied:
    /// nothing is written and no record appended. The decision to skip is taken by the writer,
    /// in the transaction, so two identical changes at once apply once.
    pub edit: Edit,
    /// What produced the change.
    pub source: String,
    /// The record's payload.
    pub payload: Value,
}

impl std::fmt::Debug for ConsentChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentChange")
            .field("general", &self.general)
            .field("source", &self.source)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

/// Set on every SQLite connection: WAL lets readers run beside the one writer; the busy timeout
/// makes a writer wait for the lock instead of failing at once.
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                              PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

pub(crate) fn profile_from_row(row: &AnyRow) -> Result<Profile, StoreError> {
    let consents: String = row.try_get("consents")?;
    let subscriptions: String = row.try_get("subscriptions")?;
    stored_profile(
        row.try_get("general")?,
        &consents,
        &subscriptions,
        row.try_get("updated_at")?,
    )
}

/// A profile from its stored columns; the two documents are JSON text.
pub(crate) fn stored_profile(
    general: String,
    consents: &str,
    subscriptions: &str,
    updated_at: i64,
) -> Result<Profile, StoreError> {
    Ok(Profile {
        general,
        consents: serde_json::from_str(consents)?,
        subscriptions: serde_json::from_str(subscriptions)?,
        updated_at,
    })
}

pub(crate) fn record_from_row(row: &AnyRow) -> Result<ConsentRecord, StoreError> {
    let payload: String = row.try_get("payload")?;
    Ok(ConsentRecord {
        seq: row.try_get("seq")?,
        namespace: row.try_get("namespace")?,
        profile_id: row.try_get("profile_id")?,
        source: row.try_get("source")?,
        payload: serde_json::from_str(&payload)?,
        created_at: row.try_get("created_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// SHA-256 over the previous hash and every field of the record, each length-prefixed so that
/// no two different records hash the same input.
pub(crate) fn record_hash(
    prev: &str,
    seq: i64,
    key: &ProfileKey,
    source: &str,
    created_at: i64,
    payload: &str,
) -> String {
    let mut hasher = Sha256::new();
    let seq = seq.to_string();
    let created = created_at.to_string();
    for field in [
        prev,
        &seq,
        &key.org,
        &key.sandbox,
        &key.namespace,
        &key.id,
        source,
        &created,
        payload,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex(&hasher.finalize())
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
