//! Load benchmark: set-consent and preference updates at 64 connections on loopback, next to a
//! bare axum endpoint measured in the same run (the ceiling of this machine and client).
//!
//! `cargo bench -p consent-server --bench load` (set `CONSENT_LOAD_SECS`, default 5, and
//! `CONSENT_LOAD_DATABASE`, default a SQLite file in a temporary directory; `CONSENT_LOAD_ONLY`
//! runs only the loads whose name contains it, e.g. `set-consent`). The load generator
//! runs in the same process as the servers, so on a small machine they share the cores. After a
//! warm-up the loads take turns in slices of half a second, so that a slower stretch of a shared
//! machine falls on every row alike; each row sums its slices. `-- --list` names the loads, and
//! `CONSENT_LOAD_REPORT=<file>` also writes each load's wall time per request there, one JSON
//! object per line (both for `cargo xtask bench`).
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

#[derive(Debug, Default)]
struct Outcome {
    errors: usize,
    secs: f64,
    /// Every request's latency (so also how many requests there were).
    latencies: Vec<Duration>,
    /// CPU seconds the whole process (servers and load generator) used.
    cpu: f64,
}

/// One request of a load: `(worker, i)` to whether it succeeded.
type Request = Arc<dyn Fn(usize, usize) -> BoxFuture + Send + Sync>;
type BoxFuture = std::pin::Pin<Box<dyn Future<Output = bool> + Send>>;

/// A load: its name and how to send one request.
struct Load {
    name: &'static str,
    one: Request,
}

/// Seconds each load runs untimed before it is measured: connections open, caches and the
/// allocator warm, the database past its first pages. Without it the first load of a run (the
/// bare endpoint) sometimes measured a third slower, which flattered every ratio.
const WARM_UP_SECS: f64 = 1.0;

/// Seconds of one measured slice. The loads take turns, slice by slice, so that a stretch of
/// time when the (shared, virtual) machine runs slower falls on all of them alike: measured one
/// after the other, 5 s each, the bare row alone varied by a third between runs.
const SLICE_SECS: f64 = 0.5;

/// Warms every load up, then measures them in turns of [`SLICE_SECS`] until each has run `secs`.
async fn run(loads: &[Load], secs: f64) -> Vec<Outcome> {
    for load in loads {
        let _ = drive(&load.one, WARM_UP_SECS).await;
    }
    let mut outcomes: Vec<Outcome> = loads.iter().map(|_| Outcome::default()).collect();
    let rounds = (secs / SLICE_SECS).ceil().max(1.0) as usize;
    for _ in 0..rounds {
        for (load, outcome) in loads.iter().zip(&mut outcomes) {
            let cpu_before = cpu_seconds();
            let start = Instant::now();
            let (latencies, errors) = drive(&load.one, SLICE_SECS).await;
            outcome.secs += start.elapsed().as_secs_f64();
            outcome.cpu += cpu_seconds() - cpu_before;
            outcome.errors += errors;
            outcome.latencies.extend(latencies);
        }
    }
    for outcome in &mut outcomes {
        outcome.latencies.sort();
    }
    outcomes
}

