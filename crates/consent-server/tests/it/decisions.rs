//! The server decides `general` and every purpose exactly as the engine does: both go through
//! `SetConsentOptions::decide`, a pending decision is stored, answered and enforced as pending,
//! and the profile's XDM consents hold the decided value of every purpose.

use consent_core::{ConsentDecision, Decision, Purpose, SetConsentOptions};
use serde_json::{Value, json};

use crate::edge::{adobe_v1, ecid_of, entry, key, store_entries, with_ecid};
use crate::harness::{DS_A, Db, Harness, fake_iab};
use crate::on_both;

const CONSENT_COOKIE: &str = "kndctr_ORGA_AdobeOrg_consent";

pub(crate) fn v1(general: &str) -> Value {
    json!({"standard": "Adobe", "version": "1.0", "value": {"general": general}})
}

pub(crate) fn v2(value: Value) -> Value {
    json!({"standard": "Adobe", "version": "2.0", "value": value})
}

pub(crate) fn collect(val: &str) -> Value {
    v2(json!({"collect": {"val": val}}))
}

pub(crate) fn iab(tc: &str, gdpr_applies: bool) -> Value {
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
        (
            "[v2 collect y + share n, v2 collect y + share y]",
            json!([
                v2(json!({"collect": {"val": "y"}, "share": {"val": "n"}})),
                v2(json!({"collect": {"val": "y"}, "share": {"val": "y"}}))
            ]),
        ),
        (
            "[v2 collect y + share y, v2 collect y + share n]",
            json!([
                v2(json!({"collect": {"val": "y"}, "share": {"val": "y"}})),
                v2(json!({"collect": {"val": "y"}, "share": {"val": "n"}}))
            ]),
        ),
        (
            "[v1 out, v2 collect y + share y]",
            json!([
                v1("out"),
                v2(json!({"collect": {"val": "y"}, "share": {"val": "y"}}))
            ]),
        ),
        (
            "[v2 collect y + marketing.any n + marketing.email y]",
            json!([v2(json!({"collect": {"val": "y"},
                             "marketing": {"any": {"val": "n"}, "email": {"val": "y"}}}))]),
        ),
        (
            "[v2 collect y + idSpecific email n]",
            json!([v2(
                json!({"collect": {"val": "y"}, "idSpecific": {"email": {
                    "a@example.com": {"marketing": {"email": {"val": "n"}}}
                }}})
            )]),
        ),
        (
            "[v2 marketing.any y + marketing.email p + marketing.sms n]",
            json!([v2(json!({"marketing": {
                "any": {"val": "y"}, "email": {"val": "p"}, "sms": {"val": "n"}
            }}))]),
        ),
        (
            "[v2 share dy, v2 share y + personalize.content LI + adID n]",
            json!([
                v2(json!({"share": {"val": "dy"}})),
                v2(
                    json!({"share": {"val": "y"}, "personalize": {"content": {"val": "LI"}},
                          "adID": {"val": "n", "idType": "IDFA"}})
                )
            ]),
        ),
        (
            "[v1 in, v2 share p]",
            json!([v1("in"), v2(json!({"share": {"val": "p"}}))]),
        ),
        ("[v1 in]", json!([v1("in")])),
        ("[v1 out]", json!([v1("out")])),
    ]
}

/// The XDM field that stores each named purpose, as a JSON pointer into the profile's consents.
const PURPOSE_FIELDS: [(Purpose, &str); 12] = [
    (Purpose::SHARE, "/share"),
    (Purpose::PERSONALIZE_CONTENT, "/personalize/content"),
    (Purpose::AD_ID, "/adID"),
    (Purpose::MARKETING_ANY, "/marketing/any"),
    (Purpose::MARKETING_EMAIL, "/marketing/email"),
    (Purpose::MARKETING_PUSH, "/marketing/push"),
    (Purpose::MARKETING_SMS, "/marketing/sms"),
    (Purpose::MARKETING_WHATSAPP, "/marketing/whatsApp"),
    (Purpose::MARKETING_CALL, "/marketing/call"),
    (Purpose::MARKETING_FAX, "/marketing/fax"),
    (
        Purpose::MARKETING_COMMERCIAL_EMAIL,
        "/marketing/commercialEmail",
    ),
    (Purpose::MARKETING_POSTAL_MAIL, "/marketing/postalMail"),
];

