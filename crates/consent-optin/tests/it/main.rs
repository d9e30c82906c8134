//! Integration tests of the Opt-in Service: the reference's scenarios OI-01…OI-19, subscriptions and
//! futures, one test per finding of the review (`review.rs`), model-based property tests (one of
//! them on several threads), and an allocation check of `is_approved`.
// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers they share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

mod alloc;
mod model;
mod review;
mod scenarios;
mod subscriptions;
mod support;
