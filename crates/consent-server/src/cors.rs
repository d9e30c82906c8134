//! CORS for the Edge endpoints (`/ee/…`), and the `x-adobe-edge` answer header.
//!
//! The Web SDK (alloy) calls the Edge endpoints from the page with a credentialed `fetch`
//! (`credentials: "include"`, `Content-Type: text/plain`): a simple request, so the browser
//! sends it without a preflight and then shows the answer to the page only if it carries
//! `Access-Control-Allow-Origin: <the page's origin>` and `Access-Control-Allow-Credentials:
//! true`. Every answer needs them, errors included: alloy copies a 4xx body into its error
//! message and honours `Retry-After` on a 429. So this is the outermost layer, around the rate
//! limit, the request timeout and the handlers, and whatever they answer — 200, 204, 400, 408,
//! 413, 422, 429, 500 — goes out through it.
//!
//! Rules, for a request to `/ee/…` (every other path is left alone):
//! - The allow-list is the one of the request's datastream: the `origins` of the datastream the
//!   `configId` query parameter names in the keys file, or, for a `configId` that is not there
//!   (or none), the default list (`--cors-origin`, [`crate::Config::cors_origins`]).
//! - Origins are compared exactly, byte for byte, with the `Origin` header as browsers send it:
//!   `scheme://host[:port]`, lower case, no default port, no path. An entry that cannot match
//!   such a header, `*` and `null` are refused when the server starts ([`check_origins`]): `*`
//!   would mean any site can read a visitor's answers with the visitor's cookies.
//! - No `Origin` header (server-to-server callers, curl, the native SDKs): served as before.
//! - An allowed `Origin`: the answer carries `Access-Control-Allow-Origin: <origin>`,
//!   `Access-Control-Allow-Credentials: true`, `Access-Control-Expose-Headers: x-adobe-edge,
//!   retry-after`. An `OPTIONS` (a preflight) is answered here, 204, with
//!   `Access-Control-Allow-Methods: POST, GET, OPTIONS`, `Access-Control-Allow-Headers` (the
//!   requested ones, or `content-type`) and `Access-Control-Max-Age: 600`; preflights are not
//!   rate limited (they do no work) and not counted in the route histograms.
//! - An `Origin` that is not allowed: 403, no CORS header at all, and the request goes no
//!   further — nothing is stored, whatever the method. A browser would hide the answer from the
//!   page anyway; refusing it also keeps a page on another site from changing a visitor's
//!   consent with the visitor's cookies (a simple cross-site POST needs no preflight). A
//!   preflight from such an origin gets the same 403, so the browser never sends the request.
//! - Every `/ee/…` answer carries `Vary: Origin` (caches must not mix answers for different
//!   origins) and `x-adobe-edge: <CLUSTER>;<region>` as Adobe's Edge sends it (`OR2;9`): the
//!   cluster is the request's location hint or the default cluster (upper case), the region
//!   [`crate::Config::edge_region`]. alloy reads `getIdentity().edge.regionId` from it.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::ops::Refusal;
use crate::state::AppState;

/// The answer header alloy reads the region from.
const X_ADOBE_EDGE: &str = "x-adobe-edge";
/// The answer headers a page may read besides the CORS-safelisted ones.
const EXPOSE_HEADERS: &str = "x-adobe-edge, retry-after";
/// The methods a preflight is told are allowed.
const ALLOW_METHODS: &str = "POST, GET, OPTIONS";
/// The request headers a preflight is told are allowed when it names none.
const ALLOW_HEADERS: &str = "content-type";
/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// An entry of an allow-list that can never match an `Origin` header, or must not.
#[derive(Debug, thiserror::Error)]
#[error("CORS origin {origin:?} of {list}: {reason}")]
pub struct OriginError {
    /// The entry.
    pub origin: String,
    /// Where it is: `datastream "<id>"` (the keys file) or the default list (`--cors-origin`).
    pub list: String,
    /// Why it is refused.
    pub reason: &'static str,
}

/// Checks every allow-list of `config` (the default one and each datastream's).
pub(crate) fn check_origins(config: &Config) -> Result<(), OriginError> {
    let lists = config
        .keys
        .datastreams
        .iter()
        .map(|d| (format!("datastream {:?}", d.id), &d.origins))
        .chain([(
            "the default list (--cors-origin)".to_owned(),
            &config.cors_origins,
        )]);
    for (list, origins) in lists {
        for origin in origins {
            check_origin(origin).map_err(|reason| OriginError {
                origin: origin.clone(),
                list: list.clone(),
                reason,
            })?;
        }
    }
    Ok(())
}

