//! The service itself: state, workflow, subscriptions and the cookie.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::{self, ThreadId};

use serde_json::Value;

use crate::category::{Category, Registry};
use crate::config::{Lazy, OptInConfig};
use crate::iab::{
    ApplyTcfError, IAB_CONSENT_HASH_KEY, IabOutcome, TCF_CATEGORIES, TcfSignal, iab_consent_hash,
    tcf_approves,
};
use crate::permissions::{
    JsonObject, Permissions, PermissionsInput, Reading, is_approved_in, read,
};
use crate::storage::{
    COOKIE_NAME, CUSTOM_COOKIE_NAME, CookieExpiry, CookieWrite, OptInStorage, StorageError,
    decode_uri_component, encode_uri_component, resolve_domain,
};

/// How many warnings [`OptIn::warnings`] keeps; older ones are dropped first.
const MAX_WARNINGS: usize = 64;

/// The workflow status (`adobe.optIn.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// No choice yet: nothing valid was stored or passed in, and nothing completed.
    Pending,
    /// Choices were staged with `wait_for_complete` and [`OptIn::complete`] has not run yet.
    Changed,
    /// The last choices were completed (or valid choices were found at construction).
    Complete,
}

impl Status {
    /// The reference's value: `"pending"`, `"changed"` or `"complete"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Changed => "changed",
            Status::Complete => "complete",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Invalid categories given to [`OptIn::approve`], [`OptIn::deny`] or [`OptIn::wait_for`]. Nothing
/// changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CategoryError {
    /// The list was empty.
    #[error(
        "[OptIn] Invalid category(-ies). Please use the `OptIn.Categories` enum. (no category given)"
    )]
    Empty,
    /// A category that this service does not know (an unregistered custom category).
    #[error(
        "[OptIn] Invalid category(-ies). Please use the `OptIn.Categories` enum. ({0:?} is not a category)"
    )]
    Unknown(String),
}

/// Something that went wrong without being anyone's error to handle: the reference logs these.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// `previousPermissions` was not a valid permissions object and was ignored, except for the
    /// denials it holds (see [`OptIn::new`]).
    InvalidPreviousPermissions {
        /// Why it was refused.
        reason: String,
    },
    /// `preOptInApprovals` was not a valid permissions object and was ignored.
    InvalidPreOptInApprovals {
        /// Why it was refused.
        reason: String,
    },
    /// A stored cookie, or a value in it, could not be read as permissions and was ignored.
    InvalidStoredPermissions {
        /// What was ignored, and why.
        reason: String,
    },
    /// Writing a cookie failed (the jar refused it, failed, or panicked); the permissions in memory
    /// are unaffected, and the next completion writes again.
    StorageWriteFailed(StorageError),
    /// A subscriber, a one-shot callback or a future's waker panicked; that call was lost, the
    /// others and the cookie write still ran.
    SubscriberPanicked {
        /// The panic message, when it was a string.
        message: String,
    },
    /// The cookie jar panicked while being read (`get`, `accepts_domain`). At construction the
    /// cookie counts as absent; during a delivery that one cookie write is skipped, so that keys
    /// the service could not read are not lost.
    StorageReadFailed {
        /// What was being read, and the panic message.
        message: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::InvalidPreviousPermissions { reason } => {
                write!(
                    f,
                    "[ADOBE OPT-IN] Invalid `previousPermissions`! ({reason})"
                )
            }
            Warning::InvalidPreOptInApprovals { reason } => {
                write!(f, "[ADOBE OPT-IN] Invalid `preOptInApprovals`! ({reason})")
            }
            Warning::InvalidStoredPermissions { reason } => {
                write!(f, "[ADOBE OPT-IN] Invalid stored permissions: {reason}")
            }
            Warning::StorageWriteFailed(error) => {
                write!(
                    f,
                    "[ADOBE OPT-IN] Could not write the `{COOKIE_NAME}` or `{CUSTOM_COOKIE_NAME}` cookie: {error}"
                )
            }
            Warning::SubscriberPanicked { message } => {
                write!(f, "[ADOBE OPT-IN] A subscriber panicked: {message}")
            }
            Warning::StorageReadFailed { message } => {
                write!(f, "[ADOBE OPT-IN] Could not read the cookie jar: {message}")
            }
        }
    }
}

type Subscriber = Arc<dyn Fn(&Permissions) + Send + Sync>;
type OneShot = Box<dyn FnOnce(&Permissions) + Send>;

/// The Opt-in Service (`adobe.optIn`): per-category approvals, a completion workflow and
/// subscriptions.
///
/// An `OptIn` is a cheap handle: clones share one service, so a page or app builds one and hands
/// out clones (the reference keeps one `adobe.optIn` per page; this crate keeps no global, and two
/// calls of [`OptIn::new`] make two independent services). It is `Send + Sync`; every method is
/// synchronous and needs no async runtime, and the futures it returns work on any executor.
///
/// # Deliveries: what is guaranteed
///
/// A completion (`approve`/`deny` without `wait_for_complete`, `approve_all`, `deny_all`,
/// [`complete`](Self::complete), a completing [`apply_tcf`](Self::apply_tcf)) changes the state at
/// once and is then *delivered*: to the subscribers in subscription order, then to the cookie, then
/// to the one-shot callbacks of [`fetch_permissions_with`](Self::fetch_permissions_with), then to
/// the futures and watches (their wakers are woken).
///
/// - **One thread delivers at a time, in order.** A completion is delivered by the thread that
///   caused it, unless a thread is delivering already (another one, or this one from a
///   subscriber, callback, waker or cookie jar): then the thread already delivering delivers it
///   right after what it is doing, and the call that caused it returns without waiting. A thread
///   that delivers goes on until nothing is left to deliver, other threads' completions included.
///   So a subscriber is never called by two threads at once, it sees completions in the order they
///   changed the state, and no thread ever waits for another one here.
/// - **Everyone gets what happened after it arrived, and nothing older.** A subscriber receives
///   every completion that changes the state after it subscribed, each once; a one-shot callback
///   or a future waiting for the next completion gets the first of them; a watch the latest of
///   them it has not returned yet. The first call of
///   [`subscribe_permissions`](Self::subscribe_permissions) carries the permissions in force when
///   it subscribed and is ordered with the deliveries: it comes before every later completion and
///   after every earlier one, never the other way round (when another thread is delivering, that
///   thread makes the first call, and `subscribe_permissions` returns without waiting for it).
/// - **Unsubscribing takes effect at once.** A subscriber whose [`Subscription`] was dropped is
///   not called again, not even by a delivery that is under way (one subscriber dropping another
///   that comes later in the same delivery). The only call that can still happen after the drop
///   returns is one that another thread had already started.
/// - **Foreign code is isolated.** Subscribers, one-shot callbacks, wakers and the cookie jar run
///   outside every lock of the service (so they may call back into it) and behind `catch_unwind`:
///   a panic loses that one call, is recorded as a [`Warning`], and everything else (the other
///   subscribers, the cookie write, later completions) goes on. Closures and wakers that the
///   service lets go of are dropped outside its locks too. The configuration's closures
///   (`does_opt_in_apply_with`, `previous_permissions_with`) and a [`TcfSignal`] run in the
///   caller's own call before anything changed, so their panics reach the caller: there is no
///   value the service could put in their place.
///
/// ```
/// use consent_optin::{Category, OptIn, OptInConfig, Status};
///
/// let optin = OptIn::new(OptInConfig::builder().does_opt_in_apply(true).build()?);
/// assert!(optin.is_pending());
///
/// // Stage two choices, then complete them as one event.
/// optin.approve(&[Category::Analytics], true)?.deny(&[Category::Target], true)?;
/// assert_eq!(optin.status(), Status::Changed);
/// assert!(!optin.is_approved(&[Category::Analytics])); // staged choices are not visible yet
/// optin.complete();
/// assert!(optin.is_approved(&[Category::Analytics]));
/// assert!(!optin.is_approved(&[Category::Analytics, Category::Target]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct OptIn {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    does_opt_in_apply: bool,
    is_iab_context: bool,
    /// Whether `preOptInApprovals` was given at all: then `fetch_permissions` answers at once.
    pre_given: bool,
    pre_approvals: Option<Box<[Option<bool>]>>,
    /// The reference's `isPreApproved()` without arguments: the valid `preOptInApprovals` object
    /// has a key and every value, the magic keys' included, is `true`.
    pre_all_true: bool,
    storage: Option<Arc<dyn OptInStorage>>,
    storage_enabled: bool,
    cookie_domain: Option<String>,
    cookie_expiry: Option<CookieExpiry>,
    secure_cookie: bool,
    state: Mutex<State>,
}

