//! Project automation for the consent workspace, in the cargo-xtask pattern.
//!
//! Run `cargo xtask help` for the list of tasks. The one CI runs is `cargo xtask ci`:
//! formatting, clippy with warnings denied, the tests (nextest and doctests), rustdoc with
//! warnings (broken intra-doc links included) denied, and the layering check that keeps
//! `docs/ARCHITECTURE.md` true.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod layering;

const HELP: &str = "\
cargo xtask <task>

Tasks:
  ci          fmt --check, clippy -D warnings, tests, doctests, rustdoc -D warnings, layering
  layering    only the layering and crate-overview checks
  bench       run the criterion benchmarks of every crate (pass a crate name to narrow)
  fuzz        run a cargo-fuzz target: cargo xtask fuzz <target> [seconds]
";

fn main() -> Result<()> {
    let mut args = env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("ci") => ci(),
        Some("layering") => layering::check(&project_root()),
        Some("bench") => bench(&rest),
        Some("fuzz") => fuzz(&rest),
        Some("help") | Some("--help") | Some("-h") | None => {
            eprint!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}

/// The workspace root, found from this crate's manifest directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
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

fn bench(rest: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.arg("bench");
    match rest.first() {
        Some(krate) => cmd.args(["-p", krate]),
        None => cmd.arg("--workspace"),
    };
    run("cargo bench", cmd)
}

fn fuzz(rest: &[String]) -> Result<()> {
    let Some(target) = rest.first() else {
        bail!("usage: cargo xtask fuzz <target> [seconds]");
    };
    let seconds = rest.get(1).map(String::as_str).unwrap_or("60");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(project_root().join("fuzz")).args([
        "+nightly",
        "fuzz",
        "run",
        target,
        "--",
        &format!("-max_total_time={seconds}"),
    ]);
    run("cargo fuzz run", cmd)
}
