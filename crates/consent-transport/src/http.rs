//! The HTTP transport: Edge requests over reqwest, retries, and cookies handed to the engine. The
//! configuration, answers and errors every transport shares are here too; what needs reqwest is
//! behind the `http` feature.
#![cfg_attr(not(feature = "http"), allow(unused_imports, dead_code))]

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use consent_core::{Action, Cookie, CookieNames, Origin, StoredCookie};
#[cfg(feature = "http")]
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderMap, RETRY_AFTER, SET_COOKIE};
use url::Url;

use crate::Transport;
use crate::ids::new_uuid;
use crate::jar::{CookieJar, JarError, parse_set_cookie};
use crate::protocol::{
    EdgeResponse, Problem, Request, StateMeta, problems_in, state_store_cookies_in,
};
use crate::retry::{
    Attempt, Delivery, FullJitter, Jitter, Retrier, RetryPolicy, Sleep, TokioSleep,
    parse_retry_after,
};

/// An invalid [`EdgeConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The base URL does not parse.
    #[error("invalid base URL {url:?}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },
    /// The base URL is not `http` or `https`, or carries a query or fragment.
    #[error("the base URL {0:?} must be an http(s) URL without query or fragment")]
    UnsupportedUrl(String),
}

/// The request header that asks consent-server for a `set-consent`'s signed receipt.
const RECEIPT_HEADER: &str = "consent-receipt";

/// Where and how to reach an Edge-compatible server.
///
/// ```
/// use consent_transport::{EdgeConfig, Operation};
///
/// let config = EdgeConfig::new("https://edge.example.com", "datastream-1", "ORG@AdobeOrg")?;
/// let url = config.url(Operation::SetConsent, Some("or2"), "req-1");
/// assert_eq!(url.as_str(),
///     "https://edge.example.com/ee/or2/v1/privacy/set-consent?configId=datastream-1&requestId=req-1");
/// # Ok::<(), consent_transport::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    base: Url,
    /// The base URL's path without its trailing `/`.
    prefix: String,
    base_path: String,
    config_id: String,
    names: CookieNames,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    state_entries: bool,
    cookie_header: bool,
    receipts: bool,
}