struct State {
    status: Status,
    committed: Permissions,
    /// The reference's `preCompletePermissions`, kept apart from `committed` so staged choices stay
    /// invisible until `complete()` (the reference aliased the two after the first completion).
    staged: Vec<bool>,
    /// How many completions changed the state; a completion's sequence number is this count just
    /// after it. Whoever registers notes the count as its `since`, and receives only completions
    /// with a larger number.
    seq: u64,
    /// Work for the delivering thread, in order.
    queue: VecDeque<Job>,
    /// The thread delivering the queue, if any: only it calls subscribers, callbacks and the jar
    /// during deliveries, which is what keeps them in order without a lock held across them.
    deliverer: Option<ThreadId>,
    /// The sequence number of the last completion delivered to the futures and watches.
    delivered: u64,
    last_delivered: Option<Permissions>,
    /// Sorted by id (ids only grow), so a delivery can walk it while it changes.
    subscribers: Vec<Entry>,
    one_shots: Vec<Pending<OneShot>>,
    waiters: Vec<Waiter>,
    next_id: u64,
    warnings: VecDeque<Warning>,
    last_tc_string: Option<String>,
}

/// A subscriber and the completion count when it subscribed.
struct Entry {
    id: u64,
    since: u64,
    subscriber: Subscriber,
}

/// A one-shot callback and the completion count when it was registered.
struct Pending<T> {
    since: u64,
    callback: T,
}

/// A piece of work for the delivering thread.
enum Job {
    /// A completion, with its sequence number.
    Completion { seq: u64, permissions: Permissions },
    /// The first call of a `subscribe_permissions` subscriber, with the permissions in force when
    /// it subscribed.
    First { id: u64, permissions: Permissions },
    /// Memoising the IAB hash in the cookie, so that it never overtakes a permissions write.
    Memoise { hash: String },
}

impl State {
    fn warn(&mut self, warning: Warning) {
        if self.warnings.len() == MAX_WARNINGS {
            self.warnings.pop_front();
        }
        self.warnings.push_back(warning);
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Registers a future that resolves with the next completion: the completion's permissions are
    /// kept for it, so it gets that completion's even if it is polled only after later ones.
    fn wait_for_next(&mut self) -> u64 {
        let id = self.id();
        self.waiters.push(Waiter {
            id,
            since: self.seq,
            answer: None,
            waker: None,
            takes_answer: true,
        });
        id
    }

    /// The answer of a future registered with `wait_for_next`, or `Pending` after storing its waker.
    /// Returns the wakers it let go of, for the caller to drop outside the lock.
    fn poll_answer(&mut self, id: u64, waker: Waker) -> (Poll<Permissions>, Dropped) {
        let Some(index) = self.waiters.iter().position(|w| w.id == id) else {
            // Registered at creation and removed only here or on drop; treat a missing entry as a
            // spurious poll after `Ready`.
            return (Poll::Pending, Dropped::waker(Some(waker)));
        };
        if let Some(answer) = self.waiters[index].answer.take() {
            let waiter = self.waiters.swap_remove(index);
            return (Poll::Ready(answer), Dropped::wakers(waiter.waker, waker));
        }
        let old = self.waiters[index].waker.replace(waker);
        (Poll::Pending, Dropped::waker(old))
    }

    /// Stores the waker of a watch, which reads its answer from `last_delivered` instead. Returns
    /// the waker it replaced, for the caller to drop outside the lock.
    fn set_waker(&mut self, id: u64, waker: Waker) -> Dropped {
        match self.waiters.iter_mut().find(|w| w.id == id) {
            Some(waiter) => Dropped::waker(waiter.waker.replace(waker)),
            None => {
                self.waiters.push(Waiter {
                    id,
                    since: self.seq,
                    answer: None,
                    waker: Some(waker),
                    takes_answer: false,
                });
                Dropped::default()
            }
        }
    }
}

/// Wakers that the service let go of under its lock, dropped by the caller once the lock is
/// released: a waker's drop is foreign code.
#[derive(Default)]
#[must_use = "drop it after releasing the lock"]
struct Dropped {
    _wakers: [Option<Waker>; 2],
}

impl Dropped {
    fn waker(waker: Option<Waker>) -> Dropped {
        Dropped {
            _wakers: [waker, None],
        }
    }

    fn wakers(first: Option<Waker>, second: Waker) -> Dropped {
        Dropped {
            _wakers: [first, Some(second)],
        }
    }
}

/// A future waiting for a completion.
struct Waiter {
    id: u64,
    /// The completion count when it was registered: only later completions answer it.
    since: u64,
    answer: Option<Permissions>,
    waker: Option<Waker>,
    takes_answer: bool,
}

impl fmt::Debug for OptIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("OptIn")
            .field("status", &state.status)
            .field("permissions", &state.committed)
            .field("does_opt_in_apply", &self.inner.does_opt_in_apply)
            .field("is_iab_context", &self.inner.is_iab_context)
            .finish_non_exhaustive()
    }
}

