//! `cargo xtask release` on a git clone of this repository: the dry run bumps the manifests,
//! moves the changelog's `Unreleased` section, packages every publishable crate in order, commits
//! and tags; each refusal changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A clone of this repository's committed state in a temporary directory.
fn clone() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("repo");
    let status = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(repository())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    (dir, copy)
}

fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `cargo xtask release ARGS` on `repo` (its own target directory; a git identity for the
/// release commit and tag, as a developer has).
fn release(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("release")
        .args(args)
        .current_dir(repo)
        .env("CONSENT_XTASK_ROOT", repo)
        .env("CARGO_TARGET_DIR", repo.join("target"))
        .env("GIT_AUTHOR_NAME", "Release Test")
        .env("GIT_AUTHOR_EMAIL", "release@consent.invalid")
        .env("GIT_COMMITTER_NAME", "Release Test")
        .env("GIT_COMMITTER_EMAIL", "release@consent.invalid")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_dry_run_bumps_packages_in_order_commits_and_tags() {
    let (_dir, repo) = clone();
    let before = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    let current = before
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.trim().strip_prefix("version = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let next = {
        let parts: Vec<u64> = current.split('.').map(|p| p.parse().unwrap()).collect();
        format!("{}.{}.0", parts[0], parts[1] + 1)
    };
    let output = release(&repo, &[&next, "--dry-run", "--no-ci", "--no-verify"]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");

    // The manifests: the workspace's version and its crates' entries, nothing else.
    let after = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    assert!(
        after.contains(&format!("[workspace.package]\nversion = \"{next}\"")),
        "{after}"
    );
    for line in after.lines().filter(|l| l.contains("path = \"crates/")) {
        assert!(line.contains(&format!("version = \"{next}\"")), "{line}");
    }
    let changed: Vec<&str> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .map(|(_, b)| b)
        .collect();
    assert!(changed.iter().all(|l| l.contains(&next)), "{changed:?}");
    let lock = std::fs::read_to_string(repo.join("Cargo.lock")).unwrap();
    assert!(lock.contains(&format!("name = \"consent-core\"\nversion = \"{next}\"")));

    // The changelog: a fresh Unreleased section, then the release, dated.
    let changelog = std::fs::read_to_string(repo.join("CHANGELOG.md")).unwrap();
    let date = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let heading = format!("## [Unreleased]\n\n## [{next}] - {}", date.trim());
    assert!(changelog.contains(&heading), "{changelog}");

    // The order: every publishable crate once, dependencies first, the facade last.
    let order: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().split_once(". ").map(|(_, rest)| rest.to_owned()))
        .filter_map(|l| l.strip_suffix(&format!(" {next}")).map(str::to_owned))
        .collect();
    let position = |name: &str| {
        order
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} not in {order:?}"))
    };
    assert_eq!(order.len(), 7, "{order:?}");
    assert!(position("consent-tcf") < position("consent-core"));
    assert!(position("consent-core") < position("consent-store"));
    assert!(position("consent-core") < position("consent-transport"));
    assert_eq!(order.last().map(String::as_str), Some("consent"));
    for never in ["xtask", "consent-e2e"] {
        assert!(
            !order.iter().any(|n| n == never),
            "{never} is not published"
        );
    }
    // Each packaged.
    for name in &order {
        let krate = repo.join(format!("target/package/{name}-{next}.crate"));
        assert!(krate.is_file(), "{} missing", krate.display());
    }

    // The commit and the annotated tag; a clean tree.
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s"]).trim(),
        format!("release {next}")
    );
    assert_eq!(
        git(&repo, &["cat-file", "-t", &format!("v{next}")]).trim(),
        "tag"
    );
    assert_eq!(git(&repo, &["status", "--porcelain"]).trim(), "");
    assert!(said.contains("dry run"), "{said}");
}

#[test]
fn each_refusal_changes_nothing() {
    let (_dir, repo) = clone();
    let manifest = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let unchanged = |why: &str| {
        assert_eq!(
            std::fs::read_to_string(repo.join("Cargo.toml")).unwrap(),
            manifest,
            "{why}"
        );
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head, "{why}");
        assert_eq!(git(&repo, &["tag", "--list"]).trim(), "", "{why}");
    };
    let refused = |args: &[&str], expect: &str| {
        let output = release(&repo, args);
        let said = text(&output);
        assert!(!output.status.success(), "{args:?} was not refused: {said}");
        assert!(said.contains(expect), "{args:?}: {said}");
    };

    refused(&["0.2"], "is not a version");
    refused(&[], "usage: cargo xtask release");
    refused(&["0.2.0", "--publish-now"], "unknown option --publish-now");
    refused(
        &["0.1.0", "--no-ci"],
        "is not greater than the workspace's version",
    );
    refused(
        &["0.0.9", "--no-ci"],
        "is not greater than the workspace's version",
    );
    unchanged("versions");

    std::fs::write(repo.join("stray.txt"), "x").unwrap();
    refused(&["9.0.0", "--no-ci"], "uncommitted changes");
    std::fs::remove_file(repo.join("stray.txt")).unwrap();
    unchanged("a dirty tree");

    // A changelog without an Unreleased section (committed, so the tree is clean).
    let changelog = std::fs::read_to_string(repo.join("CHANGELOG.md")).unwrap();
    std::fs::write(
        repo.join("CHANGELOG.md"),
        changelog.replace("## [Unreleased]", "## Unreleased work"),
    )
    .unwrap();
    git(
        &repo,
        &[
            "-c",
            "user.name=Release Test",
            "-c",
            "user.email=release@consent.invalid",
            "commit",
            "--quiet",
            "--all",
            "-m",
            "no unreleased section",
        ],
    );
    let head_now = git(&repo, &["rev-parse", "HEAD"]);
    let output = release(&repo, &["9.0.0", "--no-ci"]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no `## [Unreleased]` section"),
        "{}",
        text(&output)
    );
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head_now);
    assert_eq!(
        std::fs::read_to_string(repo.join("Cargo.toml")).unwrap(),
        manifest
    );
}
