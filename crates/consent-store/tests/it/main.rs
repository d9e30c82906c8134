//! Integration tests of consent-store: crash safety under SIGKILL, torn tails, damage on disk,
//! injected faults, the data directory's lock, the record chain and its anchor, what stays on disk,
//! and the cookie jar.

#![allow(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail a test by panicking too"
)]

mod anchor;
mod cookies;
mod corrupt;
mod faults;
mod kill;
mod lock;
mod records;
mod report;
mod retention;
mod torn;
