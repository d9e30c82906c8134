//! The consent preferences API: the external opt-out page's call (`POST /imp/consent/preferences`)
//! and the customer-managed unsubscribe decryption (`GET /imp/consent/decrypt`), opt-in reference
//! c.4.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::http::{
    BuildError, ConfigError, SendError, StatusError, build_client, read_body, retry_after,
    transport_error,
};
use crate::protocol::problems_in;
use crate::retry::{Attempt, FullJitter, Jitter, Retrier, RetryPolicy, Sleep, TokioSleep};

/// Where the preferences API is and the credentials of the technical account.
///
/// Its `Debug` output hides the access token.
#[derive(Clone)]
pub struct PreferencesConfig {
    base: Url,
    /// The base URL's path without its trailing `/`.
    prefix: String,
    api_key: String,
    org_id: String,
    sandbox_name: Option<String>,
    access_token: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for PreferencesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreferencesConfig")
            .field("base", &self.base.as_str())
            .field("api_key", &self.api_key)
            .field("org_id", &self.org_id)
            .field("sandbox_name", &self.sandbox_name)
            .field("access_token", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl PreferencesConfig {
    /// The API at `base` (e.g. `https://platform.adobe.io/journey`), with the `x-api-key`, the
    /// `x-gw-ims-org-id` and the access token sent as `authorization: Bearer …`.
    pub fn new(
        base: &str,
        api_key: impl Into<String>,
        org_id: impl Into<String>,
        access_token: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let mut url = Url::parse(base).map_err(|source| ConfigError::InvalidUrl {
            url: base.to_owned(),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
            || url.cannot_be_a_base()
        {
            return Err(ConfigError::UnsupportedUrl(base.to_owned()));
        }
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path("/");
        Ok(Self {
            base: url,
            prefix,
            api_key: api_key.into(),
            org_id: org_id.into(),
            sandbox_name: None,
            access_token: access_token.into(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        })
    }

    /// The `x-sandbox-name` header.
    #[must_use]
    pub fn sandbox_name(mut self, name: impl Into<String>) -> Self {
        self.sandbox_name = Some(name.into());
        self
    }

    /// The time one attempt may take.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The retry policy.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    fn url(&self, tail: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}/imp/consent/{tail}", self.prefix));
        url
    }
}

/// The encrypted parameters an opt-out link carries to the landing page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeParams {
    /// `params`: the encrypted payload.
    pub params: String,
    /// `pid`: the encrypted profile id.
    pub pid: String,
    /// `sig`: the signature, when the link has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl UnsubscribeParams {
    /// Reads them from a landing page URL; `None` without `params` or `pid`.
    ///
    /// ```
    /// let url = "https://example.com/optout?params=P&pid=I&sig=S&utm_source=AJO".parse().unwrap();
    /// let p = consent_transport::UnsubscribeParams::from_url(&url).unwrap();
    /// assert_eq!((p.params.as_str(), p.pid.as_str(), p.sig.as_deref()), ("P", "I", Some("S")));
    /// ```
    pub fn from_url(url: &Url) -> Option<Self> {
        let find = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        Some(Self {
            params: find("params")?,
            pid: find("pid")?,
            sig: find("sig"),
        })
    }
}

/// The body of a preferences update: `{"marketing": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencesBody {
    /// The marketing choices.
    pub marketing: Vec<MarketingPreference>,
}

/// One marketing choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketingPreference {
    /// The channel: `email`, …
    #[serde(rename = "type")]
    pub channel: String,
    /// The choice: `no` to opt out.
    pub choice: String,
    /// The scope: `channel`, …
    pub scope: String,
}

impl MarketingPreference {
    /// `{"type": "email", "choice": "no", "scope": "channel"}`: opt out of email on every address.
    pub fn email_opt_out() -> Self {
        Self {
            channel: "email".to_owned(),
            choice: "no".to_owned(),
            scope: "channel".to_owned(),
        }
    }
}

/// What to decrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecryptQuery {
    /// The parameters of a one-click URL: `params` and `pid`.
    OneClick {
        /// `params`.
        params: String,
        /// `pid`.
        pid: String,
    },
    /// The parameters of a one-click URL with its signature: `params`, `pid` and `sig`.
    /// `consent-server` checks the signature before it decrypts anything, and refuses a decrypt
    /// without one.
    OneClickSigned {
        /// `params`.
        params: String,
        /// `pid`.
        pid: String,
        /// `sig`.
        sig: String,
    },
    /// A legacy mailto unsubscribe: `emailParams`.
    Mailto {
        /// `emailParams`.
        email_params: String,
    },
    /// A mailto unsubscribe with custom attributes: `emailParamsSub` and `emailParamsBody`.
    MailtoCustom {
        /// `emailParamsSub`.
        subject: String,
        /// `emailParamsBody`.
        body: String,
    },
}

impl DecryptQuery {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        match self {
            DecryptQuery::OneClick { params, pid } => vec![("params", params), ("pid", pid)],
            DecryptQuery::OneClickSigned { params, pid, sig } => {
                vec![("params", params), ("pid", pid), ("sig", sig)]
            }
            DecryptQuery::Mailto { email_params } => vec![("emailParams", email_params)],
            DecryptQuery::MailtoCustom { subject, body } => {
                vec![("emailParamsSub", subject), ("emailParamsBody", body)]
            }
        }
    }
}

/// A decrypted unsubscribe request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decrypted {
    /// The profile's namespace, e.g. `CRMID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name_space: Option<String>,
    /// The profile id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    /// The email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    /// The address's namespace, e.g. `Email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_name_space: Option<String>,
    /// The sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// `channel` or `identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_level: Option<String>,
    /// `email`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_type: Option<String>,
    /// When, as ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The URL's tracking parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub utm: Vec<BTreeMap<String, String>>,
    /// Fields this crate does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A client of the consent preferences API, with the same retries as the Edge transport.
