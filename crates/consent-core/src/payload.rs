//! `setConsent` payloads in the three standards, validated on the client with typed errors.
//!
//! The Web SDK sends consent objects to the server unchecked and lets the server answer 400; we
//! check them before anything is sent, with the messages of the Web SDK's validators and the error
//! codes the Edge server uses, so that `consent-server` can reuse the same checks.

use std::fmt;

use serde_json::{Map, Value};

use crate::types::{Decision, Purpose};

/// A consent standard and version that the engine understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Standard {
    /// `{standard: "Adobe", version: "1.0", value: {general: "in"|"out"}}`.
    AdobeV1,
    /// `{standard: "Adobe", version: "2.0", value: <XDM consents>}`.
    AdobeV2,
    /// `{standard: "IAB TCF", version: "2.0", value: <TC string>, gdprApplies, gdprContainsPersonalData?}`.
    IabTcf,
}

impl Standard {
    /// The `standard` field.
    pub const fn name(self) -> &'static str {
        match self {
            Standard::AdobeV1 | Standard::AdobeV2 => "Adobe",
            Standard::IabTcf => "IAB TCF",
        }
    }

    /// The `version` field.
    pub const fn version(self) -> &'static str {
        match self {
            Standard::AdobeV1 => "1.0",
            Standard::AdobeV2 | Standard::IabTcf => "2.0",
        }
    }
}

impl fmt::Display for Standard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name(), self.version())
    }
}

/// An invalid consent object or `setConsent` options.
///
/// The message names the offending field as the Web SDK's validators do
/// (`'consent[0].value.general': Expected one of these values: ["in","out"], but got "IN".`);
/// [`PayloadError::edge_code`] and [`PayloadError::http_status`] give the answer an Edge server
/// sends for the same input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// A required option or field is missing.
    #[error("'{path}' is a required option")]
    Required {
        /// The field, e.g. `consent`.
        path: String,
    },
    /// A field has the wrong JSON type.
    #[error("'{path}': Expected {expected}, but got {got}.")]
    WrongType {
        /// The field.
        path: String,
        /// What was expected, e.g. `an array`.
        expected: &'static str,
        /// The received value, JSON-encoded.
        got: String,
    },
    /// A field holds a value outside its enumeration.
    #[error("'{path}': Expected one of these values: {allowed}, but got {got}.")]
    NotOneOf {
        /// The field.
        path: String,
        /// The allowed values, as a JSON array.
        allowed: &'static str,
        /// The received value, JSON-encoded.
        got: String,
    },
    /// A field that the standard does not define.
    #[error("'{path}': Unknown field.")]
    UnknownField {
        /// The field.
        path: String,
    },
    /// A standard or version the engine does not support.
    #[error(
        "'{path}': Unsupported consent standard {standard} version {version}; expected Adobe 1.0, Adobe 2.0 or IAB TCF 2.0."
    )]
    UnsupportedStandard {
        /// The consent object.
        path: String,
        /// The `standard` received, JSON-encoded.
        standard: String,
        /// The `version` received, JSON-encoded.
        version: String,
    },
    /// A consent object without its `value`.
    #[error("'{path}.value' is a required option")]
    MissingValue {
        /// The consent object.
        path: String,
    },
    /// A consent object whose `value` is empty.
    #[error("'{path}.value': Expected a non-empty value, but got {got}.")]
    EmptyValue {
        /// The consent object.
        path: String,
        /// The received value, JSON-encoded.
        got: String,
    },
    /// An IAB TCF string that does not decode.
    #[error("'{path}.value': Invalid IAB TCF consent string: {reason}")]
    InvalidTcString {
        /// The consent object.
        path: String,
        /// What the decoder said.
        reason: String,
    },
}

impl PayloadError {
    /// The Edge error code for this error (`EXEG-0102-400`, `EXEG-0103-400`, `EXEG-0104-422`).
    pub fn edge_code(&self) -> &'static str {
        match self {
            PayloadError::MissingValue { .. } => "EXEG-0103-400",
            PayloadError::EmptyValue { .. } | PayloadError::InvalidTcString { .. } => {
                "EXEG-0104-422"
            }
            _ => "EXEG-0102-400",
        }
    }

    /// The HTTP status an Edge server answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            PayloadError::EmptyValue { .. } | PayloadError::InvalidTcString { .. } => 422,
            _ => 400,
        }
    }
}

fn json_of(value: &Value) -> String {
    value.to_string()
}

/// The XDM `val` choices, case-sensitive.
const XDM_VALS: &str = r#"["y","n","p","u","dy","dn","LI","CT","CP","VI","PI"]"#;

/// Maps an XDM `val` to a decision: `y` is in, `n` is out, anything else (pending verification,
/// unknown, defaults, legal bases) is pending. Returns `None` for a value outside the enumeration.
fn xdm_decision(val: &str) -> Option<Decision> {
    match val {
        "y" => Some(Decision::In),
        "n" => Some(Decision::Out),
        "p" | "u" | "dy" | "dn" | "LI" | "CT" | "CP" | "VI" | "PI" => Some(Decision::Pending),
        _ => None,
    }
}

