//! Model-based property test: random sequences of start-ups over random jars, commands,
//! `setConsent` calls (valid or not, with id-level values), server answers, failures, restarts
//! that lose cookies or the state file, crashes between two actions of one input, other
//! defaults, and time up to and past the consent cookie's expiry. After every step the engine is
//! compared with the independent model in `model.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;

use consent_core::*;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::harness::{Answer, Harness, adobe1, iab};
use crate::model::{Call, Cause, ChainEvent, Model, ModelCookie, Record, StateFile, strictest};

/// Sequences per run; `PROPTEST_CASES` replaces it (proptest reads it over an explicit config).
const CASES: u32 = 3_000;

const DAY_MS: u64 = 86_400_000;

/// Consent cookie values a server may send or a jar may hold: usable, unknown, without
/// `general`, empty, and a duplicated key.
const CONSENT_VALUES: [&str; 7] = [
    "general=in",
    "general=out",
    "general=pending",
    "general=foo",
    "foo=out",
    "",
    "general=in; general=out",
];

/// Max-ages of consent cookies in answers: Edge's 180 days, ten minutes, and a removal.
const MAX_AGES: [u64; 3] = [CONSENT_COOKIE_MAX_AGE, 600, 0];

/// When the jar's consent cookie expires at the first start.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    Session,
    Past,
    Soon,
    Full,
}

#[derive(Debug, Clone)]
struct Setup {
    default: &'static str,
    consent: Option<(&'static str, Expiry)>,
    identity: bool,
    /// Commands submitted before `Start`: (purposes, fail-fast).
    early: Vec<(u8, bool)>,
}

#[derive(Debug, Clone)]
struct Restart {
    /// Another `defaultConsent`, or the same.
    default: Option<&'static str>,
    forget_identity: bool,
    forget_consent: bool,
    file: StateFile,
    /// The durable queue hands its commands back before `Start` (else after).
    queue_first: bool,
}

impl Restart {
    /// Whether the restart loses or changes anything the person's choices rest on.
    fn changes_anything(&self, default: &str) -> bool {
        self.default.is_some_and(|d| d != default)
            || self.forget_identity
            || self.forget_consent
            || self.file != StateFile::Kept
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        purposes: u8,
        fail_fast: bool,
    },
    SetConsent {
        objects: Vec<Value>,
        identity_map: Option<Value>,
    },
    /// The last valid `setConsent` again, as a person confirming the same choice would.
    SetConsentAgain,
    Answer(Answer),
    Interact {
        consent: Option<(&'static str, u64)>,
        /// Write (`Some(true)`) or remove (`Some(false)`) the identity cookie.
        identity: Option<bool>,
        failed: bool,
    },
    /// Decisions the app makes itself, by index into [`SET_PURPOSES`].
    SetPurposes(Vec<(usize, Decision)>),
    Restart(Restart),
    Advance(u64),
    /// To the consent cookie's expiry, plus this many milliseconds: the decided one (the
    /// engine's `poll_timeout`) or the one in the jar (perhaps a provisional value).
    AdvanceToExpiry {
        offset: i64,
        decided: bool,
    },
    Tick,
    /// The input of `op` is handled, but the process dies right after the driver carried out
    /// the `k`-th (modulo their number) of its writes to the jar or the state file; then a new
    /// engine starts over what they left.
    Crash {
        op: Box<Op>,
        k: usize,
        queue_first: bool,
    },
}

fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        Just(Decision::In),
        Just(Decision::Out),
        Just(Decision::Pending)
    ]
}

fn xdm_val() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just("y"),
        4 => Just("n"),
        1 => Just("p"),
        1 => Just("u"),
        1 => Just("dy"),
        1 => Just("LI"),
    ]
}

fn field() -> impl Strategy<Value = Option<Value>> {
    proptest::option::weighted(0.4, xdm_val().prop_map(|v| json!({"val": v})))
}

/// `marketing` with `any` and `email`, possibly neither.
fn marketing() -> impl Strategy<Value = Option<Value>> {
    proptest::option::weighted(0.3, (field(), field())).prop_map(|marketing| {
        marketing.map(|(any, email)| {
            let mut m = serde_json::Map::new();
            if let Some(any) = any {
                m.insert("any".into(), any);
            }
            if let Some(email) = email {
                m.insert("email".into(), email);
            }
            Value::Object(m)
        })
    })
}

/// The consent fields of one id in `idSpecific`: any of `collect`, `share`,
/// `personalize.content` and `marketing` (possibly none).
fn id_consents() -> impl Strategy<Value = Value> {
    (
        proptest::option::weighted(0.3, xdm_val()),
        field(),
        field(),
        marketing(),
    )
        .prop_map(|(collect, share, content, marketing)| {
            let mut value = serde_json::Map::new();
            if let Some(collect) = collect {
                value.insert("collect".into(), json!({"val": collect}));
            }
            if let Some(share) = share {
                value.insert("share".into(), share);
            }
            if let Some(content) = content {
                value.insert("personalize".into(), json!({"content": content}));
            }
            if let Some(marketing) = marketing {
                value.insert("marketing".into(), marketing);
            }
            Value::Object(value)
        })
}

/// `idSpecific`: one or two ids, in one or two namespaces.
fn id_specific() -> impl Strategy<Value = Value> {
    proptest::collection::vec(
        (
            prop_oneof![Just("email"), Just("ECID")],
            prop_oneof![Just("a@example.com"), Just("b@example.com")],
            id_consents(),
        ),
        1..=2,
    )
    .prop_map(|entries| {
        let mut namespaces = json!({});
        for (namespace, id, consents) in entries {
            namespaces[namespace][id] = consents;
        }
        namespaces
    })
}

