//! The preference service: the admin API that makes unsubscribe links, the landing page, the
//! RFC 8058 one-click endpoint, the consent preferences API and the decrypt API.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::api::{
    ApiError, DecryptedLink, ErrorCode, LinkParamsQuery, ONE_CLICK_POST, OrgHeaders,
    PreferencesResponse, ProfileAnswer, ProfilePath, ReceiptHeader, RecordAnswer, StoredConsents,
    UnsubscribeForm,
};
use crate::config::ApiKey;
use crate::db::{ConsentChange, Profile, ProfileKey, Recorded};
use crate::links::{CHANNELS, LinkError, LinkParams, LinkProfile, MAX_PART_CHARS, SCOPES};
use crate::ops::{Refusal, inc};
use crate::state::AppState;
use crate::util::{iso8601, merge, now_millis};

/// Why a preference-service request was refused. None of them changes anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrefError {
    /// Missing or wrong `x-api-key` / `authorization`.
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// The credentials do not cover the organisation or sandbox asked for.
    #[error("the credentials do not cover this organisation and sandbox")]
    Forbidden,
    /// The link was refused.
    #[error("{0}")]
    Link(#[from] LinkError),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No such profile.
    #[error("no such profile")]
    NotFound,
    /// Storage failed.
    #[error("internal error")]
    Internal,
    /// The API key made more requests than its rate limit allows; retry after the duration
    /// (sent as `Retry-After`, in whole seconds).
    #[error("too many requests for this API key")]
    RateLimited(std::time::Duration),
}

impl PrefError {
    fn status(&self) -> StatusCode {
        match self {
            PrefError::Unauthenticated => StatusCode::UNAUTHORIZED,
            PrefError::Forbidden => StatusCode::FORBIDDEN,
            PrefError::Link(LinkError::Malformed) | PrefError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            PrefError::Link(_) => StatusCode::FORBIDDEN,
            PrefError::NotFound => StatusCode::NOT_FOUND,
            PrefError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            PrefError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Why the request counts as refused (`consent_requests_refused_total`); `None` for what is
    /// not a refusal (no such profile, a storage failure).
    fn refusal(&self) -> Option<Refusal> {
        match self {
            PrefError::Unauthenticated => Some(Refusal::Credentials),
            PrefError::Forbidden => Some(Refusal::Scope),
            PrefError::Link(_) => Some(Refusal::Link),
            PrefError::BadRequest(_) => Some(Refusal::Malformed),
            PrefError::RateLimited(_) => Some(Refusal::RateLimit),
            PrefError::NotFound | PrefError::Internal => None,
        }
    }

    /// `response`, marked with this error's refusal.
    fn tag(&self, response: Response) -> Response {
        match self.refusal() {
            Some(reason) => reason.tag(response),
            None => response,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            PrefError::Unauthenticated => ErrorCode::Unauthenticated,
            PrefError::Forbidden => ErrorCode::Forbidden,
            PrefError::Link(LinkError::Expired) => ErrorCode::LinkExpired,
            PrefError::Link(LinkError::UnknownKey) => ErrorCode::LinkUnknownKey,
            PrefError::Link(_) => ErrorCode::LinkInvalid,
            PrefError::BadRequest(_) => ErrorCode::BadRequest,
            PrefError::NotFound => ErrorCode::NotFound,
            PrefError::Internal => ErrorCode::Internal,
            PrefError::RateLimited(_) => ErrorCode::RateLimited,
        }
    }
}

impl IntoResponse for PrefError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            Json(ApiError {
                error: self.code(),
                message: self.to_string(),
            }),
        )
            .into_response();
        if matches!(self, PrefError::Unauthenticated) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let PrefError::RateLimited(wait) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after(wait));
        }
        self.tag(response)
    }
}

/// A `Retry-After` value: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after(wait: std::time::Duration) -> header::HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    header::HeaderValue::from(secs.max(1))
}

pub(crate) fn internal(err: crate::db::StoreError) -> PrefError {
    tracing::error!(%err, "storage failed");
    PrefError::Internal
}

/// A header's value; `None` when it is absent, not text, or repeated (a repeated credential or
/// organisation header is ambiguous, so it counts as missing).
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// The API key that `x-api-key` and the bearer token name, when they are right; no limit is
/// counted. `server::observe` runs it on the headers alone, before the body is read, so that a
/// wrong guess is answered (and counted against the client) at once.
pub(crate) fn credentials<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<&'a ApiKey, PrefError> {
    let api_key = header_str(headers, "x-api-key").ok_or(PrefError::Unauthenticated)?;
    let token = header_str(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(PrefError::Unauthenticated)?;
    state
        .config
        .keys
        .authenticate(api_key, token.trim())
        .ok_or(PrefError::Unauthenticated)
}

