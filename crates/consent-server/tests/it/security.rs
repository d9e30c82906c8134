//! The security review's findings F1, F4 and F6 (`shared/reviews/security-review.md`): a `pid`
//! bound to its link, links the endpoints could never accept, control characters in identities.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Harness, ORG_A, ORG_B};
use crate::on_both;

type HmacSha256 = Hmac<Sha256>;

/// A key derived from the test keys file's current link key `k2` (secret 32 × 0x02).
fn derive(label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&[2u8; 32]).unwrap();
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// A valid `sig` over any two parts, made with the server's own MAC key. No attacker can make
/// one; the tests use it to show that the `pid` binding holds even under a valid signature.
fn server_sig(params: &str, pid: &str) -> String {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(&derive(b"consent-server link signature v1"))
            .unwrap();
    mac.update(format!("v1\n{params}\n{pid}").as_bytes());
    format!("k2.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn seal(aad: &[u8], plaintext: &Value) -> String {
    let cipher =
        XChaCha20Poly1305::new_from_slice(&derive(b"consent-server link encryption v1")).unwrap();
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).unwrap();
    let msg = serde_json::to_vec(plaintext).unwrap();
    let ciphertext = cipher
        .encrypt(
            &chacha20poly1305::XNonce::from(nonce),
            Payload { msg: &msg, aad },
        )
        .unwrap();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    format!("k2.{}", URL_SAFE_NO_PAD.encode(out))
}

/// The three parts of a link.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) params: String,
    pub(crate) pid: String,
    pub(crate) sig: String,
}

impl Link {
    pub(crate) fn of(answer: &Value) -> Self {
        Self {
            params: answer["params"].as_str().unwrap().to_owned(),
            pid: answer["pid"].as_str().unwrap().to_owned(),
            sig: answer["sig"].as_str().unwrap().to_owned(),
        }
    }

    /// A link in the format made before `pid` was bound to its `params` (version 1: no `v` in
    /// `params`, the role alone as `pid`'s associated data), as links already mailed out are.
    fn version_1(params: &Value, profile: &Value) -> Self {
        let params = seal(b"params", params);
        let pid = seal(b"pid", profile);
        let sig = server_sig(&params, &pid);
        Self { params, pid, sig }
    }

    /// The link's query string, each part percent-encoded (the attack suite sends parts that
    /// are not base64url).
    pub(crate) fn query(&self) -> String {
        use crate::attack::enc;
        format!(
            "params={}&pid={}&sig={}",
            enc(&self.params),
            enc(&self.pid),
            enc(&self.sig)
        )
    }
}

