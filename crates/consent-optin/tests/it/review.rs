//! One regression test (or a few) per finding of the Opt-in Service review
//! (`shared/reviews/optin-review.md`), named after the issue's labels O1–O5; O6's tests are the
//! rewritten ones in `scenarios.rs`, `subscriptions.rs` and `model.rs`. Each uses the review's own
//! reproduction where it has one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::thread;
use std::time::{Duration, Instant};

use consent_optin::{
    COOKIE_NAME, Category, MemoryStorage, OptIn, OptInConfig, Permissions, PermissionsInput,
    Status, Subscription, Warning,
};

use crate::support::{
    Counter, FaultyJar, PanickingWaker, Recorder, applies, approved, block_on, cookie_json, decode,
    encode, optin, poll_once, stored, visitor_js_accepts, within_five_seconds,
};

/// The cookie that keeps the custom categories (its name is part of the wire format, so the tests
/// spell it out).
const CUSTOM_COOKIE: &str = "adobeujs-optin-custom";

fn map(entries: &[(&str, bool)]) -> PermissionsInput {
    PermissionsInput::Map(entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
}

fn custom_cookie_json(jar: &MemoryStorage) -> Option<String> {
    Some(decode(&jar.cookie(CUSTOM_COOKIE)?.value))
}

// ----- O1: deliveries to a subscriber are in order -----

/// The eight built-in categories as the bits of a number: bit `i` is `Category::BUILTIN[i]`.
fn as_number(permissions: &Permissions) -> u8 {
    Category::BUILTIN
        .iter()
        .enumerate()
        .filter(|(_, category)| permissions.get(category) == Some(true))
        .fold(0, |n, (i, _)| n | (1 << i))
}

/// One completion that makes the permissions read as `number`.
fn complete_as(optin: &OptIn, number: u8) {
    let with = |set: bool| -> Vec<Category> {
        Category::BUILTIN
            .iter()
            .enumerate()
            .filter(|(i, _)| (number & (1 << i) != 0) == set)
            .map(|(_, category)| category.clone())
            .collect()
    };
    let (on, off) = (with(true), with(false));
    if !on.is_empty() {
        optin.approve(&on, true).unwrap();
    }
    if !off.is_empty() {
        optin.deny(&off, true).unwrap();
    }
    optin.complete();
}

/// A subscriber that records the numbers it receives and notices two calls at once.
#[derive(Clone, Default)]
struct OrderRecorder {
    seen: Arc<Mutex<Vec<u8>>>,
    busy: Arc<AtomicUsize>,
    overlapped: Arc<AtomicBool>,
}

impl OrderRecorder {
    fn subscribe_permissions(&self, optin: &OptIn) -> Subscription {
        let this = self.clone();
        optin.subscribe_permissions(move |permissions| {
            if this.busy.fetch_add(1, Ordering::SeqCst) != 0 {
                this.overlapped.store(true, Ordering::SeqCst);
            }
            // Leaves room for another call to come in between, as a subscriber doing real work
            // would.
            thread::yield_now();
            this.seen.lock().unwrap().push(as_number(permissions));
            this.busy.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

/// The review's `race_grant`: one thread applies 254 completions counting down from 254 to 0 (0 =
/// all denied); meanwhile this thread keeps subscribing with `subscribe_permissions`. Every
/// subscriber must see a strictly falling sequence ending with the final state, one call at a time.
/// Bounded: at most 200 rounds or three seconds, whichever comes first.
#[test]
fn o1_a_new_subscriber_is_never_overtaken_by_a_completion_on_another_thread() {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    let mut subscribers = 0;
    while rounds < 200 && Instant::now() < deadline {
        rounds += 1;
        // Opt-in does not apply: everything starts approved (255) and permissions are always
        // available, so every subscriber gets a first call.
        let optin = optin(OptInConfig::builder());
        let applier = {
            let optin = optin.clone();
            thread::spawn(move || {
                for number in (0..255).rev() {
                    complete_as(&optin, number);
                }
            })
        };
        // At most 32 subscribers a round: each completion is delivered to all of them.
        let mut recorders = Vec::new();
        while !applier.is_finished() && recorders.len() < 32 {
            let recorder = OrderRecorder::default();
            let subscription = recorder.subscribe_permissions(&optin);
            recorders.push((recorder, subscription));
            thread::yield_now();
        }
        applier.join().unwrap();
        assert_eq!(as_number(&optin.permissions()), 0);
        subscribers += recorders.len();
        for (recorder, _subscription) in &recorders {
            let seen = recorder.seen.lock().unwrap().clone();
            if let Some(w) = seen.windows(2).find(|w| w[1] >= w[0]) {
                panic!(
                    "round {rounds}: a subscriber saw {} after {} (its calls: {seen:?})",
                    w[1], w[0]
                );
            }
            assert!(
                !recorder.overlapped.load(Ordering::SeqCst),
                "round {rounds}: a subscriber was called by two threads at once: {seen:?}"
            );
            assert_eq!(
                seen.last(),
                Some(&0),
                "round {rounds}: the last call is the final state"
            );
        }
    }
    assert!(subscribers > 0);
}

/// The race of the stress test above, made deterministic: another thread completes while the
/// first call is still running. The first call carries the older permissions, so it must be
/// recorded first; before the fix the other thread called the new subscriber with the newer
/// permissions in the meantime.
#[test]
fn o1_the_first_call_comes_before_a_completion_made_while_it_runs() {
    let optin = optin(OptInConfig::builder());
    let (entered, wait_entered) = std::sync::mpsc::channel::<()>();
    let (done, wait_done) = std::sync::mpsc::channel::<()>();
    let applier = {
        let optin = optin.clone();
        thread::spawn(move || {
            wait_entered.recv().unwrap();
            complete_as(&optin, 1);
            done.send(()).unwrap();
        })
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let first = AtomicBool::new(true);
    let wait_done = Mutex::new(wait_done);
    let _subscription = optin.subscribe_permissions(move |permissions| {
        if first.swap(false, Ordering::SeqCst) {
            // Let the other thread complete now, and record only once its call has returned.
            entered.send(()).unwrap();
            wait_done.lock().unwrap().recv().unwrap();
        }
        sink.lock().unwrap().push(as_number(permissions));
    });
    applier.join().unwrap();
    assert_eq!(*seen.lock().unwrap(), [255, 1]);
}

/// A one-shot callback or future registered during a delivery (the choices staged again, so the
/// permissions are not available at once) waits for the next completion: the one being delivered
/// happened before it was registered. Before the fix both were given that older completion.
#[test]
fn o1_a_callback_registered_during_a_delivery_waits_for_the_next_completion() {
    let optin = optin(applies());
    let one_shot = Arc::new(Mutex::new(Vec::new()));
    let future: Arc<Mutex<Option<consent_optin::FetchPermissions>>> = Arc::default();
    let (handle, sink, slot) = (optin.clone(), one_shot.clone(), future.clone());
    let _stager = optin.on_complete(move |permissions| {
        if permissions.get(&Category::Target) == Some(true) {
            return;
        }
        handle.approve(&[Category::Target], true).unwrap();
        let sink = sink.clone();
        handle.fetch_permissions_with(move |p| sink.lock().unwrap().push(approved(p)));
        *slot.lock().unwrap() = Some(handle.fetch_permissions());
    });
    optin.approve(&[Category::Aam], false).unwrap();
    assert!(one_shot.lock().unwrap().is_empty(), "{one_shot:?}");
    let mut future = future.lock().unwrap().take().unwrap();
    assert!(poll_once(&mut future).is_pending());
    optin.complete();
    assert_eq!(*one_shot.lock().unwrap(), [vec!["aam", "target"]]);
    assert_eq!(approved(&block_on(future)), ["aam", "target"]);
}

// ----- O2: an unknown key in the cookie -----

/// The review's `f1`: www.example.com (an older release, or a sibling with a custom category
/// `chat`) left `chat` in the shared cookie after denying everything. shop.example.com has no
/// `chat` and pre-approves `aa`.
#[test]
fn o2_an_unknown_key_in_the_cookie_is_kept_and_the_rest_is_read() {
    let jar = Arc::new(MemoryStorage::new());
    let denied_all = r#"{"aam":false,"adcloud":false,"aa":false,"campaign":false,"ecid":false,"livefyre":false,"target":false,"mediaaa":false,"chat":false}"#;
    jar.insert_raw(COOKIE_NAME, &encode(denied_all));
    let shop = || {
        optin(
            stored(&jar)
                .host("shop.example.com")
                .pre_opt_in_approvals(map(&[("aa", true)])),
        )
    };

    let first = shop();
    assert_eq!(first.status(), Status::Complete, "{:?}", first.warnings());
    assert!(
        !first.is_approved(&[Category::Analytics]),
        "the stored denial wins over preOptInApprovals"
    );
    assert!(first.warnings().is_empty(), "{:?}", first.warnings());

    first.deny(&[Category::Analytics], true).unwrap();
    first.approve(&[Category::Target], false).unwrap();
    let cookie = cookie_json(&jar).unwrap();
    assert!(
        cookie.contains(r#""chat":false"#),
        "the unknown key is kept as it is: {cookie}"
    );

    let second = shop();
    assert_eq!(second.status(), Status::Complete);
    assert_eq!(approved(&second.permissions()), ["target"]);
}

#[test]
fn o2_a_stored_denial_wins_whatever_else_the_cookie_holds() {
    let jar = Arc::new(MemoryStorage::new());
    jar.insert_raw(
        COOKIE_NAME,
        &encode(r#"{"zzz":1,"aa":false,"target":"yes","iabConsentHash":"abc","campaign":true}"#),
    );
    let optin = optin(
        stored(&jar)
            .pre_opt_in_approvals(map(&[("aa", true), ("target", true), ("ecid", true)]))
            .previous_permissions(map(&[("aa", true), ("ecid", true)])),
    );
    assert_eq!(optin.status(), Status::Complete);
    // aa: the cookie's denial beats both; target: the cookie's value is no boolean, so the
    // pre-approval stands; campaign from the cookie; ecid from previousPermissions.
    assert_eq!(
        approved(&optin.permissions()),
        ["campaign", "ecid", "target"]
    );
    let warnings = optin.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        matches!(&warnings[0], Warning::InvalidStoredPermissions { reason } if reason.contains("\"target\"")),
        "{warnings:?}"
    );
    // The next write keeps the unknown key and the hash, and repairs `target`.
    optin.approve(&[Category::Livefyre], false).unwrap();
    let cookie = cookie_json(&jar).unwrap();
    assert!(
        cookie.starts_with(
            r#"{"zzz":1,"aa":false,"target":true,"iabConsentHash":"abc","campaign":true,"#
        ),
        "{cookie}"
    );
}

/// The review's `f1b`: a release that registered `chat` stored the visitor's choices; the next
/// release no longer registers it.
#[test]
fn o2_dropping_a_custom_category_keeps_the_visitors_other_choices() {
    let jar = Arc::new(MemoryStorage::new());
    let with_chat = optin(stored(&jar).custom_category("chat"));
    with_chat.approve(&[Category::Target], false).unwrap();
    with_chat
        .approve(&[Category::custom("chat")], false)
        .unwrap();

    let without_chat = optin(stored(&jar));
    assert_eq!(without_chat.status(), Status::Complete);
    assert_eq!(approved(&without_chat.permissions()), ["target"]);
    without_chat.approve(&[Category::Campaign], false).unwrap();

    // And back: the choice for `chat` was not lost either.
    let again = optin(stored(&jar).custom_category("chat"));
    assert_eq!(approved(&again.permissions()), ["campaign", "target"]);
    assert!(again.is_approved(&[Category::custom("chat")]));
}

/// The review's note: an explicit denial inside an invalid `previousPermissions` no longer gives
/// way to `preOptInApprovals`.
#[test]
fn o2_an_invalid_previous_permissions_keeps_its_denials() {
    let optin = optin(
        applies()
            .previous_permissions(map(&[("aa", false), ("target", true), ("videoaa2", true)]))
            .pre_opt_in_approvals(map(&[("aa", true), ("campaign", true)])),
    );
    assert!(
        !optin.is_approved(&[Category::Analytics]),
        "the denial stands"
    );
    assert!(
        !optin.is_approved(&[Category::Target]),
        "approvals of an invalid object are not taken"
    );
    assert!(optin.is_approved(&[Category::Campaign]));
    assert_eq!(optin.status(), Status::Pending);
    assert!(matches!(
        optin.warnings()[..],
        [Warning::InvalidPreviousPermissions { .. }]
    ));
}

// ----- O3: foreign code is isolated -----

/// The review's `f3`: the jar's second `get` (the first write's read) panics. Only that write is
/// lost; subscribers, one-shot callbacks, futures and later writes go on, and a warning says why.
#[test]
fn o3_a_panicking_get_during_a_delivery_loses_only_that_write() {
    let jar = Arc::new(FaultyJar::panicking_on_gets(&[2]));
    let optin = optin(
        applies()
            .opt_in_storage(jar.clone())
            .is_opt_in_storage_enabled(true),
    );
    let events = Recorder::default();
    let _subscription = events.subscribe(&optin);

    let panicked = catch_unwind(AssertUnwindSafe(|| {
        optin.approve(&[Category::Aam], false).map(|_| ())
    }))
    .is_err();
    assert!(!panicked, "the panic does not reach the caller");
    optin.deny_all();
    optin.approve_all();
    optin.approve(&[Category::Analytics], true).unwrap();
    let one_shot = Counter::default();
    let hit = one_shot.clone();
    optin.fetch_permissions_with(move |_| hit.hit());
    let mut future = optin.fetch_permissions();
    optin.deny(&[Category::Target], true).unwrap();
    optin.complete();

    assert_eq!(events.count(), 4, "every completion is delivered");
    assert_eq!(one_shot.get(), 1);
    assert!(poll_once(&mut future).is_ready());
    assert_eq!(jar.jar.writes(), 3, "only the first write is lost");
    assert!(cookie_json(&jar.jar).unwrap().contains(r#""target":false"#));
    let warnings: Vec<String> = optin.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("[ADOBE OPT-IN] Could not read the cookie jar")
            && warnings[0].contains("get #2 on fire"),
        "{warnings:?}"
    );
}

#[test]
fn o3_a_cookie_jar_that_panics_at_construction_is_a_warning() {
    let mut faulty = FaultyJar::panicking_on_gets(&[1]);
    faulty.panicking_probe = true;
    faulty
        .jar
        .insert_raw(COOKIE_NAME, &encode(r#"{"aa":true}"#));
    let jar = Arc::new(faulty);
    let built = catch_unwind(AssertUnwindSafe(|| {
        optin(
            applies()
                .opt_in_storage(jar.clone())
                .is_opt_in_storage_enabled(true)
                .host("www.example.com"),
        )
    }));
    let optin = built.expect("OptIn::new does not panic");
    assert_eq!(
        optin.status(),
        Status::Pending,
        "the cookie counts as absent"
    );
    let warnings: Vec<String> = optin.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("get #1 on fire")));
    assert!(warnings.iter().any(|w| w.contains("probe on fire")));
    // The jar works again: the next completion is written, host-only since no domain was accepted.
    optin.approve(&[Category::Target], false).unwrap();
    let cookie = jar.jar.cookie(COOKIE_NAME).unwrap();
    assert_eq!(cookie.domain, None);
    // Merged with what the jar held: the key order is the stored cookie's. The stored `aa` could
    // not be read at construction, so this write replaces it (documented on `OptInStorage`).
    let value = decode(&cookie.value);
    assert!(value.starts_with(r#"{"aa":false,"aam":false,"#), "{value}");
}

#[test]
fn o3_a_panicking_waker_is_a_warning_and_later_deliveries_go_on() {
    let optin = optin(applies());
    let events = Recorder::default();
    let _subscription = events.subscribe(&optin);
    let mut future = Box::pin(optin.fetch_permissions());
    let waker = Waker::from(Arc::new(PanickingWaker));
    assert!(
        future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    let other = optin.fetch_permissions();

    let panicked = catch_unwind(AssertUnwindSafe(|| {
        optin.approve(&[Category::Aam], false).map(|_| ())
    }))
    .is_err();
    assert!(!panicked, "the panic does not reach the caller");
    assert_eq!(approved(&block_on(other)), ["aam"]);
    assert_eq!(approved(&block_on(future)), ["aam"]);
    optin.approve_all();
    assert_eq!(events.count(), 2, "later completions are delivered");
    assert_eq!(
        optin.warnings(),
        [Warning::SubscriberPanicked {
            message: "waker on fire".into()
        }]
    );
}

#[test]
fn o3_panicking_one_shot_callbacks_lose_only_their_own_call() {
    let optin = optin(applies());
    let called = Counter::default();
    optin.fetch_permissions_with(|_| panic!("one-shot on fire"));
    let hit = called.clone();
    optin.fetch_permissions_with(move |_| hit.hit());
    optin.approve(&[Category::Aam], false).unwrap();
    assert_eq!(called.get(), 1);

    // Called at once (the status is complete now), in the caller's call: still caught.
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        optin.fetch_permissions_with(|_| panic!("immediate one-shot on fire"));
    }))
    .is_err();
    assert!(!panicked, "the panic does not reach the caller");
    assert_eq!(
        optin.warnings(),
        [
            Warning::SubscriberPanicked {
                message: "one-shot on fire".into()
            },
            Warning::SubscriberPanicked {
                message: "immediate one-shot on fire".into()
            }
        ]
    );
}

#[test]
fn o3_a_panicking_first_call_of_subscribe_permissions_is_a_warning() {
    let optin = optin(OptInConfig::builder());
    let calls = Counter::default();
    let hit = calls.clone();
    let subscribed = catch_unwind(AssertUnwindSafe(|| {
        optin.subscribe_permissions(move |_| {
            hit.hit();
            if hit.get() == 1 {
                panic!("first call on fire");
            }
        })
    }));
    let _subscription = subscribed.expect("the panic does not reach the caller");
    optin.deny_all();
    assert_eq!(calls.get(), 2, "still subscribed");
    assert_eq!(
        optin.warnings(),
        [Warning::SubscriberPanicked {
            message: "first call on fire".into()
        }]
    );
}

/// Closures and wakers that the service lets go of are dropped outside its lock: here each one
/// calls back into the service when dropped, which deadlocked when it was dropped under the lock.
#[test]
fn o3_nothing_foreign_is_dropped_under_the_lock() {
    within_five_seconds("a subscriber holding another subscription", || {
        let optin = optin(applies());
        let inner = optin.on_complete(|_| {});
        let outer = optin.on_complete(move |_| {
            let _keep = &inner;
        });
        drop(outer);
        optin.approve_all();
    });
    within_five_seconds("a waker that calls the service when dropped", || {
        struct Calls(OptIn);
        impl std::task::Wake for Calls {
            fn wake(self: Arc<Self>) {}
        }
        impl Drop for Calls {
            fn drop(&mut self) {
                let _ = self.0.is_approved(&[]);
            }
        }
        let optin = optin(applies());
        let mut future = Box::pin(optin.fetch_permissions());
        let first = Waker::from(Arc::new(Calls(optin.clone())));
        let _ = future.as_mut().poll(&mut Context::from_waker(&first));
        drop(first);
        // The second poll replaces the stored waker, the last reference to the first one.
        let _ = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        drop(future);
    });
}

// ----- O4: unsubscribing during a delivery -----

/// The review's `f4`: subscriber A drops B's subscription; B comes after A.
#[test]
fn o4_a_subscription_dropped_during_a_delivery_is_not_called_by_it() {
    let optin = optin(applies());
    let slot: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let dropper = slot.clone();
    let _a = optin.on_complete(move |_| {
        dropper.lock().unwrap().take();
    });
    let b_calls = Counter::default();
    let hit = b_calls.clone();
    *slot.lock().unwrap() = Some(optin.on_complete(move |_| hit.hit()));
    let c = Recorder::default();
    let _c = c.subscribe(&optin);

    optin.approve_all();
    assert_eq!(
        b_calls.get(),
        0,
        "B calls after being unsubscribed by A before its turn"
    );
    assert_eq!(c.count(), 1, "the others are still called");
}

// ----- O5: empty lists and custom categories in the cookie -----

#[test]
fn o5_is_pre_approved_of_nothing_follows_the_reference() {
    let check = |pre: &str, expected: bool| {
        let optin = optin(applies().pre_opt_in_approvals(PermissionsInput::Json(pre.into())));
        assert_eq!(optin.is_pre_approved(&[]), expected, "{pre}");
        assert!(optin.warnings().is_empty());
    };
    check(r#"{"aa":true}"#, true);
    check(r#"{"aa":true,"target":true}"#, true);
    check(r#"{"aa":true,"target":false}"#, false);
    check(r#"{"aa":true,"videoaa":false}"#, false);
    check(r#"{"aa":true,"iabConsentHash":"abc"}"#, false);
    check(r#"{"aa":true,"videoaa":true}"#, true);
}

/// A documented difference, kept on purpose (see `OptIn::is_approved`): keys that are not
/// categories never decide `is_approved(&[])`.
#[test]
fn o5_is_approved_of_nothing_asks_about_categories_only() {
    let all = r#""aam":true,"adcloud":true,"aa":true,"campaign":true,"ecid":true,"livefyre":true,"target":true,"mediaaa":true"#;
    for cookie in [
        format!(r#"{{{all},"iabConsentHash":"abc"}}"#),
        format!(r#"{{"videoaa":false,{all}}}"#),
        format!(r#"{{{all},"chat":false}}"#),
    ] {
        let jar = Arc::new(MemoryStorage::new());
        jar.insert_raw(COOKIE_NAME, &encode(&cookie));
        let optin = optin(stored(&jar));
        assert!(optin.is_approved(&[]), "{cookie}");
        assert!(optin.permissions().is_approved(&[]), "{cookie}");
    }
}

/// The review's `f6`: custom categories go to a cookie of their own, so `adobeujs-optin` stays
/// one that VisitorAPI.js accepts.
#[test]
fn o5_custom_categories_stay_out_of_the_adobeujs_optin_cookie() {
    let jar = Arc::new(MemoryStorage::new());
    let optin = optin(stored(&jar).custom_category("chat").host("www.example.com"));
    optin.approve_all();
    let cookie = cookie_json(&jar).unwrap();
    assert!(visitor_js_accepts(&cookie), "{cookie}");
    assert_eq!(custom_cookie_json(&jar).unwrap(), r#"{"chat":true}"#);
    let custom = jar.cookie(CUSTOM_COOKIE).unwrap();
    let main = jar.cookie(COOKIE_NAME).unwrap();
    assert_eq!(
        (&custom.domain, &custom.path, custom.expires, custom.secure),
        (&main.domain, &main.path, main.expires, main.secure),
        "the same attributes"
    );
    let restarted = crate::support::optin(stored(&jar).custom_category("chat"));
    assert!(restarted.is_approved(&[]));

    // Without custom categories no second cookie is written.
    let plain = Arc::new(MemoryStorage::new());
    crate::support::optin(stored(&plain)).approve_all();
    assert!(plain.cookie(CUSTOM_COOKIE).is_none());
}

/// A cookie written by an older release, with the custom category inside `adobeujs-optin`: the
/// choice is read, and the next write moves it out.
#[test]
fn o5_a_custom_category_left_in_adobeujs_optin_moves_to_its_own_cookie() {
    let jar = Arc::new(MemoryStorage::new());
    jar.insert_raw(
        COOKIE_NAME,
        &encode(r#"{"aa":true,"chat":true,"iabConsentHash":"abc"}"#),
    );
    let optin = optin(stored(&jar).custom_category("chat"));
    assert_eq!(optin.status(), Status::Complete);
    assert!(optin.is_approved(&[Category::Analytics, Category::custom("chat")]));
    optin.approve(&[Category::Target], false).unwrap();
    let cookie = cookie_json(&jar).unwrap();
    assert!(visitor_js_accepts(&cookie), "{cookie}");
    assert!(cookie.contains(r#""iabConsentHash":"abc""#), "{cookie}");
    assert_eq!(custom_cookie_json(&jar).unwrap(), r#"{"chat":true}"#);
}
