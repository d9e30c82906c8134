//! Small value types shared by the whole engine: time, decisions, default consent and purposes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since the Unix epoch.
///
/// The engine never reads a clock: every input carries the driver's `now`. Tests use a virtual clock
/// by simply choosing the numbers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This timestamp moved `secs` seconds later, saturating instead of overflowing.
    pub const fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// Milliseconds from `earlier` to `self`, or zero when `earlier` is later.
    pub const fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// One decision about one purpose: the user (or the server) said yes, no, or not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Consent given: collection for this purpose may proceed.
    In,
    /// Consent refused or withdrawn: nothing is collected for this purpose.
    Out,
    /// No decision yet: commands that need this purpose wait.
    Pending,
}

impl Decision {
    /// The wire spelling: `"in"`, `"out"` or `"pending"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::In => "in",
            Decision::Out => "out",
            Decision::Pending => "pending",
        }
    }

    /// Parses the exact (case-sensitive) wire spelling; anything else is `None`.
    pub fn from_wire(value: &str) -> Option<Self> {
        match value {
            "in" => Some(Decision::In),
            "out" => Some(Decision::Out),
            "pending" => Some(Decision::Pending),
            _ => None,
        }
    }

    /// The more restrictive of two decisions: out over pending over in.
    pub const fn stricter(self, other: Decision) -> Decision {
        match (self, other) {
            (Decision::Out, _) | (_, Decision::Out) => Decision::Out,
            (Decision::Pending, _) | (_, Decision::Pending) => Decision::Pending,
            _ => Decision::In,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The consent state reported by [`crate::Engine::consent`]: the `state` of the Web SDK's
/// `current()`.
pub type ConsentState = Decision;

/// The `defaultConsent` setting: what applies before the user has said anything.
///
/// Parsing is case-sensitive and its error message is the Web SDK's, with the received value
/// JSON-encoded:
///
/// ```
/// use consent_core::DefaultConsent;
///
/// assert_eq!("pending".parse::<DefaultConsent>().unwrap(), DefaultConsent::Pending);
/// let err = "IN".parse::<DefaultConsent>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"'defaultConsent': Expected one of these values: ["in","out","pending"], but got "IN"."#
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultConsent {
    /// Collect until the user opts out. The default when the setting is missing.
    #[default]
    In,
    /// Collect nothing, and keep nothing, until the user opts in.
    Out,
    /// Queue commands until the user decides.
    Pending,
}

impl DefaultConsent {
    /// The decision this default stands for.
    pub const fn decision(self) -> Decision {
        match self {
            DefaultConsent::In => Decision::In,
            DefaultConsent::Out => Decision::Out,
            DefaultConsent::Pending => Decision::Pending,
        }
    }

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        self.decision().as_str()
    }

    /// Reads the setting from a JSON value as the Web SDK does: `null` means the default (`"in"`),
    /// a string must be one of the three values, anything else is an error.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, DefaultConsentError> {
        match value {
            serde_json::Value::Null => Ok(DefaultConsent::In),
            serde_json::Value::String(s) => s.parse(),
            other => Err(DefaultConsentError {
                got: other.to_string(),
            }),
        }
    }
}

impl FromStr for DefaultConsent {
    type Err = DefaultConsentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in" => Ok(DefaultConsent::In),
            "out" => Ok(DefaultConsent::Out),
            "pending" => Ok(DefaultConsent::Pending),
            other => Err(DefaultConsentError {
                got: serde_json::Value::from(other).to_string(),
            }),
        }
    }
}

impl fmt::Display for DefaultConsent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An invalid `defaultConsent` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'defaultConsent': Expected one of these values: [\"in\",\"out\",\"pending\"], but got {got}."
)]
pub struct DefaultConsentError {
    /// The received value, JSON-encoded.
    got: String,
}

impl DefaultConsentError {
    /// The received value, JSON-encoded (`"IN"` with its quotes, `123`, `{"general":"in"}`).
    pub fn received(&self) -> &str {
        &self.got
    }
}

/// How many purposes one engine can tell apart (the well-known ones and the custom ones together).
pub const MAX_PURPOSES: usize = 64;

/// A purpose that consent can be given for, as an index into the engine's purpose table.
///
/// The first purposes are the XDM consent fields that the Adobe 2.0 standard carries; custom ones
/// are registered with [`crate::Config::purpose`]. `general` is the Web SDK's single purpose and the
/// XDM `collect` field: every command needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Purpose(u8);

impl Purpose {
    /// `general`: data collection itself (XDM `collect`). Every [`Requirement`] includes it.
    pub const GENERAL: Purpose = Purpose(0);
    /// XDM `share`: sharing or selling data to second or third parties.
    pub const SHARE: Purpose = Purpose(1);
    /// XDM `personalize.content`.
    pub const PERSONALIZE_CONTENT: Purpose = Purpose(2);
    /// XDM `adID`: linking an advertiser id (IDFA, GAID).
    pub const AD_ID: Purpose = Purpose(3);
    /// XDM `marketing.any`.
    pub const MARKETING_ANY: Purpose = Purpose(4);
    /// XDM `marketing.email`.
    pub const MARKETING_EMAIL: Purpose = Purpose(5);
    /// XDM `marketing.push`.
    pub const MARKETING_PUSH: Purpose = Purpose(6);
    /// XDM `marketing.sms`.
    pub const MARKETING_SMS: Purpose = Purpose(7);
    /// XDM `marketing.whatsApp`.
    pub const MARKETING_WHATSAPP: Purpose = Purpose(8);
    /// XDM `marketing.call`.
    pub const MARKETING_CALL: Purpose = Purpose(9);
    /// XDM `marketing.fax`.
    pub const MARKETING_FAX: Purpose = Purpose(10);
    /// XDM `marketing.commercialEmail`.
    pub const MARKETING_COMMERCIAL_EMAIL: Purpose = Purpose(11);
    /// XDM `marketing.postalMail`.
    pub const MARKETING_POSTAL_MAIL: Purpose = Purpose(12);

