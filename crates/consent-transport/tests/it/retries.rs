//! Retries under injected failures: 503s, 429 with `Retry-After`, timeouts, resets, refusals.

use std::time::Duration;

use consent_core::Outcome;
use consent_transport::{CookieJar, DataRequest, Delivery, Event, Request, SendError, Transport};
use serde_json::json;

use crate::server::{Reply, ResettingServer, TestServer};
use crate::{fast_policy, transport, transport_with};

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

#[tokio::test]
async fn retry_after_on_every_answer_cannot_keep_a_send_past_its_deadline() {
    // 100 attempts allowed and `Retry-After: 2` on every answer: the deadline of 5 s (attempts
    // plus waits) lets two waits happen; a third would end past it.
    let server =
        TestServer::start(|_, _| Reply::json(503, json!({})).header("retry-after", "2")).await;
    let policy = fast_policy()
        .with_max_attempts(100)
        .with_deadline(Duration::from_secs(5));
    let (transport, sleep) = transport_with(
        &server.base,
        CookieJar::default(),
        policy,
        Duration::from_millis(300),
    );

    let error = transport.send(interact()).await.unwrap_err();

    assert_eq!(sleep.waits(), vec![Duration::from_secs(2); 2]);
    assert_eq!(server.requests().len(), 3);
    let SendError::Status(status) = &error else {
        panic!("{error:?}");
    };
    assert_eq!((status.status, status.attempts), (503, 3));
    assert_eq!(error.delivery(), Delivery::Recoverable);
}

#[tokio::test]
async fn a_server_slower_than_the_deadline_ends_the_send_at_the_deadline() {
    // Each attempt may take 10 s, but the whole send only 400 ms.
    let server = TestServer::start(|_, _| ok().delayed(Duration::from_secs(5))).await;
    let policy = fast_policy().with_deadline(Duration::from_millis(400));
    let (transport, _) = transport_with(
        &server.base,
        CookieJar::default(),
        policy,
        Duration::from_secs(10),
    );

    let started = std::time::Instant::now();
    let error = transport.send(interact()).await.unwrap_err();
    let took = started.elapsed();

    assert!(
        matches!(error, SendError::DeadlineExceeded { attempts: 1, deadline } if deadline == Duration::from_millis(400)),
        "{error:?}"
    );
    assert_eq!(error.delivery(), Delivery::Recoverable);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn no_retry_after_value_panics_or_stalls() {
    for value in [
        "18446744073709551615",
        "99999999999999999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "-5",
        "1e9",
        "soon",
        "",
    ] {
        let server =
            TestServer::start(move |_, _| Reply::json(503, json!({})).header("retry-after", value))
                .await;
        let (transport, sleep) = transport(&server.base, CookieJar::default());

        let error = transport.send(interact()).await.unwrap_err();

        let SendError::Status(status) = &error else {
            panic!("{value:?}: {error:?}");
        };
        if let Some(wait) = status.retry_after {
            assert!(wait <= Duration::from_secs(86_400), "{value:?}: {wait:?}");
            // A caller schedules the re-send with it.
            assert!(std::time::Instant::now().checked_add(wait).is_some());
        }
        let waited: Duration = sleep.waits().iter().sum();
        assert!(
            waited <= Duration::from_secs(60),
            "{value:?}: waited {waited:?}"
        );
    }
}
