//! Starts a server in-process on 127.0.0.1:0 with a fresh database.

use std::sync::Arc;

use base64::Engine as _;
use consent_server::{Config, Keys, Server};
use serde_json::{Value, json};

pub(crate) const ORG_A: &str = "ORGA@AdobeOrg";
pub(crate) const ORG_B: &str = "ORGB@AdobeOrg";
pub(crate) const DS_A: &str = "ebebf826-a01f-4458-8cec-ef61de241c93";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Sqlite,
    Postgres,
}

pub(crate) struct Harness {
    pub(crate) server: Option<Server>,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) database_url: String,
    _dir: tempfile::TempDir,
}

pub(crate) fn keys_json() -> String {
    let secret = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    json!({
        "link_keys": [{"id": "k1", "secret": secret(1)}, {"id": "k2", "secret": secret(2)}],
        "current_link_key": "k2",
        "api_keys": [
            {"key": "key-a", "token": "token-a", "org": ORG_A, "sandbox": "prod"},
            {"key": "key-b", "token": "token-b", "org": ORG_B, "sandbox": "prod"}
        ],
        "datastreams": [{"id": DS_A, "org": ORG_A, "sandbox": "prod"}]
    })
    .to_string()
}

/// A fresh database URL, or `None` when PostgreSQL is asked for but not configured.
pub(crate) async fn database_url(db: Db, dir: &std::path::Path) -> Option<String> {
    match db {
        Db::Sqlite => Some(format!("sqlite://{}", dir.join("consent.db").display())),
        Db::Postgres => {
            let Ok(admin) = std::env::var("CONSENT_TEST_POSTGRES_URL") else {
                assert!(
                    std::env::var_os("CONSENT_TEST_REQUIRE_POSTGRES").is_none(),
                    "CONSENT_TEST_REQUIRE_POSTGRES is set but CONSENT_TEST_POSTGRES_URL is not"
                );
                eprintln!("CONSENT_TEST_POSTGRES_URL is not set: PostgreSQL variant not run");
                return None;
            };
            sqlx::any::install_default_drivers();
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).unwrap();
            let name = format!("consent_test_{}", u64::from_le_bytes(bytes));
            let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
            // The name is ours (digits only), not input: safe to splice into DDL.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            let (base, _) = admin.rsplit_once('/').unwrap();
            Some(format!("{base}/{name}"))
        }
    }
}

impl Harness {
    pub(crate) async fn start(db: Db) -> Option<Self> {
        Self::start_with(db, |_| {}).await
    }

    pub(crate) async fn start_with(db: Db, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let url = database_url(db, dir.path()).await?;
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), url.clone()).unwrap();
        config.keys = Keys::from_json(&keys_json()).unwrap();
        config.rate_limit_per_sec = 10_000;
        // The per-key and failed-authentication limits are tested on their own (`limits.rs`).
        config.api_rate_limit_per_sec = 0;
        config.auth_failures_per_minute = 0;
        // Most tests send a datastream or two the keys file does not list (`tls_cors.rs` tests
        // the refusal).
        config.allow_unknown_datastreams = true;
        tweak(&mut config);
        let server = consent_server::serve(config).await.unwrap();
        let base = format!("http://{}", server.local_addr());
        let client = http_client();
        Some(Self {
            server: Some(server),
            base,
            client,
            database_url: url,
            _dir: dir,
        })
    }

    pub(crate) fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The text of `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// POSTs JSON and returns the status and the body as JSON (`Null` when empty or not JSON).
    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        send_json(self.client.post(self.url(path)), body).await
    }

    /// [`Harness::post_json`] as an authenticated caller of organisation A.
    pub(crate) async fn post_json_as_a(&self, path: &str, body: &Value) -> (u16, Value) {
        send_json(self.auth(self.client.post(self.url(path)), false), body).await
    }

    /// The headers of an authenticated caller of organisation A (or B).
    pub(crate) fn auth(
        &self,
        builder: reqwest::RequestBuilder,
        org_b: bool,
    ) -> reqwest::RequestBuilder {
        let (key, token, org) = if org_b {
            ("key-b", "token-b", ORG_B)
        } else {
            ("key-a", "token-a", ORG_A)
        };
        builder
            .header("x-api-key", key)
            .header("authorization", format!("Bearer {token}"))
            .header("x-gw-ims-org-id", org)
            .header("x-sandbox-name", "prod")
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
    }
}

/// Runs a test body on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let h = $crate::harness::Harness::start($crate::harness::Db::Sqlite)
                    .await
                    .unwrap();
                ($body)(&h).await;
                h.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(h) = $crate::harness::Harness::start($crate::harness::Db::Postgres).await
                else {
                    return;
                };
                ($body)(&h).await;
                h.shutdown().await;
            }
        }
    };
}

/// A test IAB evaluator: strings starting with `GRANT` grant, `DENY` deny, anything else fails.
#[derive(Debug)]
pub(crate) struct FakeIab;

impl consent_core::IabEvaluator for FakeIab {
    fn grants_collection(&self, tc: &str, vendor: u16) -> Result<bool, String> {
        assert_eq!(vendor, 565);
        if tc.starts_with("GRANT") {
            Ok(true)
        } else if tc.starts_with("DENY") {
            Ok(false)
        } else {
            Err("not a TC string".into())
        }
    }
}

/// Sends every request at once; each must be answered 200.
pub(crate) async fn all_at_once_ok(requests: impl IntoIterator<Item = reqwest::RequestBuilder>) {
    let mut tasks = tokio::task::JoinSet::new();
    for request in requests {
        tasks.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

/// Sends `body` as JSON; the status and the answer as JSON (`Null` when empty or not JSON).
async fn send_json(builder: reqwest::RequestBuilder, body: &Value) -> (u16, Value) {
    let response = builder.json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) fn fake_iab() -> Arc<dyn consent_core::IabEvaluator> {
    Arc::new(FakeIab)
}

/// Installs rustls' ring crypto provider for this process, once. A workspace build unifies reqwest's
/// features with consent-transport's `rustls-no-provider`, and then a client cannot be built
/// without a provider; alone, this crate's reqwest has no TLS and this does nothing harmful.
pub(crate) fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain HTTP client for the tests.
pub(crate) fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
