//! Operations: Prometheus metrics, the rate limits, the OpenAPI document.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The server's counters and latency histograms, rendered as Prometheus text at `/metrics`.
///
/// The counters are plain atomics that the request path bumps with one relaxed add; the
/// exposition is made by `prometheus-client` from a snapshot at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, by status class.
    pub responses_2xx: AtomicU64,
    /// Client errors.
    pub responses_4xx: AtomicU64,
    /// Server errors.
    pub responses_5xx: AtomicU64,
    /// Sum of request durations, microseconds.
    pub request_micros: AtomicU64,
    /// Consent set to in.
    pub consent_in: AtomicU64,
    /// Consent set to out.
    pub consent_out: AtomicU64,
    /// Consent requests that made no in/out decision.
    pub consent_pending: AtomicU64,
    /// Consent payloads refused as invalid.
    pub consent_invalid: AtomicU64,
    /// Events stored.
    pub events_stored: AtomicU64,
    /// Events dropped as duplicates of a stored event id.
    pub events_duplicate: AtomicU64,
    /// Events refused because the profile's consent is out.
    pub events_refused: AtomicU64,
    /// Events refused because the profile's consent is pending (a set-consent call decided
    /// pending): a compliant client holds them until consent is given.
    pub events_refused_pending: AtomicU64,
    /// Opt-outs recorded through links or the preferences API.
    pub unsubscribes: AtomicU64,
    /// Links refused (tampered, expired, unknown key).
    pub links_refused: AtomicU64,
    /// Link opt-outs that changed nothing: the choice was already in place (a repeated or
    /// replayed link; RFC 8058 wants a retried one-click answered as a success).
    pub link_repeats: AtomicU64,
    /// Requests refused, by [`Refusal`] (indexed by [`Refusal::index`]).
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Requests refused by the rate limit.
    pub rate_limited: AtomicU64,
    /// Requests that timed out.
    pub timeouts: AtomicU64,
    /// Requests to the authenticated endpoints answered 401 (failed authentication).
    pub auth_failures: AtomicU64,
    /// Requests to the authenticated endpoints refused with 429 because their client failed to
    /// authenticate too often.
    pub auth_failures_limited: AtomicU64,
    /// Authenticated requests refused with 429 by their API key's rate limit.
    pub api_key_limited: AtomicU64,
    /// Open HTTP connections (a gauge).
    pub connections_open: AtomicU64,
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Request latency by route, method and status class.
    latency: Latency,
}

/// Why a request was refused, the `reason` of `consent_requests_refused_total`: every 4xx
/// answer but 404 (nothing there) and 408 (counted as a timeout) is one, and so is a request
/// from an origin CORS does not allow (answered before the other layers).
///
/// A handler names the reason by putting it in its answer's extensions ([`Refusal::tag`]);
/// an answer without one (axum's own: a body over the limit, a method the route does not have,
/// a query that does not parse) is classified by its status ([`Refusal::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Missing or wrong credentials (401).
    Credentials,
    /// Credentials that do not cover the organisation or sandbox asked for (403).
    Scope,
    /// A tampered, truncated, forged, expired or unknown-key link.
    Link,
    /// A request from an origin the datastream does not allow (403, `cors.rs`).
    CorsOrigin,
    /// A body over the limit (413).
    BodyTooLarge,
    /// A malformed request: a body that does not parse or nests too deeply, an invalid consent
    /// value, an identity with control characters, a missing part (400, 415, 422, and any other
    /// 4xx not named here).
    Malformed,
    /// A method the route does not have (405).
    Method,
    /// A rate limit: per client, per API key, or failed authentications (429; each also has its
    /// own counter).
    RateLimit,
}

