//! The Edge-compatible endpoints: `interact`, `collect`, `privacy/set-consent`, `identity/acquire`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use consent_core::{
    CONSENT_COOKIE_MAX_AGE, CookieNames, Decision, PayloadError, SetConsentOptions, Standard,
};
use serde_json::{Value, json};

use crate::db::ProfileKey;
use crate::ops::inc;
use crate::server::AppState;

/// The identity cookie's max-age, as Edge sends it (395 days).
const IDENTITY_MAX_AGE: u64 = 34_128_000;
/// The cluster cookie's max-age (30 minutes).
const CLUSTER_MAX_AGE: u64 = 1800;

/// Which Edge action a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Interact,
    Collect,
    SetConsent,
    Acquire,
}

/// An Edge error response: `application/problem+json` with the Edge code in `type`.
#[derive(Debug)]
pub(crate) struct EdgeError {
    status: StatusCode,
    code: String,
    title: &'static str,
    detail: String,
    request_id: String,
}

impl EdgeError {
    fn invalid(code: &str, status: u16, detail: String, request_id: &str) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code: code.to_owned(),
            title: if status == 422 {
                "Unprocessable consent value"
            } else {
                "Invalid request"
            },
            detail,
            request_id: request_id.to_owned(),
        }
    }

    fn payload(err: &PayloadError, request_id: &str) -> Self {
        Self::invalid(
            err.edge_code(),
            err.http_status(),
            err.to_string(),
            request_id,
        )
    }

    fn internal(request_id: &str) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "EXEG-0500-500".to_owned(),
            title: "Internal server error",
            detail: "The request could not be processed.".to_owned(),
            request_id: request_id.to_owned(),
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("https://ns.adobe.com/aep/errors/{}", self.code),
            "status": self.status.as_u16(),
            "title": self.title,
            "detail": self.detail,
            "report": {"requestId": self.request_id},
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The query parameters an Edge request is read for; others are ignored.
#[derive(Debug, Default)]
pub(crate) struct EdgeQuery {
    config_id: Option<String>,
    request_id: Option<String>,
    /// A parameter read here that was given more than once.
    repeated: Option<&'static str>,
}

impl EdgeQuery {
    /// Picks `configId` and `requestId` out of the decoded pairs (decoding never fails: a bad
    /// escape stays as it is), noting one that is repeated.
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut query = Self::default();
        for (name, value) in pairs {
            let (field, name) = match name.as_str() {
                "configId" => (&mut query.config_id, "configId"),
                "requestId" => (&mut query.request_id, "requestId"),
                _ => continue,
            };
            if field.is_some() {
                query.repeated.get_or_insert(name);
            }
            field.get_or_insert(value);
        }
        query
    }
}

