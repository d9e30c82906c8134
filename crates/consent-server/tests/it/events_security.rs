//! Events and identities against abuse: an opted-out identity wherever the request names it
//! (F2), deduplication per profile (F5), NUL characters in ids (F6).

use serde_json::{Value, json};

use crate::edge::{adobe_v1, ecid_of, entry, key, store_entries, with_ecid};
use crate::harness::{DS_A, Harness, ORG_A};
use crate::on_both;

const IDENTITY: &str = "kndctr_ORGA_AdobeOrg_identity";

fn set_consent() -> String {
    format!("/ee/v1/privacy/set-consent?configId={DS_A}")
}

fn interact() -> String {
    format!("/ee/v1/interact?configId={DS_A}")
}

/// The identity cookie's value for an ECID, as the server hands it out.
async fn identity_cookie(h: &Harness, ecid: &str) -> String {
    let path = format!("/ee/v1/identity/acquire?configId={DS_A}");
    let (_, body) = h.post_json(&path, &with_ecid(json!({}), ecid)).await;
    entry(&store_entries(&body), IDENTITY).unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// How many events the organisation's production sandbox holds, whatever their profile.
async fn all_events(h: &Harness) -> i64 {
    use sqlx::Row as _;
    let row = sqlx::query("SELECT COUNT(*) AS n FROM events WHERE org = $1 AND sandbox = $2")
        .bind(ORG_A)
        .bind("prod")
        .fetch_one(h.server().db().pool())
        .await
        .unwrap();
    row.try_get("n").unwrap()
}

fn refused_out(answer: &Value) -> Option<u64> {
    answer["warnings"].as_array()?.iter().find_map(|w| {
        (w["type"] == "https://ns.adobe.com/aep/errors/EXEG-0301-200"
            && w["title"] == "Consent declined")
            .then(|| w["report"]["count"].as_u64().unwrap())
    })
}

async fn opted_out(h: &Harness, ecid: &str) {
    let (status, answer) = h
        .post_json(&set_consent(), &with_ecid(adobe_v1("out"), ecid))
        .await;
    assert_eq!(status, 200, "{answer}");
}

async fn an_opted_out_identity_is_refused_wherever_it_is_written(h: &Harness) {
    let out = "12345678901234567890123456789012345678";
    let other = "99999999999999999999999999999999999999";
    opted_out(h, out).await;
    let db = h.server().db();

    // Only in the event's XDM (the Edge Server API's and Web SDK's place for it).
    let body = json!({"events": [
        {"xdm": {"_id": "ev-xdm", "identityMap": {"ECID": [{"id": out, "primary": true}]}}}
    ]});
    let (status, answer) = h.post_json(&interact(), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(refused_out(&answer), Some(1), "{answer}");
    // The answer speaks for that identity: no freshly minted one to leave it behind.
    assert_eq!(ecid_of(&answer), out, "{answer}");
    assert_eq!(
        entry(&store_entries(&answer), "kndctr_ORGA_AdobeOrg_consent").unwrap()["value"],
        "general=out"
    );

    // In a later entry of the event's identity map, beside an identity without a profile.
    let body = json!({"events": [
        {"xdm": {"_id": "ev-second", "identityMap": {"ECID": [{"id": other}, {"id": out}]}}}
    ]});
    let (_, answer) = h.post_json(&interact(), &body).await;
    assert_eq!(refused_out(&answer), Some(1), "{answer}");

    // The request names a collectable identity, the event the opted-out one: the event is
    // refused, the request's other events are stored.
    let body = with_ecid(
        json!({"events": [
            {"xdm": {"_id": "ev-mixed-out", "identityMap": {"ECID": [{"id": out}]}}},
            {"xdm": {"_id": "ev-mixed-ok"}}
        ]}),
        other,
    );
    let (status, answer) = h.post_json(&interact(), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(refused_out(&answer), Some(1), "{answer}");
    assert_eq!(db.count_events(&key(other)).await.unwrap(), 1);

    // At request level: `xdm.identityMap`, `meta.state`, the Cookie header, each beside a
    // top-level identity map naming another identity.
    let cookie = identity_cookie(h, out).await;
    let requests = [
        json!({"xdm": {"identityMap": {"ECID": [{"id": out}]}},
               "events": [{"xdm": {"_id": "ev-req-xdm"}}]}),
        json!({"identityMap": {"ECID": [{"id": other}, {"id": out}]},
               "events": [{"xdm": {"_id": "ev-req-second"}}]}),
        with_ecid(
            json!({"meta": {"state": {"entries": [{"key": IDENTITY, "value": cookie}]}},
                   "events": [{"xdm": {"_id": "ev-req-state"}}]}),
            other,
        ),
    ];
    for body in &requests {
        let (status, answer) = h.post_json(&interact(), body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(refused_out(&answer), Some(1), "{body} -> {answer}");
    }
    let response = h
        .client
        .post(h.url(&interact()))
        .header("cookie", format!("{IDENTITY}={cookie}"))
        .json(&with_ecid(
            json!({"events": [{"xdm": {"_id": "ev-req-cookie"}}]}),
            other,
        ))
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(refused_out(&answer), Some(1), "{answer}");
    // collect too (204, nothing to warn with).
    let response = h
        .client
        .post(h.url(&format!("/ee/v1/collect?configId={DS_A}")))
        .json(&json!({"events": [
            {"xdm": {"_id": "ev-collect", "identityMap": {"ECID": [{"id": out}]}}}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);

    assert_eq!(db.count_events(&key(out)).await.unwrap(), 0);
    assert_eq!(all_events(h).await, 1, "only ev-mixed-ok is stored");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("consent_events_total{outcome=\"refused_consent_out\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("consent_events_total{outcome=\"stored\"} 1"),
        "{metrics}"
    );
}
on_both!(
    opted_out_anywhere,
    an_opted_out_identity_is_refused_wherever_it_is_written
);

async fn an_event_id_is_deduplicated_per_profile(h: &Harness) {
    let attacker = "11111111111111111111111111111111111111";
    let victim = "22222222222222222222222222222222222222";
    let db = h.server().db();
    let order = |who: &str| json!({"events": [{"xdm": {"_id": "order-42", "who": who}}]});
    let (status, answer) = h
        .post_json(&interact(), &with_ecid(order("attacker"), attacker))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = h
        .post_json(&interact(), &with_ecid(order("victim"), victim))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("warnings").is_none(), "{answer}");
    assert_eq!(db.count_events(&key(attacker)).await.unwrap(), 1);
    assert_eq!(db.count_events(&key(victim)).await.unwrap(), 1);

    // The same id twice from one profile is still stored once, across requests and within one.
    h.post_json(&interact(), &with_ecid(order("victim"), victim))
        .await;
    let twice = json!({"events": [{"xdm": {"_id": "order-43"}}, {"xdm": {"_id": "order-43"}}]});
    h.post_json(&interact(), &with_ecid(twice, victim)).await;
    assert_eq!(db.count_events(&key(victim)).await.unwrap(), 2);
    assert_eq!(all_events(h).await, 3);

    // A request that names no identity gets a new one each time, a retry of one whose answer was
    // lost included: its events are deduplicated by id alone, so they are stored once too.
    let anonymous = json!({"events": [{"xdm": {"_id": "anon-1"}}]});
    let (_, first) = h.post_json(&interact(), &anonymous).await;
    let (_, retry) = h.post_json(&interact(), &anonymous).await;
    assert_ne!(ecid_of(&first), ecid_of(&retry));
    assert_eq!(all_events(h).await, 4);

    let metrics = h.metrics().await;
    assert!(
        metrics.contains("consent_events_total{outcome=\"stored\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("consent_events_total{outcome=\"duplicate\"} 3"),
        "{metrics}"
    );
}
on_both!(dedup_per_profile, an_event_id_is_deduplicated_per_profile);

async fn a_nul_in_an_event_or_identity_id_is_a_400(h: &Harness) {
    let ecid = "33333333333333333333333333333333333333";
    let bad = [
        with_ecid(json!({"events": [{"xdm": {"_id": "ev\u{0}nul"}}]}), ecid),
        with_ecid(
            json!({"events": [{"xdm": {"eventId": "ev\u{0}nul"}}]}),
            ecid,
        ),
        json!({"identityMap": {"ECID": [{"id": "123\u{0}456"}]},
               "events": [{"xdm": {"_id": "ev-1"}}]}),
        json!({"xdm": {"identityMap": {"ECID": [{"id": "123\u{0}456"}]}},
               "events": [{"xdm": {"_id": "ev-2"}}]}),
        json!({"events": [{"xdm": {"_id": "ev-3",
               "identityMap": {"ECID": [{"id": "123\u{0}456"}]}}}]}),
    ];
    for body in &bad {
        let (status, answer) = h.post_json(&interact(), body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(
            answer["type"], "https://ns.adobe.com/aep/errors/EXEG-0102-400",
            "{answer}"
        );
    }
    let (status, answer) = h
        .post_json(
            &set_consent(),
            &json!({"identityMap": {"ECID": [{"id": "123\u{0}456"}]},
                    "consent": [{"standard": "Adobe", "version": "1.0",
                                 "value": {"general": "in"}}]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(all_events(h).await, 0);
    // The server still works.
    let (status, answer) = h
        .post_json(
            &interact(),
            &with_ecid(json!({"events": [{"xdm": {"_id": "ev-ok"}}]}), ecid),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(all_events(h).await, 1);
}
on_both!(nul_ids, a_nul_in_an_event_or_identity_id_is_a_400);

async fn events_stored_before_the_per_profile_key_are_kept_by_its_migration(h: &Harness) {
    let postgres = h.server().db().backend() == consent_server::Backend::Postgres;
    let kind = if postgres {
        crate::harness::Db::Postgres
    } else {
        crate::harness::Db::Sqlite
    };
    let dir = tempfile::tempdir().unwrap();
    let url = crate::harness::database_url(kind, dir.path())
        .await
        .unwrap();
    let db = consent_server::Db::open(&url).await.unwrap();
    let body = json!({"xdm": {"_id": "e1"}});
    assert!(db.insert_event(&key("1"), "e1", &body).await.unwrap());
    assert!(db.insert_event(&key("1"), "e2", &body).await.unwrap());
    db.close().await;

    // Put the events table back in the shape migration 2 left it in, data included.
    let old_key = if postgres {
        "ALTER TABLE events DROP CONSTRAINT events_pkey; \
         ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (org, sandbox, event_id);"
    } else {
        "CREATE TABLE old_events (org TEXT NOT NULL, sandbox TEXT NOT NULL, \
             event_id TEXT NOT NULL, namespace TEXT NOT NULL, profile_id TEXT NOT NULL, \
             body TEXT NOT NULL, received_at BIGINT NOT NULL, \
             PRIMARY KEY (org, sandbox, event_id)); \
         INSERT INTO old_events SELECT org, sandbox, event_id, namespace, profile_id, body, \
             received_at FROM events; \
         DROP TABLE events; \
         ALTER TABLE old_events RENAME TO events;"
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "{old_key} DELETE FROM schema_migrations WHERE version = 3;"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let db = consent_server::Db::open(&url).await.unwrap();
    assert_eq!(db.count_events(&key("1")).await.unwrap(), 2);
    assert!(!db.insert_event(&key("1"), "e1", &body).await.unwrap());
    assert!(db.insert_event(&key("2"), "e1", &body).await.unwrap());
    assert_eq!(db.count_events(&key("2")).await.unwrap(), 1);
    db.close().await;
}
on_both!(
    per_profile_migration,
    events_stored_before_the_per_profile_key_are_kept_by_its_migration
);
