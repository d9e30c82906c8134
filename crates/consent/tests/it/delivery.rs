//! Delivery: at least once with stable ids (exactly once at the server), retries, refusals.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use consent::{ConsentRequest, Decision, ErrorKind};

use crate::harness::{Edge, Fault, Faulty, Scripted, page_view};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_with_the_same_ids_and_stored_once() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Faulty::new(&edge, [Fault::LoseAnswer, Fault::Status(502)]);
    let client = edge.client_via(dir.path(), "in", &transport).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            client
                .enqueue(page_view(&format!("r{i}")))
                .await
                .unwrap()
                .to_string(),
        );
    }
    client.flush().await.unwrap();
    let stored = edge.stored_ids();
    assert_eq!(stored.len(), 20, "each event stored exactly once");
    let mut sorted = stored.clone();
    sorted.sort();
    ids.sort();
    assert_eq!(sorted, ids);
    assert!(transport.interacts.load(Ordering::SeqCst) >= 3);
    assert!(client.stats().retried >= 20, "{:?}", client.stats());
    assert_eq!(client.stats().delivered, 20);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_refusal_is_reported_not_dropped_silently() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Faulty::new(&edge, [Fault::Status(400)]);
    let client = edge.client_via(dir.path(), "in", &transport).await;
    let e = client.send_event(page_view("refused")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected, "{e:?}");
    assert!(e.to_string().contains("400"), "{e}");
    assert_eq!(client.stats().dropped_rejected, 1);
    assert_eq!(client.stats().queued, 0);
    // The next one goes through.
    let receipt = client.send_event(page_view("accepted")).await.unwrap();
    assert_eq!(receipt.status, 200);
    assert_eq!(edge.stored_ids(), vec![receipt.event_id.to_string()]);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_requests_are_split_not_dropped() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Faulty::new(&edge, [Fault::Status(413), Fault::Status(413)]);
    let client = edge.client_via(dir.path(), "pending", &transport).await;
    for i in 0..8 {
        client.enqueue(page_view(&format!("s{i}"))).await.unwrap();
    }
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(edge.stored_ids().len(), 8);
    assert_eq!(client.stats().dropped_rejected, 0);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_go_in_few_requests() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Faulty::new(&edge, []);
    let client = edge.client_via(dir.path(), "pending", &transport).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..500 {
        let client = client.clone();
        set.spawn(async move { client.enqueue(page_view(&format!("b{i}"))).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(edge.stored_ids().len(), 500);
    let requests = transport.interacts.load(Ordering::SeqCst);
    assert!(requests <= 10, "500 events in {requests} requests");
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_answer_older_than_an_opt_out_cannot_turn_consent_back_in() {
    let dir = tempfile::tempdir().unwrap();
    // The answer to the event request says "in": the server's view when it took the request.
    let transport = Arc::new(Scripted::new().hold_events().interact_consent("general=in"));
    let client = transport.client(dir.path(), "in").await;
    let sent = {
        let client = client.clone();
        tokio::spawn(async move { client.send_event(page_view("in-flight")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap();
    assert_eq!(client.consent().state, Decision::Out);
    transport.release_events(1);
    // The request was stopped by the opt-out (its answer cannot decide anything any more).
    let e = sent.await.unwrap().unwrap_err();
    assert!(e.is_consent_declined(), "{e:?}");
    client.flush().await.unwrap();
    assert_eq!(
        client.consent().state,
        Decision::Out,
        "the answer to a request sent before the opt-out brought back 'in'"
    );
    let e = client.enqueue(page_view("after")).await.unwrap_err();
    assert!(e.is_consent_declined());
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_panics_does_not_stall_delivery() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Faulty::new(&edge, [Fault::Panic]);
    let client = edge
        .builder(dir.path())
        .default_consent("in")
        .flush_timeout(Duration::from_secs(10))
        .transport(transport)
        .build()
        .await
        .unwrap();
    let id = client.enqueue(page_view("after-panic")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(edge.stored_ids(), vec![id.to_string()]);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_the_server_refuses_ends_alone() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Faulty::new(&edge, []);
    *transport.poison.lock().unwrap() = Some("POISON".to_owned());
    let client = edge.client_via(dir.path(), "pending", &transport).await;
    for i in 0..16 {
        let marker = if i == 11 {
            "POISON".to_owned()
        } else {
            format!("fine-{i}")
        };
        client.enqueue(page_view(&marker)).await.unwrap();
    }
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        edge.stored_ids().len(),
        15,
        "only the refused event is missing"
    );
    assert_eq!(client.stats().dropped_rejected, 1);
    assert_eq!(client.stats().queued, 0);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_stops_the_retries_of_a_request_on_its_way() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(Scripted::new().retry_forever());
    let client = transport.client(dir.path(), "in").await;
    let sent = {
        let client = client.clone();
        tokio::spawn(async move { client.send_event(page_view("RETRIED")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(transport.attempts.load(Ordering::SeqCst) >= 1);
    client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap();
    let e = sent.await.unwrap().unwrap_err();
    assert!(e.is_consent_declined(), "{e:?}");
    let after_out = transport.attempts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        transport.attempts.load(Ordering::SeqCst),
        after_out,
        "the request went on after the opt-out returned"
    );
    assert!(!crate::harness::dir_contains(dir.path(), b"RETRIED"));
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_asking_for_a_longer_wait_is_given_it() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The client's own first backoff is 500 ms; the server asks for 2 s.
    let transport = Faulty::new(&edge, [Fault::TooMany(Duration::from_secs(2))]);
    let client = edge.client_via(dir.path(), "in", &transport).await;
    let id = client.enqueue(page_view("later")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        transport.interacts.load(Ordering::SeqCst),
        1,
        "tried again before the server's Retry-After"
    );
    assert!(edge.stored_ids().is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(edge.stored_ids(), vec![id.to_string()]);
    client.shutdown().await.unwrap();
}
