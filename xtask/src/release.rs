//! `cargo xtask release <version> [--dry-run] [--no-ci] [--no-verify]`: a release made on this
//! machine, ordered and checked, that stops before anything leaves it.
//!
//! 1. Refuses a dirty tree, a version that is not greater than the workspace's, and a
//!    `CHANGELOG.md` without an `## [Unreleased]` section; nothing is changed then.
//! 2. Runs the checks of `cargo xtask ci` (`--no-ci` skips them: for the tests of this task,
//!    which CI runs after those checks anyway).
//! 3. Bumps `[workspace.package] version` and the workspace's own entries of
//!    `[workspace.dependencies]`, updates `Cargo.lock` for them (no network), and moves the
//!    `Unreleased` section of the changelog under the new version, dated today.
//! 4. Commits that (`release <version>`), then packages every publishable crate in one
//!    `cargo package --package …` (which resolves the workspace's own crates locally, as
//!    `--workspace` does, without the crates that are `publish = false`) and builds each package
//!    from its `.crate` to verify it (`--no-verify` packs without building), and prints the order
//!    they publish in: dependencies first, the facade last.
//! 5. Creates the annotated tag `v<version>`. With `--dry-run` that is all; without it, it also
//!    prints the one command that publishes. Should packaging fail, the release commit is undone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A `major.minor.patch[-pre]` version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    numbers: [u64; 3],
    pre: Option<String>,
}

