//! Soak: the real `consent-server` binary under a steady mixed load, on SQLite and PostgreSQL.
//!
//! Workers send, at a fixed total rate, a mix of set-consent calls (Adobe 1.0, each identity
//! alternating in and out; half the requests), interact calls with one event (a fifth),
//! preference updates through unsubscribe links, reads of the landing page, and GDPR exports
//! (one in a thousand: an export searches the whole organisation for the identity, so its cost
//! grows with the database, see `docs/reliability.md`). After a warm-up window the
//! run is cut into windows; for each it reports the requests, errors, p50 and p99 latency and the
//! server's resident memory (`VmRSS` of the server process). At the end:
//!
//! - no request failed (a transport error or a status other than 2xx);
//! - the server's resident memory in the last window is within 10 % of the first (the short
//!   version allows SQLite's page caches to fill as well, see [`PAGE_CACHE_ALLOWANCE_KIB`]);
//! - every identity's stored consent is the last one the server acknowledged to it;
//! - the record chain verifies (`Db::verify_chain`, after a graceful stop).
//!
//! CI runs the short version (`CONSENT_SOAK_SECS`, default 16: 4 s windows after a 4 s warm-up,
//! 200 requests/s). `cargo xtask soak --minutes 10` runs the long one (one-minute windows, the
//! release server) and prints the table; `CONSENT_SOAK_RATE` sets the rate and
//! `CONSENT_SOAK_REPORT` names a file that gets one JSON object per window and one at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, DATASTREAM, Server};
use crate::http::{self, admin, check};
use consent_e2e::env_u64;

fn report(line: &Value) {
    consent_e2e::append_report("CONSENT_SOAK_REPORT", line).unwrap();
}

const WORKERS: usize = 8;
/// Identities per worker: each identity belongs to one worker, so its calls are in order. A
/// worker moves to its next identity every ten requests, so that an identity's history (what an
/// export reads) stays short, as a site's visitors' do: at 200 requests/s one pass over them
/// takes about fourteen minutes, longer than the 10-minute run and its warm-up. (With half as
/// many, the second pass began in the seventh minute, every history doubled from there on, and
/// the server's memory stepped up with it.)
const IDENTITIES: usize = 2048;
/// What SQLite's page caches may add to the server's memory while the database grows from
/// empty: 256 KiB (the server's `cache_size`) for each of the pool's 8 connections, the writer's,
/// the event inserter's and the checkpointer's, about 3 MiB, and slack for a debug build's first
/// allocations. The short version allows this much or 10 %, whichever is more; the long version
/// (four minutes or more) holds the 10 % alone.
const PAGE_CACHE_ALLOWANCE_KIB: u64 = 8 * 1024;

fn ecid(worker: usize, n: usize) -> String {
    format!("{:038}", 7_000_000 + worker * IDENTITIES + n)
}

/// The kinds of request of the mix, in the order `worker` numbers them.
const OPS: [&str; 5] = [
    "set-consent",
    "interact",
    "preference update",
    "preference page",
    "export",
];

