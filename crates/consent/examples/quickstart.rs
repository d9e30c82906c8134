//! Quick start: the consent client against a running `consent-server`.
//!
//! ```sh
//! cargo run -p consent-server -- --allow-unknown-datastreams &   # 127.0.0.1:8080, SQLite
//! cargo run -p consent --example quickstart -- http://127.0.0.1:8080 [data-dir]
//! ```
//!
//! With `defaultConsent` "pending" a page view is queued on disk and nothing is sent; the person
//! opts in; the page view is delivered; the identity cookie is written only then; the consent
//! records verify. `cargo xtask demo` runs this against a fresh server.

#![allow(
    clippy::print_stdout,
    reason = "the example shows what happens, step by step"
)]

use std::error::Error;

use consent::{Client, ConsentRequest, Event};
use serde_json::json;

/// The organisation `consent-server` uses for datastreams it does not know (`--default-org`).
const ORG: &str = "consent@AdobeOrg";
const DATASTREAM: &str = "ebebf826-a01f-4458-8cec-ef61de241c93";

fn cookies(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("cookies.json")).unwrap_or_default();
    let jar: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    let mut names: Vec<String> = jar
        .iter()
        .filter_map(|c| c["raw_cookie"].as_str())
        .filter_map(|raw| raw.split('=').next().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(2)
        .map_or_else(|| temp.path().to_owned(), std::path::PathBuf::from);

    let client = Client::builder()
        .edge_base_url(&base)
        .datastream_id(DATASTREAM)
        .org_id(ORG)
        .default_consent("pending")
        .data_dir(&dir)
        .build()
        .await?;
    println!(
        "1. consent is {} (set: {})",
        client.consent().state,
        client.consent().was_set
    );

    let id = client
        .enqueue(Event::new(
            json!({"eventType": "web.webpagedetails.pageViews"}),
        ))
        .await?;
    let stats = client.stats();
    println!(
        "2. page view {id} queued on disk: {} waiting, {} sent; cookies: {:?}",
        stats.queued,
        stats.delivered,
        cookies(&dir)
    );

    client.set_consent(ConsentRequest::adobe_v1("in")).await?;
    client.flush().await?;
    let stats = client.stats();
    println!(
        "3. setConsent in: consent is {}; {} event delivered, {} waiting",
        client.consent().state,
        stats.delivered,
        stats.queued
    );
    println!("4. cookie jar in {}: {:?}", dir.display(), cookies(&dir));
    println!(
        "5. consent records verify: {} records",
        client.records().verify()?
    );
    client.shutdown().await?;
    Ok(())
}
