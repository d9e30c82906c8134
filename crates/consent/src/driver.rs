//! The driver: one thread that owns the engine, the queues, the record log and the state file, and
//! is the only code that feeds the engine.
//!
//! `Client` methods send it a [`Msg`] with a oneshot for the answer. It works in rounds: it takes
//! every message waiting (so a thousand concurrent `enqueue`s share one `fsync`), syncs the queues
//! it appended to and answers the appends that became durable, then asks the engine what each
//! queue may do (deliver, wait, or purge), starts a delivery, and answers what finished. File work
//! happens on this thread only, never on a runtime worker; requests run on the runtime as tasks
//! that report back through the same channel.
//!
//! Events are kept in one queue per set of purposes they need ("lanes": `queue/` for `general`
//! alone, `queues/<hex of the names>/` for the others), so an "out" for one purpose purges exactly
//! the lanes that need it, bytes and all, with the queue's own durable `purge`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use consent_core::{
    Action, ConsentRecord as CoreRecord, Decision, Engine, HandleError, Input, LogLevel, Origin,
    Purpose, RecordSource as CoreSource, Requirement, Response, SetConsentId, SetConsentOptions,
    SetConsentOutcome, Snapshot, Stored, Timestamp, Verdict,
};
use consent_store::{
    ChainHead, EventQueue, ExportError, Io, NewRecord, QueueConfig, RecordLog, RecordPayload,
    RecordSource, StateFile, Store, SyncPolicy, VerifyError,
};
use consent_transport::{
    DataRequest, EdgeReply, Request, SendError, SetConsentRequest, Transport, engine_response,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::error::{Error, ErrorKind};
use crate::event::{EventId, ORDER_BYTES, Receipt};
use crate::jar::SharedJar;

/// Where an answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A message to the driver.
pub(crate) enum Msg {
    Enqueue {
        payload: Vec<u8>,
        purposes: Vec<String>,
        id: EventId,
        reply: oneshot::Sender<Result<EventId, Error>>,
        delivered: Option<oneshot::Sender<Result<Receipt, Error>>>,
    },
    SetConsent {
        options: SetConsentOptions,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    SetPurposes {
        purposes: Vec<(String, Decision)>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// The Opt-in Service changed the jar: save it (here, off the caller's thread).
    JarChanged,
    Shutdown {
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
    /// The answer to a batch of events.
    Delivered {
        batch: u64,
        result: Result<EdgeReply, SendError>,
    },
    /// The answer to a `privacy/set-consent` request.
    ConsentAnswer {
        request: consent_core::RequestId,
        result: Result<EdgeReply, SendError>,
    },
}

/// The client's counters: the driver counts, [`Client::stats`](crate::Client::stats) reads.
#[derive(Debug, Default)]
pub(crate) struct StatsInner {
    pub(crate) queued: AtomicU64,
    pub(crate) enqueued: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) declined: AtomicU64,
    pub(crate) purged: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dropped_rejected: AtomicU64,
    pub(crate) dropped_damaged: AtomicU64,
    pub(crate) requests: AtomicU64,
}

/// Which request an [`Answer`] answers.
#[derive(Clone, Copy)]
enum Answers {
    Batch(u64),
    Consent(consent_core::RequestId),
}

/// Carries a request's result back to the driver, or, when the request's task ends without one (a
/// panic in a transport, or a runtime shutting down), a failure: the driver never waits for an
/// answer that cannot come.
struct Answer {
    tx: Sender<Msg>,
    to: Answers,
    sent: bool,
}

impl Answer {
    fn new(tx: &Sender<Msg>, to: Answers) -> Self {
        Self {
            tx: tx.clone(),
            to,
            sent: false,
        }
    }

    fn send(mut self, result: Result<EdgeReply, SendError>) {
        self.sent = true;
        let _ = self.tx.send(self.to.msg(result));
    }
}

impl Answers {
    fn msg(self, result: Result<EdgeReply, SendError>) -> Msg {
        match self {
            Answers::Batch(batch) => Msg::Delivered { batch, result },
            Answers::Consent(request) => Msg::ConsentAnswer { request, result },
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if !self.sent {
            let failed = SendError::DeadlineExceeded {
                attempts: 0,
                deadline: Duration::ZERO,
            };
            let _ = self.tx.send(self.to.msg(Err(failed)));
        }
    }
}

/// What an unsettled `setConsent` call asks for, so that an event the person has already refused
/// is declined at once, not written to disk while the call is on its way.
#[derive(Debug)]
struct Wish {
    id: SetConsentId,
    general: Option<Decision>,
    purposes: Vec<(Purpose, Decision)>,
    /// What an Adobe 1.0 object gives every purpose.
    all_purposes: Option<Decision>,
    /// Purposes the app decided itself after the call: it no longer speaks for them.
    superseded: Vec<Purpose>,
}

impl Wish {
    /// What the call asks for `purpose`, `None` when it leaves it as it is.
    fn of(&self, purpose: Purpose) -> Option<Decision> {
        if purpose == Purpose::GENERAL {
            return self.general;
        }
        if self.superseded.contains(&purpose) {
            return None;
        }
        self.purposes
            .iter()
            .find(|(p, _)| *p == purpose)
            .map(|(_, d)| *d)
            .or(self.all_purposes)
    }
}

/// What the driver persists in the state file (next to the record log's anchor).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Persisted {
    /// The engine's snapshot.
    pub(crate) snapshot: Snapshot,
    /// A second copy of the consent cookie (the jar's is the first): a jar that is lost, damaged
    /// or not saved cannot turn an opt-out back into "in". `None` when there is none.
    #[serde(default)]
    pub(crate) consent_cookie: Option<MirroredCookie>,
    /// Queues whose purge failed, with the sequence number below which every event must go:
    /// done before anything else at the next start.
    #[serde(default)]
    pub(crate) purges_owed: Vec<(String, u64)>,
}

/// The consent cookie as the state file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MirroredCookie {
    pub(crate) value: String,
    /// Milliseconds since the Unix epoch; `None` for a session cookie.
    pub(crate) expires_ms: Option<u64>,
}

/// The longest acknowledgements of delivered events wait for their sync while more is delivered.
const ACK_SYNC_EVERY: Duration = Duration::from_millis(250);

/// The state file's schema version.
pub(crate) const STATE_VERSION: u32 = 1;
/// Where the queues of events that need named purposes live.
pub(crate) const LANES_DIR: &str = "queues";

/// The driver's settings, from the builder.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) batch_size: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) queue: QueueConfig,
    pub(crate) flush_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// The first wait before a failed delivery is tried again; it doubles up to `max_backoff`.
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    /// The IAB vendor whose consent a TC string must grant.
    pub(crate) iab_vendor_id: u16,
    /// The notice or policy version every consent record is given under.
    pub(crate) notice_version: Option<String>,
}

/// The standard of the records that hold the server's signed consent receipts (one record
/// each, source `server`, payload `{"receipt": "<JWS>", "requestId": …}`).
pub const RECEIPT_STANDARD: &str = "consent-receipt";

/// The record log, shared with [`crate::Records`] (which reads it on the caller's thread).
pub(crate) type SharedRecords = Arc<Mutex<RecordSlot>>;

/// The record log, or why there is none.
pub(crate) enum RecordSlot {
    Open(Box<dyn RecordOps>),
    Broken(String),
    Closed,
}

/// What [`crate::Records`] and the driver do with the log, whatever its `Io`.
pub(crate) trait RecordOps: Send {
    fn append(&mut self, record: NewRecord) -> Result<(), String>;
    fn verify(&self) -> Result<ChainHead, VerifyError>;
    fn verify_against(&self, head: &ChainHead) -> Result<ChainHead, VerifyError>;
    fn list(&self) -> Result<Vec<consent_store::ConsentRecord>, VerifyError>;
    fn export(&self, out: &mut dyn std::io::Write) -> Result<ChainHead, ExportError>;
}

impl<I: Io> RecordOps for RecordLog<I> {
    fn append(&mut self, record: NewRecord) -> Result<(), String> {
        RecordLog::append(self, record)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn verify(&self) -> Result<ChainHead, VerifyError> {
        RecordLog::verify(self)
    }
    fn verify_against(&self, head: &ChainHead) -> Result<ChainHead, VerifyError> {
        RecordLog::verify_against(self, head)
    }
    fn list(&self) -> Result<Vec<consent_store::ConsentRecord>, VerifyError> {
        RecordLog::records(self)
    }
    fn export(&self, mut out: &mut dyn std::io::Write) -> Result<ChainHead, ExportError> {
        self.export_jsonl(&mut out)
    }
}

/// One queue of events that need the same purposes.
struct Lane<I: Io> {
    /// The named purposes, sorted; empty for `general` alone.
    names: Vec<String>,
    /// The engine's requirement; `None` when a name is not configured any more (the events
    /// then stay on disk, undelivered).
    requirement: Option<Requirement>,
    queue: EventQueue<I>,
    /// The first event not handed to a request yet.
    next_unsent: u64,
    /// Appended since the last sync: synced at the end of the round.
    dirty: bool,
    /// Acknowledged since the last sync: synced once nothing more is to be delivered, or
    /// [`ACK_SYNC_EVERY`] after the last sync, so a run of requests is not slowed by a sync each
    /// (an acknowledgement a crash loses only makes an event go again, with its id).
    acked: bool,
    /// `enqueue` calls waiting for their event to be durable, in order.
    durable_waiters: Vec<(u64, EventId, Reply<EventId>)>,
    /// `send_event` calls waiting for their event to be delivered, by sequence number.
    delivery_waiters: HashMap<u64, (EventId, oneshot::Sender<Result<Receipt, Error>>)>,
}

/// A request of events on its way.
struct Batch {
    id: u64,
    /// Per lane: the first and last sequence number in the request.
    parts: Vec<(usize, u64, u64)>,
    /// The events, for the receipts: lane, sequence number, id.
    events: Vec<(usize, u64, EventId)>,
    /// The consent epoch it was sent in.
    epoch: u64,
    /// Stops the request (and the transport's retries of it) when consent is withdrawn.
    abort: Option<tokio::task::AbortHandle>,
    /// Whether it was stopped: its answer then only rewinds.
    aborted: bool,
}

/// What the builder opened, handed to the driver thread.
pub(crate) struct Parts<I: Io> {
    pub(crate) store: Store<I>,
    pub(crate) engine: Engine,
    pub(crate) transport: Arc<dyn Transport>,
    /// Whether the transport keeps its cookies in `jar` (the HTTP transport does); otherwise
    /// cookie actions are applied to both.
    pub(crate) transport_uses_jar: bool,
    pub(crate) jar: SharedJar,
    pub(crate) records: SharedRecords,
    pub(crate) settings: Settings,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) stats: Arc<StatsInner>,
    pub(crate) watch: watch::Sender<consent_core::ConsentView>,
    pub(crate) tx: Sender<Msg>,
    pub(crate) rx: Receiver<Msg>,
    /// The state file's document (`None` when missing or unreadable).
    pub(crate) persisted: Option<Persisted>,
    /// Whether the cookie jar could not be read (its consent cookie is then unknown).
    pub(crate) jar_lost: bool,
}

pub(crate) struct Driver<I: Io> {
    store: Store<I>,
    state: StateFile<Persisted, I>,
    /// What the state file holds (kept to rewrite one part of it).
    persisted: Persisted,
    engine: Engine,
    transport: Arc<dyn Transport>,
    transport_uses_jar: bool,
    jar: SharedJar,
    jar_dirty: bool,
    records: SharedRecords,
    settings: Settings,
    runtime: tokio::runtime::Handle,
    stats: Arc<StatsInner>,
    watch: watch::Sender<consent_core::ConsentView>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    lanes: Vec<Lane<I>>,
    /// The last order key given to an event.
    order: u64,
    next_set_consent: u64,
    consent_waiters: HashMap<SetConsentId, oneshot::Sender<Result<(), Error>>>,
    /// The `setConsent` calls that have not settled, oldest first.
    wishes: Vec<Wish>,
    /// `set_purposes` calls applied in this round, answered after the purges.
    purposes_waiters: Vec<Reply<()>>,
    /// The consent objects of the calls made, by their hash, for the records.
    sent_objects: HashMap<String, serde_json::Value>,
    /// `setConsent` calls that ended in this round, answered once the queues were evaluated.
    consent_done: Vec<(SetConsentId, SetConsentOutcome)>,
    /// `setConsent` requests on their way.
    consent_in_flight: usize,
    /// Bumped by every `setConsent`: an event answer from an earlier epoch may not decide consent.
    epoch: u64,
    in_flight: Option<Batch>,
    next_batch: u64,
    /// When a failed delivery is tried again.
    retry_at: Option<Instant>,
    /// When acknowledgements were last synced.
    last_ack_sync: Instant,
    /// A purge of this round failed: the `setConsent` calls answered in it say so.
    purge_error: Option<String>,
    backoff: Duration,
    /// Events per request after a 400, 413 or 422 (halved each time); it doubles back with every
    /// request that succeeds.
    batch_cap: usize,
    flush_waiters: Vec<(Instant, oneshot::Sender<Result<(), Error>>)>,
    shutdown: Option<(Instant, Vec<Reply<()>>)>,
}

fn now_ms() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_millis(millis)
}

