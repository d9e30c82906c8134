//! The HTTP API's wire types — what the endpoints read and what they answer —, from which the
//! OpenAPI 3.1 document of `GET /openapi.json` is generated (`openapi.rs`).
//!
//! - Every JSON answer is one of the types here (or [`Erasure`](crate::Erasure)'s and
//!   [`Export`](crate::model::Export)'s, which the library returns too), serialised with serde;
//!   the document's schema of it is derived from the same type by utoipa's `ToSchema`, so the
//!   two cannot drift apart.
//! - The request bodies the handlers read with serde (a link to make, preferences) derive their
//!   schemas from the types they are read into (`prefs.rs`).
//! - Edge's own request bodies are read by `consent-core`'s parser, which gives Edge's exact
//!   error codes and messages; [`SetConsentRequest`] and [`EventsRequest`] describe them, and
//!   the integration tests send bodies that do and do not conform to the schemas and check the
//!   server agrees.
//! - Each handler carries its `#[utoipa::path]` (method, path, parameters, answers) beside its
//!   code; `openapi.rs` gathers them, and a test checks the document has a path for every route
//!   of the router and no other.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};

use crate::links::{CHANNELS, SCOPES};

/// A string schema whose values are `values`.
fn one_of_strings(values: &[&str]) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values.iter().copied()))
            .build(),
    )
}

/// `email`, `push` or `sms` ([`CHANNELS`]).
pub(crate) fn channel_schema() -> Schema {
    one_of_strings(CHANNELS)
}

/// `channel`, `identity` or `subscription` ([`SCOPES`]).
pub(crate) fn scope_schema() -> Schema {
    one_of_strings(SCOPES)
}

/// The `List-Unsubscribe-Post` value of RFC 8058 one-click, as a link's answer gives it.
pub(crate) const ONE_CLICK_POST: &str = "List-Unsubscribe=One-Click";

/// [`ONE_CLICK_POST`].
fn one_click_post() -> Schema {
    one_of_strings(&[ONE_CLICK_POST])
}

/// Functions giving the schema of a string that has one value, for `#[schema(schema_with)]`.
macro_rules! constants {
    ($($name:ident = $value:literal),* $(,)?) => {
        $(
            #[doc = concat!("`", $value, "`.")]
            fn $name() -> Schema {
                one_of_strings(&[$value])
            }
        )*
    };
}

constants! {
    adobe = "Adobe",
    iab_tcf = "IAB TCF",
    version_1 = "1.0",
    version_2 = "2.0",
    one_click = "One-Click",
    yes = "yes",
    okp = "OKP",
    ed25519 = "Ed25519",
    eddsa = "EdDSA",
    sig = "sig",
}

// ---------------------------------------------------------------------------------------------
// Edge answers

/// An Edge answer: the request's id, the handles (identity, the cookies to write, a receipt)
/// and the warnings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = EdgeResponse)]
pub(crate) struct EdgeAnswer<'a> {
    /// The request's `requestId`, or the one made up for it.
    pub(crate) request_id: &'a str,
    /// What the client is to do.
    pub(crate) handle: Vec<Handle<'a>>,
    /// Events not stored, and why (`EXEG-0301-200`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) warnings: Vec<Problem>,
}

/// One handle of an Edge answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", content = "payload")]
pub(crate) enum Handle<'a> {
    /// The visitor's ECID.
    #[serde(rename = "identity:result")]
    Identity(Vec<IdentityResult<'a>>),
    /// The cookies to write.
    #[serde(rename = "state:store")]
    Store(Vec<StoreEntry<'a>>),
    /// The signed receipt of the change a `set-consent` recorded.
    #[serde(rename = "consent:receipt")]
    Receipt(Vec<ReceiptEntry<'a>>),
}

/// A `consent:receipt` entry: the receipt as a compact JWS, verifiable with the keys of
/// `GET /.well-known/consent-receipt-keys` (its header's `kid` names the key).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiptEntry<'a> {
    /// The compact JWS.
    pub(crate) receipt: &'a str,
}

/// An `identity:result` entry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityResult<'a> {
    /// The identity.
    pub(crate) id: &'a str,
    /// Its namespace.
    pub(crate) namespace: Namespace,
}

/// An identity namespace.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Namespace {
    /// `ECID`, or `CORE` when `query.identity.fetch` asks for it.
    pub(crate) code: &'static str,
}

