//! The consent writer: every consent change goes through one thread that commits whatever is
//! queued in one transaction (group commit).
//!
//! Every change in an organisation and sandbox is serialised anyway by its hash chain, and one
//! commit per batch instead of one per change is what lets the database keep up under load. The
//! writer has a thread of its own, so that none of its waits on the database queues behind the
//! HTTP tasks of a busy runtime:
//! - on SQLite it drives the database in-process through `rusqlite`, with cached prepared
//!   statements and no hand-off to another thread per statement;
//! - on PostgreSQL it runs a single-threaded tokio runtime with one sqlx connection and writes a
//!   batch with a fixed number of multi-row statements.
//!
//! Both paths read the chain heads and the profiles, hand them to [`plan`] (which applies the
//! changes in order and chains the records, touching no database), and write the plan back.
//!
//! On SQLite the write-ahead log is copied back into the database file by a second thread,
//! "consent-db-checkpoint", with a connection of its own: a checkpoint (and its `fsync`) then
//! never runs between a commit and the answers it releases. The writer checkpoints inline only
//! when the log grows past [`INLINE_CHECKPOINT_PAGES`] (the checkpoint thread fell behind).

use std::collections::HashMap;

use serde_json::{Map, Value};
use sqlx::{AnyConnection, Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};

use crate::erase::Erase;
use crate::model::{
    Backend, ConsentChange, Edit, Erasure, GENESIS_HASH, INSERT_DETAIL, INSERT_RECORD_COLUMNS,
    OpenError, Profile, ProfileKey, Recorded, SQLITE_PRAGMAS, StoreError, profile_from_row,
    record_hash, split_personal, stored_profile,
};
use crate::util::now_millis;

/// What a change came to: the profile after it, and its record (`None`: the change changed
/// nothing and was not applied).
pub(crate) type Applied = (Profile, Option<Recorded>);

/// One queued consent change, prepared by the caller's task: the payload arrives as text, so
/// that serialising it (and dropping the JSON tree) costs the writer thread nothing.
pub(crate) struct Job {
    pub(crate) key: ProfileKey,
    /// The profile's keyed hash, what the record names.
    pub(crate) subject: String,
    pub(crate) general: Option<String>,
    pub(crate) edit: Edit,
    pub(crate) source: String,
    /// The payload without its personal fields.
    pub(crate) payload: String,
    /// The personal fields, kept apart (`record_personal`).
    pub(crate) detail: Option<String>,
    pub(crate) reply: oneshot::Sender<Result<Applied, StoreError>>,
}

impl Job {
    /// A job for `change` to the profile `key`, whose keyed hash is `subject`; answers on
    /// `reply`. The payload's personal fields are split off here, on the caller's task.
    pub(crate) fn new(
        key: ProfileKey,
        subject: String,
        change: ConsentChange,
        reply: oneshot::Sender<Result<Applied, StoreError>>,
    ) -> Self {
        let mut payload = change.payload;
        let detail = split_personal(&mut payload);
        Self {
            key,
            subject,
            general: change.general,
            edit: change.edit,
            source: change.source,
            payload: payload.to_string(),
            detail,
            reply,
        }
    }
}

/// What the writer is sent.
pub(crate) enum Message {
    /// A change to commit.
    Job(Job),
    /// An erasure, committed on its own after the changes queued before it.
    Erase(Erase),
    /// Stop after what is queued before this, and say when stopped.
    Close(oneshot::Sender<()>),
}

/// The most changes committed in one transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// Write-ahead log pages after which the SQLite writer checkpoints inline, as SQLite's own
/// automatic checkpoint does after 1 000 pages: a backstop for a checkpoint thread that fell
/// behind (about 40 MB of log).
const INLINE_CHECKPOINT_PAGES: u32 = 10_000;

