//! Server configuration and the keys file.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use consent_core::IabEvaluator;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::links::{LinkKey, LinkKeys};
use crate::receipts::{ReceiptKey, ReceiptKeyError, ReceiptKeys, ReceiptPolicy};

/// Everything [`crate::serve`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `sqlite://PATH`, a file path, or `postgres://…`.
    pub database: String,
    /// Keys, API keys and datastreams.
    pub keys: Keys,
    /// Decodes IAB TCF strings for `general` decisions.
    pub iab: Arc<dyn IabEvaluator>,
    /// The IAB vendor whose consent `general` needs (Adobe: 565).
    pub iab_vendor_id: u16,
    /// The longest a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// The largest request body accepted.
    pub body_limit: usize,
    /// Requests per second one client may make to the public endpoints (burst: twice that).
    pub rate_limit_per_sec: u32,
    /// Reverse proxies whose `X-Forwarded-For` is believed. A request whose TCP peer is one of
    /// them is rate limited by the address the proxies forwarded for (the right-most one that is
    /// not itself a trusted proxy); from any other peer the header is ignored, so a client cannot
    /// pick its own bucket. Empty (the default): every client is its TCP peer.
    pub trusted_proxies: Vec<IpAddr>,
    /// The organisation of Edge requests whose datastream is not in the keys file, when
    /// [`Config::allow_unknown_datastreams`] is set.
    pub default_org: String,
    /// The sandbox of Edge requests whose datastream is not in the keys file, when
    /// [`Config::allow_unknown_datastreams`] is set.
    pub default_sandbox: String,
    /// Whether an Edge request whose `configId` is not in the keys file's `datastreams` is
    /// served with [`Config::default_org`] and [`Config::default_sandbox`] (the first such
    /// request is logged). `false` (the default): it is refused, `400` with Edge's
    /// `EXEG-0003-400`. The binary sets it when `--default-org`, `--default-sandbox` or
    /// `--allow-unknown-datastreams` is given.
    pub allow_unknown_datastreams: bool,
    /// The origins allowed to call the Edge endpoints from a browser (CORS) with a `configId`
    /// that is not in the keys file; a datastream that is has its own `origins`. Exact
    /// `scheme://host[:port]`; `*` is refused. See `src/cors.rs`.
    pub cors_origins: Vec<String>,
    /// The region id of the `x-adobe-edge: <cluster>;<region>` answer header of the Edge
    /// endpoints (alloy's `getIdentity().edge.regionId`); 9 by default, what Adobe's `or2`
    /// cluster sends.
    pub edge_region: u16,
    /// The `SameSite` attribute the Edge answers ask the client to give the cookies it writes
    /// (`attrs` of each `state:store` entry, which the Web SDK applies; `None` makes it add
    /// `Secure`). `Option::None` (the default): no `attrs`, the client's own default.
    pub cookie_same_site: Option<SameSite>,
    /// TLS: serve HTTPS with this certificate. `None` (the default): plain HTTP.
    pub tls: Option<crate::tls::TlsConfig>,
    /// The cluster written to `kndctr_<org>_cluster` when the request has no location hint.
    pub default_cluster: String,
    /// The public base URL unsubscribe links point at.
    pub public_url: Option<String>,
    /// How long a connection may take to send a request's headers (the first request's from
    /// the moment it connects, a later one's on a kept-alive connection from the end of the
    /// answer before it, so this is the keep-alive idle timeout too); then it is closed. This is
    /// what ends slowloris connections, which send a few header bytes now and then forever.
    pub header_read_timeout: Duration,
    /// The most connections served at once. When all are open the server stops accepting until
    /// one closes, and new ones wait in the kernel's listen backlog. The default, 10 000, stays
    /// below a typical `ulimit -n` of 20 000 or more with room for the database's files and
    /// connections, so a flood of idle connections cannot use up the file descriptors the
    /// database needs; lower it when the limit is lower (each connection is one descriptor).
    pub max_connections: usize,
    /// Requests per second one API key may make to the authenticated endpoints (`/imp/*`,
    /// `/admin/*`), burst twice that, counted after the key authenticated; 0: no limit.
    pub api_rate_limit_per_sec: u32,
    /// Failed authentications (answers 401) one client may have on the authenticated endpoints
    /// per minute, after a burst of as many; a client over it is answered 429 on every
    /// authenticated endpoint, whatever key it names, until its budget refills. 0: no limit.
    pub auth_failures_per_minute: u32,
    /// Whether every `set-consent` and preference-update answer carries the signed receipt of
    /// its change. `false` (the default): only the requests that ask for one with the header
    /// `consent-receipt: true` get one (signing costs about 28 µs of CPU per change, about a
    /// third of the set-consent throughput on two cores if every change were signed; see
    /// `docs/benchmarks.md`).
    pub receipts_always: bool,
    /// The jurisdiction and privacy policy receipts name (Kantara's `jurisdiction` and
    /// `policyUrl`); none by default.
    pub receipt_policy: ReceiptPolicy,
}

