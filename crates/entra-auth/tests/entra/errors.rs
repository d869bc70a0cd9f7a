//! Entra ID refusals reach the caller with their AADSTS code, HTTP status, trace and
//! correlation ids and an actionable message, and are not retried; unusable successes are
//! refused as invalid responses.

use entra_auth::{
    AssertionAlgorithm, CertificateCredential, Credential, ErrorKind, FederatedTokenSource,
};
use testkit::{
    AppRegistration, FEDERATED_AUDIENCE, Fault, FederatedCredential, GITHUB_ACTIONS_ISSUER,
    TestCertificate,
};

use crate::common::*;

/// Asserts a permanent refusal with `code`, one request, and `hint` in the message.
fn assert_refusal(err: &entra_auth::Error, code: u32, hint: &str, requests: usize) {
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.aadsts_codes(), &[code], "{err}");
    assert!(
        err.http_status().is_some_and(|s| s == 400 || s == 401),
        "{err}"
    );
    assert!(
        err.trace_id().is_some() && err.correlation_id().is_some(),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(hint), "message lacks {hint:?}: {text}");
    assert!(text.contains(&format!("AADSTS{code}")), "{text}");
    assert_eq!(requests, 1, "a permanent refusal is not retried: {err}");
}

#[tokio::test]
async fn wrong_secret_7000215() {
    let entra = emulator(true).await;
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret("the-right-secret"));
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_refusal(
        &err,
        7000215,
        "not its Secret ID",
        entra.token_request_count(),
    );
    assert_eq!(err.oauth_error(), Some("invalid_client"));
}

#[tokio::test]
async fn expired_secret_7000222() {
    let entra = emulator(false).await;
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_expired_secret(SECRET));
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_refusal(
        &err,
        7000222,
        "create a new client secret",
        entra.token_request_count(),
    );
}

#[tokio::test]
async fn unknown_app_700016() {
    let entra = emulator(false).await;
    entra.add_tenant(TENANT);
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_refusal(
        &err,
        700016,
        "check the client id and the tenant id",
        entra.token_request_count(),
    );
}

#[tokio::test]
async fn unknown_tenant_90002() {
    let entra = emulator(false).await;
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_refusal(
        &err,
        90002,
        &format!("tenant {TENANT} was not found"),
        entra.token_request_count(),
    );
}

#[tokio::test]
async fn invalid_scope_70011() {
    // The Scope type refuses what would cause 70011, so the emulator is told to answer it.
    let entra = emulator_with_secret_app(false).await;
    entra.inject(Fault::EntraError {
        status: 400,
        error: "invalid_scope".into(),
        code: 70011,
        message: "The provided request must include a 'scope' input parameter.".into(),
    });
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_refusal(
        &err,
        70011,
        "<resource>/.default",
        entra.token_request_count(),
    );
}

#[tokio::test]
async fn unregistered_certificate_700027() {
    let registered = TestCertificate::generate("registered").unwrap();
    let other = TestCertificate::generate("not registered").unwrap();
    let entra = emulator(false).await;
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_certificate(&registered));
    let credential = CertificateCredential::from_pem(
        other.cert_pem().as_bytes(),
        other.key_pem().as_bytes(),
        AssertionAlgorithm::Ps256,
    )
    .unwrap();
    let err = client(&entra)
        .acquire(&app(&entra, Credential::Certificate(credential)), &scope())
        .await
        .unwrap_err();
    assert_refusal(
        &err,
        700027,
        "certificate is not registered",
        entra.token_request_count(),
    );
}

#[tokio::test]
async fn federated_subject_mismatch_700213_names_the_subject() {
    let entra = emulator(false).await;
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT).with_federated_credential(FederatedCredential::new(
            GITHUB_ACTIONS_ISSUER,
            "repo:contoso/tokens:ref:refs/heads/main",
        )),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let presented = "repo:contoso/tokens:pull_request";
    let jwt = entra.github_issuer().mint(presented, FEDERATED_AUDIENCE);
    std::fs::write(&path, &jwt).unwrap();
    let err = client(&entra)
        .acquire(
            &app(
                &entra,
                Credential::Federated(FederatedTokenSource::File(path)),
            ),
            &scope(),
        )
        .await
        .unwrap_err();
    assert_refusal(
        &err,
        700213,
        &format!("{presented:?}"),
        entra.token_request_count(),
    );
    assert_no_secret(&format!("{err} {err:?}"), &[("federated token", &jwt)]);
}

#[tokio::test]
async fn missing_federated_token_file_is_a_source_error() {
    let entra = emulator_with_secret_app(false).await;
    let source = FederatedTokenSource::File("/nonexistent/azure-identity-token".into());
    let err = client(&entra)
        .acquire(&app(&entra, Credential::Federated(source)), &scope())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CredentialSource, "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/azure-identity-token"),
        "{err}"
    );
    assert_eq!(entra.requests().len(), 0);
}

#[tokio::test]
async fn empty_access_token_is_refused() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject(Fault::EmptyAccessToken);
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(entra.token_request_count(), 1);
}

#[tokio::test]
async fn non_json_body_is_refused() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject(Fault::MalformedBody);
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(err.to_string().contains("not a JSON object"), "{err}");
    assert_eq!(entra.token_request_count(), 1);

    entra.inject(Fault::Custom {
        status: 200,
        content_type: "application/json".into(),
        body: r#"{"token_type":"pop","expires_in":3599,"access_token":"x.y.z"}"#.into(),
    });
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(err.to_string().contains("not Bearer"), "{err}");
}

#[tokio::test]
async fn a_wrong_authority_path_is_named() {
    let entra = emulator_with_secret_app(false).await;
    let mut app = secret_app(&entra);
    app.authority = format!("{}/not-entra", entra.base_url()).parse().unwrap();
    let err = client(&entra).acquire(&app, &scope()).await.unwrap_err();
    assert_eq!(err.http_status(), Some(404), "{err}");
    assert!(err.to_string().contains("check the authority URL"), "{err}");
    assert_eq!(entra.requests().len(), 1, "not retried");
}
