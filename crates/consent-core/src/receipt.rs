//! Signed consent receipts and chain checkpoints: the claims, their compact JWS form and the
//! JWKS that publishes the keys, in one place for the server that signs and the clients that
//! check.
//!
//! A **receipt** ([`ReceiptClaims`]) tells a person what the server recorded about their consent:
//! the fields of the Kantara Initiative's Consent Receipt Specification v1.1.0 that apply to us
//! (who, which purposes and what was decided for each, when, how), plus the record's place in
//! the organisation's hash chain (`seq`, `chainHash`), so a receipt can later be matched against
//! the audit chain. A **checkpoint** ([`Checkpoint`]) is a signed statement of a chain's head
//! (sequence, hash, time), for auditors.
//!
//! Both travel as a compact JWS ([RFC 7515]) signed with Ed25519 (`"alg":"EdDSA"`, [RFC 8037]):
//! `base64url(header) "." base64url(payload) "." base64url(signature)`, base64url without
//! padding, the signature over the ASCII bytes `header "." payload`. The header is
//! `{"alg":"EdDSA","kid":…,"typ":…}`; `kid` names the key in the [`Jwks`], so keys can be
//! rotated while older receipts keep verifying, and `typ` ([`RECEIPT_TYP`], [`CHECKPOINT_TYP`])
//! keeps a checkpoint from passing for a receipt or the other way round.
//!
//! This module does no cryptography itself (the crate stays free of I/O and randomness): signing
//! takes a closure that signs the signing input, verifying a closure that checks one Ed25519
//! signature with a public key. With `ring`, for example (`consent-server`'s `verify_ed25519` is
//! this closure; a sketch, not compiled here, as `ring` is not a dependency of this crate):
//!
//! ```text
//! let token = claims.sign_with("2026-12", |msg| key_pair.sign(msg));
//! let claims: ReceiptClaims = receipt::verify_with(&token, &jwks, |key, msg, sig| {
//!     UnparsedPublicKey::new(&ED25519, key).verify(msg, sig).is_ok()
//! })?;
//! ```
//!
//! Every malformed input is a [`ReceiptError`], never a panic; the payload of a token is only
//! parsed after its signature has been verified.
//!
//! ```
//! use consent_core::receipt::{self, Checkpoint, Jwk, Jwks, ReceiptError, SignedClaims as _};
//!
//! let checkpoint = Checkpoint {
//!     org: "ORG@AdobeOrg".into(),
//!     sandbox: "prod".into(),
//!     seq: 42,
//!     hash: "9f2c".into(),
//!     time: 1_765_000_000,
//! };
//! // A stand-in signature scheme, to show the plumbing: the "signature" is the message's length.
//! let fake_sign = |msg: &[u8]| [msg.len() as u8; 64];
//! let token = checkpoint.sign_with("k1", fake_sign);
//! let jwks = Jwks { keys: vec![Jwk::ed25519("k1", &[0; 32])] };
//! let checked: Checkpoint =
//!     receipt::verify_with(&token, &jwks, |_key, msg, sig| sig[0] == msg.len() as u8)?;
//! assert_eq!(checked, checkpoint);
//! assert_eq!(
//!     receipt::verify_with::<Checkpoint>(&token, &jwks, |_, _, _| false),
//!     Err(ReceiptError::BadSignature)
//! );
//! # Ok::<(), ReceiptError>(())
//! ```
//!
//! [RFC 7515]: https://www.rfc-editor.org/rfc/rfc7515
//! [RFC 8037]: https://www.rfc-editor.org/rfc/rfc8037

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Decision;

/// The JWS algorithm of every receipt and checkpoint: Ed25519 ([RFC 8037]).
///
/// [RFC 8037]: https://www.rfc-editor.org/rfc/rfc8037
pub const ALG: &str = "EdDSA";
/// The header `typ` of a receipt.
pub const RECEIPT_TYP: &str = "consent-receipt+jwt";
/// The header `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "consent-checkpoint+jwt";
/// The Kantara Consent Receipt version a receipt's `version` claim names.
pub const KANTARA_VERSION: &str = "KI-CR-v1.1.0";
/// The longest token [`decode`] accepts, in bytes.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// The length of an Ed25519 public key, in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// The length of an Ed25519 signature, in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 public key.
pub type PublicKey = [u8; PUBLIC_KEY_LEN];
/// An Ed25519 signature.
pub type Signature = [u8; SIGNATURE_LEN];

/// One of the three parts of a compact JWS, or the JWKS document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Part {
    /// The protected header.
    Header,
    /// The payload (the claims).
    Payload,
    /// The signature.
    Signature,
    /// A JWKS document.
    Jwks,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Payload => "payload",
            Part::Signature => "signature",
            Part::Jwks => "JWKS",
        })
    }
}

