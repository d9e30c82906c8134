//! Permissions snapshots and the permissions objects that configuration and the cookie carry.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::category::{Category, MAGIC_KEYS, Registry};

/// An immutable snapshot of every category's approval, in declaration order.
///
/// Cloning is cheap (two reference counts). Subscribers receive the snapshot of the completion that
/// triggered them, so a later change never rewrites what they were given.
///
/// ```
/// use consent_optin::{Category, OptIn, OptInConfig};
///
/// let optin = OptIn::new(OptInConfig::builder().does_opt_in_apply(true).build()?);
/// optin.approve(&[Category::Target], false)?;
/// let permissions = optin.permissions();
/// assert_eq!(permissions.get(&Category::Target), Some(true));
/// assert_eq!(permissions.get(&Category::Analytics), Some(false));
/// assert_eq!(
///     permissions.to_json(),
///     r#"{"aam":false,"adcloud":false,"aa":false,"campaign":false,"ecid":false,"livefyre":false,"target":true,"mediaaa":false}"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Permissions {
    registry: Arc<Registry>,
    values: Arc<[bool]>,
}

impl Permissions {
    pub(crate) fn new(registry: Arc<Registry>, values: Arc<[bool]>) -> Permissions {
        Permissions { registry, values }
    }

    pub(crate) fn values(&self) -> &[bool] {
        &self.values
    }

    /// Whether the category is approved, or `None` when this service does not know it.
    pub fn get(&self, category: &Category) -> Option<bool> {
        self.registry
            .index_of(category)
            .map(|slot| self.values[slot])
    }

    /// The reference's `isApproved` on this snapshot: every listed category is approved; an empty
    /// list asks whether *all* categories this service knows (the eight built-ins and the registered
    /// custom ones) are approved. An unknown category is not approved. Keys that are not categories
    /// (`iabConsentHash`, the legacy `videoaa`, other configurations' keys kept in the cookie) never
    /// count, where the reference's empty-list answer depends on them (see the crate documentation).
    pub fn is_approved(&self, categories: &[Category]) -> bool {
        is_approved_in(&self.registry, &self.values, categories)
    }

    /// Every category with its approval, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&Category, bool)> + '_ {
        self.registry.all().iter().zip(self.values.iter().copied())
    }

    /// The number of categories.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always `false`: there are at least the eight built-in categories.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The JSON object the reference hands to subscribers and stores in the cookie, keys in
    /// declaration order.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (category, approved)) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, category.as_str());
            out.push(':');
            out.push_str(if approved { "true" } else { "false" });
        }
        out.push('}');
        out
    }
}

#[inline]
pub(crate) fn is_approved_in(
    registry: &Registry,
    values: &[bool],
    categories: &[Category],
) -> bool {
    if categories.is_empty() {
        return values.iter().all(|approved| *approved);
    }
    categories
        .iter()
        .all(|category| registry.index_of(category).is_some_and(|slot| values[slot]))
}

impl PartialEq for Permissions {
    fn eq(&self, other: &Permissions) -> bool {
        self.registry == other.registry && self.values == other.values
    }
}

impl Eq for Permissions {}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(category, approved)| (category.as_str(), approved)),
            )
            .finish()
    }
}

impl Serialize for Permissions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (category, approved) in self.iter() {
            map.serialize_entry(category.as_str(), &approved)?;
        }
        map.end()
    }
}

/// A permissions object as configuration accepts it: the reference takes an object or a JSON string.
///
/// Keys are wire values (`"aa"`), checked when the service is constructed, so an invalid object is a
/// recorded [`Warning`](crate::Warning), as in the reference, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PermissionsInput {
    /// Category values and approvals, such as `[("aa", true)]`.
    Map(Vec<(String, bool)>),
    /// A JSON object such as `{"aa":true}`.
    Json(String),
}

impl PermissionsInput {
    /// A map input from typed categories.
    pub fn from_categories(
        entries: impl IntoIterator<Item = (Category, bool)>,
    ) -> PermissionsInput {
        PermissionsInput::Map(
            entries
                .into_iter()
                .map(|(category, approved)| (category.as_str().to_owned(), approved))
                .collect(),
        )
    }

