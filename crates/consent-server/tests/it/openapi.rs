//! The OpenAPI document describes what the server really accepts and answers: real requests and
//! answers are checked against its schemas.

use serde_json::{Value, json};

use crate::harness::{DS_A, Db, Harness};

/// Checks `value` against `schema`, for the part of JSON Schema the document uses (`$ref`,
/// `type`, `enum`, `const`, `required`, `properties`, `additionalProperties`, `items`,
/// `minItems`, `oneOf`, `minimum`, `minLength`, `maxLength`). Returns what does not conform.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
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
