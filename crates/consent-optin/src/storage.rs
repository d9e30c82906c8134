//! The `adobeujs-optin` cookie behind a small trait, with an in-memory implementation.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The name of the opt-in storage cookie.
pub const COOKIE_NAME: &str = "adobeujs-optin";

/// The name of the cookie that keeps the custom categories' choices, next to [`COOKIE_NAME`].
///
/// VisitorAPI.js reads `adobeujs-optin` as invalid when a key is neither one of its eight
/// categories nor `videoaa` or `iabConsentHash`, and then stays pending on every page that shares
/// the cookie; so custom categories, which only this crate knows, are kept in a cookie of their own
/// (same encoding, domain, path, lifetime and `Secure` attribute).
pub const CUSTOM_COOKIE_NAME: &str = "adobeujs-optin-custom";

/// The default lifetime of the cookie: 34,190,000 seconds, about 13 months.
pub const DEFAULT_STORAGE_EXPIRY_SECS: u64 = 34_190_000;

/// Where the opt-in cookie lives: a cookie jar that can read and write cookies of the current host.
///
/// The cookie jar of `consent-store` implements this; [`MemoryStorage`] is the in-memory
/// implementation for tests. Values are passed exactly as they appear in a `Cookie` header (here,
/// URI-encoded JSON): the jar does no encoding of its own.
///
/// The service calls the jar outside its locks, so a jar may call back into the service. A panic in
/// any of these methods is caught and recorded as a [`Warning`](crate::Warning): a failed `get`
/// skips that one write (it would otherwise lose the keys it could not read) or, at construction,
/// counts as no cookie (so the next write replaces the categories the cookie held: the service
/// could not know them); a failed `set` loses that one write; a failed `accepts_domain` counts as
/// "not accepted". Writes of one service come one at a time, in the order of its completions,
/// from the thread delivering them.
pub trait OptInStorage: Send + Sync {
    /// The value of the named cookie, if the jar holds one that applies to the current host.
    fn get(&self, name: &str) -> Option<String>;

    /// Stores a cookie, replacing any cookie with the same name, domain and path.
    fn set(&self, cookie: &CookieWrite<'_>) -> Result<(), StorageError>;

    /// Whether the jar would accept a cookie for `domain` (the reference probes this by writing a
    /// `test` cookie). A jar must refuse public suffixes such as `co.uk`; the default accepts every
    /// domain, so a jar without a public suffix list ends at the last two labels.
    fn accepts_domain(&self, domain: &str) -> bool {
        let _ = domain;
        true
    }
}

impl fmt::Debug for dyn OptInStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<dyn OptInStorage>")
    }
}

/// A cookie to write, with the attributes the reference sets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CookieWrite<'a> {
    /// The cookie name, [`COOKIE_NAME`].
    pub name: &'a str,
    /// The value, URI-encoded JSON.
    pub value: &'a str,
    /// The `Domain` attribute; `None` for a host-only cookie.
    pub domain: Option<&'a str>,
    /// The `Path` attribute, always `/`.
    pub path: &'a str,
    /// When the cookie expires, counted by the jar from the moment of the write.
    pub expires: CookieExpiry,
    /// Whether to set the `Secure` attribute.
    pub secure: bool,
}

/// The lifetime of a written cookie. The service reads no clock: the jar adds the duration to its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieExpiry {
    /// Expires this long after the write.
    After(Duration),
    /// A session cookie.
    Session,
}

/// The `optInStorageExpiry` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageExpiry {
    /// A lifetime in seconds (the reference's number).
    Seconds(u64),
    /// A session cookie (the reference's `"SESSION"`).
    Session,
    /// The cookie is not written at all (the reference's `"NONE"`).
    None,
}

impl Default for StorageExpiry {
    fn default() -> StorageExpiry {
        StorageExpiry::Seconds(DEFAULT_STORAGE_EXPIRY_SECS)
    }
}