/// The least time between two background checkpoints (each one ends with an `fsync`).
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Starts the writer thread for the database at `url` (as `db::normalise_url` gives
/// it) and waits until it is connected.
pub(crate) async fn spawn(
    url: String,
    backend: Backend,
    jobs: mpsc::Receiver<Message>,
) -> Result<(), OpenError> {
    let (ready, started) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("consent-db-writer".to_owned())
        .spawn(move || match backend {
            Backend::Sqlite => match open_sqlite(&url).and_then(|conn| {
                conn.pragma_update(None, "wal_autocheckpoint", INLINE_CHECKPOINT_PAGES)
                    .map_err(OpenError::Writer)?;
                let checkpointer = Checkpointer::start(open_sqlite(&url)?)?;
                Ok((conn, checkpointer))
            }) {
                Ok((conn, checkpointer)) => {
                    let _ = ready.send(Ok(()));
                    run_sqlite(conn, jobs, checkpointer);
                }
                Err(err) => {
                    let _ = ready.send(Err(err));
                }
            },
            Backend::Postgres => {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready.send(Err(OpenError::Connect(sqlx::Error::Io(err))));
                        return;
                    }
                };
                match runtime.block_on(AnyConnection::connect(&url)) {
                    Ok(conn) => {
                        let _ = ready.send(Ok(()));
                        run_postgres(&runtime, conn, jobs);
                    }
                    Err(err) => {
                        let _ = ready.send(Err(OpenError::Connect(err)));
                    }
                }
            }
        });
    if let Err(err) = spawned {
        return Err(OpenError::Connect(sqlx::Error::Io(err)));
    }
    started
        .await
        .unwrap_or_else(|_| Err(OpenError::Connect(sqlx::Error::WorkerCrashed)))
}

/// The file of a `sqlite://PATH?…` URL.
fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite://").unwrap_or(url);
    rest.split_once('?').map_or(rest, |(path, _)| path)
}

pub(crate) fn open_sqlite(url: &str) -> Result<rusqlite::Connection, OpenError> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(sqlite_path(url), flags)
        .map_err(OpenError::Writer)?;
    conn.execute_batch(SQLITE_PRAGMAS)
        .map_err(OpenError::Writer)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// The SQLite checkpoint thread: each nudge (a commit happened) leads to one passive checkpoint,
/// at most one per [`CHECKPOINT_INTERVAL`]; a passive checkpoint never waits for the writer or
/// for readers, it copies what it can.
struct Checkpointer {
    nudge: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
    /// An erasure could not empty the log: the thread's next checkpoints try to (`TRUNCATE`)
    /// until one does, so pages from before the erasure do not stay in the log file.
    truncate_owed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpointer {
    fn start(conn: rusqlite::Connection) -> Result<Self, OpenError> {
        let (nudge, nudges) = std::sync::mpsc::sync_channel::<()>(1);
        let truncate_owed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let owed = std::sync::Arc::clone(&truncate_owed);
        let thread = std::thread::Builder::new()
            .name("consent-db-checkpoint".to_owned())
            .spawn(move || {
                use std::sync::atomic::Ordering;
                // Ends when the writer drops its sender.
                while nudges.recv().is_ok() {
                    let truncate = owed.load(Ordering::Acquire);
                    let sql = if truncate {
                        "PRAGMA wal_checkpoint(TRUNCATE)"
                    } else {
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    };
                    let result = conn.query_row(sql, [], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    });
                    match result {
                        Ok((busy, log, copied)) => {
                            if truncate && busy == 0 {
                                owed.store(false, Ordering::Release);
                            }
                            tracing::trace!(busy, log, copied, "checkpoint");
                        }
                        Err(err) => tracing::debug!(%err, "background checkpoint failed"),
                    }
                    std::thread::sleep(CHECKPOINT_INTERVAL);
                }
                if let Err((_, err)) = conn.close() {
                    tracing::warn!(%err, "closing the checkpoint connection failed");
                }
            })
            .map_err(|err| OpenError::Connect(sqlx::Error::Io(err)))?;
        Ok(Self {
            nudge,
            thread,
            truncate_owed,
        })
    }

