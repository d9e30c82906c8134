//! `cargo xtask bench [crate…] [--quick]`: runs the benchmarks and rewrites the generated tables of
//! `docs/benchmarks.md`.
//!
//! 1. The bench targets of the chosen crates (all crates with one when none is named) come from
//!    `cargo metadata`; they are built first, in one `cargo bench --no-run`.
//! 2. Each target is asked for its benchmarks (`-- --list`, which criterion and the load bench both
//!    answer), so that the progress bar knows what is left, then run with its output kept in
//!    `target/xtask-bench/<crate>.<bench>.log`. Criterion writes its estimates under
//!    `target/xtask-bench/criterion` (`CRITERION_HOME`); the load bench, which is no criterion
//!    bench, writes its figures to the file named by `CONSENT_LOAD_REPORT`.
//! 3. Every figure of a crate becomes a row of the crate's generated table, next to its peer when
//!    [`PEERS`] names one: ours, the peer's, and the ratio (the peer's time over ours, so above 1×
//!    ours is faster). Above the table: the machine (cores, model, load average before and after),
//!    the date, the commit, rustc, and the command that reproduces it.
//! 4. The table goes between `<!-- bench-table: <crate> -->` and `<!-- end bench-table: <crate> -->`
//!    inside the crate's `<!-- section: <crate> -->`, just under the section's first heading; the
//!    first run inserts the markers, later runs replace what is between them. The prose around them
//!    is never touched.
//!
//! `--quick` passes criterion `--quick` with a short warm-up and measurement, and gives each load
//! of the load bench one second instead of five: indicative figures in a few minutes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// Which figure is compared with which, per crate: the one place this is decided. `{}` stands for
/// one segment of a benchmark id (no `/`), the same in ours and in its peers.
pub(crate) const PEERS: &[Pair] = &[
    Pair::new(
        "consent-tcf",
        "decode/{}/consent_tcf",
        &["decode/{}/lib_tcstring", "decode/{}/iab_gpp"],
    ),
    Pair::new(
        "consent-optin",
        "is_approved/3 categories/OptIn::is_approved",
        &["is_approved/3 categories/baseline: HashMap<&str, bool>"],
    ),
    Pair::new(
        "consent-optin",
        "is_approved/3 categories/Permissions::is_approved (snapshot)",
        &["is_approved/3 categories/baseline: HashMap<&str, bool>"],
    ),
    Pair::new("consent-store", "{}/consent-store", &["{}/sqlite"]),
    Pair::new(
        "consent-store",
        "recover_100k/consent-store/open",
        &["recover_100k/sqlite/open+count"],
    ),
    Pair::new(
        "consent-store",
        "recover_100k/consent-store/open+read_all",
        &["recover_100k/sqlite/open+read_all"],
    ),
    Pair::new(
        "consent-server",
        "sign_receipt",
        &["ed25519_sign (ring, same length)"],
    ),
    Pair::new(
        "consent-server",
        "load/set-consent (Adobe 1.0, alternating in/out)",
        &["load/bare axum endpoint"],
    ),
    Pair::new(
        "consent-server",
        "load/preference update (email yes/no)",
        &["load/bare axum endpoint"],
    ),
    Pair::new(
        "consent",
        "enqueue/facade_pending_1KiB_in_flight/{}",
        &["enqueue/sqlite_wal_sync_full_txn_per_event_1KiB"],
    ),
    Pair::new(
        "consent",
        "end_to_end/facade_in_enqueue_5000_then_flush",
        &[
            "end_to_end/reqwest_one_post_per_event",
            "end_to_end/reference_reqwest_256_events_per_post",
        ],
    ),
];

/// One comparison: a figure of ours and the peers it is measured next to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pair {
    krate: &'static str,
    ours: &'static str,
    peers: &'static [&'static str],
}

impl Pair {
    const fn new(krate: &'static str, ours: &'static str, peers: &'static [&'static str]) -> Self {
        Pair { krate, ours, peers }
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    crates: Vec<String>,
    quick: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        crates: Vec::new(),
        quick: false,
    };
    for arg in args {
        match arg.as_str() {
            "--quick" => options.quick = true,
            flag if flag.starts_with('-') => {
                bail!("unknown option {flag:?}: cargo xtask bench [crate…] [--quick]")
            }
            krate => options.crates.push(krate.to_owned()),
        }
    }
    Ok(options)
}