/// What the workers measured since the window began.
#[derive(Default)]
struct Window {
    /// Every request's latency, with the index of its kind in [`OPS`].
    latencies: Mutex<Vec<(Duration, usize)>>,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Window {
    fn record(&self, started: Instant, op: usize, outcome: Result<(), String>) {
        self.latencies.lock().unwrap().push((started.elapsed(), op));
        if let Err(e) = outcome {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_errors.lock().unwrap();
            if first.len() < 5 {
                first.push(e);
            }
        }
    }

    /// Takes this window's figures and starts the next: all latencies sorted, and the p99 of
    /// each kind of request.
    fn take(&self) -> (Vec<Duration>, Vec<f64>, u64, Vec<String>) {
        let mut tagged = std::mem::take(&mut *self.latencies.lock().unwrap());
        tagged.sort();
        let by_op = (0..OPS.len())
            .map(|op| {
                let mine: Vec<Duration> = tagged
                    .iter()
                    .filter(|(_, o)| *o == op)
                    .map(|(d, _)| *d)
                    .collect();
                quantile(&mine, 0.99)
            })
            .collect();
        (
            tagged.into_iter().map(|(d, _)| d).collect(),
            by_op,
            self.errors.swap(0, Ordering::Relaxed),
            std::mem::take(&mut *self.first_errors.lock().unwrap()),
        )
    }
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

/// One worker: its identities, its unsubscribe link (the preferences API and the landing page),
/// and the last consent the server
/// acknowledged to each identity.
async fn worker(
    w: usize,
    base: String,
    http: reqwest::Client,
    (link, page): (String, String),
    period: Duration,
    window: Arc<Window>,
    stop: Arc<AtomicBool>,
) -> HashMap<String, &'static str> {
    let mut acknowledged = HashMap::new();
    let mut next_choice: HashMap<String, bool> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let set_consent = format!("{base}/ee/v1/privacy/set-consent?configId={DATASTREAM}");
    let interact = format!("{base}/ee/v1/interact?configId={DATASTREAM}");
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let id = ecid(w, (i / 10) % IDENTITIES);
        let started = Instant::now();
        let outcome = match i % 10 {
            0..=4 => {
                let into = next_choice.entry(id.clone()).or_insert(true);
                let general = if *into { "in" } else { "out" };
                let body = http::set_consent_body(&id, general);
                let outcome = check(http.post(&set_consent).json(&body).send().await).await;
                if outcome.is_ok() {
                    acknowledged.insert(id.clone(), general);
                    *into = !*into;
                }
                outcome
            }
            5 | 6 => {
                let body = json!({
                    "events": [{"xdm": {"_id": format!("soak-{w}-{i}"), "eventType": "web.webpagedetails.pageViews"}}],
                    "identityMap": {"ECID": [{"id": id}]}
                });
                check(http.post(&interact).json(&body).send().await).await
            }
            7 => {
                let choice = if i % 20 < 10 { "no" } else { "yes" };
                let body =
                    json!({"marketing": [{"type": "email", "choice": choice, "scope": "channel"}]});
                check(admin(http.post(&link)).json(&body).send().await).await
            }
            8 => check(http.get(&page).send().await).await,
            // A GDPR export one request in a thousand: it searches the organisation's events,
            // profiles and personal details for the identity (what an erasure would remove
            // elsewhere), so its cost grows with the database; a page read the other times.
            _ if i % 1000 != 999 => check(http.get(&page).send().await).await,
            _ => {
                let url = format!("{base}/admin/v1/profiles/ECID/{id}/export");
                check(admin(http.get(&url)).send().await).await
            }
        };
        let op = match i % 10 {
            0..=4 => 0,
            5 | 6 => 1,
            7 => 2,
            8 => 3,
            _ if i % 1000 != 999 => 3,
            _ => 4,
        };
        window.record(
            started,
            op,
            outcome.map_err(|e| format!("{}: {e}", OPS[op])),
        );
        i += 1;
    }
    acknowledged
}

