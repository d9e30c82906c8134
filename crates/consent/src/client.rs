//! The client apps hold: a cheap handle around the driver's channel.

#[cfg(feature = "fs")]
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use consent_core::{ConsentView, Decision, DefaultConsent, Engine};
use consent_optin::{OptIn, OptInConfigBuilder};
use consent_store::{Io, Store};
use consent_transport::{CookieJar, RetryPolicy, Transport};
use tokio::sync::{oneshot, watch};

use consent_core::receipt::Jwks;

pub use crate::driver::RECEIPT_STANDARD;

use crate::driver::{self, Driver, Msg, Parts, RecordSlot, Settings, SharedRecords, StatsInner};
use crate::error::{Error, ErrorKind};
use crate::event::{ConsentRequest, Event, EventId, Receipt};
use crate::jar::{OptInJar, SharedJar};

/// The consent client: gates, queues, delivers and proves. Cheap to clone (all clones share one
/// driver); every future it returns is `Send`.
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: Sender<Msg>,
    consent: watch::Receiver<ConsentView>,
    records: SharedRecords,
    stats: Arc<StatsInner>,
    optin: OptIn,
    /// The server's published receipt keys, when the builder was given them.
    receipt_keys: Option<Arc<Jwks>>,
}

impl Drop for Inner {
    /// The last handle is gone: the driver delivers what it can within the shutdown timeout and
    /// closes, leaving the rest on disk.
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown { reply: None });
    }
}

impl std::fmt::Debug for RecordSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordSlot::Open(_) => "Open",
            RecordSlot::Broken(_) => "Broken",
            RecordSlot::Closed => "Closed",
        })
    }
}

/// Counters of what the client did since it was built. Read them with [`Client::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Events waiting in the queues now (for consent or for the server).
    pub queued: u64,
    /// Events written to the queue.
    pub enqueued: u64,
    /// Events the server accepted.
    pub delivered: u64,
    /// Events refused at `enqueue` or `send_event` because consent said no (nothing was written).
    pub declined: u64,
    /// Queued events deleted from disk because consent was withdrawn.
    pub purged: u64,
    /// Event deliveries attempted again, per event: the retries inside a request the server
    /// finally accepted, and every request of events sent again after a failure.
    pub retried: u64,
    /// Events the server refused for good (see [`ErrorKind::Rejected`]): not delivered.
    pub dropped_rejected: u64,
    /// Events lost to damage found on disk at start-up, or that no longer decode.
    pub dropped_damaged: u64,
    /// Requests sent (events and `setConsent`).
    pub requests: u64,
}

/// A snapshot of the driver's counters.
fn read_stats(stats: &StatsInner) -> Stats {
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Stats {
        queued: r(&stats.queued),
        enqueued: r(&stats.enqueued),
        delivered: r(&stats.delivered),
        declined: r(&stats.declined),
        purged: r(&stats.purged),
        retried: r(&stats.retried),
        dropped_rejected: r(&stats.dropped_rejected),
        dropped_damaged: r(&stats.dropped_damaged),
        requests: r(&stats.requests),
    }
}

/// The proof of consent: the hash-chained log of every consent change, in the data directory
/// (`records.jsonl`, anchored in `state.bin`).
///
/// Its methods read the file on the calling thread.
#[derive(Debug, Clone)]
pub struct Records {
    slot: SharedRecords,
    receipt_keys: Option<Arc<Jwks>>,
}

