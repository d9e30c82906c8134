//! A profile never stores a contradiction: after any sequence of Adobe 1.0, Adobe 2.0 and IAB
//! TCF set-consent calls its `general` and its `consents.collect` agree, the answers carry the
//! same decision, and `/ee/v1/interact` stores or refuses events by it. The later call wins, as
//! on Edge (the stored consent values are the ones the latest request set, and `general` follows
//! `collect.val`), but only a call that says in makes a profile in: after an opt-out, a call that
//! decides nothing about collection leaves it out, and a pending value (`dy`, `p`, `LI`, …) makes
//! it pending, whose events are refused too. One call with many choices counts and records its
//! one decision once. (And the ids the server makes up for requests and events are v4 UUIDs.)

use consent_core::{Decision, SetConsentOptions};
use serde_json::{Value, json};

use crate::decisions::{collect, iab, v1, v2};
use crate::edge::{ecid_of, entry, key, store_entries, with_ecid};
use crate::harness::{DS_A, Db, Harness, fake_iab};

const CONSENT_COOKIE: &str = "kndctr_ORGA_AdobeOrg_consent";

fn set_consent_path() -> String {
    format!("/ee/v1/privacy/set-consent?configId={DS_A}")
}

/// The set-consent calls a walk picks from: every standard, every kind of `collect` value, calls
/// that decide nothing about collection, and calls whose objects disagree.
fn calls() -> Vec<(&'static str, Value)> {
    vec![
        ("v1 in", json!([v1("in")])),
        ("v1 out", json!([v1("out")])),
        ("v2 collect y", json!([collect("y")])),
        ("v2 collect n", json!([collect("n")])),
        ("v2 collect dy", json!([collect("dy")])),
        ("v2 collect p", json!([collect("p")])),
        ("v2 collect u", json!([collect("u")])),
        ("v2 collect LI", json!([collect("LI")])),
        ("v2 collect dn", json!([collect("dn")])),
        (
            "v2 collect y with time",
            json!([v2(
                json!({"collect": {"val": "y", "time": "2024-05-01T10:00:00Z"}, "metadata": {"time": "2024-05-01T10:00:00Z"}})
            )]),
        ),
        (
            "v2 share y only",
            json!([v2(json!({"share": {"val": "y"}}))]),
        ),
        (
            "v2 marketing.any y only",
            json!([v2(json!({"marketing": {"any": {"val": "y"}}}))]),
        ),
        ("IAB granting", json!([iab("GRANT", true)])),
        ("IAB denying", json!([iab("DENY", true)])),
        ("IAB gdprApplies false", json!([iab("CO123", false)])),
        ("[v1 in, v2 collect dy]", json!([v1("in"), collect("dy")])),
        ("[v2 collect y, v1 out]", json!([collect("y"), v1("out")])),
        (
            "[IAB granting, v2 collect y]",
            json!([iab("GRANT", true), collect("y")]),
        ),
        (
            "[v2 collect dy, IAB denying]",
            json!([collect("dy"), iab("DENY", true)]),
        ),
        (
            "v2 collect y, id-level collect n",
            json!([v2(json!({"collect": {"val": "y"}, "idSpecific": {"ECID": {
                "12345678901234567890123456789012345678": {"collect": {"val": "n"}}
            }}}))]),
        ),
        (
            "v2 id-level collect dy only",
            json!([v2(json!({"idSpecific": {"ECID": {
                "12345678901234567890123456789012345678": {"collect": {"val": "dy"}}
            }}}))]),
        ),
    ]
}

