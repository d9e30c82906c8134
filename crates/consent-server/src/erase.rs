//! Erasure (GDPR Art. 17) of one person's personal data, run by the consent writer in one
//! transaction: the profile, its events and the events of other profiles whose identity map
//! names the identity, the personal detail of consent records, and identity-specific consents
//! other profiles hold for the identity. The consent records themselves stay (they name the
//! person only by a keyed hash, and their hashes cover no personal data), and the erasure is
//! appended to the chain as a record of its own (`source` `erasure`).
//!
//! Candidates are found with a substring search for the identity as a JSON string and then
//! checked precisely on the parsed JSON, so that another person's data that merely contains the
//! same characters is never deleted.

use serde_json::{Value, json};
use sqlx::{AnyConnection, Connection as _, Row as _};

use tokio::sync::oneshot;

use crate::model::{
    Erasure, GENESIS_HASH, INSERT_RECORD_COLUMNS, ProfileKey, StoreError, record_hash,
};
use crate::util::now_millis;

/// A queued erasure of one profile's personal data.
pub(crate) struct Erase {
    pub(crate) key: ProfileKey,
    pub(crate) subject: String,
    pub(crate) reply: oneshot::Sender<Result<Option<Erasure>, StoreError>>,
}

impl Erase {
    /// The erasure's record, chained after `prev`: `erased` with its hash, and the payload.
    fn record(&self, mut erased: Erasure, prev: &str, now: i64) -> (Erasure, String) {
        let payload = payload(&erased);
        erased.hash = record_hash(
            prev,
            erased.seq,
            &self.key.org,
            &self.key.sandbox,
            &self.key.namespace,
            &self.subject,
            ERASURE_SOURCE,
            now,
            &payload,
        );
        (erased, payload)
    }
}

/// The source of an erasure's record.
pub(crate) const ERASURE_SOURCE: &str = "erasure";

/// Whether an event body's identity map (top level or under `xdm`) lists `id` in `namespace`.
pub(crate) fn event_names(body: &str, namespace: &str, id: &str) -> bool {
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    ["/identityMap", "/xdm/identityMap"].iter().any(|at| {
        body.pointer(at)
            .and_then(|map| map.get(namespace))
            .and_then(Value::as_array)
            .is_some_and(|ids| {
                ids.iter()
                    .any(|entry| entry.get("id").and_then(Value::as_str) == Some(id))
            })
    })
}

/// Deletes `idSpecific.<namespace>.<id>` from a profile's consents; whether there was one.
fn scrub_consents(consents: &mut Value, namespace: &str, id: &str) -> bool {
    let Some(Value::Object(by_namespace)) = consents.get_mut("idSpecific") else {
        return false;
    };
    let Some(Value::Object(ids)) = by_namespace.get_mut(namespace) else {
        return false;
    };
    let removed = ids.remove(id).is_some();
    if ids.is_empty() {
        by_namespace.remove(namespace);
    }
    if by_namespace.is_empty()
        && let Value::Object(map) = consents
    {
        map.remove("idSpecific");
    }
    removed
}

/// Whether a record's detail names the identity `id` of `namespace`: as a link's address of
/// that namespace (`{"value": id, "namespace": namespace}`; a bare address string, as the first
/// record format wrote it, when it equals `id`), as an `idSpecific` or `identityMap` entry of that
/// namespace, or as a subscription member. Nothing else counts, so a detail that merely holds the
/// same characters elsewhere (a `val`, a channel name) is never taken for the person's.
pub(crate) fn detail_names(detail: &str, namespace: &str, id: &str) -> bool {
    let Ok(detail) = serde_json::from_str::<Value>(detail) else {
        return false;
    };
    let Some(fields) = detail.get("fields").and_then(Value::as_object) else {
        return false;
    };
    fields.iter().any(|(pointer, value)| {
        let field = pointer.rsplit('/').next().unwrap_or_default();
        match field {
            "address" => match value {
                Value::String(address) => address == id,
                other => {
                    other.get("value").and_then(Value::as_str) == Some(id)
                        && other.get("namespace").and_then(Value::as_str) == Some(namespace)
                }
            },
            "idSpecific" => value.get(namespace).and_then(|ids| ids.get(id)).is_some(),
            "identityMap" => value
                .get(namespace)
                .and_then(Value::as_array)
                .is_some_and(|ids| {
                    ids.iter()
                        .any(|entry| entry.get("id").and_then(Value::as_str) == Some(id))
                }),
            "subscribers" => value.get(id).is_some(),
            _ => false,
        }
    })
}

