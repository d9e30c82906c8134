//! The IAB TCF rows of the integration suite (reference §6.6, `iab.spec.js`, C224670–C224678),
//! with real TC strings (built with `consent-tcf`) decided by the real server.

use consent::{ConsentRequest, Decision};
use serde_json::{Value, json};

use crate::harness::{CONSENT_COOKIE, IDENTITY_COOKIE, Server, cookie};
use crate::support::{assert_declined, client, edge_code, iab_granted, page_view, tc_string};

/// Sets `request` on a fresh pending client and returns the client (with its data dir).
async fn set(
    server: &Server,
    name: &str,
    default: &str,
    request: ConsentRequest,
) -> (consent::Client, std::path::PathBuf) {
    let dir = server.scratch(name);
    let client = client(server, &dir, default).await;
    client.set_consent(request).await.unwrap();
    (client, dir)
}

/// An event is sent and stored once.
async fn sends(server: &mut Server, client: &consent::Client) {
    let receipt = client
        .send_event(page_view("https://example.com/"))
        .await
        .unwrap();
    assert!((200..=207).contains(&receipt.status));
    assert_eq!(server.event_stored(receipt.event_id.as_str()).await, 1);
}

fn iab(value: &str, gdpr_applies: bool) -> ConsentRequest {
    ConsentRequest::iab_tcf(value, gdpr_applies)
}

/// C224670: IAB "in" with `gdprApplies`: one call; the server received the consent as given;
/// the cookie says in; the identity cookie is set; an event is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224670_iab_in_sets_in_and_sends() {
    let mut server = Server::start().await;
    let tc = iab_granted();
    let (client, dir) = set(&server, "client", "pending", iab(&tc, true)).await;
    let records = server.set_consent_records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0]["consent"],
        json!([{"standard": "IAB TCF", "version": "2.0", "value": tc, "gdprApplies": true}])
    );
    assert_eq!(records[0]["general"], "in");
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=in"));
    assert!(
        cookie(&dir, IDENTITY_COOKIE).is_some(),
        "the ECID came back"
    );
    sends(&mut server, &client).await;
    assert_eq!(server.events_received().await, 1);
    client.shutdown().await.unwrap();
}

/// C224671: a TC string without purpose 1, or without the Adobe vendor (565), is "out": the
/// cookie says out and no event is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224671_iab_without_purpose_1_or_vendor_is_out() {
    let mut server = Server::start().await;
    let cases = [
        ("no-purpose-1", tc_string(&[2, 10], &[565])),
        ("no-vendor", tc_string(&[1, 2, 10], &[1, 2, 3])),
    ];
    for (name, tc) in cases {
        let (client, dir) = set(&server, name, "pending", iab(&tc, true)).await;
        assert_eq!(
            cookie(&dir, CONSENT_COOKIE).as_deref(),
            Some("general=out"),
            "{name}"
        );
        assert_eq!(client.consent().state, Decision::Out, "{name}");
        assert_declined(client.send_event(page_view("https://example.com/")).await);
        client.shutdown().await.unwrap();
    }
    assert_eq!(server.set_consent_calls().await, 2);
    assert_eq!(server.events_received().await, 0);
}

/// C224672: `gdprContainsPersonalData: true` is accepted; the cookie says in; an event is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224672_iab_with_gdpr_contains_personal_data_is_accepted() {
    let mut server = Server::start().await;
    let request = ConsentRequest::from_json(json!({"consent": [{
        "standard": "IAB TCF", "version": "2.0", "value": iab_granted(),
        "gdprApplies": true, "gdprContainsPersonalData": true,
    }]}));
    let (client, dir) = set(&server, "client", "pending", request).await;
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=in"));
    sends(&mut server, &client).await;
    client.shutdown().await.unwrap();
}

/// C224673: IAB "in" with `gdprApplies: false`: in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224673_iab_in_without_gdpr_is_in() {
    let mut server = Server::start().await;
    let (client, dir) = set(&server, "client", "pending", iab(&iab_granted(), false)).await;
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=in"));
    sends(&mut server, &client).await;
    client.shutdown().await.unwrap();
}

/// C224674: without purpose 1 but `gdprApplies: false`: still in (the string does not apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224674_iab_without_purpose_1_and_without_gdpr_is_in() {
    let mut server = Server::start().await;
    let tc = tc_string(&[2, 10], &[565]);
    let (client, dir) = set(&server, "client", "pending", iab(&tc, false)).await;
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=in"));
    assert_eq!(client.consent().state, Decision::In);
    sends(&mut server, &client).await;
    client.shutdown().await.unwrap();
}

