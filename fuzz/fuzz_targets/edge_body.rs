//! Fuzzes Edge request bodies (`/v1/privacy/set-consent`, `/v1/interact`) the way consent-server
//! reads them, through the public consent-core entry points it uses. The server's own handler
//! (`consent_server::edge::handle`) is crate-private and needs a database, so this target
//! mirrors its parsing: an empty body is `{}`, the body must be a JSON object; set-consent hands
//! `consent` and `identityMap` to `SetConsentOptions::from_json` and decides with the real TC
//! string decoder; interact needs a non-empty `events` array; the consent cookie in
//! `meta.state.entries` is read with `general_value` (after `%3D` → `=`).
//!
//! Properties checked, besides never panicking:
//! - `validate_identity_map` accepts exactly the shapes of a reference model of the Web SDK's
//!   identity map check (namespaces → arrays of objects with only `authenticatedState` (one of
//!   three values), `id`/`xid` (strings), `primary` (boolean), `namespace` (`{code?: string}`)),
//!   and `SetConsentOptions::from_json` with that identity map agrees with it (same error, or
//!   the map kept as given);
//! - the set-consent decision does not depend on the order of the consent objects (nor does
//!   whether it fails), and its decision for `general` is the strictest of the objects' own;
//! - a consent cookie value in `meta.state.entries` reads without panicking;
//! - every refusal maps to an Edge answer whose code ends in its HTTP status (400 or 422).
#![no_main]

use consent_core::{
    DEFAULT_IAB_VENDOR_ID, Decision, PayloadError, SetConsentOptions, TcfDecoder, general_value,
    validate_identity_map,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

fn check_error(err: &PayloadError) {
    let status = err.http_status();
    assert!(status == 400 || status == 422, "{err:?}");
    assert!(err.edge_code().ends_with(&format!("-{status}")), "{err:?}");
    assert!(!err.to_string().is_empty());
}

/// The reference model of the identity map check.
fn identity_map_ok(value: &Value) -> bool {
    let Some(map) = value.as_object() else {
        return false;
    };
    map.values().all(|identities| {
        identities.as_array().is_some_and(|items| {
            items.iter().all(|item| {
                item.as_object().is_some_and(|fields| {
                    fields.iter().all(|(k, v)| match k.as_str() {
                        "id" | "xid" => v.is_string(),
                        "primary" => v.is_boolean(),
                        "authenticatedState" => matches!(
                            v.as_str(),
                            Some("ambiguous" | "authenticated" | "loggedOut")
                        ),
                        "namespace" => v
                            .as_object()
                            .is_some_and(|ns| ns.iter().all(|(k, v)| k == "code" && v.is_string())),
                        _ => false,
                    })
                })
            })
        })
    })
}

fn check_identity_map(value: &Value) {
    let checked = validate_identity_map(value);
    assert_eq!(
        checked.is_ok(),
        identity_map_ok(value),
        "validate_identity_map disagrees with the model on {value}: {checked:?}"
    );
    let options = json!({
        "consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}],
        "identityMap": value,
    });
    let parsed = SetConsentOptions::from_json(&options);
    match (&checked, &parsed) {
        (Ok(()), Ok(options)) => assert_eq!(options.identity_map.as_ref(), Some(value)),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => {
            // `null` means "no identity map" to the options, not an invalid one.
            assert!(value.is_null(), "{value}: {checked:?} vs {parsed:?}");
        }
    }
    if let Err(err) = checked {
        check_error(&err);
    }
}

/// What the server hands to `SetConsentOptions::from_json`.
fn options_of(body: &Map<String, Value>) -> Value {
    let mut options = Map::new();
    for field in ["consent", "identityMap"] {
        if let Some(v) = body.get(field) {
            options.insert(field.to_owned(), v.clone());
        }
    }
    Value::Object(options)
}

fn set_consent(body: &Map<String, Value>) {
    let options_json = options_of(body);
    let parsed = SetConsentOptions::from_json(&options_json);

    let options = match parsed {
        Ok(options) => options,
        Err(err) => return check_error(&err),
    };
    let decided = options.decide(&TcfDecoder, DEFAULT_IAB_VENDOR_ID);
    let mut reversed = options.clone();
    reversed.consent.reverse();
    let reversed = reversed.decide(&TcfDecoder, DEFAULT_IAB_VENDOR_ID);
    match (&decided, &reversed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                a.general, b.general,
                "general depends on the order of the objects"
            );
            assert_eq!(a.all_purposes, b.all_purposes);
            let own: Vec<Option<Decision>> = options
                .consent
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    o.decide(i, &TcfDecoder, DEFAULT_IAB_VENDOR_ID)
                        .expect("the call succeeded")
                        .general
                })
                .collect();
            let strictest = own
                .into_iter()
                .fold(None, |acc: Option<Decision>, d| match (acc, d) {
                    (Some(a), Some(d)) => Some(a.stricter(d)),
                    (a, d) => a.or(d),
                });
            assert_eq!(
                a.general, strictest,
                "general is not the strictest of the objects'"
            );
        }
        (Err(a), Err(_)) => check_error(a),
        _ => panic!("the order of the objects decides whether the call fails"),
    }
}

fn interact(body: &Map<String, Value>) {
    match body.get("events") {
        Some(Value::Array(events)) if !events.is_empty() => {
            for event in events {
                if let Some(map) = event.pointer("/xdm/identityMap") {
                    check_identity_map(map);
                }
            }
        }
        _ => {}
    }
}

fn consent_cookies(body: &Value) {
    let Some(entries) = body
        .pointer("/meta/state/entries")
        .and_then(Value::as_array)
    else {
        return;
    };
    for entry in entries {
        if let Some(value) = entry.get("value").and_then(Value::as_str) {
            let value = value.replace("%3D", "=").replace("%3d", "=");
            let general = general_value(&value);
            if let Some(g) = general {
                assert!(!g.contains(';'));
                let _ = Decision::from_wire(g);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let body: Value = if data.is_empty() {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(data) {
            Ok(body) => body,
            Err(_) => return,
        }
    };
    let Value::Object(map) = &body else {
        return;
    };
    if let Some(identity_map) = map.get("identityMap") {
        check_identity_map(identity_map);
    }
    set_consent(map);
    interact(map);
    consent_cookies(&body);
});