fn parse_input(registry: &Registry, input: &PermissionsInput) -> Result<Reading, String> {
    input
        .to_object()
        .map(|object| read(registry, &object))
        .map_err(|e| format!("not a JSON object: {e}"))
}

/// Decodes a cookie value: URI-encoded JSON of an object.
fn parse_cookie(raw: &str) -> Result<JsonObject, String> {
    let text = decode_uri_component(raw).ok_or("not URI-encoded")?;
    serde_json::from_str(&text).map_err(|e| format!("not a JSON object: {e}"))
}

/// Calls the jar's `get`; a panic becomes a warning.
fn get_cookie(storage: &dyn OptInStorage, name: &str) -> Result<Option<String>, Warning> {
    catch_unwind(AssertUnwindSafe(|| storage.get(name))).map_err(|payload| {
        Warning::StorageReadFailed {
            message: format!(
                "`get({name:?})` panicked: {}",
                panic_message(payload.as_ref())
            ),
        }
    })
}

/// Runs a subscriber, callback or waker; a panic becomes a warning instead of unwinding through
/// delivery. The closure owns what it calls, so that it is also dropped behind `catch_unwind`.
fn guarded(f: impl FnOnce()) -> Option<Warning> {
    catch_unwind(AssertUnwindSafe(f))
        .err()
        .map(|payload| Warning::SubscriberPanicked {
            message: panic_message(payload.as_ref()),
        })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

/// The choices stored in the two cookies, read key by key: categories this service knows are
/// taken, the custom ones from [`CUSTOM_COOKIE_NAME`] first (then from `adobeujs-optin`, where an
/// older release wrote them); every other key is left alone, to be kept as it is at the next write.
fn read_stored(
    registry: &Registry,
    storage: &dyn OptInStorage,
    warnings: &mut Vec<Warning>,
) -> Option<Vec<Option<bool>>> {
    let mut slots: Vec<Option<bool>> = vec![None; registry.len()];
    let names: &[&str] = if registry.custom().is_empty() {
        &[COOKIE_NAME]
    } else {
        &[COOKIE_NAME, CUSTOM_COOKIE_NAME]
    };
    for name in names {
        let raw = match get_cookie(storage, name) {
            Ok(Some(raw)) => raw,
            Ok(None) => continue,
            Err(warning) => {
                warnings.push(warning);
                continue;
            }
        };
        let object = match parse_cookie(&raw) {
            Ok(object) => object,
            Err(reason) => {
                warnings.push(Warning::InvalidStoredPermissions {
                    reason: format!("the `{name}` cookie is {reason}; it was ignored"),
                });
                continue;
            }
        };
        let reading = read(registry, &object);
        for key in reading.not_boolean {
            warnings.push(Warning::InvalidStoredPermissions {
                reason: format!(
                    "the value of {key:?} in the `{name}` cookie is not a boolean; that key was ignored"
                ),
            });
        }
        for (slot, value) in reading.slots.into_iter().enumerate() {
            let custom = slot >= Category::BUILTIN.len();
            // The custom cookie speaks only for custom categories, and for them it is the newer
            // source than a legacy key in `adobeujs-optin`.
            if *name == CUSTOM_COOKIE_NAME && !custom {
                continue;
            }
            if value.is_some() {
                slots[slot] = value;
            }
        }
    }
    slots.iter().any(Option::is_some).then_some(slots)
}

impl OptIn {
    /// Builds the service: runs the configuration's closures once, reads the cookie when storage is
    /// enabled, and computes the initial state.
    ///
    /// Permissions start as every category approved when opt-in does not apply, else denied and
    /// overlaid with `preOptInApprovals`, then `previousPermissions`, then the cookie (the cookie
    /// wins). The status is [`Status::Complete`] when `previousPermissions` was valid or the cookie
    /// held at least one category, else [`Status::Pending`], whatever `does_opt_in_apply` says.
    ///
    /// - An invalid `preOptInApprovals` is ignored whole. An invalid `previousPermissions` (an
    ///   unknown key, a value that is not a boolean, no category) leaves the status pending and its
    ///   approvals are ignored, but the denials it holds still apply: a mistake elsewhere in the
    ///   object never lets `preOptInApprovals` approve what the visitor denied (the reference merges
    ///   the whole object, approvals included).
    /// - The cookie is read key by key: the categories this service knows are taken, and keys it
    ///   does not know (a custom category of another configuration sharing the cookie, or one this
    ///   configuration no longer registers) are skipped and kept as they are at the next write. A
    ///   category whose value is not a boolean is skipped. So a stored denial always wins over
    ///   `preOptInApprovals` and `previousPermissions`.
    ///
    /// Everything ignored is recorded in [`warnings`](Self::warnings), and so is a cookie jar that
    /// panicked (the cookie then counts as absent).
    pub fn new(config: OptInConfig) -> OptIn {
        let registry = Arc::new(Registry::new(&config.custom_categories));
        let does_opt_in_apply = config.does_opt_in_apply.evaluate();
        let mut warnings = Vec::new();

        let mut previous_valid = false;
        let previous = match config
            .previous_permissions
            .map(Lazy::evaluate)
            .map(|input| parse_input(&registry, &input))
        {
            None => None,
            Some(Err(reason)) => {
                warnings.push(Warning::InvalidPreviousPermissions { reason });
                None
            }
            Some(Ok(reading)) => match reading.check() {
                Ok(()) => {
                    previous_valid = true;
                    Some(reading.slots)
                }
                Err(invalid) => {
                    warnings.push(Warning::InvalidPreviousPermissions {
                        reason: invalid.to_string(),
                    });
                    // Only the denials: see the method's documentation.
                    Some(
                        reading
                            .slots
                            .into_iter()
                            .map(|value| value.filter(|approved| !approved))
                            .collect(),
                    )
                }
            },
        };
        let pre_given = config.pre_opt_in_approvals.is_some();
        let pre = config.pre_opt_in_approvals.as_ref().and_then(|input| {
            match parse_input(&registry, input) {
                Ok(reading) => match reading.check() {
                    Ok(()) => Some(reading),
                    Err(invalid) => {
                        warnings.push(Warning::InvalidPreOptInApprovals {
                            reason: invalid.to_string(),
                        });
                        None
                    }
                },
                Err(reason) => {
                    warnings.push(Warning::InvalidPreOptInApprovals { reason });
                    None
                }
            }
        });
        let pre_all_true = pre.as_ref().is_some_and(|reading| reading.every_value_true);
        let pre = pre.map(|reading| reading.slots);
        let stored = config
            .storage
            .as_deref()
            .filter(|_| config.is_opt_in_storage_enabled)
            .and_then(|storage| read_stored(&registry, storage, &mut warnings));

        let status = if previous_valid || stored.is_some() {
            Status::Complete
        } else {
            Status::Pending
        };
        let mut values = vec![!does_opt_in_apply; registry.len()];
        if does_opt_in_apply {
            for layer in [&pre, &previous, &stored].into_iter().flatten() {
                for (value, given) in values.iter_mut().zip(layer) {
                    if let Some(given) = given {
                        *value = *given;
                    }
                }
            }
        }

        let probe_panic = RefCell::new(None);
        // A panicking jar counts as refusing the domain, so probing goes on with a longer one.
        let accepts = |domain: &str| {
            let Some(storage) = config.storage.as_deref() else {
                return false;
            };
            catch_unwind(AssertUnwindSafe(|| storage.accepts_domain(domain))).unwrap_or_else(
                |payload| {
                    probe_panic.borrow_mut().get_or_insert_with(|| {
                        format!(
                            "`accepts_domain({domain:?})` panicked: {}",
                            panic_message(payload.as_ref())
                        )
                    });
                    false
                },
            )
        };
        let cookie_domain = resolve_domain(
            config.opt_in_cookie_domain.as_deref(),
            config.cookie_domain.as_deref(),
            config.host.as_deref(),
            config
                .storage
                .is_some()
                .then_some(&accepts as &dyn Fn(&str) -> bool),
        );
        if let Some(message) = probe_panic.into_inner() {
            warnings.push(Warning::StorageReadFailed { message });
        }
        let committed = Permissions::new(Arc::clone(&registry), values.clone().into());
        let mut state = State {
            status,
            committed,
            staged: values,
            seq: 0,
            queue: VecDeque::new(),
            deliverer: None,
            delivered: 0,
            last_delivered: None,
            subscribers: Vec::new(),
            one_shots: Vec::new(),
            waiters: Vec::new(),
            next_id: 0,
            warnings: VecDeque::new(),
            last_tc_string: None,
        };
        for warning in warnings {
            state.warn(warning);
        }
        OptIn {
            inner: Arc::new(Inner {
                registry,
                does_opt_in_apply,
                is_iab_context: config.is_iab_context,
                pre_given,
                pre_approvals: pre.map(Vec::into_boxed_slice),
                pre_all_true,
                storage: config.storage,
                storage_enabled: config.is_opt_in_storage_enabled,
                cookie_domain,
                cookie_expiry: config.opt_in_storage_expiry.cookie_expiry(),
                secure_cookie: config.secure_cookie,
                state: Mutex::new(state),
            }),
        }
    }

    /// Approves the categories. With `wait_for_complete` the choice is staged (status
    /// [`Status::Changed`]) and takes effect, with one event, at [`complete`](Self::complete);
    /// otherwise it completes at once. Returns `self` so calls chain.
    ///
    /// An empty list or an unknown category is an error and changes nothing.
    pub fn approve(
        &self,
        categories: &[Category],
        wait_for_complete: bool,
    ) -> Result<&Self, CategoryError> {
        self.update(categories, true, wait_for_complete)
    }

    /// Denies the categories; see [`approve`](Self::approve).
    pub fn deny(
        &self,
        categories: &[Category],
        wait_for_complete: bool,
    ) -> Result<&Self, CategoryError> {
        self.update(categories, false, wait_for_complete)
    }

    /// Approves every category, the custom ones included, and completes.
    pub fn approve_all(&self) -> &Self {
        self.set_all(true)
    }

    /// Denies every category, the custom ones included, and completes.
    pub fn deny_all(&self) -> &Self {
        self.set_all(false)
    }

    fn set_all(&self, approved: bool) -> &Self {
        let mut state = self.inner.lock();
        state.status = Status::Changed;
        state.staged.iter_mut().for_each(|value| *value = approved);
        self.commit(state);
        self
    }

    fn update(
        &self,
        categories: &[Category],
        approved: bool,
        wait: bool,
    ) -> Result<&Self, CategoryError> {
        if categories.is_empty() {
            return Err(CategoryError::Empty);
        }
        let registry = &self.inner.registry;
        if let Some(unknown) = categories.iter().find(|c| registry.index_of(c).is_none()) {
            return Err(CategoryError::Unknown(unknown.as_str().to_owned()));
        }
        let mut state = self.inner.lock();
        state.status = Status::Changed;
        for slot in categories.iter().filter_map(|c| registry.index_of(c)) {
            state.staged[slot] = approved;
        }
        if !wait {
            self.commit(state);
        }
        Ok(self)
    }

    /// Completes staged choices: only when the status is [`Status::Changed`], with exactly one
    /// event; otherwise nothing happens.
    pub fn complete(&self) {
        let state = self.inner.lock();
        if state.status == Status::Changed {
            self.commit(state);
        }
    }

    /// Whether every listed category is approved; an empty list asks whether all categories this
    /// service knows (the eight built-ins and the registered custom ones) are. An unknown category
    /// is not approved. Takes one uncontended lock and allocates nothing.
    ///
    /// With an empty list this differs from the reference on purpose: keys that are not
    /// categories never count. The reference's `isApproved()` looks at every key its permissions
    /// object ever received, so once the cookie holds `iabConsentHash` (a string) it answers
    /// `false` for good, and a stored legacy `videoaa: false` or a foreign key keeps it `false`
    /// even after `approveAll()`; no solution can ask about those keys, so they decide nothing
    /// here.
    pub fn is_approved(&self, categories: &[Category]) -> bool {
        let state = self.inner.lock();
        is_approved_in(&self.inner.registry, state.committed.values(), categories)
    }

    /// The reference's `isPreApproved`: whether `preOptInApprovals` approves every listed category.
    /// Without valid pre-approvals nothing is pre-approved.
    ///
    /// An empty list asks, as in the reference, whether every value of the `preOptInApprovals`
    /// object is `true`: `{"aa": true}` is "all pre-approved", `{"aa": true, "videoaa": false}` is
    /// not (the magic keys count here, since they are part of the object the site passed).
    pub fn is_pre_approved(&self, categories: &[Category]) -> bool {
        let Some(pre) = &self.inner.pre_approvals else {
            return false;
        };
        if categories.is_empty() {
            return self.inner.pre_all_true;
        }
        categories.iter().all(|category| {
            self.inner
                .registry
                .index_of(category)
                .is_some_and(|slot| pre[slot] == Some(true))
        })
    }

    /// The permissions in force (staged choices are not included).
    pub fn permissions(&self) -> Permissions {
        self.inner.lock().committed.clone()
    }

    /// The workflow status.
    pub fn status(&self) -> Status {
        self.inner.lock().status
    }

    /// Whether the status is [`Status::Pending`].
    pub fn is_pending(&self) -> bool {
        self.status() == Status::Pending
    }

    /// Whether the status is [`Status::Complete`].
    pub fn is_complete(&self) -> bool {
        self.status() == Status::Complete
    }

    /// The evaluated `doesOptInApply`.
    pub fn does_opt_in_apply(&self) -> bool {
        self.inner.does_opt_in_apply
    }

    /// The configured `isIabContext`.
    pub fn is_iab_context(&self) -> bool {
        self.inner.is_iab_context
    }

    /// Every category this service knows, built-ins first.
    pub fn categories(&self) -> &[Category] {
        self.inner.registry.all()
    }

    /// The category with this wire value, custom ones included. Key names such as `"ANALYTICS"` and
    /// the legacy `"videoaa"` are unknown.
    pub fn category(&self, value: &str) -> Result<Category, CategoryError> {
        self.inner
            .registry
            .index_of_value(value)
            .map(|slot| self.inner.registry.all()[slot].clone())
            .ok_or_else(|| CategoryError::Unknown(value.to_owned()))
    }

    /// The recent warnings (at most 64), oldest first: invalid configuration, an unreadable cookie,
    /// failed cookie writes, panicking subscribers.
    pub fn warnings(&self) -> Vec<Warning> {
        self.inner.lock().warnings.iter().cloned().collect()
    }

    /// Calls `subscriber` with the permissions at every later completion, until the returned
    /// [`Subscription`] is dropped.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use consent_optin::{Category, OptIn, OptInConfig};
    ///
    /// let optin = OptIn::new(OptInConfig::builder().does_opt_in_apply(true).build()?);
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&seen);
    /// let subscription = optin.on_complete(move |permissions| {
    ///     sink.lock().unwrap().push(permissions.get(&Category::Analytics));
    /// });
    /// optin.approve(&[Category::Analytics], false)?;
    /// drop(subscription);
    /// optin.deny_all();
    /// assert_eq!(*seen.lock().unwrap(), [Some(true)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_complete<F>(&self, subscriber: F) -> Subscription
    where
        F: Fn(&Permissions) + Send + Sync + 'static,
    {
        self.subscribe(Arc::new(subscriber), false)
    }

    /// The reference's `fetchPermissions(callback, true)`: calls `subscriber` with the permissions
    /// in force when permissions are available (see [`fetch_permissions`](Self::fetch_permissions)),
    /// and at every later completion until the returned [`Subscription`] is dropped.
    ///
    /// The first call is made before this method returns, unless another thread is delivering a
    /// completion at that moment: then that thread makes it, right after what it is delivering, and
    /// this method does not wait for it. Either way the first call is ordered with the completions
    /// (see [`OptIn`]): the subscriber never receives permissions older than ones it was given.
    pub fn subscribe_permissions<F>(&self, subscriber: F) -> Subscription
    where
        F: Fn(&Permissions) + Send + Sync + 'static,
    {
        self.subscribe(Arc::new(subscriber), true)
    }

    fn subscribe(&self, subscriber: Subscriber, call_now: bool) -> Subscription {
        let mut state = self.inner.lock();
        let id = state.id();
        let since = state.seq;
        state.subscribers.push(Entry {
            id,
            since,
            subscriber: Arc::clone(&subscriber),
        });
        let subscription = Subscription {
            inner: Arc::downgrade(&self.inner),
            id: Some(id),
        };
        let Some(permissions) = call_now.then(|| self.available_now(&state)).flatten() else {
            return subscription;
        };
        if state.deliverer == Some(thread::current().id()) {
            // This thread is delivering, further up its stack (a subscriber, callback, waker or the
            // cookie jar subscribed): nothing else can be delivered before it returns there, and
            // the completions still queued are older than `since`, so the first call is due now.
            drop(state);
            let warning = guarded(move || subscriber(&permissions));
            self.inner.warn_all(warning);
        } else {
            // Through the queue, so that the first call takes its place among the completions
            // whoever delivers them.
            state.queue.push_back(Job::First { id, permissions });
            self.run(state);
        }
        subscription
    }

    /// The reference's `fetchPermissions(callback)`: calls `callback` once, at once when
    /// permissions are available, else with the next completion (the next one to change the state
    /// after this call). A panic in `callback` is caught and recorded as a [`Warning`].
    pub fn fetch_permissions_with<F>(&self, callback: F)
    where
        F: FnOnce(&Permissions) + Send + 'static,
    {
        let mut state = self.inner.lock();
        match self.available_now(&state) {
            Some(now) => {
                drop(state);
                let warning = guarded(move || callback(&now));
                self.inner.warn_all(warning);
            }
            None => {
                let since = state.seq;
                state.one_shots.push(Pending {
                    since,
                    callback: Box::new(callback),
                });
            }
        }
    }

    /// Resolves to the permissions at once when opt-in does not apply, the status is complete or
    /// `preOptInApprovals` was given; otherwise with the next completion (the next one to change
    /// the state after this call).
    ///
    /// The future needs no particular runtime.
    pub fn fetch_permissions(&self) -> FetchPermissions {
        let mut state = self.inner.lock();
        let immediate = self.available_now(&state);
        let id = immediate.is_none().then(|| state.wait_for_next());
        FetchPermissions {
            inner: Arc::clone(&self.inner),
            immediate,
            id,
        }
    }

    /// For a solution that must wait for its category: resolves to whether it is approved, at once
    /// when it is approved already, the status is complete or opt-in does not apply; otherwise with
    /// the next completion (which decides it either way).
    ///
    /// ```
    /// use consent_optin::{Category, OptIn, OptInConfig};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Waker};
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(Waker::noop())) { return v; }
    /// #     }
    /// # }
    ///
    /// let optin = OptIn::new(OptInConfig::builder().does_opt_in_apply(true).build()?);
    /// let ecid = optin.wait_for(&Category::Ecid)?;
    /// optin.approve(&[Category::Ecid], false)?;
    /// assert!(block_on(ecid));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_for(&self, category: &Category) -> Result<WaitFor, CategoryError> {
        let slot = self
            .inner
            .registry
            .index_of(category)
            .ok_or_else(|| CategoryError::Unknown(category.as_str().to_owned()))?;
        let mut state = self.inner.lock();
        let current = state.committed.values()[slot];
        let immediate =
            (current || !self.inner.does_opt_in_apply || state.status == Status::Complete)
                .then_some(current);
        let id = immediate.is_none().then(|| state.wait_for_next());
        Ok(WaitFor {
            inner: Arc::clone(&self.inner),
            slot,
            immediate,
            id,
        })
    }

    /// A watch of completions: [`Changes::changed`] resolves to the permissions of the latest
    /// completion delivered after the last one it returned (completions in between are skipped, as
    /// a watch does), counting only completions that change the state after this call;
    /// [`Changes::try_next`] asks without waiting.
    pub fn changes(&self) -> Changes {
        let mut state = self.inner.lock();
        Changes {
            inner: Arc::clone(&self.inner),
            seen: state.seq,
            id: state.id(),
        }
    }

    /// Applies a TCF v2 signal (the reference's IAB plugin): `aam` and `ecid` are approved exactly
    /// when vendor 565 and purposes 1 and 10 have consent, as one workflow completion (one event);
    /// other categories are untouched. The hash of the TC string is memoised as `iabConsentHash` in
    /// the cookie whenever a cookie jar is configured (as the reference does, even with storage
    /// disabled), after the completion's own cookie write. A TC string already applied by this
    /// service completes nothing; a new one is evaluated again.
    ///
    /// The signal is read before anything changes, in this call: a panic in it reaches the caller
    /// and changes nothing.
    ///
    /// ```
    /// use consent_optin::{Category, OptIn, OptInConfig, TcfSignal};
    ///
    /// struct Signal;
    /// impl TcfSignal for Signal {
    ///     fn tc_string(&self) -> &str { "CO-example" }
    ///     fn purpose_consent(&self, purpose: u8) -> bool { matches!(purpose, 1 | 10) }
    ///     fn vendor_consent(&self, vendor: u16) -> bool { vendor == 565 }
    /// }
    ///
    /// let config = OptInConfig::builder().does_opt_in_apply(true).is_iab_context(true).build()?;
    /// let optin = OptIn::new(config);
    /// let outcome = optin.apply_tcf(&Signal)?;
    /// assert!(outcome.approved && outcome.completed);
    /// assert!(optin.is_approved(&[Category::Aam, Category::Ecid]));
    /// assert!(!optin.is_approved(&[Category::Analytics]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_tcf<T: TcfSignal + ?Sized>(
        &self,
        signal: &T,
    ) -> Result<IabOutcome, ApplyTcfError> {
        if !(self.inner.is_iab_context && self.inner.does_opt_in_apply) {
            return Err(ApplyTcfError::NotIabContext {
                is_iab_context: self.inner.is_iab_context,
                does_opt_in_apply: self.inner.does_opt_in_apply,
            });
        }
        let tc_string = signal.tc_string();
        let consent_hash = iab_consent_hash(tc_string);
        let approved = tcf_approves(signal);
        let mut warning = None;
        let memoised = self.inner.storage.as_deref().and_then(|storage| {
            let raw = get_cookie(storage, COOKIE_NAME)
                .map_err(|failed| warning = Some(failed))
                .ok()??;
            match parse_cookie(&raw).ok()?.get(IAB_CONSENT_HASH_KEY)? {
                Value::String(hash) => Some(hash.clone()),
                _ => None,
            }
        });
        let has_changed = memoised.as_deref() != Some(consent_hash.as_str());

        let mut state = self.inner.lock();
        if let Some(warning) = warning {
            state.warn(warning);
        }
        let completed = state.last_tc_string.as_deref() != Some(tc_string);
        if completed {
            state.last_tc_string = Some(tc_string.to_owned());
            state.status = Status::Changed;
            for category in &TCF_CATEGORIES {
                if let Some(slot) = self.inner.registry.index_of(category) {
                    state.staged[slot] = approved;
                }
            }
            self.push_completion(&mut state);
        }
        if has_changed && self.inner.storage.is_some() {
            // Written by the delivering thread, after the completion's own write, so the two
            // read-merge-writes of the cookie never overwrite each other.
            state.queue.push_back(Job::Memoise {
                hash: consent_hash.clone(),
            });
        }
        self.run(state);
        Ok(IabOutcome {
            approved,
            consent_hash,
            has_consent_changed_since_last_cmp_pull: has_changed,
            completed,
        })
    }

    fn available_now(&self, state: &State) -> Option<Permissions> {
        (!self.inner.does_opt_in_apply || state.status == Status::Complete || self.inner.pre_given)
            .then(|| state.committed.clone())
    }

    /// Makes the staged permissions the permissions in force and delivers the event (see
    /// [`run`](Self::run)).
    fn commit(&self, mut state: MutexGuard<'_, State>) {
        self.push_completion(&mut state);
        self.run(state);
    }

    /// Makes the staged permissions the permissions in force and queues their delivery.
    fn push_completion(&self, state: &mut State) {
        let permissions = Permissions::new(
            Arc::clone(&self.inner.registry),
            state.staged.clone().into(),
        );
        state.committed = permissions.clone();
        state.status = Status::Complete;
        state.seq += 1;
        let seq = state.seq;
        state.queue.push_back(Job::Completion { seq, permissions });
    }

    /// Delivers the queue on this thread, unless a thread is delivering already (this one, further
    /// up its stack, or another one): that thread delivers the new work after what it is doing, and
    /// this call returns at once. No thread ever waits for another here, so a subscriber that
    /// blocks on something another thread holds while calling the service cannot deadlock it.
    fn run(&self, mut state: MutexGuard<'_, State>) {
        if state.deliverer.is_some() || state.queue.is_empty() {
            return;
        }
        state.deliverer = Some(thread::current().id());
        drop(state);
        self.deliver();
    }

    /// Delivers queued work in order until the queue is empty. Every piece of foreign code runs
    /// outside the lock and behind `catch_unwind` (see [`OptIn`]).
    fn deliver(&self) {
        let mut role = Delivering {
            inner: &self.inner,
            done: false,
        };
        loop {
            let job = {
                let mut state = self.inner.lock();
                match state.queue.pop_front() {
                    Some(job) => job,
                    None => {
                        state.deliverer = None;
                        role.done = true;
                        return;
                    }
                }
            };
            let warnings = match job {
                Job::Completion { seq, permissions } => self.deliver_completion(seq, &permissions),
                Job::First { id, permissions } => {
                    // A subscriber dropped before its first call is not called at all.
                    let subscriber = self.inner.lock().subscriber(id);
                    subscriber
                        .and_then(|subscriber| guarded(move || subscriber(&permissions)))
                        .into_iter()
                        .collect()
                }
                Job::Memoise { hash } => self
                    .write_cookie(COOKIE_NAME, |object| {
                        object.assign(IAB_CONSENT_HASH_KEY, Value::String(hash));
                    })
                    .err()
                    .into_iter()
                    .collect(),
            };
            self.inner.warn_all(warnings);
        }
    }

    /// One completion: subscribers, then the cookie, then one-shot callbacks, then futures and
    /// watches. Returns the warnings of the foreign code it ran.
    fn deliver_completion(&self, seq: u64, permissions: &Permissions) -> Vec<Warning> {
        let mut warnings = Vec::new();
        // Subscribers in subscription order, each looked up just before its call: one dropped
        // meanwhile (even by an earlier subscriber of this delivery) is not called, nor is one that
        // subscribed after this completion changed the state.
        let mut after = 0;
        loop {
            let next = self.inner.lock().next_subscriber(after, seq);
            let Some((id, subscriber)) = next else {
                break;
            };
            after = id;
            warnings.extend(guarded(move || subscriber(permissions)));
        }
        if self.inner.storage_enabled {
            warnings.extend(self.write_permissions(permissions));
        }
        let one_shots = self.inner.lock().take_one_shots(seq);
        for callback in one_shots {
            warnings.extend(guarded(move || callback(permissions)));
        }
        let wakers: Vec<Waker> = {
            let mut state = self.inner.lock();
            state.delivered = seq;
            state.last_delivered = Some(permissions.clone());
            state
                .waiters
                .iter_mut()
                .filter_map(|waiter| {
                    if waiter.takes_answer {
                        if waiter.since >= seq || waiter.answer.is_some() {
                            return None;
                        }
                        waiter.answer = Some(permissions.clone());
                    }
                    waiter.waker.take()
                })
                .collect()
        };
        for waker in wakers {
            warnings.extend(guarded(move || waker.wake()));
        }
        warnings
    }

    /// Writes a completion's permissions: the built-in categories to `adobeujs-optin`, the custom
    /// ones to [`CUSTOM_COOKIE_NAME`].
    fn write_permissions(&self, permissions: &Permissions) -> Vec<Warning> {
        let registry = &self.inner.registry;
        let builtin = Category::BUILTIN.len();
        let mut warnings = Vec::new();
        let written = self.write_cookie(COOKIE_NAME, |object| {
            for (category, approved) in permissions.iter().take(builtin) {
                object.assign(category.as_str(), Value::Bool(approved));
            }
            // An older release kept the custom categories here, which VisitorAPI.js reads as an
            // invalid cookie: they move to their own cookie. Keys this service does not know stay.
            for category in registry.custom() {
                object.remove(category.as_str());
            }
        });
        warnings.extend(written.err());
        if !registry.custom().is_empty() {
            let written = self.write_cookie(CUSTOM_COOKIE_NAME, |object| {
                for (category, approved) in permissions.iter().skip(builtin) {
                    object.assign(category.as_str(), Value::Bool(approved));
                }
            });
            warnings.extend(written.err());
        }
        warnings
    }

    /// Read-merge-write of a cookie (`Object.assign(existing, new)`), as 5.x does so that the
    /// permissions and `iabConsentHash` keep each other. Only the delivering thread calls it, so
    /// two writes never interleave.
    fn write_cookie(&self, name: &str, merge: impl FnOnce(&mut JsonObject)) -> Result<(), Warning> {
        let (Some(storage), Some(expires)) = (&self.inner.storage, self.inner.cookie_expiry) else {
            return Ok(());
        };
        // A jar that cannot be read is not written: the write would lose the keys already there
        // (the IAB hash, other configurations' categories).
        let existing = get_cookie(storage.as_ref(), name)?;
        // An unparseable cookie is replaced, as the reference's `storage.get()` falls back to `{}`.
        let mut object = existing
            .and_then(|raw| parse_cookie(&raw).ok())
            .unwrap_or_default();
        merge(&mut object);
        let value = encode_uri_component(&object.to_json());
        let cookie = CookieWrite {
            name,
            value: &value,
            domain: self.inner.cookie_domain.as_deref(),
            path: "/",
            expires,
            secure: self.inner.secure_cookie,
        };
        match catch_unwind(AssertUnwindSafe(|| storage.set(&cookie))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Warning::StorageWriteFailed(error)),
            Err(payload) => Err(Warning::StorageWriteFailed(StorageError::Backend(format!(
                "the cookie jar panicked: {}",
                panic_message(payload.as_ref())
            )))),
        }
    }
}

