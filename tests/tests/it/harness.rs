//! The real `consent-server` binary as a child process, its database, and the client's files.
//!
//! [`Server`] starts the binary on `127.0.0.1:0` (it prints its address as its first stdout line),
//! stops it gracefully (SIGTERM) or kills it (SIGKILL), and starts it again on the same port and
//! the same database, so a client keeps its base URL across restarts. Exactly-once checks read
//! the server's `events` and `consent_records` tables directly: with rusqlite on SQLite, with sqlx
//! on PostgreSQL (a fresh database per test on `CONSENT_TEST_POSTGRES_URL`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The organisation of the integration suite this one follows (`kndctr_5BFE…_AdobeOrg_*`).
pub(crate) const ORG: &str = "5BFE274A5F6980A50A495C08@AdobeOrg";
/// A datastream the server does not know: it gets `--default-org`, which is [`ORG`].
pub(crate) const DATASTREAM: &str = "ebebf826-a01f-4458-8cec-ef61de241c93";

/// The cookie names for [`ORG`].
pub(crate) const CONSENT_COOKIE: &str = "kndctr_5BFE274A5F6980A50A495C08_AdobeOrg_consent";
pub(crate) const IDENTITY_COOKIE: &str = "kndctr_5BFE274A5F6980A50A495C08_AdobeOrg_identity";
pub(crate) const CLUSTER_COOKIE: &str = "kndctr_5BFE274A5F6980A50A495C08_AdobeOrg_cluster";

/// Which database the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The `consent-server` binary, built when missing or older than its sources.
///
/// Cargo builds the bin targets of a package only for that package's own tests, so the binary
/// is found next to this test executable (`target/<profile>/consent-server`, where a workspace
/// build puts it) and built with `cargo build -p consent-server` when it is missing or older
/// than any source it is built from. `CONSENT_E2E_SERVER_BIN` names another binary.
pub(crate) fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CONSENT_E2E_SERVER_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/it-<hash>
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap().to_path_buf();
        let bin = profile_dir.join("consent-server");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let newest_source = [
            "crates/consent-server",
            "crates/consent-core",
            "crates/consent-tcf",
        ]
        .iter()
        .map(|dir| newest_mtime(&workspace.join(dir)))
        .chain([mtime(&workspace.join("Cargo.lock"))])
        .max()
        .flatten();
        let fresh = match (mtime(&bin), newest_source) {
            (Some(built), Some(source)) => built >= source,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !fresh {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build
                .current_dir(workspace)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "consent-server",
                    "--bin",
                    "consent-server",
                ])
                .arg("--target-dir")
                .arg(&target_dir);
            match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    build.arg("--release");
                }
                Some(profile) => {
                    build.args(["--profile", profile]);
                }
            }
            let status = build.status().unwrap();
            assert!(status.success(), "cargo build -p consent-server: {status}");
        }
        assert!(bin.exists(), "{} is missing", bin.display());
        bin
    })
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files under `dir` (sources, migrations, manifests).
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = mtime(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return newest;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "tests" || name == "benches" {
            continue;
        }
        let candidate = if path.is_dir() {
            newest_mtime(&path)
        } else {
            mtime(&path)
        };
        newest = newest.max(candidate);
    }
    newest
}

/// A PostgreSQL database made for one test, or `None` (with a note) when none is configured.
///
/// Panics when `CONSENT_TEST_REQUIRE_POSTGRES=1` and `CONSENT_TEST_POSTGRES_URL` is unset.
async fn postgres_database() -> Option<String> {
    let Ok(admin) = std::env::var("CONSENT_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CONSENT_TEST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "CONSENT_TEST_REQUIRE_POSTGRES=1 but CONSENT_TEST_POSTGRES_URL is not set"
        );
        eprintln!("note: CONSENT_TEST_POSTGRES_URL is not set; the PostgreSQL variant is not run");
        return None;
    };
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "consent_e2e_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin)
        .await
        .unwrap();
    // The name is made of digits and underscores here, not input: safe to splice into DDL.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// The running (or stopped) `consent-server` process, its database and a scratch directory.