/// The stored `val` of the field at `pointer`, when there is one.
fn stored_val<'a>(consents: &'a Value, pointer: &str) -> Option<&'a str> {
    consents.pointer(&format!("{pointer}/val"))?.as_str()
}

/// What a stored XDM `val` means: `y` in, `n` out, every other value pending.
fn meaning(val: &str) -> Decision {
    match val {
        "y" => Decision::In,
        "n" => Decision::Out,
        _ => Decision::Pending,
    }
}

/// `val` made at least as strict as `decision`, as the server's rule for Adobe 1.0 has it: a
/// looser value becomes `n` for out and `p` for pending; a value already as strict stays.
fn at_least(val: &str, decision: Decision) -> String {
    let stored = meaning(val);
    match stored.stricter(decision) {
        strictest if strictest == stored => val.to_owned(),
        Decision::Out => "n".to_owned(),
        _ => "p".to_owned(),
    }
}

/// Compares the purposes the server stored (`after`, the profile's consents after the call) with
/// the engine's decision: every purpose the decision names has its decided meaning; every other
/// purpose field holds what it held before the call (`before`), made at least as strict as what
/// the call gives all purposes (Adobe 1.0), at the top level and in `idSpecific`.
fn purpose_disagreements(decision: &ConsentDecision, before: &Value, after: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for (purpose, pointer) in PURPOSE_FIELDS {
        let stored = stored_val(after, pointer);
        let own = decision
            .purposes
            .iter()
            .find(|(p, _)| *p == purpose)
            .map(|(_, d)| *d);
        let expected = match own {
            Some(d) => {
                if stored.map(meaning) != Some(d) {
                    found.push(format!("{pointer}: engine {d:?}, server stored {stored:?}"));
                }
                continue;
            }
            None => stored_val(before, pointer).map(|val| {
                decision
                    .all_purposes
                    .map_or(val.to_owned(), |d| at_least(val, d))
            }),
        };
        if stored.map(str::to_owned) != expected {
            found.push(format!(
                "{pointer}: not decided by the call (all purposes {:?}), expected {expected:?}, \
                 server stored {stored:?}",
                decision.all_purposes
            ));
        }
    }
    if let Some(all) = decision.all_purposes
        && let Some(namespaces) = after.get("idSpecific").and_then(Value::as_object)
    {
        for (namespace, ids) in namespaces {
            for (id, consents) in ids.as_object().into_iter().flatten() {
                for (_, pointer) in PURPOSE_FIELDS {
                    if let Some(val) = stored_val(consents, pointer)
                        && meaning(val).stricter(all) != meaning(val)
                    {
                        found.push(format!(
                            "idSpecific {namespace} {id} {pointer}: all purposes {all:?}, \
                             server stored {val:?}"
                        ));
                    }
                }
            }
        }
    }
    found
}

/// A body that says yes to everything, the id-level email of `a@example.com` included, so that
/// a later call has stored purposes to override or restrict.
fn everything_y() -> Value {
    let y = || json!({"val": "y"});
    json!({"consent": [v2(json!({
        "collect": y(), "share": y(), "personalize": {"content": y()}, "adID": y(),
        "marketing": {
            "any": y(), "email": {"val": "y", "reason": "newsletter"}, "push": y(), "sms": y(),
            "whatsApp": y(), "call": y(), "fax": y(), "commercialEmail": y(), "postalMail": y()
        },
        "idSpecific": {"email": {"a@example.com": {"marketing": {"email": y()}}}}
    }))]})
}

/// The decision in an answer's consent cookie; `None` when the answer writes none.
fn answered(answer: &Value) -> Option<Decision> {
    let value = entry(&store_entries(answer), CONSENT_COOKIE)?["value"]
        .as_str()?
        .to_owned();
    let general = value.strip_prefix("general=")?;
    Some(Decision::from_wire(general).unwrap_or_else(|| panic!("unknown value {value}")))
}