/// Checks `x-api-key` and `authorization: Bearer …`, then that `x-gw-ims-org-id` (and
/// `x-sandbox-name`, when sent) name the key's own organisation and sandbox. The key is bound to
/// one sandbox, so a caller that leaves `x-sandbox-name` out gets the key's.
pub(crate) fn authenticate<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<&'a ApiKey, PrefError> {
    let key = credentials(state, headers)?;
    // The per-key limit counts every request the key's holder makes, from the moment the
    // credentials are known to be right (a guesser never reaches it: failures are limited per
    // client in `server::observe`). The index names the key without copying it.
    let index = state
        .config
        .keys
        .api_keys
        .iter()
        .position(|k| std::ptr::eq(k, key))
        .unwrap_or(usize::MAX);
    if let Err(wait) = state.api_limiter.take(index, std::time::Instant::now()) {
        inc(&state.metrics.api_key_limited);
        return Err(PrefError::RateLimited(wait));
    }
    let org = header_str(headers, "x-gw-ims-org-id").ok_or(PrefError::Unauthenticated)?;
    if org != key.org {
        return Err(PrefError::Forbidden);
    }
    if headers.get_all("x-sandbox-name").iter().count() > 1 {
        return Err(PrefError::Unauthenticated);
    }
    if let Some(sandbox) = header_str(headers, "x-sandbox-name")
        && sandbox != key.sandbox
    {
        return Err(PrefError::Forbidden);
    }
    Ok(key)
}

/// The query of every link URL.
#[derive(Debug, Deserialize)]
pub(crate) struct LinkQuery {
    params: Option<String>,
    pid: Option<String>,
    sig: Option<String>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn verify(state: &AppState, query: &LinkQuery) -> Result<(LinkParams, LinkProfile), PrefError> {
    let (Some(params), Some(pid), Some(sig)) = (&query.params, &query.pid, &query.sig) else {
        inc(&state.metrics.links_refused);
        return Err(PrefError::Link(LinkError::Malformed));
    };
    state
        .config
        .keys
        .links
        .verify(params, pid, sig, now_secs())
        .map_err(|err| {
            inc(&state.metrics.links_refused);
            tracing::info!(%err, "link refused");
            PrefError::Link(err)
        })
}

/// What an opt-out (or opt-in) through a link changes.
#[derive(Debug, Clone)]
struct Choice {
    channel: String,
    scope: String,
    val: &'static str,
}

fn profile_key(link: &LinkParams, profile: &LinkProfile) -> ProfileKey {
    ProfileKey {
        org: link.org.clone(),
        sandbox: link.sandbox.clone(),
        namespace: profile.pns.clone(),
        id: profile.pid.clone(),
    }
}

/// The JSON path of the `val` a choice sets, or an error when the link lacks what the scope
/// needs. The first element says which document: `c` consents, `s` subscriptions.
fn choice_path(
    choice: &Choice,
    link: &LinkParams,
    profile: &LinkProfile,
) -> Result<(char, Vec<String>), PrefError> {
    match choice.scope.as_str() {
        "channel" => Ok(('c', vec!["marketing".into(), choice.channel.clone()])),
        "identity" => {
            let (Some(address), Some(ns)) = (&profile.e, &profile.ens) else {
                return Err(PrefError::BadRequest(
                    "the identity scope needs a link made for an address".into(),
                ));
            };
            Ok((
                'c',
                vec![
                    "idSpecific".into(),
                    ns.clone(),
                    address.clone(),
                    "marketing".into(),
                    choice.channel.clone(),
                ],
            ))
        }
        "subscription" => {
            let Some(sub) = &link.subscription else {
                return Err(PrefError::BadRequest(
                    "the subscription scope needs a link made for a subscription".into(),
                ));
            };
            Ok(('s', vec![sub.clone()]))
        }
        other => Err(PrefError::BadRequest(format!("unknown scope {other:?}"))),
    }
}

fn get_path<'a>(mut value: &'a Value, path: &[String]) -> Option<&'a Value> {
    for part in path {
        value = value.get(part)?;
    }
    Some(value)
}

