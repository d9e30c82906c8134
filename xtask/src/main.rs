//! Project automation for the consent workspace, in the cargo-xtask pattern.
//!
//! Run `cargo xtask help` for the list of tasks. The one CI runs is `cargo xtask ci`:
//! formatting, clippy with warnings denied, the tests (nextest and doctests), rustdoc with
//! warnings (broken intra-doc links included) denied, the layering check that keeps
//! `docs/ARCHITECTURE.md` true (`layering.rs`), the manifest check that keeps what crates.io
//! and docs.rs show complete and true (`manifests.rs`), and `cargo deny check licenses bans
//! sources` (`deny.toml`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod bench;
mod fuzz;
mod layering;
mod manifests;
mod release;
mod soak;

/// Every task with its one line of `cargo xtask help`; `main` dispatches each (a test checks
/// both ways).
const TASKS: &[(&str, &str)] = &[
    (
        "ci",
        "what CI runs: layering, manifests, cargo deny, fmt, clippy, tests, doctests, rustdoc",
    ),
    (
        "demo",
        "consent-server on its SQLite default, and the quick-start example against it",
    ),
    (
        "layering",
        "only the layering, crate-overview and ARCHITECTURE.md-table checks",
    ),
    (
        "manifests",
        "only the manifest check (what crates.io and docs.rs show)",
    ),
    (
        "release",
        "<version> [--dry-run] [--no-ci] [--no-verify]: a checked, tagged release, kept local",
    ),
    (
        "bench",
        "[crate…] [--quick]: the benchmarks, rewriting the tables of docs/benchmarks.md",
    ),
    (
        "soak",
        "[--minutes N] [--rate R] [--cycles C] [--postgres]: the long load and crash runs",
    ),
    (
        "fuzz",
        "<target|all> [--seconds N] | --list: cargo-fuzz targets with a summary (nightly)",
    ),
    ("help", "this list"),
];

fn help() -> String {
    let mut text = String::from(
        "cargo xtask <task> [arguments]   (docs/ARCHITECTURE.md, \"xtask\", says more)\n\nTasks:\n",
    );
    for (task, line) in TASKS {
        text.push_str(&format!("  {task:<10} {line}\n"));
    }
    text
}

fn main() -> Result<()> {
    let mut args = env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("ci") => ci(),
        Some("layering") => layering::check(&project_root()),
        Some("manifests") => manifests::check(&project_root()),
        Some("release") => release::release(&rest),
        Some("bench") => bench::bench(&rest),
        Some("demo") => demo(),
        Some("soak") => soak::soak(&rest),
        Some("fuzz") => fuzz::fuzz(&rest),
        Some("help") | Some("--help") | Some("-h") | None => {
            eprint!("{}", help());
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{}", help()),
    }
}

/// The workspace root, found from this crate's manifest directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The target directory: `CARGO_TARGET_DIR`, or `target/` in the workspace.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// The progress bar of the long-running tasks (`bench`, `soak`, `fuzz`): elapsed time, a bar of
/// `len` steps, `pos/len` and `unit`, then a message.
fn progress_bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let template = format!("{{elapsed_precise}} [{{bar:32}}] {{pos}}/{{len}}{unit} {{wide_msg}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

fn run(step: &str, mut cmd: Command) -> Result<()> {
    eprintln!("\n==> {step}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{step}`"))?;
    if !status.success() {
        bail!("`{step}` failed with {status}");
    }
    Ok(())
}

