//! The data-subject rights of the admin API: erasure (GDPR Art. 17,
//! `DELETE /admin/v1/profiles/{namespace}/{id}`) and access (Art. 15,
//! `GET /admin/v1/profiles/{namespace}/{id}/export`), for the organisation and sandbox of the
//! caller's API key. The storage side is [`Db::erase`](crate::Db::erase) and
//! [`Db::export`](crate::Db::export). And for auditors, a signed checkpoint of the caller's
//! consent record chain (`GET /admin/v1/chain/checkpoint`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, Checkpoint, ErasureAnswer, ExportDocument, OrgHeaders, ProfilePath};
use crate::db::ProfileKey;
use crate::prefs::{PrefError, authenticate, check_chars, internal};
use crate::state::AppState;

/// The profile the path names, in the caller's organisation and sandbox.
fn profile_key(
    state: &AppState,
    headers: &HeaderMap,
    namespace: String,
    id: String,
) -> Result<ProfileKey, PrefError> {
    let key = authenticate(state, headers)?;
    check_chars("namespace", &namespace)?;
    check_chars("id", &id)?;
    Ok(ProfileKey {
        org: key.org.clone(),
        sandbox: key.sandbox.clone(),
        namespace,
        id,
    })
}

/// `DELETE /admin/v1/profiles/{namespace}/{id}`: erases the person's personal data; answers
/// what was removed and the erasure's record (`404` when nothing was stored about them).
#[utoipa::path(delete, path = "/admin/v1/profiles/{namespace}/{id}", tag = "admin",
    params(ProfilePath, OrgHeaders),
    security(("apiKey" = [], "bearer" = [])),
    summary = "Erase everything personal stored about an identity (GDPR Art. 17)",
    description = "Deletes the profile, its events and the events of other profiles whose \
        identity map names the identity, the personal detail of consent records about or naming \
        it, and the identity-specific consents other profiles hold for it. The consent records \
        stay (they name the identity only by a keyed hash) and the erasure is appended as a \
        record of its own: the chain still verifies.",
    responses(
        (status = 200, description = "What was erased, and the erasure's record",
            body = ErasureAnswer),
        (status = 400, description = "An invalid character in the path", body = ApiError),
        (status = 401, description = "Missing or wrong credentials", body = ApiError),
        (status = 403, description = "Credentials of another organisation", body = ApiError),
        (status = 404, description = "Nothing is stored about the identity", body = ApiError),
        (status = 429, description = "Too many requests for this API key", body = ApiError),
    ))]
pub(crate) async fn erase_profile(
    State(state): State<Arc<AppState>>,
    Path((namespace, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, PrefError> {
    let key = profile_key(&state, &headers, namespace, id)?;
    let erased = state
        .db
        .erase(&key)
        .await
        .map_err(internal)?
        .ok_or(PrefError::NotFound)?;
    tracing::info!(seq = erased.seq, "profile erased");
    Ok(Json(erased.to_json()).into_response())
}

/// `GET /admin/v1/profiles/{namespace}/{id}/export`: everything stored about the person, as
/// one JSON document (`404` when nothing is).
#[utoipa::path(get, path = "/admin/v1/profiles/{namespace}/{id}/export", tag = "admin",
    params(ProfilePath, OrgHeaders),
    security(("apiKey" = [], "bearer" = [])),
    summary = "Everything stored about an identity, as one document (GDPR Art. 15)",
    responses(
        (status = 200, description = "The profile, its consent records (personal detail put \
            back) and events, and what other profiles hold that names it",
            body = ExportDocument),
        (status = 400, description = "An invalid character in the path", body = ApiError),
        (status = 401, description = "Missing or wrong credentials", body = ApiError),
        (status = 403, description = "Credentials of another organisation", body = ApiError),
        (status = 404, description = "Nothing is stored about the identity", body = ApiError),
        (status = 429, description = "Too many requests for this API key", body = ApiError),
    ))]
pub(crate) async fn export_profile(
    State(state): State<Arc<AppState>>,
    Path((namespace, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, PrefError> {
    let key = profile_key(&state, &headers, namespace, id)?;
    let document = state
        .db
        .export(&key)
        .await
        .map_err(internal)?
        .ok_or(PrefError::NotFound)?;
    Ok(Json(document).into_response())
}

/// `GET /admin/v1/chain/checkpoint`: the head of the caller's consent record chain (sequence,
/// hash, time), signed with the current receipt key. An auditor who keeps it can later show that
/// nothing before it was rewritten ([`Db::verify_chain_against`](crate::Db::verify_chain_against)).
#[utoipa::path(get, path = "/admin/v1/chain/checkpoint", tag = "admin", params(OrgHeaders),
    security(("apiKey" = [], "bearer" = [])),
    summary = "The signed head of the caller's consent record chain, for auditors",
    responses(
        (status = 200, description = "The checkpoint, signed and in clear", body = Checkpoint),
        (status = 401, description = "Missing or wrong credentials", body = ApiError),
        (status = 403, description = "Credentials of another organisation", body = ApiError),
        (status = 429, description = "Too many requests for this API key", body = ApiError),
    ))]
pub(crate) async fn checkpoint(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, PrefError> {
    let key = authenticate(&state, &headers)?;
    let (seq, hash) = state
        .db
        .chain_head(&key.org, &key.sandbox)
        .await
        .map_err(internal)?;
    let checkpoint = consent_core::receipt::Checkpoint {
        org: key.org.clone(),
        sandbox: key.sandbox.clone(),
        seq: u64::try_from(seq).unwrap_or(0),
        hash,
        time: u64::try_from(crate::util::now_millis() / 1000).unwrap_or(0),
    };
    let signed = state.config.keys.receipts.sign_checkpoint(&checkpoint);
    Ok(Json(Checkpoint {
        checkpoint: signed,
        org: checkpoint.org,
        sandbox: checkpoint.sandbox,
        seq: checkpoint.seq,
        hash: checkpoint.hash,
        time: checkpoint.time,
    })
    .into_response())
}

/// `GET /.well-known/consent-receipt-keys`: the public keys receipts and checkpoints are signed
/// with, as a JWKS (RFC 7517, Ed25519 keys as RFC 8037 says). Every key of the keys file is
/// listed, the retired ones too, for as long as they are kept there.
#[utoipa::path(get, path = "/.well-known/consent-receipt-keys", tag = "operations",
    summary = "The public keys receipts and checkpoints are signed with (a JWK set; Ed25519 as \
        RFC 8037 says)",
    responses(
        (status = 200, description = "A JWK set", body = crate::api::Jwks,
            content_type = "application/jwk-set+json"),
    ))]
pub(crate) async fn receipt_keys(State(state): State<Arc<AppState>>) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/jwk-set+json"),
            (axum::http::header::CACHE_CONTROL, "max-age=300"),
        ],
        crate::api::Jwks::of(state.config.keys.receipts.jwks()),
    )
        .into_response()
}
