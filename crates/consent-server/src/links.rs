//! Signed, encrypted unsubscribe links: `params` and `pid` are XChaCha20-Poly1305 ciphertexts,
//! `sig` is an HMAC-SHA256 over both; every part names the key it was made with, so keys can be
//! rotated while older links keep working.
//!
//! Wire forms: `params` and `pid` are `<key id>.<base64url(nonce ‖ ciphertext)>`; `sig` is
//! `<key id>.<base64url(tag)>`. The signature is checked (in constant time) before anything is
//! decrypted, and `params` and `pid` are bound to their role by the AEAD's associated data, so
//! they cannot be swapped.
//!
//! Format versions: a link made now carries `"v": 2` inside its (encrypted) `params`, and its
//! `pid` is sealed with associated data naming the organisation, the sandbox and the exact
//! `params` part, so a `pid` paired with any other `params` never decrypts, even under a valid
//! signature. Links made before (no `v` in `params`, version 1) had only the role as associated
//! data; they keep working until they expire, because every way in checks the signature over
//! both parts first, and only the server can make one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The marketing channels a link can unsubscribe from.
pub(crate) const CHANNELS: &[&str] = &["email", "push", "sms"];
/// The scopes a link can have.
pub(crate) const SCOPES: &[&str] = &["channel", "identity", "subscription"];
/// The most characters the endpoints accept in one part of a link (after the key id).
pub(crate) const MAX_PART_CHARS: usize = 8192;
/// The format version of the links this server makes (see the module documentation).
const LINK_VERSION: u64 = 2;

/// One link key: an id and the encryption and MAC keys derived from its secret.
#[derive(Clone)]
pub struct LinkKey {
    id: String,
    enc: [u8; 32],
    mac: [u8; 32],
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A bad link key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The id is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("link key id {0:?} must be 1 to 32 characters of [A-Za-z0-9_-]")]
    BadId(String),
    /// The secret is shorter than 32 bytes.
    #[error("link key {0:?}: the secret must be at least 32 bytes")]
    ShortSecret(String),
}

/// Whether `id` can name a key (link or receipt key): 1 to 32 characters of `[A-Za-z0-9_-]`, so
/// that it fits in a link part or a JWS header as it is.
pub(crate) fn key_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl LinkKey {
    /// Derives a key from a secret of at least 32 bytes.
    pub fn new(id: &str, secret: &[u8]) -> Result<Self, KeyError> {
        if !key_id_ok(id) {
            return Err(KeyError::BadId(id.to_owned()));
        }
        if secret.len() < 32 {
            return Err(KeyError::ShortSecret(id.to_owned()));
        }
        Ok(Self {
            id: id.to_owned(),
            enc: derive(secret, b"consent-server link encryption v1"),
            mac: derive(secret, b"consent-server link signature v1"),
        })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret) {
        mac.update(label);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// The message side of a link: which message, campaign and journey it came from, where it
/// applies and what it unsubscribes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkParams {
    /// The organisation.
    pub org: String,
    /// The sandbox (`s` in Journey Optimizer's payload).
    #[serde(rename = "s")]
    pub sandbox: String,
    /// The channel: `email`, `push` or `sms`.
    #[serde(rename = "ch")]
    pub channel: String,
    /// The unsubscribe scope: `channel`, `identity` or `subscription`.
    #[serde(rename = "us")]
    pub scope: String,
    /// The subscription list, for the `subscription` scope.
    #[serde(rename = "sub", default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// Message execution id.
    #[serde(default)]
    pub m: String,
    /// Campaign id.
    #[serde(default)]
    pub ci: String,
    /// Journey version id.
    #[serde(default)]
    pub jv: String,
    /// Journey action id.
    #[serde(default)]
    pub ja: String,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

/// The profile side of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkProfile {
    /// The profile's identity value.
    pub pid: String,
    /// The profile's identity namespace.
    pub pns: String,
    /// The address the message went to (for the `identity` scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// The address's namespace, e.g. `Email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ens: Option<String>,
}

/// A made link's three query parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedLink {
    /// The encrypted [`LinkParams`].
    pub params: String,
    /// The encrypted [`LinkProfile`].
    pub pid: String,
    /// The signature over both.
    pub sig: String,
}

