//! The Key Vault emulator over HTTPS: challenge authentication, bearer validation against the
//! Entra emulator, the secrets API (versions, attributes, PATCH, soft delete, recover, purge),
//! Key Vault's name and size rules, RBAC refusal, faults, and the test hooks.

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use testkit::{
    AppRegistration, EntraEmulator, Fault, KeyVaultEmulator, KeyVaultOptions, MAX_VALUE_BYTES,
};

use crate::support::*;

/// An Entra emulator, a vault sharing its CA, a client trusting that CA and a vault token.
pub struct Vault {
    pub entra: EntraEmulator,
    pub kv: KeyVaultEmulator,
    pub client: reqwest::Client,
    pub token: String,
}

impl Vault {
    /// The app is registered in the vault's tenant, and its token is for the vault's resource.
    pub async fn start(options: impl FnOnce(&EntraEmulator) -> KeyVaultOptions) -> Vault {
        let entra = EntraEmulator::start_tls().await.unwrap();
        let options = options(&entra);
        let tenant = options.tenant.clone();
        let scope = format!("{}/.default", options.resource);
        entra.register_app(AppRegistration::new(&tenant, CLIENT_ID).with_secret(SECRET));
        let kv = KeyVaultEmulator::start(entra.token_validator(), options)
            .await
            .unwrap();
        // The vault may have its own CA: trust both.
        let cas = [kv.ca_pem(), entra.ca_pem().unwrap()]
            .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        let client = reqwest::Client::builder()
            .tls_certs_only(cas)
            .build()
            .unwrap();
        let token = token_for(&client, &entra, &tenant, &scope).await;
        Vault {
            entra,
            kv,
            client,
            token,
        }
    }

    pub async fn new() -> Vault {
        Vault::start(|entra| KeyVaultOptions::for_entra(entra, TENANT)).await
    }

    /// Sends `method path?api-version=2025-07-01` with an optional JSON body, with or without the token.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> Answer {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{path}{separator}api-version=2025-07-01",
            self.kv.vault_url()
        );
        self.send_url(method, &url, body, auth).await
    }

    pub async fn send_url(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
        auth: bool,
    ) -> Answer {
        let mut request = self.client.request(method, url);
        if auth {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Answer::from(request.send().await.expect("the vault answers")).await
    }
}

/// A client-secret token for CLIENT_ID in `tenant` for `scope` (the app must be registered there).
async fn token_for(
    client: &reqwest::Client,
    entra: &EntraEmulator,
    tenant: &str,
    scope: &str,
) -> String {
    let answer = post_form(
        client,
        &entra.token_url(tenant),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "token for {scope}: {}", answer.text);
    answer.body["access_token"].as_str().unwrap().to_owned()
}

use reqwest::Method;

fn assert_kv_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.text);
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn missing_token_gets_the_challenge() {
    let vault = Vault::new().await;
    let answer = vault
        .send(Method::PUT, "/secrets/graph-token", None, false)
        .await;
    assert_kv_error(&answer, 401, "Unauthorized");
    assert_eq!(
        answer.headers.get("www-authenticate").map(String::as_str),
        Some(
            format!(
                "Bearer authorization=\"{}/{TENANT}\", resource=\"https://vault.azure.net\"",
                vault.entra.base_url()
            )
            .as_str()
        )
    );
    let requests = vault.kv.requests();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].authorized);
    assert_eq!(requests[0].status, Some(401));
}

#[tokio::test]
async fn default_challenge_names_login_windows_net() {
    let vault = Vault::start(|_| KeyVaultOptions::new(TENANT)).await;
    let answer = vault.send(Method::GET, "/secrets/x", None, false).await;
    assert_eq!(
        answer.headers.get("www-authenticate").map(String::as_str),
        Some(format!("Bearer authorization=\"https://login.windows.net/{TENANT}\", resource=\"https://vault.azure.net\"").as_str())
    );
}