/// Adobe 2.0 with any of `collect`, `share`, `personalize.content`, `adID`, `marketing`
/// (`any` and `email`, possibly neither) and `idSpecific`, never empty.
fn adobe2_object() -> impl Strategy<Value = Value> {
    (
        proptest::option::weighted(0.7, xdm_val()),
        field(),
        field(),
        proptest::option::weighted(0.1, xdm_val()),
        marketing(),
        proptest::option::weighted(0.25, id_specific()),
    )
        .prop_map(|(collect, share, content, ad_id, marketing, ids)| {
            let mut value = serde_json::Map::new();
            if let Some(share) = share {
                value.insert("share".into(), share);
            }
            if let Some(content) = content {
                value.insert("personalize".into(), json!({"content": content}));
            }
            if let Some(ad_id) = ad_id {
                value.insert("adID".into(), json!({"val": ad_id, "idType": "IDFA"}));
            }
            if let Some(marketing) = marketing {
                value.insert("marketing".into(), marketing);
            }
            if let Some(ids) = ids {
                value.insert("idSpecific".into(), ids);
            }
            if let Some(collect) = collect.or(value.is_empty().then_some("y")) {
                value.insert("collect".into(), json!({"val": collect}));
            }
            json!({"standard": "Adobe", "version": "2.0", "value": value})
        })
}

fn consent_object() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop_oneof![Just("in"), Just("out")].prop_map(adobe1),
        4 => adobe2_object(),
        2 => (
            prop_oneof![3 => Just("GRANTxyz"), 3 => Just("DENYxyz"), 1 => Just("BADxyz")],
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(tc, applies)| match applies {
                Some(applies) => iab(tc, applies),
                None => json!({"standard": "IAB TCF", "version": "2.0", "value": tc}),
            }),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => Just(Answer::Edge),
        2 => Just(Answer::NoCookie),
        2 => Just(Answer::Fail),
        1 => prop_oneof![Just("in"), Just("out"), Just("foo")].prop_map(Answer::FailWithCookie),
        3 => (proptest::sample::select(&CONSENT_VALUES[..]), proptest::sample::select(&MAX_AGES[..]))
            .prop_map(|(value, max_age)| Answer::EdgeWithConsent(value, max_age)),
    ]
}

fn default_consent() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("in"), Just("out"), Just("pending")]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        default_consent(),
        proptest::option::weighted(
            0.4,
            (
                proptest::sample::select(&CONSENT_VALUES[..]),
                prop_oneof![
                    Just(Expiry::Session),
                    Just(Expiry::Past),
                    Just(Expiry::Soon),
                    Just(Expiry::Full)
                ],
            ),
        ),
        any::<bool>(),
        proptest::collection::vec((0u8..16, proptest::bool::weighted(0.2)), 0..3),
    )
        .prop_map(|(default, consent, identity, early)| Setup {
            default,
            consent,
            identity,
            early,
        })
}

fn set_consent_op() -> impl Strategy<Value = Op> {
    (
        proptest::collection::vec(consent_object(), 1..=4),
        proptest::option::weighted(0.15, prop_oneof![Just("1234"), Just("5678")]),
    )
        .prop_map(|(objects, id)| Op::SetConsent {
            objects,
            identity_map: id.map(|id| json!({"ECID": [{"id": id}]})),
        })
}

fn interact_op() -> impl Strategy<Value = Op> {
    (
        proptest::option::of((
            proptest::sample::select(&CONSENT_VALUES[..]),
            proptest::sample::select(&MAX_AGES[..]),
        )),
        proptest::option::weighted(0.6, proptest::bool::weighted(0.8)),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(consent, identity, failed)| Op::Interact {
            consent,
            identity,
            failed,
        })
}

fn set_purposes_op() -> impl Strategy<Value = Op> {
    proptest::collection::vec((0..SET_PURPOSES.len(), decision()), 1..3).prop_map(Op::SetPurposes)
}

/// The inputs a crash may interrupt.
fn crash_op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![
            3 => set_consent_op(),
            1 => Just(Op::SetConsentAgain),
            3 => answer().prop_map(Op::Answer),
            1 => interact_op(),
            2 => set_purposes_op(),
            1 => Just(Op::Tick),
        ],
        0usize..8,
        any::<bool>(),
    )
        .prop_map(|(op, k, queue_first)| Op::Crash {
            op: Box::new(op),
            k,
            queue_first,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..16, proptest::bool::weighted(0.2))
            .prop_map(|(purposes, fail_fast)| Op::Submit { purposes, fail_fast }),
        3 => set_consent_op(),
        1 => Just(Op::SetConsentAgain),
        4 => answer().prop_map(Op::Answer),
        1 => interact_op(),
        1 => set_purposes_op(),
        1 => (
            proptest::option::weighted(0.3, default_consent()),
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.2),
            prop_oneof![
                6 => Just(StateFile::Kept),
                1 => Just(StateFile::Lost),
                1 => Just(StateFile::Reset)
            ],
            any::<bool>(),
        )
            .prop_map(|(default, forget_identity, forget_consent, file, queue_first)| {
                Op::Restart(Restart { default, forget_identity, forget_consent, file, queue_first })
            }),
        2 => prop_oneof![
            3 => 0u64..400_000,
            1 => (1u64..200).prop_map(|days| days * DAY_MS),
        ]
        .prop_map(Op::Advance),
        1 => ((-1i64..=1), any::<bool>())
            .prop_map(|(offset, decided)| Op::AdvanceToExpiry { offset, decided }),
        1 => Just(Op::Tick),
        1 => crash_op(),
    ]
}

