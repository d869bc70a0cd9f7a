//! `secret-sync token` against the testkit Entra ID emulator, over HTTP and HTTPS: every
//! credential kind the command offers, both output formats, GitHub Actions masking, retries
//! seen from the outside, and refusals that must exit 1 without leaking the secret.

use secrecy::ExposeSecret;
use serde_json::Value;
use testkit::{
    AppRegistration, EntraEmulator, FEDERATED_AUDIENCE, Fault, FederatedCredential,
    GITHUB_ACTIONS_ISSUER, GithubOidc, TestCertificate,
};

use crate::support::{Run, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~emulated.client.secret-value";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const SUBJECT: &str = "repo:contoso/payments:ref:refs/heads/main";

fn base_args<'a>(entra: &'a str, output: &'a str) -> Vec<&'a str> {
    let mut args = crate::support::token_args(TENANT, CLIENT, entra);
    args.extend(["--output", output]);
    args
}

/// The one token the emulator issued, checked to be valid for Graph and printed as-is.
fn assert_printed_issued_token(entra: &EntraEmulator, printed: &str) {
    let issued = entra.issued_tokens();
    assert_eq!(issued.len(), 1, "exactly one token was issued");
    let token = issued[0].access_token.expose_secret();
    assert_eq!(printed, token, "the printed token is the issued one");
    entra
        .validate_bearer(printed, "https://graph.microsoft.com")
        .expect("the printed token is valid for Graph");
}

#[tokio::test]
async fn client_secret_over_https_with_ca_file_prints_json() {
    let entra = EntraEmulator::start_tls().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, entra.ca_pem().unwrap()).unwrap();
    let base = entra.base_url();
    assert!(base.starts_with("https://"), "{base}");

    let mut args = base_args(&base, "json");
    args.extend([
        "--client-secret-env",
        "APP_SECRET",
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    let run = secret_sync(&args, &[("APP_SECRET", SECRET)]).await;
    run.assert_code(0);
    run.assert_no_leak(&[SECRET]);
    let printed: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_printed_issued_token(&entra, printed["access_token"].as_str().unwrap());
    assert_eq!(printed["token_type"], "Bearer");
    assert_eq!(entra.token_request_count(), 1);
}

#[tokio::test]
async fn https_without_the_ca_fails_with_exit_1() {
    let entra = EntraEmulator::start_tls().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let base = entra.base_url();
    let mut args = base_args(&base, "text");
    args.extend(["--client-secret-env", "APP_SECRET"]);
    let run = secret_sync(&args, &[("APP_SECRET", SECRET)]).await;
    run.assert_code(1);
    run.assert_no_leak(&[SECRET]);
    assert_eq!(run.stdout, "");
    assert_eq!(
        entra.issued_tokens().len(),
        0,
        "no token over an untrusted connection"
    );
}

#[tokio::test]
async fn github_actions_masks_the_token_first() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let base = entra.base_url();
    let mut args = base_args(&base, "text");
    args.extend(["--client-secret-env", "APP_SECRET"]);
    let run = secret_sync(&args, &[("APP_SECRET", SECRET), ("GITHUB_ACTIONS", "true")]).await;
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "mask line, then the token: {:?}",
        run.stdout
    );
    let token = lines[1];
    assert_eq!(lines[0], format!("::add-mask::{token}"));
    assert_printed_issued_token(&entra, token);
}

#[tokio::test]
async fn wrong_secret_exits_1_once_with_advice_and_no_leak() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let base = entra.base_url();
    let wrong = "wrong-secret-value-0123456789";
    let mut args = base_args(&base, "json");
    args.extend(["--client-secret-env", "APP_SECRET"]);
    let run = secret_sync(&args, &[("APP_SECRET", wrong)]).await;
    run.assert_code(1);
    run.assert_no_leak(&[wrong, SECRET]);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("AADSTS7000215"), "{}", run.stderr);
    assert_eq!(
        entra.token_request_count(),
        1,
        "a permanent refusal is not retried"
    );
}

#[tokio::test]
async fn throttling_is_retried_and_succeeds() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    entra.inject(Fault::TooManyRequests {
        retry_after_secs: Some(1),
    });
    entra.inject(Fault::ServerError { status: 503 });
    let base = entra.base_url();
    let mut args = base_args(&base, "text");
    args.extend(["--client-secret-env", "APP_SECRET"]);
    let started = std::time::Instant::now();
    let run = secret_sync(&args, &[("APP_SECRET", SECRET)]).await;
    run.assert_code(0);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(entra.token_request_count(), 3);
    assert_printed_issued_token(&entra, run.stdout.trim());
}

#[tokio::test]
async fn client_secret_from_a_file() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let base = entra.base_url();
    let mut args = base_args(&base, "text");
    args.extend(["--client-secret-file", file.to_str().unwrap()]);
    let run = secret_sync(&args, &[]).await;
    run.assert_code(0);
    run.assert_no_leak(&[SECRET]);
    assert_printed_issued_token(&entra, run.stdout.trim());
}

