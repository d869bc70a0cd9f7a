//! `cargo xtask demo`: see secret-sync work on a fresh machine, with nothing to configure.
//!
//! Starts the testkit Entra ID emulator (`testkit-server`) on 127.0.0.1 with the demo app
//! registration, then runs the real binary on `config/demo.toml`: `secret-sync run` syncs a
//! token into two files under `demo-out/`, a second `run` finds them fresh and skips the job
//! (no token request, no write), and `secret-sync token` shows what an error looks like.
//!
//! The story is checked, not just told: `demo-out/` starts empty (what an earlier demo left
//! there is removed, and the demo says so), the first run must create both files and the
//! second must leave them untouched, and every command printed under "Next:" is run as
//! printed (from the workspace root, with only `PATH` and `HOME` set) once the emulator has
//! stopped; the demo fails when any of this does not hold. `cargo xtask ci` runs the demo.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cargo;

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT: &str = "66666666-7777-8888-9999-000000000000";
/// A demo secret for the local emulator only; it protects nothing.
const DEMO_SECRET: &str = "demo-client-secret";
const SCOPE: &str = "https://graph.microsoft.com/.default";
/// The files `config/demo.toml` has the first run write into `demo-out/`.
const OUTPUT_FILES: &[&str] = &["graph-token", "graph-token.meta.json", "graph.json"];
/// What the demo suggests trying next, each run as printed (from the workspace root) before
/// the demo ends: none of them may need the emulator or any environment variable.
pub const NEXT: &[(&str, &str)] = &[
    (
        "target/debug/secret-sync plan --config config/demo.toml",
        "what run would do now, and why (reads metadata only)",
    ),
    (
        "target/debug/secret-sync validate --config config/demo.toml",
        "check a config without running it",
    ),
    (
        "target/debug/secret-sync run --help",
        "every flag of a command (--help works on each)",
    ),
];

/// Kills the emulator when the demo ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(root: &Path) -> Result<()> {
    cargo(
        root,
        &[
            "build",
            "--quiet",
            "--package",
            "secret-sync",
            "--package",
            "testkit",
            "--bins",
        ],
    )?;
    let bin_dir = root.join("target").join("debug");
    let server_bin = bin_dir.join("testkit-server");
    let secret_sync = bin_dir.join("secret-sync");

    let mut child = Command::new(&server_bin)
        .args(["--tenant", TENANT, "--client-id", CLIENT])
        .env("TESTKIT_CLIENT_SECRET", DEMO_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start {}", server_bin.display()))?;
    let stdout = child.stdout.take().context("emulator stdout")?;
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the emulator's address")?;
    let info: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("the emulator printed {line:?}, not its JSON address line"))?;
    let authority = info["base_url"]
        .as_str()
        .context("the emulator's JSON line has no base_url")?
        .to_owned();

    println!("Entra ID emulator listening on {authority}");
    println!("tenant {TENANT}, app {CLIENT}\n");

    let config = root.join("config").join("demo.toml");
    let out_dir = root.join("demo-out");
    start_empty(&out_dir)?;
    let secret_sync_cmd = |args: &[&str]| {
        let mut command = Command::new(&secret_sync);
        command
            .args(args)
            .env("AZURE_AUTHORITY_HOST", &authority)
            .env("DEMO_CLIENT_SECRET", DEMO_SECRET);
        command
    };
    let config_arg = config.to_str().context("the config path is UTF-8")?;

    let args = ["run", "--config", config_arg];
    println!(
        "$ secret-sync run --config config/demo.toml    # first run: the files are missing, so a token is requested and written"
    );
    run_shown(&mut secret_sync_cmd(&args))?;
    let written = read_outputs(&out_dir)?;
    if let Some((name, _)) = written.iter().find(|(_, content)| content.is_none()) {
        bail!("the first run did not write demo-out/{name}");
    }

    println!(
        "$ secret-sync run --config config/demo.toml    # second run: both files hold a fresh token, so nothing is requested or written"
    );
    run_shown(&mut secret_sync_cmd(&args))?;
    if read_outputs(&out_dir)? != written {
        bail!("the second run changed the files in demo-out/: they held fresh tokens");
    }

    println!("$ secret-sync token ... with a wrong client secret    # what an error looks like");
    let refused = Command::new(&secret_sync)
        .args([
            "token",
            "--tenant-id",
            TENANT,
            "--client-id",
            CLIENT,
            "--client-secret-env",
            "WRONG_SECRET",
            "--scope",
            SCOPE,
            "--authority",
            &authority,
        ])
        .env("WRONG_SECRET", "not-the-secret")
        .output()
        .context("running secret-sync")?;
    println!(
        "exit code {}\n{}",
        refused.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&refused.stderr)
    );
    if refused.status.code() != Some(1) {
        bail!("a wrong secret should exit 1, got {}", refused.status);
    }

    drop(server);
    println!("Look at the synced token files in {}:", out_dir.display());
    println!("  graph-token (the bare token) with graph-token.meta.json (its expiry),");
    println!("  graph.json (token, type and expiry as JSON).");
    println!("Next, from {}:", root.display());
    for (command, what) in NEXT {
        println!("  {command}    # {what}");
    }
    check_next(root)?;
    println!("(each of these was just run as printed, and worked)");
    Ok(())
}

/// Empties `out_dir` (creating it if needed), saying what an earlier run left there, so the
/// first run really starts from missing files.
fn start_empty(out_dir: &Path) -> Result<()> {
    match std::fs::read_dir(out_dir) {
        Ok(entries) => {
            let mut names = entries
                .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()
                .with_context(|| format!("listing {}", out_dir.display()))?;
            if !names.is_empty() {
                names.sort();
                println!(
                    "demo-out/ held {} from an earlier demo ({}): removed, so the first run starts from nothing\n",
                    if names.len() == 1 {
                        "1 file".to_owned()
                    } else {
                        format!("{} files", names.len())
                    },
                    names.join(", ")
                );
                std::fs::remove_dir_all(out_dir)
                    .with_context(|| format!("removing {}", out_dir.display()))?;
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", out_dir.display())),
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))
}

/// An output file's name and content (`None`: missing).
type Output = (&'static str, Option<Vec<u8>>);

/// Each output file's name and content.
fn read_outputs(out_dir: &Path) -> Result<Vec<Output>> {
    OUTPUT_FILES
        .iter()
        .map(|name| match std::fs::read(out_dir.join(name)) {
            Ok(content) => Ok((*name, Some(content))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok((*name, None)),
            Err(err) => Err(err).with_context(|| format!("reading demo-out/{name}")),
        })
        .collect()
}

/// Runs a `secret-sync run` the demo shows, its output going to the terminal.
fn run_shown(command: &mut Command) -> Result<()> {
    let status = command.status().context("running secret-sync")?;
    if !status.success() {
        bail!("secret-sync run failed ({status})");
    }
    println!();
    Ok(())
}

/// Runs every [`NEXT`] command as printed: `sh -c` in the workspace root with only `PATH` and
/// `HOME` set, as a newcomer's shell would (no emulator, no `AZURE_AUTHORITY_HOST`).
fn check_next(root: &Path) -> Result<()> {
    for (command, _) in NEXT {
        let mut sh = Command::new("sh");
        sh.args(["-c", command]).current_dir(root).env_clear();
        for var in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(var) {
                sh.env(var, value);
            }
        }
        let output = sh
            .output()
            .with_context(|| format!("running `{command}`"))?;
        if !output.status.success() {
            bail!(
                "the suggested `{command}` failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}
