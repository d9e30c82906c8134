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
    /// A consent record chain written before migration 4 does not verify, so it is not
    /// rewritten into the new form (which would hide the damage): the database is left as it
    /// was.
    #[error(
        "the consent record chain of {org}/{sandbox} does not verify at record {seq}; migration 4 \
         would re-hash it and hide that, so the database is left unchanged"
    )]
    LegacyChain {
        /// The organisation.
        org: String,
        /// The sandbox.
        sandbox: String,
        /// The first record that does not verify.
        seq: i64,
    },
    /// A secret the database keeps is malformed.
    #[error("the database's {0} in server_secrets is malformed")]
    BadSecret(&'static str),
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
    /// The profile's identity as a keyed hash ([`Db::subject`](crate::Db::subject)): the
    /// record names whom it is about without holding the identity, so that it survives the
    /// person's erasure.
    pub subject: String,
    /// What produced it (`edge:set-consent`, `preferences`, `one-click`, `erasure`, …).
    pub source: String,
    /// The change, as JSON, without its personal fields (see [`ConsentRecord::detail`]): what
    /// the hash covers. When the change had personal fields, `personal` holds the SHA-256 of
    /// the salted detail, so that the detail, while kept, is bound to the chain too.
    pub payload: Value,
    /// The personal fields the change named (addresses, identity-specific consents), with the
    /// salt of their digest: kept apart from the record and removed by an erasure. `None` when
    /// the change had none or they were erased.
    pub detail: Option<Value>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// The hash of the record before.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// The record a consent change was written as ([`Db::apply_consent_recorded`](crate::Db::apply_consent_recorded)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recorded {
    /// Its position in the organisation's and sandbox's chain.
    pub seq: i64,
    /// Its hash: the chain's head right after it.
    pub hash: String,
    /// When it was written, in milliseconds since the epoch.
    pub created_at: i64,
    /// The keyed hash of the profile's identity it names.
    pub subject: String,
}

/// What an erasure removed ([`Db::erase`](crate::Db::erase)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Erasure {
    /// Whether the profile itself was stored (and is now deleted).
    pub profile: bool,
    /// Events deleted: the profile's own, and those of other profiles whose identity map
    /// names the identity.
    pub events: u64,
    /// Consent records whose personal detail was deleted (the records themselves stay).
    pub details: u64,
    /// Other profiles whose identity-specific consents named the identity (those entries are
    /// deleted).
    pub other_profiles: u64,
    /// The sequence number of the record of the erasure.
    pub seq: i64,
    /// The erasure record's hash.
    pub hash: String,
}

// `Erasure::to_json`, its answer's form, is with the other answers in `api.rs`.

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
///
/// The page cache is 256 KiB per connection instead of SQLite's 2 MiB, so that the eleven
/// connections (eight in the read pool, the writer, the event inserter, the checkpointer) hold at
/// most about 3 MiB together. With 2 MiB each they could hold 22 MiB, and filled slowly as the
/// database grew: the server's memory rose by 0.7 MiB a minute in a 10-minute soak and had not
/// levelled off (`docs/reliability.md`). Under WAL a reader's cache is dropped whenever another
/// connection commits anyway, and a page missed is read back from the operating system's cache.
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                              PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                              PRAGMA secure_delete = ON; PRAGMA cache_size = -256;";

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

