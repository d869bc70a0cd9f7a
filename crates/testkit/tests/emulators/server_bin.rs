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

#[tokio::test]
async fn extra_apps_and_token_lifetime_and_the_request_count_at_exit() {
    const EXTRA: &str = "00000000-0000-4000-8000-000000000002";
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_testkit-server"))
            .args(["--tenant", TENANT, "--client-id", CLIENT_ID])
            .args(["--extra-client-id", EXTRA, "--token-lifetime-secs", "60"])
            .env("TESTKIT_CLIENT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("testkit-server starts"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let token_url = info["token_url"].as_str().unwrap();

    let client = reqwest::Client::new();
    for client_id in [CLIENT_ID, EXTRA] {
        let answer = post_form(
            &client,
            token_url,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", SECRET),
                ("scope", VAULT_SCOPE),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "{client_id}: {}", answer.text);
        assert_eq!(answer.body["expires_in"], 60, "{}", answer.text);
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut last = String::new();
    stdout.read_line(&mut last).unwrap();
    let count: serde_json::Value = serde_json::from_str(&last).expect("a JSON line at exit");
    assert_eq!(count, serde_json::json!({ "token_requests": 2 }));
}

#[tokio::test]
async fn graph_roles_let_the_app_rotate_its_own_secret() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_testkit-server"))
            .args(["--tenant", TENANT, "--client-id", CLIENT_ID])
            .args(["--graph-role", "Application.ReadWrite.OwnedBy"])
            .env("TESTKIT_CLIENT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("testkit-server starts"),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let client = reqwest::Client::new();
    let answer = post_form(
        &client,
        info["token_url"].as_str().unwrap(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let token = answer.body["access_token"].as_str().unwrap();
    let graph = info["graph_endpoint"].as_str().unwrap();
    let added = client
        .post(format!(
            "{graph}/v1.0/applications(appId='{CLIENT_ID}')/addPassword"
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"passwordCredential": {"displayName": "rotated"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
}