impl Records {
    fn with<T>(
        &self,
        f: impl FnOnce(&dyn driver::RecordOps) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            RecordSlot::Open(log) => f(log.as_ref()),
            RecordSlot::Broken(why) => Err(Error::new(ErrorKind::Storage, why.clone())),
            RecordSlot::Closed => Err(Error::shutdown()),
        }
    }

    /// Checks the whole chain (every record's hash, the links, the sequence, and the head
    /// anchored in the state file) and returns how many records it holds. A tampered file fails,
    /// naming the first bad record. With the server's receipt keys
    /// ([`Builder::receipt_keys`]), every receipt the server signed is checked too
    /// ([`Records::verify_receipts`]).
    pub fn verify(&self) -> Result<usize, Error> {
        let count = self.with(|log| {
            let head = log
                .verify()
                .map_err(|e| Error::from_cause(ErrorKind::Storage, e))?;
            Ok(usize::try_from(head.count).unwrap_or(usize::MAX))
        })?;
        if let Some(keys) = &self.receipt_keys {
            self.verify_receipts(keys)?;
        }
        Ok(count)
    }

    /// The signed consent receipts the server sent for this client's `setConsent` calls (kept
    /// in the log as records of source `server`, standard [`RECEIPT_STANDARD`]), oldest first,
    /// each with the sequence number of the record that holds it.
    pub fn receipts(&self) -> Result<Vec<(u64, String)>, Error> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.standard == RECEIPT_STANDARD)
            .filter_map(|r| {
                let receipt = r.payload.as_ref()?.get("receipt")?.as_str()?.to_owned();
                Some((r.seq, receipt))
            })
            .collect())
    }

    /// Checks every receipt in the log against the server's published keys (the JWKS of
    /// consent-server's `GET /.well-known/consent-receipt-keys`): each must be signed by one of
    /// them. Returns how many were checked; the first that does not verify fails with
    /// [`ErrorKind::Storage`], naming its record.
    pub fn verify_receipts(&self, keys: &Jwks) -> Result<usize, Error> {
        let receipts = self.receipts()?;
        for (seq, token) in &receipts {
            consent_core::receipt::verify_with::<consent_core::receipt::ReceiptClaims>(
                token,
                keys,
                verify_ed25519,
            )
            .map_err(|e| {
                Error::new(
                    ErrorKind::Storage,
                    format!("consent record {seq}: the server's receipt does not verify: {e}"),
                )
            })?;
        }
        Ok(receipts.len())
    }

    /// The chain's head now (record count and last hash), once the chain verifies: keep it off the
    /// device (with the server, in a backup) to check the log against later.
    pub fn head(&self) -> Result<consent_store::ChainHead, Error> {
        self.with(|log| {
            log.verify()
                .map_err(|e| Error::from_cause(ErrorKind::Storage, e))
        })
    }

    /// Checks the chain as [`verify`](Self::verify) does, and also against a head kept off the
    /// device: a log rewritten together with its local anchor, or cut back before that head,
    /// fails. Returns how many records the log holds.
    pub fn verify_against(&self, head: &consent_store::ChainHead) -> Result<usize, Error> {
        self.with(|log| {
            let now = log
                .verify_against(head)
                .map_err(|e| Error::from_cause(ErrorKind::Storage, e))?;
            Ok(usize::try_from(now.count).unwrap_or(usize::MAX))
        })
    }

    /// Every record, oldest first, once the chain verifies.
    pub fn list(&self) -> Result<Vec<consent_store::ConsentRecord>, Error> {
        self.with(|log| {
            log.list()
                .map_err(|e| Error::from_cause(ErrorKind::Storage, e))
        })
    }

    /// Writes the records as JSON lines (the file's own format) once the chain verifies; returns
    /// how many were written.
    pub fn export_jsonl(&self, out: &mut impl std::io::Write) -> Result<usize, Error> {
        self.with(|log| {
            let head = log
                .export(out)
                .map_err(|e| Error::from_cause(ErrorKind::Storage, e))?;
            Ok(usize::try_from(head.count).unwrap_or(usize::MAX))
        })
    }
}