/// The purposes `Op::SetPurposes` decides: the custom one and three well-known ones.
const SET_PURPOSES: [Option<Purpose>; 4] = [
    None,
    Some(Purpose::SHARE),
    Some(Purpose::MARKETING_EMAIL),
    Some(Purpose::PERSONALIZE_CONTENT),
];

fn config(default: &str) -> Config {
    Harness::config(default).purpose("analytics").unwrap()
}

fn wire(default: &str) -> Decision {
    default.parse::<DefaultConsent>().unwrap().decision()
}

/// Where each step's actions start.
struct Mark {
    trace: usize,
    released: usize,
    rejected: usize,
    records: usize,
}

/// The one input an op hands the engine, and what the model makes of it.
enum Step {
    SetConsent(Call),
    Answer { success: bool, cookies: Vec<Cookie> },
    Other(Vec<Cookie>),
    SetPurposes(Vec<(Purpose, Decision)>),
    Tick,
}

impl Step {
    fn feed(
        &self,
        model: &mut Model,
        now: u64,
        consent_name: &str,
        events: &mut VecDeque<ChainEvent>,
    ) {
        match self {
            Step::SetConsent(call) => model.set_consent(now, call.clone(), events),
            Step::Answer { success, cookies } => {
                model.answer(now, *success, cookies, consent_name, events);
            }
            Step::Other(cookies) => model.other_response(now, cookies, consent_name),
            Step::SetPurposes(decisions) => model.set_purposes(now, decisions),
            Step::Tick => model.tick(now),
        }
    }

    /// Whether the input is the person's newer word on `purpose` (`general` included).
    fn decides(&self, purpose: Purpose) -> bool {
        match self {
            Step::SetConsent(call) if purpose == Purpose::GENERAL => call.general.is_some(),
            Step::SetConsent(call) => call.all.is_some() || call.purposes.contains_key(&purpose),
            Step::SetPurposes(decisions) => decisions.iter().any(|(p, _)| *p == purpose),
            _ => false,
        }
    }
}

/// After a crash, until the state is decided anew: for `general` and each purpose the tests
/// use, the loosest decision the person's latest choices allow.
type Ceiling = BTreeMap<Purpose, Decision>;

fn ceiling_allows(ceiling: &Ceiling, purposes: &[Purpose]) -> bool {
    ceiling[&Purpose::GENERAL] == Decision::In
        && purposes.iter().all(|p| ceiling[p] == Decision::In)
}

/// Carries out one action as `Harness::drain` does.
fn carry_out(h: &mut Harness, action: Action) {
    h.trace.push(action.clone());
    let ended = |h: &Harness, command: CommandId| {
        h.released.contains(&command) || h.rejected.iter().any(|(c, _)| *c == command)
    };
    match action {
        Action::Release { command, .. } => {
            assert!(!ended(h, command), "{command:?} ended twice");
            h.released.push(command);
        }
        Action::Reject { command, reason } => {
            assert!(!ended(h, command), "{command:?} ended twice");
            h.rejected.push((command, reason));
        }
        Action::SendSetConsent {
            request,
            consent,
            identity_map,
            ..
        } => {
            h.sent.push((request, consent, identity_map));
            h.outstanding.push_back(request);
        }
        Action::SetConsentDone { id, outcome } => h.done.push((id, outcome)),
        Action::StoreCookie(cookie) => {
            if cookie.name != h.names.consent() {
                let reported = h.reported.clone().expect("a state was reported");
                h.other_cookie_writes.push((cookie.name.clone(), reported));
            }
            let expires = cookie.max_age.map(|s| h.now.plus_secs(s));
            h.jar.insert(cookie.name, (cookie.value, expires));
        }
        Action::RemoveCookie { name } => {
            h.jar.remove(&name);
        }
        Action::PersistState(snapshot) => h.snapshot = Some(snapshot),
        Action::Record(record) => h.records.push(record),
        Action::ConsentChanged(view) => {
            h.reported = Some(view.clone());
            h.changes.push(view);
        }
        Action::CookieRefused { name } => h.refused.push(name),
        Action::Log { level, message } => h.logs.push((level, message.into_owned())),
        other => panic!("unexpected action {other:?}"),
    }
}

fn events_of(actions: &[Action]) -> VecDeque<ChainEvent> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::SendSetConsent { .. } => Some(ChainEvent::Sent),
            Action::SetConsentDone { id, outcome } => Some(ChainEvent::Done(*id, *outcome)),
            _ => None,
        })
        .collect()
}

fn model_records(records: &[ConsentRecord]) -> Vec<Record> {
    records
        .iter()
        .map(|r| Record {
            source: r.source,
            general: r.general,
            purposes: r.purposes.clone(),
            requested: r.requested,
            standards: r.standards.clone(),
        })
        .collect()
}

