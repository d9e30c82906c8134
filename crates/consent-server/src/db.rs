//! Storage: one schema on SQLite (the default, a file in WAL mode) or PostgreSQL, through sqlx.
//!
//! Every statement is parameterised (`$1`, `$2`, … through sqlx, `?1`, `?2`, … in the SQLite
//! writer); nothing a client sends is ever spliced into SQL text. Consent changes go through
//! [`Db::apply_consent`], which hands them to the writer thread (`writer.rs`): it updates the
//! profiles and appends the hash-chained consent records of a whole batch in one transaction.

use serde_json::Value;
use sha2::Digest as _;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::erase::{ERASURE_SOURCE, Erase};
pub use crate::model::{
    Backend, ConsentChange, ConsentRecord, Edit, Erasure, GENESIS_HASH, OpenError, Profile,
    ProfileKey, Recorded, StoreError,
};
use crate::model::{SQLITE_PRAGMAS, profile_from_row, record_from_row, record_hash, subject_hash};
use crate::util::now_millis;
use crate::writer::{Job, MAX_BATCH, Message};

/// The database handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    writer: mpsc::Sender<Message>,
    /// On SQLite, the connection events are stored through (rusqlite, one transaction and a
    /// cached statement per request: a bound value costs far less than through the pool).
    events: Option<std::sync::Arc<std::sync::Mutex<rusqlite::Connection>>>,
    /// The key of the identities' keyed hash in the consent records (`server_secrets`).
    subject_key: [u8; 32],
}

/// Turns `--database` into a URL sqlx understands: a bare path becomes a SQLite file.
pub(crate) fn normalise_url(url: &str) -> Result<(String, Backend), OpenError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_owned(), Backend::Postgres));
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if url.contains("://") || url.is_empty() {
        return Err(OpenError::UnsupportedUrl(url.to_owned()));
    } else {
        url
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = if path.contains("mode=") {
        path.to_owned()
    } else {
        format!("{path}{sep}mode=rwc")
    };
    Ok((format!("sqlite://{path}"), Backend::Sqlite))
}

