//! A real `consent-server` in-process on loopback with a fresh SQLite file, a transport that
//! injects faults in front of the real HTTP one, and helpers to look into the data directory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use consent::Client;
use consent_core::Action;
use consent_server::Server;
use consent_transport::{
    EdgeConfig, EdgeReply, HttpTransport, Request, SendError, StatusError, Transport,
};

pub(crate) const ORG: &str = "consent@AdobeOrg";
pub(crate) const DATASTREAM: &str = "ebebf826-a01f-4458-8cec-ef61de241c93";

pub(crate) struct Edge {
    _server: Server,
    pub(crate) base: String,
    pub(crate) db_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Edge {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("edge.db");
        let mut config = consent_server::Config::new(
            "127.0.0.1:0".parse().unwrap(),
            format!("sqlite://{}", db_path.display()),
        )
        .unwrap();
        config.rate_limit_per_sec = 0;
        // DATASTREAM is in no keys file: served with the default organisation.
        config.allow_unknown_datastreams = true;
        let server = consent_server::serve(config).await.unwrap();
        let base = format!("http://{}", server.local_addr());
        Self {
            _server: server,
            base,
            db_path,
            _dir: dir,
        }
    }

    /// The event ids the server stored, in the order it stored them.
    pub(crate) fn stored_ids(&self) -> Vec<String> {
        let db = rusqlite::Connection::open(&self.db_path).unwrap();
        let mut stmt = db
            .prepare("SELECT event_id FROM events ORDER BY rowid")
            .unwrap();
        stmt.query_map([], |row| row.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// A client of this server on `dir` with this `defaultConsent`.
    pub(crate) async fn client(&self, dir: &Path, default: &str) -> Client {
        self.builder(dir)
            .default_consent(default)
            .build()
            .await
            .unwrap()
    }

    /// A client of this server on `dir`, through `transport`.
    pub(crate) async fn client_via(
        &self,
        dir: &Path,
        default: &str,
        transport: &Arc<Faulty>,
    ) -> Client {
        self.builder(dir)
            .default_consent(default)
            .transport(transport.clone())
            .build()
            .await
            .unwrap()
    }

    pub(crate) fn builder(&self, dir: &Path) -> consent::Builder {
        Client::builder()
            .edge_base_url(&self.base)
            .datastream_id(DATASTREAM)
            .org_id(ORG)
            .data_dir(dir)
    }
}

/// A fault the [`Faulty`] transport injects into the next matching request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// The server gets the request and answers; the client sees a 503 instead (a lost answer).
    LoseAnswer,
    /// The request never reaches the server; the client sees this status.
    Status(u16),
    /// The transport panics.
    Panic,
    /// The request never reaches the server; the client sees a 429 with this `Retry-After`.
    TooMany(std::time::Duration),
}

/// The real HTTP transport, with faults injected into `interact` requests on a schedule, and a
/// count of what was sent.
#[derive(Debug)]
pub(crate) struct Faulty {
    inner: HttpTransport,
    faults: Mutex<VecDeque<Fault>>,
    /// An `interact` request carrying this text is refused with a 400 (an event the server cannot
    /// take), whatever else it carries.
    pub(crate) poison: Mutex<Option<String>>,
    pub(crate) interacts: AtomicUsize,
    pub(crate) consents: AtomicUsize,
}

impl Faulty {
    pub(crate) fn new(edge: &Edge, faults: impl IntoIterator<Item = Fault>) -> Arc<Self> {
        let config = EdgeConfig::new(&edge.base, DATASTREAM, ORG).unwrap();
        let inner = HttpTransport::new(config, consent_transport::CookieJar::default()).unwrap();
        Arc::new(Self {
            inner,
            faults: Mutex::new(faults.into_iter().collect()),
            poison: Mutex::new(None),
            interacts: AtomicUsize::new(0),
            consents: AtomicUsize::new(0),
        })
    }
}

fn status_error(status: u16) -> SendError {
    SendError::Status(Box::new(StatusError {
        status,
        problems: Vec::new(),
        body: String::new(),
        cookies: Vec::new(),
        retry_after: None,
        attempts: 1,
    }))
}

#[async_trait]
impl Transport for Faulty {
    async fn send(&self, request: Request) -> Result<EdgeReply, SendError> {
        let interact = matches!(request, Request::Interact(_));
        if interact {
            self.interacts.fetch_add(1, Ordering::SeqCst);
            let poison = self.poison.lock().unwrap().clone();
            if let Some(poison) = poison
                && String::from_utf8_lossy(&request.to_json().unwrap()).contains(&poison)
            {
                return Err(status_error(400));
            }
            let fault = self.faults.lock().unwrap().pop_front();
            match fault {
                Some(Fault::LoseAnswer) => {
                    self.inner.send(request).await?;
                    return Err(status_error(503));
                }
                Some(Fault::Status(status)) => return Err(status_error(status)),
                Some(Fault::Panic) => panic!("injected: the transport panicked"),
                Some(Fault::TooMany(wait)) => {
                    let mut error = status_error(429);
                    if let SendError::Status(status) = &mut error {
                        status.retry_after = Some(wait);
                    }
                    return Err(error);
                }
                None => {}
            }
        } else {
            self.consents.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.send(request).await
    }

    fn apply(&self, action: &Action) -> Result<bool, consent_transport::JarError> {
        self.inner.apply(action)
    }

    fn stored_cookies(&self) -> (Option<consent_core::StoredCookie>, bool) {
        self.inner.stored_cookies()
    }
}

/// Whether any file under `dir` holds `needle`.
pub(crate) fn dir_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if dir_contains(&path, needle) {
                return true;
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            return true;
        }
    }
    false
}

