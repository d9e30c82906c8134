//! Integration tests of consent-tcf: the reference vectors, validation rules, property tests, the
//! differential test against `lib_tcstring`, and regressions found by fuzzing.

// clippy.toml allows unwrap in #[test] functions only; the shared helpers here are test code too.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is a test failure"
)]

mod alloc;
mod differential;
mod regressions;
mod roundtrip;
mod validation;
mod vectors;