/// Makes a link through the admin API as organisation A (or B).
async fn make_link(h: &Harness, org_b: bool, request: &Value) -> Link {
    let response = h
        .auth(h.client.post(h.url("/admin/v1/unsubscribe-links")), org_b)
        .json(request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    Link::of(&response.json().await.unwrap())
}

fn link_request(id: &str) -> Value {
    json!({"profile": {"namespace": "CRMID", "id": id}, "channel": "email", "scope": "identity",
           "address": {"value": format!("{id}@example.com"), "namespace": "Email"}})
}

/// `GET /imp/consent/decrypt` as organisation A (or B); the status and the answer.
async fn decrypt(h: &Harness, org_b: bool, query: &str) -> (u16, Value) {
    let response = h
        .auth(
            h.client
                .get(h.url(&format!("/imp/consent/decrypt?{query}"))),
            org_b,
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn landing(h: &Harness, link: &Link) -> u16 {
    let url = h.url(&format!("/unsubscribe?{}", link.query()));
    h.client.get(url).send().await.unwrap().status().as_u16()
}

async fn one_click(h: &Harness, link: &Link) -> u16 {
    h.client
        .post(h.url(&format!("/unsubscribe?{}", link.query())))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn preferences(h: &Harness, link: &Link) -> (u16, Value) {
    let url = h.url(&format!("/imp/consent/preferences?{}", link.query()));
    let body = json!({"marketing": [{"type": "email", "choice": "no"}]});
    let response = h
        .auth(h.client.post(url), false)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn key(org: &str, id: &str) -> consent_server::ProfileKey {
    consent_server::ProfileKey {
        org: org.into(),
        sandbox: "prod".into(),
        namespace: "CRMID".into(),
        id: id.into(),
    }
}

/// F1: the review's reproduction (A's `params` with B's `pid`), the same across two links of
/// one organisation, and mixed pairs under a valid signature, on every endpoint.
async fn a_pid_only_opens_with_its_own_link(h: &Harness) {
    let alice = make_link(h, false, &link_request("alice-A")).await;
    let carol = make_link(h, false, &link_request("carol-A")).await;
    let bob = make_link(h, true, &link_request("bob-secret-B")).await;

    // The whole link of the caller's own organisation decrypts.
    let (status, answer) = decrypt(h, false, &alice.query()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["profileId"], "alice-A");
    assert_eq!(answer["emailAddress"], "alice-A@example.com");
    // B's whole link is B's.
    assert_eq!(decrypt(h, false, &bob.query()).await.0, 403);

    // The review's reproduction: no signature at all.
    for pid in [&bob.pid, &carol.pid] {
        let query = format!("params={}&pid={pid}", alice.params);
        let (status, answer) = decrypt(h, false, &query).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.get("profileId").is_none(), "{answer}");
    }
    let (status, answer) = decrypt(h, false, &format!("params={}", alice.params)).await;
    assert_eq!(status, 400, "{answer}");

    for victim in [&bob, &carol] {
        // With A's own signature: the signature does not cover the pair.
        let with_own_sig = Link {
            pid: victim.pid.clone(),
            ..alice.clone()
        };
        // Even under a valid signature over the pair, the pid is bound to its own params.
        let under_valid_sig = Link {
            sig: server_sig(&alice.params, &victim.pid),
            ..with_own_sig.clone()
        };
        for mixed in [&with_own_sig, &under_valid_sig] {
            let (status, answer) = decrypt(h, false, &mixed.query()).await;
            assert_eq!(status, 403, "{answer}");
            assert!(answer.get("profileId").is_none(), "{answer}");
            assert_eq!(landing(h, mixed).await, 403);
            assert_eq!(one_click(h, mixed).await, 403);
            let (status, answer) = preferences(h, mixed).await;
            assert_eq!(status, 403, "{answer}");
        }
    }
    let db = h.server().db();
    for (org, id) in [
        (ORG_A, "alice-A"),
        (ORG_A, "carol-A"),
        (ORG_A, "bob-secret-B"),
        (ORG_B, "bob-secret-B"),
    ] {
        assert!(db.profile(&key(org, id)).await.unwrap().is_none(), "{id}");
    }
}
on_both!(f1_pid_bound_to_its_link, a_pid_only_opens_with_its_own_link);

fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// F1, links made before the change: they keep working (until they expire), but only whole;
/// decrypt needs their `sig` too.
async fn links_made_before_the_change_keep_working_until_they_expire(h: &Harness) {
    let params = |exp: Option<i64>| {
        let mut p = json!({"org": ORG_A, "s": "prod", "ch": "email", "us": "channel",
                           "m": "old-message"});
        if let Some(exp) = exp {
            p["exp"] = json!(exp);
        }
        p
    };
    let profile = |id: &str| json!({"pid": id, "pns": "CRMID"});
    let old = Link::version_1(&params(Some(now_secs() + 3600)), &profile("old-1"));
    let (status, answer) = decrypt(h, false, &old.query()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["profileId"], "old-1");
    assert_eq!(answer["messageExecutionId"], "old-message");
    assert_eq!(landing(h, &old).await, 200);
    assert_eq!(one_click(h, &old).await, 200);
    let (status, answer) = preferences(h, &old).await;
    assert_eq!(status, 200, "{answer}");
    let db = h.server().db();
    let stored = db.profile(&key(ORG_A, "old-1")).await.unwrap().unwrap();
    assert_eq!(stored.consents["marketing"]["email"]["val"], "n");

    // Without its signature an old link does not decrypt either.
    let query = format!("params={}&pid={}", old.params, old.pid);
    assert_eq!(decrypt(h, false, &query).await.0, 400);
    // Mixing old links (or an old pid with a new link) is refused.
    let other = Link::version_1(&params(None), &profile("old-2"));
    let new = make_link(h, false, &link_request("new-1")).await;
    for mixed in [
        Link {
            pid: old.pid.clone(),
            ..other.clone()
        },
        Link {
            pid: old.pid.clone(),
            ..new.clone()
        },
        Link {
            sig: server_sig(&new.params, &old.pid),
            pid: old.pid.clone(),
            ..new.clone()
        },
        Link {
            sig: server_sig(&old.params, &new.pid),
            pid: new.pid.clone(),
            ..old.clone()
        },
    ] {
        assert_eq!(decrypt(h, false, &mixed.query()).await.0, 403);
        assert_eq!(one_click(h, &mixed).await, 403);
    }
    // An expired old link is refused on the signed endpoints, like a new one.
    let expired = Link::version_1(&params(Some(now_secs() - 10)), &profile("old-3"));
    assert_eq!(one_click(h, &expired).await, 403);
    let (status, answer) = preferences(h, &expired).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "link_expired");
    assert!(db.profile(&key(ORG_A, "old-3")).await.unwrap().is_none());
}
on_both!(
    f1_old_links,
    links_made_before_the_change_keep_working_until_they_expire
);

/// F4: a link whose `params` would exceed the 8192 characters the endpoints accept is refused
/// when it is made, naming the field; a long one that fits still works.
async fn links_the_endpoints_would_refuse_are_not_made(h: &Harness) {
    for (len, fits) in [(5000, true), (7000, false), (20000, false)] {
        let id = format!("f4-{len}");
        let request = json!({"profile": {"namespace": "CRMID", "id": id}, "channel": "email",
                             "message": {"m": "m".repeat(len)}});
        let (status, answer) = h
            .post_json_as_a("/admin/v1/unsubscribe-links", &request)
            .await;
        if fits {
            assert_eq!(status, 200, "{answer}");
            let link = Link::of(&answer);
            assert_eq!(landing(h, &link).await, 200);
            assert_eq!(one_click(h, &link).await, 200);
            let (status, answer) = decrypt(h, false, &link.query()).await;
            assert_eq!(status, 200);
            assert_eq!(answer["messageExecutionId"].as_str().unwrap().len(), len);
            let db = h.server().db();
            assert!(db.profile(&key(ORG_A, &id)).await.unwrap().is_some());
        } else {
            assert_eq!(status, 400, "{len}: {answer}");
            assert_eq!(answer["error"], "bad_request");
            let message = answer["message"].as_str().unwrap();
            assert!(message.contains("'message.m'"), "{message}");
            assert!(message.contains("8192"), "{message}");
        }
    }
}
on_both!(f4_link_size, links_the_endpoints_would_refuse_are_not_made);

/// F6: NUL and other control characters in an identity are refused with 400 on both databases,
/// on the admin API, the profile read and links made before the check.
async fn control_characters_in_identities_are_refused(h: &Harness) {
    let base = link_request("ok-id");
    let mut cases = Vec::new();
    for bad in ["ab\u{0}cd", "a\nb", "a\u{7f}b", "a\u{85}b", "\u{0}"] {
        for (field, pointer) in [
            ("profile.id", "/profile/id"),
            ("profile.namespace", "/profile/namespace"),
            ("address.value", "/address/value"),
            ("address.namespace", "/address/namespace"),
        ] {
            let mut request = base.clone();
            *request.pointer_mut(pointer).unwrap() = json!(bad);
            cases.push((field, request));
        }
    }
    for (field, request) in cases {
        let (status, answer) = h
            .post_json_as_a("/admin/v1/unsubscribe-links", &request)
            .await;
        assert_eq!(status, 400, "{request}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
    for path in [
        "/admin/v1/profiles/CRMID/ab%00cd",
        "/admin/v1/profiles/CR%00MID/ab",
        "/admin/v1/profiles/CRMID/a%0Ab",
    ] {
        let response = h
            .auth(h.client.get(h.url(path)), false)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{path}");
    }
    // A link made before the admin API refused them: its endpoints answer 400, not 500.
    let old = Link::version_1(
        &json!({"org": ORG_A, "s": "prod", "ch": "email", "us": "identity"}),
        &json!({"pid": "ab\u{0}cd", "pns": "CRMID", "e": "a\u{0}@example.com", "ens": "Email"}),
    );
    assert_eq!(one_click(h, &old).await, 400);
    let confirm = h
        .client
        .post(h.url(&format!("/unsubscribe?{}", old.query())))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("confirm=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status().as_u16(), 400);
    let (status, answer) = preferences(h, &old).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("profile.id"),
        "{answer}"
    );
    // Everything else still works afterwards.
    let link = make_link(h, false, &base).await;
    assert_eq!(one_click(h, &link).await, 200);
}
on_both!(f6_identities, control_characters_in_identities_are_refused);
