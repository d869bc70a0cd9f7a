//! The Microsoft Graph emulator (app credentials) over real HTTP: each route's success shape,
//! `$select`, the bearer-token and permission rules, policy and limits, faults, and what the
//! token endpoint makes of added, removed and expired passwords.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    AppPolicy, AppRegistration, EntraEmulator, Fault, GraphCall, ManagedIdentity, Password,
    TestCertificate,
};
use time::OffsetDateTime;

use crate::support::{Answer, CLIENT_ID, SECRET, TENANT, VAULT_SCOPE, post_secret};

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const OBJECT_ID: &str = "0d5b4a3e-8c37-4a7e-9a1e-2f1f6b1c0a01";
const KEY_ID: &str = "7f0e1c2d-3b4a-4c5d-8e6f-112233445566";
const OWNED_BY: &str = "Application.ReadWrite.OwnedBy";

/// An emulator with CLIENT_ID (secret SECRET, object id OBJECT_ID, `roles`), owner of itself.
async fn emulator_with(roles: &[&str]) -> EntraEmulator {
    let entra = EntraEmulator::start().await.expect("emulator starts");
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_object_id(OBJECT_ID)
            .with_password(
                Password::new(SECRET)
                    .key_id(KEY_ID)
                    .display_name("first secret"),
            )
            .with_graph_roles(roles),
    );
    entra.add_owner(CLIENT_ID, CLIENT_ID);
    entra
}

/// A Graph token for `client_id` with `secret`, asserting the token endpoint grants it.
async fn token_for(entra: &EntraEmulator, client_id: &str, secret: &str, scope: &str) -> String {
    let answer = post_secret(entra, TENANT, client_id, secret, scope).await;
    assert_eq!(answer.status, 200, "token granted: {}", answer.text);
    answer.body["access_token"].as_str().unwrap().to_owned()
}

async fn graph_token(entra: &EntraEmulator) -> String {
    token_for(entra, CLIENT_ID, SECRET, GRAPH_SCOPE).await
}

fn url(entra: &EntraEmulator, path: &str) -> String {
    format!("{}/v1.0/{path}", entra.graph_endpoint())
}

async fn get(entra: &EntraEmulator, token: &str, path: &str) -> Answer {
    let response = reqwest::Client::new()
        .get(url(entra, path))
        .bearer_auth(token)
        .send()
        .await
        .expect("the emulator answers");
    Answer::from(response).await
}

