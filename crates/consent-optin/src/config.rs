//! Configuration of the Opt-in Service.

use std::fmt;
use std::sync::Arc;

use crate::category::{Category, CustomCategory, MAGIC_KEYS};
use crate::permissions::PermissionsInput;
use crate::storage::{OptInStorage, StorageExpiry};

/// A configuration value given at once or as a closure that the service calls exactly once, when it
/// is constructed (the reference's "boolean or function that evaluates to a boolean").
pub(crate) enum Lazy<T> {
    Value(T),
    With(Box<dyn FnOnce() -> T + Send>),
}

impl<T> Lazy<T> {
    pub(crate) fn evaluate(self) -> T {
        match self {
            Lazy::Value(value) => value,
            Lazy::With(f) => f(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lazy::Value(value) => value.fmt(f),
            Lazy::With(_) => f.write_str("<closure>"),
        }
    }
}

/// The configuration of an [`OptIn`](crate::OptIn), made with [`OptInConfig::builder`].
///
/// The default configuration is the reference's: opt-in does not apply, no storage.
#[derive(Debug)]
pub struct OptInConfig {
    pub(crate) does_opt_in_apply: Lazy<bool>,
    pub(crate) pre_opt_in_approvals: Option<PermissionsInput>,
    pub(crate) previous_permissions: Option<Lazy<PermissionsInput>>,
    pub(crate) is_opt_in_storage_enabled: bool,
    pub(crate) opt_in_cookie_domain: Option<String>,
    pub(crate) cookie_domain: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) opt_in_storage_expiry: StorageExpiry,
    pub(crate) secure_cookie: bool,
    pub(crate) is_iab_context: bool,
    pub(crate) custom_categories: Vec<CustomCategory>,
    pub(crate) storage: Option<Arc<dyn OptInStorage>>,
}

impl Default for OptInConfig {
    fn default() -> OptInConfig {
        OptInConfig {
            does_opt_in_apply: Lazy::Value(false),
            pre_opt_in_approvals: None,
            previous_permissions: None,
            is_opt_in_storage_enabled: false,
            opt_in_cookie_domain: None,
            cookie_domain: None,
            host: None,
            opt_in_storage_expiry: StorageExpiry::default(),
            secure_cookie: false,
            is_iab_context: false,
            custom_categories: Vec::new(),
            storage: None,
        }
    }
}

impl OptInConfig {
    /// A builder starting from the default configuration.
    pub fn builder() -> OptInConfigBuilder {
        OptInConfigBuilder {
            config: OptInConfig::default(),
            custom_names: Vec::new(),
        }
    }
}

/// Builds an [`OptInConfig`]; [`build`](OptInConfigBuilder::build) checks what can be checked
/// without running the closures.
///
/// ```
/// use std::sync::Arc;
/// use consent_optin::{Category, MemoryStorage, OptIn, OptInConfig, PermissionsInput};
///
/// let config = OptInConfig::builder()
///     .does_opt_in_apply_with(|| true) // evaluated once, by `OptIn::new`
///     .pre_opt_in_approvals(PermissionsInput::Json(r#"{"aa":true}"#.into()))
///     .previous_permissions_with(|| PermissionsInput::from_categories([(Category::Target, true)]))
///     .opt_in_storage(Arc::new(MemoryStorage::new()))
///     .is_opt_in_storage_enabled(true)
///     .host("www.example.com")
///     .custom_category("chat")
///     .build()?;
/// let optin = OptIn::new(config);
/// assert!(optin.is_approved(&[Category::Analytics, Category::Target]));
/// assert!(!optin.is_approved(&[Category::custom("chat")]));
/// # Ok::<(), consent_optin::ConfigError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct OptInConfigBuilder {
    config: OptInConfig,
    custom_names: Vec<String>,
}

impl OptInConfigBuilder {
    /// `doesOptInApply`: whether categories start denied and wait for approval (`true`) or start
    /// approved (`false`, the default).
    pub fn does_opt_in_apply(mut self, applies: bool) -> Self {
        self.config.does_opt_in_apply = Lazy::Value(applies);
        self
    }

    /// `doesOptInApply` as a closure, called once when the service is constructed.
    pub fn does_opt_in_apply_with(mut self, f: impl FnOnce() -> bool + Send + 'static) -> Self {
        self.config.does_opt_in_apply = Lazy::With(Box::new(f));
        self
    }

    /// `preOptInApprovals`: the organisation's defaults, applied under the visitor's own choices.
    pub fn pre_opt_in_approvals(mut self, approvals: PermissionsInput) -> Self {
        self.config.pre_opt_in_approvals = Some(approvals);
        self
    }

    /// `previousPermissions`: the visitor's earlier choices, for example from a CMP.
    pub fn previous_permissions(mut self, permissions: PermissionsInput) -> Self {
        self.config.previous_permissions = Some(Lazy::Value(permissions));
        self
    }

    /// `previousPermissions` as a closure, called once when the service is constructed.
    pub fn previous_permissions_with(
        mut self,
        f: impl FnOnce() -> PermissionsInput + Send + 'static,
    ) -> Self {
        self.config.previous_permissions = Some(Lazy::With(Box::new(f)));
        self
    }

