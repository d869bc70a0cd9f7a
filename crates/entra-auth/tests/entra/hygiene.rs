//! No secret, assertion or token ever appears in logs, errors or `Debug` output: every
//! credential kind is exercised, successes and failures, and all output is scanned.

use entra_auth::{
    AppCredential, AssertionAlgorithm, CertificateCredential, Credential, FederatedTokenSource,
    ManagedIdentity, RefreshPolicy, TokenCache,
};
use secrecy::{ExposeSecret, SecretString};
use testkit::{
    AppRegistration, FEDERATED_AUDIENCE, Fault, FederatedCredential, GITHUB_ACTIONS_ISSUER,
    GithubOidc, TestCertificate,
};

use crate::common::*;

#[tokio::test]
async fn nothing_secret_is_ever_printed() {
    const SUBJECT: &str = "repo:contoso/tokens:ref:refs/heads/main";
    const REQUEST_TOKEN: &str = "ghs_REQUESTtoken_never_printed_0042";
    let (logs, _guard) = Logs::capture();
    let entra = emulator(true).await;
    let cert = TestCertificate::generate("hygiene").unwrap();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_secret(SECRET)
            .with_certificate(&cert)
            .with_federated_credential(FederatedCredential::new(GITHUB_ACTIONS_ISSUER, SUBJECT)),
    );
    entra.enable_github_oidc(GithubOidc::new(SUBJECT, REQUEST_TOKEN));
    let identity = testkit::ManagedIdentity::new(TENANT, CLIENT);
    entra.enable_managed_identity(identity.clone());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let federated_jwt = entra.github_issuer().mint(SUBJECT, FEDERATED_AUDIENCE);
    std::fs::write(&token_file, &federated_jwt).unwrap();

    let certificate = CertificateCredential::from_pem(
        cert.cert_pem().as_bytes(),
        cert.key_pem().as_bytes(),
        AssertionAlgorithm::Ps256,
    )
    .unwrap();
    let apps = vec![
        secret_app(&entra),
        app(&entra, Credential::Certificate(certificate)),
        app(
            &entra,
            Credential::Federated(FederatedTokenSource::File(token_file)),
        ),
        app(
            &entra,
            Credential::Federated(FederatedTokenSource::GitHubActions {
                request_url: entra.github_oidc_request_url().parse().unwrap(),
                request_token: SecretString::from(REQUEST_TOKEN),
            }),
        ),
        AppCredential::managed_identity(
            authority(&entra),
            ManagedIdentity::AppService {
                endpoint: entra.identity_endpoint().parse().unwrap(),
                header: SecretString::from(identity.identity_header.clone()),
                client_id: None,
            },
        ),
    ];
    let cache = TokenCache::new(client(&entra), RefreshPolicy::default());
    let mut output = String::new();
    for app in &apps {
        let token = cache.get(app, &scope()).await.unwrap();
        output.push_str(&format!("{app:?}\n{token:?}\n{cache:?}\n"));
        // Failures of every shape, echoing nothing back.
        for fault in [
            Fault::TooManyRequests {
                retry_after_secs: Some(600),
            },
            Fault::MalformedBody,
            Fault::EmptyAccessToken,
        ] {
            entra.inject(fault);
            let err = client(&entra).acquire(app, &scope()).await.unwrap_err();
            output.push_str(&format!("{err}\n{err:?}\n"));
        }
    }
    // A wrong secret and a wrong identity header, refused by the service.
    let wrong = app(
        &entra,
        Credential::ClientSecret(SecretString::from("wrong-secret-value-1")),
    );
    let err = client(&entra).acquire(&wrong, &scope()).await.unwrap_err();
    output.push_str(&format!("{err}\n{err:?}\n"));

    let issued: Vec<String> = entra
        .issued_tokens()
        .iter()
        .map(|t| t.access_token.expose_secret().to_owned())
        .collect();
    assert!(issued.len() >= apps.len(), "tokens were issued");
    let key_line = cert.key_pem().lines().nth(1).unwrap().to_owned();
    let everything = format!("{output}\n{}", logs.text());
    let mut sensitive = vec![
        ("client secret", SECRET),
        ("wrong client secret", "wrong-secret-value-1"),
        ("GitHub request token", REQUEST_TOKEN),
        ("identity header", identity.identity_header.as_str()),
        ("federated token", federated_jwt.as_str()),
        ("private key", key_line.as_str()),
    ];
    sensitive.extend(issued.iter().map(|t| ("access token", t.as_str())));
    assert_no_secret(&everything, &sensitive);
    assert!(
        everything.contains("access token acquired"),
        "logs were captured"
    );
}

/// The checker above would catch a leak, and its own failure message does not repeat it.
#[test]
fn the_leak_check_catches_leaks_without_repeating_them() {
    let leaked = std::panic::catch_unwind(|| {
        assert_no_secret(
            "log line: secret=abc123-value end",
            &[("client secret", "abc123-value")],
        );
    });
    let payload = leaked.expect_err("a leak must fail the check");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("client secret leaked"), "{message}");
    assert!(!message.contains("abc123-value"), "{message}");
}