/// A bench target of a workspace crate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    krate: String,
    bench: String,
    /// Its source file (to match the executable cargo builds for it).
    src_path: String,
    /// The crate's directory: where `cargo bench` would run it.
    dir: PathBuf,
    /// The built executable, once `cargo bench --no-run` said where it is.
    exe: Option<PathBuf>,
}

/// One measured benchmark: its id and nanoseconds per element (per iteration without a
/// throughput), with criterion's 95 % interval of the median when there is one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    pub(crate) id: String,
    pub(crate) nanos: f64,
    pub(crate) interval: Option<(f64, f64)>,
    /// What the figure is per when not per iteration: `event` when a criterion benchmark declared
    /// a throughput in elements, `request` for the load bench.
    pub(crate) per: Option<&'static str>,
}

/// The machine and moment a run was made on.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) date: String,
    pub(crate) commit: String,
    pub(crate) rustc: String,
    pub(crate) cores: usize,
    pub(crate) model: String,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
}

/// `cargo xtask bench [crate…] [--quick]`.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let root = crate::project_root();
    let targets = targets(&root, &options.crates)?;
    if targets.is_empty() {
        bail!("no bench target in {:?}", options.crates);
    }
    let out = crate::target_dir().join("xtask-bench");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let criterion_home = out.join("criterion");

    // What is measured is what is checked out now (later commits during a long run do not count).
    let measured_commit = commit(&root);
    let targets = build(targets)?;

    let load_before = load_average();
    // What each target will run, for the progress bar.
    let mut listed = Vec::new();
    for target in &targets {
        let ids = list(target)?;
        listed.push((target.clone(), ids));
    }
    let total: usize = listed.iter().map(|(_, ids)| ids.len()).sum();
    let bar = crate::progress_bar(total as u64, " benchmarks");

    let mut figures: BTreeMap<String, Vec<Figure>> = BTreeMap::new();
    let mut done = 0usize;
    for (target, ids) in &listed {
        let log = out.join(format!("{}.{}.log", target.krate, target.bench));
        let load_report = out.join(format!("{}.{}.load.json", target.krate, target.bench));
        let _ = fs::remove_file(&load_report);
        let started = SystemTime::now();
        bar.set_message(format!("{}/{}", target.krate, target.bench));
        run_target(
            target,
            options.quick,
            &criterion_home,
            &load_report,
            &log,
            &bar,
        )?;
        done += ids.len();
        bar.set_position(done as u64);
        let mut measured = criterion_figures(&criterion_home, started)?;
        measured.extend(load_figures(&load_report)?);
        // In the order the target ran them; anything not listed after them.
        measured.sort_by_key(|f| ids.iter().position(|id| *id == f.id).unwrap_or(usize::MAX));
        measured.retain(|f| ids.contains(&f.id));
        figures
            .entry(target.krate.clone())
            .or_default()
            .extend(measured);
    }
    bar.finish_with_message("done");

    let context = Machine {
        date: crate::release::today(&root)?,
        commit: measured_commit,
        rustc: rustc(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        model: cpu_model(),
        load_before,
        load_after: load_average(),
    };
    let path = root.join("docs").join("benchmarks.md");
    let mut doc =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for (krate, figures) in &figures {
        let mut command = format!("cargo xtask bench {krate}");
        if options.quick {
            command.push_str(" --quick");
        }
        let table = table(krate, figures, &context, &command, options.quick);
        doc = splice(&doc, krate, &table)?;
        eprintln!("\n{table}");
    }
    fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "bench: {} figures of {} crates written to {}",
        figures.values().map(Vec::len).sum::<usize>(),
        figures.len(),
        path.display()
    );
    Ok(())
}

fn unique_crates(targets: &[Target]) -> Vec<String> {
    let mut crates: Vec<String> = targets.iter().map(|t| t.krate.clone()).collect();
    crates.dedup();
    crates
}

