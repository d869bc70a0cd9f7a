//! `cargo xtask demo`: see secret-sync work on a fresh machine, with nothing to configure.
//!
//! Starts the testkit Entra ID emulator (`testkit-server`) on 127.0.0.1 with a demo app
//! registration, then runs the real `secret-sync token` binary against it, first as a script
//! would (`--output json`) and then with a wrong secret to show what an error looks like.

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

    let token_args = |secret_var: &str| {
        vec![
            "token".to_owned(),
            "--tenant-id".to_owned(),
            TENANT.to_owned(),
            "--client-id".to_owned(),
            CLIENT.to_owned(),
            "--client-secret-env".to_owned(),
            secret_var.to_owned(),
            "--scope".to_owned(),
            SCOPE.to_owned(),
            "--authority".to_owned(),
            authority.clone(),
            "--output".to_owned(),
            "json".to_owned(),
        ]
    };

    println!("$ secret-sync token ... --client-secret-env DEMO_SECRET --output json");
    let ok = Command::new(&secret_sync)
        .args(token_args("DEMO_SECRET"))
        .env("DEMO_SECRET", DEMO_SECRET)
        .output()
        .context("running secret-sync")?;
    if !ok.status.success() {
        bail!(
            "secret-sync token failed ({}): {}",
            ok.status,
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let mut printed: serde_json::Value =
        serde_json::from_slice(&ok.stdout).context("secret-sync printed JSON")?;
    // A demo should not teach people to paste tokens around: show its shape, not its value.
    let token_len = printed["access_token"].as_str().map_or(0, str::len);
    printed["access_token"] = format!("<{token_len} characters>").into();
    println!("{}\n", serde_json::to_string_pretty(&printed)?);

    println!("$ secret-sync token ... with a wrong client secret");
    let refused = Command::new(&secret_sync)
        .args(token_args("WRONG_SECRET"))
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
    println!("Try it yourself: target/debug/secret-sync token --help");
    Ok(())
}
