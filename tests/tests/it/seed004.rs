//! The nine rows of seed 004's table (the Web SDK's `defaultConsent` × `setConsent` table):
//! whether data collection occurs, and which cookies the client's jar holds afterwards.
//!
//! | defaultConsent | setConsent | data collection | cookies (here)                  |
//! |----------------|------------|-----------------|---------------------------------|
//! | in             | in         | Yes             | consent `general=in`, identity, cluster |
//! | in             | out        | No              | consent `general=out` only      |
//! | in             | not set    | Yes             | identity, cluster               |
//! | pending        | in         | Yes             | consent `general=in`, identity, cluster |
//! | pending        | out        | No              | consent `general=out` only      |
//! | pending        | not set    | No              | none                            |
//! | out            | in         | Yes             | consent `general=in`, identity, cluster |
//! | out            | out        | No              | consent `general=out` only      |
//! | out            | not set    | No              | none                            |
//!
//! The seed's "Yes" in the cookie column of the out rows is only the consent cookie here: no
//! identity or cluster cookie is written while consent is out (docs/ARCHITECTURE.md). In the
//! "in / not set" row the server has no decision, so it sends no consent cookie; the identity
//! and cluster cookies come with the interact answer.

use crate::harness::{CLUSTER_COOKIE, CONSENT_COOKIE, IDENTITY_COOKIE, Server, cookie, jar_names};
use crate::support::{adobe_v1, client, page_view, settle};

/// Runs one row: `default`, then `set_consent` (when `set` is given), then one event.
async fn row(default: &str, set: Option<&str>, collects: bool, expected_cookies: &[&str]) {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, default).await;
    if let Some(general) = set {
        client.set_consent(adobe_v1(general)).await.unwrap();
    }
    let enqueued = client
        .enqueue(page_view("https://example.com/seed004"))
        .await;
    client.flush().await.unwrap();
    settle().await;
    match &enqueued {
        Ok(id) => {
            let stored = server.event_stored(id.as_str()).await;
            assert_eq!(
                stored,
                i64::from(collects),
                "event stored ({default}/{set:?})"
            );
        }
        Err(err) => {
            assert!(err.is_consent_declined(), "{err:?}");
            assert!(!collects, "the event was declined ({default}/{set:?})");
        }
    }
    assert_eq!(
        server.events_received().await,
        u64::from(collects),
        "data collection ({default}/{set:?})"
    );
    client.shutdown().await.unwrap();

    let mut expected: Vec<String> = expected_cookies.iter().map(|&n| n.to_owned()).collect();
    expected.sort();
    assert_eq!(jar_names(&dir), expected, "cookies ({default}/{set:?})");
    if let Some(general) = set {
        assert_eq!(
            cookie(&dir, CONSENT_COOKIE),
            Some(format!("general={general}")),
            "consent cookie ({default}/{set:?})"
        );
    }
}

const ALL: &[&str] = &[CONSENT_COOKIE, IDENTITY_COOKIE, CLUSTER_COOKIE];
const CONSENT_ONLY: &[&str] = &[CONSENT_COOKIE];
const NO_CONSENT_COOKIE: &[&str] = &[IDENTITY_COOKIE, CLUSTER_COOKIE];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row1_default_in_set_in() {
    row("in", Some("in"), true, ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row2_default_in_set_out() {
    row("in", Some("out"), false, CONSENT_ONLY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row3_default_in_not_set() {
    row("in", None, true, NO_CONSENT_COOKIE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row4_default_pending_set_in() {
    row("pending", Some("in"), true, ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row5_default_pending_set_out() {
    row("pending", Some("out"), false, CONSENT_ONLY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row6_default_pending_not_set() {
    row("pending", None, false, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row7_default_out_set_in() {
    row("out", Some("in"), true, ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row8_default_out_set_out() {
    row("out", Some("out"), false, CONSENT_ONLY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed004_row9_default_out_not_set() {
    row("out", None, false, &[]).await;
}