fn set_path(value: &mut Value, path: &[String], leaf: Value) {
    let mut cursor = value;
    for part in path {
        if !cursor.is_object() {
            *cursor = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = cursor else { return };
        cursor = map.entry(part.clone()).or_insert(Value::Null);
    }
    if !cursor.is_object() {
        *cursor = Value::Object(serde_json::Map::new());
    }
    merge(cursor, &leaf);
}

/// Applies choices through a link. Choices already in place are skipped, so a repeated request
/// changes nothing and appends no record; the check runs in the writer, in the transaction that
/// writes, so identical requests at once (mail gateways repeat one-click posts) apply once.
/// Returns how many choices changed something, the profile after, and the record the change was
/// written as (`None` when nothing changed).
async fn apply(
    state: &AppState,
    link: &LinkParams,
    profile: &LinkProfile,
    choices: &[Choice],
    source: &str,
) -> Result<(usize, Profile, Option<Recorded>), PrefError> {
    check_link_identities(link, profile)?;
    let key = profile_key(link, profile);
    // One request may name a place more than once (`no`, `yes`, `no`, …): only its last choice
    // counts, so the request records and counts what changed in the end, not each step.
    let mut todo: Vec<(char, Vec<String>, Choice)> = Vec::with_capacity(choices.len());
    for choice in choices {
        let (doc, path) = choice_path(choice, link, profile)?;
        todo.retain(|(d, p, _)| (*d, p) != (doc, &path));
        todo.push((doc, path, choice.clone()));
    }
    let finals: Vec<Choice> = todo.iter().map(|(_, _, c)| c.clone()).collect();
    let time = iso8601(now_millis());
    // Which choices the edit's last run changed (the run that is committed).
    let changed = Arc::new(std::sync::Mutex::new(vec![false; todo.len()]));
    let payload = json!({
        "changes": todo.iter().map(|(_, _, c)| json!({
            "channel": c.channel, "scope": c.scope, "val": c.val,
        })).collect::<Vec<_>>(),
        "message": {"m": link.m, "ci": link.ci, "jv": link.jv, "ja": link.ja},
        "subscription": link.subscription,
        "address": profile.e.as_ref().map(|address| json!({"value": address, "namespace": profile.ens})),
        "time": time,
    });
    let report = changed.clone();
    let edit = move |consents: &mut Value, subs: &mut Value| {
        let mut run = vec![false; todo.len()];
        for ((doc, path, choice), changed) in todo.iter().zip(&mut run) {
            let root = if *doc == 's' {
                &mut *subs
            } else {
                &mut *consents
            };
            let current = get_path(root, path)
                .and_then(|v| v.get("val"))
                .and_then(Value::as_str);
            if current == Some(choice.val) {
                continue;
            }
            let mut leaf = json!({"val": choice.val, "time": time});
            if *doc == 's' {
                leaf["type"] = json!(choice.channel);
            }
            set_path(root, path, leaf);
            *changed = true;
        }
        let any = run.contains(&true);
        if let Ok(mut report) = report.lock() {
            *report = run;
        }
        any
    };
    let (stored, record) = state
        .db
        .apply_consent_recorded(
            &key,
            ConsentChange {
                general: None,
                edit: Box::new(edit),
                source: source.to_owned(),
                payload,
            },
        )
        .await
        .map_err(internal)?;
    let changed = changed.lock().map(|c| c.clone()).unwrap_or_default();
    for (choice, _) in finals.iter().zip(&changed).filter(|(_, c)| **c) {
        if choice.val == "n" {
            inc(&state.metrics.unsubscribes);
        }
    }
    Ok((changed.iter().filter(|c| **c).count(), stored, record))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title></head>\n<body><main>\n<h1>{t}</h1>\n{body}\n</main></body></html>\n",
        t = html_escape(title)
    )
}

/// An HTML page with the headers every link page carries: no caching, no framing (the confirm
/// button must not be clickjacked), no referrer (the URL holds the link's tokens), no scripts.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let mut response = (status, Html(page(title, body))).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

fn refused_page(err: &PrefError) -> Response {
    let message = match err {
        PrefError::Link(LinkError::Expired) => "This unsubscribe link has expired.",
        PrefError::Link(_) => "This unsubscribe link is not valid.",
        _ => "The request could not be completed.",
    };
    err.tag(html(
        err.status(),
        "Unsubscribe",
        &format!("<p id=\"error\">{}</p>", html_escape(message)),
    ))
}

/// `GET /unsubscribe`: the landing page. It changes nothing.
#[utoipa::path(get, path = "/unsubscribe", tag = "preferences", params(LinkParamsQuery),
    summary = "The landing page of an unsubscribe link; changes nothing",
    responses(
        (status = 200, description = "An HTML page with a confirm button", body = String,
            content_type = "text/html"),
        (status = 400, description = "A part of the link is missing", body = String,
            content_type = "text/html"),
        (status = 403, description = "Tampered, expired or unknown-key link", body = String,
            content_type = "text/html"),
        (status = 429, description = "Too many requests from this client; see `Retry-After`"),
    ))]
