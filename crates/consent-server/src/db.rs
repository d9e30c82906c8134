//! Storage: one schema on SQLite (the default, a file in WAL mode) or PostgreSQL, through sqlx.
//!
//! Every statement is parameterised (`$1`, `$2`, … through sqlx, `?1`, `?2`, … in the SQLite
//! writer); nothing a client sends is ever spliced into SQL text. Consent changes go through
//! [`Db::apply_consent`], which hands them to the writer thread (`writer.rs`): it updates the
//! profiles and appends the hash-chained consent records of a whole batch in one transaction.

use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

pub use crate::model::{
    Backend, ConsentChange, ConsentRecord, Edit, GENESIS_HASH, OpenError, Profile, ProfileKey,
    StoreError,
};
use crate::model::{SQLITE_PRAGMAS, profile_from_row, record_from_row, record_hash};
use crate::util::now_millis;
use crate::writer::{Job, MAX_BATCH, Message};

/// The migrations, in order: version, name, SQLite text, PostgreSQL text.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "record_links",
        include_str!("../migrations/sqlite/0002_record_links.sql"),
        include_str!("../migrations/postgres/0002_record_links.sql"),
    ),
    (
        3,
        "events_per_profile",
        include_str!("../migrations/sqlite/0003_events_per_profile.sql"),
        include_str!("../migrations/postgres/0003_events_per_profile.sql"),
    ),
];

/// The database handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    writer: mpsc::Sender<Message>,
    /// On SQLite, the connection events are stored through (rusqlite, one transaction and a
    /// cached statement per request: a bound value costs far less than through the pool).
    events: Option<std::sync::Arc<std::sync::Mutex<rusqlite::Connection>>>,
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
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
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
        };
        db.migrate().await?;
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

    async fn migrate(&self) -> Result<(), OpenError> {
        let wrap = |version, name| {
            move |source| OpenError::Migrate {
                version,
                name,
                source,
            }
        };
        // Two servers starting at once on one PostgreSQL database take turns: each migration
        // transaction first takes the same transaction-scoped advisory lock. (SQLite serialises
        // writers by itself.)
        // On SQLite a transaction that reads before it writes cannot wait for the write lock
        // (it would be told "database is locked" at once), so the lock statement there is a
        // write that changes nothing.
        let lock = match self.backend {
            Backend::Postgres => "SELECT pg_advisory_xact_lock(80580001)",
            Backend::Sqlite => "UPDATE schema_migrations SET version = version WHERE version < 0",
        };
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(wrap(0, "schema_migrations"))?;
        if self.backend == Backend::Postgres {
            sqlx::query(lock)
                .execute(&mut *tx)
                .await
                .map_err(wrap(0, "schema_migrations"))?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(wrap(0, "schema_migrations"))?;
        tx.commit().await.map_err(wrap(0, "schema_migrations"))?;
        for &(version, name, sqlite, postgres) in MIGRATIONS {
            let mut tx = self.pool.begin().await.map_err(wrap(version, name))?;
            sqlx::query(lock)
                .execute(&mut *tx)
                .await
                .map_err(wrap(version, name))?;
            let done = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(wrap(version, name))?;
            if done.is_some() {
                continue;
            }
            let text = match self.backend {
                Backend::Sqlite => sqlite,
                Backend::Postgres => postgres,
            };
            sqlx::raw_sql(text)
                .execute(&mut *tx)
                .await
                .map_err(wrap(version, name))?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(version)
            .bind(name)
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(wrap(version, name))?;
            tx.commit().await.map_err(wrap(version, name))?;
            tracing::info!(version, name, "applied migration");
        }
        Ok(())
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
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Message::Job(Job::new(key.clone(), change, reply)))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
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
             SELECT r.seq, r.namespace, r.profile_id, r.source, r.payload, r.created_at, \
                 r.prev_hash, r.hash \
             FROM consent_records r JOIN list ON r.seq = list.seq \
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
    /// can be hidden from [`Db::records`] either. A profile whose pointer is wrong is reported
    /// by the sequence number of its true latest record.
    pub async fn verify_chain(
        &self,
        org: &str,
        sandbox: &str,
    ) -> Result<Result<i64, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, namespace, profile_id, source, payload, created_at, prev_hash, hash, \
             profile_prev_seq FROM consent_records WHERE org = $1 AND sandbox = $2 ORDER BY seq",
        )
        .bind(org)
        .bind(sandbox)
        .fetch_all(&self.pool)
        .await?;
        let mut prev = GENESIS_HASH.to_owned();
        let mut count = 0;
        // Each profile's latest record so far.
        let mut latest: std::collections::HashMap<(String, String), i64> =
            std::collections::HashMap::new();
        for row in &rows {
            let record = record_from_row(row)?;
            let key = ProfileKey {
                org: org.to_owned(),
                sandbox: sandbox.to_owned(),
                namespace: record.namespace.clone(),
                id: record.profile_id.clone(),
            };
            let payload: String = row.try_get("payload")?;
            let expected = record_hash(
                &prev,
                record.seq,
                &key,
                &record.source,
                record.created_at,
                &payload,
            );
            let profile_prev: Option<i64> = row.try_get("profile_prev_seq")?;
            let link = latest.insert((record.namespace, record.profile_id), record.seq);
            if record.seq != count + 1
                || record.prev_hash != prev
                || record.hash != expected
                || profile_prev != link
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
        for row in &profiles {
            let key: (String, String) = (row.try_get("namespace")?, row.try_get("id")?);
            let last: Option<i64> = row.try_get("last_record_seq")?;
            let truth = latest.get(&key).copied();
            if last != truth {
                let at = truth.or(last).unwrap_or(0);
                wrong = Some(wrong.map_or(at, |w| w.min(at)));
            }
        }
        Ok(wrong.map_or(Ok(count), Err))
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