    /// Says that there is something to copy; never blocks (a nudge already pending suffices).
    fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }

    /// Stops the thread after its current checkpoint.
    fn stop(self) {
        drop(self.nudge);
        if self.thread.join().is_err() {
            tracing::warn!("the checkpoint thread panicked");
        }
    }
}

/// What ends a batch early: a close request or an erasure (run after the batch, on its own).
enum Control {
    Close(oneshot::Sender<()>),
    Erase(Erase),
}

/// Takes `first` and whatever else is queued, up to [`MAX_BATCH`] changes, a close request or
/// an erasure.
fn fill(first: Message, jobs: &mut mpsc::Receiver<Message>) -> (Vec<Job>, Option<Control>) {
    let mut batch = Vec::new();
    let mut next = Some(first);
    while let Some(message) = next.take() {
        match message {
            Message::Job(job) => batch.push(job),
            Message::Close(done) => return (batch, Some(Control::Close(done))),
            Message::Erase(erase) => return (batch, Some(Control::Erase(erase))),
        }
        if batch.len() < MAX_BATCH {
            next = jobs.try_recv().ok();
        }
    }
    (batch, None)
}

/// Answers every change of a committed batch.
fn answer(batch: Vec<Job>, results: Vec<Applied>) {
    for (job, result) in batch.into_iter().zip(results) {
        let _ = job.reply.send(Ok(result));
    }
}

/// What the writer does with its database.
trait Store {
    /// Commits a batch of changes in one transaction.
    fn commit(&mut self, batch: &[Job]) -> Result<Vec<Applied>, StoreError>;
    /// Erases one profile's personal data and appends the erasure's record, in one transaction;
    /// `None` when nothing was stored about it.
    fn erase(&mut self, erase: &Erase) -> Result<Option<Erasure>, StoreError>;
}

/// The writer's loop, the same for both databases: takes a batch, commits it and answers every
/// change; a batch that fails is retried one change at a time, so one bad change fails alone.
/// An erasure runs after the changes queued before it. Ends on a close request or when every
/// sender is gone; from then on nothing more is accepted. Returns the close request to answer
/// once the database is closed.
fn serve(
    jobs: &mut mpsc::Receiver<Message>,
    store: &mut impl Store,
) -> Option<oneshot::Sender<()>> {
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = jobs.blocking_recv() else {
            break;
        };
        let (mut batch, control) = fill(first, jobs);
        if !batch.is_empty() {
            match store.commit(&batch) {
                Ok(results) => answer(batch, results),
                Err(err) if batch.len() == 1 => {
                    if let Some(job) = batch.pop() {
                        let _ = job.reply.send(Err(err));
                    }
                }
                Err(_) => {
                    for job in batch {
                        let result = store
                            .commit(std::slice::from_ref(&job))
                            .map(|mut r| r.remove(0));
                        let _ = job.reply.send(result);
                    }
                }
            }
        }
        match control {
            Some(Control::Close(done)) => closing = Some(done),
            Some(Control::Erase(erase)) => {
                let result = store.erase(&erase);
                let _ = erase.reply.send(result);
            }
            None => {}
        }
    }
    jobs.close();
    closing
}

/// The SQLite writer's connection and its checkpoint thread.
struct SqliteStore {
    conn: rusqlite::Connection,
    checkpointer: Checkpointer,
}

impl Store for SqliteStore {
    fn commit(&mut self, batch: &[Job]) -> Result<Vec<Applied>, StoreError> {
        let outcome = sqlite_batch(&mut self.conn, batch);
        self.checkpointer.nudge();
        outcome
    }