/// The deliverer role of one thread. If delivery unwinds (a bug in this crate: foreign code is
/// caught), the role is given up, so that the next completion starts delivering again.
struct Delivering<'a> {
    inner: &'a Inner,
    done: bool,
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.inner.lock().deliverer = None;
        }
    }
}

impl State {
    /// The subscriber with this id, if it is still subscribed.
    fn subscriber(&self, id: u64) -> Option<Subscriber> {
        let index = self.subscribers.binary_search_by_key(&id, |e| e.id).ok()?;
        Some(Arc::clone(&self.subscribers[index].subscriber))
    }

    /// The first subscriber after id `after` that subscribed before completion `seq`.
    fn next_subscriber(&self, after: u64, seq: u64) -> Option<(u64, Subscriber)> {
        let start = self.subscribers.partition_point(|entry| entry.id <= after);
        self.subscribers[start..]
            .iter()
            .find(|entry| entry.since < seq)
            .map(|entry| (entry.id, Arc::clone(&entry.subscriber)))
    }

    /// Takes the one-shot callbacks registered before completion `seq`.
    fn take_one_shots(&mut self, seq: u64) -> Vec<OneShot> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.one_shots)
            .into_iter()
            .partition(|pending| pending.since < seq);
        self.one_shots = later;
        due.into_iter().map(|pending| pending.callback).collect()
    }
}

