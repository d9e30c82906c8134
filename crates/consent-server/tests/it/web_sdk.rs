//! What the Web SDK needs from the Edge endpoints beyond the basics, over plain HTTP (the same
//! flows in a real browser with alloy are in `alloy.rs`): TC strings sent with events, the
//! consent cookie of a visitor who lost the identity cookie, the CORE identity, identities other
//! than the ECID kept with a consent change, and a set-consent that decides nothing.

use consent_core::consent_tcf::TcString;
use serde_json::{Value, json};

use crate::edge::{adobe_v1, ecid_of, entry, key, store_entries, with_ecid};
use crate::harness::{DS_A, Harness};
use crate::on_both;

const CONSENT: &str = "kndctr_ORGA_AdobeOrg_consent";
const IDENTITY: &str = "kndctr_ORGA_AdobeOrg_identity";

fn interact() -> String {
    format!("/ee/v1/interact?configId={DS_A}")
}

fn set_consent() -> String {
    format!("/ee/v1/privacy/set-consent?configId={DS_A}")
}

/// A TC string that does (or does not) give purpose 1 to vendor 565.
fn tc(grants: bool) -> String {
    TcString::builder()
        .purpose_consent(1, grants)
        .vendor_consent(565, true)
        .build()
        .unwrap()
        .encode()
}

/// An `interact` body whose one event carries `tc` in `xdm.consentStrings`, as alloy sends it.
fn event_with_tc(tc: &str, id: &str) -> Value {
    json!({"events": [{"xdm": {"_id": id, "consentStrings": [{
        "consentStandard": "IAB TCF", "consentStandardVersion": "2.0",
        "consentStringValue": tc, "gdprApplies": true, "containsPersonalData": false}]}}]})
}

fn consent_cookie(answer: &Value) -> Option<String> {
    entry(&store_entries(answer), CONSENT).map(|e| e["value"].as_str().unwrap().to_owned())
}

fn warned_out(answer: &Value) -> bool {
    answer["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|w| {
            w["type"] == "https://ns.adobe.com/aep/errors/EXEG-0301-200"
                && w["report"]["count"] == 1
        })
}

