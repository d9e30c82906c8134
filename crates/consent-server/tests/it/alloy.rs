//! Adobe's real Web SDK (`@adobe/alloy` from npm, `dist/alloy.js`) in headless Chromium against
//! the server's Edge endpoints over TLS: alloy's own consent scenarios, each asserting what
//! alloy's test asserts (the promise results, the cookies in the browser, the log messages, the
//! requests sent) and what the server stored.
//!
//! The page is served over HTTPS from `https://www.consent.test` by a small server of this test,
//! and alloy is configured with `edgeDomain: "edge.consent.test"`; Chromium maps both names to
//! the two loopback ports (`--host-resolver-rules`) and accepts their self-signed certificate by
//! its public key alone (`--ignore-certificate-errors-spki-list`). Every other host name is "not
//! found".
//!
//! alloy.js is found at `CONSENT_TEST_ALLOY_JS`, or where `.ci/run` unpacks it
//! (`target/alloy-<version>/package/dist/alloy.js`). Without it (or without Chromium) the test
//! is not run, unless `CONSENT_TEST_REQUIRE_CHROMIUM=1`, which makes either missing a failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::harness::{DS_A, Db, Harness, ORG_A};
use crate::webdriver::Browser;

/// The alloy version `.ci/run` installs.
pub(crate) const ALLOY_VERSION: &str = "2.33.1";
const PAGE_HOST: &str = "www.consent.test";
const EDGE_HOST: &str = "edge.consent.test";
const PAGE_ORIGIN: &str = "https://www.consent.test";

/// The cookie names alloy and the server use for organisation A.
fn cookie(kind: &str) -> String {
    format!("kndctr_{}_{kind}", ORG_A.replace('@', "_"))
}

fn alloy_js() -> Option<Vec<u8>> {
    let path = std::env::var_os("CONSENT_TEST_ALLOY_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target")
                .join(format!("alloy-{ALLOY_VERSION}/package/dist/alloy.js"))
        });
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            assert!(
                std::env::var_os("CONSENT_TEST_REQUIRE_CHROMIUM").is_none(),
                "CONSENT_TEST_REQUIRE_CHROMIUM is set but alloy.js is not at {} ({err}): \
                 .ci/run installs it",
                path.display()
            );
            eprintln!("{} not found: alloy test not run", path.display());
            None
        }
    }
}

/// The test page: it records console lines, fetches and beacons before alloy loads, then loads
/// alloy with Adobe's base code.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>consent-server and the Adobe Web SDK</title>
<script>
window.__logs = [];
window.__requests = [];
for (const level of ["log", "info", "warn", "error", "debug"]) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    window.__logs.push(args.map(a => {
      if (typeof a === "string") return a;
      if (a instanceof Error) return a.message;
      try { return JSON.stringify(a); } catch (e) { return String(a); }
    }).join(" "));
    original(...args);
  };
}
const originalFetch = window.fetch.bind(window);
window.fetch = async (url, init) => {
  const entry = { url: String(url), body: init && init.body ? String(init.body) : "",
                  status: 0, start: performance.now(), end: 0, response: "" };
  window.__requests.push(entry);
  try {
    const response = await originalFetch(url, init);
    entry.response = await response.clone().text();
    entry.end = performance.now();
    entry.status = response.status;
    return response;
  } catch (e) {
    entry.end = performance.now();
    entry.status = -2;
    throw e;
  }
};
const originalBeacon = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, data) => {
  window.__requests.push({ url: String(url), body: "", status: -1, start: performance.now(),
                          end: performance.now(), response: "" });
  return originalBeacon(url, data);
};
!function(n,o){o.forEach(function(o){n[o]||((n.__alloyNS=n.__alloyNS||[]).push(o),n[o]=function(){var u=arguments;return new Promise(function(i,l){n.setTimeout(function(){n[o].q.push([i,l,u])})})},n[o].q=[])})}(window,["alloy"]);
</script>
<script src="/alloy.js" async></script>
<style>body{font-family:sans-serif;margin:2em} pre{background:#eee;padding:1em;white-space:pre-wrap}</style>
</head><body>
<h1>consent-server and the Adobe Web SDK</h1>
<p>alloy talks to <code>https://edge.consent.test</code>, which is consent-server.</p>
<pre id="state">not configured</pre>
</body></html>"#;

/// A certificate for both host names, its PEM files' contents and its public key's pin.
struct Cert {
    cert_pem: String,
    key_pem: String,
    spki_pin: String,
}

fn cert() -> Cert {
    let made = rcgen::generate_simple_self_signed(vec![
        PAGE_HOST.to_owned(),
        EDGE_HOST.to_owned(),
        "localhost".to_owned(),
    ])
    .unwrap();
    // The SubjectPublicKeyInfo, DER, from its PEM.
    let pem = made.signing_key.public_key_pem();
    let spki = base64::engine::general_purpose::STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    Cert {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        spki_pin: base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki)),
    }
}

/// Serves the page and alloy.js over TLS on a loopback port; stops when dropped.
struct PageServer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PageServer {
    async fn start(cert: &Cert, alloy: Vec<u8>) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let alloy = axum::body::Bytes::from(alloy);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let alloy = alloy.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let alloy = alloy.clone();
                        async move { Ok::<_, std::convert::Infallible>(page_response(&request, alloy)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, task }
    }
}