impl Db {
    /// Connects and runs the migrations.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalise_url(url)?;
        let sqlite = backend == Backend::Sqlite;
        // On SQLite every pooled connection is a thread of sqlx's and a page cache: recycling
        // idle ones (sqlx closes them after 10 minutes, and every one after 30) only makes new
        // threads whose allocations land in fresh allocator arenas, and the process grows with
        // each round (seen in the soak at the tenth minute). Against PostgreSQL the defaults stay.
        let options = AnyPoolOptions::new()
            .max_connections(if sqlite { 8 } else { 16 })
            .idle_timeout((!sqlite).then_some(std::time::Duration::from_secs(600)))
            .max_lifetime((!sqlite).then_some(std::time::Duration::from_secs(1800)))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::raw_sql(SQLITE_PRAGMAS).execute(conn).await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await.map_err(OpenError::Connect)?;
        let (writer, jobs) = mpsc::channel(4 * MAX_BATCH);
        let mut db = Self {
            pool,
            backend,
            writer,
            events: None,
            subject_key: [0; 32],
        };
        crate::migrate::run(&db.pool, backend).await?;
        db.subject_key = crate::migrate::subject_key(&db.pool).await?;
        if backend == Backend::Sqlite {
            let conn = crate::writer::open_sqlite(&url)?;
            db.events = Some(std::sync::Arc::new(std::sync::Mutex::new(conn)));
        }
        crate::writer::spawn(url, backend, jobs).await?;
        Ok(db)
    }

    /// The database in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for operations and tests that need raw access.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Stops the writer once the changes queued before this call are committed, then closes the
    /// pool, waiting for connections in use. Changes sent afterwards fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.writer.send(Message::Close(done)).await.is_ok() {
            let _ = finished.await;
        }
        self.pool.close().await;
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Reads one profile.
    pub async fn profile(&self, key: &ProfileKey) -> Result<Option<Profile>, StoreError> {
        let row = sqlx::query(
            "SELECT general, consents, subscriptions, updated_at FROM profiles \
             WHERE org = $1 AND sandbox = $2 AND namespace = $3 AND id = $4",
        )
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(&key.namespace)
        .bind(&key.id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| profile_from_row(&row)).transpose()
    }

    /// Applies a consent change to a profile (creating it) and appends a consent record, in one
    /// transaction. Returns the profile after the change and the record's sequence number, or
    /// `None` for a change that changed nothing (see [`ConsentChange::edit`]).
    ///
    /// Changes go through one writer task that commits whatever is queued in one transaction
    /// (group commit): every change in an organisation and sandbox is serialised anyway by its
    /// record chain, and one commit per batch instead of one per change is what makes SQLite
    /// keep up under load.
    pub async fn apply_consent(
        &self,
        key: &ProfileKey,
        change: ConsentChange,
    ) -> Result<(Profile, Option<i64>), StoreError> {
        let (profile, record) = self.apply_consent_recorded(key, change).await?;
        Ok((profile, record.map(|r| r.seq)))
    }

    /// [`Db::apply_consent`], answering the whole record the change was written as (its hash
    /// is what a signed receipt names).
    pub async fn apply_consent_recorded(
        &self,
        key: &ProfileKey,
        change: ConsentChange,
    ) -> Result<(Profile, Option<Recorded>), StoreError> {
        let (reply, answer) = oneshot::channel();
        let subject = self.subject(&key.namespace, &key.id);
        self.writer
            .send(Message::Job(Job::new(
                key.clone(),
                subject.clone(),
                change,
                reply,
            )))
            .await
            .map_err(|_| StoreError::Closed)?;
        let (profile, record) = answer.await.map_err(|_| StoreError::Closed)??;
        Ok((profile, record.map(|r| Recorded { subject, ..r })))
    }

    /// Stores an event unless the profile already has one with the same id. Returns whether it
    /// was new.
    pub async fn insert_event(
        &self,
        key: &ProfileKey,
        event_id: &str,
        body: &Value,
    ) -> Result<bool, StoreError> {
        Ok(self
            .insert_events(key, &[(event_id.to_owned(), body)])
            .await?
            > 0)
    }

    /// Stores a request's events, each unless the profile already has one with the same id (event
    /// ids are deduplicated per profile, `migrations/*/0003_events_per_profile.sql`): on SQLite in
    /// one transaction with a cached statement, on PostgreSQL in multi-row statements (one per 64
    /// events), instead of one statement and transaction per event. Returns how many were new;
    /// the others were duplicates.
    pub async fn insert_events(
        &self,
        key: &ProfileKey,
        events: &[(String, &Value)],
    ) -> Result<u64, StoreError> {
        self.store_events(key, events, false).await
    }

    /// [`Db::insert_events`] for a request that named no identity (its profile was just minted):
    /// an event is also a duplicate when any profile of the organisation and sandbox has one with
    /// its id. A client retrying a request whose answer it lost has no identity yet and gets a
    /// new one each time, so only this keeps its events stored once.
    pub async fn insert_anonymous_events(
        &self,
        key: &ProfileKey,
        events: &[(String, &Value)],
    ) -> Result<u64, StoreError> {
        self.store_events(key, events, true).await
    }

    async fn store_events(
        &self,
        key: &ProfileKey,
        events: &[(String, &Value)],
        anonymous: bool,
    ) -> Result<u64, StoreError> {
        // The key's columns, in the order of the primary key (event id before the profile, so
        // that the key also finds an id in the whole organisation and sandbox).
        const CONFLICT: &str =
            " ON CONFLICT (org, sandbox, event_id, namespace, profile_id) DO NOTHING";
        if let Some(conn) = &self.events {
            let conn = std::sync::Arc::clone(conn);
            let key = key.clone();
            let rows: Vec<(String, String)> = events
                .iter()
                .map(|(id, body)| (id.clone(), body.to_string()))
                .collect();
            let now = now_millis();
            let sql = if anonymous {
                "INSERT INTO events (org, sandbox, event_id, namespace, profile_id, body, received_at) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE NOT EXISTS (SELECT 1 FROM events \
                 WHERE org = ?1 AND sandbox = ?2 AND event_id = ?3)"
            } else {
                "INSERT INTO events (org, sandbox, event_id, namespace, profile_id, body, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            };
            let sql = format!("{sql}{CONFLICT}");
            return tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
                let mut conn = conn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let tx = conn.transaction()?;
                let mut stored = 0;
                {
                    let mut insert = tx.prepare_cached(&sql)?;
                    for (id, body) in &rows {
                        stored += insert.execute(rusqlite::params![
                            key.org,
                            key.sandbox,
                            id,
                            key.namespace,
                            key.id,
                            body,
                            now
                        ])? as u64;
                    }
                }
                tx.commit()?;
                Ok(stored)
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        }
        const COLUMNS: usize = 7;
        let mut stored = 0;
        for chunk in events.chunks(64) {
            let mut sql = String::from(if anonymous {
                "INSERT INTO events (org, sandbox, event_id, namespace, profile_id, body, received_at) \
                 SELECT v.org, v.sandbox, v.event_id, v.namespace, v.profile_id, v.body, v.received_at \
                 FROM (VALUES "
            } else {
                "INSERT INTO events (org, sandbox, event_id, namespace, profile_id, body, received_at) VALUES "
            });
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let n = i * COLUMNS;
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6,
                    n + 7
                ));
            }
            if anonymous {
                sql.push_str(
                    ") AS v (org, sandbox, event_id, namespace, profile_id, body, received_at) \
                     WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.org = v.org \
                     AND e.sandbox = v.sandbox AND e.event_id = v.event_id)",
                );
            }
            sql.push_str(CONFLICT);
            let now = now_millis();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (event_id, body) in chunk {
                query = query
                    .bind(&key.org)
                    .bind(&key.sandbox)
                    .bind(event_id)
                    .bind(&key.namespace)
                    .bind(&key.id)
                    .bind(body.to_string())
                    .bind(now);
            }
            stored += query.execute(&self.pool).await?.rows_affected();
        }
        Ok(stored)
    }

    /// Counts the events stored for one profile.
    pub async fn count_events(&self, key: &ProfileKey) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM events \
             WHERE org = $1 AND sandbox = $2 AND namespace = $3 AND profile_id = $4",
        )
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(&key.namespace)
        .bind(&key.id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The consent records of one profile, oldest first.
    ///
    /// They are found by following the profile's list: the profile names its latest record and
    /// every record the same profile's record before it (no index by profile is kept, see
    /// `migrations/*/0002_record_links.sql`).
    pub async fn records(&self, key: &ProfileKey) -> Result<Vec<ConsentRecord>, StoreError> {
        let rows = sqlx::query(
            "WITH RECURSIVE list (seq) AS ( \
                 SELECT last_record_seq FROM profiles WHERE org = $1 AND sandbox = $2 \
                 AND namespace = $3 AND id = $4 AND last_record_seq IS NOT NULL \
                 UNION ALL \
                 SELECT r.profile_prev_seq FROM consent_records r JOIN list ON r.seq = list.seq \
                 WHERE r.org = $1 AND r.sandbox = $2 AND r.profile_prev_seq IS NOT NULL) \
             SELECT r.seq, r.namespace, r.subject, r.source, r.payload, r.created_at, \
                 r.prev_hash, r.hash, p.detail \
             FROM consent_records r JOIN list ON r.seq = list.seq \
             LEFT JOIN record_personal p \
                 ON p.org = r.org AND p.sandbox = r.sandbox AND p.seq = r.seq \
             WHERE r.org = $1 AND r.sandbox = $2 ORDER BY r.seq",
        )
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(&key.namespace)
        .bind(&key.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Recomputes the whole chain of one organisation and sandbox. Returns the number of records,
    /// or the sequence number of the first record that does not verify.
    ///
    /// Besides every hash, it checks the profiles' lists of records: each record must point to
    /// its profile's record before it, and each profile to its latest record, so that no record
    /// can be hidden from [`Db::records`] either; a profile with records but no profile row must
    /// have been erased by a record of its own. A profile whose pointer is wrong is reported by
    /// the sequence number of its true latest record. A record's personal detail, while it is
    /// kept, must match the digest its record holds.
    pub async fn verify_chain(
        &self,
        org: &str,
        sandbox: &str,
    ) -> Result<Result<i64, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.seq, r.namespace, r.subject, r.source, r.payload, r.created_at, \
             r.prev_hash, r.hash, r.profile_prev_seq, p.detail FROM consent_records r \
             LEFT JOIN record_personal p \
                 ON p.org = r.org AND p.sandbox = r.sandbox AND p.seq = r.seq \
             WHERE r.org = $1 AND r.sandbox = $2 ORDER BY r.seq",
        )
        .bind(org)
        .bind(sandbox)
        .fetch_all(&self.pool)
        .await?;
        let mut prev = GENESIS_HASH.to_owned();
        let mut count = 0;
        // Each profile's latest record so far, by namespace and subject.
        let mut latest: std::collections::HashMap<(String, String), i64> =
            std::collections::HashMap::new();
        for row in &rows {
            let record = record_from_row(row)?;
            let payload: String = row.try_get("payload")?;
            let expected = record_hash(
                &prev,
                record.seq,
                org,
                sandbox,
                &record.namespace,
                &record.subject,
                &record.source,
                record.created_at,
                &payload,
            );
            let detail: Option<String> = row.try_get("detail")?;
            let detail_ok = detail.is_none_or(|detail| {
                record.payload.get("personal").and_then(Value::as_str)
                    == Some(crate::model::hex(&sha2::Sha256::digest(detail.as_bytes())).as_str())
            });
            let profile_prev: Option<i64> = row.try_get("profile_prev_seq")?;
            let subject = (record.namespace, record.subject);
            let link = if record.source == ERASURE_SOURCE {
                // An erasure ends the profile's list; a profile of the same identity made
                // afterwards starts a new one.
                latest.remove(&subject)
            } else {
                latest.insert(subject, record.seq)
            };
            if record.seq != count + 1
                || record.prev_hash != prev
                || record.hash != expected
                || profile_prev != link
                || !detail_ok
            {
                return Ok(Err(record.seq));
            }
            prev = record.hash;
            count += 1;
        }
        let profiles = sqlx::query(
            "SELECT namespace, id, last_record_seq FROM profiles WHERE org = $1 AND sandbox = $2",
        )
        .bind(org)
        .bind(sandbox)
        .fetch_all(&self.pool)
        .await?;
        let mut wrong: Option<i64> = None;
        let mut blame = |at: i64| wrong = Some(wrong.map_or(at, |w: i64| w.min(at)));
        for row in &profiles {
            let namespace: String = row.try_get("namespace")?;
            let id: String = row.try_get("id")?;
            let subject = self.subject(&namespace, &id);
            let last: Option<i64> = row.try_get("last_record_seq")?;
            let truth = latest.remove(&(namespace, subject));
            if last != truth {
                blame(truth.or(last).unwrap_or(0));
            }
        }
        // Records of a profile that is gone without an erasure record.
        for seq in latest.into_values() {
            blame(seq);
        }
        Ok(wrong.map_or(Ok(count), Err))
    }

    /// [`Db::verify_chain`], and the chain still holds the record a checkpoint names, with the
    /// hash the checkpoint gives it: a chain rewritten and re-hashed before the checkpoint (which
    /// `verify_chain` alone cannot see, the rewritten chain being consistent) is reported by the
    /// checkpoint's sequence number. The checkpoint's signature is the caller's to check
    /// ([`ReceiptKeys::verify_checkpoint`](crate::ReceiptKeys::verify_checkpoint) or the
    /// published keys).
    pub async fn verify_chain_against(
        &self,
        checkpoint: &consent_core::receipt::Checkpoint,
    ) -> Result<Result<i64, i64>, StoreError> {
        let verified = self
            .verify_chain(&checkpoint.org, &checkpoint.sandbox)
            .await?;
        let seq = i64::try_from(checkpoint.seq).unwrap_or(i64::MAX);
        let Ok(count) = verified else {
            return Ok(verified);
        };
        if seq == 0 {
            return Ok(Ok(count));
        }
        let row = sqlx::query(
            "SELECT hash FROM consent_records WHERE org = $1 AND sandbox = $2 AND seq = $3",
        )
        .bind(&checkpoint.org)
        .bind(&checkpoint.sandbox)
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        let hash: Option<String> = row.map(|r| r.try_get("hash")).transpose()?;
        Ok(if hash.as_deref() == Some(checkpoint.hash.as_str()) {
            Ok(count)
        } else {
            Err(seq)
        })
    }

    /// The head of the chain of an organisation and sandbox: its last record's sequence number
    /// and hash (`0` and [`GENESIS_HASH`] for a chain without records).
    pub async fn chain_head(&self, org: &str, sandbox: &str) -> Result<(i64, String), StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM chain_heads WHERE org = $1 AND sandbox = $2")
            .bind(org)
            .bind(sandbox)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => (row.try_get("seq")?, row.try_get("hash")?),
            None => (0, GENESIS_HASH.to_owned()),
        })
    }

    /// The keyed hash that stands for the identity `id` of `namespace` in the consent records
    /// ([`ConsentRecord::subject`]). Someone who knows the identity and has the database can
    /// find its records; the records alone tell nothing about whom they are about.
    pub fn subject(&self, namespace: &str, id: &str) -> String {
        subject_hash(&self.subject_key, namespace, id)
    }

    /// The CORE identity the Edge endpoints answer for an organisation's ECID: 38 digits of an
    /// HMAC under a key of its own, derived from the subject key with the label `core-id`, so
    /// that asking for CORE ids computes nothing the consent records' subjects are made of.
    pub(crate) fn core_id(&self, org: &str, ecid: &str) -> String {
        let mut derived = [0u8; 32];
        let label = subject_hash(&self.subject_key, "derived-key", "core-id");
        for (byte, pair) in derived.iter_mut().zip(label.as_bytes().chunks(2)) {
            *byte = std::str::from_utf8(pair)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        let hash = subject_hash(&derived, org, ecid);
        let n = u128::from_str_radix(hash.get(..32).unwrap_or("0"), 16).unwrap_or(0);
        format!("{:038}", n % 10u128.pow(38))
    }

    /// Erases everything personal stored about one identity: its profile, its events and the
    /// events of other profiles whose identity map names it, the personal detail of consent
    /// records about it or naming it, and identity-specific consents other profiles hold for it.
    /// The consent records stay, and [`Db::verify_chain`] still passes: they hold no personal
    /// data. The erasure is appended to the chain as a record of its own (source `erasure`).
    /// Returns `None` when nothing was stored about the identity (then nothing is recorded).
    ///
    /// On SQLite, deleted content is overwritten (`secure_delete`) and the write-ahead log is
    /// emptied after the erasure, so the identity is not left in the database's files either.
    pub async fn erase(&self, key: &ProfileKey) -> Result<Option<Erasure>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let subject = self.subject(&key.namespace, &key.id);
        self.writer
            .send(Message::Erase(Erase {
                key: key.clone(),
                subject,
                reply,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Everything stored about one identity (GDPR Art. 15), as one JSON document: the profile,
    /// every consent record about it (found by its keyed hash, so those from before an earlier
    /// erasure too; each with its personal detail put back while it is kept), its events, and
    /// under `elsewhere` what other profiles hold that names it — the things [`Db::erase`] would
    /// remove there: events whose identity map lists it, identity-specific consents for it, and
    /// record details naming it. `None` when nothing is stored about it.
    pub async fn export(&self, key: &ProfileKey) -> Result<Option<Value>, StoreError> {
        use crate::api::{
            Elsewhere, ExportDocument, ExportEvent, ExportIdentity, ExportProfile, ExportRecord,
            NamingConsents, NamingDetail, ProfileId,
        };
        use crate::erase::{detail_names, event_names, needle};
        let subject = self.subject(&key.namespace, &key.id);
        let needle = needle(&key.id);
        // A substring search finds the candidates; each is then checked on the parsed JSON.
        let contains = match self.backend {
            Backend::Sqlite => "instr",
            Backend::Postgres => "strpos",
        };
        let profile = self.profile(key).await?;
        let rows = sqlx::query(
            "SELECT r.seq, r.namespace, r.subject, r.source, r.payload, r.created_at, \
             r.prev_hash, r.hash, p.detail FROM consent_records r \
             LEFT JOIN record_personal p \
                 ON p.org = r.org AND p.sandbox = r.sandbox AND p.seq = r.seq \
             WHERE r.org = $1 AND r.sandbox = $2 AND r.namespace = $3 AND r.subject = $4 \
             ORDER BY r.seq",
        )
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(&key.namespace)
        .bind(&subject)
        .fetch_all(&self.pool)
        .await?;
        let records = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // The SQL texts below splice in only the function name chosen above.
        let event_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT event_id, namespace, profile_id, body, received_at FROM events \
             WHERE org = $1 AND sandbox = $2 AND ((namespace = $3 AND profile_id = $4) \
             OR {contains}(body, $5) > 0) ORDER BY received_at, event_id"
        )))
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(&key.namespace)
        .bind(&key.id)
        .bind(&needle)
        .fetch_all(&self.pool)
        .await?;
        let (mut events, mut naming_events) = (Vec::new(), Vec::new());
        for row in &event_rows {
            let body: String = row.try_get("body")?;
            let namespace: String = row.try_get("namespace")?;
            let profile_id: String = row.try_get("profile_id")?;
            let own = namespace == key.namespace && profile_id == key.id;
            if !own && !event_names(&body, &key.namespace, &key.id) {
                continue;
            }
            let mut event = ExportEvent {
                id: row.try_get::<String, _>("event_id")?,
                received_at: row.try_get::<i64, _>("received_at")?,
                body: serde_json::from_str::<Value>(&body)?,
                profile: None,
            };
            if own {
                events.push(event);
            } else {
                event.profile = Some(ProfileId {
                    namespace,
                    id: profile_id,
                });
                naming_events.push(event);
            }
        }
        let consent_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT namespace, id, consents FROM profiles \
             WHERE org = $1 AND sandbox = $2 AND {contains}(consents, $3) > 0"
        )))
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(&needle)
        .fetch_all(&self.pool)
        .await?;
        let mut naming_consents = Vec::new();
        for row in &consent_rows {
            let namespace: String = row.try_get("namespace")?;
            let id: String = row.try_get("id")?;
            if namespace == key.namespace && id == key.id {
                continue;
            }
            let consents: Value = serde_json::from_str(&row.try_get::<String, _>("consents")?)?;
            if let Some(entry) = consents
                .get("idSpecific")
                .and_then(|ids| ids.get(&key.namespace))
                .and_then(|ids| ids.get(&key.id))
            {
                naming_consents.push(NamingConsents {
                    profile: ProfileId { namespace, id },
                    consents: entry.clone(),
                });
            }
        }
        let detail_rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, detail FROM record_personal \
             WHERE org = $1 AND sandbox = $2 AND {contains}(detail, $3) > 0 ORDER BY seq"
        )))
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(&needle)
        .fetch_all(&self.pool)
        .await?;
        let own: std::collections::HashSet<i64> = records.iter().map(|r| r.seq).collect();
        let mut naming_details = Vec::new();
        for row in &detail_rows {
            let seq: i64 = row.try_get("seq")?;
            let detail: String = row.try_get("detail")?;
            if !own.contains(&seq) && detail_names(&detail, &key.namespace, &key.id) {
                naming_details.push(NamingDetail {
                    seq,
                    detail: serde_json::from_str::<Value>(&detail)?,
                });
            }
        }
        if profile.is_none()
            && records.is_empty()
            && events.is_empty()
            && naming_events.is_empty()
            && naming_consents.is_empty()
            && naming_details.is_empty()
        {
            return Ok(None);
        }
        let document = ExportDocument {
            identity: ExportIdentity {
                org: key.org.clone(),
                sandbox: key.sandbox.clone(),
                namespace: key.namespace.clone(),
                id: key.id.clone(),
                subject,
            },
            profile: profile.map(|p| ExportProfile {
                general: p.general,
                consents: p.consents,
                subscriptions: p.subscriptions,
                updated_at: p.updated_at,
            }),
            records: records
                .iter()
                .map(|r| ExportRecord {
                    seq: r.seq,
                    source: r.source.clone(),
                    created_at: r.created_at,
                    change: r.detail.as_ref().map_or_else(
                        || r.payload.clone(),
                        |detail| crate::model::join_personal(&r.payload, detail),
                    ),
                    payload: r.payload.clone(),
                    prev_hash: r.prev_hash.clone(),
                    hash: r.hash.clone(),
                })
                .collect(),
            events,
            elsewhere: Elsewhere {
                events: naming_events,
                consents: naming_consents,
                record_details: naming_details,
            },
        };
        Ok(Some(serde_json::to_value(document)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        let check = |input: &str, want: Option<(&str, Backend)>| {
            let got = normalise_url(input).ok();
            assert_eq!(got.as_ref().map(|(u, b)| (u.as_str(), *b)), want, "{input}");
        };
        check(
            "consent.db",
            Some(("sqlite://consent.db?mode=rwc", Backend::Sqlite)),
        );
        check(
            "sqlite://consent.db",
            Some(("sqlite://consent.db?mode=rwc", Backend::Sqlite)),
        );
        check(
            "sqlite:x.db?mode=ro",
            Some(("sqlite://x.db?mode=ro", Backend::Sqlite)),
        );
        check(
            "postgres://u@h/db",
            Some(("postgres://u@h/db", Backend::Postgres)),
        );
        check("mysql://h/db", None);
        check("", None);
    }
}
