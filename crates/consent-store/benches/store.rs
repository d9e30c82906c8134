//! consent-store's event queue against SQLite (WAL) doing the same work in the same run.
//!
//! - `append_1k_group_commit`: append 1 KiB events, syncing at most every 10 ms (consent-store's
//!   group commit; for SQLite, inserts in a transaction committed every 10 ms with
//!   `synchronous=FULL`), with a final sync so every event is durable when the clock stops.
//! - `append_1k_every_write`: each append durable before the next (SQLite: one autocommit insert
//!   each, `synchronous=FULL`).
//! - `recover_100k`: open a queue of 100,000 waiting 1 KiB events after a restart (warm page
//!   cache), and open it and read every event back.
//! - `ack_compact_10k`: acknowledge 10,000 events in 100 durable batches, deleting what they
//!   free (SQLite: `DELETE` per batch, then a `wal_checkpoint(TRUNCATE)`), with 4 MiB segments.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark has no caller to report a failure to"
)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use consent_store::{DiskIo, EventQueue, QueueConfig, SyncPolicy};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};

const EVENT: usize = 1024;
const GROUP: Duration = Duration::from_millis(10);
const RECOVER: u64 = 100_000;
const ACK_EVENTS: u64 = 10_000;
const ACK_BATCH: u64 = 100;

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn queue_config(sync: SyncPolicy) -> QueueConfig {
    QueueConfig::default()
        .with_sync(sync)
        .with_max_events(u64::MAX)
        .with_max_bytes(u64::MAX)
        .with_segment_bytes(8 << 20)
}

fn sqlite(path: &Path, synchronous: &str) -> Connection {
    let conn = Connection::open(path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", synchronous)
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)",
    )
    .unwrap();
    conn
}

/// Appends `iters` events to `queue` and makes them durable; returns the time taken.
fn store_append(queue: &mut EventQueue, payload: &[u8], iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(queue.append(payload).unwrap());
    }
    queue.sync().unwrap();
    let elapsed = start.elapsed();
    // Release everything, untimed, so the disk does not fill up across samples.
    if !queue.is_empty() {
        queue.ack(queue.next_seq() - 1).unwrap();
        queue.sync().unwrap();
    }
    elapsed
}

fn sqlite_append(conn: &Connection, payload: &[u8], iters: u64, group: bool) -> Duration {
    let mut insert = conn
        .prepare_cached("INSERT INTO events (payload) VALUES (?1)")
        .unwrap();
    let start = Instant::now();
    let mut last = Instant::now();
    if group {
        conn.execute_batch("BEGIN").unwrap();
    }
    for _ in 0..iters {
        insert.execute(params![payload]).unwrap();
        if group && last.elapsed() >= GROUP {
            conn.execute_batch("COMMIT; BEGIN").unwrap();
            last = Instant::now();
        }
    }
    if group {
        conn.execute_batch("COMMIT").unwrap();
    }
    let elapsed = start.elapsed();
    conn.execute_batch("DELETE FROM events; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    elapsed
}

fn append(c: &mut Criterion) {
    let payload = vec![0x5a; EVENT];
    for (name, sync, group, synchronous) in [
        (
            "append_1k_group_commit_10ms",
            SyncPolicy::GroupCommit(GROUP),
            true,
            "FULL",
        ),
        (
            "append_1k_every_write",
            SyncPolicy::EveryWrite,
            false,
            "FULL",
        ),
    ] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        g.sample_size(10);
        let dir = tmpdir();
        let mut queue =
            EventQueue::open(DiskIo, dir.path().join("queue"), queue_config(sync)).unwrap();
        g.bench_function("consent-store", |b| {
            b.iter_custom(|iters| store_append(&mut queue, &payload, iters));
        });
        drop(queue);
        let conn = sqlite(&dir.path().join("events.db"), synchronous);
        g.bench_function("sqlite", |b| {
            b.iter_custom(|iters| sqlite_append(&conn, &payload, iters, group));
        });
        g.finish();
    }
}

