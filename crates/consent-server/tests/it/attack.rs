//! The attack suite: every attack on the running server that the reliability work lists, sent
//! one after the other against a database holding real profiles, links and records. Each must be
//! refused (or, where the protocol says to answer, change nothing), leave every row of every
//! table as it was, and be counted in `/metrics` (`consent_requests_refused_total{reason}`, and
//! for the ones answered by design, their own counter).
//!
//! - links: forged, tampered (each part), truncated, missing a part, parts swapped, an unknown
//!   key, expired, replayed, and a link of one organisation or sandbox used with the credentials
//!   of another, on each endpoint that takes one;
//! - API keys across organisations and sandboxes, a token of another key, no credentials;
//!   erasure, export and reads of another organisation's profile;
//! - bodies: over the limit, nested deeper than any parser allows, not JSON, not an object,
//!   fields of the wrong type, unknown consent values;
//! - CR, LF and `;` in identities and cookie values, SQL and HTML injection strings in every
//!   field a caller controls (identities, query parameters, paths, cookies, link parts);
//! - one-click unsubscribe by GET, without its body, with another body, by another method;
//! - CORS: a request and a preflight from an origin the datastream does not allow.

use std::collections::BTreeMap;

use consent_server::Keys;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::edge::{adobe_v1, ecid_of, entry, store_entries, with_ecid};
use crate::harness::{DS_A, Db, Harness, ORG_A, ORG_B};
use crate::security::Link;

/// Organisation B's datastream.
const DS_B: &str = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
/// The one site allowed on [`DS_A`].
const SITE: &str = "https://site.test";
/// A site allowed nowhere.
const EVIL: &str = "https://evil.test";
/// An ECID of organisation A that gave consent.
const VICTIM: &str = "11111111111111111111111111111111111111";
/// An ECID of organisation A that opted out.
const OPTED_OUT: &str = "22222222222222222222222222222222222222";

/// Strings that would do harm if a field were spliced into SQL, HTML, a header or a cookie.
const HOSTILE: &[&str] = &[
    "' OR '1'='1",
    "'; DROP TABLE profiles; --",
    "\" OR 1=1 --",
    "1; DELETE FROM consent_records",
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "a\r\nSet-Cookie: kndctr_ORGA_AdobeOrg_consent=general=in",
    "a;Domain=evil.test;Path=/",
    "general=in; kndctr_ORGA_AdobeOrg_consent=general=in",
];

/// The test keys, with a key of organisation A's `dev` sandbox, organisation B's datastream, and
/// [`SITE`] as the only origin of [`DS_A`].
fn keys() -> Keys {
    let mut keys: Value = serde_json::from_str(&crate::harness::keys_json()).unwrap();
    keys["api_keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "key-a-dev", "token": "token-a-dev", "org": ORG_A, "sandbox": "dev"}));
    keys["datastreams"] = json!([
        {"id": DS_A, "org": ORG_A, "sandbox": "prod", "origins": [SITE]},
        {"id": DS_B, "org": ORG_B, "sandbox": "prod"},
    ]);
    Keys::from_json(&keys.to_string()).unwrap()
}

/// The credentials of a caller: API key, token, organisation header, sandbox header.
type Creds = (&'static str, &'static str, &'static str, &'static str);
const A: Creds = ("key-a", "token-a", ORG_A, "prod");
const B: Creds = ("key-b", "token-b", ORG_B, "prod");
const A_DEV: Creds = ("key-a-dev", "token-a-dev", ORG_A, "dev");

fn with(builder: RequestBuilder, (key, token, org, sandbox): Creds) -> RequestBuilder {
    builder
        .header("x-api-key", key)
        .header("authorization", format!("Bearer {token}"))
        .header("x-gw-ims-org-id", org)
        .header("x-sandbox-name", sandbox)
}

/// Every row of every table, as text, table by table: what no attack may change.
async fn snapshot(h: &Harness) -> BTreeMap<&'static str, Vec<String>> {
    use sqlx::Row as _;
    let tables: [(&str, &str); 6] = [
        (
            "profiles",
            "org || '|' || sandbox || '|' || namespace || '|' || id || '|' || general || '|' || \
             consents || '|' || subscriptions || '|' || CAST(created_at AS TEXT) || '|' || \
             CAST(updated_at AS TEXT)",
        ),
        (
            "events",
            "org || '|' || sandbox || '|' || event_id || '|' || namespace || '|' || profile_id \
             || '|' || body || '|' || CAST(received_at AS TEXT)",
        ),
        (
            "consent_records",
            "org || '|' || sandbox || '|' || CAST(seq AS TEXT) || '|' || namespace || '|' || \
             source || '|' || payload || '|' || CAST(created_at AS TEXT) || '|' || prev_hash || \
             '|' || hash || '|' || subject",
        ),
        (
            "record_personal",
            "org || '|' || sandbox || '|' || CAST(seq AS TEXT) || '|' || namespace || '|' || \
             profile_id || '|' || detail",
        ),
        (
            "chain_heads",
            "org || '|' || sandbox || '|' || CAST(seq AS TEXT) || '|' || hash",
        ),
        ("server_secrets", "name || '|' || value"),
    ];
    let mut out = BTreeMap::new();
    for (table, row) in tables {
        // The table names and columns are the suite's own constants.
        let sql = sqlx::AssertSqlSafe(format!("SELECT {row} AS r FROM {table} ORDER BY r"));
        let rows = sqlx::query(sql)
            .fetch_all(h.server().db().pool())
            .await
            .unwrap();
        out.insert(
            table,
            rows.iter()
                .map(|r| r.try_get::<String, _>("r").unwrap())
                .collect(),
        );
    }
    out
}