/// A `state:store` entry: a cookie for the client to write.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StoreEntry<'a> {
    /// `kndctr_<org>_identity`, `kndctr_<org>_cluster` or `kndctr_<org>_consent`.
    pub(crate) key: &'a str,
    /// The cookie's value.
    pub(crate) value: &'a str,
    /// Seconds.
    pub(crate) max_age: u64,
    /// Attributes for the client to give the cookie (`--cookie-same-site`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attrs: Option<CookieAttrs>,
}

/// The attributes of a `state:store` cookie.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CookieAttrs {
    /// `None`, `Lax` or `Strict`.
    #[serde(rename = "SameSite")]
    #[schema(schema_with = same_site_schema)]
    pub(crate) same_site: &'static str,
}

/// `None`, `Lax` or `Strict`.
fn same_site_schema() -> Schema {
    use crate::config::SameSite;
    one_of_strings(&[SameSite::None, SameSite::Lax, SameSite::Strict].map(SameSite::as_str))
}

/// An Edge error (`application/problem+json`), also the form of an answer's warnings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EdgeError)]
pub(crate) struct Problem {
    /// `https://ns.adobe.com/aep/errors/<code>`, e.g. `EXEG-0102-400`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The HTTP status (200 for a warning).
    pub(crate) status: u16,
    /// A short title.
    pub(crate) title: String,
    /// What was wrong, naming the field.
    pub(crate) detail: String,
    /// The request's id, or the number of events a warning is about.
    pub(crate) report: Report,
}

/// The `report` of an Edge error or warning.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Report {
    /// The request's id (errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    /// How many events the warning is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Edge requests: read by consent-core's parser; these types describe them.

/// The query of every Edge request.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "parameters the handlers read by name (edge::EdgeQuery)"
)]
pub(crate) struct EdgeParams {
    /// The datastream id; it selects the organisation and sandbox.
    #[param(rename = "configId", min_length = 1)]
    config_id: String,
    /// Echoed in the answer; one is made up when missing or longer than 128 characters.
    #[param(rename = "requestId", max_length = 128)]
    request_id: Option<String>,
}

/// The path parameter of the `/ee/{locationHint}/v1/…` forms.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "a parameter the handlers read by position")]
pub(crate) struct LocationHint {
    /// Edge cluster hint (letters and digits, at most 16; another is replaced by the default);
    /// echoed in the cluster cookie.
    #[param(rename = "locationHint")]
    location_hint: String,
}

/// The header that asks for a consent change's signed receipt.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(
    dead_code,
    reason = "a header the handlers read by name (receipts::wanted)"
)]
pub(crate) struct ReceiptHeader {
    /// `true` asks for the change's signed receipt in the answer.
    #[param(rename = "consent-receipt", inline)]
    consent_receipt: Option<TrueOrFalse>,
}

/// `true` or `false`.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema")]
pub(crate) enum TrueOrFalse {
    /// Yes.
    #[serde(rename = "true")]
    True,
    /// No.
    #[serde(rename = "false")]
    False,
}

/// Namespaces to identities; `ECID` names the visitor.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct IdentityMap(std::collections::BTreeMap<String, Vec<IdentityEntry>>);

/// One identity of an [`IdentityMap`]. Every field may be left out (a field given must not be
/// `null`).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct IdentityEntry {
    /// The identity.
    #[serde(default)]
    id: String,
    /// `ambiguous`, `authenticated` or `loggedOut`.
    #[serde(rename = "authenticatedState", default)]
    #[schema(inline)]
    authenticated_state: AuthenticatedState,
    /// Whether it is the primary identity.
    #[serde(default)]
    primary: bool,
    /// The namespace, again.
    #[serde(default)]
    #[schema(inline)]
    namespace: IdentityNamespace,
    /// An extra id.
    #[serde(default)]
    xid: String,
}

/// The `namespace` of an identity.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct IdentityNamespace {
    /// The namespace's code.
    #[serde(default)]
    code: String,
}

/// How an identity was authenticated.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema")]
pub(crate) enum AuthenticatedState {
    /// Not known.
    #[serde(rename = "ambiguous")]
    Ambiguous,
    /// Logged in.
    #[serde(rename = "authenticated")]
    Authenticated,
    /// Logged out.
    #[serde(rename = "loggedOut")]
    LoggedOut,
}