/// Why a token or a key set was refused. Nothing in this module panics on any input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("the token is {0} bytes long, more than {MAX_TOKEN_LEN}")]
    TooLong(usize),
    /// The token does not have exactly three `.`-separated parts.
    #[error("a compact JWS has 3 parts, this one has {0}")]
    Segments(usize),
    /// A part is not base64url without padding.
    #[error("the {0} is not base64url without padding")]
    Base64(Part),
    /// A part is not JSON of the expected shape.
    #[error("the {part} is not valid JSON of the expected shape: {reason}")]
    Json {
        /// Which part.
        part: Part,
        /// serde_json's message.
        reason: String,
    },
    /// The header names another algorithm than [`ALG`].
    #[error("unsupported algorithm {0:?} (only EdDSA)")]
    UnsupportedAlg(String),
    /// The signature is not [`SIGNATURE_LEN`] bytes long.
    #[error("an Ed25519 signature is 64 bytes, this one is {0}")]
    SignatureLength(usize),
    /// The header names no key.
    #[error("the header has no kid")]
    MissingKid,
    /// The header's `typ` is not the one expected.
    #[error("expected typ {expected:?}, found {found:?}")]
    WrongType {
        /// The `typ` expected.
        expected: &'static str,
        /// The `typ` found, if any.
        found: Option<String>,
    },
    /// No key of the key set has the header's `kid`.
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    /// The key with that `kid` is not an Ed25519 signing key.
    #[error("key {kid:?} is not usable: {reason}")]
    UnusableKey {
        /// The key id.
        kid: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature does not verify with the key the header names.
    #[error("the signature does not verify")]
    BadSignature,
    /// The receipt's `version` is not [`KANTARA_VERSION`].
    #[error("unsupported receipt version {0:?}")]
    UnsupportedVersion(String),
}

/// The protected header of a compact JWS. Only these three members are accepted: a header with
/// any other (`crit`, `jku`, `x5u`, …) is refused, so nothing in it can point elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The algorithm; always [`ALG`] for what this module accepts.
    pub alg: String,
    /// The id of the signing key in the [`Jwks`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The token type: [`RECEIPT_TYP`] or [`CHECKPOINT_TYP`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

impl Header {
    /// `{"alg":"EdDSA","kid":kid,"typ":typ}`.
    pub fn eddsa(kid: &str, typ: &str) -> Self {
        Self {
            alg: ALG.to_owned(),
            kid: Some(kid.to_owned()),
            typ: Some(typ.to_owned()),
        }
    }
}

/// The JSON of `value`. The types of this module (strings, integers, booleans, enums and
/// vectors of them, no maps with non-string keys) always serialise, so the error branch is
/// unreachable for them.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Builds a compact JWS: `sign` receives the signing input (`header "." payload`, ASCII) and
/// returns the signature (any length, so this also makes the tokens of RFC 8037's examples).
pub fn encode<S: AsRef<[u8]>>(
    header: &Header,
    payload: &[u8],
    sign: impl FnOnce(&[u8]) -> S,
) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(to_json(header));
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
    token
}

/// A compact JWS taken apart, its signature not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The parsed header; `alg` is [`ALG`].
    pub header: Header,
    /// The bytes the signature is over: the token up to its last `.`.
    pub signing_input: &'a str,
    /// The decoded payload (not parsed: it should not be before the signature is checked).
    pub payload: Vec<u8>,
    /// The decoded signature.
    pub signature: Signature,
}

impl Decoded<'_> {
    /// Parses the payload as JSON claims.
    pub fn claims<C: DeserializeOwned>(&self) -> Result<C, ReceiptError> {
        serde_json::from_slice(&self.payload).map_err(|e| ReceiptError::Json {
            part: Part::Payload,
            reason: e.to_string(),
        })
    }
}

fn base64url(part: Part, text: &str) -> Result<Vec<u8>, ReceiptError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| ReceiptError::Base64(part))
}

/// Takes a compact EdDSA JWS apart: checks its length, that it has three parts, that each is
/// canonical base64url without padding, that the header is JSON naming `"alg":"EdDSA"` and that
/// the signature is 64 bytes. It checks neither the signature nor `kid` nor `typ`: see
/// [`verify_with`].
pub fn decode(token: &str) -> Result<Decoded<'_>, ReceiptError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(ReceiptError::TooLong(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReceiptError::Segments(token.split('.').count()));
    };
    let header: Header =
        serde_json::from_slice(&base64url(Part::Header, header_b64)?).map_err(|e| {
            ReceiptError::Json {
                part: Part::Header,
                reason: e.to_string(),
            }
        })?;
    if header.alg != ALG {
        return Err(ReceiptError::UnsupportedAlg(header.alg));
    }
    let signature = base64url(Part::Signature, signature_b64)?;
    let signature: Signature = signature
        .as_slice()
        .try_into()
        .map_err(|_| ReceiptError::SignatureLength(signature.len()))?;
    let payload = base64url(Part::Payload, payload_b64)?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Decoded {
        header,
        signing_input,
        payload,
        signature,
    })
}

/// Claims that travel as a signed token: [`ReceiptClaims`] and [`Checkpoint`].
pub trait SignedClaims: Serialize + DeserializeOwned {
    /// The header `typ` of this kind of token.
    const TYP: &'static str;