    pub(crate) fn to_object(&self) -> Result<JsonObject, serde_json::Error> {
        match self {
            PermissionsInput::Map(entries) => Ok(JsonObject(
                entries
                    .iter()
                    .map(|(key, approved)| (key.clone(), Value::Bool(*approved)))
                    .collect(),
            )),
            PermissionsInput::Json(text) => serde_json::from_str(text),
        }
    }
}

/// Why a permissions object was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// No key at all (`{}`), or only the reference's magic keys.
    NoCategory,
    /// A key that is neither a registered category nor a magic key.
    UnknownKey(String),
    /// A category whose value is not a boolean.
    NotBoolean(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NoCategory => f.write_str("it names no category"),
            Invalid::UnknownKey(key) => write!(f, "{key:?} is not a category"),
            Invalid::NotBoolean(key) => write!(f, "the value of {key:?} is not a boolean"),
        }
    }
}

/// A permissions object read key by key: what it says about each category, and what the strict
/// rule of [`Reading::check`] thinks of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reading {
    /// One optional approval per slot: every registered category whose value is a boolean.
    pub(crate) slots: Vec<Option<bool>>,
    /// The first key, in the object's order, that makes the object invalid under the strict rule
    /// (an unknown key or a category whose value is not a boolean).
    pub(crate) problem: Option<Invalid>,
    /// Every category whose value is not a boolean, in the object's order.
    pub(crate) not_boolean: Vec<String>,
    /// Whether the object has at least one key and every value, the magic keys' included, is
    /// `true`: the reference's `isApproved()` without arguments over the raw object.
    pub(crate) every_value_true: bool,
}

impl Reading {
    /// Whether at least one category was read.
    pub(crate) fn names_a_category(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }

    /// The strict rule for `previousPermissions` and `preOptInApprovals`: no unknown key, only
    /// boolean category values, at least one category. Stricter than the reference on purpose: a
    /// non-boolean category value or an object with only magic keys is invalid (the reference took
    /// both, the latter as "complete"). The cookie is not held to it: it is read key by key.
    pub(crate) fn check(&self) -> Result<(), Invalid> {
        match &self.problem {
            Some(problem) => Err(problem.clone()),
            None if self.names_a_category() => Ok(()),
            None => Err(Invalid::NoCategory),
        }
    }
}

/// Reads every key of a permissions object: registered categories with a boolean value are
/// taken, everything else is noted and skipped.
pub(crate) fn read(registry: &Registry, object: &JsonObject) -> Reading {
    let mut reading = Reading {
        slots: vec![None; registry.len()],
        problem: None,
        not_boolean: Vec::new(),
        every_value_true: !object.0.is_empty(),
    };
    for (key, value) in &object.0 {
        reading.every_value_true &= *value == Value::Bool(true);
        match registry.index_of_value(key) {
            Some(slot) => match value {
                Value::Bool(approved) => reading.slots[slot] = Some(*approved),
                _ => {
                    reading
                        .problem
                        .get_or_insert_with(|| Invalid::NotBoolean(key.clone()));
                    reading.not_boolean.push(key.clone());
                }
            },
            None if MAGIC_KEYS.contains(&key.as_str()) => {}
            None => {
                reading
                    .problem
                    .get_or_insert_with(|| Invalid::UnknownKey(key.clone()));
            }
        }
    }
    reading
}

/// A JSON object that keeps its key order, which the cookie needs (the workspace's `serde_json` has
/// no `preserve_order`, and turning it on would change every other crate's maps).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct JsonObject(pub(crate) Vec<(String, Value)>);

impl JsonObject {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `Object.assign(self, other)`: existing keys keep their place, new keys go last.
    pub(crate) fn assign(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// Removes a key, if present (`delete object[key]`).
    pub(crate) fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    pub(crate) fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, key);
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }
}

