//! The schema migrations (`migrations/{sqlite,postgres}/NNNN_*.sql`), run in order when the
//! database is opened, each in a transaction of its own; and migration 4's rewrite of the
//! consent records into the form that keeps personal data apart ([`rewrite_records`]).

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Any, AnyPool, Row as _, Transaction};

use crate::model::{
    Backend, GENESIS_HASH, INSERT_DETAIL, OpenError, hex, record_hash, split_personal, subject_hash,
};
use crate::util::now_millis;

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
    (
        4,
        "personal_apart",
        include_str!("../migrations/sqlite/0004_personal_apart.sql"),
        include_str!("../migrations/postgres/0004_personal_apart.sql"),
    ),
];

/// What migration 4 runs after its records are rewritten ([`rewrite_records`]).
const FINISH_4: (&str, &str) = (
    include_str!("../migrations/sqlite/0004_personal_apart_finish.sql"),
    include_str!("../migrations/postgres/0004_personal_apart_finish.sql"),
);

/// Creates the migrations table and runs every migration not yet applied, each in a
/// transaction of its own.
pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), OpenError> {
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
    let lock = match backend {
        Backend::Postgres => "SELECT pg_advisory_xact_lock(80580001)",
        Backend::Sqlite => "UPDATE schema_migrations SET version = version WHERE version < 0",
    };
    let mut tx = pool.begin().await.map_err(wrap(0, "schema_migrations"))?;
    if backend == Backend::Postgres {
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
        let mut tx = pool.begin().await.map_err(wrap(version, name))?;
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
        let text = match backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        };
        sqlx::raw_sql(text)
            .execute(&mut *tx)
            .await
            .map_err(wrap(version, name))?;
        if version == 4 {
            rewrite_records(&mut tx).await?;
            let finish = match backend {
                Backend::Sqlite => FINISH_4.0,
                Backend::Postgres => FINISH_4.1,
            };
            sqlx::raw_sql(finish)
                .execute(&mut *tx)
                .await
                .map_err(wrap(version, name))?;
        }
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

/// The name of the keyed-hash key in `server_secrets`.
const SUBJECT_KEY: &str = "subject_key";

/// The database's subject key, drawn (and stored) the first time.
pub(crate) async fn subject_key(pool: &AnyPool) -> Result<[u8; 32], OpenError> {
    let mut conn = pool.acquire().await.map_err(OpenError::Connect)?;
    read_or_make_key(&mut conn).await
}

async fn read_or_make_key(conn: &mut sqlx::AnyConnection) -> Result<[u8; 32], OpenError> {
    let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
        .bind(SUBJECT_KEY)
        .fetch_optional(&mut *conn)
        .await
        .map_err(OpenError::Connect)?;
    if let Some(row) = row {
        let text: String = row.try_get("value").map_err(OpenError::Connect)?;
        return parse_key(&text).ok_or(OpenError::BadSecret(SUBJECT_KEY));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|err| {
        OpenError::Connect(sqlx::Error::Io(std::io::Error::other(err.to_string())))
    })?;
    // Two servers starting at once: the first one's key wins, the other reads it back.
    sqlx::query(
        "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(SUBJECT_KEY)
    .bind(hex(&key))
    .execute(&mut *conn)
    .await
    .map_err(OpenError::Connect)?;
    let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
        .bind(SUBJECT_KEY)
        .fetch_one(&mut *conn)
        .await
        .map_err(OpenError::Connect)?;
    let text: String = row.try_get("value").map_err(OpenError::Connect)?;
    parse_key(&text).ok_or(OpenError::BadSecret(SUBJECT_KEY))
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        key[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

/// The hash of a record of the first format: the identity itself was hashed, and there was no
/// format field.
#[allow(clippy::too_many_arguments)]
fn first_format_hash(
    prev: &str,
    seq: i64,
    org: &str,
    sandbox: &str,
    namespace: &str,
    id: &str,
    source: &str,
    created_at: i64,
    payload: &str,
) -> String {
    let mut hasher = Sha256::new();
    let seq = seq.to_string();
    let created = created_at.to_string();
    for field in [
        prev, &seq, org, sandbox, namespace, id, source, &created, payload,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex(&hasher.finalize())
}

/// Migration 4: every record of the first format is checked against its chain, then rewritten
/// (the identity replaced by its keyed hash, the personal fields moved to `record_personal`) and
/// the chain re-hashed from its first record, the head moved to the new hash. A chain that does
/// not verify stops the migration (nothing is changed) and the server does not start: a record
/// that was tampered with would otherwise be re-hashed into a valid chain.
async fn rewrite_records(tx: &mut Transaction<'static, Any>) -> Result<(), OpenError> {
    let fail = |source| OpenError::Migrate {
        version: 4,
        name: "personal_apart",
        source,
    };
    let key = read_or_make_key(&mut *tx).await?;
    let rows = sqlx::query(
        "SELECT org, sandbox, seq, namespace, profile_id, source, payload, created_at, prev_hash, \
         hash FROM consent_records ORDER BY org, sandbox, seq",
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(fail)?;
    // Each chain's head as stored: it must be the chain's last record, or records were cut off
    // its end (which re-hashing would hide too).
    let mut stored_heads: std::collections::HashMap<(String, String), (i64, String)> =
        std::collections::HashMap::new();
    for row in sqlx::query("SELECT org, sandbox, seq, hash FROM chain_heads")
        .fetch_all(&mut **tx)
        .await
        .map_err(fail)?
    {
        let get = |name: &str| row.try_get::<String, _>(name).map_err(fail);
        let seq: i64 = row.try_get("seq").map_err(fail)?;
        stored_heads.insert((get("org")?, get("sandbox")?), (seq, get("hash")?));
    }
    let mut old_heads: Vec<(String, String, i64, String)> = Vec::new();
    let mut chain: Option<(String, String)> = None;
    let mut last_seq = 0;
    let (mut old_prev, mut new_prev) = (GENESIS_HASH.to_owned(), GENESIS_HASH.to_owned());
    let mut heads: Vec<(String, String, String)> = Vec::new();
    for row in &rows {
        let get = |name: &str| row.try_get::<String, _>(name).map_err(fail);
        let (org, sandbox) = (get("org")?, get("sandbox")?);
        let seq: i64 = row.try_get("seq").map_err(fail)?;
        let created_at: i64 = row.try_get("created_at").map_err(fail)?;
        let (namespace, id, source, payload) = (
            get("namespace")?,
            get("profile_id")?,
            get("source")?,
            get("payload")?,
        );
        if chain.as_ref() != Some(&(org.clone(), sandbox.clone())) {
            if let Some((o, s)) = chain.take() {
                old_heads.push((o.clone(), s.clone(), last_seq, old_prev.clone()));
                heads.push((o, s, new_prev.clone()));
            }
            chain = Some((org.clone(), sandbox.clone()));
            old_prev = GENESIS_HASH.to_owned();
            new_prev = GENESIS_HASH.to_owned();
        }
        let expected = first_format_hash(
            &old_prev, seq, &org, &sandbox, &namespace, &id, &source, created_at, &payload,
        );
        if get("prev_hash")? != old_prev || get("hash")? != expected {
            return Err(OpenError::LegacyChain { org, sandbox, seq });
        }
        old_prev = expected;
        last_seq = seq;
        let mut public: Value = serde_json::from_str(&payload)
            .map_err(|err| fail(sqlx::Error::Decode(Box::new(err))))?;
        let detail = split_personal(&mut public);
        let public = public.to_string();
        let subject = subject_hash(&key, &namespace, &id);
        let hash = record_hash(
            &new_prev, seq, &org, &sandbox, &namespace, &subject, &source, created_at, &public,
        );
        sqlx::query(
            "UPDATE consent_records SET subject = $1, payload = $2, prev_hash = $3, hash = $4, \
             profile_id = '' WHERE org = $5 AND sandbox = $6 AND seq = $7",
        )
        .bind(&subject)
        .bind(&public)
        .bind(&new_prev)
        .bind(&hash)
        .bind(&org)
        .bind(&sandbox)
        .bind(seq)
        .execute(&mut **tx)
        .await
        .map_err(fail)?;
        if let Some(detail) = detail {
            sqlx::query(INSERT_DETAIL)
                .bind(&org)
                .bind(&sandbox)
                .bind(seq)
                .bind(&namespace)
                .bind(&id)
                .bind(detail)
                .execute(&mut **tx)
                .await
                .map_err(fail)?;
        }
        new_prev = hash;
    }
    if let Some((o, s)) = chain {
        old_heads.push((o.clone(), s.clone(), last_seq, old_prev.clone()));
        heads.push((o, s, new_prev));
    }
    for (org, sandbox, seq, hash) in old_heads {
        let stored = stored_heads.remove(&(org.clone(), sandbox.clone()));
        if stored != Some((seq, hash)) {
            // The head names records past the last one: the first of them is missing.
            let at = match stored {
                Some((head, _)) if head > seq => seq + 1,
                _ => seq,
            };
            return Err(OpenError::LegacyChain {
                org,
                sandbox,
                seq: at,
            });
        }
    }
    // A head whose chain has no record at all: its records were removed.
    if let Some(((org, sandbox), (seq, _))) =
        stored_heads.into_iter().find(|(_, (seq, _))| *seq != 0)
    {
        return Err(OpenError::LegacyChain { org, sandbox, seq });
    }
    for (org, sandbox, hash) in &heads {
        sqlx::query("UPDATE chain_heads SET hash = $1 WHERE org = $2 AND sandbox = $3")
            .bind(hash)
            .bind(org)
            .bind(sandbox)
            .execute(&mut **tx)
            .await
            .map_err(fail)?;
    }
    if !rows.is_empty() {
        tracing::info!(
            records = rows.len(),
            chains = heads.len(),
            "consent records rewritten with personal data apart"
        );
    }
    Ok(())
}
