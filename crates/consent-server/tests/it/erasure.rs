//! GDPR rights over what the server stores: erasure (`DELETE /admin/v1/profiles/{ns}/{id}`)
//! leaves no trace of the identity in any table (nor, on SQLite, in the database's files) while
//! the consent record chain still verifies, and access (`GET …/export`) returns everything about
//! the person in one document.

use serde_json::{Value, json};
use sqlx::Row as _;

use crate::edge::{adobe_v1, key, with_ecid};
use crate::harness::{DS_A, Harness, ORG_A};
use crate::on_both;

const ERIN: &str = "31415926535897932384626433832795028841";
const ADDRESS: &str = "erin.erasure@example.com";
const OTTO: &str = "27182818284590452353602874713526624977";

fn set_consent() -> String {
    format!("/ee/v1/privacy/set-consent?configId={DS_A}")
}

fn interact() -> String {
    format!("/ee/v1/interact?configId={DS_A}")
}

async fn admin(h: &Harness, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = h
        .auth(h.client.request(method, h.url(path)), false)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Every cell of every table, as text, on either database.
async fn every_cell(h: &Harness) -> Vec<(String, String)> {
    let pool = h.server().db().pool();
    let postgres = h.database_url.starts_with("postgres");
    let tables: Vec<String> = if postgres {
        sqlx::query(
            "SELECT CAST(tablename AS TEXT) AS name FROM pg_tables WHERE schemaname = 'public'",
        )
    } else {
        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get("name").unwrap())
    .collect();
    assert!(tables.iter().any(|t| t == "record_personal"), "{tables:?}");
    let mut cells = Vec::new();
    for table in tables {
        // Table names come from the catalogue, not from input.
        let sql = if postgres {
            format!("SELECT CAST(t AS TEXT) AS cell FROM {table} t")
        } else {
            let columns: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{table}')"
            )))
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| format!("quote({})", row.try_get::<String, _>("name").unwrap()))
            .collect();
            format!(
                "SELECT {} AS cell FROM {table}",
                columns.join(" || ','  || ")
            )
        };
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap()
        {
            cells.push((table.clone(), row.try_get::<String, _>("cell").unwrap()));
        }
    }
    cells
}