impl EdgeConfig {
    /// A server at `base` (e.g. `https://edge.adobedc.net`), datastream `config_id`, and the
    /// organisation whose cookies (`kndctr_<org>_*`) the requests carry. Defaults: base path
    /// `ee`, 10 s per attempt, 5 s to connect, [`RetryPolicy::default`], cookies sent both as
    /// `meta.state.entries` and as a `Cookie` header.
    pub fn new(
        base: &str,
        config_id: impl Into<String>,
        org_id: &str,
    ) -> Result<Self, ConfigError> {
        let mut url = Url::parse(base).map_err(|source| ConfigError::InvalidUrl {
            url: base.to_owned(),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
            || url.cannot_be_a_base()
        {
            return Err(ConfigError::UnsupportedUrl(base.to_owned()));
        }
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path("/");
        Ok(Self {
            base: url,
            prefix,
            base_path: "ee".to_owned(),
            config_id: config_id.into(),
            names: CookieNames::new(org_id),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            state_entries: true,
            cookie_header: true,
            receipts: false,
        })
    }

    /// The path segment before the location hint (`ee`; `ee-pre-prd` for pre-production).
    #[must_use]
    pub fn base_path(mut self, path: impl Into<String>) -> Self {
        self.base_path = path.into().trim_matches('/').to_owned();
        self
    }

    /// The time one attempt may take, answer included.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time to establish a connection.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The retry policy.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Whether requests carry the organisation's cookies in `meta.state.entries` (the Web SDK does
    /// so for a server that is not first-party).
    #[must_use]
    pub fn send_state_entries(mut self, on: bool) -> Self {
        self.state_entries = on;
        self
    }

    /// Whether requests carry the jar's cookies in a `Cookie` header.
    #[must_use]
    pub fn send_cookie_header(mut self, on: bool) -> Self {
        self.cookie_header = on;
        self
    }

    /// Whether `privacy/set-consent` requests ask for the signed receipt of the change they make
    /// (header `consent-receipt: true`): consent-server then answers with a `consent:receipt`
    /// handle ([`EdgeResponse::receipts`]); a server that does not know the header ignores it.
    /// Off by default.
    #[must_use]
    pub fn request_receipts(mut self, on: bool) -> Self {
        self.receipts = on;
        self
    }

    /// The cookie names of the organisation.
    pub fn names(&self) -> &CookieNames {
        &self.names
    }

    /// The URL cookies are kept for: the base URL's origin, path `/`.
    pub fn cookie_url(&self) -> Url {
        let mut url = self.base.clone();
        url.set_path("/");
        url
    }

    /// The URL of one request: `{base}/{basePath}[/{locationHint}]/v1/{op}?configId=…&requestId=…`.
    /// A location hint that is not a plain token (letters, digits, `-`, `_`) is left out.
    pub fn url(&self, op: crate::Operation, location_hint: Option<&str>, request_id: &str) -> Url {
        let mut url = self.base.clone();
        {
            let hint = location_hint.filter(|h| {
                !h.is_empty()
                    && h.len() <= 64
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
            let path = match hint {
                Some(hint) => format!("{}/{}/{hint}/v1/{}", self.prefix, self.base_path, op.path()),
                None => format!("{}/{}/v1/{}", self.prefix, self.base_path, op.path()),
            };
            url.set_path(&path);
        }
        url.query_pairs_mut()
            .append_pair("configId", &self.config_id)
            .append_pair("requestId", request_id);
        url
    }
}

/// The HTTP client could not be built.
#[cfg(feature = "http")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client")]
    Client(#[from] reqwest::Error),
}

/// Builds the reqwest client every transport here uses: rustls, no redirects, no cookie store.
///
/// rustls needs a process-wide crypto provider; when the application has not installed one, *ring*
/// is installed here (an application that installs its own before this keeps it).
#[cfg(feature = "http")]
pub(crate) fn build_client(connect_timeout: Duration) -> Result<reqwest::Client, BuildError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine: there is a provider either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// A 2xx answer with a valid Edge body.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeReply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub response: EdgeResponse,
    /// The cookies the server asked for (`Set-Cookie` headers, then `state:store` handles), not
    /// yet written: hand them to the engine, which decides.
    pub cookies: Vec<Cookie>,
    /// The `requestId` sent (the same for every attempt).
    pub request_id: String,
    /// How many attempts it took.
    pub attempts: u32,
}

impl EdgeReply {
    /// [`Delivery::Sent`].
    pub fn delivery(&self) -> Delivery {
        Delivery::Sent
    }

    /// The engine's input for this answer.
    pub fn engine_response(&self, origin: Origin) -> consent_core::Response {
        consent_core::Response {
            origin,
            outcome: consent_core::Outcome::Success,
            cookies: self.cookies.clone(),
        }
    }
}

/// A non-2xx answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusError {
    /// The HTTP status.
    pub status: u16,
    /// The problems in the body (`errors[]`, or the body itself as a problem document).
    pub problems: Vec<Problem>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// Cookies the server asked for even so (Edge may set the consent cookie on a 403).
    pub cookies: Vec<Cookie>,
    /// The server's `Retry-After`.
    pub retry_after: Option<Duration>,
    /// How many attempts were made.
    pub attempts: u32,
}

impl StatusError {
    /// The server's error codes, e.g. `EXEG-0102-400`.
    pub fn codes(&self) -> Vec<&str> {
        self.problems
            .iter()
            .filter_map(Problem::error_code)
            .collect()
    }

    /// Whether another attempt may succeed: 5xx, 429 and 408.
    pub fn is_recoverable(&self) -> bool {
        is_retryable_status(self.status)
    }
}

impl fmt::Display for StatusError {
    /// The Web SDK's wording.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.body.trim().is_empty() {
            return write!(
                f,
                "The server responded with a status code {} and no response body.",
                self.status
            );
        }
        let pretty = serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| self.body.clone());
        write!(
            f,
            "The server responded with a status code {} and response body:\n{pretty}",
            self.status
        )
    }
}

