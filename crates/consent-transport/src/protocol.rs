//! The Edge protocol's request and response bodies, as typed serde structs.
//!
//! Every struct keeps the fields it does not name in an `extra` map, so that a body read and written
//! again loses nothing.

use consent_core::{Action, Cookie, RequestId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::new_time_ordered_uuid;

/// The Edge endpoint a request goes to: `{base}/ee[/{locationHint}]/v1/{path}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `interact`: events whose response the caller reads.
    Interact,
    /// `collect`: events sent without waiting for a response body (the Web SDK's `sendBeacon`).
    Collect,
    /// `privacy/set-consent`: a `setConsent` call.
    SetConsent,
    /// `identity/acquire`: fetch the ECID.
    IdentityAcquire,
}

impl Operation {
    /// The path after `/v1/`.
    pub const fn path(self) -> &'static str {
        match self {
            Operation::Interact => "interact",
            Operation::Collect => "collect",
            Operation::SetConsent => "privacy/set-consent",
            Operation::IdentityAcquire => "identity/acquire",
        }
    }
}

/// A request to an Edge endpoint, with its typed body.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// Events to `interact`.
    Interact(DataRequest),
    /// Events to `collect`.
    Collect(DataRequest),
    /// An `identity/acquire` request.
    IdentityAcquire(DataRequest),
    /// A `privacy/set-consent` request.
    SetConsent(SetConsentRequest),
}

impl Request {
    /// The endpoint this request goes to.
    pub fn operation(&self) -> Operation {
        match self {
            Request::Interact(_) => Operation::Interact,
            Request::Collect(_) => Operation::Collect,
            Request::IdentityAcquire(_) => Operation::IdentityAcquire,
            Request::SetConsent(_) => Operation::SetConsent,
        }
    }

    /// The request's `meta`.
    pub fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Request::Interact(r) | Request::Collect(r) | Request::IdentityAcquire(r) => &mut r.meta,
            Request::SetConsent(r) => &mut r.meta,
        }
    }

    /// The request's body as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Request::Interact(r) | Request::Collect(r) | Request::IdentityAcquire(r) => {
                serde_json::to_vec(r)
            }
            Request::SetConsent(r) => serde_json::to_vec(r),
        }
    }
}

/// One experience event: `xdm` and free-form `data`.
///
/// Every event carries a stable id in `xdm._id`, made when the event is created and kept across
/// re-sends, so that the server can drop a duplicate when a retry follows a lost response. Persist
/// the event (with its id) if it must survive a restart.
///
/// ```
/// use consent_transport::Event;
/// use serde_json::json;
///
/// let event = Event::new(json!({"eventType": "web.webpagedetails.pageViews"}));
/// let id = event.id().unwrap().to_owned();
/// let again: Event = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
/// assert_eq!(again.id(), Some(id.as_str()));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The XDM of the event.
    pub xdm: Map<String, Value>,
    /// Free-form data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Event-level query options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Value>,
    /// Fields this crate does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Event {
    /// An event with this XDM (an object; anything else is put under `xdm.value`), given a fresh
    /// time-ordered (version 7) UUID as `_id` unless it has one.
    pub fn new(xdm: Value) -> Self {
        let mut xdm = match xdm {
            Value::Object(map) => map,
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        if !xdm.get("_id").is_some_and(Value::is_string) {
            xdm.insert("_id".to_owned(), Value::String(new_time_ordered_uuid()));
        }
        Self {
            xdm,
            data: None,
            query: None,
            extra: Map::new(),
        }
    }

    /// Sets `data`.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The event's id (`xdm._id`).
    pub fn id(&self) -> Option<&str> {
        self.xdm.get("_id").and_then(Value::as_str)
    }
}

/// The body of `interact`, `collect` and `identity/acquire` requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DataRequest {
    /// The events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// Request-level query options (`query.identity.fetch`).
    #[serde(default, skip_serializing_if = "Query::is_empty")]
    pub query: Query,
    /// Request metadata (`meta.state`, `meta.configOverrides`, …).
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
    /// Request-level XDM (`xdm.identityMap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdm: Option<Map<String, Value>>,
}

impl DataRequest {
    /// A request carrying `events`, asking for the ECID as the Web SDK does.
    pub fn events(events: Vec<Event>) -> Self {
        Self {
            events,
            query: Query::fetch_ecid(),
            ..Self::default()
        }
    }