/// Handles one Edge request.
pub(crate) async fn handle(
    state: Arc<AppState>,
    action: Action,
    location_hint: Option<String>,
    query: EdgeQuery,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, EdgeError> {
    let request_id = query
        .request_id
        .filter(|r| !r.is_empty() && r.len() <= 128)
        .unwrap_or_else(crate::server::unique_id);
    if let Some(name) = query.repeated {
        return Err(EdgeError::invalid(
            "EXEG-0003-400",
            400,
            format!("The '{name}' query parameter must be given once."),
            &request_id,
        ));
    }
    let Some(config_id) = query.config_id.filter(|c| !c.is_empty()) else {
        return Err(EdgeError::invalid(
            "EXEG-0003-400",
            400,
            "The 'configId' query parameter is required.".to_owned(),
            &request_id,
        ));
    };
    let (org, sandbox) = state.datastream(&config_id);
    let body: Value = if body.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(body).map_err(|err| {
            EdgeError::invalid(
                "EXEG-0102-400",
                400,
                format!("The request body is not valid JSON: {err}"),
                &request_id,
            )
        })?
    };
    if !body.is_object() {
        return Err(EdgeError::invalid(
            "EXEG-0102-400",
            400,
            "The request body must be a JSON object.".to_owned(),
            &request_id,
        ));
    }
    let names = CookieNames::new(&org);
    let (ecid, minted) = match find_ecid(&body, headers, &names) {
        Some(ecid) => (ecid, false),
        None => (mint_ecid(), true),
    };
    let key = ProfileKey {
        org: org.clone(),
        sandbox,
        namespace: "ECID".to_owned(),
        id: ecid.clone(),
    };
    let cluster = location_hint
        .filter(|h| h.len() <= 16 && h.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| state.config.default_cluster.clone());
    let internal = |err: crate::db::StoreError| {
        tracing::error!(%err, "storage failed");
        EdgeError::internal(&request_id)
    };

    let mut warnings = Vec::new();
    let general = match action {
        Action::SetConsent => {
            let general = set_consent(&state, &key, body, &request_id).await?;
            match general {
                Some(d) => Some(d),
                None => stored_general(&state, &key, minted)
                    .await
                    .map_err(internal)?,
            }
        }
        Action::Interact | Action::Collect => {
            let events = match body.get("events") {
                Some(Value::Array(events)) if !events.is_empty() => events,
                other => {
                    let got = other.map_or_else(|| "undefined".to_owned(), Value::to_string);
                    return Err(EdgeError::invalid(
                        "EXEG-0102-400",
                        400,
                        format!("'events': Expected a non-empty array, but got {got}."),
                        &request_id,
                    ));
                }
            };
            let general = stored_general(&state, &key, minted)
                .await
                .map_err(internal)?;
            // A compliant client sends nothing while consent is out or pending (the engine and
            // the Web SDK hold or decline such commands), so storing what arrives anyway would
            // make the server looser than the client: it is only counted.
            let refusal = match general {
                Some(Decision::Out) => Some((
                    &state.metrics.events_refused,
                    "Consent declined",
                    "The profile has declined consent; the events were not stored.",
                )),
                Some(Decision::Pending) => Some((
                    &state.metrics.events_refused_pending,
                    "Consent pending",
                    "The profile's consent is pending; the events were not stored.",
                )),
                Some(Decision::In) | None => None,
            };
            if let Some((counter, title, detail)) = refusal {
                for _ in events {
                    inc(counter);
                }
                warnings.push(json!({
                    "type": "https://ns.adobe.com/aep/errors/EXEG-0301-200",
                    "status": 200,
                    "title": title,
                    "detail": detail,
                    "report": {"count": events.len()},
                }));
            } else {
                for event in events {
                    let event_id = event
                        .pointer("/xdm/_id")
                        .or_else(|| event.pointer("/xdm/eventId"))
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty() && id.len() <= 256)
                        .map_or_else(crate::server::unique_id, str::to_owned);
                    if state
                        .db
                        .insert_event(&key, &event_id, event)
                        .await
                        .map_err(internal)?
                    {
                        inc(&state.metrics.events_stored);
                    } else {
                        inc(&state.metrics.events_duplicate);
                    }
                }
            }
            general
        }
        Action::Acquire => stored_general(&state, &key, minted)
            .await
            .map_err(internal)?,
    };

    if action == Action::Collect {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let identity = identity_cookie(&ecid);
    let consent_value;
    let mut store = vec![
        StoreEntry {
            key: names.identity(),
            value: &identity,
            max_age: IDENTITY_MAX_AGE,
        },
        StoreEntry {
            key: names.cluster(),
            value: &cluster,
            max_age: CLUSTER_MAX_AGE,
        },
    ];
    // A pending decision is sent as `general=pending`, the cookie the engine writes itself for
    // it, rather than left out: without it a client would keep an older `general=in`.
    if let Some(decision) = general {
        consent_value = format!("general={}", decision.as_str());
        store.push(StoreEntry {
            key: names.consent(),
            value: &consent_value,
            max_age: CONSENT_COOKIE_MAX_AGE,
        });
    }
    let answer = Answer {
        request_id: &request_id,
        handle: [
            Handle::Identity([IdentityResult {
                id: &ecid,
                namespace: Namespace { code: "ECID" },
            }]),
            Handle::Store(&store),
        ],
        warnings: &warnings,
    };
    let body = serde_json::to_string(&answer).map_err(|err| {
        tracing::error!(%err, "serialising an answer failed");
        EdgeError::internal(&request_id)
    })?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// An Edge answer, serialised straight from borrowed parts.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    request_id: &'a str,
    handle: [Handle<'a>; 2],
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    warnings: &'a [Value],
}

#[derive(serde::Serialize)]
#[serde(tag = "type", content = "payload")]
enum Handle<'a> {
    #[serde(rename = "identity:result")]
    Identity([IdentityResult<'a>; 1]),
    #[serde(rename = "state:store")]
    Store(&'a [StoreEntry<'a>]),
}

#[derive(serde::Serialize)]
struct IdentityResult<'a> {
    id: &'a str,
    namespace: Namespace,
}