    fn erase(&mut self, erase: &Erase) -> Result<Option<Erasure>, StoreError> {
        let outcome = crate::erase::sqlite(&mut self.conn, erase)?;
        // The log still holds the pages as they were before the erasure: copy it into the
        // database and empty it (readers in the middle of a read may keep it from emptying;
        // the next checkpoint then does).
        // The checkpoint thread may be copying at that moment (then SQLite answers busy at
        // once), or a reader may hold an old snapshot: try again for a while, then leave it to the
        // checkpoint thread.
        if outcome.is_some() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                let busy = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                        row.get::<_, i64>(0)
                    });
                match busy {
                    Ok(0) => break,
                    Ok(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Ok(_) => {
                        tracing::warn!(
                            "the log still holds pages from before an erasure; the checkpoint \
                             thread tries to empty it again now and after every later commit"
                        );
                        self.checkpointer
                            .truncate_owed
                            .store(true, std::sync::atomic::Ordering::Release);
                        self.checkpointer.nudge();
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(%err, "checkpoint after an erasure failed");
                        break;
                    }
                }
            }
        }
        Ok(outcome)
    }
}

/// The PostgreSQL writer's runtime and connection.
struct PostgresStore<'a> {
    runtime: &'a tokio::runtime::Runtime,
    conn: AnyConnection,
}

impl Store for PostgresStore<'_> {
    fn commit(&mut self, batch: &[Job]) -> Result<Vec<Applied>, StoreError> {
        self.runtime.block_on(postgres_batch(&mut self.conn, batch))
    }

    fn erase(&mut self, erase: &Erase) -> Result<Option<Erasure>, StoreError> {
        self.runtime
            .block_on(crate::erase::postgres(&mut self.conn, erase))
    }
}

