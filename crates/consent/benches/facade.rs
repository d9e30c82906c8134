//! The facade (`consent::Client`) next to its peers, in one run (`docs/benchmarks.md`, section
//! "consent (facade)"):
//!
//! 1. `enqueue/*`: durable enqueues of 1 KiB events while consent is pending (group commit: the
//!    driver thread makes every waiting append durable with one sync), with 1, 64, 1,024 and
//!    4,096 enqueues in flight, next to SQLite committing one transaction per event (rusqlite,
//!    bundled SQLite, WAL, `synchronous=FULL`).
//! 2. `end_to_end/*`: events delivered to a real `consent-server` (release build, SQLite, rate
//!    limit off) on loopback: the client with consent "in" enqueues 5,000 events and flushes,
//!    next to a reqwest loop that POSTs one event per request to the same server (and, as a
//!    reference, not a peer, a reqwest loop POSTing 256 events per request).
//! 3. `restart_1m/*`: `build()` + `shutdown()` of a pending client on a data directory holding
//!    1,000,000 waiting events of 200 bytes; the resident memory of a fresh process that builds
//!    that client is printed to stderr (the bench re-executes itself with `CONSENT_BENCH_RSS_DIR`).
//!
//! `cargo bench -p consent --bench facade` (criterion options after `--`; a filter such as
//! `-- restart_1m` skips the other groups and their setup).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark: failing loudly is what it should do"
)]

use std::cell::OnceCell;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use serde_json::{Value, json};
use tokio::task::JoinSet;

const ORG: &str = "BENCH0123456789@AdobeOrg";
const DATASTREAM: &str = "ebebf826-a01f-4458-8cec-ef61de241c93";
/// Never contacted: a pending client sends nothing.
const NOWHERE: &str = "http://127.0.0.1:9";
/// Set in the child process that reports its resident memory.
const RSS_ENV: &str = "CONSENT_BENCH_RSS_DIR";
const EVENTS_1M: u64 = 1_000_000;
const E2E_EVENTS: u64 = 5_000;

/// CPU time (user + system, all threads) of a process so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the command name).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Wall time, CPU time of this process and of the server, and events, over every sample of one
/// benchmark (warm-up included): printed once it is done.
#[derive(Default)]
struct CpuTally {
    wall: Duration,
    cpu: Duration,
    server_cpu: Duration,
    events: u64,
}