    /// `isOptInStorageEnabled`: read the `adobeujs-optin` cookie at construction and write it at
    /// every completion. Needs [`opt_in_storage`](Self::opt_in_storage).
    pub fn is_opt_in_storage_enabled(mut self, enabled: bool) -> Self {
        self.config.is_opt_in_storage_enabled = enabled;
        self
    }

    /// The cookie jar behind the opt-in cookie. Without one nothing is read or written, not even the
    /// IAB hash.
    pub fn opt_in_storage(mut self, storage: Arc<dyn OptInStorage>) -> Self {
        self.config.storage = Some(storage);
        self
    }

    /// `optInCookieDomain`: the cookie's domain. A domain equal to the host gives a host-only cookie.
    pub fn opt_in_cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.config.opt_in_cookie_domain = Some(domain.into());
        self
    }

    /// Visitor's `cookieDomain`, the fallback when `optInCookieDomain` is not set.
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.config.cookie_domain = Some(domain.into());
        self
    }

    /// The host of the page or app (`location.hostname`); without an explicit domain the cookie goes
    /// to the shortest suffix of it that the jar accepts.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.config.host = Some(host.into());
        self
    }

    /// `optInStorageExpiry`: the cookie's lifetime, 34,190,000 seconds by default.
    pub fn opt_in_storage_expiry(mut self, expiry: StorageExpiry) -> Self {
        self.config.opt_in_storage_expiry = expiry;
        self
    }

    /// `secureCookie` (Visitor 5.5): set the `Secure` attribute on the cookie.
    pub fn secure_cookie(mut self, secure: bool) -> Self {
        self.config.secure_cookie = secure;
        self
    }

    /// `isIabContext`: with `does_opt_in_apply`, `aam` and `ecid` follow the TC string given to
    /// [`OptIn::apply_tcf`](crate::OptIn::apply_tcf).
    pub fn is_iab_context(mut self, iab: bool) -> Self {
        self.config.is_iab_context = iab;
        self
    }

    /// Registers a custom category, placed after the built-ins in registration order.
    pub fn custom_category(mut self, name: impl Into<String>) -> Self {
        self.custom_names.push(name.into());
        self
    }

    /// Checks the configuration.
    pub fn build(mut self) -> Result<OptInConfig, ConfigError> {
        for name in self.custom_names {
            if name.is_empty() {
                return Err(ConfigError::EmptyCategory);
            }
            if Category::from_builtin(&name).is_some() || MAGIC_KEYS.contains(&name.as_str()) {
                return Err(ConfigError::ReservedCategory(name));
            }
            if self
                .config
                .custom_categories
                .iter()
                .any(|known| known.as_str() == name)
            {
                return Err(ConfigError::DuplicateCategory(name));
            }
            self.config
                .custom_categories
                .push(CustomCategory::new(name));
        }
        if self.config.is_opt_in_storage_enabled && self.config.storage.is_none() {
            return Err(ConfigError::StorageWithoutBackend);
        }
        Ok(self.config)
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A custom category with an empty name.
    #[error("a custom category needs a non-empty name")]
    EmptyCategory,
    /// A custom category named like a built-in category or a reserved key of the cookie.
    #[error("{0:?} is a built-in category or a reserved key and cannot be a custom category")]
    ReservedCategory(String),
    /// The same custom category registered twice.
    #[error("the custom category {0:?} is registered twice")]
    DuplicateCategory(String),
    /// `is_opt_in_storage_enabled` without a cookie jar.
    #[error("is_opt_in_storage_enabled needs a cookie jar (opt_in_storage)")]
    StorageWithoutBackend,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(builder: OptInConfigBuilder, expected: Result<(), ConfigError>) {
        assert_eq!(builder.build().map(|_| ()), expected);
    }

    #[test]
    fn build_refuses_bad_custom_categories_and_storage_without_a_jar() {
        check(OptInConfig::builder(), Ok(()));
        check(OptInConfig::builder().custom_category("chat"), Ok(()));
        check(
            OptInConfig::builder().custom_category(""),
            Err(ConfigError::EmptyCategory),
        );
        for reserved in ["aa", "mediaaa", "videoaa", "iabConsentHash"] {
            check(
                OptInConfig::builder().custom_category(reserved),
                Err(ConfigError::ReservedCategory(reserved.into())),
            );
        }
        check(
            OptInConfig::builder()
                .custom_category("chat")
                .custom_category("chat"),
            Err(ConfigError::DuplicateCategory("chat".into())),
        );
        check(
            OptInConfig::builder().is_opt_in_storage_enabled(true),
            Err(ConfigError::StorageWithoutBackend),
        );
    }

    #[test]
    fn closures_run_only_when_evaluated() {
        let config = OptInConfig::builder()
            .does_opt_in_apply_with(|| true)
            .build()
            .unwrap();
        assert_eq!(format!("{:?}", config.does_opt_in_apply), "<closure>");
        assert!(config.does_opt_in_apply.evaluate());
    }
}
