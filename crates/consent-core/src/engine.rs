//! The engine: inputs in through [`Engine::handle`], effects out through [`Engine::poll_action`].

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cookie::{CONSENT_COOKIE_MAX_AGE, Cookie, CookieNames, StoredCookie, general_value};
use crate::hash::ConsentFingerprint;
use crate::payload::{ConsentDecision, IabEvaluator, PayloadError, SetConsentOptions, TcfDecoder};
use crate::types::{Decision, DefaultConsent, MAX_PURPOSES, Purpose, Requirement, Timestamp};

/// The IAB vendor id whose consent the IAB evaluation requires by default (Adobe).
pub const DEFAULT_IAB_VENDOR_ID: u16 = 565;

/// The engine's configuration.
///
/// ```
/// use consent_core::{Config, DefaultConsent};
///
/// let config = Config::new("ADB3LETTERSANDNUMBERS@AdobeOrg")
///     .default_consent(DefaultConsent::Pending)
///     .purpose("analytics")
///     .unwrap();
/// assert_eq!(config.default(), DefaultConsent::Pending);
/// ```
#[derive(Clone)]
pub struct Config {
    org_id: String,
    default_consent: DefaultConsent,
    iab_vendor_id: u16,
    iab: Arc<dyn IabEvaluator>,
    purposes: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("org_id", &self.org_id)
            .field("default_consent", &self.default_consent)
            .field("iab_vendor_id", &self.iab_vendor_id)
            .field("iab", &self.iab)
            .field("purposes", &self.purposes)
            .finish()
    }
}

/// An invalid engine configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The purpose is already known (well-known or registered before).
    #[error("the purpose {0:?} is already defined")]
    DuplicatePurpose(String),
    /// An empty purpose name.
    #[error("a purpose name must not be empty")]
    EmptyPurpose,
    /// More purposes than the engine can tell apart.
    #[error("at most {MAX_PURPOSES} purposes can be defined")]
    TooManyPurposes,
}

impl Config {
    /// A configuration for the organisation `org_id` (which names the cookies), with
    /// `defaultConsent` "in", IAB vendor 565 and the well-known purposes.
    pub fn new(org_id: impl Into<String>) -> Self {
        Self {
            org_id: org_id.into(),
            default_consent: DefaultConsent::In,
            iab_vendor_id: DEFAULT_IAB_VENDOR_ID,
            iab: Arc::new(TcfDecoder),
            purposes: Purpose::WELL_KNOWN
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    /// Sets `defaultConsent`.
    #[must_use]
    pub fn default_consent(mut self, default: DefaultConsent) -> Self {
        self.default_consent = default;
        self
    }

    /// The configured `defaultConsent`.
    pub fn default(&self) -> DefaultConsent {
        self.default_consent
    }

    /// The organisation id.
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// The IAB vendor whose consent the IAB evaluation requires (default 565).
    #[must_use]
    pub fn iab_vendor_id(mut self, vendor: u16) -> Self {
        self.iab_vendor_id = vendor;
        self
    }

    /// Replaces the decoder that evaluates IAB TCF strings (by default [`TcfDecoder`], this
    /// project's codec).
    #[must_use]
    pub fn iab_evaluator(mut self, evaluator: Arc<dyn IabEvaluator>) -> Self {
        self.iab = evaluator;
        self
    }

    /// Registers a custom purpose; look it up afterwards with [`Engine::purpose`].
    pub fn purpose(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ConfigError::EmptyPurpose);
        }
        if self.purposes.contains(&name) {
            return Err(ConfigError::DuplicatePurpose(name));
        }
        if self.purposes.len() >= MAX_PURPOSES {
            return Err(ConfigError::TooManyPurposes);
        }
        self.purposes.push(name);
        Ok(self)
    }
}

/// Identifies a command submitted to the engine. The driver chooses it; it must be unique among
/// the commands still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommandId(pub u64);

/// Identifies one `setConsent` call. The driver chooses it, to match [`Action::SetConsentDone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SetConsentId(pub u64);

/// Identifies a request the engine asked the driver to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// What a command does while consent is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Wait in the queue until consent is decided (`awaitConsent`).
    #[default]
    Queue,
    /// Fail at once with [`RejectReason::Pending`] (`withConsent`).
    FailFast,
}

/// What the engine has read from storage at start-up.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stored {
    /// The consent cookie, if the jar holds one.
    pub consent_cookie: Option<StoredCookie>,
    /// Whether the jar holds the identity cookie.
    pub identity_cookie: bool,
    /// The engine's last persisted state ([`Action::PersistState`]). Pass `None` when the state
    /// file is missing, unreadable or corrupt (never a default `Snapshot` in its place): the
    /// engine then treats every named purpose of a restored consent as undecided.
    pub snapshot: Option<Snapshot>,
}

/// The state the engine asks the driver to persist, and receives back at start-up.
///
/// Carry out a [`Action::PersistState`] durably before the actions that follow it: a new
/// `setConsent` call is persisted before its request is sent, and the state is persisted before
/// commands are released under it, so that no crash point can release a command under a consent
/// the person has replaced.
/// Fields added after the first release default when an older snapshot is read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The fingerprint of the last `setConsent` the server accepted.
    pub fingerprint: Option<ConsentFingerprint>,
    /// The consent cookie's value that call left. The call is skipped as unchanged only while the
    /// cookie still holds exactly this value: any other change of the consent state (a cookie in
    /// another response, expiry, a refused or lost cookie) makes the next call go out.
    #[serde(default)]
    pub fingerprint_cookie: Option<String>,
    /// Named purposes with a decision of their own, by name.
    pub purposes: Vec<(String, Decision)>,
    /// The `setConsent` calls of a chain that had not settled, oldest first. At the next start the
    /// engine stays suspended and sends them again, so a restart never loses an opt-out. Their
    /// [`SetConsentId`]s stay in use until they settle: a driver numbers its new calls after the
    /// largest one here.
    #[serde(default)]
    pub pending: Vec<PendingCall>,
}

/// A `setConsent` call persisted in a [`Snapshot`] because its chain had not settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCall {
    /// The call's id, reported again in [`Action::SetConsentDone`] once it settles.
    pub id: SetConsentId,
    /// The consent objects, exactly as they are sent.
    pub consent: Vec<Value>,
    /// The identity map sent with them.
    #[serde(default)]
    pub identity_map: Option<Value>,
    /// Configuration overrides sent with them.
    #[serde(default)]
    pub config_overrides: Option<Value>,
    /// What the call decides for `general` ([`ConsentDecision::general`]).
    pub general: Option<Decision>,
    /// What it decides for named purposes, by name.
    #[serde(default)]
    pub purposes: Vec<(String, Decision)>,
    /// The decision it gives all purposes ([`ConsentDecision::all_purposes`]).
    #[serde(default)]
    pub all_purposes: Option<Decision>,
    /// Purposes the app decided after this call was made ([`Input::SetPurposes`]): the call no
    /// longer decides them.
    #[serde(default)]
    pub superseded: Vec<String>,
}

/// Which request a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The `privacy/set-consent` request the engine asked for.
    SetConsent(RequestId),
    /// Any other request (`interact`, `collect`, `identity/acquire`) made for a released command.
    Other,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A 2xx answer with a body the protocol accepts.
    Success,
    /// A failed request: a network error, a timeout, or an answer outside 2xx.
    Failure,
}

/// A server response, as the transport reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Which request this answers.
    pub origin: Origin,
    /// How it ended.
    pub outcome: Outcome,
    /// The cookies the server asked to store (`state:store` handles and `Set-Cookie` headers).
    /// The engine decides which of them are written.
    pub cookies: Vec<Cookie>,
}

