//! A consent banner in the terminal: page views wait while the person decides.
//!
//! ```sh
//! cargo run -p consent-server -- --allow-unknown-datastreams &   # 127.0.0.1:8080, SQLite
//! cargo run -p consent --example banner -- [base-url] [data-dir]
//! ```
//!
//! The defaults are `http://127.0.0.1:8080` and `./consent-banner-data`. While consent is
//! "pending" (the default here) a page view is queued on disk every second. Answer `y` and they
//! are delivered in order; answer `n` and they are deleted from disk, and the next ones are
//! declined before anything is written. `y` and `n` can be given again to change one's mind; `q`
//! or the end of the input stops the client.
//!
//! Stop it at any moment (`q`, Ctrl-C, even `kill -9`) and start it again on the same data
//! directory: it shows the consent it restored and the page views still queued, and goes on from
//! there. Piped input works too: `(sleep 3; echo y) | cargo run -p consent --example banner`.

#![allow(
    clippy::print_stdout,
    reason = "the example talks to the person in the terminal"
)]

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use consent::{Client, ConsentRequest, Decision, Event};
use serde_json::json;
use tokio::sync::mpsc;

/// The organisation `consent-server` uses for datastreams it does not know (`--default-org`).
const ORG: &str = "consent@AdobeOrg";
const DATASTREAM: &str = "ebebf826-a01f-4458-8cec-ef61de241c93";

/// The lines the person types, read on a thread of their own (blocking reads have no place on
/// the runtime); the channel closes at the end of the input.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Every second while consent is pending: a page view, queued on disk.
async fn page_views(client: Client) {
    let mut changes = client.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u32;
    loop {
        // Only a pending consent makes page views wait; otherwise wait for the next change.
        while changes.borrow_and_update().state != Decision::Pending {
            if changes.changed().await.is_err() {
                return;
            }
        }
        tick.tick().await;
        if client.consent().state != Decision::Pending {
            continue;
        }
        n += 1;
        let page = format!("https://example.com/article/{n}");
        let event = Event::new(json!({
            "eventType": "web.webpagedetails.pageViews",
            "web": {"webPageDetails": {"URL": page}},
        }));
        match client.enqueue(event).await {
            Ok(id) => println!(
                "  page view {page} queued on disk ({id}); {} waiting",
                client.stats().queued
            ),
            Err(e) if e.is_consent_declined() => println!("  page view {page} declined: {e}"),
            Err(e) => println!("  page view {page} not queued: {e}"),
        }
    }
}

fn show_consent(client: &Client) {
    let view = client.consent();
    let how = if view.was_set {
        "the person's choice"
    } else {
        "the default"
    };
    println!("consent is {} ({how})", view.state);
}

fn prompt(client: &Client) {
    match client.consent().state {
        Decision::Pending => println!("Allow analytics? [y]es / [n]o / [q]uit"),
        Decision::In => println!("Analytics allowed. [n] to withdraw, [q] to quit"),
        Decision::Out => println!("Analytics refused. [y] to allow, [q] to quit"),
    }
}

/// Sets the person's answer and shows what became of the queued page views.
async fn decide(client: &Client, general: &str) {
    let before = client.stats();
    match client.set_consent(ConsentRequest::adobe_v1(general)).await {
        Ok(()) => {}
        Err(e) => {
            // The stricter of the old and the new consent applies until the server confirms.
            println!("the server did not confirm it: {e}");
        }
    }
    if client.consent().state == Decision::In
        && let Err(e) = client.flush().await
    {
        println!("not everything was delivered yet: {e}");
    }
    let after = client.stats();
    show_consent(client);
    println!(
        "  {} page views delivered, {} deleted from disk, {} still waiting",
        after.delivered - before.delivered,
        after.purged - before.purged,
        after.queued,
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let dir = args
        .next()
        .map_or_else(|| PathBuf::from("consent-banner-data"), PathBuf::from);

    let client = Client::builder()
        .edge_base_url(&base)
        .datastream_id(DATASTREAM)
        .org_id(ORG)
        .default_consent("pending")
        .data_dir(&dir)
        .build()
        .await?;
    print!("{} against {base}: ", dir.display());
    show_consent(&client);
    let restored = client.stats().queued;
    if restored > 0 {
        println!("  {restored} page views queued by an earlier run wait on disk");
    }
    if client.consent().state == Decision::In {
        // What an earlier run left goes out now that consent allows it.
        if let Err(e) = client.flush().await {
            println!("  not everything was delivered yet: {e}");
        }
        println!("  {} page views delivered", client.stats().delivered);
    }

    let ticker = tokio::spawn(page_views(client.clone()));
    let mut lines = stdin_lines();
    prompt(&client);
    while let Some(line) = lines.recv().await {
        match line.trim() {
            "y" | "yes" => decide(&client, "in").await,
            "n" | "no" => decide(&client, "out").await,
            "q" | "quit" => break,
            "" => continue,
            other => println!("{other:?}? answer y, n or q"),
        }
        prompt(&client);
    }

    ticker.abort();
    let _ = ticker.await;
    let records = client.records().verify()?;
    client.shutdown().await?;
    let stats = client.stats();
    println!(
        "stopped: {} page views wait in {} for the next run; {records} consent records verify",
        stats.queued,
        dir.display()
    );
    Ok(())
}
