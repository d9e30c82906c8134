//! `kill -9` of a process using the client between `enqueue` returning and delivery; a new
//! client on the same data directory delivers what it left, each event exactly once. And the
//! same at random instants, many times over, with consent changing in between
//! (`child_killed_at_random_instants`, `CONSENT_CRASH_CYCLES` cycles, 50 by default).

use std::process::Stdio;
use std::time::Duration;

use consent::Decision;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::{Backend, DATASTREAM, ORG, Server};
use crate::restarts::flush_until_ok;
use crate::support::{adobe_v1, client};

/// Starts `e2e-child <base URL> <dir> <org> <datastream> <mode> <arg>` (`arg`: events or seed)
/// with its stdout piped, as lines.
fn spawn_child(
    server: &Server,
    dir: &std::path::Path,
    mode: &str,
    arg: u64,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-child"))
        .arg(server.base_url())
        .arg(dir)
        .args([ORG, DATASTREAM, mode, &arg.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Runs `e2e-child` in `mode` with `events` events, reads the ids it enqueued, and kills it with
/// SIGKILL as soon as it says `ENQUEUED`. Returns the ids (as the new client sees them).
async fn run_and_kill_child(
    server: &Server,
    dir: &std::path::Path,
    mode: &str,
    events: usize,
) -> Vec<String> {
    let (mut child, mut lines) = spawn_child(server, dir, mode, events as u64);
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

/// What one line of `e2e-child cycle-*` (or the test itself) says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `enqueue` returned this id.
    Enqueued(String),
    /// `set_consent` was called with `in` (`true`) or `out`; `done` once it returned.
    Setting { into: bool, done: bool },
    /// The process was killed.
    Killed,
    /// The next steps are on a fresh data directory: another visitor.
    NewLife,
}

/// Cycles on one data directory before the test moves to a fresh one.
const CYCLES_PER_LIFE: u64 = 5;

/// What the server may hold of an enqueued event once consent is finally given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Delivered exactly once.
    Once,
    /// Never: consent was withdrawn (a returned `out`) before it could be delivered.
    Never,
    /// Once or not at all: an `out` came after a moment when it may have been delivered, or an
    /// `out` that did not return may have taken effect.
    Either,
}

/// The fate of the event enqueued at `at` in `steps`.
fn fate(steps: &[Step], at: usize) -> Fate {
    // Whether consent may have been "in" when it was enqueued: an `in` was called after the
    // last returned `out` before it.
    let start = steps[..at]
        .iter()
        .rposition(|s| *s == Step::NewLife)
        .map_or(0, |p| p + 1);
    let end = steps[at..]
        .iter()
        .position(|s| *s == Step::NewLife)
        .map_or(steps.len(), |p| at + p);
    let mut maybe_in = false;
    for step in &steps[start..at] {
        match step {
            Step::Setting { into: true, .. } => maybe_in = true,
            Step::Setting {
                into: false,
                done: true,
            } => maybe_in = false,
            _ => {}
        }
    }
    let mut maybe_out = false;
    for step in &steps[at + 1..end] {
        match step {
            Step::Setting { into: true, .. } => maybe_in = true,
            Step::Setting {
                into: false,
                done: true,
            } => {
                return if maybe_in { Fate::Either } else { Fate::Never };
            }
            Step::Setting {
                into: false,
                done: false,
            } => maybe_out = true,
            _ => {}
        }
    }
    if maybe_out { Fate::Either } else { Fate::Once }
}

/// Runs `e2e-child <mode>` (a `cycle-*` mode) on `dir` with `seed`, kills it with SIGKILL `after` its `READY`, and
/// returns what it reported.
async fn one_cycle(
    server: &Server,
    dir: &std::path::Path,
    mode: &str,
    seed: u64,
    after: Duration,
) -> Vec<Step> {
    let (mut child, mut lines) = spawn_child(server, dir, mode, seed);
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the child did not start within 60 s")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));
    tokio::time::sleep(after).await;
    child.kill().await.unwrap(); // SIGKILL
    // What it printed before it died is still in the pipe.
    let mut steps = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        let step = if let Some(id) = line.strip_prefix("ID ") {
            Step::Enqueued(id.to_owned())
        } else if let Some(value) = line.strip_prefix("SETTING ") {
            Step::Setting {
                into: value == "in",
                done: false,
            }
        } else if line.starts_with("SET ") {
            // The call returned: the `SETTING` just before it is done.
            if let Some(Step::Setting { done, .. }) = steps.last_mut() {
                *done = true;
            }
            continue;
        } else if line == "DECLINED" || line.starts_with("ERROR ") {
            continue;
        } else {
            panic!("unexpected line {line}");
        };
        steps.push(step);
    }
    steps.push(Step::Killed);
    steps
}

/// Kill the client at random instants, many times (`CONSENT_CRASH_CYCLES`, default 50), while
/// it enqueues and changes consent; at the end consent is given and the server holds every
/// event `enqueue` returned, exactly once, and none whose consent was withdrawn first.
async fn killed_at_random_instants_body(backend: Backend) {
    let cycles = consent_e2e::env_u64("CONSENT_CRASH_CYCLES", 50);
    let Some(mut server) = Server::start_on(backend).await else {
        return;
    };
    // Lives of five cycles, each on a fresh data directory (a new visitor, consent pending at
    // first): events enqueued while pending and then withdrawn happen only before a visitor's
    // first "in".
    let mut steps = Vec::new();
    let mut dirs = Vec::new();
    let mut random = consent_e2e::XorShift::new(0x2545_F491_4F6C_DD1D);
    for cycle in 0..cycles {
        if cycle % CYCLES_PER_LIFE == 0 {
            dirs.push(server.scratch(&format!("client-{cycle}")));
        }
        let seed = random.next_u64();
        let after = Duration::from_millis(seed % 300);
        let dir = dirs.last().unwrap();
        // A life delivers, withdraws, or does both, the same for its five cycles.
        let mode = ["cycle-deliver", "cycle-withdraw", "cycle-mixed"]
            [(cycle / CYCLES_PER_LIFE % 3) as usize];
        let mut life = one_cycle(&server, dir, mode, seed ^ cycle, after).await;
        steps.append(&mut life);
        if cycle % CYCLES_PER_LIFE == CYCLES_PER_LIFE - 1 || cycle + 1 == cycles {
            // The end of a life: consent is given, everything left is delivered.
            let client = client(&server, dir, "pending").await;
            client.set_consent(adobe_v1("in")).await.unwrap();
            flush_until_ok(&client, 5).await;
            client.shutdown().await.unwrap();
            steps.push(Step::Setting {
                into: true,
                done: true,
            });
            steps.push(Step::NewLife);
        }
    }

    let stored = server.event_ids().await;
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for id in &stored {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let (mut once, mut never, mut either, mut either_stored) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    let mut known = std::collections::HashSet::new();
    for (at, step) in steps.iter().enumerate() {
        let Step::Enqueued(id) = step else { continue };
        known.insert(id.as_str());
        let n = counts.get(id.as_str()).copied().unwrap_or(0);
        match fate(&steps, at) {
            Fate::Once if n == 1 => once += 1,
            Fate::Never if n == 0 => never += 1,
            Fate::Either if n <= 1 => {
                either += 1;
                either_stored += n;
            }
            fate => problems.push(format!("{id}: {fate:?}, stored {n} times")),
        }
    }
    // Events whose `enqueue` was cut by the kill may be durable and delivered: once at most.
    let unreported = counts.keys().filter(|id| !known.contains(*id)).count();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    let resent = server
        .metric("consent_events_total{outcome=\"duplicate\"}")
        .await;
    let lost = problems
        .iter()
        .filter(|p| p.contains("Once, stored 0"))
        .count();
    let figures = serde_json::json!({
        "backend": format!("{backend:?}"), "cycles": cycles,
        "enqueued": once + never + either, "delivered_once": once,
        "withdrawn_never_stored": never, "either": either, "either_stored": either_stored,
        "stored_unreported": unreported, "lost": lost, "duplicated": duplicated,
        "resent_and_deduplicated": resent, "problems": problems.len(),
    });
    eprintln!("client crash cycles: {figures}");
    consent_e2e::append_report("CONSENT_CRASH_REPORT", &figures).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(duplicated, 0);
    assert!(
        once > 0,
        "no event was delivered: the cycles tested nothing"
    );
}
on_both!(
    child_killed_at_random_instants,
    super::killed_at_random_instants_body
);

#[test]
fn the_fate_of_an_event_follows_the_consent_calls_around_it() {
    let id = || Step::Enqueued("e".into());
    let set = |into, done| Step::Setting { into, done };
    // Pending, then out returned: withdrawn.
    assert_eq!(fate(&[id(), set(false, true)], 0), Fate::Never);
    // Pending, then in, then out: it may have gone out in between.
    assert_eq!(
        fate(&[id(), set(true, true), set(false, true)], 0),
        Fate::Either
    );
    // Enqueued while in (an earlier `in`), then out: it may have gone already.
    assert_eq!(
        fate(&[set(true, true), id(), set(false, true)], 1),
        Fate::Either
    );
    // An out that did not return may have taken effect.
    assert_eq!(
        fate(&[id(), set(false, false), Step::Killed], 0),
        Fate::Either
    );
    // An out returned, then in was called (and did not return), then enqueued: delivered.
    assert_eq!(
        fate(&[set(false, true), set(true, false), id()], 2),
        Fate::Once
    );
    // Nothing after it: consent is given at the end.
    assert_eq!(fate(&[id(), Step::Killed], 0), Fate::Once);
    // Another visitor's calls do not count.
    assert_eq!(
        fate(&[id(), Step::NewLife, set(false, true)], 0),
        Fate::Once
    );
    assert_eq!(
        fate(&[set(true, true), Step::NewLife, id(), set(false, true)], 2),
        Fate::Never
    );
}
