//! The OpenAPI document describes what the server really accepts and answers: real requests and
//! answers are checked against its schemas.

use serde_json::{Value, json};

use crate::harness::{DS_A, Db, Harness};

/// The JSON Schema keywords [`check`] applies; `ANNOTATIONS` are those that constrain nothing.
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "propertyNames",
    "items",
    "minItems",
    "oneOf",
    "minimum",
    "minLength",
    "maxLength",
];
const ANNOTATIONS: &[&str] = &["description", "format", "title", "default", "examples"];

/// Checks `value` against `schema`, for the part of JSON Schema the document uses
/// ([`KEYWORDS`]); a schema with any other keyword fails the test, so that a keyword the
/// generator starts to emit is never silently taken as "anything goes". Returns what does not
/// conform.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(map) = schema.as_object() {
        for keyword in map.keys() {
            assert!(
                KEYWORDS.contains(&keyword.as_str()) || ANNOTATIONS.contains(&keyword.as_str()),
                "{at}: the checker does not know the keyword '{keyword}' of {schema}"
            );
        }
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = doc
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} does not resolve"));
        return check(doc, target, value, at, errors);
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !allowed
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"))
        {
            errors.push(format!("{at}: {actual} is not {allowed:?}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        errors.push(format!("{at}: {value} is not {expected}"));
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && value.as_f64().is_some_and(|v| v < min)
    {
        errors.push(format!("{at}: {value} < {min}"));
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
            || schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| len > m)
        {
            errors.push(format!("{at}: length {len} out of bounds"));
        }
    }
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = variants
            .iter()
            .filter(|v| {
                let mut e = Vec::new();
                check(doc, v, value, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!("{at}: matches {matching} of the oneOf variants"));
        }
    }
    if let Value::Object(map) = value {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(name) {
                errors.push(format!("{at}: '{name}' is missing"));
            }
        }
        if let Some(names) = schema.get("propertyNames") {
            for name in map.keys() {
                check(
                    doc,
                    names,
                    &Value::String(name.clone()),
                    &format!("{at}.{name}"),
                    errors,
                );
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, v) in map {
            let path = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => check(doc, s, v, &path, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{at}: '{name}' is not in the schema"));
                }
                (None, Some(extra @ Value::Object(_))) => check(doc, extra, v, &path, errors),
                (None, _) => {}
            }
        }
    }
    if let Value::Array(items) = value {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            errors.push(format!("{at}: fewer than {min} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(doc, item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
    }
}

fn assert_conforms(doc: &Value, schema: &str, value: &Value) {
    let mut errors = Vec::new();
    let schema = json!({ "$ref": format!("#/components/schemas/{schema}") });
    check(doc, &schema, value, "$", &mut errors);
    assert!(errors.is_empty(), "{schema}: {errors:#?}\n{value:#}");
}

/// Checks `value` against the schema `schema` of the document `h` serves.
pub(crate) async fn conforms(h: &Harness, schema: &str, value: &Value) {
    let doc = answer_of(h.client.get(h.url("/openapi.json"))).await;
    assert_conforms(&doc, schema, value);
}

/// Every `$ref` in the document points at something.
fn refs_resolve(doc: &Value, node: &Value) {
    match node {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                assert!(doc.pointer(r.trim_start_matches('#')).is_some(), "{r}");
            }
            map.values().for_each(|v| refs_resolve(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| refs_resolve(doc, v)),
        _ => {}
    }
}

/// Sends a request and reads its answer as JSON.
async fn answer_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn requests_and_answers_conform_to_the_openapi_schemas() {
    let h = Harness::start(Db::Sqlite).await.unwrap();
    let doc = answer_of(h.client.get(h.url("/openapi.json"))).await;
    refs_resolve(&doc, &doc);
    assert!(
        doc["components"].get("x-edge-operations").is_none(),
        "templates are not served"
    );
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.keys().filter(|p| p.starts_with("/ee/")).count(), 8);
    assert!(
        paths["/ee/{locationHint}/v1/privacy/set-consent"]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "locationHint" && p["in"] == "path")
    );

    // The checker itself refuses what does not conform.
    let mut errors = Vec::new();
    check(
        &doc,
        &json!({"$ref": "#/components/schemas/EdgeResponse"}),
        &json!({"requestId": "r", "handle": [], "extra": 1}),
        "$",
        &mut errors,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");

    // Edge: set-consent in each standard, then an invalid value, then events while out.
    let set_consent = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let v1 = json!({"consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}],
                    "query": {"identity": {"fetch": ["ECID"]}}});
    let v2 = json!({"consent": [{"standard": "Adobe", "version": "2.0",
                    "value": {"collect": {"val": "n"}, "metadata": {"time": "2024-01-01T00:00:00Z"}}}]});
    for body in [&v1, &v2] {
        assert_conforms(&doc, "SetConsentRequest", body);
        let (status, answer) = h.post_json(&set_consent, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_conforms(&doc, "EdgeResponse", &answer);
    }
    let bad =
        json!({"consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": "IN"}}]});
    let mut errors = Vec::new();
    check(
        &doc,
        &json!({"$ref": "#/components/schemas/SetConsentRequest"}),
        &bad,
        "$",
        &mut errors,
    );
    assert!(
        !errors.is_empty(),
        "the schema refuses what the server refuses"
    );
    let (status, answer) = h.post_json(&set_consent, &bad).await;
    assert!(status == 400 || status == 422, "{status}");
    assert_conforms(&doc, "EdgeError", &answer);

    let (_, answer) = h.post_json(&set_consent, &v2).await;
    let ecid = answer["handle"][0]["payload"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = json!({"events": [{"xdm": {"_id": "e-1", "eventType": "web.webpagedetails.pageViews"}}],
                        "identityMap": {"ECID": [{"id": ecid}]}});
    assert_conforms(&doc, "EventsRequest", &events);
    let (status, answer) = h
        .post_json(&format!("/ee/v1/interact?configId={DS_A}"), &events)
        .await;
    assert_eq!(status, 200);
    assert!(answer.get("warnings").is_some(), "{answer}");
    assert_conforms(&doc, "EdgeResponse", &answer);

    // Preferences: a link, the preferences API, decrypt, the profile, an API error.
    let request = json!({"profile": {"namespace": "CRMID", "id": "p-9"}, "channel": "email",
                         "scope": "identity", "address": {"value": "a@example.com", "namespace": "Email"},
                         "message": {"m": "m-1"}, "ttl_secs": 3600});
    assert_conforms(&doc, "CreateLinkRequest", &request);
    let link = answer_of(
        h.auth(h.client.post(h.url("/admin/v1/unsubscribe-links")), false)
            .json(&request),
    )
    .await;
    assert_conforms(&doc, "Link", &link);
    let query = format!(
        "params={}&pid={}&sig={}",
        link["params"].as_str().unwrap(),
        link["pid"].as_str().unwrap(),
        link["sig"].as_str().unwrap()
    );
    let prefs = json!({"marketing": [{"type": "email", "choice": "no", "scope": "channel"}]});
    assert_conforms(&doc, "PreferencesRequest", &prefs);
    let preferences = h
        .client
        .post(h.url(&format!("/imp/consent/preferences?{query}")));
    let answer = answer_of(h.auth(preferences, false).json(&prefs)).await;
    assert_conforms(&doc, "PreferencesResponse", &answer);
    let decrypt = h
        .client
        .get(h.url(&format!("/imp/consent/decrypt?{query}")));
    let answer = answer_of(h.auth(decrypt, false)).await;
    assert_conforms(&doc, "DecryptedLink", &answer);
    let profile = h.client.get(h.url("/admin/v1/profiles/CRMID/p-9"));
    let answer = answer_of(h.auth(profile, false)).await;
    assert_eq!(answer["records"].as_array().unwrap().len(), 1, "{answer}");
    assert_conforms(&doc, "Profile", &answer);
    let response = h
        .client
        .get(h.url("/admin/v1/profiles/CRMID/p-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_conforms(&doc, "ApiError", &response.json().await.unwrap());
    h.shutdown().await;
}

/// Whether `value` conforms to the schema `schema` of `doc`.
fn conforms_to(doc: &Value, schema: &str, value: &Value) -> bool {
    let mut errors = Vec::new();
    let schema = json!({ "$ref": format!("#/components/schemas/{schema}") });
    check(doc, &schema, value, "$", &mut errors);
    errors.is_empty()
}

/// Edge's request bodies are read by consent-core's parser, not by the types the schemas come
/// from: bodies that do and do not conform are sent, and the server must accept exactly those
/// the schema accepts.
#[tokio::test]
async fn the_server_accepts_exactly_the_edge_bodies_the_schemas_accept() {
    let h = Harness::start(Db::Sqlite).await.unwrap();
    let doc = answer_of(h.client.get(h.url("/openapi.json"))).await;
    let v1 = |general: Value| json!({"standard": "Adobe", "version": "1.0", "value": {"general": general}});
    let v2 = |value: Value| json!({"standard": "Adobe", "version": "2.0", "value": value});
    let tcf = |value: Value| json!({"standard": "IAB TCF", "version": "2.0", "value": value});
    let set_consent: Vec<(&str, Value)> = vec![
        ("adobe 1.0 in", json!({"consent": [v1(json!("in"))]})),
        ("adobe 1.0 out", json!({"consent": [v1(json!("out"))]})),
        (
            "adobe 1.0 with plumbing",
            json!({"consent": [v1(json!("in"))],
            "meta": {"state": {}}, "query": {"identity": {"fetch": ["ECID"]}}}),
        ),
        (
            "adobe 2.0 every field",
            json!({"consent": [v2(json!({
            "collect": {"val": "y", "time": "2024-01-01T00:00:00Z"}, "adID": {"val": "n"},
            "share": {"val": "dy"}, "personalize": {"content": {"val": "y"}},
            "marketing": {"email": {"val": "n"}}, "metadata": {"time": "2024-01-01T00:00:00Z"}}))]}),
        ),
        (
            "two objects",
            json!({"consent": [v1(json!("in")), v2(json!({"collect": {"val": "p"}}))]}),
        ),
        (
            "an identity map",
            json!({"consent": [v1(json!("in"))], "identityMap": {
            "ECID": [{"id": "12345678901234567890123456789012345678", "authenticatedState": "ambiguous"}],
            "Email": [{"id": "a@example.com", "primary": false}]}}),
        ),
        (
            "iab tcf, gdpr not applying",
            json!({"consent": [{"standard": "IAB TCF", "version": "2.0",
            "value": "CO123", "gdprApplies": false}]}),
        ),
        (
            "identity map null",
            json!({"consent": [v1(json!("in"))], "identityMap": null}),
        ),
        (
            "identity with a namespace",
            json!({"consent": [v1(json!("in"))],
            "identityMap": {"Email": [{"id": "a@example.com", "namespace": {"code": "Email"}}]}}),
        ),
        (
            "identity without id",
            json!({"consent": [v1(json!("in"))],
            "identityMap": {"Email": [{"primary": true}]}}),
        ),
        ("empty tc string", json!({"consent": [tcf(json!(""))]})),
        (
            "id null",
            json!({"consent": [v1(json!("in"))],
            "identityMap": {"Email": [{"id": null}]}}),
        ),
        (
            "identity with an unknown field",
            json!({"consent": [v1(json!("in"))],
            "identityMap": {"Email": [{"id": "a@example.com", "type": "x"}]}}),
        ),
        (
            "namespace with another field",
            json!({"consent": [v1(json!("in"))],
            "identityMap": {"Email": [{"id": "a@example.com", "namespace": {"name": "x"}}]}}),
        ),
        (
            "gdprApplies not a boolean",
            json!({"consent": [{"standard": "IAB TCF", "version": "2.0",
            "value": "CO123", "gdprApplies": "no"}]}),
        ),
        (
            "collect without val",
            json!({"consent": [v2(json!({"collect": {}}))]}),
        ),
        (
            "collect val unknown",
            json!({"consent": [v2(json!({"collect": {"val": "maybe"}}))]}),
        ),
        (
            "adobe 1.0 upper case",
            json!({"consent": [v1(json!("IN"))]}),
        ),
        (
            "adobe 1.0 extra field",
            json!({"consent": [{"standard": "Adobe", "version": "1.0",
            "value": {"general": "in"}, "extra": 1}]}),
        ),
        (
            "adobe 1.0 extra value field",
            json!({"consent": [{"standard": "Adobe", "version": "1.0",
            "value": {"general": "in", "analytics": "in"}}]}),
        ),
        (
            "adobe 2.0 unknown purpose",
            json!({"consent": [v2(json!({"analytics": {"val": "y"}}))]}),
        ),
        (
            "unknown standard",
            json!({"consent": [{"standard": "Other", "version": "1.0", "value": {}}]}),
        ),
        (
            "unknown version",
            json!({"consent": [{"standard": "Adobe", "version": "3.0", "value": {}}]}),
        ),
        (
            "no value",
            json!({"consent": [{"standard": "Adobe", "version": "1.0"}]}),
        ),
        ("no consent", json!({})),
        ("empty consent", json!({"consent": []})),
        ("consent not an array", json!({"consent": v1(json!("in"))})),
        (
            "tc string not a string",
            json!({"consent": [tcf(json!(42))]}),
        ),
        (
            "unknown authenticated state",
            json!({"consent": [v1(json!("in"))],
            "identityMap": {"Email": [{"id": "a@example.com", "authenticatedState": "maybe"}]}}),
        ),
    ];
    let url = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let mut disagreements = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (name, body) in &set_consent {
        let schema_says = conforms_to(&doc, "SetConsentRequest", body);
        let (status, answer) = h.post_json(&url, body).await;
        let server_says = status == 200;
        if server_says {
            accepted += 1;
        } else {
            assert!(status == 400 || status == 422, "{name}: {status} {answer}");
            assert_conforms(&doc, "EdgeError", &answer);
            refused += 1;
        }
        if schema_says != server_says {
            disagreements.push(format!(
                "{name}: schema {schema_says}, server {status} {answer}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert!(
        accepted >= 10 && refused >= 15,
        "{accepted} accepted, {refused} refused"
    );

    // What a schema cannot say: a TC string that does not decode conforms but is refused.
    let garbage = json!({"consent": [tcf(json!("not a tc string"))]});
    assert!(conforms_to(&doc, "SetConsentRequest", &garbage));
    let (status, _) = h.post_json(&url, &garbage).await;
    assert!(status == 400 || status == 422, "{status}");

    let granting = consent_core::consent_tcf::TcString::builder()
        .purpose_consent(1, true)
        .vendor_consent(565, true)
        .build()
        .unwrap()
        .encode();
    let with_strings = |entry: Value| json!({"events": [{"xdm": {"consentStrings": [entry]}}]});
    let events: Vec<(&str, Value)> = vec![
        ("one event", json!({"events": [{"xdm": {"_id": "x-1"}}]})),
        (
            "a tc string",
            with_strings(json!({"consentStandard": "IAB TCF",
            "consentStandardVersion": "2.0", "consentStringValue": granting,
            "gdprApplies": true, "containsPersonalData": false})),
        ),
        ("an empty consent string entry", with_strings(json!({}))),
        (
            "an empty tc string",
            with_strings(json!({"consentStandard": "IAB TCF",
            "consentStandardVersion": "2.0", "consentStringValue": ""})),
        ),
        (
            "another standard",
            with_strings(json!({"consentStandard": "IAB",
            "consentStandardVersion": "2.0", "consentStringValue": granting})),
        ),
        (
            "data only",
            json!({"events": [{"data": {"a": 1}}], "meta": {}}),
        ),
        ("no events", json!({})),
        ("empty events", json!({"events": []})),
        ("events not an array", json!({"events": {"xdm": {}}})),
    ];
    for (name, body) in &events {
        let schema_says = conforms_to(&doc, "EventsRequest", body);
        let (status, answer) = h
            .post_json(&format!("/ee/v1/interact?configId={DS_A}"), body)
            .await;
        assert_eq!(schema_says, status == 200, "{name}: {status} {answer}");
    }
    h.shutdown().await;
}
