//! The server decides `general` exactly as the engine does: both go through
//! `SetConsentOptions::decide`, and a pending decision is stored, answered and enforced as pending.

use consent_core::{Decision, SetConsentOptions};
use serde_json::{Value, json};

use crate::edge::{adobe_v1, ecid_of, entry, key, store_entries, with_ecid};
use crate::harness::{DS_A, Db, Harness, fake_iab};
use crate::on_both;

const CONSENT_COOKIE: &str = "kndctr_ORGA_AdobeOrg_consent";

fn v1(general: &str) -> Value {
    json!({"standard": "Adobe", "version": "1.0", "value": {"general": general}})
}

fn v2(value: Value) -> Value {
    json!({"standard": "Adobe", "version": "2.0", "value": value})
}

fn collect(val: &str) -> Value {
    v2(json!({"collect": {"val": val}}))
}

fn iab(tc: &str, gdpr_applies: bool) -> Value {
    json!({"standard": "IAB TCF", "version": "2.0", "value": tc, "gdprApplies": gdpr_applies})
}

/// Set-consent bodies, each with a name for the failure message.
fn bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "[v2 collect y + marketing.any dn]",
            json!([v2(
                json!({"collect": {"val": "y"}, "marketing": {"any": {"val": "dn"}}})
            )]),
        ),
        (
            "[v2 collect y + share n, v1 in]",
            json!([
                v2(json!({"collect": {"val": "y"}, "share": {"val": "n"}})),
                v1("in")
            ]),
        ),
        ("[v1 in, v2 collect p]", json!([v1("in"), collect("p")])),
        ("[v2 collect p, v1 in]", json!([collect("p"), v1("in")])),
        (
            "[v1 out, IAB granting]",
            json!([v1("out"), iab("GRANT", true)]),
        ),
        ("[IAB gdprApplies false]", json!([iab("CO123", false)])),
        ("[v2 collect dy]", json!([collect("dy")])),
        (
            "[v2 collect y, v2 collect u]",
            json!([collect("y"), collect("u")]),
        ),
        (
            "[IAB granting, v2 collect LI]",
            json!([iab("GRANT", true), collect("LI")]),
        ),
        ("[IAB denying, v1 in]", json!([iab("DENY", true), v1("in")])),
        ("[v2 collect n, v1 in]", json!([collect("n"), v1("in")])),
        (
            "[v2 marketing.email n, no collect]",
            json!([v2(json!({"marketing": {"email": {"val": "n"}}}))]),
        ),
    ]
}

/// The decision in an answer's consent cookie; `None` when the answer writes none.
fn answered(answer: &Value) -> Option<Decision> {
    let value = entry(&store_entries(answer), CONSENT_COOKIE)?["value"]
        .as_str()?
        .to_owned();
    let general = value.strip_prefix("general=")?;
    Some(Decision::from_wire(general).unwrap_or_else(|| panic!("unknown value {value}")))
}

