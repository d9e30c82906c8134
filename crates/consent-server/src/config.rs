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
    /// The organisation of Edge requests whose datastream is not in the keys file.
    pub default_org: String,
    /// The sandbox of Edge requests whose datastream is not in the keys file.
    pub default_sandbox: String,
    /// The cluster written to `kndctr_<org>_cluster` when the request has no location hint.
    pub default_cluster: String,
    /// The public base URL unsubscribe links point at.
    pub public_url: Option<String>,
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
            default_cluster: "or2".to_owned(),
            public_url: None,
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

/// A datastream (`configId`) and the organisation and sandbox it belongs to.
#[derive(Debug, Clone, Deserialize)]
pub struct Datastream {
    /// The datastream id.
    pub id: String,
    /// The organisation.
    pub org: String,
    /// The sandbox.
    #[serde(default = "prod")]
    pub sandbox: String,
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
}

/// Link keys, API keys and datastreams, from the `--keys` JSON file:
///
/// ```json
/// {
///   "link_keys": [{"id": "2026-11", "secret": "<base64 of 32+ random bytes>"}],
///   "current_link_key": "2026-11",
///   "api_keys": [{"key": "k", "token": "t", "org": "ORG@AdobeOrg", "sandbox": "prod"}],
///   "datastreams": [{"id": "ebebf826-…", "org": "ORG@AdobeOrg", "sandbox": "prod"}]
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Keys {
    /// The link keys.
    pub links: LinkKeys,
    /// The API keys.
    pub api_keys: Vec<ApiKey>,
    /// The datastreams.
    pub datastreams: Vec<Datastream>,
}

impl Keys {
    /// Random link keys and nothing else.
    pub fn ephemeral() -> Result<Self, KeysError> {
        Ok(Self {
            links: LinkKeys::ephemeral()?,
            api_keys: Vec::new(),
            datastreams: Vec::new(),
        })
    }

    /// Parses the keys file's text. Without link keys, ephemeral ones are made.
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
        Ok(Self {
            links,
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
        let text = format!(
            r#"{{"link_keys":[{{"id":"a","secret":"{secret}"}},{{"id":"b","secret":"{secret}"}}],
               "current_link_key":"a",
               "api_keys":[{{"key":"k","token":"t","org":"O@AdobeOrg","sandbox":"prod"}}]}}"#
        );
        let keys = Keys::from_json(&text).unwrap();
        assert_eq!(keys.links.ids().collect::<Vec<_>>(), ["a", "b"]);
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
}