pub(crate) struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    backend: Backend,
    database_url: String,
    dir: tempfile::TempDir,
    starts: u32,
    pg: Option<sqlx::PgPool>,
    /// Arguments added to every start (`start_with`).
    extra_args: Vec<String>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("backend", &self.backend)
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl Server {
    /// Starts a server on SQLite.
    pub(crate) async fn start() -> Self {
        Self::start_on(Backend::Sqlite).await.unwrap()
    }

    /// Starts a server on `backend`; `None` when PostgreSQL is asked for and not configured.
    pub(crate) async fn start_on(backend: Backend) -> Option<Self> {
        Self::start_with(backend, &[]).await
    }

    /// Starts a server on `backend` with `args` added to the command line of every start (files
    /// they name, a keys file for instance, are the caller's to keep).
    pub(crate) async fn start_with(backend: Backend, args: &[String]) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("consent.db").display()),
            Backend::Postgres => postgres_database().await?,
        };
        let mut server = Self {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            backend,
            database_url,
            dir,
            starts: 0,
            pg: None,
            extra_args: args.to_vec(),
        };
        server.spawn().await;
        Some(server)
    }

    /// The base URL the client is given.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A second server process on the same database (and the same extra arguments), with a
    /// port and a scratch directory of its own.
    pub(crate) async fn start_beside(&self) -> Self {
        let mut server = Self {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            backend: self.backend,
            database_url: self.database_url.clone(),
            dir: tempfile::tempdir().unwrap(),
            starts: 0,
            pg: None,
            extra_args: self.extra_args.clone(),
        };
        server.spawn().await;
        server
    }

    /// Stops the server gracefully and verifies the record chain of [`ORG`], `prod` in its
    /// database (`Db::verify_chain`): `Ok(records)` or `Err(first bad sequence number)`.
    pub(crate) async fn stop_and_verify_chain(&mut self) -> Result<i64, i64> {
        self.stop().await;
        consent_server::Db::open(&self.database_url)
            .await
            .unwrap()
            .verify_chain(ORG, "prod")
            .await
            .unwrap()
    }

    /// The server process's id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// A directory for the test's own files (client data directories), removed with the server.
    pub(crate) fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the binary (on the port of the last start, if any) and waits for its first line.
    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.starts += 1;
            let log =
                std::fs::File::create(self.dir.path().join(format!("server-{}.log", self.starts)))
                    .unwrap();
            let mut child = Command::new(server_binary())
                .arg("--listen")
                .arg(self.addr.to_string())
                .arg("--database")
                .arg(&self.database_url)
                .args(["--default-org", ORG, "--rate-limit", "0"])
                .args(&self.extra_args)
                .env_remove("DATABASE_URL")
                .env_remove("CONSENT_KEYS")
                .env_remove("CONSENT_LISTEN")
                .env_remove("CONSENT_DEFAULT_ORG")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let mut lines = BufReader::new(stdout).lines();
            let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
            if let Ok(Ok(Some(line))) = first {
                self.addr = line.trim().parse().unwrap();
                // Keep reading stdout so that the server never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                self.child = Some(child);
                return;
            }
            let _ = child.kill().await;
            // The port of a restart may still be held for a moment: try again.
            assert!(
                Instant::now() < deadline,
                "consent-server did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the server wrote to stderr, every start included.
    pub(crate) fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("server-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit.
    pub(crate) async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
            Ok(status) => assert!(status.unwrap().success(), "{}", self.log()),
            Err(_) => {
                let _ = child.kill().await;
                panic!("consent-server did not stop within 15 s on SIGTERM");
            }
        }
    }

    /// Kills the server with SIGKILL: no draining, no checkpoint.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts the server again on the same address and database.
    pub(crate) async fn restart(&mut self) {
        self.spawn().await;
    }

    // --- the database -----------------------------------------------------------------------

    async fn pg(&mut self) -> &sqlx::PgPool {
        if self.pg.is_none() {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&self.database_url)
                .await
                .unwrap();
            self.pg = Some(pool);
        }
        self.pg.as_ref().unwrap()
    }

    fn sqlite(&self) -> rusqlite::Connection {
        let path = self.database_url.trim_start_matches("sqlite://");
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    /// Runs a query returning rows of text columns (`$1`… take `params`).
    pub(crate) async fn rows(&mut self, sql: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
        match self.backend {
            Backend::Sqlite => {
                let conn = self.sqlite();
                let mut stmt = conn.prepare(sql).unwrap();
                let columns = stmt.column_count();
                stmt.query_map(rusqlite::params_from_iter(params.iter()), |row| {
                    (0..columns)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                                rusqlite::types::ValueRef::Real(n) => Some(n.to_string()),
                                rusqlite::types::ValueRef::Text(t)
                                | rusqlite::types::ValueRef::Blob(t) => {
                                    Some(String::from_utf8_lossy(t).into_owned())
                                }
                            })
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
            }
            Backend::Postgres => {
                use sqlx::Row as _;
                // Every column is cast to text in SQL by the callers' queries where needed.
                let pool = self.pg().await.clone();
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                for p in params {
                    query = query.bind(*p);
                }
                let rows = query.fetch_all(&pool).await.unwrap();
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| {
                                row.try_get::<Option<String>, _>(i)
                                    .or_else(|_| {
                                        row.try_get::<Option<i64>, _>(i)
                                            .map(|n| n.map(|n| n.to_string()))
                                    })
                                    .unwrap()
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// One number.
    pub(crate) async fn count(&mut self, sql: &str, params: &[&str]) -> i64 {
        let rows = self.rows(sql, params).await;
        rows[0][0].as_deref().unwrap().parse().unwrap()
    }

    /// Events stored, in all.
    pub(crate) async fn events_stored(&mut self) -> i64 {
        self.count("SELECT COUNT(*) FROM events", &[]).await
    }

    /// How many times the event with this id is stored (0 or 1: the key is the event id).
    pub(crate) async fn event_stored(&mut self, id: &str) -> i64 {
        self.count("SELECT COUNT(*) FROM events WHERE event_id = $1", &[id])
            .await
    }

    /// The ids of every stored event.
    pub(crate) async fn event_ids(&mut self) -> Vec<String> {
        self.rows("SELECT event_id FROM events ORDER BY event_id", &[])
            .await
            .into_iter()
            .map(|row| row[0].clone().unwrap())
            .collect()
    }

    /// The stored body of an event.
    pub(crate) async fn event_body(&mut self, id: &str) -> Value {
        let rows = self
            .rows("SELECT body FROM events WHERE event_id = $1", &[id])
            .await;
        assert_eq!(rows.len(), 1, "event {id} is not stored exactly once");
        serde_json::from_str(rows[0][0].as_deref().unwrap()).unwrap()
    }

    /// Set-consent calls the server accepted (each is recorded, a repeat included).
    pub(crate) async fn set_consent_calls(&mut self) -> i64 {
        self.count(
            "SELECT COUNT(*) FROM consent_records WHERE source = 'edge:set-consent'",
            &[],
        )
        .await
    }

    /// The payloads of the set-consent records, oldest first.
    pub(crate) async fn set_consent_records(&mut self) -> Vec<Value> {
        self.rows(
            "SELECT payload FROM consent_records WHERE source = 'edge:set-consent' ORDER BY seq",
            &[],
        )
        .await
        .into_iter()
        .map(|row| serde_json::from_str(row[0].as_deref().unwrap()).unwrap())
        .collect()
    }

    /// The stored `general` of the profile with this ECID, if there is one.
    pub(crate) async fn profile_general(&mut self, ecid: &str) -> Option<String> {
        self.rows(
            "SELECT general FROM profiles WHERE namespace = 'ECID' AND id = $1",
            &[ecid],
        )
        .await
        .into_iter()
        .next()
        .and_then(|row| row[0].clone())
    }

    // --- metrics ------------------------------------------------------------------------------

    /// `GET /metrics` (counters since this start of the server).
    pub(crate) async fn metrics(&self) -> String {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        body.to_owned()
    }

    /// A counter's value in `/metrics` (`name{labels}` as printed).
    pub(crate) async fn metric(&self, sample: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
    }

    /// Events that reached the server since it started, stored, repeated or refused.
    pub(crate) async fn events_received(&self) -> u64 {
        let mut n = 0;
        for outcome in [
            "stored",
            "duplicate",
            "refused_consent_out",
            "refused_consent_pending",
        ] {
            n += self
                .metric(&format!("consent_events_total{{outcome=\"{outcome}\"}}"))
                .await;
        }
        n
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

// --- the client's files ---------------------------------------------------------------------

/// The unexpired cookies in a data directory's `cookies.json`, as `(name, value)`, sorted.
pub(crate) fn jar(data_dir: &Path) -> Vec<(String, String)> {
    let Ok(file) = std::fs::File::open(data_dir.join("cookies.json")) else {
        return Vec::new();
    };
    let store = cookie_store::serde::json::load(std::io::BufReader::new(file)).unwrap();
    let mut cookies: Vec<(String, String)> = store
        .iter_unexpired()
        .map(|c| (c.name().to_owned(), c.value().to_owned()))
        .collect();
    cookies.sort();
    cookies
}

/// The names of the cookies in the jar, sorted.
pub(crate) fn jar_names(data_dir: &Path) -> Vec<String> {
    jar(data_dir).into_iter().map(|(name, _)| name).collect()
}

/// The value of one cookie in the jar.
pub(crate) fn cookie(data_dir: &Path, name: &str) -> Option<String> {
    jar(data_dir)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// Rewrites the jar with `edit` (the client must be shut down): removing or changing cookies as
/// a person clearing them in a browser would.
pub(crate) fn edit_jar(data_dir: &Path, edit: impl FnOnce(&mut cookie_store::CookieStore)) {
    let path = data_dir.join("cookies.json");
    let file = std::fs::File::open(&path).unwrap();
    let mut store = cookie_store::serde::json::load(std::io::BufReader::new(file)).unwrap();
    edit(&mut store);
    let mut bytes = Vec::new();
    cookie_store::serde::json::save(&store, &mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
}

/// Removes every cookie called `name` from a cookie store.
pub(crate) fn remove_cookie(store: &mut cookie_store::CookieStore, name: &str) {
    let found: Vec<(String, String)> = store
        .iter_any()
        .filter(|c| c.name() == name)
        .map(|c| {
            (
                c.domain
                    .as_cow()
                    .map(|d| d.into_owned())
                    .unwrap_or_default(),
                String::from(&c.path),
            )
        })
        .collect();
    assert!(!found.is_empty(), "no cookie {name} to remove");
    for (domain, path) in found {
        store.remove(&domain, &path, name);
    }
    assert!(
        store.iter_any().all(|c| c.name() != name),
        "cookie {name} could not be removed"
    );
}

/// The ECID the identity cookie holds (base64 of a protobuf whose field 1 is the ECID).
pub(crate) fn ecid_of_identity_cookie(value: &str) -> String {
    // A small base64 decoder: the e2e package has no base64 dependency.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut bytes = Vec::new();
    for c in value.trim().bytes().take_while(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap();
        bits = (bits << 6) | u32::try_from(v).unwrap();
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push(u8::try_from((bits >> nbits) & 0xff).unwrap());
        }
    }
    assert_eq!(bytes[0], 0x0a, "not an identity cookie");
    let len = usize::from(bytes[1]);
    String::from_utf8(bytes[2..2 + len].to_vec()).unwrap()
}