/// What a consent object, or a whole `setConsent` call, decides: `general` and the named purposes.
///
/// This is the one place where the three standards are turned into decisions; the engine and
/// `consent-server` both use it ([`SetConsentOptions::decide`]), so they cannot disagree.
///
/// - Adobe 1.0 decides `general` and speaks for every purpose at once ([`Self::all_purposes`]):
///   purposes with a decision of their own go back to following `general`.
/// - Adobe 2.0 maps `collect` to `general` (`y` in, `n` out, every other value pending) and each
///   XDM field to its purpose, with `marketing.any` governing every channel it is not overridden
///   for (`n` overrides every channel; `y` makes every channel `y` unless it is explicitly `n`;
///   any other value is the decision of every channel that has none of its own), and id-level
///   values (`idSpecific`) honoured as strictly as this device can: an id-level `n` or pending
///   makes the whole purpose at least that strict, an id-level `y` never loosens it.
/// - IAB TCF decides `general` only: in when `gdprApplies` is false or the string grants purpose 1
///   and the configured vendor, out otherwise.
/// - Several objects in one call: for `general` and for every purpose the strictest decision wins,
///   whatever the order of the objects (an Adobe 1.0 object counts as its `general` for every
///   purpose, so it never erases another object's denial).
///
/// ```
/// use consent_core::{ConsentDecision, Decision, Purpose, SetConsentOptions, TcfDecoder};
/// use serde_json::json;
///
/// let options = SetConsentOptions::from_json(&json!({"consent": [
///     {"standard": "Adobe", "version": "2.0", "value": {"collect": {"val": "y"}, "share": {"val": "n"}}},
///     {"standard": "Adobe", "version": "1.0", "value": {"general": "in"}},
/// ]}))?;
/// let decision: ConsentDecision = options.decide(&TcfDecoder, 565)?;
/// assert_eq!(decision.general, Some(Decision::In));
/// assert_eq!(decision.purpose(Purpose::SHARE), Some(Decision::Out), "the denial stands");
/// # Ok::<(), consent_core::PayloadError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConsentDecision {
    /// The decision for `general`, when the call makes one.
    pub general: Option<Decision>,
    /// Decisions for named purposes, one entry per purpose.
    pub purposes: Vec<(Purpose, Decision)>,
    /// When the call speaks for all purposes at once (Adobe 1.0): the decision it gives every
    /// purpose (the strictest of its Adobe 1.0 objects). Applied, it makes the purposes without
    /// an entry in [`Self::purposes`] follow `general` again.
    pub all_purposes: Option<Decision>,
}

impl ConsentDecision {
    /// The decision this call makes for `purpose`: its own entry, or the one it gives all
    /// purposes (Adobe 1.0); `None` when the call leaves the purpose as it was.
    pub fn purpose(&self, purpose: Purpose) -> Option<Decision> {
        if purpose == Purpose::GENERAL {
            return self.general;
        }
        self.own(purpose).or(self.all_purposes)
    }

    fn own(&self, purpose: Purpose) -> Option<Decision> {
        self.purposes
            .iter()
            .find(|(p, _)| *p == purpose)
            .map(|(_, d)| *d)
    }

    /// Makes `purpose` at least as strict as `decision` (never looser than what it already says).
    pub(crate) fn restrict(&mut self, purpose: Purpose, decision: Decision) {
        if purpose == Purpose::GENERAL {
            self.general = Some(stricter_of(self.general, decision));
            return;
        }
        match self.purposes.iter_mut().find(|(p, _)| *p == purpose) {
            Some(entry) => entry.1 = entry.1.stricter(decision),
            None => self.purposes.push((purpose, decision)),
        }
    }

    /// Combines two objects of one call: the strictest decision wins for `general` and for every
    /// purpose, so the result does not depend on their order.
    pub(crate) fn merge(&mut self, other: &ConsentDecision) {
        let mut named: Vec<Purpose> = self.purposes.iter().map(|(p, _)| *p).collect();
        for (p, _) in &other.purposes {
            if !named.contains(p) {
                named.push(*p);
            }
        }
        let purposes = named
            .into_iter()
            .filter_map(|p| Some((p, strictest(self.purpose(p), other.purpose(p))?)))
            .collect();
        self.general = strictest(self.general, other.general);
        self.all_purposes = strictest(self.all_purposes, other.all_purposes);
        self.purposes = purposes;
    }
}

fn stricter_of(current: Option<Decision>, decision: Decision) -> Decision {
    current.map_or(decision, |c| c.stricter(decision))
}

/// The stricter of two optional decisions; either one alone when the other is missing.
fn strictest(a: Option<Decision>, b: Option<Decision>) -> Option<Decision> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.stricter(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    AdobeV1 {
        general: Decision,
    },
    AdobeV2 {
        decision: ConsentDecision,
    },
    IabTcf {
        tc_string: String,
        gdpr_applies: bool,
        contains_personal_data: Option<bool>,
    },
}

/// One validated consent object, kept with the JSON it was made from (which is what is sent).
///
/// ```
/// use consent_core::{ConsentObject, Standard};
///
/// let object = ConsentObject::adobe_v1("in").unwrap();
/// assert_eq!(object.standard(), Standard::AdobeV1);
/// assert_eq!(object.to_json()["value"]["general"], "in");
///
/// let err = ConsentObject::adobe_v1("IN").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"'consent[0].value.general': Expected one of these values: ["in","out"], but got "IN"."#
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentObject {
    standard: Standard,
    body: Body,
    json: Value,
}

impl ConsentObject {
    /// An Adobe 1.0 object `{general: value}`; `value` must be `"in"` or `"out"`.
    pub fn adobe_v1(general: &str) -> Result<Self, PayloadError> {
        Self::from_json(&serde_json::json!({
            "standard": "Adobe", "version": "1.0", "value": {"general": general}
        }))
    }

    /// An Adobe 2.0 object whose value is the XDM consents (`{"collect": {"val": "y"}, …}`).
    pub fn adobe_v2(consents: Value) -> Result<Self, PayloadError> {
        Self::from_json(&serde_json::json!({
            "standard": "Adobe", "version": "2.0", "value": consents
        }))
    }

    /// An IAB TCF 2.0 object. The TC string is decoded by the engine's IAB evaluator when the
    /// object reaches the engine.
    pub fn iab_tcf(tc_string: &str, gdpr_applies: bool) -> Result<Self, PayloadError> {
        Self::from_json(&serde_json::json!({
            "standard": "IAB TCF", "version": "2.0", "value": tc_string, "gdprApplies": gdpr_applies
        }))
    }

    /// Validates one consent object given as JSON, as element 0 of the `consent` array.
    pub fn from_json(value: &Value) -> Result<Self, PayloadError> {
        Self::from_json_at(value, "consent[0]")
    }