#[tokio::test]
async fn certificate_ps256_from_one_pem_and_rs256_with_a_separate_key() {
    let cert = TestCertificate::generate("secret-sync-e2e").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let combined = dir.path().join("combined.pem");
    std::fs::write(&combined, cert.combined_pem()).unwrap();
    let files = cert.write_to(dir.path()).unwrap();

    for (extra, label) in [
        (
            vec!["--certificate".to_owned(), combined.display().to_string()],
            "ps256, one file",
        ),
        (
            vec![
                "--certificate".to_owned(),
                files.cert.display().to_string(),
                "--certificate-key".to_owned(),
                files.key.display().to_string(),
                "--assertion-alg".to_owned(),
                "rs256".to_owned(),
            ],
            "rs256, two files",
        ),
    ] {
        let entra = EntraEmulator::start().await.unwrap();
        entra.register_app(AppRegistration::new(TENANT, CLIENT).with_certificate(&cert));
        let base = entra.base_url();
        let mut args = base_args(&base, "text");
        args.extend(extra.iter().map(String::as_str));
        let run = secret_sync(&args, &[]).await;
        assert_eq!(run.code, 0, "{label}: {}", run.stderr);
        run.assert_no_leak(&[cert.key_pem().lines().nth(1).unwrap()]);
        assert_printed_issued_token(&entra, run.stdout.trim());
    }
}

#[tokio::test]
async fn federated_token_file_and_workload_identity_env() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_federated_credential(FederatedCredential::new(GITHUB_ACTIONS_ISSUER, SUBJECT)),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let assertion = entra.github_issuer().mint(SUBJECT, FEDERATED_AUDIENCE);
    std::fs::write(&file, &assertion).unwrap();
    let base = entra.base_url();

    let mut args = base_args(&base, "text");
    args.extend(["--federated-token-file", file.to_str().unwrap()]);
    let run = secret_sync(&args, &[]).await;
    run.assert_code(0);
    run.assert_no_leak(&[&assertion]);

    // The same through the variables AKS workload identity sets.
    let run = secret_sync(
        &[
            "token",
            "--workload-identity",
            "--scope",
            GRAPH,
            "--authority",
            &base,
        ],
        &[
            ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT),
        ],
    )
    .await;
    run.assert_code(0);
    run.assert_no_leak(&[&assertion]);
    assert_eq!(entra.issued_tokens().len(), 2);
}

#[tokio::test]
async fn federated_subject_mismatch_names_the_subject() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_federated_credential(FederatedCredential::new(GITHUB_ACTIONS_ISSUER, SUBJECT)),
    );
    let other = "repo:contoso/payments:pull_request";
    let assertion = entra.github_issuer().mint(other, FEDERATED_AUDIENCE);
    let base = entra.base_url();
    let mut args = base_args(&base, "text");
    args.extend(["--federated-token-env", "OIDC_TOKEN"]);
    let run: Run = secret_sync(&args, &[("OIDC_TOKEN", &assertion)]).await;
    run.assert_code(1);
    run.assert_no_leak(&[&assertion]);
    assert!(run.stderr.contains("700213"), "{}", run.stderr);
    assert!(
        run.stderr.contains(other),
        "the subject presented is named: {}",
        run.stderr
    );
}

#[tokio::test]
async fn github_oidc_endpoint() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_federated_credential(FederatedCredential::new(GITHUB_ACTIONS_ISSUER, SUBJECT)),
    );
    let request_token = "gha-request-token-4242";
    entra.enable_github_oidc(GithubOidc::new(SUBJECT, request_token));
    let base = entra.base_url();
    let url = entra.github_oidc_request_url();
    let mut args = base_args(&base, "json");
    args.push("--github-oidc");
    let run = secret_sync(
        &args,
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token),
        ],
    )
    .await;
    run.assert_code(0);
    run.assert_no_leak(&[request_token]);
    let printed: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_printed_issued_token(&entra, printed["access_token"].as_str().unwrap());
}

#[tokio::test]
async fn managed_identity_through_the_app_service_endpoint() {
    let entra = EntraEmulator::start().await.unwrap();
    let identity = testkit::ManagedIdentity::new(TENANT, CLIENT);
    let header = identity.identity_header.clone();
    entra.enable_managed_identity(identity);
    let endpoint = entra.identity_endpoint();
    let run = secret_sync(
        &[
            "token",
            "--managed-identity",
            "--scope",
            GRAPH,
            "--output",
            "json",
        ],
        &[
            ("IDENTITY_ENDPOINT", &endpoint),
            ("IDENTITY_HEADER", &header),
        ],
    )
    .await;
    run.assert_code(0);
    run.assert_no_leak(&[&header]);
    let printed: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let expires_on = printed["expires_on"].as_i64().unwrap();
    assert!(
        expires_on > crate::support::now_unix() + 3000,
        "expiry parsed from string fields"
    );
    assert_printed_issued_token(&entra, printed["access_token"].as_str().unwrap());
}
