//! Fuzzes consent-core's consent cookie reader: `parse_consent_cookie` and `general_value` on
//! arbitrary cookie values (the `kndctr_<org>_consent` cookie, `general=in;foo=out`).
//!
//! Properties checked, besides never panicking:
//! - every pair is trimmed, its name has no `=` and neither part has a `;`; names are unique and
//!   come in the order of their first occurrence;
//! - against a reference model built from `split(';')`: each name's value is one of the values
//!   given for it; when several are given, a value that is not a decision wins over decisions,
//!   else the strictest decision (out over pending over in) wins, so a cookie never reads "in"
//!   for a name that is also given anything else;
//! - `general_value` is exactly the `general` pair of `parse_consent_cookie`;
//! - writing the pairs back as `name=value;...` parses to the same pairs (a fixed point).
#![no_main]

use consent_core::{Decision, general_value, parse_consent_cookie};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cookie) = std::str::from_utf8(data) else {
        return;
    };
    let pairs = parse_consent_cookie(cookie);

    // The reference model: every occurrence of every name, in order.
    let mut given: Vec<(&str, Vec<&str>)> = Vec::new();
    for part in cookie.split(';') {
        if part.trim().is_empty() {
            continue;
        }
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let (name, value) = (name.trim(), value.trim());
        match given.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => given.push((name, vec![value])),
        }
    }
    assert_eq!(
        pairs.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        given.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "names differ from the model for {cookie:?}"
    );
    for ((name, value), (_, values)) in pairs.iter().zip(&given) {
        assert_eq!(*name, name.trim());
        assert_eq!(*value, value.trim());
        assert!(!name.contains('=') && !name.contains(';') && !value.contains(';'));
        assert!(
            values.contains(value),
            "{name}={value:?} was never given in {cookie:?}"
        );
        let decisions: Option<Vec<Decision>> =
            values.iter().map(|v| Decision::from_wire(v)).collect();
        match decisions {
            None => assert!(
                Decision::from_wire(value).is_none(),
                "{name}: a decision {value:?} won over a value that is not one in {cookie:?}"
            ),
            Some(decisions) => {
                let strictest = decisions.iter().fold(Decision::In, |a, b| a.stricter(*b));
                assert_eq!(
                    Decision::from_wire(value),
                    Some(strictest),
                    "{name}: not the strictest decision in {cookie:?}"
                );
            }
        }
        if *value == "in" {
            assert!(
                values.iter().all(|v| *v == "in"),
                "{name} reads in: {cookie:?}"
            );
        }
    }

    let general = pairs.iter().find(|(n, _)| *n == "general").map(|(_, v)| *v);
    assert_eq!(
        general_value(cookie),
        general,
        "general_value disagrees for {cookie:?}"
    );

    let written: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let written = written.join(";");
    assert_eq!(
        parse_consent_cookie(&written),
        pairs,
        "{cookie:?} written back as {written:?} parses differently"
    );
});
