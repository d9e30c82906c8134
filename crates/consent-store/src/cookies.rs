//! The persistent cookie jar.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cookie_store::CookieStore;

use crate::fsutil::{FsError, read_optional, write_atomic};
use crate::io::{DirLock, DiskIo, Io};

/// A [`CookieStore`] saved to one file, replaced atomically.
///
/// The jar holds no cookies itself: [`load`](Self::load) returns a [`CookieStore`] and
/// [`save`](Self::save) writes one. That keeps the HTTP client out of this crate: to share the cookies
/// with `reqwest`, wrap the loaded store in `reqwest_cookie_store::CookieStoreMutex` (version 0.10
/// uses `cookie_store` 0.22, the version re-exported as [`crate::cookie_store`]) and save what it
/// holds after each response (this crate does not depend on `reqwest`, so this sketch is not
/// compiled here):
///
/// ```text
/// let jar = Arc::new(reqwest_cookie_store::CookieStoreMutex::new(store.cookie_jar().load()?));
/// let client = reqwest::Client::builder().cookie_provider(Arc::clone(&jar)).build()?;
/// // ... after a response:
/// store.cookie_jar().save(&jar.lock().unwrap())?;
/// ```
///
/// Only persistent, unexpired cookies are written, and cookies that expired while the program was
/// not running are dropped on load. Session cookies (no `Expires`/`Max-Age`) live only in memory.
///
/// ```
/// use consent_store::MemoryStore;
/// let store = MemoryStore::in_memory();
/// let mut cookies = store.cookie_jar().load()?;
/// let url = "https://example.com/".parse()?;
/// cookies.parse("kndctr_ORG_consent=general%3Din; Max-Age=15552000", &url)?;
/// store.cookie_jar().save(&cookies)?;
/// assert!(store.cookie_jar().load()?.get("example.com", "/", "kndctr_ORG_consent").is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct CookieJar<I: Io = DiskIo> {
    io: I,
    path: PathBuf,
    /// The data directory's lock, when opened from a [`Store`](crate::Store): held as long as this is.
    lock: Option<Arc<DirLock>>,
}

/// Why the cookie jar could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadCookiesError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] FsError),
    /// The file is not a valid cookie jar.
    #[error("cookie jar {} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What `cookie_store` reported.
        #[source]
        source: cookie_store::Error,
    },
}

/// Why the cookie jar could not be saved; the previous file is still in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveCookiesError {
    /// The cookies could not be serialized.
    #[error("cannot serialize the cookie jar")]
    Encode(#[source] cookie_store::Error),
    /// A write, sync or rename failed.
    #[error(transparent)]
    Io(#[from] FsError),
}

impl<I: Io> CookieJar<I> {
    /// A cookie jar kept in the file at `path`.
    pub fn new(io: I, path: impl Into<PathBuf>) -> Self {
        Self {
            io,
            path: path.into(),
            lock: None,
        }
    }

    /// Keeps the data directory's lock alive as long as this jar.
    pub(crate) fn holding(mut self, lock: Arc<DirLock>) -> Self {
        self.lock = Some(lock);
        self
    }

    /// The file the cookies live in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the saved cookies, without the expired ones; an empty store when nothing was saved.
    pub fn load(&self) -> Result<CookieStore, LoadCookiesError> {
        match read_optional(&self.io, &self.path)? {
            None => Ok(CookieStore::default()),
            Some(bytes) => cookie_store::serde::json::load(bytes.as_slice()).map_err(|source| {
                LoadCookiesError::Corrupt {
                    path: self.path.clone(),
                    source,
                }
            }),
        }
    }

    /// Saves the persistent, unexpired cookies of `cookies` atomically and durably.
    pub fn save(&self, cookies: &CookieStore) -> Result<(), SaveCookiesError> {
        let mut bytes = Vec::new();
        cookie_store::serde::json::save(cookies, &mut bytes).map_err(SaveCookiesError::Encode)?;
        write_atomic(&self.io, &self.path, &bytes, true)?;
        Ok(())
    }
}
