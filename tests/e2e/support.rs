//! Shared helpers: run the binary with a clean environment and capture what it prints,
//! and assert that no secret value ever shows up in that output.

use std::collections::HashMap;
use std::process::Output;

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless no given value appears in stdout or stderr.
    pub fn assert_no_leak(&self, secrets: &[&str]) {
        for secret in secrets {
            assert!(!secret.is_empty(), "an empty string cannot be scanned for");
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "a secret value leaked into the output:\nstdout: {}\nstderr: {}",
                self.stdout,
                self.stderr
            );
        }
    }

    pub fn assert_code(&self, expected: i32) {
        assert_eq!(
            self.code, expected,
            "exit code; stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
    }
}

/// Runs `secret-sync ARGS` with only the given environment (plus PATH), so the developer's
/// or CI's own AZURE_* variables cannot change the outcome.
pub async fn secret_sync(args: &[&str], env: &[(&str, &str)]) -> Run {
    let vars: HashMap<&str, &str> = env.iter().copied().collect();
    let output: Output = tokio::process::Command::new(env!("CARGO_BIN_EXE_secret-sync"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the secret-sync binary runs");
    Run {
        code: output
            .status
            .code()
            .expect("exited with a code, not a signal"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
