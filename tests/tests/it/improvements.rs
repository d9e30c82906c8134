//! The acceptance tests of reference §6.7, asserting where this client does better than the
//! Web SDK (items 8 and 9 are about browser APIs this client does not have).

use consent::{ConsentRequest, Decision};
use serde_json::json;

use crate::harness::{CONSENT_COOKIE, IDENTITY_COOKIE, Server, cookie, edit_jar, jar_names};
use crate::support::{
    NO_PREFERENCES, adobe_v1, adobe2_value, assert_declined, assert_declined_with, builder, client,
    page_view, settle,
};

/// §6.7.1: default out, `setConsent(IN)` fails (the server is down) and no cookie is written.
/// The Web SDK then reports `wasSet: true` and "The user declined consent."; here the failed
/// call changes nothing: still the default, not set, and events are declined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_7_1_failed_set_consent_leaves_the_default_not_set() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "out").await;
    server.stop().await;
    let err = client.set_consent(adobe_v1("in")).await.unwrap_err();
    assert_eq!(err.kind(), consent::ErrorKind::Transport, "{err:?}");
    let view = client.consent();
    assert_eq!((view.state, view.was_set), (Decision::Out, false));
    // Still the default's message, not "The user declined consent." as in the Web SDK.
    assert_declined_with(
        client.enqueue(page_view("https://example.com/")).await,
        NO_PREFERENCES,
    );
    assert!(
        cookie(&dir, CONSENT_COOKIE).is_none(),
        "no cookie was written"
    );
    client.shutdown().await.unwrap();
    server.restart().await;
    assert_eq!(server.events_stored().await, 0);
}

/// §6.7.1, the other direction: default pending, `setConsent(OUT)` fails: the opt-out applies
/// anyway (a failed call never loosens, and "out" is stricter), and survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_7_1_failed_opt_out_still_stops_collection() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let queued = client
        .enqueue(page_view("https://example.com/"))
        .await
        .unwrap();
    server.stop().await;
    assert!(client.set_consent(adobe_v1("out")).await.is_err());
    assert_eq!(client.consent().state, Decision::Out);
    assert_declined(client.enqueue(page_view("https://example.com/")).await);
    client.shutdown().await.unwrap();
    server.restart().await;
    let client = crate::support::client(&server, &dir, "pending").await;
    assert_eq!(client.consent().state, Decision::Out, "a restart agrees");
    client.flush().await.unwrap();
    assert_eq!(server.event_stored(queued.as_str()).await, 0);
    assert_eq!(server.events_received().await, 0);
    client.shutdown().await.unwrap();
}

/// §6.7.2: an unknown stored value (`general=foo`) with the identity cookie present and default
/// out: the Web SDK treats it as "in" and sends; here the default applies and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_7_2_unknown_stored_consent_value_is_not_in() {
    let server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("in")).await.unwrap();
    client.shutdown().await.unwrap();
    assert!(cookie(&dir, IDENTITY_COOKIE).is_some());
    // The stored consent cookie's value becomes `general=foo`, everything else as it was.
    let path = dir.join("cookies.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let from = format!("{CONSENT_COOKIE}=general=in");
    assert!(text.contains(&from), "{text}");
    std::fs::write(
        &path,
        text.replace(&from, &format!("{CONSENT_COOKIE}=general=foo")),
    )
    .unwrap();
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=foo"));

    let client = crate::support::client(&server, &dir, "out").await;
    let view = client.consent();
    assert_eq!(
        (view.state, view.was_set),
        (Decision::Out, false),
        "the default applies"
    );
    assert_declined_with(
        client.enqueue(page_view("https://example.com/")).await,
        NO_PREFERENCES,
    );
    client.flush().await.unwrap();
    assert_eq!(server.events_received().await, 0);
    client.shutdown().await.unwrap();
}