fn is_retryable_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// The cause a transport reports for a failure of the network (reqwest's error, for the HTTP
/// transport).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A request that did not end in a 2xx answer with a valid body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The server answered outside 2xx.
    #[error("{0}")]
    Status(Box<StatusError>),
    /// No complete answer in time.
    #[error("the request timed out ({attempts} attempts)")]
    Timeout {
        /// How many attempts were made.
        attempts: u32,
        /// What the HTTP client reported.
        #[source]
        source: BoxError,
    },
    /// The server could not be reached.
    #[error("cannot connect to the server ({attempts} attempts)")]
    Connect {
        /// How many attempts were made.
        attempts: u32,
        /// What the HTTP client reported.
        #[source]
        source: BoxError,
    },
    /// The connection failed during the exchange (reset, closed early).
    #[error("the connection failed ({attempts} attempts)")]
    Network {
        /// How many attempts were made.
        attempts: u32,
        /// What the HTTP client reported.
        #[source]
        source: BoxError,
    },
    /// A 2xx answer whose body is not an Edge response (no `handle` array, or bad JSON).
    #[error("the server responded with a status code {status} and a malformed body")]
    Malformed {
        /// The HTTP status.
        status: u16,
        /// Cookies from `Set-Cookie` headers, which were still valid.
        cookies: Vec<Cookie>,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The answer's body is larger than [`MAX_BODY`].
    #[error("the server responded with a status code {status} and a body over {MAX_BODY} bytes")]
    TooLarge {
        /// The HTTP status.
        status: u16,
    },
    /// The request body could not be encoded.
    #[error("cannot encode the request")]
    Encode(#[source] serde_json::Error),
    /// The HTTP client refused to build the request.
    #[error("cannot build the request")]
    Request(#[source] BoxError),
    /// The send did not finish within its deadline ([`RetryPolicy::deadline`]): an attempt was
    /// still running when it passed.
    #[error("the request did not finish within its deadline of {deadline:?} ({attempts} attempts)")]
    DeadlineExceeded {
        /// How many attempts were made.
        attempts: u32,
        /// The deadline.
        deadline: Duration,
    },
}

impl SendError {
    /// Whether re-sending may succeed.
    pub fn delivery(&self) -> Delivery {
        match self {
            SendError::Status(e) if e.is_recoverable() => Delivery::Recoverable,
            SendError::Timeout { .. }
            | SendError::Connect { .. }
            | SendError::Network { .. }
            | SendError::DeadlineExceeded { .. } => Delivery::Recoverable,
            _ => Delivery::Unrecoverable,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Status(e) => Some(e.status),
            SendError::Malformed { status, .. } | SendError::TooLarge { status } => Some(*status),
            _ => None,
        }
    }

    /// The server's error codes, e.g. `EXEG-0102-400`; empty when it sent none.
    pub fn codes(&self) -> Vec<&str> {
        match self {
            SendError::Status(e) => e.codes(),
            _ => Vec::new(),
        }
    }

    /// Cookies the server asked for in its failed answer, for the engine to judge.
    pub fn cookies(&self) -> &[Cookie] {
        match self {
            SendError::Status(e) => &e.cookies,
            SendError::Malformed { cookies, .. } => cookies,
            _ => &[],
        }
    }

    /// The engine's input for this failure: [`consent_core::Outcome::Failure`], with the cookies
    /// the server sent anyway.
    pub fn engine_response(&self, origin: Origin) -> consent_core::Response {
        consent_core::Response {
            origin,
            outcome: consent_core::Outcome::Failure,
            cookies: self.cookies().to_vec(),
        }
    }

    pub(crate) fn with_attempts(mut self, n: u32) -> Self {
        match &mut self {
            SendError::Status(e) => e.attempts = n,
            SendError::Timeout { attempts, .. }
            | SendError::Connect { attempts, .. }
            | SendError::Network { attempts, .. }
            | SendError::DeadlineExceeded { attempts, .. } => *attempts = n,
            _ => {}
        }
        self
    }
}

/// The engine's input for a send's result, success or failure.
pub fn engine_response(
    result: &Result<EdgeReply, SendError>,
    origin: Origin,
) -> consent_core::Response {
    match result {
        Ok(reply) => reply.engine_response(origin),
        Err(error) => error.engine_response(origin),
    }
}

/// Classifies a reqwest error: timeouts, connection and exchange failures may pass later.
#[cfg(feature = "http")]
pub(crate) fn transport_error(source: reqwest::Error) -> (SendError, bool) {
    if source.is_timeout() {
        (
            SendError::Timeout {
                attempts: 0,
                source: Box::new(source),
            },
            true,
        )
    } else if source.is_builder() {
        (SendError::Request(Box::new(source)), false)
    } else if source.is_connect() {
        (
            SendError::Connect {
                attempts: 0,
                source: Box::new(source),
            },
            true,
        )
    } else {
        (
            SendError::Network {
                attempts: 0,
                source: Box::new(source),
            },
            true,
        )
    }
}

/// The largest answer body read: 4 MiB. Edge answers are a few kilobytes; a larger one is refused
/// rather than held in memory.
pub const MAX_BODY: usize = 4 << 20;

/// Reads an answer's body, up to [`MAX_BODY`].
#[cfg(feature = "http")]
pub(crate) async fn read_body<T>(
    mut response: reqwest::Response,
) -> Result<Vec<u8>, Attempt<T, SendError>> {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(Attempt::Done(Err(SendError::TooLarge { status })));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                let (error, retry) = transport_error(e);
                return Err(if retry {
                    Attempt::Retry(error, None)
                } else {
                    Attempt::Done(Err(error))
                });
            }
        }
    }
}