async fn post(entra: &EntraEmulator, token: &str, path: &str, body: &Value) -> Answer {
    let response = reqwest::Client::new()
        .post(url(entra, path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the emulator answers");
    Answer::from(response).await
}

async fn add_password(entra: &EntraEmulator, token: &str, credential: Value) -> Answer {
    post(
        entra,
        token,
        &format!("applications/{OBJECT_ID}/addPassword"),
        &json!({ "passwordCredential": credential }),
    )
    .await
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn parse_time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        value.as_str().expect("a time string"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("an RFC 3339 time")
}

/// Asserts Graph's error shape with this status, code and (when given) message.
fn assert_graph_error(answer: &Answer, status: u16, code: &str, message: Option<&str>) {
    assert_eq!(answer.status, status, "status; body: {}", answer.text);
    assert_eq!(
        answer.body["error"]["code"], code,
        "code; body: {}",
        answer.text
    );
    if let Some(message) = message {
        assert_eq!(answer.body["error"]["message"], message, "{}", answer.text);
    }
    let inner = &answer.body["error"]["innerError"];
    let request_id = answer.headers.get("request-id").expect("request-id header");
    assert_eq!(inner["request-id"], request_id.as_str(), "{}", answer.text);
    assert!(inner["client-request-id"].is_string(), "{}", answer.text);
    let date = inner["date"].as_str().expect("innerError.date");
    assert_eq!(
        date.len(),
        "2022-03-17T16:05:41".len(),
        "date format: {date}"
    );
}

#[tokio::test]
async fn read_by_app_id_honours_select_and_returns_key_only_when_selected() {
    let entra = EntraEmulator::start().await.unwrap();
    let certificate = TestCertificate::generate("graph-read").unwrap();
    let cert_end = OffsetDateTime::now_utc() + Duration::from_secs(10 * 24 * 3600);
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_object_id(OBJECT_ID)
            .with_display_name("payments")
            .with_password(Password::new(SECRET).key_id(KEY_ID).display_name("first"))
            .with_certificate_expiring(&certificate, cert_end)
            .with_graph_roles(&["Application.Read.All"]),
    );
    let token = graph_token(&entra).await;

    let select = "$select=id,appId,displayName,passwordCredentials,keyCredentials";
    let answer = get(
        &entra,
        &token,
        &format!("applications(appId='{CLIENT_ID}')?{select}"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.headers.contains_key("request-id"));
    let body = answer.body.as_object().unwrap();
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "@odata.context",
            "appId",
            "displayName",
            "id",
            "keyCredentials",
            "passwordCredentials"
        ]
    );
    assert_eq!(body["id"], OBJECT_ID);
    assert_eq!(body["appId"], CLIENT_ID);
    assert_eq!(body["displayName"], "payments");
    let password = &body["passwordCredentials"][0];
    assert_eq!(password["keyId"], KEY_ID);
    assert_eq!(password["displayName"], "first");
    assert_eq!(password["hint"], &SECRET[..3]);
    assert_eq!(password["secretText"], Value::Null);
    assert_eq!(password["customKeyIdentifier"], Value::Null);
    assert!(parse_time(&password["endDateTime"]) > OffsetDateTime::now_utc());
    let key = &body["keyCredentials"][0];
    assert_eq!(key["type"], "AsymmetricX509Cert");
    assert_eq!(key["usage"], "Verify");
    use base64::Engine;
    let thumbprint = base64::engine::general_purpose::STANDARD
        .encode(<sha1::Sha1 as sha1::Digest>::digest(certificate.cert_der()));
    assert_eq!(key["customKeyIdentifier"], thumbprint.as_str());
    assert_eq!(
        parse_time(&key["endDateTime"]).unix_timestamp(),
        cert_end.unix_timestamp()
    );
    assert!(key["key"].is_string(), "key returned when selected");
    assert_eq!(entra.key_credential_selects(), 1);

    // Without $select: the default properties, `key` null, and not counted.
    let answer = get(&entra, &token, &format!("applications/{OBJECT_ID}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["appId"], CLIENT_ID);
    assert_eq!(answer.body["keyCredentials"][0]["key"], Value::Null);
    assert!(answer.body["keyCredentials"][0]["keyId"].is_string());
    assert_eq!(entra.key_credential_selects(), 1);

    // Only what is selected.
    let answer = get(
        &entra,
        &token,
        &format!("applications(appId='{CLIENT_ID}')?$select=id,passwordCredentials"),
    )
    .await;
    let mut keys: Vec<&str> = answer
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["@odata.context", "id", "passwordCredentials"]);

    let unknown = get(
        &entra,
        &token,
        &format!("applications/{OBJECT_ID}?$select=id,nonsense"),
    )
    .await;
    assert_graph_error(&unknown, 400, "BadRequest", None);
}

#[tokio::test]
async fn client_request_id_is_echoed_and_every_answer_has_a_request_id() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let token = graph_token(&entra).await;
    let client_request_id = "6f1c2b3a-0000-4000-8000-00000000abcd";
    let response = reqwest::Client::new()
        .get(url(&entra, &format!("applications/{OBJECT_ID}")))
        .bearer_auth(&token)
        .header("client-request-id", client_request_id)
        .send()
        .await
        .unwrap();
    let answer = Answer::from(response).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["client-request-id"], client_request_id);
    uuid::Uuid::parse_str(&answer.headers["request-id"]).expect("request-id is a GUID");
}

