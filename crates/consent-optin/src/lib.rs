//! The Opt-in Service: per-category approvals with a completion workflow and subscriptions, after
//! Adobe's `adobe.optIn` (Visitor API 5.x).
//!
//! Solutions (Analytics, Target, the ECID service, …) ask [`OptIn::is_approved`] before they create
//! cookies or make calls, and subscribe to changes with [`OptIn::on_complete`],
//! [`OptIn::fetch_permissions`], [`OptIn::changes`] or [`OptIn::wait_for`]. A site or app gives
//! choices at once ([`OptIn::approve`]) or in sequence (`wait_for_complete`, then
//! [`OptIn::complete`]), applies organisation defaults (`preOptInApprovals`) and earlier choices
//! (`previousPermissions`), and may keep choices in the `adobeujs-optin` cookie through the
//! [`OptInStorage`] trait. With an IAB TCF context, [`OptIn::apply_tcf`] lets a TC string (through
//! the [`TcfSignal`] trait) decide `aam` and `ecid`.
//!
//! The service is `Send + Sync` and needs no async runtime: every method is synchronous, and the
//! futures it returns are plain [`Future`]s woken with std `Waker`s. It reads
//! no clock: the cookie jar turns a lifetime into an expiry date.
//!
//! Where the reference (VisitorAPI.js 5.x) has quirks, this crate fixes them:
//! - choices staged with `wait_for_complete` stay invisible until [`OptIn::complete`] (the reference
//!   aliased its staged and live objects after the first completion);
//! - dropping a [`Subscription`] removes exactly that subscriber (the reference removed by an index
//!   captured at subscription time);
//! - a panicking subscriber stops neither the other subscribers, nor the cookie write, nor the
//!   one-shot callbacks; it is recorded as a [`Warning`];
//! - an invalid `previousPermissions`, `preOptInApprovals` or cookie is ignored whole (the reference
//!   logged it and merged it anyway), and a non-boolean value or an object holding only
//!   `iabConsentHash` is invalid rather than "complete";
//! - a new TC string given to [`OptIn::apply_tcf`] is evaluated again (the reference read the CMP
//!   once per page);
//! - unknown categories are typed errors ([`CategoryError`]) that change nothing, never panics.
//!
//! Kept as in the reference: with `does_opt_in_apply` false the status still starts
//! [`Status::Pending`]; `approve_all`/`deny_all` complete at once; the IAB hash is memoised in the
//! cookie jar even when `is_opt_in_storage_enabled` is false.
//!
//! ```
//! use std::sync::Arc;
//! use consent_optin::{Category, MemoryStorage, OptIn, OptInConfig, PermissionsInput, Status};
//!
//! let jar = Arc::new(MemoryStorage::new());
//! let config = OptInConfig::builder()
//!     .does_opt_in_apply(true)
//!     .pre_opt_in_approvals(PermissionsInput::from_categories([(Category::Analytics, true)]))
//!     .opt_in_storage(jar.clone())
//!     .is_opt_in_storage_enabled(true)
//!     .host("www.example.com")
//!     .build()?;
//! let optin = OptIn::new(config);
//! assert_eq!(optin.status(), Status::Pending);
//! assert!(optin.is_approved(&[Category::Analytics])); // pre-approved by the organisation
//! assert!(!optin.is_approved(&[Category::Target]));
//!
//! let _subscription = optin.on_complete(|permissions| {
//!     println!("choices complete: {}", permissions.to_json());
//! });
//! optin.approve(&[Category::Target], false)?;
//! assert!(optin.is_approved(&[Category::Analytics, Category::Target]));
//! assert_eq!(jar.cookie("adobeujs-optin").and_then(|c| c.domain).as_deref(), Some("example.com"));
//!
//! // The next start reads the cookie back.
//! let config = OptInConfig::builder()
//!     .does_opt_in_apply(true)
//!     .opt_in_storage(jar)
//!     .is_opt_in_storage_enabled(true)
//!     .build()?;
//! let restarted = OptIn::new(config);
//! assert_eq!(restarted.status(), Status::Complete);
//! assert!(restarted.is_approved(&[Category::Target]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod category;
mod config;
mod iab;
mod optin;
mod permissions;
mod storage;

pub use category::{Category, CustomCategory};
pub use config::{ConfigError, OptInConfig, OptInConfigBuilder};
pub use iab::{
    ADOBE_VENDOR_ID, ApplyTcfError, DecodedTcString, IAB_CONSENT_HASH_KEY, IabOutcome,
    REQUIRED_PURPOSES, TCF_CATEGORIES, TcfSignal, crc32, iab_consent_hash, tcf_approves,
};
pub use optin::{
    CategoryError, Changes, FetchPermissions, NextChange, OptIn, Status, Subscription, WaitFor,
    Warning,
};
pub use permissions::{Permissions, PermissionsInput};
pub use storage::{
    COOKIE_NAME, CookieExpiry, CookieWrite, DEFAULT_STORAGE_EXPIRY_SECS, MemoryStorage,
    OptInStorage, StorageError, StorageExpiry, StoredCookie,
};