/// The identity as a JSON string, quotes included: what a substring search looks for.
pub(crate) fn needle(id: &str) -> String {
    Value::String(id.to_owned()).to_string()
}

/// The erasure's record payload.
fn payload(erased: &Erasure) -> String {
    json!({
        "erased": {
            "profile": erased.profile,
            "events": erased.events,
            "details": erased.details,
            "otherProfiles": erased.other_profiles,
        }
    })
    .to_string()
}

/// Runs an erasure on SQLite.
pub(crate) fn sqlite(
    conn: &mut rusqlite::Connection,
    erase: &Erase,
) -> Result<Option<Erasure>, StoreError> {
    use rusqlite::{OptionalExtension as _, params};
    let key = &erase.key;
    let now = now_millis();
    let needle = needle(&key.id);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let last: Option<Option<i64>> = tx
        .query_row(
            "SELECT last_record_seq FROM profiles \
             WHERE org = ?1 AND sandbox = ?2 AND namespace = ?3 AND id = ?4",
            params![key.org, key.sandbox, key.namespace, key.id],
            |row| row.get(0),
        )
        .optional()?;
    let profile = tx.execute(
        "DELETE FROM profiles WHERE org = ?1 AND sandbox = ?2 AND namespace = ?3 AND id = ?4",
        params![key.org, key.sandbox, key.namespace, key.id],
    )? > 0;
    let mut events = tx.execute(
        "DELETE FROM events WHERE org = ?1 AND sandbox = ?2 AND namespace = ?3 AND profile_id = ?4",
        params![key.org, key.sandbox, key.namespace, key.id],
    )? as u64;
    let naming: Vec<(String, String, String)> = {
        let mut find = tx.prepare(
            "SELECT event_id, namespace, profile_id, body FROM events \
             WHERE org = ?1 AND sandbox = ?2 AND instr(body, ?3) > 0",
        )?;
        let rows = find.query_map(params![key.org, key.sandbox, needle], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut naming = Vec::new();
        for row in rows {
            let (event_id, namespace, profile_id, body) = row?;
            if event_names(&body, &key.namespace, &key.id) {
                naming.push((event_id, namespace, profile_id));
            }
        }
        naming
    };
    for (event_id, namespace, profile_id) in &naming {
        events += tx.execute(
            "DELETE FROM events WHERE org = ?1 AND sandbox = ?2 AND event_id = ?3 \
             AND namespace = ?4 AND profile_id = ?5",
            params![key.org, key.sandbox, event_id, namespace, profile_id],
        )? as u64;
    }
    let mut details = tx.execute(
        "DELETE FROM record_personal \
         WHERE org = ?1 AND sandbox = ?2 AND namespace = ?3 AND profile_id = ?4",
        params![key.org, key.sandbox, key.namespace, key.id],
    )? as u64;
    let other_details: Vec<i64> = {
        let mut find = tx.prepare(
            "SELECT seq, detail FROM record_personal \
             WHERE org = ?1 AND sandbox = ?2 AND instr(detail, ?3) > 0",
        )?;
        let rows = find.query_map(params![key.org, key.sandbox, needle], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (seq, detail) = row?;
            if detail_names(&detail, &key.namespace, &key.id) {
                found.push(seq);
            }
        }
        found
    };
    for seq in &other_details {
        details += tx.execute(
            "DELETE FROM record_personal WHERE org = ?1 AND sandbox = ?2 AND seq = ?3",
            params![key.org, key.sandbox, seq],
        )? as u64;
    }
    let others: Vec<(String, String, String)> = {
        let mut find = tx.prepare(
            "SELECT namespace, id, consents FROM profiles \
             WHERE org = ?1 AND sandbox = ?2 AND instr(consents, ?3) > 0",
        )?;
        let rows = find.query_map(params![key.org, key.sandbox, needle], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (namespace, id, consents) = row?;
            let mut consents: Value = serde_json::from_str(&consents)?;
            if scrub_consents(&mut consents, &key.namespace, &key.id) {
                found.push((namespace, id, consents.to_string()));
            }
        }
        found
    };
    for (namespace, id, consents) in &others {
        tx.execute(
            "UPDATE profiles SET consents = ?1 \
             WHERE org = ?2 AND sandbox = ?3 AND namespace = ?4 AND id = ?5",
            params![consents, key.org, key.sandbox, namespace, id],
        )?;
    }
    if !profile && events == 0 && details == 0 && others.is_empty() {
        // Nothing about the person is stored: nothing to erase and nothing to record.
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO chain_heads (org, sandbox, seq, hash) VALUES (?1, ?2, 0, ?3) \
         ON CONFLICT (org, sandbox) DO NOTHING",
        params![key.org, key.sandbox, GENESIS_HASH],
    )?;
    let (head, prev): (i64, String) = tx.query_row(
        "SELECT seq, hash FROM chain_heads WHERE org = ?1 AND sandbox = ?2",
        params![key.org, key.sandbox],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let (erased, payload) = erase.record(
        Erasure {
            profile,
            events,
            details,
            other_profiles: others.len() as u64,
            seq: head + 1,
            hash: String::new(),
        },
        &prev,
        now,
    );
    tx.execute(
        &format!("{INSERT_RECORD_COLUMNS}(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
        params![
            key.org,
            key.sandbox,
            erased.seq,
            key.namespace,
            erase.subject,
            ERASURE_SOURCE,
            payload,
            now,
            prev,
            erased.hash,
            last.flatten(),
        ],
    )?;
    tx.execute(
        "UPDATE chain_heads SET seq = ?1, hash = ?2 WHERE org = ?3 AND sandbox = ?4",
        params![erased.seq, erased.hash, key.org, key.sandbox],
    )?;
    tx.commit()?;
    Ok(Some(erased))
}

/// Runs an erasure on PostgreSQL.
pub(crate) async fn postgres(
    conn: &mut AnyConnection,
    erase: &Erase,
) -> Result<Option<Erasure>, StoreError> {
    let key = &erase.key;
    let now = now_millis();
    let needle = needle(&key.id);
    let mut tx = conn.begin().await?;
    // The chain's head row first, locked: the same order as a batch of changes takes.
    sqlx::query(
        "INSERT INTO chain_heads (org, sandbox, seq, hash) VALUES ($1, $2, 0, $3) \
         ON CONFLICT (org, sandbox) DO NOTHING",
    )
    .bind(&key.org)
    .bind(&key.sandbox)
    .bind(GENESIS_HASH)
    .execute(&mut *tx)
    .await?;
    let head =
        sqlx::query("SELECT seq, hash FROM chain_heads WHERE org = $1 AND sandbox = $2 FOR UPDATE")
            .bind(&key.org)
            .bind(&key.sandbox)
            .fetch_one(&mut *tx)
            .await?;
    let (head, prev): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
    let last = sqlx::query(
        "DELETE FROM profiles WHERE org = $1 AND sandbox = $2 AND namespace = $3 AND id = $4 \
         RETURNING last_record_seq",
    )
    .bind(&key.org)
    .bind(&key.sandbox)
    .bind(&key.namespace)
    .bind(&key.id)
    .fetch_optional(&mut *tx)
    .await?;
    let profile = last.is_some();
    let last: Option<i64> = match &last {
        Some(row) => row.try_get("last_record_seq")?,
        None => None,
    };
    let mut events = sqlx::query(
        "DELETE FROM events WHERE org = $1 AND sandbox = $2 AND namespace = $3 AND profile_id = $4",
    )
    .bind(&key.org)
    .bind(&key.sandbox)
    .bind(&key.namespace)
    .bind(&key.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let rows = sqlx::query(
        "SELECT event_id, namespace, profile_id, body FROM events \
         WHERE org = $1 AND sandbox = $2 AND strpos(body, $3) > 0",
    )
    .bind(&key.org)
    .bind(&key.sandbox)
    .bind(&needle)
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        let body: String = row.try_get("body")?;
        if !event_names(&body, &key.namespace, &key.id) {
            continue;
        }
        let event_id: String = row.try_get("event_id")?;
        let namespace: String = row.try_get("namespace")?;
        let profile_id: String = row.try_get("profile_id")?;
        events += sqlx::query(
            "DELETE FROM events WHERE org = $1 AND sandbox = $2 AND event_id = $3 \
             AND namespace = $4 AND profile_id = $5",
        )
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(event_id)
        .bind(namespace)
        .bind(profile_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    let mut details = sqlx::query(
        "DELETE FROM record_personal \
         WHERE org = $1 AND sandbox = $2 AND namespace = $3 AND profile_id = $4",
    )
    .bind(&key.org)
    .bind(&key.sandbox)
    .bind(&key.namespace)
    .bind(&key.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let rows = sqlx::query(
        "SELECT seq, detail FROM record_personal \
         WHERE org = $1 AND sandbox = $2 AND strpos(detail, $3) > 0",
    )
    .bind(&key.org)
    .bind(&key.sandbox)
    .bind(&needle)
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        let detail: String = row.try_get("detail")?;
        if !detail_names(&detail, &key.namespace, &key.id) {
            continue;
        }
        let seq: i64 = row.try_get("seq")?;
        details +=
            sqlx::query("DELETE FROM record_personal WHERE org = $1 AND sandbox = $2 AND seq = $3")
                .bind(&key.org)
                .bind(&key.sandbox)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
    }
    let rows = sqlx::query(
        "SELECT namespace, id, consents FROM profiles \
         WHERE org = $1 AND sandbox = $2 AND strpos(consents, $3) > 0",
    )
    .bind(&key.org)
    .bind(&key.sandbox)
    .bind(&needle)
    .fetch_all(&mut *tx)
    .await?;
    let mut other_profiles = 0;
    for row in &rows {
        let consents: String = row.try_get("consents")?;
        let mut consents: Value = serde_json::from_str(&consents)?;
        if !scrub_consents(&mut consents, &key.namespace, &key.id) {
            continue;
        }
        let namespace: String = row.try_get("namespace")?;
        let id: String = row.try_get("id")?;
        sqlx::query(
            "UPDATE profiles SET consents = $1 \
             WHERE org = $2 AND sandbox = $3 AND namespace = $4 AND id = $5",
        )
        .bind(consents.to_string())
        .bind(&key.org)
        .bind(&key.sandbox)
        .bind(namespace)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        other_profiles += 1;
    }
    if !profile && events == 0 && details == 0 && other_profiles == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let (erased, payload) = erase.record(
        Erasure {
            profile,
            events,
            details,
            other_profiles,
            seq: head + 1,
            hash: String::new(),
        },
        &prev,
        now,
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{INSERT_RECORD_COLUMNS}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )))
    .bind(&key.org)
    .bind(&key.sandbox)
    .bind(erased.seq)
    .bind(&key.namespace)
    .bind(&erase.subject)
    .bind(ERASURE_SOURCE)
    .bind(&payload)
    .bind(now)
    .bind(&prev)
    .bind(&erased.hash)
    .bind(last)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE chain_heads SET seq = $1, hash = $2 WHERE org = $3 AND sandbox = $4")
        .bind(erased.seq)
        .bind(&erased.hash)
        .bind(&key.org)
        .bind(&key.sandbox)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(erased))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_identity_map_entry_names_an_identity() {
        let body = r#"{"xdm":{"identityMap":{"ECID":[{"id":"123"}]},"note":"456"}}"#;
        assert!(event_names(body, "ECID", "123"));
        assert!(!event_names(body, "ECID", "456"));
        assert!(!event_names(body, "Email", "123"));
        assert!(event_names(
            r#"{"identityMap":{"Email":[{"id":"a@b"}]}}"#,
            "Email",
            "a@b"
        ));
        assert!(!event_names("not json", "ECID", "123"));
    }

    #[test]
    fn consents_lose_only_the_identity_s_entry() {
        let mut consents =
            json!({"collect":{"val":"y"},"idSpecific":{"Email":{"a@b":{"x":1},"c@d":{"x":2}}}});
        assert!(scrub_consents(&mut consents, "Email", "a@b"));
        assert_eq!(
            consents,
            json!({"collect":{"val":"y"},"idSpecific":{"Email":{"c@d":{"x":2}}}})
        );
        assert!(scrub_consents(&mut consents, "Email", "c@d"));
        assert_eq!(consents, json!({"collect":{"val":"y"}}));
        assert!(!scrub_consents(&mut consents, "Email", "c@d"));
    }

    #[test]
    fn a_detail_names_an_identity_only_where_an_identity_goes() {
        let detail = r#"{"salt":"00","fields":{
            "/address":{"value":"a@b","namespace":"Email"},
            "/consent/0/value/idSpecific":{"Email":{"c@d":{"marketing":{"email":{"val":"n"}}}}},
            "/consent/0/value/marketing/sms/subscriptions/l/subscribers":{"+155501":{}}}}"#;
        assert!(detail_names(detail, "Email", "a@b"));
        assert!(!detail_names(detail, "CRMID", "a@b"), "another namespace");
        assert!(detail_names(detail, "Email", "c@d"));
        assert!(detail_names(detail, "Phone", "+155501"));
        // The same characters where no identity goes: a value, a namespace, a channel, the salt.
        for other in ["n", "Email", "email", "marketing", "00", "e@f"] {
            assert!(!detail_names(detail, "CRMID", other), "{other}");
            assert!(!detail_names(detail, "Email", other), "{other}");
        }
        // The first format's bare address.
        assert!(detail_names(
            r#"{"fields":{"/address":"a@b"}}"#,
            "Email",
            "a@b"
        ));
    }
}