/// The counters of `/metrics` the suite reads: `consent_requests_refused_total` by reason, and
/// the single counters named in [`SINGLE`].
async fn counters(h: &Harness) -> BTreeMap<String, u64> {
    let text = h.metrics().await;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let counted = name.starts_with("consent_requests_refused_total{")
            || SINGLE.contains(&name)
            || name == "consent_events_total{outcome=\"refused_consent_out\"}";
        if counted {
            out.insert(name.to_owned(), value.parse().unwrap());
        }
    }
    assert!(
        out.keys().any(|k| k.contains("reason=\"cors_origin\"")),
        "no refusal counter in /metrics:\n{text}"
    );
    out
}

const SINGLE: &[&str] = &[
    "consent_link_repeats_total",
    "consent_links_refused_total",
    "consent_auth_failures_total",
];

fn refused(reason: &str) -> String {
    format!("consent_requests_refused_total{{reason=\"{reason}\"}}")
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
pub(crate) fn enc(part: &str) -> String {
    part.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn make_link(h: &Harness, creds: Creds, id: &str, ttl: Option<i64>) -> Link {
    let mut request = json!({"profile": {"namespace": "CRMID", "id": id}, "channel": "email",
        "scope": "identity", "address": {"value": format!("{id}@example.com"), "namespace": "Email"}});
    if let Some(ttl) = ttl {
        request["ttl_secs"] = json!(ttl);
    }
    let response = with(h.client.post(h.url("/admin/v1/unsubscribe-links")), creds)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    Link::of(&response.json().await.unwrap())
}

/// Changes the character at the middle of `part` (after its key id) to another base64url one.
fn flip(part: &str) -> String {
    let mut chars: Vec<char> = part.chars().collect();
    let at = part.find('.').unwrap() + (chars.len() - part.find('.').unwrap()) / 2;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// One attack: a name, the request, the status it must get and the refusal reason it must be
/// counted under (`None` for an answer that is not a refusal but must change nothing).
struct Attack {
    name: String,
    request: RequestBuilder,
    status: u16,
    reason: Option<&'static str>,
}

struct Suite<'h> {
    h: &'h Harness,
    attacks: Vec<Attack>,
}

impl Suite<'_> {
    fn add(
        &mut self,
        name: impl Into<String>,
        request: RequestBuilder,
        status: u16,
        reason: Option<&'static str>,
    ) {
        self.attacks.push(Attack {
            name: name.into(),
            request,
            status,
            reason,
        });
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.h.client.get(self.h.url(path))
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.h.client.post(self.h.url(path))
    }

    fn edge(&self, action: &str, body: &Value) -> RequestBuilder {
        self.post(&format!("/ee/v1/{action}?configId={DS_A}"))
            .header("content-type", "text/plain")
            .body(body.to_string())
    }

    fn one_click(&self, query: &str) -> RequestBuilder {
        self.post(&format!("/unsubscribe?{query}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
    }

    fn preferences(&self, query: &str, creds: Creds) -> RequestBuilder {
        with(
            self.post(&format!("/imp/consent/preferences?{query}")),
            creds,
        )
        .json(&json!({"marketing": [{"type": "email", "choice": "yes"}]}))
    }

    fn decrypt(&self, query: &str, creds: Creds) -> RequestBuilder {
        with(self.get(&format!("/imp/consent/decrypt?{query}")), creds)
    }

    /// A bad link on the four endpoints that take one: the landing page, one-click (both refused
    /// as links), the preferences API and the decrypt API (with organisation A's credentials).
    fn bad_link(&mut self, name: &str, query: &str, status: u16, decrypted: bool) {
        self.add(
            format!("{name}: landing page"),
            self.get(&format!("/unsubscribe?{query}")),
            status,
            Some("link"),
        );
        self.add(
            format!("{name}: one-click"),
            self.one_click(query),
            status,
            Some("link"),
        );
        self.add(
            format!("{name}: preferences API"),
            self.preferences(query, A),
            status,
            Some("link"),
        );
        if decrypted {
            self.add(
                format!("{name}: decrypt API"),
                self.decrypt(query, A),
                status,
                Some("link"),
            );
        }
    }
}

async fn every_attack_is_refused_changes_nothing_and_is_counted(h: &Harness) {
    // What there is to attack: two visitors of organisation A (one in, one out) with events, a
    // subscriber per organisation and sandbox, and their links.
    let (status, answer) = h
        .post_json(
            &format!("/ee/v1/privacy/set-consent?configId={DS_A}"),
            &with_ecid(adobe_v1("in"), VICTIM),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ecid_of(&answer), VICTIM);
    let (status, _) = h
        .post_json(
            &format!("/ee/v1/privacy/set-consent?configId={DS_A}"),
            &with_ecid(adobe_v1("out"), OPTED_OUT),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .post_json(
            &format!("/ee/v1/interact?configId={DS_A}"),
            &with_ecid(json!({"events": [{"xdm": {"_id": "ev-victim-1"}}]}), VICTIM),
        )
        .await;
    assert_eq!(status, 200);
    let alice = make_link(h, A, "alice", None).await;
    let bob = make_link(h, B, "bob", None).await;
    let dev = make_link(h, A_DEV, "dana", None).await;
    let expiring = make_link(h, A, "erin", Some(1)).await;
    // Alice subscribes (through the preferences API, as the organisation), then unsubscribes
    // with one click: the link's one legitimate use, before the snapshot.
    let mut s = Suite {
        h,
        attacks: Vec::new(),
    };
    for (link, creds) in [(&alice, A), (&bob, B), (&dev, A_DEV), (&expiring, A)] {
        let response = s.preferences(&link.query(), creds).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{link:?}");
    }
    let response = s.one_click(&alice.query()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Let the short link expire.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let before = snapshot(h).await;
    assert_eq!(before["profiles"].len(), 6, "{before:#?}");
    assert!(!before["consent_records"].is_empty());
    let counted_before = counters(h).await;

    // ---- Links
    let forged = Link {
        params: format!("k2.{}", "A".repeat(120)),
        pid: format!("k2.{}", "B".repeat(120)),
        sig: format!("k2.{}", "C".repeat(43)),
    };
    // Parts that are not the sealed size: malformed (400), still a refused link.
    s.bad_link("forged link", &forged.query(), 400, true);
    for (part, tampered) in [
        (
            "params",
            Link {
                params: flip(&alice.params),
                ..alice.clone()
            },
        ),
        (
            "pid",
            Link {
                pid: flip(&alice.pid),
                ..alice.clone()
            },
        ),
        (
            "sig",
            Link {
                sig: flip(&alice.sig),
                ..alice.clone()
            },
        ),
    ] {
        s.bad_link(
            &format!("link with its {part} tampered"),
            &tampered.query(),
            403,
            true,
        );
    }
    let truncated = Link {
        sig: alice.sig[..alice.sig.len() / 2].to_owned(),
        ..alice.clone()
    };
    s.bad_link("link with its sig truncated", &truncated.query(), 403, true);
    let truncated = Link {
        params: alice.params[..alice.params.len() - 10].to_owned(),
        ..alice.clone()
    };
    s.bad_link(
        "link with its params truncated",
        &truncated.query(),
        403,
        true,
    );
    let swapped = Link {
        params: alice.pid.clone(),
        pid: alice.params.clone(),
        sig: alice.sig.clone(),
    };
    s.bad_link(
        "link with params and pid swapped",
        &swapped.query(),
        403,
        true,
    );
    let unknown = Link {
        params: alice.params.replacen("k2.", "k9.", 1),
        pid: alice.pid.replacen("k2.", "k9.", 1),
        sig: alice.sig.replacen("k2.", "k9.", 1),
    };
    s.bad_link("link of an unknown key", &unknown.query(), 403, true);
    let mixed = Link {
        pid: bob.pid.clone(),
        ..alice.clone()
    };
    s.bad_link("link with another link's pid", &mixed.query(), 403, true);
    let no_sig = format!("params={}&pid={}", enc(&alice.params), enc(&alice.pid));
    s.bad_link("link without its sig", &no_sig, 400, false);
    // The decrypt API names what is missing (a malformed request, before any link is read).
    s.add(
        "link without its sig: decrypt API",
        s.decrypt(&no_sig, A),
        400,
        Some("malformed"),
    );
    // Expired: refused where a person uses it; the organisation may still decrypt its own.
    s.bad_link("expired link", &expiring.query(), 403, false);
    // Another organisation's or sandbox's link with organisation A's (prod) credentials.
    s.add(
        "organisation B's link: preferences API as A",
        s.preferences(&bob.query(), A),
        403,
        Some("scope"),
    );
    s.add(
        "organisation B's link: decrypt API as A",
        s.decrypt(&bob.query(), A),
        403,
        Some("scope"),
    );
    s.add(
        "the dev sandbox's link: preferences API as A prod",
        s.preferences(&dev.query(), A),
        403,
        Some("scope"),
    );
    s.add(
        "the dev sandbox's link: decrypt API as A prod",
        s.decrypt(&dev.query(), A),
        403,
        Some("scope"),
    );
    s.add(
        "organisation A's link: preferences API as B",
        s.preferences(&alice.query(), B),
        403,
        Some("scope"),
    );
    // Hostile strings as link parts.
    for (i, hostile) in HOSTILE.iter().enumerate() {
        let link = Link {
            params: format!("k2.{hostile}"),
            pid: (*hostile).to_owned(),
            sig: format!("{hostile}.x"),
        };
        s.bad_link(&format!("hostile link {i}"), &link.query(), 400, true);
    }

    // ---- API keys and organisations
    let profile_a = "/admin/v1/profiles/ECID/".to_owned() + VICTIM;
    let bob_path = "/admin/v1/profiles/CRMID/bob";
    for (name, creds, status, reason) in [
        (
            "A's key naming organisation B",
            ("key-a", "token-a", ORG_B, "prod"),
            403,
            "scope",
        ),
        (
            "A's key naming the dev sandbox",
            ("key-a", "token-a", ORG_A, "dev"),
            403,
            "scope",
        ),
        (
            "the dev key naming prod",
            ("key-a-dev", "token-a-dev", ORG_A, "prod"),
            403,
            "scope",
        ),
        (
            "A's key with B's token",
            ("key-a", "token-b", ORG_A, "prod"),
            401,
            "credentials",
        ),
        (
            "B's key with B's token naming A",
            ("key-b", "token-b", ORG_A, "prod"),
            403,
            "scope",
        ),
        (
            "an unknown key",
            ("key-z", "token-a", ORG_A, "prod"),
            401,
            "credentials",
        ),
    ] {
        s.add(
            format!("{name}: erase"),
            with(s.h.client.delete(s.h.url(&profile_a)), creds),
            status,
            Some(reason),
        );
        s.add(
            format!("{name}: export"),
            with(s.get(&format!("{profile_a}/export")), creds),
            status,
            Some(reason),
        );
        s.add(
            format!("{name}: read"),
            with(s.get(&profile_a), creds),
            status,
            Some(reason),
        );
        s.add(
            format!("{name}: make a link"),
            with(s.post("/admin/v1/unsubscribe-links"), creds)
                .json(&json!({"profile": {"namespace": "ECID", "id": VICTIM}, "channel": "email"})),
            status,
            Some(reason),
        );
        s.add(
            format!("{name}: preferences"),
            s.preferences(&alice.query(), creds),
            status,
            Some(reason),
        );
    }
    s.add(
        "no credentials: erase",
        s.h.client.delete(s.h.url(&profile_a)),
        401,
        Some("credentials"),
    );
    s.add(
        "a repeated API key header",
        s.get(&profile_a)
            .header("x-api-key", "key-a")
            .header("x-api-key", "key-a")
            .header("authorization", "Bearer token-a")
            .header("x-gw-ims-org-id", ORG_A),
        401,
        Some("credentials"),
    );
    // Right credentials, another organisation's profile: for A, B's subscriber does not exist.
    s.add(
        "A erasing B's profile",
        with(s.h.client.delete(s.h.url(bob_path)), A),
        404,
        None,
    );
    s.add(
        "A exporting B's profile",
        with(s.get(&format!("{bob_path}/export")), A),
        404,
        None,
    );
    s.add(
        "A reading the dev sandbox's profile",
        with(s.get("/admin/v1/profiles/CRMID/dana"), A),
        404,
        None,
    );
    // Organisation B's datastream cannot reach organisation A's visitors.
    s.add(
        "B's datastream setting A's visitor in",
        s.post(&format!("/ee/v1/privacy/set-consent?configId={DS_B}"))
            .body(with_ecid(adobe_v1("out"), VICTIM).to_string()),
        200,
        None,
    );
    // That one is B's own (new) visitor: it changes B's data, so it is checked apart below.
    let cross_datastream = s.attacks.pop().unwrap();

    // ---- Bodies
    let limit = 64 * 1024;
    let big = json!({"consent": [{"standard": "Adobe", "version": "1.0",
        "value": {"general": "in", "pad": "x".repeat(limit)}}]});
    s.add(
        "set-consent over the body limit",
        s.edge("privacy/set-consent", &with_ecid(big.clone(), VICTIM)),
        413,
        Some("body_too_large"),
    );
    s.add(
        "interact over the body limit",
        s.edge("interact", &with_ecid(big, OPTED_OUT)),
        413,
        Some("body_too_large"),
    );
    s.add(
        "preferences over the body limit",
        s.preferences(&alice.query(), A).body(format!(
            "{{\"marketing\": [], \"x\": \"{}\"}}",
            "y".repeat(limit)
        )),
        413,
        Some("body_too_large"),
    );
    let nested = format!("{{\"consent\": {}1{}}}", "[".repeat(5000), "]".repeat(5000));
    s.add(
        "set-consent nested 5,000 deep",
        s.post(&format!("/ee/v1/privacy/set-consent?configId={DS_A}"))
            .body(nested.clone()),
        400,
        Some("malformed"),
    );
    let deep_value = format!(
        "{{\"identityMap\": {{\"ECID\": [{{\"id\": \"{OPTED_OUT}\"}}]}}, \"consent\": [{{\"standard\": \
         \"Adobe\", \"version\": \"2.0\", \"value\": {{\"collect\": {{\"val\": {}\"y\"{}}}}}}}]}}",
        "{\"a\":".repeat(100),
        "}".repeat(100)
    );
    s.add(
        "set-consent with a value nested 100 deep",
        s.post(&format!("/ee/v1/privacy/set-consent?configId={DS_A}"))
            .body(deep_value),
        400,
        Some("malformed"),
    );
    s.add(
        "preferences nested 5,000 deep",
        s.preferences(&alice.query(), A).body(nested),
        400,
        Some("malformed"),
    );
    for (name, body, status) in [
        ("cut short", format!("{{\"identityMap\": {{\"ECID\": [{{\"id\": \"{OPTED_OUT}\""), 400),
        ("not an object", "[1, 2, 3]".to_owned(), 400),
        ("not JSON", "general=in".to_owned(), 400),
        (
            "consent of the wrong type",
            with_ecid(json!({"consent": "in"}), OPTED_OUT).to_string(),
            400,
        ),
        (
            "an unknown consent value",
            with_ecid(adobe_v1("maybe"), OPTED_OUT).to_string(),
            400,
        ),
        (
            "an unknown standard",
            with_ecid(
                json!({"consent": [{"standard": "Evil", "version": "1.0", "value": {"general": "in"}}]}),
                OPTED_OUT,
            )
            .to_string(),
            400,
        ),
        (
            "invalid UTF-8",
            String::from_utf8_lossy(b"{\"consent\": \"\xff\xfe\"}").into_owned(),
            400,
        ),
    ] {
        s.add(
            format!("set-consent {name}"),
            s.post(&format!("/ee/v1/privacy/set-consent?configId={DS_A}"))
                .body(body),
            status,
            Some("malformed"),
        );
    }
    s.add(
        "set-consent with invalid UTF-8 bytes",
        s.post(&format!("/ee/v1/privacy/set-consent?configId={DS_A}"))
            .body(b"{\"consent\": [\"\xff\xfe\"]}".to_vec()),
        400,
        Some("malformed"),
    );
    for (name, body) in [
        ("no choices", json!({"marketing": []})),
        (
            "an unknown channel",
            json!({"marketing": [{"type": "fax", "choice": "yes"}]}),
        ),
        (
            "an unknown choice",
            json!({"marketing": [{"type": "email", "choice": "maybe"}]}),
        ),
        (
            "an unknown field",
            json!({"marketing": [{"type": "email", "choice": "yes"}], "org": ORG_B}),
        ),
        ("a choice of the wrong type", json!({"marketing": "yes"})),
    ] {
        s.add(
            format!("preferences with {name}"),
            s.preferences(&alice.query(), A).json(&body),
            400,
            Some("malformed"),
        );
    }
    s.add(
        "a link request with an unknown channel",
        with(s.post("/admin/v1/unsubscribe-links"), A)
            .json(&json!({"profile": {"namespace": "CRMID", "id": "alice"}, "channel": "fax"})),
        400,
        Some("malformed"),
    );

    // ---- Identities and cookies: CR, LF, `;` and injection strings
    for (i, hostile) in HOSTILE.iter().enumerate() {
        for (place, body) in [
            (
                "identityMap",
                json!({"identityMap": {"ECID": [{"id": hostile}]},
                       "consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}]}),
            ),
            (
                "xdm.identityMap",
                json!({"xdm": {"identityMap": {"ECID": [{"id": hostile}]}},
                       "consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}]}),
            ),
        ] {
            s.add(
                format!("set-consent with hostile ECID {i} in {place}"),
                s.edge("privacy/set-consent", &body),
                400,
                Some("malformed"),
            );
        }
        s.add(
            format!("interact with hostile ECID {i} in an event"),
            s.edge(
                "interact",
                &json!({"events": [{"xdm": {"_id": format!("ev-hostile-event-{i}"),
                        "identityMap": {"ECID": [{"id": hostile, "primary": true}]}}}]}),
            ),
            400,
            Some("malformed"),
        );
        s.add(
            format!("interact with hostile ECID {i}"),
            s.edge(
                "interact",
                &json!({"identityMap": {"ECID": [{"id": hostile}]},
                        "events": [{"xdm": {"_id": format!("ev-hostile-{i}")}}]}),
            ),
            400,
            Some("malformed"),
        );
        // In the admin API's paths: a read and an erasure of what does not exist.
        let path = format!("/admin/v1/profiles/{}/{}", enc(hostile), enc(hostile));
        let control = hostile.contains('\r');
        s.add(
            format!("reading hostile profile {i}"),
            with(s.get(&path), A),
            if control { 400 } else { 404 },
            control.then_some("malformed"),
        );
        s.add(
            format!("erasing hostile profile {i}"),
            with(s.h.client.delete(s.h.url(&path)), A),
            if control { 400 } else { 404 },
            control.then_some("malformed"),
        );
        // As a datastream id and a request id.
        s.add(
            format!("hostile datastream id {i}"),
            s.post(&format!(
                "/ee/v1/privacy/set-consent?configId={}",
                enc(hostile)
            ))
            .body(with_ecid(adobe_v1("in"), OPTED_OUT).to_string()),
            400,
            Some("malformed"),
        );
    }
    // The opted-out visitor's consent cookie forged to `in`, in the Cookie header and in
    // `meta.state`, with `;` and injected pairs: the events are refused (the stored opt-out
    // wins), nothing is stored. Answered 200 with Edge's consent warning; counted as events
    // refused for consent out.
    let forged_cookies = [
        "kndctr_ORGA_AdobeOrg_consent=general=in".to_owned(),
        "kndctr_ORGA_AdobeOrg_consent=general%3Din%3Bgeneral%3Din".to_owned(),
        "kndctr_ORGA_AdobeOrg_consent=general=in;kndctr_ORGA_AdobeOrg_consent=general=in"
            .to_owned(),
    ];
    let mut refused_events = 0;
    for (i, cookie) in forged_cookies.iter().enumerate() {
        s.add(
            format!("forged consent cookie {i} in the Cookie header"),
            s.edge(
                "interact",
                &with_ecid(
                    json!({"events": [{"xdm": {"_id": format!("ev-forged-{i}")}}]}),
                    OPTED_OUT,
                ),
            )
            .header("cookie", cookie),
            200,
            None,
        );
        let value = cookie.split_once('=').unwrap().1;
        s.add(
            format!("forged consent cookie {i} in meta.state"),
            s.edge(
                "interact",
                &with_ecid(
                    json!({"meta": {"state": {"entries": [
                        {"key": "kndctr_ORGA_AdobeOrg_consent", "value": value}]}},
                        "events": [{"xdm": {"_id": format!("ev-state-{i}")}}]}),
                    OPTED_OUT,
                ),
            ),
            200,
            None,
        );
        refused_events += 2;
    }

    // CR/LF in a cookie value (possible in `meta.state` only: no client can send it in a header).
    for (i, value) in [
        "general=in\r\nSet-Cookie: kndctr_ORGA_AdobeOrg_consent=general=in",
        "general=in\n",
    ]
    .iter()
    .enumerate()
    {
        s.add(
            format!("consent cookie with CR/LF {i} in meta.state"),
            s.edge(
                "interact",
                &with_ecid(
                    json!({"meta": {"state": {"entries": [
                        {"key": "kndctr_ORGA_AdobeOrg_consent", "value": value}]}},
                        "events": [{"xdm": {"_id": format!("ev-crlf-{i}")}}]}),
                    OPTED_OUT,
                ),
            ),
            200,
            None,
        );
        refused_events += 1;
    }

    // ---- One-click unsubscribe done wrong
    s.add(
        "one-click by GET (the landing page: changes nothing)",
        s.get(&format!("/unsubscribe?{}", bob.query()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click"),
        200,
        None,
    );
    s.add(
        "one-click without its body",
        s.post(&format!("/unsubscribe?{}", bob.query())),
        400,
        Some("malformed"),
    );
    s.add(
        "one-click with another body",
        s.post(&format!("/unsubscribe?{}", bob.query()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=Yes"),
        400,
        Some("malformed"),
    );
    s.add(
        "one-click with the body in the query",
        s.post(&format!(
            "/unsubscribe?{}&List-Unsubscribe=One-Click",
            bob.query()
        )),
        400,
        Some("malformed"),
    );
    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        s.add(
            format!("one-click by {method}"),
            s.h.client
                .request(
                    method.clone(),
                    s.h.url(&format!("/unsubscribe?{}", bob.query())),
                )
                .header("content-type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click"),
            405,
            Some("method"),
        );
    }

    // ---- CORS
    s.add(
        "set-consent from an origin not allowed",
        s.edge("privacy/set-consent", &with_ecid(adobe_v1("out"), VICTIM))
            .header("origin", EVIL),
        403,
        Some("cors_origin"),
    );
    s.add(
        "interact from an origin not allowed",
        s.edge(
            "interact",
            &with_ecid(json!({"events": [{"xdm": {"_id": "ev-evil"}}]}), VICTIM),
        )
        .header("origin", EVIL),
        403,
        Some("cors_origin"),
    );
    s.add(
        "a preflight from an origin not allowed",
        s.h.client
            .request(
                Method::OPTIONS,
                s.h.url(&format!("/ee/v1/privacy/set-consent?configId={DS_A}")),
            )
            .header("origin", EVIL)
            .header("access-control-request-method", "POST"),
        403,
        Some("cors_origin"),
    );
    s.add(
        "set-consent from the `null` origin",
        s.edge("privacy/set-consent", &with_ecid(adobe_v1("out"), VICTIM))
            .header("origin", "null"),
        403,
        Some("cors_origin"),
    );
    s.add(
        "set-consent from the allowed site with a port",
        s.edge("privacy/set-consent", &with_ecid(adobe_v1("out"), VICTIM))
            .header("origin", format!("{SITE}:8443")),
        403,
        Some("cors_origin"),
    );

    // The replays sent after the attacks (below).
    let replays: Vec<RequestBuilder> = (0..6).map(|_| s.one_click(&alice.query())).collect();

    // Send them all, one by one.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let sent = s.attacks.len();
    for attack in s.attacks {
        let response = attack.request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        if status != attack.status {
            let shown: String = body.chars().take(200).collect();
            failures.push(format!(
                "{}: {status}, expected {} ({shown:?})",
                attack.name, attack.status
            ));
        }
        // Nothing a request sends comes back in a cookie or as markup in a page (JSON answers
        // quote it as a JSON string).
        let html = headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("text/html"));
        for hostile in HOSTILE {
            let in_cookie = headers
                .get_all("set-cookie")
                .iter()
                .any(|v| v.to_str().unwrap_or_default().contains(hostile));
            let as_markup = html && (body.contains("<script") || body.contains("<img"));
            if in_cookie || as_markup {
                failures.push(format!("{}: echoed {hostile:?}: {body}", attack.name));
            }
        }
        if let Some(reason) = attack.reason {
            *expected.entry(refused(reason)).or_default() += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{sent} attacks sent, refusals expected by reason: {expected:?}");

    let after = snapshot(h).await;
    for (table, rows) in &before {
        assert_eq!(rows, &after[table], "table {table} changed");
    }

    // Every refusal counted under its reason, and only those.
    let counted_after = counters(h).await;
    let delta = |name: &str| {
        counted_after.get(name).copied().unwrap_or(0)
            - counted_before.get(name).copied().unwrap_or(0)
    };
    for reason in [
        "credentials",
        "scope",
        "link",
        "cors_origin",
        "body_too_large",
        "malformed",
        "method",
        "rate_limit",
    ] {
        let name = refused(reason);
        assert_eq!(
            delta(&name),
            expected.get(&name).copied().unwrap_or(0),
            "{name}"
        );
    }
    assert_eq!(
        delta("consent_events_total{outcome=\"refused_consent_out\"}"),
        refused_events
    );
    assert_eq!(
        delta("consent_auth_failures_total"),
        expected[&refused("credentials")]
    );
    // Every link refusal, and the decrypt API's link without its `sig` (counted there as a
    // malformed request, but a refused link all the same).
    assert_eq!(
        delta("consent_links_refused_total"),
        expected[&refused("link")] + 1
    );

    // Replayed links: the same one-click again and again (mail gateways retry, RFC 8058 wants
    // a success) and at once: answered, nothing changed, each counted as a repeat.
    let sent_replays = replays.len() as u64;
    let mut tasks = Vec::new();
    for request in replays {
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let replayed = snapshot(h).await;
    for (table, rows) in &before {
        assert_eq!(rows, &replayed[table], "table {table} changed by a replay");
    }
    let counted = counters(h).await;
    assert_eq!(
        counted["consent_link_repeats_total"] - counted_after["consent_link_repeats_total"],
        sent_replays
    );

    // The one cross-datastream call: organisation B's datastream names A's visitor. It speaks
    // for a visitor of B (another organisation, another profile), never for A's.
    let response = cross_datastream.request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), cross_datastream.status);
    let changed = snapshot(h).await;
    let ours = |rows: &Vec<String>| -> Vec<String> {
        rows.iter()
            .filter(|r| r.starts_with(&format!("{ORG_A}|")))
            .cloned()
            .collect()
    };
    for table in [
        "profiles",
        "events",
        "consent_records",
        "record_personal",
        "chain_heads",
    ] {
        assert_eq!(
            ours(&before[table]),
            ours(&changed[table]),
            "organisation A's {table} changed through B's datastream"
        );
    }
    let victim = h
        .server()
        .db()
        .profile(&crate::edge::key(VICTIM))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(victim.general, "in");

    // And the server still serves: the victim's own choice goes through.
    let (status, answer) = h
        .post_json(
            &format!("/ee/v1/privacy/set-consent?configId={DS_A}"),
            &with_ecid(adobe_v1("out"), VICTIM),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        entry(&store_entries(&answer), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=out"
    );
    h.server()
        .db()
        .verify_chain(ORG_A, "prod")
        .await
        .unwrap()
        .unwrap();
}

mod attacks {
    use super::*;

    async fn start(db: Db) -> Option<Harness> {
        Harness::start_with(db, |config| {
            config.keys = keys();
            config.allow_unknown_datastreams = false;
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let h = start(Db::Sqlite).await.unwrap();
        every_attack_is_refused_changes_nothing_and_is_counted(&h).await;
        h.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(h) = start(Db::Postgres).await else {
            return;
        };
        every_attack_is_refused_changes_nothing_and_is_counted(&h).await;
        h.shutdown().await;
    }
}