#[tokio::test]
async fn refused_tokens_get_401() {
    let vault = Vault::new().await;
    let mut request = vault.client.get(format!(
        "{}/secrets/x?api-version=7.4",
        vault.kv.vault_url()
    ));
    request = request.bearer_auth("not-a-token-the-emulator-issued");
    let answer = Answer::from(request.send().await.unwrap()).await;
    assert_kv_error(&answer, 401, "Unauthorized");
    assert!(answer.headers.contains_key("www-authenticate"));
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Token validation failed: "),
        "{}",
        answer.text
    );

    // A token for another resource is refused too.
    let graph_token = &token_for(
        &vault.client,
        &vault.entra,
        TENANT,
        "https://graph.microsoft.com/.default",
    )
    .await;
    let answer = Answer::from(
        vault
            .client
            .get(format!(
                "{}/secrets/x?api-version=7.4",
                vault.kv.vault_url()
            ))
            .bearer_auth(graph_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_kv_error(&answer, 401, "Unauthorized");
    assert_eq!(
        answer.body["error"]["message"],
        "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://graph.microsoft.com.",
        "{}",
        answer.text
    );

    vault.entra.expire_issued_tokens();
    let expired = vault.send(Method::GET, "/secrets/x", None, true).await;
    assert_kv_error(&expired, 401, "Unauthorized");
    assert_eq!(
        expired.body["error"]["message"],
        "Token validation failed: the token has expired."
    );
}

#[tokio::test]
async fn a_token_of_another_tenant_is_an_invalid_issuer() {
    const OTHER: &str = "0f0e0d0c-0b0a-0908-0706-050403020100";
    let vault = Vault::new().await;
    vault
        .entra
        .register_app(AppRegistration::new(OTHER, CLIENT_ID).with_secret(SECRET));
    let foreign = token_for(&vault.client, &vault.entra, OTHER, VAULT_SCOPE).await;
    let answer = Answer::from(
        vault
            .client
            .get(format!(
                "{}/secrets/x?api-version=2025-07-01",
                vault.kv.vault_url()
            ))
            .bearer_auth(&foreign)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_kv_error(&answer, 401, "Unauthorized");
    assert_eq!(
        answer.body["error"]["message"],
        format!(
            "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{TENANT}/, found https://sts.windows.net/{OTHER}/."
        ),
        "{}",
        answer.text
    );
    assert!(answer.headers.contains_key("www-authenticate"));
    // The vault's own tenant is accepted, whatever the case of its name.
    let upper =
        Vault::start(|entra| KeyVaultOptions::for_entra(entra, TENANT.to_uppercase())).await;
    assert_eq!(
        upper
            .send(Method::GET, "/secrets/x", None, true)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn an_unknown_api_version_is_a_bad_parameter() {
    let vault = Vault::new().await;
    for version in ["7.9", "2025-07-02", "latest", "7.3-preview"] {
        let answer = vault
            .send_url(
                Method::GET,
                &format!("{}/secrets/x?api-version={version}", vault.kv.vault_url()),
                None,
                true,
            )
            .await;
        assert_kv_error(&answer, 400, "BadParameter");
        assert_eq!(
            answer.body["error"]["message"],
            format!(
                "The specified version ({version}) is not recognized. Consider using the latest supported version (2025-07-01)."
            )
        );
    }
    for version in testkit::API_VERSIONS {
        let answer = vault
            .send_url(
                Method::GET,
                &format!("{}/secrets/x?api-version={version}", vault.kv.vault_url()),
                None,
                true,
            )
            .await;
        assert_kv_error(&answer, 404, "SecretNotFound");
    }
}

#[tokio::test]
async fn a_vault_of_another_cloud_wants_that_clouds_resource() {
    for resource in [
        testkit::KEY_VAULT_RESOURCE_US_GOVERNMENT,
        testkit::KEY_VAULT_RESOURCE_CHINA,
    ] {
        let vault =
            Vault::start(|entra| KeyVaultOptions::for_entra(entra, TENANT).with_resource(resource))
                .await;
        let challenge = vault.send(Method::GET, "/secrets/x", None, false).await;
        assert_eq!(
            challenge
                .headers
                .get("www-authenticate")
                .map(String::as_str),
            Some(
                format!(
                    "Bearer authorization=\"{}/{TENANT}\", resource=\"{resource}\"",
                    vault.entra.base_url()
                )
                .as_str()
            )
        );
        // The vault's token (for its cloud's resource) works.
        assert_eq!(
            vault
                .send(Method::GET, "/secrets/x", None, true)
                .await
                .status,
            404
        );
        // A public-cloud Key Vault token does not.
        let public = token_for(&vault.client, &vault.entra, TENANT, VAULT_SCOPE).await;
        let answer = Answer::from(
            vault
                .client
                .get(format!(
                    "{}/secrets/x?api-version=2025-07-01",
                    vault.kv.vault_url()
                ))
                .bearer_auth(&public)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_kv_error(&answer, 401, "Unauthorized");
        assert_eq!(
            answer.body["error"]["message"],
            format!(
                "AKV10022: Invalid audience. Expected {resource}, found: https://vault.azure.net."
            )
        );
    }
}

#[tokio::test]
async fn set_get_versions_and_attributes() {
    let vault = Vault::new().await;
    let body = json!({
        "value": "token-value-1",
        "contentType": "application/jwt",
        "attributes": {"enabled": true, "exp": 32503680000i64, "nbf": 1700000000},
        "tags": {"managed-by": "secret-sync"}
    });
    let first = vault
        .send(Method::PUT, "/secrets/Graph-Token", Some(body), true)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["value"], "token-value-1");
    assert_eq!(first.body["contentType"], "application/jwt");
    assert_eq!(first.body["tags"]["managed-by"], "secret-sync");
    let attributes = &first.body["attributes"];
    assert_eq!(attributes["exp"], 32503680000i64);
    assert_eq!(attributes["nbf"], 1700000000);
    assert_eq!(attributes["enabled"], true);
    assert_eq!(
        attributes["recoveryLevel"],
        "CustomizedRecoverable+Purgeable"
    );
    assert_eq!(attributes["recoverableDays"], 7);
    assert!(attributes["created"].is_i64() && attributes["updated"].is_i64());
    let id = first.body["id"].as_str().unwrap();
    let version = id.rsplit('/').next().unwrap();
    assert_eq!(version.len(), 32);
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        id,
        format!("{}/secrets/Graph-Token/{version}", vault.kv.vault_url())
    );

    let second = vault
        .send(
            Method::PUT,
            "/secrets/graph-token",
            Some(json!({"value": "token-value-2"})),
            true,
        )
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(vault.kv.version_count("graph-token"), 2);
    assert!(
        second.body.get("contentType").is_none(),
        "each PUT is a whole new version"
    );

    let latest = vault
        .send(Method::GET, "/secrets/graph-token/", None, true)
        .await;
    assert_eq!(latest.body["value"], "token-value-2");
    let old = vault
        .send(
            Method::GET,
            &format!("/secrets/graph-token/{version}"),
            None,
            true,
        )
        .await;
    assert_eq!(old.body["value"], "token-value-1");
    let versions = vault
        .send(Method::GET, "/secrets/graph-token/versions", None, true)
        .await;
    assert_eq!(versions.body["value"].as_array().unwrap().len(), 2);
    assert!(versions.body["value"][0].get("value").is_none());
    let list = vault.send(Method::GET, "/secrets", None, true).await;
    assert_eq!(
        list.body["value"][0]["id"],
        format!("{}/secrets/Graph-Token", vault.kv.vault_url())
    );

    let stored = vault.kv.secret("GRAPH-TOKEN").unwrap();
    assert_eq!(stored.value.expose_secret(), "token-value-2");
    let printed = format!("{stored:?} {:?} {:?}", vault.kv, vault.kv.requests());
    assert!(
        !printed.contains("token-value-"),
        "a value leaked: {printed}"
    );
}

#[tokio::test]
async fn patch_changes_attributes_only() {
    let vault = Vault::new().await;
    vault
        .send(
            Method::PUT,
            "/secrets/s1",
            Some(json!({"value": "v"})),
            true,
        )
        .await;
    let patched = vault
        .send(
            Method::PATCH,
            "/secrets/s1/",
            Some(json!({"attributes": {"exp": 32503680000i64}, "contentType": "text/plain", "tags": {"a": "b"}})),
            true,
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert!(patched.body.get("value").is_none());
    assert_eq!(patched.body["attributes"]["exp"], 32503680000i64);
    let stored = vault.kv.secret("s1").unwrap();
    assert_eq!(stored.expires, Some(32503680000));
    assert_eq!(stored.content_type.as_deref(), Some("text/plain"));
    assert_eq!(stored.tags["a"], "b");
    assert_eq!(stored.version_count, 1);
    assert_eq!(stored.value.expose_secret(), "v");
}

#[tokio::test]
async fn not_found_disabled_and_rules() {
    let vault = Vault::new().await;
    assert_kv_error(
        &vault
            .send(Method::GET, "/secrets/nothing-here", None, true)
            .await,
        404,
        "SecretNotFound",
    );
    assert_kv_error(
        &vault
            .send(
                Method::PUT,
                "/secrets/bad_name",
                Some(json!({"value": "v"})),
                true,
            )
            .await,
        400,
        "BadParameter",
    );
    let long_name = "a".repeat(128);
    assert_kv_error(
        &vault
            .send(
                Method::PUT,
                &format!("/secrets/{long_name}"),
                Some(json!({"value": "v"})),
                true,
            )
            .await,
        400,
        "BadParameter",
    );
    let too_big = "x".repeat(MAX_VALUE_BYTES + 1);
    assert_kv_error(
        &vault
            .send(
                Method::PUT,
                "/secrets/big",
                Some(json!({"value": too_big})),
                true,
            )
            .await,
        400,
        "BadParameter",
    );
    let just_fits = "x".repeat(MAX_VALUE_BYTES);
    assert_eq!(
        vault
            .send(
                Method::PUT,
                "/secrets/big",
                Some(json!({"value": just_fits})),
                true
            )
            .await
            .status,
        200
    );
    let tags: serde_json::Map<String, Value> =
        (0..16).map(|i| (format!("t{i}"), json!("v"))).collect();
    assert_kv_error(
        &vault
            .send(
                Method::PUT,
                "/secrets/tags",
                Some(json!({"value": "v", "tags": tags})),
                true,
            )
            .await,
        400,
        "BadParameter",
    );
    assert_kv_error(
        &vault
            .send(Method::PUT, "/secrets/novalue", Some(json!({})), true)
            .await,
        400,
        "BadParameter",
    );
    let no_version = vault
        .send_url(
            Method::GET,
            &format!("{}/secrets/big", vault.kv.vault_url()),
            None,
            true,
        )
        .await;
    assert_kv_error(&no_version, 400, "BadParameter");

    vault
        .send(
            Method::PUT,
            "/secrets/off",
            Some(json!({"value": "v", "attributes": {"enabled": false}})),
            true,
        )
        .await;
    let disabled = vault.send(Method::GET, "/secrets/off", None, true).await;
    assert_kv_error(&disabled, 403, "Forbidden");
    assert_eq!(
        disabled.body["error"]["innererror"]["code"],
        "SecretDisabled"
    );
}

#[tokio::test]
async fn soft_delete_recover_and_purge() {
    let vault = Vault::new().await;
    vault
        .send(
            Method::PUT,
            "/secrets/gone",
            Some(json!({"value": "v"})),
            true,
        )
        .await;
    let deleted = vault
        .send(Method::DELETE, "/secrets/gone", None, true)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(
        deleted.body["recoveryId"],
        format!("{}/deletedsecrets/gone", vault.kv.vault_url())
    );
    assert!(deleted.body["deletedDate"].is_i64() && deleted.body["scheduledPurgeDate"].is_i64());
    assert_kv_error(
        &vault.send(Method::GET, "/secrets/gone", None, true).await,
        404,
        "SecretNotFound",
    );
    let conflict = vault
        .send(
            Method::PUT,
            "/secrets/gone",
            Some(json!({"value": "again"})),
            true,
        )
        .await;
    assert_kv_error(&conflict, 409, "Conflict");
    assert_eq!(
        conflict.body["error"]["innererror"]["code"],
        "ObjectIsDeletedButRecoverable"
    );
    assert_eq!(
        vault
            .send(Method::GET, "/deletedsecrets/gone", None, true)
            .await
            .status,
        200
    );

    let recovered = vault
        .send(Method::POST, "/deletedsecrets/gone/recover", None, true)
        .await;
    assert_eq!(recovered.status, 200, "{}", recovered.text);
    // Recovery is asynchronous: for a while the secret is neither readable nor writable.
    assert!(vault.kv.secret("gone").unwrap().recovering);
    assert_kv_error(
        &vault.send(Method::GET, "/secrets/gone", None, true).await,
        404,
        "SecretNotFound",
    );
    assert_kv_error(
        &vault
            .send(Method::GET, "/deletedsecrets/gone", None, true)
            .await,
        404,
        "SecretNotFound",
    );
    let busy = vault
        .send(
            Method::PUT,
            "/secrets/gone",
            Some(json!({"value": "too-early"})),
            true,
        )
        .await;
    assert_kv_error(&busy, 409, "Conflict");
    assert_eq!(
        busy.body["error"]["innererror"]["code"],
        "ObjectIsBeingRecovered"
    );
    tokio::time::sleep(testkit::DEFAULT_RECOVERY_DELAY).await;
    assert!(!vault.kv.secret("gone").unwrap().recovering);
    assert_eq!(
        vault
            .send(Method::GET, "/secrets/gone", None, true)
            .await
            .body["value"],
        "v"
    );
    assert_eq!(
        vault.kv.version_count("gone"),
        1,
        "the early PUT wrote nothing"
    );

    assert!(vault.kv.soft_delete("gone"));
    assert!(vault.kv.secret("gone").unwrap().deleted);
    let purged = vault
        .send(Method::DELETE, "/deletedsecrets/gone", None, true)
        .await;
    assert_eq!(purged.status, 204);
    assert!(vault.kv.secret("gone").is_none());
    assert_eq!(
        vault
            .send(
                Method::PUT,
                "/secrets/gone",
                Some(json!({"value": "new"})),
                true
            )
            .await
            .status,
        200
    );
    assert_kv_error(
        &vault
            .send(Method::POST, "/deletedsecrets/gone/recover", None, true)
            .await,
        404,
        "SecretNotFound",
    );
}

#[tokio::test]
async fn denied_client_gets_forbidden_by_rbac() {
    let vault = Vault::new().await;
    vault.kv.deny_client(CLIENT_ID);
    let answer = vault.send(Method::GET, "/secrets/x", None, true).await;
    assert_kv_error(&answer, 403, "Forbidden");
    assert_eq!(
        answer.body["error"]["innererror"]["code"],
        "ForbiddenByRbac"
    );
}

#[tokio::test]
async fn faults_hit_authenticated_requests() {
    let vault = Vault::new().await;
    vault.kv.inject(Fault::TooManyRequests {
        retry_after_secs: Some(1),
    });
    vault.kv.inject(Fault::ServerError { status: 503 });
    // The challenge does not consume a fault.
    assert_eq!(
        vault
            .send(Method::GET, "/secrets/x", None, false)
            .await
            .status,
        401
    );
    let throttled = vault.send(Method::GET, "/secrets/x", None, true).await;
    assert_kv_error(&throttled, 429, "Throttled");
    assert_eq!(
        throttled.headers.get("retry-after").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        vault
            .send(Method::GET, "/secrets/x", None, true)
            .await
            .status,
        503
    );
    assert_eq!(
        vault
            .send(Method::GET, "/secrets/x", None, true)
            .await
            .status,
        404
    );
    let statuses: Vec<_> = vault
        .kv
        .requests()
        .iter()
        .map(|r| (r.authorized, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (false, Some(401)),
            (true, Some(429)),
            (true, Some(503)),
            (true, Some(404))
        ]
    );
}

#[tokio::test]
async fn set_secret_hook_writes_a_version() {
    let vault = Vault::new().await;
    vault.kv.set_secret("unmanaged", "hand-made").unwrap();
    assert_eq!(
        vault
            .send(Method::GET, "/secrets/unmanaged", None, true)
            .await
            .body["value"],
        "hand-made"
    );
    assert!(vault.kv.set_secret("bad name", "x").is_err());
    assert_eq!(vault.kv.version_count("missing"), 0);
}