impl Inner {
    /// The state lock. No foreign code runs under it, and nothing foreign is dropped under it, so
    /// a poisoned lock only means a panic in this crate between two consistent states; carrying on
    /// is safe.
    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn warn_all(&self, warnings: impl IntoIterator<Item = Warning>) {
        let mut warnings = warnings.into_iter().peekable();
        if warnings.peek().is_some() {
            let mut state = self.lock();
            for warning in warnings {
                state.warn(warning);
            }
        }
    }

    fn forget_waiter(&self, id: u64) {
        let removed = {
            let mut state = self.lock();
            let index = state.waiters.iter().position(|waiter| waiter.id == id);
            index.map(|index| state.waiters.swap_remove(index))
        };
        // Its waker is dropped here, outside the lock.
        drop(removed);
    }
}

/// A subscription made with [`OptIn::on_complete`] or [`OptIn::subscribe_permissions`]; dropping it
/// unsubscribes exactly this subscriber, at once (see [`OptIn`]).
#[must_use = "dropping a Subscription unsubscribes at once"]
pub struct Subscription {
    inner: Weak<Inner>,
    id: Option<u64>,
}

impl Subscription {
    /// Unsubscribes now (the same as dropping it).
    pub fn unsubscribe(self) {}

    /// Keeps the subscriber for the life of the service.
    pub fn detach(mut self) {
        self.id = None;
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let (Some(id), Some(inner)) = (self.id, self.inner.upgrade()) {
            let removed = {
                let mut state = inner.lock();
                let index = state.subscribers.binary_search_by_key(&id, |e| e.id).ok();
                index.map(|index| state.subscribers.remove(index))
            };
            // Dropped here, outside the lock: a subscriber's captures may be anything, even another
            // `Subscription` of this service.
            drop(removed);
        }
    }
}

