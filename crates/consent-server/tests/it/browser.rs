//! The landing page clicked through in headless Chromium, driven over WebDriver (chromedriver)
//! with plain HTTP requests. Screenshots of both pages are saved under `CARGO_TARGET_TMPDIR`.
//!
//! Runs when `chromedriver` is installed (Debian's `chromium` and `chromium-driver`); set
//! `CONSENT_TEST_REQUIRE_CHROMIUM=1` to make its absence a failure.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::{Db, Harness, ORG_A};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

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

fn find_binary(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([
            std::path::PathBuf::from("/usr/bin"),
            "/usr/lib/chromium".into(),
        ])
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
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

/// Chromium's command line. Besides headless, it turns off every background service (updates,
/// sync, metrics, safe browsing, …) and answers every host name but loopback with "not found", so
/// the browser opens no connection and makes no DNS query beyond the loopback server under test:
/// tests touch nothing outside this machine.
fn chromium_args(profile: &Path) -> Vec<String> {
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
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_is_clicked_through_in_headless_chromium() {
    let (Some(driver), Some(browser)) = (
        find_binary(&["chromedriver"]),
        find_binary(&["chromium", "chromium-browser"]),
    ) else {
        assert!(
            std::env::var_os("CONSENT_TEST_REQUIRE_CHROMIUM").is_none(),
            "CONSENT_TEST_REQUIRE_CHROMIUM is set but chromium/chromedriver are not installed"
        );
        eprintln!("chromium or chromedriver not installed: browser test not run");
        return;
    };
    let h = Harness::start(Db::Sqlite).await.unwrap();
    let response = h
        .auth(h.client.post(h.url("/admin/v1/unsubscribe-links")), false)
        .json(&json!({"profile": {"namespace": "CRMID", "id": "browser-1"}, "channel": "email"}))
        .send()
        .await
        .unwrap();
    let link: Value = response.json().await.unwrap();
    let link_url = link["url"].as_str().unwrap().to_owned();

    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let profile_dir = tempfile::tempdir().unwrap();
    let _driver = Driver(
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
                "args": chromium_args(profile_dir.path())
            }
        }}})),
    )
    .await;
    let session = format!("{base}/session/{}", session["sessionId"].as_str().unwrap());
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let screenshot = |name: &'static str| {
        let client = client.clone();
        let session = session.clone();
        async move {
            let png = wd(
                &client,
                reqwest::Method::GET,
                &format!("{session}/screenshot"),
                None,
            )
            .await;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(png.as_str().unwrap())
                .unwrap();
            let path = shots.join(name);
            std::fs::write(&path, bytes).unwrap();
            eprintln!("screenshot saved to {}", path.display());
        }
    };

    wd(
        &client,
        reqwest::Method::POST,
        &format!("{session}/url"),
        Some(json!({"url": link_url})),
    )
    .await;
    screenshot("unsubscribe-landing.png").await;
    let key = consent_server::ProfileKey {
        org: ORG_A.into(),
        sandbox: "prod".into(),
        namespace: "CRMID".into(),
        id: "browser-1".into(),
    };
    assert!(
        h.server().db().profile(&key).await.unwrap().is_none(),
        "viewing changes nothing"
    );

    let button = wd(
        &client,
        reqwest::Method::POST,
        &format!("{session}/element"),
        Some(json!({"using": "css selector", "value": "#unsubscribe"})),
    )
    .await;
    let button = button[ELEMENT].as_str().unwrap().to_owned();
    wd(
        &client,
        reqwest::Method::POST,
        &format!("{session}/element/{button}/click"),
        Some(json!({})),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = client
            .post(format!("{session}/element"))
            .json(&json!({"using": "css selector", "value": "#done"}))
            .send()
            .await
            .unwrap();
        if found.status().is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "no confirmation page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot("unsubscribe-confirmation.png").await;
    wd(&client, reqwest::Method::DELETE, &session, None).await;

    let profile = h.server().db().profile(&key).await.unwrap().unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "n");
    h.shutdown().await;
}
