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
//! # What is guaranteed
//!
//! The details are on [`OptIn`]; in short:
//! - **Order.** One thread delivers completions at a time, in the order they changed the state. A
//!   subscriber, one-shot callback, future or watch receives exactly the completions that changed
//!   the state after it registered, each once, and the first call of
//!   [`OptIn::subscribe_permissions`] takes its place among them: a completion on another thread
//!   never overtakes it and it never overtakes one. So the last call a subscriber received is the
//!   state in force.
//! - **Unsubscribing.** A dropped [`Subscription`] is not called again, not even by a delivery under
//!   way.
//! - **Isolation.** Every call into foreign code (subscribers, one-shot callbacks, wakers, the cookie
//!   jar's `get`, `set` and `accepts_domain`) runs outside the service's locks and behind
//!   `catch_unwind`: a panic loses that one call, is recorded as a [`Warning`], and the other calls
//!   and later deliveries go on. Nothing foreign is dropped under a lock either.
//! - **The cookie.** The visitor's stored choices are never lost to a key this service does not
//!   know (such keys are kept as they are), and when opt-in applies a stored denial always wins
//!   over `preOptInApprovals` and `previousPermissions`.
//!
//! # Where it differs from the reference
//!
//! Where the reference (VisitorAPI.js 5.x) has quirks, this crate fixes them:
//! - choices staged with `wait_for_complete` stay invisible until [`OptIn::complete`] (the reference
//!   aliased its staged and live objects after the first completion);
//! - dropping a [`Subscription`] removes exactly that subscriber, at once (the reference removed by
//!   an index captured at subscription time);
//! - a panicking subscriber stops neither the other subscribers, nor the cookie write, nor the
//!   one-shot callbacks, nor later completions (a throwing subscriber aborted all of these for its
//!   completion in the reference);
//! - an invalid `previousPermissions` or `preOptInApprovals` is ignored (the reference logged it and
//!   merged it anyway), except that the denials in an invalid `previousPermissions` still apply, so
//!   that `preOptInApprovals` never approves what the visitor denied; a non-boolean value or an
//!   object holding only `iabConsentHash` is invalid rather than "complete";
//! - the cookie is read key by key: the categories this service knows are read, a key it does not
//!   know (a custom category of another configuration sharing the cookie, or one this
//!   configuration no longer registers) is kept as it is at the next write, and a category whose
//!   value is not a boolean is skipped with a warning (the reference took a cookie with an unknown
//!   key as invalid, so it stayed pending, and the crate before this one ignored such a cookie
//!   whole, which let `preOptInApprovals` override the visitor's stored denials);
//! - [`OptIn::is_approved`] with an empty list asks whether every category this service knows is
//!   approved; keys that are not categories never count. The reference looks at every key its
//!   permissions object received, so its answer is `false` for good once the cookie holds
//!   `iabConsentHash` (a string), or a legacy `videoaa: false`, even after `approveAll()`: no
//!   solution can ask about those keys, so here they decide nothing;
//! - a new TC string given to [`OptIn::apply_tcf`] is evaluated again (the reference read the CMP
//!   once per page);
//! - unknown categories are typed errors ([`CategoryError`]) that change nothing, never panics.
//!
//! Custom categories, which the reference does not have, are kept in a cookie of their own,
//! [`CUSTOM_COOKIE_NAME`], not in `adobeujs-optin`: VisitorAPI.js reads `adobeujs-optin` as invalid
//! when a key is neither one of its eight categories nor `videoaa` or `iabConsentHash`, and would
//! stay pending on every page that shares the cookie. A custom category that an older release of
//! this crate wrote into `adobeujs-optin` is still read, and moved out at the next write.
//!
//! Kept as in the reference: with `does_opt_in_apply` false the status still starts
//! [`Status::Pending`]; `approve_all`/`deny_all` complete at once; the IAB hash is memoised in the
//! cookie jar even when `is_opt_in_storage_enabled` is false; [`OptIn::is_pre_approved`] with an
//! empty list is true when every value of the `preOptInApprovals` object, the magic keys' included,
//! is `true` (so `{"aa": true}` is "all pre-approved" and `{"aa": true, "videoaa": false}` is not).
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
    COOKIE_NAME, CUSTOM_COOKIE_NAME, CookieExpiry, CookieWrite, DEFAULT_STORAGE_EXPIRY_SECS,
    MemoryStorage, OptInStorage, StorageError, StorageExpiry, StoredCookie,
};
