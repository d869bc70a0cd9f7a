//! Every credential kind gets a token from the emulator, over plain HTTP and over HTTPS with
//! a generated CA, and the request carries exactly the fields Entra ID expects.

use std::time::Duration;

use entra_auth::{
    AppCredential, AssertionAlgorithm, CertificateCredential, Credential, FederatedTokenSource,
    ManagedIdentity,
};
use secrecy::{ExposeSecret, SecretString};
use testkit::{
    AppRegistration, FEDERATED_AUDIENCE, FederatedCredential, GITHUB_ACTIONS_ISSUER, GithubOidc,
    TestCertificate, TokenOptions, TokenSource,
};
use time::OffsetDateTime;

use crate::common::*;

const SUBJECT: &str = "repo:contoso/tokens:ref:refs/heads/main";

/// The token is one the emulator issued, for the right resource, and expires in about an hour.
fn assert_issued(
    entra: &testkit::EntraEmulator,
    token: &entra_auth::AccessToken,
    source: TokenSource,
) {
    let issued = entra
        .validate_bearer(token.secret().expose_secret(), RESOURCE)
        .expect("the emulator accepts the token it issued");
    assert_eq!(issued.source, source);
    assert_eq!(token.token_type(), "Bearer");
    let left = token.expires_on() - OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::seconds(3500) && left <= time::Duration::seconds(3599),
        "expires in {left}"
    );
}

#[tokio::test]
async fn client_secret() {
    for tls in [false, true] {
        let entra = emulator_with_secret_app(tls).await;
        let token = client(&entra)
            .acquire(&secret_app(&entra), &scope())
            .await
            .unwrap();
        assert_issued(&entra, &token, TokenSource::ClientSecret);

        let requests = entra.token_requests();
        assert_eq!(requests.len(), 1, "tls={tls}");
        let form = &requests[0].form;
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], CLIENT);
        assert_eq!(form["scope"], SCOPE);
        assert_eq!(
            form["client_secret"], "[REDACTED]",
            "sent, and redacted by the emulator"
        );
        assert!(!form.contains_key("client_assertion"));
    }
}

#[tokio::test]
async fn expires_in_as_a_string() {
    let entra = emulator_with_secret_app(false).await;
    entra.set_token_options(TokenOptions {
        expires_in_as_string: true,
        ..TokenOptions::default()
    });
    let token = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap();
    assert_issued(&entra, &token, TokenSource::ClientSecret);
}

#[tokio::test]
async fn expiry_counts_from_before_the_request() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject(testkit::Fault::Delay(Duration::from_millis(1500)));
    let before = OffsetDateTime::now_utc();
    let token = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap();
    let after = OffsetDateTime::now_utc();
    assert!(after - before >= time::Duration::milliseconds(1500));
    assert!(
        token.obtained_at() >= before
            && token.obtained_at() < before + time::Duration::milliseconds(500)
    );
    assert_eq!(
        token.expires_on(),
        token.obtained_at() + time::Duration::seconds(3599)
    );
}

#[tokio::test]
async fn certificate_ps256_and_rs256_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCertificate::generate("entra-auth test").unwrap();
    let files = cert.write_to(dir.path()).unwrap();
    for tls in [false, true] {
        let entra = emulator(tls).await;
        entra.register_app(AppRegistration::new(TENANT, CLIENT).with_certificate(&cert));
        let cases = [
            (AssertionAlgorithm::Ps256, &files.cert, &files.key),
            // One PEM file holding both the key and the certificate.
            (AssertionAlgorithm::Rs256, &files.combined, &files.combined),
        ];
        for (alg, cert_path, key_path) in cases {
            let credential = CertificateCredential::from_files(cert_path, key_path, alg).unwrap();
            let app = app(&entra, Credential::Certificate(credential));
            let token = client(&entra)
                .acquire(&app, &scope())
                .await
                .unwrap_or_else(|e| {
                    panic!("{alg:?} tls={tls}: {e}");
                });
            assert_issued(&entra, &token, TokenSource::Certificate);
        }
        let requests = entra.token_requests();
        assert_eq!(requests.len(), 2);
        for request in &requests {
            assert_eq!(
                request.form["client_assertion_type"],
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            );
            assert_eq!(request.form["client_assertion"], "[REDACTED]");
            assert!(!request.form.contains_key("client_secret"));
        }
    }
}