impl Config {
    /// A configuration with defaults: the given address and database, ephemeral link keys, no
    /// API keys, and an IAB evaluator that is not wired yet.
    pub fn new(listen: SocketAddr, database: impl Into<String>) -> Result<Self, KeysError> {
        Ok(Self {
            listen,
            database: database.into(),
            keys: Keys::ephemeral()?,
            iab: Arc::new(consent_core::TcfDecoder),
            iab_vendor_id: consent_core::DEFAULT_IAB_VENDOR_ID,
            request_timeout: Duration::from_secs(10),
            body_limit: 64 * 1024,
            rate_limit_per_sec: 50,
            trusted_proxies: Vec::new(),
            default_org: "consent@AdobeOrg".to_owned(),
            default_sandbox: "prod".to_owned(),
            allow_unknown_datastreams: false,
            cors_origins: Vec::new(),
            edge_region: 9,
            cookie_same_site: None,
            tls: None,
            default_cluster: "or2".to_owned(),
            public_url: None,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            api_rate_limit_per_sec: 1_000,
            auth_failures_per_minute: 10,
            receipts_always: false,
            receipt_policy: ReceiptPolicy::default(),
        })
    }
}

/// One API key: bound to one organisation and sandbox.
#[derive(Clone, Deserialize)]
pub struct ApiKey {
    /// The `x-api-key` value.
    pub key: String,
    /// The bearer token expected in `authorization`.
    pub token: String,
    /// The organisation (`x-gw-ims-org-id`).
    pub org: String,
    /// The sandbox (`x-sandbox-name`).
    pub sandbox: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("org", &self.org)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// The `SameSite` attribute of the cookies the Edge answers hand out
/// ([`Config::cookie_same_site`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `None`: sent on cross-site requests too (the Web SDK then adds `Secure`).
    None,
    /// `Lax`.
    Lax,
    /// `Strict`.
    Strict,
}

impl SameSite {
    /// `None`, `Lax` or `Strict`, as the attribute is written.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

impl std::str::FromStr for SameSite {
    type Err = String;

    /// `none`, `lax` or `strict`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(SameSite::None),
            "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            _ => Err(format!("expected none, lax or strict, got {s:?}")),
        }
    }
}

/// A datastream (`configId`): the organisation and sandbox it belongs to, and the origins of
/// the sites that may call it from a browser.
#[derive(Debug, Clone, Deserialize)]
pub struct Datastream {
    /// The datastream id.
    pub id: String,
    /// The organisation.
    pub org: String,
    /// The sandbox.
    #[serde(default = "prod")]
    pub sandbox: String,
    /// The origins (`scheme://host[:port]`, compared exactly) allowed to call the Edge
    /// endpoints with this datastream from a browser (CORS, with credentials); none by default.
    #[serde(default)]
    pub origins: Vec<String>,
}

fn prod() -> String {
    "prod".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    link_keys: Vec<LinkKeyEntry>,
    #[serde(default)]
    current_link_key: Option<String>,
    #[serde(default)]
    receipt_keys: Vec<ReceiptKeyEntry>,
    #[serde(default)]
    current_receipt_key: Option<String>,
    #[serde(default)]
    api_keys: Vec<ApiKey>,
    #[serde(default)]
    datastreams: Vec<Datastream>,
}

