//! Chaos: a fault proxy on loopback between the client and the server that spoils 30 % of the
//! requests, each in one of six ways: a delay, a connection closed without an answer before the
//! server sees the request, a 503 from the proxy, an answer cut short, an answer written slowly,
//! and an answer lost after the server acted on the request.
//!
//! Through it, a `consent::Client` enqueues events while pending, then gives and withdraws consent
//! in turns, ending with "in" right after an "out", and flushes. Every event enqueued is stored
//! exactly once, the server's set-consent records are exactly the person's changes in order (an
//! "out" that arrived late, after the "in" that followed it, would show), consent ends "in" on
//! both sides, and the test process's resident memory grows by less than 64 MiB (reported).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use consent::RetryPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Backend, Server};
use crate::restarts::flush_until_ok;
use crate::support::{adobe_v1, builder, page_view};

/// How many requests the proxy spoiled, by kind, and how many it passed.
#[derive(Default)]
struct Tally {
    passed: AtomicU64,
    faults: [AtomicU64; 6],
}

const FAULTS: [&str; 6] = [
    "delay",
    "closed unanswered before the server",
    "503 from the proxy",
    "body cut short",
    "slow answer",
    "answer lost after the server acted",
];

/// A request read off a connection: its head and body, as bytes.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

/// Sends the request to the server as it came (one request per connection) and returns the raw
/// answer.
async fn forward(upstream: &str, head: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).await.ok()?;
    // One exchange per connection: ask the server to close after it.
    let mut rewritten = String::new();
    for line in head.trim_end_matches("\r\n\r\n").split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
    }
    rewritten.push_str("connection: close\r\n\r\n");
    server.write_all(rewritten.as_bytes()).await.ok()?;
    server.write_all(body).await.ok()?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).await.ok()?;
    Some(answer)
}

/// The proxy: accepts connections, reads one request each, and spoils 30 % of them.
async fn proxy(listener: TcpListener, upstream: String, tally: Arc<Tally>) {
    let mut random = consent_e2e::XorShift::new(0x1234_5678_9ABC_DEF1);
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let roll = random.next_u64();
        let upstream = upstream.clone();
        let tally = tally.clone();
        tokio::spawn(async move {
            let Some((head, body)) = read_request(&mut client).await else {
                return;
            };
            let fault = (roll % 100 < 30).then_some((roll >> 8) as usize % FAULTS.len());
            match fault {
                None => tally.passed.fetch_add(1, Ordering::Relaxed),
                Some(kind) => tally.faults[kind].fetch_add(1, Ordering::Relaxed),
            };
            match fault {
                Some(1) => return, // closed unanswered: the server never saw it
                Some(2) => {
                    let _ = client
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                Some(0) => tokio::time::sleep(Duration::from_millis(50 + (roll >> 16) % 250)).await,
                _ => {}
            }
            let Some(answer) = forward(&upstream, &head, &body).await else {
                return;
            };
            match fault {
                Some(5) => {} // the server acted; the answer is lost
                Some(3) => {
                    // The head says the whole length; half the body comes (half the head when
                    // there is no body), then the connection closes.
                    let head = head_len(&answer);
                    let cut = if answer.len() > head {
                        answer.len() - (answer.len() - head) / 2 - 1
                    } else {
                        head / 2
                    };
                    let _ = client.write_all(&answer[..cut]).await;
                }
                Some(4) => {
                    for piece in answer.chunks(64) {
                        if client.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                _ => {
                    let _ = client.write_all(&answer).await;
                }
            }
        });
    }
}

fn head_len(answer: &[u8]) -> usize {
    answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |at| at + 4)
}

async fn faults_on_30_percent_body(backend: Backend) {
    let Some(mut server) = Server::start_on(backend).await else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = server.base_url().trim_start_matches("http://").to_owned();
    let tally = Arc::new(Tally::default());
    let proxy_task = tokio::spawn(proxy(listener, upstream, tally.clone()));

    let dir = server.scratch("client");
    // One event per request, so that the faults meet a few hundred requests.
    let client = builder(&proxy_url, &dir, "pending")
        .batch_size(1)
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(10)
                .with_backoff(Duration::from_millis(5), Duration::from_millis(50))
                .with_deadline(Duration::from_secs(10)),
        )
        .build()
        .await
        .unwrap();
    let rss_before = consent_e2e::rss_kib("self").unwrap_or(0);
    let mut ids = Vec::new();
    // Pending: queued; then "in" and "out" in turns, ending with "in". While consent is in,
    // each round's events are flushed before the next call, so none is left for an "out" to
    // purge; the ones enqueued while out are declined and have no id.
    const CHOICES: [&str; 5] = ["in", "out", "in", "out", "in"];
    for (round, choice) in CHOICES.iter().enumerate() {
        for n in 0..50 {
            if let Ok(id) = client
                .enqueue(page_view(&format!("https://example.com/{round}/{n}")))
                .await
            {
                ids.push(id);
            }
        }
        if round > 0 && CHOICES[round - 1] == "in" {
            flush_until_ok(&client, 20).await;
        }
        // A set-consent may fail through the faults: call it again until it is answered.
        let mut tries = 0;
        while let Err(e) = client.set_consent(adobe_v1(choice)).await {
            tries += 1;
            assert!(tries < 20, "set_consent kept failing: {e}");
        }
    }
    flush_until_ok(&client, 20).await;
    let rss_after = consent_e2e::rss_kib("self").unwrap_or(0);
    let state = client.consent().state;
    let stats = client.stats();
    client.shutdown().await.unwrap();
    proxy_task.abort();

    let faults: Vec<u64> = tally
        .faults
        .iter()
        .map(|f| f.load(Ordering::Relaxed))
        .collect();
    let spoiled: u64 = faults.iter().sum();
    let passed = tally.passed.load(Ordering::Relaxed);
    eprintln!(
        "chaos ({backend:?}): {} requests, {spoiled} spoiled ({}); {} events enqueued; client RSS \
         {rss_before} → {rss_after} KiB; {stats:?}",
        passed + spoiled,
        FAULTS
            .iter()
            .zip(&faults)
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        ids.len()
    );

    // Every event enqueued (with "out" in between: the ones enqueued while out were declined
    // and have no id) is stored exactly once.
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(expected.len(), 150, "the rounds after an out were declined");
    expected.sort();
    assert_eq!(
        server.event_ids().await,
        expected,
        "every event once, none extra"
    );
    assert_eq!(state, consent::Decision::In);
    // Each call a change, in the order made: retried calls (answers lost) changed nothing
    // twice, and no "out" landed after the "in" that followed it.
    let records: Vec<serde_json::Value> = server
        .set_consent_records()
        .await
        .iter()
        .map(|r| r["general"].clone())
        .collect();
    assert_eq!(records, CHOICES.map(serde_json::Value::from).to_vec());
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "the client's process grew {rss_before} → {rss_after} KiB"
    );
    assert!(
        spoiled * 100 >= (passed + spoiled) * 15,
        "the proxy spoiled too little"
    );
    for (name, n) in FAULTS.iter().zip(&faults) {
        assert!(*n > 0, "no request met the fault {name:?}");
    }
    server.stop().await;
}
on_both!(
    faults_on_30_percent_of_requests,
    super::faults_on_30_percent_body
);