#[derive(serde::Serialize)]
struct Namespace {
    code: &'static str,
}

/// A `state:store` entry: a cookie for the client to write.
#[derive(serde::Serialize)]
struct StoreEntry<'a> {
    key: &'a str,
    value: &'a str,
    #[serde(rename = "maxAge")]
    max_age: u64,
}

/// The stored `general` decision, `None` when the profile has none (or is new).
async fn stored_general(
    state: &AppState,
    key: &ProfileKey,
    minted: bool,
) -> Result<Option<Decision>, crate::db::StoreError> {
    if minted {
        return Ok(None);
    }
    Ok(state
        .db
        .profile(key)
        .await?
        .and_then(|p| profile_general(&p)))
}

/// The `general` decision a stored profile holds.
///
/// The writer creates every profile with `general` "pending" as a placeholder (a preference
/// update or an Adobe 2.0 call without `collect` can create one), so "pending" alone is no
/// decision and the profile is treated as undecided, as it always was. A set-consent call that
/// decides pending always writes its XDM `collect` value beside it ([`xdm_collect`]), so
/// "pending" with a `collect` value is a decision the person made: it is answered as
/// `general=pending` and the profile's events are not stored.
fn profile_general(profile: &crate::db::Profile) -> Option<Decision> {
    match Decision::from_wire(&profile.general)? {
        Decision::Pending if profile.consents.get("collect").is_none() => None,
        decision => Some(decision),
    }
}

/// The XDM `collect` value that records a `general` decision in the profile: `y` for in, `n`
/// for out, and for pending the call's own value (the last `collect` of its Adobe 2.0 objects
/// that is neither `y` nor `n`, such as `p` or `dy`), else `p` (pending verification). Pending
/// is never written as `y` or `n`: the profile would then say what the person did not.
fn xdm_collect(decision: Decision, xdm_updates: &[Value]) -> String {
    match decision {
        Decision::In => "y".to_owned(),
        Decision::Out => "n".to_owned(),
        Decision::Pending => xdm_updates
            .iter()
            .rev()
            .filter_map(|update| update.pointer("/collect/val").and_then(Value::as_str))
            .find(|val| !matches!(*val, "y" | "n"))
            .unwrap_or("p")
            .to_owned(),
    }
}

