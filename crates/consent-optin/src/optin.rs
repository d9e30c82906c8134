//! The service itself: state, workflow, subscriptions and the cookie.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use serde_json::Value;

use crate::category::{Category, Registry};
use crate::config::{Lazy, OptInConfig};
use crate::iab::{
    ApplyTcfError, IAB_CONSENT_HASH_KEY, IabOutcome, TCF_CATEGORIES, TcfSignal, iab_consent_hash,
    tcf_approves,
};
use crate::permissions::{
    Invalid, JsonObject, Permissions, PermissionsInput, evaluate, is_approved_in,
};
use crate::storage::{
    COOKIE_NAME, CookieExpiry, CookieWrite, OptInStorage, StorageError, decode_uri_component,
    encode_uri_component, resolve_domain,
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
    /// `previousPermissions` was not a valid permissions object and was ignored.
    InvalidPreviousPermissions {
        /// Why it was refused.
        reason: String,
    },
    /// `preOptInApprovals` was not a valid permissions object and was ignored.
    InvalidPreOptInApprovals {
        /// Why it was refused.
        reason: String,
    },
    /// The stored cookie could not be read as permissions and was ignored.
    InvalidStoredPermissions {
        /// Why it was refused.
        reason: String,
    },
    /// Writing the cookie failed; the permissions in memory are unaffected.
    StorageWriteFailed(StorageError),
    /// A subscriber or callback panicked; the others and the cookie write still ran.
    SubscriberPanicked {
        /// The panic message, when it was a string.
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
                write!(
                    f,
                    "[ADOBE OPT-IN] Invalid `{COOKIE_NAME}` cookie ignored ({reason})"
                )
            }
            Warning::StorageWriteFailed(error) => {
                write!(
                    f,
                    "[ADOBE OPT-IN] Could not write the `{COOKIE_NAME}` cookie: {error}"
                )
            }
            Warning::SubscriberPanicked { message } => {
                write!(f, "[ADOBE OPT-IN] A subscriber panicked: {message}")
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
/// out clones (the reference keeps one `adobe.optIn` per page). It is `Send + Sync`; every method
/// is synchronous and needs no async runtime, and the futures it returns work on any executor.
///
/// Subscribers run on the thread whose call completed the workflow, after the state changed and
/// outside every lock, so they may call back into the service. Completions are delivered one at a
/// time in order: a completion caused while another is being delivered (from a subscriber, or from
/// another thread) is delivered by the thread already delivering, right after.
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
    storage: Option<Arc<dyn OptInStorage>>,
    storage_enabled: bool,
    cookie_domain: Option<String>,
    cookie_expiry: Option<CookieExpiry>,
    secure_cookie: bool,
    state: Mutex<State>,
    /// Serialises read-merge-write of the cookie, so the permissions and the IAB hash never
    /// overwrite each other.
    cookie_lock: Mutex<()>,
}

struct State {
    status: Status,
    committed: Permissions,
    /// The reference's `preCompletePermissions`, kept apart from `committed` so staged choices stay
    /// invisible until `complete()` (the reference aliased the two after the first completion).
    staged: Vec<bool>,
    queue: VecDeque<Permissions>,
    delivering: bool,
    delivered: u64,
    last_delivered: Option<Permissions>,
    subscribers: Vec<(u64, Subscriber)>,
    one_shots: Vec<OneShot>,
    waiters: Vec<Waiter>,
    next_id: u64,
    warnings: VecDeque<Warning>,
    last_tc_string: Option<String>,
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
            answer: None,
            waker: None,
            takes_answer: true,
        });
        id
    }

    /// The answer of a future registered with `wait_for_next`, or `Pending` after storing its waker.
    fn poll_answer(&mut self, id: u64, waker: &Waker) -> Poll<Permissions> {
        let Some(index) = self.waiters.iter().position(|w| w.id == id) else {
            // Registered at creation and removed only here or on drop; treat a missing entry as a
            // spurious poll after `Ready`.
            return Poll::Pending;
        };
        if let Some(answer) = self.waiters[index].answer.take() {
            self.waiters.swap_remove(index);
            return Poll::Ready(answer);
        }
        self.waiters[index].waker = Some(waker.clone());
        Poll::Pending
    }

    /// Stores the waker of a watch, which reads its answer from `last_delivered` instead.
    fn set_waker(&mut self, id: u64, waker: &Waker) {
        match self.waiters.iter_mut().find(|w| w.id == id) {
            Some(waiter) => waiter.waker = Some(waker.clone()),
            None => self.waiters.push(Waiter {
                id,
                answer: None,
                waker: Some(waker.clone()),
                takes_answer: false,
            }),
        }
    }
}

