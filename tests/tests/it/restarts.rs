//! Restarts: of the client on the same data directory with events queued, and of the server
//! (stopped or killed) in the middle of a delivery. Every event is counted in the server's
//! database: each id stored exactly once, none lost, none extra.

use std::time::Duration;

use consent::{Client, Decision, EventId};

use crate::harness::{Backend, Server};
use crate::support::{adobe_v1, builder, client, page_view, settle};

/// Asserts that the server stores exactly these events, each once.
pub(crate) async fn assert_exactly_once(server: &mut Server, ids: &[EventId]) {
    for id in ids {
        assert_eq!(server.event_stored(id.as_str()).await, 1, "event {id}");
    }
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(
        server.event_ids().await,
        expected,
        "no event lost, none extra"
    );
}

/// Enqueues `n` page views at once (so that group commit takes them together).
pub(crate) async fn enqueue_many(client: &Client, n: usize) -> Vec<EventId> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = client.clone();
        tasks.spawn(async move {
            client
                .enqueue(page_view(&format!("https://example.com/{i}")))
                .await
                .unwrap()
        });
    }
    let mut ids = Vec::with_capacity(n);
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    ids
}

/// Flushes until it succeeds (the server may just have come back), at most `tries` times.
pub(crate) async fn flush_until_ok(client: &Client, tries: u32) {
    let mut last = None;
    for _ in 0..tries {
        match client.flush().await {
            Ok(()) => return,
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("flush kept failing: {last:?}");
}

/// Pending, restart, then in: the queued events are delivered once each.
async fn pending_then_in_body(backend: Backend) {
    let Some(mut server) = Server::start_on(backend).await else {
        return;
    };
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let ids = enqueue_many(&client, 5).await;
    client.shutdown().await.unwrap();
    assert_eq!(server.events_received().await, 0);

    let client = crate::support::client(&server, &dir, "pending").await;
    assert_eq!(client.consent().state, Decision::Pending);
    assert_eq!(client.stats().queued, 5, "the queue survived the restart");
    client.set_consent(adobe_v1("in")).await.unwrap();
    client.flush().await.unwrap();
    assert_exactly_once(&mut server, &ids).await;
    assert_eq!(server.events_received().await, 5, "each sent once");
    assert_eq!(client.stats().queued, 0);
    client.shutdown().await.unwrap();

    // A third start finds nothing left to send.
    let client = crate::support::client(&server, &dir, "pending").await;
    assert_eq!(client.consent().state, Decision::In);
    assert_eq!(client.stats().queued, 0);
    client.flush().await.unwrap();
    client.shutdown().await.unwrap();
    assert_exactly_once(&mut server, &ids).await;
}
on_both!(restart_pending_then_in, super::pending_then_in_body);

/// Pending, restart, then out: the queued events are dropped, none is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_pending_then_out() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let ids = enqueue_many(&client, 5).await;
    assert_eq!(ids.len(), 5);
    client.shutdown().await.unwrap();

    let client = crate::support::client(&server, &dir, "pending").await;
    assert_eq!(client.stats().queued, 5);
    client.set_consent(adobe_v1("out")).await.unwrap();
    client.flush().await.unwrap();
    settle().await;
    assert_eq!(client.stats().queued, 0, "declined events leave the queue");
    client.shutdown().await.unwrap();

    let client = crate::support::client(&server, &dir, "in").await;
    assert_eq!(client.consent().state, Decision::Out);
    assert_eq!(client.stats().queued, 0, "and do not come back");
    client.flush().await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(server.events_received().await, 0);
    assert_eq!(server.events_stored().await, 0);
}

/// Pending with events queued; `setConsent(IN)` while the server is down fails and is not
/// applied (nothing is released); the client restarts; with the server back, consent is given
/// and every event is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_while_server_down_then_server_back() {
    let mut server = Server::start().await;
    let dir = server.scratch("client");
    let client = client(&server, &dir, "pending").await;
    let ids = enqueue_many(&client, 5).await;
    server.stop().await;
    assert!(client.set_consent(adobe_v1("in")).await.is_err());
    assert_eq!(
        client.consent().state,
        Decision::Pending,
        "a failed in is not applied"
    );
    client.shutdown().await.unwrap();

    server.restart().await;
    let client = crate::support::client(&server, &dir, "pending").await;
    assert_eq!(client.consent().state, Decision::Pending);
    assert_eq!(client.stats().queued, 5);
    settle().await;
    assert_eq!(
        server.events_received().await,
        0,
        "nothing is sent before consent"
    );
    client.set_consent(adobe_v1("in")).await.unwrap();
    client.flush().await.unwrap();
    assert_exactly_once(&mut server, &ids).await;
    client.shutdown().await.unwrap();
}

