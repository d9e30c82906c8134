//! The `consent-server` binary: first stdout line, health, graceful stop on SIGTERM, and the
//! `erase` and `export` commands.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if the test fails before it exits, so no process is left behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_prints_its_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, crate::harness::keys_json()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_consent-server"))
        .args(["--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite://{}", dir.path().join("c.db").display()))
        .arg("--keys")
        .arg(&keys)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line.trim().parse().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    crate::harness::install_crypto_provider();
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&guard.0),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_consent-server"))
        .args(["--listen", "127.0.0.1:0", "--database", "mysql://nope"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
}

#[test]
fn a_trusted_proxy_that_is_not_an_address_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_consent-server"))
        .args(["--listen", "127.0.0.1:0", "--database", "mysql://nope"])
        .args(["--trusted-proxy", "10.0.0.1,proxy.local"])
        .env_remove("CONSENT_TRUSTED_PROXIES")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--trusted-proxy") && stderr.contains("proxy.local"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_erase_and_export_commands_act_on_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("consent.db").display());
    let key = consent_server::ProfileKey {
        org: "ORG@AdobeOrg".into(),
        sandbox: "prod".into(),
        namespace: "CRMID".into(),
        id: "cli-person".into(),
    };
    let db = consent_server::Db::open(&url).await.unwrap();
    let change = consent_server::ConsentChange {
        general: Some("in".to_owned()),
        edit: Box::new(|_, _| true),
        source: "test".to_owned(),
        payload: serde_json::json!({"address": "cli@example.com"}),
    };
    db.apply_consent(&key, change).await.unwrap();
    db.close().await;
    let run = |command: &str| {
        Command::new(env!("CARGO_BIN_EXE_consent-server"))
            .args([
                command,
                "--database",
                &url,
                "--org",
                "ORG@AdobeOrg",
                "CRMID",
                "cli-person",
            ])
            .output()
            .unwrap()
    };
    let export = run("export");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let document: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(document["profile"]["general"], "in");
    assert_eq!(
        document["records"][0]["change"]["address"],
        "cli@example.com"
    );
    let erase = run("erase");
    assert!(
        erase.status.success(),
        "{}",
        String::from_utf8_lossy(&erase.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&erase.stdout).unwrap();
    assert_eq!(answer["erased"]["profile"], true, "{answer}");
    assert_eq!(answer["erased"]["details"], 1, "{answer}");
    // Nothing personal is left: a second erasure says so and fails; the export shows only the
    // records, without the address.
    let output = run("erase");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing is stored about CRMID cli-person"),
        "{stderr}"
    );
    let export = run("export");
    assert!(export.status.success());
    let text = String::from_utf8_lossy(&export.stdout);
    assert!(!text.contains("cli@example.com"), "{text}");
    assert!(text.contains("\"erasure\""), "{text}");
    let db = consent_server::Db::open(&url).await.unwrap();
    assert_eq!(
        db.verify_chain("ORG@AdobeOrg", "prod").await.unwrap(),
        Ok(2)
    );
    db.close().await;
}
