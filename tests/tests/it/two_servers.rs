//! Two `consent-server` processes on one PostgreSQL database, taking concurrent set-consent calls
//! and preference updates for the same organisation (one record chain) and the same profiles.
//!
//! Each worker owns a few ECIDs and unsubscribe links and sends their calls one after the other,
//! each to either server; the workers run at once, so the two servers' writers commit into the
//! same chain concurrently. At the end: nothing failed, every profile holds the last consent
//! either server acknowledged for it, every acknowledged change has exactly one record (none lost,
//! none doubled), and the chain verifies. PostgreSQL only: it is how the service scales out.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::{Backend, DATASTREAM, ORG, Server};
use crate::http::{self, admin, check};

const WORKERS: usize = 6;
const IDS: usize = 3;
const ROUNDS: usize = 40;

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
            let body = json!({
                "consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": general}}],
                "identityMap": {"ECID": [{"id": ecid(w, n)}]}
            });
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

async fn export(http: &reqwest::Client, base: &str, namespace: &str, id: &str) -> Value {
    admin(http.get(format!("{base}/admin/v1/profiles/{namespace}/{id}/export")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
            let doc = export(&http, &bases[0], "ECID", &id).await;
            let records = doc["records"].as_array().map_or(0, Vec::len);
            if doc["profile"]["general"] != last_general || records != ROUNDS {
                problems.push(format!(
                    "{id}: general {}, {records} records (want {last_general}, {ROUNDS})",
                    doc["profile"]["general"]
                ));
            }
            let crm = format!("two-{w}-{n}");
            let doc = export(&http, &bases[1], "CRMID", &crm).await;
            let records = doc["records"].as_array().map_or(0, Vec::len);
            let val = &doc["profile"]["consents"]["marketing"]["email"]["val"];
            if val != last_choice || records != ROUNDS {
                problems.push(format!(
                    "{crm}: email {val}, {records} records (want {last_choice}, {ROUNDS})"
                ));
            }
        }
    }
    let url = a.database_url().to_owned();
    a.stop().await;
    b.stop().await;
    let chain = consent_server::Db::open(&url)
        .await
        .unwrap()
        .verify_chain(ORG, "prod")
        .await
        .unwrap();
    eprintln!(
        "two servers: {} calls answered; chain {chain:?}",
        WORKERS * IDS * ROUNDS * 2
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(chain, Ok((WORKERS * IDS * ROUNDS * 2) as i64));
}