#[tokio::test]
async fn federated_token_file_is_read_on_every_acquisition() {
    for tls in [false, true] {
        let entra = emulator(tls).await;
        entra.register_app(
            AppRegistration::new(TENANT, CLIENT).with_federated_credential(
                FederatedCredential::new(GITHUB_ACTIONS_ISSUER, SUBJECT),
            ),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("azure-identity-token");
        std::fs::write(
            &path,
            entra.github_issuer().mint(SUBJECT, FEDERATED_AUDIENCE) + "\n",
        )
        .unwrap();
        let app = app(
            &entra,
            Credential::Federated(FederatedTokenSource::File(path.clone())),
        );
        let client = client(&entra);

        let token = client.acquire(&app, &scope()).await.unwrap();
        assert_issued(&entra, &token, TokenSource::Federated);

        // Kubernetes rotates the file: the next acquisition must send the new content.
        let other = "system:serviceaccount:other:rotated";
        std::fs::write(&path, entra.github_issuer().mint(other, FEDERATED_AUDIENCE)).unwrap();
        let err = client.acquire(&app, &scope()).await.unwrap_err();
        assert_eq!(err.aadsts_codes(), &[700213], "{err}");
        assert!(err.to_string().contains(other), "{err}");
    }
}

const CHILD_AUTHORITY: &str = "ENTRA_AUTH_TEST_CHILD_AUTHORITY";
const CHILD_JWT: &str = "ENTRA_AUTH_TEST_FEDERATED_JWT";

/// The child acquires a token from the parent's emulator with the JWT from its environment;
/// the parent checks what the emulator issued.
#[tokio::test]
async fn federated_token_from_an_environment_variable() {
    if in_child() {
        let authority = std::env::var(CHILD_AUTHORITY).unwrap();
        let app = AppCredential {
            authority: authority.parse().unwrap(),
            tenant: TENANT.parse().unwrap(),
            client_id: CLIENT.parse().unwrap(),
            credential: Credential::Federated(FederatedTokenSource::Env(CHILD_JWT.into())),
        };
        let client = entra_auth::TokenClient::new(entra_auth::ClientOptions::default()).unwrap();
        let token = client.acquire(&app, &scope()).await.unwrap();
        assert!(!token.secret().expose_secret().is_empty());
        return;
    }
    let entra = emulator(false).await;
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_federated_credential(FederatedCredential::new(GITHUB_ACTIONS_ISSUER, SUBJECT)),
    );
    let jwt = entra.github_issuer().mint(SUBJECT, FEDERATED_AUDIENCE);
    run_in_child(
        "credentials::federated_token_from_an_environment_variable",
        &[(CHILD_AUTHORITY, entra.base_url()), (CHILD_JWT, jwt)],
        &[],
    )
    .await;
    let issued = entra.issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].source, TokenSource::Federated);
    assert_eq!(issued[0].client_id, CLIENT);
}

