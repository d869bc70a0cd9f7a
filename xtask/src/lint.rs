//! `cargo xtask lint`: the release packaging, checked with real tools because none of it can
//! run here (GitHub runs the workflow and the action; building the image needs a container
//! engine).
//!
//! - `Dockerfile`: hadolint (any finding fails).
//! - `.github/workflows/*.yml`, and the workflow docs/recipes.md shows (its
//!   `<!-- recipe-yaml: github -->` block): check-jsonschema with its vendored GitHub workflow
//!   schema (`--builtin-schema vendor.github-workflows`).
//! - `action.yml`: check-jsonschema with the vendored GitHub action schema
//!   (`vendor.github-actions`).
//!
//! Both tools are pinned in the venv `cargo xtask setup` creates (servers.rs); the schemas ship
//! inside check-jsonschema, so nothing is downloaded. That the names in these files agree
//! (targets, asset and checksum file names, the action's inputs) is tests/e2e/packaging.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::servers;

pub fn run(root: &Path) -> Result<()> {
    servers::install(root)?;
    let bin = root.join(".venv").join("bin");

    tool(
        root,
        &bin.join("hadolint"),
        &["--no-color"],
        &[root.join("Dockerfile")],
    )?;

    let mut workflows = Vec::new();
    let dir = root.join(".github").join("workflows");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            workflows.push(path);
        }
    }
    workflows.sort();
    if workflows.is_empty() {
        bail!("no workflow in {}", dir.display());
    }
    workflows.push(recipe_workflow(root)?);
    let check = bin.join("check-jsonschema");
    tool(
        root,
        &check,
        &["--builtin-schema", "vendor.github-workflows"],
        &workflows,
    )?;
    tool(
        root,
        &check,
        &["--builtin-schema", "vendor.github-actions"],
        &[root.join("action.yml")],
    )?;
    println!(
        "lint: Dockerfile, {} workflow(s) and action.yml are clean",
        workflows.len()
    );
    Ok(())
}

/// The workflow docs/recipes.md shows, written to `target/lint/` so the schema check sees it.
fn recipe_workflow(root: &Path) -> Result<PathBuf> {
    let page = std::fs::read_to_string(root.join("docs").join("recipes.md"))
        .context("reading docs/recipes.md")?;
    let marker = "<!-- recipe-yaml: github -->\n```yaml\n";
    let start = page
        .find(marker)
        .context("docs/recipes.md has no `<!-- recipe-yaml: github -->` yaml block")?
        + marker.len();
    let end = page[start..]
        .find("```")
        .context("an unclosed yaml block in docs/recipes.md")?;
    let dir = root.join("target").join("lint");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("recipes-github-workflow.yml");
    std::fs::write(&path, &page[start..start + end])
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs `TOOL ARGS FILES` in the workspace root, failing when it reports anything.
fn tool(root: &Path, tool: &Path, args: &[&str], files: &[PathBuf]) -> Result<()> {
    let shown: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    let name = tool.file_name().unwrap_or_default().to_string_lossy();
    eprintln!("xtask: lint: {name} {} {}", args.join(" "), shown.join(" "));
    let status = Command::new(tool)
        .args(args)
        .args(files)
        .current_dir(root)
        .status()
        .with_context(|| {
            format!(
                "could not start {}: run `cargo xtask setup`",
                tool.display()
            )
        })?;
    if !status.success() {
        bail!("{name} found problems in {} ({status})", shown.join(", "));
    }
    Ok(())
}
