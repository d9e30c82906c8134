//! Fuzzes consent-core's `setConsent` payload parsing: bytes → `serde_json::Value` →
//! `SetConsentOptions::from_json` (the whole options) and `ConsentObject::from_json` (the value as
//! one consent object), then `decide` with the real TC string decoder.
//!
//! Properties checked, besides never panicking:
//! - accepted options keep their consent objects exactly (`consent_json()` is the input's
//!   `consent` array) and re-parse, from `consent_json()` plus the identity map and overrides,
//!   to equal options; each object also parses alone to the same `ConsentObject`;
//! - an accepted object keeps its JSON (`to_json()` is the input), re-parses to itself, reports
//!   the `standard`/`version` it was given, and the typed constructors (`adobe_v1`, `adobe_v2`,
//!   `iab_tcf`) build the same object from its fields;
//! - an object refused alone is refused with the same error as element 0 of an options object;
//! - `decide` is deterministic and order-independent (the strictest decision wins for `general`
//!   and every purpose: the combined decision equals the fold of the objects' own decisions,
//!   and reversing the `consent` array changes nothing);
//! - every `PayloadError` has a non-empty message and an Edge code that ends in its HTTP status.
#![no_main]

use consent_core::{
    ConsentDecision, ConsentObject, DEFAULT_IAB_VENDOR_ID, Decision, PayloadError, Purpose,
    SetConsentOptions, Standard, TcfDecoder,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// Every well-known purpose.
const PURPOSES: [Purpose; 13] = [
    Purpose::GENERAL,
    Purpose::SHARE,
    Purpose::PERSONALIZE_CONTENT,
    Purpose::AD_ID,
    Purpose::MARKETING_ANY,
    Purpose::MARKETING_EMAIL,
    Purpose::MARKETING_PUSH,
    Purpose::MARKETING_SMS,
    Purpose::MARKETING_WHATSAPP,
    Purpose::MARKETING_CALL,
    Purpose::MARKETING_FAX,
    Purpose::MARKETING_COMMERCIAL_EMAIL,
    Purpose::MARKETING_POSTAL_MAIL,
];

fn check_error(err: &PayloadError) {
    assert!(!err.to_string().is_empty());
    let status = err.http_status();
    assert!(status == 400 || status == 422, "{err:?}");
    assert!(
        err.edge_code().ends_with(&format!("-{status}")),
        "edge code {} does not match status {status}",
        err.edge_code()
    );
}

fn strictest(a: Option<Decision>, b: Option<Decision>) -> Option<Decision> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.stricter(b)),
        (a, b) => a.or(b),
    }
}

/// The decision of every well-known purpose.
fn table(decision: &ConsentDecision) -> Vec<Option<Decision>> {
    PURPOSES.iter().map(|p| decision.purpose(*p)).collect()
}

fn check_decisions(options: &SetConsentOptions) {
    let iab = TcfDecoder;
    let vendor = DEFAULT_IAB_VENDOR_ID;
    let combined = options.decide(&iab, vendor);
    let again = options.decide(&iab, vendor);
    assert_eq!(combined, again, "decide is not deterministic");
    let own: Vec<_> = options
        .consent
        .iter()
        .enumerate()
        .map(|(i, o)| o.decide(i, &iab, vendor))
        .collect();
    let mut reversed = options.clone();
    reversed.consent.reverse();
    let reversed = reversed.decide(&iab, vendor);
    match &combined {
        Err(err) => {
            check_error(err);
            assert!(
                own.iter().any(Result::is_err),
                "a call failed, no object did"
            );
            assert!(
                reversed.is_err(),
                "reversing the objects made the call succeed"
            );
        }
        Ok(combined) => {
            let own: Vec<ConsentDecision> = own
                .into_iter()
                .map(|d| d.expect("an object failed, the call did not"))
                .collect();
            let mut named: Vec<Purpose> = PURPOSES.to_vec();
            for d in &own {
                named.extend(d.purposes.iter().map(|(p, _)| *p));
            }
            for p in named {
                let folded = own.iter().map(|d| d.purpose(p)).fold(None, strictest);
                assert_eq!(
                    combined.purpose(p),
                    folded,
                    "purpose {p:?}: the combined decision is not the strictest of the objects'"
                );
            }
            let reversed = reversed.expect("reversing the objects made the call fail");
            assert_eq!(
                table(combined),
                table(&reversed),
                "decide depends on the order"
            );
            assert_eq!(combined.general, reversed.general);
            assert_eq!(combined.all_purposes, reversed.all_purposes);
        }
    }
}

fn check_object(value: &Value, object: &ConsentObject) {
    assert_eq!(
        object.to_json(),
        value,
        "the object's JSON is not what it was made from"
    );
    let again = ConsentObject::from_json(object.to_json()).expect("an accepted object re-parses");
    assert_eq!(&again, object);
    let standard = object.standard();
    assert_eq!(value["standard"], standard.name());
    assert_eq!(value["version"], standard.version());
    assert_eq!(object.iab().is_some(), standard == Standard::IabTcf);
    let rebuilt = match standard {
        Standard::AdobeV1 => {
            let general = value["value"]["general"]
                .as_str()
                .expect("general is a string");
            Some(ConsentObject::adobe_v1(general))
        }
        Standard::AdobeV2 => Some(ConsentObject::adobe_v2(value["value"].clone())),
        Standard::IabTcf => {
            let (tc, gdpr) = object.iab().expect("an IAB object");
            assert_eq!(value["value"], tc);
            let explicit = value.get("gdprApplies").is_some_and(Value::is_boolean);
            let others = value.as_object().is_some_and(|m| m.len() == 4);
            (explicit && others).then(|| ConsentObject::iab_tcf(tc, gdpr))
        }
        _ => None,
    };
    if let Some(rebuilt) = rebuilt {
        assert_eq!(&rebuilt.expect("the constructor accepts it"), object);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };

    match SetConsentOptions::from_json(&value) {
        Ok(options) => {
            let items = value["consent"].as_array().expect("consent is an array");
            assert!(!options.consent.is_empty());
            assert_eq!(
                &options.consent_json(),
                items,
                "consent_json changed the objects"
            );
            for (item, object) in items.iter().zip(&options.consent) {
                assert_eq!(
                    &ConsentObject::from_json(item).expect("parses alone"),
                    object
                );
                check_object(item, object);
            }
            let mut rebuilt = Map::new();
            rebuilt.insert("consent".into(), Value::Array(options.consent_json()));
            if let Some(map) = &options.identity_map {
                rebuilt.insert("identityMap".into(), map.clone());
            }
            if let Some(overrides) = &options.edge_config_overrides {
                rebuilt.insert("edgeConfigOverrides".into(), overrides.clone());
            }
            let again = SetConsentOptions::from_json(&Value::Object(rebuilt))
                .expect("accepted options re-parse from consent_json");
            assert_eq!(again, options, "options changed through consent_json");
            check_decisions(&options);
        }
        Err(err) => check_error(&err),
    }

    match ConsentObject::from_json(&value) {
        Ok(object) => {
            check_object(&value, &object);
            let options = SetConsentOptions::from_json(&json!({ "consent": [value.clone()] }))
                .expect("one accepted object makes accepted options");
            assert_eq!(options.consent, vec![object]);
            check_decisions(&options);
        }
        Err(err) => {
            check_error(&err);
            let wrapped = SetConsentOptions::from_json(&json!({ "consent": [value.clone()] }));
            assert_eq!(
                wrapped,
                Err(err),
                "alone and in options, the object fails differently"
            );
        }
    }
});