/// `github_actions_from_env` reads the runner's two variables; the child gets a token with it.
#[tokio::test]
async fn github_actions_source_from_the_runner_environment() {
    if in_child() {
        let source = FederatedTokenSource::github_actions_from_env().unwrap();
        assert!(!format!("{source:?}").contains("runner-request-token"));
        let app = AppCredential {
            authority: std::env::var(CHILD_AUTHORITY).unwrap().parse().unwrap(),
            tenant: TENANT.parse().unwrap(),
            client_id: CLIENT.parse().unwrap(),
            credential: Credential::Federated(source),
        };
        let client = entra_auth::TokenClient::new(entra_auth::ClientOptions::default()).unwrap();
        client.acquire(&app, &scope()).await.unwrap();
        return;
    }
    let entra = emulator(false).await;
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_federated_credential(FederatedCredential::new(GITHUB_ACTIONS_ISSUER, SUBJECT)),
    );
    entra.enable_github_oidc(GithubOidc::new(SUBJECT, "runner-request-token"));
    run_in_child(
        "credentials::github_actions_source_from_the_runner_environment",
        &[
            (CHILD_AUTHORITY, entra.base_url()),
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                entra.github_oidc_request_url(),
            ),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                "runner-request-token".into(),
            ),
        ],
        &[],
    )
    .await;
    assert_eq!(entra.issued_tokens().len(), 1);
}

/// Outside a GitHub Actions job with `id-token: write`, the error says what is missing.
#[tokio::test]
async fn github_actions_source_outside_a_runner_explains() {
    if in_child() {
        let err = FederatedTokenSource::github_actions_from_env().unwrap_err();
        assert_eq!(err.input(), "ACTIONS_ID_TOKEN_REQUEST_URL");
        assert!(err.to_string().contains("id-token: write"), "{err}");
        return;
    }
    run_in_child(
        "credentials::github_actions_source_outside_a_runner_explains",
        &[],
        &[
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        ],
    )
    .await;
}

/// `ManagedIdentity::from_env` picks App Service when IDENTITY_ENDPOINT and IDENTITY_HEADER
/// are set (and gets a token there), IMDS otherwise.
#[tokio::test]
async fn managed_identity_from_the_environment() {
    if in_child() {
        let identity = ManagedIdentity::from_env(None).expect("a complete environment");
        if std::env::var_os("IDENTITY_ENDPOINT").is_none() {
            match identity {
                ManagedIdentity::Imds {
                    endpoint,
                    client_id,
                } => {
                    assert_eq!(endpoint.as_str(), entra_auth::IMDS_ENDPOINT);
                    assert!(client_id.is_none());
                }
                other => panic!("expected IMDS, got {other:?}"),
            }
            return;
        }
        assert!(
            matches!(identity, ManagedIdentity::AppService { .. }),
            "{identity:?}"
        );
        let app = AppCredential::managed_identity(entra_auth::Authority::public(), identity);
        let client = entra_auth::TokenClient::new(entra_auth::ClientOptions::default()).unwrap();
        client.acquire(&app, &scope()).await.unwrap();
        return;
    }
    let entra = emulator(false).await;
    let identity = testkit::ManagedIdentity::new(TENANT, CLIENT);
    entra.enable_managed_identity(identity.clone());
    const NAME: &str = "credentials::managed_identity_from_the_environment";
    run_in_child(
        NAME,
        &[
            ("IDENTITY_ENDPOINT", entra.identity_endpoint()),
            ("IDENTITY_HEADER", identity.identity_header.clone()),
        ],
        &[],
    )
    .await;
    assert_eq!(entra.issued_tokens().len(), 1);
    run_in_child(NAME, &[], &["IDENTITY_ENDPOINT", "IDENTITY_HEADER"]).await;
}

#[tokio::test]
async fn federated_token_from_github_actions() {
    for tls in [false, true] {
        let entra = emulator(tls).await;
        entra.register_app(
            AppRegistration::new(TENANT, CLIENT).with_federated_credential(
                FederatedCredential::new(GITHUB_ACTIONS_ISSUER, SUBJECT),
            ),
        );
        let request_token = "ghs_requestTOKENnever_printed_123";
        entra.enable_github_oidc(GithubOidc::new(SUBJECT, request_token));
        let source = FederatedTokenSource::GitHubActions {
            request_url: entra.github_oidc_request_url().parse().unwrap(),
            request_token: SecretString::from(request_token),
        };
        let token = client(&entra)
            .acquire(&app(&entra, Credential::Federated(source)), &scope())
            .await
            .unwrap();
        assert_issued(&entra, &token, TokenSource::Federated);

        let oidc: Vec<_> = entra
            .requests()
            .into_iter()
            .filter(|r| r.path == "/token")
            .collect();
        assert_eq!(oidc.len(), 1);
        assert_eq!(oidc[0].method, "GET");
        assert_eq!(oidc[0].query["audience"], FEDERATED_AUDIENCE);
        assert_eq!(oidc[0].query["api-version"], "2.0");
    }
}

