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
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A transport to `base` with short timeouts, no jitter, and waits recorded instead of slept.
pub(crate) fn transport(base: &str, jar: CookieJar) -> (HttpTransport, Arc<RecordingSleep>) {
    let config = EdgeConfig::new(base, "datastream-1", ORG)
        .unwrap()
        .timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .retry(fast_policy());
    let sleep = Arc::new(RecordingSleep::default());
    let transport = HttpTransport::new(config, jar)
        .unwrap()
        .with_jitter(Arc::new(NoJitter))
        .with_sleep(Arc::clone(&sleep) as Arc<dyn consent_transport::Sleep>);
    (transport, sleep)
}
