//! Fuzzes consent-server's signed unsubscribe links (`params`, `pid`, `sig`) through the public
//! `LinkKeys::decrypt` and `LinkKeys::verify` (the part decoding, `split` and `open_link`, is
//! private), with two fixed keys `k1` (current) and `k2`.
//!
//! Two input forms:
//! - text with a newline: the lines are `params`, `pid` and `sig` as they arrive in a query
//!   (the seeds are real links made by `sign` with the fixed keys). A link is accepted only if
//!   its `sig` is the genuine HMAC-SHA256 of both parts under a known key, recomputed here
//!   independently from the key secrets (so a forged or tampered link is never accepted);
//!   `verify` accepts exactly what `decrypt` accepts and has not expired; an accepted link
//!   re-signs to a link that decrypts to the same content;
//! - anything else: structured input that builds `LinkParams`/`LinkProfile`, signs them, checks
//!   the round trip (`decrypt` gives back the same content, `verify` honours `exp`, a server
//!   without the signing key refuses with `UnknownKey`), then applies one tampering (a changed,
//!   dropped or added byte in a part, swapped parts, another key id, parts of two links mixed)
//!   which must be refused with an error unless it left the three parts unchanged. A link whose
//!   parts would be longer than the endpoints accept (8,192 characters after the key id) is not
//!   signed (`SignError::TooLong`; it once was, and then did not round-trip: regression test
//!   `a_link_too_long_to_verify_is_not_signed`).
//!
//! The seeds in `seeds/link_params` were written by this target itself: with
//! `LINK_PARAMS_WRITE_SEEDS=<dir>` set it writes realistic links made with the fixed keys there.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_server::{
    LinkError, LinkKey, LinkKeys, LinkParams, LinkProfile, SignError, SignedLink,
};
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRETS: [(&str, [u8; 32]); 2] = [("k1", [0x11; 32]), ("k2", [0x22; 32])];
/// "Now" for the text form: 2023-11-14T22:13:20Z.
const NOW: i64 = 1_700_000_000;

static KEYS: LazyLock<LinkKeys> = LazyLock::new(|| {
    let keys = SECRETS
        .iter()
        .map(|(id, secret)| LinkKey::new(id, secret).expect("a valid key"))
        .collect();
    LinkKeys::new(keys, 0)
});
/// A server that only has `k2`.
static K2_ONLY: LazyLock<LinkKeys> = LazyLock::new(|| {
    let (id, secret) = &SECRETS[1];
    LinkKeys::new(vec![LinkKey::new(id, secret).expect("a valid key")], 0)
});

