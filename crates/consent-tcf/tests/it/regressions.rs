//! Inputs that once broke the decoder or that stress its limits, each through `check`. Crashes found
//! by `fuzz/fuzz_targets/parse.rs` land here.

use consent_tcf::{ParseError, SegmentType, TcString};

/// Decodes `input`; on success the result must re-encode to something that decodes to the same
/// content. `expected` is `Ok(number of consented vendors)` or the parse error.
fn check(input: &str, expected: Result<usize, ParseError>) {
    let parsed = TcString::parse(input);
    match (&parsed, &expected) {
        (Ok(tc), Ok(consents)) => {
            assert_eq!(tc.vendor_consents().len(), *consents, "{input}");
            let again = TcString::parse(&tc.encode()).unwrap();
            assert_eq!(&again, tc);
        }
        _ => assert_eq!(
            parsed.map(|tc| tc.vendor_consents().len()),
            expected,
            "{input}"
        ),
    }
}

#[test]
fn limits_and_odd_inputs() {
    // Core of the minimal string with MaxVendorId 65535 in range encoding covering everything
    // (one range 1..=65535): one 8 KiB bitset, no per-vendor work.
    let all = TcString::builder()
        .vendor_consents(1..=u16::MAX)
        .build()
        .unwrap();
    check(&all.encode(), Ok(65535));
    // Non-ASCII input is rejected at its byte offset, never sliced mid-character.
    check(
        "CO\u{e9}",
        Err(ParseError::InvalidCharacter { position: 2 }),
    );
    check(".", Err(ParseError::EmptySegment { index: 0 }));
    check("====", Err(ParseError::EmptySegment { index: 0 }));
    check("C==A", Err(ParseError::InvalidCharacter { position: 3 }));
    check(
        "C",
        Err(ParseError::UnexpectedEnd {
            segment: SegmentType::Core,
            field: "Created",
        }),
    );
}