impl Version {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) if !pre.is_empty() => (core, Some(pre.to_owned())),
            Some(_) => bail!("{text:?} is not a version: an empty pre-release"),
            None => (text, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            bail!("{text:?} is not a version: expected major.minor.patch");
        };
        let number = |part: &str| {
            if part.is_empty() || (part.len() > 1 && part.starts_with('0')) {
                bail!("{text:?} is not a version: {part:?} is not a number");
            }
            part.parse::<u64>()
                .with_context(|| format!("{text:?} is not a version: {part:?} is not a number"))
        };
        Ok(Self {
            numbers: [number(major)?, number(minor)?, number(patch)?],
            pre,
        })
    }

    /// Whether `self` comes after `other` (a pre-release before its release).
    pub(crate) fn is_after(&self, other: &Version) -> bool {
        match self.numbers.cmp(&other.numbers) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => match (&self.pre, &other.pre) {
                (None, Some(_)) => true,
                (Some(a), Some(b)) => a > b,
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [major, minor, patch] = self.numbers;
        write!(f, "{major}.{minor}.{patch}")?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    version: Version,
    dry_run: bool,
    run_ci: bool,
    verify: bool,
}

fn options(args: &[String]) -> Result<Options> {
    let mut version = None;
    let (mut dry_run, mut run_ci, mut verify) = (false, true, true);
    for arg in args {
        match arg.as_str() {
            "--dry-run" => dry_run = true,
            "--no-ci" => run_ci = false,
            "--no-verify" => verify = false,
            flag if flag.starts_with("--") => bail!("unknown option {flag}"),
            text if version.is_none() => version = Some(Version::parse(text)?),
            extra => bail!("one version only; {extra:?} is extra"),
        }
    }
    let Some(version) = version else {
        bail!("usage: cargo xtask release <version> [--dry-run] [--no-ci] [--no-verify]");
    };
    Ok(Options {
        version,
        dry_run,
        run_ci,
        verify,
    })
}

/// The repository the release is made in: `CONSENT_XTASK_ROOT` when set (the tests' copies),
/// else this workspace.
fn root() -> PathBuf {
    std::env::var_os("CONSENT_XTASK_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(crate::project_root)
}

#[allow(
    clippy::print_stdout,
    reason = "the release order and the command that publishes are this task's output"
)]
pub(crate) fn release(args: &[String]) -> Result<()> {
    let options = options(args)?;
    let root = root();
    let git = |args: &[&str]| -> Result<String> {
        let output = Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .context("running git")?;
        if !output.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };

    // 1. Refusals, before anything changes.
    let dirty = git(&["status", "--porcelain"])?;
    if !dirty.trim().is_empty() {
        bail!("the tree has uncommitted changes; commit or stash them first:\n{dirty}");
    }
    let manifest_path = root.join("Cargo.toml");
    let manifest = fs::read_to_string(&manifest_path).context("reading Cargo.toml")?;
    let current = workspace_version(&manifest)?;
    if !options.version.is_after(&current) {
        bail!(
            "{} is not greater than the workspace's version {current}",
            options.version
        );
    }
    let changelog_path = root.join("CHANGELOG.md");
    let changelog = fs::read_to_string(&changelog_path)
        .context("reading CHANGELOG.md (a release needs one, with an `## [Unreleased]` section)")?;
    let today = today(&root)?;
    let new_changelog = release_changelog(&changelog, &options.version, &today)?;
    let tag = format!("v{}", options.version);
    if !git(&["tag", "--list", &tag])?.trim().is_empty() {
        bail!("the tag {tag} exists already");
    }

    // 2. The checks of `cargo xtask ci`.
    if options.run_ci {
        crate::ci()?;
    }

    // 3. Versions and changelog.
    let new_manifest = bump(&manifest, &current, &options.version)?;
    fs::write(&manifest_path, new_manifest).context("writing Cargo.toml")?;
    fs::write(&changelog_path, new_changelog).context("writing CHANGELOG.md")?;
    let mut lock = cargo(&root);
    lock.args(["update", "--workspace", "--offline"]);
    crate::run("cargo update --workspace --offline", lock)?;

    // 4. Commit, then package in order.
    let order = publish_order(&root)?;
    git(&[
        "commit",
        "--quiet",
        "--all",
        "-m",
        &format!("release {}", options.version),
    ])?;
    let mut package = cargo(&root);
    package.arg("package");
    for name in &order {
        package.args(["--package", name]);
    }
    if !options.verify {
        package.arg("--no-verify");
    }
    if let Err(err) = crate::run("cargo package (every publishable crate)", package) {
        git(&["reset", "--quiet", "--hard", "HEAD~1"])?;
        return Err(err.context("packaging failed; the release commit was undone"));
    }
    println!("release order (dependencies first):");
    for (i, name) in order.iter().enumerate() {
        println!("  {}. {name} {}", i + 1, options.version);
    }

    // 5. The tag, and what publishes.
    git(&[
        "tag",
        "--annotate",
        &tag,
        "-m",
        &format!("consent {}", options.version),
    ])?;
    println!("committed `release {}` and tagged {tag}", options.version);
    if options.dry_run {
        println!(
            "dry run: nothing else to do; undo with `git tag -d {tag} && git reset --hard HEAD~1`"
        );
    } else {
        println!(
            "nothing has left this machine. To publish, in this order, then push:\n  \
             cargo publish --workspace && git push --follow-tags"
        );
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// Today's date, `YYYY-MM-DD`, in UTC (from `date`, as git and the changelog's readers see it).
pub(crate) fn today(root: &Path) -> Result<String> {
    let output = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .current_dir(root)
        .output()
        .context("running date")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The `version` of `[workspace.package]`.
fn workspace_version(manifest: &str) -> Result<Version> {
    let mut table = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line;
        } else if table == "[workspace.package]"
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "version"
        {
            return Version::parse(value.trim().trim_matches('"'));
        }
    }
    bail!("Cargo.toml has no version in [workspace.package]")
}

/// The manifest with `[workspace.package] version` and every `path` entry of
/// `[workspace.dependencies]` (the workspace's own crates) at `new`.
fn bump(manifest: &str, old: &Version, new: &Version) -> Result<String> {
    let old_version = format!("version = \"{old}\"");
    let new_version = format!("version = \"{new}\"");
    let mut table = String::new();
    let mut bumped = 0;
    let mut out = String::with_capacity(manifest.len());
    for line in manifest.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            table = trimmed.to_owned();
        }
        let ours = (table == "[workspace.package]" && trimmed.starts_with("version"))
            || (table == "[workspace.dependencies]" && trimmed.contains("path = \""));
        if ours && line.contains(&old_version) {
            out.push_str(&line.replacen(&old_version, &new_version, 1));
            bumped += 1;
        } else {
            out.push_str(line);
        }
    }
    if bumped < 2 {
        bail!(
            "found {bumped} version lines to bump in Cargo.toml; expected the workspace's and its crates'"
        );
    }
    Ok(out)
}

/// The changelog with its `## [Unreleased]` section moved under `## [<version>] - <date>`, and a
/// new, empty `Unreleased` section above it.
fn release_changelog(changelog: &str, version: &Version, date: &str) -> Result<String> {
    const UNRELEASED: &str = "## [Unreleased]";
    let Some(at) = changelog.find(UNRELEASED) else {
        bail!("CHANGELOG.md has no `{UNRELEASED}` section");
    };
    let after = &changelog[at + UNRELEASED.len()..];
    if !after.starts_with('\n') && !after.is_empty() {
        bail!("CHANGELOG.md has no `{UNRELEASED}` section (a heading of its own)");
    }
    let section_end = after.find("\n## ").map_or(after.len(), |i| i + 1);
    if after[..section_end].trim().is_empty() {
        bail!("the `{UNRELEASED}` section of CHANGELOG.md is empty: nothing to release");
    }
    Ok(format!(
        "{}{UNRELEASED}\n\n## [{version}] - {date}{after}",
        &changelog[..at]
    ))
}

