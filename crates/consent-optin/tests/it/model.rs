//! Model-based property tests.
//!
//! `the_service_follows_the_model`: a random configuration (opt-in on or off, pre-approvals,
//! previous permissions valid or not, storage on or off, IAB, a cookie left by another
//! configuration) and a random sequence of every operation (approve / deny with and without
//! waiting, approve_all / deny_all, complete, on_complete, subscribe_permissions, unsubscribe,
//! fetch_permissions, fetch_permissions_with, wait_for, changes, apply_tcf, restart), checked after
//! every step against a plain model of the reference with this crate's fixes: the state, both
//! cookies, and what every subscriber, one-shot callback, future and watch received.
//!
//! `several_threads_see_one_order`: random completing operations on several threads at once, with
//! subscribers made before and (with `subscribe_permissions`) during the run; every subscriber must
//! have seen one and the same linearisation of the threads' operations, the late ones a suffix of
//! it after their first call, one call at a time.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::Poll;
use std::thread;

use consent_optin::{
    COOKIE_NAME, Category, Changes, FetchPermissions, MemoryStorage, OptIn, OptInConfig,
    OptInConfigBuilder, Permissions, PermissionsInput, Status, Subscription, WaitFor,
    iab_consent_hash,
};
use proptest::prelude::*;
use serde_json::Value;

use crate::support::{Tcf, decode, encode, optin, poll_once};

/// The eight built-ins and one custom category.
const SLOTS: usize = 9;
/// The custom category's slot.
const CHAT: usize = 8;
const CUSTOM_COOKIE: &str = "adobeujs-optin-custom";
/// A key no configuration here registers.
const FOREIGN_KEY: &str = "zzz";

type Values = [bool; SLOTS];
type Object = BTreeMap<String, Value>;

fn category(slot: usize) -> Category {
    Category::BUILTIN
        .get(slot)
        .cloned()
        .unwrap_or_else(|| Category::custom("chat"))
}

fn values(permissions: &Permissions) -> Values {
    let mut values = [false; SLOTS];
    assert_eq!(permissions.len(), SLOTS);
    for (slot, (_, approved)) in permissions.iter().enumerate() {
        values[slot] = approved;
    }
    values
}

// ----- the sequential model -----

#[derive(Clone, Debug)]
struct Setup {
    applies: bool,
    storage: bool,
    iab: bool,
    pre: Option<BTreeMap<usize, bool>>,
    previous: Option<BTreeMap<usize, bool>>,
    /// `previousPermissions` also holds a key this service does not know, which makes it invalid.
    previous_invalid: bool,
    /// A cookie another configuration left: these categories (`chat` there is a legacy key) and a
    /// key this one does not know.
    foreign_cookie: Option<BTreeMap<usize, bool>>,
}

fn setup() -> impl Strategy<Value = Setup> {
    let object = || {
        proptest::option::of(proptest::collection::btree_map(
            0..SLOTS,
            any::<bool>(),
            1..4,
        ))
    };
    (
        prop::bool::weighted(0.8),
        any::<bool>(),
        any::<bool>(),
        object(),
        object(),
        prop::bool::weighted(0.25),
        object(),
    )
        .prop_map(
            |(applies, storage, iab, pre, previous, previous_invalid, foreign_cookie)| Setup {
                applies,
                storage,
                iab,
                pre,
                previous,
                previous_invalid,
                foreign_cookie,
            },
        )
}

fn config(setup: &Setup, jar: &Arc<MemoryStorage>) -> OptInConfigBuilder {
    let entries = |object: &BTreeMap<usize, bool>| -> Vec<(String, bool)> {
        object
            .iter()
            .map(|(slot, approved)| (category(*slot).as_str().to_owned(), *approved))
            .collect()
    };
    let mut builder = OptInConfig::builder()
        .does_opt_in_apply(setup.applies)
        .custom_category("chat")
        .opt_in_storage(jar.clone())
        .is_opt_in_storage_enabled(setup.storage)
        .is_iab_context(setup.iab);
    if let Some(pre) = &setup.pre {
        builder = builder.pre_opt_in_approvals(PermissionsInput::Map(entries(pre)));
    }
    if let Some(previous) = &setup.previous {
        let mut entries = entries(previous);
        if setup.previous_invalid {
            entries.push((FOREIGN_KEY.to_owned(), true));
        }
        builder = builder.previous_permissions(PermissionsInput::Map(entries));
    }
    builder
}