impl Client {
    /// A builder with the defaults: `defaultConsent` "in" (the Web SDK's), the HTTP transport,
    /// and a data directory you name with [`Builder::data_dir`].
    pub fn builder() -> Builder {
        Builder::default()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Msg,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(tx))
            .map_err(|_| Error::shutdown())?;
        rx.await.map_err(|_| Error::shutdown())?
    }

    /// Queues an event. Returns once it is durable on disk (consent "in" or "pending"), or at once
    /// with [`Error::is_consent_declined`] while consent is "out" — then nothing of the event was
    /// written or sent. It is delivered when consent allows.
    pub async fn enqueue(&self, event: Event) -> Result<EventId, Error> {
        let payload = event.to_payload()?;
        let id = event.id();
        let purposes = event.purposes;
        self.call(|reply| Msg::Enqueue {
            payload,
            purposes,
            id,
            reply,
            delivered: None,
        })
        .await
    }

    /// Queues an event and waits until the server accepted it: while consent is pending, this
    /// waits too. Fails with [`Error::is_consent_declined`] when consent is (or becomes) "out",
    /// with [`ErrorKind::Rejected`] when the server refuses it for good, and with
    /// [`Error::is_shutdown`] when the client shuts down first (the event then stays queued).
    pub async fn send_event(&self, event: Event) -> Result<Receipt, Error> {
        let payload = event.to_payload()?;
        let id = event.id();
        let purposes = event.purposes;
        let (delivered_tx, delivered_rx) = oneshot::channel();
        self.call(|reply| Msg::Enqueue {
            payload,
            purposes,
            id,
            reply,
            delivered: Some(delivered_tx),
        })
        .await?;
        delivered_rx.await.map_err(|_| Error::shutdown())?
    }

    /// Sets consent (`setConsent`). Validated first with the engine's rules and messages: bad
    /// input fails with [`Error::is_invalid_input`], sending and changing nothing. Returns once
    /// the server confirmed it (or it was skipped as unchanged). On "out", every queued event
    /// that needs what was refused is deleted from disk before this returns.
    ///
    /// When the server cannot be reached, this fails with [`ErrorKind::Transport`]; the stricter of
    /// the old and the new consent applies meanwhile, so a failed opt-out still stops collection.
    pub async fn set_consent(&self, request: ConsentRequest) -> Result<(), Error> {
        let options = request.to_options()?;
        self.call(|reply| Msg::SetConsent { options, reply }).await
    }

    /// Decides named purposes in the app itself (custom purposes, or a choice made in the app's
    /// own interface). They apply at once, are recorded, and are never sent.
    pub async fn set_purposes<'a>(
        &self,
        purposes: impl IntoIterator<Item = (&'a str, Decision)>,
    ) -> Result<(), Error> {
        let purposes: Vec<(String, Decision)> = purposes
            .into_iter()
            .map(|(name, decision)| (name.to_owned(), decision))
            .collect();
        self.call(|reply| Msg::SetPurposes { purposes, reply })
            .await
    }

    /// The current consent: state ("in", "out", "pending"), whether the person set it, and the
    /// purposes with a decision of their own.
    pub fn consent(&self) -> ConsentView {
        self.inner.consent.borrow().clone()
    }

    /// A receiver that sees every change of consent.
    pub fn subscribe(&self) -> watch::Receiver<ConsentView> {
        self.inner.consent.clone()
    }

    /// The proof of consent.
    pub fn records(&self) -> Records {
        Records {
            slot: Arc::clone(&self.inner.records),
            receipt_keys: self.inner.receipt_keys.clone(),
        }
    }

    /// Counters since the client was built.
    pub fn stats(&self) -> Stats {
        read_stats(&self.inner.stats)
    }

    /// The Opt-in Service of this client (per-category approvals after `adobe.optIn`), its
    /// permissions kept in the client's cookie jar (`adobeujs-optin`), so they survive restarts.
    pub fn optin(&self) -> OptIn {
        self.inner.optin.clone()
    }

    /// Delivers everything consent allows now (trying a failed delivery again at once). Fails
    /// with [`Error::is_timeout`] after the flush timeout (default 30 s), the events staying
    /// queued. Events consent does not allow yet stay queued and do not hold it up.
    pub async fn flush(&self) -> Result<(), Error> {
        self.call(|reply| Msg::Flush { reply }).await
    }

    /// Shuts the client down: delivers what consent allows within the shutdown timeout (default
    /// 5 s), then stops. Futures still waiting resolve with [`Error::is_shutdown`]; their events
    /// stay on disk for the next client. Once this returns, the data directory is free for
    /// another client. Calling it again, or from another clone, is harmless.
    pub async fn shutdown(&self) -> Result<(), Error> {
        match self
            .call(|reply| Msg::Shutdown { reply: Some(reply) })
            .await
        {
            Err(e) if e.is_shutdown() => Ok(()),
            other => other,
        }
    }
}

