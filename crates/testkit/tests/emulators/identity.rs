//! Managed identity (IMDS, App Service, Azure Arc) and GitHub Actions OIDC endpoints: their header
//! rules, each host's answer shape (IMDS's string `expires_in`, App Service's `expires_on` only),
//! the refusal of a v2 scope as `resource`, identity selection, Arc's key-file challenge, and a
//! GitHub token that Entra then accepts as a federated credential.

use testkit::{
    AppRegistration, ArcAgent, EntraEmulator, FEDERATED_AUDIENCE, Fault, FederatedCredential,
    GITHUB_ACTIONS_ISSUER, GithubOidc, ManagedIdentity, TokenSource,
};

use crate::support::*;

const MI_CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const REPO_SUBJECT: &str = "repo:contoso/secret-sync:ref:refs/heads/main";

async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Answer::from(request.send().await.expect("the emulator answers")).await
}

async fn emulator_with_identity() -> (EntraEmulator, ManagedIdentity) {
    let entra = EntraEmulator::start().await.unwrap();
    let identity = ManagedIdentity::new(TENANT, MI_CLIENT);
    entra.enable_managed_identity(identity.clone());
    (entra, identity)
}

#[tokio::test]
async fn imds_answers_with_string_expiry() {
    let (entra, _) = emulator_with_identity().await;
    let url = format!(
        "{}?api-version=2018-02-01&resource=https://vault.azure.net",
        entra.imds_endpoint()
    );
    let answer = get(&url, &[("Metadata", "true")]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    for key in ["expires_in", "expires_on", "ext_expires_in", "not_before"] {
        let value = answer.body[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is a string: {}", answer.text));
        assert!(value.parse::<u64>().is_ok(), "{key} is numeric: {value}");
    }
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["client_id"], MI_CLIENT);
    assert_eq!(answer.body["resource"], "https://vault.azure.net");
    let token = answer.body["access_token"].as_str().unwrap();
    let issued = entra
        .validate_bearer(token, "https://vault.azure.net")
        .unwrap();
    assert_eq!(issued.source, TokenSource::ManagedIdentity);
}

#[tokio::test]
async fn imds_rules() {
    let (entra, identity) = emulator_with_identity().await;
    let base = entra.imds_endpoint();
    let no_header = get(
        &format!("{base}?api-version=2018-02-01&resource=https://vault.azure.net"),
        &[],
    )
    .await;
    assert_eq!(no_header.status, 400);
    assert_eq!(
        no_header.body["error_description"],
        "Required metadata header not specified"
    );
    let no_resource = get(
        &format!("{base}?api-version=2018-02-01"),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(no_resource.status, 400);
    let no_version = get(
        &format!("{base}?resource=https://vault.azure.net"),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(no_version.status, 400);
    let other = get(
        &format!("{base}?api-version=2018-02-01&resource=https://vault.azure.net&client_id=00000000-0000-0000-0000-000000000000"),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.body["error_description"], "Identity not found");
    let selected = get(
        &format!(
            "{base}?api-version=2018-02-01&resource=https://vault.azure.net&client_id={}",
            identity.client_id
        ),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(selected.status, 200, "{}", selected.text);
}

#[tokio::test]
async fn imds_without_identity_is_identity_not_found() {
    let entra = EntraEmulator::start().await.unwrap();
    let url = format!(
        "{}?api-version=2018-02-01&resource=https://vault.azure.net",
        entra.imds_endpoint()
    );
    let answer = get(&url, &[("Metadata", "true")]).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error_description"], "Identity not found");
}

#[tokio::test]
async fn app_service_requires_the_identity_header() {
    let (entra, identity) = emulator_with_identity().await;
    let url = format!(
        "{}?api-version=2019-08-01&resource=https://vault.azure.net",
        entra.identity_endpoint()
    );
    assert_eq!(get(&url, &[]).await.status, 400);
    assert_eq!(
        get(&url, &[("X-IDENTITY-HEADER", "wrong")]).await.status,
        401
    );
    let answer = get(&url, &[("X-IDENTITY-HEADER", &identity.identity_header)]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let old_version = format!(
        "{}?api-version=2017-09-01&resource=https://vault.azure.net",
        entra.identity_endpoint()
    );
    assert_eq!(
        get(
            &old_version,
            &[("X-IDENTITY-HEADER", &identity.identity_header)]
        )
        .await
        .status,
        400
    );
}

/// The documented `2019-08-01` answer: `access_token`, `expires_on` (Unix seconds as a string),
/// `resource`, `token_type`, `client_id`, and nothing else (no `expires_in`, unlike IMDS).
#[tokio::test]
async fn app_service_answers_its_documented_shape() {
    let (entra, identity) = emulator_with_identity().await;
    let url = format!(
        "{}?api-version=2019-08-01&resource=https://vault.azure.net",
        entra.identity_endpoint()
    );
    let before = testkit_now();
    let answer = get(&url, &[("X-IDENTITY-HEADER", &identity.identity_header)]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let mut keys: Vec<&str> = answer
        .body
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "client_id",
            "expires_on",
            "resource",
            "token_type"
        ],
        "{}",
        answer.text
    );
    let expires_on: u64 = answer.body["expires_on"]
        .as_str()
        .expect("expires_on is a string")
        .parse()
        .expect("of Unix seconds");
    assert!(
        (before + 3000..before + 3700).contains(&expires_on),
        "expires_on {expires_on} is about an hour after {before}"
    );
    assert_eq!(answer.body["client_id"], MI_CLIENT);
    assert_eq!(answer.body["resource"], "https://vault.azure.net");
    assert_eq!(answer.body["token_type"], "Bearer");
    let token = answer.body["access_token"].as_str().unwrap();
    entra
        .validate_bearer(token, "https://vault.azure.net")
        .expect("a token the emulator issued");

    // The EmptyAccessToken fault keeps each host's shape.
    entra.inject(Fault::EmptyAccessToken);
    let empty = get(&url, &[("X-IDENTITY-HEADER", &identity.identity_header)]).await;
    assert_eq!(empty.body["access_token"], "", "{}", empty.text);
    assert!(empty.body.get("expires_in").is_none(), "{}", empty.text);
}

fn testkit_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// IMDS and App Service take the bare resource URI; a v2 scope (`.../.default`) is refused.
#[tokio::test]
async fn imds_and_app_service_refuse_a_scope_as_resource() {
    let (entra, identity) = emulator_with_identity().await;
    let imds = get(
        &format!(
            "{}?api-version=2018-02-01&resource=https://vault.azure.net/.default",
            entra.imds_endpoint()
        ),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(imds.status, 400, "{}", imds.text);
    assert_eq!(imds.body["error"], "invalid_resource", "{}", imds.text);
    assert!(
        imds.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS500011"),
        "{}",
        imds.text
    );
    let app_service = get(
        &format!(
            "{}?api-version=2019-08-01&resource=https://vault.azure.net/.default",
            entra.identity_endpoint()
        ),
        &[("X-IDENTITY-HEADER", &identity.identity_header)],
    )
    .await;
    assert_eq!(app_service.status, 400, "{}", app_service.text);
    assert!(
        app_service.body["message"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS500011"),
        "{}",
        app_service.text
    );
    assert!(entra.issued_tokens().is_empty(), "no token was issued");
}

/// Arc: a challenge naming a new `.key` file in the agent's directory, then the token for
/// `Authorization: Basic <its content>`.
#[tokio::test]
async fn arc_agent_challenges_then_answers_the_key_file_secret() {
    let (entra, _) = emulator_with_identity().await;
    let dir = tempfile::tempdir().unwrap();
    entra.enable_arc_agent(ArcAgent::new(dir.path()));
    let url = format!(
        "{}?api-version=2019-11-01&resource=https://vault.azure.net",
        entra.arc_identity_endpoint()
    );
    let challenge = get(&url, &[("Metadata", "true")]).await;
    assert_eq!(challenge.status, 401, "{}", challenge.text);
    let header = challenge
        .headers
        .get("www-authenticate")
        .expect("a WWW-Authenticate challenge");
    let path = header
        .strip_prefix("Basic realm=")
        .unwrap_or_else(|| panic!("Basic realm=<path>: {header}"));
    let path = std::path::Path::new(path);
    assert_eq!(path.parent(), Some(dir.path()), "{header}");
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("key"));
    let secret = std::fs::read_to_string(path).unwrap();
    assert!(!secret.is_empty());

    let wrong = get(
        &url,
        &[("Metadata", "true"), ("Authorization", "Basic not-the-key")],
    )
    .await;
    assert_eq!(wrong.status, 401, "a wrong key is challenged again");
    assert!(wrong.headers.contains_key("www-authenticate"));

    let answer = get(
        &url,
        &[
            ("Metadata", "true"),
            ("Authorization", &format!("Basic {secret}")),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.body["expires_in"].is_string(), "IMDS's shape");
    let token = answer.body["access_token"].as_str().unwrap();
    let issued = entra
        .validate_bearer(token, "https://vault.azure.net")
        .unwrap();
    assert_eq!(issued.source, TokenSource::ManagedIdentity);
    assert_eq!(issued.client_id, MI_CLIENT);
}

#[tokio::test]
async fn arc_agent_rules() {
    let (entra, _) = emulator_with_identity().await;
    let base = entra.arc_identity_endpoint();
    let off = get(
        &format!("{base}?api-version=2019-11-01&resource=https://vault.azure.net"),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(off.status, 404, "off until enabled: {}", off.text);
    let dir = tempfile::tempdir().unwrap();
    entra.enable_arc_agent(ArcAgent::new(dir.path()));
    let refused = [
        (
            "no Metadata header",
            format!("{base}?api-version=2019-11-01&resource=https://vault.azure.net"),
            vec![],
        ),
        (
            "an api-version the agent does not serve",
            format!("{base}?api-version=2018-02-01&resource=https://vault.azure.net"),
            vec![("Metadata", "true")],
        ),
        (
            "a scope as resource",
            format!("{base}?api-version=2019-11-01&resource=https://vault.azure.net/.default"),
            vec![("Metadata", "true")],
        ),
        (
            "a user-assigned identity",
            format!(
                "{base}?api-version=2019-11-01&resource=https://vault.azure.net&client_id={MI_CLIENT}"
            ),
            vec![("Metadata", "true")],
        ),
    ];
    for (what, url, headers) in refused {
        let answer = get(&url, &headers).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.text);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no key file is written for a refused request"
    );
    let newer = get(
        &format!("{base}?api-version=2020-06-01&resource=https://vault.azure.net"),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(
        newer.status, 401,
        "2020-06-01 (azure-identity Python) is served"
    );
}

#[tokio::test]
async fn faults_apply_to_managed_identity_too() {
    let (entra, _) = emulator_with_identity().await;
    entra.inject(Fault::TooManyRequests {
        retry_after_secs: Some(2),
    });
    let url = format!(
        "{}?api-version=2018-02-01&resource=https://vault.azure.net",
        entra.imds_endpoint()
    );
    let answer = get(&url, &[("Metadata", "true")]).await;
    assert_eq!(answer.status, 429);
    assert_eq!(
        answer.headers.get("retry-after").map(String::as_str),
        Some("2")
    );
    assert_eq!(get(&url, &[("Metadata", "true")]).await.status, 200);
    entra.inject(Fault::EmptyAccessToken);
    let empty = get(&url, &[("Metadata", "true")]).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["access_token"], "", "{}", empty.text);
    assert!(
        empty.body["expires_on"].is_string(),
        "managed identity shape: {}",
        empty.text
    );
    assert_eq!(entra.requests().len(), 3);
    assert_eq!(
        entra.token_request_count(),
        0,
        "IMDS calls are not token endpoint calls"
    );
}

#[tokio::test]
async fn github_token_is_accepted_as_federated_credential() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.enable_github_oidc(GithubOidc::new(REPO_SUBJECT, "request-token-value"));
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID).with_federated_credential(
            FederatedCredential::new(GITHUB_ACTIONS_ISSUER, REPO_SUBJECT),
        ),
    );
    let url = format!(
        "{}&audience=api%3A%2F%2FAzureADTokenExchange",
        entra.github_oidc_request_url()
    );
    let refused = get(&url, &[("Authorization", "bearer wrong")]).await;
    assert_eq!(refused.status, 401);
    let answer = get(&url, &[("Authorization", "bearer request-token-value")]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let github_jwt = answer.body["value"].as_str().unwrap();
    assert_eq!(entra.github_issuer().issuer(), GITHUB_ACTIONS_ISSUER);

    let token = post_assertion(
        &reqwest::Client::new(),
        &entra.token_url(TENANT),
        CLIENT_ID,
        github_jwt,
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.text);
    assert_eq!(entra.issued_tokens()[0].source, TokenSource::Federated);

    let wrong_audience_url = format!(
        "{}&audience=api%3A%2F%2Fsomething",
        entra.github_oidc_request_url()
    );
    let other = get(
        &wrong_audience_url,
        &[("Authorization", "Bearer request-token-value")],
    )
    .await;
    let other_jwt = other.body["value"].as_str().unwrap();
    post_assertion(
        &reqwest::Client::new(),
        &entra.token_url(TENANT),
        CLIENT_ID,
        other_jwt,
    )
    .await
    .assert_entra_error(400, "invalid_client", 700212);
    assert!(FEDERATED_AUDIENCE.starts_with("api://"));
}

#[tokio::test]
async fn github_endpoint_is_off_until_enabled() {
    let entra = EntraEmulator::start().await.unwrap();
    let answer = get(
        &entra.github_oidc_request_url(),
        &[("Authorization", "bearer x")],
    )
    .await;
    assert_eq!(answer.status, 404);
}
