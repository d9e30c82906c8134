//! Load benchmark: set-consent and preference updates at 64 connections on loopback, next to a
//! bare axum endpoint measured in the same run (the ceiling of this machine and client).
//!
//! `cargo bench -p consent-server --bench load` (set `CONSENT_LOAD_SECS`, default 5, and
//! `CONSENT_LOAD_DATABASE`, default a SQLite file in a temporary directory; `CONSENT_LOAD_ONLY`
//! runs only the loads whose name contains it, e.g. `set-consent`). The load generator
//! runs in the same process as the servers, so on a small machine they share the cores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs,
    reason = "a benchmark binary that reports on stdout"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

/// The binary's allocator, so that the benchmark measures what the binary runs.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 64;
const DS: &str = "bench-datastream";
const ORG: &str = "BENCH@AdobeOrg";

#[derive(Debug)]
struct Outcome {
    name: &'static str,
    requests: usize,
    errors: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    /// CPU seconds the whole process (servers and load generator) used.
    cpu: f64,
}

/// Seconds each load runs untimed before it is measured: connections open, caches and the
/// allocator warm, the database past its first pages. Without it the first load of a run (the
/// bare endpoint) sometimes measured a third slower, which flattered every ratio.
const WARM_UP_SECS: f64 = 1.0;

/// Runs `CONNECTIONS` workers for `secs` after a warm-up; each calls `one(worker, i)` in a loop.
async fn run<F, Fut>(name: &'static str, secs: f64, one: F) -> Outcome
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let one = Arc::new(one);
    let _ = drive(&one, WARM_UP_SECS).await;
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let (mut all, errors) = drive(&one, secs).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Outcome {
        name,
        requests: all.len(),
        errors,
        secs,
        p50: pick(0.50),
        p99: pick(0.99),
        cpu,
    }
}