#[tokio::test]
async fn add_password_answers_the_new_credential_and_the_token_endpoint_accepts_it() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let token = graph_token(&entra).await;
    let end = OffsetDateTime::now_utc() + Duration::from_secs(180 * 24 * 3600);
    let answer = add_password(
        &entra,
        &token,
        json!({"displayName": "secret-sync job1", "endDateTime": rfc3339(end)}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.headers.contains_key("request-id"));
    let body = &answer.body;
    let secret = body["secretText"].as_str().expect("secretText").to_owned();
    assert_eq!(secret.len(), 40, "{secret}");
    assert!(secret.contains('~'), "{secret}");
    assert_eq!(body["hint"], &secret[..3]);
    assert_eq!(body["displayName"], "secret-sync job1");
    assert_eq!(body["customKeyIdentifier"], Value::Null);
    let key_id = body["keyId"].as_str().unwrap();
    uuid::Uuid::parse_str(key_id).expect("keyId is a GUID");
    assert_eq!(
        parse_time(&body["endDateTime"]).unix_timestamp(),
        end.unix_timestamp()
    );
    let start = parse_time(&body["startDateTime"]);
    assert!((OffsetDateTime::now_utc() - start).whole_seconds().abs() < 60);

    // Also by appId; the snapshot and Graph both list it, Graph without its secret.
    let app = entra.application(CLIENT_ID).expect("snapshot");
    assert_eq!(app.object_id, OBJECT_ID);
    let added = app.passwords.iter().find(|p| p.key_id == key_id).unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(added.secret.expose_secret(), secret);
    assert_eq!(added.display_name.as_deref(), Some("secret-sync job1"));
    assert!(added.added_at.is_some());
    assert!(!format!("{app:?}").contains(&secret), "Debug redacts");
    let read = get(
        &entra,
        &token,
        &format!("applications(appId='{CLIENT_ID}')"),
    )
    .await;
    assert_eq!(
        read.body["passwordCredentials"].as_array().unwrap().len(),
        2
    );
    assert!(!read.text.contains(&secret));

    // No propagation delay by default: the new secret works at once, the old one still does.
    token_for(&entra, CLIENT_ID, &secret, VAULT_SCOPE).await;
    token_for(&entra, CLIENT_ID, SECRET, VAULT_SCOPE).await;

    // The appId addressing adds too, with Graph's two-year default.
    let answer = post(
        &entra,
        &token,
        &format!("applications(appId='{CLIENT_ID}')/addPassword"),
        &json!({"passwordCredential": {}}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let lifetime =
        parse_time(&answer.body["endDateTime"]) - parse_time(&answer.body["startDateTime"]);
    assert_eq!(lifetime.whole_days(), 730);
    assert_eq!(answer.body["displayName"], Value::Null);
}

#[tokio::test]
async fn add_password_needs_a_json_content_type() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let token = graph_token(&entra).await;
    let response = reqwest::Client::new()
        .post(url(
            &entra,
            &format!("applications/{OBJECT_ID}/addPassword"),
        ))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(r#"{"passwordCredential":{}}"#)
        .send()
        .await
        .unwrap();
    let answer = Answer::from(response).await;
    assert_graph_error(&answer, 415, "UnsupportedMediaType", None);
    assert_eq!(entra.application(CLIENT_ID).unwrap().passwords.len(), 1);
}

#[tokio::test]
async fn remove_password_answers_204_and_the_removed_secret_is_refused() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let token = graph_token(&entra).await;
    let added = add_password(&entra, &token, json!({"displayName": "new"})).await;
    let new_secret = added.body["secretText"].as_str().unwrap().to_owned();

    let answer = post(
        &entra,
        &token,
        &format!("applications/{OBJECT_ID}/removePassword"),
        &json!({"keyId": KEY_ID}),
    )
    .await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    assert!(answer.text.is_empty());
    assert!(answer.headers.contains_key("request-id"));
    let app = entra.application(CLIENT_ID).unwrap();
    assert!(app.passwords.iter().all(|p| p.key_id != KEY_ID));

    let refused = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    refused.assert_entra_error(401, "invalid_client", 7000215);
    token_for(&entra, CLIENT_ID, &new_secret, VAULT_SCOPE).await;

    // Removing it again: not found. By appId works the same.
    let again = post(
        &entra,
        &token,
        &format!("applications(appId='{CLIENT_ID}')/removePassword"),
        &json!({"keyId": KEY_ID}),
    )
    .await;
    assert_graph_error(&again, 404, "Request_ResourceNotFound", None);
    let malformed = post(
        &entra,
        &token,
        &format!("applications/{OBJECT_ID}/removePassword"),
        &json!({"keyId": "not-a-guid"}),
    )
    .await;
    assert_graph_error(&malformed, 400, "Request_BadRequest", None);
}

#[tokio::test]
async fn an_expired_password_is_refused_with_7000222_and_listed_by_graph() {
    let entra = EntraEmulator::start().await.unwrap();
    let ended = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_object_id(OBJECT_ID)
            .with_password(Password::new("old~secret").end(ended))
            .with_expired_secret("older~secret")
            .with_secret(SECRET)
            .with_graph_roles(&["Application.Read.All"]),
    );
    for expired in ["old~secret", "older~secret"] {
        let answer = post_secret(&entra, TENANT, CLIENT_ID, expired, VAULT_SCOPE).await;
        answer.assert_entra_error(401, "invalid_client", 7000222);
    }
    let token = graph_token(&entra).await;
    let read = get(&entra, &token, &format!("applications/{OBJECT_ID}")).await;
    let passwords = read.body["passwordCredentials"].as_array().unwrap();
    assert_eq!(passwords.len(), 3, "{}", read.text);
    assert!(parse_time(&passwords[0]["endDateTime"]) < OffsetDateTime::now_utc());
}

