//! The Web SDK's consent integration scenarios (reference §6.6, `consent.spec.js`) that apply
//! outside a browser, each named after its row, driven through `consent::Client` against the
//! real server. A reload is a client shut down and built again on the same data directory.
//!
//! Where this client deliberately does better than the Web SDK, the test asserts our behaviour
//! and says so.

use consent::{ConsentRequest, Decision};
use serde_json::json;

use crate::harness::{
    CLUSTER_COOKIE, CONSENT_COOKIE, IDENTITY_COOKIE, Server, cookie, ecid_of_identity_cookie,
    edit_jar, jar_names, remove_cookie,
};
use crate::support::{
    NO_PREFERENCES, adobe_v1, adobe2_in, adobe2_out, assert_declined, assert_declined_with,
    builder, client, edge_code, page_view, settle,
};

/// C2593: default pending; an event waits (no interact call) until `setConsent(IN)`, then it is
/// sent exactly once and accepted with 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2593_queued_event_is_sent_once_after_set_consent_in() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let event = page_view("https://example.com/c2593");
    let id = event.id();
    let sending = tokio::spawn({
        let client = client.clone();
        async move { client.send_event(event).await }
    });
    settle().await;
    assert!(
        !sending.is_finished(),
        "the event must wait while consent is pending"
    );
    assert_eq!(
        server.events_received().await,
        0,
        "no interact call while pending"
    );

    client.set_consent(adobe_v1("in")).await.unwrap();
    let receipt = sending.await.unwrap().unwrap();
    assert!((200..=207).contains(&receipt.status), "{receipt:?}");
    assert_eq!(receipt.event_id, id);
    client.flush().await.unwrap();
    assert_eq!(
        server.events_received().await,
        1,
        "exactly one event reached the server"
    );
    assert_eq!(server.event_stored(id.as_str()).await, 1);
    assert_eq!(server.events_stored().await, 1);
    client.shutdown().await.unwrap();
}

/// C2594: default pending; a queued event is declined when `setConsent(OUT)` arrives and never
/// sent. (The Web SDK resolves it with `{}` and a warning; here it is a typed error.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2594_queued_event_is_declined_by_set_consent_out() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let sending = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .send_event(page_view("https://example.com/c2594"))
                .await
        }
    });
    settle().await;
    assert!(!sending.is_finished());
    client.set_consent(adobe_v1("out")).await.unwrap();
    assert_declined(sending.await.unwrap());
    client.flush().await.unwrap();
    assert_eq!(server.events_received().await, 0, "0 interact calls");
    assert_eq!(server.events_stored().await, 0);
    assert_eq!(client.consent().state, Decision::Out);
    client.shutdown().await.unwrap();
}

/// C2660: an event queued while pending keeps the context it was created with; one created
/// after the "page" changed carries the new one. Both are sent after `setConsent(IN)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2660_queued_event_keeps_the_context_captured_when_queued() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let first = client
        .enqueue(page_view("https://example.com/#before"))
        .await
        .unwrap();
    settle().await;
    assert_eq!(server.events_received().await, 0);
    client.set_consent(adobe_v1("in")).await.unwrap();
    let second = client
        .send_event(page_view("https://example.com/#after"))
        .await
        .unwrap()
        .event_id;
    client.flush().await.unwrap();
    assert_eq!(server.events_stored().await, 2, "2 interact events");
    let url = |body: serde_json::Value| body.pointer("/xdm/web/webPageDetails/URL").cloned();
    assert_eq!(
        url(server.event_body(first.as_str()).await),
        Some(json!("https://example.com/#before"))
    );
    assert_eq!(
        url(server.event_body(second.as_str()).await),
        Some(json!("https://example.com/#after"))
    );
    client.shutdown().await.unwrap();
}

/// C14404: default pending; `setConsent(OUT)` then `setConsent(IN)`: two set-consent calls, the
/// consent cookie says `general=in`, and the next event is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14404_out_then_in_ends_in() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("out")).await.unwrap();
    client.set_consent(adobe_v1("in")).await.unwrap();
    assert_eq!(server.set_consent_calls().await, 2);
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=in"));
    let receipt = client
        .send_event(page_view("https://example.com/"))
        .await
        .unwrap();
    assert_eq!(server.event_stored(receipt.event_id.as_str()).await, 1);
    assert_eq!(server.events_received().await, 1);
    client.shutdown().await.unwrap();
}