/// Why a link was refused. Every variant changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A part is missing or not in the wire form.
    #[error("the link is malformed")]
    Malformed,
    /// A part names a key this server does not have.
    #[error("the link was signed with an unknown key")]
    UnknownKey,
    /// The signature does not match.
    #[error("the link's signature does not verify")]
    BadSignature,
    /// A part does not decrypt or its content does not parse.
    #[error("the link does not decrypt")]
    Undecryptable,
    /// The link has expired.
    #[error("the link has expired")]
    Expired,
}

/// Making a link failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The server has no link key.
    #[error("no link key is configured")]
    NoKey,
    /// The system's random number generator failed.
    #[error("no randomness available")]
    Random,
    /// A part of the link would be longer than the endpoints accept (8,192 characters after
    /// the key id), so the link could never be used: `part` is `params` or `pid`.
    #[error("the link's {part} would be {chars} characters, more than the {max} the endpoints accept", max = MAX_PART_CHARS)]
    TooLong {
        /// `params` or `pid`.
        part: &'static str,
        /// Its length after the key id.
        chars: usize,
    },
}

/// The link keys: the current one makes links, all of them verify.
#[derive(Debug, Clone)]
pub struct LinkKeys {
    keys: Vec<LinkKey>,
    current: usize,
}

impl LinkKeys {
    /// Keys, with `current` the index of the one that makes new links.
    pub fn new(keys: Vec<LinkKey>, current: usize) -> Self {
        let current = current.min(keys.len().saturating_sub(1));
        Self { keys, current }
    }

    /// One random key, for a server started without `--keys` (its links die with it).
    pub fn ephemeral() -> Result<Self, SignError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|_| SignError::Random)?;
        let key = LinkKey::new("ephemeral", &secret).map_err(|_| SignError::NoKey)?;
        Ok(Self::new(vec![key], 0))
    }

    /// The key ids, current one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys
            .get(self.current)
            .into_iter()
            .chain(
                self.keys
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != self.current)
                    .map(|(_, k)| k),
            )
            .map(LinkKey::id)
    }

    fn find(&self, id: &str) -> Option<&LinkKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Makes a link with the current key.
    pub fn sign(
        &self,
        params: &LinkParams,
        profile: &LinkProfile,
    ) -> Result<SignedLink, SignError> {
        let key = self.keys.get(self.current).ok_or(SignError::NoKey)?;
        let mut params_value = serde_json::to_value(params).map_err(|_| SignError::NoKey)?;
        if let Some(object) = params_value.as_object_mut() {
            object.insert("v".into(), LINK_VERSION.into());
        }
        let params_json = serde_json::to_vec(&params_value).map_err(|_| SignError::NoKey)?;
        let profile_json = serde_json::to_vec(profile).map_err(|_| SignError::NoKey)?;
        let params_part = seal(key, b"params", &params_json)?;
        let pid = seal(
            key,
            &pid_aad(&params.org, &params.sandbox, &params_part),
            &profile_json,
        )?;
        for (part, text) in [("params", &params_part), ("pid", &pid)] {
            let chars = part_chars(text);
            if chars > MAX_PART_CHARS {
                return Err(SignError::TooLong { part, chars });
            }
        }
        let params = params_part;
        let tag = mac(key, &params, &pid);
        Ok(SignedLink {
            params,
            pid,
            sig: format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(tag)),
        })
    }

    /// Verifies the signature, then decrypts both parts and checks the expiry against `now`
    /// (seconds since the epoch).
    pub fn verify(
        &self,
        params: &str,
        pid: &str,
        sig: &str,
        now: i64,
    ) -> Result<(LinkParams, LinkProfile), LinkError> {
        let (link, profile) = self.decrypt(params, pid, sig)?;
        if link.exp.is_some_and(|exp| now >= exp) {
            return Err(LinkError::Expired);
        }
        Ok((link, profile))
    }

    /// Verifies the signature, then decrypts both parts, without checking the expiry (for the
    /// authenticated decrypt API: the caller is the organisation itself). Nothing is decrypted
    /// before the signature over both parts is verified.
    pub fn decrypt(
        &self,
        params: &str,
        pid: &str,
        sig: &str,
    ) -> Result<(LinkParams, LinkProfile), LinkError> {
        let (sig_kid, tag) = split(sig)?;
        let key = self.find(sig_kid).ok_or(LinkError::UnknownKey)?;
        let mut verifier = mac_state(key);
        verifier.update(&signed_input(params, pid));
        // `verify_slice` compares in constant time.
        verifier
            .verify_slice(&tag)
            .map_err(|_| LinkError::BadSignature)?;
        self.open_link(params, pid)
    }

    /// Decrypts `params`, then `pid` with the associated data of the link's format version.
    fn open_link(&self, params: &str, pid: &str) -> Result<(LinkParams, LinkProfile), LinkError> {
        /// The format version inside `params`; links made before it existed are version 1.
        #[derive(Deserialize)]
        struct Version {
            #[serde(default = "version_1")]
            v: u64,
        }
        fn version_1() -> u64 {
            1
        }
        let params_json = self.open(params, b"params")?;
        let link: LinkParams =
            serde_json::from_slice(&params_json).map_err(|_| LinkError::Undecryptable)?;
        let version: Version =
            serde_json::from_slice(&params_json).map_err(|_| LinkError::Undecryptable)?;
        let aad = match version.v {
            // Version 1: only the role. Safe only because the signature binds both parts.
            1 => b"pid".to_vec(),
            LINK_VERSION => pid_aad(&link.org, &link.sandbox, params),
            _ => return Err(LinkError::Undecryptable),
        };
        let profile: LinkProfile =
            serde_json::from_slice(&self.open(pid, &aad)?).map_err(|_| LinkError::Undecryptable)?;
        Ok((link, profile))
    }

    fn open(&self, part: &str, role: &[u8]) -> Result<Vec<u8>, LinkError> {
        let (kid, bytes) = split(part)?;
        let key = self.find(kid).ok_or(LinkError::UnknownKey)?;
        if bytes.len() < 24 + 16 {
            return Err(LinkError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let cipher =
            XChaCha20Poly1305::new_from_slice(&key.enc).map_err(|_| LinkError::Undecryptable)?;
        let nonce = chacha20poly1305::XNonce::try_from(nonce).map_err(|_| LinkError::Malformed)?;
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: role,
                },
            )
            .map_err(|_| LinkError::Undecryptable)
    }
}