/// An input to the engine.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// Start-up: what storage holds. Exactly once, before or after the first commands.
    Start(Stored),
    /// A command that needs consent.
    Submit {
        /// The command's id.
        id: CommandId,
        /// The purposes it needs.
        requirement: Requirement,
        /// Whether it waits while consent is pending.
        mode: Mode,
    },
    /// A `setConsent` call. It is never gated by consent.
    SetConsent {
        /// The call's id.
        id: SetConsentId,
        /// The validated options.
        options: SetConsentOptions,
    },
    /// A response to a request.
    Response(Response),
    /// Time has passed: call at [`Engine::poll_timeout`].
    Tick,
    /// Decisions for named purposes that the app makes itself (custom purposes, or a purpose the
    /// person decided in the app's own interface). They apply at once, are recorded and persisted,
    /// and are never sent: `general` is decided by `setConsent` only.
    SetPurposes(Vec<(Purpose, Decision)>),
}

/// Why a command was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Declined: out by default, before any preference was set.
    NoPreferences,
    /// Declined: the user (or the server for the user) said no.
    UserDeclined,
    /// A fail-fast command while consent is pending.
    Pending,
}

impl RejectReason {
    /// The Web SDK's message for this reason.
    pub const fn message(self) -> &'static str {
        match self {
            RejectReason::NoPreferences => "No consent preferences have been set.",
            RejectReason::UserDeclined => "The user declined consent.",
            RejectReason::Pending => "Consent is pending.",
        }
    }

    /// Whether this is a decline (the Web SDK's `declinedConsent` code), as opposed to pending.
    pub const fn is_declined(self) -> bool {
        !matches!(self, RejectReason::Pending)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// The answer to "may a command with this requirement run now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// It may run.
    Allowed,
    /// It must not run; the reason says why.
    Declined(RejectReason),
    /// It must wait.
    Pending,
}

/// How a `setConsent` call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SetConsentOutcome {
    /// Sent, and the server accepted it.
    Sent,
    /// Not sent: the server provably has exactly this consent already (the same call was the last
    /// one it accepted, and the consent cookie still holds the value that call left).
    Skipped,
    /// Sent, and the request failed: the server did not confirm it. The state became at least as
    /// strict as what the call asked, and never looser than before.
    Failed,
}

/// Log levels for [`Action::Log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// Information.
    Info,
    /// A warning.
    Warn,
}

/// Where a consent record's decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RecordSource {
    /// The configured default applied.
    Default,
    /// The stored consent was restored at start-up.
    Restore,
    /// A `setConsent` call the server accepted.
    User,
    /// A consent cookie in a response to another request.
    Server,
    /// The consent cookie expired and the default applied again.
    Expiry,
    /// A `setConsent` call that failed: the state became at least as strict as what it asked,
    /// without the server's confirmation.
    Unconfirmed,
    /// Purposes the app decided itself ([`Input::SetPurposes`]).
    Local,
}

/// A consent record: what was decided, when, how, and from what payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// When.
    pub at: Timestamp,
    /// How.
    pub source: RecordSource,
    /// The standard and version of each consent object, for records of `setConsent` calls.
    pub standards: Vec<String>,
    /// The hash of each consent object (see [`crate::hash`]), for records of `setConsent` calls.
    pub payload_hashes: Vec<String>,
    /// The decision for `general` that applied: the server's cookie when it wrote one, else
    /// what the engine decided.
    pub general: Decision,
    /// Named purposes with a decision of their own, as they applied.
    pub purposes: Vec<(String, Decision)>,
    /// For records of `setConsent` calls: what the call asked for `general` (`None` when it did
    /// not speak of it), beside what applied.
    #[serde(default)]
    pub requested: Option<Decision>,
}

/// What the engine reports about consent: the Web SDK's `current()`, plus the purposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentView {
    /// `in`, `out` or `pending`.
    pub state: Decision,
    /// Whether the state comes from the user (a stored or new choice) rather than the default.
    pub was_set: bool,
    /// Named purposes with a decision of their own; the others follow `state`.
    pub purposes: Vec<(String, Decision)>,
}

/// An effect the driver must carry out, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// The command may run now. `queued_for_ms` is how long it waited.
    Release {
        /// The command.
        command: CommandId,
        /// Milliseconds between submission and release.
        queued_for_ms: u64,
    },
    /// The command must not run. It is finished.
    Reject {
        /// The command.
        command: CommandId,
        /// Why.
        reason: RejectReason,
    },
    /// Send a `privacy/set-consent` request with this body, and report the answer with
    /// [`Input::Response`] and [`Origin::SetConsent`].
    SendSetConsent {
        /// The request's id.
        request: RequestId,
        /// The consent objects, exactly as given.
        consent: Vec<Value>,
        /// The identity map, if any.
        identity_map: Option<Value>,
        /// Configuration overrides, if any.
        config_overrides: Option<Value>,
    },
    /// A `setConsent` call ended.
    SetConsentDone {
        /// The call.
        id: SetConsentId,
        /// How.
        outcome: SetConsentOutcome,
    },
    /// Write this cookie to the jar.
    StoreCookie(Cookie),
    /// Remove this cookie from the jar (whatever its domain and path).
    RemoveCookie {
        /// The cookie's name.
        name: String,
    },
    /// Persist this state; hand it back in [`Stored::snapshot`] at the next start.
    PersistState(Snapshot),
    /// Append this record to the consent log.
    Record(ConsentRecord),
    /// A cookie from a response was not written: consent does not allow it, or (for the consent
    /// cookie) its value is not a valid consent. Nothing to do but count it.
    CookieRefused {
        /// The cookie's name.
        name: String,
    },
    /// Consent changed: tell subscribers.
    ConsentChanged(ConsentView),
    /// Log a message (the Web SDK's wording).
    Log {
        /// The level.
        level: LogLevel,
        /// The message.
        message: Cow<'static, str>,
    },
}

/// An input the engine refused. The engine's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// [`Input::Start`] was given twice.
    #[error("the engine has already started")]
    AlreadyStarted,
    /// A `setConsent` call, a response or [`Input::SetPurposes`] before [`Input::Start`]: the
    /// engine must know the stored consent before it can send or apply one.
    #[error("the engine has not started: give it Input::Start first")]
    NotStarted,
    /// A command id that is still queued.
    #[error("command {0:?} is already queued")]
    DuplicateCommand(CommandId),
    /// A `setConsent` id that is still in progress.
    #[error("setConsent {0:?} is already in progress")]
    DuplicateSetConsent(SetConsentId),
    /// A response to a request that is not in flight.
    #[error("no request {0:?} is in flight")]
    UnknownRequest(RequestId),
    /// A consent object the engine cannot evaluate (a TC string that does not decode).
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// [`Input::SetPurposes`] named `general`, which only `setConsent` decides.
    #[error("general is decided by setConsent; Input::SetPurposes decides named purposes only")]
    GeneralIsNotANamedPurpose,
    /// [`Input::SetPurposes`] named a purpose this engine's configuration does not define.
    #[error("purpose {0:?} is not defined in this engine's configuration")]
    UnknownPurpose(Purpose),
}

/// Whether a consent cookie the engine writes is a decision or a provisional value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CookieWrite {
    /// What applies (a server's cookie, a settled chain's outcome).
    Decided,
    /// A call's stricter wish, written before it is sent (see `write_stricter_cookie`).
    Provisional,
}

/// The six states of the Web SDK's consent state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    Initial,
    InDefault,
    In,
    OutDefault,
    Out,
    Pending,
}

impl Phase {
    fn decision(self) -> Decision {
        match self {
            Phase::InDefault | Phase::In => Decision::In,
            Phase::OutDefault | Phase::Out => Decision::Out,
            Phase::Initial | Phase::Pending => Decision::Pending,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Default,
    Initial,
    New,
}

/// Explicit per-purpose decisions, as disjoint masks. `general` is never in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct PurposeMasks {
    r#in: u64,
    out: u64,
    pending: u64,
}

impl PurposeMasks {
    fn set(&mut self, purpose: Purpose, decision: Decision) {
        let bit = purpose.bit();
        self.r#in &= !bit;
        self.out &= !bit;
        self.pending &= !bit;
        match decision {
            Decision::In => self.r#in |= bit,
            Decision::Out => self.out |= bit,
            Decision::Pending => self.pending |= bit,
        }
    }