#[derive(Clone, Debug)]
enum Op {
    Approve(Vec<usize>, bool),
    Deny(Vec<usize>, bool),
    ApproveAll,
    DenyAll,
    Complete,
    Subscribe,
    SubscribePermissions,
    Unsubscribe(usize),
    Fetch,
    FetchWith,
    WaitFor(usize),
    Watch,
    ApplyTcf(u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let slots = || proptest::collection::vec(0..SLOTS, 0..4);
    prop_oneof![
        4 => (slots(), any::<bool>()).prop_map(|(s, w)| Op::Approve(s, w)),
        4 => (slots(), any::<bool>()).prop_map(|(s, w)| Op::Deny(s, w)),
        1 => Just(Op::ApproveAll),
        1 => Just(Op::DenyAll),
        3 => Just(Op::Complete),
        2 => Just(Op::Subscribe),
        2 => Just(Op::SubscribePermissions),
        1 => any::<usize>().prop_map(Op::Unsubscribe),
        2 => Just(Op::Fetch),
        2 => Just(Op::FetchWith),
        2 => (0..SLOTS).prop_map(Op::WaitFor),
        1 => Just(Op::Watch),
        2 => (0..4u8).prop_map(Op::ApplyTcf),
        1 => Just(Op::Restart),
    ]
}

/// Four TC strings: 0 and 3 approve `aam` and `ecid`, 1 lacks the vendor, 2 lacks purpose 10.
fn tcf(id: u8) -> (Tcf, bool) {
    match id {
        0 => (Tcf::new("TC0", true, &[1, 10]), true),
        1 => (Tcf::new("TC1", false, &[1, 10]), false),
        2 => (Tcf::new("TC2", true, &[1]), false),
        _ => (Tcf::new("TC3", true, &[1, 2, 10]), true),
    }
}

/// The two cookies as the model expects them: `Object.assign` merges, the custom category kept
/// apart, foreign keys left alone.
#[derive(Clone, Debug, Default, PartialEq)]
struct Jar {
    main: Option<Object>,
    custom: Option<Object>,
}

impl Jar {
    fn write(&mut self, values: &Values) {
        let main = self.main.get_or_insert_with(Object::new);
        for (slot, approved) in values.iter().enumerate().take(CHAT) {
            main.insert(category(slot).as_str().to_owned(), Value::Bool(*approved));
        }
        main.remove("chat");
        self.custom
            .get_or_insert_with(Object::new)
            .insert("chat".to_owned(), Value::Bool(values[CHAT]));
    }

    /// What a new service reads: every category with a boolean, `chat` from its own cookie first.
    fn read(&self) -> Option<[Option<bool>; SLOTS]> {
        let mut slots = [None; SLOTS];
        for (object, range) in [(&self.main, 0..SLOTS), (&self.custom, CHAT..SLOTS)] {
            for slot in range {
                if let Some(Value::Bool(approved)) =
                    object.as_ref().and_then(|o| o.get(category(slot).as_str()))
                {
                    slots[slot] = Some(*approved);
                }
            }
        }
        slots.iter().any(Option::is_some).then_some(slots)
    }

    fn memoised(&self) -> Option<String> {
        match self.main.as_ref()?.get("iabConsentHash")? {
            Value::String(hash) => Some(hash.clone()),
            _ => None,
        }
    }

    /// The real jar's cookies, decoded.
    fn of(jar: &MemoryStorage) -> Jar {
        let object = |name: &str| -> Option<Object> {
            let raw = jar.cookie(name)?.value;
            Some(serde_json::from_str(&decode(&raw)).unwrap())
        };
        Jar {
            main: object(COOKIE_NAME),
            custom: object(CUSTOM_COOKIE),
        }
    }
}

type Sink = Arc<Mutex<Vec<Values>>>;

fn sink_subscriber(sink: &Sink) -> impl Fn(&Permissions) + Send + Sync + 'static {
    let sink = sink.clone();
    move |permissions| sink.lock().unwrap().push(values(permissions))
}

