//! The server's receipt keys: Ed25519 keys that sign consent receipts and chain checkpoints.
//!
//! The format (claims, compact JWS, JWKS) is [`consent_core::receipt`]'s, shared with the
//! clients that check receipts; this module holds the private keys and makes the one-line calls
//! into `ring`. Keys rotate like the link keys: every key has an id, the current one signs, every
//! key in the set verifies and is published in the JWKS, so a receipt stays verifiable as long as
//! its key is kept in the keys file (`receipt_keys`, `current_receipt_key`). A server started
//! without receipt keys makes an ephemeral one, whose receipts no longer verify once it stops.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_core::Decision;
use consent_core::receipt::{
    self, Checkpoint, Jwk, Jwks, PublicKey, ReceiptClaims, ReceiptError, Signature, SignedClaims,
};
use consent_core::receipt::{PiiController, PurposeReceipt, Service};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde_json::Value;

use crate::model::{Profile, ProfileKey, Recorded};
use sha2::{Digest, Sha256};

/// The length of an Ed25519 private key seed, in bytes.
pub const RECEIPT_SEED_LEN: usize = 32;

/// One receipt key: its id and its Ed25519 key pair (made from a 32-byte seed, which is not
/// kept; `Debug` shows the id and the public key only).
#[derive(Clone)]
pub struct ReceiptKey {
    id: String,
    pair: Arc<Ed25519KeyPair>,
    public: PublicKey,
}

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptKey")
            .field("id", &self.id)
            .field("x", &URL_SAFE_NO_PAD.encode(self.public))
            .finish_non_exhaustive()
    }
}

/// A bad receipt key or key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptKeyError {
    /// The id is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("receipt key id {0:?} must be 1 to 32 characters of [A-Za-z0-9_-]")]
    BadId(String),
    /// The seed is not 32 bytes.
    #[error("receipt key {0:?}: the seed must be exactly 32 bytes")]
    BadSeed(String),
    /// Two keys have the same id.
    #[error("two receipt keys have the id {0:?}")]
    DuplicateId(String),
    /// The set has no key, or the current index is out of range.
    #[error("no current receipt key")]
    NoKey,
    /// The system's random number generator failed (ephemeral keys).
    #[error("no randomness available for an ephemeral receipt key")]
    Random,
}

impl ReceiptKey {
    /// The key with id `id` (1 to 32 characters of `[A-Za-z0-9_-]`) and the Ed25519 private key
    /// `seed` (RFC 8032's 32-byte secret key).
    pub fn new(id: &str, seed: &[u8]) -> Result<Self, ReceiptKeyError> {
        if !crate::links::key_id_ok(id) {
            return Err(ReceiptKeyError::BadId(id.to_owned()));
        }
        if seed.len() != RECEIPT_SEED_LEN {
            return Err(ReceiptKeyError::BadSeed(id.to_owned()));
        }
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| ReceiptKeyError::BadSeed(id.to_owned()))?;
        let public = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| ReceiptKeyError::BadSeed(id.to_owned()))?;
        Ok(Self {
            id: id.to_owned(),
            pair: Arc::new(pair),
            public,
        })
    }

    /// The key id (the `kid` of what it signs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(&self.id, &self.public)
    }

    /// The public key's RFC 7638 thumbprint: base64url of the SHA-256 of
    /// [`Jwk::thumbprint_input`].
    pub fn thumbprint(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.jwk().thumbprint_input()))
    }

    /// Signs `message`.
    fn sign(&self, message: &[u8]) -> ring::signature::Signature {
        self.pair.sign(message)
    }
}

