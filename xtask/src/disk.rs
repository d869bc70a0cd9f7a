//! The disk `cargo xtask ci` needs on a CI runner.
//!
//! On a fresh clone the steps of `ci` build about 5.5 GB: clippy's metadata, the test build and
//! the install build in `target/`, then the fuzz build (nightly, AddressSanitizer) in
//! `fuzz/target/`. A runner's disk need not hold all of it at once: a CI run failed with "No space
//! left on device" in the install step. So with `CI` set (as `.ci/run` runs), [`Tidy`] prints the
//! free space before each step, so that a full disk shows where it filled, and removes what a
//! step built as soon as no later step needs it. Without `CI` nothing is removed: a developer's
//! warm target dir stays warm.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// What `ci` removes between its steps, and when; a no-op unless `CI` is set.
#[derive(Debug)]
pub struct Tidy {
    on: bool,
    root: PathBuf,
}

impl Tidy {
    pub fn new(root: &Path) -> Tidy {
        let on = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
        Tidy {
            on,
            root: root.to_owned(),
        }
    }

    /// Prints the space left for `target/` before `step`.
    pub fn before(&self, step: &str) {
        if !self.on {
            return;
        }
        match free_mib(&self.root) {
            Some(mib) => eprintln!("xtask: disk: {mib} MiB free before {step}"),
            None => eprintln!("xtask: disk: could not read the free space before {step}"),
        }
    }

    /// After both clippy runs: the metadata `cargo check` wrote for every crate and target is
    /// never read again, since the tests build rlibs (beside which their own `.rmeta` stays).
    pub fn after_clippy(&self) -> Result<()> {
        if !self.on {
            return Ok(());
        }
        let deps = self.root.join("target").join("debug").join("deps");
        let mut removed = 0u64;
        for entry in fs::read_dir(&deps).with_context(|| format!("reading {}", deps.display()))? {
            let path = entry?.path();
            if is_check_only(&path) {
                removed += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        eprintln!(
            "xtask: disk: removed {} MiB of clippy's metadata",
            removed >> 20
        );
        Ok(())
    }

    /// Before the fuzz build, the last step: nothing reads the stable build again.
    pub fn before_fuzz(&self) -> Result<()> {
        if !self.on {
            return Ok(());
        }
        let debug = self.root.join("target").join("debug");
        if debug.exists() {
            fs::remove_dir_all(&debug).with_context(|| format!("removing {}", debug.display()))?;
            eprintln!(
                "xtask: disk: removed target/debug (the tests, the install and the demo are done)"
            );
        }
        Ok(())
    }
}

/// `libNAME-HASH.rmeta` with no `libNAME-HASH.rlib` beside it: what only `cargo check` (clippy)
/// wrote. A build writes both, and keeps reading the `.rmeta`.
fn is_check_only(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "rmeta") && !path.with_extension("rlib").exists()
}

/// The MiB free on the file system that holds `dir`, from POSIX `df -Pk`.
fn free_mib(dir: &Path) -> Option<u64> {
    let output = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib >> 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metadata_without_its_rlib_is_check_only() {
        let dir = std::env::temp_dir().join(format!("xtask-disk-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for name in [
            "libbuilt-1.rlib",
            "libbuilt-1.rmeta",
            "libchecked-2.rmeta",
            "e2e-3",
        ] {
            fs::write(dir.join(name), b"").unwrap();
        }
        let check_only: Vec<bool> = [
            "libbuilt-1.rlib",
            "libbuilt-1.rmeta",
            "libchecked-2.rmeta",
            "e2e-3",
        ]
        .iter()
        .map(|name| is_check_only(&dir.join(name)))
        .collect();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(check_only, [false, false, true, false]);
    }

    #[test]
    fn free_space_is_read() {
        assert!(free_mib(Path::new(".")).is_some());
    }
}
