//! `e2e-child`: a process that uses the `consent` client and is then killed with SIGKILL.
//!
//! ```text
//! e2e-child <edge base URL> <data dir> <org> <datastream> <mode> <events>
//! ```
//!
//! It builds a client on the data directory, then, by `mode`:
//!
//! - `pending`: default consent "pending"; enqueues the events (they wait for consent);
//! - `in`: default consent "pending", `set_consent` Adobe 1.0 "in", then enqueues the events,
//!   which the client starts delivering at once.
//!
//! It prints `ID <event id>` for every event as soon as `enqueue` has returned (the event is
//! durable), then `ENQUEUED`, and sleeps until it is killed. The end-to-end tests kill it with
//! SIGKILL after reading `ENQUEUED` and deliver what it left from a new client on the same
//! directory.

#![allow(
    clippy::print_stdout,
    reason = "the test reads the event ids and the ENQUEUED line from stdout"
)]

use std::io::Write as _;
use std::time::Duration;

use consent::RetryPolicy;
use consent::{Client, ConsentRequest, Event};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, data_dir, org, datastream, mode, events] = args.as_slice() else {
        return Err(
            "usage: e2e-child <base URL> <data dir> <org> <datastream> <pending|in> <events>"
                .into(),
        );
    };
    let events: usize = events.parse()?;
    let client = Client::builder()
        .edge_base_url(base)
        .datastream_id(datastream)
        .org_id(org)
        .default_consent("pending")
        .data_dir(data_dir)
        .batch_size(4)
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
                .with_deadline(Duration::from_secs(2)),
        )
        .build()
        .await?;
    match mode.as_str() {
        "pending" => {}
        "in" => client.set_consent(ConsentRequest::adobe_v1("in")).await?,
        other => return Err(format!("unknown mode {other}").into()),
    }
    let mut stdout = std::io::stdout().lock();
    for n in 0..events {
        let event = Event::new(json!({
            "eventType": "e2e.child",
            "e2e": {"n": n},
        }));
        let id = client.enqueue(event).await?;
        writeln!(stdout, "ID {id}")?;
    }
    writeln!(stdout, "ENQUEUED")?;
    stdout.flush()?;
    drop(stdout);
    // Delivery (in mode `in`) goes on in the background until the test kills this process.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