async fn tc_strings_with_events_are_decided_and_recorded(h: &Harness) {
    // Granting: "in", written as the consent cookie; the event is kept; a record says so.
    let (status, answer) = h
        .post_json(&interact(), &event_with_tc(&tc(true), "e-1"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(consent_cookie(&answer).as_deref(), Some("general=in"));
    assert!(!warned_out(&answer), "{answer}");
    let granted = ecid_of(&answer);
    let db = h.server().db();
    assert_eq!(db.count_events(&key(&granted)).await.unwrap(), 1);
    let records = db.records(&key(&granted)).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].source, "edge:interact");
    assert_eq!(records[0].payload["general"], "in");

    // Refusing: "out"; the event is dropped with Edge's warning, and later ones too.
    let (status, answer) = h
        .post_json(&interact(), &event_with_tc(&tc(false), "e-2"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(consent_cookie(&answer).as_deref(), Some("general=out"));
    assert!(warned_out(&answer), "{answer}");
    let refused = ecid_of(&answer);
    assert_eq!(db.count_events(&key(&refused)).await.unwrap(), 0);
    assert_eq!(
        db.profile(&key(&refused)).await.unwrap().unwrap().general,
        "out"
    );
    let later = with_ecid(json!({"events": [{"xdm": {"_id": "e-3"}}]}), &refused);
    let (_, answer) = h.post_json(&interact(), &later).await;
    assert!(warned_out(&answer), "{answer}");
    assert_eq!(db.count_events(&key(&refused)).await.unwrap(), 0);

    // The same strings sent again (alloy may attach them to every event) are recorded once;
    // a change of mind is recorded.
    for id in ["e-5", "e-6"] {
        let (status, answer) = h
            .post_json(
                &interact(),
                &with_ecid(event_with_tc(&tc(true), id), &granted),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(consent_cookie(&answer).as_deref(), Some("general=in"));
    }
    assert_eq!(db.records(&key(&granted)).await.unwrap().len(), 1);
    assert_eq!(db.count_events(&key(&granted)).await.unwrap(), 3);
    let (_, answer) = h
        .post_json(
            &interact(),
            &with_ecid(event_with_tc(&tc(false), "e-7"), &granted),
        )
        .await;
    assert_eq!(consent_cookie(&answer).as_deref(), Some("general=out"));
    assert_eq!(db.records(&key(&granted)).await.unwrap().len(), 2);

    // A request refused for another reason (a NUL in an event id) changes no consent.
    let fresh = "12345678901234567890123456789012345678";
    let mut bad = with_ecid(event_with_tc(&tc(false), "e-\u{0}"), fresh);
    bad["events"][0]["xdm"]["_id"] = json!("e-\u{0}");
    let (status, answer) = h.post_json(&interact(), &bad).await;
    assert_eq!(status, 400, "{answer}");
    assert!(db.profile(&key(fresh)).await.unwrap().is_none());
    assert!(db.records(&key(fresh)).await.unwrap().is_empty());

    // A string that does not decode is refused as set-consent refuses it; nothing is stored.
    let (status, answer) = h
        .post_json(&interact(), &event_with_tc("not a tc string", "e-4"))
        .await;
    assert!(status == 400 || status == 422, "{status} {answer}");
    assert!(
        answer["type"]
            .as_str()
            .unwrap()
            .starts_with("https://ns.adobe.com/aep/errors/EXEG-"),
        "{answer}"
    );
}
on_both!(
    tc_strings_with_events,
    tc_strings_with_events_are_decided_and_recorded
);

async fn a_kept_consent_cookie_out_keeps_a_new_visitor_out(h: &Harness) {
    // The visitor opted out, then lost the identity cookie: the request carries only the
    // consent cookie, in the `Cookie` header or in `meta.state`.
    let event = |id: &str| json!({"events": [{"xdm": {"_id": id}}]});
    let response = h
        .client
        .post(h.url(&interact()))
        .header("cookie", format!("{CONSENT}=general=out"))
        .json(&event("c-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(warned_out(&answer), "{answer}");
    assert_eq!(consent_cookie(&answer).as_deref(), Some("general=out"));
    let ecid = ecid_of(&answer);
    let db = h.server().db();
    assert_eq!(db.count_events(&key(&ecid)).await.unwrap(), 0);
    assert!(
        db.records(&key(&ecid)).await.unwrap().is_empty(),
        "the cookie is not a new consent: nothing is recorded"
    );

    let mut in_meta = event("c-2");
    in_meta["meta"] = json!({"state": {"entries": [{"key": CONSENT, "value": "general=out"}]}});
    let (_, answer) = h.post_json(&interact(), &in_meta).await;
    assert!(warned_out(&answer), "{answer}");
    assert_eq!(consent_cookie(&answer).as_deref(), Some("general=out"));

    // The cookie never loosens: "in" in the cookie of an opted-out visitor changes nothing.
    let (_, answer) = h.post_json(&set_consent(), &adobe_v1("out")).await;
    let out = ecid_of(&answer);
    let response = h
        .client
        .post(h.url(&interact()))
        .header("cookie", format!("{CONSENT}=general=in"))
        .json(&with_ecid(event("c-3"), &out))
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert!(warned_out(&answer), "{answer}");
    assert_eq!(db.count_events(&key(&out)).await.unwrap(), 0);

    // Without a consent cookie a new visitor is served as before (no decision: kept).
    let (_, answer) = h.post_json(&interact(), &event("c-4")).await;
    assert!(!warned_out(&answer), "{answer}");
    assert_eq!(consent_cookie(&answer), None);
}
on_both!(
    kept_consent_cookie,
    a_kept_consent_cookie_out_keeps_a_new_visitor_out
);

async fn the_core_identity_is_answered_when_asked(h: &Harness) {
    let acquire = format!("/ee/v1/identity/acquire?configId={DS_A}");
    let ask = json!({"query": {"identity": {"fetch": ["ECID", "CORE"]}}});
    let (status, answer) = h.post_json(&acquire, &ask).await;
    assert_eq!(status, 200, "{answer}");
    let identities = answer["handle"][0]["payload"].as_array().unwrap().clone();
    assert_eq!(identities.len(), 2, "{answer}");
    assert_eq!(identities[1]["namespace"]["code"], "CORE");
    let core = identities[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(core.len(), 38);
    assert!(core.bytes().all(|b| b.is_ascii_digit()));
    let ecid = ecid_of(&answer);
    assert_ne!(core, ecid);
    // Stable for the visitor, different for another one; not given unless asked.
    let (_, again) = h.post_json(&acquire, &with_ecid(ask.clone(), &ecid)).await;
    assert_eq!(again["handle"][0]["payload"][1]["id"], core.as_str());
    let (_, other) = h.post_json(&acquire, &ask).await;
    assert_ne!(other["handle"][0]["payload"][1]["id"], core.as_str());
    let (_, plain) = h.post_json(&acquire, &with_ecid(json!({}), &ecid)).await;
    assert_eq!(plain["handle"][0]["payload"].as_array().unwrap().len(), 1);
    crate::openapi::conforms(h, "EdgeResponse", &answer).await;
}
on_both!(core_identity, the_core_identity_is_answered_when_asked);

async fn other_identities_of_a_consent_change_are_kept_apart_and_erasable(h: &Harness) {
    let mut body = adobe_v1("in");
    body["identityMap"] = json!({"HYP": [{"id": "id123"}]});
    let (status, answer) = h.post_json(&set_consent(), &body).await;
    assert_eq!(status, 200, "{answer}");
    let ecid = ecid_of(&answer);
    let db = h.server().db();
    let records = db.records(&key(&ecid)).await.unwrap();
    assert_eq!(records.len(), 1);
    assert!(
        !records[0].payload.to_string().contains("id123"),
        "the chain holds a digest, not the identity: {}",
        records[0].payload
    );
    let export = |namespace: &'static str, id: String| async move {
        let key = consent_server::ProfileKey {
            namespace: namespace.to_owned(),
            id,
            ..key("")
        };
        db.export(&key).await.unwrap().unwrap()
    };
    let document = export("ECID", ecid.clone()).await;
    assert_eq!(
        document["records"][0]["change"]["identityMap"]["HYP"][0]["id"], "id123",
        "{document}"
    );
    // The CRM id's own export finds the change that names it, and its erasure removes it.
    let named = export("HYP", "id123".to_owned()).await;
    assert_eq!(
        named["elsewhere"]["recordDetails"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{named}"
    );
    let erased = h
        .auth(
            h.client.delete(h.url("/admin/v1/profiles/HYP/id123")),
            false,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let document = export("ECID", ecid.clone()).await;
    assert!(!document.to_string().contains("id123"), "{document}");
    assert!(db.verify_chain(crate::harness::ORG_A, "prod").await.is_ok());
}
on_both!(
    other_identities,
    other_identities_of_a_consent_change_are_kept_apart_and_erasable
);

async fn a_set_consent_that_decides_nothing_writes_no_consent_cookie(h: &Harness) {
    // Adobe 2.0 without `collect`, on a new visitor: the marketing choice is stored and
    // recorded, no `general` is decided, and the answer writes no consent cookie (there is no
    // decision to write; alloy then stays pending, `alloy.rs` shows it).
    let body = json!({"consent": [{"standard": "Adobe", "version": "2.0",
        "value": {"marketing": {"email": {"val": "n"}}}}]});
    let (status, answer) = h.post_json(&set_consent(), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(consent_cookie(&answer), None, "{answer}");
    assert!(entry(&store_entries(&answer), IDENTITY).is_some());
    let ecid = ecid_of(&answer);
    let db = h.server().db();
    let records = db.records(&key(&ecid)).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload["general"], Value::Null);
    let profile = db.profile(&key(&ecid)).await.unwrap().unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "n");
    // `collect` p decides pending: that one is written.
    let pending = json!({"consent": [{"standard": "Adobe", "version": "2.0",
        "value": {"collect": {"val": "p"}}}]});
    let (_, answer) = h.post_json(&set_consent(), &pending).await;
    assert_eq!(consent_cookie(&answer).as_deref(), Some("general=pending"));
}
on_both!(
    set_consent_deciding_nothing,
    a_set_consent_that_decides_nothing_writes_no_consent_cookie
);

#[tokio::test]
async fn cookies_carry_the_same_site_attribute_when_configured() {
    let h = Harness::start_with(crate::harness::Db::Sqlite, |config| {
        config.cookie_same_site = Some(consent_server::SameSite::None);
    })
    .await
    .unwrap();
    let (status, answer) = h.post_json(&set_consent(), &adobe_v1("in")).await;
    assert_eq!(status, 200, "{answer}");
    let entries = store_entries(&answer);
    assert_eq!(entries.len(), 3, "{answer}");
    for entry in &entries {
        assert_eq!(entry["attrs"], json!({"SameSite": "None"}), "{entry}");
    }
    crate::openapi::conforms(&h, "EdgeResponse", &answer).await;
    h.shutdown().await;
    // Not configured: no attributes (the client's default).
    let h = Harness::start(crate::harness::Db::Sqlite).await.unwrap();
    let (_, answer) = h.post_json(&set_consent(), &adobe_v1("in")).await;
    assert!(
        store_entries(&answer)
            .iter()
            .all(|e| e.get("attrs").is_none())
    );
    h.shutdown().await;
    assert_eq!("lax".parse(), Ok(consent_server::SameSite::Lax));
    assert!("sometimes".parse::<consent_server::SameSite>().is_err());
}