/// C14405: default pending; `setConsent(IN)`, then an event: one interact call, and the server
/// stores the event as the client built it (its XDM and its id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14405_event_after_set_consent_in_is_sent_as_built() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("in")).await.unwrap();
    let receipt = client
        .send_event(page_view("https://example.com/c14405"))
        .await
        .unwrap();
    assert_eq!(server.events_received().await, 1);
    let body = server.event_body(receipt.event_id.as_str()).await;
    assert_eq!(body["xdm"]["_id"], json!(receipt.event_id.as_str()));
    assert_eq!(body["xdm"]["eventType"], "web.webpagedetails.pageViews");
    assert_eq!(
        body["xdm"]["web"]["webPageDetails"]["URL"],
        "https://example.com/c14405"
    );
    client.shutdown().await.unwrap();
}

/// C14406: default pending; after `setConsent(OUT)` an event is declined and never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14406_event_after_set_consent_out_is_declined() {
    let server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("out")).await.unwrap();
    assert_declined(client.send_event(page_view("https://example.com/")).await);
    assert_declined(client.enqueue(page_view("https://example.com/")).await);
    client.flush().await.unwrap();
    assert_eq!(server.events_received().await, 0);
    client.shutdown().await.unwrap();
}

/// C14407: consent "in" is restored from the cookie at the next start whatever the default:
/// the event is sent, and no new set-consent call is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14407_in_survives_a_reload() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("in")).await.unwrap();
    client.shutdown().await.unwrap();

    let client = crate::support::client(&server, &dir, "pending").await;
    let view = client.consent();
    assert_eq!((view.state, view.was_set), (Decision::In, true));
    let receipt = client
        .send_event(page_view("https://example.com/"))
        .await
        .unwrap();
    assert!((200..=207).contains(&receipt.status));
    assert_eq!(server.event_stored(receipt.event_id.as_str()).await, 1);
    assert_eq!(server.set_consent_calls().await, 1);
    client.shutdown().await.unwrap();
}

/// C14409: consent "out" is restored from the cookie at the next start: events are declined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14409_out_survives_a_reload() {
    let server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("out")).await.unwrap();
    client.shutdown().await.unwrap();

    let client = crate::support::client(&server, &dir, "pending").await;
    let view = client.consent();
    assert_eq!((view.state, view.was_set), (Decision::Out, true));
    assert_declined(client.enqueue(page_view("https://example.com/")).await);
    client.flush().await.unwrap();
    assert_eq!(server.events_received().await, 0);
    client.shutdown().await.unwrap();
}

/// C14410 (a): an unknown `defaultConsent` is refused with the Web SDK's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14410_unknown_default_consent_is_refused() {
    let server = Server::start().await;
    let dir = server.scratch("client");
    let err = builder(&server.base_url(), &dir, "unknown")
        .build()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("'defaultConsent':"), "{message}");
    assert!(
        message
            .contains(r#"Expected one of these values: ["in","out","pending"], but got "unknown""#),
        "{message}"
    );
}

/// C14410 (b): Adobe 1.0 with a purpose other than `general` is refused with `EXEG-0102-400`
/// (here before anything is sent: the server never sees it); a valid call then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14410_invalid_adobe_1_0_purpose_is_refused_then_a_valid_call_succeeds() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let bad = ConsentRequest::from_json(json!({"consent": [
        {"standard": "Adobe", "version": "1.0", "value": {"analytics": "in"}}
    ]}));
    let err = client.set_consent(bad).await.unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    assert_eq!(edge_code(&err), Some("EXEG-0102-400"), "{err:?}");
    assert!(err.to_string().contains("analytics"), "{err}");
    assert_eq!(
        server.set_consent_calls().await,
        0,
        "nothing invalid is sent"
    );
    assert_eq!(client.consent().state, Decision::Pending);

    client.set_consent(adobe_v1("in")).await.unwrap();
    assert_eq!(server.set_consent_calls().await, 1);
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=in"));
    client.shutdown().await.unwrap();
}

/// C14411 (a): `setConsent(OUT)` twice: both succeed; the repeat is skipped as unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14411_set_consent_out_twice_succeeds() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("out")).await.unwrap();
    client.set_consent(adobe_v1("out")).await.unwrap();
    assert_eq!(
        server.set_consent_calls().await,
        1,
        "the unchanged repeat is skipped"
    );
    assert_eq!(client.consent().state, Decision::Out);
    client.shutdown().await.unwrap();
}

