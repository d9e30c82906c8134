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
use serde_json::json;

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
    Ok(Json(json!({
        "checkpoint": signed,
        "org": checkpoint.org,
        "sandbox": checkpoint.sandbox,
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "time": checkpoint.time,
    }))
    .into_response())
}

/// `GET /.well-known/consent-receipt-keys`: the public keys receipts and checkpoints are signed
/// with, as a JWKS (RFC 7517, Ed25519 keys as RFC 8037 says). Every key of the keys file is
/// listed, the retired ones too, for as long as they are kept there.
pub(crate) async fn receipt_keys(State(state): State<Arc<AppState>>) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/jwk-set+json"),
            (axum::http::header::CACHE_CONTROL, "max-age=300"),
        ],
        state.config.keys.receipts.jwks().to_json(),
    )
        .into_response()
}
