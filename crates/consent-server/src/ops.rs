//! Operations: Prometheus counters, the per-client rate limit, the OpenAPI document.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

/// The server's counters, rendered as Prometheus text at `/metrics`.
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
    /// Requests refused by the rate limit.
    pub rate_limited: AtomicU64,
    /// Requests that timed out.
    pub timeouts: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "consent_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &[
                ("{class=\"2xx\"}", get(&self.responses_2xx)),
                ("{class=\"4xx\"}", get(&self.responses_4xx)),
                ("{class=\"5xx\"}", get(&self.responses_5xx)),
            ],
        );
        family(
            "consent_http_request_duration_microseconds_sum",
            "counter",
            "Total time spent answering requests.",
            &[("", get(&self.request_micros))],
        );
        family(
            "consent_decisions_total",
            "counter",
            "Consent requests by resulting general decision.",
            &[
                ("{general=\"in\"}", get(&self.consent_in)),
                ("{general=\"out\"}", get(&self.consent_out)),
                ("{general=\"pending\"}", get(&self.consent_pending)),
            ],
        );
        family(
            "consent_invalid_payloads_total",
            "counter",
            "Consent payloads refused as invalid.",
            &[("", get(&self.consent_invalid))],
        );
        family(
            "consent_events_total",
            "counter",
            "Events by outcome.",
            &[
                ("{outcome=\"stored\"}", get(&self.events_stored)),
                ("{outcome=\"duplicate\"}", get(&self.events_duplicate)),
                (
                    "{outcome=\"refused_consent_out\"}",
                    get(&self.events_refused),
                ),
                (
                    "{outcome=\"refused_consent_pending\"}",
                    get(&self.events_refused_pending),
                ),
            ],
        );
        family(
            "consent_unsubscribes_total",
            "counter",
            "Opt-outs recorded.",
            &[("", get(&self.unsubscribes))],
        );
        family(
            "consent_links_refused_total",
            "counter",
            "Unsubscribe links refused as tampered, expired or signed with an unknown key.",
            &[("", get(&self.links_refused))],
        );
        family(
            "consent_rate_limited_total",
            "counter",
            "Requests refused by the per-client rate limit.",
            &[("", get(&self.rate_limited))],
        );
        family(
            "consent_timeouts_total",
            "counter",
            "Requests that exceeded the request timeout.",
            &[("", get(&self.timeouts))],
        );
        out
    }
}

/// A token bucket per client address.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_sec` requests per second with a burst of twice that; 0 disables the limit.
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(per_sec) * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`; `false` means the request must be refused.
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock only means another request panicked mid-update; fail open
            // rather than refuse everyone.
            return true;
        };
        if buckets.len() > 100_000 {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The OpenAPI 3.1 document served at `/openapi.json`: `src/openapi.json` with the Edge paths
/// filled in (each Edge operation is served at `/ee/v1/…` and `/ee/{locationHint}/v1/…`) and
/// this build's version; built and serialised once.
pub(crate) fn openapi() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // The file is part of the build and checked by a test: it always parses.
        let mut doc: Value =
            serde_json::from_str(include_str!("openapi.json")).unwrap_or(Value::Null);
        let operations = doc
            .pointer_mut("/components/x-edge-operations")
            .map(Value::take)
            .unwrap_or(Value::Null);
        if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
            components.remove("x-edge-operations");
        }
        for (name, action) in [
            ("interact", "interact"),
            ("collect", "collect"),
            ("setConsent", "privacy/set-consent"),
            ("acquire", "identity/acquire"),
        ] {
            let operation = operations.get(name).cloned().unwrap_or(Value::Null);
            doc["paths"][format!("/ee/v1/{action}")] = json!({ "post": operation });
            doc["paths"][format!("/ee/{{locationHint}}/v1/{action}")] = json!({
                "parameters": [{"$ref": "#/components/parameters/locationHint"}],
                "post": operation,
            });
        }
        doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
        doc.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn metrics_render_as_prometheus_text() {
        let m = Metrics::default();
        inc(&m.events_refused);
        let text = m.render();
        assert!(text.contains("consent_events_total{outcome=\"refused_consent_out\"} 1"));
        assert!(text.contains("# TYPE consent_events_total counter"));
    }
}
