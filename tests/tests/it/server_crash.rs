//! `kill -9` of the server under load, then a restart on the same database, several times: every
//! set-consent and preference update the server answered is in the database, what it did not
//! answer may or may not be, and the record chain verifies.
//!
//! The load, from concurrent workers while the server is killed and restarted at random instants:
//!
//! - set-consent for a fresh ECID per call (`in` or `out`): each answered one must be stored
//!   as answered, with exactly one record, after all the kills; an unanswered one either is stored
//!   the same way or not at all;
//! - set-consent alternating on a few fixed ECIDs, and preference updates alternating on a few
//!   unsubscribe links: each ends as the last answered call left it, or as a call sent after it
//!   that got no answer (it may have been committed before the kill).
//!
//! `CONSENT_SERVER_CRASH_KILLS` sets the number of kills (default 5).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, DATASTREAM, Server};
use crate::http::{self, admin, check};

const WORKERS: usize = 4;
/// Fixed identities (and links) per worker, each used by that worker only.
const FIXED: usize = 4;

/// What one worker sent and what was answered.
#[derive(Default)]
struct Ledger {
    /// Fresh ECIDs: (id, value, answered).
    fresh: Vec<(String, &'static str, bool)>,
    /// Per fixed ECID or link: every value sent, in order, with whether it was answered.
    fixed: HashMap<String, Vec<(&'static str, bool)>>,
    links: HashMap<usize, Vec<(&'static str, bool)>>,
}

/// The values a fixed identity may hold now: the last answered one and any sent after it, or,
/// with none answered, `initial` and everything sent.
fn allowed(
    sent: &[(&'static str, bool)],
    initial: Option<&'static str>,
) -> Vec<Option<&'static str>> {
    match sent.iter().rposition(|(_, answered)| *answered) {
        Some(last) => sent[last..].iter().map(|(v, _)| Some(*v)).collect(),
        None => std::iter::once(initial)
            .chain(sent.iter().map(|(v, _)| Some(*v)))
            .collect(),
    }
}

fn ecid(prefix: u64, n: u64) -> String {
    format!("{:038}", prefix * 1_000_000_000 + n)
}

async fn worker(
    w: usize,
    base: String,
    http: reqwest::Client,
    links: Vec<String>,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Ledger {
    let mut ledger = Ledger::default();
    let url = format!("{base}/ee/v1/privacy/set-consent?configId={DATASTREAM}");
    // One set-consent call; whether it was answered.
    let post = |id: &str, general: &str| {
        let request = http.post(&url).json(&http::set_consent_body(id, general));
        async move { check(request.send().await).await.is_ok() }
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let ok = match i % 3 {
            0 => {
                let id = ecid(10 + w as u64, i);
                let general = if i.is_multiple_of(2) { "in" } else { "out" };
                let ok = post(&id, general).await;
                ledger.fresh.push((id, general, ok));
                ok
            }
            1 => {
                let id = ecid(90 + w as u64, i / 3 % FIXED as u64);
                let sent = ledger.fixed.entry(id.clone()).or_default();
                let general = if sent.len().is_multiple_of(2) {
                    "in"
                } else {
                    "out"
                };
                let ok = post(&id, general).await;
                sent.push((general, ok));
                ok
            }
            _ => {
                let n = (i / 3) as usize % links.len();
                let sent = ledger.links.entry(n).or_default();
                let choice = if sent.len().is_multiple_of(2) {
                    "no"
                } else {
                    "yes"
                };
                let body =
                    json!({"marketing": [{"type": "email", "choice": choice, "scope": "channel"}]});
                let ok = check(admin(http.post(&links[n])).json(&body).send().await)
                    .await
                    .is_ok();
                sent.push((if choice == "no" { "n" } else { "y" }, ok));
                ok
            }
        };
        if ok {
            answered.fetch_add(1, Ordering::Relaxed);
        } else {
            // The server is down: try again shortly, as a client would.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        i += 1;
    }
    ledger
}

async fn killed_under_load_body(backend: Backend) {
    let kills = consent_e2e::env_u64("CONSENT_SERVER_CRASH_KILLS", 5);
    let keys = http::Keys::new();
    let Some(mut server) = Server::start_with(backend, &keys.args()).await else {
        return;
    };
    let base = server.base_url();
    let http = http::client();
    let mut links = Vec::new();
    for w in 0..WORKERS {
        let mut mine = Vec::new();
        for n in 0..FIXED {
            mine.push(
                http::create_link(&http, &base, &format!("crash-{w}-{n}"))
                    .await
                    .api,
            );
        }
        links.push(mine);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = links
        .iter()
        .enumerate()
        .map(|(w, mine)| {
            tokio::spawn(worker(
                w,
                base.clone(),
                http.clone(),
                mine.clone(),
                stop.clone(),
                answered.clone(),
            ))
        })
        .collect();

    // Kill at instants spread over 150–650 ms of load, each after the load got answers again.
    let mut random = consent_e2e::XorShift::new(u64::from(std::process::id()));
    for _ in 0..kills {
        let before = answered.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while answered.load(Ordering::Relaxed) < before + 20 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no answers after a restart"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(150 + random.next_u64() % 500)).await;
        server.kill().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ledgers = Vec::new();
    for task in tasks {
        ledgers.push(task.await.unwrap());
    }

    let mut problems = Vec::new();
    let (mut fresh_answered, mut fresh_unanswered, mut fresh_unanswered_stored) = (0, 0, 0);
    for (w, ledger) in ledgers.iter().enumerate() {
        for (id, general, ok) in &ledger.fresh {
            let stored = server.profile_general(id).await;
            let records = http::export(&http, &base, "ECID", id).await["records"]
                .as_array()
                .map_or(0, Vec::len);
            match (ok, stored.as_deref()) {
                (true, Some(s)) if s == *general && records == 1 => fresh_answered += 1,
                (false, None) if records == 0 => fresh_unanswered += 1,
                (false, Some(s)) if s == *general && records == 1 => {
                    fresh_unanswered += 1;
                    fresh_unanswered_stored += 1;
                }
                _ => problems.push(format!(
                    "fresh {id}: sent {general}, answered {ok}, stored {stored:?}, {records} records"
                )),
            }
        }
        for (id, sent) in &ledger.fixed {
            let stored = server.profile_general(id).await;
            let may = allowed(sent, None);
            if !may.contains(&stored.as_deref()) {
                problems.push(format!(
                    "fixed {id}: stored {stored:?}, may be {may:?} ({sent:?})"
                ));
            }
        }
        for (n, sent) in &ledger.links {
            let id = format!("crash-{w}-{n}");
            let doc = http::export(&http, &base, "CRMID", &id).await;
            let stored = doc["profile"]["consents"]["marketing"]["email"]["val"].as_str();
            let may = allowed(sent, None);
            if !may.contains(&stored) {
                problems.push(format!(
                    "link {id}: stored {stored:?}, may be {may:?} ({sent:?})"
                ));
            }
        }
    }
    let log = server.log();
    let chain = server.stop_and_verify_chain().await;
    eprintln!(
        "server crash ({backend:?}): {kills} kills, {} answers; fresh set-consent: {fresh_answered} \
         answered and stored, {fresh_unanswered} unanswered ({fresh_unanswered_stored} of them \
         stored anyway); chain {chain:?}",
        answered.load(Ordering::Relaxed)
    );
    assert!(problems.is_empty(), "{problems:#?}\n{log}");
    assert!(chain.is_ok(), "the record chain does not verify: {chain:?}");
    assert!(fresh_answered > 0);
    // Calls refused while the server was down count here too: this only shows that the kills
    // interrupted the load.
    assert!(fresh_unanswered > 0, "the kills interrupted nothing");
}

on_both!(killed_under_load, super::killed_under_load_body);

#[test]
fn allowed_values_follow_the_last_answer() {
    assert_eq!(
        allowed(&[("in", true), ("out", false), ("in", false)], None),
        vec![Some("in"), Some("out"), Some("in")]
    );
    assert_eq!(
        allowed(&[("in", false), ("out", true)], None),
        vec![Some("out")]
    );
    assert_eq!(allowed(&[("in", false)], None), vec![None, Some("in")]);
}