struct Model {
    setup: Setup,
    status: Status,
    committed: Values,
    staged: Values,
    last_tc: Option<String>,
    warnings: usize,
    /// Live subscribers: what each should have received, and what it received.
    subscribers: Vec<(Vec<Values>, Sink, Subscription)>,
    /// One-shot callbacks: what each should have received (at most one call), and what it received.
    one_shots: Vec<(Vec<Values>, Sink)>,
    /// Pending futures and what they must resolve to once a completion happened.
    fetches: Vec<(FetchPermissions, Option<Values>)>,
    waits: Vec<(WaitFor, usize, Option<bool>)>,
    /// Watches and the completion they have to return next.
    watches: Vec<(Changes, Option<Values>)>,
}

impl Model {
    fn start(setup: &Setup, jar: &Jar) -> Model {
        let overlay = |object: &BTreeMap<usize, bool>, denials_only: bool| {
            let mut slots = [None; SLOTS];
            for (slot, approved) in object {
                if !(denials_only && *approved) {
                    slots[*slot] = Some(*approved);
                }
            }
            slots
        };
        let pre = setup.pre.as_ref().map(|o| overlay(o, false));
        let previous = setup
            .previous
            .as_ref()
            .map(|o| overlay(o, setup.previous_invalid));
        let stored = setup.storage.then(|| jar.read()).flatten();
        let previous_valid = setup.previous.is_some() && !setup.previous_invalid;
        let mut values = [!setup.applies; SLOTS];
        if setup.applies {
            for layer in [pre, previous, stored].into_iter().flatten() {
                for (value, given) in values.iter_mut().zip(layer) {
                    if let Some(given) = given {
                        *value = given;
                    }
                }
            }
        }
        Model {
            setup: setup.clone(),
            status: if previous_valid || stored.is_some() {
                Status::Complete
            } else {
                Status::Pending
            },
            committed: values,
            staged: values,
            last_tc: None,
            warnings: usize::from(setup.previous.is_some() && setup.previous_invalid),
            subscribers: Vec::new(),
            one_shots: Vec::new(),
            fetches: Vec::new(),
            waits: Vec::new(),
            watches: Vec::new(),
        }
    }

    fn available_now(&self) -> bool {
        !self.setup.applies || self.status == Status::Complete || self.setup.pre.is_some()
    }

    fn commit(&mut self, jar: &mut Jar) {
        self.committed = self.staged;
        self.status = Status::Complete;
        if self.setup.storage {
            jar.write(&self.committed);
        }
        for (expected, _, _) in &mut self.subscribers {
            expected.push(self.committed);
        }
        for (expected, _) in &mut self.one_shots {
            if expected.is_empty() {
                expected.push(self.committed);
            }
        }
        for (_, answer) in &mut self.fetches {
            answer.get_or_insert(self.committed);
        }
        for (_, slot, answer) in &mut self.waits {
            answer.get_or_insert(self.committed[*slot]);
        }
        for (_, next) in &mut self.watches {
            *next = Some(self.committed);
        }
    }

    fn pre_approved(&self, slot: Option<usize>) -> bool {
        let Some(pre) = &self.setup.pre else {
            return false;
        };
        match slot {
            None => pre.values().all(|approved| *approved),
            Some(slot) => pre.get(&slot) == Some(&true),
        }
    }
}

fn new_service(setup: &Setup, jar: &Arc<MemoryStorage>) -> OptIn {
    optin(config(setup, jar))
}