    fn from_json_at(value: &Value, path: &str) -> Result<Self, PayloadError> {
        let Value::Object(map) = value else {
            return Err(PayloadError::WrongType {
                path: path.to_owned(),
                expected: "an object",
                got: json_of(value),
            });
        };
        let standard = map.get("standard").unwrap_or(&Value::Null);
        let version = map.get("version").unwrap_or(&Value::Null);
        let kind = match (standard.as_str(), version.as_str()) {
            (Some("Adobe"), Some("1.0")) => Standard::AdobeV1,
            (Some("Adobe"), Some("2.0")) => Standard::AdobeV2,
            (Some("IAB TCF"), Some("2.0")) => Standard::IabTcf,
            _ => {
                return Err(PayloadError::UnsupportedStandard {
                    path: path.to_owned(),
                    standard: json_of(standard),
                    version: json_of(version),
                });
            }
        };
        let allowed_fields: &[&str] = match kind {
            Standard::AdobeV1 | Standard::AdobeV2 => &["standard", "version", "value"],
            Standard::IabTcf => &[
                "standard",
                "version",
                "value",
                "gdprApplies",
                "gdprContainsPersonalData",
            ],
        };
        reject_unknown(map, allowed_fields, path)?;
        let Some(inner) = map.get("value").filter(|v| !v.is_null()) else {
            return Err(PayloadError::MissingValue {
                path: path.to_owned(),
            });
        };
        let value_path = format!("{path}.value");
        let body = match kind {
            Standard::AdobeV1 => parse_adobe_v1(inner, &value_path)?,
            Standard::AdobeV2 => parse_adobe_v2(inner, &value_path)?,
            Standard::IabTcf => parse_iab(map, inner, path)?,
        };
        Ok(Self {
            standard: kind,
            body,
            json: value.clone(),
        })
    }

    /// The standard and version.
    pub fn standard(&self) -> Standard {
        self.standard
    }

    /// The object as JSON, exactly as it is sent to the server.
    pub fn to_json(&self) -> &Value {
        &self.json
    }

    /// The object as JSON, exactly as it is sent to the server, without a copy.
    ///
    /// ```
    /// use consent_core::ConsentObject;
    ///
    /// let object = ConsentObject::adobe_v1("in").unwrap();
    /// assert_eq!(object.into_json()["value"]["general"], "in");
    /// ```
    pub fn into_json(self) -> Value {
        self.json
    }

    /// For IAB TCF objects: the TC string and `gdprApplies`.
    pub fn iab(&self) -> Option<(&str, bool)> {
        match &self.body {
            Body::IabTcf {
                tc_string,
                gdpr_applies,
                ..
            } => Some((tc_string, *gdpr_applies)),
            _ => None,
        }
    }

    /// For IAB TCF objects: `gdprContainsPersonalData`, when given.
    pub fn gdpr_contains_personal_data(&self) -> Option<bool> {
        match &self.body {
            Body::IabTcf {
                contains_personal_data,
                ..
            } => *contains_personal_data,
            _ => None,
        }
    }

    /// What this object decides. `index` is its place in the call's `consent` array (it names
    /// the object in an error); `iab` and `vendor_id` evaluate an IAB TCF string.
    ///
    /// A TC string that does not decode is refused with [`PayloadError::InvalidTcString`].
    pub fn decide(
        &self,
        index: usize,
        iab: &dyn IabEvaluator,
        vendor_id: u16,
    ) -> Result<ConsentDecision, PayloadError> {
        match &self.body {
            Body::AdobeV1 { general } => Ok(ConsentDecision {
                general: Some(*general),
                purposes: Vec::new(),
                all_purposes: Some(*general),
            }),
            Body::AdobeV2 { decision } => Ok(decision.clone()),
            Body::IabTcf {
                tc_string,
                gdpr_applies,
                ..
            } => {
                let general = if !gdpr_applies {
                    Decision::In
                } else {
                    match iab.grants_collection(tc_string, vendor_id) {
                        Ok(true) => Decision::In,
                        Ok(false) => Decision::Out,
                        Err(reason) => {
                            return Err(PayloadError::InvalidTcString {
                                path: format!("consent[{index}]"),
                                reason,
                            });
                        }
                    }
                };
                Ok(ConsentDecision {
                    general: Some(general),
                    purposes: Vec::new(),
                    all_purposes: None,
                })
            }
        }
    }
}

fn reject_unknown(
    map: &Map<String, Value>,
    allowed: &[&str],
    path: &str,
) -> Result<(), PayloadError> {
    match map.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(PayloadError::UnknownField {
            path: format!("{path}.{key}"),
        }),
        None => Ok(()),
    }
}

fn parse_adobe_v1(value: &Value, path: &str) -> Result<Body, PayloadError> {
    let Value::Object(map) = value else {
        return Err(PayloadError::WrongType {
            path: path.to_owned(),
            expected: "an object",
            got: json_of(value),
        });
    };
    reject_unknown(map, &["general"], path)?;
    let general = map.get("general").ok_or_else(|| PayloadError::Required {
        path: format!("{path}.general"),
    })?;
    let decision = match general.as_str() {
        Some("in") => Decision::In,
        Some("out") => Decision::Out,
        _ => {
            return Err(PayloadError::NotOneOf {
                path: format!("{path}.general"),
                allowed: r#"["in","out"]"#,
                got: json_of(general),
            });
        }
    };
    Ok(Body::AdobeV1 { general: decision })
}

/// `value` as a JSON object, or the Web SDK's "Expected an object" error for `path`.
fn object_at<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, PayloadError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(PayloadError::WrongType {
            path: path.to_owned(),
            expected: "an object",
            got: json_of(other),
        }),
    }
}

/// Reads `{val: <choice>, ...}`: `val` is required and must be one of the XDM choices; `time`,
/// when present, must be an RFC 3339 date-time; the other fields the XDM type allows (`reason`,
/// `idType`, `subscriptions`) are accepted as given.
fn parse_field(value: &Value, path: &str, extra: &[&str]) -> Result<Decision, PayloadError> {
    let map = object_at(value, path)?;
    let mut allowed = vec!["val"];
    allowed.extend_from_slice(extra);
    reject_unknown(map, &allowed, path)?;
    if let Some(time) = map.get("time") {
        check_date_time(time, &format!("{path}.time"))?;
    }
    let val = map.get("val").ok_or_else(|| PayloadError::Required {
        path: format!("{path}.val"),
    })?;
    val.as_str()
        .and_then(xdm_decision)
        .ok_or_else(|| PayloadError::NotOneOf {
            path: format!("{path}.val"),
            allowed: XDM_VALS,
            got: json_of(val),
        })
}

