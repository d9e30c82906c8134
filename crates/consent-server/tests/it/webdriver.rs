//! Headless Chromium driven over WebDriver (chromedriver) with plain HTTP requests, for the
//! browser tests (`browser.rs`, `alloy.rs`).
//!
//! Runs when `chromedriver` and `chromium` are installed (Debian's `chromium` and
//! `chromium-driver`); with `CONSENT_TEST_REQUIRE_CHROMIUM=1` their absence is a failure.
//! Chromium answers every host name but loopback and the hosts a test maps with "not found" and
//! runs with every background service off: tests touch nothing outside this machine.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C WebDriver key of an element reference.
pub(crate) const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, killed with its process group (and so every browser it started) when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver runs in its own process group with the browsers it starts: killing the
        // group leaves no browser behind even when the test fails before closing its session.
        // The signal goes through kill(2) directly, to the group whose id is chromedriver's pid
        // (never 1, which would mean every process); the `kill` program is not used, because
        // some versions (procps 4.0.2) turn `kill -KILL -PGID` into kill(-1).
        let group = rustix::process::Pid::from_child(&self.0);
        if group != rustix::process::Pid::INIT {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), "/usr/lib/chromium".into()])
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium's command line. Besides headless, it turns off every background service (updates,
/// sync, metrics, safe browsing, …) and answers every host name but loopback and `hosts` (each
/// mapped to a loopback port) with "not found", so the browser opens no connection and makes no
/// DNS query beyond the servers under test.
fn chromium_args(profile: &Path, hosts: &[(&str, u16)], extra: &[String]) -> Vec<String> {
    let mut rules: Vec<String> = hosts
        .iter()
        .map(|(host, port)| format!("MAP {host} 127.0.0.1:{port}"))
        .collect();
    rules.push("MAP * ~NOTFOUND".to_owned());
    rules.push("EXCLUDE 127.0.0.1".to_owned());
    rules.push("EXCLUDE localhost".to_owned());
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=800,600",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-breakpad",
        "--disable-quic",
        "--no-pings",
        "--metrics-recording-only",
        "--disable-features=OptimizationHints,MediaRouter,DialMediaRouteProvider,Translate,\
         AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        format!("--host-resolver-rules={}", rules.join(" , ")),
        format!("--user-data-dir={}", profile.display()),
    ])
    .chain(extra.iter().cloned())
    .collect()
}

/// One WebDriver session in a headless Chromium of its own.
pub(crate) struct Browser {
    client: reqwest::Client,
    session: String,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a session, with `hosts` mapped to loopback ports and `extra`
    /// Chromium flags. `None` when Chromium is not installed and not required.
    pub(crate) async fn start(hosts: &[(&str, u16)], extra: &[String]) -> Option<Self> {
        let (Some(driver), Some(browser)) = (
            find_binary(&["chromedriver"]),
            find_binary(&["chromium", "chromium-browser"]),
        ) else {
            assert!(
                std::env::var_os("CONSENT_TEST_REQUIRE_CHROMIUM").is_none(),
                "CONSENT_TEST_REQUIRE_CHROMIUM is set but chromium/chromedriver are not installed"
            );
            eprintln!("chromium or chromedriver not installed: browser test not run");
            return None;
        };
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let profile = tempfile::tempdir().unwrap();
        let driver = Driver(
            Command::new(&driver)
                .process_group(0)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let client = crate::harness::http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let session = wd(
            &client,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": browser,
                    "args": chromium_args(profile.path(), hosts, extra)
                }
            }}})),
        )
        .await;
        let session = format!("{base}/session/{}", session["sessionId"].as_str().unwrap());
        Some(Self {
            client,
            session,
            _driver: driver,
            _profile: profile,
        })
    }

    /// A WebDriver command of this session; its `value`.
    pub(crate) async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        wd(
            &self.client,
            method,
            &format!("{}{path}", self.session),
            body,
        )
        .await
    }

    /// The same command, `None` when WebDriver answers with an error.
    pub(crate) async fn try_command(&self, path: &str, body: Value) -> Option<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.session))
            .json(&body)
            .send()
            .await
            .unwrap();
        if !response.status().is_success() {
            return None;
        }
        let value: Value = response.json().await.unwrap();
        Some(value["value"].clone())
    }

    /// Opens `url` and waits for it to load.
    pub(crate) async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns what it returns.
    pub(crate) async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script`, whose last argument is a callback, and returns what it is called with.
    pub(crate) async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The cookies the current page sees, by name.
    pub(crate) async fn cookies(&self) -> Vec<(String, String)> {
        let cookies = self.command(reqwest::Method::GET, "/cookie", None).await;
        cookies
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Saves a screenshot under `CARGO_TARGET_TMPDIR` and returns its path.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, bytes).unwrap();
        eprintln!("screenshot saved to {}", path.display());
        path
    }

    /// Ends the session.
    pub(crate) async fn close(self) {
        wd(&self.client, reqwest::Method::DELETE, &self.session, None).await;
    }
}

async fn wd(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let value: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {value}");
    value["value"].clone()
}