#[derive(Deserialize)]
struct LinkKeyEntry {
    id: String,
    /// Base64 (standard alphabet) of at least 32 random bytes.
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptKeyEntry {
    id: String,
    /// Base64 (standard alphabet) of the 32-byte Ed25519 private key seed.
    seed: String,
}

/// Loading the keys file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// The file could not be read.
    #[error("cannot read the keys file: {0}")]
    Read(#[from] std::io::Error),
    /// The file is not valid JSON of the expected shape.
    #[error("the keys file is invalid: {0}")]
    Parse(#[from] serde_json::Error),
    /// A secret is not base64.
    #[error("link key {0:?}: the secret is not base64")]
    Base64(String),
    /// A link key is unusable.
    #[error(transparent)]
    Key(#[from] crate::links::KeyError),
    /// `current_link_key` names no key.
    #[error("current_link_key {0:?} names no link key")]
    UnknownCurrent(String),
    /// Randomness for ephemeral keys failed.
    #[error("cannot make ephemeral link keys: {0}")]
    Ephemeral(#[from] crate::links::SignError),
    /// A receipt key's seed is not base64.
    #[error("receipt key {0:?}: the seed is not base64")]
    ReceiptBase64(String),
    /// A receipt key or the receipt key set is unusable, or an ephemeral one cannot be made.
    #[error(transparent)]
    ReceiptKey(#[from] ReceiptKeyError),
    /// `current_receipt_key` names no key.
    #[error("current_receipt_key {0:?} names no receipt key")]
    UnknownCurrentReceipt(String),
}

/// Link keys, receipt keys, API keys and datastreams, from the `--keys` JSON file:
///
/// ```json
/// {
///   "link_keys": [{"id": "2026-11", "secret": "<base64 of 32+ random bytes>"}],
///   "current_link_key": "2026-11",
///   "receipt_keys": [{"id": "r-2026-11", "seed": "<base64 of 32 random bytes>"}],
///   "current_receipt_key": "r-2026-11",
///   "api_keys": [{"key": "k", "token": "t", "org": "ORG@AdobeOrg", "sandbox": "prod"}],
///   "datastreams": [{"id": "ebebf826-…", "org": "ORG@AdobeOrg", "sandbox": "prod",
///                    "origins": ["https://www.site.test"]}]
/// }
/// ```
///
/// Without `link_keys` (or `receipt_keys`), ephemeral keys are made; without
/// `current_link_key` (or `current_receipt_key`), the last key listed is the current one.
/// Receipt key seeds are Ed25519 private keys (e.g. `head -c 32 /dev/urandom | base64`); keep
/// a retired receipt key in the list for as long as its receipts must verify.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The link keys.
    pub links: LinkKeys,
    /// The keys that sign consent receipts and chain checkpoints.
    pub receipts: ReceiptKeys,
    /// The API keys.
    pub api_keys: Vec<ApiKey>,
    /// The datastreams.
    pub datastreams: Vec<Datastream>,
}

impl Keys {
    /// Random link and receipt keys and nothing else.
    pub fn ephemeral() -> Result<Self, KeysError> {
        Ok(Self {
            links: LinkKeys::ephemeral()?,
            receipts: ReceiptKeys::ephemeral()?,
            api_keys: Vec::new(),
            datastreams: Vec::new(),
        })
    }

    /// Parses the keys file's text. Without link or receipt keys, ephemeral ones are made.
    pub fn from_json(text: &str) -> Result<Self, KeysError> {
        let file: KeysFile = serde_json::from_str(text)?;
        let links = if file.link_keys.is_empty() {
            LinkKeys::ephemeral()?
        } else {
            let mut keys = Vec::new();
            for entry in &file.link_keys {
                let secret = STANDARD
                    .decode(entry.secret.trim())
                    .map_err(|_| KeysError::Base64(entry.id.clone()))?;
                keys.push(LinkKey::new(&entry.id, &secret)?);
            }
            let current = match &file.current_link_key {
                None => keys.len() - 1,
                Some(id) => keys
                    .iter()
                    .position(|k| k.id() == id)
                    .ok_or_else(|| KeysError::UnknownCurrent(id.clone()))?,
            };
            LinkKeys::new(keys, current)
        };
        let receipts = if file.receipt_keys.is_empty() {
            ReceiptKeys::ephemeral()?
        } else {
            let mut keys = Vec::new();
            for entry in &file.receipt_keys {
                let seed = STANDARD
                    .decode(entry.seed.trim())
                    .map_err(|_| KeysError::ReceiptBase64(entry.id.clone()))?;
                keys.push(ReceiptKey::new(&entry.id, &seed)?);
            }
            let current = match &file.current_receipt_key {
                None => keys.len() - 1,
                Some(id) => keys
                    .iter()
                    .position(|k| k.id() == id)
                    .ok_or_else(|| KeysError::UnknownCurrentReceipt(id.clone()))?,
            };
            ReceiptKeys::new(keys, current)?
        };
        Ok(Self {
            links,
            receipts,
            api_keys: file.api_keys,
            datastreams: file.datastreams,
        })
    }

    /// Reads and parses a keys file.
    pub fn load(path: &std::path::Path) -> Result<Self, KeysError> {
        Self::from_json(&std::fs::read_to_string(path)?)
    }

    /// Finds the API key that `x-api-key` and the bearer token name, comparing in constant time.
    pub(crate) fn authenticate(&self, api_key: &str, token: &str) -> Option<&ApiKey> {
        let mut found = None;
        // Every key is compared, so the time taken does not tell which one matched.
        for entry in &self.api_keys {
            let key_ok = entry.key.as_bytes().ct_eq(api_key.as_bytes());
            let token_ok = entry.token.as_bytes().ct_eq(token.as_bytes());
            if bool::from(key_ok & token_ok) {
                found = Some(entry);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_parses_and_rejects_bad_input() {
        let secret = STANDARD.encode([7u8; 32]);
        let seed1 = STANDARD.encode([1u8; 32]);
        let seed2 = STANDARD.encode([2u8; 32]);
        let text = format!(
            r#"{{"link_keys":[{{"id":"a","secret":"{secret}"}},{{"id":"b","secret":"{secret}"}}],
               "current_link_key":"a",
               "receipt_keys":[{{"id":"r1","seed":"{seed1}"}},{{"id":"r2","seed":" {seed2}\n"}}],
               "current_receipt_key":"r1",
               "api_keys":[{{"key":"k","token":"t","org":"O@AdobeOrg","sandbox":"prod"}}]}}"#
        );
        let keys = Keys::from_json(&text).unwrap();
        assert_eq!(keys.links.ids().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(keys.receipts.ids().collect::<Vec<_>>(), ["r1", "r2"]);
        assert_eq!(
            keys.receipts.current().public_key(),
            ReceiptKey::new("r1", &[1; 32]).unwrap().public_key()
        );
        assert!(keys.authenticate("k", "t").is_some());
        assert!(keys.authenticate("k", "x").is_none());
        assert!(matches!(
            Keys::from_json(r#"{"link_keys":[{"id":"a","secret":"!!"}]}"#),
            Err(KeysError::Base64(_))
        ));
        assert!(matches!(
            Keys::from_json(r#"{"nope":1}"#),
            Err(KeysError::Parse(_))
        ));
        assert!(matches!(
            Keys::from_json(&format!(
                r#"{{"link_keys":[{{"id":"a","secret":"{secret}"}}],"current_link_key":"z"}}"#
            )),
            Err(KeysError::UnknownCurrent(_))
        ));
    }

    #[test]
    fn receipt_keys_parse_rotate_and_reject_bad_input() {
        let seed = STANDARD.encode([3u8; 32]);
        let parse = |receipt_keys: &str| Keys::from_json(&format!("{{{receipt_keys}}}"));
        // Without current_receipt_key the last key listed signs.
        let keys = parse(&format!(
            r#""receipt_keys":[{{"id":"old","seed":"{seed}"}},{{"id":"new","seed":"{}"}}]"#,
            STANDARD.encode([4u8; 32])
        ))
        .unwrap();
        assert_eq!(keys.receipts.current().id(), "new");
        assert_eq!(keys.receipts.jwks().keys.len(), 2);
        // Without receipt keys, an ephemeral one.
        let keys = parse("").unwrap();
        assert!(keys.receipts.current().id().starts_with("eph-"));
        assert!(
            Keys::ephemeral()
                .unwrap()
                .receipts
                .current()
                .id()
                .starts_with("eph-")
        );
        // Bad input, each with its error.
        assert!(matches!(
            parse(r#""receipt_keys":[{"id":"r","seed":"!!"}]"#),
            Err(KeysError::ReceiptBase64(id)) if id == "r"
        ));
        assert!(matches!(
            parse(&format!(
                r#""receipt_keys":[{{"id":"r","seed":"{}"}}]"#,
                STANDARD.encode([3u8; 31])
            )),
            Err(KeysError::ReceiptKey(ReceiptKeyError::BadSeed(_)))
        ));
        assert!(matches!(
            parse(&format!(
                r#""receipt_keys":[{{"id":"r r","seed":"{seed}"}}]"#
            )),
            Err(KeysError::ReceiptKey(ReceiptKeyError::BadId(_)))
        ));
        assert!(matches!(
            parse(&format!(
                r#""receipt_keys":[{{"id":"r","seed":"{seed}"}},{{"id":"r","seed":"{seed}"}}]"#
            )),
            Err(KeysError::ReceiptKey(ReceiptKeyError::DuplicateId(_)))
        ));
        assert!(matches!(
            parse(&format!(
                r#""receipt_keys":[{{"id":"r","seed":"{seed}"}}],"current_receipt_key":"z""#
            )),
            Err(KeysError::UnknownCurrentReceipt(id)) if id == "z"
        ));
        assert!(matches!(
            parse(&format!(
                r#""receipt_keys":[{{"id":"r","secret":"{seed}"}}]"#
            )),
            Err(KeysError::Parse(_))
        ));
    }
}