/// Refuses anything but an RFC 3339 date-time string (`2019-01-01T15:52:25+00:00`,
/// `2024-02-29T23:59:60.5Z`): the XDM `time` and `metadata.time` fields are date-times.
fn check_date_time(value: &Value, path: &str) -> Result<(), PayloadError> {
    if value.as_str().is_some_and(is_rfc3339_date_time) {
        Ok(())
    } else {
        Err(PayloadError::WrongType {
            path: path.to_owned(),
            expected: "an RFC 3339 date-time string",
            got: json_of(value),
        })
    }
}

/// `full-date "T" full-time` of RFC 3339 §5.6, with the calendar checked (leap years included).
fn is_rfc3339_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    ) else {
        return false;
    };
    if !(at(4, b'-')
        && at(7, b'-')
        && (at(10, b'T') || at(10, b't'))
        && at(13, b':')
        && at(16, b':'))
    {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len()
                && at(i + 3, b':')
                && num(i + 1, 2).is_some_and(|h| h <= 23)
                && num(i + 4, 2).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

/// The XDM consent fields of an Adobe 2.0 value, at the top level and for each id in
/// `idSpecific`.
const CONSENT_FIELDS: [&str; 5] = ["collect", "share", "personalize", "marketing", "adID"];

/// The fields an Adobe 2.0 value may hold at the top level besides the consent fields.
const TOP_LEVEL_FIELDS: [&str; 2] = ["metadata", "idSpecific"];

fn parse_adobe_v2(value: &Value, path: &str) -> Result<Body, PayloadError> {
    let map = object_at(value, path)?;
    if map.is_empty() {
        return Err(PayloadError::EmptyValue {
            path: path.trim_end_matches(".value").to_owned(),
            got: "{}".to_owned(),
        });
    }
    reject_unknown(
        map,
        &[&CONSENT_FIELDS[..], &TOP_LEVEL_FIELDS].concat(),
        path,
    )?;
    let mut decision = parse_consents(map, path)?;
    if let Some(metadata) = map.get("metadata") {
        let mpath = format!("{path}.metadata");
        let mmap = object_at(metadata, &mpath)?;
        reject_unknown(mmap, &["time"], &mpath)?;
        if let Some(time) = mmap.get("time") {
            check_date_time(time, &format!("{mpath}.time"))?;
        }
    }
    if let Some(id_specific) = map.get("idSpecific") {
        parse_id_specific(id_specific, &format!("{path}.idSpecific"), &mut decision)?;
    }
    Ok(Body::AdobeV2 { decision })
}

/// Reads the consent fields (`collect`, `share`, `adID`, `personalize`, `marketing`) of `map`,
/// which the caller has already checked for unknown fields.
fn parse_consents(map: &Map<String, Value>, path: &str) -> Result<ConsentDecision, PayloadError> {
    let mut decision = ConsentDecision::default();
    if let Some(collect) = map.get("collect") {
        decision.general = Some(parse_field(collect, &format!("{path}.collect"), &["time"])?);
    }
    if let Some(share) = map.get("share") {
        let d = parse_field(share, &format!("{path}.share"), &["time"])?;
        decision.purposes.push((Purpose::SHARE, d));
    }
    if let Some(ad_id) = map.get("adID") {
        let d = parse_field(ad_id, &format!("{path}.adID"), &["idType", "time"])?;
        if let Some(id_type) = ad_id.get("idType")
            && !matches!(id_type.as_str(), Some("IDFA" | "GAID"))
        {
            return Err(PayloadError::NotOneOf {
                path: format!("{path}.adID.idType"),
                allowed: r#"["IDFA","GAID"]"#,
                got: json_of(id_type),
            });
        }
        decision.purposes.push((Purpose::AD_ID, d));
    }
    if let Some(personalize) = map.get("personalize") {
        let ppath = format!("{path}.personalize");
        let pmap = object_at(personalize, &ppath)?;
        reject_unknown(pmap, &["content"], &ppath)?;
        if let Some(content) = pmap.get("content") {
            let d = parse_field(content, &format!("{ppath}.content"), &["time"])?;
            decision.purposes.push((Purpose::PERSONALIZE_CONTENT, d));
        }
    }
    if let Some(marketing) = map.get("marketing") {
        parse_marketing(marketing, &format!("{path}.marketing"), &mut decision)?;
    }
    Ok(decision)
}

/// Reads `idSpecific: {<namespace>: {<id>: {<consent fields>}}}` and honours it as strictly as a
/// device that cannot tell the ids apart can: an id-level `n` (or pending value) makes the whole
/// purpose at least that strict; an id-level `y` never loosens the channel-level decision. The
/// XDM rule "channel-level `n` wins over any id-level value" therefore always holds.
fn parse_id_specific(
    value: &Value,
    path: &str,
    decision: &mut ConsentDecision,
) -> Result<(), PayloadError> {
    for (namespace, ids) in object_at(value, path)? {
        let npath = format!("{path}.{namespace}");
        for (id, consents) in object_at(ids, &npath)? {
            let ipath = format!("{npath}.{id}");
            let imap = object_at(consents, &ipath)?;
            reject_unknown(imap, &CONSENT_FIELDS, &ipath)?;
            let own = parse_consents(imap, &ipath)?;
            let general = own.general.map(|d| (Purpose::GENERAL, d));
            for (purpose, d) in general.into_iter().chain(own.purposes) {
                if d != Decision::In {
                    decision.restrict(purpose, d);
                }
            }
        }
    }
    Ok(())
}

/// The values of `marketing.preferred`, as the error message lists them.
const MARKETING_PREFERRED: &str = r#"["email","push","inApp","sms","whatsApp","phone","phyMail","inVehicle","inHome","iot","social","other","none","unknown"]"#;

/// Whether `value` is exactly one of [`MARKETING_PREFERRED`].
fn is_marketing_preferred(value: &str) -> bool {
    MARKETING_PREFERRED
        .trim_matches(['[', ']'])
        .split(',')
        .any(|allowed| allowed.trim_matches('"') == value)
}

/// Reads `marketing`, applying `marketing.any` to every channel it is not overridden for, as the
/// XDM reference says: `n` ignores every finer setting; `y` makes every channel `y` unless it is
/// explicitly `n`; any other value (`p`, `u`, `dy`, `dn`, …: pending) is the decision of every
/// channel without one of its own; unset leaves each channel to itself.
fn parse_marketing(
    value: &Value,
    path: &str,
    decision: &mut ConsentDecision,
) -> Result<(), PayloadError> {
    let map = object_at(value, path)?;
    let mut allowed = vec!["preferred", "any"];
    allowed.extend(Purpose::MARKETING_CHANNELS.iter().map(|(name, _)| *name));
    reject_unknown(map, &allowed, path)?;
    if let Some(preferred) = map.get("preferred")
        && !preferred.as_str().is_some_and(is_marketing_preferred)
    {
        return Err(PayloadError::NotOneOf {
            path: format!("{path}.preferred"),
            allowed: MARKETING_PREFERRED,
            got: json_of(preferred),
        });
    }
    let field_extras = ["time", "reason", "subscriptions"];
    let any = match map.get("any") {
        Some(any) => Some(parse_field(any, &format!("{path}.any"), &field_extras)?),
        None => None,
    };
    if let Some(any) = any {
        decision.purposes.push((Purpose::MARKETING_ANY, any));
    }
    for (name, purpose) in Purpose::MARKETING_CHANNELS {
        let own = match map.get(name) {
            Some(channel) => Some(parse_field(
                channel,
                &format!("{path}.{name}"),
                &field_extras,
            )?),
            None => None,
        };
        let effective = match (any, own) {
            (Some(Decision::Out), _) | (Some(Decision::In), Some(Decision::Out)) => {
                Some(Decision::Out)
            }
            (Some(Decision::In), _) => Some(Decision::In),
            (Some(Decision::Pending), own) => Some(own.unwrap_or(Decision::Pending)),
            (None, own) => own,
        };
        if let Some(d) = effective {
            decision.purposes.push((purpose, d));
        }
    }
    Ok(())
}

fn parse_iab(map: &Map<String, Value>, value: &Value, path: &str) -> Result<Body, PayloadError> {
    let Some(tc) = value.as_str() else {
        return Err(PayloadError::WrongType {
            path: format!("{path}.value"),
            expected: "a TC string",
            got: json_of(value),
        });
    };
    if tc.is_empty() {
        return Err(PayloadError::EmptyValue {
            path: path.to_owned(),
            got: json_of(value),
        });
    }
    let flag = |name: &str| -> Result<Option<bool>, PayloadError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(PayloadError::WrongType {
                path: format!("{path}.{name}"),
                expected: "a boolean",
                got: json_of(other),
            }),
        }
    };
    Ok(Body::IabTcf {
        tc_string: tc.to_owned(),
        // Without `gdprApplies` the strict reading applies: the string must grant consent.
        gdpr_applies: flag("gdprApplies")?.unwrap_or(true),
        contains_personal_data: flag("gdprContainsPersonalData")?,
    })
}

