//! A child process appending to the queue is killed with SIGKILL at random instants; after every
//! restart each append the child reported durable is there exactly once and the queue opens cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use consent_store::{DiskIo, EventQueue, QueueConfig, SyncPolicy};

const CHILD_DIR: &str = "CONSENT_STORE_KILL_CHILD_DIR";
const CHILD_ROUND: &str = "CONSENT_STORE_KILL_CHILD_ROUND";
const ROUNDS: u64 = 40;

fn config(round: u64) -> QueueConfig {
    let sync = if round.is_multiple_of(2) {
        SyncPolicy::EveryWrite
    } else {
        SyncPolicy::GroupCommit(Duration::from_millis(2))
    };
    QueueConfig::default()
        .with_sync(sync)
        .with_segment_bytes(16 << 10)
        .with_max_events(1 << 20)
        .with_max_bytes(1 << 30)
}

/// A small xorshift generator: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The child: append forever, reporting each append once it is durable. Stops by itself after a
/// few seconds in case the parent died, so no process is left behind.
fn child(dir: &str) -> ! {
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let config = config(round);
    let mut queue = EventQueue::open(DiskIo, dir, config).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    let started = Instant::now();
    let mut pending: Vec<(u64, String)> = Vec::new();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        let id = format!("r{round}-{i}");
        let filler = "x".repeat((i * 37 % 500) as usize);
        let appended = queue.append(format!("{id}|{filler}").as_bytes()).unwrap();
        pending.push((appended.seq, id));
        let durable = queue.durable_seq();
        pending.retain(|(seq, id)| {
            if *seq < durable {
                writeln!(out, "ACK {seq} {id}").unwrap();
                false
            } else {
                true
            }
        });
        out.flush().unwrap();
        i += 1;
    }
    std::process::exit(0)
}

#[test]
fn sigkill_at_random_instants_loses_no_acknowledged_append() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(&dir);
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Every append a child reported durable, by sequence number.
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut torn_rounds = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill::sigkill_at_random_instants_loses_no_acknowledged_append",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read the child's reports as they come, so it never blocks on a full pipe.
        let mut pipe = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0; 8192];
            let mut signalled = false;
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                all.extend_from_slice(&buf[..n]);
                if !signalled && all.windows(6).any(|w| w == b"READY\n") {
                    signalled = true;
                    let _ = ready_tx.send(());
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        });
        // Most kills land while the child appends; one in five anywhere, recovery included.
        if rng.below(5) != 0 {
            let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        }
        std::thread::sleep(Duration::from_micros(rng.below(60_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let stdout = reader.join().unwrap();
        // A line cut short by the kill is not a report.
        let complete = stdout.rfind('\n').map_or("", |end| &stdout[..end]);
        for line in complete.lines().filter_map(|l| l.strip_prefix("ACK ")) {
            let (seq, id) = line.split_once(' ').unwrap();
            let seq: u64 = seq.parse().unwrap();
            if let Some(old) = acked.insert(seq, id.to_owned()) {
                panic!("seed {seed}: sequence number {seq} given to {old} and to {id}");
            }
        }

        let mut queue = EventQueue::open(DiskIo, dir.path(), config(round))
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen failed: {e}"));
        if queue.stats().torn_bytes > 0 {
            torn_rounds += 1;
        }
        let events = queue.peek(usize::MAX).unwrap();
        let mut seen = BTreeSet::new();
        for (i, event) in events.iter().enumerate() {
            assert_eq!(
                event.seq,
                queue.head() + i as u64,
                "seed {seed}: contiguous"
            );
            let text = std::str::from_utf8(&event.payload).unwrap();
            let id = text.split('|').next().unwrap();
            assert!(
                seen.insert(id.to_owned()),
                "seed {seed}: {id} is in the queue twice"
            );
        }
        for (seq, id) in acked.range(queue.head()..) {
            let event = events
                .get((seq - queue.head()) as usize)
                .unwrap_or_else(|| panic!("seed {seed} round {round}: acknowledged {id} lost"));
            assert!(
                event.payload.starts_with(format!("{id}|").as_bytes()),
                "seed {seed}: {id}"
            );
        }
        // Release some of the queue now and then, so segments get deleted between kills.
        if !events.is_empty() && rng.below(3) == 0 {
            queue
                .ack(queue.head() + rng.below(events.len() as u64))
                .unwrap();
            queue.sync().unwrap();
        }
    }
    println!(
        "{} appends acknowledged, {torn_rounds} rounds with a torn tail",
        acked.len()
    );
    assert!(acked.len() as u64 > ROUNDS, "the children got to append");
}