    fn get(&self, purpose: Purpose) -> Option<Decision> {
        let bit = purpose.bit();
        if self.r#in & bit != 0 {
            Some(Decision::In)
        } else if self.out & bit != 0 {
            Some(Decision::Out)
        } else if self.pending & bit != 0 {
            Some(Decision::Pending)
        } else {
            None
        }
    }

    fn decided(&self) -> u64 {
        self.r#in | self.out | self.pending
    }

    /// Only the decisions of the purposes in `mask`.
    fn only(&self, mask: u64) -> PurposeMasks {
        PurposeMasks {
            r#in: self.r#in & mask,
            out: self.out & mask,
            pending: self.pending & mask,
        }
    }

    /// What an accepted call does to the purposes: Adobe 1.0 clears them, then each purpose the
    /// call decides takes its decision. The purposes in `kept` (decided by the app after the call
    /// was made) are left as they are.
    fn apply(&mut self, decision: &ConsentDecision, kept: u64) {
        let before = self.only(kept);
        if decision.all_purposes.is_some() {
            *self = PurposeMasks::default();
        }
        for &(purpose, d) in &decision.purposes {
            if purpose != Purpose::GENERAL {
                self.set(purpose, d);
            }
        }
        let rest = self.only(!kept);
        self.r#in = rest.r#in | before.r#in;
        self.out = rest.out | before.out;
        self.pending = rest.pending | before.pending;
    }

