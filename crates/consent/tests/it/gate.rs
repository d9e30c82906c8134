//! The gate: nothing written or sent before consent allows it, and an opt-out purges the bytes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use consent::{ConsentRequest, Decision, Event};
use serde_json::json;

use crate::harness::{Edge, Faulty, Scripted, dir_contains, jar_cookies, page_view};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_by_default_writes_and_sends_nothing() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Faulty::new(&edge, []);
    let client = edge.client_via(dir.path(), "out", &transport).await;
    let e = client.enqueue(page_view("MARKER-OUT-1")).await.unwrap_err();
    assert!(e.is_consent_declined(), "{e:?}");
    assert_eq!(e.to_string(), "No consent preferences have been set.");
    let e = client
        .send_event(page_view("MARKER-OUT-2"))
        .await
        .unwrap_err();
    assert!(e.is_consent_declined(), "{e:?}");
    client.flush().await.unwrap();
    assert_eq!(client.stats().declined, 2);
    assert_eq!(client.stats().enqueued, 0);
    assert!(!dir_contains(dir.path(), b"MARKER-OUT"));
    assert_eq!(transport.interacts.load(Ordering::SeqCst), 0);
    assert_eq!(transport.consents.load(Ordering::SeqCst), 0);
    assert!(jar_cookies(dir.path()).is_empty());
    client.shutdown().await.unwrap();
    assert!(edge.stored_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_then_in_delivers_everything_in_submission_order() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge.client(dir.path(), "pending").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let event = if i == 2 {
            // One needs a named purpose too: it lives in another queue and still keeps its place.
            page_view(&format!("p{i}")).requires("personalize.content")
        } else {
            page_view(&format!("p{i}"))
        };
        ids.push(client.enqueue(event).await.unwrap().to_string());
    }
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.send_event(page_view("p5")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "send_event waits while consent is pending"
    );
    assert!(
        edge.stored_ids().is_empty(),
        "nothing is sent while pending"
    );
    assert!(
        jar_cookies(dir.path()).is_empty(),
        "no cookie while pending"
    );

    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    let receipt = waiting.await.unwrap().unwrap();
    ids.push(receipt.event_id.to_string());
    client.flush().await.unwrap();
    assert_eq!(edge.stored_ids(), ids);
    assert_eq!(client.stats().delivered, 6);
    assert_eq!(client.stats().queued, 0);
    let cookies = jar_cookies(dir.path());
    assert!(
        cookies.iter().any(|c| c.ends_with("_identity")),
        "{cookies:?}"
    );
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_then_out_purges_the_bytes_and_a_later_in_never_brings_them_back() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge.client(dir.path(), "pending").await;
    for i in 0..3 {
        client
            .enqueue(page_view(&format!("SECRET-{i}")))
            .await
            .unwrap();
    }
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.send_event(page_view("SECRET-waiting")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        dir_contains(dir.path(), b"SECRET-"),
        "queued events are on disk"
    );

    client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap();
    assert!(
        !dir_contains(dir.path(), b"SECRET-"),
        "the bytes are gone from every file"
    );
    let e = waiting.await.unwrap().unwrap_err();
    assert!(e.is_consent_declined(), "{e:?}");
    assert_eq!(e.to_string(), "The user declined consent.");
    assert_eq!(client.stats().purged, 4);

    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert!(
        edge.stored_ids().is_empty(),
        "a later in never brings purged events back"
    );
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_for_one_purpose_purges_only_the_events_that_need_it() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge.client(dir.path(), "pending").await;
    let plain = client.enqueue(page_view("PLAIN")).await.unwrap();
    client
        .enqueue(page_view("PERSONAL").requires("personalize.content"))
        .await
        .unwrap();
    client
        .set_consent(ConsentRequest::adobe_v2(json!({
            "collect": {"val": "y"},
            "personalize": {"content": {"val": "n"}}
        })))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(edge.stored_ids(), vec![plain.to_string()]);
    assert!(!dir_contains(dir.path(), b"PERSONAL"));
    let e = client
        .enqueue(page_view("LATER").requires("personalize.content"))
        .await
        .unwrap_err();
    assert!(e.is_consent_declined());
    client.enqueue(page_view("LATER-PLAIN")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(edge.stored_ids().len(), 2);
    assert_eq!(client.consent().state, Decision::In);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_decided_purposes_gate_their_events() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge
        .builder(dir.path())
        .purpose("crash-reports")
        .default_consent("in")
        .build()
        .await
        .unwrap();
    client
        .set_purposes([("crash-reports", Decision::Out)])
        .await
        .unwrap();
    let e = client
        .enqueue(Event::new(json!({"eventType": "crash"})).requires("crash-reports"))
        .await
        .unwrap_err();
    assert!(e.is_consent_declined());
    let e = client
        .enqueue(Event::new(json!({"eventType": "x"})).requires("no-such-purpose"))
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e:?}");
    let e = client
        .set_purposes([("general", Decision::In)])
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e:?}");
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_consent_is_refused_and_changes_nothing() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Faulty::new(&edge, []);
    let client = edge.client_via(dir.path(), "pending", &transport).await;
    let before = client.records().verify().unwrap();
    for bad in [
        ConsentRequest::adobe_v1("maybe"),
        ConsentRequest::adobe_v2(json!({"collect": "y"})),
        ConsentRequest::iab_tcf("not a tc string", true),
        ConsentRequest::from_json(json!({"consent": []})),
    ] {
        let e = client.set_consent(bad).await.unwrap_err();
        assert!(e.is_invalid_input(), "{e:?}");
    }
    let e = client
        .set_consent(ConsentRequest::from_json(json!({"consent": []})))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "'consent': Expected a non-empty array, but got []."
    );
    assert_eq!(transport.consents.load(Ordering::SeqCst), 0);
    assert_eq!(client.consent().state, Decision::Pending);
    assert_eq!(client.records().verify().unwrap(), before);
    client.shutdown().await.unwrap();

    let e = edge
        .builder(dir.path())
        .default_consent("IN")
        .build()
        .await
        .unwrap_err();
    assert!(e.is_invalid_input());
    assert_eq!(
        e.to_string(),
        r#"'defaultConsent': Expected one of these values: ["in","out","pending"], but got "IN"."#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iab_string_without_consent_is_out() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge.client(dir.path(), "pending").await;
    client.enqueue(page_view("IAB-QUEUED")).await.unwrap();
    // A valid TC string that grants neither purpose 1 nor vendor 565.
    client
        .set_consent(ConsentRequest::iab_tcf(
            "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA",
            true,
        ))
        .await
        .unwrap();
    assert_eq!(client.consent().state, Decision::Out);
    assert!(!dir_contains(dir.path(), b"IAB-QUEUED"));
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_a_typed_error_and_keeps_what_it_has() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge
        .builder(dir.path())
        .default_consent("pending")
        .max_queued_events(2)
        .build()
        .await
        .unwrap();
    client.enqueue(page_view("q1")).await.unwrap();
    client.enqueue(page_view("q2")).await.unwrap();
    let e = client.enqueue(page_view("q3")).await.unwrap_err();
    assert_eq!(e.kind(), consent::ErrorKind::QueueFull, "{e:?}");
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(edge.stored_ids().len(), 2);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_after_an_opt_out_on_its_way_is_declined_without_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(Scripted::new().hold_consents());
    let client = transport.client(dir.path(), "pending").await;
    let out = {
        let client = client.clone();
        tokio::spawn(async move { client.set_consent(ConsentRequest::adobe_v1("out")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!out.is_finished(), "the server has not answered yet");
    let e = client.enqueue(page_view("AFTER-OUT")).await.unwrap_err();
    assert!(e.is_consent_declined(), "{e:?}");
    assert!(
        !dir_contains(dir.path(), b"AFTER-OUT"),
        "the refused event touched the disk"
    );

    // The person changes their mind before the server answered: the latest call decides.
    let back_in = {
        let client = client.clone();
        tokio::spawn(async move { client.set_consent(ConsentRequest::adobe_v1("in")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued = {
        let client = client.clone();
        tokio::spawn(async move { client.send_event(page_view("AFTER-IN")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !queued.is_finished(),
        "the event waits for the chain, it is not declined"
    );
    transport.release_consents(2);
    out.await.unwrap().unwrap();
    back_in.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    assert_eq!(client.consent().state, Decision::In);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_purge_is_reported_never_delivered_and_done_later() {
    use consent_store::{DiskIo, FaultyIo, Op};
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let io = FaultyIo::new(DiskIo);
    let client = edge
        .builder(dir.path())
        .data_dir_with_faults(dir.path(), io.clone())
        .default_consent("pending")
        .build()
        .await
        .unwrap();
    for i in 0..3 {
        client
            .enqueue(page_view(&format!("OWED-{i}")))
            .await
            .unwrap();
    }
    // From now on every write fails: the purge cannot move the queue's head.
    io.fail_from(Op::Write, 0);
    let e = client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), consent::ErrorKind::Storage, "{e:?}");
    assert!(e.to_string().contains("could not be deleted"), "{e}");
    assert_eq!(client.consent().state, Decision::Out);
    io.heal();
    // The person changes their mind at once: the withdrawn events still never go out.
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dir_contains(dir.path(), b"OWED-") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !dir_contains(dir.path(), b"OWED-"),
        "the owed purge was done"
    );
    client.enqueue(page_view("NEW")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        edge.stored_ids().len(),
        1,
        "only the event given after the new 'in'"
    );
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_on_its_way_stops_the_request_already_sent() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(Scripted::new().hold_events().hold_consents());
    let client = transport.client(dir.path(), "in").await;
    client.enqueue(page_view("HELD")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // the request is on its way, held
    let out = {
        let client = client.clone();
        tokio::spawn(async move { client.set_consent(ConsentRequest::adobe_v1("out")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The event request's answer would come now, before the setConsent's.
    transport.release_events(10);
    tokio::time::sleep(Duration::from_millis(100)).await;
    transport.release_consents(1);
    out.await.unwrap().unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        transport.delivered.load(Ordering::SeqCst),
        0,
        "an event went out after the person said no"
    );
    assert!(!dir_contains(dir.path(), b"HELD"));
    client.shutdown().await.unwrap();
}