#[tokio::test]
async fn a_new_password_is_refused_until_the_propagation_delay_has_passed() {
    let entra = emulator_with(&[OWNED_BY]).await;
    entra.set_secret_propagation_delay(Duration::from_millis(1500));
    let token = graph_token(&entra).await;
    let added = add_password(&entra, &token, json!({})).await;
    assert_eq!(added.status, 200, "{}", added.text);
    let secret = added.body["secretText"].as_str().unwrap().to_owned();

    let early = post_secret(&entra, TENANT, CLIENT_ID, &secret, VAULT_SCOPE).await;
    early.assert_entra_error(401, "invalid_client", 7000215);
    // The registered secret is not delayed.
    token_for(&entra, CLIENT_ID, SECRET, VAULT_SCOPE).await;

    tokio::time::sleep(Duration::from_millis(1600)).await;
    token_for(&entra, CLIENT_ID, &secret, VAULT_SCOPE).await;
}

#[tokio::test]
async fn bearer_tokens_must_be_unexpired_graph_tokens_of_this_emulator() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let path = format!("applications/{OBJECT_ID}");

    let response = reqwest::Client::new()
        .get(url(&entra, &path))
        .send()
        .await
        .unwrap();
    let none = Answer::from(response).await;
    assert_graph_error(
        &none,
        401,
        "InvalidAuthenticationToken",
        Some("Access token is empty."),
    );

    let vault = token_for(&entra, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    let wrong = get(&entra, &vault, &path).await;
    assert_graph_error(
        &wrong,
        401,
        "InvalidAuthenticationToken",
        Some("Access token validation failure. Invalid audience."),
    );

    let unknown = get(&entra, "eyJ0eXAiOiJKV1QifQ.e30.c2ln", &path).await;
    assert_graph_error(&unknown, 401, "InvalidAuthenticationToken", None);

    let token = graph_token(&entra).await;
    assert_eq!(get(&entra, &token, &path).await.status, 200);
    entra.expire_issued_tokens();
    let expired = get(&entra, &token, &path).await;
    assert_graph_error(
        &expired,
        401,
        "InvalidAuthenticationToken",
        Some("Access token has expired or is not yet valid."),
    );
}