/// Validates and applies a set-consent body; returns the `general` decision it made.
///
/// The decision is [`SetConsentOptions::decide`]'s, the function the engine decides with, so
/// the server and the engine cannot disagree about a body (several objects: the strictest
/// wins, out over pending over in, whatever their order). A pending decision (an Adobe 2.0
/// `collect` other than `y` or `n`, alone or beside objects that say in) is applied like the
/// others, because the person's latest call replaces what was stored: `general` is stored as
/// "pending" with the call's own `collect` value ([`xdm_collect`]), the record says "pending",
/// it counts as `consent_decisions_total{general="pending"}`, the answer carries
/// `general=pending`, and the profile's events are not stored until a later call says in. A
/// call that decides nothing about `general` (Adobe 2.0 without `collect`) keeps the stored
/// decision.
async fn set_consent(
    state: &AppState,
    key: &ProfileKey,
    mut body: Value,
    request_id: &str,
) -> Result<Option<Decision>, EdgeError> {
    // Only the fields the Web SDK's option validator knows are validated by it; `query` and
    // `meta` are request plumbing.
    let mut options = serde_json::Map::new();
    if let Some(fields) = body.as_object_mut() {
        for field in ["consent", "identityMap"] {
            if let Some(v) = fields.remove(field) {
                options.insert(field.to_owned(), v);
            }
        }
    }
    let refuse = |err: PayloadError| {
        inc(&state.metrics.consent_invalid);
        EdgeError::payload(&err, request_id)
    };
    let options = SetConsentOptions::from_json(&Value::Object(options)).map_err(refuse)?;
    // A TC string that does not decode is refused here, as an invalid payload.
    let decision = options
        .decide(state.config.iab.as_ref(), state.config.iab_vendor_id)
        .map_err(refuse)?
        .general;
    let xdm_updates: Vec<Value> = options
        .consent
        .iter()
        .filter(|object| object.standard() == Standard::AdobeV2)
        .filter_map(|object| object.to_json().get("value").cloned())
        .collect();
    match decision {
        Some(Decision::In) => inc(&state.metrics.consent_in),
        Some(Decision::Out) => inc(&state.metrics.consent_out),
        Some(Decision::Pending) | None => inc(&state.metrics.consent_pending),
    }
    let collect = decision.map(|d| xdm_collect(d, &xdm_updates));
    let edit = move |consents: &mut Value, _subs: &mut Value| {
        for update in &xdm_updates {
            merge(consents, update);
        }
        if let Some(val) = &collect {
            consents["collect"] = json!({"val": val});
        }
        // Every set-consent call is recorded, even one that repeats the stored consent: the
        // record is the evidence that it was given again, and when.
        true
    };
    let consent: Vec<Value> = options
        .consent
        .into_iter()
        .map(consent_core::ConsentObject::into_json)
        .collect();
    let payload = json!({
        "requestId": request_id,
        "consent": consent,
        "general": decision.map(Decision::as_str),
    });
    state
        .db
        .apply_consent(
            key,
            crate::db::ConsentChange {
                general: decision.map(|d| d.as_str().to_owned()),
                edit: Box::new(edit),
                source: "edge:set-consent".to_owned(),
                payload,
            },
        )
        .await
        .map_err(|err| {
            tracing::error!(%err, "storage failed");
            EdgeError::internal(request_id)
        })?;
    Ok(decision)
}

/// Deep-merges `update` into `target`: objects merge key by key, anything else replaces.
pub(crate) fn merge(target: &mut Value, update: &Value) {
    match (target, update) {
        (Value::Object(t), Value::Object(u)) => {
            for (k, v) in u {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, u) => *t = u.clone(),
    }
}

/// Finds the visitor's ECID: the identity map, then the identity cookie in `meta.state`, then
/// the `Cookie` header.
fn find_ecid(body: &Value, headers: &HeaderMap, names: &CookieNames) -> Option<String> {
    let valid =
        |id: &str| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_digit());
    for pointer in ["/identityMap/ECID/0/id", "/xdm/identityMap/ECID/0/id"] {
        if let Some(id) = body.pointer(pointer).and_then(Value::as_str)
            && valid(id)
        {
            return Some(id.to_owned());
        }
    }
    if let Some(entries) = body
        .pointer("/meta/state/entries")
        .and_then(Value::as_array)
    {
        for entry in entries {
            if entry.get("key").and_then(Value::as_str) == Some(names.identity())
                && let Some(id) = entry
                    .get("value")
                    .and_then(Value::as_str)
                    .and_then(decode_identity_cookie)
                && valid(&id)
            {
                return Some(id);
            }
        }
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == names.identity()
                && let Some(id) = decode_identity_cookie(value)
                && valid(&id)
            {
                return Some(id);
            }
        }
    }
    None
}

/// A 38-digit ECID.
fn mint_ecid() -> String {
    let mut bytes = [0u8; 16];
    // Should the OS refuse randomness, fall back on the clock: an ECID is an identifier, not a
    // secret.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    let n = u128::from_le_bytes(bytes);
    format!("{:038}", n % 10u128.pow(38))
}

/// The identity cookie: base64 of a protobuf message whose field 1 is the ECID, as Edge's is.
fn identity_cookie(ecid: &str) -> String {
    let mut message = vec![0x0a, u8::try_from(ecid.len()).unwrap_or(0)];
    message.extend_from_slice(ecid.as_bytes());
    STANDARD.encode(message)
}