/// The body of `set-consent`.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct SetConsentRequest {
    /// The consent objects, applied in order.
    #[schema(min_items = 1)]
    consent: Vec<ConsentObject>,
    /// The identities the consent is for.
    #[serde(rename = "identityMap")]
    identity_map: Option<IdentityMap>,
    /// `meta.state.entries` may carry the identity cookie.
    #[schema(value_type = Option<Object>)]
    meta: Option<Value>,
    /// Client-side datastream overrides (kept, not acted upon).
    #[serde(rename = "edgeConfigOverrides")]
    #[schema(value_type = Option<Object>)]
    edge_config_overrides: Option<Value>,
    /// Ignored.
    #[schema(value_type = Option<Object>)]
    query: Option<Value>,
}

/// A consent object in one of the three standards.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) enum ConsentObject {
    /// Adobe 1.0.
    AdobeV1(AdobeV1Consent),
    /// Adobe 2.0 (XDM).
    AdobeV2(Box<AdobeV2Consent>),
    /// IAB TCF 2.0.
    IabTcf(IabTcfConsent),
}

/// `{"standard":"Adobe","version":"1.0","value":{"general":"in"|"out"}}`.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct AdobeV1Consent {
    #[schema(schema_with = adobe)]
    standard: String,
    #[schema(schema_with = version_1)]
    version: String,
    #[schema(inline)]
    value: AdobeV1Value,
}

/// The value of an Adobe 1.0 consent.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct AdobeV1Value {
    /// `in` or `out`.
    #[schema(inline)]
    general: InOrOut,
}

/// `in` or `out`.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema")]
pub(crate) enum InOrOut {
    /// In.
    #[serde(rename = "in")]
    In,
    /// Out.
    #[serde(rename = "out")]
    Out,
}

/// `{"standard":"Adobe","version":"2.0","value":{…XDM consents…}}`.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct AdobeV2Consent {
    #[schema(schema_with = adobe)]
    standard: String,
    #[schema(schema_with = version_2)]
    version: String,
    value: XdmConsents,
}

/// The XDM consents field group; `collect.val` decides `general` (`y` in, `n` out, another
/// value pending).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct XdmConsents {
    /// Collection and use of data.
    #[serde(default)]
    collect: ConsentValue,
    /// Advertising ids.
    #[serde(rename = "adID", default)]
    ad_id: ConsentValue,
    /// Sharing with third parties.
    #[serde(default)]
    share: ConsentValue,
    /// Personalisation, by purpose (`content`).
    #[serde(default)]
    #[schema(value_type = Object)]
    personalize: Value,
    /// Marketing preferences, by channel (`any`, `email`, `push`, `sms`, …).
    #[serde(default)]
    #[schema(value_type = Object)]
    marketing: Value,
    /// Consents for other identities, by namespace and id.
    #[serde(rename = "idSpecific", default)]
    #[schema(value_type = Object)]
    id_specific: Value,
    /// When the consents were last changed.
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Value,
}

/// A consent choice.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct ConsentValue {
    /// `y`, `n`, `p` (pending), `u` (unknown), the legal bases `VI`, `LI`, `PI`, `CT`, `CP`,
    /// or `dy`/`dn` (default yes/no).
    #[schema(inline)]
    val: ConsentVal,
    /// When it was given.
    #[serde(default)]
    #[schema(format = DateTime)]
    time: String,
    /// Why.
    #[serde(default)]
    reason: String,
    /// Its kind.
    #[serde(rename = "type", default)]
    kind: String,
}

/// The values of a consent choice.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema")]
pub(crate) enum ConsentVal {
    /// Yes.
    #[serde(rename = "y")]
    Y,
    /// No.
    #[serde(rename = "n")]
    N,
    /// Pending.
    #[serde(rename = "p")]
    P,
    /// Vital interest.
    VI,
    /// Legitimate interest.
    LI,
    /// Public interest.
    PI,
    /// Contract.
    CT,
    /// Compliance with a legal obligation.
    CP,
    /// Default yes.
    #[serde(rename = "dy")]
    Dy,
    /// Default no.
    #[serde(rename = "dn")]
    Dn,
    /// Unknown.
    #[serde(rename = "u")]
    U,
}

