//! An in-memory [`Transport`] for tests of the code that drives one.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use consent_core::{Action, CookieNames, StoredCookie};
use url::Url;

use crate::Transport;
use crate::http::{EdgeConfig, EdgeReply, SendError, StatusError};
use crate::ids::new_uuid;
use crate::jar::{CookieJar, JarError};
use crate::protocol::{EdgeResponse, Request};

type Responder = dyn Fn(&Request) -> Result<EdgeResponse, StatusError> + Send + Sync;

/// A transport that records every request and answers through a closure, with no network: for
/// deterministic tests of the facade. Its jar keeps cookies as [`HttpTransport`] would for the
/// same [`EdgeConfig`].
///
/// [`HttpTransport`]: crate::HttpTransport
///
/// ```
/// use consent_core::{Action, Cookie};
/// use consent_transport::{DataRequest, EdgeConfig, MemoryTransport, Request, Transport};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = EdgeConfig::new("https://edge.example.com", "datastream", "ORG@AdobeOrg")?;
/// let transport = MemoryTransport::new(&config);
/// transport.send(Request::IdentityAcquire(DataRequest::identity())).await?;
/// assert_eq!(transport.sent().len(), 1);
/// let consent = Cookie::new(config.names().consent(), "general=in", Some(60));
/// transport.apply(&Action::StoreCookie(consent))?;
/// assert_eq!(transport.stored_cookies().0.unwrap().value, "general=in");
/// # Ok(())
/// # }
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(run())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MemoryTransport {
    names: CookieNames,
    url: Url,
    jar: CookieJar,
    sent: Arc<Mutex<Vec<Request>>>,
    responder: Arc<Responder>,
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("names", &self.names)
            .field("jar", &self.jar)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl MemoryTransport {
    /// A transport for the organisation and server of `config` (no request reaches that server)
    /// that answers every request with an empty `handle[]`.
    pub fn new(config: &EdgeConfig) -> Self {
        Self {
            names: config.names().clone(),
            url: config.cookie_url(),
            jar: CookieJar::default(),
            sent: Arc::default(),
            responder: Arc::new(|_| {
                Ok(EdgeResponse {
                    request_id: None,
                    handle: Vec::new(),
                    warnings: Vec::new(),
                    errors: Vec::new(),
                })
            }),
        }
    }

    /// Answers through `responder`: an [`EdgeResponse`] for a 2xx answer (its `state:store`
    /// cookies are returned for the engine), or a [`StatusError`] for a failed one.
    #[must_use]
    pub fn with_responder(
        mut self,
        responder: impl Fn(&Request) -> Result<EdgeResponse, StatusError> + Send + Sync + 'static,
    ) -> Self {
        self.responder = Arc::new(responder);
        self
    }

    /// The requests sent so far, in order.
    pub fn sent(&self) -> Vec<Request> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The cookie jar.
    pub fn jar(&self) -> &CookieJar {
        &self.jar
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn send(&self, request: Request) -> Result<EdgeReply, SendError> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.clone());
        match (self.responder)(&request) {
            Ok(response) => {
                let cookies = match response.state_store() {
                    Ok(items) => items.iter().map(|i| i.to_cookie()).collect(),
                    Err(source) => {
                        return Err(SendError::Malformed {
                            status: 200,
                            cookies: Vec::new(),
                            source,
                        });
                    }
                };
                Ok(EdgeReply {
                    status: 200,
                    response,
                    cookies,
                    request_id: new_uuid(),
                    attempts: 1,
                })
            }
            Err(error) => Err(SendError::Status(Box::new(error))),
        }
    }

    fn apply(&self, action: &Action) -> Result<bool, JarError> {
        self.jar.apply(action, &self.url)
    }

    fn stored_cookies(&self) -> (Option<StoredCookie>, bool) {
        self.jar.stored(&self.url, &self.names)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::{DataRequest, SetConsentRequest};

    #[tokio::test]
    async fn answers_through_the_responder_and_records_requests() {
        let config = EdgeConfig::new("https://edge.example.com", "ds", "ORG@AdobeOrg").unwrap();
        let transport = MemoryTransport::new(&config).with_responder(|request| match request {
            Request::SetConsent(_) => Ok(serde_json::from_value(json!({"handle": [
                {"type": "state:store", "payload": [{"key": "kndctr_ORG_AdobeOrg_consent", "value": "general=in"}]}
            ]}))
            .unwrap()),
            _ => Err(StatusError {
                status: 403,
                problems: Vec::new(),
                body: String::new(),
                cookies: Vec::new(),
                retry_after: None,
                attempts: 1,
            }),
        });
        let reply = transport
            .send(Request::SetConsent(SetConsentRequest::new(vec![json!({})])))
            .await
            .unwrap();
        assert_eq!(reply.cookies[0].value, "general=in");
        let error = transport
            .send(Request::Interact(DataRequest::events(Vec::new())))
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(403));
        assert_eq!(transport.sent().len(), 2);
        assert_eq!(transport.jar().lock().iter_any().count(), 0);
    }
}