/// Consent in; events enqueued while the server is down (flush fails); the client restarts;
/// with the server back they are delivered once each.
async fn enqueued_while_down_body(backend: Backend) {
    let Some(mut server) = Server::start_on(backend).await else {
        return;
    };
    let dir = server.scratch("client");
    let client = builder(&server.base_url(), &dir, "pending")
        .flush_timeout(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    client.set_consent(adobe_v1("in")).await.unwrap();
    server.stop().await;
    let ids = enqueue_many(&client, 8).await;
    let err = client.flush().await.unwrap_err();
    assert!(err.is_timeout(), "the server is down: {err:?}");
    // What could not be delivered stays queued for the next start.
    client.shutdown().await.unwrap();
    server.restart().await;

    let client = crate::support::client(&server, &dir, "pending").await;
    assert_eq!(client.consent().state, Decision::In);
    flush_until_ok(&client, 3).await;
    assert_exactly_once(&mut server, &ids).await;
    client.shutdown().await.unwrap();
}
on_both!(
    restart_events_enqueued_while_server_down,
    super::enqueued_while_down_body
);

/// How the server goes away in the middle of a delivery.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGTERM: in-flight requests finish.
    Graceful,
    /// SIGKILL.
    Kill,
}

/// 300 events being delivered two per request; the server goes away after some are stored and
/// comes back on the same port and database; every event ends up stored exactly once.
async fn server_restart_mid_delivery(backend: Backend, stop: Stop) {
    let Some(mut server) = Server::start_on(backend).await else {
        return;
    };
    let dir = server.scratch("client");
    let client = builder(&server.base_url(), &dir, "pending")
        .batch_size(2)
        .flush_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let ids = enqueue_many(&client, 300).await;
    client.set_consent(adobe_v1("in")).await.unwrap();
    let flushing = tokio::spawn({
        let client = client.clone();
        async move { client.flush().await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut started = false;
    while std::time::Instant::now() < deadline {
        if server.events_stored().await >= 10 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(started, "delivery did not start");
    match stop {
        Stop::Graceful => server.stop().await,
        Stop::Kill => server.kill().await,
    }
    let stored_at_stop = server.events_stored().await;
    eprintln!("note: {stored_at_stop} of 300 events stored when the server went away ({stop:?})");
    assert!(
        stored_at_stop < 300,
        "the server went away mid-delivery ({stored_at_stop} of 300 stored)"
    );
    let _ = flushing.await.unwrap(); // fails or times out while the server is away
    server.restart().await;
    flush_until_ok(&client, 5).await;
    assert_exactly_once(&mut server, &ids).await;
    assert_eq!(client.stats().queued, 0);
    client.shutdown().await.unwrap();
}

async fn server_killed_mid_delivery_body(backend: Backend) {
    server_restart_mid_delivery(backend, Stop::Kill).await;
}
on_both!(
    server_killed_mid_delivery,
    super::server_killed_mid_delivery_body
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_mid_delivery() {
    server_restart_mid_delivery(Backend::Sqlite, Stop::Graceful).await;
}

/// One process per data directory: a second client on a directory in use is refused as locked,
/// and the directory is free again once the first has shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_in_use_is_locked_until_shutdown() {
    let server = Server::start().await;
    let dir = server.scratch("client");
    let first = client(&server, &dir, "pending").await;
    let err = builder(&server.base_url(), &dir, "pending")
        .build()
        .await
        .unwrap_err();
    assert!(err.is_locked(), "{err:?}");
    first.shutdown().await.unwrap();
    let second = client(&server, &dir, "pending").await;
    second.shutdown().await.unwrap();
}
