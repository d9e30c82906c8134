//! Requests, responses and cookies.

use consent_core::{Action, Cookie, Origin, Outcome};
use consent_transport::{
    CookieJar, DataRequest, Delivery, Event, Request, SendError, SetConsentRequest, Transport,
    cookie_store,
};
use serde_json::json;

use crate::server::{Reply, TestServer};
use crate::{CLUSTER, CONSENT, IDENTITY, transport};

fn consent_in() -> Request {
    Request::SetConsent(SetConsentRequest::new(vec![
        json!({"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}),
    ]))
}

#[tokio::test]
async fn set_consent_posts_the_reference_body_and_returns_cookies_without_writing_them() {
    let server =
        TestServer::start(|_, _| {
            Reply::store(json!([
            {"key": CONSENT, "value": "general=in", "maxAge": 15552000},
            {"key": IDENTITY, "value": "ECID123", "maxAge": 34128000, "attrs": {"SameSite": "None"}}
        ]))
        .header("set-cookie", "kndctr_ORG_AdobeOrg_cluster=or2; Max-Age=1800; Path=/")
        })
        .await;
    let jar = CookieJar::default();
    let (transport, _) = transport(&server.base, jar.clone());

    let reply = transport.send(consent_in()).await.unwrap();

    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/ee/v1/privacy/set-consent");
    assert_eq!(request.query["configId"], "datastream-1");
    assert_eq!(request.query["requestId"], reply.request_id);
    assert_eq!(reply.request_id.len(), 36);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.body["consent"],
        json!([{"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}])
    );
    assert_eq!(
        request.body["query"],
        json!({"identity": {"fetch": ["ECID"]}})
    );
    assert_eq!(request.body["meta"]["state"]["cookiesEnabled"], true);
    assert_eq!(request.header("cookie"), None);

    // Set-Cookie first, then the state:store handles; SameSite=None means Secure.
    let names: Vec<_> = reply.cookies.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [CLUSTER, CONSENT, IDENTITY]);
    assert_eq!(reply.cookies[0].max_age, Some(1800));
    assert!(reply.cookies[2].secure);
    assert_eq!(reply.delivery(), Delivery::Sent);
    assert_eq!(reply.attempts, 1);
    let response = reply.engine_response(Origin::Other);
    assert_eq!(response.outcome, Outcome::Success);
    assert_eq!(response.cookies, reply.cookies);

    // The transport wrote nothing: only the engine's actions reach the jar.
    assert_eq!(jar.lock().iter_any().count(), 0);
}

#[tokio::test]
async fn cookies_round_trip_through_the_jar_and_survive_a_restart() {
    let server = TestServer::start(|_, _| Reply::json(200, json!({"handle": []}))).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cookies.json");

    {
        let (transport, _) = transport(&server.base, CookieJar::default());
        // The engine's actions, as the facade would apply them.
        let mut consent = Cookie::new(CONSENT, "general=in;extra=out", Some(15_552_000));
        consent.same_site = Some("None".into());
        consent.secure = true;
        for action in [
            Action::StoreCookie(consent),
            Action::StoreCookie(Cookie::new(IDENTITY, "ECID123", Some(34_128_000))),
            Action::StoreCookie(Cookie::new(CLUSTER, "or2", Some(1800))),
            Action::StoreCookie(Cookie::new("session_only", "x", None)),
        ] {
            assert!(transport.apply(&action).unwrap());
        }
        assert!(
            transport
                .apply(&Action::RemoveCookie {
                    name: "none".into()
                })
                .unwrap()
        );
        assert!(
            !transport
                .apply(&Action::PersistState(Default::default()))
                .unwrap()
        );
        let store = transport.jar().lock();
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        cookie_store::serde::json::save(&store, &mut out).unwrap();
    }

    // A new process: load the jar from the file.
    let loaded = cookie_store::serde::json::load(std::io::BufReader::new(
        std::fs::File::open(&file).unwrap(),
    ))
    .unwrap();
    let (transport, _) = transport(&server.base, CookieJar::new(loaded));
    let (consent, identity) = transport.stored_cookies();
    assert_eq!(consent.unwrap().value, "general=in;extra=out");
    assert!(identity);
    assert_eq!(transport.location_hint().as_deref(), Some("or2"));

    let event = Event::new(json!({"eventType": "web.webpagedetails.pageViews"}));
    let id = event.id().unwrap().to_owned();
    transport
        .send(Request::Interact(DataRequest::events(vec![event])))
        .await
        .unwrap();

    let request = &server.requests()[0];
    assert_eq!(request.path, "/ee/or2/v1/interact");
    assert_eq!(request.body["events"][0]["xdm"]["_id"], id.as_str());
    assert_eq!(
        request.body["events"][0]["xdm"]["eventType"],
        "web.webpagedetails.pageViews"
    );
    let mut entries = request.state_entries();
    entries.sort();
    assert_eq!(
        entries,
        [
            (CLUSTER.to_owned(), "or2".to_owned()),
            (CONSENT.to_owned(), "general=in;extra=out".to_owned()),
            (IDENTITY.to_owned(), "ECID123".to_owned()),
        ]
    );
    // The Cookie header carries the wire form; the session cookie did not survive the restart.
    let header = request.header("cookie").unwrap();
    assert!(header.contains("kndctr_ORG_AdobeOrg_consent=general=in%3Bextra=out"));
    assert!(header.contains("kndctr_ORG_AdobeOrg_identity=ECID123"));
    assert!(!header.contains("session_only"));

    // Removing goes through the engine's action too.
    transport
        .apply(&Action::RemoveCookie {
            name: IDENTITY.into(),
        })
        .unwrap();
    assert!(!transport.stored_cookies().1);
}

#[tokio::test]
async fn a_non_2xx_answer_keeps_the_status_the_codes_and_the_cookies() {
    let server = TestServer::start(|_, _| {
        Reply::json(
            400,
            json!({
                "type": "https://ns.adobe.com/aep/errors/EXEG-0102-400",
                "status": 400,
                "title": "Invalid consent",
                "handle": [{"type": "state:store", "payload": [{"key": CONSENT, "value": "general=out", "maxAge": 100}]}]
            }),
        )
    })
    .await;
    let (transport, sleep) = transport(&server.base, CookieJar::default());

    let error = transport.send(consent_in()).await.unwrap_err();

    assert_eq!(error.status(), Some(400));
    assert_eq!(error.codes(), ["EXEG-0102-400"]);
    assert_eq!(error.delivery(), Delivery::Unrecoverable);
    assert!(
        error
            .to_string()
            .starts_with("The server responded with a status code 400 and response body:")
    );
    assert!(error.to_string().contains("EXEG-0102-400"));
    let response = error.engine_response(Origin::Other);
    assert_eq!(response.outcome, Outcome::Failure);
    assert_eq!(response.cookies[0].value, "general=out");
    assert_eq!(server.requests().len(), 1, "a 400 is not retried");
    assert!(sleep.waits().is_empty());
}

#[tokio::test]
async fn a_malformed_2xx_answer_is_a_typed_error() {
    let server = TestServer::start(|i, _| match i {
        0 => Reply::json(200, json!({"requestId": "no handle"})),
        _ => Reply::json(200, json!({"handle": "not an array"})).header(
            "set-cookie",
            "kndctr_ORG_AdobeOrg_consent=general=in; Max-Age=5",
        ),
    })
    .await;
    let (transport, _) = transport(&server.base, CookieJar::default());
    let request = Request::IdentityAcquire(DataRequest::identity());

    let first = transport.send(request.clone()).await.unwrap_err();
    assert!(matches!(first, SendError::Malformed { status: 200, .. }));
    assert_eq!(first.delivery(), Delivery::Unrecoverable);

    let second = transport.send(request).await.unwrap_err();
    assert_eq!(
        second.cookies().len(),
        1,
        "Set-Cookie still reaches the engine"
    );
    assert_eq!(
        server.paths(),
        ["/ee/v1/identity/acquire", "/ee/v1/identity/acquire"]
    );
    assert_eq!(
        server.requests()[0].body["query"],
        json!({"identity": {"fetch": ["ECID"]}})
    );
}

#[tokio::test]
async fn warnings_and_errors_of_a_2xx_answer_are_typed() {
    let server = TestServer::start(|_, _| {
        Reply::json(
            200,
            json!({
                "handle": [{"type": "identity:result", "payload": [{"namespace": {"code": "ECID"}, "id": "1"}]}],
                "warnings": [{"type": "https://ns.adobe.com/aep/errors/EXEG-0301-200", "status": 200, "title": "opt-out"}],
                "errors": [{"code": "ACT-1", "message": "activation failed"}]
            }),
        )
    })
    .await;
    let (transport, _) = transport(&server.base, CookieJar::default());
    let reply = transport
        .send(Request::Collect(DataRequest::events(vec![Event::new(
            json!({}),
        )])))
        .await
        .unwrap();
    assert_eq!(
        reply.response.warnings[0].error_code(),
        Some("EXEG-0301-200")
    );
    assert_eq!(reply.response.errors[0].error_code(), Some("ACT-1"));
    assert_eq!(reply.response.handles("identity:result").count(), 1);
    assert!(reply.cookies.is_empty());
    assert_eq!(server.paths(), ["/ee/v1/collect"]);
}

#[tokio::test]
async fn adobe_2_updates_carry_the_update_operation_and_identity_map() {
    let server = TestServer::start(|_, _| Reply::json(200, json!({"handle": []}))).await;
    let (transport, _) = transport(&server.base, CookieJar::default());
    let action = Action::SendSetConsent {
        request: consent_core::RequestId(3),
        consent: vec![
            json!({"standard": "Adobe", "version": "2.0", "value": {"collect": {"val": "y"}}}),
        ],
        identity_map: Some(json!({"HYP": [{"id": "id123"}]})),
        config_overrides: Some(json!({"com_adobe_analytics": {"reportSuites": ["rs"]}})),
    };
    let (id, body) = SetConsentRequest::from_action(&action).unwrap();
    assert_eq!(id, consent_core::RequestId(3));
    transport.send(Request::SetConsent(body)).await.unwrap();
    let body = &server.requests()[0].body;
    assert_eq!(body["query"]["consent"], json!({"operation": "update"}));
    assert_eq!(body["identityMap"], json!({"HYP": [{"id": "id123"}]}));
    assert_eq!(
        body["meta"]["configOverrides"]["com_adobe_analytics"]["reportSuites"][0],
        "rs"
    );
}

/// The facade's wiring: `consent-store` loads the jar, the transport shares it, the store saves it.
#[tokio::test]
async fn the_jar_persisted_by_consent_store_survives_a_restart() {
    let server = TestServer::start(|_, _| Reply::json(200, json!({"handle": []}))).await;
    let dir = tempfile::tempdir().unwrap();

    {
        let store = consent_store::Store::open(dir.path()).unwrap();
        let jar = CookieJar::new(store.cookie_jar().load().unwrap());
        let (transport, _) = transport(&server.base, jar.clone());
        transport
            .apply(&Action::StoreCookie(Cookie::new(
                CONSENT,
                "general=in",
                Some(15_552_000),
            )))
            .unwrap();
        transport
            .apply(&Action::StoreCookie(Cookie::new(
                IDENTITY,
                "ECID7",
                Some(34_128_000),
            )))
            .unwrap();
        store.cookie_jar().save(&jar.lock()).unwrap();
    }

    let store = consent_store::Store::open(dir.path()).unwrap();
    let (transport, _) = transport(
        &server.base,
        CookieJar::new(store.cookie_jar().load().unwrap()),
    );
    assert_eq!(transport.stored_cookies().0.unwrap().value, "general=in");
    transport
        .send(Request::IdentityAcquire(DataRequest::identity()))
        .await
        .unwrap();
    let mut entries = server.requests()[0].state_entries();
    entries.sort();
    assert_eq!(
        entries,
        [
            (CONSENT.to_owned(), "general=in".to_owned()),
            (IDENTITY.to_owned(), "ECID7".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let server = TestServer::start(|_, _| Reply {
        status: 200,
        headers: Vec::new(),
        body: " ".repeat(consent_transport::MAX_BODY + 1),
        delay: std::time::Duration::ZERO,
    })
    .await;
    let (transport, _) = transport(&server.base, CookieJar::default());
    let error = transport
        .send(Request::IdentityAcquire(DataRequest::identity()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, SendError::TooLarge { status: 200 }),
        "{error:?}"
    );
    assert_eq!(error.delivery(), Delivery::Unrecoverable);
    assert_eq!(server.requests().len(), 1);
}