/// `now + timeout`, or a year from now for a timeout too long to add.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn order_of(payload: &[u8]) -> u64 {
    payload
        .get(..ORDER_BYTES)
        .and_then(|b| <[u8; ORDER_BYTES]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// How the state file names a lane: its directory under [`LANES_DIR`], or `""` for `general`.
fn lane_key(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        lane_dir_name(names)
    }
}

/// The directory name of a lane: the hex of its purpose names joined by newlines.
pub(crate) fn lane_dir_name(names: &[String]) -> String {
    names
        .join("\n")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lane_names_of(dir_name: &str) -> Option<Vec<String>> {
    if dir_name.is_empty() || !dir_name.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..dir_name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(dir_name.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    Some(text.split('\n').map(str::to_owned).collect())
}

fn declined_error(reason: consent_core::RejectReason) -> Error {
    Error::new(ErrorKind::ConsentDeclined, reason.message())
}

fn storage(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Storage, format!("{context}: {e}"), e)
}

/// A consent record of the engine as a line of the record log: the whole engine record is the
/// payload, so the log says what applied, what was asked, when and how.
fn new_record(
    record: &CoreRecord,
    objects: &HashMap<String, serde_json::Value>,
    notice_version: Option<&str>,
) -> NewRecord {
    let (standard, version) = match record.standards.as_slice() {
        [] => ("none".to_owned(), String::new()),
        [first, rest @ ..] if rest.iter().all(|s| s == first) => match first.split_once('.') {
            Some((name, version)) => (name.to_owned(), version.to_owned()),
            None => (first.clone(), String::new()),
        },
        all => (all.join(", "), String::new()),
    };
    let source = match record.source {
        CoreSource::Default => RecordSource::Default,
        CoreSource::Restore => RecordSource::Restore,
        CoreSource::User => RecordSource::User,
        CoreSource::Server => RecordSource::Server,
        CoreSource::Expiry => RecordSource::Expiry,
        CoreSource::Unconfirmed => RecordSource::Unconfirmed,
        _ => RecordSource::Local,
    };
    let mut payload = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
    // The consent objects themselves, as they were sent, next to their hashes: what the person
    // said, word for word.
    let sent: Vec<serde_json::Value> = record
        .payload_hashes
        .iter()
        .filter_map(|h| objects.get(h).cloned())
        .collect();
    if let (Some(map), false) = (payload.as_object_mut(), sent.is_empty()) {
        map.insert("consent".to_owned(), serde_json::Value::Array(sent));
    }
    let new = NewRecord::new(
        record.at.as_millis(),
        standard,
        version,
        source,
        RecordPayload::Full(payload),
    );
    match notice_version {
        Some(notice) => new.with_notice_version(notice),
        None => new,
    }
}

impl<I: Io> Driver<I> {
    /// Opens the queues, starts the engine, and carries out what it asks at start-up.
    pub(crate) fn start(parts: Parts<I>) -> Result<Self, Error> {
        let Parts {
            store,
            engine,
            transport,
            transport_uses_jar,
            jar,
            records,
            settings,
            runtime,
            stats,
            watch,
            tx,
            rx,
            persisted,
            jar_lost,
        } = parts;
        let snapshot = persisted.as_ref().map(|p| p.snapshot.clone());
        let state = store.state::<Persisted>(STATE_VERSION);
        let next_set_consent = snapshot
            .as_ref()
            .and_then(|s| s.pending.iter().map(|c| c.id.0).max())
            .map_or(1, |m| m + 1);
        let batch_cap = settings.batch_size.max(1);
        let mut driver = Self {
            state,
            persisted: persisted.clone().unwrap_or_default(),
            engine,
            transport,
            transport_uses_jar,
            jar,
            jar_dirty: false,
            records,
            runtime,
            stats,
            watch,
            tx,
            rx,
            lanes: Vec::new(),
            order: 0,
            next_set_consent,
            consent_waiters: HashMap::new(),
            wishes: Vec::new(),
            purposes_waiters: Vec::new(),
            sent_objects: HashMap::new(),
            consent_done: Vec::new(),
            consent_in_flight: 0,
            epoch: 0,
            in_flight: None,
            next_batch: 1,
            retry_at: None,
            last_ack_sync: Instant::now(),
            purge_error: None,
            backoff: settings.min_backoff,
            batch_cap,
            flush_waiters: Vec::new(),
            shutdown: None,
            settings,
            store,
        };
        driver.open_lanes()?;
        if jar_lost {
            tracing::warn!(
                "the cookie jar could not be read: the stored consent is unknown, so consent is pending until it is set again"
            );
        }
        for call in snapshot.iter().flat_map(|s| &s.pending) {
            driver.remember_objects(&call.consent);
            let named = |names: &[(String, Decision)], engine: &Engine| {
                names
                    .iter()
                    .filter_map(|(n, d)| engine.purpose(n).map(|p| (p, *d)))
                    .collect::<Vec<_>>()
            };
            let wish = Wish {
                id: call.id,
                general: call.general,
                purposes: named(&call.purposes, &driver.engine),
                all_purposes: call.all_purposes,
                superseded: call
                    .superseded
                    .iter()
                    .filter_map(|n| driver.engine.purpose(n))
                    .collect(),
            };
            driver.wishes.push(wish);
        }
        let (jar_cookie, identity_cookie) = driver.jar.stored();
        let mirror = persisted.and_then(|p| p.consent_cookie);
        let (mut consent_cookie, restored) = driver.restore_consent_cookie(jar_cookie, mirror);
        // Only a default "in" is looser than "pending"; "out" and "pending" already hold.
        let default_in = driver.engine.config().default() == consent_core::DefaultConsent::In;
        if jar_lost && consent_cookie.is_none() && default_in {
            // The stored choice is unknown, and stays unknown until the person decides again:
            // "pending" is written down, so the next start does not take the missing jar for a
            // fresh one.
            let pending = consent_core::Cookie::new(
                driver.engine.cookie_names().consent(),
                "general=pending",
                Some(consent_core::CONSENT_COOKIE_MAX_AGE),
            );
            if let Err(e) = driver.jar.apply(&Action::StoreCookie(pending)) {
                tracing::warn!("cannot write the pending consent cookie: {e}");
            }
            driver.consent_cookie_changed();
            // Pending whether or not the write worked: an unknown choice is never the default "in".
            consent_cookie = Some(consent_core::StoredCookie {
                value: "general=pending".to_owned(),
                expires: Some(now_ms().plus_secs(consent_core::CONSENT_COOKIE_MAX_AGE)),
            });
        }
        let snapshot = snapshot.map(|mut s| {
            if restored {
                s.fingerprint = None;
                s.fingerprint_cookie = None;
            }
            s
        });
        driver.handle(Input::Start(Stored {
            consent_cookie,
            identity_cookie,
            snapshot,
        }))?;
        driver.settle_round();
        Ok(driver)
    }

    /// The consent cookie to start from: the jar's, unless the state file's copy is stricter than
    /// what the jar says (a jar lost, damaged or saved late: the copy is then written back to it),
    /// so that no lost or stale file can loosen consent. Says whether the copy was used: the
    /// server then has no proof of it, and the next `setConsent` is sent even if it repeats the
    /// last one.
    fn restore_consent_cookie(
        &mut self,
        jar: Option<consent_core::StoredCookie>,
        mirror: Option<MirroredCookie>,
    ) -> (Option<consent_core::StoredCookie>, bool) {
        let now = now_ms().as_millis();
        let mirror = mirror
            .filter(|m| m.expires_ms.is_none_or(|e| e > now))
            .map(|m| consent_core::StoredCookie {
                value: m.value,
                expires: m.expires_ms.map(Timestamp::from_millis),
            });
        let general = |c: &consent_core::StoredCookie| {
            consent_core::general_value(&c.value).and_then(Decision::from_wire)
        };
        // The copy only ever makes consent stricter: it protects an opt-out from a lost or stale
        // jar; a lost "in" is not brought back (the default applies, as for a deleted cookie).
        // A jar value the engine does not know counts as the default, as the engine reads it.
        let default = self.engine.config().default().decision();
        let jar_says = jar.as_ref().and_then(general).unwrap_or(default);
        let chosen = match mirror {
            Some(mirror) if general(&mirror).is_some_and(|b| jar_says.stricter(b) != jar_says) => {
                tracing::warn!(
                    "the cookie jar's consent ({jar_says}) is looser than the state file's copy: the copy applies"
                );
                mirror
            }
            _ => return (jar, false),
        };
        let max_age = chosen
            .expires
            .map(|e| e.as_millis().saturating_sub(now).div_ceil(1000));
        let cookie =
            consent_core::Cookie::new(self.engine.cookie_names().consent(), &chosen.value, max_age);
        if let Err(e) = self.jar.apply(&Action::StoreCookie(cookie)) {
            tracing::warn!("cannot restore the consent cookie to the jar: {e}");
        }
        self.jar_dirty = true;
        (Some(chosen), true)
    }

    /// The consent cookie changed: the jar and the state file's copy are saved at once, before
    /// the engine's next action, so that a crash right after an opt-out cannot lose it.
    fn consent_cookie_changed(&mut self) {
        let (cookie, _) = self.jar.stored();
        self.persisted.consent_cookie = cookie.map(|c| MirroredCookie {
            value: c.value,
            expires_ms: c.expires.map(Timestamp::as_millis),
        });
        self.jar_dirty = true;
        self.save_jar();
        self.save_state();
    }

    fn save_state(&mut self) {
        if let Err(e) = self.state.save(&self.persisted) {
            tracing::error!("cannot persist the consent state: {e}");
        }
    }

    /// Opens the lane of `general` alone and every lane found on disk.
    fn open_lanes(&mut self) -> Result<(), Error> {
        let queue = self
            .store
            .queue(self.settings.queue)
            .map_err(|e| storage("cannot open the event queue", e))?;
        self.add_lane(Vec::new(), queue);
        let dir = self.store.dir().join(LANES_DIR);
        let mut names = match self.store.io().list(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(storage("cannot list the purpose queues", e)),
        };
        names.sort();
        for name in names {
            let Some(purposes) = lane_names_of(&name) else {
                continue;
            };
            let queue = EventQueue::open(
                self.store.io().clone(),
                dir.join(&name),
                self.settings.queue,
            )
            .map_err(|e| storage("cannot open a purpose queue", e))?;
            self.add_lane(purposes, queue);
        }
        Ok(())
    }

    fn add_lane(&mut self, names: Vec<String>, queue: EventQueue<I>) -> usize {
        let requirement = self.requirement_of(&names).ok();
        if requirement.is_none() {
            tracing::warn!(
                purposes = ?names,
                events = queue.len(),
                "queued events need a purpose that is not configured: they stay on disk and are not delivered"
            );
        }
        let report = queue.recovery();
        if !report.is_clean() {
            let lost = report.lost_events;
            self.stats
                .dropped_damaged
                .fetch_add(lost, Ordering::Relaxed);
            tracing::error!(queue = %queue.dir().display(), lost, "the event queue was damaged: {report:?}");
        }
        // Events keep their submission order across restarts: new ones sort after every one kept.
        if queue.next_seq() > queue.head()
            && let Ok(last) = queue.read_from(queue.next_seq() - 1, 1)
            && let Some(event) = last.first()
        {
            self.order = self.order.max(order_of(&event.payload));
        }
        let next_unsent = queue.head();
        self.lanes.push(Lane {
            names,
            requirement,
            queue,
            next_unsent,
            dirty: false,
            acked: false,
            durable_waiters: Vec::new(),
            delivery_waiters: HashMap::new(),
        });
        self.lanes.len() - 1
    }

    fn requirement_of(&self, names: &[String]) -> Result<Requirement, Error> {
        let mut requirement = Requirement::general();
        for name in names {
            let purpose = self.engine.purpose(name).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("unknown purpose {name:?}: register it with Builder::purpose"),
                )
            })?;
            requirement = requirement.and(purpose);
        }
        Ok(requirement)
    }

    fn lane_for(&mut self, purposes: &[String]) -> Result<usize, Error> {
        let mut names = purposes.to_vec();
        names.sort();
        names.dedup();
        if let Some(i) = self.lanes.iter().position(|l| l.names == names) {
            return Ok(i);
        }
        self.requirement_of(&names)?;
        let dir = self.store.dir().join(LANES_DIR).join(lane_dir_name(&names));
        let queue = EventQueue::open(self.store.io().clone(), dir, self.settings.queue)
            .map_err(|e| storage("cannot open a purpose queue", e))?;
        Ok(self.add_lane(names, queue))
    }

    /// The driver's loop, until shutdown.
    pub(crate) fn run(mut self) {
        loop {
            let first = match self.next_wakeup() {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(wait) {
                        Ok(msg) => Some(msg),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match self.rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => break,
                },
            };
            if let Some(msg) = first {
                self.on_msg(msg);
                // Everything else that is waiting joins this round (and its fsync).
                for _ in 0..16_384 {
                    match self.rx.try_recv() {
                        Ok(msg) => self.on_msg(msg),
                        Err(_) => break,
                    }
                }
            }
            self.on_timers();
            self.settle_round();
            if self.finished() {
                break;
            }
        }
        self.close();
    }

    /// When the loop must wake up without a message.
    fn next_wakeup(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if let Some(expiry) = self.engine.poll_timeout() {
            let now = now_ms();
            let wait = Duration::from_millis(expiry.as_millis().saturating_sub(now.as_millis()));
            consider(Instant::now() + wait);
        }
        if let Some(retry) = self.retry_at {
            consider(retry);
        }
        if self.lanes.iter().any(|l| l.acked) {
            consider(self.last_ack_sync + ACK_SYNC_EVERY);
        }
        if !self.persisted.purges_owed.is_empty() {
            consider(Instant::now() + Duration::from_secs(1));
        }
        for (deadline, _) in &self.flush_waiters {
            consider(*deadline);
        }
        if let Some((deadline, _)) = &self.shutdown {
            consider(*deadline);
        }
        at
    }

    fn on_timers(&mut self) {
        if let Some(expiry) = self.engine.poll_timeout()
            && expiry <= now_ms()
        {
            let _ = self.handle(Input::Tick);
        }
        if self.retry_at.is_some_and(|t| t <= Instant::now()) {
            self.retry_at = None;
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Enqueue {
                payload,
                purposes,
                id,
                reply,
                delivered,
            } => {
                if self.shutdown.is_some() {
                    let _ = reply.send(Err(Error::shutdown()));
                    return;
                }
                match self.append(payload, &purposes) {
                    Ok((lane, seq)) => {
                        let lane = &mut self.lanes[lane];
                        if let Some(tx) = delivered {
                            lane.delivery_waiters.insert(seq, (id.clone(), tx));
                        }
                        lane.durable_waiters.push((seq, id, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Msg::SetConsent { options, reply } => {
                if self.shutdown.is_some() {
                    let _ = reply.send(Err(Error::shutdown()));
                    return;
                }
                let id = SetConsentId(self.next_set_consent);
                self.remember_objects(&options.consent_json());
                // Registered before the engine sees the call: a skipped call settles at once.
                let wished = options
                    .decide(&consent_core::TcfDecoder, self.settings.iab_vendor_id)
                    .map(|d| Wish {
                        id,
                        general: d.general,
                        purposes: d.purposes.clone(),
                        all_purposes: d.all_purposes,
                        superseded: Vec::new(),
                    });
                if let Ok(wish) = wished {
                    self.wishes.push(wish);
                }
                match self.handle(Input::SetConsent { id, options }) {
                    Ok(()) => {
                        self.next_set_consent += 1;
                        self.epoch += 1;
                        self.consent_waiters.insert(id, reply);
                    }
                    Err(e) => {
                        self.wishes.retain(|w| w.id != id);
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Msg::SetPurposes { purposes, reply } => {
                if self.shutdown.is_some() {
                    let _ = reply.send(Err(Error::shutdown()));
                    return;
                }
                let mut decided = Vec::with_capacity(purposes.len());
                for (name, decision) in purposes {
                    match self.engine.purpose(&name) {
                        Some(p) => decided.push((p, decision)),
                        None => {
                            let _ = reply.send(Err(Error::new(
                                ErrorKind::InvalidInput,
                                format!(
                                    "unknown purpose {name:?}: register it with Builder::purpose"
                                ),
                            )));
                            return;
                        }
                    }
                }
                let decided_purposes: Vec<Purpose> = decided.iter().map(|(p, _)| *p).collect();
                match self.handle(Input::SetPurposes(decided)) {
                    Ok(()) => {
                        for wish in &mut self.wishes {
                            wish.superseded.extend(decided_purposes.iter().copied());
                        }
                        // Answered once the queues it withdraws are purged, at the round's end.
                        self.purposes_waiters.push(reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Msg::Flush { reply } => {
                if self.shutdown.is_some() {
                    let _ = reply.send(Err(Error::shutdown()));
                    return;
                }
                // A delivery waiting out a backoff is tried again now.
                self.retry_at = None;
                self.backoff = self.settings.min_backoff;
                let deadline = deadline_after(self.settings.flush_timeout);
                self.flush_waiters.push((deadline, reply));
            }
            Msg::Shutdown { reply } => {
                let deadline = deadline_after(self.settings.shutdown_timeout);
                let (_, replies) = self.shutdown.get_or_insert_with(|| (deadline, Vec::new()));
                replies.extend(reply);
                self.retry_at = None;
            }
            Msg::JarChanged => self.jar_dirty = true,
            Msg::Delivered { batch, result } => self.on_delivered(batch, result),
            Msg::ConsentAnswer { request, result } => {
                self.consent_in_flight = self.consent_in_flight.saturating_sub(1);
                let response = engine_response(&result, Origin::SetConsent(request));
                match &result {
                    Err(e) => tracing::warn!("setConsent request failed: {e}"),
                    Ok(reply) => self.keep_receipts(reply),
                }
                let _ = self.handle(Input::Response(response));
            }
        }
    }

    /// Keeps the signed receipts of a `setConsent` answer in the record log, each as a record of
    /// its own (source `server`), so that the person holds the server's proof beside their own.
    fn keep_receipts(&mut self, reply: &EdgeReply) {
        let mut receipts = reply.response.receipts().peekable();
        if receipts.peek().is_none() {
            return;
        }
        let mut slot = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let RecordSlot::Open(log) = &mut *slot else {
            return;
        };
        for receipt in receipts {
            // Only what has the shape of a receipt is kept: junk in an answer (a proxy's, a
            // server's bug) would otherwise sit in the append-only log for good. The signature is
            // checked against the server's published keys by `Records::verify_receipts`.
            if let Err(e) = consent_core::receipt::decode(receipt)
                .and_then(|d| d.claims::<consent_core::receipt::ReceiptClaims>())
            {
                tracing::warn!("the server's consent receipt is malformed and was not kept: {e}");
                continue;
            }
            let record = NewRecord::new(
                now_nanos() / 1_000_000,
                RECEIPT_STANDARD.to_owned(),
                String::new(),
                RecordSource::Server,
                RecordPayload::Full(serde_json::json!({
                    "receipt": receipt,
                    "requestId": reply.request_id,
                })),
            );
            if let Err(e) = log.append(record) {
                tracing::error!("cannot keep the server's consent receipt: {e}");
            }
        }
    }

    /// The gate, then a durable append: declined events are refused before anything is written.
    fn append(&mut self, mut payload: Vec<u8>, purposes: &[String]) -> Result<(usize, u64), Error> {
        let requirement = {
            let mut names = purposes.to_vec();
            names.sort();
            names.dedup();
            self.requirement_of(&names)?
        };
        if let Verdict::Declined(reason) = self.engine.check(requirement) {
            self.stats.declined.fetch_add(1, Ordering::Relaxed);
            return Err(declined_error(reason));
        }
        if self.wished_out(purposes) {
            self.stats.declined.fetch_add(1, Ordering::Relaxed);
            return Err(declined_error(consent_core::RejectReason::UserDeclined));
        }
        let lane = self.lane_for(purposes)?;
        self.order = (self.order + 1).max(now_nanos());
        if let Some(prefix) = payload.get_mut(..ORDER_BYTES) {
            prefix.copy_from_slice(&self.order.to_be_bytes());
        }
        let appended = self.lanes[lane]
            .queue
            .append(&payload)
            .map_err(|e| match e {
                consent_store::AppendError::Full { .. } => {
                    Error::from_cause(ErrorKind::QueueFull, e)
                }
                consent_store::AppendError::TooLarge(_) => {
                    Error::from_cause(ErrorKind::InvalidInput, e)
                }
                other => storage("cannot write the event", other),
            })?;
        self.lanes[lane].dirty = true;
        self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
        Ok((lane, appended.seq))
    }

    /// Keeps the consent objects of a call by their hash, for its records (the last 256 only).
    fn remember_objects(&mut self, objects: &[serde_json::Value]) {
        if self.sent_objects.len() > 256 {
            self.sent_objects.clear();
        }
        for object in objects {
            self.sent_objects.insert(
                consent_core::hash::consent_object_hash(object),
                object.clone(),
            );
        }
    }

    /// Whether the person's latest unsettled `setConsent` calls refuse `general` or one of these
    /// purposes: the latest call that speaks of a purpose decides it.
    fn wished_out(&self, purposes: &[String]) -> bool {
        let latest = |purpose: Purpose| self.wishes.iter().rev().find_map(|w| w.of(purpose));
        latest(Purpose::GENERAL) == Some(Decision::Out)
            || purposes
                .iter()
                .filter_map(|name| self.engine.purpose(name))
                .any(|p| latest(p) == Some(Decision::Out))
    }

    /// Feeds the engine and carries out what it asks, in order.
    fn handle(&mut self, input: Input) -> Result<(), Error> {
        self.engine.handle(now_ms(), input).map_err(|e| match e {
            HandleError::Payload(_)
            | HandleError::GeneralIsNotANamedPurpose
            | HandleError::UnknownPurpose(_) => Error::from_cause(ErrorKind::InvalidInput, e),
            other => Error::from_cause(ErrorKind::InvalidInput, other),
        })?;
        self.carry_out();
        Ok(())
    }

    fn carry_out(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            match &action {
                Action::PersistState(snapshot) => {
                    self.persisted.snapshot = snapshot.clone();
                    self.save_state();
                }
                Action::Record(record) => {
                    let mut slot = self.records.lock().unwrap_or_else(PoisonError::into_inner);
                    let new = new_record(
                        record,
                        &self.sent_objects,
                        self.settings.notice_version.as_deref(),
                    );
                    if let RecordSlot::Open(log) = &mut *slot
                        && let Err(e) = log.append(new)
                    {
                        tracing::error!("cannot append the consent record: {e}");
                    }
                }
                Action::SendSetConsent { .. } => {
                    if let Some((request, body)) = SetConsentRequest::from_action(&action) {
                        self.consent_in_flight += 1;
                        let transport = Arc::clone(&self.transport);
                        let answer = Answer::new(&self.tx, Answers::Consent(request));
                        self.stats.requests.fetch_add(1, Ordering::Relaxed);
                        self.runtime.spawn(async move {
                            answer.send(transport.send(Request::SetConsent(body)).await);
                        });
                    }
                }
                Action::SetConsentDone { id, outcome } => {
                    self.wishes.retain(|w| w.id != *id);
                    self.consent_done.push((*id, *outcome));
                }
                Action::StoreCookie(_) | Action::RemoveCookie { .. } => {
                    if let Err(e) = self.jar.apply(&action) {
                        tracing::warn!("cannot write a cookie: {e}");
                    }
                    if !self.transport_uses_jar
                        && let Err(e) = self.transport.apply(&action)
                    {
                        tracing::warn!("the transport cannot write a cookie: {e}");
                    }
                    self.jar_dirty = true;
                    let name = match &action {
                        Action::StoreCookie(cookie) => cookie.name.as_str(),
                        Action::RemoveCookie { name } => name.as_str(),
                        _ => "",
                    };
                    if name == self.engine.cookie_names().consent() {
                        self.consent_cookie_changed();
                    }
                }
                Action::CookieRefused { name } => {
                    tracing::debug!(cookie = %name, "cookie refused: consent does not allow it");
                }
                Action::ConsentChanged(view) => {
                    self.watch.send_replace(view.clone());
                }
                Action::Log { level, message } => match level {
                    LogLevel::Info => tracing::info!("{message}"),
                    _ => tracing::warn!("{message}"),
                },
                _ => {}
            }
        }
    }

    /// The end of a round: durability, the gate on every queue, deliveries, answers.
    fn settle_round(&mut self) {
        self.update_queued();
        self.sync_lanes();
        self.evaluate();
        self.update_queued();
        self.save_jar();
        self.answer_consent_calls();
        self.purge_error = None;
        self.start_delivery();
        self.answer_flushes();
    }

    fn update_queued(&self) {
        let queued: u64 = self.lanes.iter().map(|l| l.queue.len()).sum();
        self.stats.queued.store(queued, Ordering::Relaxed);
    }

    fn sync_lanes(&mut self) {
        let acks_due = self.last_ack_sync.elapsed() >= ACK_SYNC_EVERY
            || (self.in_flight.is_none() && !self.lanes.iter().any(|l| self.deliverable(l)));
        if acks_due {
            self.last_ack_sync = Instant::now();
        }
        for lane in &mut self.lanes {
            if !(lane.dirty || (lane.acked && acks_due)) {
                continue;
            }
            lane.dirty = false;
            lane.acked = false;
            match lane.queue.sync() {
                Ok(durable) => {
                    let (ready, waiting): (Vec<_>, Vec<_>) =
                        std::mem::take(&mut lane.durable_waiters)
                            .into_iter()
                            .partition(|(seq, _, _)| *seq < durable);
                    lane.durable_waiters = waiting;
                    for (_, id, reply) in ready {
                        let _ = reply.send(Ok(id));
                    }
                }
                Err(e) => {
                    tracing::error!("cannot sync the event queue: {e}");
                    let message = format!("the event could not be made durable: {e}");
                    for (seq, _, reply) in lane.durable_waiters.drain(..) {
                        let _ = reply.send(Err(Error::new(ErrorKind::Storage, message.clone())));
                        lane.delivery_waiters.remove(&seq);
                    }
                }
            }
        }
    }

    /// Asks the engine about every queue: declined ones are purged from disk.
    fn evaluate(&mut self) {
        let mut purge_failed = None;
        let in_flight: Vec<(usize, u64, u64)> = self
            .in_flight
            .as_ref()
            .map(|b| b.parts.clone())
            .unwrap_or_default();
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            // A queue whose purposes are not configured any more still needs `general`.
            let requirement = lane.requirement.unwrap_or_else(Requirement::general);
            let Verdict::Declined(reason) = self.engine.check(requirement) else {
                continue;
            };
            if lane.queue.is_empty() && lane.delivery_waiters.is_empty() {
                continue;
            }
            match lane.queue.purge() {
                Ok(n) => {
                    self.stats.purged.fetch_add(n, Ordering::Relaxed);
                    if n > 0 {
                        tracing::info!(events = n, purposes = ?lane.names, "consent declined: queued events purged");
                    }
                }
                Err(e) => {
                    // Owed: retried every round (and first thing at the next start) until every
                    // event below `next_seq` is gone; until then the queue delivers nothing.
                    tracing::error!("cannot purge the event queue, will try again: {e}");
                    let owed = (lane_key(&lane.names), lane.queue.next_seq());
                    if !self.persisted.purges_owed.contains(&owed) {
                        self.persisted.purges_owed.push(owed);
                    }
                    purge_failed = Some(e.to_string());
                }
            }
            lane.next_unsent = lane.queue.next_seq();
            // A request on its way with events of this queue is stopped, with the transport's
            // retries of it: nothing of a withdrawn queue goes out after the withdrawal.
            if in_flight.iter().any(|&(l, _, _)| l == i)
                && let Some(batch) = &mut self.in_flight
                && !batch.aborted
            {
                batch.aborted = true;
                if let Some(abort) = &batch.abort {
                    abort.abort();
                }
            }
            for (_, (_, tx)) in lane.delivery_waiters.drain() {
                let _ = tx.send(Err(declined_error(reason)));
            }
        }
        if let Some(e) = purge_failed {
            self.save_state();
            self.purge_error = Some(e);
        }
        // An opt-out still on its way stops a request with events it refuses too: they wait for
        // the call's outcome instead of reaching the server meanwhile.
        let refused = self.in_flight.as_ref().is_some_and(|b| {
            !b.aborted
                && b.parts
                    .iter()
                    .any(|&(l, _, _)| self.wished_out(&self.lanes[l].names))
        });
        if refused && let Some(batch) = &mut self.in_flight {
            batch.aborted = true;
            if let Some(abort) = &batch.abort {
                abort.abort();
            }
        }
        self.settle_owed_purges();
    }

    /// Deletes what failed purges left: every event below the owed sequence number is
    /// acknowledged and synced (its payload zeroed, its segment deleted).
    fn settle_owed_purges(&mut self) {
        if self.persisted.purges_owed.is_empty() {
            return;
        }
        let owed = std::mem::take(&mut self.persisted.purges_owed);
        let mut still = Vec::new();
        for (key, below) in owed {
            let Some(i) = self.lanes.iter().position(|l| lane_key(&l.names) == key) else {
                continue;
            };
            // A failed purge or sync leaves the queue refusing everything, and its head in memory
            // may be ahead of the one on disk: read it again from disk first.
            let done = self.reopen_lane(i).and_then(|()| {
                let queue = &mut self.lanes[i].queue;
                if queue.head() >= below {
                    return Ok(());
                }
                queue.ack(below - 1).map_err(|e| e.to_string())?;
                queue.sync().map(drop).map_err(|e| e.to_string())
            });
            match done {
                Ok(()) => {
                    let lane = &mut self.lanes[i];
                    lane.next_unsent = lane.next_unsent.max(below);
                    tracing::info!(purposes = ?lane.names, "the owed purge is done");
                }
                Err(e) => {
                    tracing::error!("the owed purge failed again, will try again: {e}");
                    still.push((key, below));
                }
            }
        }
        let changed = still.len() != self.persisted.purges_owed.len() || !still.is_empty();
        self.persisted.purges_owed = still;
        if changed {
            self.save_state();
        }
    }

    /// Opens a lane's queue again from disk.
    fn reopen_lane(&mut self, i: usize) -> Result<(), String> {
        let names = self.lanes[i].names.clone();
        let queue = if names.is_empty() {
            self.store.queue(self.settings.queue)
        } else {
            let dir = self.store.dir().join(LANES_DIR).join(lane_dir_name(&names));
            EventQueue::open(self.store.io().clone(), dir, self.settings.queue)
        };
        // The old handle, refusing everything, writes nothing more (a poisoned queue does not sync
        // when dropped), so the new one reads the files as they are.
        let queue = queue.map_err(|e| e.to_string())?;
        let lane = &mut self.lanes[i];
        lane.queue = queue;
        lane.next_unsent = lane.next_unsent.max(lane.queue.head());
        Ok(())
    }

    /// Saves the jar when it changed; a failed save is tried again at the next round.
    fn save_jar(&mut self) {
        if !self.jar_dirty {
            return;
        }
        match self.jar.save() {
            Ok(()) => self.jar_dirty = false,
            Err(e) => tracing::error!("cannot save the cookie jar, will try again: {e}"),
        }
    }

    fn answer_consent_calls(&mut self) {
        for reply in std::mem::take(&mut self.purposes_waiters) {
            let _ = reply.send(match &self.purge_error {
                Some(e) => Err(Error::new(
                    ErrorKind::Storage,
                    format!(
                        "the purposes apply, but the queued events they withdraw could not be deleted from disk yet: {e}; they are never delivered, and deleting them is tried again"
                    ),
                )),
                None => Ok(()),
            });
        }
        for (id, outcome) in std::mem::take(&mut self.consent_done) {
            let Some(reply) = self.consent_waiters.remove(&id) else {
                continue;
            };
            let result = match outcome {
                _ if self.purge_error.is_some() => Err(Error::new(
                    ErrorKind::Storage,
                    format!(
                        "consent applies, but the queued events it withdraws could not be deleted from disk yet: {}; they are never delivered, and deleting them is tried again",
                        self.purge_error.as_deref().unwrap_or_default()
                    ),
                )),
                SetConsentOutcome::Sent | SetConsentOutcome::Skipped => Ok(()),
                _ => Err(Error::new(
                    ErrorKind::Transport,
                    "the server did not confirm the consent change; until it does, the stricter of the old and the new consent applies here",
                )),
            };
            let _ = reply.send(result);
        }
    }

    /// Whether a lane has events consent allows now that are not on their way yet.
    fn deliverable(&self, lane: &Lane<I>) -> bool {
        lane.requirement
            .is_some_and(|r| self.engine.check(r) == Verdict::Allowed)
            && lane.next_unsent.max(lane.queue.head()) < lane.queue.next_seq()
            && !self
                .persisted
                .purges_owed
                .iter()
                .any(|(key, _)| *key == lane_key(&lane.names))
    }

    fn start_delivery(&mut self) {
        if self.in_flight.is_some() || self.retry_at.is_some() {
            return;
        }
        if self
            .shutdown
            .as_ref()
            .is_some_and(|(d, _)| *d <= Instant::now())
        {
            return;
        }
        let cap = self.batch_cap.min(self.settings.batch_size).max(1);
        // The next events of every queue consent allows, merged in submission order.
        let mut heads: Vec<(usize, VecDeque<consent_store::Event>)> = Vec::new();
        for (i, lane) in self.lanes.iter().enumerate() {
            if !self.deliverable(lane) {
                continue;
            }
            match lane.queue.read_from(lane.next_unsent, cap) {
                Ok(events) if !events.is_empty() => heads.push((i, events.into())),
                Ok(_) => {}
                Err(e) => tracing::error!("cannot read the event queue: {e}"),
            }
        }
        if heads.is_empty() {
            return;
        }
        let mut events = Vec::new();
        let mut ids = Vec::new();
        let mut parts: Vec<(usize, u64, u64)> = Vec::new();
        let mut bytes = 0usize;
        let next_pick = |heads: &[(usize, VecDeque<consent_store::Event>)]| {
            heads
                .iter()
                .enumerate()
                .filter_map(|(k, (_, q))| q.front().map(|e| (k, order_of(&e.payload))))
                .min_by_key(|&(_, order)| order)
                .map(|(k, _)| k)
        };
        while let Some(pick) = next_pick(&heads) {
            let lane = heads[pick].0;
            let Some(event) = heads[pick].1.front() else {
                break;
            };
            let size = event.payload.len();
            if !events.is_empty()
                && (events.len() >= cap || bytes + size > self.settings.max_request_bytes)
            {
                break;
            }
            let Some(event) = heads[pick].1.pop_front() else {
                break;
            };
            bytes += size;
            match parts.iter_mut().find(|p| p.0 == lane) {
                Some(part) => part.2 = event.seq,
                None => parts.push((lane, event.seq, event.seq)),
            }
            let body = event.payload.get(ORDER_BYTES..).unwrap_or_default();
            match serde_json::from_slice::<consent_transport::Event>(body) {
                Ok(edge) => {
                    ids.push((
                        lane,
                        event.seq,
                        EventId(edge.id().unwrap_or_default().to_owned()),
                    ));
                    events.push(edge);
                }
                Err(e) => {
                    // A frame that verified but does not decode: counted, and acknowledged with
                    // the request so it does not block the queue.
                    self.stats.dropped_damaged.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(seq = event.seq, "a queued event does not decode: {e}");
                }
            }
        }
        for &(lane, _, last) in &parts {
            self.lanes[lane].next_unsent = last + 1;
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.in_flight = Some(Batch {
            id,
            parts,
            events: ids,
            epoch: self.epoch,
            abort: None,
            aborted: false,
        });
        let transport = Arc::clone(&self.transport);
        let answer = Answer::new(&self.tx, Answers::Batch(id));
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if events.is_empty() {
            // Only undecodable events: nothing to send.
            answer.send(Err(SendError::TooLarge { status: 0 }));
            return;
        }
        let task = self.runtime.spawn(async move {
            answer.send(
                transport
                    .send(Request::Interact(DataRequest::events(events)))
                    .await,
            );
        });
        if let Some(batch) = &mut self.in_flight {
            batch.abort = Some(task.abort_handle());
        }
    }

    fn on_delivered(&mut self, batch_id: u64, result: Result<EdgeReply, SendError>) {
        let Some(batch) = self.in_flight.take_if(|b| b.id == batch_id) else {
            return;
        };
        if batch.aborted {
            // Stopped because consent was withdrawn: what is still queued waits; the answer, if
            // the server sent one before the stop, says nothing about consent any more.
            self.rewind(&batch);
            return;
        }
        // An answer to a request sent before the latest setConsent may not decide consent: the
        // server's consent cookie in it is older than the person's latest choice.
        let stale = batch.epoch != self.epoch;
        let mut response = engine_response(&result, Origin::Other);
        if stale {
            let consent = self.engine.cookie_names().consent().to_owned();
            response.cookies.retain(|c| c.name != consent);
        }
        let _ = self.handle(Input::Response(Response {
            origin: response.origin,
            outcome: response.outcome,
            cookies: response.cookies,
        }));
        let n = batch.events.len() as u64;
        match result {
            Ok(reply) => {
                self.ack(&batch);
                self.backoff = self.settings.min_backoff;
                // After a split, grow back step by step.
                self.batch_cap = (self.batch_cap * 2).min(self.settings.batch_size.max(1));
                self.stats.delivered.fetch_add(n, Ordering::Relaxed);
                self.stats.retried.fetch_add(
                    n * u64::from(reply.attempts.saturating_sub(1)),
                    Ordering::Relaxed,
                );
                for (lane, seq, id) in batch.events {
                    if let Some((_, tx)) = self.lanes[lane].delivery_waiters.remove(&seq) {
                        let _ = tx.send(Ok(Receipt::new(
                            id,
                            reply.request_id.clone(),
                            reply.status,
                            reply.attempts,
                        )));
                    }
                }
            }
            Err(SendError::Status(status))
                if matches!(status.status, 400 | 413 | 422) && batch.events.len() > 1 =>
            {
                // Too large, or one event the server cannot take: the same events again in
                // halves, so only the event at fault ends (alone, with its error).
                self.batch_cap = (batch.events.len() / 2).max(1);
                self.rewind(&batch);
                tracing::warn!(
                    events = n,
                    status = status.status,
                    "the server refused the request: sending its events in smaller ones"
                );
            }
            Err(e) if e.delivery() == consent_transport::Delivery::Recoverable => {
                self.rewind(&batch);
                self.stats.retried.fetch_add(n, Ordering::Relaxed);
                // The server's `Retry-After` (up to an hour) when it asked for a longer wait.
                let asked = match &e {
                    SendError::Status(status) => status.retry_after,
                    _ => None,
                };
                let wait = asked.map_or(self.backoff, |asked| {
                    asked.min(Duration::from_secs(3600)).max(self.backoff)
                });
                self.retry_at = Some(Instant::now() + wait);
                tracing::warn!(events = n, retry_in = ?wait, "delivery failed, will retry: {e}");
                self.backoff = (self.backoff * 2).min(self.settings.max_backoff);
            }
            Err(e) => {
                // Refused for good: these events end here, reported, never silently dropped.
                self.ack(&batch);
                self.stats.dropped_rejected.fetch_add(n, Ordering::Relaxed);
                tracing::error!(events = n, "the server refused the events for good: {e}");
                let message = format!("the server refused the event: {e}");
                for (lane, seq, _) in batch.events {
                    if let Some((_, tx)) = self.lanes[lane].delivery_waiters.remove(&seq) {
                        let _ = tx.send(Err(Error::new(ErrorKind::Rejected, message.clone())));
                    }
                }
            }
        }
    }

    fn ack(&mut self, batch: &Batch) {
        for &(lane, _, last) in &batch.parts {
            let lane = &mut self.lanes[lane];
            match lane.queue.ack(last) {
                Ok(()) => lane.acked = true,
                Err(e) => tracing::error!("cannot acknowledge delivered events: {e}"),
            }
        }
        self.update_queued();
    }

    fn rewind(&mut self, batch: &Batch) {
        for &(lane, first, _) in &batch.parts {
            let lane = &mut self.lanes[lane];
            lane.next_unsent = lane.next_unsent.min(first).max(lane.queue.head());
        }
    }

    /// Whether nothing consent allows is waiting or on its way.
    fn idle(&self) -> bool {
        self.in_flight.is_none()
            && self.consent_in_flight == 0
            && !self.lanes.iter().any(|l| self.deliverable(l))
    }

    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let idle = self.idle();
        let now = Instant::now();
        for (deadline, reply) in std::mem::take(&mut self.flush_waiters) {
            if idle {
                let _ = reply.send(Ok(()));
            } else if deadline <= now {
                let _ = reply.send(Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "flush did not finish within {:?}: events consent allows are still waiting (the server may be unreachable); they stay queued",
                        self.settings.flush_timeout
                    ),
                )));
            } else {
                self.flush_waiters.push((deadline, reply));
            }
        }
    }

    fn finished(&self) -> bool {
        match &self.shutdown {
            None => false,
            Some((deadline, _)) => self.idle() || *deadline <= Instant::now(),
        }
    }

    /// Answers everything still waiting, makes what is on disk durable, and lets go of the data
    /// directory before the shutdown is answered.
    pub(crate) fn close(mut self) {
        let undelivered: u64 = self
            .lanes
            .iter()
            .filter(|l| self.deliverable(l))
            .map(|l| l.queue.len())
            .sum();
        if undelivered > 0 {
            tracing::warn!(
                events = undelivered,
                "shut down with events consent allows still undelivered: they stay queued for the next client"
            );
        }
        for lane in &mut self.lanes {
            lane.dirty |= lane.acked;
        }
        self.sync_lanes();
        self.save_jar();
        let replies = self.shutdown.take().map(|(_, r)| r).unwrap_or_default();
        for lane in &mut self.lanes {
            for (_, _, reply) in lane.durable_waiters.drain(..) {
                let _ = reply.send(Err(Error::shutdown()));
            }
            for (_, (_, tx)) in lane.delivery_waiters.drain() {
                let _ = tx.send(Err(Error::shutdown()));
            }
        }
        for (_, reply) in self.consent_waiters.drain() {
            let _ = reply.send(Err(Error::shutdown()));
        }
        for (_, reply) in self.flush_waiters.drain(..) {
            let _ = reply.send(Err(Error::shutdown()));
        }
        for reply in self.purposes_waiters.drain(..) {
            let _ = reply.send(Err(Error::shutdown()));
        }
        *self.records.lock().unwrap_or_else(PoisonError::into_inner) = RecordSlot::Closed;
        self.jar.close();
        // Late answers of abandoned requests find the channel closed.
        let Self {
            rx,
            lanes,
            store,
            state,
            ..
        } = self;
        drop(lanes);
        drop(state);
        drop(store);
        // Only now, with the directory free, does a late caller find the client gone.
        drop(rx);
        for reply in replies {
            let _ = reply.send(Ok(()));
        }
    }
}

/// The state file's document, or `None` when it is missing or unreadable (the engine then treats
/// the named purposes of a restored consent as undecided).
pub(crate) fn load_persisted<I: Io>(store: &Store<I>) -> Option<Persisted> {
    match store.state::<Persisted>(STATE_VERSION).load() {
        Ok(doc) => doc,
        Err(e) => {
            tracing::warn!("the consent state file cannot be read, starting without it: {e}");
            None
        }
    }
}

/// The default queue configuration of the client: group commit driven by the driver's rounds.
pub(crate) fn queue_config(max_events: u64, max_bytes: u64) -> QueueConfig {
    // The driver syncs after every round itself; the queue's own timer never fires first.
    QueueConfig::default()
        .with_sync(SyncPolicy::GroupCommit(Duration::from_secs(3600)))
        .with_max_events(max_events)
        .with_max_bytes(max_bytes)
}
