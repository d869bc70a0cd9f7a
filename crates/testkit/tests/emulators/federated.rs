//! Federated credentials: an external token from a trusted issuer with the registered issuer,
//! audience and subject earns a token; each mismatch gets its own AADSTS code, and a forged or
//! expired external token is refused.

use std::sync::OnceLock;

use testkit::{
    AppRegistration, EntraEmulator, FEDERATED_AUDIENCE, FederatedCredential, OidcIssuer,
    TokenSource,
};

use crate::support::*;

const SUBJECT: &str = "system:serviceaccount:sync:secret-sync";

fn issuer() -> &'static OidcIssuer {
    static ISSUER: OnceLock<OidcIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| OidcIssuer::new("https://oidc.cluster.test/abc").unwrap())
}

async fn emulator_with_federated_app() -> EntraEmulator {
    let entra = EntraEmulator::start().await.unwrap();
    entra.trust_issuer(issuer());
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_federated_credential(FederatedCredential::new(issuer().issuer(), SUBJECT)),
    );
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
async fn matching_token_succeeds() {
    let entra = emulator_with_federated_app().await;
    let answer = post(&entra, &issuer().mint(SUBJECT, FEDERATED_AUDIENCE)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(entra.issued_tokens()[0].source, TokenSource::Federated);
}

#[tokio::test]
async fn issuer_audience_subject_mismatches() {
    let entra = emulator_with_federated_app().await;
    let stranger = OidcIssuer::new("https://other-issuer.test").unwrap();
    entra.trust_issuer(&stranger);
    post(&entra, &stranger.mint(SUBJECT, FEDERATED_AUDIENCE))
        .await
        .assert_entra_error(400, "invalid_client", 700211);
    post(&entra, &issuer().mint(SUBJECT, "api://SomethingElse"))
        .await
        .assert_entra_error(400, "invalid_client", 700212);
    let answer = post(
        &entra,
        &issuer().mint("system:serviceaccount:sync:SECRET-SYNC", FEDERATED_AUDIENCE),
    )
    .await;
    answer.assert_entra_error(400, "invalid_client", 700213);
    assert!(
        answer.text.contains("SECRET-SYNC"),
        "subjects are case-sensitive: {}",
        answer.text
    );
}

#[tokio::test]
async fn other_audience_can_be_registered() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.trust_issuer(issuer());
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID).with_federated_credential(
            FederatedCredential::new(issuer().issuer(), SUBJECT)
                .with_audience("api://AzureADTokenExchangeUSGov"),
        ),
    );
    let answer = post(
        &entra,
        &issuer().mint(SUBJECT, "api://AzureADTokenExchangeUSGov"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn forged_token_is_700027() {
    let entra = emulator_with_federated_app().await;
    // A token with the registered issuer's name but signed by another key.
    let impostor = OidcIssuer::new(issuer().issuer()).unwrap();
    post(&entra, &impostor.mint(SUBJECT, FEDERATED_AUDIENCE))
        .await
        .assert_entra_error(401, "invalid_client", 700027);
}

#[tokio::test]
async fn untrusted_issuer_is_50166() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_federated_credential(FederatedCredential::new(issuer().issuer(), SUBJECT)),
    );
    post(&entra, &issuer().mint(SUBJECT, FEDERATED_AUDIENCE))
        .await
        .assert_entra_error(400, "invalid_client", 50166);
}

#[tokio::test]
async fn expired_external_token_is_700024() {
    let entra = emulator_with_federated_app().await;
    let mut claims = issuer().claims(SUBJECT, FEDERATED_AUDIENCE);
    claims.issued_at -= 3600;
    claims.expires = claims.issued_at + 600;
    post(&entra, &issuer().mint_with(&claims))
        .await
        .assert_entra_error(400, "invalid_client", 700024);
}
