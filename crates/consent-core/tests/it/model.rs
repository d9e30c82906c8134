//! An independent reference model of the person's consent, for the property test.
//!
//! It is written from the specification (`docs/ARCHITECTURE.md`, "Where the engine deliberately
//! differs from the Web SDK"), not from the engine's code: it decodes the consent objects itself
//! and keeps, for `general` and every named purpose, the person's latest effective choice and where
//! it came from, the consent cookie (what the jar holds, and the value last decided, which may
//! differ while a chain runs: a call that asks for something stricter writes it at once as a
//! provisional value), the `setConsent` chain in flight, the consent records the engine owes and
//! what a restart finds on disk. The property test gives it every input it gives the engine and
//! compares the two after every step.
//!
//! Where the specification lets the engine choose, the model checks that the choice is allowed
//! instead of predicting it: the engine may always send a repeated call, and may skip it only
//! when the last accepted call was the same, the server wrote a usable consent cookie for it, no
//! call failed since, and the decided consent cookie still holds what that call left. The
//! engine's choice reaches the model as [`ChainEvent`]s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use consent_core::hash::ConsentFingerprint;
use consent_core::{
    CONSENT_COOKIE_MAX_AGE, Cookie, Decision, Purpose, RecordSource, RejectReason, SetConsentId,
    SetConsentOutcome, Snapshot, Verdict,
};
use serde_json::Value;

use Decision::{In, Out, Pending};

/// The named purposes every configuration has, with their XDM names.
const WELL_KNOWN: [(&str, Purpose); 12] = [
    ("share", Purpose::SHARE),
    ("personalize.content", Purpose::PERSONALIZE_CONTENT),
    ("adID", Purpose::AD_ID),
    ("marketing.any", Purpose::MARKETING_ANY),
    ("marketing.email", Purpose::MARKETING_EMAIL),
    ("marketing.push", Purpose::MARKETING_PUSH),
    ("marketing.sms", Purpose::MARKETING_SMS),
    ("marketing.whatsApp", Purpose::MARKETING_WHATSAPP),
    ("marketing.call", Purpose::MARKETING_CALL),
    ("marketing.fax", Purpose::MARKETING_FAX),
    (
        "marketing.commercialEmail",
        Purpose::MARKETING_COMMERCIAL_EMAIL,
    ),
    ("marketing.postalMail", Purpose::MARKETING_POSTAL_MAIL),
];

/// The channels `marketing.any` governs, by their field name in `marketing`.
const CHANNELS: [(&str, Purpose); 8] = [
    ("email", Purpose::MARKETING_EMAIL),
    ("push", Purpose::MARKETING_PUSH),
    ("sms", Purpose::MARKETING_SMS),
    ("whatsApp", Purpose::MARKETING_WHATSAPP),
    ("call", Purpose::MARKETING_CALL),
    ("fax", Purpose::MARKETING_FAX),
    ("commercialEmail", Purpose::MARKETING_COMMERCIAL_EMAIL),
    ("postalMail", Purpose::MARKETING_POSTAL_MAIL),
];

/// Explicit decisions for named purposes; a purpose without one follows `general`.
pub(crate) type Purposes = BTreeMap<Purpose, Decision>;

/// Out over pending over in.
pub(crate) fn strictest(a: Decision, b: Decision) -> Decision {
    match (a, b) {
        (Out, _) | (_, Out) => Out,
        (Pending, _) | (_, Pending) => Pending,
        (In, In) => In,
    }
}

fn stricter_of(current: Option<Decision>, d: Decision) -> Decision {
    current.map_or(d, |c| strictest(c, d))
}

/// What a command needing `general` and `required` may do under `choice` and `purposes`: an
/// explicit "out" or an "out" `general` declines it, and it runs only when all it needs is in.
fn verdict(choice: Choice, purposes: &Purposes, required: &[Purpose]) -> Verdict {
    if required.iter().any(|p| purposes.get(p) == Some(&Out)) {
        return Verdict::Declined(RejectReason::UserDeclined);
    }
    match choice.general {
        Out if choice.was_set => Verdict::Declined(RejectReason::UserDeclined),
        Out => Verdict::Declined(RejectReason::NoPreferences),
        In if required
            .iter()
            .all(|p| purposes.get(p).is_none_or(|d| *d == In)) =>
        {
            Verdict::Allowed
        }
        _ => Verdict::Pending,
    }
}

/// An XDM field `{val: …}`: `y` is in, `n` is out, every other value is pending.
fn xdm(field: &Value) -> Decision {
    match field["val"].as_str() {
        Some("y") => In,
        Some("n") => Out,
        _ => Pending,
    }
}

/// The `general` pair of a consent cookie: `None` without one, `Some(None)` when it is not a
/// decision. A repeated `general` takes the stricter value, and anything unknown wins.
#[allow(
    clippy::option_option,
    reason = "no pair, an unusable pair and a decision are three different cases"
)]
fn cookie_general(value: &str) -> Option<Option<Decision>> {
    let mut found = None;
    for pair in value.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, val) = pair.split_once('=').unwrap_or((pair, ""));
        if name.trim() != "general" {
            continue;
        }
        let decision = match val.trim() {
            "in" => Some(In),
            "out" => Some(Out),
            "pending" => Some(Pending),
            _ => None,
        };
        found = Some(match (found, decision) {
            (None, d) => d,
            (Some(Some(a)), Some(b)) => Some(strictest(a, b)),
            _ => None,
        });
    }
    found
}

