//! The Edge-compatible endpoints: `interact`, `collect`, `privacy/set-consent`, `identity/acquire`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use consent_core::{
    CONSENT_COOKIE_MAX_AGE, ConsentDecision, CookieNames, Decision, PayloadError, Purpose,
    SetConsentOptions, Standard,
};
use serde_json::{Value, json};

use crate::api::{
    CookieAttrs, EdgeAnswer, Handle, IdentityResult, Namespace, Problem, ReceiptEntry, Report,
    StoreEntry,
};
use crate::db::ProfileKey;
use crate::ops::inc;
use crate::state::AppState;
use crate::util::merge;

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
        let body = Problem {
            kind: format!("https://ns.adobe.com/aep/errors/{}", self.code),
            status: self.status.as_u16(),
            title: self.title.to_owned(),
            detail: self.detail,
            report: Report {
                request_id: Some(self.request_id),
                count: None,
            },
        };
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::to_string(&body).unwrap_or_default(),
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
        .unwrap_or_else(crate::util::unique_id);
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
    // An unknown datastream: the defaults when they are configured, else refused as Edge does.
    let Some((org, sandbox)) = state.datastream(&config_id) else {
        let shown: String = config_id.chars().take(128).collect();
        return Err(EdgeError::invalid(
            "EXEG-0003-400",
            400,
            format!("Invalid datastream ID '{shown}': no such datastream is configured."),
            &request_id,
        ));
    };
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
    // `query.identity.fetch` may ask for the CORE identity beside the ECID.
    let wants_core = body
        .pointer("/query/identity/fetch")
        .and_then(Value::as_array)
        .is_some_and(|fetch| fetch.iter().any(|n| n == "CORE"));
    let identities = read_identities(&body, headers, &names)
        .map_err(|(code, detail)| EdgeError::invalid(code, 400, detail, &request_id))?;
    let (ecid, minted) = match identities.ecid.clone() {
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
    let mut receipt = None;
    let general = match action {
        Action::SetConsent => {
            let wants_receipt = crate::receipts::wanted(state.config.receipts_always, headers);
            let general;
            (general, receipt) = set_consent(
                &state,
                &key,
                body,
                &request_id,
                wants_receipt,
                Restated::Recorded,
                SET_CONSENT_SOURCE,
            )
            .await?;
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
            let mut batch: Vec<(String, &Value)> = Vec::with_capacity(events.len());
            for event in events {
                let event_id = event
                    .pointer("/xdm/_id")
                    .or_else(|| event.pointer("/xdm/eventId"))
                    .and_then(Value::as_str);
                if event_id.is_some_and(|id| id.contains('\0')) {
                    return Err(EdgeError::invalid(
                        "EXEG-0102-400",
                        400,
                        "An event id ('xdm._id') must not contain a NUL character.".to_owned(),
                        &request_id,
                    ));
                }
                let event_id = event_id
                    .filter(|id| !id.is_empty() && id.len() <= 256)
                    .map_or_else(crate::util::unique_id, str::to_owned);
                batch.push((event_id, event));
            }
            // TC strings the events carry (`xdm.consentStrings`) are decided and recorded as a
            // set-consent call with them would be (once the request is known to be valid: a
            // refused request changes nothing); their decision applies to this request's events,
            // and the answer writes the consent cookie. The same strings sent again with every
            // event are recorded once, when they change something.
            let strings = consent_strings(events);
            let decided = if strings.is_empty() {
                None
            } else {
                set_consent(
                    &state,
                    &key,
                    json!({ "consent": strings }),
                    &request_id,
                    false,
                    Restated::NotRecorded,
                    INTERACT_SOURCE,
                )
                .await?
                .0
            };
            let general = match decided {
                Some(decision) => Some(decision),
                None => with_cookie(
                    stored_general(&state, &key, minted && strings.is_empty())
                        .await
                        .map_err(internal)?,
                    identities.consent_cookie,
                ),
            };
            // An event is stored only when every identity it names may be collected: the
            // request's own (its identity map, `xdm.identityMap`, the identity cookie in
            // `meta.state` or the `Cookie` header) and those of its own `xdm.identityMap`. A
            // compliant client sends nothing while consent is out or pending (the engine and the
            // Web SDK hold or decline such commands), so storing what arrives anyway would make
            // the server looser than the client: it is only counted. An identity without a
            // profile (or with an undecided one) restricts nothing, as before.
            let mut decisions: std::collections::HashMap<&str, Option<Decision>> =
                std::collections::HashMap::new();
            decisions.insert(&ecid, general);
            let named = identities
                .request
                .iter()
                .chain(identities.events.iter().flatten());
            for id in named {
                if decisions.contains_key(id.as_str()) {
                    continue;
                }
                let other = ProfileKey {
                    id: id.clone(),
                    ..key.clone()
                };
                let decision = stored_general(&state, &other, false)
                    .await
                    .map_err(internal)?;
                decisions.insert(id, decision);
            }
            let request_decision = strictest(
                std::iter::once(ecid.as_str())
                    .chain(identities.request.iter().map(String::as_str))
                    .map(|id| decisions.get(id).copied().flatten()),
            );
            let mut refused_out = 0usize;
            let mut refused_pending = 0usize;
            let mut kept = Vec::with_capacity(batch.len());
            for (i, event) in batch.into_iter().enumerate() {
                let own = identities.events.get(i).map_or(&[][..], Vec::as_slice);
                let decision = strictest(
                    std::iter::once(request_decision).chain(
                        own.iter()
                            .map(|id| decisions.get(id.as_str()).copied().flatten()),
                    ),
                );
                match decision {
                    Some(Decision::Out) => refused_out += 1,
                    Some(Decision::Pending) => refused_pending += 1,
                    Some(Decision::In) | None => kept.push(event),
                }
            }
            let refusals = [
                (
                    refused_out,
                    &state.metrics.events_refused,
                    "Consent declined",
                    "The profile has declined consent; the events were not stored.",
                ),
                (
                    refused_pending,
                    &state.metrics.events_refused_pending,
                    "Consent pending",
                    "The profile's consent is pending; the events were not stored.",
                ),
            ];
            for (count, counter, title, detail) in refusals {
                if count == 0 {
                    continue;
                }
                counter.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
                warnings.push(Problem {
                    kind: "https://ns.adobe.com/aep/errors/EXEG-0301-200".to_owned(),
                    status: 200,
                    title: title.to_owned(),
                    detail: detail.to_owned(),
                    report: Report {
                        request_id: None,
                        count: Some(count as u64),
                    },
                });
            }
            if !kept.is_empty() {
                // A request that names no identity has a new one each time, a retry included:
                // its events are deduplicated by id alone, as they always were.
                let stored = if minted {
                    state.db.insert_anonymous_events(&key, &kept).await
                } else {
                    state.db.insert_events(&key, &kept).await
                }
                .map_err(internal)?;
                let total = kept.len() as u64;
                state
                    .metrics
                    .events_stored
                    .fetch_add(stored, std::sync::atomic::Ordering::Relaxed);
                state.metrics.events_duplicate.fetch_add(
                    total.saturating_sub(stored),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            general
        }
        Action::Acquire => with_cookie(
            stored_general(&state, &key, minted)
                .await
                .map_err(internal)?,
            identities.consent_cookie,
        ),
    };

    if action == Action::Collect {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let identity = identity_cookie(&ecid);
    let attrs = || {
        state.config.cookie_same_site.map(|same_site| CookieAttrs {
            same_site: same_site.as_str(),
        })
    };
    let consent_value;
    let mut store = vec![
        StoreEntry {
            key: names.identity(),
            value: &identity,
            max_age: IDENTITY_MAX_AGE,
            attrs: attrs(),
        },
        StoreEntry {
            key: names.cluster(),
            value: &cluster,
            max_age: CLUSTER_MAX_AGE,
            attrs: attrs(),
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
            attrs: attrs(),
        });
    }
    let core = wants_core.then(|| core_id(&state, &org, &ecid));
    let mut identity = vec![IdentityResult {
        id: &ecid,
        namespace: Namespace { code: "ECID" },
    }];
    if let Some(core) = &core {
        identity.push(IdentityResult {
            id: core,
            namespace: Namespace { code: "CORE" },
        });
    }
    let mut handle = vec![Handle::Identity(identity), Handle::Store(store)];
    if let Some(receipt) = &receipt {
        handle.push(Handle::Receipt(vec![ReceiptEntry { receipt }]));
    }
    let answer = EdgeAnswer {
        request_id: &request_id,
        handle,
        warnings,
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
/// that is pending, such as `p` or `dy`), else `p` (pending verification). Pending is never
/// written as `y` or `n`: the profile would then say what the person did not.
fn xdm_collect(decision: Decision, xdm_updates: &[Value]) -> String {
    xdm_val(decision, &["collect"], xdm_updates)
}

/// Writes the `collect` value that records the call's `general` decision ([`xdm_collect`]),
/// replacing the whole field: an older `time` or `reason` would date or explain a choice it did
/// not go with. `general` and `collect` are written by the same change, so the stored profile
/// never holds one without the other (`general` "in" beside `y`, "out" beside `n`, "pending"
/// beside a pending value): whatever the stored values were, the call's decision replaces both.
/// A profile whose consents are not an object (only one not written by this server) gets one.
fn set_collect(consents: &mut Value, val: &str) {
    if !consents.is_object() {
        *consents = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(fields) = consents {
        fields.insert("collect".to_owned(), json!({ "val": val }));
    }
}

/// The XDM field of every named purpose, as a path into the profile's consents.
///
/// `consent-core` keeps its own names private, so the server spells the fields out; a test in
/// this file checks each field against the purpose `decide` reads it as, and that a body naming
/// every field names no purpose missing here.
const PURPOSE_FIELDS: [(Purpose, &[&str]); 12] = [
    (Purpose::SHARE, &["share"]),
    (Purpose::PERSONALIZE_CONTENT, &["personalize", "content"]),
    (Purpose::AD_ID, &["adID"]),
    (Purpose::MARKETING_ANY, &["marketing", "any"]),
    (Purpose::MARKETING_EMAIL, &["marketing", "email"]),
    (Purpose::MARKETING_PUSH, &["marketing", "push"]),
    (Purpose::MARKETING_SMS, &["marketing", "sms"]),
    (Purpose::MARKETING_WHATSAPP, &["marketing", "whatsApp"]),
    (Purpose::MARKETING_CALL, &["marketing", "call"]),
    (Purpose::MARKETING_FAX, &["marketing", "fax"]),
    (
        Purpose::MARKETING_COMMERCIAL_EMAIL,
        &["marketing", "commercialEmail"],
    ),
    (Purpose::MARKETING_POSTAL_MAIL, &["marketing", "postalMail"]),
];

/// Whether `val` is one of the XDM values that mean pending (every choice but `y` and `n`).
fn is_pending_val(val: &str) -> bool {
    matches!(
        val,
        "p" | "u" | "dy" | "dn" | "LI" | "CT" | "CP" | "VI" | "PI"
    )
}

/// What a stored XDM `val` stands for. A value outside the enumeration counts as pending, so an
/// unknown stored value is never read as consent.
fn stored_decision(val: &str) -> Decision {
    match val {
        "y" => Decision::In,
        "n" => Decision::Out,
        _ => Decision::Pending,
    }
}

/// The XDM `val` that records `decision` for the field at `path`: `y` for in, `n` for out, and
/// for pending the value the call itself gave the field (from the last Adobe 2.0 object that
/// gives it a pending one, see [`call_val`]), else `p` (pending verification), so that a pending
/// decision keeps the person's own wording (`dn`, `LI`, …) but is never written as `y` or `n`.
fn xdm_val(decision: Decision, path: &[&str], xdm_updates: &[Value]) -> String {
    match decision {
        Decision::In => "y".to_owned(),
        Decision::Out => "n".to_owned(),
        Decision::Pending => xdm_updates
            .iter()
            .rev()
            .filter_map(|update| call_val(update, path))
            .find(|val| is_pending_val(val))
            .unwrap_or("p")
            .to_owned(),
    }
}

/// The value one Adobe 2.0 object gives the field at `path`: its own `val`, except that a
/// marketing channel takes `marketing.any` where `any` governs it (`n` always, `y` unless the
/// channel says `n`, any other value when the channel has none of its own).
///
/// This only chooses which pending value to write; the decision itself is always
/// [`SetConsentOptions::decide`]'s. Without it, a channel that `any: dn` made pending would be
/// stored as `p` and lose the person's "declined by default".
fn call_val<'a>(update: &'a Value, path: &[&str]) -> Option<&'a str> {
    let own = path
        .iter()
        .try_fold(update, |value, key| value.get(key))
        .and_then(|field| field.get("val"))
        .and_then(Value::as_str);
    let ["marketing", channel] = path else {
        return own;
    };
    if *channel == "any" {
        return own;
    }
    match (
        update.pointer("/marketing/any/val").and_then(Value::as_str),
        own,
    ) {
        (Some("n"), _) | (Some("y"), Some("n")) => Some("n"),
        (Some("y"), _) => Some("y"),
        (Some(any), None) => Some(any),
        (_, own) => own,
    }
}

/// Sets the `val` of the field at `path`, creating the field (and the objects above it) when
/// the profile has none, and leaving the field's other members (`time`, `reason`,
/// `subscriptions`, …) as the raw merge left them.
fn set_val(consents: &mut Value, path: &[&str], val: &str) {
    let mut cursor = consents;
    for key in path {
        // Only a profile whose consents were not written by this server can hold something
        // other than an object here; the decision must be stored all the same.
        if !cursor.is_object() {
            *cursor = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = cursor else { return };
        cursor = map.entry((*key).to_owned()).or_insert(Value::Null);
    }
    if !cursor.is_object() {
        *cursor = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(field) = cursor {
        field.insert("val".to_owned(), Value::from(val));
    }
}

/// Makes every purpose field that holds a `val` in `consents` (one profile-level or id-level
/// consents object) at least as strict as `decision`: a looser value becomes `n` for out and
/// `p` for pending; a value already as strict, and every other member, stays.
fn restrict_fields(consents: &mut Value, decision: Decision) {
    for (_, path) in PURPOSE_FIELDS {
        let Some(Value::Object(field)) = path
            .iter()
            .try_fold(&mut *consents, |value, key| value.get_mut(*key))
        else {
            continue;
        };
        let Some(stored) = field
            .get("val")
            .and_then(Value::as_str)
            .map(stored_decision)
        else {
            continue;
        };
        let strictest = stored.stricter(decision);
        if strictest != stored {
            let val = if strictest == Decision::Out { "n" } else { "p" };
            field.insert("val".to_owned(), Value::from(val));
        }
    }
}

/// The decisions of a set-consent call about the named purposes, ready to be written into a
/// profile's consents after the raw merge of the call's XDM values.
///
/// - Every purpose the decision names gets its decided value in its profile-level field
///   ([`xdm_val`]), whatever the raw merge left there (the last object's value, an older call's),
///   so the stored value is what the engine applies: `[{share n}, {share y}]` stores `n`,
///   `marketing: {any: n, email: y}` stores `n` for `any` and for all eight channels, and an
///   id-level `n` makes the profile-level channel `n`.
/// - What an Adobe 1.0 object gives all purposes ([`ConsentDecision::all_purposes`]) makes every
///   stored purpose field, profile-level and id-level, at least as strict as it, and never
///   looser: a 1.0 "out" turns every stored value into `n`; a 1.0 "in" changes none. A 1.0 "in"
///   says yes to collection, not to a channel, and the same fields hold the person's
///   unsubscribes, so it must not turn a stored `n` into `y`. Fields the profile does not hold
///   are not created: `general` already says what applies to them.
struct PurposeWrites {
    /// The profile-level field of each named purpose and the value it gets.
    named: Vec<(&'static [&'static str], String)>,
    /// What the call gives all purposes (Adobe 1.0), when it speaks for them.
    all: Option<Decision>,
}

impl PurposeWrites {
    fn new(decision: &ConsentDecision, xdm_updates: &[Value]) -> Self {
        let mut named = Vec::with_capacity(decision.purposes.len());
        for (purpose, decided) in &decision.purposes {
            match PURPOSE_FIELDS.iter().find(|(p, _)| p == purpose) {
                Some((_, path)) => named.push((*path, xdm_val(*decided, path, xdm_updates))),
                // A body only carries XDM fields, so this means consent-core decided a purpose
                // the server has no field for; it is logged rather than stored somewhere made up.
                None => tracing::warn!(
                    purpose = purpose.index(),
                    "a decided purpose has no XDM field"
                ),
            }
        }
        Self {
            named,
            all: decision.all_purposes,
        }
    }

    /// Applies the writes to a profile's consents (after the raw merge).
    fn apply(&self, consents: &mut Value) {
        if let Some(all) = self.all
            && all != Decision::In
        {
            restrict_fields(consents, all);
            if let Some(Value::Object(namespaces)) = consents.get_mut("idSpecific") {
                for ids in namespaces.values_mut() {
                    if let Value::Object(ids) = ids {
                        ids.values_mut().for_each(|id| restrict_fields(id, all));
                    }
                }
            }
        }
        // The named decisions already include what Adobe 1.0 gives all purposes (the strictest
        // wins), so writing them after the restriction never loosens it.
        for (path, val) in &self.named {
            set_val(consents, path, val);
        }
    }
}

/// Validates and applies a set-consent body; returns the `general` decision it made.
///
/// The decision is [`SetConsentOptions::decide`]'s, the function the engine decides with, so
/// the server and the engine cannot disagree about a body (several objects: the strictest
/// wins, out over pending over in, whatever their order). The call's Adobe 2.0 values are
/// merged into the profile's consents in object order, which keeps their `time`, `reason`,
/// `subscriptions` and id-level details, and then every purpose gets its decided value
/// ([`PurposeWrites`]), so the stored values never say what the decision does not. A pending decision (an Adobe 2.0
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
    wants_receipt: bool,
    restated: Restated,
    source: &'static str,
) -> Result<(Option<Decision>, Option<String>), EdgeError> {
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
    let decided = options
        .decide(state.config.iab.as_ref(), state.config.iab_vendor_id)
        .map_err(refuse)?;
    let decision = decided.general;
    let xdm_updates: Vec<Value> = options
        .consent
        .iter()
        .filter(|object| object.standard() == Standard::AdobeV2)
        .filter_map(|object| object.to_json().get("value").cloned())
        .collect();
    let collect = decision.map(|d| xdm_collect(d, &xdm_updates));
    let purposes = PurposeWrites::new(&decided, &xdm_updates);
    let edit = move |consents: &mut Value, _subs: &mut Value| {
        for update in &xdm_updates {
            merge(consents, update);
        }
        if let Some(val) = &collect {
            set_collect(consents, val);
        }
        purposes.apply(consents);
        // Every set-consent call is recorded, even one that repeats the stored consent: the
        // record is the evidence that it was given again, and when.
        true
    };
    if restated == Restated::NotRecorded {
        let stored = state.db.profile(key).await.map_err(|err| {
            tracing::error!(%err, "storage failed");
            EdgeError::internal(request_id)
        })?;
        if let Some(stored) = stored {
            let (mut consents, mut subscriptions) =
                (stored.consents.clone(), stored.subscriptions.clone());
            edit(&mut consents, &mut subscriptions);
            if consents == stored.consents
                && decision.map(Decision::as_str) == Some(stored.general.as_str())
            {
                return Ok((decision, None));
            }
        }
    }
    match decision {
        Some(Decision::In) => inc(&state.metrics.consent_in),
        Some(Decision::Out) => inc(&state.metrics.consent_out),
        Some(Decision::Pending) | None => inc(&state.metrics.consent_pending),
    }
    let consent: Vec<Value> = options
        .consent
        .into_iter()
        .map(consent_core::ConsentObject::into_json)
        .collect();
    let mut payload = json!({
        "requestId": request_id,
        "consent": consent,
        "general": decision.map(Decision::as_str),
    });
    // The identities the call names besides the ECID (a CRM id, say) are kept with the change:
    // as personal detail, apart from the chain (`model::split_personal`), so that the export
    // of the profile shows them and an erasure of either identity removes them. The ECID is
    // the record's subject already (by its keyed hash): a call naming only it writes no detail.
    if let Some(Value::Object(mut identity_map)) = options.identity_map {
        identity_map.remove("ECID");
        if !identity_map.is_empty() {
            payload["identityMap"] = Value::Object(identity_map);
        }
    }
    let (profile, record) = state
        .db
        .apply_consent_recorded(
            key,
            crate::db::ConsentChange {
                general: decision.map(|d| d.as_str().to_owned()),
                edit: Box::new(edit),
                source: source.to_owned(),
                payload,
            },
        )
        .await
        .map_err(|err| {
            tracing::error!(%err, "storage failed");
            EdgeError::internal(request_id)
        })?;
    let receipt = record.filter(|_| wants_receipt).map(|record| {
        let claims = crate::receipts::claims_for(
            &state.config.receipt_policy,
            key,
            source,
            decision,
            &profile,
            &record,
            crate::util::now_millis(),
        );
        state.config.keys.receipts.sign_receipt(&claims)
    });
    Ok((decision, receipt))
}

/// Whether a consent change that changes nothing stored is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restated {
    /// Yes: a `set-consent` call is the person saying it again, and the record proves when.
    Recorded,
    /// No: TC strings a client attaches to every event restate nothing new.
    NotRecorded,
}

/// The source of the records `set-consent` writes.
const SET_CONSENT_SOURCE: &str = "edge:set-consent";
/// The source of the records of the TC strings events carry (`xdm.consentStrings`).
const INTERACT_SOURCE: &str = "edge:interact";

/// The consent objects of the TC strings a request's events carry in `xdm.consentStrings`
/// (`{consentStandard, consentStandardVersion, consentStringValue, gdprApplies,
/// containsPersonalData}`), in the form `set-consent` takes, for consent-core to validate and
/// decide as it does there.
fn consent_strings(events: &[Value]) -> Vec<Value> {
    let mut consent = Vec::new();
    for event in events {
        let Some(strings) = event
            .pointer("/xdm/consentStrings")
            .and_then(Value::as_array)
        else {
            continue;
        };
        for entry in strings {
            let mut object = serde_json::Map::new();
            for (from, to) in [
                ("consentStandard", "standard"),
                ("consentStandardVersion", "version"),
                ("consentStringValue", "value"),
                ("gdprApplies", "gdprApplies"),
                ("containsPersonalData", "gdprContainsPersonalData"),
            ] {
                if let Some(value) = entry.get(from) {
                    object.insert(to.to_owned(), value.clone());
                }
            }
            consent.push(Value::Object(object));
        }
    }
    consent
}

/// The decision a request is served under: the server's, made stricter by the consent cookie
/// the request carries when that says out or pending. A visitor who lost the identity cookie
/// (a new ECID, which has no decision) but kept `general=out` therefore stays out: the events
/// are not stored, and the answer writes `general=out` again. The cookie never loosens what the
/// server has, and it is not recorded: it is not a consent the person gave now.
fn with_cookie(general: Option<Decision>, cookie: Option<Decision>) -> Option<Decision> {
    match cookie {
        Some(restricting @ (Decision::Out | Decision::Pending)) => {
            strictest([general, Some(restricting)])
        }
        Some(Decision::In) | None => general,
    }
}

/// The strictest of some decisions: out over pending over in; `None` when none is made.
fn strictest(decisions: impl IntoIterator<Item = Option<Decision>>) -> Option<Decision> {
    decisions
        .into_iter()
        .flatten()
        .max_by_key(|decision| match decision {
            Decision::In => 0,
            Decision::Pending => 1,
            Decision::Out => 2,
        })
}

/// The ECIDs a request names, read wherever Edge reads them.
#[derive(Debug, Default)]
struct Identities {
    /// The request's ECID: the first well-formed one of the identity map, `xdm.identityMap`,
    /// the identity cookie in `meta.state` and the `Cookie` header; else the primary (or first)
    /// one an event's `xdm.identityMap` names.
    ecid: Option<String>,
    /// Every ECID the request names outside its events, in that order, without repeats.
    request: Vec<String>,
    /// Per event, the ECIDs its `xdm.identityMap` names.
    events: Vec<Vec<String>>,
    /// The `general` decision of the consent cookie the request carries (in `meta.state` or the
    /// `Cookie` header); the strictest when there are several.
    consent_cookie: Option<Decision>,
}

impl Identities {
    fn note_consent_cookie(&mut self, value: &str) {
        let value = value.replace("%3D", "=").replace("%3d", "=");
        if let Some(decision) = consent_core::general_value(&value).and_then(Decision::from_wire) {
            self.consent_cookie = strictest([self.consent_cookie, Some(decision)]);
        }
    }
}

/// The longest identity value looked up; longer ones cannot be a stored profile's.
const MAX_IDENTITY_LEN: usize = 1024;

/// Reads the request's ECIDs (see [`Identities`]). Refused, with the Edge code and the detail:
/// an id with a NUL character anywhere (`EXEG-0102-400`: no database can store it alike, and
/// PostgreSQL not at all), and an ECID of an identity map (the request's `identityMap` or
/// `xdm.identityMap`, an event's `xdm.identityMap`) that is not one (`EXEG-0003-400`, naming it,
/// as Adobe's Edge answers alloy's test C14699834, which sends it both ways): a client that sends one has no identity to speak for, and one with
/// CR, LF or `;` in it is an attempt on the identity cookie. Cookies are the server's own, so an
/// id read from a damaged one is only not used.
fn read_identities(
    body: &Value,
    headers: &HeaderMap,
    names: &CookieNames,
) -> Result<Identities, (&'static str, String)> {
    let valid =
        |id: &str| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_digit());
    let nul = |id: &str| -> Result<(), (&'static str, String)> {
        if id.contains('\0') {
            Err((
                "EXEG-0102-400",
                "An identity id must not contain a NUL character.".to_owned(),
            ))
        } else {
            Ok(())
        }
    };
    let mut found = Identities::default();
    let add = |found: &mut Identities, id: &str| -> Result<(), (&'static str, String)> {
        nul(id)?;
        if found.ecid.is_none() && valid(id) {
            found.ecid = Some(id.to_owned());
        }
        if !id.is_empty() && id.len() <= MAX_IDENTITY_LEN && !found.request.iter().any(|r| r == id)
        {
            found.request.push(id.to_owned());
        }
        Ok(())
    };
    let ecid = |id: &str| -> Result<(), (&'static str, String)> {
        nul(id)?;
        if valid(id) {
            return Ok(());
        }
        let shown: String = id.chars().take(128).collect();
        Err((
            "EXEG-0003-400",
            format!("Invalid ECID {shown:?} in the identity map: an ECID is 1 to 64 digits."),
        ))
    };
    for pointer in ["/identityMap/ECID", "/xdm/identityMap/ECID"] {
        for id in ecids_at(body, pointer) {
            ecid(id)?;
            add(&mut found, id)?;
        }
    }
    if let Some(entries) = body
        .pointer("/meta/state/entries")
        .and_then(Value::as_array)
    {
        for entry in entries {
            if entry.get("key").and_then(Value::as_str) == Some(names.consent())
                && let Some(value) = entry.get("value").and_then(Value::as_str)
            {
                found.note_consent_cookie(value);
            }
            if entry.get("key").and_then(Value::as_str) == Some(names.identity())
                && let Some(id) = entry
                    .get("value")
                    .and_then(Value::as_str)
                    .and_then(decode_identity_cookie)
            {
                add(&mut found, &id)?;
            }
        }
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name == names.consent() {
                found.note_consent_cookie(value);
            }
            if name == names.identity()
                && let Some(id) = decode_identity_cookie(value)
            {
                add(&mut found, &id)?;
            }
        }
    }
    if let Some(events) = body.get("events").and_then(Value::as_array) {
        let mut primary = None;
        let mut first = None;
        for event in events {
            let mut own = Vec::new();
            if let Some(entries) = event
                .pointer("/xdm/identityMap/ECID")
                .and_then(Value::as_array)
            {
                for entry in entries {
                    let Some(id) = entry.get("id").and_then(Value::as_str) else {
                        continue;
                    };
                    ecid(id)?;
                    first.get_or_insert(id);
                    if entry.get("primary") == Some(&Value::Bool(true)) {
                        primary.get_or_insert(id);
                    }
                    own.push(id.to_owned());
                }
            }
            found.events.push(own);
        }
        if found.ecid.is_none() {
            found.ecid = primary.or(first).map(str::to_owned);
        }
    }
    Ok(found)
}