    /// An `identity/acquire` body: no events, `query.identity.fetch = ["ECID"]`.
    pub fn identity() -> Self {
        Self::events(Vec::new())
    }

    /// Sets `xdm.identityMap`.
    #[must_use]
    pub fn with_identity_map(mut self, identity_map: Value) -> Self {
        self.xdm
            .get_or_insert_with(Map::new)
            .insert("identityMap".to_owned(), identity_map);
        self
    }
}

/// The body of a `privacy/set-consent` request (reference §5.2, opt-in b.4).
///
/// ```
/// use consent_transport::SetConsentRequest;
/// use serde_json::json;
///
/// let body = SetConsentRequest::new(vec![json!({"standard": "Adobe", "version": "2.0",
///     "value": {"collect": {"val": "y"}}})]);
/// let json = serde_json::to_value(&body).unwrap();
/// assert_eq!(json["query"], json!({"identity": {"fetch": ["ECID"]}, "consent": {"operation": "update"}}));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetConsentRequest {
    /// The consent objects, verbatim.
    pub consent: Vec<Value>,
    /// The identity map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_map: Option<Value>,
    /// Query options: `identity.fetch` and, for Adobe 2.0 updates, `consent.operation`.
    #[serde(default, skip_serializing_if = "Query::is_empty")]
    pub query: Query,
    /// Request metadata.
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
}

impl SetConsentRequest {
    /// A request for these consent objects, fetching the ECID. When every object is Adobe 2.0,
    /// `query.consent.operation` is `"update"` (an incremental update, as the Mobile SDK sends it).
    pub fn new(consent: Vec<Value>) -> Self {
        let all_v2 = !consent.is_empty()
            && consent.iter().all(|c| {
                c.get("standard").and_then(Value::as_str) == Some("Adobe")
                    && c.get("version").and_then(Value::as_str) == Some("2.0")
            });
        let mut query = Query::fetch_ecid();
        if all_v2 {
            query.consent = Some(ConsentQuery {
                operation: "update".to_owned(),
            });
        }
        Self {
            consent,
            identity_map: None,
            query,
            meta: Meta::default(),
        }
    }

    /// The request an engine's [`Action::SendSetConsent`] asks for, with the engine's request id;
    /// `None` for any other action.
    pub fn from_action(action: &Action) -> Option<(RequestId, Self)> {
        match action {
            Action::SendSetConsent {
                request,
                consent,
                identity_map,
                config_overrides,
            } => {
                let mut body = Self::new(consent.clone());
                body.identity_map = identity_map.clone();
                body.meta.config_overrides = config_overrides.clone();
                Some((*request, body))
            }
            _ => None,
        }
    }
}

/// `query`: what the client asks the server to return.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Query {
    /// `query.identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityQuery>,
    /// `query.consent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentQuery>,
    /// Fields this crate does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Query {
    /// `{"identity": {"fetch": ["ECID"]}}`.
    pub fn fetch_ecid() -> Self {
        Self {
            identity: Some(IdentityQuery {
                fetch: vec!["ECID".to_owned()],
            }),
            ..Self::default()
        }
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.identity.is_none() && self.consent.is_none() && self.extra.is_empty()
    }
}

/// `query.identity`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdentityQuery {
    /// The namespaces to fetch (`ECID`, `CORE`).
    pub fetch: Vec<String>,
}

/// `query.consent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentQuery {
    /// `update` for an incremental Adobe 2.0 update.
    pub operation: String,
}

/// `meta`: request metadata.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// `meta.state`: the client's cookies, as the Web SDK transfers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateMeta>,
    /// `meta.configOverrides`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_overrides: Option<Value>,
    /// `meta.sdkConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_config: Option<Value>,
    /// `meta.queueTimeMillis`: how long the events waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time_millis: Option<u64>,
    /// `meta.konductorConfig` (the Mobile SDK's streaming settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub konductor_config: Option<Value>,
    /// Fields this crate does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Meta {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.config_overrides.is_none()
            && self.sdk_config.is_none()
            && self.queue_time_millis.is_none()
            && self.konductor_config.is_none()
            && self.extra.is_empty()
    }
}

