//! Migrations of databases written by earlier versions: a database holding records of the first
//! format (the identity itself in each record and its hash) is linked (migration 2) and moved
//! to the form that keeps personal data apart (migration 4), its chains checked first.

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::edge::{interleaved_changes, seqs};
use crate::harness::{Harness, ORG_A};
use crate::on_both;

fn key(id: &str) -> consent_server::ProfileKey {
    consent_server::ProfileKey {
        org: ORG_A.into(),
        sandbox: "prod".into(),
        namespace: "CRMID".into(),
        id: id.into(),
    }
}

/// The hash of a record of the first format (what version 1 of the server wrote).
#[allow(clippy::too_many_arguments)]
fn first_format_hash(
    prev: &str,
    seq: i64,
    id: &str,
    source: &str,
    created: i64,
    payload: &str,
) -> String {
    let mut hasher = Sha256::new();
    let (seq, created) = (seq.to_string(), created.to_string());
    for field in [
        prev, &seq, ORG_A, "prod", "CRMID", id, source, &created, payload,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A database as version 1 of the server left it: migration 1 only, and 7 records of three
/// profiles, interleaved ("a" has 1, 4, 7); record 4 names an address; the chain's head says
/// `head`. With `tamper`, record 3's payload was changed afterwards.
async fn first_format_database(
    h: &Harness,
    dir: &std::path::Path,
    tamper: bool,
    head: i64,
) -> String {
    let postgres = h.database_url.starts_with("postgres");
    let kind = if postgres {
        crate::harness::Db::Postgres
    } else {
        crate::harness::Db::Sqlite
    };
    let url = crate::harness::database_url(kind, dir).await.unwrap();
    let connect = if postgres {
        url.clone()
    } else {
        format!("{url}?mode=rwc")
    };
    let pool = sqlx::AnyPool::connect(&connect).await.unwrap();
    let init = if postgres {
        include_str!("../../migrations/postgres/0001_init.sql")
    } else {
        include_str!("../../migrations/sqlite/0001_init.sql")
    };
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         applied_at BIGINT NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, 'init', 0);",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(init).execute(&pool).await.unwrap();
    let mut prev = "0".repeat(64);
    for (i, id) in ["a", "b", "c", "a", "b", "c", "a"].iter().enumerate() {
        let seq = i as i64 + 1;
        let payload = if seq == 4 {
            json!({"changes": [{"channel": "email", "val": "n"}], "address": "ann@example.com"})
        } else {
            json!({ "i": i })
        }
        .to_string();
        let created = 1_700_000_000_000 + seq;
        let hash = first_format_hash(&prev, seq, id, "test", created, &payload);
        let stored = if tamper && seq == 3 {
            json!({ "i": 99 }).to_string()
        } else {
            payload
        };
        sqlx::query(
            "INSERT INTO consent_records (org, sandbox, seq, namespace, profile_id, source, \
             payload, created_at, prev_hash, hash) VALUES ($1, 'prod', $2, 'CRMID', $3, 'test', \
             $4, $5, $6, $7)",
        )
        .bind(ORG_A)
        .bind(seq)
        .bind(*id)
        .bind(stored)
        .bind(created)
        .bind(&prev)
        .bind(&hash)
        .execute(&pool)
        .await
        .unwrap();
        prev = hash;
    }
    for id in ["a", "b", "c"] {
        sqlx::query(
            "INSERT INTO profiles (org, sandbox, namespace, id, general, consents, subscriptions, \
             created_at, updated_at) VALUES ($1, 'prod', 'CRMID', $2, 'in', '{}', '{}', 0, 0)",
        )
        .bind(ORG_A)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO chain_heads (org, sandbox, seq, hash) VALUES ($1, 'prod', $2, $3)")
        .bind(ORG_A)
        .bind(head)
        .bind(&prev)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    url
}

async fn first_format_records_are_linked_and_moved_apart(h: &Harness) {
    let dir = tempfile::tempdir().unwrap();
    let url = first_format_database(h, dir.path(), false, 7).await;
    // Two servers start on it at once: one rewrites the records, the other waits and finds them
    // rewritten (the chain re-hashed once, not twice).
    let (db, other) = tokio::join!(
        consent_server::Db::open(&url),
        consent_server::Db::open(&url)
    );
    let (db, other) = (db.unwrap(), other.unwrap());
    assert_eq!(other.subject("CRMID", "a"), db.subject("CRMID", "a"));
    assert_eq!(other.verify_chain(ORG_A, "prod").await.unwrap(), Ok(7));
    other.close().await;
    // Migration 2 linked each profile's records.
    assert_eq!(seqs(&db.records(&key("a")).await.unwrap()), [1, 4, 7]);
    assert_eq!(seqs(&db.records(&key("b")).await.unwrap()), [2, 5]);
    // Migration 4 replaced the identity by its keyed hash and moved the address apart.
    let records = db.records(&key("a")).await.unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.subject == db.subject("CRMID", "a"))
    );
    assert_eq!(records[1].payload.get("address"), None, "{:?}", records[1]);
    let detail = records[1].detail.as_ref().unwrap();
    assert_eq!(detail["fields"]["/address"], "ann@example.com");
    assert_eq!(records[0].payload, json!({"i": 0}));
    assert!(records[0].detail.is_none());
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(7));
    // The chain goes on from the rewritten head.
    interleaved_changes(&db).await;
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(14));
    // And erasing "a" keeps it whole.
    assert!(db.erase(&key("a")).await.unwrap().is_some());
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(15));
    db.close().await;
}
on_both!(
    first_format,
    first_format_records_are_linked_and_moved_apart
);

async fn a_damaged_first_format_chain_stops_the_migration(h: &Harness) {
    let dir = tempfile::tempdir().unwrap();
    // Records cut off the end: the head says 8, the last record is 7.
    let cut = tempfile::tempdir().unwrap();
    let url = first_format_database(h, cut.path(), false, 8).await;
    let err = consent_server::Db::open(&url).await.unwrap_err();
    assert!(
        matches!(&err, consent_server::OpenError::LegacyChain { seq: 8, .. }),
        "{err}"
    );
    let url = first_format_database(h, dir.path(), true, 7).await;
    let err = consent_server::Db::open(&url).await.unwrap_err();
    assert!(
        matches!(&err, consent_server::OpenError::LegacyChain { seq: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not verify at record 3"),
        "{err}"
    );
    // Nothing of migration 4 was applied: the records are as they were.
    let connect = if url.starts_with("postgres") {
        url.clone()
    } else {
        format!("{url}?mode=rw")
    };
    let pool = sqlx::AnyPool::connect(&connect).await.unwrap();
    let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(version, 3);
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT profile_id FROM consent_records ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ids, ["a", "b", "c", "a", "b", "c", "a"]);
    pool.close().await;
}
on_both!(
    first_format_damaged,
    a_damaged_first_format_chain_stops_the_migration
);
