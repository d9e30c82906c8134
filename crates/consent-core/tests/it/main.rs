//! Integration tests of the consent engine, driven through the simulation harness.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod alloc;
mod harness;
mod model;
mod property;
mod review;
mod scenarios;