/// A TC string the test decoder does not read: the engine must refuse the whole call.
#[derive(Debug)]
pub(crate) struct InvalidTcString;

/// One `setConsent` call as the model understands it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    id: SetConsentId,
    /// The body sent to the server: two calls with the same body are repeats of each other.
    body: (Vec<Value>, Option<Value>),
    pub(crate) general: Option<Decision>,
    /// The strictest `general` of the call's Adobe 1.0 objects, which speak for every purpose.
    pub(crate) all: Option<Decision>,
    /// Purposes some Adobe 2.0 object decides (a field of its own, or an id-level value that is
    /// not "y"), with the strictest decision any object gives them.
    pub(crate) purposes: Purposes,
    /// Purposes the app decided itself after the call was made: the call no longer decides them.
    superseded: BTreeSet<Purpose>,
}

impl Call {
    /// What the call decides: for `general` and for every purpose the strictest decision of the
    /// objects that speak of it, in any order (an Adobe 1.0 object speaks of every purpose).
    pub(crate) fn decode(
        id: SetConsentId,
        objects: &[Value],
        identity_map: Option<&Value>,
    ) -> Result<Self, InvalidTcString> {
        let mut general = None;
        let mut all = None;
        let mut named = Purposes::new();
        for object in objects {
            let value = &object["value"];
            let decided = match (object["standard"].as_str(), object["version"].as_str()) {
                (Some("Adobe"), Some("1.0")) => {
                    let g = if value["general"] == "in" { In } else { Out };
                    all = Some(stricter_of(all, g));
                    Some(g)
                }
                (Some("Adobe"), Some("2.0")) => {
                    let (g, own) = adobe2(value);
                    for (purpose, d) in own {
                        named.insert(purpose, stricter_of(named.get(&purpose).copied(), d));
                    }
                    g
                }
                _ => Some(iab(object)?),
            };
            if let Some(g) = decided {
                general = Some(stricter_of(general, g));
            }
        }
        let purposes = named
            .into_iter()
            .map(|(purpose, d)| (purpose, all.map_or(d, |a| strictest(a, d))))
            .collect();
        Ok(Self {
            id,
            body: (objects.to_vec(), identity_map.cloned()),
            general,
            all,
            purposes,
            superseded: BTreeSet::new(),
        })
    }

    /// `<standard>.<version>` of every object, as a record of the call names them.
    fn standards(&self) -> Vec<String> {
        self.body
            .0
            .iter()
            .map(|o| {
                let field = |name: &str| o[name].as_str().unwrap_or_default().to_owned();
                format!("{}.{}", field("standard"), field("version"))
            })
            .collect()
    }

    /// Whether the call may still change `purpose` (a named one).
    fn touches(&self, purpose: Purpose) -> bool {
        (self.all.is_some() || self.purposes.contains_key(&purpose))
            && !self.superseded.contains(&purpose)
    }
}

/// What an Adobe 2.0 value decides: `collect` for `general`, and its purposes. Id-level values
/// (`idSpecific`) cannot be told apart on one device, so one that is not "y" makes the whole
/// purpose (or `general`, for `collect`) at least that strict; an id-level "y" never loosens.
fn adobe2(value: &Value) -> (Option<Decision>, Purposes) {
    let mut general = value.get("collect").map(xdm);
    let mut purposes: Purposes = adobe2_purposes(value).into_iter().collect();
    let ids = value
        .get("idSpecific")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|namespaces| namespaces.values())
        .filter_map(Value::as_object)
        .flat_map(|ids| ids.values());
    for consents in ids {
        if let Some(d) = consents.get("collect").map(xdm).filter(|d| *d != In) {
            general = Some(stricter_of(general, d));
        }
        for (purpose, d) in adobe2_purposes(consents) {
            if d != In {
                purposes.insert(purpose, stricter_of(purposes.get(&purpose).copied(), d));
            }
        }
    }
    (general, purposes)
}

/// The purposes an Adobe 2.0 value decides, `marketing.any` applied to the channels: `n` makes
/// every channel out, `y` every channel in unless it says `n`, any other value pending for every
/// channel without a value of its own.
fn adobe2_purposes(value: &Value) -> Vec<(Purpose, Decision)> {
    let mut out = Vec::new();
    if let Some(share) = value.get("share") {
        out.push((Purpose::SHARE, xdm(share)));
    }
    if let Some(content) = value.get("personalize").and_then(|p| p.get("content")) {
        out.push((Purpose::PERSONALIZE_CONTENT, xdm(content)));
    }
    if let Some(ad_id) = value.get("adID") {
        out.push((Purpose::AD_ID, xdm(ad_id)));
    }
    if let Some(marketing) = value.get("marketing") {
        let any = marketing.get("any").map(xdm);
        if let Some(any) = any {
            out.push((Purpose::MARKETING_ANY, any));
        }
        for (name, purpose) in CHANNELS {
            let own = marketing.get(name).map(xdm);
            let channel = match (any, own) {
                (Some(Out), _) | (Some(In), Some(Out)) => Some(Out),
                (Some(In), _) => Some(In),
                (Some(Pending), own) => Some(own.unwrap_or(Pending)),
                (None, own) => own,
            };
            if let Some(d) = channel {
                out.push((purpose, d));
            }
        }
    }
    out
}

