//! Subscriptions, futures and the watch: panics, re-entrancy, threads and failed writes.

use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use consent_optin::{Category, MemoryStorage, OptIn, StorageError, Warning};

use crate::support::{
    Counter, Recorder, applies, approved, block_on, cookie_json, optin, poll_once, stored,
};

#[test]
fn a_panicking_subscriber_stops_neither_the_others_nor_the_cookie_write() {
    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(stored(&jar));
    let before = Recorder::default();
    let after = Recorder::default();
    let _before = before.subscribe(&optin);
    let _panics = optin.on_complete(|_| panic!("subscriber failure"));
    let _after = after.subscribe(&optin);
    let one_shot = Counter::default();
    let hit = one_shot.clone();
    optin.fetch_permissions_with(move |_| hit.hit());

    optin.approve(&[Category::Analytics], false).unwrap();
    assert_eq!((before.count(), after.count(), one_shot.get()), (1, 1, 1));
    assert_eq!(jar.writes(), 1);
    assert!(cookie_json(&jar).unwrap().contains(r#""aa":true"#));
    assert_eq!(
        optin.warnings(),
        [Warning::SubscriberPanicked {
            message: "subscriber failure".into()
        }]
    );
    // The service goes on working.
    optin.deny_all();
    assert_eq!(after.count(), 2);
}

#[test]
fn a_failed_cookie_write_is_a_warning_not_an_error() {
    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(stored(&jar));
    jar.fail_writes(true);
    optin.approve_all();
    assert!(optin.is_approved(&[]));
    assert_eq!(
        optin.warnings(),
        [Warning::StorageWriteFailed(StorageError::Backend(
            "injected write failure".into()
        ))]
    );
    jar.fail_writes(false);
    optin.deny_all();
    assert_eq!(jar.writes(), 1);
}

#[test]
fn subscribers_may_call_back_into_the_service() {
    let optin = optin(applies());
    let order = Arc::new(Mutex::new(Vec::new()));
    let inner = optin.clone();
    let log = order.clone();
    let _chain = optin.on_complete(move |p| {
        log.lock().unwrap().push(approved(p));
        // A re-entrant completion is delivered after this one, not inside it.
        if p.get(&Category::Target) == Some(false) {
            inner.approve(&[Category::Target], false).unwrap();
            assert!(inner.is_approved(&[Category::Target]));
        }
    });
    optin.approve(&[Category::Analytics], false).unwrap();
    assert_eq!(
        *order.lock().unwrap(),
        [
            vec!["aa".to_owned()],
            vec!["aa".to_owned(), "target".to_owned()]
        ]
    );
    // A subscriber can also drop subscriptions and subscribe others while being called.
    let slot: Arc<Mutex<Option<consent_optin::Subscription>>> = Arc::default();
    let keep = slot.clone();
    let handle = optin.clone();
    *slot.lock().unwrap() = Some(optin.on_complete(move |_| {
        keep.lock().unwrap().take();
        handle.on_complete(|_| {}).detach();
    }));
    optin.deny_all();
    assert!(slot.lock().unwrap().is_none());
}

#[test]
fn fetch_permissions_resolves_across_threads() {
    let optin = optin(applies());
    let future = optin.fetch_permissions();
    let other = optin.clone();
    let approver = thread::spawn(move || {
        other.approve(&[Category::Campaign], false).unwrap();
    });
    assert_eq!(approved(&block_on(future)), ["campaign"]);
    approver.join().unwrap();
}

#[test]
fn the_watch_yields_the_latest_completion() {
    let optin = optin(applies());
    let mut changes = optin.changes();
    let mut next = Box::pin(changes.changed());
    assert!(poll_once(&mut next).is_pending());
    optin.approve(&[Category::Aam], false).unwrap();
    assert_eq!(approved(&block_on(next)), ["aam"]);

    // Two completions before anyone looks: a watch gives the latest one.
    optin.approve(&[Category::Ecid], false).unwrap();
    optin.deny(&[Category::Aam], false).unwrap();
    assert_eq!(approved(&block_on(changes.changed())), ["ecid"]);
    assert!(changes.try_next().is_none());

    let waiter = {
        let optin = optin.clone();
        thread::spawn(move || {
            let mut changes = optin.changes();
            block_on(changes.changed())
        })
    };
    // The spawned thread may subscribe after this completion, so keep completing until it is done.
    while !waiter.is_finished() {
        optin.approve_all();
        thread::yield_now();
    }
    assert!(waiter.join().unwrap().is_approved(&[]));
}

#[test]
fn concurrent_completions_deliver_every_event_in_a_consistent_order() {
    // Four threads, each flipping a category of its own 50 times (approve, deny, approve, …):
    // every completion changes exactly one category, so two completions delivered out of order,
    // one lost or one delivered twice show as a step that changes none or two.
    let optin = optin(applies());
    let first = Recorder::default();
    let second = Recorder::default();
    let _first = first.subscribe(&optin);
    let _second = second.subscribe(&optin);
    let threads = 4;
    let per_thread = 50;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let optin: OptIn = optin.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let category = std::slice::from_ref(&Category::BUILTIN[t]);
                for i in 0..per_thread {
                    if i % 2 == 0 {
                        optin.approve(category, false).unwrap();
                    } else {
                        optin.deny(category, false).unwrap();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let events = first.events();
    assert_eq!(
        events.len(),
        threads * per_thread,
        "one event per completion"
    );
    assert_eq!(
        events,
        second.events(),
        "every subscriber sees the same order"
    );
    let mut before = vec![false; 8];
    let mut flips = [0; 8];
    for (i, event) in events.iter().enumerate() {
        let now: Vec<bool> = Category::BUILTIN
            .iter()
            .map(|c| event.get(c) == Some(true))
            .collect();
        let changed: Vec<usize> = (0..8).filter(|c| now[*c] != before[*c]).collect();
        assert_eq!(changed.len(), 1, "event {i} changes {changed:?}");
        flips[changed[0]] += 1;
        before = now;
    }
    assert_eq!(flips, [50, 50, 50, 50, 0, 0, 0, 0]);
    assert_eq!(
        events.last(),
        Some(&optin.permissions()),
        "the last event is the final state"
    );
}

#[test]
fn wait_for_answers_at_once_when_already_decided() {
    let optin = optin(applies().pre_opt_in_approvals(
        consent_optin::PermissionsInput::from_categories([(Category::Analytics, true)]),
    ));
    assert!(block_on(optin.wait_for(&Category::Analytics).unwrap()));
    let mut target = optin.wait_for(&Category::Target).unwrap();
    assert!(poll_once(&mut target).is_pending());
    optin.deny(&[Category::Target], true).unwrap();
    assert!(
        poll_once(&mut target).is_pending(),
        "a staged choice decides nothing yet"
    );
    optin.complete();
    assert!(!block_on(target));
    assert!(
        !block_on(optin.wait_for(&Category::Target).unwrap()),
        "complete: answered at once"
    );
}

/// A cookie jar whose writes panic.
struct PanickingJar;

impl consent_optin::OptInStorage for PanickingJar {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }

    fn set(&self, _cookie: &consent_optin::CookieWrite<'_>) -> Result<(), StorageError> {
        panic!("jar on fire")
    }
}

#[test]
fn a_panicking_cookie_jar_is_a_warning_and_delivery_goes_on() {
    let optin = optin(
        applies()
            .opt_in_storage(Arc::new(PanickingJar))
            .is_opt_in_storage_enabled(true),
    );
    let recorder = Recorder::default();
    let _subscription = recorder.subscribe(&optin);
    optin.approve_all();
    optin.deny_all();
    assert_eq!(
        recorder.count(),
        2,
        "the second completion is still delivered"
    );
    assert!(!optin.is_approved(&[Category::Analytics]));
    let warnings = optin.warnings();
    assert_eq!(warnings.len(), 2);
    assert_eq!(
        warnings[0],
        Warning::StorageWriteFailed(StorageError::Backend(
            "the cookie jar panicked: jar on fire".into()
        ))
    );
}
