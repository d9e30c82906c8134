//! The preference service: links, landing page, one-click, preferences and decrypt APIs.

use serde_json::{Value, json};

use crate::harness::{Harness, ORG_A};
use crate::on_both;

/// Makes a link through the admin API as organisation A.
async fn make_link(h: &Harness, request: Value) -> Value {
    let (status, link) = h
        .post_json_as_a("/admin/v1/unsubscribe-links", &request)
        .await;
    assert_eq!(status, 200, "{link}");
    link
}

fn email_link() -> Value {
    json!({"profile": {"namespace": "CRMID", "id": "p-1"}, "channel": "email", "scope": "channel",
           "address": {"value": "ann@example.com", "namespace": "Email"},
           "message": {"m": "msg-1", "ci": "camp-1"}})
}

fn query(link: &Value) -> String {
    format!(
        "params={}&pid={}&sig={}",
        link["params"].as_str().unwrap(),
        link["pid"].as_str().unwrap(),
        link["sig"].as_str().unwrap()
    )
}

fn profile_key(id: &str) -> consent_server::ProfileKey {
    consent_server::ProfileKey {
        org: ORG_A.into(),
        sandbox: "prod".into(),
        namespace: "CRMID".into(),
        id: id.into(),
    }
}

async fn landing_page_then_confirm_unsubscribes(h: &Harness) {
    let link = make_link(h, email_link()).await;
    assert!(link["url"].as_str().unwrap().starts_with(&h.base));
    assert_eq!(link["listUnsubscribePost"], "List-Unsubscribe=One-Click");
    let db = h.server().db();
    for _ in 0..2 {
        let page = h
            .client
            .get(link["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(page.status().as_u16(), 200);
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        assert_eq!(page.headers()["cache-control"], "no-store");
        let html = page.text().await.unwrap();
        assert!(html.contains("<form method=\"post\""), "{html}");
        assert!(html.contains("id=\"unsubscribe\""), "{html}");
    }
    assert!(
        db.profile(&profile_key("p-1")).await.unwrap().is_none(),
        "GET changes nothing"
    );

    let response = h
        .client
        .post(link["url"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("confirm=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.text().await.unwrap().contains("id=\"done\""));
    let profile = db.profile(&profile_key("p-1")).await.unwrap().unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "n");
    let records = db.records(&profile_key("p-1")).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].source, "landing-page");
    assert_eq!(records[0].payload["message"]["m"], "msg-1");
}
on_both!(landing_page, landing_page_then_confirm_unsubscribes);

async fn one_click_is_idempotent_and_never_redirects(h: &Harness) {
    let link = make_link(h, email_link()).await;
    let url = link["url"].as_str().unwrap();
    for _ in 0..3 {
        let response = h
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.headers().get("location").is_none());
    }
    let db = h.server().db();
    assert_eq!(db.records(&profile_key("p-1")).await.unwrap().len(), 1);

    // Multipart, for the push channel.
    let mut push = email_link();
    push["channel"] = json!("push");
    let link = make_link(h, push).await;
    let body = "--b0undary\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b0undary--\r\n";
    let response = h
        .client
        .post(link["url"].as_str().unwrap())
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let profile = db.profile(&profile_key("p-1")).await.unwrap().unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "n");
    assert_eq!(profile.consents["marketing"]["push"]["val"], "n");

    // A POST with another body does nothing.
    let mut sms = email_link();
    sms["channel"] = json!("sms");
    let link = make_link(h, sms).await;
    let response = h
        .client
        .post(link["url"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=Maybe")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let profile = db.profile(&profile_key("p-1")).await.unwrap().unwrap();
    assert!(profile.consents["marketing"].get("sms").is_none());
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(2));
}
on_both!(one_click, one_click_is_idempotent_and_never_redirects);

