//! Client secret flow: success shape and headers, every refusal of the request itself (tenant,
//! client, scope, grant type), expired and wrong secrets, token options, and that secrets never
//! reach the request log or Debug output.

use std::time::Duration;

use secrecy::ExposeSecret;
use testkit::{AppRegistration, BearerError, EntraEmulator, TokenOptions, TokenSource};

use crate::support::*;

#[tokio::test]
async fn secret_success_has_entra_shape_and_headers() {
    let entra = emulator_with_secret_app().await;
    let answer = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 3599);
    assert_eq!(answer.body["ext_expires_in"], 3599);
    let token = answer.body["access_token"]
        .as_str()
        .expect("access_token is a string");
    assert_eq!(token.split('.').count(), 3, "JWT-shaped: {token}");
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        answer.headers.get("cache-control").map(String::as_str),
        Some("no-cache, no-store")
    );
    let keys: Vec<&str> = answer
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "no refresh_in unless asked: {keys:?}");

    let issued = entra
        .validate_bearer(token, "https://vault.azure.net")
        .expect("token is valid for the vault");
    assert_eq!(issued.client_id, CLIENT_ID);
    assert_eq!(issued.source, TokenSource::ClientSecret);
    assert_eq!(
        entra
            .validate_bearer(token, "https://graph.microsoft.com")
            .unwrap_err(),
        BearerError::WrongAudience {
            expected: "https://graph.microsoft.com".into(),
            actual: "https://vault.azure.net".into()
        }
    );
    assert_eq!(
        entra
            .validate_bearer("nope", "https://vault.azure.net")
            .unwrap_err(),
        BearerError::Unknown
    );
    entra.expire_issued_tokens();
    assert_eq!(
        entra
            .validate_bearer(token, "https://vault.azure.net")
            .unwrap_err(),
        BearerError::Expired
    );
}

#[tokio::test]
async fn every_token_is_different() {
    let entra = emulator_with_secret_app().await;
    let first = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    let second = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    assert_ne!(first.body["access_token"], second.body["access_token"]);
    assert_eq!(entra.issued_tokens().len(), 2);
}

#[tokio::test]
async fn wrong_secret_is_7000215() {
    let entra = emulator_with_secret_app().await;
    post_secret(
        &entra,
        TENANT,
        CLIENT_ID,
        "secret-id-not-value",
        VAULT_SCOPE,
    )
    .await
    .assert_entra_error(401, "invalid_client", 7000215);
    assert!(entra.issued_tokens().is_empty());
}

#[tokio::test]
async fn expired_secret_is_7000222() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_secret(SECRET)
            .with_expired_secret("old-secret"),
    );
    post_secret(&entra, TENANT, CLIENT_ID, "old-secret", VAULT_SCOPE)
        .await
        .assert_entra_error(401, "invalid_client", 7000222);
}

