//! The consent engine: decides, for every command, cookie and purpose, whether consent allows it.
//!
//! This crate contains no networking or storage code and does not get any timestamps from the
//! operating system: it is a deterministic state machine driven by its caller. Inputs go in
//! through [`Engine::handle`] with the caller's `now`; effects come out of [`Engine::poll_action`]
//! as data ([`Action`]): release or reject a command, send a `setConsent` request, store or remove
//! a cookie, persist state, append a consent record, notify subscribers, log.
//!
//! It implements the consent behaviour of Adobe's Web SDK to the letter — `defaultConsent`
//! in/out/pending, the six-state machine with its messages, commands queued while pending and
//! released in order on "in" or declined on "out", the serial `setConsent` chain, the consent
//! cookie, the "unchanged consent" skip — and fixes that SDK's known privacy bugs (an unknown
//! stored value is never "in", a failed call never loosens anything nor reports a default as
//! set, a missing consent cookie never leaves the engine stuck or skips a call, no cookie but the
//! consent cookie is written before consent). It adds what the Web SDK lacks: an unsettled
//! `setConsent` survives a restart (it is persisted before it is sent), the skip is bound to the
//! cookie the accepted call left, every change of state is a [`ConsentRecord`], granular purposes
//! (decided by Adobe 2.0 payloads or by the app) and a read API. How a `setConsent` body decides
//! is one public function, [`SetConsentOptions::decide`], which `consent-server` uses too.
//!
//! `docs/ARCHITECTURE.md` lists every place where the engine deliberately differs from the Web
//! SDK; an independent model checks the engine after every step of random sequences.
//!
//! ```
//! use consent_core::*;
//!
//! let mut engine = Engine::new(Config::new("ORG@AdobeOrg").default_consent("out".parse()?));
//! let now = Timestamp::from_millis(0);
//! engine.handle(now, Input::Start(Stored::default()))?;
//! engine.handle(now, Input::Submit { id: CommandId(7), requirement: Requirement::general(), mode: Mode::Queue })?;
//! let actions: Vec<Action> = std::iter::from_fn(|| engine.poll_action()).collect();
//! assert!(actions.contains(&Action::Reject { command: CommandId(7), reason: RejectReason::NoPreferences }));
//! assert_eq!(engine.check(Requirement::general()), Verdict::Declined(RejectReason::NoPreferences));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use consent_tcf;

mod cookie;
mod engine;
pub mod hash;
mod payload;
pub mod receipt;
mod types;

pub use cookie::{
    CONSENT_COOKIE_MAX_AGE, Cookie, CookieNames, StoredCookie, general_value, parse_consent_cookie,
};
pub use engine::{
    Action, CommandId, Config, ConfigError, ConsentRecord, ConsentView, DEFAULT_IAB_VENDOR_ID,
    Engine, HandleError, Input, LogLevel, Mode, Origin, Outcome, PendingCall, RecordSource,
    RejectReason, RequestId, Response, SetConsentId, SetConsentOutcome, Snapshot, Stored, Verdict,
};
pub use payload::{
    ConsentDecision, ConsentObject, IabEvaluator, PayloadError, SetConsentOptions, Standard,
    TcfDecoder, validate_identity_map,
};
pub use types::{
    ConsentState, Decision, DefaultConsent, DefaultConsentError, MAX_PURPOSES, Purpose,
    Requirement, Timestamp,
};