fn decode_identity_cookie(value: &str) -> Option<String> {
    let bytes = STANDARD.decode(value.trim()).ok()?;
    let (&tag, rest) = bytes.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if tag != 0x0a || rest.len() < usize::from(len) {
        return None;
    }
    String::from_utf8(rest.get(..usize::from(len))?.to_vec()).ok()
}

/// Axum handlers, one per route shape.
pub(crate) mod routes {
    use super::*;
    use axum::extract::Path;

    macro_rules! edge_route {
        ($plain:ident, $hinted:ident, $action:expr) => {
            pub(crate) async fn $plain(
                State(state): State<Arc<AppState>>,
                Query(query): Query<Vec<(String, String)>>,
                headers: HeaderMap,
                body: Bytes,
            ) -> Response {
                let query = EdgeQuery::from_pairs(query);
                handle(state, $action, None, query, &headers, &body)
                    .await
                    .into_response()
            }

            pub(crate) async fn $hinted(
                State(state): State<Arc<AppState>>,
                Path(hint): Path<String>,
                Query(query): Query<Vec<(String, String)>>,
                headers: HeaderMap,
                body: Bytes,
            ) -> Response {
                let query = EdgeQuery::from_pairs(query);
                handle(state, $action, Some(hint), query, &headers, &body)
                    .await
                    .into_response()
            }
        };
    }

    edge_route!(interact, interact_hinted, Action::Interact);
    edge_route!(collect, collect_hinted, Action::Collect);
    edge_route!(set_consent, set_consent_hinted, Action::SetConsent);
    edge_route!(acquire, acquire_hinted, Action::Acquire);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_cookie_round_trips_and_ecids_have_38_digits() {
        let ecid = mint_ecid();
        assert_eq!(ecid.len(), 38);
        assert_eq!(decode_identity_cookie(&identity_cookie(&ecid)), Some(ecid));
        assert_eq!(decode_identity_cookie("not base64!"), None);
        assert_eq!(decode_identity_cookie(""), None);
    }

    #[test]
    fn pending_is_written_as_the_calls_own_collect_value_never_y_or_n() {
        let updates = [
            json!({"collect": {"val": "dy"}}),
            json!({"marketing": {"any": {"val": "n"}}}),
            json!({"collect": {"val": "y"}}),
        ];
        assert_eq!(xdm_collect(Decision::Pending, &updates), "dy");
        assert_eq!(xdm_collect(Decision::Pending, &updates[1..]), "p");
        assert_eq!(xdm_collect(Decision::Pending, &[]), "p");
        assert_eq!(xdm_collect(Decision::In, &updates), "y");
        assert_eq!(xdm_collect(Decision::Out, &updates), "n");
    }

    #[test]
    fn a_stored_pending_is_a_decision_only_beside_a_collect_value() {
        let profile = |general: &str, consents: Value| crate::db::Profile {
            general: general.to_owned(),
            consents,
            subscriptions: json!({}),
            updated_at: 0,
        };
        let placeholder = profile("pending", json!({"marketing": {"email": {"val": "n"}}}));
        assert_eq!(profile_general(&placeholder), None);
        let chosen = profile("pending", json!({"collect": {"val": "p"}}));
        assert_eq!(profile_general(&chosen), Some(Decision::Pending));
        assert_eq!(
            profile_general(&profile("in", json!({}))),
            Some(Decision::In)
        );
        assert_eq!(
            profile_general(&profile("out", json!({}))),
            Some(Decision::Out)
        );
        assert_eq!(profile_general(&profile("foo", json!({}))), None);
    }

    #[test]
    fn merge_is_deep() {
        let mut target = json!({"marketing": {"email": {"val": "y"}}, "collect": {"val": "y"}});
        merge(
            &mut target,
            &json!({"marketing": {"push": {"val": "n"}}, "collect": {"val": "n"}}),
        );
        assert_eq!(
            target,
            json!({"marketing": {"email": {"val": "y"}, "push": {"val": "n"}}, "collect": {"val": "n"}})
        );
    }
}