fn hmac(key: &[u8], data: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for d in data {
        mac.update(d);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether `sig` is the genuine signature of `params` and `pid`, recomputed from the secrets.
fn genuine(params: &str, pid: &str, sig: &str) -> bool {
    let Some((kid, body)) = sig.split_once('.') else {
        return false;
    };
    let Some((_, secret)) = SECRETS.iter().find(|(id, _)| *id == kid) else {
        return false;
    };
    let mac_key = hmac(secret, &[b"consent-server link signature v1"]);
    let tag = hmac(
        &mac_key,
        &[b"v1\n", params.as_bytes(), b"\n", pid.as_bytes()],
    );
    URL_SAFE_NO_PAD.decode(body).is_ok_and(|t| t == tag)
}

fn check_expiry(
    link: &(LinkParams, LinkProfile),
    verified: &Result<(LinkParams, LinkProfile), LinkError>,
    now: i64,
) {
    if link.0.exp.is_some_and(|exp| now >= exp) {
        assert_eq!(
            verified,
            &Err(LinkError::Expired),
            "an expired link was accepted"
        );
    } else {
        assert_eq!(
            verified.as_ref(),
            Ok(link),
            "verify refused a valid, unexpired link"
        );
    }
}

fn text(input: &str) {
    let mut lines = input.split('\n');
    let params = lines.next().unwrap_or("");
    let pid = lines.next().unwrap_or("");
    let sig = lines.next().unwrap_or("");
    let decrypted = KEYS.decrypt(params, pid, sig);
    let verified = KEYS.verify(params, pid, sig, NOW);
    match &decrypted {
        Err(_) => assert!(verified.is_err(), "verify accepted what decrypt refused"),
        Ok(link) => {
            assert!(
                genuine(params, pid, sig),
                "a link without a genuine signature was accepted: {input:?}"
            );
            check_expiry(link, &verified, NOW);
            // A version 1 link re-signs a few characters longer (`"v":2`): it may not fit.
            let Some(resigned) = sign(link) else {
                return;
            };
            let again = KEYS.decrypt(&resigned.params, &resigned.pid, &resigned.sig);
            assert_eq!(
                again.as_ref(),
                Ok(link),
                "a re-signed link decrypts differently"
            );
        }
    }
}

fn link_params(u: &mut Unstructured<'_>) -> ArbResult<(LinkParams, LinkProfile)> {
    let params = LinkParams {
        org: u.arbitrary()?,
        sandbox: u.arbitrary()?,
        channel: u.arbitrary()?,
        scope: u.arbitrary()?,
        subscription: u.arbitrary()?,
        m: u.arbitrary()?,
        ci: u.arbitrary()?,
        jv: u.arbitrary()?,
        ja: u.arbitrary()?,
        exp: u.arbitrary()?,
    };
    let profile = LinkProfile {
        pid: u.arbitrary()?,
        pns: u.arbitrary()?,
        e: u.arbitrary()?,
        ens: u.arbitrary()?,
    };
    Ok((params, profile))
}

fn part<'a>(link: &'a mut SignedLink, which: u8) -> &'a mut String {
    match which % 3 {
        0 => &mut link.params,
        1 => &mut link.pid,
        _ => &mut link.sig,
    }
}

/// Applies one tampering chosen by the input.
fn tamper(
    u: &mut Unstructured<'_>,
    link: &SignedLink,
    other: &SignedLink,
) -> ArbResult<SignedLink> {
    let mut t = link.clone();
    match u.int_in_range(0u8..=6)? {
        0 => {
            // Change one byte of a part to another printable ASCII byte.
            let p = part(&mut t, u.arbitrary()?);
            if !p.is_empty() {
                let i = u.choose_index(p.len())?;
                let b = u.int_in_range(0x21u8..=0x7e)?;
                let mut bytes = std::mem::take(p).into_bytes();
                bytes[i] = b;
                *p = String::from_utf8(bytes).expect("ASCII");
            }
        }
        1 => {
            let p = part(&mut t, u.arbitrary()?);
            let keep = u.int_in_range(0..=p.len())?;
            p.truncate(keep);
        }
        2 => {
            let p = part(&mut t, u.arbitrary()?);
            let c = char::from(u.int_in_range(0x20u8..=0x7e)?);
            let i = u.int_in_range(0..=p.len())?;
            p.insert(i, c);
        }
        3 => std::mem::swap(&mut t.params, &mut t.pid),
        4 => {
            let p = part(&mut t, u.arbitrary()?);
            let kid = if p.starts_with("k1.") { "k2" } else { "k1" };
            if let Some((_, body)) = p.split_once('.') {
                *p = format!("{kid}.{body}");
            }
        }
        _ => {
            // Mix the parts of two links of the same content (different nonces).
            let from_other: u8 = u.int_in_range(1..=6)?;
            if from_other & 1 != 0 {
                t.params = other.params.clone();
            }
            if from_other & 2 != 0 {
                t.pid = other.pid.clone();
            }
            if from_other & 4 != 0 {
                t.sig = other.sig.clone();
            }
        }
    }
    Ok(t)
}

/// The most characters a link's part may have after its key id (consent-server's
/// `MAX_PART_CHARS`, named in `SignError::TooLong`'s message).
const MAX_PART_CHARS: usize = 8192;

