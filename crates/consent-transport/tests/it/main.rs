//! Integration tests: the HTTP transport against small servers on 127.0.0.1.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected errors"
)]

mod edge;
mod gating;
mod preferences;
mod retries;
mod server;

use std::sync::Arc;
use std::time::Duration;

use consent_transport::{CookieJar, EdgeConfig, HttpTransport, NoJitter, RetryPolicy};

use crate::server::RecordingSleep;

pub(crate) const ORG: &str = "ORG@AdobeOrg";
pub(crate) const CONSENT: &str = "kndctr_ORG_AdobeOrg_consent";
pub(crate) const IDENTITY: &str = "kndctr_ORG_AdobeOrg_identity";
pub(crate) const CLUSTER: &str = "kndctr_ORG_AdobeOrg_cluster";

/// A retry policy fast enough for tests: 4 attempts, 10 ms doubling to 40 ms.
pub(crate) fn fast_policy() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(4)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_max_retry_after(Duration::from_secs(5))
}

/// A transport to `base` with short timeouts, no jitter, and waits recorded instead of slept.
pub(crate) fn transport(base: &str, jar: CookieJar) -> (HttpTransport, Arc<RecordingSleep>) {
    transport_with(base, jar, fast_policy(), Duration::from_millis(300))
}

/// A transport like [`transport`] with this retry policy and per-attempt timeout.
pub(crate) fn transport_with(
    base: &str,
    jar: CookieJar,
    policy: RetryPolicy,
    attempt_timeout: Duration,
) -> (HttpTransport, Arc<RecordingSleep>) {
    let config = EdgeConfig::new(base, "datastream-1", ORG)
        .unwrap()
        .timeout(attempt_timeout)
        .connect_timeout(Duration::from_millis(300))
        .retry(policy);
    let sleep = Arc::new(RecordingSleep::default());
    let transport = HttpTransport::new(config, jar)
        .unwrap()
        .with_jitter(Arc::new(NoJitter))
        .with_sleep(Arc::clone(&sleep) as Arc<dyn consent_transport::Sleep>);
    (transport, sleep)
}
