//! The cookie jar shared with `consent-store`, and the conversions between its cookies and the
//! engine's.
//!
//! The jar holds cookies in their wire form (percent-encoded where a cookie value cannot hold a
//! character); [`consent_core::Cookie`] values and `meta.state.entries` carry the decoded value,
//! as the Web SDK's cookie library reads and writes them.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use consent_core::{Action, Cookie, CookieNames, StoredCookie, Timestamp};
use cookie_store::{CookieExpiration, CookieStore, RawCookie};
use url::Url;

use crate::protocol::StateEntry;

/// The longest lifetime the jar gives a cookie: 400 days, the cap of RFC 6265bis that browsers
/// apply (the identity cookie's 395 days fit).
pub const MAX_COOKIE_AGE: u64 = 400 * 24 * 3600;

/// A cookie the jar refused to store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JarError {
    /// The name or value cannot form a cookie.
    #[error("cannot store cookie {name:?}")]
    Invalid {
        /// The cookie's name.
        name: String,
        /// What `cookie_store` reported.
        #[source]
        source: cookie_store::CookieError,
    },
}

/// The cookie jar: a [`CookieStore`] behind a shared lock, so that the transport, the facade and
/// `consent-store`'s `CookieJar::save` see the same cookies.
///
/// The transport never writes to it on its own: cookies from responses go to the engine, and only
/// the engine's [`Action::StoreCookie`] and [`Action::RemoveCookie`] reach the jar, through
/// [`CookieJar::apply`].
///
/// ```
/// use consent_core::{Action, Cookie};
/// use consent_transport::CookieJar;
///
/// let jar = CookieJar::new(cookie_store::CookieStore::default());
/// let url = "https://edge.example.com/".parse()?;
/// let cookie = Cookie::new("kndctr_ORG_consent", "general=in;foo=out", Some(15_552_000));
/// jar.apply(&Action::StoreCookie(cookie), &url)?;
/// assert_eq!(jar.value(&url, "kndctr_ORG_consent").as_deref(), Some("general=in;foo=out"));
/// jar.apply(&Action::RemoveCookie { name: "kndctr_ORG_consent".into() }, &url)?;
/// assert_eq!(jar.value(&url, "kndctr_ORG_consent"), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CookieJar {
    inner: Arc<Mutex<CookieStore>>,
}

impl CookieJar {
    /// A jar holding `store` (for instance what `consent_store::CookieJar::load` returned).
    pub fn new(store: CookieStore) -> Self {
        Self::from_shared(Arc::new(Mutex::new(store)))
    }

    /// A jar over a store that is already shared.
    pub fn from_shared(inner: Arc<Mutex<CookieStore>>) -> Self {
        Self { inner }
    }

    /// The shared store.
    pub fn shared(&self) -> Arc<Mutex<CookieStore>> {
        Arc::clone(&self.inner)
    }

