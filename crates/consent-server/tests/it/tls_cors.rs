//! TLS, CORS, datastreams and the `x-adobe-edge` header: what the Web SDK in a browser needs
//! (`src/tls.rs`, `src/cors.rs`), over real sockets with reqwest.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use consent_server::TlsConfig;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use crate::edge::{adobe_v1, ecid_of, key, with_ecid};
use crate::harness::{DS_A, Harness, http_client, install_crypto_provider};

/// The site allowed on [`DS_A`].
const SITE: &str = "https://site.test";
/// A site allowed for datastreams that are not in the keys file (`--cors-origin`).
const DEFAULT_SITE: &str = "http://localhost:5173";
/// A site allowed nowhere.
const EVIL: &str = "https://evil.test";

/// A server whose datastream [`DS_A`] allows [`SITE`] and whose default list is
/// [`DEFAULT_SITE`].
async fn cors_server(tweak: impl FnOnce(&mut consent_server::Config)) -> Harness {
    Harness::start_with(crate::harness::Db::Sqlite, |config| {
        config.keys.datastreams[0].origins = vec![SITE.to_owned()];
        config.cors_origins = vec![DEFAULT_SITE.to_owned()];
        tweak(config);
    })
    .await
    .unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// The CORS headers of an answer to an allowed `origin`.
#[track_caller]
fn assert_cors(headers: &HeaderMap, origin: &str) {
    assert_eq!(
        header(headers, "access-control-allow-origin"),
        Some(origin),
        "{headers:?}"
    );
    assert_eq!(
        header(headers, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(headers, "access-control-expose-headers"),
        Some("x-adobe-edge, retry-after")
    );
    assert!(
        headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin")),
        "{headers:?}"
    );
}

#[track_caller]
fn assert_no_cors(headers: &HeaderMap) {
    for (name, _) in headers {
        assert!(
            !name.as_str().starts_with("access-control-"),
            "{name}: {headers:?}"
        );
    }
}

/// POSTs `body` as alloy does (text/plain) from `origin`; the status, headers and JSON body.
async fn post_from(
    h: &Harness,
    origin: Option<&str>,
    path: &str,
    body: &str,
) -> (u16, HeaderMap, Value) {
    let mut request = h
        .client
        .post(h.url(path))
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body.to_owned());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn consent_path() -> String {
    format!("/ee/v1/privacy/set-consent?configId={DS_A}")
}

#[tokio::test]
async fn allowed_origins_get_cors_on_every_answer() {
    let h = cors_server(|_| {}).await;
    // 200.
    let (status, headers, body) =
        post_from(&h, Some(SITE), &consent_path(), &adobe_v1("in").to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_cors(&headers, SITE);
    let ecid = ecid_of(&body);
    // 400: a body that is not JSON.
    let (status, headers, body) = post_from(&h, Some(SITE), &consent_path(), "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["type"].as_str().unwrap().contains("EXEG-0102-400"));
    assert_cors(&headers, SITE);
    // 204: collect.
    let events = with_ecid(json!({"events": [{"xdm": {"_id": "e1"}}]}), &ecid);
    let (status, headers, _) = post_from(
        &h,
        Some(SITE),
        &format!("/ee/v1/collect?configId={DS_A}"),
        &events.to_string(),
    )
    .await;
    assert_eq!(status, 204);
    assert_cors(&headers, SITE);
    assert_eq!(h.server().db().count_events(&key(&ecid)).await.unwrap(), 1);
    // The default list is for datastreams that are not in the keys file, not for DS_A.
    let (status, headers, _) = post_from(
        &h,
        Some(DEFAULT_SITE),
        "/ee/v1/privacy/set-consent?configId=not-in-the-file",
        &adobe_v1("in").to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_cors(&headers, DEFAULT_SITE);
    let (status, headers, _) = post_from(
        &h,
        Some(DEFAULT_SITE),
        &consent_path(),
        &adobe_v1("in").to_string(),
    )
    .await;
    assert_eq!(status, 403);
    assert_no_cors(&headers);
    // Other paths are left alone.
    let response = h
        .client
        .get(h.url("/healthz"))
        .header("origin", SITE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_no_cors(response.headers());
    h.shutdown().await;
}

#[tokio::test]
async fn rate_limited_answers_carry_cors_and_expose_retry_after() {
    // One request a second, a burst of two.
    let h = cors_server(|config| config.rate_limit_per_sec = 1).await;
    let mut limited = None;
    for _ in 0..6 {
        let (status, headers, _) =
            post_from(&h, Some(SITE), &consent_path(), &adobe_v1("in").to_string()).await;
        if status == 429 {
            limited = Some(headers);
            break;
        }
        assert_eq!(status, 200);
    }
    let headers = limited.expect("no request was rate limited");
    assert_cors(&headers, SITE);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    h.shutdown().await;
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_and_changes_nothing() {
    let h = cors_server(|_| {}).await;
    // The visitor's consent is "in", with one event.
    let (_, _, body) = post_from(&h, None, &consent_path(), &adobe_v1("in").to_string()).await;
    let ecid = ecid_of(&body);
    let interact = format!("/ee/v1/interact?configId={DS_A}");
    let event = |id: &str| with_ecid(json!({"events": [{"xdm": {"_id": id}}]}), &ecid).to_string();
    let (status, _, _) = post_from(&h, None, &interact, &event("e1")).await;
    assert_eq!(status, 200);
    let db = h.server().db();
    assert_eq!(db.records(&key(&ecid)).await.unwrap().len(), 1);

    // Another site tries to change it, and to send an event, with the visitor's cookies.
    for origin in [EVIL, "null", "https://site.test:8443", "http://site.test"] {
        let out = with_ecid(adobe_v1("out"), &ecid).to_string();
        let (status, headers, _) = post_from(&h, Some(origin), &consent_path(), &out).await;
        assert_eq!(status, 403, "{origin}");
        assert_no_cors(&headers);
        let (status, headers, _) = post_from(&h, Some(origin), &interact, &event("e2")).await;
        assert_eq!(status, 403, "{origin}");
        assert_no_cors(&headers);
    }
    assert_eq!(db.records(&key(&ecid)).await.unwrap().len(), 1);
    assert_eq!(db.count_events(&key(&ecid)).await.unwrap(), 1);
    let profile = db.profile(&key(&ecid)).await.unwrap().unwrap();
    assert_eq!(profile.general, "in");

    // The same change from the allowed site goes through.
    let out = with_ecid(adobe_v1("out"), &ecid).to_string();
    let (status, headers, _) = post_from(&h, Some(SITE), &consent_path(), &out).await;
    assert_eq!(status, 200);
    assert_cors(&headers, SITE);
    assert_eq!(db.records(&key(&ecid)).await.unwrap().len(), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn preflights_are_answered_for_allowed_origins_only() {
    let h = cors_server(|_| {}).await;
    let preflight = |origin: &str| {
        h.client
            .request(reqwest::Method::OPTIONS, h.url(&consent_path()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-custom")
            .send()
    };
    let response = preflight(SITE).await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let headers = response.headers();
    assert_cors(headers, SITE);
    assert_eq!(
        header(headers, "access-control-allow-methods"),
        Some("POST, GET, OPTIONS")
    );
    assert_eq!(
        header(headers, "access-control-allow-headers"),
        Some("content-type, x-custom")
    );
    assert_eq!(header(headers, "access-control-max-age"), Some("600"));

    let response = preflight(EVIL).await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_no_cors(response.headers());
    // Nothing was stored by either.
    assert_eq!(
        h.server()
            .db()
            .verify_chain(crate::harness::ORG_A, "prod")
            .await
            .unwrap(),
        Ok(0)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_datastreams_are_refused_unless_a_default_is_configured() {
    let refusing = cors_server(|config| config.allow_unknown_datastreams = false).await;
    let path = "/ee/v1/privacy/set-consent?configId=not-in-the-file";
    let (status, headers, body) = post_from(
        &refusing,
        Some(DEFAULT_SITE),
        path,
        &adobe_v1("in").to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["type"], "https://ns.adobe.com/aep/errors/EXEG-0003-400",
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("not-in-the-file"),
        "{body}"
    );
    // The page can read why.
    assert_cors(&headers, DEFAULT_SITE);
    // A datastream in the file is served.
    let (status, _, _) = post_from(
        &refusing,
        None,
        &consent_path(),
        &adobe_v1("in").to_string(),
    )
    .await;
    assert_eq!(status, 200);
    refusing.shutdown().await;

    let falling_back = cors_server(|config| config.allow_unknown_datastreams = true).await;
    let (status, _, body) = post_from(&falling_back, None, path, &adobe_v1("in").to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().contains("kndctr_consent_AdobeOrg_consent"),
        "{body}"
    );
    falling_back.shutdown().await;
}

#[tokio::test]
async fn edge_answers_name_the_cluster_and_region() {
    let h = cors_server(|config| config.edge_region = 35).await;
    let (status, headers, _) =
        post_from(&h, None, &consent_path(), &adobe_v1("in").to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-adobe-edge"), Some("OR2;35"));
    let hinted = format!("/ee/irl1/v1/privacy/set-consent?configId={DS_A}");
    let (status, headers, _) =
        post_from(&h, Some(SITE), &hinted, &adobe_v1("in").to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-adobe-edge"), Some("IRL1;35"));
    // Errors too.
    let (status, headers, _) = post_from(&h, None, &consent_path(), "[]").await;
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "x-adobe-edge"), Some("OR2;35"));
    h.shutdown().await;
}

/// A client that trusts only `pem`.
fn https_client(pem: &str) -> reqwest::Client {
    https_client_resolving(pem, None)
}

/// A client that trusts only `pem` and resolves `host` to `addr`.
fn https_client_resolving(
    pem: &str,
    host: Option<(&str, std::net::SocketAddr)>,
) -> reqwest::Client {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()]);
    if let Some((host, addr)) = host {
        builder = builder.resolve(host, addr);
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let tls = TlsConfig::self_signed(&["consent.test".to_owned()]).unwrap();
    let pem = tls.certificate_pem().unwrap().to_owned();
    let h = cors_server(|config| config.tls = Some(tls)).await;
    let addr = h.server().local_addr();
    let client = https_client(&pem);
    let response = client
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Each name of the certificate, with CORS over TLS as a browser would use it.
    for host in ["localhost", "consent.test"] {
        let client = https_client_resolving(&pem, Some((host, addr)));
        let response = client
            .post(format!("https://{host}:{}{}", addr.port(), consent_path()))
            .header("origin", SITE)
            .body(adobe_v1("in").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{host}");
        assert_cors(response.headers(), SITE);
    }
    // Plain HTTP to the TLS port fails.
    assert!(
        http_client()
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err()
    );
    // A client that does not trust the certificate fails.
    let stranger = TlsConfig::self_signed(&[]).unwrap();
    assert!(
        https_client(stranger.certificate_pem().unwrap())
            .get(format!("https://{addr}/healthz"))
            .send()
            .await
            .is_err()
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_handshakes_is_closed_after_the_header_timeout() {
    let tls = TlsConfig::self_signed(&[]).unwrap();
    let pem = tls.certificate_pem().unwrap().to_owned();
    let h = cors_server(|config| {
        config.tls = Some(tls);
        config.header_read_timeout = Duration::from_secs(1);
        // One connection at a time: the silent one holds the only slot until it is closed.
        config.max_connections = 1;
    })
    .await;
    let addr = h.server().local_addr();
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the server did not close a connection that never sent a ClientHello");
    // Closed without a byte (or reset).
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    // The slot is free again.
    let response = https_client(&pem)
        .get(format!("https://{addr}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    h.shutdown().await;
}

/// Kills the child if the test fails before it exits, so no process is left behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's stdout, line by line, read on a thread (a line that never comes fails the test
/// in [`next_line`] instead of hanging it).
fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

fn next_line(lines: &std::sync::mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(20))
        .expect("the binary printed no further line within 20 s")
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_consent-server"));
    command.args(["--listen", "127.0.0.1:0"]);
    for var in [
        "DATABASE_URL",
        "CONSENT_TLS_CERT",
        "CONSENT_TLS_KEY",
        "CONSENT_TLS_SELF_SIGNED",
        "CONSENT_TLS_NAMES",
        "CONSENT_TLS_SELF_SIGNED_OUT",
        "CONSENT_CORS_ORIGINS",
        "CONSENT_DEFAULT_ORG",
        "CONSENT_DEFAULT_SANDBOX",
        "CONSENT_ALLOW_UNKNOWN_DATASTREAMS",
    ] {
        command.env_remove(var);
    }
    command
}

#[tokio::test]
async fn the_binary_serves_https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let child = binary()
        .arg("--database")
        .arg(format!("sqlite://{}", dir.path().join("c.db").display()))
        .args(["--tls-self-signed", "--tls-name", "consent.test"])
        .arg("--tls-self-signed-out")
        .arg(&cert)
        .args(["--cors-origin", DEFAULT_SITE])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let lines = stdout_lines(&mut guard.0);
    let addr: std::net::SocketAddr = next_line(&lines).trim().parse().unwrap();
    let line = next_line(&lines);
    let fingerprint = line
        .trim()
        .strip_prefix("sha256 Fingerprint=")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    // The fingerprint is the written certificate's, as openssl prints it.
    let pem = std::fs::read_to_string(&cert).unwrap();
    let der = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    };
    let expected: Vec<String> = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    };
    assert_eq!(fingerprint, expected.join(":"));
    let client = https_client_resolving(&pem, Some(("consent.test", addr)));
    let response = client
        .get(format!("https://consent.test:{}/healthz", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Without --default-org or --allow-unknown-datastreams, an unknown datastream is refused,
    // with CORS for the default list.
    let response = client
        .post(format!(
            "https://consent.test:{}/ee/v1/privacy/set-consent?configId=unknown",
            addr.port()
        ))
        .header("origin", DEFAULT_SITE)
        .body(adobe_v1("in").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_cors(response.headers(), DEFAULT_SITE);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["type"].as_str().unwrap().ends_with("EXEG-0003-400"),
        "{body}"
    );
}

#[tokio::test]
async fn the_binary_serves_unknown_datastreams_when_a_default_org_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let child = binary()
        .arg("--database")
        .arg(format!("sqlite://{}", dir.path().join("c.db").display()))
        .args(["--default-org", "SITE@AdobeOrg"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let lines = stdout_lines(&mut guard.0);
    let addr: std::net::SocketAddr = next_line(&lines).trim().parse().unwrap();
    let response = http_client()
        .post(format!(
            "http://{addr}/ee/v1/privacy/set-consent?configId=unknown"
        ))
        .body(adobe_v1("in").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("kndctr_SITE_AdobeOrg_consent"), "{body}");
}

/// Runs the binary with `args` and returns its stderr; it must fail at start.
fn fails_at_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let child = binary()
        .arg("--database")
        .arg(format!("sqlite://{}", dir.path().join("c.db").display()))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} started and kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{args:?} started");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut guard.0.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

#[test]
fn bad_tls_files_and_origins_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsConfig::self_signed(&[]).unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, tls.certificate_pem().unwrap()).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let stderr = fails_at_start(&["--tls-cert", &path(&missing), "--tls-key", &path(&cert)]);
    assert!(
        stderr.contains("cannot read the TLS certificate file") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    let stderr = fails_at_start(&["--tls-cert", &path(&garbage), "--tls-key", &path(&cert)]);
    assert!(
        stderr.contains("the TLS certificate file") && stderr.contains("no CERTIFICATE"),
        "{stderr}"
    );
    // The certificate file has no key in it.
    let stderr = fails_at_start(&["--tls-cert", &path(&cert), "--tls-key", &path(&cert)]);
    assert!(
        stderr.contains("the TLS key file") && stderr.contains("no PRIVATE KEY"),
        "{stderr}"
    );
    // A key that is not the certificate's.
    let stderr = fails_at_start(&["--tls-cert", &path(&cert), "--tls-key", &path(&other_key)]);
    assert!(
        stderr.contains("the TLS certificate and key cannot be used"),
        "{stderr}"
    );
    // --tls-cert without --tls-key, and both kinds of certificate at once.
    let stderr = fails_at_start(&["--tls-cert", &path(&cert)]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let stderr = fails_at_start(&[
        "--tls-self-signed",
        "--tls-cert",
        &path(&cert),
        "--tls-key",
        &path(&cert),
    ]);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    // `*` and origins no browser sends.
    let stderr = fails_at_start(&["--cors-origin", "*"]);
    assert!(stderr.contains("CORS origin \"*\""), "{stderr}");
    let stderr = fails_at_start(&["--cors-origin", "https://site.test/"]);
    assert!(
        stderr.contains("CORS origin \"https://site.test/\""),
        "{stderr}"
    );
    // The same in the keys file, named with its datastream.
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        json!({"datastreams": [{"id": "ds-1", "org": "O@AdobeOrg", "origins": ["https://Site.test"]}]})
            .to_string(),
    )
    .unwrap();
    let stderr = fails_at_start(&["--keys", &path(&keys)]);
    assert!(
        stderr.contains("CORS origin \"https://Site.test\" of datastream \"ds-1\""),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
