//! The HTTP server: routes, middleware and the running-server handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::Config;
use crate::db::{Db, OpenError};
use crate::edge::routes as edge;
use crate::ops::{Metrics, RateLimiter, Refusal, inc};
use crate::prefs::{self, retry_after};
use crate::state::AppState;

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Database(#[from] OpenError),
    /// An entry of a CORS allow-list can never match a browser's `Origin` (or is `*`).
    #[error(transparent)]
    Origin(#[from] crate::cors::OriginError),
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    db: Db,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The database the server uses.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stops accepting connections, lets in-flight requests finish, then closes the database.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after [`Server::shutdown`] or a failure).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = match self.task.await {
            Ok(result) => result,
            Err(err) => Err(std::io::Error::other(err)),
        };
        self.db.close().await;
        result
    }

    /// A sender that stops the server when `true` is sent; for signal handlers.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds, opens and migrates the database, and starts serving in a background task.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = consent_server::Config::new("127.0.0.1:0".parse()?, "sqlite://consent.db")?;
/// let server = consent_server::serve(config).await?;
/// println!("listening on {}", server.local_addr());
/// server.shutdown().await?;
/// # Ok(()) }
/// ```
pub async fn serve(config: Config) -> Result<Server, ServeError> {
    crate::cors::check_origins(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let db = Db::open(&config.database).await?;
    let state = Arc::new(AppState {
        db: db.clone(),
        limiter: RateLimiter::new(config.rate_limit_per_sec),
        api_limiter: RateLimiter::new(config.api_rate_limit_per_sec),
        auth_failures: RateLimiter::with_burst(
            f64::from(config.auth_failures_per_minute) / 60.0,
            f64::from(config.auth_failures_per_minute),
        ),
        metrics: Metrics::with_routes(ROUTES),
        config,
        local_addr,
        unknown_datastream_seen: std::sync::atomic::AtomicBool::new(false),
    });
    let app = router(state.clone());
    let (stop, stopped) = watch::channel(false);
    match &state.config.tls {
        Some(tls) => tracing::info!(
            %local_addr,
            fingerprint = tls.fingerprint(),
            spki_sha256 = tls.spki_sha256(),
            "consent-server listening (HTTPS)"
        ),
        None => tracing::info!(%local_addr, "consent-server listening"),
    }
    let task = tokio::spawn(accept_loop(listener, app, state, stopped));
    Ok(Server {
        local_addr,
        db,
        stop,
        task,
    })
}

/// Accepts connections until told to stop, then lets every open connection finish its
/// in-flight request and waits for them all to close.
///
/// `axum::serve` has neither a header read timeout nor a connection cap; this loop is the same
/// (HTTP/1.1 with keep-alive, graceful shutdown, `ConnectInfo<SocketAddr>` for the middleware)
/// with both. A connection holds a permit of a semaphore of `max_connections`; with none left the
/// loop stops accepting, so further connections wait in the kernel's listen backlog instead of
/// using up file descriptors.
///
/// With TLS, the handshake runs in the connection's task, holding its permit, and must end
/// within the header read timeout: a client that connects and never sends a `ClientHello` (or
/// stalls in the handshake) is closed then, as one that never sends its headers is.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let cap = state
        .config
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let tls = state
        .config
        .tls
        .as_ref()
        .map(crate::tls::TlsConfig::acceptor);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, a connection reset before it was accepted, …:
                    // none of them ends the server. A short pause keeps an exhausted descriptor
                    // table from turning this loop into a busy one.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        inc(&state.metrics.connections_accepted);
        inc(&state.metrics.connections_open);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                tower_service::Service::call(&mut app.clone(), request)
            });
        // Taken now, before a handshake: a shutdown that starts while it runs still waits for
        // this connection (and tells it to close once its request is answered).
        let watcher = graceful.watcher();
        let http = http.clone();
        let tls = tls.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    let timeout = state.config.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, %err, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(err) = served {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
            state
                .metrics
                .connections_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Ends once `true` has been sent.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await of the accept loop.
    let _ = stopped.wait_for(|s| *s).await;
}

/// Every route template, for the latency histograms. A route `router` serves that is missing
/// here would be counted as `unmatched`; `tests/it/limits.rs` requests each of these and finds
/// its series.
pub(crate) const ROUTES: &[&str] = &[
    "/ee/v1/interact",
    "/ee/{hint}/v1/interact",
    "/ee/v1/collect",
    "/ee/{hint}/v1/collect",
    "/ee/v1/privacy/set-consent",
    "/ee/{hint}/v1/privacy/set-consent",
    "/ee/v1/identity/acquire",
    "/ee/{hint}/v1/identity/acquire",
    "/unsubscribe",
    "/imp/consent/preferences",
    "/imp/consent/decrypt",
    "/admin/v1/unsubscribe-links",
    "/admin/v1/profiles/{namespace}/{id}",
    "/admin/v1/profiles/{namespace}/{id}/export",
    "/admin/v1/chain/checkpoint",
    "/.well-known/consent-receipt-keys",
    "/healthz",
    "/metrics",
    "/openapi.json",
];