/// Validated `setConsent` options: the consent objects, and optionally an identity map and
/// configuration overrides.
///
/// [`SetConsentOptions::from_json`] accepts and rejects exactly what the Web SDK's option
/// validator does, with its messages, and additionally validates every consent object.
#[derive(Debug, Clone, PartialEq)]
pub struct SetConsentOptions {
    /// The consent objects, in order.
    pub consent: Vec<ConsentObject>,
    /// The identity map sent as the body's top-level `identityMap`.
    pub identity_map: Option<Value>,
    /// Configuration overrides, sent as `meta.configOverrides`.
    pub edge_config_overrides: Option<Value>,
}

impl SetConsentOptions {
    /// Options carrying the given consent objects and nothing else.
    pub fn new(consent: Vec<ConsentObject>) -> Self {
        Self {
            consent,
            identity_map: None,
            edge_config_overrides: None,
        }
    }

    /// Validates `{consent: [...], identityMap?, edgeConfigOverrides?}`.
    ///
    /// ```
    /// use consent_core::SetConsentOptions;
    /// use serde_json::json;
    ///
    /// let err = SetConsentOptions::from_json(&json!({"consent": []})).unwrap_err();
    /// assert_eq!(err.to_string(), "'consent': Expected a non-empty array, but got [].");
    /// ```
    pub fn from_json(options: &Value) -> Result<Self, PayloadError> {
        let map = match options {
            Value::Null => {
                return Err(PayloadError::Required {
                    path: "undefined".to_owned(),
                });
            }
            Value::Object(map) => map,
            other => {
                return Err(PayloadError::WrongType {
                    path: "undefined".to_owned(),
                    expected: "an object",
                    got: json_of(other),
                });
            }
        };
        reject_unknown(map, &["consent", "identityMap", "edgeConfigOverrides"], "").map_err(
            |err| match err {
                PayloadError::UnknownField { path } => PayloadError::UnknownField {
                    path: path.trim_start_matches('.').to_owned(),
                },
                other => other,
            },
        )?;
        let consent = match map.get("consent") {
            None | Some(Value::Null) => {
                return Err(PayloadError::Required {
                    path: "consent".to_owned(),
                });
            }
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(PayloadError::WrongType {
                    path: "consent".to_owned(),
                    expected: "a non-empty array",
                    got: "[]".to_owned(),
                });
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| ConsentObject::from_json_at(item, &format!("consent[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(PayloadError::WrongType {
                    path: "consent".to_owned(),
                    expected: "an array",
                    got: json_of(other),
                });
            }
        };
        let identity_map = match map.get("identityMap") {
            None | Some(Value::Null) => None,
            Some(value) => {
                validate_identity_map(value)?;
                Some(value.clone())
            }
        };
        let edge_config_overrides = match map.get("edgeConfigOverrides") {
            None | Some(Value::Null) => None,
            Some(value @ Value::Object(_)) => Some(value.clone()),
            Some(other) => {
                return Err(PayloadError::WrongType {
                    path: "edgeConfigOverrides".to_owned(),
                    expected: "an object",
                    got: json_of(other),
                });
            }
        };
        Ok(Self {
            consent,
            identity_map,
            edge_config_overrides,
        })
    }

    /// What the whole call decides: every object's decision, combined so that the strictest
    /// wins for `general` and for every purpose (see [`ConsentDecision`]). The engine and
    /// `consent-server` both decide through this function.
    pub fn decide(
        &self,
        iab: &dyn IabEvaluator,
        vendor_id: u16,
    ) -> Result<ConsentDecision, PayloadError> {
        let mut combined: Option<ConsentDecision> = None;
        for (i, object) in self.consent.iter().enumerate() {
            let one = object.decide(i, iab, vendor_id)?;
            match combined.as_mut() {
                Some(all) => all.merge(&one),
                None => combined = Some(one),
            }
        }
        Ok(combined.unwrap_or_default())
    }

    /// The consent objects as the JSON array sent in the request body.
    pub fn consent_json(&self) -> Vec<Value> {
        self.consent.iter().map(|c| c.to_json().clone()).collect()
    }
}