/// IAB TCF with the test decoder: in without GDPR, else `GRANT…` in and `DENY…` out; a missing
/// `gdprApplies` counts as true.
fn iab(object: &Value) -> Result<Decision, InvalidTcString> {
    if !object["gdprApplies"].as_bool().unwrap_or(true) {
        return Ok(In);
    }
    match object["value"].as_str() {
        Some(tc) if tc.starts_with("GRANT") => Ok(In),
        Some(tc) if tc.starts_with("DENY") => Ok(Out),
        _ => Err(InvalidTcString),
    }
}

/// Where the latest effective `general` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The configured default, at start-up or when a chain restores it.
    Default,
    /// The consent cookie found at start-up.
    Stored,
    /// An accepted (or skipped) `setConsent`: its usable cookie, else its own decision.
    Accepted,
    /// A usable consent cookie the server wrote on some response.
    Server,
    /// A failed `setConsent`: what it asked, where that was stricter than what applied.
    Failed,
    /// The consent cookie expired and the default applied again.
    Expiry,
}

/// The effective `general`, whether the person set it (rather than the default), and its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Choice {
    pub(crate) general: Decision,
    pub(crate) was_set: bool,
    pub(crate) cause: Cause,
}

impl Choice {
    fn user(general: Decision, cause: Cause) -> Self {
        Self {
            general,
            was_set: general != Pending,
            cause,
        }
    }

    fn unset(general: Decision, cause: Cause) -> Self {
        Self {
            general,
            was_set: false,
            cause,
        }
    }
}

/// What the engine did with the next call of a chain, or with an answer, read from its actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainEvent {
    /// A `SendSetConsent`.
    Sent,
    /// A `SetConsentDone`.
    Done(SetConsentId, SetConsentOutcome),
}

/// What happened to the state file before a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateFile {
    /// It holds the last persisted state.
    Kept,
    /// It is gone (or unreadable, and the driver says so).
    Lost,
    /// It was unreadable and the driver started a fresh one.
    Reset,
}

/// What a start-up reads besides the cookies.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// `None` without a state file: every named purpose is then unknown (pending).
    purposes: Option<Purposes>,
    proof: Option<Proof>,
    pending: Vec<Call>,
}

/// What allows a repeat of the last accepted call to be skipped: the call's body and the usable
/// consent cookie the server wrote for it.
#[derive(Debug, Clone, PartialEq)]
struct Proof {
    body: (Vec<Value>, Option<Value>),
    cookie: String,
}

/// A consent cookie: value and expiry (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelCookie {
    pub(crate) value: String,
    pub(crate) expires: Option<u64>,
}

impl ModelCookie {
    fn decision(&self) -> Option<Decision> {
        cookie_general(&self.value).flatten()
    }
}

/// A consent record the engine owes: how, what applied, what the call asked and its standards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) source: RecordSource,
    pub(crate) general: Decision,
    pub(crate) purposes: Vec<(String, Decision)>,
    pub(crate) requested: Option<Decision>,
    pub(crate) standards: Vec<String>,
}

#[derive(Debug, Clone)]
struct Chain {
    /// What applied before the chain (the default once the cookie expired meanwhile).
    before: Choice,
    before_purposes: Purposes,
    /// Every call, settled or not, oldest first: what a restart sends again.
    calls: Vec<Call>,
    /// The first call not yet sent or skipped.
    next: usize,
    /// Whether `calls[next - 1]` waits for its answer.
    in_flight: bool,
    /// `general` as the settled calls leave it; `None` while they leave it as it was.
    general: Option<Choice>,
    purposes: Option<Purposes>,
    /// How the state the chain leads to was decided: by the last call that settled.
    source: RecordSource,
    /// Whether the decided consent cookie expired while the chain ran.
    expired: bool,
}

impl Chain {
    fn new(before: Choice, before_purposes: Purposes, calls: Vec<Call>) -> Self {
        Self {
            before,
            before_purposes,
            calls,
            next: 0,
            in_flight: false,
            general: None,
            purposes: None,
            source: RecordSource::User,
            expired: false,
        }
    }

    /// `general` as the calls settled so far leave it.
    fn general_so_far(&self) -> Decision {
        self.general.unwrap_or(self.before).general
    }

    fn purposes_so_far(&self) -> Purposes {
        self.purposes
            .clone()
            .unwrap_or_else(|| self.before_purposes.clone())
    }

    /// The last call that settled (sent and answered, or skipped).
    fn last_settled(&self) -> Option<&Call> {
        let settled = self.next - usize::from(self.in_flight);
        settled.checked_sub(1).map(|i| &self.calls[i])
    }
}