impl Refusal {
    /// Every reason, in the order they are exported.
    pub(crate) const ALL: [Refusal; 8] = [
        Refusal::Credentials,
        Refusal::Scope,
        Refusal::Link,
        Refusal::CorsOrigin,
        Refusal::BodyTooLarge,
        Refusal::Malformed,
        Refusal::Method,
        Refusal::RateLimit,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Credentials => "credentials",
            Refusal::Scope => "scope",
            Refusal::Link => "link",
            Refusal::CorsOrigin => "cors_origin",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::Malformed => "malformed",
            Refusal::Method => "method",
            Refusal::RateLimit => "rate_limit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// `response`, marked as refused for this reason.
    pub(crate) fn tag(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }

    /// The refusal an answer stands for: the reason its handler named, else one read from its
    /// status; `None` for an answer that is not a refusal.
    pub(crate) fn of(response: &Response) -> Option<Refusal> {
        if let Some(named) = response.extensions().get::<Refusal>() {
            return Some(*named);
        }
        Some(match response.status().as_u16() {
            401 => Refusal::Credentials,
            403 => Refusal::Scope,
            405 => Refusal::Method,
            413 => Refusal::BodyTooLarge,
            429 => Refusal::RateLimit,
            404 | 408 => return None,
            400..=499 => Refusal::Malformed,
            _ => return None,
        })
    }
}

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The label of requests that matched no route.
pub(crate) const UNMATCHED: &str = "unmatched";

/// Upper bounds of the latency buckets, microseconds (Prometheus `le`, in seconds, on export).
const BOUNDS_MICROS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
const METHODS: [&str; 4] = ["GET", "POST", "HEAD", "other"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A histogram of request durations without locks: one atomic per bucket and one for the sum.
#[derive(Debug, Default)]
struct AtomicHistogram {
    /// Non-cumulative counts; the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    fn observe(&self, micros: u64) {
        let bucket = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        if let Some(counter) = self.buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// One histogram per route × method × status class, all made when the server starts, so the
/// request path looks one up by index and never allocates a label.
#[derive(Debug)]
struct Latency {
    /// The route templates (`MatchedPath`), [`UNMATCHED`] first.
    routes: Vec<&'static str>,
    index: HashMap<&'static str, usize>,
    histograms: Vec<AtomicHistogram>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Latency {
    fn new(routes: &[&'static str]) -> Self {
        let mut all = vec![UNMATCHED];
        all.extend(routes.iter().copied().filter(|r| *r != UNMATCHED));
        let index = all.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        let histograms = std::iter::repeat_with(AtomicHistogram::default)
            .take(all.len() * METHODS.len() * CLASSES.len())
            .collect();
        Self {
            routes: all,
            index,
            histograms,
        }
    }
}

/// A route's place in the latency table, found once per request by [`Metrics::route`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteId(usize);

impl Metrics {
    /// Metrics with a latency histogram for each of `routes` (axum route templates such as
    /// `/ee/v1/interact`) and one for requests that matched no route.
    pub fn with_routes(routes: &[&'static str]) -> Self {
        Self {
            latency: Latency::new(routes),
            ..Self::default()
        }
    }

    /// Counts one refused request.
    pub(crate) fn refuse(&self, reason: Refusal) {
        if let Some(counter) = self.refused.get(reason.index()) {
            inc(counter);
        }
    }

    /// How many requests were refused for `reason`.
    pub(crate) fn refused(&self, reason: Refusal) -> u64 {
        self.refused
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The latency slot of a route template; `None` (no route matched) and templates not given
    /// to [`Metrics::with_routes`] count as `unmatched`.
    pub(crate) fn route(&self, template: Option<&str>) -> RouteId {
        RouteId(
            template
                .and_then(|t| self.latency.index.get(t).copied())
                .unwrap_or(0),
        )
    }

    /// Records one answered request: its status class counter, the duration sum and the
    /// route's latency histogram.
    pub(crate) fn observe(
        &self,
        route: RouteId,
        method: &axum::http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        let class = match status {
            200..=399 => &self.responses_2xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        inc(class);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.request_micros.fetch_add(micros, Ordering::Relaxed);
        let method = match *method {
            axum::http::Method::GET => 0,
            axum::http::Method::POST => 1,
            axum::http::Method::HEAD => 2,
            _ => 3,
        };
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        let slot = (route.0 * METHODS.len() + method) * CLASSES.len() + class;
        if let Some(histogram) = self.latency.histograms.get(slot) {
            histogram.observe(micros);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot::of(self)));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// A counter family: name (without `_total`), help, and its samples' labels and values.
type Family = (
    &'static str,
    &'static str,
    Vec<(Option<(&'static str, &'static str)>, u64)>,
);

/// The values of [`Metrics`] at one scrape, in the form `prometheus-client` encodes.
#[derive(Debug)]
struct Snapshot {
    counters: Vec<Family>,
    duration_micros: u64,
    connections_open: u64,
    latency: Vec<Series>,
}

/// One latency series: route, method and class labels, the sum in seconds, and the
/// non-cumulative count of each bucket by upper bound.
type Series = ([(&'static str, &'static str); 3], f64, Vec<(f64, u64)>);

impl Snapshot {
    fn of(m: &Metrics) -> Self {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let one = |v: &AtomicU64| vec![(None, get(v))];
        let counters = vec![
            (
                "consent_http_responses",
                "HTTP responses by status class.",
                vec![
                    (Some(("class", "2xx")), get(&m.responses_2xx)),
                    (Some(("class", "4xx")), get(&m.responses_4xx)),
                    (Some(("class", "5xx")), get(&m.responses_5xx)),
                ],
            ),
            (
                "consent_decisions",
                "Consent requests by resulting general decision.",
                vec![
                    (Some(("general", "in")), get(&m.consent_in)),
                    (Some(("general", "out")), get(&m.consent_out)),
                    (Some(("general", "pending")), get(&m.consent_pending)),
                ],
            ),
            (
                "consent_invalid_payloads",
                "Consent payloads refused as invalid.",
                one(&m.consent_invalid),
            ),
            (
                "consent_events",
                "Events by outcome.",
                vec![
                    (Some(("outcome", "stored")), get(&m.events_stored)),
                    (Some(("outcome", "duplicate")), get(&m.events_duplicate)),
                    (
                        Some(("outcome", "refused_consent_out")),
                        get(&m.events_refused),
                    ),
                    (
                        Some(("outcome", "refused_consent_pending")),
                        get(&m.events_refused_pending),
                    ),
                ],
            ),
            (
                "consent_unsubscribes",
                "Opt-outs recorded.",
                one(&m.unsubscribes),
            ),
            (
                "consent_links_refused",
                "Unsubscribe links refused as tampered, expired or signed with an unknown key.",
                one(&m.links_refused),
            ),
            (
                "consent_link_repeats",
                "Link opt-outs that changed nothing: the choice was already in place (a \
                 repeated or replayed link).",
                one(&m.link_repeats),
            ),
            (
                "consent_requests_refused",
                "Requests refused, by reason: credentials, scope (credentials of another \
                 organisation or sandbox), link, cors_origin, body_too_large, malformed, method, \
                 rate_limit.",
                Refusal::ALL
                    .iter()
                    .map(|r| (Some(("reason", r.label())), m.refused(*r)))
                    .collect(),
            ),
            (
                "consent_rate_limited",
                "Requests refused by the per-client rate limit.",
                one(&m.rate_limited),
            ),
            (
                "consent_timeouts",
                "Requests that exceeded the request timeout.",
                one(&m.timeouts),
            ),
            (
                "consent_auth_failures",
                "Requests to the authenticated endpoints answered 401.",
                one(&m.auth_failures),
            ),
            (
                "consent_api_rate_limited",
                "Requests to the authenticated endpoints refused with 429, by reason: the API \
                 key's rate limit, or too many failed authentications from the client.",
                vec![
                    (Some(("reason", "api_key")), get(&m.api_key_limited)),
                    (
                        Some(("reason", "auth_failures")),
                        get(&m.auth_failures_limited),
                    ),
                ],
            ),
            (
                "consent_connections_accepted",
                "HTTP connections accepted.",
                one(&m.connections_accepted),
            ),
        ];
        let mut latency = Vec::new();
        let l = &m.latency;
        for (slot, histogram) in l.histograms.iter().enumerate() {
            let counts: Vec<u64> = histogram.buckets.iter().map(get).collect();
            if counts.iter().all(|c| *c == 0) {
                // Series appear once they have a sample: most route/method/class combinations
                // never happen.
                continue;
            }
            let class = slot % CLASSES.len();
            let method = (slot / CLASSES.len()) % METHODS.len();
            let route = slot / (CLASSES.len() * METHODS.len());
            let labels = [
                ("route", l.routes.get(route).copied().unwrap_or(UNMATCHED)),
                ("method", METHODS.get(method).copied().unwrap_or("other")),
                ("class", CLASSES.get(class).copied().unwrap_or("5xx")),
            ];
            let bounds = BOUNDS_MICROS
                .iter()
                .map(|b| micros_to_secs(*b))
                .chain([f64::INFINITY]);
            latency.push((
                labels,
                micros_to_secs(get(&histogram.sum_micros)),
                bounds.zip(counts).collect(),
            ));
        }
        Self {
            counters,
            duration_micros: get(&m.request_micros),
            connections_open: get(&m.connections_open),
            latency,
        }
    }
}

#[allow(clippy::cast_precision_loss, reason = "seconds for display")]
fn micros_to_secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, samples) in &self.counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (label, value) in samples {
                let counter = ConstCounter::new(*value);
                match label {
                    Some(label) => counter.encode(family.encode_family(&[*label])?)?,
                    None => {
                        counter.encode(family)?;
                        break;
                    }
                }
            }
        }
        // Kept under its old name, which ends in `_sum` and so cannot be a counter here (the
        // encoder appends `_total` to counters): an untyped sample. The histogram below has
        // the same total per route as `consent_http_request_duration_seconds_sum`.
        let family = encoder.encode_descriptor(
            "consent_http_request_duration_microseconds_sum",
            "Total time spent answering requests.",
            None,
            MetricType::Unknown,
        )?;
        ConstGauge::new(i64::try_from(self.duration_micros).unwrap_or(i64::MAX)).encode(family)?;
        let family = encoder.encode_descriptor(
            "consent_connections_open",
            "Open HTTP connections.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(self.connections_open).unwrap_or(i64::MAX)).encode(family)?;
        let mut family = encoder.encode_descriptor(
            "consent_http_request_duration_seconds",
            "Time to answer a request, by route template, method and status class.",
            None,
            MetricType::Histogram,
        )?;
        for (labels, sum, buckets) in &self.latency {
            let count = buckets.iter().map(|(_, c)| c).sum();
            family
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(*sum, count, buckets, None)?;
        }
        Ok(())
    }
}

/// A token bucket per key: a client address for the per-client limits, an API key's index for
/// the per-key one.
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Eq + Hash> RateLimiter<K> {
    /// `per_sec` requests per second with a burst of twice that; 0 disables the limit.
    pub fn new(per_sec: u32) -> Self {
        Self::with_burst(f64::from(per_sec), f64::from(per_sec) * 2.0)
    }

    /// `per_sec` tokens per second (fractions allowed), at most `burst` saved up; a rate of 0 (or
    /// less) disables the limit.
    pub fn with_burst(per_sec: f64, burst: f64) -> Self {
        Self {
            per_sec,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `false` means the request must be refused.
    pub fn allow(&self, key: K, now: Instant) -> bool {
        self.take(key, now).is_ok()
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, true)
    }

    /// Whether `key` has a token, without taking it; when not, how long until it has one.
    pub fn check(&self, key: K, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, false)
    }

    fn with_bucket(&self, key: K, now: Instant, take: bool) -> Result<(), Duration> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock only means another request panicked mid-update; fail open
            // rather than refuse everyone.
            return Ok(());
        };
        if !take && !buckets.contains_key(&key) {
            // A full bucket, and no entry made for a look.
            return Ok(());
        }
        if buckets.len() > 100_000 {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            if take {
                *tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_the_reason_its_handler_named_else_read_from_the_status() {
        use axum::http::StatusCode;
        use axum::response::IntoResponse as _;
        let of = |status: u16| Refusal::of(&StatusCode::from_u16(status).unwrap().into_response());
        assert_eq!(of(400), Some(Refusal::Malformed));
        assert_eq!(of(401), Some(Refusal::Credentials));
        assert_eq!(of(403), Some(Refusal::Scope));
        assert_eq!(of(405), Some(Refusal::Method));
        assert_eq!(of(413), Some(Refusal::BodyTooLarge));
        assert_eq!(of(415), Some(Refusal::Malformed));
        assert_eq!(of(409), Some(Refusal::Malformed));
        assert_eq!(of(429), Some(Refusal::RateLimit));
        // Not refusals: nothing there, a timeout (counted apart), success, a server error.
        for status in [200, 204, 404, 408, 500, 503] {
            assert_eq!(of(status), None, "{status}");
        }
        // The handler's word wins over the status (a 403 for a link, a 400 for a link).
        let tagged = Refusal::Link.tag(StatusCode::FORBIDDEN.into_response());
        assert_eq!(Refusal::of(&tagged), Some(Refusal::Link));
        let tagged = Refusal::Link.tag(StatusCode::BAD_REQUEST.into_response());
        assert_eq!(Refusal::of(&tagged), Some(Refusal::Link));
        // Counted under its own label, and exported.
        let metrics = Metrics::default();
        metrics.refuse(Refusal::CorsOrigin);
        metrics.refuse(Refusal::CorsOrigin);
        assert_eq!(metrics.refused(Refusal::CorsOrigin), 2);
        assert_eq!(metrics.refused(Refusal::Link), 0);
        assert!(
            metrics
                .render()
                .contains("consent_requests_refused_total{reason=\"cors_origin\"} 2")
        );
    }

    #[test]
    fn the_bucket_refills() {
        let limiter = RateLimiter::new(1);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let t0 = Instant::now();
        assert!(limiter.allow(ip, t0));
        assert!(limiter.allow(ip, t0));
        assert!(!limiter.allow(ip, t0));
        assert!(limiter.allow(ip, t0 + Duration::from_secs(1)));
        assert!(RateLimiter::new(0).allow(ip, t0));
    }

    #[test]
    fn a_look_takes_nothing_and_says_how_long_to_wait() {
        // 10 per minute, burst 3, keyed by anything hashable.
        let limiter = RateLimiter::with_burst(10.0 / 60.0, 3.0);
        let t0 = Instant::now();
        assert_eq!(limiter.check("a", t0), Ok(()));
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), Ok(()));
            assert_eq!(limiter.take("a", t0), Ok(()));
        }
        let wait = limiter.check("a", t0).unwrap_err();
        assert!((5.9..=6.1).contains(&wait.as_secs_f64()), "{wait:?}");
        assert_eq!(limiter.check("b", t0), Ok(()));
        assert_eq!(limiter.take("a", t0 + Duration::from_secs(6)), Ok(()));
    }

    #[test]
    fn metrics_render_as_prometheus_text() {
        let m = Metrics::with_routes(&["/ee/v1/interact"]);
        inc(&m.events_refused);
        let route = m.route(Some("/ee/v1/interact"));
        m.observe(
            route,
            &axum::http::Method::POST,
            200,
            Duration::from_micros(700),
        );
        m.observe(
            m.route(None),
            &axum::http::Method::GET,
            404,
            Duration::from_micros(10),
        );
        let text = m.render();
        assert!(text.contains("consent_events_total{outcome=\"refused_consent_out\"} 1"));
        assert!(text.contains("# TYPE consent_events_total counter"));
        assert!(
            text.contains("consent_http_responses_total{class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("consent_http_request_duration_microseconds_sum 710\n"),
            "{text}"
        );
        assert!(
            text.contains("consent_invalid_payloads_total 0\n"),
            "{text}"
        );
        let interact = "route=\"/ee/v1/interact\",method=\"POST\",class=\"2xx\"";
        for line in [
            format!("consent_http_request_duration_seconds_bucket{{{interact},le=\"0.0005\"}} 0"),
            format!("consent_http_request_duration_seconds_bucket{{{interact},le=\"0.001\"}} 1"),
            format!("consent_http_request_duration_seconds_bucket{{{interact},le=\"+Inf\"}} 1"),
            format!("consent_http_request_duration_seconds_count{{{interact}}} 1"),
            "consent_http_request_duration_seconds_count{route=\"unmatched\",method=\"GET\",class=\"4xx\"} 1".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        // Only series with samples.
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("consent_http_request_duration_seconds")
                    && l.contains("class=\"5xx\"")),
            "{text}"
        );
    }
}
