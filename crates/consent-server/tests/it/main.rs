//! Integration tests: the real server on 127.0.0.1, against SQLite and (when
//! `CONSENT_TEST_POSTGRES_URL` is set) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[cfg(unix)]
mod alloy;
mod attack;
#[cfg(unix)]
mod binary;
#[cfg(unix)]
mod browser;
mod contradictions;
mod decisions;
mod edge;
mod erasure;
mod events_security;
mod harness;
mod limits;
mod migrations;
mod openapi;
mod ops;
mod prefs;
mod receipts;
mod security;
mod tls_cors;
mod web_sdk;
#[cfg(unix)]
mod webdriver;