#[derive(Debug, Clone)]
pub struct PreferencesClient {
    client: reqwest::Client,
    config: Arc<PreferencesConfig>,
    retrier: Retrier,
}

impl PreferencesClient {
    /// A client for `config`.
    pub fn new(config: PreferencesConfig) -> Result<Self, BuildError> {
        let client = build_client(config.connect_timeout)?;
        let retrier = Retrier {
            policy: config.retry.clone(),
            jitter: Arc::new(FullJitter),
            sleep: Arc::new(TokioSleep),
        };
        Ok(Self {
            client,
            config: Arc::new(config),
            retrier,
        })
    }

    /// Replaces the backoff's randomness.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.retrier.jitter = jitter;
        self
    }

    /// Replaces the wait between attempts.
    #[must_use]
    pub fn with_sleep(mut self, sleep: Arc<dyn Sleep>) -> Self {
        self.retrier.sleep = sleep;
        self
    }

    /// Records the user's choice: `POST {base}/imp/consent/preferences?params=…&pid=…[&sig=…]`.
    /// Returns the answer's JSON body (`Null` when it has none).
    pub async fn set_preferences(
        &self,
        link: &UnsubscribeParams,
        body: &PreferencesBody,
    ) -> Result<Value, SendError> {
        let mut url = self.config.url("preferences");
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("params", &link.params);
            query.append_pair("pid", &link.pid);
            if let Some(sig) = &link.sig {
                query.append_pair("sig", sig);
            }
        }
        let body = serde_json::to_vec(body).map_err(SendError::Encode)?;
        let (status, bytes) = self
            .exchange(|| {
                self.request(reqwest::Method::POST, url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|source| SendError::Malformed {
            status,
            cookies: Vec::new(),
            source,
        })
    }

    /// Decrypts an unsubscribe request: `GET {base}/imp/consent/decrypt?…`.
    pub async fn decrypt(&self, query: &DecryptQuery) -> Result<Decrypted, SendError> {
        let mut url = self.config.url("decrypt");
        url.query_pairs_mut().extend_pairs(query.pairs());
        let (status, bytes) = self
            .exchange(|| self.request(reqwest::Method::GET, url.clone()))
            .await?;
        serde_json::from_slice(&bytes).map_err(|source| SendError::Malformed {
            status,
            cookies: Vec::new(),
            source,
        })
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let token = &self.config.access_token;
        let authorization = if token.starts_with("Bearer ") {
            token.clone()
        } else {
            format!("Bearer {token}")
        };
        let mut builder = self
            .client
            .request(method, url)
            .timeout(self.config.timeout)
            .header("x-api-key", &self.config.api_key)
            .header("x-gw-ims-org-id", &self.config.org_id)
            .header(AUTHORIZATION, authorization);
        if let Some(sandbox) = &self.config.sandbox_name {
            builder = builder.header("x-sandbox-name", sandbox);
        }
        builder
    }

    /// Sends with retries; returns the status and body of a 2xx answer.
    async fn exchange<F>(&self, build: F) -> Result<(u16, Vec<u8>), SendError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let cap = self.retrier.policy.retry_after_cap;
        self.retrier
            .send(|_| {
                let builder = build();
                async move { attempt(builder, cap).await }
            })
            .await
    }
}

async fn attempt(
    builder: reqwest::RequestBuilder,
    retry_after_cap: Duration,
) -> Attempt<(u16, Vec<u8>), SendError> {
    let fail = |e: reqwest::Error| {
        let (error, retry) = transport_error(e);
        if retry {
            Attempt::Retry(error, None)
        } else {
            Attempt::Done(Err(error))
        }
    };
    let response = match builder.send().await {
        Ok(response) => response,
        Err(e) => return fail(e),
    };
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers(), SystemTime::now(), retry_after_cap);
    let body = match read_body(response).await {
        Ok(body) => body,
        Err(error) => return error,
    };
    if (200..300).contains(&status) {
        return Attempt::Done(Ok((status, body)));
    }
    let error = StatusError {
        status,
        problems: problems_in(&body),
        body: String::from_utf8_lossy(&body).into_owned(),
        cookies: Vec::new(),
        retry_after,
        attempts: 0,
    };
    if error.is_recoverable() {
        Attempt::Retry(SendError::Status(Box::new(error)), retry_after)
    } else {
        Attempt::Done(Err(SendError::Status(Box::new(error))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_bodies_follow_the_reference() {
        let config =
            PreferencesConfig::new("https://platform.example/journey/", "k", "O@A", "t").unwrap();
        assert_eq!(
            config.url("decrypt").as_str(),
            "https://platform.example/journey/imp/consent/decrypt"
        );
        assert!(!format!("{config:?}").contains("\"t\""));
        let body = PreferencesBody {
            marketing: vec![MarketingPreference::email_opt_out()],
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"marketing": [{"type": "email", "choice": "no", "scope": "channel"}]})
        );
        let decrypted: Decrypted = serde_json::from_value(serde_json::json!({
            "profileNameSpace": "CRMID", "profileId": "p", "optOutLevel": "channel",
            "utm": [{"utm_source": "AJO"}], "new": 1
        }))
        .unwrap();
        assert_eq!(decrypted.opt_out_level.as_deref(), Some("channel"));
        assert_eq!(decrypted.utm[0]["utm_source"], "AJO");
        assert_eq!(decrypted.extra["new"], 1);
    }
}