    /// The names of the well-known purposes, by index.
    pub(crate) const WELL_KNOWN: [&'static str; 13] = [
        "general",
        "share",
        "personalize.content",
        "adID",
        "marketing.any",
        "marketing.email",
        "marketing.push",
        "marketing.sms",
        "marketing.whatsApp",
        "marketing.call",
        "marketing.fax",
        "marketing.commercialEmail",
        "marketing.postalMail",
    ];

    /// The marketing channels that `marketing.any` governs.
    pub(crate) const MARKETING_CHANNELS: [(&'static str, Purpose); 8] = [
        ("email", Purpose::MARKETING_EMAIL),
        ("push", Purpose::MARKETING_PUSH),
        ("sms", Purpose::MARKETING_SMS),
        ("whatsApp", Purpose::MARKETING_WHATSAPP),
        ("call", Purpose::MARKETING_CALL),
        ("fax", Purpose::MARKETING_FAX),
        ("commercialEmail", Purpose::MARKETING_COMMERCIAL_EMAIL),
        ("postalMail", Purpose::MARKETING_POSTAL_MAIL),
    ];

    pub(crate) const fn from_index(index: usize) -> Option<Purpose> {
        if index < MAX_PURPOSES {
            Some(Purpose(index as u8))
        } else {
            None
        }
    }

    /// The index of this purpose in the engine's table.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    pub(crate) const fn bit(self) -> u64 {
        1u64 << self.0
    }
}

/// The purposes a command needs before it may run: always `general`, plus any named ones.
///
/// A purpose without a decision of its own follows `general`. The check against a requirement is a
/// few mask operations and never allocates.
///
/// ```
/// use consent_core::{Purpose, Requirement};
///
/// let req = Requirement::general().and(Purpose::PERSONALIZE_CONTENT);
/// assert!(req.contains(Purpose::GENERAL));
/// assert!(req.contains(Purpose::PERSONALIZE_CONTENT));
/// assert!(!req.contains(Purpose::SHARE));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Requirement {
    mask: u64,
}

impl Requirement {
    /// Only `general`: what every data collection command needs.
    pub const fn general() -> Self {
        Self {
            mask: Purpose::GENERAL.bit(),
        }
    }

    /// This requirement with `purpose` added.
    #[must_use]
    pub const fn and(self, purpose: Purpose) -> Self {
        Self {
            mask: self.mask | purpose.bit(),
        }
    }

    /// Whether `purpose` is required.
    pub const fn contains(self, purpose: Purpose) -> bool {
        self.mask & purpose.bit() != 0
    }

    pub(crate) const fn mask(self) -> u64 {
        self.mask
    }
}

impl Default for Requirement {
    fn default() -> Self {
        Self::general()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_consent_parses_exactly_the_three_values() {
        for (input, expected) in [
            ("in", Ok(DefaultConsent::In)),
            ("out", Ok(DefaultConsent::Out)),
            ("pending", Ok(DefaultConsent::Pending)),
            ("IN", Err(r#""IN""#)),
            ("unknown", Err(r#""unknown""#)),
            ("", Err(r#""""#)),
            (" in", Err(r#"" in""#)),
        ] {
            let got = input.parse::<DefaultConsent>();
            match expected {
                Ok(value) => assert_eq!(got, Ok(value), "{input:?}"),
                Err(received) => {
                    let err = got.expect_err(input);
                    assert_eq!(err.received(), received);
                    assert_eq!(
                        err.to_string(),
                        format!(
                            "'defaultConsent': Expected one of these values: [\"in\",\"out\",\"pending\"], but got {received}."
                        )
                    );
                }
            }
        }
    }

    #[test]
    fn default_consent_from_json_follows_the_web_sdk() {
        use serde_json::json;
        assert_eq!(
            DefaultConsent::from_json(&json!(null)),
            Ok(DefaultConsent::In)
        );
        assert_eq!(
            DefaultConsent::from_json(&json!("out")),
            Ok(DefaultConsent::Out)
        );
        let err = DefaultConsent::from_json(&json!({"general": "in"})).unwrap_err();
        assert!(
            err.to_string().ends_with(r#"but got {"general":"in"}."#),
            "{err}"
        );
        assert_eq!(
            DefaultConsent::from_json(&json!(123))
                .unwrap_err()
                .received(),
            "123"
        );
        assert_eq!(
            DefaultConsent::from_json(&json!({}))
                .unwrap_err()
                .received(),
            "{}"
        );
    }

    #[test]
    fn stricter_orders_out_pending_in() {
        use Decision::*;
        assert_eq!(In.stricter(In), In);
        assert_eq!(In.stricter(Pending), Pending);
        assert_eq!(Pending.stricter(Out), Out);
        assert_eq!(Out.stricter(In), Out);
    }

    #[test]
    fn timestamps_saturate() {
        assert_eq!(Timestamp(5).millis_since(Timestamp(9)), 0);
        assert_eq!(Timestamp(u64::MAX).plus_secs(10), Timestamp(u64::MAX));
        assert_eq!(Timestamp(1_000).plus_secs(2), Timestamp(3_000));
    }
}
