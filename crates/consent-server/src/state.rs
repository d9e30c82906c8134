//! What every handler shares: the state the server builds once and hands to each request. The
//! handler modules (`edge`, `prefs`) read it; only `server` builds it.

use std::net::SocketAddr;

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
}

impl AppState {
    /// The organisation and sandbox of a datastream; unknown ones get the defaults.
    pub(crate) fn datastream(&self, config_id: &str) -> (String, String) {
        self.config
            .keys
            .datastreams
            .iter()
            .find(|d| d.id == config_id)
            .map_or_else(
                || {
                    (
                        self.config.default_org.clone(),
                        self.config.default_sandbox.clone(),
                    )
                },
                |d| (d.org.clone(), d.sandbox.clone()),
            )
    }
}
