//! `kill -9` of a process using the client between `enqueue` returning and delivery; a new
//! client on the same data directory delivers what it left, each event exactly once.

use std::process::Stdio;
use std::time::Duration;

use consent::Decision;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::{Backend, DATASTREAM, ORG, Server};
use crate::restarts::flush_until_ok;
use crate::support::{adobe_v1, client};

/// Runs `e2e-child` in `mode` with `events` events, reads the ids it enqueued, and kills it with
/// SIGKILL as soon as it says `ENQUEUED`. Returns the ids (as the new client sees them).
async fn run_and_kill_child(
    server: &Server,
    dir: &std::path::Path,
    mode: &str,
    events: usize,
) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-child"))
        .arg(server.base_url())
        .arg(dir)
        .args([ORG, DATASTREAM, mode, &events.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ids = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the child did not enqueue within 60 s")
            .unwrap()
            .expect("the child exited before ENQUEUED");
        if line == "ENQUEUED" {
            break;
        }
        let id = line
            .strip_prefix("ID ")
            .unwrap_or_else(|| panic!("unexpected line {line}"));
        ids.push(id.to_owned());
    }
    child.kill().await.unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status}");
    assert_eq!(ids.len(), events);
    ids
}

/// The child enqueued while consent was pending and was killed; a new client gives consent and
/// delivers every event once.
async fn killed_while_pending_body(backend: Backend) {
    let Some(mut server) = Server::start_on(backend).await else {
        return;
    };
    let dir = server.scratch("client");
    let ids = run_and_kill_child(&server, &dir, "pending", 20).await;
    assert_eq!(server.events_received().await, 0);

    let client = client(&server, &dir, "pending").await;
    assert_eq!(
        client.stats().queued,
        20,
        "every enqueued event survived the kill"
    );
    client.set_consent(adobe_v1("in")).await.unwrap();
    flush_until_ok(&client, 3).await;
    exactly_these(&mut server, &ids).await;
    client.shutdown().await.unwrap();
}
on_both!(child_killed_while_pending, super::killed_while_pending_body);

/// The child had consent in and was delivering when it was killed; a new client delivers the
/// rest, and no event is stored twice or lost.
async fn killed_while_delivering_body(backend: Backend) {
    let Some(mut server) = Server::start_on(backend).await else {
        return;
    };
    let dir = server.scratch("client");
    let ids = run_and_kill_child(&server, &dir, "in", 60).await;
    let stored_by_child = server.events_stored().await;
    let client = client(&server, &dir, "pending").await;
    // How far the child got varies from run to run; typically a part of the events is stored
    // and the rest is still queued (or sent but not acknowledged, and sent again).
    eprintln!(
        "note: {stored_by_child} of 60 stored before the kill; {} still queued",
        client.stats().queued
    );
    assert_eq!(
        client.consent().state,
        Decision::In,
        "the consent survived the kill"
    );
    client.set_consent(adobe_v1("in")).await.unwrap();
    flush_until_ok(&client, 3).await;
    exactly_these(&mut server, &ids).await;
    // The consent record log the child was appending to still verifies after the kill.
    assert!(client.records().verify().unwrap() >= 1);
    client.shutdown().await.unwrap();
}
on_both!(
    child_killed_while_delivering,
    super::killed_while_delivering_body
);

/// Asserts the server stores exactly the events with these ids, each once.
async fn exactly_these(server: &mut Server, ids: &[String]) {
    for id in ids {
        assert_eq!(server.event_stored(id).await, 1, "event {id}");
    }
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(
        server.event_ids().await,
        expected,
        "no event lost, none extra"
    );
}