/// `meta.state`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateMeta {
    /// The cookie domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Whether the client keeps cookies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookies_enabled: Option<bool>,
    /// The client's `kndctr_<org>_*` cookies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<StateEntry>,
}

/// One cookie in `meta.state.entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The cookie's name.
    pub key: String,
    /// The cookie's value.
    pub value: String,
}

/// A 2xx answer's body: `handle[]`, `warnings[]` and `errors[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeResponse {
    /// The server's id for the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The handles; required, as the Web SDK requires it.
    pub handle: Vec<Handle>,
    /// Warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Problem>,
    /// Non-fatal errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
}

impl EdgeResponse {
    /// The `state:store` items of every handle, in order.
    pub fn state_store(&self) -> Result<Vec<StateStoreItem>, serde_json::Error> {
        let mut items = Vec::new();
        for handle in self.handle.iter().filter(|h| h.kind == Handle::STATE_STORE) {
            items.extend(handle.state_store()?);
        }
        Ok(items)
    }

    /// The signed consent receipts of `consent:receipt` handles (compact JWS, checked with
    /// `consent_core::receipt::verify_with` against the server's published keys), in order.
    pub fn receipts(&self) -> impl Iterator<Item = &str> + '_ {
        self.handles(Handle::CONSENT_RECEIPT)
            .flat_map(|h| h.payload.iter())
            .filter_map(|item| item.get("receipt").and_then(Value::as_str))
    }

    /// The handles of one type.
    pub fn handles<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Handle> + 'a {
        self.handle.iter().filter(move |h| h.kind == kind)
    }
}

/// One entry of `handle[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handle {
    /// The type: `state:store`, `identity:result`, `locationHint:result`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload items.
    #[serde(default)]
    pub payload: Vec<Value>,
    /// The event this handle answers, for event-scoped handles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_index: Option<u32>,
}

impl Handle {
    /// The handle type that asks the client to store cookies.
    pub const STATE_STORE: &'static str = "state:store";
    /// The handle type of consent-server's signed consent receipt (`[{"receipt": "<JWS>"}]`).
    pub const CONSENT_RECEIPT: &'static str = "consent:receipt";

    /// This handle's payload as `state:store` items.
    pub fn state_store(&self) -> Result<Vec<StateStoreItem>, serde_json::Error> {
        self.payload
            .iter()
            .map(StateStoreItem::deserialize)
            .collect()
    }
}

/// One `state:store` item: a cookie the server asks the client to keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateStoreItem {
    /// The cookie's name.
    pub key: String,
    /// The cookie's value.
    pub value: String,
    /// Lifetime in seconds; absent for a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// Cookie attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attrs: Option<StateStoreAttrs>,
}

impl StateStoreItem {
    /// The cookie instruction, as the Web SDK reads it: `SameSite` as sent, and `Secure` when it
    /// is `None` (any case).
    pub fn to_cookie(&self) -> Cookie {
        let same_site = self.attrs.as_ref().and_then(|a| a.same_site.clone());
        let secure = same_site
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("none"));
        Cookie {
            name: self.key.clone(),
            value: self.value.clone(),
            max_age: self.max_age,
            same_site,
            secure,
        }
    }
}

/// `attrs` of a `state:store` item.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StateStoreAttrs {
    /// `SameSite`: `Strict`, `Lax` or `None`.
    #[serde(rename = "SameSite", default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
}

/// A warning or error reported by the server (an RFC 7807 problem, as Edge sends them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Problem {
    /// The type URI, e.g. `https://ns.adobe.com/aep/errors/EXEG-0102-400`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// An explicit code, when the server sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The HTTP status it stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A short summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A message (some servers use this instead of `detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
}

impl Problem {
    /// The problem's code: `code` if set, else the last path segment of `type`
    /// (`EXEG-0102-400` for `https://ns.adobe.com/aep/errors/EXEG-0102-400`).
    ///
    /// ```
    /// let problem: consent_transport::Problem = serde_json::from_str(
    ///     r#"{"type": "https://ns.adobe.com/aep/errors/EXEG-0102-400", "status": 400}"#,
    /// ).unwrap();
    /// assert_eq!(problem.error_code(), Some("EXEG-0102-400"));
    /// ```
    pub fn error_code(&self) -> Option<&str> {
        if let Some(code) = self.code.as_deref() {
            return Some(code);
        }
        let kind = self.kind.as_deref()?;
        let last = kind.rsplit('/').next().unwrap_or(kind);
        (!last.is_empty()).then_some(last)
    }
}