fn router(state: Arc<AppState>) -> Router {
    let public = Router::new()
        .route("/ee/v1/interact", post(edge::interact))
        .route("/ee/{hint}/v1/interact", post(edge::interact_hinted))
        .route("/ee/v1/collect", post(edge::collect))
        .route("/ee/{hint}/v1/collect", post(edge::collect_hinted))
        .route("/ee/v1/privacy/set-consent", post(edge::set_consent))
        .route(
            "/ee/{hint}/v1/privacy/set-consent",
            post(edge::set_consent_hinted),
        )
        .route("/ee/v1/identity/acquire", post(edge::acquire))
        .route("/ee/{hint}/v1/identity/acquire", post(edge::acquire_hinted))
        .route("/unsubscribe", get(prefs::landing).post(prefs::unsubscribe));
    let private = Router::new()
        .route("/imp/consent/preferences", post(prefs::preferences))
        .route("/imp/consent/decrypt", get(prefs::decrypt))
        .route("/admin/v1/unsubscribe-links", post(prefs::create_link))
        .route(
            "/admin/v1/profiles/{namespace}/{id}",
            get(prefs::read_profile).delete(admin::erase_profile),
        )
        .route(
            "/admin/v1/profiles/{namespace}/{id}/export",
            get(admin::export_profile),
        )
        .route("/admin/v1/chain/checkpoint", get(admin::checkpoint))
        .route(
            "/.well-known/consent-receipt-keys",
            get(admin::receipt_keys),
        )
        .route("/healthz", get(crate::health::healthz))
        .route("/metrics", get(crate::health::metrics))
        .route("/openapi.json", get(crate::openapi::openapi_doc));
    public
        .merge(private)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        // Outermost: every answer of the layers above, 429 and 408 included, gets CORS.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::cors::layer,
        ))
        .with_state(state)
}

/// The client a request counts against: its TCP peer, or, when that is a trusted proxy, the
/// address the proxies forwarded for. `X-Forwarded-For` lists the addresses each proxy saw, the
/// nearest last, so the walk goes back from the end past trusted proxies; an entry that is not an
/// address stops it there.
fn client_ip(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[std::net::IpAddr],
) -> std::net::IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        if !trusted.contains(&client) {
            break;
        }
        match entry.trim().parse() {
            Ok(ip) => client = ip,
            Err(_) => break,
        }
    }
    client
}

/// Whether `path` is one of the public endpoints, which are rate limited per client.
fn is_public(path: &str) -> bool {
    path.starts_with("/ee/") || path == "/unsubscribe"
}

/// Whether `path` is one of the authenticated endpoints, where failed authentications are
/// limited per client.
fn is_authenticated(path: &str) -> bool {
    path.starts_with("/imp/") || path.starts_with("/admin/")
}

/// What every request goes through, in one layer: the per-client rate limit on the public
/// endpoints, the per-client limit of failed authentications on the authenticated ones, the
/// request timeout, and the counters and latency histogram.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // The method and path are copied only when they are logged.
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let route = state.metrics.route(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let method = request.method().clone();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| {
            client_ip(peer.ip(), request.headers(), &state.config.trusted_proxies)
        });
    let path = request.uri().path();
    let authenticated = is_authenticated(path);
    let limited = if is_public(path) {
        client.is_some_and(|ip| !state.limiter.allow(ip, started))
    } else {
        false
    };
    // A client that failed to authenticate too often is refused before its credentials are
    // even looked at, whichever key it names now: a guesser cannot use up another key's budget,
    // and learns nothing more.
    let locked_out = match client {
        Some(ip) if authenticated => state.auth_failures.check(ip, started).err(),
        _ => None,
    };
    // Wrong credentials are answered here, from the headers alone: the body is never waited
    // for, so a guesser cannot hold many requests open past the check above and have them all
    // judged at once (each 401 is counted below before the next request is looked at).
    let wrong_credentials = authenticated
        && !limited
        && locked_out.is_none()
        && prefs::credentials(&state, request.headers()).is_err();
    let response = if limited {
        inc(&state.metrics.rate_limited);
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "rate limited\n",
        )
            .into_response()
    } else if let Some(wait) = locked_out {
        inc(&state.metrics.auth_failures_limited);
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after(wait))],
            axum::Json(serde_json::json!({
                "error": "rate_limited",
                "message": "too many failed authentications from this client",
            })),
        )
            .into_response()
    } else if wrong_credentials {
        prefs::PrefError::Unauthenticated.into_response()
    } else {
        match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                inc(&state.metrics.timeouts);
                (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response()
            }
        }
    };
    let status = response.status();
    if let Some(reason) = Refusal::of(&response) {
        state.metrics.refuse(reason);
    }
    if authenticated && status == StatusCode::UNAUTHORIZED {
        inc(&state.metrics.auth_failures);
        if let Some(ip) = client {
            let _ = state.auth_failures.take(ip, started);
        }
    }
    let elapsed = started.elapsed();
    state
        .metrics
        .observe(route, &method, status.as_u16(), elapsed);
    let micros = elapsed.as_micros();
    if let Some((method, path)) = logged {
        tracing::debug!(%method, %path, status = status.as_u16(), micros, "request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_router_is_documented_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(crate::openapi::document()).unwrap();
        let mut documented: Vec<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        let mut routed: Vec<String> = ROUTES
            .iter()
            .map(|r| r.replace("{hint}", "{locationHint}"))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        use axum::http::{HeaderMap, HeaderValue};
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let proxy = ip("10.0.0.1");
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, 10.0.0.2"),
        );
        headers.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        // Not trusted: the header is the client's own word, ignored.
        assert_eq!(client_ip(proxy, &headers, &[]), proxy);
        // Trusted: the nearest forwarded address.
        assert_eq!(client_ip(proxy, &headers, &[proxy]), ip("203.0.113.9"));
        // Past every trusted proxy, never past an untrusted one.
        let chain = [proxy, ip("203.0.113.9"), ip("10.0.0.2")];
        assert_eq!(client_ip(proxy, &headers, &chain), ip("198.51.100.7"));
        // Something that is not an address stops the walk where it is.
        let mut odd = HeaderMap::new();
        odd.append(
            "x-forwarded-for",
            HeaderValue::from_static("unknown, 10.0.0.2"),
        );
        assert_eq!(
            client_ip(proxy, &odd, &[proxy, ip("10.0.0.2")]),
            ip("10.0.0.2")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }
}