struct Run {
    h: Harness,
    model: Model,
    analytics: Purpose,
    /// Every command: its requirement, the named purposes in it, and its mode.
    commands: BTreeMap<CommandId, (Requirement, Vec<Purpose>, Mode)>,
    next_call: u64,
    /// The body of the last valid `setConsent`.
    last_call: Option<(Vec<Value>, Option<Value>)>,
    /// The body of every valid `setConsent`, for the fingerprint a crash leaves in the state file.
    bodies: Vec<(Vec<Value>, Option<Value>)>,
    /// The engine's state the last time no chain ran, for the out-to-in rule.
    last_settled: Option<Decision>,
    /// After a crash, until the state is decided anew: what the person's latest choices allow.
    ceiling: Option<Ceiling>,
}

impl Run {
    fn new(setup: &Setup) -> Self {
        let config = config(setup.default);
        let analytics = Engine::new(config.clone()).purpose("analytics").unwrap();
        let mut run = Self {
            h: Harness::unstarted(config),
            model: Model::new(wire(setup.default), &[("analytics", analytics)]),
            analytics,
            commands: BTreeMap::new(),
            next_call: 1,
            last_call: None,
            bodies: Vec::new(),
            last_settled: None,
            ceiling: None,
        };
        let h = &mut run.h;
        let start = h.now;
        if let Some((value, expiry)) = setup.consent {
            let expires = match expiry {
                Expiry::Session => None,
                Expiry::Past => Some(Timestamp::from_millis(start.as_millis() - 1_000)),
                Expiry::Soon => Some(start.plus_secs(600)),
                Expiry::Full => Some(start.plus_secs(CONSENT_COOKIE_MAX_AGE)),
            };
            h.jar
                .insert(h.names.consent().to_owned(), (value.to_owned(), expires));
        }
        if setup.identity {
            h.jar
                .insert(h.names.identity().to_owned(), ("CiQ...".to_owned(), None));
        }
        let mark = run.mark();
        for &(purposes, fail_fast) in &setup.early {
            run.submit(purposes, fail_fast);
        }
        run.settle(VecDeque::new(), &setup.early, &mark);
        let mark = run.mark();
        let (jar, identity) = run.jar();
        run.h.start();
        let mut events = run.events(&mark);
        let now = run.h.now.as_millis();
        run.model.start(now, jar, identity, &mut events);
        run.settle(events, setup, &mark);
        run
    }

    fn mark(&self) -> Mark {
        Mark {
            trace: self.h.trace.len(),
            released: self.h.released.len(),
            rejected: self.h.rejected.len(),
            records: self.h.records.len(),
        }
    }

    /// The jar's consent cookie and whether it holds the identity cookie, as a start-up reads them.
    fn jar(&self) -> (Option<ModelCookie>, bool) {
        let h = &self.h;
        let consent = h
            .jar
            .get(h.names.consent())
            .map(|(value, expires)| ModelCookie {
                value: value.clone(),
                expires: expires.map(Timestamp::as_millis),
            });
        (consent, h.jar.contains_key(h.names.identity()))
    }

    /// The engine's choices about the chain in this step, for the model to follow and check.
    fn events(&self, mark: &Mark) -> VecDeque<ChainEvent> {
        events_of(&self.h.trace[mark.trace..])
    }

    /// The named purposes the tests' commands need.
    fn test_purposes(&self) -> [Purpose; 4] {
        [
            Purpose::SHARE,
            Purpose::PERSONALIZE_CONTENT,
            Purpose::MARKETING_EMAIL,
            self.analytics,
        ]
    }