fn run_sqlite(
    conn: rusqlite::Connection,
    mut jobs: mpsc::Receiver<Message>,
    checkpointer: Checkpointer,
) {
    let mut store = SqliteStore { conn, checkpointer };
    let closing = serve(&mut jobs, &mut store);
    // Stop the checkpoint thread, then close the connection cleanly (this checkpoints the
    // write-ahead log).
    store.checkpointer.stop();
    if let Err((_, err)) = store.conn.close() {
        tracing::warn!(%err, "closing the writer's SQLite connection failed");
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// The PostgreSQL writer: the loop blocks this thread between batches and runs each batch's
/// statements on `runtime`, a current-thread runtime of its own.
fn run_postgres(
    runtime: &tokio::runtime::Runtime,
    conn: AnyConnection,
    mut jobs: mpsc::Receiver<Message>,
) {
    let mut store = PostgresStore { runtime, conn };
    let closing = serve(&mut jobs, &mut store);
    let _ = runtime.block_on(store.conn.close());
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// The (org, sandbox) chains a batch touches, each once, in order.
fn chains(batch: &[Job]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for job in batch {
        let chain = (job.key.org.as_str(), job.key.sandbox.as_str());
        if !out.contains(&chain) {
            out.push(chain);
        }
    }
    out
}

/// The profiles a batch touches, each once, in order.
fn distinct_keys(batch: &[Job]) -> Vec<&ProfileKey> {
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    batch
        .iter()
        .map(|job| &job.key)
        .filter(|key| seen.insert(*key))
        .collect()
}

/// A consent record about to be written.
struct NewRecord<'a> {
    key: &'a ProfileKey,
    subject: &'a str,
    seq: i64,
    source: &'a str,
    payload: &'a str,
    detail: Option<&'a str>,
    prev_hash: String,
    hash: String,
    /// The sequence number of the same profile's record before this one.
    profile_prev: Option<i64>,
}

/// A profile as the writer reads and writes it: with the sequence number of its latest record,
/// the head of the profile's list of records.
pub(crate) struct Stored {
    pub(crate) profile: Profile,
    pub(crate) last_record: Option<i64>,
    /// Whether a change of this batch applied to it (only those are written back).
    pub(crate) changed: bool,
}

/// What a batch writes.
struct Plan<'a> {
    /// Every profile touched, after the changes, in first-touched order.
    profiles: Vec<(&'a ProfileKey, Stored)>,
    /// The new records, in chain order.
    records: Vec<NewRecord<'a>>,
    /// The new head of every chain touched.
    heads: HashMap<(String, String), (i64, String)>,
    /// For each change: the profile after it and its record's sequence number.
    results: Vec<Applied>,
}

/// Applies the changes of `batch` in order to the `profiles` read from the database (a missing
/// one starts pending and empty), chains their records onto `heads` and links each record to
/// its profile's record before it.
fn plan<'a>(
    batch: &'a [Job],
    keys: &[&'a ProfileKey],
    mut heads: HashMap<(String, String), (i64, String)>,
    mut profiles: HashMap<ProfileKey, Stored>,
    now: i64,
) -> Result<Plan<'a>, StoreError> {
    let mut records = Vec::with_capacity(batch.len());
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let key = &job.key;
        let stored = profiles.entry(key.clone()).or_insert_with(|| Stored {
            profile: Profile {
                general: "pending".to_owned(),
                consents: Value::Object(Map::new()),
                subscriptions: Value::Object(Map::new()),
                updated_at: now,
            },
            last_record: None,
            changed: false,
        });
        let profile = &mut stored.profile;
        if !(job.edit)(&mut profile.consents, &mut profile.subscriptions) && job.general.is_none() {
            results.push((stored.profile.clone(), None));
            continue;
        }
        stored.changed = true;
        if let Some(general) = &job.general {
            general.clone_into(&mut profile.general);
        }
        profile.updated_at = now;
        let Some((prev_seq, prev_hash)) = heads.get_mut(&(key.org.clone(), key.sandbox.clone()))
        else {
            return Err(StoreError::MissingChainHead {
                org: key.org.clone(),
                sandbox: key.sandbox.clone(),
            });
        };
        let seq = *prev_seq + 1;
        let hash = record_hash(
            prev_hash,
            seq,
            &key.org,
            &key.sandbox,
            &key.namespace,
            &job.subject,
            &job.source,
            now,
            &job.payload,
        );
        records.push(NewRecord {
            key,
            subject: &job.subject,
            seq,
            source: &job.source,
            payload: &job.payload,
            detail: job.detail.as_deref(),
            prev_hash: std::mem::replace(prev_hash, hash.clone()),
            hash: hash.clone(),
            profile_prev: stored.last_record.replace(seq),
        });
        *prev_seq = seq;
        // The subject is the caller's own (it made it): `Db` fills it in.
        results.push((
            stored.profile.clone(),
            Some(Recorded {
                seq,
                hash,
                created_at: now,
                subject: String::new(),
            }),
        ));
    }
    let profiles = keys
        .iter()
        .filter_map(|key| profiles.remove(*key).map(|p| (*key, p)))
        .filter(|(_, stored)| stored.changed)
        .collect();
    Ok(Plan {
        profiles,
        records,
        heads,
        results,
    })
}

const UPSERT_PROFILE_COLUMNS: &str = "INSERT INTO profiles (org, sandbox, namespace, id, general, \
     consents, subscriptions, created_at, updated_at, last_record_seq) VALUES ";
const UPSERT_PROFILE_CONFLICT: &str = " ON CONFLICT (org, sandbox, namespace, id) DO UPDATE SET \
     general = excluded.general, consents = excluded.consents, \
     subscriptions = excluded.subscriptions, updated_at = excluded.updated_at, \
     last_record_seq = excluded.last_record_seq";
