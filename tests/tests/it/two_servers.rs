//! Two `consent-server` processes on one PostgreSQL database, taking concurrent set-consent calls
//! and preference updates for the same organisation (one record chain) and the same profiles.
//!
//! First, each worker owns a few ECIDs and unsubscribe links and sends their calls one after the
//! other, each to either server; the workers run at once, so the two servers' writers commit
//! into the same chain concurrently. Every profile then holds the last consent either server
//! acknowledged for it, and every acknowledged change has exactly one record (none lost, none
//! doubled).
//!
//! Then the same profiles are contested: for each of a few ECIDs and links, one task per server
//! sends alternating choices at the same time as the other. Whichever server commits last wins,
//! but never by losing the other's update: every set-consent call has its record (each is
//! recorded, a repeated choice too), the preference records alternate (an update that changes
//! nothing has no record, so one made on a stale read would repeat the value before it), and
//! each profile holds its latest record's value. Nothing fails, and the chain verifies.
//! PostgreSQL only: it is how the service scales out.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::{Backend, DATASTREAM, Server};
use crate::http::{self, admin, check};

const WORKERS: usize = 6;
const IDS: usize = 3;
const ROUNDS: usize = 40;
/// Profiles (ECIDs, and links) both servers update at once.
const CONTESTED: usize = 3;

fn ecid(w: usize, n: usize) -> String {
    format!("{:038}", 5_000_000 + w * 100 + n)
}