/// The problems in a non-2xx answer's body: its `errors[]`, and the body itself when it is a
/// problem document. Anything that does not parse is skipped.
pub(crate) fn problems_in(body: &[u8]) -> Vec<Problem> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if (value.get("type").is_some() || value.get("code").is_some())
        && let Ok(problem) = Problem::deserialize(&value)
    {
        problems.push(problem);
    }
    for key in ["errors", "warnings"] {
        if let Some(Value::Array(items)) = value.get(key) {
            problems.extend(items.iter().filter_map(|i| Problem::deserialize(i).ok()));
        }
    }
    problems
}

/// The `state:store` cookies in a body, if it is an Edge response; empty otherwise.
pub(crate) fn state_store_cookies_in(body: &[u8]) -> Vec<Cookie> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let Some(Value::Array(handles)) = value.get("handle") else {
        return Vec::new();
    };
    handles
        .iter()
        .filter_map(|h| Handle::deserialize(h).ok())
        .filter(|h| h.kind == Handle::STATE_STORE)
        .flat_map(|h| h.payload)
        .filter_map(|item| StateStoreItem::deserialize(&item).ok())
        .map(|item| item.to_cookie())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        #[test]
        fn any_body_is_read_without_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = problems_in(&body);
            let _ = state_store_cookies_in(&body);
            let _ = serde_json::from_slice::<EdgeResponse>(&body).map(|r| r.state_store());
        }
    }

    #[test]
    fn set_consent_body_matches_the_reference() {
        let body = SetConsentRequest::new(vec![
            json!({"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}),
        ]);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}],
                "query": {"identity": {"fetch": ["ECID"]}}
            })
        );
    }

    #[test]
    fn responses_parse_handles_and_problems() {
        let body = json!({
            "requestId": "r1",
            "handle": [{"type": "state:store", "payload": [
                {"key": "kndctr_ORG_consent", "value": "general=in", "maxAge": 15552000},
                {"key": "kndctr_ORG_identity", "value": "abc", "maxAge": 34128000, "attrs": {"SameSite": "None"}}
            ]}, {"type": "identity:result", "payload": [{"id": "123"}]}],
            "warnings": [{"type": "https://ns.adobe.com/aep/errors/EXEG-0301-200", "status": 200}]
        });
        let response: EdgeResponse = serde_json::from_value(body).unwrap();
        let items = response.state_store().unwrap();
        assert_eq!(items.len(), 2);
        let identity = items[1].to_cookie();
        assert!(identity.secure);
        assert_eq!(identity.same_site.as_deref(), Some("None"));
        assert!(!items[0].to_cookie().secure);
        assert_eq!(response.warnings[0].error_code(), Some("EXEG-0301-200"));
        assert_eq!(response.handles("identity:result").count(), 1);
    }

    #[test]
    fn a_body_without_handle_is_not_a_response() {
        assert!(serde_json::from_value::<EdgeResponse>(json!({"requestId": "x"})).is_err());
    }

    #[test]
    fn problems_come_from_errors_and_the_top_level() {
        let body = br#"{"type":"https://ns.adobe.com/aep/errors/EXEG-0003-400","status":400,
            "errors":[{"type":"https://ns.adobe.com/aep/errors/EXEG-0102-400"},{"code":"X-1"}]}"#;
        let codes: Vec<_> = problems_in(body)
            .iter()
            .filter_map(|p| p.error_code().map(str::to_owned))
            .collect();
        assert_eq!(codes, ["EXEG-0003-400", "EXEG-0102-400", "X-1"]);
        assert!(problems_in(b"<html>").is_empty());
    }

    #[test]
    fn events_keep_unknown_fields_and_their_id() {
        let event: Event =
            serde_json::from_value(json!({"xdm": {"_id": "e1"}, "custom": 1})).unwrap();
        assert_eq!(event.id(), Some("e1"));
        assert_eq!(serde_json::to_value(&event).unwrap()["custom"], 1);
        assert_ne!(
            Event::new(json!({})).id(),
            Event::new(json!({})).id(),
            "fresh ids"
        );
    }
}
