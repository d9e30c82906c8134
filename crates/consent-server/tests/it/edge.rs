//! The Edge endpoints.

use serde_json::{Value, json};

use crate::harness::{DS_A, Harness, ORG_A, fake_iab};
use crate::on_both;

pub(crate) fn adobe_v1(general: &str) -> Value {
    json!({"consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": general}}],
           "query": {"identity": {"fetch": ["ECID"]}}})
}

pub(crate) fn store_entries(body: &Value) -> Vec<Value> {
    body["handle"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["type"] == "state:store")
        .flat_map(|h| h["payload"].as_array().unwrap().clone())
        .collect()
}

pub(crate) fn entry<'a>(entries: &'a [Value], key: &str) -> Option<&'a Value> {
    entries.iter().find(|e| e["key"] == key)
}

pub(crate) fn ecid_of(body: &Value) -> String {
    body["handle"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["type"] == "identity:result")
        .unwrap()["payload"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn with_ecid(mut body: Value, ecid: &str) -> Value {
    body["identityMap"] = json!({"ECID": [{"id": ecid}]});
    body
}

pub(crate) fn key(ecid: &str) -> consent_server::ProfileKey {
    consent_server::ProfileKey {
        org: ORG_A.into(),
        sandbox: "prod".into(),
        namespace: "ECID".into(),
        id: ecid.into(),
    }
}

async fn set_consent_answers_with_state_store_handles(h: &Harness) {
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}&requestId=req-1");
    let (status, body) = h.post_json(&path, &adobe_v1("in")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requestId"], "req-1");
    let ecid = ecid_of(&body);
    assert_eq!(ecid.len(), 38);
    let entries = store_entries(&body);
    let consent = entry(&entries, "kndctr_ORGA_AdobeOrg_consent").unwrap();
    assert_eq!(consent["value"], "general=in");
    assert_eq!(consent["maxAge"], 15_552_000);
    assert!(entry(&entries, "kndctr_ORGA_AdobeOrg_identity").is_some());
    assert_eq!(
        entry(&entries, "kndctr_ORGA_AdobeOrg_cluster").unwrap()["value"],
        "or2"
    );

    // The location-hint form, with the identity from the identity cookie in meta.state.
    let identity = entry(&entries, "kndctr_ORGA_AdobeOrg_identity").unwrap()["value"].clone();
    let mut out = adobe_v1("out");
    out["meta"] = json!({"state": {"entries": [{"key": "kndctr_ORGA_AdobeOrg_identity", "value": identity}]}});
    let path = format!("/ee/va6/v1/privacy/set-consent?configId={DS_A}");
    let (status, body) = h.post_json(&path, &out).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ecid_of(&body), ecid);
    let entries = store_entries(&body);
    assert_eq!(
        entry(&entries, "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=out"
    );
    assert_eq!(
        entry(&entries, "kndctr_ORGA_AdobeOrg_cluster").unwrap()["value"],
        "va6"
    );

    let db = h.server().db();
    let profile = db.profile(&key(&ecid)).await.unwrap().unwrap();
    assert_eq!(profile.general, "out");
    assert_eq!(profile.consents["collect"]["val"], "n");
    let records = db.records(&key(&ecid)).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].prev_hash, records[0].hash);
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(2));
}
on_both!(set_consent, set_consent_answers_with_state_store_handles);