/// A record from a row of `consent_records` left-joined with `record_personal` (`detail`).
pub(crate) fn record_from_row(row: &AnyRow) -> Result<ConsentRecord, StoreError> {
    let payload: String = row.try_get("payload")?;
    let detail: Option<String> = row.try_get("detail")?;
    Ok(ConsentRecord {
        seq: row.try_get("seq")?,
        namespace: row.try_get("namespace")?,
        subject: row.try_get("subject")?,
        source: row.try_get("source")?,
        payload: serde_json::from_str(&payload)?,
        detail: detail.map(|d| serde_json::from_str(&d)).transpose()?,
        created_at: row.try_get("created_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// SHA-256 over the previous hash and every field of the record, each length-prefixed so that
/// no two different records hash the same input. The identity enters only as its keyed hash,
/// `subject`, and the payload only without its personal fields, so that erasing those leaves
/// every hash intact.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_hash(
    prev: &str,
    seq: i64,
    org: &str,
    sandbox: &str,
    namespace: &str,
    subject: &str,
    source: &str,
    created_at: i64,
    payload: &str,
) -> String {
    let mut hasher = Sha256::new();
    let seq = seq.to_string();
    let created = created_at.to_string();
    for field in [
        RECORD_FORMAT,
        prev,
        &seq,
        org,
        sandbox,
        namespace,
        subject,
        source,
        &created,
        payload,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex(&hasher.finalize())
}

/// The first field of every record hash: records of the first format (before migration 4)
/// hashed the identity itself and had no such field.
const RECORD_FORMAT: &str = "consent-record/2";

/// The keyed hash that stands for an identity in the consent records: HMAC-SHA-256 of the
/// namespace and the identity under the database's subject key, in hex.
pub(crate) fn subject_hash(key: &[u8; 32], namespace: &str, id: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac as _};
    // A 32-byte key is always accepted by HMAC.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(&(namespace.len() as u64).to_be_bytes());
    mac.update(namespace.as_bytes());
    mac.update(id.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The fields of a change's payload that name a person: moved out of the record into its
/// detail, wherever they are in the payload. `address` (a link's address, with its namespace),
/// `idSpecific` (XDM consents keyed by identity), `identityMap` and `subscribers` (XDM
/// subscription members keyed by identity: phone numbers, push tokens). Channel names such as
/// `marketing.email` are decisions, not personal data, and stay in the record.
pub(crate) const PERSONAL_FIELDS: &[&str] =
    &["address", "idSpecific", "identityMap", "subscribers"];

/// Splits the personal fields ([`PERSONAL_FIELDS`]) out of `payload`. Returns the detail to
/// keep apart, `{"salt": …, "fields": {"<JSON pointer>": value, …}}`, and puts the SHA-256 of
/// its text under `personal` in the payload; `None` (and the payload unchanged) when there are
/// none, or when the payload is not an object (it is then kept whole). The random salt keeps the
/// digest from telling anything about the detail once the detail is erased.
pub(crate) fn split_personal(payload: &mut Value) -> Option<String> {
    fn walk(value: &mut Value, path: &mut String, out: &mut serde_json::Map<String, Value>) {
        match value {
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    if PERSONAL_FIELDS.contains(&key.as_str()) {
                        if let Some(v) = map.remove(&key)
                            && !v.is_null()
                        {
                            out.insert(path.clone(), v);
                        }
                    } else if let Some(v) = map.get_mut(&key) {
                        walk(v, path, out);
                    }
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&i.to_string());
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    // Only an object has room for the digest; the payloads the server writes are objects.
    if !payload.is_object() {
        return None;
    }
    let mut fields = serde_json::Map::new();
    walk(payload, &mut String::new(), &mut fields);
    if fields.is_empty() {
        return None;
    }
    let mut salt = [0u8; 16];
    if getrandom::fill(&mut salt).is_err() {
        // Without randomness the digest is still a commitment, only not a hiding one.
        salt[..8].copy_from_slice(&crate::util::now_millis().to_le_bytes());
    }
    let detail = serde_json::json!({"salt": hex(&salt), "fields": fields}).to_string();
    if let Value::Object(map) = payload {
        map.insert(
            "personal".to_owned(),
            Value::String(hex(&Sha256::digest(detail.as_bytes()))),
        );
    }
    Some(detail)
}

/// Puts a detail's fields back into a payload (for an export): the inverse of
/// [`split_personal`], without the digest.
pub(crate) fn join_personal(payload: &Value, detail: &Value) -> Value {
    let mut whole = payload.clone();
    if let Value::Object(map) = &mut whole {
        map.remove("personal");
    }
    if let Some(fields) = detail.get("fields").and_then(Value::as_object) {
        for (pointer, value) in fields {
            let Some((parent, key)) = pointer.rsplit_once('/') else {
                continue;
            };
            let key = key.replace("~1", "/").replace("~0", "~");
            if let Some(Value::Object(map)) = whole.pointer_mut(parent) {
                map.insert(key, value.clone());
            }
        }
    }
    whole
}

/// The columns of a new consent record, for a `VALUES` list.
pub(crate) const INSERT_RECORD_COLUMNS: &str = "INSERT INTO consent_records (org, sandbox, seq, \
     namespace, subject, source, payload, created_at, prev_hash, hash, profile_prev_seq) VALUES ";
/// A record's personal detail.
pub(crate) const INSERT_DETAIL: &str = "INSERT INTO record_personal (org, sandbox, seq, namespace, \
     profile_id, detail) VALUES ($1, $2, $3, $4, $5, $6)";

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_fields_are_split_off_with_a_salted_digest_and_put_back() {
        let original = json!({
            "requestId": "r",
            "consent": [{"standard": "Adobe", "version": "2.0", "value": {
                "collect": {"val": "y"},
                "idSpecific": {"Email": {"a@b.example": {"marketing": {"email": {"val": "n"}}}}}
            }}],
            "address": "a@b.example",
            "a/b~c": {"subscribers": {"x@y.example": {}}},
            "marketing": {"email": {"val": "n"}},
        });
        let mut payload = original.clone();
        let detail = split_personal(&mut payload).unwrap();
        let text = payload.to_string();
        assert!(
            !text.contains("a@b.example") && !text.contains("x@y.example"),
            "{text}"
        );
        assert_eq!(payload["consent"][0]["value"]["collect"]["val"], "y");
        // A channel's decision is proof, not personal data: it stays.
        assert_eq!(payload["marketing"]["email"]["val"], "n");
        let digest = payload["personal"].as_str().unwrap();
        assert_eq!(digest, hex(&Sha256::digest(detail.as_bytes())));
        let detail: Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(detail["salt"].as_str().unwrap().len(), 32);
        assert_eq!(join_personal(&payload, &detail), original);
        // The same payload twice: different salts, so different digests.
        let mut again = original.clone();
        split_personal(&mut again).unwrap();
        assert_ne!(again["personal"], payload["personal"]);
        // Nothing personal (a null address is no address): nothing split, the null dropped.
        let mut plain = json!({"general": "in", "address": null});
        assert_eq!(split_personal(&mut plain), None);
        assert_eq!(plain, json!({"general": "in"}));
    }

    /// JSON whose keys are drawn from the personal fields, channel names and others, to any
    /// depth up to four.
    fn payloads() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop::sample::select(vec![
            "address",
            "idSpecific",
            "identityMap",
            "subscribers",
            "email",
            "marketing",
            "val",
            "a/b",
            "c~d",
            "general",
            "consent",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[a-z@.+0-9]{0,12}".prop_map(Value::String),
            any::<i32>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    /// What `split_personal` leaves: no personal field anywhere.
    fn has_personal_field(value: &Value) -> bool {
        match value {
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| PERSONAL_FIELDS.contains(&k.as_str()) || has_personal_field(v)),
            Value::Array(items) => items.iter().any(has_personal_field),
            _ => false,
        }
    }

    /// The payload without its null personal fields (which carry nothing and are dropped); a
    /// personal field's value is moved whole, so nothing inside it is dropped.
    fn without_null_personal(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, v)| !(PERSONAL_FIELDS.contains(&k.as_str()) && v.is_null()))
                    .map(|(k, v)| {
                        if PERSONAL_FIELDS.contains(&k.as_str()) {
                            (k.clone(), v.clone())
                        } else {
                            (k.clone(), without_null_personal(v))
                        }
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(without_null_personal).collect()),
            other => other.clone(),
        }
    }

    proptest::proptest! {
        #[test]
        fn any_payload_splits_into_a_record_without_personal_fields_and_joins_back(
            original in payloads()
        ) {
            let mut payload = original.clone();
            let detail = split_personal(&mut payload);
            if !original.is_object() {
                // Kept whole: there is no room for the digest.
                proptest::prop_assert_eq!(detail, None);
                proptest::prop_assert_eq!(payload, original);
                return Ok(());
            }
            proptest::prop_assert!(!has_personal_field(&payload), "{}", payload);
            match detail {
                None => proptest::prop_assert_eq!(&payload, &without_null_personal(&original)),
                Some(detail) => {
                    // Bound to the record by its digest, and whole again once joined back.
                    let digest = hex(&Sha256::digest(detail.as_bytes()));
                    proptest::prop_assert_eq!(payload["personal"].as_str(), Some(digest.as_str()));
                    let detail: Value = serde_json::from_str(&detail).unwrap();
                    proptest::prop_assert_eq!(
                        join_personal(&payload, &detail),
                        without_null_personal(&original)
                    );
                }
            }
        }
    }

    #[test]
    fn a_subject_depends_on_the_key_the_namespace_and_the_identity() {
        let a = subject_hash(&[1; 32], "ECID", "123");
        assert_eq!(a.len(), 64);
        assert_ne!(a, subject_hash(&[2; 32], "ECID", "123"));
        assert_ne!(a, subject_hash(&[1; 32], "CRMID", "123"));
        assert_ne!(a, subject_hash(&[1; 32], "ECID", "124"));
        // The namespace is length-prefixed: no shifting of characters between the two.
        assert_ne!(
            subject_hash(&[1; 32], "EC", "ID123"),
            subject_hash(&[1; 32], "ECID", "123")
        );
    }
}