/// Sends one worker's calls, each to server A or B; returns the failures.
async fn worker(
    w: usize,
    bases: Arc<[String; 2]>,
    http: reqwest::Client,
    links: Vec<[String; 2]>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        for (n, pair) in links.iter().enumerate() {
            // Which server takes the call: varies by worker, identity and round.
            let pick = (w + n + round) % 2;
            let general = if round.is_multiple_of(2) { "in" } else { "out" };
            let body = http::set_consent_body(&ecid(w, n), general);
            let url = format!(
                "{}/ee/v1/privacy/set-consent?configId={DATASTREAM}",
                bases[pick]
            );
            if let Err(e) = check(http.post(&url).json(&body).send().await).await {
                failures.push(format!("set-consent {w}/{n}/{round}: {e}"));
            }
            let choice = if round.is_multiple_of(2) { "no" } else { "yes" };
            let body =
                json!({"marketing": [{"type": "email", "choice": choice, "scope": "channel"}]});
            let link = &pair[1 - pick];
            if let Err(e) = check(admin(http.post(link)).json(&body).send().await).await {
                failures.push(format!("preferences {w}/{n}/{round}: {e}"));
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_lose_nothing() {
    let keys = http::Keys::new();
    let Some(mut a) = Server::start_with(Backend::Postgres, &keys.args()).await else {
        return;
    };
    let mut b = a.start_beside().await;
    let bases = Arc::new([a.base_url(), b.base_url()]);
    let http = http::client();

    // One link per (worker, identity), usable on either server (the same keys).
    let mut all_links = Vec::new();
    for w in 0..WORKERS {
        let mut mine = Vec::new();
        for n in 0..IDS {
            let link = http::create_link(&http, &bases[n % 2], &format!("two-{w}-{n}")).await;
            let other = link.api.replacen(&bases[n % 2], &bases[1 - n % 2], 1);
            let pair = if n % 2 == 0 {
                [link.api, other]
            } else {
                [other, link.api]
            };
            mine.push(pair);
        }
        all_links.push(mine);
    }
    let tasks: Vec<_> = all_links
        .iter()
        .enumerate()
        .map(|(w, links)| tokio::spawn(worker(w, bases.clone(), http.clone(), links.clone())))
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    assert!(failures.is_empty(), "{failures:#?}");

    let last_general = if (ROUNDS - 1).is_multiple_of(2) {
        "in"
    } else {
        "out"
    };
    let last_choice = if (ROUNDS - 1).is_multiple_of(2) {
        "n"
    } else {
        "y"
    };
    let mut problems = Vec::new();
    for w in 0..WORKERS {
        for n in 0..IDS {
            let id = ecid(w, n);
            let doc = http::export(&http, &bases[0], "ECID", &id).await;
            let records = doc["records"].as_array().map_or(0, Vec::len);
            if doc["profile"]["general"] != last_general || records != ROUNDS {
                problems.push(format!(
                    "{id}: general {}, {records} records (want {last_general}, {ROUNDS})",
                    doc["profile"]["general"]
                ));
            }
            let crm = format!("two-{w}-{n}");
            let doc = http::export(&http, &bases[1], "CRMID", &crm).await;
            let records = doc["records"].as_array().map_or(0, Vec::len);
            let val = &doc["profile"]["consents"]["marketing"]["email"]["val"];
            if val != last_choice || records != ROUNDS {
                problems.push(format!(
                    "{crm}: email {val}, {records} records (want {last_choice}, {ROUNDS})"
                ));
            }
        }
    }
    // The contest: both servers at once on the same profiles.
    let mut contest = Vec::new();
    for n in 0..CONTESTED {
        let id = ecid(99, n);
        let link_a = http::create_link(&http, &bases[0], &format!("contested-{n}"))
            .await
            .api;
        let link_b = link_a.replacen(&bases[0], &bases[1], 1);
        for (side, (base, link)) in [(&bases[0], link_a), (&bases[1], link_b)]
            .into_iter()
            .enumerate()
        {
            let (http, base, id) = (http.clone(), base.clone(), id.clone());
            contest.push(tokio::spawn(async move {
                let url = format!("{base}/ee/v1/privacy/set-consent?configId={DATASTREAM}");
                let mut failures = Vec::new();
                for round in 0..ROUNDS {
                    // The two sides start on opposite values.
                    let flip = (round + side).is_multiple_of(2);
                    let body = http::set_consent_body(&id, if flip { "in" } else { "out" });
                    if let Err(e) = check(http.post(&url).json(&body).send().await).await {
                        failures.push(format!("contested set-consent {id}: {e}"));
                    }
                    let choice = if flip { "no" } else { "yes" };
                    let body = json!({"marketing": [{"type": "email", "choice": choice, "scope": "channel"}]});
                    if let Err(e) = check(admin(http.post(&link)).json(&body).send().await).await {
                        failures.push(format!("contested preferences {n}: {e}"));
                    }
                }
                failures
            }));
        }
    }
    for task in contest {
        failures.extend(task.await.unwrap());
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let mut contested_records = 0;
    for n in 0..CONTESTED {
        for (namespace, id) in [("ECID", ecid(99, n)), ("CRMID", format!("contested-{n}"))] {
            let doc = http::export(&http, &bases[n % 2], namespace, &id).await;
            let values: Vec<Value> = doc["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| match namespace {
                    "ECID" => r["change"]["general"].clone(),
                    _ => r["change"]["changes"][0]["val"].clone(),
                })
                .collect();
            contested_records += values.len();
            let held = match namespace {
                "ECID" => doc["profile"]["general"].clone(),
                _ => doc["profile"]["consents"]["marketing"]["email"]["val"].clone(),
            };
            // Every set-consent call is recorded, a repeated choice too (the evidence that it
            // was given again): each acknowledged call has its record, none twice. A preference
            // update that changes nothing has none: a change made on a stale read would repeat
            // the value before it.
            if namespace == "ECID" && values.len() != 2 * ROUNDS {
                problems.push(format!(
                    "{namespace} {id}: {} records for {} acknowledged calls",
                    values.len(),
                    2 * ROUNDS
                ));
            }
            if namespace == "CRMID" && values.windows(2).any(|w| w[0] == w[1]) {
                problems.push(format!(
                    "{namespace} {id}: a change repeats the value before it: {values:?}"
                ));
            }
            if values.last() != Some(&held) {
                problems.push(format!(
                    "{namespace} {id}: holds {held}, latest record {:?}",
                    values.last()
                ));
            }
        }
    }
    b.stop().await;
    let chain = a.stop_and_verify_chain().await;
    eprintln!(
        "two servers: {} calls answered apart, {} contested; {contested_records} contested \
         records; chain {chain:?}",
        WORKERS * IDS * ROUNDS * 2,
        CONTESTED * 2 * ROUNDS * 2
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        chain,
        Ok((WORKERS * IDS * ROUNDS * 2 + contested_records) as i64)
    );
}
