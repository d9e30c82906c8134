//! Consent-gated data collection: one async client that gets consent, queueing, delivery and
//! proof right by default.
//!
//! - **Nothing before consent.** While consent is "out", [`Client::enqueue`] and
//!   [`Client::send_event`] fail at once and nothing of the event touches the disk or the network.
//!   While it is "pending", events wait in a durable queue; on "in" they are delivered in
//!   submission order; on "out" they are deleted from disk (the bytes, not only a marker) before
//!   [`Client::set_consent`] returns. No cookie but the consent cookie (and the Opt-in Service's
//!   record of the person's choices) is written until the engine allows it.
//! - **Nothing lost.** An event is on disk when `enqueue` returns; the queue survives restarts
//!   and `kill -9`. A new client on the same data directory restores consent (from the persisted
//!   consent cookie and engine state) and delivers what the last one left.
//! - **Nothing sent twice in effect.** Delivery is at least once with stable event ids
//!   (`xdm._id`), so the server's deduplication gives exactly-once effect; retries cover
//!   connection errors, timeouts, 5xx and 429/408 (honouring `Retry-After`). A 4xx other than
//!   408/429 ends the events with an error that is reported and counted (a 400, 413 or 422 for
//!   several events first splits the request, so only the event at fault ends).
//! - **Every choice provable.** Every consent change is a record in a hash-chained log
//!   ([`Client::records`]).
//!
//! It composes the workspace's layers: [`consent_core`] (the engine, which decides everything),
//! [`consent_store`] (the files), [`consent_transport`] (the Edge protocol) and
//! [`consent_optin`] (the Opt-in Service). One thread owns the engine and the files; the runtime
//! only runs the requests, so nothing here blocks an async worker (except the [`Records`]
//! methods, which read the record log on the calling thread), and `flush` and `shutdown` are
//! bounded.
//!
//! ```no_run
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), consent::Error> {
//! let client = consent::Client::builder()
//!     .edge_base_url("http://127.0.0.1:8080")
//!     .datastream_id("ebebf826-a01f-4458-8cec-ef61de241c93")
//!     .org_id("ADB3LETTERSANDNUMBERS@AdobeOrg")
//!     .default_consent("pending")
//!     .data_dir("/var/lib/my-app/consent")
//!     .build()
//!     .await?;
//!
//! // Pending: the page view waits on disk; nothing is sent.
//! client.enqueue(consent::Event::new(json!({"eventType": "web.webpagedetails.pageViews"}))).await?;
//!
//! // The person agrees: the page view goes out.
//! client.set_consent(consent::ConsentRequest::adobe_v1("in")).await?;
//! client.flush().await?;
//! assert_eq!(client.consent().state.as_str(), "in");
//! assert!(client.records().verify()? >= 2); // the default (on a fresh directory), then the choice
//! client.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The guide (`docs/guide.md` in the repository) covers the defaults, the three standards,
//! queueing, purposes, records, the Opt-in Service, the delivery guarantees and shutdown.
//!
//! # Cargo features
//!
//! - `http` (default): [`Builder::edge_base_url`] builds the reqwest transport. Without it, no
//!   HTTP client is compiled in.
//! - `fs` (default): [`Builder::data_dir`] keeps everything on disk. Without it the client keeps
//!   everything in memory.
//!
//! With `default-features = false`, give the builder a [`Transport`] of your own.

mod client;
mod driver;
mod error;
mod event;
mod jar;

pub use consent_core::{ConsentView, Decision};
pub use consent_optin::OptIn;
pub use consent_store::{ChainHead, ConsentRecord};
pub use consent_transport::{RetryPolicy, Transport};
pub use {consent_core, consent_optin, consent_store, consent_transport};

pub use crate::client::{Builder, Client, RECEIPT_STANDARD, Records, Stats};
pub use crate::error::{Error, ErrorKind};
pub use crate::event::{ConsentRequest, Event, EventId, Receipt};