/// Erin gives consent, sends events, unsubscribes from an address through a link; Otto, another
/// visitor, sends an event whose identity map names Erin too, and one that does not.
async fn erin_and_otto(h: &Harness) {
    for ecid in [ERIN, OTTO] {
        let (status, answer) = h
            .post_json(&set_consent(), &with_ecid(adobe_v1("in"), ecid))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let events = json!({"events": [{"xdm": {"_id": "erin-1"}}, {"xdm": {"_id": "erin-2"}}]});
    let (status, answer) = h.post_json(&interact(), &with_ecid(events, ERIN)).await;
    assert_eq!(status, 200, "{answer}");
    let events = json!({"events": [
        {"xdm": {"_id": "otto-names-erin",
                 "identityMap": {"ECID": [{"id": OTTO, "primary": true}, {"id": ERIN}]}}},
        {"xdm": {"_id": "otto-alone"}}
    ]});
    let (status, answer) = h.post_json(&interact(), &with_ecid(events, OTTO)).await;
    assert_eq!(status, 200, "{answer}");
    let request = json!({"profile": {"namespace": "ECID", "id": ERIN}, "channel": "email",
        "scope": "identity", "address": {"value": ADDRESS, "namespace": "Email"},
        "message": {"m": "msg-1", "ci": "camp-1"}});
    let (status, link) = h
        .post_json_as_a("/admin/v1/unsubscribe-links", &request)
        .await;
    assert_eq!(status, 200, "{link}");
    let status = h
        .client
        .post(link["url"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

async fn an_export_holds_everything_about_the_person(h: &Harness) {
    erin_and_otto(h).await;
    let path = format!("/admin/v1/profiles/ECID/{ERIN}/export");
    let (status, export) = admin(h, reqwest::Method::GET, &path).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["identity"]["id"], ERIN);
    assert_eq!(export["identity"]["namespace"], "ECID");
    assert_eq!(export["profile"]["general"], "in", "{export}");
    assert_eq!(
        export["profile"]["consents"]["idSpecific"]["Email"][ADDRESS]["marketing"]["email"]["val"],
        "n",
        "{export}"
    );
    let records = export["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{export}");
    assert_eq!(records[0]["source"], "edge:set-consent");
    // The address is kept apart from the record, and put back in the export.
    assert_eq!(
        records[1]["change"]["address"]["value"], ADDRESS,
        "{export}"
    );
    assert_eq!(
        records[1]["change"]["address"]["namespace"], "Email",
        "{export}"
    );
    assert!(records[1]["payload"].get("address").is_none(), "{export}");
    assert_eq!(
        records[1]["payload"]["personal"].as_str().unwrap().len(),
        64
    );
    let ids: Vec<&str> = export["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{export}");
    assert!(
        ids.contains(&"erin-1") && ids.contains(&"erin-2"),
        "{ids:?}"
    );
    crate::openapi::conforms(h, "Export", &export).await;
    // What Otto's event says about Erin is hers too.
    let elsewhere: Vec<&str> = export["elsewhere"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(elsewhere, ["otto-names-erin"], "{export}");
    assert_eq!(export["elsewhere"]["events"][0]["profile"]["id"], OTTO);
    // The address is an identity of its own: its export finds the consent Erin's profile holds
    // for it and the record detail naming it, as its erasure would.
    let (status, by_address) = admin(
        h,
        reqwest::Method::GET,
        &format!("/admin/v1/profiles/Email/{ADDRESS}/export"),
    )
    .await;
    assert_eq!(status, 200, "{by_address}");
    assert_eq!(by_address["profile"], Value::Null);
    assert_eq!(
        by_address["elsewhere"]["consents"][0]["profile"]["id"], ERIN,
        "{by_address}"
    );
    assert_eq!(
        by_address["elsewhere"]["recordDetails"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{by_address}"
    );
    crate::openapi::conforms(h, "Export", &by_address).await;
    // Another organisation's key sees nothing; an identity nobody stored is a 404.
    let response = h
        .auth(h.client.get(h.url(&path)), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let (status, _) = admin(
        h,
        reqwest::Method::GET,
        "/admin/v1/profiles/ECID/nobody/export",
    )
    .await;
    assert_eq!(status, 404);
    // Without credentials: refused.
    let response = h.client.get(h.url(&path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
}
on_both!(export, an_export_holds_everything_about_the_person);

async fn an_erasure_leaves_no_trace_and_the_chain_verifies(h: &Harness) {
    erin_and_otto(h).await;
    let db = h.server().db();
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(3));
    let traces = |cells: &[(String, String)]| -> Vec<String> {
        cells
            .iter()
            .filter(|(_, cell)| cell.contains(ERIN) || cell.contains(ADDRESS))
            .map(|(table, _)| table.clone())
            .collect()
    };
    let before = traces(&every_cell(h).await);
    for table in ["profiles", "events", "record_personal"] {
        assert!(before.iter().any(|t| t == table), "{table}: {before:?}");
    }

    let path = format!("/admin/v1/profiles/ECID/{ERIN}");
    let (status, answer) = admin(h, reqwest::Method::DELETE, &path).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["erased"]["profile"], true, "{answer}");
    // Erin's two events and Otto's that names Erin.
    assert_eq!(answer["erased"]["events"], 3, "{answer}");
    assert_eq!(answer["erased"]["details"], 1, "{answer}");
    assert_eq!(answer["record"]["seq"], 4, "{answer}");
    crate::openapi::conforms(h, "Erasure", &answer).await;

    let cells = every_cell(h).await;
    assert_eq!(
        traces(&cells),
        Vec::<String>::new(),
        "the identity or address is still stored"
    );
    // What is not Erin's stays: Otto's profile, his other event, every record.
    assert!(db.profile(&key(OTTO)).await.unwrap().is_some());
    assert_eq!(db.count_events(&key(OTTO)).await.unwrap(), 1);
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(4));
    if !h.database_url.starts_with("postgres") {
        let file = h.database_url.trim_start_matches("sqlite://");
        let file = file.split('?').next().unwrap();
        for path in [file.to_owned(), format!("{file}-wal")] {
            let bytes = std::fs::read(&path).unwrap_or_default();
            for needle in [ERIN, ADDRESS] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{path} still holds {needle}"
                );
            }
        }
    }
    // No profile is left to read. What an export still finds are the records, which name Erin
    // only by the keyed hash and hold no personal data: the proof, ending with the erasure.
    let (status, _) = admin(h, reqwest::Method::GET, &path).await;
    assert_eq!(status, 404);
    let (status, export) = admin(h, reqwest::Method::GET, &format!("{path}/export")).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["profile"], Value::Null);
    assert_eq!(export["events"], json!([]));
    assert_eq!(export["elsewhere"]["events"], json!([]));
    let sources: Vec<&str> = export["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        ["edge:set-consent", "one-click", "erasure"],
        "{export}"
    );
    assert!(!export["records"].to_string().contains(ADDRESS), "{export}");
    let (status, _) = admin(h, reqwest::Method::DELETE, &path).await;
    assert_eq!(
        status, 404,
        "a second erasure finds nothing and records nothing"
    );
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(4));

    // Erin comes back: a fresh profile under the default, like any new visitor's.
    let fresh = "16180339887498948482045868343656381177";
    for ecid in [ERIN, fresh] {
        let events = json!({"events": [{"xdm": {"_id": format!("back-{ecid}")}}]});
        let (status, answer) = h.post_json(&interact(), &with_ecid(events, ecid)).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(
        db.profile(&key(ERIN)).await.unwrap().map(|p| p.general),
        db.profile(&key(fresh)).await.unwrap().map(|p| p.general)
    );
    assert_eq!(
        db.count_events(&key(ERIN)).await.unwrap(),
        db.count_events(&key(fresh)).await.unwrap()
    );
    let (status, answer) = h
        .post_json(&set_consent(), &with_ecid(adobe_v1("out"), ERIN))
        .await;
    assert_eq!(status, 200, "{answer}");
    let records = db.records(&key(ERIN)).await.unwrap();
    assert_eq!(records.len(), 1, "a new list of records: {records:?}");
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(5));
}
on_both!(erasure, an_erasure_leaves_no_trace_and_the_chain_verifies);

async fn an_erasure_needs_credentials_and_a_clean_identity(h: &Harness) {
    erin_and_otto(h).await;
    let path = format!("/admin/v1/profiles/ECID/{ERIN}");
    let response = h.client.delete(h.url(&path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // Another organisation's key erases nothing of organisation A.
    let response = h
        .auth(h.client.delete(h.url(&path)), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let (status, _) = admin(h, reqwest::Method::DELETE, "/admin/v1/profiles/ECID/a%00b").await;
    assert_eq!(status, 400);
    assert!(h.server().db().profile(&key(ERIN)).await.unwrap().is_some());
}
on_both!(
    erasure_auth,
    an_erasure_needs_credentials_and_a_clean_identity
);

async fn a_profile_or_detail_changed_behind_the_server_s_back_is_caught(h: &Harness) {
    erin_and_otto(h).await;
    let db = h.server().db();
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(3));
    // The address kept apart is bound to its record by the digest the record holds.
    sqlx::query("UPDATE record_personal SET detail = REPLACE(detail, 'erin.', 'eve.')")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Err(3));
    sqlx::query("UPDATE record_personal SET detail = REPLACE(detail, 'eve.', 'erin.')")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(3));
    // A profile deleted without an erasure record hides its records: caught.
    sqlx::query("DELETE FROM profiles WHERE id = $1")
        .bind(OTTO)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Err(2));
}
on_both!(
    tamper,
    a_profile_or_detail_changed_behind_the_server_s_back_is_caught
);