/// The reference model.
#[derive(Clone)]
pub(crate) struct Model {
    default: Decision,
    named: Vec<(String, Purpose)>,
    started: bool,
    choice: Choice,
    purposes: Purposes,
    /// The consent cookie in the jar: the decided one, or a call's provisional value.
    cookie: Option<ModelCookie>,
    /// The consent cookie as last decided (the jar at start-up, a usable cookie in a response, a
    /// settled chain's outcome): its expiry is the consent's, and the skip compares its value.
    decided: Option<ModelCookie>,
    proof: Option<Proof>,
    chain: Option<Chain>,
    /// The settled states this step passed through: an input past the cookie's expiry first
    /// applies the default, which may release or decline commands before the input itself.
    passed: Vec<(Choice, Purposes)>,
    /// The records the engine owes for this step.
    records: Vec<Record>,
    /// What the last record stood for.
    last_recorded: Option<(Decision, Purposes)>,
    /// How often the state was decided anew (a chain settled, a server's cookie applied, the
    /// cookie expired): the property test's crash check ends there.
    redecided: u64,
}

/// Everything but the configuration, which a failure message does not need.
impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("started", &self.started)
            .field("choice", &self.choice)
            .field("purposes", &self.purposes_view())
            .field("cookie", &self.cookie)
            .field("decided", &self.decided)
            .field("proof", &self.proof)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// A model of an engine not started yet, with `default` and these custom purposes.
    pub(crate) fn new(default: Decision, custom: &[(&str, Purpose)]) -> Self {
        Self {
            default,
            named: WELL_KNOWN
                .iter()
                .chain(custom)
                .map(|(name, p)| ((*name).to_owned(), *p))
                .collect(),
            started: false,
            choice: Choice::unset(Pending, Cause::Default),
            purposes: Purposes::new(),
            cookie: None,
            decided: None,
            proof: None,
            chain: None,
            passed: Vec::new(),
            records: Vec::new(),
            last_recorded: None,
            redecided: 0,
        }
    }

    // ----- what the checks read -----

    /// The settled choice, or `None` while the engine has not started or a chain runs (then
    /// everything waits).
    pub(crate) fn settled(&self) -> Option<Choice> {
        (self.started && self.chain.is_none()).then_some(self.choice)
    }

    pub(crate) fn started(&self) -> bool {
        self.started
    }

    pub(crate) fn in_chain(&self) -> bool {
        self.chain.is_some()
    }

    pub(crate) fn awaiting_answer(&self) -> bool {
        self.chain.as_ref().is_some_and(|c| c.in_flight)
    }

    /// The consent cookie in the jar.
    pub(crate) fn cookie(&self) -> Option<&ModelCookie> {
        self.cookie.as_ref()
    }

    /// The decided consent cookie, whose expiry is the consent's.
    pub(crate) fn decided(&self) -> Option<&ModelCookie> {
        self.decided.as_ref()
    }

    pub(crate) fn redecided(&self) -> u64 {
        self.redecided
    }

    /// The records the engine owes for this step, in order.
    pub(crate) fn records(&self) -> &[Record] {
        &self.records
    }

    fn name_of(&self, purpose: Purpose) -> String {
        self.named
            .iter()
            .find(|(_, q)| *q == purpose)
            .map(|(n, _)| n.clone())
            .unwrap()
    }

    fn view_of(&self, purposes: &Purposes) -> Vec<(String, Decision)> {
        purposes
            .iter()
            .map(|(p, d)| (self.name_of(*p), *d))
            .collect()
    }

    /// The explicit purpose decisions by name, in the configuration's order.
    pub(crate) fn purposes_view(&self) -> Vec<(String, Decision)> {
        self.view_of(&self.purposes)
    }

    /// What a command needing `general` and `required` may do now. Before the start everything
    /// waits. While a chain runs nothing runs either, and a command is declined only for a
    /// purpose that is out and that no call of the chain may change any more.
    pub(crate) fn verdict(&self, required: &[Purpose]) -> Verdict {
        if !self.started {
            return Verdict::Pending;
        }
        match &self.chain {
            None => verdict(self.choice, &self.purposes, required),
            Some(chain) => {
                let fixed_out = |p: &Purpose| {
                    self.purposes.get(p) == Some(&Out) && !chain.calls.iter().any(|c| c.touches(*p))
                };
                if required.iter().any(fixed_out) {
                    Verdict::Declined(RejectReason::UserDeclined)
                } else {
                    Verdict::Pending
                }
            }
        }
    }

    /// For every purpose in `purposes` (and `general`), the decision that applies to it now: its
    /// own, else `general`'s; pending for everything while a chain runs or before the start.
    pub(crate) fn effective(&self, purposes: &[Purpose]) -> BTreeMap<Purpose, Decision> {
        let settled = self.settled();
        let general = settled.map_or(Pending, |c| c.general);
        std::iter::once(Purpose::GENERAL)
            .chain(purposes.iter().copied())
            .map(|p| {
                let own = if p == Purpose::GENERAL {
                    None
                } else {
                    settled.and(self.purposes.get(&p).copied())
                };
                (p, own.unwrap_or(general))
            })
            .collect()
    }

    /// What a command could be told at some point of this step (see [`Model::begin_step`]).
    pub(crate) fn step_verdicts(&self, required: &[Purpose]) -> Vec<Verdict> {
        self.passed
            .iter()
            .map(|(choice, purposes)| verdict(*choice, purposes, required))
            .chain([self.verdict(required)])
            .collect()
    }

    /// Forgets the states and records of the previous step.
    pub(crate) fn begin_step(&mut self) {
        self.passed.clear();
        self.records.clear();
    }

    fn checkpoint(&mut self) {
        if let Some(choice) = self.settled() {
            self.passed.push((choice, self.purposes.clone()));
        }
    }

    // ----- inputs -----

    /// The first start, with what the jar holds and no state file.
    pub(crate) fn start(
        &mut self,
        now: u64,
        jar: Option<ModelCookie>,
        identity: bool,
        events: &mut VecDeque<ChainEvent>,
    ) {
        self.start_with(now, jar, identity, Durable::default(), events);
    }

    /// A new engine (with `default`) over the same jar and the state file as `file` left it.
    pub(crate) fn restart(
        &mut self,
        now: u64,
        default: Decision,
        jar: Option<ModelCookie>,
        identity: bool,
        file: StateFile,
        events: &mut VecDeque<ChainEvent>,
    ) {
        // The engine persists every change before it acts on it, so the file holds the state
        // as it is now, the calls of an unsettled chain included (with what the app decided
        // after each was made).
        let durable = match file {
            StateFile::Kept => Durable {
                purposes: Some(self.purposes.clone()),
                proof: self.proof.clone(),
                pending: self
                    .chain
                    .as_ref()
                    .map(|c| c.calls.clone())
                    .unwrap_or_default(),
            },
            StateFile::Lost => Durable::default(),
            StateFile::Reset => Durable {
                purposes: Some(Purposes::new()),
                ..Durable::default()
            },
        };
        self.default = default;
        self.start_with(now, jar, identity, durable, events);
    }

    /// A new engine over the jar and the state file exactly as a crash left them: the model
    /// reads the snapshot the engine persisted (decoding the calls itself; `bodies` are the
    /// bodies of every call made, to find the one the fingerprint names).
    pub(crate) fn resync(
        &mut self,
        now: u64,
        jar: Option<ModelCookie>,
        identity: bool,
        snapshot: Option<&Snapshot>,
        bodies: &[(Vec<Value>, Option<Value>)],
        events: &mut VecDeque<ChainEvent>,
    ) {
        let durable = match snapshot {
            None => Durable::default(),
            Some(snapshot) => {
                let purpose = |name: &String| {
                    self.named
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, p)| *p)
                        .unwrap()
                };
                let proof = match (&snapshot.fingerprint, &snapshot.fingerprint_cookie) {
                    (Some(fingerprint), Some(cookie)) => bodies
                        .iter()
                        .find(|(objects, map)| {
                            ConsentFingerprint::of(objects, map.as_ref()) == *fingerprint
                        })
                        .map(|body| Proof {
                            body: body.clone(),
                            cookie: cookie.clone(),
                        }),
                    _ => None,
                };
                let pending = snapshot
                    .pending
                    .iter()
                    .map(|p| {
                        let mut call =
                            Call::decode(p.id, &p.consent, p.identity_map.as_ref()).unwrap();
                        call.superseded = p.superseded.iter().map(purpose).collect();
                        call
                    })
                    .collect();
                Durable {
                    purposes: Some(
                        snapshot
                            .purposes
                            .iter()
                            .map(|(n, d)| (purpose(n), *d))
                            .collect(),
                    ),
                    proof,
                    pending,
                }
            }
        };
        self.start_with(now, jar, identity, durable, events);
    }

    fn start_with(
        &mut self,
        now: u64,
        jar: Option<ModelCookie>,
        identity: bool,
        durable: Durable,
        events: &mut VecDeque<ChainEvent>,
    ) {
        self.started = true;
        // A new engine: nothing recorded yet.
        self.last_recorded = None;
        // The consent the purposes were decided under expired while the process was down: the
        // jar still holds the cookie of the last run, expired. (A cookie that had expired before
        // the last run started was never read by it, and says nothing about the purposes the
        // app decided since.)
        let expired = jar.as_ref().is_some_and(|c| {
            c.expires.is_some_and(|at| at <= now) && self.cookie.as_ref() == Some(c)
        });
        if expired {
            // The default applies again, as at a running engine's expiry.
            self.redecided += 1;
        }
        // An expired cookie is not read (it stays in the jar).
        self.cookie = jar.filter(|c| c.expires.is_none_or(|at| at > now));
        let known = self.cookie_decision();
        // Without both cookies the server may not have the last call any more.
        self.proof = durable.proof.filter(|_| identity && known.is_some());
        // Consent belongs to the identity: without the identity cookie a stored "in" is not
        // believed; an "out" or "pending" stands (no identity cookie is written while it holds).
        let decided = match known {
            Some(Out | Pending) => known,
            Some(In) if identity => known,
            _ => None,
        };
        if decided.is_none() && !identity {
            self.cookie = None;
        }
        self.decided = self.cookie.clone();
        match decided {
            Some(d) => {
                // Without the state file nobody knows which purposes were denied.
                self.purposes = durable
                    .purposes
                    .unwrap_or_else(|| self.named.iter().map(|(_, p)| (*p, Pending)).collect());
                self.choice = Choice::user(d, Cause::Stored);
                self.record_now(RecordSource::Restore);
            }
            None => {
                // What the app decided itself stays with the state file under the default too,
                // unless the consent it was decided under expired while the process was down
                // (a running engine's expiry clears the purposes as well).
                self.purposes = match durable.purposes {
                    Some(purposes) if !expired => purposes,
                    _ => Purposes::new(),
                };
                self.choice = Choice::unset(self.default, Cause::Default);
                self.record_now(RecordSource::Default);
            }
        }
        self.chain = None;
        if !durable.pending.is_empty() {
            let asked: Vec<Option<Decision>> = durable.pending.iter().map(|c| c.general).collect();
            self.chain = Some(Chain::new(
                self.choice,
                self.purposes.clone(),
                durable.pending,
            ));
            for general in asked {
                self.write_stricter(now, general);
            }
        }
        self.start_next(now, events);
    }

    /// A command: only the expiry matters to the model.
    pub(crate) fn submit(&mut self, now: u64) {
        if self.started {
            self.expire(now);
        }
    }

    pub(crate) fn tick(&mut self, now: u64) {
        self.expire(now);
    }

    /// A valid `setConsent`: it suspends everything until the chain settles, and a wish
    /// stricter than what the cookie says is written to it at once.
    pub(crate) fn set_consent(&mut self, now: u64, call: Call, events: &mut VecDeque<ChainEvent>) {
        self.expire(now);
        let asked = call.general;
        let (choice, purposes) = (self.choice, self.purposes.clone());
        self.chain
            .get_or_insert_with(|| Chain::new(choice, purposes, Vec::new()))
            .calls
            .push(call);
        self.write_stricter(now, asked);
        self.start_next(now, events);
    }

    /// The answer to the call in flight.
    pub(crate) fn answer(
        &mut self,
        now: u64,
        success: bool,
        cookies: &[Cookie],
        consent_name: &str,
        events: &mut VecDeque<ChainEvent>,
    ) {
        self.expire(now);
        let usable = self.take_cookies(now, cookies, consent_name);
        let chain = self.chain.as_mut().expect("an answer without a chain");
        assert!(chain.in_flight, "an answer with no call in flight");
        chain.in_flight = false;
        let call = chain.calls[chain.next - 1].clone();
        let outcome = if success {
            SetConsentOutcome::Sent
        } else {
            SetConsentOutcome::Failed
        };
        assert_eq!(
            events.pop_front(),
            Some(ChainEvent::Done(call.id, outcome)),
            "the answer to {:?}",
            call.id
        );
        if success {
            // Only the server's usable cookie proves what it has.
            self.proof = usable.and(self.decided.as_ref()).map(|c| Proof {
                body: call.body.clone(),
                cookie: c.value.clone(),
            });
            self.accept(&call, usable);
            let chain = self.chain.as_ref().unwrap();
            let record = Record {
                source: RecordSource::User,
                general: chain.general_so_far(),
                purposes: self.view_of(&chain.purposes_so_far()),
                requested: call.general,
                standards: call.standards(),
            };
            self.push_record(record, chain.general_so_far(), chain.purposes_so_far());
        } else {
            // The server may have applied it all the same: nothing proves what it has.
            self.proof = None;
            self.fail(&call, usable);
        }
        self.start_next(now, events);
        self.rewrite_unsettled(now);
    }

    /// A cookie a response wrote may be looser than what a call still to settle asked for:
    /// each such call's wish is written again.
    fn rewrite_unsettled(&mut self, now: u64) {
        let asked: Vec<Option<Decision>> = match &self.chain {
            Some(chain) => {
                let from = if chain.in_flight {
                    chain.next - 1
                } else {
                    chain.next
                };
                chain.calls[from..]
                    .iter()
                    .map(|call| call.general)
                    .collect()
            }
            None => Vec::new(),
        };
        for general in asked {
            self.write_stricter(now, general);
        }
    }

    /// A response to any other request: its usable consent cookie decides, unless a chain runs.
    pub(crate) fn other_response(&mut self, now: u64, cookies: &[Cookie], consent_name: &str) {
        self.expire(now);
        self.take_cookies(now, cookies, consent_name);
        self.rewrite_unsettled(now);
        if self.chain.is_none()
            && let Some(d) = self.cookie_decision()
        {
            if (self.choice.general, self.choice.was_set) != (d, d != Pending) {
                self.choice = Choice::user(d, Cause::Server);
                self.redecided += 1;
            }
            self.record_change(RecordSource::Server, None);
        }
    }

    /// The app decides named purposes itself; they apply at once, a chain builds on them, and
    /// no call of a running chain decides them any more. The record says what `general` the
    /// chain's settled calls leave.
    pub(crate) fn set_purposes(&mut self, now: u64, decisions: &[(Purpose, Decision)]) {
        self.expire(now);
        for &(p, d) in decisions {
            self.purposes.insert(p, d);
            if let Some(chain) = self.chain.as_mut() {
                chain.before_purposes.insert(p, d);
                if let Some(purposes) = chain.purposes.as_mut() {
                    purposes.insert(p, d);
                }
                for call in &mut chain.calls {
                    call.superseded.insert(p);
                }
            }
        }
        let general = match &self.chain {
            Some(chain) => chain.general_so_far(),
            None => self.choice.general,
        };
        let record = Record {
            source: RecordSource::Local,
            general,
            purposes: self.purposes_view(),
            requested: None,
            standards: Vec::new(),
        };
        self.push_record(record, general, self.purposes.clone());
    }

    // ----- rules -----

    /// The decision of the consent cookie in the jar.
    fn cookie_decision(&self) -> Option<Decision> {
        self.cookie.as_ref().and_then(ModelCookie::decision)
    }

    fn push_record(&mut self, record: Record, general: Decision, purposes: Purposes) {
        self.last_recorded = Some((general, purposes));
        self.records.push(record);
    }

    /// Records the settled state as it is now.
    fn record_now(&mut self, source: RecordSource) {
        let record = Record {
            source,
            general: self.choice.general,
            purposes: self.purposes_view(),
            requested: None,
            standards: Vec::new(),
        };
        self.push_record(record, self.choice.general, self.purposes.clone());
    }

    /// Records the settled state when it differs from what the last record stood for.
    fn record_change(&mut self, source: RecordSource, call: Option<&Call>) {
        let state = (self.choice.general, self.purposes.clone());
        if self.last_recorded.as_ref() != Some(&state) {
            let record = Record {
                source,
                general: state.0,
                purposes: self.purposes_view(),
                requested: call.and_then(|c| c.general),
                standards: call.map(Call::standards).unwrap_or_default(),
            };
            self.push_record(record, state.0, state.1);
        }
    }

    /// A call of a chain asks for something strictly stricter than the jar's consent cookie
    /// says (or, without a usable one, the state before the chain): it is written at once, as
    /// a provisional value that neither the skip nor the expiry reads.
    fn write_stricter(&mut self, now: u64, asked: Option<Decision>) {
        let Some(asked) = asked else {
            return;
        };
        let before = self.chain.as_ref().map_or(self.choice, |c| c.before);
        let current = self.cookie_decision().unwrap_or(before.general);
        if strictest(asked, current) != current {
            self.cookie = Some(ModelCookie {
                value: format!("general={}", asked.as_str()),
                expires: Some(now + CONSENT_COOKIE_MAX_AGE * 1000),
            });
        }
    }

    /// Writes the response's consent cookie when it is usable (a decision, not a removal): it
    /// is then the decided cookie. Returns its decision.
    fn take_cookies(
        &mut self,
        now: u64,
        cookies: &[Cookie],
        consent_name: &str,
    ) -> Option<Decision> {
        let mut usable = None;
        for cookie in cookies.iter().filter(|c| c.name == consent_name) {
            usable = None;
            if cookie.max_age == Some(0) {
                continue;
            }
            if let Some(Some(d)) = cookie_general(&cookie.value) {
                self.write_decided(ModelCookie {
                    value: cookie.value.clone(),
                    expires: cookie.max_age.map(|s| now + s * 1000),
                });
                usable = Some(d);
            }
        }
        usable
    }

    fn write_decided(&mut self, cookie: ModelCookie) {
        self.cookie = Some(cookie.clone());
        self.decided = Some(cookie);
    }

    /// Past the decided cookie's expiry the default applies again, to the person's purposes
    /// too; during a chain it is what a failed chain falls back to, and a provisional value in
    /// the jar stays until the chain settles.
    fn expire(&mut self, now: u64) {
        let expired = self
            .decided
            .as_ref()
            .and_then(|c| c.expires)
            .is_some_and(|at| at <= now);
        if !expired {
            return;
        }
        if self.cookie == self.decided {
            self.cookie = None;
        }
        self.decided = None;
        self.purposes.clear();
        self.redecided += 1;
        let default = Choice::unset(self.default, Cause::Expiry);
        match self.chain.as_mut() {
            Some(chain) => {
                chain.before = default;
                chain.before_purposes.clear();
                chain.expired = true;
            }
            None => {
                self.choice = default;
                self.record_now(RecordSource::Expiry);
                self.checkpoint();
            }
        }
    }

    /// Sends or skips the next call of the chain as the engine did, or ends the chain.
    fn start_next(&mut self, now: u64, events: &mut VecDeque<ChainEvent>) {
        loop {
            let Some(chain) = self.chain.as_mut() else {
                return;
            };
            if chain.in_flight {
                return;
            }
            let Some(call) = chain.calls.get(chain.next).cloned() else {
                self.finish(now);
                return;
            };
            chain.next += 1;
            match events.pop_front() {
                Some(ChainEvent::Sent) => {
                    chain.in_flight = true;
                    return;
                }
                Some(ChainEvent::Done(id, SetConsentOutcome::Skipped)) if id == call.id => {
                    let proven = self.proof.as_ref().is_some_and(|proof| {
                        proof.body == call.body
                            && Some(&proof.cookie) == self.decided.as_ref().map(|c| &c.value)
                    });
                    assert!(
                        proven,
                        "{:?} skipped, but the server may not have it: last accepted {:?}, decided cookie {:?}",
                        call.id, self.proof, self.decided
                    );
                    // A skipped call is accepted with the consent cookie the jar holds.
                    let cookie = self.cookie_decision();
                    self.accept(&call, cookie);
                }
                other => panic!("{:?} was neither sent nor skipped: {other:?}", call.id),
            }
        }
    }

    /// An accepted call: the server's usable cookie decides `general`, else the call's own
    /// decision, else it stays as it was; Adobe 1.0 clears the purposes, then the call's own
    /// apply; the purposes the app decided after the call was made stay as they are.
    fn accept(&mut self, call: &Call, cookie: Option<Decision>) {
        let chain = self.chain.as_mut().unwrap();
        if let Some(g) = cookie.or(call.general) {
            chain.general = Some(Choice::user(g, Cause::Accepted));
        }
        let mut purposes = chain.purposes_so_far();
        let kept: Purposes = purposes
            .iter()
            .filter(|(p, _)| call.superseded.contains(p))
            .map(|(p, d)| (*p, *d))
            .collect();
        if call.all.is_some() {
            purposes.clear();
        }
        purposes.extend(
            call.purposes
                .iter()
                .filter(|(p, _)| !call.superseded.contains(p))
                .map(|(p, d)| (*p, *d)),
        );
        purposes.extend(kept);
        chain.purposes = Some(purposes);
        chain.source = RecordSource::User;
    }

    /// A failed call never loosens anything: `general` becomes the stricter of what applied
    /// before it (the failed answer's usable cookie, else the chain so far, else the state before
    /// the chain) and what it asked; so does every purpose it still decides.
    fn fail(&mut self, call: &Call, cookie: Option<Decision>) {
        let chain = self.chain.as_mut().unwrap();
        let floor = cookie
            .map(|d| Choice::user(d, Cause::Server))
            .or(chain.general);
        let reference = floor.unwrap_or(chain.before);
        let result = call.general.map_or(reference.general, |asked| {
            strictest(reference.general, asked)
        });
        if floor.is_some() || result != chain.before.general {
            chain.general = Some(if result == reference.general {
                Choice::user(result, reference.cause)
            } else {
                Choice::user(result, Cause::Failed)
            });
        }
        let mut purposes = chain.purposes_so_far();
        for (p, asked) in &call.purposes {
            if *asked != In && !call.superseded.contains(p) {
                purposes.insert(*p, stricter_of(purposes.get(p).copied(), *asked));
            }
        }
        // Adobe 1.0 asked its `general` for every purpose, so every purpose that has a decision
        // of its own is at least that strict (the others follow `general`, which already is).
        if let Some(asked) = call.all.filter(|a| *a != In) {
            for (p, d) in &mut purposes {
                if !call.purposes.contains_key(p) && !call.superseded.contains(p) {
                    *d = strictest(*d, asked);
                }
            }
        }
        chain.purposes = Some(purposes);
        chain.source = if cookie.is_some() {
            RecordSource::Server
        } else {
            RecordSource::Unconfirmed
        };
    }

    /// The chain has settled: what its calls left applies, written to the consent cookie as a
    /// decision so that the next start agrees. A chain that decided nothing about `general`
    /// puts the decided cookie back in place of any provisional value and leaves `general` to
    /// it (another response may have written one), else to the state before it.
    fn finish(&mut self, now: u64) {
        let chain = self.chain.take().unwrap();
        self.redecided += 1;
        self.purposes = chain.purposes_so_far();
        self.choice = match chain.general {
            Some(choice) => {
                let decided = self.decided.as_ref().and_then(ModelCookie::decision);
                if decided != Some(choice.general) || self.cookie != self.decided {
                    self.write_decided(ModelCookie {
                        value: format!("general={}", choice.general.as_str()),
                        expires: Some(now + CONSENT_COOKIE_MAX_AGE * 1000),
                    });
                }
                choice
            }
            None => {
                if self.cookie != self.decided {
                    match self.decided.clone() {
                        // Written again with what is left of its lifetime, in whole seconds.
                        Some(decided) if decided.decision().is_some() => {
                            let expires = decided
                                .expires
                                .map(|at| now + (at - now).div_ceil(1000) * 1000);
                            self.write_decided(ModelCookie {
                                value: decided.value,
                                expires,
                            });
                        }
                        Some(_) => {}
                        None => self.cookie = None,
                    }
                }
                match self.cookie_decision() {
                    Some(d)
                        if (d, d != Pending) == (chain.before.general, chain.before.was_set) =>
                    {
                        chain.before
                    }
                    Some(d) => Choice::user(d, Cause::Server),
                    None => chain.before,
                }
            }
        };
        // A chain that left `general` to the default because the cookie expired meanwhile is
        // the expiry's.
        let source = if chain.general.is_none() && chain.expired {
            RecordSource::Expiry
        } else {
            chain.source
        };
        self.record_change(source, chain.last_settled());
    }
}