impl StorageExpiry {
    /// The lifetime to write, or `None` when the cookie must not be written. Zero seconds falls back
    /// to the default, as `optInStorageExpiry || 34190000` does.
    pub(crate) fn cookie_expiry(self) -> Option<CookieExpiry> {
        match self {
            StorageExpiry::Seconds(0) => Some(CookieExpiry::After(Duration::from_secs(
                DEFAULT_STORAGE_EXPIRY_SECS,
            ))),
            StorageExpiry::Seconds(secs) => Some(CookieExpiry::After(Duration::from_secs(secs))),
            StorageExpiry::Session => Some(CookieExpiry::Session),
            StorageExpiry::None => None,
        }
    }
}

/// A failed cookie write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The jar refused the cookie (for example a domain it does not accept).
    #[error("the cookie jar refused the cookie: {0}")]
    Rejected(String),
    /// The jar failed to persist the cookie.
    #[error("the cookie jar failed: {0}")]
    Backend(String),
}

/// The cookie domain of the reference: `optInCookieDomain`, else `cookieDomain`, else the shortest
/// suffix of the host the jar accepts (`accepts` asks the jar; without a jar there is no probing);
/// a domain equal to the host means a host-only cookie.
pub(crate) fn resolve_domain(
    opt_in_cookie_domain: Option<&str>,
    cookie_domain: Option<&str>,
    host: Option<&str>,
    accepts: Option<&dyn Fn(&str) -> bool>,
) -> Option<String> {
    let explicit = opt_in_cookie_domain
        .filter(|d| !d.is_empty())
        .or(cookie_domain.filter(|d| !d.is_empty()))
        .map(str::to_owned);
    let domain = explicit.or_else(|| {
        let host = host?;
        let accepts = accepts?;
        let labels: Vec<&str> = host.split('.').collect();
        (0..labels.len().saturating_sub(1))
            .rev()
            .map(|start| labels[start..].join("."))
            .find(|candidate| accepts(candidate))
    })?;
    if Some(domain.as_str()) == host {
        None
    } else {
        Some(domain)
    }
}

/// `encodeURIComponent`: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )` is percent-encoded as UTF-8.
pub(crate) fn encode_uri_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `decodeURIComponent`: `None` for a malformed escape or bytes that are not UTF-8.
pub(crate) fn decode_uri_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits, as decodeURIComponent wants: `from_str_radix` alone would also
            // take a sign (`%+9`).
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A cookie as [`MemoryStorage`] keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredCookie {
    /// The value as written.
    pub value: String,
    /// The `Domain` attribute; `None` for a host-only cookie.
    pub domain: Option<String>,
    /// The `Path` attribute.
    pub path: String,
    /// The lifetime given at the write.
    pub expires: CookieExpiry,
    /// Whether the `Secure` attribute was set.
    pub secure: bool,
}

/// An in-memory [`OptInStorage`] for tests and examples: one cookie per name, a count of writes, an
/// optional list of refused (public suffix) domains and an optional failure on every write.
#[derive(Default)]
pub struct MemoryStorage {
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    cookies: BTreeMap<String, StoredCookie>,
    writes: usize,
    public_suffixes: Vec<String>,
    fail_writes: bool,
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryStorage")
            .field("cookies", &inner.cookies)
            .field("writes", &inner.writes)
            .finish()
    }
}

impl MemoryStorage {
    /// An empty jar that accepts every domain.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// An empty jar that refuses cookies for these public suffixes (such as `co.uk`).
    pub fn with_public_suffixes<I, S>(suffixes: I) -> MemoryStorage
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let storage = MemoryStorage::new();
        storage.lock().public_suffixes = suffixes.into_iter().map(Into::into).collect();
        storage
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored cookie with this name.
    pub fn cookie(&self, name: &str) -> Option<StoredCookie> {
        self.lock().cookies.get(name).cloned()
    }

    /// Puts a raw cookie value in the jar, as a browser would have it from an earlier page.
    pub fn insert_raw(&self, name: &str, value: &str) {
        self.lock().cookies.insert(
            name.to_owned(),
            StoredCookie {
                value: value.to_owned(),
                domain: None,
                path: "/".to_owned(),
                expires: CookieExpiry::Session,
                secure: false,
            },
        );
    }