fn ci() -> Result<()> {
    let root = project_root();
    layering::check(&root)?;
    manifests::check(&root)?;

    // Licenses, bans and sources of the dependency tree (deny.toml); no advisories: their
    // database cannot be fetched here.
    let mut deny = cargo();
    deny.args(["deny", "--offline", "check", "licenses", "bans", "sources"]);
    if Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["deny", "--version"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        bail!(
            "cargo-deny is not installed: `cargo install --locked cargo-deny@0.20.2` (.ci/run does)"
        );
    }
    run("cargo deny check licenses bans sources", deny)?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy -D warnings", clippy)?;

    // Without its default features the client builds with no HTTP client and no file store
    // (`docs/guide.md`, "Cargo features"): kept true here.
    let mut lean = cargo();
    lean.args([
        "clippy",
        "-p",
        "consent",
        "-p",
        "consent-transport",
        "--no-default-features",
        "--lib",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy --no-default-features", lean)?;

    let mut nextest = cargo();
    nextest.args([
        "nextest",
        "run",
        "--workspace",
        "--locked",
        "--profile",
        "ci",
    ]);
    run("cargo nextest run", nextest)?;

    let mut doctest = cargo();
    doctest.args(["test", "--doc", "--workspace", "--locked"]);
    run("cargo test --doc", doctest)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("cargo doc -D warnings", doc)?;

    eprintln!("\nci: all checks passed");
    Ok(())
}

/// Starts `consent-server` (its defaults: SQLite `consent.db` in the workspace root; a free loopback
/// port instead of 8080 so that the demo never clashes with a running server), runs the facade's
/// quick-start example (`crates/consent/examples/quickstart.rs`) against it, and stops the server
/// with SIGTERM.
fn demo() -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut build = cargo();
    build.args([
        "build",
        "--locked",
        "-p",
        "consent-server",
        "--bin",
        "consent-server",
    ]);
    run("cargo build -p consent-server", build)?;
    // The facade's quick start, started with `cargo run` below (which runs exactly this build).
    let mut build = cargo();
    build.args([
        "build",
        "--locked",
        "-p",
        "consent",
        "--example",
        "quickstart",
    ]);
    run("cargo build -p consent --example quickstart", build)?;

    let mut server = Command::new(target_dir().join("debug").join("consent-server"))
        // The quick start's datastream is in no keys file: served with the default organisation.
        .args(["--listen", "127.0.0.1:0", "--allow-unknown-datastreams"])
        .current_dir(project_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting consent-server")?;
    let stop = |server: &mut std::process::Child| -> Result<()> {
        // SIGTERM lets the server drain in-flight requests; SIGKILL only if it does not stop.
        let _ = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.kill()?;
        server.wait()?;
        Ok(())
    };
    let mut first_line = String::new();
    if let Some(stdout) = server.stdout.take() {
        BufReader::new(stdout).read_line(&mut first_line)?;
    }
    let address = first_line.trim().to_owned();
    if address.is_empty() {
        stop(&mut server)?;
        bail!("consent-server printed no address");
    }
    eprintln!("\n==> consent-server listens on {address} (SQLite consent.db)");
    eprintln!("==> cargo run -p consent --example quickstart -- http://{address}\n");
    let mut example = cargo();
    example
        .args([
            "run",
            "--quiet",
            "--locked",
            "-p",
            "consent",
            "--example",
            "quickstart",
            "--",
        ])
        .arg(format!("http://{address}"));
    let status = example.status().context("running the quick-start example");
    stop(&mut server)?;
    if !status?.success() {
        bail!("the quick-start example failed");
    }
    eprintln!("\ndemo: done");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `cargo xtask help` gives every task one line (the form) of at most 100 columns,
    /// every task listed is dispatched by `main`, and every task `main` dispatches is listed.
    #[test]
    fn help_lists_every_task_on_one_line_and_main_dispatches_them() {
        let help = super::help();
        let lines: Vec<&str> = help
            .lines()
            .skip_while(|l| *l != "Tasks:")
            .skip(1)
            .collect();
        assert_eq!(lines.len(), super::TASKS.len(), "{lines:#?}");
        for (line, (task, _)) in lines.iter().zip(super::TASKS) {
            assert!(line.starts_with(&format!("  {task} ")), "{line}");
            assert!(line.chars().count() <= 100, "{line}");
        }
        let source = include_str!("main.rs");
        let main_fn = &source[source.find("fn main()").unwrap()..];
        let main_fn = &main_fn[..main_fn.find("\n}\n").unwrap()];
        let dispatched: Vec<&str> = main_fn
            .split("Some(\"")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(task, _)| task))
            .filter(|task| !task.starts_with('-'))
            .collect();
        let listed: Vec<&str> = super::TASKS.iter().map(|(task, _)| *task).collect();
        let mut a = dispatched.clone();
        a.sort_unstable();
        a.dedup();
        let mut b = listed.clone();
        b.sort_unstable();
        assert_eq!(
            a, b,
            "main dispatches {dispatched:?}, help lists {listed:?}"
        );
    }
}
