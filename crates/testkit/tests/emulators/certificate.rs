//! Certificate credentials: a correct PS256/x5t#S256 or RS256/x5t assertion earns a token; each
//! rule Entra checks (thumbprint, signature, iss/sub, aud, time window, jti) refuses a broken one.

use std::sync::OnceLock;

use testkit::{
    AppRegistration, AssertionAlgorithm, EntraEmulator, TestCertificate, ThumbprintHeader,
    TokenSource,
};

use crate::support::*;

/// RSA key generation is slow; the tests share two certificates.
fn registered_cert() -> &'static TestCertificate {
    static CERT: OnceLock<TestCertificate> = OnceLock::new();
    CERT.get_or_init(|| TestCertificate::generate("registered").unwrap())
}

fn other_cert() -> &'static TestCertificate {
    static CERT: OnceLock<TestCertificate> = OnceLock::new();
    CERT.get_or_init(|| TestCertificate::generate("not registered").unwrap())
}

async fn emulator_with_cert_app() -> EntraEmulator {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT_ID).with_certificate(registered_cert()));
    entra
}

async fn post(entra: &EntraEmulator, assertion: &str) -> Answer {
    post_assertion(
        &reqwest::Client::new(),
        &entra.token_url(TENANT),
        CLIENT_ID,
        assertion,
    )
    .await
}

#[tokio::test]
async fn ps256_with_x5t_s256_succeeds() {
    let entra = emulator_with_cert_app().await;
    let cert = registered_cert();
    let assertion = cert.sign(&cert.assertion(CLIENT_ID, &entra.token_url(TENANT)));
    let answer = post(&entra, &assertion).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(entra.issued_tokens()[0].source, TokenSource::Certificate);
    assert_eq!(
        entra.token_requests()[0].form["client_assertion"],
        "[REDACTED]"
    );
}

