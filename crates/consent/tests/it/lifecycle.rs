//! Restarts, the data directory's lock, bounded shutdown, records, the Opt-in Service.

use std::future::Future;
use std::time::{Duration, Instant};

use consent::{ConsentRequest, Decision};
use consent_optin::Category;

use crate::harness::{Edge, dir_contains, page_view};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_consent_and_delivers_what_was_left() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge.client(dir.path(), "pending").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            client
                .enqueue(page_view(&format!("left-{i}")))
                .await
                .unwrap()
                .to_string(),
        );
    }
    client.shutdown().await.unwrap();
    assert!(edge.stored_ids().is_empty());

    let client = edge.client(dir.path(), "pending").await;
    assert_eq!(client.stats().queued, 3);
    assert_eq!(client.consent().state, Decision::Pending);
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(edge.stored_ids(), ids);
    client.shutdown().await.unwrap();

    // The choice survives a restart, whatever the default says now.
    let client = edge.client(dir.path(), "out").await;
    assert_eq!(client.consent().state, Decision::In);
    assert!(client.consent().was_set);
    client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    let client = edge.client(dir.path(), "in").await;
    assert_eq!(
        client.consent().state,
        Decision::Out,
        "an opt-out never turns back into in"
    );
    assert!(
        client
            .enqueue(page_view("x"))
            .await
            .unwrap_err()
            .is_consent_declined()
    );
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_per_data_directory() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = edge.builder(dir.path()).build().await.unwrap();
    let e = edge.builder(dir.path()).build().await.unwrap_err();
    assert!(e.is_locked(), "{e:?}");
    assert!(e.to_string().contains("already in use"), "{e}");
    first.shutdown().await.unwrap();
    let again = edge.builder(dir.path()).build().await.unwrap();
    // The Opt-in Service of the old client does not hold the directory either.
    again.shutdown().await.unwrap();
    let e = first.enqueue(page_view("late")).await.unwrap_err();
    assert!(e.is_shutdown());
    assert!(first.records().verify().unwrap_err().is_shutdown());
}

