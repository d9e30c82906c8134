//! `cargo xtask soak [--minutes N] [--rate R] [--cycles C] [--postgres]`: the long versions of the
//! soak test (`tests/tests/it/soak.rs`) and of the client crash cycles
//! (`tests/tests/it/crash.rs`), with a progress bar and a summary.
//!
//! - The server is the release build of `consent-server` (built first), the load the e2e
//!   package's soak test, run once per database with `cargo test` (no per-test timeout).
//! - SQLite always; PostgreSQL too when `CONSENT_TEST_POSTGRES_URL` names a server, or with
//!   `--postgres`, which starts a throwaway cluster with
//!   `crates/consent-server/scripts/pg-test-cluster.sh` and stops it at the end.
//! - Each database gets one warm-up minute, then N one-minute windows (default 10); the test
//!   writes a JSON line per window to `target/xtask-soak/report.jsonl`, which the progress bar
//!   follows, and the summary prints per window the requests, errors, p50, p99 and the server's
//!   resident memory. The test's own output is in `target/xtask-soak/soak.log`.
//! - Then the client is killed at random instants C times (default 1,000; CI runs 50) on each
//!   database, and the summary gives the cycles, the events enqueued, delivered once, withdrawn
//!   and never stored, lost and duplicated (`target/xtask-soak/crash.jsonl`).
//! - The task fails when a test does: an error, memory that moved more than 10 % between the
//!   first and the last window, a profile that does not hold the last acknowledged consent, a
//!   record chain that does not verify, or an event lost, doubled or delivered after its consent
//!   was withdrawn.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

const USAGE: &str = "cargo xtask soak [--minutes N] [--rate R] [--cycles C] [--postgres]";

#[derive(Debug, PartialEq, Eq)]
struct Options {
    minutes: u64,
    rate: u64,
    cycles: u64,
    postgres: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        minutes: 10,
        rate: 200,
        cycles: 1_000,
        postgres: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64> {
            let value = args
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            value
                .parse()
                .with_context(|| format!("{name} {value:?} is not a whole number"))
        };
        match arg.as_str() {
            "--minutes" => options.minutes = number("--minutes")?,
            "--rate" => options.rate = number("--rate")?,
            "--cycles" => options.cycles = number("--cycles")?,
            "--postgres" => options.postgres = true,
            other => bail!("unknown argument {other:?}: {USAGE}"),
        }
    }
    if options.minutes < 4 {
        bail!("--minutes must be at least 4 (one-minute windows; CI runs the short version)");
    }
    if options.rate == 0 {
        bail!("--rate must be at least 1 request per second");
    }
    Ok(options)
}

