//! The layering check: the dependency rules of `docs/ARCHITECTURE.md`, enforced with `cargo tree`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cargo;

/// Each workspace crate and the workspace crates it may depend on directly (normal dependencies).
/// Keep in step with the "Layering" section of `docs/ARCHITECTURE.md`.
const LAYERS: &[(&str, &[&str])] = &[
    ("consent-tcf", &[]),
    ("consent-core", &["consent-tcf"]),
    ("consent-optin", &["consent-core", "consent-tcf"]),
    ("consent-store", &["consent-core"]),
    (
        "consent-transport",
        &["consent-core", "consent-optin", "consent-store"],
    ),
    (
        "consent",
        &[
            "consent-core",
            "consent-tcf",
            "consent-optin",
            "consent-store",
            "consent-transport",
        ],
    ),
    ("consent-server", &["consent-core", "consent-tcf"]),
];

/// Crates that must stay pure: no I/O, no clock, no threads, no async runtime.
const PURE: &[&str] = &["consent-tcf", "consent-core"];

/// Crates that do I/O, read the clock or entropy, or are an async runtime. None of them may appear
/// anywhere in the normal dependency tree of a pure crate.
const IMPURE: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "mio",
    "hyper",
    "reqwest",
    "socket2",
    "libc",
    "getrandom",
    "rand",
    "chrono",
    "time",
    "rusqlite",
    "sqlx",
    "cookie_store",
    "futures-executor",
];

pub(crate) fn check(root: &Path) -> Result<()> {
    eprintln!("==> layering");
    let crates_dir = root.join("crates");
    let mut present = BTreeSet::new();
    for entry in fs::read_dir(&crates_dir).context("reading crates/")? {
        let entry = entry?;
        if entry.path().join("Cargo.toml").is_file() {
            present.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }

    let mut problems = Vec::new();
    for name in &present {
        let Some((_, allowed)) = LAYERS.iter().find(|(krate, _)| krate == name) else {
            problems.push(format!(
                "crates/{name} is not in the layering table (xtask/src/layering.rs and docs/ARCHITECTURE.md)"
            ));
            continue;
        };
        check_overview(&crates_dir.join(name), name, &mut problems)?;
        for dep in direct_workspace_deps(name, &present)? {
            if !allowed.contains(&dep.as_str()) {
                problems.push(format!(
                    "{name} depends on {dep}, which the layering does not allow (allowed: {allowed:?})"
                ));
            }
        }
        if PURE.contains(&name.as_str()) {
            for dep in normal_tree(name)? {
                if IMPURE.contains(&dep.as_str()) {
                    problems.push(format!(
                        "{name} must do no I/O, but its dependency tree contains {dep} (see `cargo tree -p {name} -i {dep}`)"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        eprintln!(
            "layering: {} crates checked, all within their layer",
            present.len()
        );
        Ok(())
    } else {
        bail!("layering check failed:\n  - {}", problems.join("\n  - "))
    }
}

/// Every crate starts with a `//!` overview.
fn check_overview(dir: &Path, name: &str, problems: &mut Vec<String>) -> Result<()> {
    for file in ["src/lib.rs", "src/main.rs"] {
        let path = dir.join(file);
        if path.is_file() {
            let text = fs::read_to_string(&path)?;
            if !text.trim_start().starts_with("//!") {
                problems.push(format!(
                    "crates/{name}/{file} does not start with a `//!` overview"
                ));
            }
        }
    }
    Ok(())
}

fn tree(name: &str, depth: Option<u32>) -> Result<Vec<String>> {
    let mut cmd = cargo();
    cmd.args([
        "tree", "--quiet", "-p", name, "-e", "normal", "--prefix", "none",
    ])
    .args(["--format", "{p}"]);
    if let Some(depth) = depth {
        cmd.args(["--depth", &depth.to_string()]);
    }
    let out = cmd.output().context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

fn direct_workspace_deps(name: &str, present: &BTreeSet<String>) -> Result<BTreeSet<String>> {
    Ok(tree(name, Some(1))?
        .into_iter()
        .filter(|dep| dep != name && present.contains(dep))
        .collect())
}

fn normal_tree(name: &str) -> Result<BTreeSet<String>> {
    Ok(tree(name, None)?.into_iter().collect())
}