/// The Web SDK's identity map check: a map of namespaces to arrays of identity objects with only
/// `authenticatedState`, `id`, `namespace`, `primary` and `xid`.
pub fn validate_identity_map(value: &Value) -> Result<(), PayloadError> {
    let Value::Object(map) = value else {
        return Err(PayloadError::WrongType {
            path: "identityMap".to_owned(),
            expected: "an object",
            got: json_of(value),
        });
    };
    for (namespace, identities) in map {
        let npath = format!("identityMap.{namespace}");
        let Value::Array(items) = identities else {
            return Err(PayloadError::WrongType {
                path: npath,
                expected: "an array",
                got: json_of(identities),
            });
        };
        for (i, identity) in items.iter().enumerate() {
            let ipath = format!("{npath}[{i}]");
            let Value::Object(fields) = identity else {
                return Err(PayloadError::WrongType {
                    path: ipath,
                    expected: "an object",
                    got: json_of(identity),
                });
            };
            reject_unknown(
                fields,
                &["authenticatedState", "id", "namespace", "primary", "xid"],
                &ipath,
            )?;
            for (field, check) in [
                ("id", Value::is_string as fn(&Value) -> bool),
                ("xid", Value::is_string),
                ("primary", Value::is_boolean),
            ] {
                if let Some(v) = fields.get(field)
                    && !check(v)
                {
                    return Err(PayloadError::WrongType {
                        path: format!("{ipath}.{field}"),
                        expected: if field == "primary" {
                            "true or false"
                        } else {
                            "a string"
                        },
                        got: json_of(v),
                    });
                }
            }
            if let Some(state) = fields.get("authenticatedState")
                && !matches!(
                    state.as_str(),
                    Some("ambiguous" | "authenticated" | "loggedOut")
                )
            {
                return Err(PayloadError::NotOneOf {
                    path: format!("{ipath}.authenticatedState"),
                    allowed: r#"["ambiguous","authenticated","loggedOut"]"#,
                    got: json_of(state),
                });
            }
            if let Some(ns) = fields.get("namespace") {
                let ok = ns.as_object().is_some_and(|o| {
                    o.keys().all(|k| k == "code") && o.get("code").is_none_or(Value::is_string)
                });
                if !ok {
                    return Err(PayloadError::WrongType {
                        path: format!("{ipath}.namespace"),
                        expected: "an object with a string code",
                        got: json_of(ns),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Decides what an IAB TCF string means for data collection.
///
/// The engine asks it once per IAB consent object, when the object arrives; a string it cannot
/// decode is refused with [`PayloadError::InvalidTcString`] and changes nothing.
pub trait IabEvaluator: fmt::Debug + Send + Sync {
    /// Whether `tc_string` grants purpose 1 (store and access information on a device) and
    /// consent for `vendor_id`. `Err` carries the decoder's reason.
    fn grants_collection(&self, tc_string: &str, vendor_id: u16) -> Result<bool, String>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(options: Value, expected: Result<usize, &str>) {
        match (SetConsentOptions::from_json(&options), expected) {
            (Ok(parsed), Ok(n)) => assert_eq!(parsed.consent.len(), n, "{options}"),
            (Err(err), Err(message)) => assert_eq!(err.to_string(), message, "{options}"),
            (got, want) => panic!("{options}: got {got:?}, want {want:?}"),
        }
    }

    const IN: &str = r#"{"standard":"Adobe","version":"1.0","value":{"general":"in"}}"#;

    fn adobe_in() -> Value {
        serde_json::from_str(IN).unwrap()
    }

    #[test]
    fn set_consent_options_match_the_web_sdk_validator() {
        check(json!(null), Err("'undefined' is a required option"));
        check(
            json!("in"),
            Err(r#"'undefined': Expected an object, but got "in"."#),
        );
        check(json!({}), Err("'consent' is a required option"));
        check(
            json!({"consent": []}),
            Err("'consent': Expected a non-empty array, but got []."),
        );
        check(
            json!({"consent": {}}),
            Err("'consent': Expected an array, but got {}."),
        );
        check(
            json!({"consent": [adobe_in()], "foo": 1}),
            Err("'foo': Unknown field."),
        );
        check(json!({"consent": [adobe_in()]}), Ok(1));
        check(
            json!({"consent": [{"standard": "IAB TCF", "version": "2.0", "value": "1234abcd", "gdprApplies": true}, adobe_in()]}),
            Ok(2),
        );
        check(
            json!({"consent": [adobe_in()], "identityMap": {"HYP": [{}]}}),
            Ok(1),
        );
        check(
            json!({"consent": [adobe_in()], "identityMap": {"HYP": [{"id": "1234", "authenticatedState": "ambiguous"}]}}),
            Ok(1),
        );
        check(
            json!({"consent": [adobe_in()], "identityMap": {"email": []}}),
            Ok(1),
        );
        check(
            json!({"consent": [adobe_in()], "identityMap": {"HYP": [{"blah": "1234"}]}}),
            Err("'identityMap.HYP[0].blah': Unknown field."),
        );
        check(
            json!({"consent": [adobe_in()], "identityMap": []}),
            Err("'identityMap': Expected an object, but got []."),
        );
        check(
            json!({"consent": [adobe_in()], "identityMap": {"email": [[]]}}),
            Err("'identityMap.email[0]': Expected an object, but got []."),
        );
        check(
            json!({"consent": [adobe_in()], "edgeConfigOverrides": {}}),
            Ok(1),
        );
        check(
            json!({"consent": [adobe_in()], "edgeConfigOverrides": {"datastreamId": "x"}}),
            Ok(1),
        );
        // Stricter than the Web SDK, which leaves the contents to the server.
        check(
            json!({"consent": [1]}),
            Err("'consent[0]': Expected an object, but got 1."),
        );
    }

    fn object(value: Value) -> Result<ConsentObject, PayloadError> {
        ConsentObject::from_json(&value)
    }

    fn code(value: Value) -> &'static str {
        object(value).unwrap_err().edge_code()
    }

    #[test]
    fn standards_are_checked_with_edge_codes() {
        // Adobe 1.0 accepts only `general` (production Edge answers EXEG-0102-400).
        let err =
            object(json!({"standard": "Adobe", "version": "1.0", "value": {"analytics": "in"}}))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "'consent[0].value.analytics': Unknown field."
        );
        assert_eq!((err.edge_code(), err.http_status()), ("EXEG-0102-400", 400));
        assert_eq!(
            code(json!({"standard": "IAB", "version": "2.0", "value": "x", "gdprApplies": true})),
            "EXEG-0102-400"
        );
        assert_eq!(
            code(
                json!({"standard": "IAB TCF", "version": "6.9", "value": "x", "gdprApplies": true})
            ),
            "EXEG-0102-400"
        );
        let missing = object(json!({"standard": "IAB TCF", "version": "2.0", "gdprApplies": true}))
            .unwrap_err();
        assert_eq!(missing.edge_code(), "EXEG-0103-400");
        assert_eq!(
            missing.to_string(),
            "'consent[0].value' is a required option"
        );
        let empty = object(
            json!({"standard": "IAB TCF", "version": "2.0", "value": "", "gdprApplies": true}),
        )
        .unwrap_err();
        assert_eq!(
            (empty.edge_code(), empty.http_status()),
            ("EXEG-0104-422", 422)
        );
        assert_eq!(
            code(json!({"standard": "Adobe", "version": "1.0", "value": {"general": "pending"}})),
            "EXEG-0102-400"
        );
        assert_eq!(
            code(
                json!({"standard": "IAB TCF", "version": "2.0", "value": "x", "gdprApplies": "yes"})
            ),
            "EXEG-0102-400"
        );
    }

    fn local(value: Value) -> ConsentDecision {
        ConsentObject::adobe_v2(value)
            .unwrap()
            .decide(0, &TcfDecoder, 565)
            .unwrap()
    }

    #[test]
    fn adobe_v2_collect_decides_general() {
        for (val, expected) in [
            ("y", Decision::In),
            ("n", Decision::Out),
            ("p", Decision::Pending),
            ("u", Decision::Pending),
            ("dy", Decision::Pending),
            ("dn", Decision::Pending),
            ("LI", Decision::Pending),
            ("CT", Decision::Pending),
            ("CP", Decision::Pending),
            ("VI", Decision::Pending),
            ("PI", Decision::Pending),
        ] {
            assert_eq!(
                local(json!({"collect": {"val": val}})).general,
                Some(expected),
                "{val}"
            );
        }
        let err = ConsentObject::adobe_v2(json!({"collect": {"val": "Y"}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"'consent[0].value.collect.val': Expected one of these values: ["y","n","p","u","dy","dn","LI","CT","CP","VI","PI"], but got "Y"."#
        );
        let err = ConsentObject::adobe_v2(json!({"collect": {}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'consent[0].value.collect.val' is a required option"
        );
        assert!(ConsentObject::adobe_v2(json!({})).is_err());
        assert!(ConsentObject::adobe_v2(json!({"colect": {"val": "y"}})).is_err());
        assert!(ConsentObject::adobe_v2(json!({"adID": {"val": "y", "idType": "X"}})).is_err());
        assert!(
            ConsentObject::adobe_v2(json!({"marketing": {"preferred": "carrier pigeon"}})).is_err()
        );
    }

    #[test]
    fn adobe_v2_purposes_and_marketing_any() {
        let d = local(json!({
            "collect": {"val": "y"},
            "share": {"val": "n"},
            "personalize": {"content": {"val": "y"}},
            "adID": {"val": "p", "idType": "IDFA"},
            "metadata": {"time": "2019-01-01T15:52:25+00:00"}
        }));
        assert_eq!(d.general, Some(Decision::In));
        assert!(d.purposes.contains(&(Purpose::SHARE, Decision::Out)));
        assert!(
            d.purposes
                .contains(&(Purpose::PERSONALIZE_CONTENT, Decision::In))
        );
        assert!(d.purposes.contains(&(Purpose::AD_ID, Decision::Pending)));
        assert_eq!(d.all_purposes, None);

        // `any: n` overrides every channel.
        let d = local(json!({"marketing": {"any": {"val": "n"}, "email": {"val": "y"}}}));
        assert_eq!(d.general, None);
        assert!(
            d.purposes
                .contains(&(Purpose::MARKETING_EMAIL, Decision::Out))
        );
        assert!(
            d.purposes
                .contains(&(Purpose::MARKETING_SMS, Decision::Out))
        );
        // `any: y` fills unset channels, explicit `n` still wins.
        let d = local(json!({"marketing": {"any": {"val": "y"}, "email": {"val": "n"}}}));
        assert!(
            d.purposes
                .contains(&(Purpose::MARKETING_EMAIL, Decision::Out))
        );
        assert!(
            d.purposes
                .contains(&(Purpose::MARKETING_PUSH, Decision::In))
        );
        // Unset `any` leaves each channel to itself.
        let d = local(json!({"marketing": {"push": {"val": "n"}}}));
        assert_eq!(d.purposes, vec![(Purpose::MARKETING_PUSH, Decision::Out)]);
        // `any` with any other value is every channel's decision unless the channel has its own.
        for any in ["p", "u", "dy", "dn", "LI"] {
            let d = local(json!({"marketing": {"any": {"val": any}, "push": {"val": "y"}}}));
            assert_eq!(
                d.purpose(Purpose::MARKETING_EMAIL),
                Some(Decision::Pending),
                "{any}"
            );
            assert_eq!(
                d.purpose(Purpose::MARKETING_PUSH),
                Some(Decision::In),
                "{any}"
            );
        }
        // `any: y` treats finer settings as `y` unless they are explicitly `n`.
        let d = local(json!({"marketing": {"any": {"val": "y"}, "email": {"val": "p"}}}));
        assert_eq!(d.purpose(Purpose::MARKETING_EMAIL), Some(Decision::In));
    }

    fn decide(consent: Value) -> ConsentDecision {
        SetConsentOptions::from_json(&json!({ "consent": consent }))
            .unwrap()
            .decide(&TcfDecoder, 565)
            .unwrap()
    }

    #[test]
    fn several_objects_take_the_strictest_decision_in_any_order() {
        let v1 = |g: &str| json!({"standard": "Adobe", "version": "1.0", "value": {"general": g}});
        let v2 = |value: Value| json!({"standard": "Adobe", "version": "2.0", "value": value});
        let share_n = v2(json!({"collect": {"val": "y"}, "share": {"val": "n"}}));
        let share_y = v2(json!({"collect": {"val": "y"}, "share": {"val": "y"}}));
        let pending = v2(json!({"collect": {"val": "p"}}));
        let collect_n = v2(json!({"collect": {"val": "n"}}));
        let share_only_y = v2(json!({"share": {"val": "y"}}));
        let (i, o, p) = (Decision::In, Decision::Out, Decision::Pending);
        // (objects, general, share, the decision given to all purposes)
        for (objects, general, share, all) in [
            (vec![share_n.clone(), v1("in")], i, o, Some(i)),
            (vec![v1("in"), share_n.clone()], i, o, Some(i)),
            (vec![share_y.clone(), share_n.clone()], i, o, None),
            (vec![share_n.clone(), share_y.clone()], i, o, None),
            (vec![share_y.clone(), v1("out")], o, o, Some(o)),
            (vec![v1("in"), pending.clone()], p, i, Some(i)),
            (vec![pending.clone(), v1("in")], p, i, Some(i)),
            // Adobe 1.0 gives every purpose its own general, not the call's combined one.
            (
                vec![collect_n.clone(), v1("in"), share_only_y.clone()],
                o,
                i,
                Some(i),
            ),
            (
                vec![share_only_y.clone(), collect_n.clone(), v1("in")],
                o,
                i,
                Some(i),
            ),
            (
                vec![v1("in"), share_only_y.clone(), collect_n.clone()],
                o,
                i,
                Some(i),
            ),
        ] {
            let d = decide(json!(objects));
            assert_eq!(d.general, Some(general), "{objects:?}");
            assert_eq!(d.purpose(Purpose::SHARE), Some(share), "{objects:?}");
            assert_eq!(d.all_purposes, all, "{objects:?}");
        }
        // An object that does not speak of a purpose leaves it to the others.
        let d = decide(json!([share_y, v2(json!({"collect": {"val": "y"}}))]));
        assert_eq!(d.purpose(Purpose::SHARE), Some(Decision::In));
        assert_eq!(d.purpose(Purpose::AD_ID), None);
    }

    #[test]
    fn an_undecodable_tc_string_names_its_object() {
        let err = SetConsentOptions::from_json(&json!({"consent": [
            {"standard": "Adobe", "version": "1.0", "value": {"general": "in"}},
            {"standard": "IAB TCF", "version": "2.0", "value": "not a TC string", "gdprApplies": true},
        ]}))
        .unwrap()
        .decide(&TcfDecoder, 565)
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("'consent[1].value': Invalid IAB TCF consent string:"),
            "{err}"
        );
        assert_eq!(err.edge_code(), "EXEG-0104-422");
    }

    #[test]
    fn date_times_follow_rfc_3339() {
        for ok in [
            "2019-01-01T15:52:25+00:00",
            "2019-01-01T15:52:25Z",
            "2019-01-01t15:52:25.123456z",
            "2024-02-29T23:59:60-12:30",
        ] {
            assert!(is_rfc3339_date_time(ok), "{ok}");
        }
        for bad in [
            "",
            "not a date",
            "2019-01-01",
            "2019-01-01 15:52:25Z",
            "2019-01-01T15:52:25",
            "2019-13-01T15:52:25Z",
            "2023-02-29T15:52:25Z",
            "2019-01-01T24:00:00Z",
            "2019-01-01T15:52:25.Z",
            "2019-01-01T15:52:25+0000",
            "2019-01-01T15:52:25+24:00",
            "2019-01-01T15:52:25Z ",
            "２019-01-01T15:52:25Z",
        ] {
            assert!(!is_rfc3339_date_time(bad), "{bad}");
        }
        let err = ConsentObject::adobe_v2(json!({"collect": {"val": "y", "time": 5}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'consent[0].value.collect.time': Expected an RFC 3339 date-time string, but got 5."
        );
    }

    #[test]
    fn iab_objects_keep_their_flags() {
        let o = ConsentObject::iab_tcf("CO1", false).unwrap();
        assert_eq!(o.iab(), Some(("CO1", false)));
        let o = object(json!({"standard": "IAB TCF", "version": "2.0", "value": "CO1", "gdprContainsPersonalData": true}))
            .unwrap();
        assert_eq!(o.iab(), Some(("CO1", true)), "gdprApplies defaults to true");
        assert_eq!(o.gdpr_contains_personal_data(), Some(true));
        assert!(
            object(json!({"standard": "IAB TCF", "version": "2.0", "value": "CO1", "extra": 1}))
                .is_err()
        );
    }
}

/// The IAB evaluation with this project's TC string codec ([`consent_tcf::TcString`]): purpose 1
/// (store and access information on a device) and the vendor must both have consent. The engine
/// uses it unless [`crate::Config::iab_evaluator`] sets another.
///
/// ```
/// use consent_core::{IabEvaluator, TcfDecoder};
/// use consent_tcf::TcString;
///
/// let granted = TcString::builder().purpose_consent(1, true).vendor_consent(565, true).build()?;
/// assert_eq!(TcfDecoder.grants_collection(&granted.encode(), 565), Ok(true));
/// let no_vendor = TcString::builder().purpose_consent(1, true).build()?;
/// assert_eq!(TcfDecoder.grants_collection(&no_vendor.encode(), 565), Ok(false));
/// assert!(TcfDecoder.grants_collection("not a TC string!", 565).is_err());
/// # Ok::<(), consent_tcf::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TcfDecoder;

impl IabEvaluator for TcfDecoder {
    fn grants_collection(&self, tc_string: &str, vendor_id: u16) -> Result<bool, String> {
        let tc = consent_tcf::TcString::parse(tc_string).map_err(|err| err.to_string())?;
        Ok(tc.purpose_consent(1) && tc.vendor_consent(vendor_id))
    }
}
