//! The consent service: Edge-compatible consent and collection endpoints, and a preference
//! service with signed unsubscribe links, on axum and tokio, storing profiles, events and
//! hash-chained consent records in SQLite (the default) or PostgreSQL through sqlx.
//!
//! Routes:
//! - `POST /ee/v1/{interact,collect,privacy/set-consent,identity/acquire}` and the
//!   `/ee/{locationHint}/v1/…` forms, with `?configId=…&requestId=…`: consent payloads are
//!   validated by `consent-core` with the Edge error codes, and the answer carries `handle[]`
//!   with the `kndctr_<org>_identity`, `_consent` and `_cluster` `state:store` entries.
//! - `GET /unsubscribe?params&pid&sig` (landing page, changes nothing) and `POST` on the same URL
//!   (its confirm button, or RFC 8058 one-click with `List-Unsubscribe=One-Click`).
//! - `POST /imp/consent/preferences?params&pid&sig` and `GET /imp/consent/decrypt?params&pid&sig`
//!   (authenticated with an API key bound to one organisation and sandbox).
//! - `POST /admin/v1/unsubscribe-links`, `GET /admin/v1/profiles/{namespace}/{id}`, its
//!   `DELETE` (GDPR erasure, [`Db::erase`]) and `…/export` (access, [`Db::export`]),
//!   `GET /admin/v1/chain/checkpoint` (a signed chain head) — all authenticated —, and
//!   `/.well-known/consent-receipt-keys` (the JWKS receipts are signed with), `/healthz`,
//!   `/metrics`, `/openapi.json`.
//!
//! The Edge routes can serve the Web SDK in a browser: HTTPS with a certificate from files or a
//! self-signed one ([`TlsConfig`], [`Config::tls`]), CORS with an allow-list per datastream
//! ([`Datastream::origins`], [`Config::cors_origins`]; a disallowed `Origin` is refused with 403
//! before anything is read), the `x-adobe-edge` answer header, and a refusal (`EXEG-0003-400`) of
//! a datastream that is not configured unless [`Config::allow_unknown_datastreams`] is set.
//!
//! Consent records name a person only by a keyed hash and keep personal fields apart, so that an
//! erasure leaves the hash chain whole; consent changes can be answered with a signed receipt
//! (Ed25519, compact JWS, the Kantara Consent Receipt fields; the format is
//! `consent_core::receipt`).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("consent-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let database = format!("sqlite://{}", dir.join("consent.db").display());
//! let runtime = tokio::runtime::Runtime::new()?;
//! runtime.block_on(async {
//!     let config = consent_server::Config::new("127.0.0.1:0".parse()?, database)?;
//!     let server = consent_server::serve(config).await?;
//!     assert_eq!(server.local_addr().ip().to_string(), "127.0.0.1");
//!     server.shutdown().await?;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

mod admin;
mod api;
mod config;
mod cors;
mod db;
mod edge;
mod erase;
mod health;
mod links;
mod migrate;
mod model;
mod openapi;
mod ops;
mod prefs;
mod receipts;
mod server;
mod state;
mod tls;
mod util;
mod writer;

pub use config::{ApiKey, Config, Datastream, Keys, KeysError, SameSite};
pub use cors::OriginError;
pub use db::{
    Backend, ConsentChange, ConsentRecord, Db, Edit, Erasure, GENESIS_HASH, OpenError, Profile,
    ProfileKey, Recorded, StoreError,
};
pub use links::{
    KeyError, LinkError, LinkKey, LinkKeys, LinkParams, LinkProfile, SignError, SignedLink,
};
pub use ops::{Metrics, RateLimiter};
pub use prefs::PrefError;
pub use receipts::{
    RECEIPT_SEED_LEN, ReceiptKey, ReceiptKeyError, ReceiptKeys, ReceiptPolicy, verify_ed25519,
};
pub use server::{ServeError, Server, serve};
pub use tls::{TlsConfig, TlsError};
