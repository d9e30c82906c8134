//! The "unchanged consent" fingerprint: FNV-1a 32-bit over canonical JSON, as the Web SDK computes
//! it, extended so that a skipped request is really a repeat of the last one the server accepted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a 32-bit over `bytes`.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// FNV-1a 32-bit over `bytes`, as 8 lower-case hex digits.
pub fn fnv1a32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", fnv1a32(bytes))
}

/// `value` serialised as JSON with the keys of every object sorted, recursively; array order is
/// kept. This is `JSON.stringify(sortObjectKeysRecursively(value))`.
///
/// The keys are sorted here rather than relying on `serde_json`'s map order, which a
/// `preserve_order` feature enabled anywhere in a build would silently change.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The Web SDK's hash of one consent object: the object without `standard` and `version`,
/// canonicalised, FNV-1a 32-bit, 8 hex digits.
///
/// ```
/// use serde_json::json;
/// let object = json!({"standard": "Adobe", "version": "1.0", "value": {"general": "in"}});
/// assert_eq!(consent_core::hash::consent_object_hash(&object), "e385c3ab");
/// ```
pub fn consent_object_hash(object: &Value) -> String {
    let rest = match object {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| key.as_str() != "standard" && key.as_str() != "version")
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        other => other.clone(),
    };
    fnv1a32_hex(canonical_json(&rest).as_bytes())
}

/// The fingerprint of one `setConsent` call: one hash per consent object, in order, and the hash
/// of the identity map sent with it.
///
/// The Web SDK keeps one hash per `standard.version` key, so two objects of the same standard in
/// one call collapse into the first one's hash, and a call that changes standard (Adobe 1.0 "in",
/// then IAB "out", then Adobe 1.0 "in") is wrongly skipped; it also leaves the identity map out.
/// Comparing the whole fingerprint of the last accepted call fixes all three.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConsentFingerprint {
    /// One entry per consent object, in the order they were given.
    pub objects: Vec<ObjectHash>,
    /// The hash of the canonical identity map, when one was sent.
    pub identity: Option<String>,
}

/// The hash of one consent object, with the key the Web SDK stores it under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHash {
    /// `<standard>.<version>`, e.g. `Adobe.1.0`.
    pub key: String,
    /// 8 lower-case hex digits.
    pub hash: String,
}

impl ConsentFingerprint {
    /// Fingerprints a list of consent objects (as JSON) and an optional identity map.
    pub fn of(objects: &[Value], identity_map: Option<&Value>) -> Self {
        let objects = objects
            .iter()
            .map(|object| {
                let field = |name: &str| {
                    object
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                ObjectHash {
                    key: format!("{}.{}", field("standard"), field("version")),
                    hash: consent_object_hash(object),
                }
            })
            .collect();
        let identity = identity_map.map(|map| fnv1a32_hex(canonical_json(map).as_bytes()));
        Self { objects, identity }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: &str, expected: &str) {
        assert_eq!(fnv1a32_hex(input.as_bytes()), expected, "{input}");
    }

    #[test]
    fn reference_vectors() {
        check(r#"{"value":{"general":"in"}}"#, "e385c3ab");
        check(
            r#"[{"standard":"Adobe","value":{"general":"in"},"version":"1.0"}]"#,
            "10c9fc7c",
        );
        check(r#"{"value":{"general":"out"}}"#, "c9b8d236");
        check(
            r#"{"value":{"collect":{"val":"y"},"metadata":{"time":"2019-01-01T15:52:25+00:00"}}}"#,
            "d17bf16b",
        );
        check(
            r#"{"gdprApplies":true,"value":"CO052l-O052l-DGAMBFRACBgAIBAAAAAAIYgEawAQEagAAAA"}"#,
            "8452d77f",
        );
        check("", "811c9dc5");
    }

    #[test]
    fn canonical_json_sorts_keys_recursively_and_keeps_array_order() {
        let value =
            json!([{"version": "1.0", "value": {"b": 1, "a": [3, 1]}, "standard": "Adobe"}]);
        assert_eq!(
            canonical_json(&value),
            r#"[{"standard":"Adobe","value":{"a":[3,1],"b":1},"version":"1.0"}]"#
        );
        assert_eq!(
            fnv1a32_hex(
                canonical_json(
                    &json!([{"standard":"Adobe","version":"1.0","value":{"general":"in"}}])
                )
                .as_bytes()
            ),
            "10c9fc7c"
        );
    }

    #[test]
    fn object_hash_ignores_standard_and_version() {
        let a = json!({"standard": "Adobe", "version": "1.0", "value": {"general": "in"}});
        let b = json!({"value": {"general": "in"}, "version": "9", "standard": "X"});
        assert_eq!(consent_object_hash(&a), consent_object_hash(&b));
        let out = json!({"standard": "Adobe", "version": "1.0", "value": {"general": "out"}});
        assert_ne!(consent_object_hash(&a), consent_object_hash(&out));
    }

    #[test]
    fn fingerprint_keeps_every_object_and_the_identity_map() {
        let in1 = json!({"standard": "Adobe", "version": "1.0", "value": {"general": "in"}});
        let out1 = json!({"standard": "Adobe", "version": "1.0", "value": {"general": "out"}});
        let both = ConsentFingerprint::of(&[in1.clone(), out1.clone()], None);
        let swapped = ConsentFingerprint::of(&[in1.clone(), in1.clone()], None);
        assert_eq!(both.objects.len(), 2);
        assert_ne!(both, swapped, "same standard twice must not collapse");
        let with_id = ConsentFingerprint::of(
            std::slice::from_ref(&in1),
            Some(&json!({"HYP": [{"id": "a"}]})),
        );
        let other_id = ConsentFingerprint::of(
            std::slice::from_ref(&in1),
            Some(&json!({"HYP": [{"id": "b"}]})),
        );
        assert_ne!(with_id, other_id);
        assert_eq!(with_id.objects[0].key, "Adobe.1.0");
        assert_eq!(with_id.objects[0].hash, "e385c3ab");
    }
}
