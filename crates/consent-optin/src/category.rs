//! Opt-in categories: the eight of the reference plus custom ones registered at construction.

use std::fmt;
use std::sync::Arc;

/// The values the reference accepts in stored or passed permissions objects without being categories:
/// `videoaa` is a legacy category and `iabConsentHash` is where the IAB part memoises its hash.
pub(crate) const MAGIC_KEYS: [&str; 2] = ["videoaa", "iabConsentHash"];

/// A solution whose cookies and calls the Opt-in Service gates (`adobe.OptInCategories`).
///
/// APIs take and return categories; on the wire (the storage cookie, JSON inputs) a category is its
/// value, such as `"aa"` for [`Category::Analytics`], never its key name (`"ANALYTICS"`).
///
/// ```
/// use consent_optin::Category;
///
/// assert_eq!(Category::Analytics.as_str(), "aa");
/// assert_eq!(Category::from_builtin("mediaaa"), Some(Category::MediaAnalytics));
/// assert_eq!(Category::from_builtin("ANALYTICS"), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// Audience Manager, `aam`.
    Aam,
    /// Advertising Cloud, `adcloud`.
    AdCloud,
    /// Analytics, `aa`.
    Analytics,
    /// Campaign, `campaign`.
    Campaign,
    /// The Experience Cloud ID service, `ecid`.
    Ecid,
    /// Livefyre, `livefyre`.
    Livefyre,
    /// Target, `target`.
    Target,
    /// Media Analytics, `mediaaa` (the reference's key is `MEDIA_ANALYTICS`).
    MediaAnalytics,
    /// A category registered with [`OptInConfigBuilder::custom_category`](crate::OptInConfigBuilder::custom_category).
    Custom(CustomCategory),
}

/// The name of a custom category; build one with [`Category::custom`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomCategory(Arc<str>);

impl CustomCategory {
    pub(crate) fn new(name: impl Into<Arc<str>>) -> CustomCategory {
        CustomCategory(name.into())
    }

    /// The wire value of the category.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CustomCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Category {
    /// The eight built-in categories in declaration order, which is also the key order of the cookie.
    pub const BUILTIN: [Category; 8] = [
        Category::Aam,
        Category::AdCloud,
        Category::Analytics,
        Category::Campaign,
        Category::Ecid,
        Category::Livefyre,
        Category::Target,
        Category::MediaAnalytics,
    ];

    /// A custom category with this wire value. It is only usable with an [`OptIn`](crate::OptIn) whose
    /// configuration registered it; elsewhere it is an unknown category.
    pub fn custom(name: impl Into<Arc<str>>) -> Category {
        Category::Custom(CustomCategory(name.into()))
    }

    /// The wire value, such as `"aa"`.
    pub fn as_str(&self) -> &str {
        match self {
            Category::Aam => "aam",
            Category::AdCloud => "adcloud",
            Category::Analytics => "aa",
            Category::Campaign => "campaign",
            Category::Ecid => "ecid",
            Category::Livefyre => "livefyre",
            Category::Target => "target",
            Category::MediaAnalytics => "mediaaa",
            Category::Custom(custom) => custom.as_str(),
        }
    }

    /// The built-in category with this wire value. Key names (`"ANALYTICS"`) and the legacy
    /// `"videoaa"` are not categories.
    pub fn from_builtin(value: &str) -> Option<Category> {
        Category::BUILTIN
            .iter()
            .find(|category| category.as_str() == value)
            .cloned()
    }

    /// The position of a built-in category in [`Category::BUILTIN`].
    pub(crate) fn builtin_index(&self) -> Option<usize> {
        Some(match self {
            Category::Aam => 0,
            Category::AdCloud => 1,
            Category::Analytics => 2,
            Category::Campaign => 3,
            Category::Ecid => 4,
            Category::Livefyre => 5,
            Category::Target => 6,
            Category::MediaAnalytics => 7,
            Category::Custom(_) => return None,
        })
    }
}

impl fmt::Debug for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Category::Custom(custom) => write!(f, "Custom({custom:?})"),
            builtin => write!(f, "{}", builtin.as_str()),
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The categories one [`OptIn`](crate::OptIn) knows: the built-ins, then custom ones in registration
/// order. A category's position here is its slot in every permissions vector.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Registry {
    all: Box<[Category]>,
}

impl Registry {
    pub(crate) fn new(custom: &[CustomCategory]) -> Registry {
        let all = Category::BUILTIN
            .iter()
            .cloned()
            .chain(custom.iter().cloned().map(Category::Custom))
            .collect();
        Registry { all }
    }

    pub(crate) fn all(&self) -> &[Category] {
        &self.all
    }

    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// The registered custom categories, after the built-ins.
    pub(crate) fn custom(&self) -> &[Category] {
        &self.all[Category::BUILTIN.len()..]
    }

    /// The slot of a category, or `None` when it is not registered. Built-ins need no search, which
    /// keeps `is_approved` cheap.
    #[inline]
    pub(crate) fn index_of(&self, category: &Category) -> Option<usize> {
        match category {
            Category::Custom(custom) => self.all[Category::BUILTIN.len()..]
                .iter()
                .position(|known| matches!(known, Category::Custom(k) if k == custom))
                .map(|i| i + Category::BUILTIN.len()),
            builtin => builtin.builtin_index(),
        }
    }

    /// The slot of a wire value, or `None` when it names no registered category.
    pub(crate) fn index_of_value(&self, value: &str) -> Option<usize> {
        self.all.iter().position(|known| known.as_str() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip_in_declaration_order() {
        let values: Vec<&str> = Category::BUILTIN.iter().map(Category::as_str).collect();
        assert_eq!(
            values,
            [
                "aam", "adcloud", "aa", "campaign", "ecid", "livefyre", "target", "mediaaa"
            ]
        );
        for (i, category) in Category::BUILTIN.iter().enumerate() {
            assert_eq!(
                Category::from_builtin(category.as_str()).as_ref(),
                Some(category)
            );
            assert_eq!(category.builtin_index(), Some(i));
        }
    }

    #[test]
    fn registry_places_custom_categories_after_the_builtins() {
        let registry = Registry::new(&[CustomCategory("chat".into())]);
        assert_eq!(registry.len(), 9);
        assert_eq!(registry.index_of(&Category::custom("chat")), Some(8));
        assert_eq!(registry.index_of(&Category::custom("other")), None);
        assert_eq!(registry.index_of_value("chat"), Some(8));
        assert_eq!(registry.index_of_value("aa"), Some(2));
        assert_eq!(registry.index_of_value("videoaa"), None);
    }
}
