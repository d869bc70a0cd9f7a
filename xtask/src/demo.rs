//! `cargo xtask demo`: see secret-sync work on a fresh machine, with nothing to configure.
//!
//! Starts the testkit Entra ID emulator (`testkit-server`) on 127.0.0.1 with the demo app
//! registration, then runs the real binary on `config/demo.toml`: `secret-sync run` syncs a
//! token into two files under `demo-out/`, a second `run` finds them fresh and skips the job
//! (no token request, no write), and `secret-sync token` shows what an error looks like.

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
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let secret_sync_cmd = |args: &[&str]| {
        let mut command = Command::new(&secret_sync);
        command
            .args(args)
            .env("AZURE_AUTHORITY_HOST", &authority)
            .env("DEMO_CLIENT_SECRET", DEMO_SECRET);
        command
    };
    let config_arg = config.to_str().context("the config path is UTF-8")?;

    for (what, args) in [
        (
            "first run: the files are missing, so a token is requested and written",
            vec!["run", "--config", config_arg],
        ),
        (
            "second run: both files hold a fresh token, so nothing is requested or written",
            vec!["run", "--config", config_arg],
        ),
    ] {
        println!("$ secret-sync run --config config/demo.toml    # {what}");
        let status = secret_sync_cmd(&args)
            .status()
            .context("running secret-sync")?;
        if !status.success() {
            bail!("secret-sync run failed ({status})");
        }
        println!();
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
    println!(
        "Next: target/debug/secret-sync plan --config config/demo.toml, and --help on any command."
    );
    Ok(())
}