fn page_response(
    request: &hyper::Request<hyper::body::Incoming>,
    alloy: axum::body::Bytes,
) -> hyper::Response<axum::body::Body> {
    let (status, kind, body) = match request.uri().path() {
        "/" => (
            200,
            "text/html; charset=utf-8",
            axum::body::Body::from(PAGE),
        ),
        "/alloy.js" => (200, "text/javascript", axum::body::Body::from(alloy)),
        _ => (404, "text/plain", axum::body::Body::from("not found")),
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", kind)
        .header("cache-control", "no-store")
        .body(body)
        .unwrap()
}

/// A request the page sent to the Edge endpoints.
#[derive(Debug, Clone)]
struct Request {
    /// What follows `/v1/`: `interact`, `collect`, `privacy/set-consent`, `identity/acquire`.
    action: String,
    body: Value,
    /// The answer's status (-1 for a beacon, whose answer is never seen).
    status: i64,
    start: f64,
    end: f64,
    /// The answer's body, as JSON (`Null` when empty).
    response: Value,
}

impl Request {
    fn from_log(entry: &Value) -> Option<Self> {
        let url = entry["url"].as_str()?;
        let path = url.split('?').next()?;
        Some(Self {
            action: path.split("/v1/").nth(1)?.to_owned(),
            body: serde_json::from_str(entry["body"].as_str()?).unwrap_or(Value::Null),
            status: entry["status"].as_i64()?,
            start: entry["start"].as_f64()?,
            end: entry["end"].as_f64()?,
            response: serde_json::from_str(entry["response"].as_str()?).unwrap_or(Value::Null),
        })
    }

    /// The types of the answer's handles.
    fn handle_types(&self) -> Vec<String> {
        self.response["handle"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["type"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether the answer carries a warning with `code`.
    fn has_warning(&self, code: &str) -> bool {
        self.response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w["type"].as_str().is_some_and(|t| t.ends_with(code)))
    }
}

/// The server, the page and the browser of one alloy test.
struct Env {
    h: Harness,
    browser: Browser,
    origin: String,
    _page: PageServer,
}

/// What an alloy command settled with.
#[derive(Debug, Clone, PartialEq)]
enum Settled {
    Resolved(Value),
    Rejected(String),
}

impl Settled {
    #[track_caller]
    fn value(&self) -> &Value {
        match self {
            Settled::Resolved(v) => v,
            Settled::Rejected(e) => panic!("rejected: {e}"),
        }
    }

    #[track_caller]
    fn error(&self) -> &str {
        match self {
            Settled::Resolved(v) => panic!("resolved with {v}"),
            Settled::Rejected(e) => e,
        }
    }
}

/// Where the test page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// `https://www.consent.test`: alloy writes its cookies on the domain `consent.test`, and
    /// they reach `edge.consent.test` as the `Cookie` header.
    Site,
    /// `https://localhost:<port>`, as alloy's own tests run: host-only cookies, sent to the edge
    /// host in `meta.state.entries`.
    Localhost,
}

impl Env {
    async fn start(page_at: Page) -> Option<Self> {
        Self::start_with(page_at, |_| {}).await
    }

    async fn start_with(
        page_at: Page,
        tweak: impl FnOnce(&mut consent_server::Config),
    ) -> Option<Self> {
        let alloy = alloy_js()?;
        let cert = cert();
        let tls =
            consent_server::TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
                .unwrap();
        let page = PageServer::start(&cert, alloy).await;
        let origin = match page_at {
            Page::Site => PAGE_ORIGIN.to_owned(),
            Page::Localhost => format!("https://localhost:{}", page.port),
        };
        let allowed = origin.clone();
        let h = Harness::start_with(Db::Sqlite, |config| {
            config.tls = Some(tls);
            config.allow_unknown_datastreams = false;
            let datastream = config.keys.datastreams.first_mut().unwrap();
            assert_eq!(datastream.id, DS_A);
            datastream.origins = vec![allowed];
            tweak(config);
        })
        .await?;
        let edge_port = h.server().local_addr().port();
        let browser = Browser::start(
            &[(PAGE_HOST, page.port), (EDGE_HOST, edge_port)],
            &[format!(
                "--ignore-certificate-errors-spki-list={}",
                cert.spki_pin
            )],
        )
        .await?;
        let env = Self {
            h,
            browser,
            origin,
            _page: page,
        };
        env.load().await;
        Some(env)
    }

    /// Opens (or reloads) the page; alloy is not configured yet. Cookies and local storage stay.
    async fn load(&self) {
        self.browser.goto(&format!("{}/", self.origin)).await;
    }

    /// Runs an alloy command and waits for it to settle.
    async fn alloy(&self, command: &str, options: Value) -> Settled {
        let settled = self
            .browser
            .execute_async(
                r#"const [command, options, done] = arguments;
                   const args = options === null ? [command] : [command, options];
                   window.alloy(...args).then(
                     (r) => done({ resolved: r === undefined ? null : r }),
                     (e) => done({ rejected: String(e && e.message ? e.message : e) }));"#,
                json!([command, options]),
            )
            .await;
        match settled.get("rejected") {
            Some(e) => Settled::Rejected(e.as_str().unwrap_or_default().to_owned()),
            None => Settled::Resolved(settled["resolved"].clone()),
        }
    }

    /// `configure` with the test's organisation, datastream and edge domain, alloy's logging on
    /// (the scenarios read its messages), and `extra`.
    async fn configure(&self, mut extra: Value) {
        extra["debugEnabled"] = json!(true);
        self.configure_as_given(extra).await;
    }

    /// `configure` with the test's organisation, datastream and edge domain and `extra` alone,
    /// as alloy's identity tests configure it.
    async fn configure_as_given(&self, extra: Value) {
        let mut options = json!({
            "orgId": ORG_A,
            "datastreamId": DS_A,
            "edgeDomain": EDGE_HOST,
            "thirdPartyCookiesEnabled": false,
        });
        for (k, v) in extra.as_object().unwrap() {
            options[k] = v.clone();
        }
        self.alloy("configure", options).await.value();
    }

    async fn set_consent(&self, consent: Value) -> Settled {
        self.alloy("setConsent", json!({ "consent": consent }))
            .await
    }

    async fn send_event(&self) -> Settled {
        self.alloy("sendEvent", json!({})).await
    }

    /// The value of cookie `kndctr_<org>_<kind>`, if the page has it.
    async fn cookie(&self, kind: &str) -> Option<String> {
        let name = cookie(kind);
        self.browser
            .cookies()
            .await
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The console lines so far on this page.
    async fn logs(&self) -> Vec<String> {
        let logs = self
            .browser
            .execute("return window.__logs;", json!([]))
            .await;
        logs.as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The requests to the Edge endpoints so far on this page, oldest first, once every one
    /// of them was answered.
    async fn requests(&self) -> Vec<Request> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let requests = self
                .browser
                .execute("return window.__requests;", json!([]))
                .await;
            let requests = requests.as_array().unwrap().clone();
            if requests.iter().all(|r| r["status"] != 0) || Instant::now() > deadline {
                return requests.iter().filter_map(Request::from_log).collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The requests of `action` (`interact`, `privacy/set-consent`, …).
    async fn requests_of(&self, action: &str) -> Vec<Request> {
        let mut requests = self.requests().await;
        requests.retain(|r| r.action == action);
        requests
    }

    /// How many requests of `action` were sent.
    async fn count(&self, action: &str) -> usize {
        self.requests_of(action).await.len()
    }

    /// The ECID alloy has, from `getIdentity`.
    async fn ecid(&self) -> String {
        let identity = self
            .alloy("getIdentity", json!({"namespaces": ["ECID"]}))
            .await;
        identity.value()["identity"]["ECID"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The server's profile of `ecid`.
    async fn profile(&self, ecid: &str) -> Option<consent_server::Profile> {
        self.h
            .server()
            .db()
            .profile(&profile_key(ecid))
            .await
            .unwrap()
    }

    async fn events(&self, ecid: &str) -> i64 {
        self.h
            .server()
            .db()
            .count_events(&profile_key(ecid))
            .await
            .unwrap()
    }

    /// Starts an alloy command without waiting for it; [`Env::settle`] waits.
    async fn start_command(&self, name: &str, command: &str, options: Value) {
        self.browser
            .execute(
                r#"const [name, command, options] = arguments;
                   window.__pending = window.__pending || {};
                   window.__pending[name] = window.alloy(command, options).then(
                     (r) => ({ resolved: r === undefined ? null : r }),
                     (e) => ({ rejected: String(e && e.message ? e.message : e) }));"#,
                json!([name, command, options]),
            )
            .await;
    }

    /// What the command started as `name` settled with.
    async fn settle(&self, name: &str) -> Settled {
        let settled = self
            .browser
            .execute_async(
                "const [name, done] = arguments; window.__pending[name].then(done);",
                json!([name]),
            )
            .await;
        match settled.get("rejected") {
            Some(e) => Settled::Rejected(e.as_str().unwrap_or_default().to_owned()),
            None => Settled::Resolved(settled["resolved"].clone()),
        }
    }

    /// Lets alloy run what it has queued (a command's promise chain starts on a timer).
    async fn flush(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Deletes cookie `kndctr_<org>_<kind>` (on whatever domain it was written); with the
    /// identity cookie, also the legacy `AMCV_<org>` cookie alloy keeps the ECID in for
    /// migration, as alloy's tests do.
    async fn delete_cookie(&self, kind: &str) {
        let mut names = vec![cookie(kind)];
        if kind == "identity" {
            names.push(format!("AMCV_{}", ORG_A.replace('@', "%40")));
        }
        for name in &names {
            // The name goes in the URL's path: its `%` is escaped.
            let path = format!("/cookie/{}", name.replace('%', "%25"));
            self.browser
                .command(reqwest::Method::DELETE, &path, None)
                .await;
        }
        let left = self.browser.cookies().await;
        assert!(
            left.iter().all(|(n, _)| !names.contains(n)),
            "{names:?} deleted: {left:?}"
        );
    }

    /// The ECID in the identity cookie the page has (a protobuf whose field 1 is the ECID,
    /// base64).
    async fn cookie_ecid(&self) -> String {
        let value = self.cookie("identity").await.expect("an identity cookie");
        let value = value.replace("%3D", "=");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap();
        assert_eq!(bytes[0], 0x0a, "field 1, length-delimited");
        let len = usize::from(bytes[1]);
        String::from_utf8(bytes[2..2 + len].to_vec()).unwrap()
    }

    async fn records(&self, ecid: &str) -> Vec<consent_server::ConsentRecord> {
        self.h
            .server()
            .db()
            .records(&profile_key(ecid))
            .await
            .unwrap()
    }

    /// Shows `text` on the page (for its screenshot).
    async fn show(&self, text: &str) {
        self.browser
            .execute(
                "document.getElementById('state').textContent = arguments[0];",
                json!([text]),
            )
            .await;
    }

    async fn finish(self) {
        self.browser.close().await;
        self.h.shutdown().await;
    }
}

fn profile_key(ecid: &str) -> consent_server::ProfileKey {
    consent_server::ProfileKey {
        org: ORG_A.into(),
        sandbox: "prod".into(),
        namespace: "ECID".into(),
        id: ecid.into(),
    }
}

// alloy's consent payloads (its tests' `helpers/constants/consent.js`).
fn consent_in() -> Value {
    json!([{"standard": "Adobe", "version": "1.0", "value": {"general": "in"}}])
}

fn consent_out() -> Value {
    json!([{"standard": "Adobe", "version": "1.0", "value": {"general": "out"}}])
}

fn adobe2(val: &str) -> Value {
    json!([{"standard": "Adobe", "version": "2.0", "value": {
        "collect": {"val": val}, "metadata": {"time": "2019-01-01T15:52:25+00:00"}}}])
}

/// Purposes 1 and 10, vendor 565.
const TC_IN: &str = "CO052l-O052l-DGAMBFRACBgAIBAAAAAAIYgEawAQEagAAAA";
/// Purpose 10 only, vendor 565.
const TC_NO_PURPOSE_ONE: &str = "CO052oTO052oTDGAMBFRACBgAABAAAAAAIYgEawAQEagAAAA";
/// Purpose 1 only, vendor 565.
const TC_NO_PURPOSE_TEN: &str = "CO052kIO052kIDGAMBFRACBgAIAAAAAAAIYgEawAQEagAAAA";
/// Purposes 1 and 10, vendor 1 only.
const TC_NO_ADOBE_VENDOR: &str = "CO052qdO052qdDGAMBFRACBgAIBAAAAAAIYgAAoAAAAA";

fn iab(tc: &str, gdpr_applies: bool) -> Value {
    json!([{"standard": "IAB TCF", "version": "2.0", "value": tc, "gdprApplies": gdpr_applies}])
}

fn has_log(logs: &[String], needle: &str) -> bool {
    logs.iter().any(|l| l.contains(needle))
}

/// An alloy scenario: a test with its own server, page and browser (`$page`: [`Page`]).
macro_rules! scenario {
    ($(#[$meta:meta])* $name:ident, $page:expr, |$env:ident| $body:block) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some($env) = Env::start($page).await else {
                return;
            };
            $body
            $env.finish().await;
        }
    };
}

scenario!(
    /// C2593: pending, a `sendEvent` queued, then Adobe 1.0 "in" releases it; the consent and
    /// identity cookies are written and the server stores the consent, its record and the event.
    c2593_an_event_queued_while_pending_is_sent_after_in, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.start_command("event", "sendEvent", json!({})).await;
    env.flush().await;
    assert_eq!(env.count("interact").await, 0, "nothing is sent while pending");
    env.set_consent(consent_in()).await.value();
    env.settle("event").await.value();
    let actions: Vec<String> = env.requests().await.into_iter().map(|r| r.action).collect();
    assert_eq!(actions, ["privacy/set-consent", "interact"]);
    assert!(env.requests().await.iter().all(|r| r.status == 200));
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=in"));
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.ecid().await, ecid, "getIdentity gives the cookie's ECID");
    assert_eq!(env.profile(&ecid).await.expect("a profile").general, "in");
    assert_eq!(env.records(&ecid).await.len(), 1);
    assert_eq!(env.events(&ecid).await, 1);
    env.show(&format!("C2593\nconsent cookie: general=in\nECID: {ecid}\nevents stored: 1"))
        .await;
    env.browser.screenshot("alloy-c2593.png").await;
});

scenario!(
    /// C2594: a queued `sendEvent` resolves `{}` once consent is out; nothing is sent or stored.
    c2594_a_queued_event_resolves_empty_after_out, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.start_command("event", "sendEvent", json!({})).await;
    env.flush().await;
    env.set_consent(consent_out()).await.value();
    assert_eq!(env.settle("event").await.value(), &json!({}));
    assert!(has_log(&env.logs().await, "The user declined consent."));
    assert_eq!(env.count("interact").await, 0);
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "out");
    assert_eq!(env.events(&ecid).await, 0);
});

scenario!(
    /// C2660: an event queued while pending keeps the page context it was queued with.
    c2660_a_queued_event_keeps_its_context, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    let href = env.browser.execute("return location.href;", json!([])).await;
    env.start_command("event", "sendEvent", json!({})).await;
    env.flush().await;
    env.browser
        .execute("history.replaceState({}, '', '#foo');", json!([]))
        .await;
    env.set_consent(consent_in()).await.value();
    env.settle("event").await.value();
    env.send_event().await.value();
    let interacts = env.requests_of("interact").await;
    assert_eq!(interacts.len(), 2);
    let url = |r: &Request| r.body["events"][0]["xdm"]["web"]["webPageDetails"]["URL"].clone();
    assert_eq!(url(&interacts[0]), href);
    assert_eq!(url(&interacts[1]), format!("{}#foo", href.as_str().unwrap()));
    assert_eq!(env.events(&env.cookie_ecid().await).await, 2);
});

scenario!(
    /// C14404: out, then in: the cookie ends "in", two consent calls, then the event is sent.
    c14404_out_then_in, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_out()).await.value();
    env.set_consent(consent_in()).await.value();
    env.send_event().await.value();
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=in"));
    assert_eq!(env.count("privacy/set-consent").await, 2);
    assert_eq!(env.count("interact").await, 1);
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "in");
    let records = env.records(&ecid).await;
    let generals: Vec<&Value> = records.iter().map(|r| &r.payload["general"]).collect();
    assert_eq!(generals, [&json!("out"), &json!("in")]);
    assert_eq!(env.events(&ecid).await, 1);
});

