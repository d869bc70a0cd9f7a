//! The Vault backend against a hostile server (testkit's `HostileServer` on 127.0.0.1): a
//! redirect off the address never carries the Vault token, a login secret or a written value
//! to the place it points at, and absurd numbers or times in answers neither panic nor stick.

use secrecy::SecretString;
use secret_backends::WritePrecondition;
use secret_backends::vault::{KvVersion, VaultAuth, VaultOptions, VaultStore};
use secret_backends::{ErrorKind, Format, SecretStore, TokenPayload};
use serde_json::json;
use testkit::{Behaviour, HostileServer};

mod common;

const VAULT_TOKEN: &str = "hvs.redirect-test-vault-token";
const SECRET_ID: &str = "5ec2e7-1d-never-leaves";
const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.redirect-test-access-token.sig";

fn token_store(address: &str) -> VaultStore {
    let mut options = VaultOptions::new(
        address,
        "secret",
        VaultAuth::Token {
            token: SecretString::from(VAULT_TOKEN).into(),
        },
    );
    options.kv_version = Some(KvVersion::V2);
    options.retry.max_attempts = 1;
    VaultStore::new("hostile-vault", options).unwrap()
}

fn approle_store(address: &str) -> VaultStore {
    let mut options = VaultOptions::new(
        address,
        "secret",
        VaultAuth::AppRole {
            mount: "approle".to_owned(),
            role_id: "role-1".to_owned(),
            secret_id: SecretString::from(SECRET_ID).into(),
        },
    );
    options.kv_version = Some(KvVersion::V2);
    options.retry.max_attempts = 1;
    VaultStore::new("hostile-vault", options).unwrap()
}

fn payload() -> TokenPayload {
    common::payload(ACCESS_TOKEN, Format::Json)
}

/// The answer of `auth/token/lookup-self` for a renewable token of `ttl` seconds.
fn lookup_answer(ttl: u64) -> serde_json::Value {
    json!({
        "request_id": "r", "lease_id": "", "lease_duration": 0, "renewable": false,
        "data": {
            "accessor": "a", "creation_time": 1, "creation_ttl": ttl, "display_name": "token",
            "entity_id": "", "expire_time": null, "explicit_max_ttl": 0, "id": VAULT_TOKEN,
            "issue_time": null, "meta": null, "num_uses": 0, "orphan": false, "path": "auth/token/create",
            "policies": ["default"], "renewable": true, "ttl": ttl
        }
    })
}

/// A server that answers 404 to everything but `auth/token/lookup-self`, which finds
/// [`VAULT_TOKEN`] valid for an hour.
async fn vault_with_a_valid_token() -> HostileServer {
    let vault = HostileServer::start(Behaviour::json(404, &json!({"errors": []})))
        .await
        .unwrap();
    vault.on(
        "/v1/auth/token/lookup-self",
        Behaviour::json(200, &lookup_answer(3600)),
    );
    vault
}