/// Where the client keeps its files.
#[derive(Debug, Clone)]
enum Storage {
    #[cfg(feature = "fs")]
    Dir(PathBuf),
    /// The disk through fault injection, for tests.
    #[cfg(feature = "fs")]
    Faulty(PathBuf, consent_store::FaultyIo<consent_store::DiskIo>),
    Memory,
    Unset,
}

/// Configures and builds a [`Client`]. Every setting has a default but the organisation, with the
/// HTTP transport the server and the datastream, and with the `fs` feature the data directory (or
/// [`in_memory`](Self::in_memory)).
#[derive(Debug)]
pub struct Builder {
    edge_base_url: Option<String>,
    datastream_id: Option<String>,
    org_id: Option<String>,
    default_consent: String,
    storage: Storage,
    transport: Option<Arc<dyn Transport>>,
    purposes: Vec<String>,
    iab_vendor_id: Option<u16>,
    retry: RetryPolicy,
    batch_size: usize,
    max_request_bytes: usize,
    max_queued_events: u64,
    max_queued_bytes: u64,
    flush_timeout: Duration,
    shutdown_timeout: Duration,
    optin: Option<OptInConfigBuilder>,
    notice_version: Option<String>,
    receipt_keys: Option<Jwks>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            edge_base_url: None,
            datastream_id: None,
            org_id: None,
            default_consent: "in".to_owned(),
            storage: Storage::Unset,
            transport: None,
            purposes: Vec::new(),
            iab_vendor_id: None,
            retry: RetryPolicy::default(),
            batch_size: 256,
            max_request_bytes: 60 * 1024,
            max_queued_events: 2_000_000,
            max_queued_bytes: 1 << 30,
            flush_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            optin: None,
            notice_version: None,
            receipt_keys: None,
        }
    }
}

impl Builder {
    /// The Edge-compatible server, e.g. `https://edge.adobedc.net` or a `consent-server`.
    #[must_use]
    pub fn edge_base_url(mut self, url: &str) -> Self {
        self.edge_base_url = Some(url.to_owned());
        self
    }

    /// The datastream (`configId`).
    #[must_use]
    pub fn datastream_id(mut self, id: &str) -> Self {
        self.datastream_id = Some(id.to_owned());
        self
    }

    /// The organisation (`…@AdobeOrg`); it names the cookies.
    #[must_use]
    pub fn org_id(mut self, org: &str) -> Self {
        self.org_id = Some(org.to_owned());
        self
    }

    /// `defaultConsent`: `"in"` (the default), `"out"` or `"pending"`, case-sensitive. Another
    /// value fails [`build`](Self::build) with the Web SDK's message.
    #[must_use]
    pub fn default_consent(mut self, value: &str) -> Self {
        self.default_consent = value.to_owned();
        self
    }