/// Commits a batch on SQLite: one `BEGIN IMMEDIATE` (the write lock at once, so the chain
/// cannot fork even with several servers on one file), cached single-row statements, one
/// commit.
fn sqlite_batch(
    conn: &mut rusqlite::Connection,
    batch: &[Job],
) -> Result<Vec<Applied>, StoreError> {
    use rusqlite::{OptionalExtension as _, params};

    let now = now_millis();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut heads = HashMap::new();
    {
        let mut ensure = tx.prepare_cached(
            "INSERT INTO chain_heads (org, sandbox, seq, hash) VALUES (?1, ?2, 0, ?3) \
             ON CONFLICT (org, sandbox) DO NOTHING",
        )?;
        let mut read =
            tx.prepare_cached("SELECT seq, hash FROM chain_heads WHERE org = ?1 AND sandbox = ?2")?;
        for (org, sandbox) in chains(batch) {
            ensure.execute(params![org, sandbox, GENESIS_HASH])?;
            let head: (i64, String) =
                read.query_row(params![org, sandbox], |row| Ok((row.get(0)?, row.get(1)?)))?;
            heads.insert((org.to_owned(), sandbox.to_owned()), head);
        }
    }
    let keys = distinct_keys(batch);
    let mut profiles = HashMap::with_capacity(keys.len());
    {
        let mut read = tx.prepare_cached(
            "SELECT general, consents, subscriptions, updated_at, last_record_seq FROM profiles \
             WHERE org = ?1 AND sandbox = ?2 AND namespace = ?3 AND id = ?4",
        )?;
        for key in &keys {
            let row = read
                .query_row(
                    params![key.org, key.sandbox, key.namespace, key.id],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, i64>(3)?,
                            row.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
                .optional()?;
            if let Some((general, consents, subscriptions, updated_at, last_record)) = row {
                let profile = stored_profile(general, &consents, &subscriptions, updated_at)?;
                profiles.insert(
                    (*key).clone(),
                    Stored {
                        profile,
                        last_record,
                        changed: false,
                    },
                );
            }
        }
    }
    let plan = plan(batch, &keys, heads, profiles, now)?;
    {
        let mut upsert = tx.prepare_cached(&format!(
            "{UPSERT_PROFILE_COLUMNS}(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9){UPSERT_PROFILE_CONFLICT}"
        ))?;
        for (key, stored) in &plan.profiles {
            upsert.execute(params![
                key.org,
                key.sandbox,
                key.namespace,
                key.id,
                stored.profile.general,
                stored.profile.consents.to_string(),
                stored.profile.subscriptions.to_string(),
                now,
                stored.last_record,
            ])?;
        }
        let mut insert = tx.prepare_cached(&format!(
            "{INSERT_RECORD_COLUMNS}(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ))?;
        for record in &plan.records {
            insert.execute(params![
                record.key.org,
                record.key.sandbox,
                record.seq,
                record.key.namespace,
                record.subject,
                record.source,
                record.payload,
                now,
                record.prev_hash,
                record.hash,
                record.profile_prev,
            ])?;
        }
        for record in &plan.records {
            if let Some(detail) = record.detail {
                tx.prepare_cached(INSERT_DETAIL)?.execute(params![
                    record.key.org,
                    record.key.sandbox,
                    record.seq,
                    record.key.namespace,
                    record.key.id,
                    detail,
                ])?;
            }
        }
        let mut head = tx.prepare_cached(
            "UPDATE chain_heads SET seq = ?1, hash = ?2 WHERE org = ?3 AND sandbox = ?4",
        )?;
        for ((org, sandbox), (seq, hash)) in &plan.heads {
            head.execute(params![seq, hash, org, sandbox])?;
        }
    }
    tx.commit()?;
    Ok(plan.results)
}

/// The most rows in one multi-row statement: small enough for PostgreSQL's limits on
/// parameters (65535) and expression depth.
const ROWS_PER_STATEMENT: usize = 64;

/// Splits `items` into chunks whose sizes are powers of two, at most [`ROWS_PER_STATEMENT`]
/// (63 rows: 32, 16, 8, 4, 2, 1). Each chunk size is one statement text, so the connection's
/// statement cache holds seven texts per statement instead of one per batch size.
fn pow2_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let size = if items.len() >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << items.len().ilog2()
        };
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

/// `($1, $2, …, $n), ($n+1, …)`: placeholders for `rows` rows of `width` values.
fn placeholders(rows: usize, width: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for col in 0..width {
            n += 1;
            if col > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "${n}");
        }
        out.push(')');
    }
    out
}

