//! `cargo xtask fuzz <target|all> [--seconds N]` and `cargo xtask fuzz --list`: the cargo-fuzz
//! targets of `fuzz/` run for a fixed time each, with a progress bar and a summary at the end.
//!
//! - The targets are the `[[bin]]`s of `fuzz/Cargo.toml`; `all` runs each in turn.
//! - A target's seeds, kept in the repository, are in `fuzz/seeds/<target>/`; what libFuzzer finds
//!   goes to `fuzz/corpus/<target>/` (not in the repository), and both are read at the start of
//!   every run. Findings go to `fuzz/artifacts/<target>/`.
//! - libFuzzer's output is kept in `target/xtask-fuzz/<target>.log`; the progress bar shows the
//!   time left and the latest coverage, executions and corpus size.
//! - The summary gives per target the executions, their rate, the coverage, the corpus, peak
//!   memory and the findings; any finding (or a libFuzzer failure) fails the task, naming the
//!   artifact to turn into a regression test.
//!
//! cargo-fuzz needs a nightly toolchain: `rustup toolchain install nightly` and
//! `cargo install cargo-fuzz`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

const USAGE: &str = "cargo xtask fuzz <target|all> [--seconds N] | cargo xtask fuzz --list";

#[derive(Debug, PartialEq, Eq)]
enum Request {
    List,
    Run { targets: Vec<String>, seconds: u64 },
}

fn parse(args: &[String], known: &[String]) -> Result<Request> {
    let mut seconds = 60;
    let mut names = Vec::new();
    let mut list = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--seconds" => {
                let value = args.next().context("--seconds needs a number")?;
                seconds = value
                    .parse()
                    .with_context(|| format!("--seconds {value:?} is not a number of seconds"))?;
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag:?}: {USAGE}"),
            // `cargo xtask fuzz <target> <seconds>`, the form before `--seconds`, still works.
            number if !names.is_empty() && number.parse::<u64>().is_ok() => {
                seconds = number.parse()?;
            }
            name => names.push(name.to_owned()),
        }
    }
    if list {
        return Ok(Request::List);
    }
    if names.is_empty() {
        bail!("{USAGE}\ntargets: {}", known.join(", "));
    }
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let targets = if names.iter().any(|n| n == "all") {
        known.to_vec()
    } else {
        for name in &names {
            if !known.contains(name) {
                bail!("no fuzz target {name:?}; targets: {}", known.join(", "));
            }
        }
        names
    };
    Ok(Request::Run { targets, seconds })
}

/// The `[[bin]]` names of `fuzz/Cargo.toml`.
fn targets(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin
            && let Some(value) = line.strip_prefix("name").map(str::trim_start)
            && let Some(value) = value.strip_prefix('=')
        {
            names.push(value.trim().trim_matches('"').to_owned());
        }
    }
    names
}

/// What libFuzzer said of one run.
#[derive(Debug, Default, Clone, PartialEq)]
struct Stats {
    executions: u64,
    exec_per_sec: u64,
    coverage: u64,
    corpus: u64,
    new_units: u64,
    peak_rss_mb: u64,
}

impl Stats {
    /// Reads a status line (`#4096 pulse cov: 120 ft: 300 corp: 20/1kb exec/s: 2048 rss: 40Mb`)
    /// or a final statistic (`stat::number_of_executed_units: 123`).
    fn read(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("stat::") {
            let Some((key, value)) = rest.split_once(':') else {
                return;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                return;
            };
            match key {
                "number_of_executed_units" => self.executions = value,
                "average_exec_per_sec" => self.exec_per_sec = value,
                "new_units_added" => self.new_units = value,
                "peak_rss_mb" => self.peak_rss_mb = value,
                _ => {}
            }
            return;
        }
        let Some(rest) = line.strip_prefix('#') else {
            return;
        };
        let mut words = rest.split_whitespace();
        if let Some(n) = words.next().and_then(|n| n.parse().ok()) {
            self.executions = n;
        }
        let words: Vec<&str> = words.collect();
        for pair in words.windows(2) {
            let number = |s: &str| {
                s.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse::<u64>().ok())
            };
            match pair[0] {
                "cov:" => self.coverage = number(pair[1]).unwrap_or(self.coverage),
                "corp:" => self.corpus = number(pair[1]).unwrap_or(self.corpus),
                "exec/s:" => self.exec_per_sec = number(pair[1]).unwrap_or(self.exec_per_sec),
                "rss:" => self.peak_rss_mb = number(pair[1]).unwrap_or(self.peak_rss_mb),
                _ => {}
            }
        }
    }
}