/// A stored profile, as the admin API answers it.
async fn read_profile(h: &Harness, ecid: &str) -> Value {
    let url = h.url(&format!("/admin/v1/profiles/ECID/{ecid}"));
    let response = h.auth(h.client.get(url), false).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

/// What a stored profile contradicts itself in, if anything: `general` "in" goes with
/// `collect.val` "y", "out" with "n", "pending" with a pending value (`p`, `dy`, …) or, for a
/// profile that never had a decision, with no `collect` at all.
fn contradiction(profile: &Value) -> Option<String> {
    let general = profile["general"].as_str();
    let collect = profile
        .pointer("/consents/collect/val")
        .and_then(Value::as_str);
    match (general, collect) {
        (Some("in"), Some("y")) | (Some("out"), Some("n")) | (Some("pending"), None) => None,
        (Some("pending"), Some(val)) if val != "y" && val != "n" => None,
        _ => Some(format!(
            "general {general:?} beside collect {collect:?}: {}",
            json!({"general": profile["general"], "consents": profile["consents"]})
        )),
    }
}

/// The decision in an answer's consent cookie; `None` when the answer writes none.
fn answered(answer: &Value) -> Option<Decision> {
    let value = entry(&store_entries(answer), CONSENT_COOKIE)?["value"]
        .as_str()?
        .to_owned();
    Some(Decision::from_wire(value.strip_prefix("general=")?).unwrap())
}

/// Checks one profile after a call that should have left it at `expected` (`None`: never
/// decided): the stored profile agrees with itself and with `expected`, the call's answer says
/// the same, and an interact call with one new event stores it when in or undecided and refuses
/// it (out or pending) otherwise. Returns what disagrees.
async fn check(
    h: &Harness,
    ecid: &str,
    expected: Option<Decision>,
    answer: &Value,
    event_id: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    let profile = read_profile(h, ecid).await;
    if let Some(c) = contradiction(&profile) {
        found.push(format!("contradiction: {c}"));
    }
    let stored = expected.map_or("pending", Decision::as_str);
    if profile["general"] != stored {
        found.push(format!(
            "expected general {stored}, stored {}",
            profile["general"]
        ));
    }
    if answered(answer) != expected {
        found.push(format!(
            "expected {expected:?}, the set-consent answer said {:?}",
            answered(answer)
        ));
    }
    let db = h.server().db();
    let before = db.count_events(&key(ecid)).await.unwrap();
    let events = with_ecid(json!({"events": [{"xdm": {"_id": event_id}}]}), ecid);
    let (status, interact) = h
        .post_json(&format!("/ee/v1/interact?configId={DS_A}"), &events)
        .await;
    assert_eq!(status, 200, "{interact}");
    let after = db.count_events(&key(ecid)).await.unwrap();
    let warning = interact["warnings"][0]["title"].as_str();
    let (stores, title) = match expected {
        Some(Decision::In) | None => (true, None),
        Some(Decision::Out) => (false, Some("Consent declined")),
        Some(Decision::Pending) => (false, Some("Consent pending")),
    };
    if (after == before + 1) != stores || warning != title {
        found.push(format!(
            "expected {expected:?}: interact stored {} event(s) with warning {warning:?}",
            after - before
        ));
    }
    if answered(&interact) != expected {
        found.push(format!(
            "expected {expected:?}, the interact answer said {:?}",
            answered(&interact)
        ));
    }
    found
}

/// Posts `consent` for `ecid` (a new profile when `None`); returns the ECID and the answer.
async fn post_consent(h: &Harness, ecid: Option<&str>, consent: &Value) -> (String, Value) {
    let body = json!({ "consent": consent });
    let body = match ecid {
        Some(ecid) => with_ecid(body, ecid),
        None => body,
    };
    let (status, answer) = h.post_json(&set_consent_path(), &body).await;
    assert_eq!(status, 200, "{consent} -> {answer}");
    let ecid = ecid.map_or_else(|| ecid_of(&answer), str::to_owned);
    (ecid, answer)
}

/// The decision `consent` makes about `general`, under the IAB evaluator the server has.
fn engine(consent: &Value) -> Option<Decision> {
    SetConsentOptions::from_json(&json!({ "consent": consent }))
        .unwrap()
        .decide(&crate::harness::FakeIab, 565)
        .unwrap()
        .general
}

/// One call of a named sequence: the consent objects, then the `general` and the `collect.val`
/// the profile must hold after it.
type Step = (Value, Option<Decision>, Option<&'static str>);

/// The sequences the rule is about, each on a fresh profile: the state after each call is
/// spelled out, so they say what the rule is, not only that the server and the engine agree.
async fn named_sequences(h: &Harness) -> Vec<String> {
    use Decision::{In, Out, Pending};
    let sequences: Vec<(&str, Vec<Step>)> = vec![
        // The review's case (I1): the later pending value wins over the opt-out, and pending
        // still refuses events; it never becomes in by itself.
        (
            "out via 1.0, then dy via 2.0",
            vec![
                (json!([v1("out")]), Some(Out), Some("n")),
                (json!([collect("dy")]), Some(Pending), Some("dy")),
                (
                    json!([v2(json!({"share": {"val": "y"}}))]),
                    Some(Pending),
                    Some("dy"),
                ),
            ],
        ),
        (
            "in via 2.0, then out via 1.0",
            vec![
                (json!([collect("y")]), Some(In), Some("y")),
                (json!([v1("out")]), Some(Out), Some("n")),
            ],
        ),
        // A new explicit choice is the person's latest word: out, then in, is in (C14404).
        (
            "out via 2.0, then in via 1.0, then out via IAB, then in via 2.0",
            vec![
                (json!([collect("n")]), Some(Out), Some("n")),
                (json!([v1("in")]), Some(In), Some("y")),
                (json!([iab("DENY", true)]), Some(Out), Some("n")),
                (json!([collect("y")]), Some(In), Some("y")),
            ],
        ),
        // Calls that decide nothing about collection leave an opt-out as it is.
        (
            "out, then calls without collect",
            vec![
                (json!([v1("out")]), Some(Out), Some("n")),
                (
                    json!([v2(json!({"share": {"val": "y"}}))]),
                    Some(Out),
                    Some("n"),
                ),
                (
                    json!([v2(json!({"marketing": {"any": {"val": "y"}}}))]),
                    Some(Out),
                    Some("n"),
                ),
            ],
        ),
        (
            "pending, then IAB granting, then pending via 2.0 beside 1.0 in",
            vec![
                (json!([collect("p")]), Some(Pending), Some("p")),
                (json!([iab("GRANT", true)]), Some(In), Some("y")),
                (json!([v1("in"), collect("LI")]), Some(Pending), Some("LI")),
            ],
        ),
        (
            "undecided, then a call without collect, then out beside y",
            vec![
                (json!([v2(json!({"share": {"val": "n"}}))]), None, None),
                (json!([collect("y"), v1("out")]), Some(Out), Some("n")),
            ],
        ),
    ];
    let mut found = Vec::new();
    for (name, steps) in sequences {
        let mut ecid: Option<String> = None;
        for (i, (consent, expected, collect_val)) in steps.into_iter().enumerate() {
            let (id, answer) = post_consent(h, ecid.as_deref(), &consent).await;
            let event = format!("named-{name}-{i}");
            for problem in check(h, &id, expected, &answer, &event).await {
                found.push(format!("{name}, step {i} ({consent}): {problem}"));
            }
            let profile = read_profile(h, &id).await;
            let stored = profile
                .pointer("/consents/collect/val")
                .and_then(Value::as_str);
            if stored != collect_val {
                found.push(format!(
                    "{name}, step {i}: expected collect {collect_val:?}, stored {stored:?}"
                ));
            }
            ecid = Some(id);
        }
    }
    found
}

/// Walks a pseudo-random sequence of calls on one profile (a fixed seed, so a failure repeats):
/// after each call the profile must hold what the engine decides for the call, or what it held
/// before when the call decides nothing about collection, and agree with itself.
async fn walk(h: &Harness, seed: u64, steps: usize) -> Vec<String> {
    let calls = calls();
    let mut state = seed;
    let mut next = || {
        // A 64-bit LCG (Knuth's MMIX constants); the high bits pick the call.
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(state >> 33).unwrap() % calls.len()
    };
    let mut found = Vec::new();
    let mut ecid: Option<String> = None;
    let mut current: Option<Decision> = None;
    let mut path = Vec::new();
    for step in 0..steps {
        let (name, consent) = &calls[next()];
        path.push(*name);
        let (id, answer) = post_consent(h, ecid.as_deref(), consent).await;
        let previous = current;
        current = engine(consent).or(current);
        // The product rule, spelled out: only a call that says in makes an opted-out profile in.
        if previous == Some(Decision::Out) && current == Some(Decision::In) {
            assert_eq!(engine(consent), Some(Decision::In), "{name}");
        }
        let event = format!("walk-{seed}-{step}");
        let recent = path[path.len().saturating_sub(4)..].join(" -> ");
        for problem in check(h, &id, current, &answer, &event).await {
            found.push(format!("seed {seed}, step {step} (… {recent}): {problem}"));
        }
        ecid = Some(id);
    }
    found
}

async fn general_and_collect_always_agree(db: Db) {
    let server_iab = fake_iab();
    let Some(h) = Harness::start_with(db, move |c| c.iab = server_iab).await else {
        return;
    };
    let mut found = named_sequences(&h).await;
    for seed in [1, 2, 3] {
        found.extend(walk(&h, seed, 40).await);
    }
    assert!(
        found.is_empty(),
        "stored consent that disagrees:\n{}",
        found.join("\n")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn general_and_collect_always_agree_sqlite() {
    general_and_collect_always_agree(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn general_and_collect_always_agree_postgres() {
    general_and_collect_always_agree(Db::Postgres).await;
}

/// `consent_decisions_total{general=…}` for in, out and pending.
async fn decision_counts(h: &Harness) -> [u64; 3] {
    let text = h.metrics().await;
    ["in", "out", "pending"].map(|general| {
        let prefix = format!("consent_decisions_total{{general=\"{general}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix}in {text}"))
            .trim()
            .parse()
            .unwrap()
    })
}

/// `n` choices alternating between in and out, starting with `first`, in one call.
fn alternating(n: usize, first_in: bool, make: fn(bool) -> Value) -> Value {
    Value::Array((0..n).map(|i| make((i % 2 == 0) == first_in)).collect())
}

/// One call with many contradicting choices is one decision: one record whose payload carries it
/// (and, as evidence, every choice as sent), the decision counted once, and the profile at it.
/// Within one call the strictest choice wins whatever the order (`SetConsentOptions::decide`, the
/// engine's rule), so in, out, …, in decides out too.
async fn many_choices_in_one_call_count_and_record_once(db: Db) {
    let Some(h) = Harness::start(db).await else {
        return;
    };
    let store = h.server().db();
    let v1_choice: fn(bool) -> Value = |yes| v1(if yes { "in" } else { "out" });
    let v2_choice: fn(bool) -> Value = |yes| collect(if yes { "y" } else { "n" });
    let (ecid, _) = post_consent(&h, None, &json!([v1("in")])).await;
    let mut records = 1;
    for (name, consent) in [
        (
            "20 alternating 1.0, in first",
            alternating(20, true, v1_choice),
        ),
        (
            "20 alternating 2.0, out first",
            alternating(20, false, v2_choice),
        ),
        (
            "21 alternating 1.0, in last",
            alternating(21, true, v1_choice),
        ),
    ] {
        let before = decision_counts(&h).await;
        let (_, answer) = post_consent(&h, Some(&ecid), &consent).await;
        assert_eq!(answered(&answer), Some(Decision::Out), "{name}: {answer}");
        let after = decision_counts(&h).await;
        assert_eq!(
            [
                after[0] - before[0],
                after[1] - before[1],
                after[2] - before[2]
            ],
            [0, 1, 0],
            "{name}: the decision is counted once, as out"
        );
        records += 1;
        let all = store.records(&key(&ecid)).await.unwrap();
        assert_eq!(all.len(), records, "{name}: one record per call");
        let last = &all[records - 1];
        assert_eq!(last.payload["general"], "out", "{name}: {}", last.payload);
        assert_eq!(last.payload["consent"], consent, "{name}");
        let profile = read_profile(&h, &ecid).await;
        assert_eq!(contradiction(&profile), None, "{name}");
        assert_eq!(profile["general"], "out", "{name}");
        // Back to in, so that the next call changes something again.
        post_consent(&h, Some(&ecid), &json!([v1("in")])).await;
        records += 1;
    }
    // Many choices that end where the profile already is: still one decision, counted once. The
    // call is recorded all the same, as every set-consent call is (the record is the evidence
    // that the choice was given again, and when; the writer applies every change that carries a
    // `general` decision), so this is one record, not none.
    post_consent(&h, Some(&ecid), &json!([v1("out")])).await;
    records += 1;
    let before = decision_counts(&h).await;
    post_consent(&h, Some(&ecid), &alternating(20, true, v1_choice)).await;
    let after = decision_counts(&h).await;
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [0, 1, 0]
    );
    records += 1;
    let all = store.records(&key(&ecid)).await.unwrap();
    assert_eq!(all.len(), records);
    assert_eq!(all[records - 1].payload["general"], "out");
    assert_eq!(read_profile(&h, &ecid).await["general"], "out");
    assert_eq!(
        store
            .verify_chain(crate::harness::ORG_A, "prod")
            .await
            .unwrap(),
        Ok(i64::try_from(records).unwrap())
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_choices_in_one_call_count_and_record_once_sqlite() {
    many_choices_in_one_call_count_and_record_once(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_choices_in_one_call_count_and_record_once_postgres() {
    many_choices_in_one_call_count_and_record_once(Db::Postgres).await;
}

/// Whether `id` is a hyphenated, lower-case version 4 UUID.
fn is_v4_uuid(id: &str) -> bool {
    id.len() == 36
        && id
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && uuid::Uuid::try_parse(id).is_ok_and(|u| u.get_version_num() == 4)
}

/// The ids the server makes up, a request id when the query has none and the id of an event
/// without one of its own, are random v4 UUIDs as Edge's request ids are; the set-consent record
/// names the request id its answer gave.
async fn made_up_ids_are_v4_uuids(h: &Harness) {
    let (ecid, answer) = post_consent(h, None, &json!([v1("in")])).await;
    let request_id = answer["requestId"].as_str().unwrap();
    assert!(is_v4_uuid(request_id), "{answer}");
    let records = h.server().db().records(&key(&ecid)).await.unwrap();
    assert_eq!(records[0].payload["requestId"], request_id);
    let events = with_ecid(json!({"events": [{"xdm": {}}, {"xdm": {}}]}), &ecid);
    let (status, interact) = h
        .post_json(&format!("/ee/v1/interact?configId={DS_A}"), &events)
        .await;
    assert_eq!(status, 200, "{interact}");
    let other = interact["requestId"].as_str().unwrap();
    assert!(is_v4_uuid(other) && other != request_id, "{interact}");
    let ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM events WHERE profile_id = $1")
        .bind(&ecid)
        .fetch_all(h.server().db().pool())
        .await
        .unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.iter().all(|id| is_v4_uuid(id)), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
}
crate::on_both!(made_up_ids, made_up_ids_are_v4_uuids);