/// Posts every body to a fresh profile and to profiles that said in or out before, and compares
/// what the server decided (the `general` of its record, its answer's consent cookie, the stored
/// `general`) with `SetConsentOptions::decide` under the server's own IAB evaluator. Collects
/// every disagreement, so a failure lists all the rows that differ.
async fn the_server_decides_general_as_the_engine_does(db: Db) {
    let iab = fake_iab();
    let server_iab = iab.clone();
    let Some(h) = Harness::start_with(db, move |c| c.iab = server_iab).await else {
        return;
    };
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let store = h.server().db();
    let mut disagreements = Vec::new();
    for (name, consent) in bodies() {
        for before in [None, Some(Decision::In), Some(Decision::Out)] {
            let (body, ecid) = match before {
                None => (json!({ "consent": consent }), None),
                Some(decision) => {
                    let (status, answer) = h.post_json(&path, &adobe_v1(decision.as_str())).await;
                    assert_eq!(status, 200, "{answer}");
                    let ecid = ecid_of(&answer);
                    (with_ecid(json!({ "consent": consent }), &ecid), Some(ecid))
                }
            };
            let engine = SetConsentOptions::from_json(&body)
                .unwrap()
                .decide(iab.as_ref(), 565)
                .unwrap()
                .general;
            let (status, answer) = h.post_json(&path, &body).await;
            assert_eq!(status, 200, "{name}: {answer}");
            let ecid = ecid.unwrap_or_else(|| ecid_of(&answer));
            let record = store.records(&key(&ecid)).await.unwrap().pop().unwrap();
            let recorded = record.payload["general"]
                .as_str()
                .map(|g| Decision::from_wire(g).unwrap());
            let profile = store.profile(&key(&ecid)).await.unwrap().unwrap();
            // A call that decides nothing about general keeps what was there before; a fresh
            // profile then has no decision (the writer's placeholder "pending", no cookie).
            let applies = engine.or(before);
            let stored = applies.map_or("pending", Decision::as_str);
            if recorded != engine || answered(&answer) != applies || profile.general != stored {
                disagreements.push(format!(
                    "{name}, before {before:?}: engine {engine:?} (applies {applies:?}); server \
                     recorded {recorded:?}, answered {:?}, stored {:?}",
                    answered(&answer),
                    profile.general
                ));
            }
            // Pending is never written into the profile as "y" or "n".
            if engine == Some(Decision::Pending) {
                let val = profile.consents["collect"]["val"].as_str().unwrap_or("");
                if matches!(val, "y" | "n" | "") {
                    disagreements.push(format!(
                        "{name}, before {before:?}: pending stored with collect {val:?}"
                    ));
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the server and the engine disagree:\n{}",
        disagreements.join("\n")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_decides_general_as_the_engine_does_sqlite() {
    the_server_decides_general_as_the_engine_does(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_decides_general_as_the_engine_does_postgres() {
    the_server_decides_general_as_the_engine_does(Db::Postgres).await;
}

async fn metrics(h: &Harness) -> String {
    h.client
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn events_of_a_pending_profile_are_counted_not_stored(h: &Harness) {
    let consent = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let interact = format!("/ee/v1/interact?configId={DS_A}");
    let events = |ids: &[&str]| json!({"events": ids.iter().map(|id| json!({"xdm": {"_id": id}})).collect::<Vec<_>>()});
    let db = h.server().db();
    let (_, answer) = h.post_json(&consent, &adobe_v1("in")).await;
    let ecid = ecid_of(&answer);
    h.post_json(&interact, &with_ecid(events(&["e1"]), &ecid))
        .await;
    assert_eq!(db.count_events(&key(&ecid)).await.unwrap(), 1);

    // The person's consent becomes pending: it is answered as pending everywhere, and events
    // that arrive anyway are counted, not stored.
    let pending = json!({"consent": [collect("p")]});
    let (_, answer) = h.post_json(&consent, &with_ecid(pending, &ecid)).await;
    assert_eq!(answered(&answer), Some(Decision::Pending), "{answer}");
    let (status, answer) = h
        .post_json(&interact, &with_ecid(events(&["e2", "e3"]), &ecid))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answered(&answer), Some(Decision::Pending), "{answer}");
    assert_eq!(
        answer["warnings"][0]["title"], "Consent pending",
        "{answer}"
    );
    assert_eq!(answer["warnings"][0]["report"]["count"], 2, "{answer}");
    assert_eq!(db.count_events(&key(&ecid)).await.unwrap(), 1);
    let (_, answer) = h
        .post_json(
            &format!("/ee/v1/identity/acquire?configId={DS_A}"),
            &with_ecid(json!({}), &ecid),
        )
        .await;
    assert_eq!(answered(&answer), Some(Decision::Pending), "{answer}");
    // A later call that decides nothing about general keeps the pending decision.
    let marketing = json!({"consent": [v2(json!({"marketing": {"email": {"val": "y"}}}))]});
    let (_, answer) = h.post_json(&consent, &with_ecid(marketing, &ecid)).await;
    assert_eq!(answered(&answer), Some(Decision::Pending), "{answer}");
    let text = metrics(h).await;
    assert!(
        text.contains("consent_events_total{outcome=\"refused_consent_pending\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("consent_events_total{outcome=\"refused_consent_out\"} 0"),
        "{text}"
    );

    // Consent given again: events are stored again.
    h.post_json(&consent, &with_ecid(adobe_v1("in"), &ecid))
        .await;
    let (_, answer) = h
        .post_json(&interact, &with_ecid(events(&["e4"]), &ecid))
        .await;
    assert!(answer.get("warnings").is_none(), "{answer}");
    assert_eq!(db.count_events(&key(&ecid)).await.unwrap(), 2);

    // A profile that never had a decision (the writer's placeholder "pending", no collect
    // value) is undecided, as before: no consent cookie, and its events are stored.
    let marketing = json!({"consent": [v2(json!({"marketing": {"email": {"val": "n"}}}))]});
    let (_, answer) = h.post_json(&consent, &marketing).await;
    let other = ecid_of(&answer);
    assert_eq!(answered(&answer), None, "{answer}");
    assert_eq!(
        db.profile(&key(&other)).await.unwrap().unwrap().general,
        "pending"
    );
    let (_, answer) = h
        .post_json(&interact, &with_ecid(events(&["o1"]), &other))
        .await;
    assert_eq!(answered(&answer), None, "{answer}");
    assert!(answer.get("warnings").is_none(), "{answer}");
    assert_eq!(db.count_events(&key(&other)).await.unwrap(), 1);
}
on_both!(
    pending_events,
    events_of_a_pending_profile_are_counted_not_stored
);