fn run(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let jar = Arc::new(MemoryStorage::new());
    let mut model_jar = Jar::default();
    if let Some(foreign) = &setup.foreign_cookie {
        let mut object: Object = foreign
            .iter()
            .map(|(slot, approved)| (category(*slot).as_str().to_owned(), Value::Bool(*approved)))
            .collect();
        object.insert(FOREIGN_KEY.to_owned(), Value::Bool(true));
        jar.insert_raw(
            COOKIE_NAME,
            &encode(&serde_json::to_string(&object).unwrap()),
        );
        model_jar.main = Some(object);
    }
    let mut service = new_service(&setup, &jar);
    let mut model = Model::start(&setup, &model_jar);
    for op in ops {
        let approve = matches!(op, Op::Approve(..) | Op::ApproveAll);
        match op {
            Op::Approve(slots, wait) | Op::Deny(slots, wait) => {
                let categories: Vec<Category> = slots.iter().map(|s| category(*s)).collect();
                let result = if approve {
                    service.approve(&categories, wait).map(|_| ())
                } else {
                    service.deny(&categories, wait).map(|_| ())
                };
                prop_assert_eq!(result.is_err(), slots.is_empty());
                if !slots.is_empty() {
                    model.status = Status::Changed;
                    for slot in slots {
                        model.staged[slot] = approve;
                    }
                    if !wait {
                        model.commit(&mut model_jar);
                    }
                }
            }
            Op::ApproveAll | Op::DenyAll => {
                if approve {
                    service.approve_all();
                } else {
                    service.deny_all();
                }
                model.staged = [approve; SLOTS];
                model.commit(&mut model_jar);
            }
            Op::Complete => {
                service.complete();
                if model.status == Status::Changed {
                    model.commit(&mut model_jar);
                }
            }
            Op::Subscribe | Op::SubscribePermissions => {
                let sink = Sink::default();
                let (subscription, expected) = if matches!(op, Op::Subscribe) {
                    (service.on_complete(sink_subscriber(&sink)), Vec::new())
                } else {
                    let first = model.available_now().then_some(model.committed);
                    (
                        service.subscribe_permissions(sink_subscriber(&sink)),
                        first.into_iter().collect(),
                    )
                };
                model.subscribers.push((expected, sink, subscription));
            }
            Op::Unsubscribe(i) => {
                if !model.subscribers.is_empty() {
                    let i = i % model.subscribers.len();
                    // Dropping the subscription is the unsubscription under test.
                    drop(model.subscribers.remove(i));
                }
            }
            Op::Fetch => {
                let answer = model.available_now().then_some(model.committed);
                model.fetches.push((service.fetch_permissions(), answer));
            }
            Op::FetchWith => {
                let sink = Sink::default();
                let callback = sink_subscriber(&sink);
                service.fetch_permissions_with(move |p| callback(p));
                let expected = model.available_now().then_some(model.committed);
                model.one_shots.push((expected.into_iter().collect(), sink));
            }
            Op::WaitFor(slot) => {
                let current = model.committed[slot];
                let answer = (current || !model.setup.applies || model.status == Status::Complete)
                    .then_some(current);
                let future = service.wait_for(&category(slot)).unwrap();
                model.waits.push((future, slot, answer));
            }
            Op::Watch => model.watches.push((service.changes(), None)),
            Op::ApplyTcf(id) => {
                let (signal, approves) = tcf(id);
                let result = service.apply_tcf(&signal);
                if !(model.setup.iab && model.setup.applies) {
                    prop_assert!(result.is_err());
                } else {
                    let outcome = result.unwrap();
                    let hash = iab_consent_hash(&signal.tc_string);
                    let changed = model_jar.memoised().as_deref() != Some(hash.as_str());
                    let completed = model.last_tc.as_deref() != Some(signal.tc_string.as_str());
                    prop_assert_eq!(outcome.approved, approves);
                    prop_assert_eq!(&outcome.consent_hash, &hash);
                    prop_assert_eq!(outcome.has_consent_changed_since_last_cmp_pull, changed);
                    prop_assert_eq!(outcome.completed, completed);
                    if completed {
                        model.last_tc = Some(signal.tc_string.clone());
                        model.status = Status::Changed;
                        model.staged[0] = approves;
                        model.staged[4] = approves;
                        model.commit(&mut model_jar);
                    }
                    if changed {
                        model_jar
                            .main
                            .get_or_insert_with(Object::new)
                            .insert("iabConsentHash".to_owned(), Value::String(hash));
                    }
                }
            }
            Op::Restart => {
                model = Model::start(&setup, &model_jar);
                service = new_service(&setup, &jar);
            }
        }
        check(&service, &mut model, &jar, &model_jar)?;
    }
    Ok(())
}