/// `{"standard":"IAB TCF","version":"2.0","value":"<TC string>"}`.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a schema of what consent-core reads")]
pub(crate) struct IabTcfConsent {
    #[schema(schema_with = iab_tcf)]
    standard: String,
    #[schema(schema_with = version_2)]
    version: String,
    /// A TC string.
    #[schema(min_length = 1)]
    value: String,
    /// Whether GDPR applies (without it, it does).
    #[serde(rename = "gdprApplies", default)]
    gdpr_applies: bool,
    /// Whether the request carries personal data.
    #[serde(rename = "gdprContainsPersonalData", default)]
    gdpr_contains_personal_data: bool,
}

/// The body of `interact` and `collect`.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema of what the Edge handler reads")]
pub(crate) struct EventsRequest {
    /// The events.
    #[schema(min_items = 1)]
    events: Vec<Event>,
    /// The identities the events are about.
    #[serde(rename = "identityMap")]
    identity_map: Option<IdentityMap>,
    /// `meta.state.entries` may carry the identity cookie.
    #[schema(value_type = Option<Object>)]
    meta: Option<Value>,
    /// Ignored.
    #[schema(value_type = Option<Object>)]
    query: Option<Value>,
}

/// One event.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema of what the Edge handler reads")]
pub(crate) struct Event {
    /// The XDM event.
    #[serde(default)]
    xdm: EventXdm,
    /// Free-form data.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// The fields of an event's XDM the server reads; any other field is kept as it is.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema of what the Edge handler reads")]
pub(crate) struct EventXdm {
    /// Deduplicates the event (per profile).
    #[serde(rename = "_id", default)]
    id: String,
    /// Deduplicates the event when `_id` is missing.
    #[serde(rename = "eventId", default)]
    event_id: String,
    /// Identities the event is about: each must allow collection for it to be stored.
    #[serde(rename = "identityMap", default)]
    identity_map: IdentityMap,
    /// TC strings, decided and recorded as a `set-consent` with them would be.
    #[serde(rename = "consentStrings", default)]
    consent_strings: Vec<ConsentString>,
}

/// A TC string sent with an event.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema of what the Edge handler reads")]
pub(crate) struct ConsentString {
    /// `IAB TCF`.
    #[serde(rename = "consentStandard")]
    #[schema(schema_with = iab_tcf)]
    standard: String,
    /// `2.0`.
    #[serde(rename = "consentStandardVersion")]
    #[schema(schema_with = version_2)]
    version: String,
    /// The TC string.
    #[serde(rename = "consentStringValue")]
    #[schema(min_length = 1)]
    value: String,
    /// Whether GDPR applies (without it, it does).
    #[serde(rename = "gdprApplies", default)]
    gdpr_applies: bool,
    /// Whether the event carries personal data.
    #[serde(rename = "containsPersonalData", default)]
    contains_personal_data: bool,
}

// ---------------------------------------------------------------------------------------------
// The preference service and the admin API

/// An error of the preference or admin API.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiError {
    /// What kind of error.
    pub(crate) error: ErrorCode,
    /// What was wrong, naming the field.
    pub(crate) message: String,
}

/// The kinds of [`ApiError`].
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// Missing or wrong credentials (401).
    Unauthenticated,
    /// The credentials do not cover the organisation and sandbox asked for (403).
    Forbidden,
    /// The link has expired (403).
    LinkExpired,
    /// The link names a key the server does not have (403).
    LinkUnknownKey,
    /// The link is tampered or malformed (403, 400 when a part is missing).
    LinkInvalid,
    /// The request is malformed (400).
    BadRequest,
    /// Nothing is stored for the profile (404).
    NotFound,
    /// Storage failed (500).
    Internal,
    /// Too many requests for this API key (429, with `Retry-After`).
    RateLimited,
}

/// The query of every link URL.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "parameters read into prefs::LinkQuery")]
pub(crate) struct LinkParamsQuery {
    /// AEAD-encrypted link payload (message, campaign, journey, sandbox, scope).
    params: String,
    /// AEAD-encrypted profile id, bound to `params`.
    pid: String,
    /// HMAC-SHA256 over params and pid, with the signing key's id.
    sig: String,
}