async fn invalid_payloads_get_edge_codes_and_change_nothing(h: &Harness) {
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let check = |body: Value, status: u16, code: &'static str| {
        let path = path.clone();
        async move {
            let (got, answer) = h.post_json(&path, &body).await;
            assert_eq!(got, status, "{body} -> {answer}");
            assert_eq!(
                answer["type"],
                format!("https://ns.adobe.com/aep/errors/{code}"),
                "{answer}"
            );
            answer
        }
    };
    let answer = check(adobe_v1("IN"), 400, "EXEG-0102-400").await;
    assert_eq!(
        answer["detail"],
        r#"'consent[0].value.general': Expected one of these values: ["in","out"], but got "IN"."#
    );
    check(
        json!({"consent": [{"standard": "Adobe", "version": "1.0"}]}),
        400,
        "EXEG-0103-400",
    )
    .await;
    check(
        json!({"consent": [{"standard": "Adobe", "version": "2.0", "value": {}}]}),
        422,
        "EXEG-0104-422",
    )
    .await;
    check(json!({"consent": []}), 400, "EXEG-0102-400").await;
    check(json!({}), 400, "EXEG-0102-400").await;
    // A string that does not decode, when it must be decoded, is 422.
    check(
        json!({"consent": [{"standard": "IAB TCF", "version": "2.0", "value": "CO123", "gdprApplies": true}]}),
        422,
        "EXEG-0104-422",
    )
    .await;
    let (status, _) = h
        .post_json("/ee/v1/privacy/set-consent", &adobe_v1("in"))
        .await;
    assert_eq!(status, 400, "configId is required");
    // A repeated parameter is refused in Edge's form, not guessed at.
    for query in [
        format!("configId={DS_A}&configId={DS_A}"),
        format!("configId={DS_A}&requestId=a&requestId=b"),
    ] {
        let (status, answer) = h
            .post_json(
                &format!("/ee/v1/privacy/set-consent?{query}"),
                &adobe_v1("in"),
            )
            .await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(
            answer["type"], "https://ns.adobe.com/aep/errors/EXEG-0003-400",
            "{answer}"
        );
        assert!(
            answer["detail"]
                .as_str()
                .is_some_and(|d| d.contains("must be given once")),
            "{answer}"
        );
    }
    let response = h
        .client
        .post(h.url(&path))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        h.server().db().verify_chain(ORG_A, "prod").await.unwrap(),
        Ok(0)
    );

    // IAB with gdprApplies false needs no decoding: general is in.
    let (status, body) = h
        .post_json(
            &path,
            &json!({"consent": [{"standard": "IAB TCF", "version": "2.0", "value": "CO123", "gdprApplies": false}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        entry(&store_entries(&body), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=in"
    );
    // A bad escape is read as it is: the datastream is unknown, the default org answers.
    let (status, answer) = h
        .post_json("/ee/v1/privacy/set-consent?configId=%zz", &adobe_v1("in"))
        .await;
    assert_eq!(status, 200, "{answer}");
}
on_both!(
    invalid_payloads,
    invalid_payloads_get_edge_codes_and_change_nothing
);

async fn adobe_v2_collect_decides_general(h: &Harness) {
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let v2 = |val: &str| {
        json!({"consent": [{"standard": "Adobe", "version": "2.0",
               "value": {"collect": {"val": val}, "marketing": {"email": {"val": "y"}}}}]})
    };
    let (_, body) = h.post_json(&path, &v2("n")).await;
    let entries = store_entries(&body);
    assert_eq!(
        entry(&entries, "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=out"
    );
    let ecid = ecid_of(&body);
    let (_, body) = h.post_json(&path, &with_ecid(v2("y"), &ecid)).await;
    assert_eq!(
        entry(&store_entries(&body), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=in"
    );
    let profile = h.server().db().profile(&key(&ecid)).await.unwrap().unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "y");
    assert_eq!(profile.general, "in");
    // Any other collect value is pending, as the engine decides it: it replaces the stored "in"
    // and is never written as "y" or "n".
    let (_, body) = h.post_json(&path, &with_ecid(v2("p"), &ecid)).await;
    assert_eq!(
        entry(&store_entries(&body), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=pending"
    );
    let profile = h.server().db().profile(&key(&ecid)).await.unwrap().unwrap();
    assert_eq!(profile.general, "pending");
    assert_eq!(profile.consents["collect"]["val"], "p");
}
on_both!(adobe_v2, adobe_v2_collect_decides_general);

async fn events_are_deduplicated_and_refused_when_out(h: &Harness) {
    let consent = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let interact = format!("/ee/v1/interact?configId={DS_A}&requestId=r2");
    let (_, body) = h.post_json(&consent, &adobe_v1("in")).await;
    let ecid = ecid_of(&body);
    let events = json!({"events": [
        {"xdm": {"_id": "e1", "eventType": "web.webpagedetails.pageViews"}},
        {"xdm": {"_id": "e1", "eventType": "web.webpagedetails.pageViews"}},
        {"xdm": {"_id": "e2", "eventType": "web.webpagedetails.pageViews"}}
    ]});
    let (status, body) = h
        .post_json(&interact, &with_ecid(events.clone(), &ecid))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ecid_of(&body), ecid);
    let db = h.server().db();
    assert_eq!(db.count_events(&key(&ecid)).await.unwrap(), 2);
    // collect answers 204 and deduplicates too.
    let response = h
        .client
        .post(h.url(&format!("/ee/or2/v1/collect?configId={DS_A}")))
        .json(&with_ecid(events.clone(), &ecid))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(db.count_events(&key(&ecid)).await.unwrap(), 2);

    h.post_json(&consent, &with_ecid(adobe_v1("out"), &ecid))
        .await;
    let more = json!({"events": [{"xdm": {"_id": "e3"}}, {"xdm": {"_id": "e4"}}]});
    let (status, body) = h.post_json(&interact, &with_ecid(more, &ecid)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        entry(&store_entries(&body), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=out"
    );
    assert_eq!(body["warnings"][0]["report"]["count"], 2);
    assert_eq!(db.count_events(&key(&ecid)).await.unwrap(), 2);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("consent_events_total{outcome=\"refused_consent_out\"} 2"),
        "{metrics}"
    );
    // One request's events are stored together: two new, then one repeat inside the request and
    // the collect's three.
    assert!(
        metrics.contains("consent_events_total{outcome=\"stored\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("consent_events_total{outcome=\"duplicate\"} 4"),
        "{metrics}"
    );
    let (status, _) = h.post_json(&interact, &json!({"events": []})).await;
    assert_eq!(status, 400);
}
on_both!(events, events_are_deduplicated_and_refused_when_out);

async fn identity_acquire_mints_and_returns_the_ecid(h: &Harness) {
    let path = format!("/ee/v1/identity/acquire?configId={DS_A}");
    let (status, body) = h
        .post_json(&path, &json!({"query": {"identity": {"fetch": ["ECID"]}}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let ecid = ecid_of(&body);
    let entries = store_entries(&body);
    assert!(
        entry(&entries, "kndctr_ORGA_AdobeOrg_consent").is_none(),
        "no decision yet"
    );
    let identity = entry(&entries, "kndctr_ORGA_AdobeOrg_identity").unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = h
        .client
        .post(h.url(&format!("/ee/ir1/v1/identity/acquire?configId={DS_A}")))
        .header(
            "cookie",
            format!("kndctr_ORGA_AdobeOrg_identity={identity}"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(ecid_of(&body), ecid);
}
on_both!(
    identity_acquire,
    identity_acquire_mints_and_returns_the_ecid
);

async fn consent_records_are_append_only(h: &Harness) {
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    h.post_json(&path, &adobe_v1("in")).await;
    let pool = h.server().db().pool();
    let update = sqlx::query("UPDATE consent_records SET source = 'forged'")
        .execute(pool)
        .await;
    assert!(update.is_err(), "update must be refused");
    let delete = sqlx::query("DELETE FROM consent_records")
        .execute(pool)
        .await;
    assert!(delete.is_err(), "delete must be refused");
    assert_eq!(
        h.server().db().verify_chain(ORG_A, "prod").await.unwrap(),
        Ok(1)
    );
}
on_both!(append_only, consent_records_are_append_only);

#[tokio::test]
async fn the_iab_evaluator_decides_when_gdpr_applies() {
    let h = Harness::start_with(crate::harness::Db::Sqlite, |c| c.iab = fake_iab())
        .await
        .unwrap();
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let iab = |tc: &str| json!({"consent": [{"standard": "IAB TCF", "version": "2.0", "value": tc, "gdprApplies": true}]});
    let (_, body) = h.post_json(&path, &iab("GRANT")).await;
    assert_eq!(
        entry(&store_entries(&body), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=in"
    );
    let (_, body) = h.post_json(&path, &iab("DENY")).await;
    assert_eq!(
        entry(&store_entries(&body), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=out"
    );
    let (status, body) = h.post_json(&path, &iab("garbage")).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["detail"],
        "'consent[0].value': Invalid IAB TCF consent string: not a TC string"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn the_default_server_decodes_real_tc_strings() {
    use consent_core::consent_tcf::TcString;
    let h = Harness::start(crate::harness::Db::Sqlite).await.unwrap();
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let tc = |purpose_one: bool, vendor: bool| {
        TcString::builder()
            .purpose_consent(1, purpose_one)
            .vendor_consent(565, vendor)
            .build()
            .unwrap()
            .encode()
    };
    for (purpose_one, vendor, expected) in [
        (true, true, "general=in"),
        (false, true, "general=out"),
        (true, false, "general=out"),
    ] {
        let body = json!({"consent": [{"standard": "IAB TCF", "version": "2.0",
            "value": tc(purpose_one, vendor), "gdprApplies": true}]});
        let (status, answer) = h.post_json(&path, &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            entry(&store_entries(&answer), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
            expected,
            "purpose 1 {purpose_one}, vendor {vendor}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_datastreams_use_the_default_org() {
    let h = Harness::start(crate::harness::Db::Sqlite).await.unwrap();
    let (_, body) = h
        .post_json("/ee/v1/privacy/set-consent?configId=other", &adobe_v1("in"))
        .await;
    assert!(
        entry(&store_entries(&body), "kndctr_consent_AdobeOrg_consent").is_some(),
        "{body}"
    );
    h.shutdown().await;
}

async fn concurrent_consent_changes_keep_one_chain(h: &Harness) {
    let path = format!("/ee/v1/privacy/set-consent?configId={DS_A}");
    let (_, body) = h.post_json(&path, &adobe_v1("in")).await;
    let shared = ecid_of(&body);
    let requests = (0..24).map(|i| {
        let body = if i % 2 == 0 {
            with_ecid(adobe_v1(if i % 4 == 0 { "in" } else { "out" }), &shared)
        } else {
            adobe_v1("in")
        };
        h.client.post(h.url(&path)).json(&body)
    });
    crate::harness::all_at_once_ok(requests).await;
    let db = h.server().db();
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(25));
    assert_eq!(db.records(&key(&shared)).await.unwrap().len(), 13);
}
on_both!(concurrency, concurrent_consent_changes_keep_one_chain);

async fn migrations_are_idempotent_and_safe_to_race(h: &Harness) {
    let kind = match h.server().db().backend() {
        consent_server::Backend::Postgres => crate::harness::Db::Postgres,
        _ => crate::harness::Db::Sqlite,
    };
    let dir = tempfile::tempdir().unwrap();
    let fresh = crate::harness::database_url(kind, dir.path())
        .await
        .unwrap();
    // Two servers migrating one fresh database at once, then again on the migrated one.
    for url in [&fresh, &fresh, &h.database_url] {
        let (a, b) = tokio::join!(consent_server::Db::open(url), consent_server::Db::open(url));
        let (a, b) = (a.unwrap(), b.unwrap());
        a.ping().await.unwrap();
        a.close().await;
        b.close().await;
    }
}
on_both!(migrations, migrations_are_idempotent_and_safe_to_race);

/// A fresh database of the same kind as `h`'s, opened (and so migrated).
async fn fresh_db(h: &Harness, dir: &std::path::Path) -> (String, consent_server::Db) {
    let kind = match h.server().db().backend() {
        consent_server::Backend::Postgres => crate::harness::Db::Postgres,
        _ => crate::harness::Db::Sqlite,
    };
    let url = crate::harness::database_url(kind, dir).await.unwrap();
    let db = consent_server::Db::open(&url).await.unwrap();
    (url, db)
}

/// Changes of three profiles, interleaved: 7 records, profile "a" has 1, 4, 7.
pub(crate) async fn interleaved_changes(db: &consent_server::Db) {
    for (i, id) in ["a", "b", "c", "a", "b", "c", "a"].iter().enumerate() {
        let change = consent_server::ConsentChange {
            general: Some(if i % 2 == 0 { "in" } else { "out" }.to_owned()),
            edit: Box::new(|_, _| true),
            source: "test".to_owned(),
            payload: json!({ "i": i }),
        };
        db.apply_consent(&key(id), change).await.unwrap();
    }
}

pub(crate) fn seqs(records: &[consent_server::ConsentRecord]) -> Vec<i64> {
    records.iter().map(|r| r.seq).collect()
}

async fn verify_chain_catches_a_record_hidden_from_its_profile(h: &Harness) {
    let dir = tempfile::tempdir().unwrap();
    let (url, db) = fresh_db(h, dir.path()).await;
    interleaved_changes(&db).await;
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(7));
    let postgres = url.starts_with("postgres");
    // Someone with write access to the database lifts the append-only guard and unlinks
    // record 4 from profile "a"'s list: the hashes still verify, the list does not.
    let lift = if postgres {
        "ALTER TABLE consent_records DISABLE TRIGGER consent_records_no_change"
    } else {
        "DROP TRIGGER consent_records_no_update"
    };
    // Fixed statements, no input: safe to run as raw SQL.
    let run = async |sql: &'static str| {
        sqlx::raw_sql(sql).execute(db.pool()).await.unwrap();
    };
    run(lift).await;
    run("UPDATE consent_records SET profile_prev_seq = 1 WHERE seq = 7").await;
    assert_eq!(seqs(&db.records(&key("a")).await.unwrap()), [1, 7]);
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Err(7));
    run("UPDATE consent_records SET profile_prev_seq = 4 WHERE seq = 7").await;
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(7));
    // A profile that no longer names its latest record hides it too.
    run("UPDATE profiles SET last_record_seq = 4 WHERE id = 'a'").await;
    assert_eq!(seqs(&db.records(&key("a")).await.unwrap()), [1, 4]);
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Err(7));
    db.close().await;
}
on_both!(
    record_list_tamper,
    verify_chain_catches_a_record_hidden_from_its_profile
);

async fn a_change_that_changes_nothing_is_not_applied(h: &Harness) {
    let dir = tempfile::tempdir().unwrap();
    let (_, db) = fresh_db(h, dir.path()).await;
    let unchanged = || consent_server::ConsentChange {
        general: None,
        edit: Box::new(|_, _| false),
        source: "test".to_owned(),
        payload: json!({}),
    };
    // On a profile that does not exist: nothing is created.
    let (profile, seq) = db.apply_consent(&key("n"), unchanged()).await.unwrap();
    assert_eq!((profile.general.as_str(), seq), ("pending", None));
    assert!(db.profile(&key("n")).await.unwrap().is_none());
    interleaved_changes(&db).await;
    // On one that does: nothing is written, no record appended.
    let before = db.profile(&key("a")).await.unwrap().unwrap();
    let (profile, seq) = db.apply_consent(&key("a"), unchanged()).await.unwrap();
    assert_eq!((&profile, seq), (&before, None));
    assert_eq!(db.profile(&key("a")).await.unwrap().unwrap(), before);
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(7));
    // A decision is applied even when the edit changes nothing.
    let mut decided = unchanged();
    decided.general = Some("out".to_owned());
    let (profile, seq) = db.apply_consent(&key("a"), decided).await.unwrap();
    assert_eq!((profile.general.as_str(), seq), ("out", Some(8)));
    db.close().await;
}
on_both!(
    unchanged_change,
    a_change_that_changes_nothing_is_not_applied
);