#[tokio::test]
async fn rs256_with_x5t_succeeds() {
    let entra = emulator_with_cert_app().await;
    let cert = registered_cert();
    let mut claims = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    claims.algorithm = AssertionAlgorithm::Rs256;
    claims.thumbprint = ThumbprintHeader::Sha1;
    let answer = post(&entra, &cert.sign(&claims)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn certificate_registered_from_pem_works() {
    let entra = EntraEmulator::start().await.unwrap();
    let cert = registered_cert();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_certificate_pem(cert.cert_pem())
            .unwrap(),
    );
    let answer = post(
        &entra,
        &cert.sign(&cert.assertion(CLIENT_ID, &entra.token_url(TENANT))),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn unknown_certificate_is_700027() {
    let entra = emulator_with_cert_app().await;
    let cert = other_cert();
    let answer = post(
        &entra,
        &cert.sign(&cert.assertion(CLIENT_ID, &entra.token_url(TENANT))),
    )
    .await;
    answer.assert_entra_error(401, "invalid_client", 700027);
    assert!(
        answer.text.contains("The key was not found"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn bad_signature_is_700027() {
    let entra = emulator_with_cert_app().await;
    let cert = registered_cert();
    let good = cert.sign(&cert.assertion(CLIENT_ID, &entra.token_url(TENANT)));
    // Same header and claims, signature of another key: only the signature is wrong.
    let forged_by = other_cert().sign(&cert.assertion(CLIENT_ID, &entra.token_url(TENANT)));
    let (signing_input, _) = good.rsplit_once('.').unwrap();
    let (_, foreign_signature) = forged_by.rsplit_once('.').unwrap();
    let answer = post(&entra, &format!("{signing_input}.{foreign_signature}")).await;
    answer.assert_entra_error(401, "invalid_client", 700027);
    assert!(
        answer.text.contains("signature value did not match"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn not_a_jwt_or_no_thumbprint_is_invalid_certificate() {
    let entra = emulator_with_cert_app().await;
    post(&entra, "not-a-jwt")
        .await
        .assert_entra_error(400, "invalid_client", 7000215);
    let cert = registered_cert();
    let mut claims = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    claims.thumbprint = ThumbprintHeader::None;
    let answer = post(&entra, &cert.sign(&claims)).await;
    answer.assert_entra_error(400, "invalid_client", 7000215);
    assert!(answer.text.contains("Invalid client certificate."));
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let entra = emulator_with_cert_app().await;
    let cert = registered_cert();
    let claims = cert.assertion(
        CLIENT_ID,
        "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
    );
    let answer = post(&entra, &cert.sign(&claims)).await;
    answer.assert_entra_error(401, "invalid_client", 50027);
    assert!(answer.text.contains("'aud'"), "{}", answer.text);
}

#[tokio::test]
async fn issuer_or_subject_not_the_client_is_700021() {
    let entra = emulator_with_cert_app().await;
    let cert = registered_cert();
    let mut claims = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    claims.subject = "someone-else".into();
    post(&entra, &cert.sign(&claims))
        .await
        .assert_entra_error(401, "invalid_client", 700021);
    let mut claims = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    claims.issuer = "someone-else".into();
    post(&entra, &cert.sign(&claims))
        .await
        .assert_entra_error(401, "invalid_client", 700021);
}

#[tokio::test]
async fn expired_or_future_assertion_is_700024() {
    let entra = emulator_with_cert_app().await;
    let cert = registered_cert();
    let mut expired = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    expired.not_before = expired.not_before.map(|t| t - 1200);
    expired.expires = expired.not_before.map(|t| t + 600);
    post(&entra, &cert.sign(&expired))
        .await
        .assert_entra_error(400, "invalid_client", 700024);

    let mut no_exp = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    no_exp.expires = None;
    post(&entra, &cert.sign(&no_exp))
        .await
        .assert_entra_error(400, "invalid_client", 700024);

    let mut future = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    future.not_before = future.not_before.map(|t| t + 900);
    future.expires = future.not_before.map(|t| t + 600);
    post(&entra, &cert.sign(&future))
        .await
        .assert_entra_error(400, "invalid_client", 700024);

    let mut small_skew = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    small_skew.not_before = small_skew.not_before.map(|t| t + 60);
    assert_eq!(
        post(&entra, &cert.sign(&small_skew)).await.status,
        200,
        "60 s of skew is tolerated"
    );
}

#[tokio::test]
async fn missing_or_replayed_jti_is_refused() {
    let entra = emulator_with_cert_app().await;
    let cert = registered_cert();
    let mut no_jti = cert.assertion(CLIENT_ID, &entra.token_url(TENANT));
    no_jti.jti = None;
    let answer = post(&entra, &cert.sign(&no_jti)).await;
    answer.assert_entra_error(401, "invalid_client", 50027);
    assert!(answer.text.contains("'jti' claim is missing"));

    let once = cert.sign(&cert.assertion(CLIENT_ID, &entra.token_url(TENANT)));
    assert_eq!(post(&entra, &once).await.status, 200);
    let replay = post(&entra, &once).await;
    replay.assert_entra_error(401, "invalid_client", 50027);
    assert!(replay.text.contains("replay"), "{}", replay.text);
}

#[tokio::test]
async fn wrong_assertion_type_is_900144() {
    let entra = emulator_with_cert_app().await;
    let cert = registered_cert();
    let assertion = cert.sign(&cert.assertion(CLIENT_ID, &entra.token_url(TENANT)));
    let answer = post_form(
        &reqwest::Client::new(),
        &entra.token_url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_assertion_type", "jwt"),
            ("client_assertion", &assertion),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await;
    answer.assert_entra_error(400, "invalid_request", 900144);
}

#[test]
fn certificate_files_and_thumbprints() {
    let cert = registered_cert();
    let dir = tempfile::tempdir().unwrap();
    let files = cert.write_to(dir.path()).unwrap();
    let cert_text = std::fs::read_to_string(&files.cert).unwrap();
    let key_text = std::fs::read_to_string(&files.key).unwrap();
    let combined = std::fs::read_to_string(&files.combined).unwrap();
    assert!(cert_text.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(
        key_text.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8"
    );
    assert!(combined.contains(&key_text) && combined.contains(&cert_text));
    assert_eq!(cert.thumbprint_sha1().len(), 27, "base64url of 20 bytes");
    assert_eq!(cert.thumbprint_sha256().len(), 43, "base64url of 32 bytes");
    assert_eq!(cert.thumbprint_sha1_hex().len(), 40);
    let printed = format!("{cert:?}");
    assert!(
        !printed.contains("PRIVATE KEY") && !printed.contains(&key_text[30..60]),
        "{printed}"
    );
}

#[test]
fn only_rsa_pem_certificates_can_be_registered() {
    let ec = rcgen::generate_simple_self_signed(vec!["ec.test".to_owned()]).unwrap();
    let err = AppRegistration::new(TENANT, CLIENT_ID)
        .with_certificate_pem(&ec.cert.pem())
        .unwrap_err();
    assert!(err.to_string().contains("not RSA"), "{err}");
    let err = AppRegistration::new(TENANT, CLIENT_ID)
        .with_certificate_pem("not a pem")
        .unwrap_err();
    assert!(err.to_string().contains("not a PEM certificate"), "{err}");
}
