//! `cargo xtask man`: the man pages, generated from secret-sync's clap definitions.
//!
//! Builds the binary and runs its hidden `man --out-dir` command, which writes
//! `target/man/secret-sync.1` and one `secret-sync-COMMAND.1` per command. Generating from the
//! binary (rather than linking its CLI here) keeps this crate's dependencies few.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo;

pub fn run(root: &Path) -> Result<()> {
    cargo(
        root,
        &[
            "build",
            "--quiet",
            "--package",
            "secret-sync",
            "--bin",
            "secret-sync",
        ],
    )?;
    let secret_sync = root.join("target").join("debug").join("secret-sync");
    let out_dir = root.join("target").join("man");
    let status = Command::new(&secret_sync)
        .arg("man")
        .arg("--out-dir")
        .arg(&out_dir)
        .status()
        .with_context(|| format!("could not run {}", secret_sync.display()))?;
    if !status.success() {
        bail!(
            "`secret-sync man --out-dir {}` failed ({status})",
            out_dir.display()
        );
    }
    println!(
        "man pages in {}: read one with `man -l {}`",
        out_dir.display(),
        out_dir.join("secret-sync.1").display()
    );
    Ok(())
}