/// The bench targets of the workspace's crates, or of the named ones (each must have one).
fn targets(root: &Path, crates: &[String]) -> Result<Vec<Target>> {
    let metadata = crate::release::metadata(root)?;
    let mut all = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default();
        let dir = Path::new(package["manifest_path"].as_str().unwrap_or_default())
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bench = target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bench"));
            if is_bench {
                all.push(Target {
                    krate: name.to_owned(),
                    bench: target["name"].as_str().unwrap_or_default().to_owned(),
                    src_path: target["src_path"].as_str().unwrap_or_default().to_owned(),
                    dir: dir.clone(),
                    exe: None,
                });
            }
        }
    }
    all.sort_by(|a, b| (&a.krate, &a.bench).cmp(&(&b.krate, &b.bench)));
    for krate in crates {
        if !all.iter().any(|t| &t.krate == krate) {
            let known: Vec<String> = unique_crates(&all);
            bail!(
                "{krate:?} has no bench target; crates with benchmarks: {}",
                known.join(", ")
            );
        }
    }
    Ok(all
        .into_iter()
        .filter(|t| crates.is_empty() || crates.contains(&t.krate))
        .collect())
}

/// Builds every target in one `cargo bench --no-run` (one feature resolution for all, as the
/// workspace builds them) and notes each executable: the targets then run straight from it, as
/// `cargo bench` would run them (in the crate's directory, with `--bench`), so that no target
/// rebuilds the dependencies with the features of its package alone.
fn build(mut targets: Vec<Target>) -> Result<Vec<Target>> {
    let mut build = crate::cargo();
    build.args([
        "bench",
        "--locked",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for krate in unique_crates(&targets) {
        build.args(["-p", &krate]);
    }
    build.stdout(Stdio::piped());
    eprintln!("\n==> cargo bench --no-run");
    let output = build.output().context("running cargo bench --no-run")?;
    if !output.status.success() {
        bail!("`cargo bench --no-run` failed with {}", output.status);
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_bench = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bench"));
        let (Some(src), Some(exe)) = (
            message["target"]["src_path"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        if is_bench {
            for target in targets.iter_mut().filter(|t| t.src_path == src) {
                target.exe = Some(PathBuf::from(exe));
            }
        }
    }
    if let Some(missing) = targets.iter().find(|t| t.exe.is_none()) {
        bail!(
            "cargo bench --no-run built no executable for {}/{}",
            missing.krate,
            missing.bench
        );
    }
    Ok(targets)
}

fn bench_command(target: &Target) -> Command {
    let mut cmd = Command::new(target.exe.as_deref().unwrap_or(Path::new("false")));
    cmd.current_dir(&target.dir).arg("--bench");
    cmd
}

/// The benchmark ids a target runs, from `-- --list` (`<id>: benchmark` per line).
fn list(target: &Target) -> Result<Vec<String>> {
    let mut cmd = bench_command(target);
    cmd.arg("--list").stderr(Stdio::inherit());
    let output = cmd
        .output()
        .with_context(|| format!("listing {}/{}", target.krate, target.bench))?;
    if !output.status.success() {
        bail!(
            "{}/{} --list failed with {}",
            target.krate,
            target.bench,
            output.status
        );
    }
    Ok(parse_list(&String::from_utf8_lossy(&output.stdout)))
}

fn parse_list(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_suffix(": benchmark"))
        .map(str::to_owned)
        .collect()
}

/// Runs one target with its output in `log`, the progress bar following the benchmark it is on.
fn run_target(
    target: &Target,
    quick: bool,
    criterion_home: &Path,
    load_report: &Path,
    log: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    use std::io::Write as _;
    let mut cmd = bench_command(target);
    if quick {
        cmd.args(QUICK_CRITERION);
        cmd.env("CONSENT_LOAD_SECS", "1");
    }
    cmd.env("CRITERION_HOME", criterion_home)
        .env("CONSENT_LOAD_REPORT", load_report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}/{}", target.krate, target.bench))?;
    let mut file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    // stderr (where criterion says which benchmark it is on) to a log of its own, from a
    // thread, so that neither pipe fills up.
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let err_log = log.with_extension("stderr.log");
    let err_bar = bar.clone();
    let krate = target.krate.clone();
    let err_thread = std::thread::spawn(move || -> std::io::Result<()> {
        let mut out = fs::File::create(err_log)?;
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            writeln!(out, "{line}")?;
            if let Some(id) = benchmarking(&line) {
                err_bar.set_message(format!("{krate}: {id}"));
            }
        }
        Ok(())
    });
    let stdout = child.stdout.take().context("no stdout pipe")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the benchmark's output")?;
        writeln!(file, "{line}")?;
        if let Some(id) = benchmarking(&line) {
            bar.set_message(format!("{}: {id}", target.krate));
        } else if line.trim_start().starts_with("time:") {
            bar.inc(1);
        }
    }
    let status = child.wait()?;
    let _ = err_thread.join();
    if !status.success() {
        bar.abandon();
        bail!(
            "{}/{} failed with {status}; its output is in {} and {}",
            target.krate,
            target.bench,
            log.display(),
            log.with_extension("stderr.log").display()
        );
    }
    Ok(())
}

/// The benchmark a `Benchmarking <id>: <phase>` line of criterion names (it writes them to
/// stderr, with carriage returns on a terminal).
fn benchmarking(line: &str) -> Option<&str> {
    let line = line.rsplit('\r').next().unwrap_or(line);
    let id = line.strip_prefix("Benchmarking ")?;
    Some(id.split(": ").next().unwrap_or(id))
}

/// Criterion's options for `--quick`: its quick mode, with a short warm-up and measurement.
const QUICK_CRITERION: &[&str] = &[
    "--quick",
    "--warm-up-time",
    "0.5",
    "--measurement-time",
    "1",
];

/// Every criterion estimate under `home` written since `since`.
pub(crate) fn criterion_figures(home: &Path, since: SystemTime) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    if let Some(figure) = read_estimate(&path, since)? {
                        figures.push(figure);
                    }
                } else {
                    stack.push(path);
                }
            }
        }
    }
    Ok(figures)
}

