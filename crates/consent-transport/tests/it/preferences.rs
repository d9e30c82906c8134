//! The consent preferences client.

use std::sync::Arc;
use std::time::Duration;

use consent_transport::{
    DecryptQuery, Delivery, MarketingPreference, NoJitter, PreferencesBody, PreferencesClient,
    PreferencesConfig, UnsubscribeParams,
};
use serde_json::json;

use crate::fast_policy;
use crate::server::{RecordingSleep, Reply, TestServer};

fn client(base: &str, sandbox: bool) -> PreferencesClient {
    let mut config = PreferencesConfig::new(
        &format!("{base}/journey"),
        "api-key",
        "ORG@AdobeOrg",
        "token",
    )
    .unwrap()
    .timeout(Duration::from_millis(300))
    .retry(fast_policy());
    if sandbox {
        config = config.sandbox_name("prod");
    }
    PreferencesClient::new(config)
        .unwrap()
        .with_jitter(Arc::new(NoJitter))
        .with_sleep(Arc::new(RecordingSleep::default()))
}

#[tokio::test]
async fn set_preferences_posts_the_marketing_body_with_the_headers() {
    let server = TestServer::start(|i, _| match i {
        0 => Reply::json(503, json!({})),
        _ => Reply::json(200, json!({"status": "ok"})),
    })
    .await;
    let client = client(&server.base, true);
    let link = UnsubscribeParams {
        params: "enc+payload/=".into(),
        pid: "pid1".into(),
        sig: Some("sig1".into()),
    };
    let body = PreferencesBody {
        marketing: vec![MarketingPreference::email_opt_out()],
    };

    let answer = client.set_preferences(&link, &body).await.unwrap();

    assert_eq!(answer, json!({"status": "ok"}));
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "a 503 is retried");
    let request = &requests[1];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/journey/imp/consent/preferences");
    assert_eq!(request.query["params"], "enc+payload/=");
    assert_eq!(request.query["pid"], "pid1");
    assert_eq!(request.query["sig"], "sig1");
    assert_eq!(request.header("x-api-key"), Some("api-key"));
    assert_eq!(request.header("x-gw-ims-org-id"), Some("ORG@AdobeOrg"));
    assert_eq!(request.header("x-sandbox-name"), Some("prod"));
    assert_eq!(request.header("authorization"), Some("Bearer token"));
    assert_eq!(
        request.body,
        json!({"marketing": [{"type": "email", "choice": "no", "scope": "channel"}]})
    );
}

#[tokio::test]
async fn decrypt_reads_the_profile_and_a_401_is_not_retried() {
    let server = TestServer::start(|i, _| match i {
        0 => Reply::json(
            200,
            json!({"profileNameSpace": "CRMID", "profileId": "p1", "emailAddress": "john@example.com",
                   "emailNameSpace": "Email", "sandboxId": "s", "optOutLevel": "channel",
                   "channelType": "email", "timestamp": "2024-11-26T14:25:09.316930Z",
                   "utm": [{"utm_source": "AJO", "utm_medium": "Email"}]}),
        ),
        _ => Reply::json(401, json!({"error_code": "401013", "message": "Oauth token is not valid"})),
    })
    .await;
    let client = client(&server.base, false);
    let query = DecryptQuery::OneClick {
        params: "P".into(),
        pid: "I".into(),
    };

    let decrypted = client.decrypt(&query).await.unwrap();
    assert_eq!(decrypted.profile_id.as_deref(), Some("p1"));
    assert_eq!(decrypted.email_address.as_deref(), Some("john@example.com"));
    assert_eq!(decrypted.utm[0]["utm_medium"], "Email");
    let request = &server.requests()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/journey/imp/consent/decrypt");
    assert_eq!(request.query["params"], "P");
    assert_eq!(request.query["pid"], "I");
    assert_eq!(request.header("x-sandbox-name"), None);

    let error = client
        .decrypt(&DecryptQuery::Mailto {
            email_params: "E".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(401));
    assert_eq!(error.delivery(), Delivery::Unrecoverable);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.requests()[1].query["emailParams"], "E");

    // consent-server's form: the link's signature goes along.
    let _ = client
        .decrypt(&DecryptQuery::OneClickSigned {
            params: "P".into(),
            pid: "I".into(),
            sig: "S".into(),
        })
        .await;
    let signed = &server.requests()[2];
    assert_eq!(
        (
            signed.query["params"].as_str(),
            signed.query["pid"].as_str(),
            signed.query["sig"].as_str()
        ),
        ("P", "I", "S")
    );
}