impl Outcome {
    /// Requests per second.
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    /// The latency below which the fraction `q` of requests finished.
    fn quantile(&self, q: f64) -> Duration {
        let all = &self.latencies;
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Runs `CONNECTIONS` workers for `secs`: the latency of every request, and the errors.
async fn drive(one: &Request, secs: f64) -> (Vec<Duration>, usize) {
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

/// The loads, in the order they run (`--list` prints them as criterion does, for `cargo xtask
/// bench`).
const LOADS: [&str; 4] = [
    BARE,
    "bare, with set-consent's bytes (not the ceiling)",
    SET_CONSENT,
    PREFERENCE,
];
const BARE: &str = "bare axum endpoint";
const SET_CONSENT: &str = "set-consent (Adobe 1.0, alternating in/out)";
const PREFERENCE: &str = "preference update (email yes/no)";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        let gate = |name: &str| match name {
            BARE => true,
            PREFERENCE => wanted("preference"),
            _ => wanted("set-consent"),
        };
        for name in LOADS.iter().filter(|name| gate(name)) {
            println!("load/{name}: benchmark");
        }
        return;
    }
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

    // The ceiling: a bare axum endpoint on the same runtime. Next to it, for comparison only,
    // one that reads a request as large as a set-consent request and answers with a real
    // set-consent answer (captured below) without doing anything else: it shows how much of
    // the gap to the ceiling is just moving the larger messages.
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = bare.local_addr().unwrap();
    let captured: Arc<std::sync::OnceLock<axum::body::Bytes>> = Arc::default();
    let answer = captured.clone();
    let app = axum::Router::new()
        .route("/bare", axum::routing::post(|| async { "{}" }))
        .route(
            "/sized",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let answer = answer.get().cloned().unwrap_or_default();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        answer,
                    )
                }
            }),
        );
    tokio::spawn(async move { axum::serve(bare, app).await });

    let mut config = consent_server::Config::new("127.0.0.1:0".parse().unwrap(), database).unwrap();
    config.keys = consent_server::Keys::from_json(&keys()).unwrap();
    config.rate_limit_per_sec = 0;
    // The preference-update load is one API key far over the per-key limit's default.
    config.api_rate_limit_per_sec = 0;
    let server = consent_server::serve(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    // A workspace build unifies reqwest's features with consent-transport's `rustls-no-provider`:
    // install rustls' ring provider so that a client can be built (an error means one is installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();

    let mut loads = Vec::new();
    {
        let client = client.clone();
        let url = format!("http://{bare_addr}/bare");
        loads.push(Load {
            name: BARE,
            one: Arc::new(move |_, _| {
                let request = client.post(&url).body("{}").send();
                Box::pin(async move { request.await.is_ok_and(|r| r.status().is_success()) })
            }),
        });
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
        let answer = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bodies[0][0].clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        captured.set(answer).unwrap();
        // Both rows send the same bodies, each worker alternating its two.
        let posting = |url: String| -> Request {
            let client = client.clone();
            let bodies = bodies.clone();
            Arc::new(move |worker, i| {
                let request = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bodies[worker][i % 2].clone())
                    .send();
                Box::pin(async move { request.await.is_ok_and(|r| r.status().is_success()) })
            })
        };
        loads.push(Load {
            name: LOADS[1],
            one: posting(format!("http://{bare_addr}/sized?configId={DS}")),
        });
        loads.push(Load {
            name: SET_CONSENT,
            one: posting(url),
        });
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
        loads.push(Load {
            name: PREFERENCE,
            one: Arc::new(move |worker, i| {
                let request = client
                    .post(&links[worker])
                    .header("x-api-key", "bench-key")
                    .header("authorization", "Bearer bench-token")
                    .header("x-gw-ims-org-id", ORG)
                    .header("x-sandbox-name", "prod")
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bodies[i % 2].clone())
                    .send();
                Box::pin(async move { request.await.is_ok_and(|r| r.status().is_success()) })
            }),
        });
    }
    let outcomes = run(&loads, secs).await;
    server.shutdown().await.unwrap();

    let ceiling = outcomes[0].rate();
    // For `cargo xtask bench`: one line per load, its wall time per request (the inverse of the
    // rate at 64 connections), so that it can stand next to the bare endpoint's.
    if let Some(path) = std::env::var_os("CONSENT_LOAD_REPORT") {
        let report: String = loads
            .iter()
            .zip(&outcomes)
            .map(|(load, o)| {
                format!(
                    "{}\n",
                    json!({"id": format!("load/{}", load.name), "nanos": 1e9 / o.rate()})
                )
            })
            .collect();
        std::fs::write(path, report).unwrap();
    }
    println!("| endpoint | req/s | vs bare | p50 | p99 | errors | CPU µs/request (cores busy) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (load, o) in loads.iter().zip(&outcomes) {
        let rate = o.rate();
        println!(
            "| {} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {} | {:.1} ({:.2}) |",
            load.name,
            rate,
            rate / ceiling,
            o.quantile(0.50).as_secs_f64() * 1000.0,
            o.quantile(0.99).as_secs_f64() * 1000.0,
            o.errors,
            o.cpu * 1e6 / o.latencies.len().max(1) as f64,
            o.cpu / o.secs
        );
    }
}