/// §6.7.3: a successful `setConsent` whose answer carries no consent cookie. The Web SDK stays
/// pending forever; here the call's own decision applies and events flow.
///
/// The server answers with the cookies of its own organisation, so a client of another one
/// finds no consent cookie of its own in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_7_3_no_consent_cookie_in_the_answer_is_not_stuck_pending() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = builder(&server.base_url(), &dir, "in")
        .org_id("OTHER0000000000000000000@AdobeOrg")
        .build()
        .await
        .unwrap();
    client.set_consent(adobe_v1("in")).await.unwrap();
    let view = client.consent();
    assert_eq!((view.state, view.was_set), (Decision::In, true));
    let receipt = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.send_event(page_view("https://example.com/")),
    )
    .await
    .expect("the event must not wait forever")
    .unwrap();
    assert_eq!(server.event_stored(receipt.event_id.as_str()).await, 1);
    assert!(
        jar_names(&dir)
            .iter()
            .any(|n| n == "kndctr_OTHER0000000000000000000_AdobeOrg_consent"),
        "the client writes its own consent cookie with the decision: {:?}",
        jar_names(&dir)
    );
    client.shutdown().await.unwrap();
}

/// §6.7.4: after a successful `setConsent(IN)` the consent cookie is deleted; the same call again
/// is not skipped (the Web SDK skips it and stays pending): a request goes out and events flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_7_4_same_call_after_the_cookie_was_deleted_is_sent() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("in")).await.unwrap();
    client.shutdown().await.unwrap();
    edit_jar(&dir, |jar| {
        crate::harness::remove_cookie(jar, CONSENT_COOKIE)
    });

    let client = crate::support::client(&server, &dir, "pending").await;
    client.set_consent(adobe_v1("in")).await.unwrap();
    assert_eq!(server.set_consent_calls().await, 2, "not skipped");
    assert_eq!(client.consent().state, Decision::In);
    let receipt = client
        .send_event(page_view("https://example.com/"))
        .await
        .unwrap();
    assert_eq!(server.event_stored(receipt.event_id.as_str()).await, 1);
    client.shutdown().await.unwrap();
}

/// §6.7.5: the same consent with a new identity map is sent (the Web SDK skips it, so the new
/// identity never reaches the server); the very same call again is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_7_5_new_identity_map_is_not_skipped() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let with = |id: &str| adobe_v1("in").with_identity_map(json!({"HYP": [{"id": id}]}));
    client.set_consent(with("first")).await.unwrap();
    client.set_consent(with("second")).await.unwrap();
    assert_eq!(server.set_consent_calls().await, 2);
    client.set_consent(with("second")).await.unwrap();
    assert_eq!(
        server.set_consent_calls().await,
        2,
        "an identical call is skipped"
    );
    client.shutdown().await.unwrap();
}

/// §6.7.6: two objects of the same standard and version in one call are hashed one by one: a
/// change in the second one is sent (the Web SDK hashes the first twice and skips it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_7_6_second_object_of_the_same_standard_counts() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let call = |share: &str| {
        let mut second = adobe2_value("y");
        second["share"] = json!({"val": share});
        ConsentRequest::from_json(json!({"consent": [
            {"standard": "Adobe", "version": "2.0", "value": adobe2_value("y")},
            {"standard": "Adobe", "version": "2.0", "value": second},
        ]}))
    };
    client.set_consent(call("y")).await.unwrap();
    client.set_consent(call("n")).await.unwrap();
    assert_eq!(server.set_consent_calls().await, 2);
    let share = client
        .consent()
        .purposes
        .into_iter()
        .find(|(name, _)| name == "share")
        .map(|(_, d)| d);
    assert_eq!(
        share,
        Some(Decision::Out),
        "the second call's share=n applies"
    );
    client.shutdown().await.unwrap();
}

/// §6.7.7: while a `setConsent(OUT)` is in flight, an event submitted after it waits for it and
/// is then declined: it is never sent under the older "in".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_7_7_event_after_an_opt_out_in_flight_is_never_sent() {
    let server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "in").await;
    let (out, event) = tokio::join!(
        client.set_consent(adobe_v1("out")),
        client.send_event(page_view("https://example.com/")),
    );
    out.unwrap();
    assert_declined(event);
    client.flush().await.unwrap();
    settle().await;
    assert_eq!(server.events_received().await, 0);
    client.shutdown().await.unwrap();
}
