//! Raw HTTP against the server, for the tests that load it (`soak`, `server_crash`): an API-keys
//! file, the admin headers, unsubscribe links, and what counts as an answer.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{DATASTREAM, ORG};

pub(crate) const API_KEY: &str = "load-key";
pub(crate) const API_TOKEN: &str = "load-token";

/// A keys file with one link key, one API key for [`ORG`] and the suite's datastream.
pub(crate) struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("keys.json"),
            json!({
                "link_keys": [{"id": "load", "secret": "bG9hZC1sb2FkLWxvYWQtbG9hZC1sb2FkLWxvYWQtbG9hZC1sb2Fk"}],
                "api_keys": [{"key": API_KEY, "token": API_TOKEN, "org": ORG, "sandbox": "prod"}],
                "datastreams": [{"id": DATASTREAM, "org": ORG, "sandbox": "prod"}]
            })
            .to_string(),
        )
        .unwrap();
        Self { dir }
    }

    /// The server's arguments: the keys file, and no per-key rate limit (the load is one key).
    pub(crate) fn args(&self) -> Vec<String> {
        vec![
            "--keys".to_owned(),
            self.dir.path().join("keys.json").display().to_string(),
            "--api-rate-limit".to_owned(),
            "0".to_owned(),
        ]
    }
}

/// A client for loopback with a 10 s timeout.
pub(crate) fn client() -> reqwest::Client {
    // A workspace build gives reqwest rustls without a provider: install one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The admin API's credentials for [`ORG`], `prod`.
pub(crate) fn admin(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request
        .header("x-api-key", API_KEY)
        .header("authorization", format!("Bearer {API_TOKEN}"))
        .header("x-gw-ims-org-id", ORG)
        .header("x-sandbox-name", "prod")
}

/// An answered request: a 2xx whose body was read whole; otherwise what went wrong.
pub(crate) async fn check(response: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    match response {
        Ok(r) if r.status().is_success() => r.bytes().await.map(|_| ()).map_err(|e| e.to_string()),
        Ok(r) => {
            let status = r.status();
            Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// An unsubscribe link for the email channel of `CRMID` `id`.
pub(crate) struct Link {
    /// The preferences API (`POST` updates, with the admin credentials).
    pub(crate) api: String,
    /// The landing page.
    pub(crate) page: String,
}

pub(crate) async fn create_link(http: &reqwest::Client, base: &str, id: &str) -> Link {
    let answer: Value = admin(http.post(format!("{base}/admin/v1/unsubscribe-links")))
        .json(&json!({"profile": {"namespace": "CRMID", "id": id}, "channel": "email"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Link {
        api: format!(
            "{base}/imp/consent/preferences?params={}&pid={}&sig={}",
            answer["params"].as_str().unwrap(),
            answer["pid"].as_str().unwrap(),
            answer["sig"].as_str().unwrap()
        ),
        page: answer["url"].as_str().unwrap().to_owned(),
    }
}

/// A set-consent body: Adobe 1.0 `general` for the ECID `id`.
pub(crate) fn set_consent_body(id: &str, general: &str) -> Value {
    json!({
        "consent": [{"standard": "Adobe", "version": "1.0", "value": {"general": general}}],
        "identityMap": {"ECID": [{"id": id}]}
    })
}

/// `GET /admin/v1/profiles/{namespace}/{id}/export`: the profile, its records and events.
pub(crate) async fn export(http: &reqwest::Client, base: &str, namespace: &str, id: &str) -> Value {
    admin(http.get(format!("{base}/admin/v1/profiles/{namespace}/{id}/export")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