/// The headers every authenticated request carries besides its credentials.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "headers prefs::authenticate reads by name")]
pub(crate) struct OrgHeaders {
    /// Must be the API key's organisation.
    #[param(rename = "x-gw-ims-org-id")]
    org: String,
    /// Must be the API key's sandbox.
    #[param(rename = "x-sandbox-name")]
    sandbox: String,
}

/// The profile a path names.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "parameters the handlers read by position")]
pub(crate) struct ProfilePath {
    /// The identity's namespace (`ECID`, `Email`, …).
    namespace: String,
    /// The identity.
    id: String,
}

/// The body of `POST /unsubscribe`.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "a schema of what prefs::post_kind reads")]
pub(crate) struct UnsubscribeForm {
    /// RFC 8058 one-click.
    #[serde(rename = "List-Unsubscribe", default)]
    #[schema(schema_with = one_click)]
    list_unsubscribe: String,
    /// The landing page's confirm button.
    #[serde(default)]
    #[schema(schema_with = yes)]
    confirm: String,
}

/// The answer of the consent preferences API.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PreferencesResponse {
    /// The link's profile namespace.
    #[serde(rename = "profileNameSpace")]
    pub(crate) profile_namespace: String,
    /// The link's profile id.
    pub(crate) profile_id: String,
    /// How many of the choices changed something.
    pub(crate) changed: u64,
    /// The profile's consents and subscriptions after the change.
    pub(crate) consents: StoredConsents,
    /// The change's signed receipt (compact JWS), when asked for with `consent-receipt: true`
    /// (or on a server run with `--receipts-always`); absent when nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) receipt: Option<String>,
}

/// A profile's consents and subscriptions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredConsents {
    /// The XDM consents.
    #[schema(value_type = Object)]
    pub(crate) consents: Value,
    /// Subscriptions, by channel and list.
    #[schema(value_type = Object)]
    pub(crate) subscriptions: Value,
}

/// What a link says, decrypted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DecryptedLink {
    /// The profile's namespace.
    #[serde(rename = "profileNameSpace")]
    pub(crate) profile_namespace: String,
    /// The profile's id.
    pub(crate) profile_id: String,
    /// The address of the identity scope.
    pub(crate) email_address: Option<String>,
    /// Its namespace.
    #[serde(rename = "emailNameSpace")]
    pub(crate) email_namespace: Option<String>,
    /// The sandbox.
    pub(crate) sandbox_id: String,
    /// `channel`, `identity` or `subscription`.
    #[schema(schema_with = scope_schema)]
    pub(crate) opt_out_level: String,
    /// `email`, `push` or `sms`.
    #[schema(schema_with = channel_schema)]
    pub(crate) channel_type: String,
    /// The list of the subscription scope.
    pub(crate) subscription: Option<String>,
    /// The message the link was sent in.
    pub(crate) message_execution_id: String,
    /// Its campaign.
    pub(crate) campaign_id: String,
    /// Its journey version.
    pub(crate) journey_version_id: String,
    /// Its journey action.
    pub(crate) journey_action_id: String,
    /// Now, ISO 8601.
    #[schema(format = DateTime)]
    pub(crate) timestamp: String,
}

/// A signed unsubscribe link.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Link {
    /// The encrypted payload.
    pub(crate) params: String,
    /// The encrypted profile, bound to `params`.
    pub(crate) pid: String,
    /// The signature.
    pub(crate) sig: String,
    /// The landing page's URL.
    #[schema(format = "uri")]
    pub(crate) url: String,
    /// The `List-Unsubscribe` header value.
    pub(crate) list_unsubscribe: String,
    /// The `List-Unsubscribe-Post` header value ([`ONE_CLICK_POST`]).
    #[schema(schema_with = one_click_post)]
    pub(crate) list_unsubscribe_post: &'static str,
    /// When the link expires, in seconds since the epoch; `null` when never.
    pub(crate) expires_at: Option<i64>,
}

/// A profile and its consent records.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Profile)]
pub(crate) struct ProfileAnswer {
    /// `in`, `out` or `pending`.
    #[schema(schema_with = general_schema)]
    pub(crate) general: String,
    /// The XDM consents.
    #[schema(value_type = Object)]
    pub(crate) consents: Value,
    /// Subscriptions, by channel and list.
    #[schema(value_type = Object)]
    pub(crate) subscriptions: Value,
    /// Milliseconds since the epoch.
    pub(crate) updated_at: i64,
    /// The consent records about the profile, oldest first.
    pub(crate) records: Vec<RecordAnswer>,
}

