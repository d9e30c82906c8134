//! The security review's findings F3 (slowloris: no header read timeout, no connection cap) and
//! F7 (no rate limit on the authenticated endpoints), and the latency histograms of `/metrics`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::{DS_A, Db, Harness, ORG_A};

/// Sends `GET path` on a kept-alive connection and reads the answer; its status.
async fn get_on(stream: &mut TcpStream, path: &str) -> u16 {
    get_body_on(stream, path).await.0
}

/// Sends `GET path` on a kept-alive connection and reads the answer; its status and body.
async fn get_body_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: consent.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_answer(stream).await
}

/// Reads one HTTP/1.1 answer with a `content-length` body; its status and body.
async fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let h = Harness::start_with(Db::Sqlite, |c| {
        c.header_read_timeout = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let addr = h.server().local_addr();

    // Slowloris: part of a header, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    let waited = started.elapsed();
    assert!(
        read.is_ok(),
        "the connection is still open after 5 s with unfinished headers"
    );
    // Closed (EOF or reset) once the timeout passed, not before.
    assert!(waited >= Duration::from_millis(800), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // Nothing was answered to the unfinished request beyond, at most, an error status.
    let text = String::from_utf8_lossy(&rest);
    assert!(text.is_empty() || !text.starts_with("HTTP/1.1 2"), "{text}");

    // A connection that says nothing at all is closed too.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a silent connection is kept open");

    // Keep-alive still works: several requests on one connection, each within the timeout.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(get_on(&mut kept, "/healthz").await, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The server still answers others.
    let health = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    const CAP: usize = 3;
    let h = Harness::start_with(Db::Sqlite, |c| c.max_connections = CAP)
        .await
        .unwrap();
    let addr = h.server().local_addr();
    let mut open = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get_on(&mut stream, "/healthz").await, 200);
        open.push(stream);
    }

    // One more: the kernel completes the handshake (backlog), but the server does not serve it.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: consent.test\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(1500), waiting.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "connection {} was served while {CAP} were open",
        CAP + 1
    );

    // The established ones keep working.
    for stream in &mut open {
        assert_eq!(get_on(stream, "/healthz").await, 200);
    }

    // One closes: the waiting one is accepted and answered.
    drop(open.pop());
    let status = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut waiting))
        .await
        .expect("the waiting connection is served once one closes");
    assert_eq!(status.0, 200);
    // Read on the waiting connection itself: a new one would have to wait for a free slot.
    let (_, metrics) = get_body_on(&mut waiting, "/metrics").await;
    assert!(
        metrics.contains(&format!("consent_connections_accepted_total {}", CAP + 1)),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("consent_connections_open {CAP}")),
        "{metrics}"
    );
    drop(open);
    drop(waiting);
    h.shutdown().await;
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address is loopback on Linux).
fn client_from(source: [u8; 4]) -> reqwest::Client {
    crate::harness::install_crypto_provider();
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(source))
        .build()
        .unwrap()
}

/// `POST /imp/consent/preferences` as organisation A with the bearer token `token`; the status
/// and `Retry-After`.
async fn preferences_with(
    client: &reqwest::Client,
    h: &Harness,
    token: &str,
) -> (u16, Option<u64>) {
    let response = client
        .post(h.url("/imp/consent/preferences?params=p&pid=q&sig=s"))
        .header("x-api-key", "key-a")
        .header("authorization", format!("Bearer {token}"))
        .header("x-gw-ims-org-id", ORG_A)
        .json(&json!({"marketing": [{"type": "email", "choice": "no"}]}))
        .send()
        .await
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (response.status().as_u16(), retry)
}