scenario!(
    /// C14405: an unidentified visitor opts in; the event (with alloy's implementation
    /// details) is sent.
    c14405_an_unidentified_visitor_opts_in, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_in()).await.value();
    env.send_event().await.value();
    let interacts = env.requests_of("interact").await;
    assert_eq!(interacts.len(), 1);
    assert!(
        interacts[0]
            .body
            .to_string()
            .contains(r#""name":"https://ns.adobe.com/experience/alloy""#)
    );
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "in");
    assert_eq!(env.events(&ecid).await, 1);
});

scenario!(
    /// C14406: an unidentified visitor opts out; the event is declined and never sent.
    c14406_an_unidentified_visitor_opts_out, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_out()).await.value();
    assert_eq!(env.send_event().await.value(), &json!({}));
    assert!(has_log(&env.logs().await, "declined consent"));
    assert_eq!(env.count("interact").await, 0);
    assert_eq!(env.events(&env.cookie_ecid().await).await, 0);
});

scenario!(
    /// C14407: an opt-in survives a reload: the next event goes out at once.
    c14407_an_opt_in_survives_a_reload, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_in()).await.value();
    env.load().await;
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.send_event().await.value();
    let requests = env.requests().await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].action, "interact");
    assert_eq!(requests[0].status, 200);
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "in");
    assert_eq!(env.records(&ecid).await.len(), 1);
    assert_eq!(env.events(&ecid).await, 1);
});

