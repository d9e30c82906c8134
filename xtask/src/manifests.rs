//! The manifest check of `cargo xtask ci`: every crate that can be published says what crates.io
//! and docs.rs show (description, license, repository, keywords, categories, readme,
//! rust-version), its readme exists, its categories are true (`no-std` only for a `#![no_std]`
//! library), and the workspace's tools and tests (`xtask`, the end-to-end tests, the fuzz crate)
//! are `publish = false`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::layering::{Member, members};

/// The `[package]` keys a publishable crate must set (directly or with `.workspace = true`).
const REQUIRED: &[&str] = &[
    "description",
    "license",
    "repository",
    "keywords",
    "categories",
    "readme",
    "rust-version",
];

/// The packages that must never be published: tools and test harnesses.
const NOT_PUBLISHED: &[&str] = &["xtask", "consent-e2e", "consent-fuzz"];

pub(crate) fn check(root: &Path) -> Result<()> {
    eprintln!("==> manifests");
    let mut all = members(root)?;
    if root.join("fuzz/Cargo.toml").is_file() {
        // Outside the workspace (cargo-fuzz needs nightly), but in the repository.
        all.push(Member {
            name: "consent-fuzz".to_owned(),
            dir: "fuzz".into(),
        });
    }
    let mut problems = Vec::new();
    let mut published = 0;
    for member in &all {
        let manifest = root.join(&member.dir).join("Cargo.toml");
        let text = fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let lib = fs::read_to_string(root.join(&member.dir).join("src/lib.rs")).unwrap_or_default();
        let readme_exists = |name: &str| root.join(&member.dir).join(name).is_file();
        let found = problems_of(&member.name, &text, &lib, readme_exists);
        if !NOT_PUBLISHED.contains(&member.name.as_str()) {
            published += 1;
        }
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("{} ({}): {p}", member.name, manifest.display())),
        );
    }
    if problems.is_empty() {
        eprintln!(
            "manifests: {published} publishable crates say what crates.io shows; {} not published",
            all.len() - published
        );
        Ok(())
    } else {
        bail!("manifest check failed:\n  - {}", problems.join("\n  - "))
    }
}

/// What is wrong with the manifest `text` of package `name`, whose library source is `lib`
/// (empty when it has none); `readme_exists` tells whether a file next to the manifest exists.
fn problems_of(
    name: &str,
    text: &str,
    lib: &str,
    readme_exists: impl Fn(&str) -> bool,
) -> Vec<String> {
    let package = package_table(text);
    let value = |key: &str| {
        package
            .iter()
            .find(|(k, _)| k == key || *k == format!("{key}.workspace"))
            .map(|(_, v)| v.as_str())
    };
    let mut problems = Vec::new();
    if NOT_PUBLISHED.contains(&name) {
        if value("publish") != Some("false") {
            problems.push("a tool or test harness must say `publish = false`".to_owned());
        }
        return problems;
    }
    if value("publish") == Some("false") {
        problems.push("`publish = false` on a crate the workspace publishes".to_owned());
    }
    for key in REQUIRED {
        if value(key).is_none() {
            problems.push(format!("`{key}` is missing from [package]"));
        }
    }
    if let Some(readme) = value("readme") {
        let file = readme.trim_matches('"');
        if readme != "true" && !readme_exists(file) {
            problems.push(format!("its readme {file} does not exist"));
        }
    }
    if let Some(keywords) = value("keywords") {
        let count = keywords.matches('"').count() / 2;
        if count > 5 {
            problems.push(format!("{count} keywords; crates.io takes at most 5"));
        }
    }
    if let Some(categories) = value("categories")
        && categories.contains("\"no-std\"")
        && !lib.contains("#![no_std]")
    {
        problems.push("category `no-std`, but the library is not `#![no_std]`".to_owned());
    }
    problems
}

/// The `key = value` lines of a manifest's `[package]` table (an array value on one line).
fn package_table(text: &str) -> Vec<(String, String)> {
    let mut in_package = false;
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && !line.starts_with('#')
            && let Some((key, value)) = line.split_once('=')
        {
            keys.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[package]
name = "consent-x"
description = "X."
version.workspace = true
rust-version.workspace = true
license.workspace = true
repository.workspace = true
readme = "README.md"
keywords = ["consent", "gdpr"]
categories = ["data-structures"]

[dependencies]
readme = "not this table"
"#;

    #[test]
    fn a_complete_manifest_passes() {
        assert_eq!(
            problems_of("consent-x", GOOD, "", |_| true),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_missing_key_and_untrue_claim_is_named() {
        let without_readme = GOOD.replace("readme = \"README.md\"\n", "");
        assert_eq!(
            problems_of("consent-x", &without_readme, "", |_| true),
            ["`readme` is missing from [package]"]
        );
        assert_eq!(
            problems_of("consent-x", GOOD, "", |_| false),
            ["its readme README.md does not exist"]
        );
        let no_std = GOOD.replace("\"data-structures\"", "\"no-std\"");
        assert_eq!(
            problems_of("consent-x", &no_std, "#![no_std]", |_| true),
            Vec::<String>::new()
        );
        assert_eq!(
            problems_of("consent-x", &no_std, "//! std", |_| true),
            ["category `no-std`, but the library is not `#![no_std]`"]
        );
        let six = GOOD.replace(
            r#"["consent", "gdpr"]"#,
            r#"["a", "b", "c", "d", "e", "f"]"#,
        );
        assert_eq!(
            problems_of("consent-x", &six, "", |_| true),
            ["6 keywords; crates.io takes at most 5"]
        );
    }

    #[test]
    fn tools_and_test_harnesses_must_not_be_published() {
        assert_eq!(
            problems_of("xtask", "[package]\nname = \"xtask\"\n", "", |_| true),
            ["a tool or test harness must say `publish = false`"]
        );
        assert!(
            problems_of(
                "consent-e2e",
                "[package]\nname = \"consent-e2e\"\npublish = false\n",
                "",
                |_| true
            )
            .is_empty()
        );
        let published_by_mistake = GOOD.replace(
            "[package]\nname = \"consent-x\"\n",
            "[package]\nname = \"consent-x\"\npublish = false\n",
        );
        assert_eq!(
            problems_of("consent-x", &published_by_mistake, "", |_| true),
            ["`publish = false` on a crate the workspace publishes"]
        );
    }
}