/// C224675: invalid IAB objects are refused with the Edge codes (`EXEG-0102-400` for a wrong
/// standard or version, `EXEG-0103-400` for a missing value, `EXEG-0104-422` for an empty one).
/// Here they are refused before anything is sent, so the server records no call, and the
/// client is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224675_invalid_iab_objects_are_refused() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let tc = iab_granted();
    let cases: [(&str, Value); 4] = [
        (
            "EXEG-0102-400",
            json!({"standard": "IAB", "version": "2.0", "value": tc, "gdprApplies": true}),
        ),
        (
            "EXEG-0102-400",
            json!({"standard": "IAB TCF", "version": "6.9", "value": tc, "gdprApplies": true}),
        ),
        (
            "EXEG-0103-400",
            json!({"standard": "IAB TCF", "version": "2.0", "gdprApplies": true}),
        ),
        (
            "EXEG-0104-422",
            json!({"standard": "IAB TCF", "version": "2.0", "value": "", "gdprApplies": true}),
        ),
    ];
    for (code, object) in cases {
        let err = client
            .set_consent(ConsentRequest::from_json(json!({"consent": [object]})))
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{code}: {err:?}");
        assert_eq!(edge_code(&err), Some(code), "{err:?}");
    }
    assert_eq!(server.set_consent_calls().await, 0);
    assert_eq!(server.metric("consent_invalid_payloads_total").await, 0);
    assert_eq!(client.consent().state, Decision::Pending);
    client.shutdown().await.unwrap();
}

fn consent_strings(value: &str) -> Value {
    json!([{
        "consentStandard": "IAB TCF",
        "consentStandardVersion": "2.0",
        "consentStringValue": value,
        "gdprApplies": true,
        "containsPersonalData": false,
    }])
}

/// C224676: default in; events carrying positive `xdm.consentStrings` pass them verbatim and are
/// sent: two events, two stored, the state stays in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224676_positive_consent_strings_in_events_are_passed_verbatim() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "in").await;
    let strings = consent_strings(&iab_granted());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let event = consent::Event::new(json!({
            "eventType": "web.webpagedetails.pageViews",
            "consentStrings": strings,
        }));
        ids.push(client.send_event(event).await.unwrap().event_id);
    }
    assert_eq!(server.events_received().await, 2);
    for id in &ids {
        let body = server.event_body(id.as_str()).await;
        assert_eq!(body["xdm"]["consentStrings"], strings);
    }
    assert_eq!(client.consent().state, Decision::In);
    assert_ne!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=out"));
    client.shutdown().await.unwrap();
}

/// C224677: a TC string without purpose 10 is still "in".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224677_iab_without_purpose_10_is_in() {
    let mut server = Server::start().await;
    let tc = tc_string(&[1, 2], &[565]);
    let (client, dir) = set(&server, "client", "in", iab(&tc, true)).await;
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=in"));
    sends(&mut server, &client).await;
    client.shutdown().await.unwrap();
}

/// C224678: default in; an event carrying a negative TC string in `xdm.consentStrings`. The
/// server decides "out" from it as Edge does: that event is dropped with Edge's `EXEG-0301-200`
/// warning and the answer writes `general=out`, which the client applies, so the next event is
/// declined without a request. No event reaches the server's storage, and the server's profile
/// says out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c224678_negative_iab_string_turns_collection_off() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "in").await;
    let negative = tc_string(&[2], &[565]);
    let receipt = client
        .send_event(consent::Event::new(json!({
            "eventType": "web.webpagedetails.pageViews",
            "consentStrings": consent_strings(&negative),
        })))
        .await
        .unwrap();
    assert!((200..=207).contains(&receipt.status));
    assert_eq!(cookie(&dir, CONSENT_COOKIE).as_deref(), Some("general=out"));
    assert_eq!(client.consent().state, Decision::Out);
    assert_declined(client.send_event(page_view("https://example.com/")).await);
    client.flush().await.unwrap();
    assert_eq!(
        server.events_received().await,
        1,
        "one event reached the server"
    );
    assert_eq!(
        server
            .metric("consent_events_total{outcome=\"refused_consent_out\"}")
            .await,
        1,
        "and was dropped"
    );
    assert_eq!(server.event_stored(receipt.event_id.as_str()).await, 0);
    client.shutdown().await.unwrap();
}