fn assert_nothing_leaked(text: &str) {
    for secret in [VAULT_TOKEN, SECRET_ID, ACCESS_TOKEN] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_refused_and_nothing_reaches_it() {
    let elsewhere = HostileServer::start(Behaviour::json(200, &json!({})))
        .await
        .unwrap();
    for status in [301, 302, 307, 308] {
        let vault = HostileServer::start(Behaviour::redirect(
            status,
            &elsewhere.url("/v1/secret/data/stolen"),
        ))
        .await
        .unwrap();
        for store in [
            token_store(&vault.base_url()),
            approle_store(&vault.base_url()),
        ] {
            let write = store
                .write("apps/graph", &payload(), &WritePrecondition::unread(false))
                .await
                .unwrap_err();
            let read = store.read("apps/graph", None).await.unwrap_err();
            let metadata = store.metadata("apps/graph").await.unwrap_err();
            for err in [write, read, metadata] {
                let text = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
                assert_eq!(err.kind(), ErrorKind::Protocol, "{status}: {text}");
                assert!(
                    text.contains(&format!("redirected to {}", elsewhere.base_url())),
                    "{status}: {text}"
                );
                assert!(text.contains("follows no redirect"), "{text}");
                assert_nothing_leaked(&text);
            }
        }
        assert!(
            vault.request_count() > 0,
            "the configured address was asked"
        );
    }
    common::assert_nothing_reached(&elsewhere);
}

#[tokio::test]
async fn an_https_address_redirecting_to_plain_http_on_the_same_host_is_refused() {
    let elsewhere = HostileServer::start(Behaviour::json(200, &json!({})))
        .await
        .unwrap();
    let vault = HostileServer::start_tls(Behaviour::redirect(
        307,
        &elsewhere.url("/v1/auth/token/lookup-self"),
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    vault.write_ca_pem(&ca).unwrap();
    let mut options = VaultOptions::new(
        vault.base_url(),
        "secret",
        VaultAuth::Token {
            token: SecretString::from(VAULT_TOKEN).into(),
        },
    );
    options.kv_version = Some(KvVersion::V2);
    options.retry.max_attempts = 1;
    options.ca_file = Some(ca);
    let store = VaultStore::new("hostile-vault", options).unwrap();
    let err = store
        .write("apps/graph", &payload(), &WritePrecondition::unread(false))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(vault.request_count() > 0, "{err}");
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test]
async fn a_redirect_within_the_address_is_followed() {
    let vault = HostileServer::start(Behaviour::json(404, &json!({"errors": []})))
        .await
        .unwrap();
    vault.on(
        "/v1/auth/token/lookup-self",
        Behaviour::redirect(307, &vault.url("/v1/auth/token/lookup-self-moved")),
    );
    vault.on(
        "/v1/auth/token/lookup-self-moved",
        Behaviour::json(200, &lookup_answer(3600)),
    );
    let store = token_store(&vault.base_url());
    assert_eq!(store.metadata("apps/graph").await.unwrap(), None);
    let paths: Vec<String> = vault.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths.contains(&"/v1/auth/token/lookup-self-moved".to_owned()),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_huge_lease_duration_does_not_panic() {
    let vault = HostileServer::start(Behaviour::json(404, &json!({"errors": []})))
        .await
        .unwrap();
    vault.on(
        "/v1/auth/approle/login",
        Behaviour::answer(
            200,
            "application/json",
            r#"{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"data":null,
                "auth":{"client_token":"hvs.issued","accessor":"a","policies":["default"],
                "token_policies":["default"],"metadata":null,"lease_duration":18446744073709551615,
                "renewable":true,"entity_id":"","token_type":"service","orphan":true}}"#,
        ),
    );
    let store = approle_store(&vault.base_url());
    assert_eq!(store.metadata("apps/graph").await.unwrap(), None);
    assert_eq!(store.metadata("apps/graph").await.unwrap(), None);
}

#[tokio::test]
async fn stored_times_no_backend_can_hold_are_an_unknown_expiry() {
    let vault = vault_with_a_valid_token().await;
    let far = "9999-12-31T23:59:59-23:59";
    vault.on(
        "/v1/secret/metadata/apps/graph",
        Behaviour::json(
            200,
            &json!({
                "request_id": "r", "lease_id": "", "lease_duration": 0, "renewable": false,
                "data": {
                    "cas_required": false, "created_time": far, "current_version": 1,
                    "delete_version_after": "0s", "max_versions": 0, "oldest_version": 0,
                    "updated_time": far,
                    "custom_metadata": {
                        "expires_on": "253402387139", "expires_at": far,
                        "managed_by": "secret-sync", "version": "1"
                    },
                    "versions": {"1": {"created_time": far, "deletion_time": "", "destroyed": false}}
                }
            }),
        ),
    );
    let store = token_store(&vault.base_url());
    let metadata = store.metadata("apps/graph").await.unwrap().unwrap();
    assert_eq!(metadata.expires_on, None, "{metadata:?}");
    assert_eq!(metadata.updated_on, None, "{metadata:?}");
    assert_eq!(metadata.managed_by.as_deref(), Some("secret-sync"));
}

#[tokio::test]
async fn a_huge_mount_answer_is_not_read_whole() {
    let vault = vault_with_a_valid_token().await;
    vault.on(
        "/v1/sys/internal/ui/mounts/secret",
        Behaviour::huge_body(200, "application/json", 200 << 20).without_content_length(),
    );
    let mut options = VaultOptions::new(
        vault.base_url(),
        "secret",
        VaultAuth::Token {
            token: SecretString::from(VAULT_TOKEN).into(),
        },
    );
    options.retry.max_attempts = 1;
    let store = VaultStore::new("hostile-vault", options).unwrap();
    let err = store.metadata("apps/graph").await.unwrap_err();
    common::assert_cut_off(&err, &vault, 16 << 20);
}