/// One `new/` directory of criterion: `benchmark.json` (the id, the throughput) and
/// `estimates.json` (nanoseconds per iteration).
fn read_estimate(dir: &Path, since: SystemTime) -> Result<Option<Figure>> {
    let estimates = dir.join("estimates.json");
    let Ok(modified) = fs::metadata(&estimates).and_then(|m| m.modified()) else {
        return Ok(None);
    };
    if modified < since {
        return Ok(None);
    }
    let read = |path: &Path| -> Result<serde_json::Value> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let benchmark = read(&dir.join("benchmark.json"))?;
    let estimates = read(&estimates)?;
    let Some(id) = benchmark["full_id"].as_str() else {
        bail!("{}: no full_id", dir.display());
    };
    let median = &estimates["median"];
    let Some(nanos) = median["point_estimate"].as_f64() else {
        bail!("{}: no median", dir.display());
    };
    let interval = median["confidence_interval"]["lower_bound"]
        .as_f64()
        .zip(median["confidence_interval"]["upper_bound"].as_f64());
    let elements = benchmark["throughput"]["Elements"]
        .as_f64()
        .filter(|n| *n > 0.0);
    let per = elements.unwrap_or(1.0);
    Ok(Some(Figure {
        id: id.to_owned(),
        nanos: nanos / per,
        interval: interval.map(|(lo, hi)| (lo / per, hi / per)),
        per: elements.map(|_| "event"),
    }))
}

/// The load bench's figures: one JSON object per line, `{"id", "nanos"}` (wall time per request
/// at the bench's concurrency, the inverse of the rate).
fn load_figures(path: &Path) -> Result<Vec<Figure>> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let mut figures = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("parsing {}", path.display()))?;
        let (Some(id), Some(nanos)) = (value["id"].as_str(), value["nanos"].as_f64()) else {
            bail!("{}: a line without id or nanos: {line}", path.display());
        };
        figures.push(Figure {
            id: id.to_owned(),
            nanos,
            interval: None,
            per: Some("request"),
        });
    }
    Ok(figures)
}

