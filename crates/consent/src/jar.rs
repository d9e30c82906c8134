//! The client's cookie jar: shared by the engine's driver, the HTTP transport and the Opt-in
//! Service, saved to the data directory after every change.

use std::sync::{Arc, Mutex, PoisonError};

use consent_core::{Action, CookieNames, StoredCookie};
use consent_optin::{CookieExpiry, CookieWrite, OptInStorage, StorageError};
use consent_store::cookie_store::CookieStore;
use consent_transport::{CookieJar, JarError};
use url::Url;

pub(crate) type Saver = Box<dyn Fn(&CookieStore) -> Result<(), String> + Send>;

/// The jar in memory, the URL its cookies belong to, and how it is saved. Saves are serialized by
/// one lock, so the driver and the Opt-in Service never write the file at the same time.
#[derive(Clone)]
pub(crate) struct SharedJar {
    inner: Arc<Inner>,
}

struct Inner {
    jar: CookieJar,
    url: Url,
    names: CookieNames,
    saver: Mutex<Option<Saver>>,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SharedJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedJar")
            .field("url", &self.inner.url.as_str())
            .finish_non_exhaustive()
    }
}

impl SharedJar {
    pub(crate) fn new(jar: CookieJar, url: Url, names: CookieNames, saver: Option<Saver>) -> Self {
        Self {
            inner: Arc::new(Inner {
                jar,
                url,
                names,
                saver: Mutex::new(saver),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The consent cookie and whether the identity cookie is there, for the engine's start.
    pub(crate) fn stored(&self) -> (Option<StoredCookie>, bool) {
        self.inner.jar.stored(&self.inner.url, &self.inner.names)
    }

    /// Carries out a cookie action of the engine.
    pub(crate) fn apply(&self, action: &Action) -> Result<bool, JarError> {
        self.inner.jar.apply(action, &self.inner.url)
    }

    /// The value of a cookie.
    pub(crate) fn value(&self, name: &str) -> Option<String> {
        self.inner.jar.value(&self.inner.url, name)
    }

    /// Writes the jar to the data directory (nothing for an in-memory client, or once closed).
    pub(crate) fn save(&self) -> Result<(), String> {
        let saver = self
            .inner
            .saver
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match saver.as_ref() {
            Some(save) => save(&self.inner.jar.lock()),
            None => Ok(()),
        }
    }

    /// Stops saving, and lets go of the data directory's files.
    /// Stops the writes of the Opt-in Service, saves the jar a last time (whatever it holds by
    /// then), and lets go of the data directory's files. Under the saver's lock, so no write can
    /// slip in between the last save and the close.
    pub(crate) fn close(&self) {
        let mut saver = self
            .inner
            .saver
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(save) = saver.as_ref()
            && let Err(e) = save(&self.inner.jar.lock())
        {
            tracing::error!("cannot save the cookie jar at shutdown: {e}");
        }
        *saver = None;
    }

    /// Carries out a write of the Opt-in Service unless the client is closed, under the saver's
    /// lock (see [`close`](Self::close)).
    pub(crate) fn write_if_open(&self, action: &Action) -> Result<(), StorageError> {
        let _saver = self
            .inner
            .saver
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.is_closed() {
            return Err(StorageError::Backend(
                "the consent client is shut down".to_owned(),
            ));
        }
        self.apply(action)
            .map(drop)
            .map_err(|e| StorageError::Rejected(e.to_string()))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The Opt-in Service's storage: the `adobeujs-optin` cookies in the client's jar. The client's
/// thread saves the jar, so the caller of the Opt-in Service never waits for the disk.
pub(crate) struct OptInJar {
    pub(crate) jar: SharedJar,
    /// Tells the client's thread that the jar changed (so that it saves it); `false` when the
    /// thread is gone.
    pub(crate) changed: Box<dyn Fn() -> bool + Send + Sync>,
}

impl OptInStorage for OptInJar {
    fn get(&self, name: &str) -> Option<String> {
        self.jar.value(name)
    }

    fn set(&self, cookie: &CookieWrite<'_>) -> Result<(), StorageError> {
        let max_age = match cookie.expires {
            CookieExpiry::After(d) => Some(d.as_secs()),
            _ => None,
        };
        let mut write = consent_core::Cookie::new(cookie.name, cookie.value, max_age);
        write.secure = cookie.secure;
        self.jar.write_if_open(&Action::StoreCookie(write))?;
        if (self.changed)() {
            Ok(())
        } else {
            Err(StorageError::Backend(
                "the consent client is shut down".to_owned(),
            ))
        }
    }
}