/// A throwaway PostgreSQL cluster, stopped when dropped.
struct Cluster {
    script: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn start_cluster(root: &Path) -> Result<(Cluster, String)> {
    let script = root.join("crates/consent-server/scripts/pg-test-cluster.sh");
    let dir = tempfile::tempdir().context("a directory for the cluster")?;
    let output = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(dir.path())
        .stderr(Stdio::inherit())
        .output()
        .context("starting PostgreSQL")?;
    let cluster = Cluster { script, dir };
    let url = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !output.status.success() || !url.starts_with("postgres") {
        bail!("pg-test-cluster.sh did not start a cluster (it printed {url:?})");
    }
    Ok((cluster, url))
}

/// One window of the report, as the summary prints it.
fn row(line: &serde_json::Value) -> Option<String> {
    Some(format!(
        "{:<9} {:>3}/{:<3} {:>9} {:>7} {:>9.2} {:>9.2} {:>10.1}",
        line["backend"].as_str()?,
        line["window"].as_u64()?,
        line["of"].as_u64()?,
        line["requests"].as_u64()?,
        line["errors"].as_u64()?,
        line["p50_ms"].as_f64()?,
        line["p99_ms"].as_f64()?,
        line["rss_kib"].as_f64()? / 1024.0
    ))
}

fn summary(line: &serde_json::Value) -> Option<String> {
    Some(format!(
        "{}: {} requests, {} errors, RSS {:.1} → {:.1} MiB ({:+.1} %), {} identities ({} wrong), \
         chain {}",
        line["backend"].as_str()?,
        line["requests"].as_u64()?,
        line["errors"].as_u64()?,
        line["rss_first_kib"].as_f64()? / 1024.0,
        line["rss_last_kib"].as_f64()? / 1024.0,
        line["rss_growth"].as_f64()? * 100.0,
        line["identities"].as_u64()?,
        line["wrong"].as_u64()?,
        line["chain"].as_str()?
    ))
}

fn read_report(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `cargo test` of the e2e tests matching `filter`, one at a time and with their output, against
/// `server_bin`, on SQLite and, given a URL, PostgreSQL (then required, not skipped).
fn e2e_test(filter: &str, server_bin: &Path, postgres: Option<&str>) -> Command {
    let mut test = crate::cargo();
    test.args([
        "test",
        "--locked",
        "-p",
        "consent-e2e",
        "--test",
        "it",
        "--",
        filter,
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("CONSENT_E2E_SERVER_BIN", server_bin);
    match postgres {
        Some(url) => {
            test.env("CONSENT_TEST_POSTGRES_URL", url)
                .env("CONSENT_TEST_REQUIRE_POSTGRES", "1");
        }
        None => {
            test.env_remove("CONSENT_TEST_POSTGRES_URL");
        }
    }
    test
}

/// `cargo xtask soak …`.
pub(crate) fn soak(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let root = crate::project_root();
    let out = crate::target_dir().join("xtask-soak");
    let server_bin = crate::target_dir().join("release").join("consent-server");
    fs::create_dir_all(&out)?;
    let report = out.join("report.jsonl");
    let _ = fs::remove_file(&report);

    let mut build = crate::cargo();
    build.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "consent-server",
        "--bin",
        "consent-server",
    ]);
    crate::run("cargo build --release -p consent-server", build)?;
    let mut build = crate::cargo();
    build.args([
        "test",
        "--locked",
        "-p",
        "consent-e2e",
        "--test",
        "it",
        "--no-run",
    ]);
    crate::run("cargo test -p consent-e2e --no-run", build)?;

    let mut cluster = None;
    let postgres = match std::env::var("CONSENT_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) if options.postgres => {
            let (c, url) = start_cluster(&root)?;
            cluster = Some(c);
            Some(url)
        }
        Err(_) => {
            eprintln!(
                "note: SQLite only; --postgres (or CONSENT_TEST_POSTGRES_URL) adds PostgreSQL"
            );
            None
        }
    };
    let backends: u64 = if postgres.is_some() { 2 } else { 1 };

    let secs = options.minutes * 60;
    let mut test = e2e_test("soak::", &server_bin, postgres.as_deref());
    test.env("CONSENT_SOAK_SECS", secs.to_string())
        .env("CONSENT_SOAK_RATE", options.rate.to_string())
        .env("CONSENT_SOAK_REPORT", &report);
    let log_path = out.join("soak.log");
    let log = fs::File::create(&log_path)?;
    test.stdout(log.try_clone()?).stderr(log);

    eprintln!(
        "\n==> soak: {} min per database after a minute of warm-up, {} requests/s, {}",
        options.minutes,
        options.rate,
        if postgres.is_some() {
            "SQLite and PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let windows = options.minutes * backends;
    let bar = crate::progress_bar(windows, " windows");
    bar.set_message("warming up");
    let mut child = test.spawn().context("starting the soak test")?;
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let (bar, done, report) = (bar.clone(), done.clone(), report.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let lines = read_report(&report);
                let windows: Vec<_> = lines.iter().filter(|l| l["window"].is_u64()).collect();
                bar.set_position(windows.len() as u64);
                if let Some(last) = windows.last() {
                    bar.set_message(format!(
                        "{} window {}: p99 {:.1} ms, RSS {:.1} MiB, {} errors",
                        last["backend"].as_str().unwrap_or("?"),
                        last["window"],
                        last["p99_ms"].as_f64().unwrap_or(0.0),
                        last["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                        last["errors"]
                    ));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let status = child.wait()?;
    done.store(true, Ordering::Relaxed);
    let _ = follower.join();
    bar.finish_and_clear();

    let lines = read_report(&report);
    eprintln!(
        "\n{:<9} {:>7} {:>9} {:>7} {:>9} {:>9} {:>10}",
        "database", "window", "requests", "errors", "p50 ms", "p99 ms", "RSS MiB"
    );
    for line in &lines {
        if let Some(text) = row(line) {
            eprintln!("{text}");
            if let Some(by) = line["p99_ms_by_request"].as_object() {
                let parts: Vec<String> = by
                    .iter()
                    .map(|(op, p)| format!("{op} {:.1}", p.as_f64().unwrap_or(0.0)))
                    .collect();
                eprintln!("          p99 ms by request: {}", parts.join(", "));
            }
        }
    }
    for line in &lines {
        if let Some(text) = summary(line) {
            eprintln!("{text}");
        }
    }
    // The crash cycles run whatever the soak said: both sets of figures are wanted.
    let soak_failed = if status.success() {
        eprintln!("soak: passed; report in {}", report.display());
        None
    } else {
        eprintln!(
            "soak: FAILED ({status}); its output is in {}",
            log_path.display()
        );
        Some(log_path)
    };

    // The client killed at random instants, many times.
    let crash_report = out.join("crash.jsonl");
    let _ = fs::remove_file(&crash_report);
    let crash_log = out.join("crash.log");
    let mut crash = e2e_test(
        "crash::child_killed_at_random_instants",
        &server_bin,
        postgres.as_deref(),
    );
    crash
        .env("CONSENT_CRASH_CYCLES", options.cycles.to_string())
        .env("CONSENT_CRASH_REPORT", &crash_report);
    let log = fs::File::create(&crash_log)?;
    crash.stdout(log.try_clone()?).stderr(log);
    eprintln!(
        "\n==> client crash cycles: {} kills per database",
        options.cycles
    );
    let spinner = indicatif::ProgressBar::new_spinner();
    // A spinner: the cycles report only at the end.
    spinner.enable_steady_tick(Duration::from_millis(200));
    spinner.set_message(format!("{} cycles", options.cycles));
    let status = crash.status().context("starting the crash cycles")?;
    spinner.finish_and_clear();
    for line in read_report(&crash_report) {
        eprintln!(
            "{}: {} cycles, {} events enqueued: {} delivered once, {} withdrawn and never \
             stored, {} either way ({} stored); lost {}, duplicated {}, {} resent and \
             deduplicated by the server",
            line["backend"].as_str().unwrap_or("?"),
            line["cycles"],
            line["enqueued"],
            line["delivered_once"],
            line["withdrawn_never_stored"],
            line["either"],
            line["either_stored"],
            line["lost"],
            line["duplicated"],
            line["resent_and_deduplicated"]
        );
    }
    drop(cluster);
    match (soak_failed, status.success()) {
        (None, true) => Ok(()),
        (Some(log), true) => bail!("the soak failed; its output is in {}", log.display()),
        (None, false) => bail!(
            "the crash cycles failed ({status}); their output is in {}",
            crash_log.display()
        ),
        (Some(log), false) => bail!(
            "the soak and the crash cycles failed; their output is in {} and {}",
            log.display(),
            crash_log.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_have_defaults_and_refuse_nonsense() {
        assert_eq!(
            parse(&[]).unwrap(),
            Options {
                minutes: 10,
                rate: 200,
                cycles: 1_000,
                postgres: false
            }
        );
        assert_eq!(
            parse(&strings(&[
                "--minutes",
                "30",
                "--rate",
                "500",
                "--cycles",
                "20",
                "--postgres"
            ]))
            .unwrap(),
            Options {
                minutes: 30,
                rate: 500,
                cycles: 20,
                postgres: true
            }
        );
        assert!(parse(&strings(&["--minutes"])).is_err());
        assert!(parse(&strings(&["--minutes", "2"])).is_err());
        assert!(parse(&strings(&["--rate", "0"])).is_err());
        assert!(parse(&strings(&["--hours", "1"])).is_err());
    }

    #[test]
    fn report_lines_become_rows_and_summaries() {
        let window: serde_json::Value = serde_json::from_str(
            r#"{"backend":"sqlite","window":3,"of":10,"secs":60,"requests":12000,"errors":0,"p50_ms":1.5,"p99_ms":9.25,"rss_kib":40960}"#,
        )
        .unwrap();
        let text = row(&window).unwrap();
        assert!(text.starts_with("sqlite"), "{text}");
        assert!(text.contains("3/10") && text.contains("12000") && text.contains("9.25"));
        assert!(text.trim_end().ends_with("40.0"), "{text}");
        assert!(summary(&window).is_none());
        let done: serde_json::Value = serde_json::from_str(
            r#"{"backend":"postgres","done":true,"requests":5,"errors":0,"rss_first_kib":1024,"rss_last_kib":1126.4,"rss_growth":0.1,"identities":128,"wrong":0,"chain":"Ok(9)"}"#,
        )
        .unwrap();
        assert_eq!(
            summary(&done).unwrap(),
            "postgres: 5 requests, 0 errors, RSS 1.0 → 1.1 MiB (+10.0 %), 128 identities (0 wrong), chain Ok(9)"
        );
        assert!(row(&done).is_none());
    }
}