/// Runs `CONNECTIONS` workers for `secs`: the latency of every request, and the errors.
async fn drive<F, Fut>(one: &Arc<F>, secs: f64) -> (Vec<Duration>, usize)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONNECTIONS {
        let one = one.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut i = 0;
            while Instant::now() < stop {
                let t = Instant::now();
                if !one(worker, i).await {
                    errors += 1;
                }
                latencies.push(t.elapsed());
                i += 1;
            }
            (latencies, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(result) = workers.join_next().await {
        let (l, e) = result.unwrap();
        all.extend(l);
        errors += e;
    }
    (all, errors)
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat`; 0 where
/// that file does not exist.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name (which is in parentheses and may contain spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Whether to run the load named `name`: all of them unless `CONSENT_LOAD_ONLY` is set, then
/// those whose name contains it. The bare endpoint always runs.
fn wanted(name: &str) -> bool {
    std::env::var("CONSENT_LOAD_ONLY").map_or(true, |only| name.contains(&only))
}

fn keys() -> String {
    json!({
        "link_keys": [{"id": "bench", "secret": base64::engine::general_purpose::STANDARD.encode([9u8; 32])}],
        "api_keys": [{"key": "bench-key", "token": "bench-token", "org": ORG, "sandbox": "prod"}],
        "datastreams": [{"id": DS, "org": ORG, "sandbox": "prod"}]
    })
    .to_string()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let secs: f64 = std::env::var("CONSENT_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let dir = tempfile::tempdir().unwrap();
    let database = std::env::var("CONSENT_LOAD_DATABASE")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));

    // The ceiling: a bare axum endpoint on the same runtime.
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = bare.local_addr().unwrap();
    let app = axum::Router::new().route("/bare", axum::routing::post(|| async { "{}" }));
    tokio::spawn(async move { axum::serve(bare, app).await });

    let mut config = consent_server::Config::new("127.0.0.1:0".parse().unwrap(), database).unwrap();
    config.keys = consent_server::Keys::from_json(&keys()).unwrap();
    config.rate_limit_per_sec = 0;
    let server = consent_server::serve(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    // A workspace build unifies reqwest's features with consent-transport's `rustls-no-provider`:
    // install rustls' ring provider so that a client can be built (an error means one is installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();

    let mut outcomes = Vec::new();
    {
        let client = client.clone();
        let url = format!("http://{bare_addr}/bare");
        outcomes.push(
            run("bare axum endpoint", secs, move |_, _| {
                let request = client.post(&url).body("{}").send();
                async move { request.await.is_ok_and(|r| r.status().is_success()) }
            })
            .await,
        );
    }
    if wanted("set-consent") {
        let client = client.clone();
        let url = format!("{base}/ee/v1/privacy/set-consent?configId={DS}");
        // Bodies are built once, as wrk or oha send theirs: the generator's own JSON work would
        // otherwise be charged to this row and not to the bare one. Per worker: [in, out].
        let bodies: Vec<[axum::body::Bytes; 2]> = (0..CONNECTIONS)
            .map(|worker| {
                ["in", "out"].map(|general| {
                    axum::body::Bytes::from(
                        json!({
                            "consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": general}}],
                            "identityMap": {"ECID": [{"id": format!("{:038}", worker + 1)}]}
                        })
                        .to_string(),
                    )
                })
            })
            .collect();
        outcomes.push(
            run(
                "set-consent (Adobe 1.0, alternating in/out)",
                secs,
                move |worker, i| {
                    let request = client
                        .post(&url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(bodies[worker][i % 2].clone())
                        .send();
                    async move { request.await.is_ok_and(|r| r.status().is_success()) }
                },
            )
            .await,
        );
    }
    if wanted("preference") {
        // One link per worker; the choice alternates so every request writes.
        let mut links = Vec::new();
        for worker in 0..CONNECTIONS {
            let link: serde_json::Value = client
                .post(format!("{base}/admin/v1/unsubscribe-links"))
                .header("x-api-key", "bench-key")
                .header("authorization", "Bearer bench-token")
                .header("x-gw-ims-org-id", ORG)
                .header("x-sandbox-name", "prod")
                .json(&json!({"profile": {"namespace": "CRMID", "id": format!("p{worker}")}, "channel": "email"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            links.push(format!(
                "{base}/imp/consent/preferences?params={}&pid={}&sig={}",
                link["params"].as_str().unwrap(),
                link["pid"].as_str().unwrap(),
                link["sig"].as_str().unwrap()
            ));
        }
        let client = client.clone();
        let links = Arc::new(links);
        let bodies = ["no", "yes"].map(|choice| {
            axum::body::Bytes::from(
                json!({"marketing": [{"type": "email", "choice": choice, "scope": "channel"}]})
                    .to_string(),
            )
        });
        outcomes.push(
            run(
                "preference update (email yes/no)",
                secs,
                move |worker, i| {
                    let request = client
                        .post(&links[worker])
                        .header("x-api-key", "bench-key")
                        .header("authorization", "Bearer bench-token")
                        .header("x-gw-ims-org-id", ORG)
                        .header("x-sandbox-name", "prod")
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(bodies[i % 2].clone())
                        .send();
                    async move { request.await.is_ok_and(|r| r.status().is_success()) }
                },
            )
            .await,
        );
    }
    server.shutdown().await.unwrap();

    let ceiling = outcomes[0].requests as f64 / outcomes[0].secs;
    println!("| endpoint | req/s | vs bare | p50 | p99 | errors | CPU µs/request (cores busy) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for o in &outcomes {
        let rate = o.requests as f64 / o.secs;
        println!(
            "| {} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {} | {:.1} ({:.2}) |",
            o.name,
            rate,
            rate / ceiling,
            o.p50.as_secs_f64() * 1000.0,
            o.p99.as_secs_f64() * 1000.0,
            o.errors,
            o.cpu * 1e6 / o.requests.max(1) as f64,
            o.cpu / o.secs
        );
    }
}