/// Signs with the current key; `None` when a part would be too long to use, which must be true.
fn sign(link: &(LinkParams, LinkProfile)) -> Option<SignedLink> {
    match KEYS.sign(&link.0, &link.1) {
        Ok(signed) => {
            for part in [&signed.params, &signed.pid] {
                let chars = part.split_once('.').map_or(part.len(), |(_, b)| b.len());
                assert!(chars <= MAX_PART_CHARS, "a link too long to use was signed");
            }
            Some(signed)
        }
        Err(SignError::TooLong { chars, .. }) => {
            assert!(
                chars > MAX_PART_CHARS,
                "a link of {chars} characters refused"
            );
            None
        }
        Err(err) => panic!("signing failed: {err}"),
    }
}

fn structured(data: &[u8]) -> ArbResult<()> {
    let mut u = Unstructured::new(data);
    let link = link_params(&mut u)?;
    let now: i64 = u.arbitrary()?;
    let Some(signed) = sign(&link) else {
        return Ok(());
    };
    assert!(genuine(&signed.params, &signed.pid, &signed.sig));
    let decrypted = KEYS.decrypt(&signed.params, &signed.pid, &signed.sig);
    assert_eq!(decrypted.as_ref(), Ok(&link), "a link does not round-trip");
    check_expiry(
        &link,
        &KEYS.verify(&signed.params, &signed.pid, &signed.sig, now),
        now,
    );
    assert_eq!(
        K2_ONLY.decrypt(&signed.params, &signed.pid, &signed.sig),
        Err(LinkError::UnknownKey)
    );

    let other = sign(&link).expect("a link of this length was signed once already");
    let t = tamper(&mut u, &signed, &other)?;
    let result = KEYS.decrypt(&t.params, &t.pid, &t.sig);
    let mixed_whole = t == other;
    if t == signed || mixed_whole {
        assert_eq!(result.as_ref(), Ok(&link));
    } else {
        assert!(
            result.is_err(),
            "a tampered link was accepted: {t:?} (from {signed:?})"
        );
        assert!(KEYS.verify(&t.params, &t.pid, &t.sig, i64::MIN).is_err());
    }
    Ok(())
}

/// Writes realistic links made with the fixed keys, one text seed per file, into `dir`.
fn write_seeds(dir: &std::path::Path) {
    let link = |ch: &str, us: &str, sub: Option<&str>, exp: Option<i64>| LinkParams {
        org: "5BFE274A5F6980A50A495C08@AdobeOrg".into(),
        sandbox: "prod".into(),
        channel: ch.into(),
        scope: us.into(),
        subscription: sub.map(Into::into),
        m: "c1a2b3d4-0000-4000-8000-000000000001".into(),
        ci: "campaign-42".into(),
        jv: "journey-v7".into(),
        ja: "action-3".into(),
        exp,
    };
    let profile = |e: Option<&str>, ens: Option<&str>| LinkProfile {
        pid: "12345678901234567890123456789012345678".into(),
        pns: "ECID".into(),
        e: e.map(Into::into),
        ens: ens.map(Into::into),
    };
    let seeds = [
        (
            "email-channel",
            link("email", "channel", None, None),
            profile(None, None),
        ),
        (
            "email-identity",
            link("email", "identity", None, Some(2_000_000_000)),
            profile(Some("jdoe@example.com"), Some("Email")),
        ),
        (
            "sms-subscription",
            link(
                "sms",
                "subscription",
                Some("weekly-deals"),
                Some(1_900_000_000),
            ),
            profile(Some("+15555550100"), Some("Phone")),
        ),
        (
            "push-expired",
            link("push", "channel", None, Some(1_600_000_000)),
            profile(None, None),
        ),
    ];
    for (name, params, profile) in seeds {
        let signed = KEYS.sign(&params, &profile).expect("signing works");
        let text = format!("{}\n{}\n{}\n", signed.params, signed.pid, signed.sig);
        std::fs::write(dir.join(name), text).expect("write a seed");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(dir) = std::env::var_os("LINK_PARAMS_WRITE_SEEDS") {
        write_seeds(std::path::Path::new(&dir));
    }
    if data.contains(&b'\n') {
        if let Ok(input) = std::str::from_utf8(data) {
            text(input);
        }
        return;
    }
    let _ = structured(data);
});
