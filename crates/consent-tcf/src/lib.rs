//! IAB Transparency & Consent Framework (TCF) v2.2/2.3 TC strings: decode, validate, build and encode;
//! plus the Global Privacy Control `Sec-GPC` header.
//!
//! This crate does no I/O, reads no clock and spawns no threads: timestamps are values in the string,
//! and "now" is never consulted. It depends on nothing beyond `std` and `thiserror`.
//!
//! - [`TcString::parse`] decodes every field of the core segment (vendor sections in bitfield or range
//!   encoding, publisher restrictions) and the Disclosed Vendors, Allowed Vendors and Publisher TC
//!   segments, in any order, with or without `=` padding. It is lenient: old strings decode.
//! - [`TcString::validate`] applies the strict rules of the specification, each failure a
//!   [`ValidationError`] naming the rule.
//! - [`TcString::encode`] writes the string back, choosing the smaller of bitfield and range encoding
//!   for each vendor section; decoding then encoding gives back the original text.
//! - [`TcString::builder`] creates strings (for consent UIs and tests).
//! - [`gpc::sec_gpc`] reads a `Sec-GPC` header value exactly as the GPC specification says.
//!
//! Vendor sections are bitsets ([`VendorSet`]; a short range section stays as its ranges until
//! changed): a vendor lookup is a shift and a mask, and decoding a core-only string allocates
//! nothing unless a bitfield goes past vendor 256 or a section has more than 8 ranges (see
//! [`TcString::parse`]).
//!
//! ```
//! use consent_tcf::TcString;
//!
//! let tc = TcString::parse("CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA")?;
//! assert_eq!(tc.cmp_id(), 880);
//! assert_eq!(tc.consent_language().to_string(), "EN");
//! assert_eq!(tc.publisher_cc().to_string(), "DE");
//! assert!(tc.vendor_consent(4) && !tc.vendor_consent(5));
//! assert!(tc.disclosed_vendor(404));
//! assert!(!tc.purpose_consent(1));
//! // The IAB's own example predates TCF v2.2 (policy version 2) and pads its segments with more
//! // than 5 bits, so strict validation refuses it.
//! let broken: Vec<_> = tc.violations().iter().map(|e| e.rule()).collect();
//! assert_eq!(broken, ["padding", "policy-version"]);
//! // Re-encoding gives back the same text.
//! assert_eq!(tc.encode(), "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA");
//! # Ok::<(), consent_tcf::ParseError>(())
//! ```

mod bits;
mod builder;
mod error;
pub mod gpc;
mod tcstring;
mod types;

pub use bits::Padding;
pub use builder::TcStringBuilder;
pub use error::{BuildError, ParseError, SegmentType, TcfError, ValidationError, VendorSection};
pub use tcstring::TcString;
pub use types::{
    Alpha2, PublisherRestriction, PublisherTc, RestrictionType, Timestamp, VendorEncoding,
    VendorIter, VendorRange, VendorSet,
};
