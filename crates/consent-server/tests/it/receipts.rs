//! Signed consent receipts and chain checkpoints: what the server signs can be checked by
//! someone who trusts only its published keys.

use consent_core::receipt::{self, Checkpoint, Jwks, ReceiptClaims, ReceiptError};
use serde_json::{Value, json};

use crate::edge::{adobe_v1, ecid_of, key, with_ecid};
use crate::harness::{DS_A, Harness, ORG_A};
use crate::on_both;

fn set_consent() -> String {
    format!("/ee/v1/privacy/set-consent?configId={DS_A}")
}

async fn published_keys(h: &Harness) -> Jwks {
    let response = h
        .client
        .get(h.url("/.well-known/consent-receipt-keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/jwk-set+json"
    );
    Jwks::from_json(&response.text().await.unwrap()).unwrap()
}

fn receipt_of(answer: &Value) -> Option<String> {
    answer["handle"].as_array()?.iter().find_map(|h| {
        (h["type"] == "consent:receipt")
            .then(|| h["payload"][0]["receipt"].as_str().unwrap().to_owned())
    })
}

/// `set-consent` with the receipt header.
async fn set_consent_with_receipt(h: &Harness, body: &Value) -> Value {
    let response = h
        .client
        .post(h.url(&set_consent()))
        .header("consent-receipt", "true")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

async fn a_set_consent_receipt_names_the_record_and_verifies_with_the_published_keys(h: &Harness) {
    let jwks = published_keys(h).await;
    let answer = set_consent_with_receipt(h, &adobe_v1("in")).await;
    let ecid = ecid_of(&answer);
    let token = receipt_of(&answer).expect("a receipt");
    crate::openapi::conforms(h, "EdgeResponse", &answer).await;
    let claims: ReceiptClaims =
        receipt::verify_with(&token, &jwks, consent_server::verify_ed25519).unwrap();
    let db = h.server().db();
    let records = db.records(&key(&ecid)).await.unwrap();
    let record = records.last().unwrap();
    assert_eq!(claims.seq, record.seq as u64);
    assert_eq!(claims.chain_hash, record.hash);
    assert_eq!(
        claims.pii_principal_id,
        format!("hmac-sha256:{}", db.subject("ECID", &ecid))
    );
    assert!(!claims.pii_principal_id.contains(&ecid));
    assert_eq!(claims.collection_method, "edge:set-consent");
    assert_eq!(claims.org, ORG_A);
    assert_eq!(claims.consent_timestamp, (record.created_at / 1000) as u64);
    assert_eq!(claims.general, Some(consent_core::Decision::In));
    assert_eq!(claims.version, receipt::KANTARA_VERSION);
    assert_eq!((claims.jurisdiction, claims.policy_url), (None, None));
    let purposes = &claims.services[0].purposes;
    let collect = purposes.iter().find(|p| p.purpose == "collect").unwrap();
    assert_eq!(collect.decision, consent_core::Decision::In);
    assert_eq!(collect.consent_type, "EXPLICIT");

    // A receipt changed in transit does not verify.
    let (head, rest) = token.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut forged: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    forged["general"] = json!("out");
    let forged = format!(
        "{head}.{}.{signature}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            forged.to_string()
        )
    );
    assert_eq!(
        receipt::verify_with::<ReceiptClaims>(&forged, &jwks, consent_server::verify_ed25519),
        Err(ReceiptError::BadSignature)
    );

    // Without the header, no receipt (and no signing cost); the same choice again is recorded
    // again, and receipted when asked.
    let (status, plain) = h
        .post_json(&set_consent(), &with_ecid(adobe_v1("out"), &ecid))
        .await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(receipt_of(&plain), None, "{plain}");
    let again = set_consent_with_receipt(h, &with_ecid(adobe_v1("out"), &ecid)).await;
    let claims: ReceiptClaims = receipt::verify_with(
        &receipt_of(&again).unwrap(),
        &jwks,
        consent_server::verify_ed25519,
    )
    .unwrap();
    assert_eq!(claims.general, Some(consent_core::Decision::Out));
    assert_eq!(claims.seq, record.seq as u64 + 2);
    // An invalid payload records nothing and signs nothing.
    let response = h
        .client
        .post(h.url(&set_consent()))
        .header("consent-receipt", "true")
        .json(&json!({"consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": "maybe"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}
on_both!(
    set_consent_receipt,
    a_set_consent_receipt_names_the_record_and_verifies_with_the_published_keys
);

async fn a_preference_update_carries_a_receipt_when_asked_and_it_changes_something(h: &Harness) {
    let jwks = published_keys(h).await;
    let request = json!({"profile": {"namespace": "CRMID", "id": "p-9"}, "channel": "email",
        "scope": "channel", "message": {"m": "msg-1", "ci": "camp-1"}});
    let (status, link) = h
        .post_json_as_a("/admin/v1/unsubscribe-links", &request)
        .await;
    assert_eq!(status, 200, "{link}");
    let path = format!(
        "/imp/consent/preferences?params={}&pid={}&sig={}",
        link["params"].as_str().unwrap(),
        link["pid"].as_str().unwrap(),
        link["sig"].as_str().unwrap()
    );
    let body = json!({"marketing": [{"type": "email", "choice": "no"}]});
    let asking = |body: &Value| {
        h.auth(h.client.post(h.url(&path)), false)
            .header("consent-receipt", "true")
            .json(body)
    };
    // Not asked for: none (and no signing cost).
    let (status, answer) = h
        .post_json_as_a(
            &path,
            &json!({"marketing": [{"type": "sms", "choice": "no"}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("receipt").is_none(), "{answer}");
    let answer: Value = asking(&body).send().await.unwrap().json().await.unwrap();
    let claims: ReceiptClaims = receipt::verify_with(
        answer["receipt"].as_str().unwrap(),
        &jwks,
        consent_server::verify_ed25519,
    )
    .unwrap();
    assert_eq!(claims.collection_method, "preferences");
    crate::openapi::conforms(h, "PreferencesResponse", &answer).await;
    assert_eq!(claims.general, None);
    let email = claims.services[0]
        .purposes
        .iter()
        .find(|p| p.purpose == "marketing.email")
        .unwrap();
    assert_eq!(email.decision, consent_core::Decision::Out);
    // The same choice again changes nothing, records nothing: no receipt.
    let answer: Value = asking(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["changed"], 0);
    assert!(answer.get("receipt").is_none(), "{answer}");
}
on_both!(
    preferences_receipt,
    a_preference_update_carries_a_receipt_when_asked_and_it_changes_something
);

async fn a_checkpoint_catches_a_chain_rewritten_before_it(h: &Harness) {
    let jwks = published_keys(h).await;
    for general in ["in", "out", "in"] {
        let (status, answer) = h
            .post_json(
                &set_consent(),
                &with_ecid(adobe_v1(general), "11111111111111111111111111111111111111"),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let response = h
        .auth(h.client.get(h.url("/admin/v1/chain/checkpoint")), false)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    crate::openapi::conforms(h, "Checkpoint", &answer).await;
    crate::openapi::conforms(h, "Jwks", &serde_json::to_value(&jwks).unwrap()).await;
    let checkpoint: Checkpoint = receipt::verify_with(
        answer["checkpoint"].as_str().unwrap(),
        &jwks,
        consent_server::verify_ed25519,
    )
    .unwrap();
    assert_eq!(
        (checkpoint.org.as_str(), checkpoint.sandbox.as_str()),
        (ORG_A, "prod")
    );
    assert_eq!(checkpoint.seq, 3);
    assert_eq!(answer["seq"], 3);
    let db = h.server().db();
    assert_eq!(db.verify_chain_against(&checkpoint).await.unwrap(), Ok(3));
    // The chain goes on: the checkpoint still holds.
    let (status, _) = h.post_json(&set_consent(), &adobe_v1("in")).await;
    assert_eq!(status, 200);
    assert_eq!(db.verify_chain_against(&checkpoint).await.unwrap(), Ok(4));

    // A chain written again from the start, consistent in itself (every hash recomputed, as
    // whoever can write the database can do): verify_chain passes, the checkpoint does not.
    let dir = tempfile::tempdir().unwrap();
    let kind = if h.database_url.starts_with("postgres") {
        crate::harness::Db::Postgres
    } else {
        crate::harness::Db::Sqlite
    };
    let url = crate::harness::database_url(kind, dir.path())
        .await
        .unwrap();
    let rewritten = consent_server::Db::open(&url).await.unwrap();
    for general in ["in", "in", "in", "in"] {
        let change = consent_server::ConsentChange {
            general: Some(general.to_owned()),
            edit: Box::new(|_, _| true),
            source: "edge:set-consent".to_owned(),
            payload: json!({"general": general}),
        };
        rewritten
            .apply_consent(&key("11111111111111111111111111111111111111"), change)
            .await
            .unwrap();
    }
    assert_eq!(rewritten.verify_chain(ORG_A, "prod").await.unwrap(), Ok(4));
    assert_eq!(
        rewritten.verify_chain_against(&checkpoint).await.unwrap(),
        Err(3)
    );
    rewritten.close().await;

    // Only the caller's own chain, and only with credentials.
    let response = h
        .client
        .get(h.url("/admin/v1/chain/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = h
        .auth(h.client.get(h.url("/admin/v1/chain/checkpoint")), true)
        .send()
        .await
        .unwrap();
    let other: Value = response.json().await.unwrap();
    assert_eq!(other["org"], crate::harness::ORG_B);
    assert_eq!(other["seq"], 0);
}
on_both!(checkpoint, a_checkpoint_catches_a_chain_rewritten_before_it);

#[tokio::test]
async fn every_set_consent_is_receipted_when_configured_and_old_keys_still_verify() {
    let seed = |b: u8| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [b; 32]);
    let mut keys: Value = serde_json::from_str(&crate::harness::keys_json()).unwrap();
    keys["receipt_keys"] = json!([{"id": "r-old", "seed": seed(7)}]);
    let old = consent_server::Keys::from_json(&keys.to_string()).unwrap();
    let h = Harness::start_with(crate::harness::Db::Sqlite, |config| {
        config.keys = old.clone();
        config.receipts_always = true;
    })
    .await
    .unwrap();
    let (status, answer) = h.post_json(&set_consent(), &adobe_v1("in")).await;
    assert_eq!(status, 200);
    let old_receipt = receipt_of(&answer).expect("every answer carries one");
    h.shutdown().await;

    // Rotated: a new current key, the old one kept. Both are published; the old receipt still
    // verifies, a new one is signed with the new key.
    keys["receipt_keys"] =
        json!([{"id": "r-old", "seed": seed(7)}, {"id": "r-new", "seed": seed(8)}]);
    keys["current_receipt_key"] = json!("r-new");
    let rotated = consent_server::Keys::from_json(&keys.to_string()).unwrap();
    let h = Harness::start_with(crate::harness::Db::Sqlite, |config| {
        config.keys = rotated;
        config.receipts_always = true;
        config.receipt_policy = consent_server::ReceiptPolicy::new(
            Some("EU".to_owned()),
            Some("https://example.com/privacy".to_owned()),
        );
    })
    .await
    .unwrap();
    let jwks = published_keys(&h).await;
    assert_eq!(jwks.keys.len(), 2);
    receipt::verify_with::<ReceiptClaims>(&old_receipt, &jwks, consent_server::verify_ed25519)
        .unwrap();
    let (_, answer) = h.post_json(&set_consent(), &adobe_v1("in")).await;
    let new_receipt = receipt_of(&answer).unwrap();
    let claims: ReceiptClaims =
        receipt::verify_with(&new_receipt, &jwks, consent_server::verify_ed25519).unwrap();
    // With the controller's jurisdiction and policy configured, the Kantara fields it requires.
    assert_eq!(claims.jurisdiction.as_deref(), Some("EU"));
    assert_eq!(
        claims.policy_url.as_deref(),
        Some("https://example.com/privacy")
    );
    assert_eq!(
        receipt::decode(&new_receipt).unwrap().header.kid.as_deref(),
        Some("r-new")
    );
    h.shutdown().await;
}

#[test]
fn the_cli_verifies_a_receipt_offline() {
    let keys = consent_server::ReceiptKeys::new(
        vec![consent_server::ReceiptKey::new("cli", &[9; 32]).unwrap()],
        0,
    )
    .unwrap();
    let claims = ReceiptClaims {
        version: receipt::KANTARA_VERSION.to_owned(),
        jurisdiction: None,
        consent_timestamp: 1_765_000_000,
        collection_method: "edge:set-consent".to_owned(),
        consent_receipt_id: format!("{ORG_A}/prod/1"),
        pii_principal_id: "hmac-sha256:00".to_owned(),
        pii_controllers: vec![receipt::PiiController::named(ORG_A)],
        policy_url: None,
        language: None,
        services: Vec::new(),
        sensitive: false,
        spi_cat: Vec::new(),
        org: ORG_A.to_owned(),
        sandbox: "prod".to_owned(),
        seq: 1,
        chain_hash: "ab".repeat(32),
        general: Some(consent_core::Decision::In),
        iat: 1_765_000_001,
    };
    let token = keys.sign_receipt(&claims);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("keys.json");
    std::fs::write(&jwks, keys.jwks().to_json()).unwrap();
    let run = |token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_consent-server"))
            .args(["verify-receipt", "--keys", jwks.to_str().unwrap(), token])
            .output()
            .unwrap()
    };
    let output = run(&token);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["seq"], 1);
    assert_eq!(printed["general"], "in");
    // One character of the signature changed: refused, with the reason.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let output = run(&forged);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("signature"), "{stderr}");
    // A checkpoint verifies too, told apart by its type.
    let checkpoint = keys.sign_checkpoint(&Checkpoint {
        org: ORG_A.to_owned(),
        sandbox: "prod".to_owned(),
        seq: 5,
        hash: "cd".repeat(32),
        time: 1_765_000_002,
    });
    let output = run(&checkpoint);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["seq"], 5);
}
