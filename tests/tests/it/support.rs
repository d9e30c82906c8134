//! Building clients against a [`Server`], the consent payloads of the integration suite, events.

use std::path::Path;
use std::time::Duration;

use consent::RetryPolicy;
use consent::{Client, ConsentRequest, Event};
use serde_json::{Value, json};

use crate::harness::{DATASTREAM, ORG, Server};

/// Short retries: a test with the server down fails a send within about a second.
pub(crate) fn retry_policy() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .with_deadline(Duration::from_secs(2))
}

/// A client builder for `server`, files in `data_dir`, with `default` consent and short timeouts.
pub(crate) fn builder(base_url: &str, data_dir: &Path, default: &str) -> consent::Builder {
    Client::builder()
        .edge_base_url(base_url)
        .datastream_id(DATASTREAM)
        .org_id(ORG)
        .default_consent(default)
        .data_dir(data_dir)
        .retry_policy(retry_policy())
        .flush_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(3))
}

/// A client for `server` on `data_dir`.
pub(crate) async fn client(server: &Server, data_dir: &Path, default: &str) -> Client {
    builder(&server.base_url(), data_dir, default)
        .build()
        .await
        .unwrap()
}

/// A page view with a URL.
pub(crate) fn page_view(url: &str) -> Event {
    Event::new(json!({
        "eventType": "web.webpagedetails.pageViews",
        "web": {"webPageDetails": {"URL": url}},
    }))
}

/// Adobe 1.0 `{general}`.
pub(crate) fn adobe_v1(general: &str) -> ConsentRequest {
    ConsentRequest::adobe_v1(general)
}

/// The `value` of the integration suite's `ADOBE2_IN` / `ADOBE2_OUT` fixtures.
pub(crate) fn adobe2_value(val: &str) -> Value {
    json!({
        "collect": {"val": val},
        "metadata": {"time": "2019-01-01T15:52:25+00:00"},
    })
}

/// Adobe 2.0 `collect: y`.
pub(crate) fn adobe2_in() -> ConsentRequest {
    ConsentRequest::adobe_v2(adobe2_value("y"))
}

/// Adobe 2.0 `collect: n`.
pub(crate) fn adobe2_out() -> ConsentRequest {
    ConsentRequest::adobe_v2(adobe2_value("n"))
}

/// Builds a TC string with the given purposes and vendors consented.
pub(crate) fn tc_string(purposes: &[u32], vendors: &[u16]) -> String {
    let mut builder = consent_tcf::TcString::builder();
    for &p in purposes {
        builder = builder.purpose_consent(p, true);
    }
    builder = builder.vendor_consents(vendors.iter().copied());
    builder.build().unwrap().encode()
}

/// The IAB string the Adobe mapping reads as "in": purposes 1 and 10, vendor 565.
pub(crate) fn iab_granted() -> String {
    tc_string(&[1, 2, 10], &[565])
}

/// Lets the client run for a moment (time in which nothing may happen).
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The Web SDK's message for a command declined after the person opted out.
pub(crate) const USER_DECLINED: &str = "The user declined consent.";
/// The Web SDK's message for a command declined under the default "out".
pub(crate) const NO_PREFERENCES: &str = "No consent preferences have been set.";

/// Asserts a result is the typed "consent declined" error with the Web SDK's message for a
/// person who opted out.
#[track_caller]
pub(crate) fn assert_declined<T: std::fmt::Debug>(result: Result<T, consent::Error>) {
    assert_declined_with(result, USER_DECLINED);
}

/// Asserts a result is the typed "consent declined" error with `message`.
#[track_caller]
pub(crate) fn assert_declined_with<T: std::fmt::Debug>(
    result: Result<T, consent::Error>,
    message: &str,
) {
    match result {
        Err(err) => {
            assert!(
                err.is_consent_declined(),
                "expected consent declined, got {err:?}"
            );
            assert_eq!(err.to_string(), message, "{err:?}");
        }
        Ok(v) => panic!("expected consent declined, got Ok({v:?})"),
    }
}

/// The Edge error code of a payload the client refused (`EXEG-…`), from the error's source.
pub(crate) fn edge_code(err: &consent::Error) -> Option<&'static str> {
    std::error::Error::source(err)?
        .downcast_ref::<consent::consent_core::PayloadError>()
        .map(consent::consent_core::PayloadError::edge_code)
}