#[test]
fn shutdown_is_bounded_on_a_current_thread_runtime_with_the_server_down() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        // Nothing listens on this port: every attempt fails.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = consent::Client::builder()
            .edge_base_url(&base)
            .datastream_id("ds")
            .org_id("ORG@AdobeOrg")
            .default_consent("in")
            .data_dir(dir.path())
            .shutdown_timeout(Duration::from_millis(300))
            .flush_timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        let waiting = {
            let client = client.clone();
            tokio::spawn(async move { client.send_event(page_view("KEPT")).await })
        };
        // Let the spawned call reach the client before the flush.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = client.flush().await.unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
        let started = Instant::now();
        client.shutdown().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let e = waiting.await.unwrap().unwrap_err();
        assert!(e.is_shutdown(), "{e:?}");
    });
    assert!(
        dir_contains(dir.path(), b"KEPT"),
        "the event stays queued on disk"
    );
    runtime.block_on(async {
        let client = consent::Client::builder()
            .edge_base_url("http://127.0.0.1:9")
            .datastream_id("ds")
            .org_id("ORG@AdobeOrg")
            .default_consent("pending")
            .data_dir(dir.path())
            .build()
            .await
            .unwrap();
        assert_eq!(client.stats().queued, 1);
        client.shutdown().await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_client_frees_the_directory() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge.builder(dir.path()).build().await.unwrap();
    drop(client);
    directory_frees_up(&edge, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_prove_every_change_and_a_tampered_log_fails() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge
        .builder(dir.path())
        .default_consent("pending")
        .notice_version("privacy-notice-2026-11")
        .build()
        .await
        .unwrap();
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap();
    let records = client.records();
    // Three consent records (the default, then each choice) and, for each choice the server
    // confirmed, the receipt it signed.
    assert_eq!(records.verify().unwrap(), 5);
    let all = records.list().unwrap();
    assert_eq!(records.receipts().unwrap().len(), 2);
    let list: Vec<_> = all
        .iter()
        .filter(|r| r.standard != consent::RECEIPT_STANDARD)
        .collect();
    let generals: Vec<&str> = list
        .iter()
        .map(|r| r.payload.as_ref().unwrap()["general"].as_str().unwrap())
        .collect();
    assert_eq!(generals, ["pending", "in", "out"]);
    assert_eq!(list[1].standard, "Adobe");
    assert_eq!(list[1].version, "1.0");
    // What the person said, word for word, and under which notice.
    assert_eq!(
        list[2].payload.as_ref().unwrap()["consent"],
        serde_json::json!([{"standard": "Adobe", "version": "1.0", "value": {"general": "out"}}])
    );
    assert!(
        list.iter()
            .all(|r| r.notice_version.as_deref() == Some("privacy-notice-2026-11"))
    );
    let mut out = Vec::new();
    assert_eq!(records.export_jsonl(&mut out).unwrap(), 5);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 5);

    let path = dir.path().join("records.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.contains(r#""general":"out""#))
        .unwrap();
    let tampered = text.replacen(r#""general":"out""#, r#""general":"in""#, 1);
    assert_ne!(text, tampered);
    std::fs::write(&path, tampered).unwrap();
    let e = records.verify().unwrap_err();
    assert!(e.to_string().contains(&format!("line {line}")), "{e}");
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_in_permissions_survive_a_restart() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = || consent_optin::OptInConfig::builder().does_opt_in_apply(true);
    let client = edge
        .builder(dir.path())
        .optin_config(config())
        .build()
        .await
        .unwrap();
    let optin = client.optin();
    assert!(!optin.is_approved(&[Category::Analytics]));
    optin.approve(&[Category::Analytics], false).unwrap();
    assert!(optin.is_approved(&[Category::Analytics]));
    // Writes reach the jar from the Opt-in Service's delivery thread.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dir_contains(dir.path(), b"adobeujs-optin") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.shutdown().await.unwrap();

    let client = edge
        .builder(dir.path())
        .optin_config(config())
        .build()
        .await
        .unwrap();
    assert!(client.optin().is_approved(&[Category::Analytics]));
    assert!(!client.optin().is_approved(&[Category::Target]));
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cookie_jar_never_turns_an_opt_out_back_in() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("cookies.json");
    let client = edge.client(dir.path(), "in").await;
    client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    // Damaged, then (after a restart) simply missing, then deleted again: never "in".
    for round in 0..3 {
        if round == 0 {
            std::fs::write(&jar, b"{not json").unwrap();
        } else {
            let _ = std::fs::remove_file(&jar);
        }
        let client = edge.client(dir.path(), "in").await;
        assert_eq!(client.consent().state, Decision::Out, "round {round}");
        let e = client.enqueue(page_view("NEVER")).await.unwrap_err();
        assert!(e.is_consent_declined(), "round {round}: {e:?}");
        client.shutdown().await.unwrap();
    }
    assert!(
        dir.path().join("cookies.json.corrupt").exists(),
        "the damaged jar is kept aside"
    );
    assert!(edge.stored_ids().is_empty());
    assert!(!dir_contains(dir.path(), b"NEVER"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_jar_without_a_copy_makes_a_default_in_pending() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cookies.json"), b"{not json").unwrap();
    let client = edge.client(dir.path(), "in").await;
    assert_eq!(
        client.consent().state,
        Decision::Pending,
        "an unreadable jar must not mean 'in'"
    );
    client.enqueue(page_view("WAITS")).await.unwrap();
    client.flush().await.unwrap();
    assert!(edge.stored_ids().is_empty());
    client.shutdown().await.unwrap();
    // Still unknown at the next start: the damaged jar was set aside, not forgotten.
    let client = edge.client(dir.path(), "in").await;
    assert_eq!(client.consent().state, Decision::Pending);
    assert_eq!(client.stats().queued, 1);
    client.shutdown().await.unwrap();
    assert!(edge.stored_ids().is_empty());
}

/// Builds a client on `dir` as soon as the directory is free (within five seconds), and shuts
/// it down.
async fn directory_frees_up(edge: &Edge, dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match edge.builder(dir).build().await {
            Ok(client) => {
                client.shutdown().await.unwrap();
                return;
            }
            Err(e) if e.is_locked() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the directory stayed locked: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_failed_build_frees_the_directory() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Cancelled: the future is dropped before the client is ready.
    let _ = tokio::time::timeout(Duration::ZERO, edge.builder(dir.path()).build()).await;
    directory_frees_up(&edge, dir.path()).await;
    // Failed after the client's thread started: an invalid Opt-in configuration. The directory
    // is free when the error is returned.
    let e = edge
        .builder(dir.path())
        .optin_config(consent_optin::OptInConfig::builder().custom_category(""))
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), consent::ErrorKind::Config, "{e:?}");
    let client = edge.builder(dir.path()).build().await.unwrap();
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_of_any_length_are_accepted() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge
        .builder(dir.path())
        .flush_timeout(Duration::MAX)
        .shutdown_timeout(Duration::MAX)
        .build()
        .await
        .unwrap();
    client.flush().await.unwrap();
    client.enqueue(page_view("long")).await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(edge.stored_ids().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_purposes_returns_once_what_it_withdraws_is_gone() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge
        .builder(dir.path())
        .purpose("crash-reports")
        .default_consent("pending")
        .build()
        .await
        .unwrap();
    client
        .enqueue(page_view("CRASH-DUMP").requires("crash-reports"))
        .await
        .unwrap();
    assert!(dir_contains(dir.path(), b"CRASH-DUMP"));
    client
        .set_purposes([("crash-reports", Decision::Out)])
        .await
        .unwrap();
    assert!(!dir_contains(dir.path(), b"CRASH-DUMP"));
    assert_eq!(client.stats().purged, 1);
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_kept_off_the_device_catches_a_log_cut_back_with_its_anchor() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = edge.client(dir.path(), "pending").await;
    client
        .set_consent(ConsentRequest::adobe_v1("in"))
        .await
        .unwrap();
    let early = client.records().head().unwrap();
    let early_log = std::fs::read(dir.path().join("records.jsonl")).unwrap();
    let early_state = std::fs::read(dir.path().join("state.bin")).unwrap();
    client
        .set_consent(ConsentRequest::adobe_v1("out"))
        .await
        .unwrap();
    let late = client.records().head().unwrap();
    // The opt-out's record and the server's receipt for it.
    assert_eq!(late.count, early.count + 2);
    client.shutdown().await.unwrap();

    // Someone who can write every file puts back the log and the state file of before the
    // opt-out: the log verifies against its own anchor, not against the head kept elsewhere.
    std::fs::write(dir.path().join("records.jsonl"), &early_log).unwrap();
    std::fs::write(dir.path().join("state.bin"), &early_state).unwrap();
    let client = edge.client(dir.path(), "pending").await;
    let records = client.records();
    assert!(records.verify().is_ok());
    let e = records.verify_against(&late).unwrap_err();
    assert_eq!(e.kind(), consent::ErrorKind::Storage, "{e:?}");
    client.shutdown().await.unwrap();
}

#[test]
fn a_build_dropped_after_the_client_was_ready_frees_the_directory() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let edge = runtime.block_on(Edge::start());
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let mut build = Box::pin(edge.builder(dir.path()).build());
        // Polled once (the client's thread starts), then left alone while it becomes ready, then
        // dropped before it is polled again.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(build.as_mut().poll(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(500));
        drop(build);
        directory_frees_up(&edge, dir.path()).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_jar_never_loosens_a_default_out() {
    let edge = Edge::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cookies.json"), b"{not json").unwrap();
    let client = edge.client(dir.path(), "out").await;
    assert_eq!(client.consent().state, Decision::Out);
    assert!(
        client
            .enqueue(page_view("NO"))
            .await
            .unwrap_err()
            .is_consent_declined()
    );
    client.shutdown().await.unwrap();
    assert!(!dir_contains(dir.path(), b"NO\""));
}