    fn requirement(&self, bits: u8) -> (Requirement, Vec<Purpose>) {
        let named = self.test_purposes();
        let purposes: Vec<Purpose> = (0..4)
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| named[i])
            .collect();
        let requirement = purposes
            .iter()
            .fold(Requirement::general(), |r, p| r.and(*p));
        (requirement, purposes)
    }

    fn submit(&mut self, bits: u8, fail_fast: bool) {
        let (requirement, purposes) = self.requirement(bits);
        let mode = if fail_fast {
            Mode::FailFast
        } else {
            Mode::Queue
        };
        let id = self.h.submit_with(requirement, mode);
        self.commands.insert(id, (requirement, purposes, mode));
        self.model.submit(self.h.now.as_millis());
    }

    fn apply(&mut self, op: &Op) {
        if let Op::Crash {
            op: input,
            k,
            queue_first,
        } = op
        {
            self.crash(op, input, *k, *queue_first);
            return;
        }
        self.model.begin_step();
        let mark = self.mark();
        let redecided = self.model.redecided();
        let now = self.h.now.as_millis();
        let consent_name = self.h.names.consent().to_owned();
        let mut events = VecDeque::new();
        match op {
            Op::Submit {
                purposes,
                fail_fast,
            } => self.submit(*purposes, *fail_fast),
            Op::SetConsent {
                objects,
                identity_map,
            } => {
                events = self.set_consent(objects, identity_map.as_ref(), &mark);
            }
            Op::SetConsentAgain => {
                if let Some((objects, identity_map)) = self.last_call.clone() {
                    events = self.set_consent(&objects, identity_map.as_ref(), &mark);
                }
            }
            Op::Answer(_) | Op::Interact { .. } | Op::SetPurposes(_) | Op::Tick => {
                if let Some((input, step)) = self.prepare(op) {
                    if let (Step::SetPurposes(decisions), Some(ceiling)) =
                        (&step, &mut self.ceiling)
                    {
                        // The person's newer word on these purposes.
                        ceiling.extend(decisions.iter().copied());
                    }
                    self.h.handle(input);
                    events = self.events(&mark);
                    step.feed(&mut self.model, now, &consent_name, &mut events);
                }
            }
            Op::Restart(restart) => {
                if restart.changes_anything(self.h.config.default().as_str()) {
                    self.ceiling = None;
                }
                events = self.restart(restart, &mark);
            }
            Op::Advance(ms) => self.h.advance(*ms),
            Op::AdvanceToExpiry { offset, decided } => {
                let h = &mut self.h;
                let at = if *decided {
                    h.engine.poll_timeout()
                } else {
                    h.jar.get(h.names.consent()).and_then(|(_, at)| *at)
                };
                if let Some(at) = at {
                    let target = at.as_millis().saturating_add_signed(*offset);
                    if target > now {
                        h.now = Timestamp::from_millis(target);
                    }
                }
            }
            Op::Crash { .. } => unreachable!(),
        }
        self.settle(events, op, &mark);
        self.check_ceiling(op, &mark, redecided);
    }

    /// The input `op` hands the engine, with what the model makes of it: `None` when there is
    /// none (no request in flight, no earlier call, a call the engine refuses).
    fn prepare(&mut self, op: &Op) -> Option<(Input, Step)> {
        match op {
            Op::SetConsent {
                objects,
                identity_map,
            } => self.prepare_set_consent(objects, identity_map.as_ref()),
            Op::SetConsentAgain => {
                let (objects, identity_map) = self.last_call.clone()?;
                self.prepare_set_consent(&objects, identity_map.as_ref())
            }
            Op::Answer(answer) => {
                let request = self.h.outstanding.pop_front()?;
                let (outcome, cookies) = self.reply(request, *answer);
                let input = Input::Response(Response {
                    origin: Origin::SetConsent(request),
                    outcome,
                    cookies: cookies.clone(),
                });
                let success = outcome == Outcome::Success;
                Some((input, Step::Answer { success, cookies }))
            }
            Op::Interact {
                consent,
                identity,
                failed,
            } => {
                let h = &self.h;
                let mut cookies = Vec::new();
                if let Some((value, max_age)) = consent {
                    cookies.push(Cookie::new(h.names.consent(), *value, Some(*max_age)));
                }
                match identity {
                    Some(true) => cookies.extend(h.identity_cookies()),
                    Some(false) => cookies.push(Cookie::new(h.names.identity(), "", Some(0))),
                    None => {}
                }
                let outcome = if *failed {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                let input = Input::Response(Response {
                    origin: Origin::Other,
                    outcome,
                    cookies: cookies.clone(),
                });
                Some((input, Step::Other(cookies)))
            }
            Op::SetPurposes(choices) => {
                let decisions: Vec<(Purpose, Decision)> = choices
                    .iter()
                    .map(|&(i, d)| (SET_PURPOSES[i].unwrap_or(self.analytics), d))
                    .collect();
                Some((
                    Input::SetPurposes(decisions.clone()),
                    Step::SetPurposes(decisions),
                ))
            }
            Op::Tick => Some((Input::Tick, Step::Tick)),
            _ => None,
        }
    }

    /// A valid `setConsent` call: its input and the model's call. `None` for one the engine
    /// refuses (see [`Run::set_consent`]).
    fn prepare_set_consent(
        &mut self,
        objects: &[Value],
        identity_map: Option<&Value>,
    ) -> Option<(Input, Step)> {
        let id = SetConsentId(self.next_call);
        let call = Call::decode(id, objects, identity_map).ok()?;
        self.next_call += 1;
        let mut body = json!({ "consent": objects });
        if let Some(map) = identity_map {
            body["identityMap"] = map.clone();
        }
        let options = SetConsentOptions::from_json(&body).unwrap();
        self.last_call = Some((objects.to_vec(), identity_map.cloned()));
        self.bodies.push((objects.to_vec(), identity_map.cloned()));
        Some((Input::SetConsent { id, options }, Step::SetConsent(call)))
    }

    /// A `setConsent` straight into the engine, so that a refused one can be seen to change
    /// nothing.
    fn set_consent(
        &mut self,
        objects: &[Value],
        identity_map: Option<&Value>,
        mark: &Mark,
    ) -> VecDeque<ChainEvent> {
        let mut body = json!({ "consent": objects });
        if let Some(map) = identity_map {
            body["identityMap"] = map.clone();
        }
        let options = SetConsentOptions::from_json(&body).unwrap();
        let id = SetConsentId(self.next_call);
        self.next_call += 1;
        let h = &mut self.h;
        let now = h.now.as_millis();
        let (view, queued, chain) = (
            h.engine.consent(),
            h.engine.queued().collect::<Vec<_>>(),
            h.engine.is_setting_consent(),
        );
        let result = h.engine.handle(h.now, Input::SetConsent { id, options });
        match Call::decode(id, objects, identity_map) {
            Ok(call) => {
                result.unwrap();
                self.last_call = Some((objects.to_vec(), identity_map.cloned()));
                self.bodies.push((objects.to_vec(), identity_map.cloned()));
                h.drain();
                let mut events = self.events(mark);
                self.model.set_consent(now, call, &mut events);
                events
            }
            Err(_) => {
                assert!(
                    matches!(
                        result,
                        Err(HandleError::Payload(PayloadError::InvalidTcString { .. }))
                    ),
                    "an undecodable TC string gave {result:?}"
                );
                assert_eq!(
                    h.engine.poll_action(),
                    None,
                    "a refused call queued actions"
                );
                assert_eq!(h.engine.consent(), view);
                assert_eq!(h.engine.queued().collect::<Vec<_>>(), queued);
                assert_eq!(h.engine.is_setting_consent(), chain);
                VecDeque::new()
            }
        }
    }

    /// What the scripted server answers to `request`.
    fn reply(&self, request: RequestId, answer: Answer) -> (Outcome, Vec<Cookie>) {
        let h = &self.h;
        let consent = h.names.consent();
        match answer {
            Answer::Edge => {
                let (_, objects, _) = h.sent.iter().find(|(r, _, _)| *r == request).unwrap();
                (Outcome::Success, h.edge_cookies(objects))
            }
            Answer::NoCookie => (Outcome::Success, vec![]),
            Answer::Fail => (Outcome::Failure, vec![]),
            Answer::FailWithCookie(value) => (
                Outcome::Failure,
                vec![Cookie::new(
                    consent,
                    format!("general={value}"),
                    Some(CONSENT_COOKIE_MAX_AGE),
                )],
            ),
            Answer::EdgeWithConsent(value, max_age) => {
                let mut cookies = vec![Cookie::new(consent, value, Some(max_age))];
                cookies.extend(h.identity_cookies());
                (Outcome::Success, cookies)
            }
        }
    }

    /// A new engine with `config` over the jar and state file as they are; the durable queue
    /// hands back `queued`, before or after `Start`.
    fn relaunch(&mut self, config: Config, queued: &[CommandId], queue_first: bool) {
        let h = &mut self.h;
        h.engine = Engine::new(config.clone());
        h.config = config;
        h.outstanding.clear();
        h.reported = None;
        let resubmit = |h: &mut Harness| {
            for id in queued {
                h.submit_id(*id, self.commands[id].0, Mode::Queue);
            }
        };
        if queue_first {
            resubmit(h);
            h.start();
        } else {
            h.start();
            resubmit(h);
        }
    }

    /// A new engine over the jar and state file as `restart` leaves them; the durable queue
    /// hands back the commands that were still waiting.
    fn restart(&mut self, restart: &Restart, mark: &Mark) -> VecDeque<ChainEvent> {
        let h = &mut self.h;
        let queued: Vec<CommandId> = h.engine.queued().collect();
        if restart.forget_identity {
            let name = h.names.identity().to_owned();
            h.jar.remove(&name);
        }
        if restart.forget_consent {
            let name = h.names.consent().to_owned();
            h.jar.remove(&name);
        }
        match restart.file {
            StateFile::Kept => {}
            StateFile::Lost => h.snapshot = None,
            StateFile::Reset => h.snapshot = Some(Snapshot::default()),
        }
        let default = restart
            .default
            .unwrap_or_else(|| h.config.default().as_str());
        // What the start-up reads (it may write the consent cookie itself).
        let (jar, identity) = self.jar();
        self.relaunch(config(default), &queued, restart.queue_first);
        let mut events = self.events(mark);
        let now = self.h.now.as_millis();
        self.model
            .restart(now, wire(default), jar, identity, restart.file, &mut events);
        events
    }

    /// The input of `input` is handled, but the process dies right after the driver carried
    /// out the `k`-th of its writes to the jar or the state file (actions are carried out in
    /// order: nothing after it happened, releases before it did); a new engine starts over what
    /// they left, with the same configuration.
    ///
    /// The model follows the whole input, and checks what happened before the crash; then it
    /// starts again from the jar and state file as they are. Whatever the crash left, from the
    /// restart until the state is decided anew (a chain settles, a server's cookie applies, the
    /// cookie expires) nothing may be released, and no cookie but the consent cookie written,
    /// that the person's latest choices would not allow: for each purpose the stricter of the
    /// state before the input and after it, except where the input is itself the newer word.
    fn crash(&mut self, op: &Op, input: &Op, k: usize, queue_first: bool) {
        let h = &self.h;
        // An input past the expiry applies it first: that part is a Tick of its own, carried out
        // in full (a crash inside an expiry is the crash of a Tick).
        if !matches!(input, Op::Tick) && h.engine.poll_timeout().is_some_and(|at| at <= h.now) {
            self.apply(&Op::Tick);
        }
        // A call the engine refuses changes nothing: no crash to speak of.
        let refused = match input {
            Op::SetConsent {
                objects,
                identity_map,
            } => Call::decode(SetConsentId(0), objects, identity_map.as_ref()).is_err(),
            Op::SetConsentAgain => self.last_call.as_ref().is_some_and(|(objects, map)| {
                Call::decode(SetConsentId(0), objects, map.as_ref()).is_err()
            }),
            _ => false,
        };
        if refused {
            self.apply(input);
            return;
        }
        self.model.begin_step();
        let mark = self.mark();
        let redecided = self.model.redecided();
        let before = self.model.clone();
        let Some((input, step)) = self.prepare(input) else {
            self.settle(VecDeque::new(), op, &mark);
            self.check_ceiling(op, &mark, redecided);
            return;
        };
        let now = self.h.now;
        let consent_name = self.h.names.consent().to_owned();
        self.h.engine.handle(now, input).unwrap();
        let actions: Vec<Action> = std::iter::from_fn(|| self.h.engine.poll_action()).collect();
        let mut events = events_of(&actions);
        let mut after = self.model.clone();
        if let (Step::SetPurposes(decisions), Some(ceiling)) = (&step, &mut self.ceiling) {
            ceiling.extend(decisions.iter().copied());
        }
        step.feed(&mut after, now.as_millis(), &consent_name, &mut events);
        assert!(
            events.is_empty(),
            "after {op:?} the engine did {events:?}, which the model does not expect"
        );

        // The crash.
        let writes: Vec<usize> = actions
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                matches!(
                    a,
                    Action::StoreCookie(_) | Action::RemoveCookie { .. } | Action::PersistState(_)
                )
            })
            .map(|(i, _)| i)
            .collect();
        let cut = match writes.len() {
            0 => actions.len(),
            n => writes[k % n] + 1,
        };
        for action in &actions[..cut] {
            carry_out(&mut self.h, action.clone());
        }
        let input_redecided = after.redecided() != redecided;
        self.check_before_crash(op, &after, &mark, input_redecided);

        // What the person's latest choices allow from the restart on.
        let purposes = self.test_purposes();
        let (was, now_is) = (before.effective(&purposes), after.effective(&purposes));
        let ceiling: Ceiling = now_is
            .iter()
            .map(|(&p, &d)| {
                if input_redecided || step.decides(p) {
                    return (p, d);
                }
                let mut strict = strictest(was[&p], d);
                if let Some(ceiling) = &self.ceiling {
                    strict = strictest(strict, ceiling[&p]);
                }
                (p, strict)
            })
            .collect();

        // The restart: the durable queue still holds what was queued after the input and what
        // the input would have released or rejected after the crash.
        let mut queued: Vec<CommandId> = self.h.engine.queued().collect();
        queued.extend(actions[cut..].iter().filter_map(|a| match a {
            Action::Release { command, .. } | Action::Reject { command, .. } => Some(*command),
            _ => None,
        }));
        queued.sort();
        let mark = self.mark();
        let config = self.h.config.clone();
        let (jar, identity) = self.jar();
        let snapshot = self.h.snapshot.clone();
        self.relaunch(config, &queued, queue_first);
        let mut events = self.events(&mark);
        self.model = after;
        self.model.begin_step();
        let redecided = self.model.redecided();
        self.model.resync(
            now.as_millis(),
            jar,
            identity,
            snapshot.as_ref(),
            &self.bodies,
            &mut events,
        );
        self.ceiling = Some(ceiling);
        self.settle(events, op, &mark);
        self.check_ceiling(op, &mark, redecided);
    }

    /// What happened before a crash (releases, rejections, other cookies, records) is what the
    /// whole input, as the model follows it, allows; and it respects the ceiling of an earlier
    /// crash unless the input decided the state anew.
    fn check_before_crash(&self, op: &Op, after: &Model, mark: &Mark, redecided: bool) {
        let h = &self.h;
        let context = || format!("before the crash of {op:?}\nmodel after the input {after:?}");
        self.check_endings_and_writes(after, mark, &context);
        if let Some(ceiling) = self.ceiling.as_ref().filter(|_| !redecided) {
            for id in &h.released[mark.released..] {
                let (_, purposes, _) = &self.commands[id];
                assert!(
                    ceiling_allows(ceiling, purposes),
                    "{id:?} released against {ceiling:?} {}",
                    context()
                );
            }
        }
        let records = model_records(&h.records[mark.records..]);
        assert!(
            after.records().starts_with(&records),
            "records {records:?}, expected a beginning of {:?} {}",
            after.records(),
            context()
        );
    }

    /// Every release of the step is allowed by the person's latest choices (as they were after
    /// the expiry the input applied first, or after the input); every rejection is one the model
    /// gives ("pending" only to a fail-fast command that would wait, a decline for the model's
    /// reason); no cookie but the consent cookie is written unless the model says in and no chain
    /// runs.
    fn check_endings_and_writes(&self, m: &Model, mark: &Mark, context: &dyn Fn() -> String) {
        let h = &self.h;
        for id in &h.released[mark.released..] {
            let (_, purposes, _) = &self.commands[id];
            assert!(
                m.step_verdicts(purposes).contains(&Verdict::Allowed),
                "{id:?} released {}",
                context()
            );
        }
        for (id, reason) in &h.rejected[mark.rejected..] {
            let (_, purposes, mode) = &self.commands[id];
            if *reason == RejectReason::Pending {
                assert_eq!(*mode, Mode::FailFast, "{id:?} {}", context());
                assert_eq!(
                    m.verdict(purposes),
                    Verdict::Pending,
                    "{id:?} {}",
                    context()
                );
            } else {
                assert!(
                    m.step_verdicts(purposes)
                        .contains(&Verdict::Declined(*reason)),
                    "{id:?} {reason:?} {}",
                    context()
                );
            }
        }
        for action in &h.trace[mark.trace..] {
            if let Action::StoreCookie(cookie) = action
                && cookie.name != h.names.consent()
            {
                assert_eq!(
                    m.settled().map(|c| c.general),
                    Some(Decision::In),
                    "{} written {}",
                    cookie.name,
                    context()
                );
            }
        }
    }

    /// After a crash and until the state is decided anew, nothing released and no cookie but
    /// the consent cookie written in this step goes beyond what the person's latest choices
    /// allow. A step that decides the state anew ends the check.
    fn check_ceiling(&mut self, op: &Op, mark: &Mark, redecided: u64) {
        let Some(ceiling) = &self.ceiling else {
            return;
        };
        if self.model.redecided() != redecided {
            self.ceiling = None;
            return;
        }
        let h = &self.h;
        let context = || {
            format!(
                "after {op:?}, since a crash: {ceiling:?}\nmodel {:?}",
                self.model
            )
        };
        for id in &h.released[mark.released..] {
            let (_, purposes, _) = &self.commands[id];
            assert!(
                ceiling_allows(ceiling, purposes),
                "{id:?} released {}",
                context()
            );
        }
        for action in &h.trace[mark.trace..] {
            if let Action::StoreCookie(cookie) = action
                && cookie.name != h.names.consent()
            {
                assert_eq!(
                    ceiling[&Purpose::GENERAL],
                    Decision::In,
                    "{} written {}",
                    cookie.name,
                    context()
                );
            }
        }
    }

    /// After every step: the engine did nothing about the chain the model did not follow, and
    /// the two agree.
    fn settle(&mut self, events: VecDeque<ChainEvent>, op: &dyn Debug, mark: &Mark) {
        assert!(
            events.is_empty(),
            "after {op:?} the engine did {events:?}, which the model does not expect"
        );
        self.check_step(op, mark);
        if let Some(choice) = self.model.settled() {
            self.last_settled = Some(choice.general);
        }
    }

    fn check_step(&self, op: &dyn Debug, mark: &Mark) {
        let h = &self.h;
        let m = &self.model;
        let view = h.engine.consent();
        let settled = m.settled();
        let context = || format!("after {op:?}\nengine {view:?}\nmodel {m:?}");

        // A chain runs, and a call waits for its answer, exactly when the model says so.
        assert_eq!(h.engine.is_setting_consent(), m.in_chain(), "{}", context());
        assert_eq!(
            h.outstanding.len(),
            usize::from(m.awaiting_answer()),
            "{}",
            context()
        );

        // The state, whether the person set it, and the purposes with a decision of their own.
        match settled {
            Some(choice) => {
                assert_eq!(
                    (view.state, view.was_set),
                    (choice.general, choice.was_set),
                    "state {}",
                    context()
                );
                assert_eq!(view.purposes, m.purposes_view(), "purposes {}", context());
            }
            None => assert_eq!(view.state, Decision::Pending, "{}", context()),
        }

        // What may run now, for every requirement: exactly the model's answer (while a chain
        // runs nothing runs, and only a purpose out that no call of it may change declines).
        for bits in 0..16 {
            let (requirement, purposes) = self.requirement(bits);
            let verdict = h.engine.check(requirement);
            assert_eq!(verdict, m.verdict(&purposes), "{purposes:?} {}", context());
        }

        self.check_endings_and_writes(m, mark, &context);

        // The records of this step are the ones the model owes, in order.
        assert_eq!(
            model_records(&h.records[mark.records..]),
            m.records(),
            "records {}",
            context()
        );

        // The jar's consent cookie is the model's (an expired one may stay in the jar unread)
        // once the engine has read it, and the consent expires when the decided cookie does.
        let jar = h.jar.get(h.names.consent());
        match m.cookie() {
            _ if !m.started() => {}
            Some(cookie) => assert_eq!(
                jar.map(|(v, e)| (v.as_str(), e.map(Timestamp::as_millis))),
                Some((cookie.value.as_str(), cookie.expires)),
                "consent cookie {}",
                context()
            ),
            None => assert!(
                jar.is_none_or(|(_, e)| e.is_some_and(|at| at <= h.now)),
                "consent cookie {jar:?} {}",
                context()
            ),
        }
        if m.started() {
            assert_eq!(
                h.engine.poll_timeout().map(Timestamp::as_millis),
                m.decided().and_then(|c| c.expires),
                "poll_timeout {}",
                context()
            );
        }

        // Nothing waits that the model would release or decline.
        let queued: Vec<CommandId> = h.engine.queued().collect();
        for id in &queued {
            let (_, purposes, _) = &self.commands[id];
            assert_eq!(
                m.verdict(purposes),
                Verdict::Pending,
                "{id:?} still queued {}",
                context()
            );
        }

        // An "out" becomes "in" only through an accepted call, a server cookie, a stored cookie
        // at start-up, or the default (at start-up or expiry): never through a failed call.
        if let (Some(Decision::Out), Some(choice)) = (self.last_settled, settled)
            && choice.general == Decision::In
        {
            assert_ne!(choice.cause, Cause::Failed, "out became in {}", context());
        }

        // Every command is released, rejected or still queued: exactly one of them.
        for id in self.commands.keys() {
            let ended = h.released.iter().filter(|c| *c == id).count()
                + h.rejected.iter().filter(|(c, _)| c == id).count();
            let waiting = usize::from(queued.contains(id));
            assert_eq!(
                ended + waiting,
                1,
                "{id:?} ended {ended} times, queued {waiting}"
            );
        }

        // FIFO among commands with the same requirement.
        let mut last: HashMap<Requirement, CommandId> = HashMap::new();
        for id in &h.released {
            let slot = last.entry(self.commands[id].0).or_insert(*id);
            assert!(
                *slot <= *id,
                "released out of order: {slot:?} before {id:?}"
            );
            *slot = *id;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_model_after_every_step(
        setup in setup(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut run = Run::new(&setup);
        for op in &ops {
            run.apply(op);
        }
        // Same inputs, same effects.
        let mut replay = Run::new(&setup);
        for op in &ops {
            replay.apply(op);
        }
        prop_assert_eq!(&run.h.trace, &replay.h.trace);
    }
}