scenario!(
    /// C14409: an opt-out survives a reload: the event is declined, nothing is sent.
    c14409_an_opt_out_survives_a_reload, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_out()).await.value();
    env.load().await;
    env.configure(json!({"defaultConsent": "pending"})).await;
    assert_eq!(env.send_event().await.value(), &json!({}));
    let logs = env.logs().await;
    assert!(has_log(&logs, "declined consent"), "{logs:?}");
    assert!(has_log(&logs, "The user previously declined consent."), "{logs:?}");
    assert_eq!(env.count("interact").await, 0);
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "out");
    assert_eq!(env.events(&ecid).await, 0);
});

scenario!(
    /// C14410: an invalid default is refused by alloy; an invalid purpose by the server, with
    /// Edge's 400 `EXEG-0102-400`, which changes nothing; a valid call then succeeds.
    c14410_invalid_values_are_refused, Page::Site, |env| {
    let refused = env
        .alloy(
            "configure",
            json!({"orgId": ORG_A, "datastreamId": DS_A, "edgeDomain": EDGE_HOST,
                   "thirdPartyCookiesEnabled": false, "defaultConsent": "unknown"}),
        )
        .await;
    let message = refused.error();
    assert!(message.contains("'defaultConsent':"), "{message}");
    assert!(
        message.contains(r#"Expected one of these values: ["in","out","pending"], but got "unknown""#),
        "{message}"
    );
    env.load().await;
    env.configure(json!({"defaultConsent": "pending"})).await;
    let refused = env
        .set_consent(json!([{"standard": "Adobe", "version": "1.0", "value": {"analytics": "in"}}]))
        .await;
    let message = refused.error();
    assert!(message.contains("The server responded with a status code 400"), "{message}");
    assert!(message.contains("EXEG-0102-400"), "{message}");
    env.set_consent(consent_in()).await.value();
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.records(&ecid).await.len(), 1, "only the valid call is recorded");
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=in"));
});