#[tokio::test]
async fn national_cloud_graph_tokens_work_and_one_cloud_can_be_required() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let path = format!("applications/{OBJECT_ID}");
    for scope in [
        "https://graph.microsoft.us/.default",
        "https://dod-graph.microsoft.us/.default",
        "https://microsoftgraph.chinacloudapi.cn/.default",
    ] {
        let token = token_for(&entra, CLIENT_ID, SECRET, scope).await;
        assert_eq!(get(&entra, &token, &path).await.status, 200, "{scope}");
    }
    entra.set_graph_resource("https://graph.microsoft.us");
    let public = graph_token(&entra).await;
    let refused = get(&entra, &public, &path).await;
    assert_graph_error(
        &refused,
        401,
        "InvalidAuthenticationToken",
        Some("Access token validation failure. Invalid audience."),
    );
    let us = token_for(
        &entra,
        CLIENT_ID,
        SECRET,
        "https://graph.microsoft.us/.default",
    )
    .await;
    assert_eq!(get(&entra, &us, &path).await.status, 200);
}

#[tokio::test]
async fn tokens_carry_the_callers_graph_roles_only_for_graph() {
    let entra = emulator_with(&[OWNED_BY, "Application.Read.All"]).await;
    graph_token(&entra).await;
    token_for(&entra, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    let issued = entra.issued_tokens();
    assert_eq!(issued[0].roles, [OWNED_BY, "Application.Read.All"]);
    assert!(issued[1].roles.is_empty());
    use base64::Engine;
    use secrecy::ExposeSecret;
    let claims = issued[0]
        .access_token
        .expose_secret()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["roles"], json!([OWNED_BY, "Application.Read.All"]));
}

#[tokio::test]
async fn owned_by_writes_need_ownership_read_write_all_does_not() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT_ID)
            .with_object_id(OBJECT_ID)
            .with_secret(SECRET)
            .with_graph_roles(&[OWNED_BY]),
    );
    entra.register_app(
        AppRegistration::new(TENANT, "admin-app")
            .with_secret("admin~secret")
            .with_graph_roles(&["Application.ReadWrite.All"]),
    );
    entra.register_app(AppRegistration::new(TENANT, "no-roles").with_secret("plain~secret"));
    let token = graph_token(&entra).await;

    // OwnedBy reads any app, but writes only to apps it owns.
    assert_eq!(
        get(&entra, &token, &format!("applications/{OBJECT_ID}"))
            .await
            .status,
        200
    );
    let denied = add_password(&entra, &token, json!({})).await;
    assert_graph_error(
        &denied,
        403,
        "Authorization_RequestDenied",
        Some("Insufficient privileges to complete the operation."),
    );
    let denied = post(
        &entra,
        &token,
        &format!("applications/{OBJECT_ID}/removePassword"),
        &json!({"keyId": KEY_ID}),
    )
    .await;
    assert_graph_error(&denied, 403, "Authorization_RequestDenied", None);
    entra.add_owner(CLIENT_ID, CLIENT_ID);
    assert_eq!(add_password(&entra, &token, json!({})).await.status, 200);
    assert_eq!(entra.application(CLIENT_ID).unwrap().owners, [CLIENT_ID]);

    // ReadWrite.All writes to any app without owning it.
    let admin = token_for(&entra, "admin-app", "admin~secret", GRAPH_SCOPE).await;
    assert_eq!(add_password(&entra, &admin, json!({})).await.status, 200);

    // No role at all: not even a read.
    let plain = token_for(&entra, "no-roles", "plain~secret", GRAPH_SCOPE).await;
    let refused = get(&entra, &plain, &format!("applications/{OBJECT_ID}")).await;
    assert_graph_error(&refused, 403, "Authorization_RequestDenied", None);
    // Read.All may not write.
    entra.register_app(
        AppRegistration::new(TENANT, "reader")
            .with_secret("reader~secret")
            .with_graph_roles(&["Application.Read.All"]),
    );
    entra.add_owner(CLIENT_ID, "reader");
    let reader = token_for(&entra, "reader", "reader~secret", GRAPH_SCOPE).await;
    let refused = add_password(&entra, &reader, json!({})).await;
    assert_graph_error(&refused, 403, "Authorization_RequestDenied", None);
}