impl CpuTally {
    fn report(&self, name: &str) {
        if self.events == 0 {
            return; // filtered out
        }
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.events.max(1) as f64;
        eprintln!(
            "{name}: {} events, CPU {:.2} µs/event in this process ({:.2} cores busy){}",
            self.events,
            per(self.cpu),
            self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9),
            if self.server_cpu.is_zero() {
                String::new()
            } else {
                format!(
                    ", {:.2} µs/event in consent-server ({:.2} cores busy)",
                    per(self.server_cpu),
                    self.server_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
                )
            }
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Where the benches keep their files: ext4 under the target directory.
fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("consent-facade-bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// XDM whose queued payload (8 bytes of order key + the Edge event as JSON, with a 36-character
/// `_id` the client adds) is exactly `size` bytes.
fn xdm_of_size(size: usize) -> Value {
    let with = |pad: usize| {
        json!({
            "eventType": "web.webpagedetails.pageViews",
            "web": {"webPageDetails": {"name": "x".repeat(pad)}},
        })
    };
    let base = payload_len(&with(0));
    assert!(base <= size, "an empty event is already {base} bytes");
    let xdm = with(size - base);
    assert_eq!(payload_len(&xdm), size);
    xdm
}

/// What the client keeps on disk for this XDM (`Event::to_payload`: order key + JSON).
fn payload_len(xdm: &Value) -> usize {
    8 + serde_json::to_vec(&consent_transport::Event::new(xdm.clone()))
        .unwrap()
        .len()
}

async fn client(dir: &Path, base_url: &str, default_consent: &str) -> consent::Client {
    consent::Client::builder()
        .edge_base_url(base_url)
        .datastream_id(DATASTREAM)
        .org_id(ORG)
        .default_consent(default_consent)
        .data_dir(dir)
        .build()
        .await
        .unwrap()
}

/// `total` enqueues by `in_flight` tasks (each awaits its enqueue before the next): returns once
/// every one of them is durable.
async fn enqueue_all(client: &consent::Client, xdm: &Value, total: u64, in_flight: u64) {
    let tasks = in_flight.min(total).max(1);
    let mut set = JoinSet::new();
    for k in 0..tasks {
        let n = total / tasks + u64::from(k < total % tasks);
        let client = client.clone();
        let xdm = xdm.clone();
        set.spawn(async move {
            for _ in 0..n {
                client
                    .enqueue(consent::Event::new(xdm.clone()))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 1. enqueue

fn enqueue(c: &mut Criterion) {
    let rt = runtime();
    let xdm = xdm_of_size(1024);
    let payload = serde_json::to_vec(&consent_transport::Event::new(xdm.clone())).unwrap();
    let mut payload_1k = vec![0u8; 8];
    payload_1k.extend_from_slice(&payload);
    assert_eq!(payload_1k.len(), 1024);

    let mut group = c.benchmark_group("enqueue");
    group.throughput(Throughput::Elements(1));
    for in_flight in [1u64, 64, 1024, 4096] {
        let tally = std::cell::RefCell::new(CpuTally::default());
        group.bench_with_input(
            BenchmarkId::new("facade_pending_1KiB_in_flight", in_flight),
            &in_flight,
            |b, &in_flight| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        // A fresh client and data directory per sample, so the queue never fills.
                        let dir = tempfile::tempdir_in(scratch()).unwrap();
                        let client = client(dir.path(), NOWHERE, "pending").await;
                        let cpu = cpu_time("self");
                        let start = Instant::now();
                        enqueue_all(&client, &xdm, iters, in_flight).await;
                        let elapsed = start.elapsed();
                        {
                            let mut t = tally.borrow_mut();
                            t.wall += elapsed;
                            t.cpu += cpu_time("self") - cpu;
                            t.events += iters;
                        }
                        let stats = client.stats();
                        assert_eq!(
                            (stats.enqueued, stats.queued, stats.requests),
                            (iters, iters, 0)
                        );
                        client.shutdown().await.unwrap();
                        elapsed
                    })
                });
            },
        );
        tally.borrow().report(&format!(
            "enqueue/facade_pending_1KiB_in_flight/{in_flight}"
        ));
    }
    // The peer: the same 1,024 bytes, one INSERT committed per event.
    let sqlite_tally = std::cell::RefCell::new(CpuTally::default());
    group.bench_function("sqlite_wal_sync_full_txn_per_event_1KiB", |b| {
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             CREATE TABLE events (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);",
        )
        .unwrap();
        let mut insert = conn
            .prepare("INSERT INTO events (payload) VALUES (?1)")
            .unwrap();
        // Autocommit: every execute is BEGIN; INSERT; COMMIT (one WAL fsync).
        b.iter_custom(|iters| {
            let cpu = cpu_time("self");
            let start = Instant::now();
            for _ in 0..iters {
                insert.execute([&payload_1k]).unwrap();
            }
            let elapsed = start.elapsed();
            let mut t = sqlite_tally.borrow_mut();
            t.wall += elapsed;
            t.cpu += cpu_time("self") - cpu;
            t.events += iters;
            elapsed
        });
    });
    sqlite_tally
        .borrow()
        .report("enqueue/sqlite_wal_sync_full_txn_per_event_1KiB");
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. end to end

struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The consent-server binary next to this bench's executable (`target/release`), built once
/// if it is missing (`CONSENT_SERVER_BIN` names another one).
fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CONSENT_SERVER_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().unwrap();
    let release = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = release.join("consent-server");
    if !bin.exists() {
        eprintln!(
            "building {} (cargo build --release -p consent-server)",
            bin.display()
        );
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args([
                "build",
                "--release",
                "-p",
                "consent-server",
                "--bin",
                "consent-server",
            ])
            .current_dir(workspace_root())
            .status()
            .unwrap();
        assert!(status.success(), "cannot build consent-server");
    }
    bin
}

fn start_server() -> Server {
    let bin = server_binary();
    let dir = tempfile::tempdir_in(scratch()).unwrap();
    let db = dir.path().join("consent.db");
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--rate-limit", "0"])
        // DATASTREAM is in no keys file: served with the default organisation.
        .arg("--allow-unknown-datastreams")
        .arg("--database")
        .arg(format!("sqlite://{}", db.display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_owned();
    assert!(!addr.is_empty(), "consent-server printed no address");
    eprintln!("consent-server {} listening on {addr}", bin.display());
    Server {
        child,
        addr,
        _dir: dir,
    }
}

fn end_to_end(c: &mut Criterion) {
    let rt = runtime();
    let server: OnceCell<Server> = OnceCell::new();
    let xdm = json!({"eventType": "web.webpagedetails.pageViews"});
    let tally = std::cell::RefCell::new(CpuTally::default());
    // Runs `work`, adding its wall and CPU time (here and in the server) to the tally.
    let measured = |server: &Server, events: u64, work: &mut dyn FnMut()| -> Duration {
        let pid = server.child.id().to_string();
        let (cpu, server_cpu) = (cpu_time("self"), cpu_time(&pid));
        let start = Instant::now();
        work();
        let elapsed = start.elapsed();
        let mut t = tally.borrow_mut();
        t.wall += elapsed;
        t.cpu += cpu_time("self") - cpu;
        t.server_cpu += cpu_time(&pid) - server_cpu;
        t.events += events;
        elapsed
    };

    let mut group = c.benchmark_group("end_to_end");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(E2E_EVENTS));
    group.bench_function("facade_in_enqueue_5000_then_flush", |b| {
        let srv = server.get_or_init(start_server);
        let base = format!("http://{}", srv.addr);
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir_in(scratch()).unwrap();
            let client = rt.block_on(client(dir.path(), &base, "in"));
            let mut total = Duration::ZERO;
            for i in 1..=iters {
                total += measured(srv, E2E_EVENTS, &mut || {
                    rt.block_on(async {
                        enqueue_all(&client, &xdm, E2E_EVENTS, 1024).await;
                        client.flush().await.unwrap();
                    });
                });
                let stats = client.stats();
                assert_eq!(stats.delivered, i * E2E_EVENTS, "{stats:?}");
            }
            let stats = client.stats();
            assert_eq!(
                (stats.queued, stats.dropped_rejected, stats.retried),
                (0, 0, 0),
                "{stats:?}"
            );
            rt.block_on(client.shutdown()).unwrap();
            total
        });
    });
    tally
        .take()
        .report("end_to_end/facade_in_enqueue_5000_then_flush");

    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let http = reqwest::Client::builder().build().unwrap();
    let counter = AtomicU64::new(0);
    let run = std::process::id();
    // One POST of `per_request` events, each with an id of its own.
    let post = |url: &str, per_request: u64| {
        let events: Vec<Value> = (0..per_request)
            .map(|_| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                json!({"xdm": {
                    "_id": format!("peer-{run}-{n}"),
                    "eventType": "web.webpagedetails.pageViews",
                }})
            })
            .collect();
        let request = http.post(url).json(&json!({ "events": events }));
        async move {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
        }
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("reqwest_one_post_per_event", |b| {
        let srv = server.get_or_init(start_server);
        let url = format!("http://{}/ee/v1/interact?configId={DATASTREAM}", srv.addr);
        b.iter_custom(|iters| {
            measured(srv, iters, &mut || {
                rt.block_on(async {
                    for _ in 0..iters {
                        post(&url, 1).await;
                    }
                });
            })
        });
    });
    tally.take().report("end_to_end/reqwest_one_post_per_event");
    // Not a peer: the server's own ceiling for requests as the client makes them (256 small
    // events per request, one request at a time), to show where the time goes.
    group.throughput(Throughput::Elements(256));
    group.bench_function("reference_reqwest_256_events_per_post", |b| {
        let srv = server.get_or_init(start_server);
        let url = format!("http://{}/ee/v1/interact?configId={DATASTREAM}", srv.addr);
        b.iter_custom(|iters| {
            measured(srv, iters * 256, &mut || {
                rt.block_on(async {
                    for _ in 0..iters {
                        post(&url, 256).await;
                    }
                });
            })
        });
    });
    tally
        .take()
        .report("end_to_end/reference_reqwest_256_events_per_post");
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. a million events waiting

/// A data directory holding 1,000,000 waiting 200-byte events, made once per run.
fn prepare_1m(rt: &tokio::runtime::Runtime) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(scratch()).unwrap();
    let xdm = xdm_of_size(200);
    rt.block_on(async {
        let client = client(dir.path(), NOWHERE, "pending").await;
        let start = Instant::now();
        enqueue_all(&client, &xdm, EVENTS_1M, 1024).await;
        let took = start.elapsed();
        assert_eq!(client.stats().queued, EVENTS_1M);
        client.shutdown().await.unwrap();
        eprintln!(
            "prepared {EVENTS_1M} events of 200 bytes in {took:.2?} ({:.0} events/s), {} MiB on disk",
            EVENTS_1M as f64 / took.as_secs_f64(),
            du(dir.path()) >> 20
        );
    });
    dir
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            du(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Runs this executable again as a fresh process that builds a client on `dir`; returns the line
/// it prints (events queued, build time, VmRSS before and after, VmHWM).
fn child_rss(dir: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(RSS_ENV, dir)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "the memory child failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The child: build a pending client on the directory, report memory, shut down.
fn rss_main(dir: PathBuf) {
    let rt = runtime();
    let before = proc_status("VmRSS:");
    rt.block_on(async {
        let start = Instant::now();
        let client = client(&dir, NOWHERE, "pending").await;
        let took = start.elapsed();
        let queued = client.stats().queued;
        // Let the driver settle, then read the figures while the client is up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (rss, hwm) = (proc_status("VmRSS:"), proc_status("VmHWM:"));
        client.shutdown().await.unwrap();
        println!(
            "queued={queued} build_ms={:.1} rss_before_kib={before} rss_kib={rss} hwm_kib={hwm}",
            took.as_secs_f64() * 1e3
        );
    });
}

fn restart_1m(c: &mut Criterion) {
    let rt = runtime();
    let prepared: OnceCell<tempfile::TempDir> = OnceCell::new();
    let mut group = c.benchmark_group("restart_1m");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("build_and_shutdown_pending_1m_200B", |b| {
        let dir = prepared
            .get_or_init(|| {
                let dir = prepare_1m(&rt);
                // Memory of fresh processes (three each): an empty data directory, then the
                // prepared one.
                let empty = tempfile::tempdir_in(scratch()).unwrap();
                for _ in 0..3 {
                    eprintln!(
                        "fresh process, empty data dir:        {}",
                        child_rss(empty.path())
                    );
                    eprintln!(
                        "fresh process, 1,000,000 events wait: {}",
                        child_rss(dir.path())
                    );
                }
                dir
            })
            .path()
            .to_path_buf();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let client = client(&dir, NOWHERE, "pending").await;
                    client.shutdown().await.unwrap();
                    total += start.elapsed();
                    assert_eq!(client.stats().queued, EVENTS_1M);
                }
                total
            })
        });
    });
    group.finish();
    // Keep the prepared directory alive until the group is done.
    drop(prepared);
}

fn main() {
    if let Some(dir) = std::env::var_os(RSS_ENV) {
        rss_main(dir.into());
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    enqueue(&mut c);
    end_to_end(&mut c);
    restart_1m(&mut c);
    c.final_summary();
}
