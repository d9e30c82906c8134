//! What an app hands the client: events, and `setConsent` requests.

use std::fmt;

use consent_core::{ConsentObject, SetConsentOptions};
use serde_json::Value;

use crate::error::{Error, ErrorKind};

/// An event's id: its `xdm._id`, the key the server deduplicates on. It stays the same across
/// every retry and restart, so an event delivered twice is stored once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub(crate) String);

impl EventId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> String {
        id.0
    }
}

/// An event to collect: its XDM, optional free-form `data`, and the named purposes it needs
/// besides `general`.
///
/// ```
/// use serde_json::json;
///
/// let event = consent::Event::new(json!({"eventType": "web.webpagedetails.pageViews"}))
///     .requires("personalize.content");
/// assert_eq!(event.id().as_str().len(), 36); // a fresh time-ordered UUID, as `xdm._id`
///
/// let given = consent::Event::new(json!({"_id": "order-42", "eventType": "commerce.purchases"}));
/// assert_eq!(given.id().as_str(), "order-42");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub(crate) inner: consent_transport::Event,
    pub(crate) purposes: Vec<String>,
}

impl Event {
    /// An event with this XDM. Its id is `xdm._id` when that is a string, else a fresh UUID written
    /// there (version 7: time-ordered, so a server indexing event ids appends rather than
    /// scatters). XDM that is not an object is kept under `xdm.value`.
    pub fn new(xdm: Value) -> Self {
        Self {
            inner: consent_transport::Event::new(xdm),
            purposes: Vec::new(),
        }
    }

    /// Declares a named purpose the event needs besides `general` (`"personalize.content"`,
    /// `"marketing.email"`, … or one registered with
    /// [`Builder::purpose`](crate::Builder::purpose)). Until the purpose is decided it follows
    /// `general` (under "in" the event goes out); while it is pending the event waits; an "out"
    /// for it declines new events and purges the queued ones from disk.
    #[must_use]
    pub fn requires(mut self, purpose: &str) -> Self {
        if purpose != "general" && !self.purposes.iter().any(|p| p == purpose) {
            self.purposes.push(purpose.to_owned());
        }
        self
    }

    /// Sets the event's free-form `data`.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.inner = self.inner.with_data(data);
        self
    }

    /// The event's id (`xdm._id`).
    pub fn id(&self) -> EventId {
        EventId(self.inner.id().unwrap_or_default().to_owned())
    }

    /// The XDM.
    pub fn xdm(&self) -> &serde_json::Map<String, Value> {
        &self.inner.xdm
    }

    /// The named purposes it needs besides `general`.
    pub fn purposes(&self) -> &[String] {
        &self.purposes
    }

    /// The bytes kept in the queue: eight bytes for the submission order (filled in by the
    /// driver), then the Edge event as JSON.
    pub(crate) fn to_payload(&self) -> Result<Vec<u8>, Error> {
        let mut payload = vec![0u8; ORDER_BYTES];
        serde_json::to_writer(&mut payload, &self.inner).map_err(|e| {
            Error::with_source(ErrorKind::InvalidInput, "the event cannot be encoded", e)
        })?;
        Ok(payload)
    }
}

/// Bytes of the order key in front of every queued event.
pub(crate) const ORDER_BYTES: usize = 8;

/// Proof that the server accepted an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The event.
    pub event_id: EventId,
    /// The `requestId` of the request that carried it.
    pub request_id: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// How many attempts the request took.
    pub attempts: u32,
}

impl Receipt {
    pub(crate) fn new(event_id: EventId, request_id: String, status: u16, attempts: u32) -> Self {
        Self {
            event_id,
            request_id,
            status,
            attempts,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Payload {
    AdobeV1(String),
    AdobeV2(Value),
    IabTcf(String, bool),
    Options(Value),
}

/// A `setConsent` call in one of the three standards. Building one never fails:
/// [`Client::set_consent`](crate::Client::set_consent) validates it with the engine's rules and
/// messages and refuses bad input with [`Error::is_invalid_input`], sending nothing.
///
/// ```
/// use consent::ConsentRequest;
/// use serde_json::json;
///
/// ConsentRequest::adobe_v1("in");                                       // Adobe 1.0
/// ConsentRequest::adobe_v2(json!({"collect": {"val": "y"}}));          // Adobe 2.0 (XDM)
/// ConsentRequest::iab_tcf("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA", true); // IAB TCF 2
/// ConsentRequest::from_json(json!({"consent": [                        // the Web SDK's options
///     {"standard": "Adobe", "version": "1.0", "value": {"general": "out"}}]}));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRequest {
    payload: Payload,
    identity_map: Option<Value>,
}

impl ConsentRequest {
    /// Adobe 1.0: `{"general": value}`, `value` being `"in"` or `"out"`.
    pub fn adobe_v1(general: &str) -> Self {
        Self::of(Payload::AdobeV1(general.to_owned()))
    }

    /// Adobe 2.0: the XDM `consents` object (`collect`, `personalize`, `share`, `marketing`, …).
    pub fn adobe_v2(consents: Value) -> Self {
        Self::of(Payload::AdobeV2(consents))
    }

    /// IAB TCF 2: the TC string and whether GDPR applies.
    pub fn iab_tcf(tc_string: &str, gdpr_applies: bool) -> Self {
        Self::of(Payload::IabTcf(tc_string.to_owned(), gdpr_applies))
    }

    /// The Web SDK's `setConsent` options: `{"consent": [objects…], "identityMap": …}`, any mix of
    /// the standards.
    pub fn from_json(options: Value) -> Self {
        Self::of(Payload::Options(options))
    }

    /// Sends this identity map with the call.
    #[must_use]
    pub fn with_identity_map(mut self, identity_map: Value) -> Self {
        self.identity_map = Some(identity_map);
        self
    }

    fn of(payload: Payload) -> Self {
        Self {
            payload,
            identity_map: None,
        }
    }

    /// The engine's validated options, or the engine's message for what is wrong.
    pub(crate) fn to_options(&self) -> Result<SetConsentOptions, Error> {
        let invalid = |e: consent_core::PayloadError| Error::from_cause(ErrorKind::InvalidInput, e);
        let object = match &self.payload {
            Payload::AdobeV1(general) => ConsentObject::adobe_v1(general).map_err(invalid)?,
            Payload::AdobeV2(value) => ConsentObject::adobe_v2(value.clone()).map_err(invalid)?,
            Payload::IabTcf(tc, applies) => {
                ConsentObject::iab_tcf(tc, *applies).map_err(invalid)?
            }
            Payload::Options(options) => {
                let mut options = options.clone();
                if let (Some(map), Some(ids)) = (options.as_object_mut(), &self.identity_map) {
                    map.insert("identityMap".to_owned(), ids.clone());
                }
                return SetConsentOptions::from_json(&options).map_err(invalid);
            }
        };
        let mut options = SetConsentOptions::new(vec![object]);
        if let Some(ids) = &self.identity_map {
            consent_core::validate_identity_map(ids).map_err(invalid)?;
            options.identity_map = Some(ids.clone());
        }
        Ok(options)
    }
}
