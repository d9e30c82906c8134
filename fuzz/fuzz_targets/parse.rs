//! Fuzzes `TcString::parse`: it must never panic, and whatever it decodes must validate without
//! panicking and re-encode to a string that decodes to the same content and the same text.
#![no_main]

use consent_tcf::TcString;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tc) = TcString::parse(input) else {
        return;
    };
    let _ = tc.validate();
    let _ = tc.violations();
    let text = tc.encode();
    let again = TcString::parse(&text).expect("an encoded string decodes");
    assert_eq!(again, tc, "content changed through encode: {input:?} -> {text:?}");
    assert_eq!(again.encode(), text, "encoding is not stable: {input:?}");
});
