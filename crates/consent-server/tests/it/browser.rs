//! The landing page clicked through in headless Chromium, driven over WebDriver (chromedriver,
//! `webdriver.rs`). Screenshots of both pages are saved under `CARGO_TARGET_TMPDIR`.
//!
//! Runs when `chromedriver` is installed (Debian's `chromium` and `chromium-driver`); set
//! `CONSENT_TEST_REQUIRE_CHROMIUM=1` to make its absence a failure.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Db, Harness, ORG_A};
use crate::webdriver::{Browser, ELEMENT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_is_clicked_through_in_headless_chromium() {
    let Some(browser) = Browser::start(&[], &[]).await else {
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

    browser.goto(&link_url).await;
    browser.screenshot("unsubscribe-landing.png").await;
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

    let button = browser
        .command(
            reqwest::Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": "#unsubscribe"})),
        )
        .await;
    let button = button[ELEMENT].as_str().unwrap().to_owned();
    browser
        .command(
            reqwest::Method::POST,
            &format!("/element/{button}/click"),
            Some(json!({})),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser
        .try_command(
            "/element",
            json!({"using": "css selector", "value": "#done"}),
        )
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "no confirmation page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.screenshot("unsubscribe-confirmation.png").await;
    browser.close().await;

    let profile = h.server().db().profile(&key).await.unwrap().unwrap();
    assert_eq!(profile.consents["marketing"]["email"]["val"], "n");
    h.shutdown().await;
}