async fn soak_body(backend: Backend) {
    let secs = env_u64("CONSENT_SOAK_SECS", 16).max(4);
    let rate = env_u64("CONSENT_SOAK_RATE", 200).max(1);
    // One-minute windows for a long run, four windows for a short one; one window of warm-up.
    let window_secs = if secs >= 240 { 60 } else { secs / 4 };
    let windows = secs / window_secs;

    let keys = http::Keys::new();
    let Some(mut server) = Server::start_with(backend, &keys.args()).await else {
        return;
    };
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let base = server.base_url();
    let pid = server.pid().unwrap();
    let http = http::client();
    let mut links = Vec::new();
    for w in 0..WORKERS {
        let link = http::create_link(&http, &base, &format!("soak-{w}")).await;
        links.push((link.api, link.page));
    }

    let window = Arc::new(Window::default());
    let stop = Arc::new(AtomicBool::new(false));
    let period = Duration::from_secs_f64(WORKERS as f64 / rate as f64);
    let tasks: Vec<_> = links
        .into_iter()
        .enumerate()
        .map(|(w, link)| {
            tokio::spawn(worker(
                w,
                base.clone(),
                http.clone(),
                link,
                period,
                window.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Warm-up: connections, caches, the allocator, the first pages of the database.
    tokio::time::sleep(Duration::from_secs(window_secs)).await;
    let (_, _, warm_errors, warm_first) = window.take();
    assert_eq!(warm_errors, 0, "errors during the warm-up: {warm_first:?}");

    eprintln!("soak on {name}: {rate} requests/s, {windows} windows of {window_secs} s");
    eprintln!("| window | requests | errors | p50 | p99 | server RSS |");
    eprintln!("|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for n in 1..=windows {
        tokio::time::sleep(Duration::from_secs(window_secs)).await;
        let (latencies, by_op, errors, first_errors) = window.take();
        let rss = consent_e2e::rss_kib(&pid.to_string()).unwrap();
        let (p50, p99) = (quantile(&latencies, 0.50), quantile(&latencies, 0.99));
        eprintln!(
            "| {n} | {} | {errors} | {p50:.2} ms | {p99:.2} ms | {:.1} MiB |",
            latencies.len(),
            rss as f64 / 1024.0
        );
        report(&json!({
            "backend": name, "window": n, "of": windows, "secs": window_secs,
            "requests": latencies.len(), "errors": errors,
            "p50_ms": p50, "p99_ms": p99, "rss_kib": rss,
            "p99_ms_by_request": OPS.iter().zip(&by_op).map(|(op, p)| (op.to_string(), json!(p))).collect::<serde_json::Map<_, _>>(),
        }));
        rows.push((latencies.len(), errors, rss, first_errors));
    }
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = HashMap::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    // The requests in flight when the clock stopped.
    let (_, _, late_errors, late_first) = window.take();

    let requests: usize = rows.iter().map(|r| r.0).sum();
    let errors: u64 = rows.iter().map(|r| r.1).sum::<u64>() + late_errors;
    let first_rss = rows.first().unwrap().2;
    let last_rss = rows.last().unwrap().2;
    let growth = last_rss as f64 / first_rss as f64 - 1.0;

    // Every identity holds the consent last acknowledged to it.
    let mut wrong = Vec::new();
    for (id, general) in &acknowledged {
        let stored = server.profile_general(id).await;
        if stored.as_deref() != Some(*general) {
            wrong.push(format!("{id}: acknowledged {general}, stored {stored:?}"));
        }
    }
    let chain = server.stop_and_verify_chain().await;
    report(&json!({
        "backend": name, "done": true, "requests": requests, "errors": errors,
        "rss_first_kib": first_rss, "rss_last_kib": last_rss, "rss_growth": growth,
        "identities": acknowledged.len(), "wrong": wrong.len(),
        "chain": format!("{chain:?}"),
    }));
    eprintln!(
        "soak on {name}: {requests} requests, {errors} errors, RSS {:.1} → {:.1} MiB ({:+.1} %), \
         {} identities checked, chain {chain:?}",
        first_rss as f64 / 1024.0,
        last_rss as f64 / 1024.0,
        growth * 100.0,
        acknowledged.len()
    );

    let first_errors: Vec<&String> = rows
        .iter()
        .flat_map(|r| r.3.iter())
        .chain(&late_first)
        .collect();
    assert_eq!(errors, 0, "requests failed: {first_errors:?}");
    assert!(
        requests as f64 >= 0.8 * (rate * window_secs * windows) as f64,
        "the load fell short of its rate: {requests} requests"
    );
    let allowed = if secs >= 240 {
        first_rss / 10
    } else {
        (first_rss / 10).max(PAGE_CACHE_ALLOWANCE_KIB)
    };
    assert!(
        last_rss.abs_diff(first_rss) <= allowed,
        "resident memory moved {:+.1} % between the first and the last window ({first_rss} → \
         {last_rss} KiB, {allowed} KiB allowed)",
        growth * 100.0
    );
    assert!(acknowledged.len() >= WORKERS, "{acknowledged:?}");
    assert!(wrong.is_empty(), "{wrong:?}");
    assert!(chain.is_ok(), "the record chain does not verify: {chain:?}");
}

on_both!(server_under_steady_mixed_load, super::soak_body);