    /// The data directory: state, cookie jar, event queue and consent records live there. One
    /// client at a time may use it.
    #[cfg(feature = "fs")]
    #[must_use]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage = Storage::Dir(dir.into());
        self
    }

    /// The data directory, with its file operations going through `io`, which fails them on a
    /// schedule: for tests of what the client does when the disk fails. Not for production.
    #[cfg(feature = "fs")]
    #[doc(hidden)]
    #[must_use]
    pub fn data_dir_with_faults(
        mut self,
        dir: impl Into<PathBuf>,
        io: consent_store::FaultyIo<consent_store::DiskIo>,
    ) -> Self {
        self.storage = Storage::Faulty(dir.into(), io);
        self
    }

    /// Keeps everything in memory: nothing survives the process. The default without the `fs`
    /// feature.
    #[must_use]
    pub fn in_memory(mut self) -> Self {
        self.storage = Storage::Memory;
        self
    }

    /// Sends through this transport instead of the HTTP one. The client still keeps its own
    /// cookie jar (persisted in the data directory) and applies the engine's cookie decisions to
    /// both.
    #[must_use]
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Registers a custom purpose that events can [require](Event::requires) and
    /// [`Client::set_purposes`] can decide.
    #[must_use]
    pub fn purpose(mut self, name: &str) -> Self {
        self.purposes.push(name.to_owned());
        self
    }

    /// The IAB vendor whose consent an IAB TCF string must grant (default 565, Adobe).
    #[must_use]
    pub fn iab_vendor_id(mut self, vendor: u16) -> Self {
        self.iab_vendor_id = Some(vendor);
        self
    }

    /// Retries of one request by the built-in HTTP transport (default: a few attempts within one
    /// minute; a [`transport`](Self::transport) of your own has its own). Beyond them, queued
    /// events are tried again with a backoff of up to a minute, or after the server's
    /// `Retry-After` when it asks for longer (up to an hour).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The most events in one request (default 256).
    #[must_use]
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// The most bytes of events in one request (default 60 KiB, under `consent-server`'s default
    /// body limit of 64 KiB). A single larger event still goes alone.
    #[must_use]
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes.max(1);
        self
    }

    /// The most events waiting in one queue (default 2,000,000); one more fails with
    /// [`ErrorKind::QueueFull`].
    #[must_use]
    pub fn max_queued_events(mut self, events: u64) -> Self {
        self.max_queued_events = events;
        self
    }

    /// The most bytes waiting in one queue (default 1 GiB).
    #[must_use]
    pub fn max_queued_bytes(mut self, bytes: u64) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// How long [`Client::flush`] may take (default 30 s).
    #[must_use]
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// How long [`Client::shutdown`] may deliver before it stops (default 5 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The version of the privacy notice or policy the person sees: every consent record says it
    /// was given under this version.
    #[must_use]
    pub fn notice_version(mut self, version: &str) -> Self {
        self.notice_version = Some(version.to_owned());
        self
    }

    /// The server's published receipt keys (the JWKS of consent-server's
    /// `GET /.well-known/consent-receipt-keys`, fetched and kept by the app): with them,
    /// [`Records::verify`] also checks every receipt the server signed. Without them the receipts
    /// are kept all the same, to check later ([`Records::verify_receipts`]).
    #[must_use]
    pub fn receipt_keys(mut self, keys: Jwks) -> Self {
        self.receipt_keys = Some(keys);
        self
    }

    /// The Opt-in Service's configuration; its storage is the client's cookie jar.
    #[must_use]
    pub fn optin_config(mut self, config: OptInConfigBuilder) -> Self {
        self.optin = Some(config);
        self
    }

    /// Opens the data directory (locking it), restores consent from the persisted consent cookie
    /// and engine state, and starts the client. Queued events from an earlier run are delivered
    /// once consent allows. Must be called inside a tokio runtime.
    pub async fn build(self) -> Result<Client, Error> {
        let default: DefaultConsent = self
            .default_consent
            .parse()
            .map_err(|e| Error::from_cause(ErrorKind::InvalidInput, e))?;
        let org = self
            .org_id
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::Config, "org_id is required"))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                "build() must run inside a tokio runtime",
                e,
            )
        })?;
        let mut config = consent_core::Config::new(&org).default_consent(default);
        for name in &self.purposes {
            config = config
                .purpose(name.clone())
                .map_err(|e| Error::from_cause(ErrorKind::Config, e))?;
        }
        if let Some(vendor) = self.iab_vendor_id {
            config = config.iab_vendor_id(vendor);
        }
        let names = consent_core::CookieNames::new(&org);
        let (jar_url, edge) = match (&self.edge_base_url, &self.datastream_id) {
            (Some(base), Some(datastream)) => {
                let edge = consent_transport::EdgeConfig::new(base, datastream.clone(), &org)
                    .map_err(|e| Error::from_cause(ErrorKind::Config, e))?
                    .retry(self.retry.clone())
                    .request_receipts(true);
                (edge.cookie_url(), Some(edge))
            }
            (Some(_), None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "datastream_id is required with edge_base_url",
                ));
            }
            _ => {
                let url = url::Url::parse("https://localhost/")
                    .map_err(|e| Error::from_cause(ErrorKind::Config, e))?;
                (url, None)
            }
        };
        if self.transport.is_none() && edge.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                if cfg!(feature = "http") {
                    "edge_base_url and datastream_id are required (or a transport)"
                } else {
                    "a transport is required (the `http` feature is off)"
                },
            ));
        }
        let storage = match self.storage {
            #[cfg(feature = "fs")]
            Storage::Unset => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "data_dir is required (or in_memory())",
                ));
            }
            #[cfg(not(feature = "fs"))]
            Storage::Unset => Storage::Memory,
            other => other,
        };
        let settings = Settings {
            batch_size: self.batch_size,
            max_request_bytes: self.max_request_bytes,
            queue: driver::queue_config(self.max_queued_events, self.max_queued_bytes),
            flush_timeout: self.flush_timeout,
            shutdown_timeout: self.shutdown_timeout,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            iab_vendor_id: self
                .iab_vendor_id
                .unwrap_or(consent_core::DEFAULT_IAB_VENDOR_ID),
            notice_version: self.notice_version,
        };
        let setup = Setup {
            config,
            names,
            jar_url,
            edge,
            transport: self.transport,
            settings,
            runtime,
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("consent-driver".to_owned())
            .spawn(move || match storage {
                #[cfg(feature = "fs")]
                Storage::Dir(dir) => match Store::open(&dir) {
                    Ok(store) => run_driver(store, true, setup, ready_tx),
                    Err(e) => {
                        let _ = ready_tx.send(Err(open_error(&dir, e)));
                    }
                },
                #[cfg(feature = "fs")]
                Storage::Faulty(dir, io) => match Store::with_io(io, &dir) {
                    Ok(store) => run_driver(store, true, setup, ready_tx),
                    Err(e) => {
                        let _ = ready_tx.send(Err(open_error(&dir, e)));
                    }
                },
                _ => run_driver(
                    consent_store::MemoryStore::in_memory(),
                    false,
                    setup,
                    ready_tx,
                ),
            });
        if let Err(e) = thread {
            return Err(Error::with_source(
                ErrorKind::Storage,
                "cannot start the client's thread",
                e,
            ));
        }
        let mut ready = ready_rx.await.map_err(|_| Error::shutdown())??;
        let Some(tx) = ready.tx.take() else {
            return Err(Error::shutdown());
        };
        let optin_config = self
            .optin
            .unwrap_or_else(consent_optin::OptInConfig::builder)
            .is_opt_in_storage_enabled(true)
            .opt_in_storage(Arc::new(OptInJar {
                jar: ready.jar.clone(),
                changed: {
                    let driver = tx.clone();
                    Box::new(move || driver.send(Msg::JarChanged).is_ok())
                },
            }))
            .build();
        let optin_config = match optin_config {
            Ok(config) => config,
            Err(e) => {
                // The client's thread is running: stop it, and free the directory, first.
                let (done, stopped) = oneshot::channel();
                if tx.send(Msg::Shutdown { reply: Some(done) }).is_ok() {
                    let _ = stopped.await;
                }
                return Err(Error::from_cause(ErrorKind::Config, e));
            }
        };
        let optin = OptIn::new(optin_config);
        Ok(Client {
            inner: Arc::new(Inner {
                tx,
                consent: ready.consent.clone(),
                records: Arc::clone(&ready.records),
                stats: Arc::clone(&ready.stats),
                optin,
                receipt_keys: self.receipt_keys.map(Arc::new),
            }),
        })
    }
}

