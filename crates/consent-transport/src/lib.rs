//! The Edge protocol over HTTP: `interact`, `collect`, `privacy/set-consent` and
//! `identity/acquire` requests with typed bodies, retries with capped exponential backoff and full
//! jitter, and a cookie jar (a [`cookie_store::CookieStore`], the one `consent-store` persists)
//! whose writes the consent engine decides.
//!
//! # Who writes cookies
//!
//! The transport never writes a cookie on its own. The cookies a server asks for, as
//! `state:store` handles or `Set-Cookie` headers, come back in [`EdgeReply::cookies`] (or
//! [`SendError::cookies`] for a failed answer) as [`consent_core::Cookie`] values; the driver hands
//! them to the engine in [`consent_core::Input::Response`], and the engine emits
//! [`consent_core::Action::StoreCookie`] only for those consent allows (the consent cookie always;
//! the identity and cluster cookies only while consent is "in"). The driver applies those actions
//! with [`Transport::apply`]. reqwest is built without a cookie store, so no header can bypass this.
//!
//! Requests carry the jar's cookies for the server, in `meta.state.entries` and in a `Cookie`
//! header; the cluster cookie gives the location hint in the URL.
//!
//! # Example
//!
//! An answer asks for the identity cookie while consent is out: the engine refuses it, so the jar
//! stays empty.
//!
//! ```
//! use consent_core::*;
//! use consent_transport::{CookieJar, EdgeResponse, StateStoreItem};
//!
//! let mut engine = Engine::new(Config::new("ORG@AdobeOrg").default_consent(DefaultConsent::Out));
//! let now = Timestamp::from_millis(0);
//! engine.handle(now, Input::Start(Stored::default()))?;
//! let body = r#"{"handle": [{"type": "state:store", "payload": [
//!     {"key": "kndctr_ORG_AdobeOrg_identity", "value": "ECID", "maxAge": 34128000}]}]}"#;
//! let answer: EdgeResponse = serde_json::from_str(body)?;
//! let cookies = answer.state_store()?.iter().map(StateStoreItem::to_cookie).collect();
//! engine.handle(now, Input::Response(Response { origin: Origin::Other, outcome: Outcome::Success, cookies }))?;
//!
//! let jar = CookieJar::default();
//! let url = "https://edge.example.com/".parse()?;
//! while let Some(action) = engine.poll_action() {
//!     jar.apply(&action, &url)?;
//! }
//! assert_eq!(jar.lock().iter_any().count(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The facade's loop, against a real server:
//!
//! ```no_run
//! use consent_core::*;
//! use consent_transport::{CookieJar, EdgeConfig, HttpTransport, Request, SetConsentRequest, Transport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = EdgeConfig::new("https://edge.example.com", "datastream-id", "ORG@AdobeOrg")?;
//! // In the SDK the jar is `consent_store`'s `CookieJar::load()`, saved again after changes.
//! let transport = HttpTransport::new(config, CookieJar::new(cookie_store::CookieStore::default()))?;
//!
//! let mut engine = Engine::new(Config::new("ORG@AdobeOrg").default_consent(DefaultConsent::Pending));
//! let now = Timestamp::from_millis(0);
//! let (consent_cookie, identity_cookie) = transport.stored_cookies();
//! engine.handle(now, Input::Start(Stored { consent_cookie, identity_cookie, snapshot: None }))?;
//! engine.handle(now, Input::SetConsent {
//!     id: SetConsentId(1),
//!     options: SetConsentOptions::new(vec![ConsentObject::adobe_v1("in")?]),
//! })?;
//! let mut pending = std::collections::VecDeque::new();
//! loop {
//!     while let Some(action) = engine.poll_action() {
//!         transport.apply(&action)?; // cookie writes the engine allowed
//!         if let Some((request, body)) = SetConsentRequest::from_action(&action) {
//!             pending.push_back((request, body));
//!         }
//!     }
//!     let Some((request, body)) = pending.pop_front() else { break };
//!     let result = transport.send(Request::SetConsent(body)).await;
//!     let response = consent_transport::engine_response(&result, Origin::SetConsent(request));
//!     engine.handle(now, Input::Response(response))?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The consent preferences API (AJO unsubscribe) has its own client, [`PreferencesClient`].

use std::fmt;

use async_trait::async_trait;
use consent_core::{Action, StoredCookie};

mod http;
mod ids;
mod jar;
mod memory;
#[cfg(feature = "http")]
mod preferences;
mod protocol;
mod retry;

pub use cookie_store;

pub use crate::http::{
    BoxError, ConfigError, EdgeConfig, EdgeReply, MAX_BODY, SendError, StatusError, engine_response,
};
#[cfg(feature = "http")]
pub use crate::http::{BuildError, HttpTransport};
pub use crate::jar::{CookieJar, JarError, MAX_COOKIE_AGE, parse_set_cookie};
pub use crate::memory::MemoryTransport;
#[cfg(feature = "http")]
pub use crate::preferences::{
    DecryptQuery, Decrypted, MarketingPreference, PreferencesBody, PreferencesClient,
    PreferencesConfig, UnsubscribeParams,
};
pub use crate::protocol::{
    ConsentQuery, DataRequest, EdgeResponse, Event, Handle, IdentityQuery, Meta, Operation,
    Problem, Query, Request, SetConsentRequest, StateEntry, StateMeta, StateStoreAttrs,
    StateStoreItem,
};
pub use crate::retry::{Delivery, FullJitter, Jitter, NoJitter, RetryPolicy, Sleep, TokioSleep};

/// What the facade drives: sends Edge requests and keeps the cookies the engine allows.
///
/// It is an `async_trait` so that it stays object-safe: the facade can hold a
/// `Box<dyn Transport>` (native `async fn` in traits is not dyn-compatible) and tests can substitute
/// [`MemoryTransport`]. The cost is one boxed future per request, nothing next to a network round
/// trip.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Sends one request, retrying recoverable failures. Cookies in the answer are returned, never
    /// written.
    async fn send(&self, request: Request) -> Result<EdgeReply, SendError>;

    /// Carries out a cookie action of the engine ([`Action::StoreCookie`],
    /// [`Action::RemoveCookie`]); returns `false` for any other action.
    fn apply(&self, action: &Action) -> Result<bool, JarError>;

    /// The consent cookie and whether the identity cookie exists, for
    /// [`consent_core::Stored`] at start-up.
    fn stored_cookies(&self) -> (Option<StoredCookie>, bool);
}