/// Whether `id` matches `pattern`, and what `{}` stood for.
fn matches<'a>(pattern: &str, id: &'a str) -> Option<&'a str> {
    match pattern.split_once("{}") {
        None => (pattern == id).then_some(""),
        Some((prefix, suffix)) => {
            let middle = id.strip_prefix(prefix)?.strip_suffix(suffix)?;
            (!middle.is_empty() && !middle.contains('/')).then_some(middle)
        }
    }
}

/// The peers of `id` in `krate` (ids with `{}` filled in), from [`PEERS`].
fn peers_of(krate: &str, id: &str) -> Vec<String> {
    PEERS
        .iter()
        .filter(|p| p.krate == krate)
        .find_map(|p| {
            let part = matches(p.ours, id)?;
            Some(
                p.peers
                    .iter()
                    .map(|peer| peer.replace("{}", part))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// Whether `id` is only a peer of something in `krate` (its row is the figure it is a peer of).
fn is_peer(krate: &str, id: &str) -> bool {
    PEERS
        .iter()
        .filter(|p| p.krate == krate)
        .any(|p| p.peers.iter().any(|peer| matches(peer, id).is_some()))
}

/// `1.23 ns`, `4.56 µs`, `7.89 ms`, `1.23 s`, three significant digits.
fn duration(nanos: f64) -> String {
    let (value, unit) = if nanos < 1e3 {
        (nanos, "ns")
    } else if nanos < 1e6 {
        (nanos / 1e3, "µs")
    } else if nanos < 1e9 {
        (nanos / 1e6, "ms")
    } else {
        (nanos / 1e9, "s")
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {unit}")
}

/// The peer's time over ours, `—` when ours is zero (nothing to divide by).
fn ratio(peer: f64, ours: f64) -> String {
    if ours > 0.0 && peer.is_finite() {
        format!("{:.2}×", peer / ours)
    } else {
        "—".to_owned()
    }
}

fn cell(figure: &Figure) -> String {
    let mut text = duration(figure.nanos);
    if let Some(per) = figure.per {
        let _ = write!(text, " /{per}");
    }
    if let Some((lo, hi)) = figure.interval {
        let _ = write!(text, " ({}–{})", duration(lo), duration(hi));
    }
    text
}

/// The generated block of one crate: what it was measured on, then one row per figure.
pub(crate) fn table(
    krate: &str,
    figures: &[Figure],
    context: &Machine,
    command: &str,
    quick: bool,
) -> String {
    let by_id: BTreeMap<&str, &Figure> = figures.iter().map(|f| (f.id.as_str(), f)).collect();
    let mut out = String::new();
    let mut how = String::from("Criterion's median per iteration");
    if figures.iter().any(|f| f.per == Some("event")) {
        how.push_str(" (per event where the benchmark counts events)");
    }
    how.push_str(" with its 95 % interval");
    if figures.iter().any(|f| f.per == Some("request")) {
        how.push_str(
            "; for the load bench, the wall time per request at 64 connections (the inverse of \
             its rate)",
        );
    }
    let _ = writeln!(
        out,
        "Generated by `{command}` on {} (commit {}, {}): {} cores, {}, load average {} before and \
         {} after. {how}. Ratio: the peer's time ÷ ours, so above 1× ours is faster.{}",
        context.date,
        context.commit,
        context.rustc,
        context.cores,
        context.model,
        context.load_before,
        context.load_after,
        if quick {
            " Quick mode (short samples): indicative only; the prose below has the careful runs."
        } else {
            ""
        }
    );
    out.push('\n');
    out.push_str("| benchmark | ours | peer | peer's | ratio |\n|---|---|---|---|---|\n");
    for figure in figures {
        if is_peer(krate, &figure.id) && peers_of(krate, &figure.id).is_empty() {
            continue;
        }
        let peers = peers_of(krate, &figure.id);
        if peers.is_empty() {
            let _ = writeln!(out, "| `{}` | {} | — | — | — |", figure.id, cell(figure));
        }
        for peer in peers {
            match by_id.get(peer.as_str()) {
                Some(p) => {
                    let _ = writeln!(
                        out,
                        "| `{}` | {} | `{peer}` | {} | {} |",
                        figure.id,
                        cell(figure),
                        cell(p),
                        ratio(p.nanos, figure.nanos)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "| `{}` | {} | `{peer}` | not measured | — |",
                        figure.id,
                        cell(figure)
                    );
                }
            }
        }
    }
    out
}

/// `doc` with the generated block of `krate` replaced by `table`, or inserted under the first
/// heading of the crate's section. Everything else is kept byte for byte.
pub(crate) fn splice(doc: &str, krate: &str, table: &str) -> Result<String> {
    let open = format!("<!-- section: {krate} -->");
    let close = format!("<!-- end: {krate} -->");
    let begin = format!("<!-- bench-table: {krate} -->");
    let end = format!("<!-- end bench-table: {krate} -->");
    let Some(start) = doc.find(&open) else {
        bail!("docs/benchmarks.md has no `{open}` marker");
    };
    let Some(stop) = doc[start..].find(&close).map(|i| start + i) else {
        bail!("docs/benchmarks.md has `{open}` but no `{close}` after it");
    };
    let block = format!("{begin}\n{table}{end}");
    let section = &doc[start..stop];
    let new_section = match (section.find(&begin), section.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &section[..b], &section[e + end.len()..])
        }
        (None, None) => {
            // Under the first heading of the section, which must name the crate (a heading of
            // another crate there means the markers are misplaced), or right after the opening
            // marker when the section has no heading.
            if let Some(heading) = section.lines().find(|l| l.starts_with("## ")) {
                let named = heading[3..]
                    .split(|c: char| c == ':' || c.is_whitespace())
                    .next()
                    .unwrap_or_default();
                if named != krate {
                    bail!(
                        "docs/benchmarks.md: the first heading of `{open}` is {heading:?}, about \
                         another crate: move the markers"
                    );
                }
            }
            let after_open = open.len();
            let insert_at = section[after_open..]
                .find("\n## ")
                .and_then(|h| {
                    let heading = after_open + h + 1;
                    section[heading..].find('\n').map(|n| heading + n + 1)
                })
                .unwrap_or(after_open + 1)
                .min(section.len());
            format!(
                "{}\n{block}\n\n{}",
                &section[..insert_at],
                section[insert_at..].trim_start_matches('\n')
            )
        }
        _ => bail!("docs/benchmarks.md: `{begin}` and `{end}` do not pair up in `{open}`"),
    };
    Ok(format!("{}{new_section}{}", &doc[..start], &doc[stop..]))
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages, or "unknown".
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn output_line(program: &str, args: &[&str], root: Option<&Path>) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(root) = root {
        cmd.current_dir(root);
    }
    let output = cmd.output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn commit(root: &Path) -> String {
    let hash = output_line("git", &["rev-parse", "--short", "HEAD"], Some(root))
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty =
        output_line("git", &["status", "--porcelain"], Some(root)).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{hash} with uncommitted changes")
    } else {
        hash
    }
}

fn rustc() -> String {
    output_line("rustc", &["--version"], None)
        .and_then(|v| v.split_whitespace().take(2).last().map(str::to_owned))
        .map_or_else(|| "rustc unknown".to_owned(), |v| format!("rustc {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn figure(id: &str, nanos: f64) -> Figure {
        Figure {
            id: id.to_owned(),
            nanos,
            interval: None,
            per: None,
        }
    }

    fn context() -> Machine {
        Machine {
            date: "2026-12-06".into(),
            commit: "abc1234".into(),
            rustc: "rustc 1.95.0".into(),
            cores: 2,
            model: "Some CPU".into(),
            load_before: "0.10 0.20 0.30".into(),
            load_after: "1.00 0.50 0.40".into(),
        }
    }

    #[test]
    fn options_are_crates_and_quick() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse(&args(&["consent-tcf", "--quick", "consent"])).unwrap(),
            Options {
                crates: vec!["consent-tcf".into(), "consent".into()],
                quick: true
            }
        );
        assert!(parse(&args(&["--fast"])).is_err());
    }

    #[test]
    fn list_output_gives_the_ids() {
        let out = "decode/v6/consent_tcf: benchmark\nnoise\nlookup/x: benchmark\n";
        assert_eq!(parse_list(out), vec!["decode/v6/consent_tcf", "lookup/x"]);
    }

    #[test]
    fn patterns_match_one_segment_and_fill_the_peers() {
        assert_eq!(
            matches("decode/{}/consent_tcf", "decode/v6/consent_tcf"),
            Some("v6")
        );
        assert_eq!(
            matches("decode/{}/consent_tcf", "decode/a/b/consent_tcf"),
            None
        );
        assert_eq!(
            matches("{}/consent-store", "recover_100k/consent-store/open"),
            None
        );
        assert_eq!(
            peers_of("consent-tcf", "decode/v6/consent_tcf"),
            vec!["decode/v6/lib_tcstring", "decode/v6/iab_gpp"]
        );
        assert!(peers_of("consent-store", "decode/v6/consent_tcf").is_empty());
        assert!(is_peer("consent-store", "append_1k_every_write/sqlite"));
        assert!(!is_peer(
            "consent-store",
            "append_1k_every_write/consent-store"
        ));
    }

    #[test]
    fn every_pair_names_a_crate_with_a_section() {
        let doc = fs::read_to_string(crate::project_root().join("docs/benchmarks.md")).unwrap();
        for pair in PEERS {
            assert!(
                doc.contains(&format!("<!-- section: {} -->", pair.krate)),
                "{pair:?}"
            );
            assert!(pair.ours.matches("{}").count() <= 1, "{pair:?}");
        }
    }

    #[test]
    fn the_table_puts_peers_beside_ours_with_the_ratio() {
        let figures = vec![
            figure("decode/v6/consent_tcf", 100.0),
            figure("decode/v6/lib_tcstring", 450.0),
            figure("encode/v6", 2_500.0),
        ];
        let text = table(
            "consent-tcf",
            &figures,
            &context(),
            "cargo xtask bench consent-tcf",
            false,
        );
        assert!(text.contains("2 cores, Some CPU, load average 0.10 0.20 0.30 before"));
        assert!(text.contains("`cargo xtask bench consent-tcf`"));
        assert!(text.contains(
            "| `decode/v6/consent_tcf` | 100 ns | `decode/v6/lib_tcstring` | 450 ns | 4.50× |"
        ));
        assert!(text.contains(
            "| `decode/v6/consent_tcf` | 100 ns | `decode/v6/iab_gpp` | not measured | — |"
        ));
        assert!(text.contains("| `encode/v6` | 2.50 µs | — | — | — |"));
        // A peer has no row of its own.
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("| `decode/v6/lib_tcstring` |"))
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("| `")).count(), 3);
    }

    #[test]
    fn splice_inserts_under_the_heading_then_replaces_and_keeps_the_prose() {
        let doc = "# Benchmarks\n\nIntro.\n\n<!-- section: consent-tcf -->\n## consent-tcf: codec\n\nProse one.\n\n| old | table |\n<!-- end: consent-tcf -->\n\n<!-- section: consent -->\n## consent\nMore prose.\n<!-- end: consent -->\n";
        let once = splice(doc, "consent-tcf", "TABLE ONE\n").unwrap();
        assert_eq!(
            once,
            "# Benchmarks\n\nIntro.\n\n<!-- section: consent-tcf -->\n## consent-tcf: codec\n\n<!-- bench-table: consent-tcf -->\nTABLE ONE\n<!-- end bench-table: consent-tcf -->\n\nProse one.\n\n| old | table |\n<!-- end: consent-tcf -->\n\n<!-- section: consent -->\n## consent\nMore prose.\n<!-- end: consent -->\n"
        );
        let twice = splice(&once, "consent-tcf", "TABLE TWO\n").unwrap();
        assert_eq!(twice, once.replace("TABLE ONE", "TABLE TWO"));
        // The other section is untouched, and a second crate goes into its own.
        let both = splice(&twice, "consent", "T\n").unwrap();
        assert!(both.contains("## consent\n\n<!-- bench-table: consent -->\nT\n<!-- end bench-table: consent -->\n\nMore prose.\n<!-- end: consent -->"));
        assert!(both.contains("TABLE TWO"));
        assert!(splice(doc, "consent-store", "T\n").is_err());
        // A section whose first heading is another crate's: its markers are misplaced.
        let misplaced =
            "<!-- section: consent -->\n## consent-server: receipts\n<!-- end: consent -->\n";
        assert!(splice(misplaced, "consent", "T\n").is_err());
        let broken = doc.replace("<!-- end: consent-tcf -->", "");
        assert!(splice(&broken, "consent-tcf", "T\n").is_err());
    }

    #[test]
    fn criterion_estimates_are_read_per_element_and_only_when_new() {
        let dir = tempfile::tempdir().unwrap();
        let write = |sub: &str, benchmark: &str, median: f64| {
            let new = dir.path().join(sub).join("new");
            fs::create_dir_all(&new).unwrap();
            fs::write(new.join("benchmark.json"), benchmark).unwrap();
            fs::write(
                new.join("estimates.json"),
                format!(
                    r#"{{"mean":{{"point_estimate":1.0}},"median":{{"point_estimate":{median},"confidence_interval":{{"confidence_level":0.95,"lower_bound":{},"upper_bound":{}}}}}}}"#,
                    median * 0.9,
                    median * 1.1
                ),
            )
            .unwrap();
        };
        let before = SystemTime::now() - Duration::from_secs(60);
        write(
            "check/general_in",
            r#"{"group_id":"check","function_id":"general/in","full_id":"check/general/in","throughput":null}"#,
            2.0,
        );
        write(
            "end_to_end/facade",
            r#"{"group_id":"end_to_end","function_id":"facade","full_id":"end_to_end/facade","throughput":{"Elements":5000}}"#,
            5_000_000.0,
        );
        let mut figures = criterion_figures(dir.path(), before).unwrap();
        figures.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(figures.len(), 2);
        assert_eq!(figures[0].id, "check/general/in");
        assert_eq!(figures[0].nanos, 2.0);
        assert_eq!(figures[0].per, None);
        assert_eq!(figures[1].id, "end_to_end/facade");
        assert_eq!(figures[1].nanos, 1_000.0);
        assert_eq!(figures[1].per, Some("event"));
        assert_eq!(figures[1].interval, Some((900.0, 1_100.0)));
        // Estimates older than the run are someone else's.
        let later = SystemTime::now() + Duration::from_secs(60);
        assert!(criterion_figures(dir.path(), later).unwrap().is_empty());
    }

    #[test]
    fn load_reports_are_read_and_a_bad_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("load.json");
        assert!(load_figures(&path).unwrap().is_empty());
        fs::write(
            &path,
            "{\"id\":\"load/bare axum endpoint\",\"nanos\":12.5}\n",
        )
        .unwrap();
        assert_eq!(load_figures(&path).unwrap()[0].nanos, 12.5);
        fs::write(&path, "{\"id\":\"load/x\"}\n").unwrap();
        assert!(load_figures(&path).is_err());
    }

    #[test]
    fn criterion_status_lines_name_the_benchmark() {
        assert_eq!(
            benchmarking("Benchmarking check/general/in: Warming up for 500.00 ms"),
            Some("check/general/in")
        );
        assert_eq!(
            benchmarking("\rBenchmarking a/b: Collecting 10 samples\rBenchmarking a/c: Analyzing"),
            Some("a/c")
        );
        assert_eq!(
            benchmarking("check/general/in   time:   [1 ns 2 ns 3 ns]"),
            None
        );
    }

    #[test]
    fn a_zero_figure_gives_no_ratio_and_an_empty_section_no_panic() {
        assert_eq!(ratio(4.0, 2.0), "2.00×");
        assert_eq!(ratio(4.0, 0.0), "—");
        let empty = "<!-- section: consent -->\n<!-- end: consent -->\n";
        let out = splice(empty, "consent", "T\n").unwrap();
        assert!(
            out.contains("T\n<!-- end bench-table: consent -->"),
            "{out}"
        );
        let tight = "<!-- section: consent --><!-- end: consent -->";
        assert!(splice(tight, "consent", "T\n").is_ok());
    }

    #[test]
    fn durations_keep_three_digits() {
        assert_eq!(duration(0.845), "0.84 ns");
        assert_eq!(duration(12_345.0), "12.3 µs");
        assert_eq!(duration(150_000.0), "150 µs");
        assert_eq!(duration(2_500_000_000.0), "2.50 s");
    }
}