scenario!(
    /// C14411: out twice: the second call resolves without a request; with the consent cookie
    /// gone after a reload, out is sent again and answered.
    c14411_out_twice, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_out()).await.value();
    assert_eq!(env.set_consent(consent_out()).await.value(), &json!({}));
    assert_eq!(env.count("privacy/set-consent").await, 1);
    env.delete_cookie("consent").await;
    env.load().await;
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_out()).await.value();
    assert_eq!(env.count("privacy/set-consent").await, 1, "sent again");
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "out");
    // Each set-consent call that reaches the server is recorded, a restated choice too: the
    // record says when the person said it again.
    let records = env.records(&ecid).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.payload["general"] == "out"));
});

scenario!(
    /// C14414: two consent calls and an event at once: the calls go one after the other, and
    /// the final "out" declines the event.
    c14414_consent_calls_are_sequential_and_the_last_decides, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.start_command("in", "setConsent", json!({"consent": consent_in()})).await;
    env.start_command("out", "setConsent", json!({"consent": consent_out()})).await;
    env.start_command("event", "sendEvent", json!({})).await;
    env.settle("in").await.value();
    env.settle("out").await.value();
    env.settle("event").await.value();
    let consents = env.requests_of("privacy/set-consent").await;
    assert_eq!(consents.len(), 2);
    assert!(consents[1].start >= consents[0].end, "{consents:?}");
    assert_eq!(env.count("interact").await, 0);
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "out");
    assert_eq!(env.records(&ecid).await.len(), 2);
});

/// C1472433 and C1472434: Adobe 2.0 "in", a reload, an event, then the same consent (not sent
/// again) or a different one (sent).
async fn adobe2_after_a_reload(env: &Env, then: &str) -> usize {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(adobe2("y")).await.value();
    assert_eq!(env.count("privacy/set-consent").await, 1);
    env.load().await;
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.send_event().await.value();
    assert_eq!(env.count("interact").await, 1);
    env.set_consent(adobe2(then)).await.value();
    env.count("privacy/set-consent").await
}

scenario!(
    /// C1472433: the same Adobe 2.0 consent after a reload is not sent again.
    c1472433_the_same_consent_is_not_sent_again, Page::Site, |env| {
    assert_eq!(adobe2_after_a_reload(&env, "y").await, 0);
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "in");
    assert_eq!(env.profile(&ecid).await.unwrap().consents["collect"]["val"], "y");
});

scenario!(
    /// C1472434: a different Adobe 2.0 consent after a reload is sent.
    c1472434_a_different_consent_is_sent, Page::Site, |env| {
    assert_eq!(adobe2_after_a_reload(&env, "n").await, 1);
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().consents["collect"]["val"], "n");
});

/// C1472435 and C1472436: Adobe 2.0 "in", one cookie deleted, a reload: an event waits, the
/// consent is sent again and releases it.
async fn consent_again_without(env: &Env, kind: &str) -> (String, String) {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(adobe2("y")).await.value();
    let before = env.cookie_ecid().await;
    env.delete_cookie(kind).await;
    env.load().await;
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.start_command("event", "sendEvent", json!({})).await;
    env.flush().await;
    assert_eq!(env.count("interact").await, 0, "the event waits");
    env.set_consent(adobe2("y")).await.value();
    env.settle("event").await.value();
    assert_eq!(env.count("privacy/set-consent").await, 1);
    assert_eq!(env.count("interact").await, 1);
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=in"));
    (before, env.cookie_ecid().await)
}

scenario!(
    /// C1472435: without the identity cookie the consent is sent again; the server gives a new
    /// ECID, which holds the consent and the event.
    c1472435_no_identity_cookie_sends_consent_again, Page::Site, |env| {
    let (before, after) = consent_again_without(&env, "identity").await;
    assert_ne!(before, after, "a new visitor");
    assert_eq!(env.profile(&after).await.unwrap().general, "in");
    assert_eq!(env.events(&after).await, 1);
});

scenario!(
    /// C1472436: without the consent cookie the consent is sent again for the same ECID.
    c1472436_no_consent_cookie_sends_consent_again, Page::Site, |env| {
    let (before, after) = consent_again_without(&env, "consent").await;
    assert_eq!(before, after);
    assert_eq!(env.profile(&after).await.unwrap().general, "in");
    assert_eq!(env.events(&after).await, 1);
});

