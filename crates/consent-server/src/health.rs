//! The operations endpoints: `GET /healthz` (with a database round trip) and `GET /metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    summary = "Liveness, including a database round trip",
    responses(
        (status = 200, description = "ok", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String,
            content_type = "text/plain"),
    ))]
pub(crate) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(err) => {
            tracing::error!(%err, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4, with a latency histogram \
            per route", body = String, content_type = "text/plain"),
    ))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