#[cfg(feature = "http")]
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime, cap: Duration) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now, cap))
}

#[cfg(feature = "http")]
impl Retrier {
    /// Runs one send of `attempt` under this retrier, with the deadline error of the transport.
    pub(crate) async fn send<T, F, Fut>(&self, attempt: F) -> Result<T, SendError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, SendError>>,
    {
        let deadline = self.policy.deadline;
        let (result, attempts) = self
            .run(attempt, || SendError::DeadlineExceeded {
                attempts: 0,
                deadline,
            })
            .await;
        result.map_err(|e| e.with_attempts(attempts))
    }
}

/// The Edge transport over HTTP (the `http` feature).
///
/// It writes no cookie: the cookies of an answer come back in [`EdgeReply::cookies`] (or
/// [`SendError::cookies`]) for the engine, and the engine's cookie actions reach the jar through
/// [`Transport::apply`]. reqwest is given no cookie store, so a `Set-Cookie` header cannot bypass
/// the engine either.
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    config: Arc<EdgeConfig>,
    jar: CookieJar,
    retrier: Retrier,
}

#[cfg(feature = "http")]
impl HttpTransport {
    /// A transport for `config`, keeping cookies in `jar`.
    pub fn new(config: EdgeConfig, jar: CookieJar) -> Result<Self, BuildError> {
        let client = build_client(config.connect_timeout)?;
        Ok(Self::with_client(client, config, jar))
    }

    /// A transport on a reqwest client of the caller's. That client must have no cookie store
    /// (`cookie_provider`/`cookie_store(true)`): it would write cookies the engine has not allowed.
    pub fn with_client(client: reqwest::Client, config: EdgeConfig, jar: CookieJar) -> Self {
        let retrier = Retrier {
            policy: config.retry.clone(),
            jitter: Arc::new(FullJitter),
            sleep: Arc::new(TokioSleep),
        };
        Self {
            client,
            config: Arc::new(config),
            jar,
            retrier,
        }
    }

    /// Replaces the backoff's randomness (for deterministic tests).
    #[must_use]
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.retrier.jitter = jitter;
        self
    }

    /// Replaces the wait between attempts (for fast tests).
    #[must_use]
    pub fn with_sleep(mut self, sleep: Arc<dyn Sleep>) -> Self {
        self.retrier.sleep = sleep;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// The cookie jar.
    pub fn jar(&self) -> &CookieJar {
        &self.jar
    }

    /// The location hint: the cluster cookie's value, if the jar holds one.
    pub fn location_hint(&self) -> Option<String> {
        self.jar
            .value(&self.config.cookie_url(), self.config.names.cluster())
    }

    async fn attempt(&self, request: &Request, request_id: &str) -> Attempt<EdgeReply, SendError> {
        let hint = self.location_hint();
        let url = self
            .config
            .url(request.operation(), hint.as_deref(), request_id);
        let mut request = request.clone();
        if self.config.state_entries {
            let entries = self.jar.state_entries(&url, &self.config.names);
            let state = request
                .meta_mut()
                .state
                .get_or_insert_with(StateMeta::default);
            state.cookies_enabled.get_or_insert(true);
            state.entries = entries;
        }
        let body = match request.to_json() {
            Ok(body) => body,
            Err(e) => return Attempt::Done(Err(SendError::Encode(e))),
        };
        let mut builder = self
            .client
            .post(url.clone())
            .timeout(self.config.timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if self.config.cookie_header
            && let Some(cookies) = self.jar.header(&url)
        {
            builder = builder.header(COOKIE, cookies);
        }
        if self.config.receipts && request.operation() == crate::Operation::SetConsent {
            builder = builder.header(RECEIPT_HEADER, "true");
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                let (error, retry) = transport_error(e);
                return if retry {
                    Attempt::Retry(error, None)
                } else {
                    Attempt::Done(Err(error))
                };
            }
        };
        let status = response.status().as_u16();
        let now = SystemTime::now();
        let mut cookies: Vec<Cookie> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|h| parse_set_cookie(h, now))
            .collect();
        let retry_after = retry_after(response.headers(), now, self.retrier.policy.retry_after_cap);
        let body = match read_body(response).await {
            Ok(body) => body,
            Err(error) => return error,
        };
        if (200..300).contains(&status) {
            let parsed = if status == 204 && body.is_empty() {
                Ok(EdgeResponse {
                    request_id: None,
                    handle: Vec::new(),
                    warnings: Vec::new(),
                    errors: Vec::new(),
                })
            } else {
                serde_json::from_slice::<EdgeResponse>(&body)
            };
            let result = parsed.and_then(|response| {
                let items = response.state_store()?;
                Ok((response, items))
            });
            return Attempt::Done(match result {
                Ok((response, items)) => {
                    cookies.extend(items.iter().map(|item| item.to_cookie()));
                    Ok(EdgeReply {
                        status,
                        response,
                        cookies,
                        request_id: request_id.to_owned(),
                        attempts: 0,
                    })
                }
                Err(source) => Err(SendError::Malformed {
                    status,
                    cookies,
                    source,
                }),
            });
        }
        cookies.extend(state_store_cookies_in(&body));
        let error = StatusError {
            status,
            problems: problems_in(&body),
            body: String::from_utf8_lossy(&body).into_owned(),
            cookies,
            retry_after,
            attempts: 0,
        };
        if error.is_recoverable() {
            Attempt::Retry(SendError::Status(Box::new(error)), retry_after)
        } else {
            Attempt::Done(Err(SendError::Status(Box::new(error))))
        }
    }
}