/// The future of [`OptIn::fetch_permissions`].
#[must_use = "futures do nothing unless polled"]
pub struct FetchPermissions {
    inner: Arc<Inner>,
    immediate: Option<Permissions>,
    /// The waiter registered when the answer was not available at once.
    id: Option<u64>,
}

impl fmt::Debug for FetchPermissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchPermissions")
            .field("immediate", &self.immediate)
            .finish_non_exhaustive()
    }
}

/// Polls a waiter: the waker is cloned, and the wakers let go of are dropped, outside the lock.
fn poll_waiter(inner: &Inner, id: u64, cx: &Context<'_>) -> Poll<Permissions> {
    let waker = cx.waker().clone();
    let (poll, dropped) = inner.lock().poll_answer(id, waker);
    drop(dropped);
    poll
}

impl Future for FetchPermissions {
    type Output = Permissions;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permissions> {
        let this = self.get_mut();
        if let Some(permissions) = this.immediate.take() {
            return Poll::Ready(permissions);
        }
        match this.id {
            Some(id) => poll_waiter(&this.inner, id, cx),
            None => Poll::Pending,
        }
    }
}

impl Drop for FetchPermissions {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner.forget_waiter(id);
        }
    }
}

/// The future of [`OptIn::wait_for`]: whether the category is approved.
#[must_use = "futures do nothing unless polled"]
pub struct WaitFor {
    inner: Arc<Inner>,
    slot: usize,
    immediate: Option<bool>,
    /// The waiter registered when the answer was not available at once.
    id: Option<u64>,
}

