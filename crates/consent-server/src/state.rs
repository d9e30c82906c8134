//! What every handler shares: the state the server builds once and hands to each request. The
//! handler modules (`edge`, `prefs`) read it; only `server` builds it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;
use crate::db::Db;
use crate::ops::{Metrics, RateLimiter};

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) db: Db,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    /// Per client, on the public endpoints.
    pub(crate) limiter: RateLimiter,
    /// Per API key (its index in `config.keys.api_keys`), on the authenticated endpoints.
    pub(crate) api_limiter: RateLimiter<usize>,
    /// Failed authentications per client.
    pub(crate) auth_failures: RateLimiter,
    pub(crate) local_addr: SocketAddr,
    /// Whether a request with an unknown datastream has been served with the defaults (logged
    /// once, the first time).
    pub(crate) unknown_datastream_seen: AtomicBool,
}

impl AppState {
    /// The organisation and sandbox of a datastream. An unknown one gets the defaults when
    /// `allow_unknown_datastreams` is set (logged the first time), else `None`.
    pub(crate) fn datastream(&self, config_id: &str) -> Option<(String, String)> {
        if let Some(d) = self
            .config
            .keys
            .datastreams
            .iter()
            .find(|d| d.id == config_id)
        {
            return Some((d.org.clone(), d.sandbox.clone()));
        }
        if !self.config.allow_unknown_datastreams {
            return None;
        }
        if !self.unknown_datastream_seen.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                config_id,
                org = %self.config.default_org,
                sandbox = %self.config.default_sandbox,
                "a datastream that is not in the keys file is served with the default \
                 organisation and sandbox (logged once; list it under `datastreams` to map it)"
            );
        }
        Some((
            self.config.default_org.clone(),
            self.config.default_sandbox.clone(),
        ))
    }
}