pub(crate) async fn landing(
    State(state): State<Arc<AppState>>,
    Query(query): Query<LinkQuery>,
) -> Response {
    let (link, _) = match verify(&state, &query) {
        Ok(v) => v,
        Err(err) => return refused_page(&err),
    };
    let action = format!(
        "/unsubscribe?params={}&pid={}&sig={}",
        query.params.as_deref().unwrap_or_default(),
        query.pid.as_deref().unwrap_or_default(),
        query.sig.as_deref().unwrap_or_default()
    );
    let what = match link.scope.as_str() {
        "subscription" => format!(
            "the {} list",
            html_escape(link.subscription.as_deref().unwrap_or_default())
        ),
        "identity" => format!("{} messages to this address", html_escape(&link.channel)),
        _ => format!("all {} messages", html_escape(&link.channel)),
    };
    let body = format!(
        "<p>You are about to unsubscribe from {what}.</p>\n\
         <form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"confirm\" value=\"yes\">\n\
         <button type=\"submit\" id=\"unsubscribe\">Unsubscribe</button>\n</form>",
        action = html_escape(&action)
    );
    html(StatusCode::OK, "Unsubscribe", &body)
}

/// How a POST to `/unsubscribe` was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PostKind {
    /// RFC 8058: `List-Unsubscribe=One-Click`.
    OneClick,
    /// The landing page's confirm button.
    Confirm,
}

/// Reads `List-Unsubscribe=One-Click` or `confirm=yes` from an urlencoded or multipart body.
fn post_kind(headers: &HeaderMap, body: &[u8]) -> Option<PostKind> {
    let content_type = header_str(headers, "content-type").unwrap_or_default();
    let pairs: Vec<(String, String)> = if content_type.starts_with("multipart/form-data") {
        multipart_fields(content_type, body)?
    } else {
        std::str::from_utf8(body)
            .ok()?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    };
    if pairs
        .iter()
        .any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click")
    {
        Some(PostKind::OneClick)
    } else if pairs.iter().any(|(k, v)| k == "confirm" && v == "yes") {
        Some(PostKind::Confirm)
    } else {
        None
    }
}

/// A minimal `multipart/form-data` reader for small text fields.
fn multipart_fields(content_type: &str, body: &[u8]) -> Option<Vec<(String, String)>> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()?
        .trim_matches('"');
    let text = std::str::from_utf8(body).ok()?;
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.trim_start_matches("\r\n");
        let (head, value) = part
            .split_once("\r\n\r\n")
            .or_else(|| part.split_once("\n\n"))?;
        let name = head
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("name="))
            .next()
            .map(|n| {
                n.split(['\r', '\n'])
                    .next()
                    .unwrap_or(n)
                    .trim_matches('"')
                    .to_owned()
            })?;
        fields.push((name, value.trim_end_matches(['\r', '\n']).to_owned()));
    }
    Some(fields)
}

/// `POST /unsubscribe`: RFC 8058 one-click or the landing page's confirmation. No cookie or
/// authorization is needed: the signed link is the credential. Answers 200, never a redirect.
#[utoipa::path(post, path = "/unsubscribe", tag = "preferences", params(LinkParamsQuery),
    summary = "Confirm the opt-out, or RFC 8058 one-click unsubscribe",
    description = "The landing page's confirm button posts `confirm=yes` and gets a \
        confirmation page. A mail client's one-click post (`List-Unsubscribe=One-Click`, \
        urlencoded or multipart) needs no cookie or authorization, gets a 2xx and no redirect, \
        and may be repeated.",
    request_body(content(
        (UnsubscribeForm = "application/x-www-form-urlencoded"),
        (UnsubscribeForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Unsubscribed: an HTML confirmation page, or plain text \
            for one-click"),
        (status = 400, description = "Neither a confirmation nor a one-click body, or a part \
            of the link is missing"),
        (status = 403, description = "Tampered, expired or unknown-key link; nothing changed"),
        (status = 429, description = "Too many requests from this client; see `Retry-After`"),
    ))]
