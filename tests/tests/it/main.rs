//! End-to-end tests: `consent::Client` against the real `consent-server` binary.
//!
//! Every test starts the server binary as a child process on `127.0.0.1:0` with a database of
//! its own (SQLite in a temporary directory; PostgreSQL too for the restart and crash tests when
//! `CONSENT_TEST_POSTGRES_URL` is set), builds clients on temporary data directories, and checks
//! what the server received by reading its database (`events`, `consent_records`) and its
//! `/metrics`, and what the client kept by reading its cookie jar (`cookies.json`).
//!
//! - `scenarios`: the Web SDK's consent integration rows (reference §6.6), named after them;
//! - `iab`: the IAB TCF rows C224670–C224678;
//! - `improvements`: the acceptance tests of §6.7, asserting the better behaviour;
//! - `seed004`: the nine rows of the `defaultConsent` × `setConsent` table, both columns;
//! - `restarts`: client restarts with queued events, the server stopped or killed mid-delivery;
//! - `crash`: `kill -9` of a process using the client (`e2e-child`), and a new one delivering;
//! - `chaos`: a fault proxy spoiling 30 % of the requests; every event once, the last choice;
//! - `server_crash`: `kill -9` of the server under load, restarted: every answer is durable;
//! - `two_servers`: two server processes on one PostgreSQL database, nothing lost or doubled;
//! - `soak`: the server under a steady mixed load, its errors, latency and memory per window.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

/// Runs a test body on SQLite and on PostgreSQL (the latter passes with a note when
/// `CONSENT_TEST_POSTGRES_URL` is unset, unless `CONSENT_TEST_REQUIRE_POSTGRES=1`).
macro_rules! on_both {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(crate::harness::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(crate::harness::Backend::Postgres).await;
            }
        }
    };
}

mod chaos;
mod crash;
mod harness;
mod http;
mod iab;
mod improvements;
mod restarts;
mod scenarios;
mod seed004;
mod server_crash;
mod soak;
mod support;
mod two_servers;