async fn tampered_expired_and_unknown_key_links_change_nothing(h: &Harness) {
    let link = make_link(h, email_link()).await;
    let good = query(&link);
    let tamper = |field: &str| {
        let mut bad = link.clone();
        let value = bad[field].as_str().unwrap().to_owned();
        // Flip one character of the payload, keeping it base64url.
        let (kid, body) = value.split_once('.').unwrap();
        let mut chars: Vec<char> = body.chars().collect();
        chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
        bad[field] = json!(format!("{kid}.{}", chars.into_iter().collect::<String>()));
        query(&bad)
    };
    let mut bad_queries = vec![
        tamper("params"),
        tamper("pid"),
        tamper("sig"),
        good.replace("sig=k2.", "sig=k9."),
        good.replace("params=k2.", "params=k9."),
        format!(
            "params={}&pid={}",
            link["params"].as_str().unwrap(),
            link["pid"].as_str().unwrap()
        ),
        "params=&pid=&sig=".to_owned(),
    ];
    let mut expiring = email_link();
    expiring["ttl_secs"] = json!(1);
    let expired = make_link(h, expiring).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    bad_queries.push(query(&expired));
    for q in &bad_queries {
        let landing = h
            .client
            .get(h.url(&format!("/unsubscribe?{q}")))
            .send()
            .await
            .unwrap();
        assert!(matches!(landing.status().as_u16(), 400 | 403), "{q}");
        let post = h
            .client
            .post(h.url(&format!("/unsubscribe?{q}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert!(matches!(post.status().as_u16(), 400 | 403), "{q}");
        let api = h
            .auth(
                h.client
                    .post(h.url(&format!("/imp/consent/preferences?{q}"))),
                false,
            )
            .json(&json!({"marketing": [{"type": "email", "choice": "no", "scope": "channel"}]}))
            .send()
            .await
            .unwrap();
        assert!(matches!(api.status().as_u16(), 400 | 403), "{q}");
    }
    let db = h.server().db();
    assert!(db.profile(&profile_key("p-1")).await.unwrap().is_none());
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(0));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("consent_links_refused_total 24"),
        "{metrics}"
    );
}
on_both!(
    bad_links,
    tampered_expired_and_unknown_key_links_change_nothing
);

async fn preferences_api_sets_channels_and_scopes(h: &Harness) {
    let link = make_link(h, email_link()).await;
    let path = format!("/imp/consent/preferences?{}", query(&link));
    let body = json!({"marketing": [{"type": "email", "choice": "no", "scope": "channel"}]});
    // Unauthenticated, wrong token, another org's key, a mismatched org header: refused.
    let response = h
        .client
        .post(h.url(&path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = h
        .client
        .post(h.url(&path))
        .header("x-api-key", "key-a")
        .header("authorization", "Bearer token-b")
        .header("x-gw-ims-org-id", ORG_A)
        .header("x-sandbox-name", "prod")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = h
        .auth(h.client.post(h.url(&path)), true)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        403,
        "org B cannot use org A's link"
    );
    let response = h
        .client
        .post(h.url(&path))
        .header("x-api-key", "key-a")
        .header("authorization", "Bearer token-a")
        .header("x-gw-ims-org-id", "ORGB@AdobeOrg")
        .header("x-sandbox-name", "prod")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403, "key A with org B's header");
    let response = h
        .client
        .post(h.url(&path))
        .header("x-api-key", "key-a")
        .header("authorization", "Bearer token-a")
        .header("x-gw-ims-org-id", ORG_A)
        .header("x-sandbox-name", "dev")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        403,
        "key A is bound to the prod sandbox"
    );
    // A repeated organisation header is ambiguous and refused.
    let response = h
        .auth(h.client.post(h.url(&path)), false)
        .header("x-gw-ims-org-id", "ORGB@AdobeOrg")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let db = h.server().db();
    assert!(db.profile(&profile_key("p-1")).await.unwrap().is_none());

    // Bad bodies.
    for bad in [
        json!({"marketing": []}),
        json!({"marketing": [{"type": "fax", "choice": "no"}]}),
        json!({"marketing": [{"type": "email", "choice": "maybe"}]}),
        json!({"marketing": [{"type": "email", "choice": "no", "scope": "galaxy"}]}),
        json!({"other": 1}),
    ] {
        let (status, _) = h.post_json_as_a(&path, &bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    assert!(db.profile(&profile_key("p-1")).await.unwrap().is_none());

    let body = json!({"marketing": [
        {"type": "email", "choice": "no", "scope": "channel"},
        {"type": "push", "choice": "no", "scope": "channel"},
        {"type": "sms", "choice": "no", "scope": "identity"}
    ]});
    let (status, answer) = h.post_json_as_a(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], 3);
    let profile = db.profile(&profile_key("p-1")).await.unwrap().unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "n");
    assert_eq!(profile.consents["marketing"]["push"]["val"], "n");
    assert_eq!(
        profile.consents["idSpecific"]["Email"]["ann@example.com"]["marketing"]["sms"]["val"],
        "n"
    );

    // Subscription scope.
    let mut sub = email_link();
    sub["scope"] = json!("subscription");
    sub["subscription"] = json!("newsletter");
    let link = make_link(h, sub).await;
    let path = format!("/imp/consent/preferences?{}", query(&link));
    let body = json!({"marketing": [{"type": "email", "choice": "no", "scope": "subscription"}]});
    let (status, answer) = h.post_json_as_a(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
    let profile = db.profile(&profile_key("p-1")).await.unwrap().unwrap();
    assert_eq!(profile.subscriptions["newsletter"]["val"], "n");

    // The admin API reads the profile with its records; org B sees no such profile.
    let response = h
        .auth(h.client.get(h.url("/admin/v1/profiles/CRMID/p-1")), false)
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["records"].as_array().unwrap().len(), 2);
    let response = h
        .auth(h.client.get(h.url("/admin/v1/profiles/CRMID/p-1")), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}
on_both!(preferences_api, preferences_api_sets_channels_and_scopes);

async fn decrypt_is_for_the_owning_org_only(h: &Harness) {
    let link = make_link(h, email_link()).await;
    // The link's signature is verified before anything is decrypted (review F1).
    let path = format!("/imp/consent/decrypt?{}", query(&link));
    let response = h
        .auth(h.client.get(h.url(&path)), false)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["profileNameSpace"], "CRMID");
    assert_eq!(answer["profileId"], "p-1");
    assert_eq!(answer["emailAddress"], "ann@example.com");
    assert_eq!(answer["optOutLevel"], "channel");
    assert_eq!(answer["channelType"], "email");
    assert_eq!(answer["sandboxId"], "prod");
    assert!(answer["timestamp"].as_str().unwrap().ends_with('Z'));
    let response = h
        .auth(h.client.get(h.url(&path)), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let response = h.client.get(h.url(&path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // Without x-sandbox-name the key's own sandbox applies.
    let response = h
        .client
        .get(h.url(&path))
        .header("x-api-key", "key-a")
        .header("authorization", "Bearer token-a")
        .header("x-gw-ims-org-id", ORG_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}
on_both!(decrypt, decrypt_is_for_the_owning_org_only);

#[tokio::test]
async fn the_admin_api_validates_its_input() {
    let h = Harness::start(crate::harness::Db::Sqlite).await.unwrap();
    for bad in [
        json!({"profile": {"namespace": "CRMID", "id": ""}, "channel": "email"}),
        json!({"profile": {"namespace": "CRMID", "id": "p"}, "channel": "fax"}),
        json!({"profile": {"namespace": "CRMID", "id": "p"}, "channel": "email", "scope": "identity"}),
        json!({"profile": {"namespace": "CRMID", "id": "p"}, "channel": "email", "scope": "subscription"}),
        json!({"profile": {"namespace": "CRMID", "id": "p"}, "channel": "email", "ttl_secs": 0}),
        json!({"nope": true}),
    ] {
        let (status, _) = h.post_json_as_a("/admin/v1/unsubscribe-links", &bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    let response = h
        .client
        .post(h.url("/admin/v1/unsubscribe-links"))
        .json(&email_link())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    h.shutdown().await;
}

async fn hostile_identifiers_are_plain_data(h: &Harness) {
    let id = "x'); DROP TABLE profiles; --";
    let mut request = email_link();
    request["profile"]["id"] = json!(id);
    let link = make_link(h, request).await;
    let response = h
        .client
        .post(link["url"].as_str().unwrap())
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let profile = h
        .server()
        .db()
        .profile(&profile_key(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "n");
    let response = h
        .auth(
            h.client.get(
                h.url("/admin/v1/profiles/CRMID/x%27%29%3B%20DROP%20TABLE%20profiles%3B%20--"),
            ),
            false,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}
on_both!(hostile_ids, hostile_identifiers_are_plain_data);

async fn repeated_requests_at_once_apply_once(h: &Harness) {
    // Mail gateways may fire the same one-click post several times at once: the check that a
    // choice is already in place runs in the transaction that writes, so it applies once.
    let link = make_link(h, email_link()).await;
    let url = link["url"].as_str().unwrap();
    let posts = (0..16).map(|_| {
        h.client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
    });
    crate::harness::all_at_once_ok(posts).await;
    let db = h.server().db();
    assert_eq!(db.records(&profile_key("p-1")).await.unwrap().len(), 1);

    // Two choices, one already in place: one changes, the record lists the request as made.
    let path = format!("/imp/consent/preferences?{}", query(&link));
    let body = json!({"marketing": [
        {"type": "email", "choice": "no", "scope": "channel"},
        {"type": "push", "choice": "no", "scope": "channel"}
    ]});
    let send = || async {
        let (status, answer) = h.post_json_as_a(&path, &body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    };
    let answer = send().await;
    assert_eq!(answer["changed"], 1, "{answer}");
    assert_eq!(
        answer["consents"]["consents"]["marketing"]["push"]["val"],
        "n"
    );
    let records = db.records(&profile_key("p-1")).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].payload["changes"].as_array().unwrap().len(), 2);
    // The same again changes nothing and records nothing.
    let answer = send().await;
    assert_eq!(answer["changed"], 0, "{answer}");
    assert_eq!(
        answer["consents"]["consents"]["marketing"]["email"]["val"],
        "n"
    );
    assert_eq!(db.records(&profile_key("p-1")).await.unwrap().len(), 2);
    assert_eq!(db.verify_chain(ORG_A, "prod").await.unwrap(), Ok(2));
}
on_both!(repeated_at_once, repeated_requests_at_once_apply_once);

/// The value of one sample of `/metrics`.
async fn sample(h: &Harness, name: &str) -> f64 {
    h.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn alternating_choices_in_one_request_count_and_record_once(h: &Harness) {
    let link = make_link(h, email_link()).await;
    let path = format!("/imp/consent/preferences?{}", query(&link));
    let choices: Vec<Value> = (0..1001)
        .map(|i| json!({"type": "email", "choice": if i % 2 == 0 { "no" } else { "yes" }}))
        .collect();
    let body = json!({ "marketing": choices });
    let before = sample(h, "consent_unsubscribes_total").await;
    let (status, answer) = h.post_json_as_a(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], 1, "{answer}");
    assert_eq!(sample(h, "consent_unsubscribes_total").await, before + 1.0);
    let db = h.server().db();
    let records = db.records(&profile_key("p-1")).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].payload["changes"],
        json!([{"channel": "email", "scope": "channel", "val": "n"}])
    );
    // Ending where the profile already is: nothing changed, nothing recorded or counted.
    let (status, answer) = h.post_json_as_a(&path, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], 0, "{answer}");
    assert_eq!(db.records(&profile_key("p-1")).await.unwrap().len(), 1);
    assert_eq!(sample(h, "consent_unsubscribes_total").await, before + 1.0);
}
on_both!(
    alternating,
    alternating_choices_in_one_request_count_and_record_once
);