    /// How many writes succeeded.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// Makes every later write fail (`true`) or succeed again (`false`).
    pub fn fail_writes(&self, fail: bool) {
        self.lock().fail_writes = fail;
    }
}

impl OptInStorage for MemoryStorage {
    fn get(&self, name: &str) -> Option<String> {
        self.lock().cookies.get(name).map(|c| c.value.clone())
    }

    fn set(&self, cookie: &CookieWrite<'_>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        if inner.fail_writes {
            return Err(StorageError::Backend("injected write failure".to_owned()));
        }
        if let Some(domain) = cookie
            .domain
            .filter(|d| !accepts(&inner.public_suffixes, d))
        {
            return Err(StorageError::Rejected(format!(
                "domain {domain} is a public suffix"
            )));
        }
        inner.writes += 1;
        inner.cookies.insert(
            cookie.name.to_owned(),
            StoredCookie {
                value: cookie.value.to_owned(),
                domain: cookie.domain.map(str::to_owned),
                path: cookie.path.to_owned(),
                expires: cookie.expires,
                secure: cookie.secure,
            },
        );
        Ok(())
    }

    fn accepts_domain(&self, domain: &str) -> bool {
        accepts(&self.lock().public_suffixes, domain)
    }
}

fn accepts(public_suffixes: &[String], domain: &str) -> bool {
    domain.contains('.') && !public_suffixes.iter().any(|suffix| suffix == domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_component_round_trips_like_javascript() {
        let json = r#"{"aam":true,"aa":false}"#;
        let encoded = encode_uri_component(json);
        assert_eq!(encoded, "%7B%22aam%22%3Atrue%2C%22aa%22%3Afalse%7D");
        assert_eq!(decode_uri_component(&encoded).as_deref(), Some(json));
        assert_eq!(encode_uri_component("a-_.!~*'() é"), "a-_.!~*'()%20%C3%A9");
        assert_eq!(decode_uri_component("%zz"), None);
        assert_eq!(decode_uri_component("%C3"), None);
        assert_eq!(decode_uri_component("%4"), None);
    }

    fn check_domain(
        explicit: Option<&str>,
        host: Option<&str>,
        suffixes: &[&str],
        expected: Option<&str>,
    ) {
        let storage = MemoryStorage::with_public_suffixes(suffixes.iter().copied());
        let accepts = |domain: &str| storage.accepts_domain(domain);
        let got = resolve_domain(explicit, None, host, Some(&accepts));
        assert_eq!(got.as_deref(), expected, "{explicit:?} {host:?}");
    }

    #[test]
    fn resolves_the_cookie_domain() {
        check_domain(None, Some("www.example.com"), &[], Some("example.com"));
        check_domain(
            None,
            Some("www.example.co.uk"),
            &["co.uk"],
            Some("example.co.uk"),
        );
        check_domain(None, Some("example.com"), &[], None);
        check_domain(None, Some("localhost"), &[], None);
        check_domain(None, None, &[], None);
        check_domain(Some("www.example.com"), Some("www.example.com"), &[], None);
        check_domain(
            Some("shop.example.com"),
            Some("www.example.com"),
            &[],
            Some("shop.example.com"),
        );
        check_domain(Some(""), Some("a.example.com"), &[], Some("example.com"));
        assert_eq!(
            resolve_domain(None, Some("corp.example"), Some("a.corp.example"), None).as_deref(),
            Some("corp.example")
        );
    }

    #[test]
    fn storage_expiry_maps_to_cookie_lifetimes() {
        let default = Some(CookieExpiry::After(Duration::from_secs(34_190_000)));
        assert_eq!(StorageExpiry::default().cookie_expiry(), default);
        assert_eq!(StorageExpiry::Seconds(0).cookie_expiry(), default);
        assert_eq!(
            StorageExpiry::Seconds(3600).cookie_expiry(),
            Some(CookieExpiry::After(Duration::from_secs(3600)))
        );
        assert_eq!(
            StorageExpiry::Session.cookie_expiry(),
            Some(CookieExpiry::Session)
        );
        assert_eq!(StorageExpiry::None.cookie_expiry(), None);
    }
}