/// A sample's value in `/metrics` text.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_client() {
    let h = Harness::start_with(Db::Sqlite, |c| c.auth_failures_per_minute = 10)
        .await
        .unwrap();
    let guesser = client_from([127, 0, 0, 1]);

    // The review's reproduction: 150 wrong tokens for a real key, as fast as they go.
    let mut statuses = BTreeMap::new();
    let mut retry_afters = Vec::new();
    for i in 0..150 {
        let (status, retry) = preferences_with(&guesser, &h, &format!("guess{i}")).await;
        *statuses.entry(status).or_insert(0) += 1;
        if status == 429 {
            retry_afters.push(retry.expect("429 without Retry-After"));
        }
    }
    let failures = statuses.get(&401).copied().unwrap_or(0);
    let limited = statuses.get(&429).copied().unwrap_or(0);
    assert_eq!(failures + limited, 150, "{statuses:?}");
    // The burst of 10, plus one per 6 s that passed.
    assert!((10..=12).contains(&failures), "{statuses:?}");
    assert!(
        retry_afters.iter().all(|s| (1..=6).contains(s)),
        "{retry_afters:?}"
    );

    // Locked out whatever key it names: even the right token is refused now, so the guesser
    // learns nothing and cannot burn the key's own budget.
    assert_eq!(preferences_with(&guesser, &h, "token-a").await.0, 429);
    // The public endpoints are not affected.
    let (status, _) = h
        .post_json(
            &format!("/ee/v1/identity/acquire?configId={DS_A}"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);

    // Another client is not affected by the first one's failures.
    let other = client_from([127, 0, 0, 2]);
    let (status, _) = preferences_with(&other, &h, "token-a").await;
    assert_ne!(status, 429);
    assert_ne!(status, 401);
    let (status, _) = preferences_with(&other, &h, "wrong").await;
    assert_eq!(status, 401);

    let metrics = h.metrics().await;
    assert_eq!(
        sample(&metrics, "consent_auth_failures_total"),
        failures + 1,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "consent_api_rate_limited_total{reason=\"auth_failures\"}"
        ),
        limited + 1,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "consent_api_rate_limited_total{reason=\"api_key\"}"
        ),
        0
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_over_its_budget_gets_429() {
    let h = Harness::start_with(Db::Sqlite, |c| c.api_rate_limit_per_sec = 2)
        .await
        .unwrap();
    let read = |org_b: bool| {
        h.auth(
            h.client.get(h.url("/admin/v1/profiles/CRMID/nobody")),
            org_b,
        )
        .send()
    };
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..10 {
        let response = read(false).await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 {
            retry = response.headers().get("retry-after").cloned();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "rate_limited", "{body}");
        }
    }
    // Burst of twice the rate, then refused.
    assert_eq!(&statuses[..4], &[404, 404, 404, 404], "{statuses:?}");
    assert!(statuses[4..].contains(&429), "{statuses:?}");
    assert_eq!(retry.unwrap().to_str().unwrap(), "1");
    // Another key has its own budget, from the same client.
    assert_eq!(read(true).await.unwrap().status().as_u16(), 404);
    // A wrong token never reaches the key's budget: it is a 401, not a 429.
    let wrong = h
        .client
        .get(h.url("/admin/v1/profiles/CRMID/nobody"))
        .header("x-api-key", "key-a")
        .header("authorization", "Bearer nope")
        .header("x-gw-ims-org-id", ORG_A)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    // The budget refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(read(false).await.unwrap().status().as_u16(), 404);

    let metrics = h.metrics().await;
    let refused = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!(
        sample(
            &metrics,
            "consent_api_rate_limited_total{reason=\"api_key\"}"
        ),
        refused,
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_a_latency_histogram_per_route() {
    let h = Harness::start(Db::Sqlite).await.unwrap();
    // One request to every route template (the answer's status does not matter here).
    let routes = [
        ("POST", "/ee/v1/interact", "/ee/v1/interact"),
        ("POST", "/ee/{hint}/v1/interact", "/ee/va6/v1/interact"),
        ("POST", "/ee/v1/collect", "/ee/v1/collect"),
        ("POST", "/ee/{hint}/v1/collect", "/ee/va6/v1/collect"),
        (
            "POST",
            "/ee/v1/privacy/set-consent",
            "/ee/v1/privacy/set-consent",
        ),
        (
            "POST",
            "/ee/{hint}/v1/privacy/set-consent",
            "/ee/va6/v1/privacy/set-consent",
        ),
        ("POST", "/ee/v1/identity/acquire", "/ee/v1/identity/acquire"),
        (
            "POST",
            "/ee/{hint}/v1/identity/acquire",
            "/ee/va6/v1/identity/acquire",
        ),
        ("GET", "/unsubscribe", "/unsubscribe"),
        (
            "POST",
            "/imp/consent/preferences",
            "/imp/consent/preferences",
        ),
        ("GET", "/imp/consent/decrypt", "/imp/consent/decrypt"),
        (
            "POST",
            "/admin/v1/unsubscribe-links",
            "/admin/v1/unsubscribe-links",
        ),
        (
            "GET",
            "/admin/v1/profiles/{namespace}/{id}",
            "/admin/v1/profiles/CRMID/x",
        ),
        ("GET", "/healthz", "/healthz"),
        ("GET", "/openapi.json", "/openapi.json"),
    ];
    for (method, _, path) in routes {
        let url = h.url(&format!("{path}?configId={DS_A}"));
        let request = match method {
            "GET" => h.client.get(url),
            _ => h.client.post(url).json(&json!({})),
        };
        request.send().await.unwrap();
    }
    h.client.get(h.url("/no/such/route")).send().await.unwrap();
    h.client.get(h.url("/metrics")).send().await.unwrap();

    let text = h.metrics().await;
    assert!(
        text.contains("# TYPE consent_http_request_duration_seconds histogram"),
        "{text}"
    );
    for (method, template, _) in routes
        .into_iter()
        .chain([("GET", "unmatched", ""), ("GET", "/metrics", "")])
    {
        let series = format!("route=\"{template}\",method=\"{method}\"");
        let count = text
            .lines()
            .filter(|l| l.starts_with("consent_http_request_duration_seconds_count{"))
            .filter(|l| l.contains(&series))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>();
        assert_eq!(count, 1, "{series} in\n{text}");
        assert!(
            text.lines().any(
                |l| l.starts_with("consent_http_request_duration_seconds_bucket{")
                    && l.contains(&series)
                    && l.contains("le=\"+Inf\"")
            ),
            "{series} in\n{text}"
        );
    }
    let healthz = "{route=\"/healthz\",method=\"GET\",class=\"2xx\"}";
    assert!(
        text.contains(&format!(
            "consent_http_request_duration_seconds_count{healthz} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains("route=\"unmatched\",method=\"GET\",class=\"4xx\""),
        "{text}"
    );

    // Every metric of before is still there, under its old name.
    for name in [
        "# TYPE consent_http_responses_total counter",
        "consent_http_responses_total{class=\"2xx\"} ",
        "consent_http_responses_total{class=\"4xx\"} ",
        "consent_http_responses_total{class=\"5xx\"} ",
        "consent_http_request_duration_microseconds_sum ",
        "consent_decisions_total{general=\"in\"} ",
        "consent_decisions_total{general=\"out\"} ",
        "consent_decisions_total{general=\"pending\"} ",
        "consent_invalid_payloads_total ",
        "consent_events_total{outcome=\"stored\"} ",
        "consent_events_total{outcome=\"duplicate\"} ",
        "consent_events_total{outcome=\"refused_consent_out\"} ",
        "consent_events_total{outcome=\"refused_consent_pending\"} ",
        "consent_unsubscribes_total ",
        "consent_links_refused_total ",
        "consent_rate_limited_total ",
        "consent_timeouts_total ",
    ] {
        assert!(text.contains(name), "{name} in\n{text}");
    }
    h.shutdown().await;
}

/// The attack review's follow-up: many guesses sent with their headers only, held open, then
/// released at once, must not all be judged while the client's budget still shows a token.
#[tokio::test]
async fn guesses_held_open_are_judged_one_by_one() {
    let h = Harness::start_with(Db::Sqlite, |c| c.auth_failures_per_minute = 10)
        .await
        .unwrap();
    let addr = h.server().local_addr();
    let mut streams = Vec::new();
    for i in 0..40 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /admin/v1/unsubscribe-links HTTP/1.1\r\nHost: x\r\nx-api-key: key-a\r\n\
             authorization: Bearer guess{i}\r\nx-gw-ims-org-id: {ORG_A}\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    // Every guess is in; now the bodies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut statuses = BTreeMap::new();
    for stream in &mut streams {
        let _ = stream.write_all(b"{}").await;
    }
    for stream in &mut streams {
        let (status, _) = read_answer(stream).await;
        *statuses.entry(status).or_insert(0) += 1;
    }
    let failures = statuses.get(&401).copied().unwrap_or(0);
    assert!(failures <= 12, "{statuses:?}");
    assert_eq!(
        failures + statuses.get(&429).copied().unwrap_or(0),
        40,
        "{statuses:?}"
    );
}