pub(crate) async fn unsubscribe(
    State(state): State<Arc<AppState>>,
    Query(query): Query<LinkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (link, profile) = match verify(&state, &query) {
        Ok(v) => v,
        Err(err) => return refused_page(&err),
    };
    let Some(kind) = post_kind(&headers, &body) else {
        return refused_page(&PrefError::BadRequest(
            "expected List-Unsubscribe=One-Click or confirm=yes".into(),
        ));
    };
    let choice = Choice {
        channel: link.channel.clone(),
        scope: link.scope.clone(),
        val: "n",
    };
    let source = match kind {
        PostKind::OneClick => "one-click",
        PostKind::Confirm => "landing-page",
    };
    match apply(&state, &link, &profile, &[choice], source).await {
        Err(err) => return refused_page(&err),
        Ok((0, _, _)) => inc(&state.metrics.link_repeats),
        Ok(_) => {}
    }
    match kind {
        PostKind::OneClick => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "unsubscribed\n",
        )
            .into_response(),
        PostKind::Confirm => html(
            StatusCode::OK,
            "Unsubscribed",
            "<p id=\"done\">You have been unsubscribed. You will receive no more of these messages.</p>",
        ),
    }
}

/// The body of the consent preferences API.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PreferencesRequest)]
pub(crate) struct PreferencesBody {
    /// The choices, applied in order.
    #[schema(min_items = 1)]
    marketing: Vec<MarketingChoice>,
}

/// One marketing choice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarketingChoice {
    /// The channel.
    #[serde(rename = "type")]
    #[schema(schema_with = crate::api::channel_schema)]
    kind: String,
    /// `yes` or `no`.
    #[schema(schema_with = yes_or_no)]
    choice: String,
    /// Defaults to the link's scope.
    #[schema(schema_with = crate::api::scope_schema)]
    scope: Option<String>,
}

/// `yes` or `no`.
fn yes_or_no() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::Schema::Object(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["yes", "no"]))
            .build(),
    )
}

/// `POST /imp/consent/preferences?params&pid&sig` with the four headers.
#[utoipa::path(post, path = "/imp/consent/preferences", tag = "preferences",
    params(LinkParamsQuery, OrgHeaders, ReceiptHeader),
    security(("apiKey" = [], "bearer" = [])),
    summary = "Set marketing preferences for the profile of a link",
    request_body(content = PreferencesBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated", body = PreferencesResponse),
        (status = 400, description = "A malformed body or link", body = ApiError),
        (status = 401, description = "Missing or wrong credentials", body = ApiError),
        (status = 403, description = "A refused link, or credentials of another \
            organisation", body = ApiError),
        (status = 429, description = "Too many requests for this API key", body = ApiError),
    ))]
pub(crate) async fn preferences(
    State(state): State<Arc<AppState>>,
    Query(query): Query<LinkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PrefError> {
    let key = authenticate(&state, &headers)?;
    let (link, profile) = verify(&state, &query)?;
    if link.org != key.org || link.sandbox != key.sandbox {
        return Err(PrefError::Forbidden);
    }
    let body: PreferencesBody = serde_json::from_slice(&body)
        .map_err(|err| PrefError::BadRequest(format!("invalid body: {err}")))?;
    if body.marketing.is_empty() {
        return Err(PrefError::BadRequest(
            "'marketing' must not be empty".into(),
        ));
    }
    let mut choices = Vec::new();
    for item in &body.marketing {
        if !CHANNELS.contains(&item.kind.as_str()) {
            return Err(PrefError::BadRequest(format!(
                "'type': expected one of {CHANNELS:?}, got {:?}",
                item.kind
            )));
        }
        let val = match item.choice.as_str() {
            "no" => "n",
            "yes" => "y",
            other => {
                return Err(PrefError::BadRequest(format!(
                    "'choice': expected \"yes\" or \"no\", got {other:?}"
                )));
            }
        };
        let scope = item.scope.clone().unwrap_or_else(|| link.scope.clone());
        if !SCOPES.contains(&scope.as_str()) {
            return Err(PrefError::BadRequest(format!(
                "'scope': expected one of {SCOPES:?}, got {scope:?}"
            )));
        }
        choices.push(Choice {
            channel: item.kind.clone(),
            scope,
            val,
        });
    }
    let source = "preferences";
    let (changed, stored, record) = apply(&state, &link, &profile, &choices, source).await?;
    let mut answer = PreferencesResponse {
        profile_namespace: profile.pns.clone(),
        profile_id: profile.pid.clone(),
        changed: changed as u64,
        consents: StoredConsents {
            consents: stored.consents.clone(),
            subscriptions: stored.subscriptions.clone(),
        },
        receipt: None,
    };
    // A change that changed nothing wrote no record, so there is nothing to sign.
    if let Some(record) =
        record.filter(|_| crate::receipts::wanted(state.config.receipts_always, &headers))
    {
        let claims = crate::receipts::claims_for(
            &state.config.receipt_policy,
            &profile_key(&link, &profile),
            source,
            None,
            &stored,
            &record,
            now_millis(),
        );
        answer.receipt = Some(state.config.keys.receipts.sign_receipt(&claims));
    }
    Ok(Json(answer).into_response())
}

/// `GET /imp/consent/decrypt?params&pid&sig` for the organisation's own callers.
#[utoipa::path(get, path = "/imp/consent/decrypt", tag = "preferences",
    params(LinkParamsQuery, OrgHeaders),
    security(("apiKey" = [], "bearer" = [])),
    summary = "Decrypt a link's params and pid (its signature is checked first)",
    responses(
        (status = 200, description = "The link's content", body = DecryptedLink),
        (status = 400, description = "A part of the link is missing", body = ApiError),
        (status = 401, description = "Missing or wrong credentials", body = ApiError),
        (status = 403, description = "A refused link, or credentials of another \
            organisation", body = ApiError),
        (status = 429, description = "Too many requests for this API key", body = ApiError),
    ))]
