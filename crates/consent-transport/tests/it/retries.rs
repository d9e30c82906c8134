//! Retries under injected failures: 503s, 429 with `Retry-After`, timeouts, resets, refusals.

use std::time::Duration;

use consent_core::Outcome;
use consent_transport::{CookieJar, DataRequest, Delivery, Event, Request, SendError, Transport};
use serde_json::json;

use crate::server::{Reply, ResettingServer, TestServer};
use crate::transport;

fn interact() -> Request {
    Request::Interact(DataRequest::events(vec![Event::new(
        json!({"eventType": "test"}),
    )]))
}

fn ok() -> Reply {
    Reply::json(200, json!({"handle": []}))
}

#[tokio::test]
async fn retries_503s_with_capped_exponential_backoff_and_keeps_the_ids() {
    let server = TestServer::start(|i, _| match i {
        0..=2 => Reply::json(503, json!({"title": "busy"})),
        _ => ok(),
    })
    .await;
    let (transport, sleep) = transport(&server.base, CookieJar::default());

    let reply = transport.send(interact()).await.unwrap();

    assert_eq!(reply.attempts, 4);
    // No jitter: the ceilings, 10 ms doubling, capped at 40 ms.
    assert_eq!(
        sleep.waits(),
        [10, 20, 40].map(Duration::from_millis).to_vec()
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    // The same request id and event id on every attempt, for the server to de-duplicate.
    for r in &requests {
        assert_eq!(r.query["requestId"], reply.request_id);
        assert_eq!(
            r.body["events"][0]["xdm"]["_id"],
            requests[0].body["events"][0]["xdm"]["_id"]
        );
    }
}

#[tokio::test]
async fn gives_up_after_the_last_attempt_as_recoverable() {
    let server = TestServer::start(|_, _| Reply::json(502, json!({}))).await;
    let (transport, sleep) = transport(&server.base, CookieJar::default());

    let error = transport.send(interact()).await.unwrap_err();

    let SendError::Status(status) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(status.status, 502);
    assert_eq!(status.attempts, 4);
    assert_eq!(error.delivery(), Delivery::Recoverable);
    assert_eq!(error.delivery().outcome(), Outcome::Failure);
    assert_eq!(server.requests().len(), 4);
    assert_eq!(sleep.waits().len(), 3);
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let server = TestServer::start(|i, _| match i {
        0 => Reply::json(429, json!({})).header("retry-after", "2"),
        _ => ok(),
    })
    .await;
    let (transport, sleep) = transport(&server.base, CookieJar::default());

    let reply = transport.send(interact()).await.unwrap();

    assert_eq!(reply.attempts, 2);
    assert_eq!(sleep.waits(), [Duration::from_secs(2)]);
}

#[tokio::test]
async fn a_retry_after_beyond_the_policy_is_left_to_the_caller() {
    let server =
        TestServer::start(|_, _| Reply::json(503, json!({})).header("retry-after", "3600")).await;
    let (transport, sleep) = transport(&server.base, CookieJar::default());

    let error = transport.send(interact()).await.unwrap_err();

    let SendError::Status(status) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(status.retry_after, Some(Duration::from_secs(3600)));
    assert_eq!(error.delivery(), Delivery::Recoverable);
    assert_eq!(server.requests().len(), 1);
    assert!(sleep.waits().is_empty());
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    for status in [400, 401, 403, 404, 409, 422] {
        let server = TestServer::start(move |_, _| Reply::json(status, json!({}))).await;
        let (transport, sleep) = transport(&server.base, CookieJar::default());
        let error = transport.send(interact()).await.unwrap_err();
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.delivery(), Delivery::Unrecoverable, "{status}");
        assert_eq!(server.requests().len(), 1, "{status}");
        assert!(sleep.waits().is_empty());
    }
}

#[tokio::test]
async fn retries_timeouts() {
    // The transport gives an attempt 300 ms; the first two answers take 2 s.
    let server = TestServer::start(|i, _| match i {
        0 | 1 => ok().delayed(Duration::from_secs(2)),
        _ => ok(),
    })
    .await;
    let (transport, sleep) = transport(&server.base, CookieJar::default());

    let reply = transport.send(interact()).await.unwrap();

    assert_eq!(reply.attempts, 3);
    assert_eq!(sleep.waits().len(), 2);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn timeouts_on_every_attempt_end_as_a_recoverable_timeout() {
    let server = TestServer::start(|_, _| ok().delayed(Duration::from_secs(2))).await;
    let (transport, _) = transport(&server.base, CookieJar::default());

    let error = transport.send(interact()).await.unwrap_err();

    assert!(
        matches!(error, SendError::Timeout { attempts: 4, .. }),
        "{error:?}"
    );
    assert_eq!(error.delivery(), Delivery::Recoverable);
}

#[tokio::test]
async fn retries_connection_resets() {
    let server = ResettingServer::start(2).await;
    let (transport, sleep) = transport(&server.base, CookieJar::default());

    let reply = transport.send(interact()).await.unwrap();

    assert_eq!(reply.attempts, 3);
    assert_eq!(*server.connections.lock().unwrap(), 3);
    assert_eq!(sleep.waits().len(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_recoverable() {
    // Bind and release a port: nothing listens there any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (transport, sleep) = transport(&format!("http://{addr}"), CookieJar::default());

    let error = transport.send(interact()).await.unwrap_err();

    assert!(
        matches!(error, SendError::Connect { attempts: 4, .. }),
        "{error:?}"
    );
    assert_eq!(error.delivery(), Delivery::Recoverable);
    assert_eq!(sleep.waits().len(), 3);
}