impl fmt::Debug for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitFor")
            .field("category", &self.inner.registry.all()[self.slot])
            .field("immediate", &self.immediate)
            .finish_non_exhaustive()
    }
}

impl Future for WaitFor {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.get_mut();
        if let Some(approved) = this.immediate {
            return Poll::Ready(approved);
        }
        match this.id {
            Some(id) => {
                poll_waiter(&this.inner, id, cx).map(|permissions| permissions.values()[this.slot])
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for WaitFor {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner.forget_waiter(id);
        }
    }
}

/// A watch of completions, made with [`OptIn::changes`].
///
/// ```
/// use consent_optin::{OptIn, OptInConfig};
///
/// let optin = OptIn::new(OptInConfig::builder().does_opt_in_apply(true).build()?);
/// let mut changes = optin.changes();
/// assert!(changes.try_next().is_none());
/// optin.approve_all();
/// assert!(changes.try_next().is_some_and(|p| p.is_approved(&[])));
/// assert!(changes.try_next().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Changes {
    inner: Arc<Inner>,
    seen: u64,
    id: u64,
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl Changes {
    /// The permissions of the latest completion not yet returned, without waiting.
    pub fn try_next(&mut self) -> Option<Permissions> {
        let inner = Arc::clone(&self.inner);
        let state = inner.lock();
        self.take(&state)
    }

    fn take(&mut self, state: &State) -> Option<Permissions> {
        if state.delivered > self.seen {
            self.seen = state.delivered;
            state.last_delivered.clone()
        } else {
            None
        }
    }

    /// Waits for the next completion and resolves to its permissions.
    pub fn changed(&mut self) -> NextChange<'_> {
        NextChange { changes: self }
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.inner.forget_waiter(self.id);
    }
}