#[cfg(feature = "http")]
#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<EdgeReply, SendError> {
        let request_id = new_uuid();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let mut reply = self
            .retrier
            .send(|n| {
                attempts.store(n, std::sync::atomic::Ordering::Relaxed);
                self.attempt(&request, &request_id)
            })
            .await?;
        reply.attempts = attempts.into_inner();
        Ok(reply)
    }

    fn apply(&self, action: &Action) -> Result<bool, JarError> {
        self.jar.apply(action, &self.config.cookie_url())
    }

    fn stored_cookies(&self) -> (Option<StoredCookie>, bool) {
        self.jar
            .stored(&self.config.cookie_url(), &self.config.names)
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;
    use crate::Operation;

    #[test]
    fn urls_follow_the_reference() {
        let config = EdgeConfig::new("http://127.0.0.1:8080/", "cfg", "ORG@AdobeOrg").unwrap();
        assert_eq!(
            config.url(Operation::Interact, None, "r").as_str(),
            "http://127.0.0.1:8080/ee/v1/interact?configId=cfg&requestId=r"
        );
        assert_eq!(
            config
                .url(Operation::IdentityAcquire, Some("../x"), "r")
                .path(),
            "/ee/v1/identity/acquire"
        );
        let prefixed = EdgeConfig::new("https://h.example/journey/", "c", "O@A")
            .unwrap()
            .base_path("/ee-pre-prd/");
        assert_eq!(
            prefixed.url(Operation::Collect, Some("va6"), "r").path(),
            "/journey/ee-pre-prd/va6/v1/collect"
        );
        assert!(matches!(
            EdgeConfig::new("ftp://x", "c", "o"),
            Err(ConfigError::UnsupportedUrl(_))
        ));
        assert!(matches!(
            EdgeConfig::new("nope", "c", "o"),
            Err(ConfigError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn status_errors_use_the_web_sdk_wording() {
        let error = StatusError {
            status: 400,
            problems: problems_in(br#"{"errors":[{"type":"x/EXEG-0102-400"}]}"#),
            body: r#"{"errors":[{"type":"x/EXEG-0102-400"}]}"#.to_owned(),
            cookies: Vec::new(),
            retry_after: None,
            attempts: 1,
        };
        assert!(
            error
                .to_string()
                .starts_with("The server responded with a status code 400 and response body:\n{")
        );
        assert_eq!(error.codes(), ["EXEG-0102-400"]);
        assert!(!error.is_recoverable());
        let empty = StatusError {
            status: 503,
            body: String::new(),
            ..error
        };
        assert_eq!(
            empty.to_string(),
            "The server responded with a status code 503 and no response body."
        );
        assert!(empty.is_recoverable());
    }
}