scenario!(
    /// C1472437: Adobe 2.0 `collect: y` releases the queued event.
    c1472437_adobe2_in_releases_the_queued_event, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.start_command("event", "sendEvent", json!({})).await;
    env.flush().await;
    assert_eq!(env.count("interact").await, 0);
    env.set_consent(adobe2("y")).await.value();
    env.settle("event").await.value();
    assert_eq!(env.count("privacy/set-consent").await, 1);
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=in"));
    assert_eq!(env.count("interact").await, 1);
    let ecid = env.cookie_ecid().await;
    let profile = env.profile(&ecid).await.unwrap();
    assert_eq!(profile.general, "in");
    assert_eq!(profile.consents["collect"]["val"], "y");
    assert_eq!(env.events(&ecid).await, 1);
});

scenario!(
    /// C1472438: Adobe 2.0 `collect: n` declines the queued event.
    c1472438_adobe2_out_declines_the_queued_event, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.start_command("event", "sendEvent", json!({})).await;
    env.flush().await;
    env.set_consent(adobe2("n")).await.value();
    assert_eq!(env.settle("event").await.value(), &json!({}));
    assert_eq!(env.count("privacy/set-consent").await, 1);
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    assert_eq!(env.count("interact").await, 0);
    let ecid = env.cookie_ecid().await;
    let profile = env.profile(&ecid).await.unwrap();
    assert_eq!(profile.general, "out");
    assert_eq!(profile.consents["collect"]["val"], "n");
    assert_eq!(env.events(&ecid).await, 0);
});

scenario!(
    /// C1576777 (on a localhost page, as alloy's own test runs: see the module overview): a
    /// missing identity cookie makes alloy forget the stored consent; the server then sees a
    /// new visitor under the default ("in"), and both later events are sent.
    c1576777_a_lost_identity_cookie_forgets_the_consent, Page::Localhost, |env| {
    let config = json!({"defaultConsent": "in", "idMigrationEnabled": true});
    env.configure(config.clone()).await;
    env.set_consent(adobe2("n")).await.value();
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    let before = env.cookie_ecid().await;
    env.delete_cookie("identity").await;
    env.load().await;
    env.configure(config.clone()).await;
    assert_eq!(env.cookie("consent").await, None, "alloy removed the consent cookie");
    env.send_event().await.value();
    assert_eq!(
        env.count("interact").await,
        1,
        "{:?} {:?}",
        env.requests().await,
        env.logs().await
    );
    env.load().await;
    env.configure(config).await;
    env.send_event().await.value();
    assert_eq!(env.count("interact").await, 1);
    let after = env.cookie_ecid().await;
    assert_ne!(before, after);
    assert_eq!(env.events(&after).await, 2);
    assert_eq!(env.profile(&before).await.unwrap().general, "out", "the old visitor stays out");
    assert_eq!(env.events(&before).await, 0);
});

scenario!(
    /// C1631712: with `defaultConsent: "out"` an event is declined with alloy's message; after
    /// "in" the next one is sent.
    c1631712_default_out_then_in, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "out"})).await;
    assert_eq!(env.send_event().await.value(), &json!({}));
    assert!(has_log(&env.logs().await, "No consent preferences have been set."));
    assert_eq!(env.count("interact").await, 0);
    env.set_consent(consent_in()).await.value();
    assert_eq!(env.count("interact").await, 0);
    env.send_event().await.value();
    assert_eq!(env.count("interact").await, 1);
    assert_eq!(env.events(&env.cookie_ecid().await).await, 1);
});

scenario!(
    /// C225953: an identity map on `setConsent` (a CRM id) is sent and accepted.
    c225953_an_identity_map_on_set_consent, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.alloy(
        "setConsent",
        json!({"identityMap": {"HYP": [{"id": "id123"}]}, "consent": consent_in()}),
    )
    .await
    .value();
    let requests = env.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 200);
    assert!(requests[0].body.to_string().contains("\"id123\""));
    // The CRM id is kept with the change, as personal detail beside the chain.
    let ecid = env.cookie_ecid().await;
    let records = env.records(&ecid).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload["general"], "in");
    assert!(!records[0].payload.to_string().contains("id123"));
    let export = env
        .h
        .server()
        .db()
        .export(&profile_key(&ecid))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        export["records"][0]["change"]["identityMap"]["HYP"][0]["id"], "id123",
        "{export}"
    );
});

scenario!(
    /// C25148: default "in", an event, then "out": the next event is declined; one event, sent
    /// once, is stored.
    c25148_default_in_then_revoked, Page::Site, |env| {
    env.configure(json!({})).await;
    env.send_event().await.value();
    env.set_consent(consent_out()).await.value();
    assert_eq!(env.send_event().await.value(), &json!({}));
    assert!(has_log(&env.logs().await, "declined consent"));
    let interacts = env.requests_of("interact").await;
    assert_eq!(interacts.len(), 1);
    assert_eq!(interacts[0].body["events"].as_array().unwrap().len(), 1);
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.events(&ecid).await, 1);
    assert_eq!(env.profile(&ecid).await.unwrap().general, "out");
});

scenario!(
    /// C28754: an opt-out is answered with no data handles.
    c28754_an_opt_out_has_no_data_handles, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_out()).await.value();
    let requests = env.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 200);
    for kind in ["identity:exchange", "personalization:decisions", "activation:push"] {
        assert!(!requests[0].handle_types().contains(&kind.to_owned()), "{kind}");
    }
    // What the answer does carry: the visitor's ECID and the cookies, the consent one "out".
    assert_eq!(requests[0].handle_types(), ["identity:result", "state:store"]);
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "out");
    assert_eq!(env.records(&ecid).await.len(), 1);
    assert_eq!(env.events(&ecid).await, 0);
});