/// Checks one Ed25519 signature (the `verify` of [`receipt::verify_with`]).
pub fn verify_ed25519(public_key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// The receipt keys: the current one signs, all of them verify and are published.
#[derive(Debug, Clone)]
pub struct ReceiptKeys {
    keys: Vec<ReceiptKey>,
    current: usize,
    jwks: Arc<Jwks>,
}

impl ReceiptKeys {
    /// Keys with distinct ids, `current` the index of the one that signs.
    pub fn new(keys: Vec<ReceiptKey>, current: usize) -> Result<Self, ReceiptKeyError> {
        if current >= keys.len() {
            return Err(ReceiptKeyError::NoKey);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(ReceiptKeyError::DuplicateId(key.id.clone()));
            }
        }
        let jwks = Arc::new(Jwks {
            keys: keys.iter().map(ReceiptKey::jwk).collect(),
        });
        Ok(Self {
            keys,
            current,
            jwks,
        })
    }

    /// One random key, for a server started without receipt keys (its receipts no longer verify
    /// once it stops). Its id is `eph-` and the start of its thumbprint, so that two ephemeral
    /// keys never share an id.
    pub fn ephemeral() -> Result<Self, ReceiptKeyError> {
        let mut seed = [0u8; RECEIPT_SEED_LEN];
        getrandom::fill(&mut seed).map_err(|_| ReceiptKeyError::Random)?;
        let key = ReceiptKey::new("ephemeral", &seed)?;
        let id = format!("eph-{}", key.thumbprint().get(..28).unwrap_or_default());
        let key = ReceiptKey::new(&id, &seed)?;
        Self::new(vec![key], 0)
    }

    /// The key that signs.
    pub fn current(&self) -> &ReceiptKey {
        // `new` checked the index; `keys` is never empty.
        &self.keys[self.current]
    }

    /// The key ids, current one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.current())
            .chain(
                self.keys
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != self.current)
                    .map(|(_, k)| k),
            )
            .map(ReceiptKey::id)
    }

    /// The public keys, as `GET /.well-known/consent-receipt-keys` publishes them.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// Signs a receipt with the current key: a compact JWS with `typ`
    /// [`receipt::RECEIPT_TYP`].
    pub fn sign_receipt(&self, claims: &ReceiptClaims) -> String {
        let key = self.current();
        claims.sign_with(&key.id, |msg| key.sign(msg))
    }

    /// Signs a chain checkpoint with the current key: a compact JWS with `typ`
    /// [`receipt::CHECKPOINT_TYP`].
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> String {
        let key = self.current();
        checkpoint.sign_with(&key.id, |msg| key.sign(msg))
    }

    /// Verifies a receipt signed by any key of the set and returns its claims.
    pub fn verify_receipt(&self, token: &str) -> Result<ReceiptClaims, ReceiptError> {
        receipt::verify_with(token, &self.jwks, verify_ed25519)
    }

    /// Verifies a checkpoint signed by any key of the set and returns its claims.
    pub fn verify_checkpoint(&self, token: &str) -> Result<Checkpoint, ReceiptError> {
        receipt::verify_with(token, &self.jwks, verify_ed25519)
    }
}

/// The request header that asks for the signed receipt of the change a request makes
/// (`set-consent`, preference updates).
pub(crate) const RECEIPT_HEADER: &str = "consent-receipt";

