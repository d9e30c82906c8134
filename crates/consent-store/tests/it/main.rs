//! Integration tests of consent-store: crash safety under SIGKILL, torn tails, injected faults,
//! the record chain and the cookie jar.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail a test by panicking too"
)]

mod cookies;
mod faults;
mod kill;
mod records;
mod torn;