    /// What a failed call does to the purposes: each one it would have made stricter becomes at
    /// least that strict; none becomes looser. A purpose without a decision of its own follows
    /// `general`, which the failed call makes at least as strict too.
    fn restrict(&mut self, decision: &ConsentDecision, kept: u64) {
        if let Some(all) = decision.all_purposes.filter(|d| *d != Decision::In) {
            // Adobe 1.0 asked its decision of every purpose, the decided ones included.
            for mask in [self.r#in & !kept, self.pending & !kept] {
                for i in (0..MAX_PURPOSES).filter(|i| mask & (1u64 << i) != 0) {
                    if let Some(purpose) = Purpose::from_index(i) {
                        let current = self.get(purpose).map_or(all, |c| c.stricter(all));
                        self.set(purpose, current);
                    }
                }
            }
        }
        for &(purpose, d) in &decision.purposes {
            if purpose != Purpose::GENERAL && d != Decision::In && kept & purpose.bit() == 0 {
                let current = self.get(purpose).map_or(d, |c| c.stricter(d));
                self.set(purpose, current);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Queued {
    id: CommandId,
    requirement: Requirement,
    submitted: Timestamp,
}

#[derive(Debug, Clone)]
struct Job {
    id: SetConsentId,
    consent: Vec<Value>,
    identity_map: Option<Value>,
    config_overrides: Option<Value>,
    fingerprint: Arc<ConsentFingerprint>,
    decision: ConsentDecision,
    /// Purposes the app decided after this call was made: the call no longer decides them.
    superseded: u64,
}

impl Job {
    /// The purposes this call may change (all of them for Adobe 1.0).
    fn touches(&self) -> u64 {
        let touched = if self.decision.all_purposes.is_some() {
            !0
        } else {
            self.decision
                .purposes
                .iter()
                .fold(0, |mask, (p, _)| mask | p.bit())
        };
        touched & !Purpose::GENERAL.bit() & !self.superseded
    }
}

/// A run of `setConsent` calls: the engine is suspended (pending) from the first call until the
/// last one settles.
#[derive(Debug, Clone)]
struct Chain {
    /// The state from before the chain (the default again if the cookie expired meanwhile).
    before_phase: Phase,
    before_purposes: PurposeMasks,
    /// Calls already answered or skipped; persisted with the others until the chain settles.
    done: Vec<Job>,
    in_flight: Option<(RequestId, Job)>,
    waiting: VecDeque<Job>,
    /// `general` as the calls settled so far leave it; `None` while they leave it as it was.
    general: Option<Decision>,
    /// The purposes as the calls settled so far leave them; `None` while unchanged.
    purposes: Option<PurposeMasks>,
    /// The purposes some call of the chain may change: commands that need them wait for the
    /// chain instead of being declined by the state from before it.
    touched: u64,
    /// Cookies other than the consent cookie offered while the chain runs, written or refused
    /// once it settles.
    held: Vec<Cookie>,
    /// How the state the chain leads to was decided (for its record).
    source: RecordSource,
    /// Whether the consent cookie expired while the chain ran.
    expired: bool,
}

impl Chain {
    fn new(before_phase: Phase, before_purposes: PurposeMasks) -> Self {
        Self {
            before_phase,
            before_purposes,
            done: Vec::new(),
            in_flight: None,
            waiting: VecDeque::new(),
            general: None,
            purposes: None,
            touched: 0,
            held: Vec::new(),
            source: RecordSource::User,
            expired: false,
        }
    }

    fn push(&mut self, job: Job) {
        self.touched |= job.touches();
        self.waiting.push_back(job);
    }

    fn purposes(&self) -> PurposeMasks {
        self.purposes.unwrap_or(self.before_purposes)
    }

    /// The last call that settled, as its record names it: its hashes and what it asked.
    fn last_call(&self) -> Option<(Arc<ConsentFingerprint>, Option<Decision>)> {
        self.done
            .last()
            .map(|job| (Arc::clone(&job.fingerprint), job.decision.general))
    }

    /// Every call of the chain, settled or not, oldest first.
    fn calls(&self) -> impl Iterator<Item = &Job> {
        self.done
            .iter()
            .chain(self.in_flight.as_ref().map(|(_, job)| job))
            .chain(self.waiting.iter())
    }
}

/// The consent engine.
///
/// # Driving it
///
/// Feed inputs with [`Engine::handle`], then call [`Engine::poll_action`] until it returns `None`
/// and carry out every action in order; call `handle(now, Input::Tick)` at [`Engine::poll_timeout`].
/// The engine does no I/O and never reads a clock: `now` is always the driver's.
///
/// Actions must be drained after every `handle`: they are effects that already happened as far as
/// the engine is concerned (a released command must run; a cookie write must reach the jar).
///
/// ```
/// use consent_core::*;
///
/// let mut engine = Engine::new(Config::new("ORG@AdobeOrg").default_consent(DefaultConsent::Pending));
/// let t = Timestamp::from_millis(1_000);
/// engine.handle(t, Input::Start(Stored::default())).unwrap();
/// engine
///     .handle(t, Input::Submit { id: CommandId(1), requirement: Requirement::general(), mode: Mode::Queue })
///     .unwrap();
/// engine
///     .handle(t, Input::SetConsent {
///         id: SetConsentId(1),
///         options: SetConsentOptions::new(vec![ConsentObject::adobe_v1("in").unwrap()]),
///     })
///     .unwrap();
/// let mut request = None;
/// while let Some(action) = engine.poll_action() {
///     if let Action::SendSetConsent { request: id, .. } = action {
///         request = Some(id);
///     }
///     // Nothing is released yet.
///     assert!(!matches!(action, Action::Release { .. }));
/// }
/// let names = CookieNames::new("ORG@AdobeOrg");
/// engine
///     .handle(t, Input::Response(Response {
///         origin: Origin::SetConsent(request.unwrap()),
///         outcome: Outcome::Success,
///         cookies: vec![Cookie::new(names.consent(), "general=in", Some(15_552_000))],
///     }))
///     .unwrap();
/// let actions: Vec<Action> = std::iter::from_fn(|| engine.poll_action()).collect();
/// assert!(actions.contains(&Action::Release { command: CommandId(1), queued_for_ms: 0 }));
/// assert_eq!(engine.consent().state, Decision::In);
/// ```
#[derive(Debug)]
pub struct Engine {
    config: Config,
    names: CookieNames,
    started: bool,
    phase: Phase,
    purposes: PurposeMasks,
    eff_in: u64,
    eff_out: u64,
    explicit_out: u64,
    general_reason: RejectReason,
    queue: VecDeque<Queued>,
    actions: VecDeque<Action>,
    consent_cookie: Option<StoredCookie>,
    identity_cookie: bool,
    fingerprint: Option<Arc<ConsentFingerprint>>,
    /// The consent cookie's value the fingerprinted call left (see [`Snapshot::fingerprint_cookie`]).
    fingerprint_cookie: Option<String>,
    /// The consent cookie's value as last decided (by the jar at start-up, a response, or a
    /// settled chain), which the skip compares: a provisional value written while a chain runs
    /// (see `write_stricter_cookie`) is not a decision.
    decided_cookie: Option<StoredCookie>,
    chain: Option<Chain>,
    next_request: u64,
    /// What subscribers were last told, as the state it is derived from (cheap to compare).
    last_notified: Option<(Phase, PurposeMasks)>,
    /// The state the last consent record stood for.
    last_recorded: Option<(Decision, PurposeMasks)>,
    last_persisted: Option<Persisted>,
}

/// What the last [`Action::PersistState`] said, in the engine's own terms: cheap to compare,
/// since the engine asks "is it still current?" several times per input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Persisted {
    fingerprint: Option<Arc<ConsentFingerprint>>,
    fingerprint_cookie: Option<String>,
    purposes: PurposeMasks,
    /// The ids of the unsettled calls (a call's content never changes) and the purposes the app
    /// decided after each was made.
    calls: Vec<(SetConsentId, u64)>,
}

impl Engine {
    /// A new engine in the initial state. Commands submitted before [`Input::Start`] wait.
    pub fn new(config: Config) -> Self {
        let names = CookieNames::new(&config.org_id);
        let mut engine = Self {
            config,
            names,
            started: false,
            phase: Phase::Initial,
            purposes: PurposeMasks::default(),
            eff_in: 0,
            eff_out: 0,
            explicit_out: 0,
            general_reason: RejectReason::UserDeclined,
            queue: VecDeque::new(),
            actions: VecDeque::new(),
            consent_cookie: None,
            identity_cookie: false,
            fingerprint: None,
            fingerprint_cookie: None,
            decided_cookie: None,
            chain: None,
            next_request: 0,
            last_notified: None,
            last_recorded: None,
            last_persisted: None,
        };
        engine.recompute();
        engine
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cookie names of the configured organisation.
    pub fn cookie_names(&self) -> &CookieNames {
        &self.names
    }

    /// Looks up a purpose by name: a well-known one (`share`, `personalize.content`, …) or one
    /// registered with [`Config::purpose`].
    pub fn purpose(&self, name: &str) -> Option<Purpose> {
        self.config
            .purposes
            .iter()
            .position(|p| p == name)
            .and_then(Purpose::from_index)
    }

    /// The next effect to carry out, or `None` when there is nothing left to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call `handle(now, Input::Tick)` next: the consent cookie's expiry.
    ///
    /// Expiry is also applied by any other input whose `now` is past it, so a late `Tick` never
    /// lets an expired consent decide anything.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.decided_cookie.as_ref().and_then(|c| c.expires)
    }

    /// May a command with this requirement run now? A few mask operations; never allocates.
    #[inline]
    pub fn check(&self, requirement: Requirement) -> Verdict {
        let mask = requirement.mask();
        if mask & self.eff_out != 0 {
            if mask & self.explicit_out != 0 {
                Verdict::Declined(RejectReason::UserDeclined)
            } else {
                Verdict::Declined(self.general_reason)
            }
        } else if mask & self.eff_in == mask {
            Verdict::Allowed
        } else {
            Verdict::Pending
        }
    }

    /// The decision that applies to `purpose` now (its own, or `general`'s).
    pub fn decision(&self, purpose: Purpose) -> Decision {
        let bit = purpose.bit();
        if self.eff_in & bit != 0 {
            Decision::In
        } else if self.eff_out & bit != 0 {
            Decision::Out
        } else {
            Decision::Pending
        }
    }

    /// The current consent: state, whether it was set, and the purposes with their own decision.
    pub fn consent(&self) -> ConsentView {
        self.view_of(self.phase, &self.purposes)
    }

    fn view_of(&self, phase: Phase, purposes: &PurposeMasks) -> ConsentView {
        ConsentView {
            state: phase.decision(),
            was_set: matches!(phase, Phase::In | Phase::Out),
            purposes: self.named_purposes(purposes),
        }
    }

    /// The commands still waiting, oldest first.
    pub fn queued(&self) -> impl Iterator<Item = CommandId> + '_ {
        self.queue.iter().map(|q| q.id)
    }

    /// Whether a `setConsent` is in progress (the engine is suspended until it settles).
    pub fn is_setting_consent(&self) -> bool {
        self.chain.is_some()
    }

    /// Whether the engine would write cookies other than the consent cookie now.
    pub fn allows_cookies(&self) -> bool {
        self.chain.is_none() && matches!(self.phase, Phase::In | Phase::InDefault)
    }

    /// Handles one input. On `Err` nothing changed and no action was queued.
    ///
    /// Every input first applies the consent cookie's expiry when `now` is past it (after the
    /// input was found valid), so no input is ever decided by an expired consent.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Result<(), HandleError> {
        match input {
            Input::Start(stored) => self.start(now, stored)?,
            Input::Submit {
                id,
                requirement,
                mode,
            } => self.submit(now, id, requirement, mode)?,
            Input::SetConsent { .. } | Input::Response(_) | Input::SetPurposes(_)
                if !self.started =>
            {
                return Err(HandleError::NotStarted);
            }
            Input::SetConsent { id, options } => self.set_consent(now, id, options)?,
            Input::Response(response) => self.response(now, response)?,
            Input::SetPurposes(purposes) => self.set_purposes(now, &purposes)?,
            Input::Tick => self.expire(now),
        }
        self.notify();
        Ok(())
    }

    // ----- inputs -----

    fn start(&mut self, now: Timestamp, stored: Stored) -> Result<(), HandleError> {
        if self.started {
            return Err(HandleError::AlreadyStarted);
        }
        self.started = true;
        self.identity_cookie = stored.identity_cookie;
        if let Some(snapshot) = &stored.snapshot {
            self.fingerprint = snapshot.fingerprint.clone().map(Arc::new);
            self.fingerprint_cookie = snapshot.fingerprint_cookie.clone();
        }
        let expired = stored
            .consent_cookie
            .as_ref()
            .is_some_and(|c| c.expires.is_some_and(|at| at <= now));
        let cookie = stored
            .consent_cookie
            .filter(|c| c.expires.is_none_or(|at| at > now));
        if expired {
            // Removed, so that a later start does not take it for an expiry again (and drop the
            // purposes decided since).
            self.actions.push_back(Action::RemoveCookie {
                name: self.names.consent().to_owned(),
            });
        }
        let general = cookie
            .as_ref()
            .and_then(|c| general_value(&c.value))
            .map(str::to_owned);
        self.consent_cookie = cookie;
        self.decided_cookie = self.consent_cookie.clone();

        let known = general.as_deref().and_then(Decision::from_wire);
        // The Web SDK forgets the hashes whenever either cookie is missing, so the next
        // setConsent is sent again; so does an unusable value, which no call ever left.
        if !self.identity_cookie || known.is_none() {
            self.fingerprint = None;
            self.fingerprint_cookie = None;
        }
        let decided = match known {
            // Consent is tied to the identity: without the identity cookie a stored "in" is
            // discarded. A stored "out" or "pending" is kept: this engine never writes the
            // identity cookie while consent is out or pending, so discarding would turn every
            // such choice back into the default (perhaps "in") at the next start.
            Some(decision @ (Decision::Out | Decision::Pending)) => Some(decision),
            Some(decision) if self.identity_cookie => Some(decision),
            Some(_) => None,
            None => {
                if let Some(value) = general.as_deref() {
                    self.warn_unknown(value);
                }
                None
            }
        };
        if decided.is_none() && self.consent_cookie.is_some() && !self.identity_cookie {
            self.consent_cookie = None;
            self.decided_cookie = None;
            self.actions.push_back(Action::RemoveCookie {
                name: self.names.consent().to_owned(),
            });
        }
        match decided {
            Some(decision) => {
                self.purposes = match &stored.snapshot {
                    Some(snapshot) => self.masks_from_names(&snapshot.purposes),
                    // The state file is lost: which purposes the person denied is unknown, so
                    // every named purpose waits for a new decision instead of following general.
                    None => self.all_named_pending(),
                };
                self.set_phase(decision, Source::Initial);
                self.record_state(now, RecordSource::Restore);
            }
            None => {
                // Purposes the app decided stay with the state file, also under the default;
                // those of a consent cookie that expired while the process was down go with it,
                // as they would have at a running engine's expiry.
                self.purposes = match &stored.snapshot {
                    Some(snapshot) if !expired => self.masks_from_names(&snapshot.purposes),
                    _ => PurposeMasks::default(),
                };
                self.set_phase(self.config.default_consent.decision(), Source::Default);
                self.record_state(now, RecordSource::Default);
            }
        }
        // A chain that had not settled is taken up again: suspended, every call sent again.
        let pending = stored.snapshot.map(|s| s.pending).unwrap_or_default();
        if !pending.is_empty() {
            let mut chain = Chain::new(self.phase, self.purposes);
            for call in pending {
                chain.push(self.job_from_pending(call));
            }
            let asked: Vec<Option<Decision>> =
                chain.calls().map(|job| job.decision.general).collect();
            self.chain = Some(chain);
            self.phase = Phase::Pending;
            self.recompute();
            self.persist();
            for general in asked {
                self.write_stricter_cookie(now, general);
            }
        }
        self.persist();
        self.start_next(now);
        self.drain_queue(now);
        Ok(())
    }

    fn submit(
        &mut self,
        now: Timestamp,
        id: CommandId,
        requirement: Requirement,
        mode: Mode,
    ) -> Result<(), HandleError> {
        if self.queue.iter().any(|q| q.id == id) {
            return Err(HandleError::DuplicateCommand(id));
        }
        if self.started {
            self.expire(now);
        }
        match self.check(requirement) {
            Verdict::Allowed => self.actions.push_back(Action::Release {
                command: id,
                queued_for_ms: 0,
            }),
            Verdict::Declined(reason) => self.actions.push_back(Action::Reject {
                command: id,
                reason,
            }),
            Verdict::Pending => match mode {
                Mode::Queue => self.queue.push_back(Queued {
                    id,
                    requirement,
                    submitted: now,
                }),
                Mode::FailFast => self.actions.push_back(Action::Reject {
                    command: id,
                    reason: RejectReason::Pending,
                }),
            },
        }
        Ok(())
    }

    fn set_consent(
        &mut self,
        now: Timestamp,
        id: SetConsentId,
        options: SetConsentOptions,
    ) -> Result<(), HandleError> {
        if let Some(chain) = &self.chain
            && chain.calls().any(|job| job.id == id)
        {
            return Err(HandleError::DuplicateSetConsent(id));
        }
        // Decide everything before changing anything, so that a bad object changes nothing.
        let decision = options.decide(self.config.iab.as_ref(), self.config.iab_vendor_id)?;
        self.expire(now);
        let consent = options.consent_json();
        let fingerprint = Arc::new(ConsentFingerprint::of(
            &consent,
            options.identity_map.as_ref(),
        ));
        let job = Job {
            id,
            consent,
            identity_map: options.identity_map,
            config_overrides: options.edge_config_overrides,
            fingerprint,
            decision,
            superseded: 0,
        };
        let asked = job.decision.general;
        // Suspend: from here until the chain settles, everything that needs consent waits.
        let (phase, purposes) = (self.phase, self.purposes);
        self.chain
            .get_or_insert_with(|| Chain::new(phase, purposes))
            .push(job);
        self.phase = Phase::Pending;
        self.recompute();
        // The call is part of the persisted state before it is sent: a restart takes it up again.
        self.persist();
        self.write_stricter_cookie(now, asked);
        self.start_next(now);
        Ok(())
    }

    /// Writes `general=<asked>` to the consent cookie at once when a call asks for something
    /// stricter than what the cookie (or, without one, the state before the chain) says. The
    /// cookie is the second durable copy of the choice: even if the state file that holds the
    /// unsettled call is lost, the next start is at least as strict as the person asked. The
    /// chain's outcome rewrites the cookie when it settles.
    fn write_stricter_cookie(&mut self, now: Timestamp, asked: Option<Decision>) {
        let Some(asked) = asked else {
            return;
        };
        let current = match (self.cookie_general(), &self.chain) {
            (Some(Some(decision)), _) => decision,
            (_, Some(chain)) => chain.before_phase.decision(),
            (_, None) => self.phase.decision(),
        };
        if asked.stricter(current) != current {
            let cookie = Cookie::new(
                self.names.consent(),
                format!("general={asked}"),
                Some(CONSENT_COOKIE_MAX_AGE),
            );
            self.write_consent_cookie(now, cookie, CookieWrite::Provisional);
        }
    }

    fn set_purposes(
        &mut self,
        now: Timestamp,
        purposes: &[(Purpose, Decision)],
    ) -> Result<(), HandleError> {
        for &(purpose, _) in purposes {
            if purpose == Purpose::GENERAL {
                return Err(HandleError::GeneralIsNotANamedPurpose);
            }
            if purpose.index() >= self.config.purposes.len() {
                return Err(HandleError::UnknownPurpose(purpose));
            }
        }
        self.expire(now);
        let decided = purposes.iter().fold(0, |mask, (p, _)| mask | p.bit());
        for &(purpose, decision) in purposes {
            self.purposes.set(purpose, decision);
            if let Some(chain) = self.chain.as_mut() {
                chain.before_purposes.set(purpose, decision);
                if let Some(masks) = chain.purposes.as_mut() {
                    masks.set(purpose, decision);
                }
            }
        }
        // The calls of a running chain were made before this decision: they no longer decide
        // these purposes, whenever they settle (and after a restart, through the snapshot).
        let general = match self.chain.as_mut() {
            Some(chain) => {
                chain
                    .done
                    .iter_mut()
                    .for_each(|job| job.superseded |= decided);
                if let Some((_, job)) = chain.in_flight.as_mut() {
                    job.superseded |= decided;
                }
                chain
                    .waiting
                    .iter_mut()
                    .for_each(|job| job.superseded |= decided);
                chain.touched &= !decided;
                chain.general.unwrap_or(chain.before_phase.decision())
            }
            None => self.phase.decision(),
        };
        self.recompute();
        // Durable before it is recorded, so the log never holds a choice a crash could lose.
        self.persist();
        let masks = self.purposes;
        self.record(now, RecordSource::Local, None, general, masks);
        self.drain_queue(now);
        Ok(())
    }

    fn response(&mut self, now: Timestamp, response: Response) -> Result<(), HandleError> {
        let job = match response.origin {
            Origin::SetConsent(request) => {
                let in_flight = self
                    .chain
                    .as_mut()
                    .and_then(|chain| match &chain.in_flight {
                        Some((id, _)) if *id == request => chain.in_flight.take(),
                        _ => None,
                    });
                match in_flight {
                    Some((_, job)) => Some(job),
                    None => return Err(HandleError::UnknownRequest(request)),
                }
            }
            Origin::Other => None,
        };
        self.expire(now);

        // The consent cookie is written first: it records the choice itself. The others wait
        // until the state this response leads to is known.
        let mut others = Vec::new();
        let mut usable = None;
        for cookie in response.cookies {
            if cookie.name == self.names.consent() {
                usable = self.write_consent_cookie(now, cookie, CookieWrite::Decided);
            } else {
                others.push(cookie);
            }
        }

        match job {
            Some(job) => {
                self.settle_call(now, job, response.outcome, usable);
                self.start_next(now);
            }
            None => {
                if self.chain.is_none() {
                    self.apply_cookie_state(now);
                }
            }
        }

        // A cookie this response wrote may be looser than a call still to settle asked for:
        // that call's wish goes back into the cookie.
        let unsettled: Vec<Option<Decision>> = self
            .chain
            .iter()
            .flat_map(|chain| {
                chain
                    .in_flight
                    .iter()
                    .map(|(_, job)| job)
                    .chain(chain.waiting.iter())
            })
            .map(|job| job.decision.general)
            .collect();
        for asked in unsettled {
            self.write_stricter_cookie(now, asked);
        }

        // Subscribers (and the action stream) hear the new state before any cookie it allows.
        self.notify();
        for cookie in others {
            self.offer_cookie(cookie);
        }
        self.persist();
        Ok(())
    }

    /// Removes the consent cookie once `now` is past its expiry: the default applies again (for
    /// a running chain, the default is what a failed chain falls back to).
    fn expire(&mut self, now: Timestamp) {
        let expired = self
            .decided_cookie
            .as_ref()
            .and_then(|c| c.expires)
            .is_some_and(|at| at <= now);
        if !expired {
            return;
        }
        // A provisional value a running chain wrote stays until the chain settles.
        if self.consent_cookie == self.decided_cookie {
            self.consent_cookie = None;
            self.actions.push_back(Action::RemoveCookie {
                name: self.names.consent().to_owned(),
            });
        }
        self.decided_cookie = None;
        let default = self.default_phase();
        match self.chain.as_mut() {
            Some(chain) => {
                chain.before_phase = default;
                chain.before_purposes = PurposeMasks::default();
                chain.expired = true;
                // What is persisted during a chain is the state before it: the default now.
                self.purposes = PurposeMasks::default();
                self.recompute();
            }
            None => {
                self.purposes = PurposeMasks::default();
                self.set_phase(self.config.default_consent.decision(), Source::Default);
                self.record_state(now, RecordSource::Expiry);
                self.drain_queue(now);
            }
        }
        self.persist();
    }

    // ----- the setConsent chain -----

    /// Sends the next waiting `setConsent`, skipping those the server already has; ends the chain
    /// when nothing is left.
    fn start_next(&mut self, now: Timestamp) {
        loop {
            let Some(chain) = self.chain.as_mut() else {
                return;
            };
            if chain.in_flight.is_some() {
                return;
            }
            let Some(job) = chain.waiting.pop_front() else {
                self.finish_chain(now);
                return;
            };
            // Skip only when the server provably has this consent: same fingerprint as the last
            // accepted call, and the consent cookie still exactly as that call left it.
            let unchanged = self.fingerprint.as_deref() == Some(&*job.fingerprint)
                && self.fingerprint_cookie.is_some()
                && self.decided_cookie.as_ref().map(|c| &c.value)
                    == self.fingerprint_cookie.as_ref();
            if unchanged {
                let cookie = self.cookie_general().flatten();
                let id = job.id;
                self.settle_accepted(job, cookie);
                self.actions.push_back(Action::SetConsentDone {
                    id,
                    outcome: SetConsentOutcome::Skipped,
                });
                continue;
            }
            let request = RequestId(self.next_request);
            self.next_request += 1;
            self.actions.push_back(Action::SendSetConsent {
                request,
                consent: job.consent.clone(),
                identity_map: job.identity_map.clone(),
                config_overrides: job.config_overrides.clone(),
            });
            chain.in_flight = Some((request, job));
            return;
        }
    }

    /// Takes the answer to the call in flight into the chain. `cookie` is the decision of the
    /// consent cookie the answer wrote, when it wrote a usable one.
    fn settle_call(
        &mut self,
        now: Timestamp,
        job: Job,
        outcome: Outcome,
        cookie: Option<Decision>,
    ) {
        let id = job.id;
        let outcome = match outcome {
            Outcome::Success => {
                self.fingerprint = Some(Arc::clone(&job.fingerprint));
                // The skip needs proof that the server has this consent: the usable cookie it
                // wrote. Without one (missing, refused, a removal) a repeat is sent again.
                self.fingerprint_cookie = cookie
                    .and(self.consent_cookie.as_ref())
                    .map(|c| c.value.clone());
                self.settle_accepted(job, cookie);
                if let Some(chain) = &self.chain {
                    let general = chain.general.unwrap_or(chain.before_phase.decision());
                    let purposes = chain.purposes();
                    let call = chain.last_call();
                    self.record(now, RecordSource::User, call.as_ref(), general, purposes);
                }
                SetConsentOutcome::Sent
            }
            Outcome::Failure => {
                // The server may have applied the call all the same (a lost answer, a timeout):
                // until a call is confirmed again, nothing proves what it has, so none is skipped.
                self.fingerprint_cookie = None;
                if let Some(chain) = self.chain.as_mut() {
                    // A failed call never loosens anything: the state is the stricter of what
                    // the server's cookie (or the calls settled before) left and what this call
                    // asked, so no earlier choice the person has since replaced applies.
                    let floor = cookie.or(chain.general);
                    let before = chain.before_phase.decision();
                    let reference = floor.unwrap_or(before);
                    let result = job
                        .decision
                        .general
                        .map_or(reference, |asked| reference.stricter(asked));
                    if floor.is_some() || result != before {
                        chain.general = Some(result);
                    }
                    let mut purposes = chain.purposes();
                    purposes.restrict(&job.decision, job.superseded);
                    chain.purposes = Some(purposes);
                    chain.source = if cookie.is_some() {
                        RecordSource::Server
                    } else {
                        RecordSource::Unconfirmed
                    };
                    chain.done.push(job);
                }
                SetConsentOutcome::Failed
            }
        };
        self.actions
            .push_back(Action::SetConsentDone { id, outcome });
    }

    /// An accepted (or skipped) call: the server's cookie decides `general` when it wrote a
    /// usable one, else the call's own decision does; its purposes apply.
    fn settle_accepted(&mut self, job: Job, cookie: Option<Decision>) {
        let Some(chain) = self.chain.as_mut() else {
            return;
        };
        if let Some(general) = cookie.or(job.decision.general) {
            chain.general = Some(general);
        }
        let mut purposes = chain.purposes();
        purposes.apply(&job.decision, job.superseded);
        chain.purposes = Some(purposes);
        chain.source = RecordSource::User;
        chain.done.push(job);
    }

    fn finish_chain(&mut self, now: Timestamp) {
        let Some(chain) = self.chain.take() else {
            return;
        };
        self.purposes = chain.purposes();
        match chain.general {
            Some(decision) => {
                // The consent cookie says what applies, as a decision (not a call's provisional
                // value), so that the next start agrees.
                let decided = self
                    .decided_cookie
                    .as_ref()
                    .and_then(|c| general_value(&c.value))
                    .and_then(Decision::from_wire);
                if decided != Some(decision) || self.consent_cookie != self.decided_cookie {
                    let cookie = Cookie::new(
                        self.names.consent(),
                        format!("general={decision}"),
                        Some(CONSENT_COOKIE_MAX_AGE),
                    );
                    self.write_consent_cookie(now, cookie, CookieWrite::Decided);
                }
                self.set_phase(decision, Source::New);
            }
            // No call decided general: the consent cookie does, if it has a usable value
            // (another response may have written one meanwhile); else the state from before.
            // A provisional value a call of the chain wrote goes back to the decided one.
            None => {
                let decided = self.decided_cookie.clone();
                if self.consent_cookie != decided {
                    match decided {
                        Some(decided) => {
                            // The decided cookie keeps its own expiry.
                            let max_age = decided
                                .expires
                                .map(|at| at.millis_since(now).div_ceil(1000));
                            let cookie = Cookie::new(self.names.consent(), decided.value, max_age);
                            self.write_consent_cookie(now, cookie, CookieWrite::Decided);
                        }
                        None => {
                            self.consent_cookie = None;
                            self.actions.push_back(Action::RemoveCookie {
                                name: self.names.consent().to_owned(),
                            });
                        }
                    }
                }
                match self.cookie_general() {
                    Some(Some(decision)) => self.set_phase(decision, Source::New),
                    _ => self.restore_phase(chain.before_phase),
                }
            }
        }
        // A state that is the default again because the cookie expired meanwhile is the expiry's.
        let source = if chain.general.is_none() && chain.expired {
            RecordSource::Expiry
        } else {
            chain.source
        };
        self.record_change(now, source, chain.last_call().as_ref());
        self.persist();
        self.notify();
        for cookie in chain.held {
            self.offer_cookie(cookie);
        }
        self.drain_queue(now);
    }

    /// Puts back the state from before a chain; a consent cookie with an unknown value is
    /// reported, never taken as "in".
    fn restore_phase(&mut self, before: Phase) {
        self.warn_if_unknown_cookie();
        self.phase = before;
        self.recompute();
    }

    /// Applies the consent cookie after a response to another request, when no `setConsent` is
    /// in progress (the Web SDK's `readCookieIfQueueEmpty`).
    fn apply_cookie_state(&mut self, now: Timestamp) {
        match self.cookie_general() {
            Some(Some(decision)) => {
                self.set_phase(decision, Source::New);
                self.record_change(now, RecordSource::Server, None);
                self.drain_queue(now);
            }
            Some(None) => self.warn_if_unknown_cookie(),
            None => {}
        }
    }

    /// `Some(Some(d))` for a known `general` value, `Some(None)` for an unknown one, `None`
    /// without a cookie or without `general`.
    #[allow(
        clippy::option_option,
        reason = "three distinct cases, named in the doc comment"
    )]
    fn cookie_general(&self) -> Option<Option<Decision>> {
        let cookie = self.consent_cookie.as_ref()?;
        general_value(&cookie.value).map(Decision::from_wire)
    }

    /// The Web SDK's warning for a consent value it does not know (silent for an empty one).
    fn warn_unknown(&mut self, value: &str) {
        if !value.is_empty() {
            self.log(LogLevel::Warn, format!("Unknown consent value: {value}"));
        }
    }

    /// Warns when the consent cookie's `general` is a value the engine does not know.
    fn warn_if_unknown_cookie(&mut self) {
        let unknown = self
            .consent_cookie
            .as_ref()
            .and_then(|c| general_value(&c.value))
            .filter(|v| Decision::from_wire(v).is_none())
            .map(str::to_owned);
        if let Some(value) = unknown {
            self.warn_unknown(&value);
        }
    }

    fn job_from_pending(&self, call: PendingCall) -> Job {
        let mut purposes = Vec::with_capacity(call.purposes.len());
        for (name, decision) in &call.purposes {
            if let Some(purpose) = self.purpose(name) {
                purposes.push((purpose, *decision));
            }
        }
        Job {
            id: call.id,
            fingerprint: Arc::new(ConsentFingerprint::of(
                &call.consent,
                call.identity_map.as_ref(),
            )),
            consent: call.consent,
            identity_map: call.identity_map,
            config_overrides: call.config_overrides,
            decision: ConsentDecision {
                general: call.general,
                purposes,
                all_purposes: call.all_purposes,
            },
            superseded: call
                .superseded
                .iter()
                .filter_map(|name| self.purpose(name))
                .fold(0, |mask, p| mask | p.bit()),
        }
    }

    fn pending_of(&self, job: &Job) -> PendingCall {
        PendingCall {
            id: job.id,
            consent: job.consent.clone(),
            identity_map: job.identity_map.clone(),
            config_overrides: job.config_overrides.clone(),
            general: job.decision.general,
            purposes: job
                .decision
                .purposes
                .iter()
                .filter_map(|(p, d)| Some((self.config.purposes.get(p.index())?.clone(), *d)))
                .collect(),
            all_purposes: job.decision.all_purposes,
            superseded: self.names_of(job.superseded),
        }
    }

    /// The names of the configured purposes in `mask`.
    fn names_of(&self, mask: u64) -> Vec<String> {
        self.config
            .purposes
            .iter()
            .enumerate()
            .filter(|(i, _)| Purpose::from_index(*i).is_some_and(|p| mask & p.bit() != 0))
            .map(|(_, name)| name.clone())
            .collect()
    }

    // ----- cookies -----

    /// Writes a consent cookie from a response (or the engine's own); returns its decision when
    /// it was written. A cookie that is not a usable consent is refused: it would replace a real
    /// choice with something the next start can only read as "use the default". So is a request
    /// to remove the consent cookie: only the engine removes it (expiry, start-up checks).
    fn write_consent_cookie(
        &mut self,
        now: Timestamp,
        cookie: Cookie,
        write: CookieWrite,
    ) -> Option<Decision> {
        if cookie.is_removal() {
            self.log(
                LogLevel::Warn,
                "Consent cookie removal ignored: the consent cookie records the choice itself.",
            );
            self.actions
                .push_back(Action::CookieRefused { name: cookie.name });
            return None;
        }
        let general = general_value(&cookie.value).map(str::to_owned);
        let decision = match general.as_deref().map(Decision::from_wire) {
            Some(Some(decision)) => decision,
            Some(None) => {
                self.warn_unknown(&general.unwrap_or_default());
                self.actions
                    .push_back(Action::CookieRefused { name: cookie.name });
                return None;
            }
            None => {
                self.log(
                    LogLevel::Warn,
                    "Consent cookie ignored: it has no general value.",
                );
                self.actions
                    .push_back(Action::CookieRefused { name: cookie.name });
                return None;
            }
        };
        let stored = StoredCookie {
            value: cookie.value.clone(),
            expires: cookie.max_age.map(|secs| now.plus_secs(secs)),
        };
        if write == CookieWrite::Decided {
            self.decided_cookie = Some(stored.clone());
        }
        self.consent_cookie = Some(stored);
        self.actions.push_back(Action::StoreCookie(cookie));
        Some(decision)
    }

    /// A cookie other than the consent cookie: written only when consent allows it now; while a
    /// `setConsent` chain runs it is held, and written or refused once the chain settles.
    fn offer_cookie(&mut self, cookie: Cookie) {
        if cookie.is_removal() {
            // Removing a cookie never collects anything.
            if cookie.name == self.names.identity() {
                self.identity_cookie = false;
            }
            self.actions
                .push_back(Action::RemoveCookie { name: cookie.name });
        } else if let Some(chain) = self.chain.as_mut() {
            chain.held.retain(|held| held.name != cookie.name);
            chain.held.push(cookie);
        } else if self.allows_cookies() {
            if cookie.name == self.names.identity() {
                self.identity_cookie = true;
            }
            self.actions.push_back(Action::StoreCookie(cookie));
        } else {
            self.actions
                .push_back(Action::CookieRefused { name: cookie.name });
        }
    }

    // ----- state -----

    /// The phase the configured default stands for.
    fn default_phase(&self) -> Phase {
        match self.config.default_consent {
            DefaultConsent::In => Phase::InDefault,
            DefaultConsent::Out => Phase::OutDefault,
            DefaultConsent::Pending => Phase::Pending,
        }
    }

    fn set_phase(&mut self, decision: Decision, source: Source) {
        let previous = self.phase;
        let (phase, message): (Phase, Option<(LogLevel, &'static str)>) = match (decision, source) {
            (Decision::In, Source::Default) => (Phase::InDefault, None),
            (Decision::In, Source::Initial) => (
                Phase::In,
                Some((
                    LogLevel::Info,
                    "Loaded user consent preferences. The user previously consented.",
                )),
            ),
            (Decision::In, Source::New) => (
                Phase::In,
                (previous != Phase::In).then_some((LogLevel::Info, "User consented.")),
            ),
            (Decision::Out, Source::Default) => (
                Phase::OutDefault,
                Some((
                    LogLevel::Warn,
                    "User consent preferences not found. Default consent of out will be used.",
                )),
            ),
            (Decision::Out, Source::Initial) => (
                Phase::Out,
                Some((
                    LogLevel::Warn,
                    "Loaded user consent preferences. The user previously declined consent.",
                )),
            ),
            (Decision::Out, Source::New) => (
                Phase::Out,
                (previous != Phase::Out).then_some((LogLevel::Warn, "User declined consent.")),
            ),
            (Decision::Pending, Source::Default) => (
                Phase::Pending,
                Some((
                    LogLevel::Info,
                    "User consent preferences not found. Default consent of pending will be used. Some commands may be delayed.",
                )),
            ),
            (Decision::Pending, _) => (Phase::Pending, None),
        };
        if let Some((level, message)) = message {
            self.log(level, message);
        }
        self.phase = phase;
        self.recompute();
    }

    /// Recomputes the effective masks that [`Engine::check`] reads.
    fn recompute(&mut self) {
        let undecided = !self.purposes.decided() & !Purpose::GENERAL.bit();
        let general = Purpose::GENERAL.bit();
        let (eff_in, mut eff_out) = match self.phase.decision() {
            Decision::In => (self.purposes.r#in | undecided | general, self.purposes.out),
            Decision::Out => (self.purposes.r#in, self.purposes.out | undecided | general),
            Decision::Pending => (self.purposes.r#in, self.purposes.out),
        };
        let mut explicit_out = self.purposes.out;
        // A purpose a running chain may change is not declined by the state from before it.
        if let Some(chain) = &self.chain {
            eff_out &= !chain.touched;
            explicit_out &= !chain.touched;
        }
        self.eff_in = eff_in;
        self.eff_out = eff_out;
        self.explicit_out = explicit_out;
        self.general_reason = if self.phase == Phase::OutDefault {
            RejectReason::NoPreferences
        } else {
            RejectReason::UserDeclined
        };
    }

    /// Releases and declines queued commands as the current state allows, oldest first. The
    /// state is persisted first, so no release happens under a state a crash could lose.
    fn drain_queue(&mut self, now: Timestamp) {
        self.persist();
        let mut keep = VecDeque::with_capacity(self.queue.len());
        while let Some(queued) = self.queue.pop_front() {
            match self.check(queued.requirement) {
                Verdict::Allowed => self.actions.push_back(Action::Release {
                    command: queued.id,
                    queued_for_ms: now.millis_since(queued.submitted),
                }),
                Verdict::Declined(reason) => self.actions.push_back(Action::Reject {
                    command: queued.id,
                    reason,
                }),
                Verdict::Pending => keep.push_back(queued),
            }
        }
        self.queue = keep;
    }

    fn named_purposes(&self, masks: &PurposeMasks) -> Vec<(String, Decision)> {
        self.config
            .purposes
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let decision = masks.get(Purpose::from_index(i)?)?;
                Some((name.clone(), decision))
            })
            .collect()
    }

    fn masks_from_names(&self, named: &[(String, Decision)]) -> PurposeMasks {
        let mut masks = PurposeMasks::default();
        for (name, decision) in named {
            if let Some(purpose) = self.purpose(name)
                && purpose != Purpose::GENERAL
            {
                masks.set(purpose, *decision);
            }
        }
        masks
    }

    /// Every configured purpose but `general`, pending.
    fn all_named_pending(&self) -> PurposeMasks {
        let mut masks = PurposeMasks::default();
        for i in 1..self.config.purposes.len() {
            if let Some(purpose) = Purpose::from_index(i) {
                masks.set(purpose, Decision::Pending);
            }
        }
        masks
    }

    fn log(&mut self, level: LogLevel, message: impl Into<Cow<'static, str>>) {
        self.actions.push_back(Action::Log {
            level,
            message: message.into(),
        });
    }

    /// Records the state as it is now.
    fn record_state(&mut self, now: Timestamp, source: RecordSource) {
        let (general, purposes) = (self.phase.decision(), self.purposes);
        self.record(now, source, None, general, purposes);
    }

    /// Records the state as it is now if it differs from what the last record stood for.
    fn record_change(
        &mut self,
        now: Timestamp,
        source: RecordSource,
        call: Option<&(Arc<ConsentFingerprint>, Option<Decision>)>,
    ) {
        let state = (self.phase.decision(), self.purposes);
        if self.last_recorded != Some(state) {
            self.record(now, source, call, state.0, state.1);
        }
    }

    fn record(
        &mut self,
        now: Timestamp,
        source: RecordSource,
        call: Option<&(Arc<ConsentFingerprint>, Option<Decision>)>,
        general: Decision,
        purposes: PurposeMasks,
    ) {
        let (standards, payload_hashes) = call.map_or_else(Default::default, |(fp, _)| {
            fp.objects
                .iter()
                .map(|o| (o.key.clone(), o.hash.clone()))
                .unzip()
        });
        let record = ConsentRecord {
            at: now,
            source,
            standards,
            payload_hashes,
            general,
            purposes: self.named_purposes(&purposes),
            requested: call.and_then(|(_, requested)| *requested),
        };
        self.last_recorded = Some((general, purposes));
        self.actions.push_back(Action::Record(record));
    }

    /// Whether the last persisted snapshot still says what the engine would persist now.
    fn persisted_is_current(&self) -> bool {
        let Some(last) = &self.last_persisted else {
            return false;
        };
        let calls_same = match &self.chain {
            Some(chain) => chain
                .calls()
                .map(|job| (job.id, job.superseded))
                .eq(last.calls.iter().copied()),
            None => last.calls.is_empty(),
        };
        calls_same
            && last.purposes == self.purposes
            && last.fingerprint == self.fingerprint
            && last.fingerprint_cookie == self.fingerprint_cookie
    }

    fn persist(&mut self) {
        if self.persisted_is_current() {
            return;
        }
        let (pending, calls) = match &self.chain {
            Some(chain) => (
                chain.calls().map(|job| self.pending_of(job)).collect(),
                chain.calls().map(|job| (job.id, job.superseded)).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        self.last_persisted = Some(Persisted {
            fingerprint: self.fingerprint.clone(),
            fingerprint_cookie: self.fingerprint_cookie.clone(),
            purposes: self.purposes,
            calls,
        });
        self.actions.push_back(Action::PersistState(Snapshot {
            fingerprint: self.fingerprint.as_deref().cloned(),
            fingerprint_cookie: self.fingerprint_cookie.clone(),
            purposes: self.named_purposes(&self.purposes),
            pending,
        }));
    }

    fn notify(&mut self) {
        if !self.started {
            return;
        }
        // Comparing the state the view is derived from keeps this off the allocation path for
        // the inputs that change nothing (most of them: every submitted command).
        let key = (self.phase, self.purposes);
        if self.last_notified != Some(key) {
            let before = self
                .last_notified
                .map(|(phase, purposes)| self.view_of(phase, &purposes));
            self.last_notified = Some(key);
            let view = self.consent();
            if before.as_ref() != Some(&view) {
                self.actions.push_back(Action::ConsentChanged(view));
            }
        }
    }
}
