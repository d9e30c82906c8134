//! One process per data directory: a second `Store` on the same directory, in this process or in
//! another, is refused with an error naming the directory, until the first one is gone (dropped,
//! or its process killed).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use consent_store::{QueueConfig, Store};

const CHILD_DIR: &str = "CONSENT_STORE_LOCK_CHILD_DIR";
const TEST: &str = "lock::another_process_is_refused_until_the_holder_dies";

#[test]
fn a_second_store_in_the_same_process_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "the error names the directory: {message}"
    );
    // What is opened from the store keeps the directory locked after the store itself is gone.
    let records = first.records().unwrap();
    let queue = first.queue(QueueConfig::default()).unwrap();
    let clone = first.clone();
    drop(first);
    assert!(Store::open(dir.path()).is_err(), "a clone holds it");
    drop(clone);
    assert!(Store::open(dir.path()).is_err(), "the record log holds it");
    drop(records);
    assert!(Store::open(dir.path()).is_err(), "the queue holds it");
    drop(queue);
    let again = Store::open(dir.path()).expect("free once everything is dropped");
    // Another directory is not affected.
    let other = tempfile::tempdir().unwrap();
    Store::open(other.path()).unwrap();
    drop(again);
}

/// The child: holds the store open until its stdin closes, or 20 s at most so that no process
/// outlives a failed parent.
fn child(dir: &str) -> ! {
    let store = Store::open(dir).unwrap();
    let mut queue = store.queue(QueueConfig::default()).unwrap();
    queue.append(b"child").unwrap();
    queue.sync().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "LOCKED").unwrap();
    out.flush().unwrap();
    drop(out);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(Duration::from_secs(20));
    drop(queue);
    drop(store);
    std::process::exit(0)
}

#[test]
fn another_process_is_refused_until_the_holder_dies() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = holder.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("LOCKED") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(15));
    if ready.is_err() {
        let _ = holder.kill();
        let _ = holder.wait();
        panic!("the child process never opened the store");
    }

    let refused = Store::open(dir.path());
    let message = refused.as_ref().err().map(ToString::to_string);
    // SIGKILL: the child gets no chance to unlock, the OS releases its lock.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let message = message.expect("a second process must not open a locked data directory");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "the error names the directory: {message}"
    );

    // The lock died with the process (its descriptors are closed before `wait` returns); what
    // the child wrote is there.
    let store = Store::open(dir.path()).expect("the lock is released when its process dies");
    let queue = store.queue(QueueConfig::default()).unwrap();
    assert_eq!(queue.peek(10).unwrap()[0].payload, b"child");
}
