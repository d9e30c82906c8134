//! Cookie names and the consent cookie's format.

use serde::{Deserialize, Serialize};

use crate::types::{Decision, Timestamp};

/// How long the server keeps the consent cookie: 180 days, in seconds.
pub const CONSENT_COOKIE_MAX_AGE: u64 = 15_552_000;

/// A cookie as the engine sees it: instructions coming in from server responses, and the cookie
/// writes it allows going out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cookie {
    /// The cookie's name.
    pub name: String,
    /// The cookie's value.
    pub value: String,
    /// Lifetime in seconds from when it is written; `None` is a session cookie, `Some(0)` removes it.
    pub max_age: Option<u64>,
    /// The `SameSite` attribute, as the server sent it.
    pub same_site: Option<String>,
    /// Whether the cookie is `Secure` (always so with `SameSite=None`).
    pub secure: bool,
}

impl Cookie {
    /// A cookie with a name, a value and a lifetime, and no other attributes.
    pub fn new(name: impl Into<String>, value: impl Into<String>, max_age: Option<u64>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            max_age,
            same_site: None,
            secure: false,
        }
    }

    /// Whether this instruction removes the cookie (`max_age` of zero).
    pub fn is_removal(&self) -> bool {
        self.max_age == Some(0)
    }
}

/// A cookie read from the jar at start-up: its value and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCookie {
    /// The cookie's value.
    pub value: String,
    /// When it expires; `None` for a session cookie.
    pub expires: Option<Timestamp>,
}

impl StoredCookie {
    /// A stored cookie with the given value that does not expire.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            expires: None,
        }
    }
}

/// The names of the cookies of one organisation: `kndctr_<orgId with its first @ replaced by _>_<key>`.
///
/// ```
/// let names = consent_core::CookieNames::new("myorgid@mycompany");
/// assert_eq!(names.consent(), "kndctr_myorgid_mycompany_consent");
/// assert_eq!(names.identity(), "kndctr_myorgid_mycompany_identity");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    consent: String,
    identity: String,
    cluster: String,
}

impl CookieNames {
    /// The names for `org_id`.
    pub fn new(org_id: &str) -> Self {
        let sanitized = org_id.replacen('@', "_", 1);
        Self {
            consent: format!("kndctr_{sanitized}_consent"),
            identity: format!("kndctr_{sanitized}_identity"),
            cluster: format!("kndctr_{sanitized}_cluster"),
        }
    }

    /// The consent cookie: `general=in` or `general=out`, written by the server.
    pub fn consent(&self) -> &str {
        &self.consent
    }

    /// The identity cookie; only its presence matters to consent.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The cluster (location hint) cookie.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

/// Parses a consent cookie value: `;`-separated `name=value` pairs (`general=in;foo=out`).
///
/// Whitespace around names and values is ignored (a cookie jar may add it after `;`); a pair
/// without `=` has an empty value. A name that appears twice takes the stricter value (out over
/// pending over in), and a value that is not a decision wins over one that is, so a duplicated
/// key can never make a cookie read as "in" that also says something else.
///
/// ```
/// assert_eq!(consent_core::general_value("general=out; general=in"), Some("out"));
/// assert_eq!(consent_core::general_value("general=in;general=foo"), Some("foo"));
/// ```
pub fn parse_consent_cookie(value: &str) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for part in value.split(';') {
        if part.trim().is_empty() {
            continue;
        }
        let (name, val) = part.split_once('=').unwrap_or((part, ""));
        let name = name.trim();
        let val = val.trim();
        match pairs.iter_mut().find(|(n, _)| *n == name) {
            Some(pair) => pair.1 = stricter_value(pair.1, val),
            None => pairs.push((name, val)),
        }
    }
    pairs
}

fn stricter_value<'a>(a: &'a str, b: &'a str) -> &'a str {
    match (Decision::from_wire(a), Decision::from_wire(b)) {
        (Some(x), Some(y)) if x.stricter(y) == x => a,
        (Some(_), _) => b,
        (None, _) => a,
    }
}

/// The value of the `general` pair of a consent cookie, if it has one.
///
/// ```
/// assert_eq!(consent_core::general_value("foo=out;general=in"), Some("in"));
/// assert_eq!(consent_core::general_value("foo=out"), None);
/// ```
pub fn general_value(value: &str) -> Option<&str> {
    parse_consent_cookie(value)
        .into_iter()
        .find(|(name, _)| *name == "general")
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_like_the_web_sdk() {
        assert_eq!(
            parse_consent_cookie("foo=in;bar=out"),
            vec![("foo", "in"), ("bar", "out")]
        );
        assert_eq!(parse_consent_cookie("general=in"), vec![("general", "in")]);
        assert_eq!(parse_consent_cookie("general="), vec![("general", "")]);
        assert_eq!(parse_consent_cookie(""), vec![]);
        assert_eq!(general_value("general=in; general=out"), Some("out"));
        assert_eq!(general_value("general="), Some(""));
        assert_eq!(general_value("generally=in"), None);
        assert_eq!(
            parse_consent_cookie("general=in; general=out"),
            vec![("general", "out")]
        );
        // A duplicated key takes the stricter value, whatever the order.
        assert_eq!(general_value("general=out; general=in"), Some("out"));
        assert_eq!(general_value("general=pending;general=in"), Some("pending"));
        assert_eq!(general_value("general=in;general=foo"), Some("foo"));
        assert_eq!(general_value("general=foo;general=in"), Some("foo"));
    }

    #[test]
    fn names_replace_only_the_first_at() {
        let names = CookieNames::new("5BFE274A5F6980A50A495C08@AdobeOrg");
        assert_eq!(
            names.consent(),
            "kndctr_5BFE274A5F6980A50A495C08_AdobeOrg_consent"
        );
        assert_eq!(CookieNames::new("a@b@c").cluster(), "kndctr_a_b@c_cluster");
    }
}