pub(crate) async fn decrypt(
    State(state): State<Arc<AppState>>,
    Query(query): Query<LinkQuery>,
    headers: HeaderMap,
) -> Result<Response, PrefError> {
    let key = authenticate(&state, &headers)?;
    let (Some(params), Some(pid), Some(sig)) = (&query.params, &query.pid, &query.sig) else {
        inc(&state.metrics.links_refused);
        return Err(PrefError::BadRequest(
            "'params', 'pid' and 'sig' are all required: the link's signature is verified \
             before anything is decrypted"
                .into(),
        ));
    };
    // The signature over both parts first; the expiry is not checked (the caller is the
    // organisation itself).
    let (link, profile) = state
        .config
        .keys
        .links
        .decrypt(params, pid, sig)
        .map_err(|err| {
            inc(&state.metrics.links_refused);
            tracing::info!(%err, "link refused");
            PrefError::Link(err)
        })?;
    if link.org != key.org || link.sandbox != key.sandbox {
        return Err(PrefError::Forbidden);
    }
    Ok(Json(DecryptedLink {
        profile_namespace: profile.pns,
        profile_id: profile.pid,
        email_address: profile.e,
        email_namespace: profile.ens,
        sandbox_id: link.sandbox,
        opt_out_level: link.scope,
        channel_type: link.channel,
        subscription: link.subscription,
        message_execution_id: link.m,
        campaign_id: link.ci,
        journey_version_id: link.jv,
        journey_action_id: link.ja,
        timestamp: iso8601(now_millis()),
    })
    .into_response())
}

/// The admin API's request to make a link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateLinkRequest)]
pub(crate) struct CreateLink {
    /// The profile the link opts out.
    profile: ProfileRef,
    /// The channel.
    #[schema(schema_with = crate::api::channel_schema)]
    channel: String,
    /// What the opt-out covers: the whole channel (the default), one address (`identity`, which
    /// needs `address`) or one list (`subscription`, which needs `subscription`).
    #[serde(default = "default_scope")]
    #[schema(schema_with = crate::api::scope_schema)]
    scope: String,
    /// The address of the identity scope.
    address: Option<Address>,
    /// The list of the subscription scope.
    subscription: Option<String>,
    /// The message the link is sent in.
    #[serde(default)]
    message: MessageRef,
    /// The link expires after this many seconds; without it, never.
    #[schema(minimum = 1)]
    ttl_secs: Option<i64>,
}

fn default_scope() -> String {
    "channel".to_owned()
}

/// A profile a link names.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileRef {
    /// Its namespace.
    #[schema(min_length = 1, max_length = 256)]
    namespace: String,
    /// Its id.
    #[schema(min_length = 1, max_length = 256)]
    id: String,
}

/// An address (of the identity scope).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Address {
    /// The address.
    #[schema(min_length = 1, max_length = 256)]
    value: String,
    /// Its namespace (`Email`, `Phone`, …).
    #[schema(min_length = 1, max_length = 256)]
    namespace: String,
}

/// The message a link is sent in, as the decrypt API gives it back.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageRef {
    /// The message execution id.
    #[serde(default)]
    m: String,
    /// The campaign id.
    #[serde(default)]
    ci: String,
    /// The journey version id.
    #[serde(default)]
    jv: String,
    /// The journey action id.
    #[serde(default)]
    ja: String,
}