/// Why the data directory could not be opened, as the client reports it.
#[cfg(feature = "fs")]
fn open_error(dir: &std::path::Path, e: consent_store::OpenStoreError) -> Error {
    match e {
        e @ consent_store::OpenStoreError::Locked { .. } => Error::from_cause(ErrorKind::Locked, e),
        e => Error::with_source(
            ErrorKind::Storage,
            format!("cannot open the data directory {}: {e}", dir.display()),
            e,
        ),
    }
}

/// What the builder hands to the driver thread.
struct Setup {
    config: consent_core::Config,
    names: consent_core::CookieNames,
    jar_url: url::Url,
    edge: Option<consent_transport::EdgeConfig>,
    transport: Option<Arc<dyn Transport>>,
    settings: Settings,
    runtime: tokio::runtime::Handle,
}

/// What the driver thread hands back once it started.
///
/// Until a `Client` takes its sender, dropping it stops the driver: a `build()` dropped after the
/// driver became ready (a timeout, a `select!`) does not leave a thread holding the directory.
struct Ready {
    tx: Option<Sender<Msg>>,
    consent: watch::Receiver<ConsentView>,
    records: SharedRecords,
    stats: Arc<StatsInner>,
    jar: SharedJar,
}

impl Drop for Ready {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Shutdown { reply: None });
        }
    }
}