#[tokio::test]
async fn github_actions_refusal_explains_the_permission() {
    let entra = emulator(false).await;
    entra.enable_github_oidc(GithubOidc::new(SUBJECT, "right-token"));
    let source = FederatedTokenSource::GitHubActions {
        request_url: entra.github_oidc_request_url().parse().unwrap(),
        request_token: SecretString::from("wrong-token-value"),
    };
    let err = client(&entra)
        .acquire(&app(&entra, Credential::Federated(source)), &scope())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), entra_auth::ErrorKind::CredentialSource);
    assert_eq!(err.http_status(), Some(401));
    assert!(err.to_string().contains("id-token: write"), "{err}");
    assert_eq!(
        entra.token_request_count(),
        0,
        "no token request without an assertion"
    );
}

#[tokio::test]
async fn managed_identity_imds_and_app_service() {
    const MI_CLIENT: &str = "5d2a3c4b-1e6f-4a7b-8c9d-0e1f2a3b4c5d";
    for tls in [false, true] {
        let entra = emulator(tls).await;
        let identity = testkit::ManagedIdentity::new(TENANT, MI_CLIENT);
        entra.enable_managed_identity(identity.clone());
        let identities = [
            ManagedIdentity::Imds {
                endpoint: entra.imds_endpoint().parse().unwrap(),
                client_id: Some(MI_CLIENT.parse().unwrap()),
            },
            ManagedIdentity::AppService {
                endpoint: entra.identity_endpoint().parse().unwrap(),
                header: SecretString::from(identity.identity_header.clone()),
                client_id: None,
            },
        ];
        for mi in identities {
            let app = AppCredential::managed_identity(authority(&entra), mi.clone());
            let token = client(&entra)
                .acquire(&app, &scope())
                .await
                .unwrap_or_else(|e| {
                    panic!("{mi:?} tls={tls}: {e}");
                });
            assert_issued(&entra, &token, TokenSource::ManagedIdentity);
        }
        let requests = entra.requests();
        assert_eq!(requests.len(), 2);
        let imds = &requests[0];
        assert_eq!(imds.path, "/metadata/identity/oauth2/token");
        assert_eq!(imds.query["api-version"], "2018-02-01");
        assert_eq!(imds.query["resource"], RESOURCE);
        assert_eq!(imds.query["client_id"], MI_CLIENT);
        let app_service = &requests[1];
        assert_eq!(app_service.path, "/msi/token");
        assert_eq!(app_service.query["api-version"], "2019-08-01");
        assert_eq!(app_service.query["resource"], RESOURCE);
        assert!(!app_service.query.contains_key("client_id"));
        assert_eq!(
            entra.token_request_count(),
            0,
            "managed identity never calls the authority"
        );
    }
}

#[tokio::test]
async fn managed_identity_for_an_unassigned_identity_is_refused() {
    let entra = emulator(false).await;
    entra.enable_managed_identity(testkit::ManagedIdentity::new(TENANT, CLIENT));
    let mi = ManagedIdentity::Imds {
        endpoint: entra.imds_endpoint().parse().unwrap(),
        client_id: Some("00000000-1111-2222-3333-444444444444".parse().unwrap()),
    };
    let app = AppCredential::managed_identity(authority(&entra), mi);
    let err = client(&entra).acquire(&app, &scope()).await.unwrap_err();
    assert_eq!(err.kind(), entra_auth::ErrorKind::Rejected, "{err}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("managed identity is assigned"),
        "{err}"
    );
    assert_eq!(entra.requests().len(), 1, "a refusal is not retried");
}