#[tokio::test]
async fn a_managed_identity_with_graph_roles_manages_an_app() {
    let entra = emulator_with(&[]).await;
    entra.enable_managed_identity(
        ManagedIdentity::new(TENANT, "mi-client").with_graph_roles(&["Application.ReadWrite.All"]),
    );
    let response = reqwest::Client::new()
        .get(entra.imds_endpoint())
        .query(&[
            ("api-version", "2018-02-01"),
            ("resource", "https://graph.microsoft.com"),
        ])
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let answer = Answer::from(response).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let token = answer.body["access_token"].as_str().unwrap();
    assert_eq!(add_password(&entra, token, json!({})).await.status, 200);
}

#[tokio::test]
async fn an_unknown_app_is_404_and_another_tenants_app_is_invisible() {
    let entra = emulator_with(&["Application.ReadWrite.All"]).await;
    entra.register_app(
        AppRegistration::new("other-tenant", "elsewhere")
            .with_object_id("11111111-0000-4000-8000-000000000001"),
    );
    let token = graph_token(&entra).await;
    for path in [
        "applications(appId='no-such-app')".to_owned(),
        "applications/11111111-0000-4000-8000-000000000001".to_owned(),
        "applications(appId='elsewhere')".to_owned(),
    ] {
        let answer = get(&entra, &token, &path).await;
        assert_graph_error(&answer, 404, "Request_ResourceNotFound", None);
    }
    let answer = post(
        &entra,
        &token,
        "applications(appId='no-such-app')/addPassword",
        &json!({}),
    )
    .await;
    assert_graph_error(&answer, 404, "Request_ResourceNotFound", None);
    let answer = get(&entra, &token, "applications/not-a-guid").await;
    assert_graph_error(&answer, 400, "Request_BadRequest", None);
}

#[tokio::test]
async fn patching_password_credentials_is_refused() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let token = graph_token(&entra).await;
    let response = reqwest::Client::new()
        .patch(url(&entra, &format!("applications/{OBJECT_ID}")))
        .bearer_auth(&token)
        .json(&json!({"passwordCredentials": [{"displayName": "x"}]}))
        .send()
        .await
        .unwrap();
    let answer = Answer::from(response).await;
    assert_graph_error(
        &answer,
        400,
        "Request_BadRequest",
        Some("New password credentials must be generated with service actions."),
    );
    assert_eq!(entra.application(CLIENT_ID).unwrap().passwords.len(), 1);
}

#[tokio::test]
async fn the_app_management_policy_refuses_long_lifetimes_and_passwords() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let token = graph_token(&entra).await;
    entra.set_app_policy(AppPolicy {
        max_password_lifetime: Some(Duration::from_secs(30 * 24 * 3600)),
        passwords_allowed: true,
    });
    let now = OffsetDateTime::now_utc();
    let long = add_password(
        &entra,
        &token,
        json!({"endDateTime": rfc3339(now + Duration::from_secs(180 * 24 * 3600))}),
    )
    .await;
    assert_graph_error(&long, 400, "CredentialInvalidLifetimeAsPerAppPolicy", None);
    // Graph's two-year default is refused too.
    let default = add_password(&entra, &token, json!({})).await;
    assert_graph_error(
        &default,
        400,
        "CredentialInvalidLifetimeAsPerAppPolicy",
        None,
    );
    let short = add_password(
        &entra,
        &token,
        json!({"endDateTime": rfc3339(now + Duration::from_secs(20 * 24 * 3600))}),
    )
    .await;
    assert_eq!(short.status, 200, "{}", short.text);

    entra.set_app_policy(AppPolicy {
        max_password_lifetime: None,
        passwords_allowed: false,
    });
    let refused = add_password(&entra, &token, json!({})).await;
    assert_graph_error(
        &refused,
        400,
        "CredentialTypeNotAllowedAsPerAppPolicy",
        None,
    );
    assert_eq!(entra.application(CLIENT_ID).unwrap().passwords.len(), 2);
}

