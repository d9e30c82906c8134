//! Fuzzes consent-optin's reader of the `adobeujs-optin` cookie (URI-encoded JSON of an object).
//! The reader itself (`parse_cookie`/`read_stored`) is private, so the cookie value is put in a
//! `MemoryStorage` jar and read by the public `OptIn::new` (storage enabled, opt-in applying),
//! once without and once with a custom category (which an older release kept in this cookie).
//!
//! Properties checked, besides never panicking:
//! - against a model (`decodeURIComponent` + `JSON.parse`): every category reads as the boolean
//!   the cookie gives it, a category the cookie does not give as a boolean stays denied, and the
//!   status is `Complete` exactly when the cookie gives at least one category;
//! - with every category pre-approved (`preOptInApprovals`), a category the cookie denies stays
//!   denied (a stored denial always wins) and one it approves stays approved;
//! - a write after flipping `aa` (read-merge-write of the cookie) stores every built-in category as a
//!   boolean equal to the service's permissions, keeps every key the service does not know with
//!   its value, moves the custom category out of `adobeujs-optin`, and a service built on the
//!   written jar reads back exactly the same permissions, with status `Complete`.
#![no_main]

use std::sync::Arc;

use consent_optin::{
    COOKIE_NAME, CUSTOM_COOKIE_NAME, Category, MemoryStorage, OptIn, OptInConfig, PermissionsInput,
    Status,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const CUSTOM: &str = "fuzzcat";

/// `decodeURIComponent`, as JavaScript does it: `%` must be followed by two hex digits, and the
/// bytes must be UTF-8.
fn decode_uri_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse(raw: &str) -> Option<Map<String, Value>> {
    serde_json::from_str(&decode_uri_component(raw)?).ok()
}

fn config(jar: &Arc<MemoryStorage>, custom: bool, pre_all: bool) -> OptInConfig {
    let mut builder = OptInConfig::builder()
        .does_opt_in_apply(true)
        .opt_in_storage(jar.clone())
        .is_opt_in_storage_enabled(true)
        .host("www.example.com");
    if custom {
        builder = builder.custom_category(CUSTOM);
    }
    if pre_all {
        let all = Category::BUILTIN.iter().map(|c| (c.clone(), true));
        builder = builder.pre_opt_in_approvals(PermissionsInput::from_categories(all));
    }
    builder.build().expect("a valid configuration")
}

fn permissions(optin: &OptIn) -> Vec<(String, bool)> {
    optin
        .permissions()
        .iter()
        .map(|(c, approved)| (c.as_str().to_owned(), approved))
        .collect()
}

fn check(raw: &str, custom: bool) {
    let jar = Arc::new(MemoryStorage::new());
    jar.insert_raw(COOKIE_NAME, raw);
    let optin = OptIn::new(config(&jar, custom, false));
    let read = permissions(&optin);
    let _ = optin.warnings();

    // The model.
    let object = parse(raw);
    let builtin = Category::BUILTIN;
    let known: Vec<&str> = builtin
        .iter()
        .map(Category::as_str)
        .chain(custom.then_some(CUSTOM))
        .collect();
    assert_eq!(read.len(), known.len());
    let mut any = false;
    for ((name, approved), expected_name) in read.iter().zip(&known) {
        assert_eq!(name, expected_name);
        let stored = object
            .as_ref()
            .and_then(|o| o.get(*expected_name))
            .and_then(Value::as_bool);
        any |= stored.is_some();
        assert_eq!(
            *approved,
            stored.unwrap_or(false),
            "{name} reads {approved} from the cookie {raw:?}"
        );
    }
    let expected_status = if any {
        Status::Complete
    } else {
        Status::Pending
    };
    assert_eq!(
        optin.status(),
        expected_status,
        "status for the cookie {raw:?}"
    );

    // A stored denial wins over preOptInApprovals.
    let pre = OptIn::new(config(&jar, custom, true));
    assert_eq!(pre.status(), optin.status());
    for ((name, approved), (_, pre_approved)) in read.iter().zip(permissions(&pre)) {
        let stored = object
            .as_ref()
            .and_then(|o| o.get(name.as_str()))
            .and_then(Value::as_bool);
        match stored {
            Some(v) => assert_eq!(pre_approved, v, "{name}: the cookie lost to the defaults"),
            None if name.as_str() == CUSTOM => assert!(!pre_approved),
            None => assert!(pre_approved, "{name}: not pre-approved"),
        }
        if !pre_approved {
            assert!(!approved);
        }
    }

    // Read-merge-write, then read back.
    // Flip analytics, so that the completion changes something.
    if optin.is_approved(&[Category::Analytics]) {
        optin.deny(&[Category::Analytics], false)
    } else {
        optin.approve(&[Category::Analytics], false)
    }
    .expect("analytics is a category");
    let after = permissions(&optin);
    let written = jar
        .cookie(COOKIE_NAME)
        .expect("the cookie was written")
        .value;
    let written_object = parse(&written).expect("the written cookie is URI-encoded JSON");
    for category in Category::BUILTIN.iter() {
        let value = written_object.get(category.as_str());
        let expected = after
            .iter()
            .find(|(n, _)| n == category.as_str())
            .map(|(_, a)| Value::Bool(*a));
        assert_eq!(
            value,
            expected.as_ref(),
            "{} was written wrong",
            category.as_str()
        );
    }
    if custom {
        assert!(
            !written_object.contains_key(CUSTOM),
            "the custom category stayed"
        );
        let custom_cookie = jar
            .cookie(CUSTOM_COOKIE_NAME)
            .expect("custom cookie written");
        let custom_object = parse(&custom_cookie.value).expect("custom cookie is JSON");
        let expected = after.iter().find(|(n, _)| n == CUSTOM).map(|(_, a)| *a);
        assert_eq!(custom_object.get(CUSTOM).and_then(Value::as_bool), expected);
    }
    if let Some(object) = &object {
        for (key, value) in object {
            if known.contains(&key.as_str()) {
                continue;
            }
            assert_eq!(
                written_object.get(key),
                Some(value),
                "the unknown key {key:?} was lost from {raw:?} (written {written:?})"
            );
        }
    }
    let reread = OptIn::new(config(&jar, custom, false));
    assert_eq!(reread.status(), Status::Complete);
    assert_eq!(
        permissions(&reread),
        after,
        "the written cookie {written:?} reads back differently (from {raw:?})"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    check(raw, false);
    check(raw, true);
});
