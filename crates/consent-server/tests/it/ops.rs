//! Health, metrics, OpenAPI, limits.

use serde_json::{Value, json};

use crate::harness::{DS_A, Db, Harness};

async fn health_metrics_and_openapi(h: &Harness) {
    let health = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let metrics = h.client.get(h.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("# TYPE consent_http_responses_total counter"),
        "{text}"
    );
    let doc: Value = h
        .client
        .get(h.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/ee/v1/privacy/set-consent",
        "/ee/{locationHint}/v1/interact",
        "/unsubscribe",
        "/imp/consent/preferences",
        "/imp/consent/decrypt",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
}
crate::on_both!(health, health_metrics_and_openapi);

#[tokio::test]
async fn public_endpoints_are_rate_limited_per_client() {
    let h = Harness::start_with(Db::Sqlite, |c| c.rate_limit_per_sec = 1)
        .await
        .unwrap();
    let path = format!("/ee/v1/identity/acquire?configId={DS_A}");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(h.post_json(&path, &json!({})).await.0);
    }
    assert_eq!(&statuses[..2], &[200, 200]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    // Health checks are not limited.
    let health = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    h.shutdown().await;
}

/// Behind a trusted reverse proxy every forwarded client has a bucket of its own; from a peer
/// that is not trusted, `X-Forwarded-For` changes nothing.
#[tokio::test]
async fn forwarded_clients_are_limited_apart_only_behind_a_trusted_proxy() {
    let path = format!("/ee/v1/identity/acquire?configId={DS_A}");
    let burst = |h: &Harness, client: &'static str| {
        let url = h.url(&path);
        let http = h.client.clone();
        async move {
            let mut statuses = Vec::new();
            for _ in 0..4 {
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-forwarded-for", client)
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                statuses.push(response.status().as_u16());
            }
            statuses
        }
    };
    let trusted = Harness::start_with(Db::Sqlite, |c| {
        c.rate_limit_per_sec = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await
    .unwrap();
    let first = burst(&trusted, "203.0.113.1").await;
    assert!(first.contains(&429), "{first:?}");
    let second = burst(&trusted, "203.0.113.2").await;
    assert_eq!(&second[..2], &[200, 200], "a client of its own: {second:?}");
    trusted.shutdown().await;

    let untrusted = Harness::start_with(Db::Sqlite, |c| c.rate_limit_per_sec = 1)
        .await
        .unwrap();
    let first = burst(&untrusted, "203.0.113.1").await;
    assert!(first.contains(&429), "{first:?}");
    let second = burst(&untrusted, "203.0.113.2").await;
    // The same bucket as the first burst: at most the token refilled since then (one a second).
    assert!(
        second.iter().filter(|s| **s == 200).count() <= 1 && second.contains(&429),
        "the header picks no new bucket: {second:?}"
    );
    untrusted.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let h = Harness::start(Db::Sqlite).await.unwrap();
    let big = "x".repeat(200 * 1024);
    let response = h
        .client
        .post(h.url(&format!("/ee/v1/interact?configId={DS_A}")))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"events\":[{{\"xdm\":{{\"pad\":\"{big}\"}}}}]}}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    h.shutdown().await;
}

#[tokio::test]
async fn slow_requests_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = Harness::start_with(Db::Sqlite, |c| {
        c.request_timeout = std::time::Duration::from_millis(200);
    })
    .await
    .unwrap();
    // A client that announces a body and never sends it all.
    let mut stream = tokio::net::TcpStream::connect(h.server().local_addr())
        .await
        .unwrap();
    let request = format!(
        "POST /ee/v1/interact?configId={DS_A} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"events\""
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("the server answers before the client gives up")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(stream);
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut h = Harness::start(Db::Sqlite).await.unwrap();
    let body = r#"{"consent":[{"standard":"Adobe","version":"1.0","value":{"general":"in"}}]}"#;
    let (head, tail) = body.split_at(20);
    let mut stream = tokio::net::TcpStream::connect(h.server().local_addr())
        .await
        .unwrap();
    let request = format!(
        "POST /ee/v1/privacy/set-consent?configId={DS_A} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Shut down while the request is in flight: the server stops accepting, then waits for it.
    let server = h.server.take().unwrap();
    let addr = server.local_addr();
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the in-flight request"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections once stopping"
    );
    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("general=in"), "{answer}");
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Every SQLite connection keeps a small page cache (`PRAGMA cache_size = -256`, see
/// `model::SQLITE_PRAGMAS`): with SQLite's 2 MiB default the server's memory crept up in the
/// 10-minute soak (`docs/reliability.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_connections_keep_a_small_page_cache() {
    use sqlx::Row as _;
    let h = Harness::start(Db::Sqlite).await.unwrap();
    // Several pooled connections at once, each must have it.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(h.server().db().pool().acquire().await.unwrap());
    }
    for conn in &mut conns {
        let row = sqlx::query("PRAGMA cache_size")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(row.try_get::<i64, _>(0).unwrap(), -256);
    }
    drop(conns);
    h.shutdown().await;
}