fn check_text(name: &str, value: &str) -> Result<(), PrefError> {
    if value.is_empty() || value.len() > 256 {
        return Err(PrefError::BadRequest(format!(
            "'{name}' must be 1 to 256 characters"
        )));
    }
    check_chars(name, value)
}

/// Refuses control characters (U+0000 to U+001F, U+007F to U+009F) and the noncharacters
/// U+FFFE and U+FFFF in an identity: PostgreSQL cannot store U+0000, and none of them belongs
/// in an identifier, so both databases answer 400 alike.
pub(crate) fn check_chars(name: &str, value: &str) -> Result<(), PrefError> {
    if let Some(bad) = value
        .chars()
        .find(|c| c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
    {
        return Err(PrefError::BadRequest(format!(
            "'{name}' must not contain control characters (found U+{:04X})",
            u32::from(bad)
        )));
    }
    Ok(())
}

/// Checks the identities a link carries before they reach the database (links made before
/// the admin API refused control characters may hold them).
fn check_link_identities(link: &LinkParams, profile: &LinkProfile) -> Result<(), PrefError> {
    check_chars("profile.id", &profile.pid)?;
    check_chars("profile.namespace", &profile.pns)?;
    if let Some(address) = &profile.e {
        check_chars("address.value", address)?;
    }
    if let Some(ns) = &profile.ens {
        check_chars("address.namespace", ns)?;
    }
    if let Some(sub) = &link.subscription {
        check_chars("subscription", sub)?;
    }
    check_chars("org", &link.org)?;
    check_chars("sandbox", &link.sandbox)
}

/// The refusal of a link whose `part` would be longer than the endpoints accept
/// ([`crate::links::SignError::TooLong`]: it could never be used), naming the longest field that
/// went into that part.
fn too_long(part: &str, chars: usize, params: &LinkParams, profile: &LinkProfile) -> PrefError {
    let fields: &[(&'static str, &str)] = if part == "params" {
        &[
            ("message.m", &params.m),
            ("message.ci", &params.ci),
            ("message.jv", &params.jv),
            ("message.ja", &params.ja),
            (
                "subscription",
                params.subscription.as_deref().unwrap_or_default(),
            ),
        ]
    } else {
        &[
            ("profile.id", &profile.pid),
            ("profile.namespace", &profile.pns),
            ("address.value", profile.e.as_deref().unwrap_or_default()),
            (
                "address.namespace",
                profile.ens.as_deref().unwrap_or_default(),
            ),
        ]
    };
    let field = fields
        .iter()
        .max_by_key(|(_, value)| value.len())
        .map_or("", |(name, _)| *name);
    PrefError::BadRequest(format!(
        "'{field}' is too long: the link's {part} would be {chars} characters, more than the \
         {MAX_PART_CHARS} the unsubscribe endpoints accept"
    ))
}

/// `POST /admin/v1/unsubscribe-links`: makes a link for a profile of the caller's own
/// organisation and sandbox.
#[utoipa::path(post, path = "/admin/v1/unsubscribe-links", tag = "admin", params(OrgHeaders),
    security(("apiKey" = [], "bearer" = [])),
    summary = "Create a signed unsubscribe link for a profile and channel",
    request_body(content = CreateLink, content_type = "application/json"),
    responses(
        (status = 200, description = "The link", body = crate::api::Link),
        (status = 400, description = "A malformed request, naming the field (also when the \
            link's parts would be longer than the endpoints accept)", body = ApiError),
        (status = 401, description = "Missing or wrong credentials", body = ApiError),
        (status = 403, description = "Credentials of another organisation", body = ApiError),
        (status = 429, description = "Too many requests for this API key", body = ApiError),
    ))]