fn push_json_string(out: &mut String, text: &str) {
    out.push_str(&Value::String(text.to_owned()).to_string());
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonObject, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = JsonObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
                let mut object = JsonObject::default();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    // A repeated key behaves as in `JSON.parse`: the last one wins, in the first place.
                    object.assign(&key, value);
                }
                Ok(object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::CustomCategory;

    fn registry() -> Registry {
        Registry::new(&[])
    }

    fn check(json: &str, expected: Result<Vec<(usize, bool)>, Invalid>) {
        let object: JsonObject = serde_json::from_str(json).unwrap();
        let reading = read(&registry(), &object);
        let got = reading.check().map(|()| {
            reading
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, expected, "{json}");
    }

    #[test]
    fn evaluates_permissions_objects() {
        check(r#"{"aa":true}"#, Ok(vec![(2, true)]));
        check(
            r#"{"aa":false,"aam":true}"#,
            Ok(vec![(0, true), (2, false)]),
        );
        check(r#"{"aa":true,"iabConsentHash":"abc"}"#, Ok(vec![(2, true)]));
        check(r#"{"videoaa":true,"ecid":true}"#, Ok(vec![(4, true)]));
        check("{}", Err(Invalid::NoCategory));
        check(r#"{"iabConsentHash":"abc"}"#, Err(Invalid::NoCategory));
        check(r#"{"foo":true}"#, Err(Invalid::UnknownKey("foo".into())));
        check(
            r#"{"ANALYTICS":true}"#,
            Err(Invalid::UnknownKey("ANALYTICS".into())),
        );
        check(r#"{"aa":"true"}"#, Err(Invalid::NotBoolean("aa".into())));
    }

    #[test]
    fn reads_key_by_key() {
        let read_json = |json: &str| read(&registry(), &serde_json::from_str(json).unwrap());
        let reading =
            read_json(r#"{"zzz":1,"aa":false,"target":"yes","iabConsentHash":"x","ecid":true}"#);
        let taken: Vec<(usize, bool)> = reading
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .collect();
        assert_eq!(taken, [(2, false), (4, true)]);
        assert_eq!(reading.problem, Some(Invalid::UnknownKey("zzz".into())));
        assert_eq!(reading.not_boolean, ["target"]);
        assert!(!reading.every_value_true);
        assert!(read_json(r#"{"aa":true,"videoaa":true}"#).every_value_true);
        assert!(!read_json(r#"{"aa":true,"videoaa":false}"#).every_value_true);
        assert!(!read_json("{}").every_value_true);
    }

    #[test]
    fn json_object_keeps_key_order_and_assigns_like_object_assign() {
        let mut object: JsonObject = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(object.to_json(), r#"{"b":3,"a":2}"#);
        object.assign("a", Value::Bool(true));
        object.assign("c", Value::String("x\"y".into()));
        assert_eq!(object.to_json(), r#"{"b":3,"a":true,"c":"x\"y"}"#);
        assert_eq!(object.get("c"), Some(&Value::String("x\"y".into())));
        object.remove("b");
        object.remove("nope");
        assert_eq!(object.to_json(), r#"{"a":true,"c":"x\"y"}"#);
    }

    #[test]
    fn snapshot_reports_custom_categories_and_unknown_ones() {
        let registry = Arc::new(Registry::new(&[CustomCategory::new("chat")]));
        let mut values = vec![true; registry.len()];
        values[1] = false;
        let permissions = Permissions::new(registry, values.into());
        assert_eq!(permissions.get(&Category::custom("chat")), Some(true));
        assert_eq!(permissions.get(&Category::custom("nope")), None);
        assert!(!permissions.is_approved(&[]));
        assert!(permissions.is_approved(&[Category::Aam, Category::custom("chat")]));
        assert!(!permissions.is_approved(&[Category::Aam, Category::custom("nope")]));
        assert!(!permissions.is_approved(&[Category::AdCloud]));
        assert!(
            permissions
                .to_json()
                .ends_with(r#""mediaaa":true,"chat":true}"#)
        );
        assert_eq!(
            serde_json::to_string(&permissions).unwrap(),
            permissions.to_json()
        );
    }
}
