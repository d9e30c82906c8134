//! The layering check: the dependency rules of `docs/ARCHITECTURE.md`, enforced with `cargo tree`,
//! and the crate-overview rule (every crate root starts with a `//!` overview).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cargo;

/// Which workspace packages a package may depend on directly (normal dependencies).
#[derive(Debug, Clone, Copy)]
enum Allowed {
    /// Only these.
    Only(&'static [&'static str]),
    /// Any workspace package: a test package, never published, that drives the whole stack.
    Any,
}

/// Each workspace package and the workspace packages it may depend on directly. Keep in step with
/// the "Layering" table of `docs/ARCHITECTURE.md` (the check compares the two).
const LAYERS: &[(&str, Allowed)] = &[
    ("consent-tcf", Allowed::Only(&[])),
    ("consent-core", Allowed::Only(&["consent-tcf"])),
    (
        "consent-optin",
        Allowed::Only(&["consent-core", "consent-tcf"]),
    ),
    ("consent-store", Allowed::Only(&["consent-core"])),
    (
        "consent-transport",
        Allowed::Only(&["consent-core", "consent-optin", "consent-store"]),
    ),
    (
        "consent",
        Allowed::Only(&[
            "consent-core",
            "consent-tcf",
            "consent-optin",
            "consent-store",
            "consent-transport",
        ]),
    ),
    (
        "consent-server",
        Allowed::Only(&["consent-core", "consent-tcf"]),
    ),
    ("consent-e2e", Allowed::Any),
];

/// Workspace packages that are tools, not part of the product: they may depend on no workspace
/// crate and are not in the architecture's table, but their crate roots need an overview too.
const TOOLS: &[&str] = &["xtask"];

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

/// A workspace package: its name and its directory relative to the workspace root.
#[derive(Debug)]
struct Member {
    name: String,
    dir: PathBuf,
}

pub(crate) fn check(root: &Path) -> Result<()> {
    eprintln!("==> layering");
    let members = members(root)?;
    let names: BTreeSet<String> = members.iter().map(|m| m.name.clone()).collect();
    let mut problems = Vec::new();
    for member in &members {
        check_overview(root, member, &mut problems)?;
        let name = member.name.as_str();
        let allowed = if TOOLS.contains(&name) {
            Allowed::Only(&[])
        } else if let Some((_, allowed)) = LAYERS.iter().find(|(krate, _)| *krate == name) {
            *allowed
        } else {
            problems.push(format!(
                "{} (package {name}) is not in the layering table (xtask/src/layering.rs and docs/ARCHITECTURE.md)",
                member.dir.display()
            ));
            continue;
        };
        if let Allowed::Only(allowed) = allowed {
            for dep in direct_workspace_deps(name, &names)? {
                if !allowed.contains(&dep.as_str()) {
                    problems.push(format!(
                        "{name} depends on {dep}, which the layering does not allow (allowed: {allowed:?})"
                    ));
                }
            }
        }
        if PURE.contains(&name) {
            for dep in normal_tree(name)? {
                if IMPURE.contains(&dep.as_str()) {
                    problems.push(format!(
                        "{name} must do no I/O, but its dependency tree contains {dep} (see `cargo tree -p {name} -i {dep}`)"
                    ));
                }
            }
        }
    }
    check_architecture_table(root, &names, &mut problems)?;
    if problems.is_empty() {
        eprintln!(
            "layering: {} packages checked, all within their layer",
            members.len()
        );
        Ok(())
    } else {
        bail!("layering check failed:\n  - {}", problems.join("\n  - "))
    }
}

/// The workspace's packages: every `crates/*` with a manifest, the end-to-end tests (`tests/`) and
/// `xtask` — the `members` of the root manifest.
fn members(root: &Path) -> Result<Vec<Member>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(root.join("crates")).context("reading crates/")? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    for extra in ["tests", "xtask"] {
        let path = root.join(extra);
        if path.join("Cargo.toml").is_file() {
            dirs.push(path);
        }
    }
    dirs.into_iter()
        .map(|dir| {
            let manifest = dir.join("Cargo.toml");
            let text = fs::read_to_string(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let name = package_name(&text)
                .with_context(|| format!("{} has no [package] name", manifest.display()))?;
            let dir = dir.strip_prefix(root).unwrap_or(&dir).to_path_buf();
            Ok(Member { name, dir })
        })
        .collect()
}

/// The `name` of a manifest's `[package]` table (the one line xtask needs, without a TOML parser).
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Every crate root starts with a `//!` overview: the library, the binaries, the examples, the
/// integration-test binaries and the benchmarks (the targets cargo discovers by itself).
fn check_overview(root: &Path, member: &Member, problems: &mut Vec<String>) -> Result<()> {
    let dir = root.join(&member.dir);
    let mut roots = vec![dir.join("src/lib.rs"), dir.join("src/main.rs")];
    for targets in ["src/bin", "examples", "tests", "benches"] {
        let Ok(entries) = fs::read_dir(dir.join(targets)) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "rs") {
                roots.push(path);
            } else if path.is_dir() {
                roots.push(path.join("main.rs"));
            }
        }
    }
    roots.sort();
    for path in roots.into_iter().filter(|p| p.is_file()) {
        let text = fs::read_to_string(&path)?;
        if !text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{} does not start with a `//!` overview",
                path.strip_prefix(root).unwrap_or(&path).display()
            ));
        }
    }
    Ok(())
}

/// The "Layering" table of `docs/ARCHITECTURE.md` says what [`LAYERS`] says: one row per package,
/// naming the same workspace crates (or "any" for a package that may depend on anything).
fn check_architecture_table(
    root: &Path,
    names: &BTreeSet<String>,
    problems: &mut Vec<String>,
) -> Result<()> {
    let path = root.join("docs/ARCHITECTURE.md");
    let text = fs::read_to_string(&path).context("reading docs/ARCHITECTURE.md")?;
    let rows: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().strip_prefix('|')?.split('|').collect();
            let [first, second, ..] = cells.as_slice() else {
                return None;
            };
            let name = first.trim().strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), second.trim().to_owned()))
        })
        .collect();
    for (name, allowed) in LAYERS {
        if !names.contains(*name) {
            continue;
        }
        let Some((_, cell)) = rows.iter().find(|(row, _)| row == name) else {
            problems.push(format!(
                "docs/ARCHITECTURE.md has no row for `{name}` in its layering table"
            ));
            continue;
        };
        let documented: BTreeSet<&str> = cell.split('`').skip(1).step_by(2).collect();
        match allowed {
            Allowed::Only(allowed) => {
                let expected: BTreeSet<&str> = allowed.iter().copied().collect();
                if documented != expected {
                    problems.push(format!(
                        "docs/ARCHITECTURE.md says `{name}` may depend on {documented:?}, xtask/src/layering.rs says {expected:?}"
                    ));
                }
            }
            Allowed::Any => {
                // Other backticked words (a path, a manifest key) may explain the row.
                let named = documented.iter().any(|dep| names.contains(*dep));
                if named || !cell.to_lowercase().contains("any") {
                    problems.push(format!(
                        "docs/ARCHITECTURE.md should say `{name}` may depend on any workspace crate, it says {cell:?}"
                    ));
                }
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