    /// Checks the claims once parsed (e.g. the receipt's `version`).
    fn check(&self) -> Result<(), ReceiptError> {
        Ok(())
    }

    /// Signs the claims with the key `kid`: `sign` receives the signing input and returns its
    /// Ed25519 signature.
    fn sign_with<S: AsRef<[u8]>>(&self, kid: &str, sign: impl FnOnce(&[u8]) -> S) -> String {
        encode(&Header::eddsa(kid, Self::TYP), &to_json(self), sign)
    }
}

/// Verifies a token of kind `C` against a key set and returns its claims.
///
/// In order: [`decode`]; the header must name a `kid` ([`ReceiptError::MissingKid`]) and
/// `C::TYP` ([`ReceiptError::WrongType`]); the key must be in `jwks` and an Ed25519 signing key
/// ([`Jwks::key`]); `verify(public_key, signing_input, signature)` must return `true`
/// ([`ReceiptError::BadSignature`]); only then is the payload parsed and checked.
pub fn verify_with<C: SignedClaims>(
    token: &str,
    jwks: &Jwks,
    verify: impl FnOnce(&PublicKey, &[u8], &Signature) -> bool,
) -> Result<C, ReceiptError> {
    let decoded = decode(token)?;
    let kid = decoded
        .header
        .kid
        .as_deref()
        .ok_or(ReceiptError::MissingKid)?;
    if decoded.header.typ.as_deref() != Some(C::TYP) {
        return Err(ReceiptError::WrongType {
            expected: C::TYP,
            found: decoded.header.typ.clone(),
        });
    }
    let key = jwks.key(kid)?;
    if !verify(&key, decoded.signing_input.as_bytes(), &decoded.signature) {
        return Err(ReceiptError::BadSignature);
    }
    let claims: C = decoded.claims()?;
    claims.check()?;
    Ok(claims)
}

/// A consent receipt: the Kantara Consent Receipt v1.1.0 fields that apply to a recorded consent
/// change, and the record's place in its hash chain.
///
/// Kantara's `publicKey` is left out: the header's `kid` names the key in the published JWKS.
/// `jurisdiction` and `policyUrl`, required by Kantara, are left out when not configured.
///
/// ```json
/// {"version":"KI-CR-v1.1.0","jurisdiction":"EU","consentTimestamp":1765000000,
///  "collectionMethod":"edge:set-consent","consentReceiptID":"ORG@AdobeOrg/prod/42",
///  "piiPrincipalId":"hmac-sha256:3b1f…","piiControllers":[{"piiController":"ORG@AdobeOrg"}],
///  "services":[{"service":"adobe-consent","purposes":[{"purpose":"collect",
///  "consentType":"EXPLICIT","decision":"in"}]}],"sensitive":false,"org":"ORG@AdobeOrg","sandbox":"prod",
///  "seq":42,"chainHash":"9f2c…","general":"in","iat":1765000001}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptClaims {
    /// The specification version: [`KANTARA_VERSION`].
    pub version: String,
    /// The jurisdiction the controller is subject to, e.g. `EU`, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// When the consent was recorded: seconds since the Unix epoch (Kantara's
    /// `consentTimestamp`).
    pub consent_timestamp: u64,
    /// How the consent was collected: the record's source (`edge:set-consent`, `preferences`,
    /// `one-click`, …).
    pub collection_method: String,
    /// The receipt's unique id (Kantara's `consentReceiptID`).
    #[serde(rename = "consentReceiptID")]
    pub consent_receipt_id: String,
    /// Who: a keyed hash of the person's identity, never the identity itself (Kantara's
    /// `piiPrincipalId`).
    pub pii_principal_id: String,
    /// The controllers (Kantara's `piiControllers`): the organisation.
    pub pii_controllers: Vec<PiiController>,
    /// The privacy policy the consent was given under, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_url: Option<String>,
    /// The language of the consent notice, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// What: the services, with the purposes and the decision for each.
    pub services: Vec<Service>,
    /// Whether special categories of personal data are concerned (Kantara's `sensitive`);
    /// `false` for consent to collect and to message.
    #[serde(default)]
    pub sensitive: bool,
    /// The special categories concerned, when `sensitive` (Kantara's `spiCat`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spi_cat: Vec<String>,
    /// The organisation whose chain holds the record.
    pub org: String,
    /// The sandbox whose chain holds the record.
    pub sandbox: String,
    /// The record's sequence number in its chain, from 1.
    pub seq: u64,
    /// The record's hash in the chain.
    pub chain_hash: String,
    /// The general decision the change made, if it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general: Option<Decision>,
    /// When the receipt was signed: seconds since the Unix epoch.
    pub iat: u64,
}

impl SignedClaims for ReceiptClaims {
    const TYP: &'static str = RECEIPT_TYP;

