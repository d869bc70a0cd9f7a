//! The README's Install section, run as written (a step of `cargo xtask ci`, after the tests).
//!
//! Runs each command of the "Install" block in the workspace root, with two test-only changes
//! to `cargo install`: `--debug` (a release build would cost CI minutes) and `--root` a fresh
//! `target/install-check/` instead of `~/.cargo`, and `CARGO_TARGET_DIR` set to the workspace's
//! target dir so the build reuses what the tests built (and `CARGO_NET_OFFLINE`: they
//! downloaded every crate). The installed `bin/` comes first on
//! `PATH`, so `secret-sync --version` is the installed binary; its output must name this
//! workspace's version. Then the README's Use test (tests/e2e/readme.rs) runs again with
//! `SECRET_SYNC_README_BIN_DIR` naming that `bin/`, so the Use steps run the installed binary.
//!
//! This is a CI step rather than a `#[test]`: the install build would run beside the other
//! tests and starve their timing on a small machine.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The body of the first block fenced with ```LANG after the heading `## HEADING`.
fn block_after(text: &str, heading: &str, lang: &str) -> Result<String> {
    let start = text
        .find(&format!("\n## {heading}\n"))
        .with_context(|| format!("README.md has no `## {heading}`"))?;
    let rest = &text[start..];
    let open = rest
        .find(&format!("```{lang}\n"))
        .with_context(|| format!("no ```{lang} block after `## {heading}` in README.md"))?;
    let body = &rest[open + lang.len() + 4..];
    let end = body
        .find("```")
        .context("an unclosed code block in README.md")?;
    Ok(body[..end].to_owned())
}

pub fn check(root: &Path) -> Result<()> {
    let readme = std::fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    let commands: Vec<String> = block_after(&readme, "Install", "sh")?
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    let install_root = root.join("target").join("install-check");
    if install_root.exists() {
        std::fs::remove_dir_all(&install_root)
            .with_context(|| format!("removing {}", install_root.display()))?;
    }
    let bin = install_root.join("bin");
    let path = match std::env::var_os("PATH") {
        Some(path) => {
            let mut dirs = vec![bin.clone()];
            dirs.extend(std::env::split_paths(&path));
            std::env::join_paths(dirs).context("joining PATH")?
        }
        None => bin.clone().into_os_string(),
    };

    let mut versions = String::new();
    for command in &commands {
        let mut words: Vec<&str> = command.split_whitespace().collect();
        if words.starts_with(&["cargo", "install"]) {
            words.extend(["--debug", "--root"]);
            words.push(install_root.to_str().context("the target dir is UTF-8")?);
        }
        eprintln!("xtask: README Install: {}", words.join(" "));
        let output = Command::new(words[0])
            .args(&words[1..])
            .current_dir(root)
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", root.join("target"))
            // The tests built from the same Cargo.lock: every crate is downloaded already.
            .env("CARGO_NET_OFFLINE", "true")
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("could not start `{command}`"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        print!("{stdout}");
        if !output.status.success() {
            bail!(
                "README's Install step `{command}` failed ({})",
                output.status
            );
        }
        if words.first() == Some(&"secret-sync") {
            versions.push_str(&stdout);
        }
    }
    if !bin.join("secret-sync").is_file() {
        bail!(
            "README's Install block did not install secret-sync into {}",
            bin.display()
        );
    }
    let wanted = format!("secret-sync {}", env!("CARGO_PKG_VERSION"));
    if versions.trim() != wanted {
        bail!(
            "the installed `secret-sync --version` printed {:?}, not {wanted:?}",
            versions.trim()
        );
    }

    eprintln!("xtask: README Use steps with the installed binary");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(&cargo)
        .args([
            "test",
            "--locked",
            "--package",
            "secret-sync",
            "--test",
            "e2e",
            "--",
            "--exact",
            "readme::the_use_section_runs_as_written",
        ])
        .current_dir(root)
        .env("SECRET_SYNC_VENV", root.join(".venv"))
        .env("SECRET_SYNC_README_BIN_DIR", &bin)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{cargo}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        bail!(
            "README's Use steps failed with the installed binary ({})",
            output.status
        );
    }
    // A renamed test would match nothing and pass: exactly one must have run.
    if !stdout.contains("test result: ok. 1 passed") {
        bail!("the README Use test did not run (renamed?): expected 1 test to pass");
    }
    Ok(())
}