/// The ids of the identity-map entries at `pointer` (an array of `{"id": …}`).
fn ecids_at<'a>(body: &'a Value, pointer: &str) -> impl Iterator<Item = &'a str> {
    body.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("id").and_then(Value::as_str))
}

/// The CORE identity of an ECID, when a request asks for it ([`crate::Db::core_id`]). Edge's
/// CORE id is a third-party id shared across the sites of a network; this server has no such
/// network, so it answers an id that is stable for the visitor, names no one else, and cannot
/// be linked to the ECID without the server's key, rather than refuse the request.
fn core_id(state: &AppState, org: &str, ecid: &str) -> String {
    state.db.core_id(org, ecid)
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

    #[allow(unused_imports, reason = "the types the OpenAPI annotations name")]
    use crate::api::{
        EdgeAnswer, EdgeParams, EventsRequest, LocationHint, Problem, ReceiptHeader,
        SetConsentRequest,
    };

    /// A handler for the plain path and one for the `{locationHint}` form, with their OpenAPI
    /// annotation: `$doc` (summary, description), the request body `$body`, the answers
    /// particular to the action, and those every Edge route may give.
    /// One handler `$item` with its OpenAPI annotation: `$path`, the parameters, `$doc`
    /// (summary, description), the request body `$body`, the answers particular to the action,
    /// and those every Edge route may give.
    macro_rules! edge_handler {
        ($path:literal, [$($params:ty),*], $body:ty, { $($doc:tt)* }, { $($responses:tt)* },
         $item:item) => {
            #[utoipa::path(post, path = $path, tag = "edge", params($($params),*), $($doc)*,
                request_body(content = $body, content_type = "application/json"),
                responses($($responses)*
                    (status = 403, description = "An `Origin` not allowed for the datastream \
                        (no CORS headers; nothing changed)", body = String,
                        content_type = "text/plain"),
                    (status = 413, description = "A body over the size limit"),
                    (status = 429, description = "Too many requests from this client; see \
                        `Retry-After`"),
                    (status = 500, description = "Storage failed", body = Problem,
                        content_type = "application/problem+json")))]
            $item
        };
    }

    /// A handler for the plain path and one for the `{locationHint}` form ([`edge_handler`]).
    macro_rules! edge_route {
        ($plain:ident, $hinted:ident, $action:expr, $path:literal, $hinted_path:literal,
         [$($params:ty),*], $body:ty, $doc:tt, $responses:tt) => {
            edge_handler!($path, [EdgeParams $(, $params)*], $body, $doc, $responses,
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
                });

            edge_handler!($hinted_path, [LocationHint, EdgeParams $(, $params)*], $body, $doc,
                $responses,
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
                });
        };
    }

    edge_route!(interact, interact_hinted, Action::Interact,
        "/ee/v1/interact", "/ee/{locationHint}/v1/interact", [], EventsRequest, {
        summary = "Send events and receive identity and state",
        description = "An event is stored only when every identity it names (the request's \
            identity map, the identity cookie in `meta.state` or the `Cookie` header, and the \
            event's own `xdm.identityMap`) may be collected; the others are counted and the \
            answer carries an `EXEG-0301-200` warning. TC strings in `xdm.consentStrings` are \
            decided as `set-consent` decides them, first."
    }, {
        (status = 200, description = "Identity and state", body = EdgeAnswer<'_>),
        (status = 400, description = "A malformed request", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "An unprocessable TC string in `xdm.consentStrings`",
            body = Problem, content_type = "application/problem+json"),
    });
    edge_route!(collect, collect_hinted, Action::Collect,
        "/ee/v1/collect", "/ee/{locationHint}/v1/collect", [], EventsRequest, {
        summary = "Send events without an answer body",
        description = "Events (and their TC strings) are handled as `interact` handles them."
    }, {
        (status = 204, description = "Accepted"),
        (status = 400, description = "A malformed request", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "An unprocessable TC string in `xdm.consentStrings`",
            body = Problem, content_type = "application/problem+json"),
    });
    edge_route!(set_consent, set_consent_hinted, Action::SetConsent,
        "/ee/v1/privacy/set-consent", "/ee/{locationHint}/v1/privacy/set-consent",
        [ReceiptHeader], SetConsentRequest, {
        summary = "Set the profile's consent (Adobe 1.0, Adobe 2.0 or IAB TCF 2.0)",
        description = "With the header `consent-receipt: true` (or on a server run with \
            `--receipts-always`), the answer also carries a `consent:receipt` handle: the \
            change's signed receipt, a compact JWS verifiable with \
            `GET /.well-known/consent-receipt-keys`."
    }, {
        (status = 200, description = "Identity and state, with the consent cookie \
            (`general=in|out|pending`) when a decision is known", body = EdgeAnswer<'_>),
        (status = 400, description = "A malformed request", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "An unprocessable consent value", body = Problem,
            content_type = "application/problem+json"),
    });
    edge_route!(acquire, acquire_hinted, Action::Acquire,
        "/ee/v1/identity/acquire", "/ee/{locationHint}/v1/identity/acquire", [], Object, {
        summary = "Mint or return the visitor's ECID (and CORE, when asked)"
    }, {
        (status = 200, description = "Identity and state", body = EdgeAnswer<'_>),
        (status = 400, description = "A malformed request", body = Problem,
            content_type = "application/problem+json"),
    });
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
    fn the_collect_value_written_means_the_decision_stored_beside_it() {
        let updates = [
            json!({"collect": {"val": "y"}}),
            json!({"collect": {"val": "dy"}}),
            json!({"collect": {"val": "n"}}),
            json!({"idSpecific": {"ECID": {"1": {"collect": {"val": "LI"}}}}}),
        ];
        for decision in [Decision::In, Decision::Out, Decision::Pending] {
            for n in 0..=updates.len() {
                for calls in [&updates[..n], &updates[n..]] {
                    let val = xdm_collect(decision, calls);
                    assert_eq!(stored_decision(&val), decision, "{val} for {calls:?}");
                    let mut consents =
                        json!({"collect": {"val": "n", "time": "2024-01-01T00:00:00Z"}});
                    set_collect(&mut consents, &val);
                    assert_eq!(consents, json!({"collect": {"val": val}}));
                    let profile = crate::db::Profile {
                        general: decision.as_str().to_owned(),
                        consents,
                        subscriptions: json!({}),
                        updated_at: 0,
                    };
                    assert_eq!(profile_general(&profile), Some(decision));
                }
            }
        }
        // Consents that are not an object (not written by this server) are replaced, not a panic.
        let mut consents = json!("garbage");
        set_collect(&mut consents, "n");
        assert_eq!(consents, json!({"collect": {"val": "n"}}));
    }

    #[test]
    fn every_purpose_field_is_the_one_consent_core_reads() {
        let mut seen = Vec::new();
        for (purpose, path) in PURPOSE_FIELDS {
            let mut value = json!({});
            set_val(&mut value, path, "n");
            let options = SetConsentOptions::from_json(&json!({"consent": [
                {"standard": "Adobe", "version": "2.0", "value": value}
            ]}))
            .unwrap();
            let decision = options.decide(&consent_core::TcfDecoder, 565).unwrap();
            assert_eq!(decision.purpose(purpose), Some(Decision::Out), "{path:?}");
            assert!(!seen.contains(&purpose), "{path:?}");
            seen.push(purpose);
        }
        let mut everything = json!({});
        for (_, path) in PURPOSE_FIELDS {
            set_val(&mut everything, path, "n");
        }
        let options = SetConsentOptions::from_json(&json!({"consent": [
            {"standard": "Adobe", "version": "2.0", "value": everything}
        ]}))
        .unwrap();
        let decision = options.decide(&consent_core::TcfDecoder, 565).unwrap();
        assert_eq!(decision.purposes.len(), PURPOSE_FIELDS.len());
        for (purpose, _) in &decision.purposes {
            assert!(seen.contains(purpose), "{purpose:?} has no field");
        }
    }

    fn writes(consent: Value) -> PurposeWrites {
        let options = SetConsentOptions::from_json(&json!({ "consent": consent })).unwrap();
        let decision = options.decide(&consent_core::TcfDecoder, 565).unwrap();
        let updates: Vec<Value> = options
            .consent
            .iter()
            .filter(|object| object.standard() == Standard::AdobeV2)
            .filter_map(|object| object.to_json().get("value").cloned())
            .collect();
        PurposeWrites::new(&decision, &updates)
    }

    fn v2(value: Value) -> Value {
        json!({"standard": "Adobe", "version": "2.0", "value": value})
    }

    fn v1(general: &str) -> Value {
        json!({"standard": "Adobe", "version": "1.0", "value": {"general": general}})
    }

    #[test]
    fn decided_purposes_overwrite_the_raw_merge_and_keep_its_details() {
        let mut consents = json!({"share": {"val": "y", "time": "2024-01-01T00:00:00Z"}});
        writes(json!([
            v2(json!({"share": {"val": "n"}})),
            v2(json!({"share": {"val": "y"}}))
        ]))
        .apply(&mut consents);
        assert_eq!(
            consents,
            json!({"share": {"val": "n", "time": "2024-01-01T00:00:00Z"}})
        );

        let mut consents = json!({"marketing": {"any": {"val": "n"}, "email": {"val": "y"}}});
        writes(json!([v2(
            json!({"marketing": {"any": {"val": "n"}, "email": {"val": "y"}}})
        )]))
        .apply(&mut consents);
        for (_, path) in &PURPOSE_FIELDS[3..] {
            assert_eq!(consents[path[0]][path[1]]["val"], "n", "{path:?}");
        }

        // Pending keeps the call's own pending value: the channel's, else `any`'s, else `p`.
        let mut consents = json!({});
        writes(json!([v2(json!({
            "marketing": {"any": {"val": "dn"}, "push": {"val": "LI"}, "sms": {"val": "y"}},
            "idSpecific": {"email": {"a@example.com": {"share": {"val": "u"}}}}
        }))]))
        .apply(&mut consents);
        assert_eq!(consents["marketing"]["any"]["val"], "dn");
        assert_eq!(consents["marketing"]["email"]["val"], "dn");
        assert_eq!(consents["marketing"]["push"]["val"], "LI");
        assert_eq!(consents["marketing"]["sms"]["val"], "y");
        assert_eq!(consents["share"]["val"], "p");
        // `any: y` makes a channel's own pending value `y`; pending from two objects keeps the
        // later object's value, a `y` after it notwithstanding.
        assert_eq!(xdm_val(Decision::In, &["marketing", "email"], &[]), "y");
        let updates = [
            json!({"share": {"val": "dy"}}),
            json!({"share": {"val": "CT"}}),
            json!({"share": {"val": "y"}, "marketing": {"any": {"val": "y"}, "email": {"val": "p"}}}),
        ];
        assert_eq!(xdm_val(Decision::Pending, &["share"], &updates), "CT");
        assert_eq!(call_val(&updates[2], &["marketing", "email"]), Some("y"));
        assert_eq!(
            call_val(
                &json!({"marketing": {"any": {"val": "n"}}}),
                &["marketing", "fax"]
            ),
            Some("n")
        );
        assert_eq!(call_val(&updates[0], &["marketing", "fax"]), None);
    }

    #[test]
    fn adobe_1_0_makes_stored_purposes_at_least_as_strict_never_looser() {
        let stored = json!({
            "share": {"val": "y", "time": "2024-01-01T00:00:00Z"},
            "adID": {"val": "dy"},
            "marketing": {"email": {"val": "n"}, "push": {"val": "y"}, "preferred": "email"},
            "idSpecific": {"email": {"a@example.com": {"marketing": {"sms": {"val": "y"}}}}}
        });
        let mut out = stored.clone();
        writes(json!([v1("out")])).apply(&mut out);
        assert_eq!(
            out,
            json!({
                "share": {"val": "n", "time": "2024-01-01T00:00:00Z"},
                "adID": {"val": "n"},
                "marketing": {"email": {"val": "n"}, "push": {"val": "n"}, "preferred": "email"},
                "idSpecific": {"email": {"a@example.com": {"marketing": {"sms": {"val": "n"}}}}}
            })
        );
        let mut granted = stored.clone();
        writes(json!([v1("in")])).apply(&mut granted);
        assert_eq!(granted, stored, "an Adobe 1.0 in changes no purpose");
        // Pending from Adobe 1.0 cannot happen today; should it, `y` becomes `p` and the
        // stricter values stay.
        let mut pending = stored;
        restrict_fields(&mut pending, Decision::Pending);
        assert_eq!(pending["share"]["val"], "p");
        assert_eq!(pending["adID"]["val"], "dy");
        assert_eq!(pending["marketing"]["email"]["val"], "n");
        // A purpose the call names besides Adobe 1.0 gets its own (at least as strict) value.
        let mut consents = json!({"share": {"val": "n"}});
        writes(json!([v1("in"), v2(json!({"share": {"val": "y"}}))])).apply(&mut consents);
        assert_eq!(consents["share"]["val"], "y");
        let mut consents = json!({});
        writes(json!([v1("out"), v2(json!({"share": {"val": "y"}}))])).apply(&mut consents);
        assert_eq!(consents, json!({"share": {"val": "n"}}));
    }

    #[test]
    fn set_val_replaces_what_is_not_an_object() {
        let mut consents = json!({"marketing": "garbage"});
        set_val(&mut consents, &["marketing", "email"], "n");
        assert_eq!(consents, json!({"marketing": {"email": {"val": "n"}}}));
        let mut consents = Value::Null;
        set_val(&mut consents, &["share"], "y");
        assert_eq!(consents, json!({"share": {"val": "y"}}));
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