    fn check(&self) -> Result<(), ReceiptError> {
        if self.version != KANTARA_VERSION {
            return Err(ReceiptError::UnsupportedVersion(self.version.clone()));
        }
        Ok(())
    }
}

/// A data controller (Kantara's `piiControllers` entry). Only the name is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PiiController {
    /// The controller's name: the organisation.
    pub pii_controller: String,
    /// Whether it acts on behalf of another controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf: Option<bool>,
    /// A contact name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// A postal address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A contact e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A contact phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The controller's web site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_controller_url: Option<String>,
}

impl PiiController {
    /// A controller known only by its name.
    pub fn named(name: &str) -> Self {
        Self {
            pii_controller: name.to_owned(),
            on_behalf: None,
            contact: None,
            address: None,
            email: None,
            phone: None,
            pii_controller_url: None,
        }
    }
}

/// A service and the purposes consented to for it (Kantara's `services` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The service's name, e.g. `adobe-consent` or `marketing`.
    pub service: String,
    /// The purposes and their decisions.
    pub purposes: Vec<PurposeReceipt>,
}

/// One purpose of a service and what was decided for it (Kantara's `purposes` entry, with our
/// `decision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurposeReceipt {
    /// The purpose, e.g. `collect`, `personalize` or a marketing channel.
    pub purpose: String,
    /// Kantara's purpose categories, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purpose_category: Vec<String>,
    /// How consent was given: `EXPLICIT` for a choice the person made.
    pub consent_type: String,
    /// Kantara's categories of personal data, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii_category: Vec<String>,
    /// Whether this is the primary purpose of the service, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_purpose: Option<bool>,
    /// How the consent ends, e.g. a link to withdraw it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<String>,
    /// Whether data is disclosed to third parties for this purpose, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub third_party_disclosure: Option<bool>,
    /// The decision: `in`, `out` or `pending`.
    pub decision: Decision,
}

impl PurposeReceipt {
    /// An explicit decision about `purpose`, with nothing else known.
    pub fn explicit(purpose: &str, decision: Decision) -> Self {
        Self {
            purpose: purpose.to_owned(),
            purpose_category: Vec::new(),
            consent_type: "EXPLICIT".to_owned(),
            pii_category: Vec::new(),
            primary_purpose: None,
            termination: None,
            third_party_disclosure: None,
            decision,
        }
    }
}

/// A signed statement of a chain's head, for auditors: the chain of `org` and `sandbox` had
/// record `seq` with hash `hash` as its last one at `time`.
///
/// ```json
/// {"org":"ORG@AdobeOrg","sandbox":"prod","seq":42,"hash":"9f2c…","time":1765000002}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The organisation.
    pub org: String,
    /// The sandbox.
    pub sandbox: String,
    /// The head record's sequence number (0 for an empty chain).
    pub seq: u64,
    /// The head record's hash (the genesis hash for an empty chain).
    pub hash: String,
    /// When the head was read: seconds since the Unix epoch.
    pub time: u64,
}

impl SignedClaims for Checkpoint {
    const TYP: &'static str = CHECKPOINT_TYP;
}

/// One public key of a [`Jwks`]: an `OKP` key ([RFC 8037]) for our Ed25519 keys. Members other
/// than `kty` are optional when parsing, so that a key set with other kinds of keys still parses;
/// [`Jwks::key`] refuses those keys when a token names them.
///
/// [RFC 8037]: https://www.rfc-editor.org/rfc/rfc8037
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// The key type: `OKP`.
    pub kty: String,
    /// The curve: `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// The public key, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// The key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm: `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// The key's use: `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// `{"kty":"OKP","crv":"Ed25519","x":…,"kid":kid,"alg":"EdDSA","use":"sig"}`.
    pub fn ed25519(kid: &str, public_key: &PublicKey) -> Self {
        Self {
            kty: "OKP".to_owned(),
            crv: Some("Ed25519".to_owned()),
            x: Some(URL_SAFE_NO_PAD.encode(public_key)),
            kid: Some(kid.to_owned()),
            alg: Some(ALG.to_owned()),
            use_: Some("sig".to_owned()),
        }
    }

    /// The Ed25519 public key, if this is an Ed25519 signing key.
    pub fn public_key(&self) -> Result<PublicKey, &'static str> {
        if self.kty != "OKP" {
            return Err("kty is not OKP");
        }
        if self.crv.as_deref() != Some("Ed25519") {
            return Err("crv is not Ed25519");
        }
        if self.alg.as_deref().is_some_and(|alg| alg != ALG) {
            return Err("alg is not EdDSA");
        }
        if self.use_.as_deref().is_some_and(|use_| use_ != "sig") {
            return Err("use is not sig");
        }
        let x = self.x.as_deref().ok_or("x is missing")?;
        let bytes = URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| "x is not base64url without padding")?;
        bytes.as_slice().try_into().map_err(|_| "x is not 32 bytes")
    }

    /// The JSON whose SHA-256 is the key's RFC 7638 thumbprint (an `OKP` key's required members
    /// in lexical order, RFC 8037 §2): `{"crv":…,"kty":…,"x":…}`.
    pub fn thumbprint_input(&self) -> String {
        let text = |value: Option<&str>| serde_json::Value::from(value.unwrap_or("")).to_string();
        format!(
            r#"{{"crv":{},"kty":{},"x":{}}}"#,
            text(self.crv.as_deref()),
            text(Some(self.kty.as_str())),
            text(self.x.as_deref())
        )
    }
}

