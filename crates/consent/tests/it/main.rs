//! Integration tests of the consent client against a real `consent-server` on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on unexpected errors"
)]

mod delivery;
mod gate;
mod harness;
mod lifecycle;
mod receipts;