/// Whether a request's answer carries the receipt of its change: always on a server configured
/// so (`receipts_always`), else when the request sends `consent-receipt: true`. Signing costs about
/// 28 µs of CPU per change, so it is not done for clients that do not keep receipts.
pub(crate) fn wanted(always: bool, headers: &axum::http::HeaderMap) -> bool {
    always
        || headers
            .get(RECEIPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// What the receipts say about the controller beyond its name: Kantara's `jurisdiction` and
/// `policyUrl` (both required by the Kantara schema; left out of receipts when not configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiptPolicy {
    /// The jurisdiction the controller is subject to, e.g. `EU`.
    pub jurisdiction: Option<String>,
    /// The privacy policy the consent is given under.
    pub policy_url: Option<String>,
}

impl ReceiptPolicy {
    /// A policy with both fields.
    pub fn new(jurisdiction: Option<String>, policy_url: Option<String>) -> Self {
        Self {
            jurisdiction,
            policy_url,
        }
    }
}

/// The receipt of one recorded consent change: who (the record's keyed hash of the identity),
/// what (every purpose of the profile's consents and subscriptions after the change, with its
/// decision), when, how (the record's source) and where in the chain (sequence and hash).
pub(crate) fn claims_for(
    policy: &ReceiptPolicy,
    key: &ProfileKey,
    source: &str,
    general: Option<Decision>,
    profile: &Profile,
    record: &Recorded,
    now_millis: i64,
) -> ReceiptClaims {
    let secs = |ms: i64| u64::try_from(ms.div_euclid(1000)).unwrap_or(0);
    let mut services = Vec::new();
    let mut consents = Vec::new();
    purposes(&profile.consents, &mut String::new(), &mut consents);
    if !consents.is_empty() {
        services.push(Service {
            service: "consents".to_owned(),
            purposes: consents,
        });
    }
    let mut subscriptions = Vec::new();
    if let Value::Object(map) = &profile.subscriptions {
        for (name, value) in map {
            if let Some(val) = value.get("val").and_then(Value::as_str) {
                subscriptions.push(PurposeReceipt::explicit(name, decision_of(val)));
            }
        }
    }
    if !subscriptions.is_empty() {
        services.push(Service {
            service: "subscriptions".to_owned(),
            purposes: subscriptions,
        });
    }
    ReceiptClaims {
        version: receipt::KANTARA_VERSION.to_owned(),
        jurisdiction: policy.jurisdiction.clone(),
        consent_timestamp: secs(record.created_at),
        collection_method: source.to_owned(),
        consent_receipt_id: format!("{}/{}/{}", key.org, key.sandbox, record.seq),
        pii_principal_id: format!("hmac-sha256:{}", record.subject),
        pii_controllers: vec![PiiController::named(&key.org)],
        policy_url: policy.policy_url.clone(),
        language: None,
        services,
        sensitive: false,
        spi_cat: Vec::new(),
        org: key.org.clone(),
        sandbox: key.sandbox.clone(),
        seq: u64::try_from(record.seq).unwrap_or(0),
        chain_hash: record.hash.clone(),
        general,
        iat: secs(now_millis),
    }
}

/// `y` is in, `n` out, anything else pending (as Edge reads a `val`).
fn decision_of(val: &str) -> Decision {
    match val {
        "y" => Decision::In,
        "n" => Decision::Out,
        _ => Decision::Pending,
    }
}

/// Every `{"val": …}` of the XDM consents, by dotted path (`collect`, `personalize.content`,
/// `marketing.email`). Identity-specific consents (`idSpecific`) are left out: they name
/// identities, which a receipt never holds.
fn purposes(value: &Value, path: &mut String, out: &mut Vec<PurposeReceipt>) {
    let Value::Object(map) = value else { return };
    if let Some(val) = map.get("val").and_then(Value::as_str) {
        out.push(PurposeReceipt::explicit(path, decision_of(val)));
        return;
    }
    for (name, inner) in map {
        if path.is_empty() && (name == "idSpecific" || name == "metadata") {
            continue;
        }
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        purposes(inner, path, out);
        path.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use consent_core::Decision;
    use consent_core::receipt::{
        Header, KANTARA_VERSION, PiiController, PurposeReceipt, RECEIPT_TYP, Service,
    };

    use super::*;

    /// RFC 8037 Appendix A.1: the example private key `d` and public key `x`.
    const RFC_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    /// RFC 8037 Appendix A.3: its thumbprint.
    const RFC_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
    /// RFC 8037 Appendix A.4: the JWS of "Example of Ed25519 signing" under `{"alg":"EdDSA"}`.
    const RFC_TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    fn key(id: &str, n: u8) -> ReceiptKey {
        ReceiptKey::new(id, &[n; RECEIPT_SEED_LEN]).unwrap()
    }

    fn claims() -> ReceiptClaims {
        ReceiptClaims {
            version: KANTARA_VERSION.to_owned(),
            jurisdiction: None,
            consent_timestamp: 1_765_000_000,
            collection_method: "edge:set-consent".to_owned(),
            consent_receipt_id: "ORG@AdobeOrg/prod/42".to_owned(),
            pii_principal_id: "hmac-sha256:3b1f".to_owned(),
            pii_controllers: vec![PiiController::named("ORG@AdobeOrg")],
            policy_url: None,
            language: None,
            services: vec![Service {
                service: "adobe-consent".to_owned(),
                purposes: vec![PurposeReceipt::explicit("collect", Decision::In)],
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

    fn with_part(token: &str, index: usize, part: &str) -> String {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[index] = part;
        parts.join(".")
    }

    #[test]
    fn rfc8037_appendix_a_vector() {
        let seed = URL_SAFE_NO_PAD.decode(RFC_D).unwrap();
        let key = ReceiptKey::new("rfc", &seed).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(key.public_key()), RFC_X);
        assert_eq!(key.thumbprint(), RFC_THUMBPRINT);
        let header = Header {
            alg: "EdDSA".to_owned(),
            kid: None,
            typ: None,
        };
        let token = receipt::encode(&header, b"Example of Ed25519 signing", |msg| key.sign(msg));
        assert_eq!(token, RFC_TOKEN);
        let decoded = receipt::decode(RFC_TOKEN).unwrap();
        assert!(verify_ed25519(
            key.public_key(),
            decoded.signing_input.as_bytes(),
            &decoded.signature
        ));
        let mut other = decoded.signature;
        other[0] ^= 1;
        assert!(!verify_ed25519(
            key.public_key(),
            decoded.signing_input.as_bytes(),
            &other
        ));
    }

    #[test]
    fn receipt_and_checkpoint_round_trip() {
        let keys = ReceiptKeys::new(vec![key("2026-12", 1)], 0).unwrap();
        let token = keys.sign_receipt(&claims());
        let header = receipt::decode(&token).unwrap().header;
        assert_eq!(header, Header::eddsa("2026-12", RECEIPT_TYP));
        assert_eq!(keys.verify_receipt(&token), Ok(claims()));
        let cp = keys.sign_checkpoint(&checkpoint());
        assert_eq!(keys.verify_checkpoint(&cp), Ok(checkpoint()));
        // Neither passes for the other.
        assert!(matches!(
            keys.verify_receipt(&cp),
            Err(ReceiptError::WrongType { .. })
        ));
        assert!(matches!(
            keys.verify_checkpoint(&token),
            Err(ReceiptError::WrongType { .. })
        ));
        // Ed25519 is deterministic: the same claims, the same token.
        assert_eq!(keys.sign_receipt(&claims()), token);
        // A client verifies with the published JWKS only, after a trip through JSON.
        let published = Jwks::from_json(&keys.jwks().to_json()).unwrap();
        let checked: ReceiptClaims =
            receipt::verify_with(&token, &published, verify_ed25519).unwrap();
        assert_eq!(checked, claims());
    }

    #[test]
    fn tampered_tokens_fail() {
        let keys = ReceiptKeys::new(vec![key("a", 1), key("b", 2)], 0).unwrap();
        let token = keys.sign_receipt(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        // Payload: another decision under the old signature.
        let mut other = claims();
        other.general = Some(Decision::Out);
        let other_token = keys.sign_receipt(&other);
        let forged = with_part(&token, 1, other_token.split('.').nth(1).unwrap());
        assert_eq!(
            keys.verify_receipt(&forged),
            Err(ReceiptError::BadSignature)
        );
        // Header: the other key of the set.
        let header =
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"b","typ":"consent-receipt+jwt"}"#);
        assert_eq!(
            keys.verify_receipt(&with_part(&token, 0, &header)),
            Err(ReceiptError::BadSignature)
        );
        // Signature: every byte flipped in turn.
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        for i in 0..signature.len() {
            let mut bad = signature.clone();
            bad[i] ^= 0x80;
            assert_eq!(
                keys.verify_receipt(&with_part(&token, 2, &URL_SAFE_NO_PAD.encode(&bad))),
                Err(ReceiptError::BadSignature),
                "byte {i}"
            );
        }
        // Another key set, same ids, other keys.
        let impostor = ReceiptKeys::new(vec![key("a", 9)], 0).unwrap();
        assert_eq!(
            impostor.verify_receipt(&token),
            Err(ReceiptError::BadSignature)
        );
        // Malformed input reaches core's typed errors.
        assert_eq!(keys.verify_receipt("x.y"), Err(ReceiptError::Segments(2)));
        assert_eq!(
            keys.verify_receipt(&with_part(&token, 0, "!")),
            Err(ReceiptError::Base64(receipt::Part::Header))
        );
    }

    #[test]
    fn rotation_keeps_old_receipts_while_their_key_is_kept() {
        let before = ReceiptKeys::new(vec![key("2026-11", 1)], 0).unwrap();
        let old = before.sign_receipt(&claims());
        // The new key is added and made current; the old one stays to verify.
        let rotated = ReceiptKeys::new(vec![key("2026-11", 1), key("2026-12", 2)], 1).unwrap();
        assert_eq!(rotated.ids().collect::<Vec<_>>(), ["2026-12", "2026-11"]);
        let new = rotated.sign_receipt(&claims());
        assert_eq!(
            receipt::decode(&new).unwrap().header.kid.as_deref(),
            Some("2026-12")
        );
        assert_eq!(rotated.verify_receipt(&old), Ok(claims()));
        assert_eq!(rotated.verify_receipt(&new), Ok(claims()));
        assert_eq!(rotated.jwks().keys.len(), 2);
        // Once the old key is dropped, its receipts name an unknown key.
        let retired = ReceiptKeys::new(vec![key("2026-12", 2)], 0).unwrap();
        assert_eq!(
            retired.verify_receipt(&old),
            Err(ReceiptError::UnknownKid("2026-11".to_owned()))
        );
        assert_eq!(retired.verify_receipt(&new), Ok(claims()));
    }

    #[test]
    fn jwks_is_rfc8037_okp() {
        let seed = URL_SAFE_NO_PAD.decode(RFC_D).unwrap();
        let keys = ReceiptKeys::new(
            vec![ReceiptKey::new("rfc", &seed).unwrap(), key("two", 2)],
            0,
        )
        .unwrap();
        let value: Value = serde_json::from_str(&keys.jwks().to_json()).unwrap();
        assert_eq!(
            value["keys"][0],
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": RFC_X, "kid": "rfc",
                               "alg": "EdDSA", "use": "sig"})
        );
        assert_eq!(value["keys"].as_array().unwrap().len(), 2);
        // No private member, anywhere.
        let text = keys.jwks().to_json();
        assert!(!text.contains("\"d\""));
        assert!(!text.contains(RFC_D));
    }

    #[test]
    fn bad_keys_are_refused_and_debug_hides_the_seed() {
        assert_eq!(
            ReceiptKey::new("", &[1; 32]).unwrap_err(),
            ReceiptKeyError::BadId(String::new())
        );
        assert!(matches!(
            ReceiptKey::new("a.b", &[1; 32]),
            Err(ReceiptKeyError::BadId(_))
        ));
        assert!(matches!(
            ReceiptKey::new(&"a".repeat(33), &[1; 32]),
            Err(ReceiptKeyError::BadId(_))
        ));
        for len in [0, 31, 33, 64] {
            assert_eq!(
                ReceiptKey::new("a", &vec![1; len]).unwrap_err(),
                ReceiptKeyError::BadSeed("a".to_owned())
            );
        }
        assert_eq!(
            ReceiptKeys::new(vec![key("a", 1), key("a", 2)], 0).unwrap_err(),
            ReceiptKeyError::DuplicateId("a".to_owned())
        );
        assert_eq!(
            ReceiptKeys::new(Vec::new(), 0).unwrap_err(),
            ReceiptKeyError::NoKey
        );
        assert_eq!(
            ReceiptKeys::new(vec![key("a", 1)], 1).unwrap_err(),
            ReceiptKeyError::NoKey
        );

        let seed = [0x5a_u8; 32];
        let keys = ReceiptKeys::new(vec![ReceiptKey::new("k", &seed).unwrap()], 0).unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("\"k\""));
        for secret in [
            URL_SAFE_NO_PAD.encode(seed),
            base64::engine::general_purpose::STANDARD.encode(seed),
            format!("{:?}", seed),
            "90, 90".to_owned(),
            "5a5a".to_owned(),
        ] {
            assert!(!debug.contains(&secret), "{debug}");
        }
    }

    #[test]
    fn ephemeral_keys_differ_and_sign() {
        let one = ReceiptKeys::ephemeral().unwrap();
        let two = ReceiptKeys::ephemeral().unwrap();
        let id = one.current().id().to_owned();
        assert!(id.starts_with("eph-") && id.len() == 32, "{id}");
        assert_ne!(id, two.current().id());
        assert_ne!(one.current().public_key(), two.current().public_key());
        let token = one.sign_receipt(&claims());
        assert_eq!(one.verify_receipt(&token), Ok(claims()));
        assert_eq!(
            two.verify_receipt(&token),
            Err(ReceiptError::UnknownKid(id))
        );
    }
}