#[tokio::test]
async fn a_personal_account_app_holds_at_most_two_passwords() {
    let entra = emulator_with(&[OWNED_BY]).await;
    entra.set_personal_account(CLIENT_ID, true);
    let token = graph_token(&entra).await;
    assert_eq!(add_password(&entra, &token, json!({})).await.status, 200);
    let third = add_password(&entra, &token, json!({})).await;
    assert_graph_error(
        &third,
        400,
        "TooManyAppPasswords",
        Some("Not allowed to add 3 passwords. You can only add a maximum of 2 passwords."),
    );
    assert_eq!(
        third.body["error"]["details"][0]["code"],
        "TooManyAppPasswords"
    );
    entra.set_personal_account(CLIENT_ID, false);
    assert_eq!(add_password(&entra, &token, json!({})).await.status, 200);
}

#[tokio::test]
async fn faults_are_injected_per_call_with_retry_after() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let token = graph_token(&entra).await;
    entra.inject_graph(
        GraphCall::AddPassword,
        Fault::TooManyRequests {
            retry_after_secs: Some(7),
        },
    );
    entra.inject_graph_times(GraphCall::Get, Fault::ServerError { status: 503 }, 2);
    assert_eq!(entra.pending_faults(), 3);

    // A removePassword is not the faulted call.
    let remove = post(
        &entra,
        &token,
        &format!("applications/{OBJECT_ID}/removePassword"),
        &json!({"keyId": "00000000-0000-4000-8000-000000000000"}),
    )
    .await;
    assert_eq!(remove.status, 404);

    let throttled = add_password(&entra, &token, json!({})).await;
    assert_graph_error(&throttled, 429, "TooManyRequests", None);
    assert_eq!(throttled.headers["retry-after"], "7");
    assert_eq!(add_password(&entra, &token, json!({})).await.status, 200);

    let path = format!("applications/{OBJECT_ID}");
    for _ in 0..2 {
        let unavailable = get(&entra, &token, &path).await;
        assert_graph_error(&unavailable, 503, "serviceNotAvailable", None);
    }
    assert_eq!(get(&entra, &token, &path).await.status, 200);
    assert_eq!(entra.pending_faults(), 0);
    let statuses: Vec<Option<u16>> = entra.graph_requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            Some(404),
            Some(429),
            Some(200),
            Some(503),
            Some(503),
            Some(200)
        ]
    );
}

#[tokio::test]
async fn graph_requests_are_recorded_without_secrets() {
    let entra = emulator_with(&[OWNED_BY]).await;
    let token = graph_token(&entra).await;
    let added = add_password(&entra, &token, json!({"displayName": "recorded"})).await;
    let secret = added.body["secretText"].as_str().unwrap().to_owned();
    // A client echoing a secretText back (it should not) is redacted too.
    post(
        &entra,
        &token,
        &format!("applications/{OBJECT_ID}/removePassword"),
        &json!({"keyId": KEY_ID, "secretText": secret}),
    )
    .await;
    token_for(&entra, CLIENT_ID, &secret, VAULT_SCOPE).await;
    let recorded = entra.graph_requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(
        recorded[0].path,
        format!("/v1.0/applications/{OBJECT_ID}/addPassword")
    );
    assert_eq!(
        recorded[0].json,
        Some(json!({"passwordCredential": {"displayName": "recorded"}}))
    );
    assert_eq!(
        recorded[1].json.as_ref().unwrap()["secretText"],
        "[REDACTED]"
    );
    let everything = format!("{:?}", entra.requests());
    for needle in [secret.as_str(), token.as_str(), SECRET] {
        assert!(
            !everything.contains(needle),
            "{needle} leaked into the log: {everything}"
        );
    }
}