pub(crate) async fn create_link(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PrefError> {
    let key = authenticate(&state, &headers)?;
    let request: CreateLink = serde_json::from_slice(&body)
        .map_err(|err| PrefError::BadRequest(format!("invalid body: {err}")))?;
    check_text("profile.namespace", &request.profile.namespace)?;
    check_text("profile.id", &request.profile.id)?;
    if !CHANNELS.contains(&request.channel.as_str()) {
        return Err(PrefError::BadRequest(format!(
            "'channel': expected one of {CHANNELS:?}"
        )));
    }
    if !SCOPES.contains(&request.scope.as_str()) {
        return Err(PrefError::BadRequest(format!(
            "'scope': expected one of {SCOPES:?}"
        )));
    }
    if request.scope == "identity" && request.address.is_none() {
        return Err(PrefError::BadRequest(
            "the identity scope needs 'address'".into(),
        ));
    }
    if request.scope == "subscription" && request.subscription.is_none() {
        return Err(PrefError::BadRequest(
            "the subscription scope needs 'subscription'".into(),
        ));
    }
    if let Some(sub) = &request.subscription {
        check_text("subscription", sub)?;
    }
    if let Some(address) = &request.address {
        check_text("address.value", &address.value)?;
        check_text("address.namespace", &address.namespace)?;
    }
    let exp = match request.ttl_secs {
        Some(ttl) if ttl <= 0 => {
            return Err(PrefError::BadRequest("'ttl_secs' must be positive".into()));
        }
        Some(ttl) => Some(now_secs().saturating_add(ttl)),
        None => None,
    };
    let params = LinkParams {
        org: key.org.clone(),
        sandbox: key.sandbox.clone(),
        channel: request.channel,
        scope: request.scope,
        subscription: request.subscription,
        m: request.message.m,
        ci: request.message.ci,
        jv: request.message.jv,
        ja: request.message.ja,
        exp,
    };
    let profile = LinkProfile {
        pid: request.profile.id,
        pns: request.profile.namespace,
        e: request.address.as_ref().map(|a| a.value.clone()),
        ens: request.address.map(|a| a.namespace),
    };
    let link = state
        .config
        .keys
        .links
        .sign(&params, &profile)
        .map_err(|err| match err {
            crate::links::SignError::TooLong { part, chars } => {
                too_long(part, chars, &params, &profile)
            }
            err => {
                tracing::error!(%err, "cannot sign a link");
                PrefError::Internal
            }
        })?;
    let query = format!("params={}&pid={}&sig={}", link.params, link.pid, link.sig);
    let base = state
        .config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", state.local_addr));
    let base = base.trim_end_matches('/');
    Ok(Json(crate::api::Link {
        url: format!("{base}/unsubscribe?{query}"),
        list_unsubscribe: format!("<{base}/unsubscribe?{query}>"),
        list_unsubscribe_post: ONE_CLICK_POST,
        expires_at: exp,
        params: link.params,
        pid: link.pid,
        sig: link.sig,
    })
    .into_response())
}

/// `GET /admin/v1/profiles/{namespace}/{id}`: a profile of the caller's organisation and
/// sandbox, with its consent records.
#[utoipa::path(get, path = "/admin/v1/profiles/{namespace}/{id}", tag = "admin",
    params(ProfilePath, OrgHeaders),
    security(("apiKey" = [], "bearer" = [])),
    summary = "Read a profile and its consent records",
    responses(
        (status = 200, description = "The profile", body = ProfileAnswer),
        (status = 400, description = "An invalid character in the path", body = ApiError),
        (status = 401, description = "Missing or wrong credentials", body = ApiError),
        (status = 403, description = "Credentials of another organisation", body = ApiError),
        (status = 404, description = "No such profile", body = ApiError),
        (status = 429, description = "Too many requests for this API key", body = ApiError),
    ))]
pub(crate) async fn read_profile(
    State(state): State<Arc<AppState>>,
    Path((namespace, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, PrefError> {
    let key = authenticate(&state, &headers)?;
    check_chars("namespace", &namespace)?;
    check_chars("id", &id)?;
    let profile_key = ProfileKey {
        org: key.org.clone(),
        sandbox: key.sandbox.clone(),
        namespace,
        id,
    };
    let profile = state
        .db
        .profile(&profile_key)
        .await
        .map_err(internal)?
        .ok_or(PrefError::NotFound)?;
    let records = state.db.records(&profile_key).await.map_err(internal)?;
    Ok(Json(ProfileAnswer {
        general: profile.general,
        consents: profile.consents,
        subscriptions: profile.subscriptions,
        updated_at: profile.updated_at,
        records: records.iter().map(RecordAnswer::from).collect(),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", content_type.parse().unwrap());
        h
    }

    #[test]
    fn one_click_bodies_are_recognised() {
        let form = headers("application/x-www-form-urlencoded");
        assert_eq!(
            post_kind(&form, b"List-Unsubscribe=One-Click"),
            Some(PostKind::OneClick)
        );
        assert_eq!(post_kind(&form, b"confirm=yes"), Some(PostKind::Confirm));
        assert_eq!(post_kind(&form, b"List-Unsubscribe=Other"), None);
        assert_eq!(post_kind(&form, b""), None);
        let multi = headers("multipart/form-data; boundary=XyZ");
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
        assert_eq!(post_kind(&multi, body), Some(PostKind::OneClick));
        assert_eq!(post_kind(&multi, b"garbage"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