fn split(part: &str) -> Result<(&str, Vec<u8>), LinkError> {
    let (kid, body) = part.split_once('.').ok_or(LinkError::Malformed)?;
    if kid.is_empty() || body.len() > MAX_PART_CHARS {
        return Err(LinkError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| LinkError::Malformed)?;
    Ok((kid, bytes))
}

/// How many characters of `part` count against [`MAX_PART_CHARS`] (those after the key id).
pub(crate) fn part_chars(part: &str) -> usize {
    part.split_once('.')
        .map_or(part.len(), |(_, body)| body.len())
}

/// The associated data of a version 2 `pid`: the role, the version, and the organisation,
/// sandbox and `params` part it belongs to, each length-prefixed.
fn pid_aad(org: &str, sandbox: &str, params_part: &str) -> Vec<u8> {
    let mut aad = b"pid\0v2".to_vec();
    for field in [org, sandbox, params_part] {
        aad.extend_from_slice(&(field.len() as u64).to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad
}

fn seal(key: &LinkKey, role: &[u8], plaintext: &[u8]) -> Result<String, SignError> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|_| SignError::Random)?;
    let cipher = XChaCha20Poly1305::new_from_slice(&key.enc).map_err(|_| SignError::NoKey)?;
    let ciphertext = cipher
        .encrypt(
            &chacha20poly1305::XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: role,
            },
        )
        .map_err(|_| SignError::NoKey)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(out)))
}

fn mac_state(key: &LinkKey) -> HmacSha256 {
    // A 32-byte key is always accepted by HMAC; `new_from_slice` only fails for no key.
    <HmacSha256 as KeyInit>::new_from_slice(&key.mac)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
}