/// Commits a batch on PostgreSQL with a fixed number of statements per batch: the chain heads
/// (locking their rows), one read of every profile involved, one upsert of them, one insert of
/// the records.
async fn postgres_batch(
    conn: &mut AnyConnection,
    batch: &[Job],
) -> Result<Vec<Applied>, StoreError> {
    let now = now_millis();
    let mut tx = conn.begin().await?;
    let mut heads = HashMap::new();
    for (org, sandbox) in chains(batch) {
        sqlx::query(
            "INSERT INTO chain_heads (org, sandbox, seq, hash) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (org, sandbox) DO NOTHING",
        )
        .bind(org)
        .bind(sandbox)
        .bind(GENESIS_HASH)
        .execute(&mut *tx)
        .await?;
        // The row lock keeps the chain from forking with several servers on one database.
        let head = sqlx::query(
            "SELECT seq, hash FROM chain_heads WHERE org = $1 AND sandbox = $2 FOR UPDATE",
        )
        .bind(org)
        .bind(sandbox)
        .fetch_one(&mut *tx)
        .await?;
        heads.insert(
            (org.to_owned(), sandbox.to_owned()),
            (head.try_get("seq")?, head.try_get("hash")?),
        );
    }

    let keys = distinct_keys(batch);
    let mut profiles = HashMap::with_capacity(keys.len());
    for chunk in pow2_chunks(&keys) {
        let mut sql = String::from(
            "SELECT org, sandbox, namespace, id, general, consents, subscriptions, updated_at, \
             last_record_seq FROM profiles WHERE ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            let n = i * 4;
            sql.push_str(&format!(
                "(org = ${} AND sandbox = ${} AND namespace = ${} AND id = ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            ));
        }
        // The text is built from placeholders only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in chunk {
            query = query
                .bind(&key.org)
                .bind(&key.sandbox)
                .bind(&key.namespace)
                .bind(&key.id);
        }
        for row in query.fetch_all(&mut *tx).await? {
            let key = ProfileKey {
                org: row.try_get("org")?,
                sandbox: row.try_get("sandbox")?,
                namespace: row.try_get("namespace")?,
                id: row.try_get("id")?,
            };
            let stored = Stored {
                profile: profile_from_row(&row)?,
                last_record: row.try_get("last_record_seq")?,
                changed: false,
            };
            profiles.insert(key, stored);
        }
    }

    let plan = plan(batch, &keys, heads, profiles, now)?;
    for chunk in pow2_chunks(&plan.profiles) {
        let sql = format!(
            "{UPSERT_PROFILE_COLUMNS}{}{UPSERT_PROFILE_CONFLICT}",
            placeholders(chunk.len(), 10)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (key, stored) in chunk {
            query = query
                .bind(&key.org)
                .bind(&key.sandbox)
                .bind(&key.namespace)
                .bind(&key.id)
                .bind(&stored.profile.general)
                .bind(stored.profile.consents.to_string())
                .bind(stored.profile.subscriptions.to_string())
                .bind(now)
                .bind(now)
                .bind(stored.last_record);
        }
        query.execute(&mut *tx).await?;
    }
    for chunk in pow2_chunks(&plan.records) {
        let sql = format!("{INSERT_RECORD_COLUMNS}{}", placeholders(chunk.len(), 11));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for record in chunk {
            query = query
                .bind(&record.key.org)
                .bind(&record.key.sandbox)
                .bind(record.seq)
                .bind(&record.key.namespace)
                .bind(record.subject)
                .bind(record.source)
                .bind(record.payload)
                .bind(now)
                .bind(&record.prev_hash)
                .bind(&record.hash)
                .bind(record.profile_prev);
        }
        query.execute(&mut *tx).await?;
    }
    for record in &plan.records {
        if let Some(detail) = record.detail {
            sqlx::query(INSERT_DETAIL)
                .bind(&record.key.org)
                .bind(&record.key.sandbox)
                .bind(record.seq)
                .bind(&record.key.namespace)
                .bind(&record.key.id)
                .bind(detail)
                .execute(&mut *tx)
                .await?;
        }
    }
    for ((org, sandbox), (seq, hash)) in &plan.heads {
        sqlx::query("UPDATE chain_heads SET seq = $1, hash = $2 WHERE org = $3 AND sandbox = $4")
            .bind(*seq)
            .bind(hash)
            .bind(org)
            .bind(sandbox)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(plan.results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_without_a_head_is_reported_as_such() {
        let (reply, _answer) = oneshot::channel();
        let key = ProfileKey {
            org: "ORG@AdobeOrg".to_owned(),
            sandbox: "prod".to_owned(),
            namespace: "ECID".to_owned(),
            id: "1".to_owned(),
        };
        let batch = [Job {
            key: key.clone(),
            subject: "s".to_owned(),
            general: Some("in".to_owned()),
            edit: Box::new(|_, _| true),
            source: "test".to_owned(),
            payload: "{}".to_owned(),
            detail: None,
            reply,
        }];
        let keys = distinct_keys(&batch);
        let Err(err) = plan(&batch, &keys, HashMap::new(), HashMap::new(), 0) else {
            panic!("planned a change on a chain without a head");
        };
        assert!(
            matches!(&err, StoreError::MissingChainHead { org, sandbox } if org == "ORG@AdobeOrg" && sandbox == "prod"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the consent record chain of ORG@AdobeOrg/prod has no head"
        );
    }

    #[test]
    fn placeholders_number_every_row() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(0, 2), "");
    }

    #[test]
    fn chunks_are_powers_of_two_and_cover_everything_in_order() {
        for n in 0..300 {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = pow2_chunks(&items).collect();
            assert!(chunks.iter().all(|c| c.len().is_power_of_two()));
            assert!(chunks.iter().all(|c| c.len() <= ROWS_PER_STATEMENT));
            assert_eq!(chunks.concat(), items);
            assert!(
                chunks.len() <= n / ROWS_PER_STATEMENT + 6,
                "{n}: {}",
                chunks.len()
            );
        }
    }

    #[tokio::test]
    async fn the_checkpoint_thread_copies_the_log_into_the_database_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consent.db");
        let db = crate::db::Db::open(path.to_str().unwrap()).await.unwrap();
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let before = size();
        // About 100 KB of records: far more than the tables' first pages hold, and far less than
        // the writer's inline checkpoint threshold.
        for i in 0..50 {
            let key = ProfileKey {
                org: "ORG@AdobeOrg".to_owned(),
                sandbox: "prod".to_owned(),
                namespace: "ECID".to_owned(),
                id: format!("{i:038}"),
            };
            let change = ConsentChange {
                general: Some("in".to_owned()),
                edit: Box::new(|_, _| true),
                source: "test".to_owned(),
                payload: serde_json::json!({ "padding": "x".repeat(2000) }),
            };
            db.apply_consent(&key, change).await.unwrap();
        }
        // Nothing closes the database: only a checkpoint grows its file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() < before + 50 * 2000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {} bytes (was {before})",
                size()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            db.verify_chain("ORG@AdobeOrg", "prod").await.unwrap(),
            Ok(50)
        );
        db.close().await;
    }

    #[test]
    fn sqlite_paths_come_out_of_urls() {
        assert_eq!(sqlite_path("sqlite:///tmp/a.db?mode=rwc"), "/tmp/a.db");
        assert_eq!(sqlite_path("sqlite://c.db"), "c.db");
    }
}