fn recover(c: &mut Criterion) {
    let dir = tmpdir();
    let qdir = dir.path().join("queue");
    let payload = vec![0x5a; EVENT];
    {
        let mut queue = EventQueue::open(DiskIo, &qdir, queue_config(SyncPolicy::None)).unwrap();
        for _ in 0..RECOVER {
            queue.append(&payload).unwrap();
        }
        queue.sync().unwrap();
    }
    let db = dir.path().join("events.db");
    {
        let mut conn = sqlite(&db, "FULL");
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare("INSERT INTO events (payload) VALUES (?1)")
                .unwrap();
            for _ in 0..RECOVER {
                insert.execute(params![payload]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let config = queue_config(SyncPolicy::GroupCommit(GROUP));

    let mut g = c.benchmark_group("recover_100k");
    g.sample_size(10);
    g.throughput(Throughput::Elements(RECOVER));
    g.bench_function(BenchmarkId::new("consent-store", "open"), |b| {
        b.iter(|| {
            let queue = EventQueue::open(DiskIo, &qdir, config).unwrap();
            assert_eq!(queue.len(), RECOVER);
            queue
        });
    });
    g.bench_function(BenchmarkId::new("sqlite", "open+count"), |b| {
        b.iter(|| {
            let conn = sqlite(&db, "FULL");
            let n: u64 = conn
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, RECOVER);
            conn
        });
    });
    g.bench_function(BenchmarkId::new("consent-store", "open+read_all"), |b| {
        b.iter(|| {
            let queue = EventQueue::open(DiskIo, &qdir, config).unwrap();
            let (mut seq, mut bytes) = (0, 0);
            loop {
                let events = queue.read_from(seq, 4096).unwrap();
                let Some(last) = events.last() else { break };
                seq = last.seq + 1;
                bytes += events.iter().map(|e| e.payload.len()).sum::<usize>();
            }
            assert_eq!(bytes as u64, RECOVER * EVENT as u64);
        });
    });
    g.bench_function(BenchmarkId::new("sqlite", "open+read_all"), |b| {
        b.iter(|| {
            let conn = sqlite(&db, "FULL");
            let mut stmt = conn
                .prepare("SELECT seq, payload FROM events ORDER BY seq")
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            let mut bytes = 0;
            while let Some(row) = rows.next().unwrap() {
                let payload: Vec<u8> = row.get(1).unwrap();
                bytes += payload.len();
            }
            assert_eq!(bytes as u64, RECOVER * EVENT as u64);
        });
    });
    g.finish();
}

fn ack_compact(c: &mut Criterion) {
    let payload = vec![0x5a; EVENT];
    let mut g = c.benchmark_group("ack_compact_10k");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ACK_EVENTS));
    let dir = tmpdir();
    // The default segment size (4 MiB): acknowledging 10,000 events deletes two or three segments.
    let config = queue_config(SyncPolicy::GroupCommit(GROUP))
        .with_segment_bytes(QueueConfig::default().segment_bytes);
    let mut queue = EventQueue::open(DiskIo, dir.path().join("queue"), config).unwrap();
    g.bench_function("consent-store", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..ACK_EVENTS {
                    queue.append(&payload).unwrap();
                }
                queue.sync().unwrap();
                let start = Instant::now();
                for _ in 0..ACK_EVENTS / ACK_BATCH {
                    queue.ack(queue.head() + ACK_BATCH - 1).unwrap();
                    queue.sync().unwrap();
                }
                total += start.elapsed();
                assert!(queue.is_empty());
            }
            total
        });
    });
    drop(queue);
    let conn = sqlite(&dir.path().join("events.db"), "FULL");
    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                conn.execute_batch("BEGIN").unwrap();
                {
                    let mut insert = conn
                        .prepare_cached("INSERT INTO events (payload) VALUES (?1)")
                        .unwrap();
                    for _ in 0..ACK_EVENTS {
                        insert.execute(params![payload]).unwrap();
                    }
                }
                conn.execute_batch("COMMIT").unwrap();
                let first: i64 = conn
                    .query_row("SELECT min(seq) FROM events", [], |r| r.get(0))
                    .unwrap();
                let start = Instant::now();
                let mut delete = conn
                    .prepare_cached("DELETE FROM events WHERE seq <= ?1")
                    .unwrap();
                for batch in 1..=(ACK_EVENTS / ACK_BATCH) as i64 {
                    delete
                        .execute(params![first + batch * ACK_BATCH as i64 - 1])
                        .unwrap();
                }
                conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                    .unwrap();
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
}

criterion_group!(benches, append, recover, ack_compact);
criterion_main!(benches);