/// `in`, `out` or `pending`: the texts of consent-core's decisions.
pub(crate) fn general_schema() -> Schema {
    use consent_core::Decision;
    one_of_strings(&[Decision::In, Decision::Out, Decision::Pending].map(Decision::as_str))
}

/// A consent record, as the hash chain holds it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ConsentRecord)]
pub(crate) struct RecordAnswer {
    /// Its position in the organisation's and sandbox's chain.
    #[schema(minimum = 1)]
    pub(crate) seq: i64,
    /// What made the change (`set-consent`, `preferences`, `one-click`, …).
    pub(crate) source: String,
    /// What the hash covers: the change, with personal fields replaced by their digest.
    #[schema(value_type = Object)]
    pub(crate) payload: Value,
    /// Milliseconds since the epoch.
    pub(crate) created_at: i64,
    /// The previous record's hash.
    pub(crate) prev_hash: String,
    /// SHA-256 over the previous hash and every field, hex.
    pub(crate) hash: String,
}

impl From<&crate::ConsentRecord> for RecordAnswer {
    fn from(r: &crate::ConsentRecord) -> Self {
        Self {
            seq: r.seq,
            source: r.source.clone(),
            payload: r.payload.clone(),
            created_at: r.created_at,
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

/// What an erasure removed, and its record: the answer of
/// `DELETE /admin/v1/profiles/{namespace}/{id}` and of `consent-server erase`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Erasure)]
pub(crate) struct ErasureAnswer {
    /// What was removed.
    pub(crate) erased: Erased,
    /// The erasure's own record in the chain.
    pub(crate) record: RecordRef,
}

/// What an erasure removed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Erased {
    /// Whether the profile was stored.
    pub(crate) profile: bool,
    /// Events deleted: the profile's own and those of other profiles naming the identity.
    pub(crate) events: u64,
    /// Records whose personal detail was deleted.
    pub(crate) details: u64,
    /// Profiles whose identity-specific consents named the identity.
    pub(crate) other_profiles: u64,
}

/// A record's place in its chain.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordRef {
    /// Its sequence number.
    #[schema(minimum = 1)]
    pub(crate) seq: i64,
    /// Its hash.
    #[schema(min_length = 64, max_length = 64)]
    pub(crate) hash: String,
}

impl crate::Erasure {
    /// The answer of `DELETE /admin/v1/profiles/{namespace}/{id}` (and of `consent-server
    /// erase`): `{"erased":{"profile":…,"events":…,"details":…,"otherProfiles":…},
    /// "record":{"seq":…,"hash":…}}` (the `Erasure` schema of `GET /openapi.json`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(ErasureAnswer {
            erased: Erased {
                profile: self.profile,
                events: self.events,
                details: self.details,
                other_profiles: self.other_profiles,
            },
            record: RecordRef {
                seq: self.seq,
                hash: self.hash.clone(),
            },
        })
        .unwrap_or(Value::Null)
    }
}

/// Everything stored about an identity (GDPR Art. 15).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Export)]
pub(crate) struct ExportDocument {
    /// Whom the document is about.
    pub(crate) identity: ExportIdentity,
    /// The profile, `null` when none is stored (records or events may still be).
    pub(crate) profile: Option<ExportProfile>,
    /// The consent records about the identity, found by its keyed hash, oldest first.
    pub(crate) records: Vec<ExportRecord>,
    /// The profile's events.
    pub(crate) events: Vec<ExportEvent>,
    /// What other profiles hold that names the identity (what an erasure removes there).
    pub(crate) elsewhere: Elsewhere,
}

/// The identity an export is about.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportIdentity {
    /// The organisation.
    pub(crate) org: String,
    /// The sandbox.
    pub(crate) sandbox: String,
    /// The namespace.
    pub(crate) namespace: String,
    /// The id.
    pub(crate) id: String,
    /// The keyed hash that stands for the identity in the consent records.
    pub(crate) subject: String,
}

/// A profile, in an export.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExportProfile {
    /// `in`, `out` or `pending`.
    #[schema(schema_with = general_schema)]
    pub(crate) general: String,
    /// The XDM consents.
    #[schema(value_type = Object)]
    pub(crate) consents: Value,
    /// Subscriptions, by channel and list.
    #[schema(value_type = Object)]
    pub(crate) subscriptions: Value,
    /// Milliseconds since the epoch.
    pub(crate) updated_at: i64,
}