/// C14411 (b): after `setConsent(OUT)`, the consent cookie deleted and a reload, `setConsent(OUT)`
/// succeeds again; since the cookie no longer holds the value, the call goes out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14411_set_consent_out_after_the_cookie_was_deleted_succeeds() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("out")).await.unwrap();
    client.shutdown().await.unwrap();
    edit_jar(&dir, |jar| remove_cookie(jar, CONSENT_COOKIE));

    let client = crate::support::client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("out")).await.unwrap();
    assert_eq!(server.set_consent_calls().await, 2);
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=out"));
    assert_eq!(client.consent().state, Decision::Out);
    client.shutdown().await.unwrap();
}

/// C14414: `setConsent(IN)`, `setConsent(OUT)` and an event issued together: two set-consent
/// calls in order (the second after the first's answer), and the event is declined, not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c14414_concurrent_in_out_and_event_ends_out_with_no_event() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let (first, second, event) = tokio::join!(
        client.set_consent(adobe_v1("in")),
        client.set_consent(adobe_v1("out")),
        client.send_event(page_view("https://example.com/c14414")),
    );
    first.unwrap();
    second.unwrap();
    assert_declined(event);
    client.flush().await.unwrap();
    let records = server.set_consent_records().await;
    let generals: Vec<_> = records.iter().map(|r| r["general"].clone()).collect();
    assert_eq!(generals, [json!("in"), json!("out")], "two calls, in order");
    assert_eq!(server.events_received().await, 0, "0 interact calls");
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=out"));
    client.shutdown().await.unwrap();
}

/// Sets Adobe 2.0 "in" on a fresh client (one set-consent call) and shuts it down.
async fn adobe2_in_then_reload(server: &mut Server, dir: &std::path::Path) {
    let client = client(server, dir, "pending").await;
    client.set_consent(adobe2_in()).await.unwrap();
    assert_eq!(server.set_consent_calls().await, 1);
    client.shutdown().await.unwrap();
}

/// C1472433: after a reload with the same Adobe 2.0 consent, the event is sent and repeating
/// `setConsent(ADOBE2_IN)` makes no new call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1472433_same_consent_after_reload_makes_no_call() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    adobe2_in_then_reload(&mut server, &dir).await;
    let client = client(&server, &dir, "pending").await;
    let receipt = client
        .send_event(page_view("https://example.com/"))
        .await
        .unwrap();
    assert_eq!(server.event_stored(receipt.event_id.as_str()).await, 1);
    client.set_consent(adobe2_in()).await.unwrap();
    assert_eq!(
        server.set_consent_calls().await,
        1,
        "0 new set-consent calls"
    );
    client.shutdown().await.unwrap();
}

/// C1472434: a different consent after the reload makes a new call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1472434_different_consent_after_reload_makes_a_call() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    adobe2_in_then_reload(&mut server, &dir).await;
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe2_out()).await.unwrap();
    assert_eq!(server.set_consent_calls().await, 2);
    assert_eq!(client.consent().state, Decision::Out);
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=out"));
    client.shutdown().await.unwrap();
}

/// C1472435 and C1472436: after "in" and a reload, `cookie` is deleted; the event waits under the
/// default, and `setConsent(ADOBE2_IN)` makes a call (the skip needs both cookies) and releases it.
async fn deleted_cookie_queues_until_consent_is_given_again(cookie: &str) {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    adobe2_in_then_reload(&mut server, &dir).await;
    edit_jar(&dir, |jar| remove_cookie(jar, cookie));
    let client = client(&server, &dir, "pending").await;
    assert_eq!(client.consent().state, Decision::Pending);
    let id = client
        .enqueue(page_view("https://example.com/"))
        .await
        .unwrap();
    settle().await;
    assert_eq!(server.events_received().await, 0, "the event is queued");
    client.set_consent(adobe2_in()).await.unwrap();
    assert_eq!(
        server.set_consent_calls().await,
        2,
        "1 new set-consent call"
    );
    client.flush().await.unwrap();
    assert_eq!(server.event_stored(id.as_str()).await, 1);
    assert_eq!(server.events_received().await, 1);
    client.shutdown().await.unwrap();
}

/// C1472435: the identity cookie deleted before the reload: the stored "in" is discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1472435_identity_cookie_deleted_queues_until_consent_is_given_again() {
    deleted_cookie_queues_until_consent_is_given_again(IDENTITY_COOKIE).await;
}

/// C1472436: the consent cookie deleted before the reload: the default applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1472436_consent_cookie_deleted_queues_until_consent_is_given_again() {
    deleted_cookie_queues_until_consent_is_given_again(CONSENT_COOKIE).await;
}