fn check(
    service: &OptIn,
    model: &mut Model,
    jar: &MemoryStorage,
    model_jar: &Jar,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(service.status(), model.status);
    prop_assert_eq!(values(&service.permissions()), model.committed);
    prop_assert_eq!(service.is_approved(&[]), model.committed.iter().all(|v| *v));
    for slot in 0..SLOTS {
        prop_assert_eq!(
            service.is_approved(&[category(slot)]),
            model.committed[slot]
        );
        prop_assert_eq!(
            service.is_pre_approved(&[category(slot)]),
            model.pre_approved(Some(slot))
        );
    }
    prop_assert_eq!(service.is_pre_approved(&[]), model.pre_approved(None));
    prop_assert_eq!(&Jar::of(jar), model_jar);
    prop_assert_eq!(service.warnings().len(), model.warnings);
    for (expected, sink, _) in &model.subscribers {
        prop_assert_eq!(&*sink.lock().unwrap(), expected, "a subscriber");
    }
    for (expected, sink) in &model.one_shots {
        prop_assert_eq!(&*sink.lock().unwrap(), expected, "a one-shot callback");
    }
    let mut pending = Vec::new();
    for (mut future, answer) in std::mem::take(&mut model.fetches) {
        match (poll_once(&mut future), answer) {
            (Poll::Ready(p), Some(expected)) => prop_assert_eq!(values(&p), expected),
            (Poll::Pending, None) => pending.push((future, None)),
            (poll, answer) => {
                return Err(TestCaseError::fail(format!(
                    "fetch: got {:?}, model {answer:?}",
                    poll.map(|p| values(&p))
                )));
            }
        }
    }
    model.fetches = pending;
    let mut pending = Vec::new();
    for (mut future, slot, answer) in std::mem::take(&mut model.waits) {
        match (poll_once(&mut future), answer) {
            (Poll::Ready(approved), Some(expected)) => prop_assert_eq!(approved, expected),
            (Poll::Pending, None) => pending.push((future, slot, None)),
            (poll, answer) => {
                return Err(TestCaseError::fail(format!(
                    "wait_for({slot}): got {poll:?}, model {answer:?}"
                )));
            }
        }
    }
    model.waits = pending;
    for (changes, next) in &mut model.watches {
        prop_assert_eq!(changes.try_next().map(|p| values(&p)), next.take());
        prop_assert!(changes.try_next().is_none());
    }
    Ok(())
}

// ----- several threads -----

/// A completing operation: exactly one completion each.
#[derive(Clone, Debug)]
enum Step {
    Approve(Vec<usize>),
    Deny(Vec<usize>),
    ApproveAll,
    DenyAll,
}

fn step() -> impl Strategy<Value = Step> {
    let slots = || proptest::collection::vec(0..SLOTS, 1..4);
    prop_oneof![
        4 => slots().prop_map(Step::Approve),
        4 => slots().prop_map(Step::Deny),
        1 => Just(Step::ApproveAll),
        1 => Just(Step::DenyAll),
    ]
}

impl Step {
    fn apply_to(&self, mut values: Values) -> Values {
        match self {
            Step::Approve(slots) | Step::Deny(slots) => {
                for slot in slots {
                    values[*slot] = matches!(self, Step::Approve(_));
                }
            }
            Step::ApproveAll => values = [true; SLOTS],
            Step::DenyAll => values = [false; SLOTS],
        }
        values
    }

    fn run(&self, service: &OptIn) {
        let categories = |slots: &[usize]| -> Vec<Category> {
            slots.iter().map(|slot| category(*slot)).collect()
        };
        match self {
            Step::Approve(slots) => {
                service.approve(&categories(slots), false).unwrap();
            }
            Step::Deny(slots) => {
                service.deny(&categories(slots), false).unwrap();
            }
            Step::ApproveAll => {
                service.approve_all();
            }
            Step::DenyAll => {
                service.deny_all();
            }
        }
    }
}

/// Records what a subscriber receives and whether two calls ever overlapped.
#[derive(Clone, Default)]
struct Ordered {
    seen: Sink,
    busy: Arc<AtomicUsize>,
    overlapped: Arc<AtomicBool>,
}