/// A consent record, in an export.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExportRecord {
    /// Its sequence number.
    #[schema(minimum = 1)]
    pub(crate) seq: i64,
    /// What made the change.
    pub(crate) source: String,
    /// Milliseconds since the epoch.
    pub(crate) created_at: i64,
    /// The change as it was made, personal detail included while it is kept.
    #[schema(value_type = Object)]
    pub(crate) change: Value,
    /// What the record's hash covers.
    #[schema(value_type = Object)]
    pub(crate) payload: Value,
    /// The previous record's hash.
    pub(crate) prev_hash: String,
    /// Its hash.
    pub(crate) hash: String,
}

/// An event, in an export.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExportEvent {
    /// The event's id.
    pub(crate) id: String,
    /// Milliseconds since the epoch.
    pub(crate) received_at: i64,
    /// The event as it was received.
    #[schema(value_type = Object)]
    pub(crate) body: Value,
    /// The other profile the event belongs to (under `elsewhere` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) profile: Option<ProfileId>,
}

/// A profile's namespace and id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileId {
    /// The namespace.
    pub(crate) namespace: String,
    /// The id.
    pub(crate) id: String,
}

/// What other profiles hold that names an identity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Elsewhere {
    /// Events of other profiles whose identity map lists the identity.
    pub(crate) events: Vec<ExportEvent>,
    /// Other profiles' identity-specific consents for the identity.
    pub(crate) consents: Vec<NamingConsents>,
    /// The personal detail of other profiles' records naming the identity.
    pub(crate) record_details: Vec<NamingDetail>,
}

/// Another profile's identity-specific consents for an identity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamingConsents {
    /// The other profile.
    pub(crate) profile: ProfileId,
    /// Its consents for the identity.
    #[schema(value_type = Object)]
    pub(crate) consents: Value,
}

/// The personal detail of another profile's record that names an identity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamingDetail {
    /// The record's sequence number.
    pub(crate) seq: i64,
    /// The detail: the salt and the personal fields by JSON pointer.
    #[schema(value_type = Object)]
    pub(crate) detail: Value,
}

/// The signed head of a consent record chain.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    /// Compact JWS, `typ` `consent-checkpoint+jwt`, of the fields below.
    pub(crate) checkpoint: String,
    /// The organisation.
    pub(crate) org: String,
    /// The sandbox.
    pub(crate) sandbox: String,
    /// The head record's sequence number (0 for an empty chain).
    pub(crate) seq: u64,
    /// The head record's hash.
    #[schema(min_length = 64, max_length = 64)]
    pub(crate) hash: String,
    /// Seconds since the epoch.
    pub(crate) time: u64,
}

/// A JWK set (RFC 7517) of Ed25519 keys (RFC 8037).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Jwks {
    /// The keys, the retired ones too while the keys file keeps them.
    pub(crate) keys: Vec<Jwk>,
}

impl Jwks {
    /// The body of `GET /.well-known/consent-receipt-keys`: the receipt keys' public halves,
    /// as consent-core's `Jwk::ed25519` made them (every member is set there).
    pub(crate) fn of(jwks: &consent_core::receipt::Jwks) -> String {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let keys = jwks
            .keys
            .iter()
            .map(|k| Jwk {
                kty: k.kty.clone(),
                crv: text(&k.crv),
                x: text(&k.x),
                kid: text(&k.kid),
                alg: text(&k.alg),
                use_: text(&k.use_),
            })
            .collect();
        serde_json::to_string(&Jwks { keys }).unwrap_or_default()
    }
}

/// One Ed25519 public key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Jwk {
    /// `OKP`.
    #[schema(schema_with = okp)]
    pub(crate) kty: String,
    /// `Ed25519`.
    #[schema(schema_with = ed25519)]
    pub(crate) crv: String,
    /// The public key, base64url without padding.
    pub(crate) x: String,
    /// The key id tokens name in their `kid`.
    pub(crate) kid: String,
    /// `EdDSA`.
    #[schema(schema_with = eddsa)]
    pub(crate) alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    #[schema(schema_with = sig)]
    pub(crate) use_: String,
}