/// Whether `origin` is an origin as browsers serialise it in the `Origin` header.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Err("`*` is never allowed: answers carry the visitor's cookies (credentials)");
    }
    if origin == "null" {
        return Err("`null` (sandboxed frames, file: pages) is never allowed");
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("not scheme://host[:port]");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err("the scheme must be lower case, e.g. https");
    }
    if rest.is_empty() {
        return Err("no host");
    }
    if rest.contains(['/', '?', '#', '@']) || rest.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err("an origin is scheme://host[:port], without a path, query or user");
    }
    if rest.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("browsers send the host in lower case");
    }
    // The port is what follows the last ':' outside an IPv6 literal's brackets.
    let port = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => Some(&rest[i + 1..]),
        _ => None,
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the port is not a number");
        }
        if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
            return Err("browsers leave the default port out of the Origin header");
        }
    }
    Ok(())
}

/// The first `configId` of the query, decoded.
fn config_id(uri: &axum::http::Uri) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find_map(|(name, value)| (name == "configId").then_some(value))
}

/// Whether `origin` is on the allow-list of the datastream `config_id` names (the default
/// list when it names none in the keys file).
fn allowed(config: &Config, config_id: Option<&str>, origin: &[u8]) -> bool {
    let list = config_id
        .and_then(|id| config.keys.datastreams.iter().find(|d| d.id == id))
        .map_or(&config.cors_origins, |d| &d.origins);
    list.iter().any(|o| o.as_bytes() == origin)
}

/// `x-adobe-edge: <CLUSTER>;<region>` for a request to `path`: the location hint of
/// `/ee/{hint}/v1/…` when it is one the handlers accept (as they do: up to 16 letters and
/// digits), else the default cluster.
fn edge_header(config: &Config, path: &str) -> Option<HeaderValue> {
    let hint = path
        .strip_prefix("/ee/")
        .and_then(|rest| rest.split('/').next())
        .filter(|h| {
            *h != "v1"
                && h.len() <= 16
                && !h.is_empty()
                && h.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    let cluster = hint.unwrap_or(&config.default_cluster);
    HeaderValue::from_str(&format!(
        "{};{}",
        cluster.to_ascii_uppercase(),
        config.edge_region
    ))
    .ok()
}

/// The request headers a preflight asked for, when they are a plain list of header names; else
/// the fixed list.
fn allow_headers(request: &HeaderMap) -> HeaderValue {
    request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            !v.is_empty()
                && v.as_bytes()
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~, ".contains(&b))
        })
        .cloned()
        .unwrap_or(HeaderValue::from_static(ALLOW_HEADERS))
}

/// The layer (see the module docs).
pub(crate) async fn layer(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/ee/") {
        return next.run(request).await;
    }
    let edge = edge_header(&state.config, path);
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = match origin {
        None => next.run(request).await,
        Some(origin) => {
            let config_id = config_id(request.uri());
            if !allowed(&state.config, config_id.as_deref(), origin.as_bytes()) {
                tracing::debug!(?origin, ?config_id, "origin not allowed: refused");
                state.metrics.refuse(Refusal::CorsOrigin);
                let mut refused = (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
                refused
                    .headers_mut()
                    .append(header::VARY, HeaderValue::from_static("Origin"));
                return refused;
            }
            let mut response = if request.method() == Method::OPTIONS {
                let mut preflight = StatusCode::NO_CONTENT.into_response();
                let headers = preflight.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static(ALLOW_METHODS),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    allow_headers(request.headers()),
                );
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static(MAX_AGE),
                );
                headers.append(
                    header::VARY,
                    HeaderValue::from_static(
                        "Access-Control-Request-Method, Access-Control-Request-Headers",
                    ),
                );
                preflight
            } else {
                next.run(request).await
            };
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
            response
        }
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(edge) = edge {
        headers.insert(HeaderName::from_static(X_ADOBE_EDGE), edge);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_as_browsers_send_them() {
        for good in [
            "https://site.test",
            "http://localhost:5173",
            "https://[::1]:8443",
            "http://127.0.0.1",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "*",
            "null",
            "site.test",
            "https://site.test/",
            "https://Site.test",
            "HTTPS://site.test",
            "https://site.test:443",
            "http://site.test:80",
            "https://site.test:x",
            "https://",
            "https://u@site.test",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_edge_header_names_the_hint_or_the_default_cluster() {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), "sqlite://x").unwrap();
        config.edge_region = 9;
        let header = |path| edge_header(&config, path).unwrap();
        assert_eq!(header("/ee/v1/interact"), "OR2;9");
        assert_eq!(header("/ee/irl1/v1/interact"), "IRL1;9");
        assert_eq!(header("/ee/no%20pe/v1/interact"), "OR2;9");
    }
}