    /// Locks the store, for instance to save it. Never hold the guard across an `.await`.
    ///
    /// A lock poisoned by a panic elsewhere is taken anyway: cookies are plain data, and every
    /// change to them is a single insert or remove.
    pub fn lock(&self) -> MutexGuard<'_, CookieStore> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out the engine's cookie actions for cookies of `url`'s host: writes
    /// [`Action::StoreCookie`], removes [`Action::RemoveCookie`]. Returns whether the action was a
    /// cookie action.
    pub fn apply(&self, action: &Action, url: &Url) -> Result<bool, JarError> {
        match action {
            Action::StoreCookie(cookie) => {
                self.store(cookie, url)?;
                Ok(true)
            }
            Action::RemoveCookie { name } => {
                self.remove(name);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Writes a cookie for `url`'s host, path `/`. A `max_age` of zero removes it; a longer one
    /// than [`MAX_COOKIE_AGE`] is cut to it. A `same_site` other than `Strict`, `Lax` or `None` is
    /// left out. A name that is not a plain cookie name is refused.
    pub fn store(&self, cookie: &Cookie, url: &Url) -> Result<(), JarError> {
        if cookie.is_removal() {
            self.remove(&cookie.name);
            return Ok(());
        }
        let mut header = format!("{}={}; Path=/", cookie.name, encode(&cookie.value));
        if let Some(max_age) = cookie.max_age {
            header.push_str(&format!("; Max-Age={}", max_age.min(MAX_COOKIE_AGE)));
        }
        // Only the three known values: anything else could smuggle attributes (`None; Domain=…`).
        let same_site = cookie.same_site.as_deref().and_then(|s| {
            ["Strict", "Lax", "None"]
                .into_iter()
                .find(|known| known.eq_ignore_ascii_case(s))
        });
        if let Some(same_site) = same_site {
            header.push_str("; SameSite=");
            header.push_str(same_site);
        }
        if cookie.secure {
            header.push_str("; Secure");
        }
        let invalid = |source| JarError::Invalid {
            name: cookie.name.clone(),
            source,
        };
        let raw =
            RawCookie::parse(header).map_err(|_| invalid(cookie_store::CookieError::Parse))?;
        if raw.name() != cookie.name {
            return Err(invalid(cookie_store::CookieError::Parse));
        }
        self.lock().insert_raw(&raw, url).map_err(invalid)?;
        Ok(())
    }

    /// Removes every cookie with this name, whatever its domain and path. Returns how many.
    pub fn remove(&self, name: &str) -> usize {
        let mut store = self.lock();
        let found: Vec<(String, String)> = store
            .iter_any()
            .filter(|c| c.name() == name)
            .map(|c| (String::from(&c.domain), String::from(&c.path)))
            .collect();
        for (domain, path) in &found {
            store.remove(domain, path, name);
        }
        found.len()
    }

    /// The decoded value of the unexpired cookie `name` that a request to `url` would carry.
    pub fn value(&self, url: &Url, name: &str) -> Option<String> {
        self.lock()
            .get_request_values(url)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| decode(v))
    }

    /// The `Cookie` header for a request to `url`, in wire form; `None` without cookies.
    pub fn header(&self, url: &Url) -> Option<String> {
        let store = self.lock();
        let pairs: Vec<String> = store
            .get_request_values(url)
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    /// `meta.state.entries` for a request to `url`: every `kndctr_<org>_*` cookie and `at_qa_mode`,
    /// decoded, as the Web SDK transfers them.
    pub fn state_entries(&self, url: &Url, names: &CookieNames) -> Vec<StateEntry> {
        let prefix = names
            .consent()
            .strip_suffix("consent")
            .unwrap_or(names.consent());
        self.lock()
            .get_request_values(url)
            .filter(|(n, _)| n.starts_with(prefix) || *n == "at_qa_mode")
            .map(|(n, v)| StateEntry {
                key: n.to_owned(),
                value: decode(v),
            })
            .collect()
    }

    /// What the engine needs at start-up: the consent cookie with its expiry, and whether the
    /// identity cookie is there. Pass them in [`consent_core::Stored`].
    pub fn stored(&self, url: &Url, names: &CookieNames) -> (Option<StoredCookie>, bool) {
        let store = self.lock();
        let mut consent = None;
        let mut identity = false;
        for cookie in store.matches(url) {
            if cookie.name() == names.consent() {
                let expires = match &cookie.expires {
                    CookieExpiration::AtUtc(at) => {
                        let millis = at.unix_timestamp_nanos() / 1_000_000;
                        Some(Timestamp::from_millis(u64::try_from(millis).unwrap_or(0)))
                    }
                    CookieExpiration::SessionEnd => None,
                };
                consent = Some(StoredCookie {
                    value: decode(cookie.value()),
                    expires,
                });
            } else if cookie.name() == names.identity() {
                identity = true;
            }
        }
        (consent, identity)
    }
}

/// Reads a `Set-Cookie` header as a cookie instruction for the engine; `None` when it does not
/// parse. `Domain` and `Path` are dropped (the jar keeps cookies for the server's host, path `/`);
/// `Expires` becomes a `max_age` from `now`.
pub fn parse_set_cookie(header: &str, now: SystemTime) -> Option<Cookie> {
    let raw = RawCookie::parse(header).ok()?;
    let max_age = if let Some(max_age) = raw.max_age() {
        Some(u64::try_from(max_age.whole_seconds()).unwrap_or(0))
    } else if let Some(at) = raw.expires().and_then(|e| e.datetime()) {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Some(u64::try_from(at.unix_timestamp().saturating_sub(now)).unwrap_or(0))
    } else {
        None
    };
    let same_site = raw.same_site().map(|s| s.to_string());
    let secure = raw.secure().unwrap_or(false)
        || same_site
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("none"));
    Some(Cookie {
        name: raw.name().to_owned(),
        value: decode(raw.value()),
        max_age,
        same_site,
        secure,
    })
}

/// Whether a byte may stand in a cookie value as it is (RFC 6265 `cookie-octet`, minus `%`, which
/// starts an escape).
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// Percent-encodes what a cookie value cannot hold.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if is_cookie_octet(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; anything else (a stray `%` included) is kept as it is.
pub(crate) fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn url() -> Url {
        "http://127.0.0.1:9/ee/v1/interact".parse().unwrap()
    }

    proptest::proptest! {
        #[test]
        fn any_value_round_trips_and_any_header_parses_without_panic(value in ".*", header in ".*") {
            let encoded = encode(&value);
            proptest::prop_assert_eq!(decode(&encoded), value);
            proptest::prop_assert!(encoded.bytes().all(|b| is_cookie_octet(b) || b == b'%'));
            let _ = parse_set_cookie(&header, SystemTime::now());
        }

        #[test]
        fn any_engine_cookie_is_stored_or_refused_without_panic(
            name in "[a-zA-Z0-9_;= ]{0,12}",
            value in ".{0,20}",
            max_age in proptest::option::of(proptest::num::u64::ANY),
            same_site in proptest::option::of(".{0,12}"),
        ) {
            let jar = CookieJar::default();
            let cookie = Cookie { name: name.clone(), value: value.clone(), max_age, same_site, secure: false };
            if jar.store(&cookie, &url()).is_ok() && max_age != Some(0) {
                proptest::prop_assert_eq!(jar.value(&url(), &name), Some(value));
            }
        }
    }

    #[test]
    fn values_round_trip_through_the_wire_form() {
        for value in ["general=in", "general=in;foo=out", "a b,\"c\"\\%", "é", ""] {
            assert_eq!(decode(&encode(value)), value);
            assert!(
                encode(value)
                    .bytes()
                    .all(|b| is_cookie_octet(b) || b == b'%')
            );
        }
        assert_eq!(decode("general%3Din"), "general=in");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn stored_cookies_are_read_back_for_the_engine() {
        let jar = CookieJar::default();
        let names = CookieNames::new("ORG@AdobeOrg");
        let mut consent = Cookie::new(names.consent(), "general=out", Some(100));
        consent.same_site = Some("None".into());
        consent.secure = true;
        jar.store(&consent, &url()).unwrap();
        jar.store(&Cookie::new(names.identity(), "id", None), &url())
            .unwrap();
        jar.store(&Cookie::new("other", "x", Some(10)), &url())
            .unwrap();
        let (stored, identity) = jar.stored(&url(), &names);
        let stored = stored.unwrap();
        assert_eq!(stored.value, "general=out");
        assert!(stored.expires.is_some());
        assert!(identity);
        let keys: Vec<_> = jar
            .state_entries(&url(), &names)
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys.len(), 2);
        assert!(!keys.contains(&"other".to_owned()));
        assert!(jar.header(&url()).unwrap().contains("other=x"));
        assert_eq!(jar.remove(names.identity()), 1);
        assert!(!jar.stored(&url(), &names).1);
        jar.store(&Cookie::new("other", "x", Some(0)), &url())
            .unwrap();
        assert_eq!(jar.value(&url(), "other"), None);
    }

    #[test]
    fn attributes_cannot_be_smuggled_and_lifetimes_are_capped() {
        let jar = CookieJar::default();
        let mut cookie = Cookie::new("a", "1", Some(u64::MAX));
        cookie.same_site = Some("None; Domain=0.0.1".into());
        jar.store(&cookie, &url()).unwrap();
        let store = jar.lock();
        let stored = store.get("127.0.0.1", "/", "a").unwrap();
        assert_eq!(stored.same_site(), None);
        let CookieExpiration::AtUtc(at) = &stored.expires else {
            panic!("a persistent cookie");
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let age = u64::try_from(at.unix_timestamp()).unwrap() - now;
        assert!(
            (MAX_COOKIE_AGE - 5..=MAX_COOKIE_AGE).contains(&age),
            "{age}"
        );
        drop(store);
        let smuggled = Cookie::new("b=1; Domain=example.com; c", "2", None);
        assert!(matches!(
            jar.store(&smuggled, &url()),
            Err(JarError::Invalid { .. })
        ));
    }

    #[test]
    fn set_cookie_headers_become_instructions() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cookie = parse_set_cookie(
            "kndctr_ORG_consent=general%3Din; Max-Age=15552000; Path=/; SameSite=None; Secure",
            now,
        )
        .unwrap();
        assert_eq!(cookie.value, "general=in");
        assert_eq!(cookie.max_age, Some(15_552_000));
        assert_eq!(cookie.same_site.as_deref(), Some("None"));
        assert!(cookie.secure);
        let expired = parse_set_cookie("a=b; Expires=Thu, 01 Jan 1970 00:00:00 GMT", now).unwrap();
        assert!(expired.is_removal());
        let session = parse_set_cookie("a=b", now).unwrap();
        assert_eq!(session.max_age, None);
        assert!(!session.secure);
        assert!(parse_set_cookie("garbage", now).is_none());
    }
}