fn signed_input(params: &str, pid: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(params.len() + pid.len() + 4);
    input.extend_from_slice(b"v1\n");
    input.extend_from_slice(params.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(pid.as_bytes());
    input
}

fn mac(key: &LinkKey, params: &str, pid: &str) -> Vec<u8> {
    let mut state = mac_state(key);
    state.update(&signed_input(params, pid));
    state.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> LinkKeys {
        LinkKeys::new(
            vec![
                LinkKey::new("old", &[1; 32]).unwrap(),
                LinkKey::new("new", &[2; 32]).unwrap(),
            ],
            1,
        )
    }

    fn params(exp: Option<i64>) -> LinkParams {
        LinkParams {
            org: "ORG@AdobeOrg".into(),
            sandbox: "prod".into(),
            channel: "email".into(),
            scope: "channel".into(),
            subscription: None,
            m: "m1".into(),
            ci: "c1".into(),
            jv: String::new(),
            ja: String::new(),
            exp,
        }
    }

    fn profile() -> LinkProfile {
        LinkProfile {
            pid: "p1".into(),
            pns: "CRMID".into(),
            e: Some("a@example.com".into()),
            ens: Some("Email".into()),
        }
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/link_params.rs`): `sign` made links whose parts were
    /// longer than `verify` and `decrypt` accept, so a signed link did not round-trip (the admin
    /// API refused them, by a check of its own). `sign` refuses them itself; a link just under
    /// the limit still round-trips.
    #[test]
    fn a_link_too_long_to_verify_is_not_signed() {
        let keys = keys();
        let mut long = params(None);
        // A NUL is escaped to six characters in JSON, then grows by a third in base64.
        long.org = "\0".repeat(1100);
        let err = keys.sign(&long, &profile()).unwrap_err();
        assert!(
            matches!(err, SignError::TooLong { part: "params", chars } if chars > MAX_PART_CHARS),
            "{err:?}"
        );
        assert!(err.to_string().contains("params"), "{err}");
        let mut long_pid = profile();
        long_pid.pid = "x".repeat(7000);
        let err = keys.sign(&params(None), &long_pid).unwrap_err();
        assert!(
            matches!(err, SignError::TooLong { part: "pid", .. }),
            "{err:?}"
        );

        let mut fits = params(None);
        fits.org = "\0".repeat(900);
        let link = keys.sign(&fits, &profile()).unwrap();
        assert!(part_chars(&link.params) <= MAX_PART_CHARS);
        assert_eq!(
            keys.verify(&link.params, &link.pid, &link.sig, 0).unwrap(),
            (fits, profile())
        );
    }

    #[test]
    fn a_link_round_trips_and_rotated_keys_still_verify() {
        let keys = keys();
        let link = keys.sign(&params(None), &profile()).unwrap();
        assert!(link.sig.starts_with("new."));
        assert_eq!(
            keys.verify(&link.params, &link.pid, &link.sig, 0).unwrap(),
            (params(None), profile())
        );
        let old_only = LinkKeys::new(vec![LinkKey::new("old", &[1; 32]).unwrap()], 0);
        let old_link = old_only.sign(&params(None), &profile()).unwrap();
        assert!(
            keys.verify(&old_link.params, &old_link.pid, &old_link.sig, 0)
                .is_ok()
        );
        assert_eq!(
            old_only.verify(&link.params, &link.pid, &link.sig, 0),
            Err(LinkError::UnknownKey)
        );
    }

    #[test]
    fn tampering_and_expiry_are_refused() {
        let keys = keys();
        let link = keys.sign(&params(Some(100)), &profile()).unwrap();
        assert_eq!(
            keys.verify(&link.params, &link.pid, &link.sig, 100),
            Err(LinkError::Expired)
        );
        assert!(keys.verify(&link.params, &link.pid, &link.sig, 99).is_ok());
        let mut bad = link.params.clone();
        bad.push('A');
        assert_eq!(
            keys.verify(&bad, &link.pid, &link.sig, 0),
            Err(LinkError::BadSignature)
        );
        // Swapping the parts breaks the signature; even re-signed, the roles do not decrypt.
        assert_eq!(
            keys.verify(&link.pid, &link.params, &link.sig, 0),
            Err(LinkError::BadSignature)
        );
        let resigned = resign(&keys, &link.pid, &link.params);
        assert_eq!(
            keys.decrypt(&link.pid, &link.params, &resigned),
            Err(LinkError::Undecryptable)
        );
        assert_eq!(keys.verify("", "", "", 0), Err(LinkError::Malformed));
        assert_eq!(
            keys.verify(&link.params, &link.pid, "nope.AAAA", 0),
            Err(LinkError::UnknownKey)
        );
    }

    /// A valid signature (made with the server's own MAC key) over any two parts.
    fn resign(keys: &LinkKeys, params: &str, pid: &str) -> String {
        let key = keys.find("new").unwrap();
        format!("new.{}", URL_SAFE_NO_PAD.encode(mac(key, params, pid)))
    }

    /// A link in the format made before `pid` was bound to its `params` (version 1).
    fn sign_v1(keys: &LinkKeys, params: &LinkParams, profile: &LinkProfile) -> SignedLink {
        let key = keys.find("new").unwrap();
        let params = seal(key, b"params", &serde_json::to_vec(params).unwrap()).unwrap();
        let pid = seal(key, b"pid", &serde_json::to_vec(profile).unwrap()).unwrap();
        let sig = resign(keys, &params, &pid);
        SignedLink { params, pid, sig }
    }

    #[test]
    fn a_pid_never_decrypts_with_other_params_even_under_a_valid_signature() {
        let keys = keys();
        let a = keys.sign(&params(None), &profile()).unwrap();
        let mut other = params(None);
        other.org = "OTHER@AdobeOrg".into();
        let b = keys.sign(&other, &profile()).unwrap();
        // Same organisation, another link: still refused.
        let c = keys.sign(&params(None), &profile()).unwrap();
        for pid in [&b.pid, &c.pid] {
            assert_eq!(
                keys.decrypt(&a.params, pid, &a.sig),
                Err(LinkError::BadSignature)
            );
            let sig = resign(&keys, &a.params, pid);
            assert_eq!(
                keys.decrypt(&a.params, pid, &sig),
                Err(LinkError::Undecryptable)
            );
            assert_eq!(
                keys.verify(&a.params, pid, &sig, 0),
                Err(LinkError::Undecryptable)
            );
        }
        assert_eq!(
            keys.decrypt(&a.params, &a.pid, &a.sig).unwrap(),
            (params(None), profile())
        );
    }

    #[test]
    fn version_1_links_still_verify_but_only_whole() {
        let keys = keys();
        let old = sign_v1(&keys, &params(Some(100)), &profile());
        assert_eq!(
            keys.verify(&old.params, &old.pid, &old.sig, 99).unwrap(),
            (params(Some(100)), profile())
        );
        assert_eq!(
            keys.verify(&old.params, &old.pid, &old.sig, 100),
            Err(LinkError::Expired)
        );
        let new = keys.sign(&params(None), &profile()).unwrap();
        let other = sign_v1(&keys, &params(None), &profile());
        // Without the server's MAC key no mixed pair verifies.
        assert_eq!(
            keys.decrypt(&new.params, &old.pid, &new.sig),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            keys.decrypt(&other.params, &old.pid, &other.sig),
            Err(LinkError::BadSignature)
        );
        // A version 2 `params` never accepts a version 1 `pid`, nor the reverse.
        let sig = resign(&keys, &new.params, &old.pid);
        assert_eq!(
            keys.decrypt(&new.params, &old.pid, &sig),
            Err(LinkError::Undecryptable)
        );
        let sig = resign(&keys, &old.params, &new.pid);
        assert_eq!(
            keys.decrypt(&old.params, &new.pid, &sig),
            Err(LinkError::Undecryptable)
        );
    }

    #[test]
    fn key_ids_and_secrets_are_checked() {
        assert_eq!(
            LinkKey::new("a b", &[0; 32]).unwrap_err(),
            KeyError::BadId("a b".into())
        );
        assert_eq!(
            LinkKey::new("k", &[0; 31]).unwrap_err(),
            KeyError::ShortSecret("k".into())
        );
    }
}