/// The future of [`Changes::changed`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct NextChange<'a> {
    changes: &'a mut Changes,
}

impl Future for NextChange<'_> {
    type Output = Permissions;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permissions> {
        let changes = &mut *self.get_mut().changes;
        let inner = Arc::clone(&changes.inner);
        // Cloned, and the replaced waker dropped, outside the lock: a waker is foreign code.
        let waker = cx.waker().clone();
        let mut state = inner.lock();
        let (poll, dropped) = match changes.take(&state) {
            Some(permissions) => (Poll::Ready(permissions), Dropped::waker(Some(waker))),
            None => (Poll::Pending, state.set_waker(changes.id, waker)),
        };
        drop(state);
        drop(dropped);
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_and_futures_are_send_and_sync() {
        assert_send_sync::<OptIn>();
        assert_send_sync::<Subscription>();
        assert_send_sync::<FetchPermissions>();
        assert_send_sync::<WaitFor>();
        assert_send_sync::<Changes>();
    }

    #[test]
    fn warnings_are_bounded() {
        let optin = OptIn::new(OptInConfig::default());
        for i in 0..(MAX_WARNINGS + 5) {
            optin.inner.lock().warn(Warning::SubscriberPanicked {
                message: i.to_string(),
            });
        }
        let warnings = optin.warnings();
        assert_eq!(warnings.len(), MAX_WARNINGS);
        assert_eq!(
            warnings[0],
            Warning::SubscriberPanicked {
                message: "5".into()
            }
        );
    }

    #[test]
    fn a_panicking_subscriber_poisons_no_lock_and_leaves_no_deliverer() {
        let optin = OptIn::new(
            OptInConfig::builder()
                .does_opt_in_apply(true)
                .build()
                .unwrap(),
        );
        let _subscription = optin.on_complete(|_| panic!("on fire"));
        optin.fetch_permissions_with(|_| panic!("one-shot on fire"));
        optin.approve_all();
        assert!(!optin.inner.state.is_poisoned());
        let state = optin.inner.lock();
        assert!(state.deliverer.is_none() && state.queue.is_empty());
        assert_eq!(state.warnings.len(), 2);
    }

    #[test]
    fn dropped_futures_and_watches_forget_their_waiters() {
        let optin = OptIn::new(
            OptInConfig::builder()
                .does_opt_in_apply(true)
                .build()
                .unwrap(),
        );
        let mut future = Box::pin(optin.fetch_permissions());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(optin.inner.lock().waiters.len(), 1);
        drop(future);
        assert!(optin.inner.lock().waiters.is_empty());
        let mut changes = optin.changes();
        assert!(
            Box::pin(changes.changed())
                .as_mut()
                .poll(&mut cx)
                .is_pending()
        );
        assert_eq!(optin.inner.lock().waiters.len(), 1);
        drop(changes);
        assert!(optin.inner.lock().waiters.is_empty());
    }
}
