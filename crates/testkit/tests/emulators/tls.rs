//! HTTPS: the emulator serves TLS with a certificate from its run-time CA, a client trusting only
//! that CA gets tokens (and the assertion audience is the https token URL), and a client that does
//! not trust it is refused.

use testkit::{AppRegistration, EntraEmulator, TestCertificate};

use crate::support::*;

fn trusting_client(entra: &EntraEmulator) -> reqwest::Client {
    let ca =
        reqwest::Certificate::from_pem(entra.ca_pem().expect("TLS emulator has a CA").as_bytes())
            .unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

#[tokio::test]
async fn secret_flow_over_https() {
    let entra = EntraEmulator::start_tls().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT_ID).with_secret(SECRET));
    assert!(entra.base_url().starts_with("https://127.0.0.1:"));
    let answer = post_form(
        &trusting_client(&entra),
        &entra.token_url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn certificate_flow_over_https_checks_the_https_audience() {
    let entra = EntraEmulator::start_tls().await.unwrap();
    let cert = TestCertificate::generate("tls-client").unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT_ID).with_certificate(&cert));
    let client = trusting_client(&entra);
    let url = entra.token_url(TENANT);
    let good = post_assertion(
        &client,
        &url,
        CLIENT_ID,
        &cert.sign(&cert.assertion(CLIENT_ID, &url)),
    )
    .await;
    assert_eq!(good.status, 200, "{}", good.text);
    let http_aud = url.replacen("https://", "http://", 1);
    post_assertion(
        &client,
        &url,
        CLIENT_ID,
        &cert.sign(&cert.assertion(CLIENT_ID, &http_aud)),
    )
    .await
    .assert_entra_error(401, "invalid_client", 50027);
}

#[tokio::test]
async fn untrusted_client_is_refused() {
    let entra = EntraEmulator::start_tls().await.unwrap();
    let result = reqwest::Client::builder()
        .tls_certs_only(Vec::<reqwest::Certificate>::new())
        .build()
        .unwrap()
        .post(entra.token_url(TENANT))
        .send()
        .await;
    assert!(result.is_err(), "TLS must fail without the CA: {result:?}");
}

#[tokio::test]
async fn ca_can_be_written_to_a_file() {
    let entra = EntraEmulator::start_tls().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    entra.ca().unwrap().write_pem(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        entra.ca_pem().unwrap()
    );
    assert!(EntraEmulator::start().await.unwrap().ca_pem().is_none());
}

#[tokio::test]
async fn validation_rules_hold_over_https() {
    use testkit::{FEDERATED_AUDIENCE, FederatedCredential, OidcIssuer};
    let entra = EntraEmulator::start_tls().await.unwrap();
    let cert = TestCertificate::generate("tls-rules").unwrap();
    let issuer = OidcIssuer::new("https://issuer.tls.test").unwrap();
    entra.trust_issuer(&issuer);
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_secret(SECRET)
            .with_certificate(&cert)
            .with_federated_credential(FederatedCredential::new(issuer.issuer(), "workload")),
    );
    let client = trusting_client(&entra);
    let url = entra.token_url(TENANT);

    let secret_form = |secret| {
        [
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("scope", VAULT_SCOPE),
        ]
    };
    post_form(&client, &url, &secret_form("wrong"))
        .await
        .assert_entra_error(401, "invalid_client", 7000215);

    let once = cert.sign(&cert.assertion(CLIENT_ID, &url));
    assert_eq!(
        post_assertion(&client, &url, CLIENT_ID, &once).await.status,
        200
    );
    post_assertion(&client, &url, CLIENT_ID, &once)
        .await
        .assert_entra_error(401, "invalid_client", 50027);

    let other = TestCertificate::generate("tls-other").unwrap();
    post_assertion(
        &client,
        &url,
        CLIENT_ID,
        &other.sign(&other.assertion(CLIENT_ID, &url)),
    )
    .await
    .assert_entra_error(401, "invalid_client", 700027);

    post_assertion(
        &client,
        &url,
        CLIENT_ID,
        &issuer.mint("other-workload", FEDERATED_AUDIENCE),
    )
    .await
    .assert_entra_error(400, "invalid_client", 700213);
    let ok = post_assertion(
        &client,
        &url,
        CLIENT_ID,
        &issuer.mint("workload", FEDERATED_AUDIENCE),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}