/// `cargo xtask fuzz …`.
pub(crate) fn fuzz(args: &[String]) -> Result<()> {
    let root = crate::project_root();
    let fuzz_dir = root.join("fuzz");
    let manifest =
        fs::read_to_string(fuzz_dir.join("Cargo.toml")).context("reading fuzz/Cargo.toml")?;
    let known = targets(&manifest);
    let (targets, seconds) = match parse(args, &known)? {
        Request::List => {
            use std::io::Write as _;
            // On stdout, one per line, for scripts.
            let mut out = std::io::stdout().lock();
            for target in &known {
                writeln!(out, "{target}")?;
            }
            return Ok(());
        }
        Request::Run { targets, seconds } => (targets, seconds),
    };
    let ready = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .current_dir(&fuzz_dir)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        bail!(
            "cargo-fuzz on a nightly toolchain is needed: `rustup toolchain install nightly` and \
             `cargo install cargo-fuzz`"
        );
    }
    let logs = crate::target_dir().join("xtask-fuzz");
    fs::create_dir_all(&logs)?;

    let mut build = Command::new("cargo");
    build
        .current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "build"]);
    if targets.len() == 1 {
        build.arg(&targets[0]);
    }
    crate::run("cargo fuzz build", build)?;

    let mut rows = Vec::new();
    for target in &targets {
        let outcome = run_one(&fuzz_dir, &logs, target, seconds)?;
        rows.push((target.clone(), outcome));
    }

    eprintln!("\nfuzz: {seconds} s per target");
    eprintln!(
        "{:<24} {:>12} {:>9} {:>6} {:>7} {:>8} {:>8}  findings",
        "target", "executions", "exec/s", "cov", "corpus", "new", "rss MB"
    );
    let mut failed = Vec::new();
    for (target, o) in &rows {
        eprintln!(
            "{:<24} {:>12} {:>9} {:>6} {:>7} {:>8} {:>8}  {}",
            target,
            o.stats.executions,
            o.stats.exec_per_sec,
            o.stats.coverage,
            o.stats.corpus,
            o.stats.new_units,
            o.stats.peak_rss_mb,
            if o.findings.is_empty() {
                "none".to_owned()
            } else {
                o.findings
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if !o.findings.is_empty() || !o.success {
            failed.push(target.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzzing found problems in {}: make each artifact a regression test (see {})",
            failed.join(", "),
            logs.display()
        );
    }
    Ok(())
}

struct Outcome {
    stats: Stats,
    findings: Vec<PathBuf>,
    success: bool,
}

fn run_one(fuzz_dir: &Path, logs: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    use std::io::Write as _;
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    fs::create_dir_all(&corpus)?;
    fs::create_dir_all(&artifacts)?;
    let started = SystemTime::now();

    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir)
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.args([
        "--",
        &format!("-max_total_time={seconds}"),
        "-print_final_stats=1",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting cargo fuzz run {target}"))?;

    let bar = crate::progress_bar(seconds, " s");
    bar.set_message(target.to_owned());
    // The bar follows the clock: late in a run libFuzzer prints rarely.
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let bar = bar.clone();
        let done = done.clone();
        let start = Instant::now();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                bar.set_position(start.elapsed().as_secs().min(seconds));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    let log_path = logs.join(format!("{target}.log"));
    let mut log = fs::File::create(&log_path)?;
    let mut stats = Stats::default();
    let stderr = child.stderr.take().context("no stderr pipe")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer's output")?;
        writeln!(log, "{line}")?;
        stats.read(&line);
        if line.starts_with('#') {
            bar.set_message(format!(
                "{target}: cov {} corpus {} executions {} ({}/s)",
                stats.coverage, stats.corpus, stats.executions, stats.exec_per_sec
            ));
        }
    }
    let status = child.wait()?;
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    bar.finish_and_clear();

    let mut findings: Vec<PathBuf> = fs::read_dir(&artifacts)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= started)
        })
        .map(|e| e.path())
        .collect();
    findings.sort();
    // The corpus on disk at the end (libFuzzer's `corp:` counts what it kept in memory).
    stats.corpus = stats.corpus.max(
        fs::read_dir(&corpus)
            .map(|d| d.count() as u64)
            .unwrap_or_default(),
    );
    Ok(Outcome {
        stats,
        findings,
        success: status.success(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_targets_are_the_bins_of_the_manifest() {
        let manifest = "[package]\nname = \"consent-fuzz\"\n\n[[bin]]\nname = \"parse\"\npath = \"a.rs\"\n\n[[bin]]\nname= \"cookie\"\n";
        assert_eq!(targets(manifest), vec!["parse", "cookie"]);
        let real = fs::read_to_string(crate::project_root().join("fuzz/Cargo.toml")).unwrap();
        assert!(targets(&real).contains(&"parse".to_owned()));
    }

    #[test]
    fn arguments_name_targets_and_seconds() {
        let known = strings(&["parse", "cookie"]);
        assert_eq!(
            parse(&strings(&["parse", "--seconds", "600"]), &known).unwrap(),
            Request::Run {
                targets: strings(&["parse"]),
                seconds: 600
            }
        );
        // The older positional form.
        assert_eq!(
            parse(&strings(&["parse", "30"]), &known).unwrap(),
            Request::Run {
                targets: strings(&["parse"]),
                seconds: 30
            }
        );
        assert_eq!(
            parse(&strings(&["all"]), &known).unwrap(),
            Request::Run {
                targets: known.clone(),
                seconds: 60
            }
        );
        assert_eq!(parse(&strings(&["--list"]), &known).unwrap(), Request::List);
        assert!(parse(&strings(&["nope"]), &known).is_err());
        assert!(parse(&strings(&[]), &known).is_err());
        assert!(parse(&strings(&["parse", "--seconds", "x"]), &known).is_err());
        assert!(parse(&strings(&["parse", "--seconds", "0"]), &known).is_err());
    }

    #[test]
    fn libfuzzer_lines_and_final_stats_are_read() {
        let mut stats = Stats::default();
        stats.read("INFO: Seed: 1234");
        stats.read("#2\tINITED cov: 12 ft: 13 corp: 1/1b exec/s: 0 rss: 31Mb");
        stats.read("#4096\tpulse  cov: 120 ft: 300 corp: 20/1024b lim: 43 exec/s: 2048 rss: 40Mb");
        assert_eq!(
            (
                stats.executions,
                stats.coverage,
                stats.corpus,
                stats.exec_per_sec
            ),
            (4096, 120, 20, 2048)
        );
        stats.read("stat::number_of_executed_units: 99999");
        stats.read("stat::average_exec_per_sec:     1666");
        stats.read("stat::new_units_added:          42");
        stats.read("stat::peak_rss_mb:              55");
        assert_eq!(
            stats,
            Stats {
                executions: 99_999,
                exec_per_sec: 1666,
                coverage: 120,
                corpus: 20,
                new_units: 42,
                peak_rss_mb: 55
            }
        );
    }
}
