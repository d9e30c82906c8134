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
//!   which the client starts delivering at once;
//! - `cycle-deliver`, `cycle-withdraw`, `cycle-mixed`: (`<events>` is then a seed) prints
//!   `READY`, then, until it is killed, picks at random (from the seed): enqueue an event (`ID
//!   <id>` once it returned, `DECLINED` when consent is out), or set consent "in" or "out"
//!   (`SETTING <value>` before the call, `SET <value>` once it returned); `deliver` never sets
//!   "out", `withdraw` never "in". The crash-cycle test kills it at a random instant and reads
//!   what happened from these lines.
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
        return Err("usage: e2e-child <base URL> <data dir> <org> <datastream> \
             <pending|in|cycle-deliver|cycle-withdraw|cycle-mixed> <events or seed>"
            .into());
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
        "cycle-deliver" => return cycle(&client, events as u64, (90, 100)).await,
        "cycle-withdraw" => return cycle(&client, events as u64, (95, 95)).await,
        "cycle-mixed" => return cycle(&client, events as u64, (90, 97)).await,
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

/// Modes `cycle-*`: random enqueues and consent changes until killed, each reported on stdout
/// once it has returned. Of every 100 steps, `enqueue` below `odds.0`, "in" below `odds.1`, "out"
/// from there: `cycle-deliver` never withdraws, `cycle-withdraw` never gives consent.
async fn cycle(
    client: &Client,
    seed: u64,
    odds: (u64, u64),
) -> Result<(), Box<dyn std::error::Error>> {
    let mut random = consent_e2e::XorShift::new(seed);
    let mut next = move || random.next_u64();
    let say = |line: &str| -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()
    };
    say("READY")?;
    for n in 0u64.. {
        let roll = next() % 100;
        if roll < odds.0 {
            let event = Event::new(json!({"eventType": "e2e.cycle", "e2e": {"n": n}}));
            match client.enqueue(event).await {
                Ok(id) => say(&format!("ID {id}"))?,
                Err(e) if e.is_consent_declined() => say("DECLINED")?,
                Err(e) => say(&format!("ERROR {e}"))?,
            }
        } else {
            let value = if roll < odds.1 { "in" } else { "out" };
            say(&format!("SETTING {value}"))?;
            match client.set_consent(ConsentRequest::adobe_v1(value)).await {
                Ok(_) => say(&format!("SET {value}"))?,
                Err(e) => say(&format!("ERROR {e}"))?,
            }
        }
        tokio::time::sleep(Duration::from_millis(next() % 4)).await;
    }
    Ok(())
}