impl Ordered {
    fn subscriber(&self) -> impl Fn(&Permissions) + Send + Sync + 'static {
        let this = self.clone();
        move |permissions| {
            if this.busy.fetch_add(1, Ordering::SeqCst) != 0 {
                this.overlapped.store(true, Ordering::SeqCst);
            }
            thread::yield_now();
            this.seen.lock().unwrap().push(values(permissions));
            this.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn seen(&self) -> Result<Vec<Values>, TestCaseError> {
        prop_assert!(
            !self.overlapped.load(Ordering::SeqCst),
            "a subscriber was called by two threads at once"
        );
        Ok(self.seen.lock().unwrap().clone())
    }
}

fn run_threads(
    applies: bool,
    storage: bool,
    threads: Vec<Vec<Step>>,
    subscribe_at: Vec<usize>,
) -> Result<(), TestCaseError> {
    let jar = Arc::new(MemoryStorage::new());
    let service = optin(
        OptInConfig::builder()
            .does_opt_in_apply(applies)
            .custom_category("chat")
            .opt_in_storage(jar.clone())
            .is_opt_in_storage_enabled(storage),
    );
    let initial = values(&service.permissions());
    let early = [Ordered::default(), Ordered::default()];
    let _early: Vec<Subscription> = early
        .iter()
        .map(|o| service.on_complete(o.subscriber()))
        .collect();
    let barrier = Barrier::new(threads.len());
    let late: Vec<(Ordered, Subscription)> = thread::scope(|scope| {
        let handles: Vec<_> = threads
            .iter()
            .zip(&subscribe_at)
            .map(|(steps, at)| {
                let (service, barrier) = (&service, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let mut late = None;
                    for (i, step) in steps.iter().enumerate() {
                        if i == at % steps.len() {
                            let ordered = Ordered::default();
                            let subscription = service.subscribe_permissions(ordered.subscriber());
                            late = Some((ordered, subscription));
                        }
                        step.run(service);
                    }
                    late
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|handle| handle.join().unwrap())
            .collect()
    });

    let events = early[0].seen()?;
    prop_assert_eq!(
        &early[1].seen()?,
        &events,
        "every subscriber sees one order"
    );
    prop_assert_eq!(events.len(), threads.iter().map(Vec::len).sum::<usize>());
    // The order is a linearisation: each event is the one before it with the next step of one of
    // the threads applied, every thread's steps in its own order, all of them in the end.
    let mut frontier: HashSet<Vec<usize>> = HashSet::from([vec![0; threads.len()]]);
    let mut before = initial;
    for (i, event) in events.iter().enumerate() {
        let mut next = HashSet::new();
        for done in &frontier {
            for (t, steps) in threads.iter().enumerate() {
                if steps
                    .get(done[t])
                    .is_some_and(|step| step.apply_to(before) == *event)
                {
                    let mut done = done.clone();
                    done[t] += 1;
                    next.insert(done);
                }
            }
        }
        prop_assert!(!next.is_empty(), "event {} is no thread's next step", i);
        frontier = next;
        before = *event;
    }
    prop_assert!(frontier.contains(&threads.iter().map(Vec::len).collect::<Vec<_>>()));
    prop_assert_eq!(values(&service.permissions()), before);
    if storage {
        let mut expected = Jar::default();
        expected.write(&before);
        prop_assert_eq!(Jar::of(&jar), expected);
    }
    // A subscriber that came during the run: its first call is the state after some number k of
    // events (none if that state was still pending), then exactly the events after it.
    for (ordered, _subscription) in &late {
        let seen = ordered.seen()?;
        let fits = (0..=events.len()).any(|k| {
            let state = if k == 0 { initial } else { events[k - 1] };
            let first = (k > 0 || !applies).then_some(state);
            let expected: Vec<Values> = first
                .into_iter()
                .chain(events[k..].iter().copied())
                .collect();
            seen == expected
        });
        prop_assert!(fits, "a late subscriber saw {:?} of {:?}", seen, events);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_service_follows_the_model(
        setup in setup(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        run(setup, ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn several_threads_see_one_order(
        applies in any::<bool>(),
        storage in any::<bool>(),
        threads in proptest::collection::vec(proptest::collection::vec(step(), 1..12), 2..4),
        subscribe_at in proptest::collection::vec(any::<usize>(), 3),
    ) {
        run_threads(applies, storage, threads, subscribe_at)?;
    }
}
