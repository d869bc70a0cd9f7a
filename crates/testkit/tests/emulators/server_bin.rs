//! The `testkit-server` binary starts the emulator as a process: one JSON line on stdout, a
//! working token endpoint for the app given by flags and environment, and the secret never printed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

/// Kills the child process when the test ends, even on a failed assertion.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_the_registered_app_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_testkit-server"))
            .args(["--tls", "--tenant", TENANT, "--client-id", CLIENT_ID])
            .arg("--ca-out")
            .arg(&ca_path)
            .args(["--managed-identity-client-id", "mi-client", "--key-vault"])
            .env("TESTKIT_CLIENT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("testkit-server starts"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.contains(SECRET), "the secret is printed: {line}");
    let info: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let token_url = info["token_url"].as_str().unwrap();
    assert!(token_url.starts_with("https://127.0.0.1:"), "{info}");
    assert!(info["imds_endpoint"].is_string() && info["identity_header"].is_string());

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let answer = post_form(
        &client,
        token_url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let vault_url = info["vault_url"].as_str().expect("vault_url printed");
    let token = answer.body["access_token"].as_str().unwrap();
    let put = client
        .put(format!("{vault_url}/secrets/demo?api-version=2025-07-01"))
        .bearer_auth(token)
        .json(&serde_json::json!({"value": "v"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
}

#[test]
fn ca_out_without_tls_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_testkit-server"))
        .args([
            "--tenant",
            "t",
            "--client-id",
            "c",
            "--client-secret",
            "s",
            "--ca-out",
            "/tmp/never-written.pem",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ca-out needs --tls"));
}