/// Posts every body to a fresh profile, to profiles that said in or out before and to one that
/// said yes to every purpose, and compares what the server decided (the `general` of its record,
/// its answer's consent cookie, the stored `general`, the stored value of every purpose) with
/// `SetConsentOptions::decide` under the server's own IAB evaluator. Collects every
/// disagreement, so a failure lists all the rows that differ.
async fn the_server_decides_general_as_the_engine_does(db: Db) {
    let iab = fake_iab();
    let server_iab = iab.clone();
    let Some(h) = Harness::start_with(db, move |c| c.iab = server_iab).await else {
        return;
    };
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let store = h.server().db();
    let mut disagreements = Vec::new();
    let befores = [
        ("fresh", None, None),
        ("in", Some(adobe_v1("in")), Some(Decision::In)),
        ("out", Some(adobe_v1("out")), Some(Decision::Out)),
        ("every purpose y", Some(everything_y()), Some(Decision::In)),
    ];
    for (name, consent) in bodies() {
        for (before_name, before_body, before) in &befores {
            let before = *before;
            let (body, ecid) = match before_body {
                None => (json!({ "consent": consent }), None),
                Some(before_body) => {
                    let (status, answer) = h.post_json(&path, before_body).await;
                    assert_eq!(status, 200, "{answer}");
                    let ecid = ecid_of(&answer);
                    (with_ecid(json!({ "consent": consent }), &ecid), Some(ecid))
                }
            };
            let before_consents = match &ecid {
                Some(ecid) => store.profile(&key(ecid)).await.unwrap().unwrap().consents,
                None => json!({}),
            };
            let decision = SetConsentOptions::from_json(&body)
                .unwrap()
                .decide(iab.as_ref(), 565)
                .unwrap();
            let engine = decision.general;
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
                    "{name}, before {before_name}: engine {engine:?} (applies {applies:?}); \
                     server recorded {recorded:?}, answered {:?}, stored {:?}",
                    answered(&answer),
                    profile.general
                ));
            }
            // Pending is never written into the profile as "y" or "n".
            if engine == Some(Decision::Pending) {
                let val = profile.consents["collect"]["val"].as_str().unwrap_or("");
                if matches!(val, "y" | "n" | "") {
                    disagreements.push(format!(
                        "{name}, before {before_name}: pending stored with collect {val:?}"
                    ));
                }
            }
            for purpose in purpose_disagreements(&decision, &before_consents, &profile.consents) {
                disagreements.push(format!("{name}, before {before_name}: {purpose}"));
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
    let text = h.metrics().await;
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

/// The decided values are written into the fields the call's objects made: the call's own
/// pending value is kept (a channel without its own takes `marketing.any`'s), the other XDM
/// details (`reason`, `time`) stay, and Adobe 1.0 makes every stored purpose at least as strict
/// as its `general`, never looser.
async fn stored_purposes_keep_the_calls_values_and_details(h: &Harness) {
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let db = h.server().db();
    let post = |consent: Value, ecid: Option<String>| {
        let path = path.clone();
        async move {
            let body = json!({ "consent": consent });
            let body = match &ecid {
                Some(ecid) => with_ecid(body, ecid),
                None => body,
            };
            let (status, answer) = h.post_json(&path, &body).await;
            assert_eq!(status, 200, "{answer}");
            let ecid = ecid.unwrap_or_else(|| ecid_of(&answer));
            let consents = db.profile(&key(&ecid)).await.unwrap().unwrap().consents;
            (ecid, consents)
        }
    };
    let time = "2024-05-01T10:00:00Z";

    // `any: dn` is the value of every channel without its own; a channel's own pending value
    // stays; `reason` and `time` stay beside the decided value.
    let (_, c) = post(
        json!([v2(json!({"collect": {"val": "y"}, "marketing": {
            "any": {"val": "dn", "time": time},
            "push": {"val": "dy", "reason": "asked later"},
            "sms": {"val": "y"}
        }}))]),
        None,
    )
    .await;
    assert_eq!(
        c["marketing"]["any"],
        json!({"val": "dn", "time": time}),
        "{c}"
    );
    assert_eq!(c["marketing"]["email"], json!({"val": "dn"}), "{c}");
    assert_eq!(c["marketing"]["postalMail"], json!({"val": "dn"}), "{c}");
    assert_eq!(
        c["marketing"]["push"],
        json!({"val": "dy", "reason": "asked later"}),
        "{c}"
    );
    assert_eq!(c["marketing"]["sms"]["val"], "y", "{c}");

    // Several objects: the strictest wins and keeps the pending value of the object that gave it;
    // `time` is the merged one.
    let (_, c) = post(
        json!([
            v2(json!({"share": {"val": "LI"}})),
            v2(json!({"share": {"val": "y", "time": time}}))
        ]),
        None,
    )
    .await;
    assert_eq!(c["share"], json!({"val": "LI", "time": time}), "{c}");
    // A pending decision the call gives no value for of its own (an id-level one) is `p`.
    let (_, c) = post(
        json!([v2(json!({"idSpecific": {"email": {"a@example.com": {
            "personalize": {"content": {"val": "u"}}
        }}}}))]),
        None,
    )
    .await;
    assert_eq!(c["personalize"]["content"], json!({"val": "p"}), "{c}");
    assert_eq!(
        c["idSpecific"]["email"]["a@example.com"]["personalize"]["content"]["val"], "u",
        "{c}"
    );

    // Adobe 1.0 out: every stored purpose, id-level ones included, becomes `n`, with its
    // details; a later Adobe 1.0 in grants collection and turns none of them back into `y`.
    let (ecid, _) = post(everything_y()["consent"].clone(), None).await;
    let (ecid, c) = post(json!([v1("out")]), Some(ecid)).await;
    for (_, pointer) in PURPOSE_FIELDS {
        assert_eq!(stored_val(&c, pointer), Some("n"), "{pointer}: {c}");
    }
    assert_eq!(c["marketing"]["email"]["reason"], "newsletter", "{c}");
    assert_eq!(
        c["idSpecific"]["email"]["a@example.com"]["marketing"]["email"]["val"], "n",
        "{c}"
    );
    let (_, c) = post(json!([v1("in")]), Some(ecid)).await;
    assert_eq!(c["collect"]["val"], "y", "{c}");
    for (_, pointer) in PURPOSE_FIELDS {
        assert_eq!(stored_val(&c, pointer), Some("n"), "{pointer}: {c}");
    }
}
on_both!(
    stored_purpose_values,
    stored_purposes_keep_the_calls_values_and_details
);

/// The preference service reads the stored channel values, so it agrees with the decision:
/// after `marketing.any: n` every channel is already unsubscribed, and an unsubscribe through
/// the preferences API changes nothing and records nothing.
async fn an_unsubscribe_after_marketing_any_n_is_already_in_place(h: &Harness) {
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let body = json!({"consent": [v2(json!({
        "collect": {"val": "y"},
        "marketing": {"any": {"val": "n"}, "email": {"val": "y"}}
    }))]});
    let (status, answer) = h.post_json(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
    let ecid = ecid_of(&answer);
    let (status, link) = h
        .post_json_as_a(
            "/admin/v1/unsubscribe-links",
            &json!({"profile": {"namespace": "ECID", "id": ecid}, "channel": "email"}),
        )
        .await;
    assert_eq!(status, 200, "{link}");
    let query = format!(
        "params={}&pid={}&sig={}",
        link["params"].as_str().unwrap(),
        link["pid"].as_str().unwrap(),
        link["sig"].as_str().unwrap()
    );
    let choices = json!({"marketing": [
        {"type": "email", "choice": "no", "scope": "channel"},
        {"type": "sms", "choice": "no", "scope": "channel"}
    ]});
    let (status, answer) = h
        .post_json_as_a(&format!("/imp/consent/preferences?{query}"), &choices)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], 0, "{answer}");
    assert_eq!(
        answer["consents"]["consents"]["marketing"]["email"]["val"], "n",
        "{answer}"
    );
    let records = h.server().db().records(&key(&ecid)).await.unwrap();
    assert_eq!(records.len(), 1, "only the set-consent call is recorded");
}
on_both!(
    unsubscribe_after_any_n,
    an_unsubscribe_after_marketing_any_n_is_already_in_place
);