#[tokio::test]
async fn missing_credential_is_7000218() {
    let entra = emulator_with_secret_app().await;
    let answer = post_form(
        &reqwest::Client::new(),
        &entra.token_url(TENANT),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await;
    answer.assert_entra_error(401, "invalid_client", 7000218);
}

#[tokio::test]
async fn unknown_client_is_700016_and_unknown_tenant_is_90002() {
    let entra = emulator_with_secret_app().await;
    post_secret(
        &entra,
        TENANT,
        "99999999-0000-0000-0000-000000000000",
        SECRET,
        VAULT_SCOPE,
    )
    .await
    .assert_entra_error(400, "unauthorized_client", 700016);
    post_secret(
        &entra,
        "fabrikam.onmicrosoft.com",
        CLIENT_ID,
        SECRET,
        VAULT_SCOPE,
    )
    .await
    .assert_entra_error(400, "invalid_request", 90002);
    entra.add_tenant("fabrikam.onmicrosoft.com");
    post_secret(
        &entra,
        "fabrikam.onmicrosoft.com",
        CLIENT_ID,
        SECRET,
        VAULT_SCOPE,
    )
    .await
    .assert_entra_error(400, "unauthorized_client", 700016);
}

#[tokio::test]
async fn tenant_match_ignores_case() {
    let entra = emulator_with_secret_app().await;
    let answer = post_secret(
        &entra,
        &TENANT.to_uppercase(),
        CLIENT_ID,
        SECRET,
        VAULT_SCOPE,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn common_and_consumers_are_9001023() {
    let entra = emulator_with_secret_app().await;
    for tenant in ["common", "consumers"] {
        post_secret(&entra, tenant, CLIENT_ID, SECRET, VAULT_SCOPE)
            .await
            .assert_entra_error(400, "invalid_request", 9001023);
    }
}

#[tokio::test]
async fn scope_rules() {
    let entra = emulator_with_secret_app().await;
    post_secret(
        &entra,
        TENANT,
        CLIENT_ID,
        SECRET,
        "https://graph.microsoft.com/User.Read",
    )
    .await
    .assert_entra_error(400, "invalid_scope", 1002012);
    post_secret(
        &entra,
        TENANT,
        CLIENT_ID,
        SECRET,
        "https://vault.azure.net/.default https://graph.microsoft.com/.default",
    )
    .await
    .assert_entra_error(400, "invalid_scope", 70011);
    post_secret(&entra, TENANT, CLIENT_ID, SECRET, "/.default")
        .await
        .assert_entra_error(400, "invalid_scope", 70011);
    // A custom API is known once registered (its service principal exists in the tenant).
    post_secret(&entra, TENANT, CLIENT_ID, SECRET, "api://my-api/.default")
        .await
        .assert_entra_error(400, "invalid_resource", 500011);
    entra.register_resource("api://my-api");
    let ok = post_secret(&entra, TENANT, CLIENT_ID, SECRET, "api://my-api/.default").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[tokio::test]
async fn a_resource_without_a_service_principal_is_aadsts500011() {
    let entra = emulator_with_secret_app().await;
    let refused = post_secret(
        &entra,
        TENANT,
        CLIENT_ID,
        SECRET,
        "https://contoso.example/.default",
    )
    .await;
    refused.assert_entra_error(400, "invalid_resource", 500011);
    assert!(
        refused.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "AADSTS500011: The resource principal named https://contoso.example was not found in the tenant named {TENANT}."
            )),
        "{}",
        refused.text
    );
    // A wrong secret is reported as such, whatever the resource.
    post_secret(
        &entra,
        TENANT,
        CLIENT_ID,
        "wrong",
        "https://contoso.example/.default",
    )
    .await
    .assert_entra_error(401, "invalid_client", 7000215);
    // Microsoft's resources are known in every cloud, by URI (any case, trailing slash) and app id.
    for scope in [
        "https://graph.microsoft.us/.default",
        "https://microsoftgraph.chinacloudapi.cn/.default",
        "https://vault.usgovcloudapi.net/.default",
        "https://vault.azure.cn/.default",
        "https://management.azure.com//.default",
        "https://Management.ChinaCloudApi.cn/.default",
        "00000003-0000-0000-c000-000000000000/.default",
        "cfa8b339-82a2-471a-a3c9-0fc0be7a4093/.default",
    ] {
        let ok = post_secret(&entra, TENANT, CLIENT_ID, SECRET, scope).await;
        assert_eq!(ok.status, 200, "{scope}: {}", ok.text);
    }
    assert!(testkit::KNOWN_RESOURCES.contains(&"https://vault.azure.net"));
}

#[tokio::test]
async fn request_shape_rules() {
    let entra = emulator_with_secret_app().await;
    let client = reqwest::Client::new();
    let url = entra.token_url(TENANT);
    post_form(
        &client,
        &url,
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await
    .assert_entra_error(400, "invalid_request", 900144);
    post_form(
        &client,
        &url,
        &[
            ("grant_type", "password"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await
    .assert_entra_error(400, "unsupported_grant_type", 70003);
    post_form(
        &client,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", SECRET),
            ("scope", VAULT_SCOPE),
        ],
    )
    .await
    .assert_entra_error(400, "invalid_request", 900144);
    post_form(
        &client,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
    )
    .await
    .assert_entra_error(400, "invalid_request", 900144);
    let get = Answer::from(client.get(&url).send().await.unwrap()).await;
    get.assert_entra_error(400, "invalid_request", 900561);
}

#[tokio::test]
async fn correlation_id_echoes_client_request_id() {
    let entra = emulator_with_secret_app().await;
    let id = "0b8c3f59-4b7e-4c4e-9a58-1e2f3a4b5c6d";
    let response = reqwest::Client::new()
        .post(entra.token_url(TENANT))
        .header("client-request-id", id)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
            ("scope", VAULT_SCOPE),
        ])
        .send()
        .await
        .unwrap();
    let answer = Answer::from(response).await;
    assert_eq!(answer.body["correlation_id"], id);
    assert!(
        answer.body["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("Correlation ID: {id}"))
    );
}

#[tokio::test]
async fn token_options_change_the_answer() {
    let entra = emulator_with_secret_app().await;
    entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(86399),
        expires_in_as_string: true,
        refresh_in: Some(Duration::from_secs(43199)),
    });
    let answer = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    assert_eq!(answer.body["expires_in"], "86399");
    assert_eq!(answer.body["ext_expires_in"], "86399");
    assert_eq!(answer.body["refresh_in"], "43199");
}

#[tokio::test]
async fn requests_are_recorded_without_secrets() {
    let entra = emulator_with_secret_app().await;
    let answer = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    post_secret(&entra, TENANT, CLIENT_ID, "wrong-secret-value", VAULT_SCOPE).await;
    let token = answer.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(entra.token_request_count(), 2);
    let recorded = entra.token_requests();
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(recorded[0].form["client_secret"], "[REDACTED]");
    assert_eq!(recorded[0].form["client_id"], CLIENT_ID);
    assert_eq!(recorded[0].status, Some(200));
    assert_eq!(recorded[1].status, Some(401));
    let printed = format!("{recorded:?} {:?} {entra:?}", entra.issued_tokens());
    for secret in [SECRET, "wrong-secret-value", token.as_str()] {
        assert!(!printed.contains(secret), "{secret} leaked into {printed}");
    }
    assert_eq!(entra.issued_tokens()[0].access_token.expose_secret(), token);
    entra.clear_requests();
    assert_eq!(entra.token_request_count(), 0);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let entra = emulator_with_secret_app().await;
    let url = entra.token_url(TENANT);
    entra.shutdown().await;
    let result = reqwest::Client::new()
        .post(&url)
        .form(&[("a", "b")])
        .send()
        .await;
    assert!(
        result.is_err(),
        "server still answers after shutdown: {result:?}"
    );
}

#[tokio::test]
async fn connections_are_counted_not_requests() {
    let entra = emulator_with_secret_app().await;
    let url = entra.token_url(TENANT);
    assert_eq!(entra.connections_accepted(), 0);
    // One client, two requests: one kept-alive connection.
    let client = reqwest::Client::new();
    for _ in 0..2 {
        client.post(&url).form(&[("a", "b")]).send().await.unwrap();
    }
    assert_eq!(entra.connections_accepted(), 1);
    // Another client opens its own.
    reqwest::Client::new()
        .post(&url)
        .form(&[("a", "b")])
        .send()
        .await
        .unwrap();
    assert_eq!(entra.connections_accepted(), 2);
}

#[test]
fn debug_output_never_shows_credentials() {
    let app = AppRegistration::new(TENANT, CLIENT_ID)
        .with_secret("visible-if-leaked-1")
        .with_expired_secret("visible-if-leaked-2");
    let github = testkit::GithubOidc::new("repo:o/r:ref:refs/heads/main", "visible-if-leaked-3");
    let printed = format!("{app:?} {github:?}");
    for secret in [
        "visible-if-leaked-1",
        "visible-if-leaked-2",
        "visible-if-leaked-3",
    ] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
}