/// A future waiting for a completion.
struct Waiter {
    id: u64,
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

fn parse_input(registry: &Registry, input: &PermissionsInput) -> Result<Vec<Option<bool>>, String> {
    let object = input
        .to_object()
        .map_err(|e| format!("not a JSON object: {e}"))?;
    evaluate(registry, &object).map_err(|e| e.to_string())
}

fn read_cookie(storage: &dyn OptInStorage) -> Result<Option<JsonObject>, String> {
    let Some(raw) = storage.get(COOKIE_NAME) else {
        return Ok(None);
    };
    let text = decode_uri_component(&raw).ok_or("not URI-encoded")?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("not a JSON object: {e}"))
}

/// Runs a subscriber or callback; a panic becomes a warning instead of unwinding through delivery.
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

impl OptIn {
    /// Builds the service: runs the configuration's closures once, reads the cookie when storage is
    /// enabled, and computes the initial state.
    ///
    /// Permissions start as every category approved when opt-in does not apply, else denied and
    /// overlaid with `preOptInApprovals`, then `previousPermissions`, then the cookie (the cookie
    /// wins). The status is [`Status::Complete`] when `previousPermissions` or the cookie held valid,
    /// non-empty permissions, else [`Status::Pending`], whatever `does_opt_in_apply` says. Invalid
    /// inputs are ignored whole and recorded in [`warnings`](Self::warnings).
    pub fn new(config: OptInConfig) -> OptIn {
        let registry = Arc::new(Registry::new(&config.custom_categories));
        let does_opt_in_apply = config.does_opt_in_apply.evaluate();
        let mut warnings = Vec::new();

        let mut parse = |input: &PermissionsInput, warning: fn(String) -> Warning| {
            parse_input(&registry, input)
                .map_err(|reason| warnings.push(warning(reason)))
                .ok()
        };
        let previous = config
            .previous_permissions
            .map(Lazy::evaluate)
            .and_then(|input| {
                parse(&input, |reason| Warning::InvalidPreviousPermissions {
                    reason,
                })
            });
        let pre_given = config.pre_opt_in_approvals.is_some();
        let pre = config
            .pre_opt_in_approvals
            .as_ref()
            .and_then(|input| parse(input, |reason| Warning::InvalidPreOptInApprovals { reason }));
        let cookie = config
            .storage
            .as_deref()
            .filter(|_| config.is_opt_in_storage_enabled)
            .map(read_cookie);
        let stored = match cookie {
            Some(Ok(Some(object))) => match evaluate(&registry, &object) {
                Ok(slots) => Some(slots),
                // A cookie that holds only the IAB hash is no choice, and no mistake either.
                Err(Invalid::NoCategory) => None,
                Err(reason) => {
                    let reason = reason.to_string();
                    warnings.push(Warning::InvalidStoredPermissions { reason });
                    None
                }
            },
            Some(Err(reason)) => {
                warnings.push(Warning::InvalidStoredPermissions { reason });
                None
            }
            Some(Ok(None)) | None => None,
        };

        let status = if previous.is_some() || stored.is_some() {
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

        let cookie_domain = resolve_domain(
            config.opt_in_cookie_domain.as_deref(),
            config.cookie_domain.as_deref(),
            config.host.as_deref(),
            config.storage.as_deref(),
        );
        let committed = Permissions::new(Arc::clone(&registry), values.clone().into());
        let mut state = State {
            status,
            committed,
            staged: values,
            queue: VecDeque::new(),
            delivering: false,
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
                storage: config.storage,
                storage_enabled: config.is_opt_in_storage_enabled,
                cookie_domain,
                cookie_expiry: config.opt_in_storage_expiry.cookie_expiry(),
                secure_cookie: config.secure_cookie,
                state: Mutex::new(state),
                cookie_lock: Mutex::new(()),
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

    /// Whether every listed category is approved; an empty list asks whether all are. An unknown
    /// category is not approved. Takes one uncontended lock and allocates nothing.
    pub fn is_approved(&self, categories: &[Category]) -> bool {
        let state = self.inner.lock();
        is_approved_in(&self.inner.registry, state.committed.values(), categories)
    }

    /// [`is_approved`](Self::is_approved) against `preOptInApprovals` alone: without valid
    /// pre-approvals nothing is pre-approved.
    pub fn is_pre_approved(&self, categories: &[Category]) -> bool {
        let Some(pre) = &self.inner.pre_approvals else {
            return false;
        };
        if categories.is_empty() {
            return pre.iter().flatten().all(|approved| *approved);
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

    /// The reference's `fetchPermissions(callback, true)`: calls `subscriber` at once when
    /// permissions are available (see [`fetch_permissions`](Self::fetch_permissions)), and at every
    /// later completion until the returned [`Subscription`] is dropped.
    pub fn subscribe_permissions<F>(&self, subscriber: F) -> Subscription
    where
        F: Fn(&Permissions) + Send + Sync + 'static,
    {
        self.subscribe(Arc::new(subscriber), true)
    }

    fn subscribe(&self, subscriber: Subscriber, call_now: bool) -> Subscription {
        let (id, now) = {
            let mut state = self.inner.lock();
            let id = state.id();
            state.subscribers.push((id, Arc::clone(&subscriber)));
            (id, call_now.then(|| self.available_now(&state)).flatten())
        };
        let subscription = Subscription {
            inner: Arc::downgrade(&self.inner),
            id: Some(id),
        };
        if let Some(permissions) = now {
            subscriber(&permissions);
        }
        subscription
    }

    /// The reference's `fetchPermissions(callback)`: calls `callback` once, at once when
    /// permissions are available, else at the next completion.
    pub fn fetch_permissions_with<F>(&self, callback: F)
    where
        F: FnOnce(&Permissions) + Send + 'static,
    {
        let now = {
            let mut state = self.inner.lock();
            match self.available_now(&state) {
                Some(now) => now,
                None => {
                    state.one_shots.push(Box::new(callback));
                    return;
                }
            }
        };
        callback(&now);
    }

    /// Resolves to the permissions at once when opt-in does not apply, the status is complete or
    /// `preOptInApprovals` was given; otherwise at the next completion.
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
    /// when it is approved already, the status is complete or opt-in does not apply; otherwise at the
    /// next completion (which decides it either way).
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
    /// completion after the last one it returned (completions in between are skipped, as a watch
    /// does); [`Changes::try_next`] asks without waiting.
    pub fn changes(&self) -> Changes {
        let mut state = self.inner.lock();
        Changes {
            inner: Arc::clone(&self.inner),
            seen: state.delivered,
            id: state.id(),
        }
    }

    /// Applies a TCF v2 signal (the reference's IAB plugin): `aam` and `ecid` are approved exactly
    /// when vendor 565 and purposes 1 and 10 have consent, as one workflow completion (one event);
    /// other categories are untouched. The hash of the TC string is memoised as `iabConsentHash` in
    /// the cookie whenever a cookie jar is configured (as the reference does, even with storage
    /// disabled). A TC string already applied by this service completes nothing; a new one is
    /// evaluated again.
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
        let memoised = self.inner.storage.as_deref().and_then(|storage| {
            match read_cookie(storage).ok()??.get(IAB_CONSENT_HASH_KEY)? {
                Value::String(hash) => Some(hash.clone()),
                _ => None,
            }
        });
        let has_changed = memoised.as_deref() != Some(consent_hash.as_str());
        let approved = tcf_approves(signal);

        let mut state = self.inner.lock();
        let completed = state.last_tc_string.as_deref() != Some(tc_string);
        if completed {
            state.last_tc_string = Some(tc_string.to_owned());
            state.status = Status::Changed;
            for category in &TCF_CATEGORIES {
                if let Some(slot) = self.inner.registry.index_of(category) {
                    state.staged[slot] = approved;
                }
            }
            self.commit(state);
        } else {
            drop(state);
        }
        if has_changed {
            let written = self.write_cookie(|object| {
                object.assign(IAB_CONSENT_HASH_KEY, Value::String(consent_hash.clone()));
            });
            if let Err(warning) = written {
                self.inner.lock().warn(warning);
            }
        }
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

    /// Makes the staged permissions the permissions in force and delivers the event, unless another
    /// call is delivering already (then that call delivers it next).
    fn commit(&self, mut state: MutexGuard<'_, State>) {
        let permissions = Permissions::new(
            Arc::clone(&self.inner.registry),
            state.staged.clone().into(),
        );
        state.committed = permissions.clone();
        state.status = Status::Complete;
        state.queue.push_back(permissions);
        if state.delivering {
            return;
        }
        state.delivering = true;
        drop(state);
        self.deliver();
    }

    /// Delivers queued completions in order: subscribers, then the cookie, then one-shot callbacks,
    /// then futures. Every piece of foreign code runs outside the lock and behind `catch_unwind`, so
    /// a panicking subscriber stops neither the others nor the cookie write.
    fn deliver(&self) {
        loop {
            let (event, subscribers) = {
                let mut state = self.inner.lock();
                match state.queue.pop_front() {
                    Some(event) => {
                        let subscribers: Vec<Subscriber> = state
                            .subscribers
                            .iter()
                            .map(|(_, s)| Arc::clone(s))
                            .collect();
                        (event, subscribers)
                    }
                    None => {
                        state.delivering = false;
                        return;
                    }
                }
            };
            let mut warnings: Vec<Warning> = subscribers
                .iter()
                .filter_map(|subscriber| guarded(|| subscriber(&event)))
                .collect();
            if self.inner.storage_enabled {
                let written = self.write_cookie(|object| {
                    for (category, approved) in event.iter() {
                        object.assign(category.as_str(), Value::Bool(approved));
                    }
                });
                warnings.extend(written.err());
            }
            let one_shots = std::mem::take(&mut self.inner.lock().one_shots);
            warnings.extend(
                one_shots
                    .into_iter()
                    .filter_map(|callback| guarded(|| callback(&event))),
            );
            let wakers: Vec<Waker> = {
                let mut state = self.inner.lock();
                state.delivered += 1;
                for warning in warnings {
                    state.warn(warning);
                }
                let wakers = state
                    .waiters
                    .iter_mut()
                    .filter_map(|waiter| {
                        if waiter.takes_answer && waiter.answer.is_none() {
                            waiter.answer = Some(event.clone());
                        }
                        waiter.waker.take()
                    })
                    .collect();
                state.last_delivered = Some(event);
                wakers
            };
            for waker in wakers {
                waker.wake();
            }
        }
    }

    /// Read-merge-write of the cookie (`Object.assign(existing, new)`), as 5.x does so that the
    /// permissions and `iabConsentHash` keep each other.
    fn write_cookie(&self, merge: impl FnOnce(&mut JsonObject)) -> Result<(), Warning> {
        let (Some(storage), Some(expires)) = (&self.inner.storage, self.inner.cookie_expiry) else {
            return Ok(());
        };
        let _serialised = self
            .inner
            .cookie_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // An unreadable cookie is replaced, as the reference's `storage.get()` falls back to `{}`.
        let mut object = read_cookie(storage.as_ref())
            .ok()
            .flatten()
            .unwrap_or_default();
        merge(&mut object);
        let value = encode_uri_component(&object.to_json());
        let cookie = CookieWrite {
            name: COOKIE_NAME,
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

impl Inner {
    /// The state lock. Foreign code never runs under it, so a poisoned lock only means a panic in
    /// this crate between two consistent states; carrying on is safe.
    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget_waiter(&self, id: u64) {
        self.lock().waiters.retain(|waiter| waiter.id != id);
    }
}

/// A subscription made with [`OptIn::on_complete`] or [`OptIn::subscribe_permissions`]; dropping it
/// unsubscribes exactly this subscriber.
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
            inner.lock().subscribers.retain(|(known, _)| *known != id);
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

impl Future for FetchPermissions {
    type Output = Permissions;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permissions> {
        let this = self.get_mut();
        if let Some(permissions) = this.immediate.take() {
            return Poll::Ready(permissions);
        }
        match this.id {
            Some(id) => this.inner.lock().poll_answer(id, cx.waker()),
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
            Some(id) => this
                .inner
                .lock()
                .poll_answer(id, cx.waker())
                .map(|permissions| permissions.values()[this.slot]),
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
        let mut state = inner.lock();
        match changes.take(&state) {
            Some(permissions) => Poll::Ready(permissions),
            None => {
                state.set_waker(changes.id, cx.waker());
                Poll::Pending
            }
        }
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