/// C1472437: a queued event is released by Adobe 2.0 `collect: y`; the cookie says in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1472437_adobe2_in_releases_the_queued_event() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let id = client
        .enqueue(page_view("https://example.com/"))
        .await
        .unwrap();
    settle().await;
    assert_eq!(server.events_received().await, 0);
    client.set_consent(adobe2_in()).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(server.set_consent_calls().await, 1);
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=in"));
    assert_eq!(server.event_stored(id.as_str()).await, 1);
    assert_eq!(server.events_received().await, 1);
    client.shutdown().await.unwrap();
}

/// C1472438: a queued event is declined by Adobe 2.0 `collect: n`; the cookie says out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1472438_adobe2_out_declines_the_queued_event() {
    let server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let sending = tokio::spawn({
        let client = client.clone();
        async move { client.send_event(page_view("https://example.com/")).await }
    });
    settle().await;
    client.set_consent(adobe2_out()).await.unwrap();
    assert_declined(sending.await.unwrap());
    client.flush().await.unwrap();
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=out"));
    assert_eq!(server.events_received().await, 0);
    client.shutdown().await.unwrap();
}

/// C1576777, improved: default in, `setConsent(ADOBE2_OUT)`, the identity cookie deleted (here
/// there is none to delete: none is written after an opt-out), reload. The Web SDK drops the
/// stored "out" and sends events again; here the opt-out holds: the consent cookie stays
/// `general=out` and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1576777_opt_out_survives_a_reload_without_identity_cookie() {
    let server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "in").await;
    client.set_consent(adobe2_out()).await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(
        jar_names(&dir),
        [CONSENT_COOKIE],
        "no identity or cluster cookie after an opt-out"
    );

    for _reload in 0..2 {
        let client = crate::support::client(&server, &dir, "in").await;
        let view = client.consent();
        assert_eq!((view.state, view.was_set), (Decision::Out, true));
        assert_declined(client.send_event(page_view("https://example.com/")).await);
        client.shutdown().await.unwrap();
        assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=out"));
    }
    assert_eq!(
        server.events_received().await,
        0,
        "0 interact calls in total"
    );
}

/// C1631712: default out; an event is declined (the Web SDK's "No consent preferences have
/// been set."); `setConsent(IN)` replays nothing; the next event is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1631712_default_out_declines_and_replays_nothing() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "out").await;
    let view = client.consent();
    assert_eq!((view.state, view.was_set), (Decision::Out, false));
    assert_declined_with(
        client.enqueue(page_view("https://example.com/1")).await,
        NO_PREFERENCES,
    );
    client.set_consent(adobe_v1("in")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(server.events_received().await, 0, "nothing is replayed");
    let receipt = client
        .send_event(page_view("https://example.com/2"))
        .await
        .unwrap();
    assert_eq!(server.events_received().await, 1);
    assert_eq!(server.event_stored(receipt.event_id.as_str()).await, 1);
    client.shutdown().await.unwrap();
}

/// C225953: the identity map of a `setConsent` reaches the server: the call is accepted and the
/// profile is the one its ECID names (the HYP id travels beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c225953_set_consent_carries_the_identity_map() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let ecid = "12345678901234567890123456789012345678";
    client
        .set_consent(adobe_v1("in").with_identity_map(json!({
            "HYP": [{"id": "id123"}],
            "ECID": [{"id": ecid}],
        })))
        .await
        .unwrap();
    assert_eq!(server.set_consent_calls().await, 1);
    assert_eq!(server.profile_general(ecid).await.as_deref(), Some("in"));
    let identity = cookie(&dir, IDENTITY_COOKIE).expect("identity cookie after consent in");
    assert_eq!(ecid_of_identity_cookie(&identity), ecid);
    client.shutdown().await.unwrap();
}

/// C25148: default in; an event sent before `setConsent(OUT)` goes out, one after is declined:
/// one event reaches the server in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c25148_events_before_an_opt_out_are_sent_after_it_declined() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "in").await;
    let receipt = client
        .send_event(page_view("https://example.com/1"))
        .await
        .unwrap();
    client.set_consent(adobe_v1("out")).await.unwrap();
    assert_declined(client.send_event(page_view("https://example.com/2")).await);
    client.flush().await.unwrap();
    assert_eq!(server.events_received().await, 1);
    assert_eq!(server.event_ids().await, [receipt.event_id.to_string()]);
    // The identity and cluster cookies written while consent was in stay (the server did not
    // remove them); the consent cookie now says out.
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=out"));
    assert!(cookie(&dir, IDENTITY_COOKIE).is_some());
    assert!(cookie(&dir, CLUSTER_COOKIE).is_some());
    client.shutdown().await.unwrap();
}