/// The driver thread: opens the store's parts, starts the engine, reports, then runs.
fn run_driver<I: Io>(
    store: Store<I>,
    persistent: bool,
    setup: Setup,
    ready: oneshot::Sender<Result<Ready, Error>>,
) {
    let Setup {
        config,
        names,
        jar_url,
        edge,
        transport,
        settings,
        runtime,
    } = setup;
    // Every log line of the client's thread (the engine's messages included) is in this span.
    let span = tracing::info_span!(
        "consent",
        org = config.org_id(),
        data_dir = %store.dir().display()
    );
    let _entered = span.enter();
    // The cookie jar: a jar that cannot be read is set aside, and the driver treats the stored
    // consent as unknown (see `Driver::start`).
    let jar_file = store.cookie_jar();
    let (cookies, jar_lost) = match jar_file.load() {
        Ok(cookies) => (cookies, false),
        Err(e) => {
            tracing::error!("{e}");
            let aside = jar_file.path().with_extension("json.corrupt");
            let _ = store.io().rename(jar_file.path(), &aside);
            (consent_store::cookie_store::CookieStore::default(), true)
        }
    };
    let persisted = driver::load_persisted(&store);
    let memory_jar = CookieJar::new(cookies);
    let saver: Option<crate::jar::Saver> = persistent.then(move || {
        // The jar file holds the data directory's lock: it lives in the saver only, which the
        // driver drops before it answers a shutdown.
        Box::new(move |cookies: &consent_store::cookie_store::CookieStore| {
            jar_file.save(cookies).map_err(|e| e.to_string())
        }) as Box<_>
    });
    let jar = SharedJar::new(memory_jar.clone(), jar_url, names, saver);
    let (transport, transport_uses_jar): (Arc<dyn Transport>, bool) = match (transport, edge) {
        (Some(t), _) => (t, false),
        #[cfg(feature = "http")]
        (None, Some(edge)) => match consent_transport::HttpTransport::new(edge, memory_jar) {
            Ok(t) => (Arc::new(t), true),
            Err(e) => {
                let _ = ready.send(Err(Error::from_cause(ErrorKind::Config, e)));
                return;
            }
        },
        _ => {
            let _ = ready.send(Err(Error::new(
                ErrorKind::Config,
                "a transport is required",
            )));
            return;
        }
    };
    let records: SharedRecords = Arc::new(Mutex::new(match store.records() {
        Ok(log) => RecordSlot::Open(Box::new(log)),
        Err(e) => {
            tracing::error!("the consent record log cannot be opened: {e}");
            RecordSlot::Broken(format!("the consent record log cannot be opened: {e}"))
        }
    }));
    let engine = Engine::new(config);
    let (watch_tx, watch_rx) = watch::channel(engine.consent());
    let stats = Arc::new(StatsInner::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let parts = Parts {
        store,
        engine,
        transport,
        transport_uses_jar,
        jar: jar.clone(),
        records: Arc::clone(&records),
        settings,
        runtime,
        stats: Arc::clone(&stats),
        watch: watch_tx,
        tx: tx.clone(),
        rx,
        persisted,
        jar_lost,
    };
    match Driver::start(parts) {
        Ok(driver) => {
            let sent = ready.send(Ok(Ready {
                tx: Some(tx),
                consent: watch_rx,
                records,
                stats,
                jar,
            }));
            match sent {
                Ok(()) => driver.run(),
                // Nobody waits for this client any more (`build()` was cancelled): let go of the
                // data directory at once.
                Err(_) => driver.close(),
            }
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

/// Ed25519 verification for [`consent_core::receipt::verify_with`].
fn verify_ed25519(
    public_key: &consent_core::receipt::PublicKey,
    message: &[u8],
    signature: &consent_core::receipt::Signature,
) -> bool {
    use ring::signature::{ED25519, UnparsedPublicKey};
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}