/// The IAB scenarios' common check: one consent call with the consent sent as given, the
/// consent cookie `general=<general>`, the ECID in the answer; then an event is sent (in) or
/// not (out).
async fn iab_decides(env: &Env, consent: Value, general: &str) {
    env.set_consent(consent.clone()).await.value();
    let requests = env.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].action, "privacy/set-consent");
    assert_eq!(requests[0].status, 200);
    assert_eq!(requests[0].body["consent"], consent);
    assert!(
        requests[0]
            .handle_types()
            .contains(&"identity:result".to_owned())
    );
    assert_eq!(
        requests[0].response["handle"][0]["payload"][0]["namespace"]["code"],
        "ECID"
    );
    assert_eq!(
        env.cookie("consent").await,
        Some(format!("general={general}"))
    );
    env.send_event().await.value();
    let sent = env.count("interact").await;
    assert_eq!(sent, usize::from(general == "in"));
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, general);
    assert_eq!(env.events(&ecid).await, i64::from(general == "in"));
}

scenario!(
    /// C224670: a TC string with purpose 1 and vendor 565 opts in.
    c224670_iab_opt_in, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    iab_decides(&env, iab(TC_IN, true), "in").await;
});

scenario!(
    /// C224671 (1 of 2): a TC string without purpose 1 opts out.
    c224671_iab_without_purpose_one_opts_out, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    iab_decides(&env, iab(TC_NO_PURPOSE_ONE, true), "out").await;
});

scenario!(
    /// C224671 (2 of 2): a TC string without Adobe's vendor opts out.
    c224671_iab_without_the_adobe_vendor_opts_out, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    iab_decides(&env, iab(TC_NO_ADOBE_VENDOR, true), "out").await;
});

scenario!(
    /// C224672: `gdprContainsPersonalData` is accepted and sent as given.
    c224672_iab_with_personal_data, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    let mut consent = iab(TC_IN, true);
    consent[0]["gdprContainsPersonalData"] = json!(true);
    iab_decides(&env, consent, "in").await;
});

scenario!(
    /// C224673: `gdprApplies: false` opts in.
    c224673_iab_without_gdpr_opts_in, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    iab_decides(&env, iab(TC_IN, false), "in").await;
});

scenario!(
    /// C224674: without purpose 1 but with `gdprApplies: false`, in.
    c224674_iab_without_purpose_one_and_gdpr_opts_in, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    iab_decides(&env, iab(TC_NO_PURPOSE_ONE, false), "in").await;
});

scenario!(
    /// C224675: invalid IAB consents are refused by the server with Edge's codes; nothing is
    /// recorded.
    c224675_invalid_iab_consents_are_refused, Page::Site, |env| {
    env.configure(json!({"defaultConsent": "pending"})).await;
    let cases = [
        (json!({"standard": "IAB", "version": "2.0", "value": TC_IN}), 400, "EXEG-0102-400"),
        (json!({"standard": "IAB TCF", "version": "6.9", "value": TC_IN}), 400, "EXEG-0102-400"),
        (json!({"standard": "IAB TCF", "version": "2.0"}), 400, "EXEG-0103-400"),
        (json!({"standard": "IAB TCF", "version": "2.0", "value": ""}), 422, "EXEG-0104-422"),
    ];
    for (consent, status, code) in cases {
        let refused = env.set_consent(json!([consent])).await;
        let message = refused.error();
        assert!(
            message.contains(&format!("The server responded with a status code {status}")),
            "{message}"
        );
        assert!(message.contains(code), "{message}");
    }
    let requests = env.requests().await;
    assert_eq!(requests.len(), 4);
    assert_eq!(env.cookie("consent").await, None);
});

/// An event carrying a TC string in `xdm.consentStrings`.
fn event_with_tc(tc: &str) -> Value {
    json!({"xdm": {"consentStrings": [{
        "consentStandard": "IAB TCF", "consentStandardVersion": "2.0",
        "consentStringValue": tc, "gdprApplies": true, "containsPersonalData": false}]}})
}

scenario!(
    /// C224676: a granting TC string sent with an event: the server decides "in", writes the
    /// consent cookie and keeps the event.
    c224676_a_granting_tc_string_in_an_event, Page::Site, |env| {
    env.configure(json!({})).await;
    env.alloy("sendEvent", event_with_tc(TC_IN)).await.value();
    let requests = env.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 200);
    assert_eq!(
        requests[0].body["events"][0]["xdm"]["consentStrings"],
        event_with_tc(TC_IN)["xdm"]["consentStrings"]
    );
    assert!(!requests[0].has_warning("EXEG-0301-200"));
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=in"));
    assert_eq!(requests[0].response["handle"][0]["payload"][0]["namespace"]["code"], "ECID");
    env.send_event().await.value();
    assert_eq!(env.count("interact").await, 2);
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "in");
    assert_eq!(env.events(&ecid).await, 2);
});

scenario!(
    /// C224677: a TC string without purpose 10 still opts in (only purpose 1 and vendor 565
    /// count), and the event is kept without a warning.
    c224677_iab_without_purpose_ten_opts_in, Page::Site, |env| {
    env.configure(json!({})).await;
    iab_decides(&env, iab(TC_NO_PURPOSE_TEN, true), "in").await;
    let interact = env
        .requests()
        .await
        .into_iter()
        .find(|r| r.action == "interact")
        .unwrap();
    assert_eq!(interact.status, 200);
    assert!(!interact.has_warning("EXEG-0301-200"));
});

scenario!(
    /// C224678: a refusing TC string sent with an event: the server decides "out", writes the
    /// consent cookie, drops the event with Edge's warning, and alloy declines the next one.
    c224678_a_refusing_tc_string_in_an_event, Page::Site, |env| {
    env.configure(json!({})).await;
    env.alloy("sendEvent", event_with_tc(TC_NO_PURPOSE_ONE)).await.value();
    let requests = env.requests().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 200);
    assert!(requests[0].has_warning("EXEG-0301-200"), "{:?}", requests[0].response);
    for kind in ["identity:exchange", "personalization:decisions", "activation:push"] {
        assert!(!requests[0].handle_types().contains(&kind.to_owned()), "{kind}");
    }
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    assert_eq!(env.send_event().await.value(), &json!({}));
    assert_eq!(env.count("interact").await, 1);
    let ecid = env.cookie_ecid().await;
    assert_eq!(env.profile(&ecid).await.unwrap().general, "out");
    assert_eq!(env.events(&ecid).await, 0, "the event of an out decision is dropped");
});