/// The publishable packages of the workspace in the order they publish: each after the
/// workspace crates it depends on (normal and build dependencies), the facade last.
fn publish_order(root: &Path) -> Result<Vec<String>> {
    let metadata = metadata(root)?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let publishable: BTreeSet<String> = packages
        .iter()
        .filter(|p| {
            p["publish"]
                .as_array()
                .is_none_or(|registries| !registries.is_empty())
        })
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in &packages {
        let Some(name) = package["name"].as_str() else {
            continue;
        };
        if !publishable.contains(name) {
            continue;
        }
        let own = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .filter_map(|d| d["name"].as_str())
            .filter(|d| publishable.contains(*d))
            .map(str::to_owned)
            .collect();
        deps.insert(name.to_owned(), own);
    }
    order(&deps)
}

/// The facade, which publishes last.
const FACADE: &str = "consent";

/// A topological order of `deps` (package → the packages it needs): of the packages ready, the
/// facade comes after every other, and the rest by name.
fn order(deps: &BTreeMap<String, BTreeSet<String>>) -> Result<Vec<String>> {
    let mut done: Vec<String> = Vec::new();
    while done.len() < deps.len() {
        let next = deps
            .iter()
            .filter(|(name, needs)| {
                !done.contains(name) && needs.iter().all(|need| done.contains(need))
            })
            .map(|(name, _)| name)
            .min_by_key(|name| (name.as_str() == FACADE, name.as_str()))
            .cloned();
        match next {
            Some(name) => done.push(name),
            None => bail!("the workspace's crates depend on each other in a circle"),
        }
    }
    Ok(done)
}

/// `cargo metadata --no-deps` of the workspace at `root`, offline.
pub(crate) fn metadata(root: &Path) -> Result<serde_json::Value> {
    let output = cargo(root)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata")?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn versions_parse_and_order() {
        assert!(v("0.2.0").is_after(&v("0.1.0")));
        assert!(v("0.1.1").is_after(&v("0.1.0")));
        assert!(v("1.0.0").is_after(&v("0.99.99")));
        assert!(v("0.2.0").is_after(&v("0.2.0-rc.1")));
        assert!(v("0.2.0-rc.2").is_after(&v("0.2.0-rc.1")));
        assert!(!v("0.1.0").is_after(&v("0.1.0")));
        assert!(!v("0.2.0-rc.1").is_after(&v("0.2.0")));
        assert!(!v("0.0.9").is_after(&v("0.1.0")));
        assert_eq!(v("0.2.0-rc.1").to_string(), "0.2.0-rc.1");
        for bad in ["0.2", "0.2.0.1", "a.b.c", "01.2.0", "0.2.0-", ""] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_workspace_s_own_versions_are_bumped() {
        let manifest = "[workspace.package]\nversion = \"0.1.0\"\n\n[workspace.dependencies]\n\
            serde = { version = \"0.1.0\" }\n\
            consent-core = { path = \"crates/consent-core\", version = \"0.1.0\" }\n";
        let bumped = bump(manifest, &v("0.1.0"), &v("0.2.0")).unwrap();
        assert_eq!(
            bumped,
            "[workspace.package]\nversion = \"0.2.0\"\n\n[workspace.dependencies]\n\
             serde = { version = \"0.1.0\" }\n\
             consent-core = { path = \"crates/consent-core\", version = \"0.2.0\" }\n"
        );
        assert_eq!(workspace_version(&bumped).unwrap(), v("0.2.0"));
    }

    #[test]
    fn the_unreleased_section_moves_under_the_version() {
        let changelog =
            "# Changelog\n\n## [Unreleased]\n\n### Added\n- a\n\n## [0.1.0] - 2026-01-01\n- b\n";
        assert_eq!(
            release_changelog(changelog, &v("0.2.0"), "2026-12-06").unwrap(),
            "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2026-12-06\n\n### Added\n- a\n\n\
             ## [0.1.0] - 2026-01-01\n- b\n"
        );
        assert!(release_changelog("# Changelog\n", &v("0.2.0"), "d").is_err());
        assert!(
            release_changelog("## [Unreleased]\n\n## [0.1.0]\n", &v("0.2.0"), "d").is_err(),
            "an empty section"
        );
    }

    #[test]
    fn dependencies_publish_first() {
        let deps: BTreeMap<String, BTreeSet<String>> = [
            ("consent", vec!["consent-core", "consent-transport"]),
            ("consent-core", vec!["consent-tcf"]),
            ("consent-tcf", vec![]),
            ("consent-transport", vec!["consent-core"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(
            order(&deps).unwrap(),
            [
                "consent-tcf",
                "consent-core",
                "consent-transport",
                "consent"
            ]
        );
        let mut circle = deps.clone();
        circle.insert("consent-tcf".to_owned(), ["consent".to_owned()].into());
        assert!(order(&circle).is_err());
    }
}
