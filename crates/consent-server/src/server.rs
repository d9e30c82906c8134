//! The HTTP server: routes, middleware and the running-server handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::db::{Db, OpenError};
use crate::edge::routes as edge;
use crate::ops::{Metrics, RateLimiter, inc, openapi};
use crate::prefs;
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
        metrics: Metrics::default(),
        config,
        local_addr,
    });
    let app = router(state);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
    });
    tracing::info!(%local_addr, "consent-server listening");
    Ok(Server {
        local_addr,
        db,
        stop,
        task,
    })
}

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
            get(prefs::read_profile),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_doc));
    public
        .merge(private)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
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

/// What every request goes through, in one layer: the per-client rate limit on the public
/// endpoints, the request timeout, and the counters.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // The method and path are copied only when they are logged.
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| {
            client_ip(peer.ip(), request.headers(), &state.config.trusted_proxies)
        });
    let limited = is_public(request.uri().path())
        && client.is_some_and(|ip| !state.limiter.allow(ip, started));
    let response = if limited {
        inc(&state.metrics.rate_limited);
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "rate limited\n",
        )
            .into_response()
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
    let class = match status.as_u16() {
        200..=399 => &state.metrics.responses_2xx,
        400..=499 => &state.metrics.responses_4xx,
        _ => &state.metrics.responses_5xx,
    };
    inc(class);
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state
        .metrics
        .request_micros
        .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    if let Some((method, path)) = logged {
        tracing::debug!(%method, %path, status = status.as_u16(), micros, "request");
    }
    response
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(err) => {
            tracing::error!(%err, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi_doc() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