scenario!(
    /// C1703722: `getIdentity` first: one acquire call, a readable identity cookie, and the
    /// region from the `x-adobe-edge` header.
    c1703722_get_identity_first, Page::Site, |env| {
    env.configure_as_given(json!({})).await;
    let identity = env.alloy("getIdentity", json!({})).await;
    let identity = identity.value();
    assert_eq!(env.count("identity/acquire").await, 1);
    let document_cookie = env.browser.execute("return document.cookie;", json!([])).await;
    assert!(document_cookie.as_str().unwrap().contains(&cookie("identity")));
    assert!(identity["identity"]["ECID"].is_string(), "{identity}");
    assert!(identity["edge"]["regionId"].as_i64().unwrap_or(0) > 0, "{identity}");
    // Asking for an identity stores nothing about the visitor.
    let ecid = identity["identity"]["ECID"].as_str().unwrap();
    assert_eq!(env.cookie_ecid().await, ecid);
    assert!(env.profile(ecid).await.is_none());
    assert_eq!(env.events(ecid).await, 0);
});

scenario!(
    /// C1703723: `getIdentity` after an event uses what the event's answer gave: no acquire
    /// call, and the region.
    c1703723_get_identity_after_an_event, Page::Site, |env| {
    env.configure_as_given(json!({})).await;
    env.send_event().await.value();
    let identity = env.alloy("getIdentity", json!({})).await;
    let identity = identity.value();
    assert_eq!(env.count("identity/acquire").await, 0);
    assert!(env.cookie("identity").await.is_some());
    assert!(identity["identity"]["ECID"].is_string(), "{identity}");
    assert!(identity["edge"]["regionId"].as_i64().unwrap_or(0) > 0, "{identity}");
    let ecid = identity["identity"]["ECID"].as_str().unwrap();
    assert_eq!(env.events(ecid).await, 1);
});

scenario!(
    /// C1576777 on a site's own domain, where alloy cannot remove the consent cookie it wrote on
    /// the apex domain (it removes it without a domain): the visitor lost the identity cookie
    /// but still sends `general=out`. The server serves the new ECID under that cookie: no event
    /// is stored, and the answer writes `general=out` again (alloy's test expects two events;
    /// here none reaches storage, which is the decided, privacy-first answer).
    c1576777_on_a_site_domain_a_kept_out_cookie_keeps_the_visitor_out, Page::Site, |env| {
    let config = json!({"defaultConsent": "in", "idMigrationEnabled": true});
    env.configure(config.clone()).await;
    env.set_consent(adobe2("n")).await.value();
    let before = env.cookie_ecid().await;
    env.delete_cookie("identity").await;
    env.load().await;
    env.configure(config.clone()).await;
    assert_eq!(
        env.cookie("consent").await.as_deref(),
        Some("general=out"),
        "alloy could not remove it"
    );
    env.send_event().await;
    env.load().await;
    env.configure(config).await;
    env.send_event().await;
    assert_eq!(env.cookie("consent").await.as_deref(), Some("general=out"));
    let after = env.cookie_ecid().await;
    assert_ne!(before, after);
    assert_eq!(env.events(&after).await, 0, "nothing stored for the new ECID");
    assert_eq!(env.events(&before).await, 0);
    assert!(env.records(&after).await.is_empty(), "the cookie is not a new consent");
});

/// With `--cookie-same-site none`, alloy writes the server's cookies `SameSite=None; Secure`
/// (alloy's C5287654, the `attrs` of `state:store`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_get_the_same_site_attribute_the_server_asks_for() {
    let Some(env) = Env::start_with(Page::Site, |config| {
        config.cookie_same_site = Some(consent_server::SameSite::None);
    })
    .await
    else {
        return;
    };
    env.configure(json!({"defaultConsent": "pending"})).await;
    env.set_consent(consent_in()).await.value();
    let cookies = env
        .browser
        .command(reqwest::Method::GET, "/cookie", None)
        .await;
    let identity = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cookie("identity"))
        .expect("the identity cookie")
        .clone();
    assert_eq!(identity["sameSite"], "None", "{identity}");
    assert_eq!(identity["secure"], true, "{identity}");
    env.finish().await;
}

scenario!(
    /// A `setConsent` that decides nothing about `general` (Adobe 2.0 marketing preferences
    /// alone) on a visitor with no decision: alloy suspends to pending for every `setConsent` and
    /// takes its state back only from a consent cookie, and the server writes none (there is no
    /// decision to write), so alloy stays pending: the next event waits, nothing is collected,
    /// until a call decides. The preference itself is stored and recorded.
    a_set_consent_deciding_nothing_leaves_alloy_pending, Page::Site, |env| {
    env.configure(json!({})).await;
    env.set_consent(json!([{"standard": "Adobe", "version": "2.0", "value": {
        "marketing": {"email": {"val": "n"}}, "metadata": {"time": "2019-01-01T15:52:25+00:00"}}}]))
        .await
        .value();
    assert_eq!(env.cookie("consent").await, None);
    env.start_command("event", "sendEvent", json!({})).await;
    env.flush().await;
    assert_eq!(env.count("interact").await, 0, "the event waits: alloy is pending");
    let ecid = env.cookie_ecid().await;
    let profile = env.profile(&ecid).await.unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "n");
    assert_eq!(env.records(&ecid).await.len(), 1);
    env.set_consent(consent_in()).await.value();
    env.settle("event").await.value();
    assert_eq!(env.count("interact").await, 1);
    assert_eq!(env.events(&ecid).await, 1);
});
