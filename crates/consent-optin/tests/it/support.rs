//! Helpers shared by the test modules: a tiny executor, a TCF signal and recorders.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use consent_optin::{
    COOKIE_NAME, Category, MemoryStorage, OptIn, OptInConfig, OptInConfigBuilder, OptInStorage,
    Permissions, Subscription, TcfSignal,
};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread, parking between polls; fails after five seconds so a
/// missing wake-up fails the test instead of hanging it.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the future was never woken");
        thread::park_timeout(left);
    }
}

/// Polls once with a waker that does nothing.
pub(crate) fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// A builder with opt-in applying.
pub(crate) fn applies() -> OptInConfigBuilder {
    OptInConfig::builder().does_opt_in_apply(true)
}

/// A builder with opt-in applying and storage enabled on `jar`.
pub(crate) fn stored(jar: &Arc<MemoryStorage>) -> OptInConfigBuilder {
    applies()
        .opt_in_storage(jar.clone())
        .is_opt_in_storage_enabled(true)
}

pub(crate) fn optin(builder: OptInConfigBuilder) -> OptIn {
    OptIn::new(builder.build().unwrap())
}

/// The decoded JSON of the opt-in cookie.
pub(crate) fn cookie_json(jar: &MemoryStorage) -> Option<String> {
    let value = jar.cookie(COOKIE_NAME)?.value;
    Some(decode(&value))
}

/// `decodeURIComponent` for the tests, written independently of the crate's.
pub(crate) fn decode(value: &str) -> String {
    let mut bytes = Vec::new();
    let mut rest = value.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = std::str::from_utf8(&tail[..2]).unwrap();
            bytes.push(u8::from_str_radix(hex, 16).unwrap());
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).unwrap()
}

/// The built-in categories approved in a snapshot, by wire value.
pub(crate) fn approved(permissions: &Permissions) -> Vec<String> {
    Category::BUILTIN
        .iter()
        .filter(|c| permissions.get(c) == Some(true))
        .map(|c| c.as_str().to_owned())
        .collect()
}

/// Records every event a subscriber receives.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    events: Arc<Mutex<Vec<Permissions>>>,
}

impl Recorder {
    pub(crate) fn subscribe(&self, optin: &OptIn) -> Subscription {
        let events = self.events.clone();
        optin.on_complete(move |p| events.lock().unwrap().push(p.clone()))
    }

    pub(crate) fn events(&self) -> Vec<Permissions> {
        self.events.lock().unwrap().clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

/// Counts calls.
#[derive(Clone, Default)]
pub(crate) struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub(crate) fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A TCF signal written by hand: the TC string and which of vendor 565 and purposes 1 and 10 have
/// consent.
#[derive(Clone, Debug)]
pub(crate) struct Tcf {
    pub(crate) tc_string: String,
    pub(crate) vendor_565: bool,
    pub(crate) purposes: Vec<u8>,
}

impl Tcf {
    pub(crate) fn new(tc_string: &str, vendor_565: bool, purposes: &[u8]) -> Tcf {
        Tcf {
            tc_string: tc_string.to_owned(),
            vendor_565,
            purposes: purposes.to_vec(),
        }
    }
}

impl TcfSignal for Tcf {
    fn tc_string(&self) -> &str {
        &self.tc_string
    }

    fn purpose_consent(&self, purpose: u8) -> bool {
        self.purposes.contains(&purpose)
    }

    fn vendor_consent(&self, vendor: u16) -> bool {
        vendor == 565 && self.vendor_565
    }
}

/// The reference's `isValidPerms` on a decoded cookie (ref. § a.4): a non-empty object whose keys
/// are all one of the eight categories or a magic key. VisitorAPI.js stays pending on a cookie that
/// fails it.
pub(crate) fn visitor_js_accepts(json: &str) -> bool {
    const KEYS: [&str; 10] = [
        "aam",
        "adcloud",
        "aa",
        "campaign",
        "ecid",
        "livefyre",
        "target",
        "mediaaa",
        "videoaa",
        "iabConsentHash",
    ];
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).unwrap();
    !object.is_empty() && object.keys().all(|key| KEYS.contains(&key.as_str()))
}

/// `encodeURIComponent` for the tests, written independently of the crate's.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Runs `f` on a thread of its own and fails the test if it has not finished within five seconds
/// (a deadlock), instead of hanging the test run.
pub(crate) fn within_five_seconds(what: &str, f: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(5)) {
        Ok(()) => worker.join().unwrap(),
        // The worker panicked: join gives its panic to this thread.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after five seconds (deadlock)")
        }
    }
}

/// A waker that panics when woken.
pub(crate) struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("waker on fire")
    }
}

/// A cookie jar around a [`MemoryStorage`] whose `get` panics on the listed calls (counted from 1)
/// and whose `accepts_domain` panics when told to.
pub(crate) struct FaultyJar {
    pub(crate) jar: MemoryStorage,
    gets: AtomicUsize,
    panicking_gets: Vec<usize>,
    pub(crate) panicking_probe: bool,
}

impl FaultyJar {
    pub(crate) fn panicking_on_gets(panicking_gets: &[usize]) -> FaultyJar {
        FaultyJar {
            jar: MemoryStorage::new(),
            gets: AtomicUsize::new(0),
            panicking_gets: panicking_gets.to_vec(),
            panicking_probe: false,
        }
    }
}

impl OptInStorage for FaultyJar {
    fn get(&self, name: &str) -> Option<String> {
        let call = self.gets.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(!self.panicking_gets.contains(&call), "get #{call} on fire");
        self.jar.get(name)
    }

    fn set(
        &self,
        cookie: &consent_optin::CookieWrite<'_>,
    ) -> Result<(), consent_optin::StorageError> {
        self.jar.set(cookie)
    }

    fn accepts_domain(&self, domain: &str) -> bool {
        assert!(!self.panicking_probe, "probe on fire");
        self.jar.accepts_domain(domain)
    }
}
