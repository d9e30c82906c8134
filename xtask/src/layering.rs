//! The layering check: the dependency rules of `docs/ARCHITECTURE.md`, enforced with `cargo tree`,
//! the crate-overview rule (every crate root starts with a `//!` overview), and, inside each
//! crate, that its top-level modules do not import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
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
pub(crate) struct Member {
    /// The package name.
    pub(crate) name: String,
    /// Its directory, relative to the workspace root.
    pub(crate) dir: PathBuf,
}

pub(crate) fn check(root: &Path) -> Result<()> {
    eprintln!("==> layering");
    let members = members(root)?;
    let names: BTreeSet<String> = members.iter().map(|m| m.name.clone()).collect();
    let mut problems = Vec::new();
    for member in &members {
        check_overview(root, member, &mut problems)?;
        check_module_cycles(root, member, &mut problems)?;
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
pub(crate) fn members(root: &Path) -> Result<Vec<Member>> {
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

/// The top-level modules of a crate's library (`src/NAME.rs` and `src/NAME/`) must not import
/// each other in a circle: shared types and helpers live in a module of their own that both
/// sides import. Test modules (from a `#[cfg(test)]` line on) do not count.
fn check_module_cycles(root: &Path, member: &Member, problems: &mut Vec<String>) -> Result<()> {
    let src = root.join(&member.dir).join("src");
    let Ok(entries) = fs::read_dir(&src) else {
        return Ok(());
    };
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for entry in entries {
        let path = entry?.path();
        let (name, files) = if path.is_dir() {
            let mut files = Vec::new();
            collect_rs(&path, &mut files)?;
            (
                path.file_name().map(|n| n.to_string_lossy().into_owned()),
                files,
            )
        } else if path.extension().is_some_and(|e| e == "rs") {
            (
                path.file_stem().map(|n| n.to_string_lossy().into_owned()),
                vec![path.clone()],
            )
        } else {
            continue;
        };
        let Some(name) = name else { continue };
        if name == "lib" || name == "main" || name == "bin" {
            continue;
        }
        let mut text = String::new();
        for file in files {
            text.push_str(non_test_code(&fs::read_to_string(&file)?));
            text.push('\n');
        }
        modules.entry(name).or_default().push_str(&text);
    }
    let graph = module_graph(&modules);
    for cycle in cycles(&graph) {
        problems.push(format!(
            "{}: modules import each other in a circle: {} (move what they share into a module of its own)",
            member.name,
            cycle.join(" -> ")
        ));
    }
    Ok(())
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The text before the first `#[cfg(test)]` line (the unit tests sit at the end of a file).
fn non_test_code(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// Which of `modules` each module names as `crate::OTHER` (in a `use` or a path).
fn module_graph(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (name, text) in modules {
        let mut uses = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            if at > 0 && {
                let before = text.as_bytes()[at - 1];
                before.is_ascii_alphanumeric() || before == b'_' || before == b'$'
            } {
                continue;
            }
            let rest = &text[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let target = &rest[..end];
            if target != name && modules.contains_key(target) {
                uses.insert(target.to_owned());
            }
        }
        graph.insert(name.clone(), uses);
    }
    graph
}

/// Every strongly connected set of more than one module, each as a path that closes on itself.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        // A shortest path from `start` back to itself, breadth first.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.as_str()]);
        let mut closed = None;
        while let Some(at) = queue.pop_front() {
            for next in graph.get(at).into_iter().flatten() {
                if next == start {
                    closed = Some(at);
                    break;
                }
                if !parent.contains_key(next.as_str()) {
                    parent.insert(next.as_str(), at);
                    queue.push_back(next.as_str());
                }
            }
            if closed.is_some() {
                break;
            }
        }
        if let Some(mut at) = closed {
            let mut path = vec![start.clone()];
            let mut back = Vec::new();
            while at != start.as_str() {
                back.push(at.to_owned());
                at = parent[at];
            }
            back.reverse();
            path.extend(back);
            path.push(start.clone());
            seen.extend(path.iter().cloned());
            found.push(path);
        }
    }
    found
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

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect()
    }

    #[test]
    fn a_circle_of_imports_is_found_and_a_line_is_not() {
        let circle = modules(&[
            ("server", "use crate::edge::routes;"),
            (
                "edge",
                "use crate::server::AppState; use crate::util::merge;",
            ),
            ("util", "fn x() {}"),
        ]);
        assert_eq!(
            cycles(&module_graph(&circle)),
            vec![vec![
                "edge".to_owned(),
                "server".to_owned(),
                "edge".to_owned()
            ]]
        );
        let line = modules(&[
            (
                "server",
                "use crate::edge::routes; use crate::state::AppState;",
            ),
            (
                "edge",
                "use crate::state::AppState; crate::util::merge(a, b);",
            ),
            ("state", "use crate::util::now;"),
            ("util", "fn x() {}"),
        ]);
        assert!(cycles(&module_graph(&line)).is_empty());
        // `$crate::` in a macro and names that merely end in "crate" are not imports.
        let macros = modules(&[
            ("a", "$crate::b::x(); notcrate::b::y();"),
            ("b", "crate::a::z"),
        ]);
        assert!(cycles(&module_graph(&macros)).is_empty());
    }

    #[test]
    fn unit_tests_do_not_count() {
        assert_eq!(
            non_test_code("use crate::a;\n#[cfg(test)]\nmod tests { use crate::b; }"),
            "use crate::a;"
        );
    }
}