/// A JSON Web Key Set ([RFC 7517] §5): the public keys receipts and checkpoints are verified
/// with, as `GET /.well-known/consent-receipt-keys` publishes them.
///
/// [RFC 7517]: https://www.rfc-editor.org/rfc/rfc7517
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document.
    pub fn from_json(text: &str) -> Result<Self, ReceiptError> {
        serde_json::from_str(text).map_err(|e| ReceiptError::Json {
            part: Part::Jwks,
            reason: e.to_string(),
        })
    }

    /// The document's JSON.
    pub fn to_json(&self) -> String {
        String::from_utf8(to_json(self)).unwrap_or_default()
    }

    /// The Ed25519 public key with id `kid`: the first key with that id, which must be an
    /// Ed25519 signing key ([`ReceiptError::UnusableKey`] otherwise).
    pub fn key(&self, kid: &str) -> Result<PublicKey, ReceiptError> {
        let jwk = self
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or_else(|| ReceiptError::UnknownKid(kid.to_owned()))?;
        jwk.public_key()
            .map_err(|reason| ReceiptError::UnusableKey {
                kid: kid.to_owned(),
                reason,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 Appendix A.1: the example key's public part.
    const RFC_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    /// RFC 8037 Appendix A.4: the JWS of "Example of Ed25519 signing" under `{"alg":"EdDSA"}`.
    const RFC_TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    const RFC_SIG: &str =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    /// A stand-in for Ed25519 so these tests need no crypto: the "signature" of a message under
    /// key `k` is FNV-1a 32 of `k ‖ msg`, repeated to 64 bytes. It is deterministic and changes
    /// with the message and the key, which is all the plumbing tests need.
    fn fake_sig(key: &PublicKey, msg: &[u8]) -> Signature {
        let hash = crate::hash::fnv1a32(&[key.as_slice(), msg].concat()).to_be_bytes();
        let mut sig = [0; SIGNATURE_LEN];
        for (i, byte) in sig.iter_mut().enumerate() {
            *byte = hash[i % 4];
        }
        sig
    }

    fn fake_verify(key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
        fake_sig(key, msg) == *sig
    }

    fn key(n: u8) -> PublicKey {
        [n; PUBLIC_KEY_LEN]
    }

    fn jwks() -> Jwks {
        Jwks {
            keys: vec![Jwk::ed25519("k1", &key(1)), Jwk::ed25519("k2", &key(2))],
        }
    }

    fn claims() -> ReceiptClaims {
        ReceiptClaims {
            version: KANTARA_VERSION.to_owned(),
            jurisdiction: Some("EU".to_owned()),
            consent_timestamp: 1_765_000_000,
            collection_method: "edge:set-consent".to_owned(),
            consent_receipt_id: "ORG@AdobeOrg/prod/42".to_owned(),
            pii_principal_id: "hmac-sha256:3b1f".to_owned(),
            pii_controllers: vec![PiiController::named("ORG@AdobeOrg")],
            policy_url: None,
            language: None,
            services: vec![Service {
                service: "adobe-consent".to_owned(),
                purposes: vec![
                    PurposeReceipt::explicit("collect", Decision::In),
                    PurposeReceipt::explicit("personalize", Decision::Out),
                ],
            }],
            sensitive: false,
            spi_cat: Vec::new(),
            org: "ORG@AdobeOrg".to_owned(),
            sandbox: "prod".to_owned(),
            seq: 42,
            chain_hash: "9f2c".to_owned(),
            general: Some(Decision::In),
            iat: 1_765_000_001,
        }
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            org: "ORG@AdobeOrg".to_owned(),
            sandbox: "prod".to_owned(),
            seq: 42,
            hash: "9f2c".to_owned(),
            time: 1_765_000_002,
        }
    }

    fn sign<C: SignedClaims>(claims: &C, kid: &str, key: &PublicKey) -> String {
        claims.sign_with(kid, |msg| fake_sig(key, msg))
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The token with part `index` replaced.
    fn with_part(token: &str, index: usize, part: &str) -> String {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[index] = part;
        parts.join(".")
    }

    fn payload_json(token: &str) -> serde_json::Value {
        let payload = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        serde_json::from_slice(&payload).unwrap()
    }

    #[test]
    fn rfc8037_example_encodes_and_decodes_exactly() {
        let header = Header {
            alg: ALG.to_owned(),
            kid: None,
            typ: None,
        };
        let signature = URL_SAFE_NO_PAD.decode(RFC_SIG).unwrap();
        let mut seen = String::new();
        let token = encode(&header, b"Example of Ed25519 signing", |msg| {
            seen = String::from_utf8(msg.to_vec()).unwrap();
            signature.clone()
        });
        assert_eq!(token, RFC_TOKEN);
        assert_eq!(
            seen,
            "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
        );
        let decoded = decode(RFC_TOKEN).unwrap();
        assert_eq!(decoded.header, header);
        assert_eq!(decoded.signing_input, seen);
        assert_eq!(decoded.payload, b"Example of Ed25519 signing");
        assert_eq!(decoded.signature.as_slice(), signature.as_slice());
        // The spec's public key, in our JWK form, is the key verification is handed.
        let jwk = Jwk::ed25519("rfc", &[0; 32]);
        let rfc = Jwk {
            x: Some(RFC_X.to_owned()),
            ..jwk
        };
        assert_eq!(URL_SAFE_NO_PAD.encode(rfc.public_key().unwrap()), RFC_X);
        // RFC 8037 A.3: the thumbprint is over exactly this JSON.
        assert_eq!(
            rfc.thumbprint_input(),
            format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{RFC_X}"}}"#)
        );
    }

    #[test]
    fn receipt_round_trips_with_header_and_json_shape() {
        let token = sign(&claims(), "k1", &key(1));
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.header, Header::eddsa("k1", RECEIPT_TYP));
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&header).unwrap(),
            r#"{"alg":"EdDSA","kid":"k1","typ":"consent-receipt+jwt"}"#
        );
        assert_eq!(
            payload_json(&token),
            serde_json::json!({
                "version": "KI-CR-v1.1.0",
                "jurisdiction": "EU",
                "consentTimestamp": 1_765_000_000,
                "collectionMethod": "edge:set-consent",
                "consentReceiptID": "ORG@AdobeOrg/prod/42",
                "piiPrincipalId": "hmac-sha256:3b1f",
                "piiControllers": [{"piiController": "ORG@AdobeOrg"}],
                "services": [{"service": "adobe-consent", "purposes": [
                    {"purpose": "collect", "consentType": "EXPLICIT", "decision": "in"},
                    {"purpose": "personalize", "consentType": "EXPLICIT", "decision": "out"}
                ]}],
                "sensitive": false,
                "org": "ORG@AdobeOrg",
                "sandbox": "prod",
                "seq": 42,
                "chainHash": "9f2c",
                "general": "in",
                "iat": 1_765_000_001
            })
        );
        let back: ReceiptClaims = verify_with(&token, &jwks(), fake_verify).unwrap();
        assert_eq!(back, claims());
    }

    #[test]
    fn checkpoint_round_trips_and_is_not_a_receipt() {
        let token = sign(&checkpoint(), "k2", &key(2));
        assert_eq!(
            payload_json(&token),
            serde_json::json!({"org": "ORG@AdobeOrg", "sandbox": "prod", "seq": 42,
                               "hash": "9f2c", "time": 1_765_000_002})
        );
        let back: Checkpoint = verify_with(&token, &jwks(), fake_verify).unwrap();
        assert_eq!(back, checkpoint());
        assert_eq!(
            verify_with::<ReceiptClaims>(&token, &jwks(), fake_verify),
            Err(ReceiptError::WrongType {
                expected: RECEIPT_TYP,
                found: Some(CHECKPOINT_TYP.to_owned())
            })
        );
        let receipt = sign(&claims(), "k2", &key(2));
        assert!(matches!(
            verify_with::<Checkpoint>(&receipt, &jwks(), fake_verify),
            Err(ReceiptError::WrongType { .. })
        ));
    }

    #[test]
    fn tampering_with_any_part_fails() {
        let token = sign(&claims(), "k1", &key(1));
        let parts: Vec<&str> = token.split('.').collect();
        // Payload: another decision, correctly encoded, under the old signature.
        let mut other = claims();
        other.general = Some(Decision::Out);
        let forged = with_part(&token, 1, &b64(to_json(&other)));
        assert_eq!(
            verify_with::<ReceiptClaims>(&forged, &jwks(), fake_verify),
            Err(ReceiptError::BadSignature)
        );
        // Header: the other key's id (a valid key, but not the one that signed).
        let header = b64(to_json(&Header::eddsa("k2", RECEIPT_TYP)));
        assert_eq!(
            verify_with::<ReceiptClaims>(&with_part(&token, 0, &header), &jwks(), fake_verify),
            Err(ReceiptError::BadSignature)
        );
        // Signature: one bit flipped.
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[10] ^= 1;
        assert_eq!(
            verify_with::<ReceiptClaims>(
                &with_part(&token, 2, &b64(&signature)),
                &jwks(),
                fake_verify
            ),
            Err(ReceiptError::BadSignature)
        );
        // The verifier is handed exactly the signing input and the signature.
        let mut handed = None;
        let _ = verify_with::<ReceiptClaims>(&token, &jwks(), |key, msg, sig| {
            handed = Some((*key, msg.to_vec(), *sig));
            true
        });
        let (k, msg, sig) = handed.unwrap();
        assert_eq!(k, key(1));
        assert_eq!(msg, format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert_eq!(b64(sig), parts[2]);
    }

    #[test]
    fn unknown_kid_and_rotated_keys() {
        let old = sign(&claims(), "k1", &key(1));
        let new = sign(&claims(), "k2", &key(2));
        let rotated = Jwks {
            keys: vec![Jwk::ed25519("k2", &key(2))],
        };
        // While the old key is published, old receipts verify; once it is dropped they do not.
        assert!(verify_with::<ReceiptClaims>(&old, &jwks(), fake_verify).is_ok());
        assert!(verify_with::<ReceiptClaims>(&new, &jwks(), fake_verify).is_ok());
        assert!(verify_with::<ReceiptClaims>(&new, &rotated, fake_verify).is_ok());
        assert_eq!(
            verify_with::<ReceiptClaims>(&old, &rotated, fake_verify),
            Err(ReceiptError::UnknownKid("k1".to_owned()))
        );
        // A key id whose key is another key's: the signature does not verify.
        let swapped = Jwks {
            keys: vec![Jwk::ed25519("k1", &key(2))],
        };
        assert_eq!(
            verify_with::<ReceiptClaims>(&old, &swapped, fake_verify),
            Err(ReceiptError::BadSignature)
        );
        // No kid at all.
        let header = Header {
            kid: None,
            ..Header::eddsa("k1", RECEIPT_TYP)
        };
        let no_kid = encode(&header, &to_json(&claims()), |msg| fake_sig(&key(1), msg));
        assert_eq!(
            verify_with::<ReceiptClaims>(&no_kid, &jwks(), fake_verify),
            Err(ReceiptError::MissingKid)
        );
    }

    #[test]
    fn jwks_shape_is_rfc8037() {
        let jwks = Jwks {
            keys: vec![Jwk::ed25519("2026-12", &key(7))],
        };
        let x = b64(key(7));
        assert_eq!(
            jwks.to_json(),
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"2026-12","alg":"EdDSA","use":"sig"}}]}}"#
            )
        );
        assert_eq!(x.len(), 43);
        assert_eq!(Jwks::from_json(&jwks.to_json()).unwrap(), jwks);
        assert_eq!(jwks.key("2026-12").unwrap(), key(7));
        // A key set with other kinds of keys parses; those keys are refused when named.
        let mixed = Jwks::from_json(&format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}},
                         {{"kty":"OKP","crv":"X25519","kid":"x","x":"{x}"}},
                         {{"kty":"OKP","crv":"Ed25519","kid":"enc","x":"{x}","use":"enc"}},
                         {{"kty":"OKP","crv":"Ed25519","kid":"es","x":"{x}","alg":"ES256"}},
                         {{"kty":"OKP","crv":"Ed25519","kid":"nox"}},
                         {{"kty":"OKP","crv":"Ed25519","kid":"short","x":"AAAA"}},
                         {{"kty":"OKP","crv":"Ed25519","kid":"pad","x":"{x}="}},
                         {{"kty":"OKP","crv":"Ed25519","kid":"ok","x":"{x}"}}]}}"#
        ))
        .unwrap();
        for (kid, reason) in [
            ("r", "kty is not OKP"),
            ("x", "crv is not Ed25519"),
            ("enc", "use is not sig"),
            ("es", "alg is not EdDSA"),
            ("nox", "x is missing"),
            ("short", "x is not 32 bytes"),
            ("pad", "x is not base64url without padding"),
        ] {
            assert_eq!(
                mixed.key(kid),
                Err(ReceiptError::UnusableKey {
                    kid: kid.to_owned(),
                    reason
                }),
                "{kid}"
            );
        }
        assert_eq!(mixed.key("ok").unwrap(), key(7));
        assert_eq!(
            mixed.key("none"),
            Err(ReceiptError::UnknownKid("none".to_owned()))
        );
        assert!(matches!(
            Jwks::from_json(r#"{"keys":{}}"#),
            Err(ReceiptError::Json {
                part: Part::Jwks,
                ..
            })
        ));
    }

    #[test]
    fn malformed_tokens_each_give_their_error() {
        let token = sign(&claims(), "k1", &key(1));
        let parts: Vec<&str> = token.split('.').collect();
        let verify = |t: &str| verify_with::<ReceiptClaims>(t, &jwks(), fake_verify);
        let json_err = |part: Part| move |r: Result<ReceiptClaims, ReceiptError>| matches!(r, Err(ReceiptError::Json { part: p, .. }) if p == part);

        // Length and segment count.
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(ReceiptError::TooLong(MAX_TOKEN_LEN + 1))
        );
        assert_eq!(verify(""), Err(ReceiptError::Segments(1)));
        assert_eq!(verify("abc"), Err(ReceiptError::Segments(1)));
        assert_eq!(
            verify(&format!("{}.{}", parts[0], parts[1])),
            Err(ReceiptError::Segments(2))
        );
        assert_eq!(verify(&format!("{token}.")), Err(ReceiptError::Segments(4)));
        assert_eq!(verify("...."), Err(ReceiptError::Segments(5)));

        // Base64: bad characters, padding, the standard alphabet, non-canonical trailing bits.
        for bad in ["!!!!", &format!("{}=", parts[0]), "ab+/", "eyJ"] {
            assert_eq!(
                verify(&with_part(&token, 0, bad)),
                Err(ReceiptError::Base64(Part::Header)),
                "{bad}"
            );
        }
        assert_eq!(
            verify(&with_part(&token, 1, "a")),
            Err(ReceiptError::Base64(Part::Payload))
        );
        assert_eq!(
            verify(&with_part(&token, 2, &format!("{}==", parts[2]))),
            Err(ReceiptError::Base64(Part::Signature))
        );

        // Header JSON: not JSON, not an object, missing alg, an unknown member (crit).
        for header in [
            "not json",
            "[]",
            r#"{"kid":"k1"}"#,
            r#"{"alg":"EdDSA","kid":"k1","typ":"consent-receipt+jwt","crit":["exp"]}"#,
            r#"{"alg":"EdDSA","alg":"EdDSA"}"#,
        ] {
            assert!(
                json_err(Part::Header)(verify(&with_part(&token, 0, &b64(header)))),
                "{header}"
            );
        }
        // Wrong algorithms, including "none" with an empty signature.
        for alg in ["none", "HS256", "ES256", "eddsa"] {
            let header = b64(format!(
                r#"{{"alg":"{alg}","kid":"k1","typ":"{RECEIPT_TYP}"}}"#
            ));
            assert_eq!(
                verify(&with_part(&with_part(&token, 0, &header), 2, "")),
                Err(ReceiptError::UnsupportedAlg(alg.to_owned()))
            );
        }
        // Signature length.
        assert_eq!(
            verify(&with_part(&token, 2, "")),
            Err(ReceiptError::SignatureLength(0))
        );
        assert_eq!(
            verify(&with_part(&token, 2, &b64([0u8; 65]))),
            Err(ReceiptError::SignatureLength(65))
        );
        // typ missing or other.
        let untyped = b64(r#"{"alg":"EdDSA","kid":"k1"}"#);
        assert_eq!(
            verify(&with_part(&token, 0, &untyped)),
            Err(ReceiptError::WrongType {
                expected: RECEIPT_TYP,
                found: None
            })
        );
        // Unknown kid.
        let header = b64(to_json(&Header::eddsa("k9", RECEIPT_TYP)));
        assert_eq!(
            verify(&with_part(&token, 0, &header)),
            Err(ReceiptError::UnknownKid("k9".to_owned()))
        );

        // Payloads that are signed but not receipts: the error is about JSON, after the
        // signature check.
        let signed = |payload: &[u8]| {
            encode(&Header::eddsa("k1", RECEIPT_TYP), payload, |msg| {
                fake_sig(&key(1), msg)
            })
        };
        let mut no_seq = serde_json::to_value(claims()).unwrap();
        no_seq.as_object_mut().unwrap().remove("seq");
        let mut bad_decision = serde_json::to_value(claims()).unwrap();
        bad_decision["general"] = "maybe".into();
        let mut negative_seq = serde_json::to_value(claims()).unwrap();
        negative_seq["seq"] = (-1).into();
        for payload in [
            b"not json".to_vec(),
            b"[]".to_vec(),
            b"\xff\xfe".to_vec(),
            to_json(&no_seq),
            to_json(&bad_decision),
            to_json(&negative_seq),
        ] {
            assert!(json_err(Part::Payload)(verify(&signed(&payload))));
        }
        // A receipt of another Kantara version.
        let mut old = claims();
        old.version = "KI-CR-v1.0.0".to_owned();
        assert_eq!(
            verify(&old.sign_with("k1", |msg| fake_sig(&key(1), msg))),
            Err(ReceiptError::UnsupportedVersion("KI-CR-v1.0.0".to_owned()))
        );
        // A receipt with a claim we do not know still verifies (forward compatibility).
        let mut extra = serde_json::to_value(claims()).unwrap();
        extra["spiCat"] = serde_json::json!([]);
        assert_eq!(verify(&signed(&to_json(&extra))), Ok(claims()));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let token = sign(&claims(), "k1", &key(1));
        // Every prefix, and every single-byte change at every position (on char boundaries).
        for end in 0..=token.len() {
            let _ = verify_with::<ReceiptClaims>(&token[..end], &jwks(), fake_verify);
        }
        for i in 0..token.len() {
            for replacement in ['.', '=', '-', 'A', '\u{e9}', '\0'] {
                let mut bytes: Vec<char> = token.chars().collect();
                bytes[i] = replacement;
                let tampered: String = bytes.into_iter().collect();
                let result = verify_with::<ReceiptClaims>(&tampered, &jwks(), fake_verify);
                if tampered != token {
                    assert!(result.is_err(), "{tampered}");
                }
            }
        }
    }
}