/// The names of the cookies in the data directory's jar.
pub(crate) fn jar_cookies(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("cookies.json")).unwrap_or_default();
    let jar: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    let mut names: Vec<String> = jar
        .iter()
        .filter_map(|c| c["raw_cookie"].as_str())
        .filter_map(|raw| raw.split('=').next().map(str::to_owned))
        .collect();
    names.sort();
    names
}

pub(crate) fn page_view(marker: &str) -> consent::Event {
    consent::Event::new(serde_json::json!({
        "eventType": "web.webpagedetails.pageViews",
        "web": {"webPageDetails": {"name": marker}}
    }))
}

/// A transport that answers as a test scripts it, without a server: `interact` requests wait at
/// `events` (or "retry" until dropped), `setConsent` requests wait at `consents` and answer with
/// the consent cookie the call asks for. Counts the events delivered and the `interact` attempts.
#[derive(Debug)]
pub(crate) struct Scripted {
    names: consent_core::CookieNames,
    /// Permits for `interact` answers; `None`: answered at once.
    pub(crate) events: Option<tokio::sync::Semaphore>,
    /// Permits for `setConsent` answers; `None`: answered at once.
    pub(crate) consents: Option<tokio::sync::Semaphore>,
    /// `interact` never answers: it "retries" every 50 ms until the request is dropped.
    retry_forever: bool,
    /// The consent cookie `interact` answers carry (the server's view when it took the request).
    interact_consent: Option<&'static str>,
    /// The `consent:receipt` that `setConsent` answers carry, as sent.
    consent_receipt: Option<&'static str>,
    pub(crate) delivered: AtomicUsize,
    pub(crate) attempts: AtomicUsize,
}

impl Scripted {
    pub(crate) fn new() -> Self {
        Self {
            names: consent_core::CookieNames::new(ORG),
            events: None,
            consents: None,
            retry_forever: false,
            interact_consent: None,
            consent_receipt: None,
            delivered: AtomicUsize::new(0),
            attempts: AtomicUsize::new(0),
        }
    }

    /// `interact` answers wait for [`Scripted::release_events`].
    pub(crate) fn hold_events(mut self) -> Self {
        self.events = Some(tokio::sync::Semaphore::new(0));
        self
    }

    /// `setConsent` answers wait for [`Scripted::release_consents`].
    pub(crate) fn hold_consents(mut self) -> Self {
        self.consents = Some(tokio::sync::Semaphore::new(0));
        self
    }

    pub(crate) fn retry_forever(mut self) -> Self {
        self.retry_forever = true;
        self
    }

    pub(crate) fn interact_consent(mut self, value: &'static str) -> Self {
        self.interact_consent = Some(value);
        self
    }

    pub(crate) fn consent_receipt(mut self, receipt: &'static str) -> Self {
        self.consent_receipt = Some(receipt);
        self
    }

    pub(crate) fn release_events(&self, n: usize) {
        self.events.as_ref().unwrap().add_permits(n);
    }

    pub(crate) fn release_consents(&self, n: usize) {
        self.consents.as_ref().unwrap().add_permits(n);
    }

    /// A client of this transport on `dir`.
    pub(crate) async fn client(self: &Arc<Self>, dir: &Path, default: &str) -> Client {
        Client::builder()
            .org_id(ORG)
            .default_consent(default)
            .data_dir(dir)
            .transport(self.clone())
            .build()
            .await
            .unwrap()
    }

    fn cookie(&self, value: &str) -> consent_core::Cookie {
        consent_core::Cookie::new(self.names.consent(), value, Some(3600))
    }
}

#[async_trait]
impl Transport for Scripted {
    async fn send(&self, request: Request) -> Result<EdgeReply, SendError> {
        let mut cookies = Vec::new();
        let mut handle = Vec::new();
        match &request {
            Request::Interact(body) => {
                if self.retry_forever {
                    loop {
                        self.attempts.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
                self.attempts.fetch_add(1, Ordering::SeqCst);
                if let Some(gate) = &self.events {
                    gate.acquire().await.unwrap().forget();
                }
                self.delivered
                    .fetch_add(body.events.len(), Ordering::SeqCst);
                cookies.extend(self.interact_consent.map(|v| self.cookie(v)));
            }
            Request::SetConsent(body) => {
                if let Some(gate) = &self.consents {
                    gate.acquire().await.unwrap().forget();
                }
                let general = body.consent[0]["value"]["general"].as_str().unwrap();
                cookies.push(self.cookie(&format!("general={general}")));
                if let Some(receipt) = self.consent_receipt {
                    handle.push(serde_json::json!({
                        "type": "consent:receipt", "payload": [{"receipt": receipt}]
                    }));
                }
            }
            _ => {}
        }
        Ok(EdgeReply {
            status: 200,
            response: serde_json::from_value(serde_json::json!({ "handle": handle })).unwrap(),
            cookies,
            request_id: "r".to_owned(),
            attempts: 1,
        })
    }

    fn apply(&self, _: &Action) -> Result<bool, consent_transport::JarError> {
        Ok(true)
    }

    fn stored_cookies(&self) -> (Option<consent_core::StoredCookie>, bool) {
        (None, false)
    }
}
