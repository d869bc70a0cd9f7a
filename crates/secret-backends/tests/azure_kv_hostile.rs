//! The Azure Key Vault backend against a hostile server (testkit's `HostileServer` over TLS on
//! 127.0.0.1): after the 401 challenge, a redirect never carries the bearer token or the value
//! being written to the place it points at, and a huge answer is cut off instead of read whole.

use std::sync::Arc;
use std::time::Duration;

use secret_backends::WritePrecondition;
use secret_backends::azure_kv::{
    AccessToken, AzureError, AzureKeyVaultOptions, AzureKeyVaultStore, RetrySettings,
    TokenCredential, TokenRequestOptions,
};
use secret_backends::{ErrorKind, Format, SecretStore, TokenPayload};
use serde_json::json;
use testkit::{Behaviour, HostileServer};

mod common;

const BEARER: &str = "kv-bearer-token-that-never-leaves";
const ACCESS_TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.kv-redirect-test-access-token.sig";
const SECRET_PATH: &str = "/secrets/graph-token/";

/// Hands out one fixed bearer token.
#[derive(Debug)]
struct FixedToken;

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> Result<AccessToken, AzureError> {
        Ok(AccessToken::new(
            BEARER.to_owned(),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

fn challenge() -> Behaviour {
    Behaviour::json(401, &json!({"error": {"code": "Unauthorized", "message": "no token"}}))
        .with_header(
            "www-authenticate",
            "Bearer authorization=\"https://login.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47\", resource=\"https://vault.azure.net\"",
        )
}

fn store(vault: &HostileServer, dir: &tempfile::TempDir) -> AzureKeyVaultStore {
    let ca = dir.path().join("ca.pem");
    vault.write_ca_pem(&ca).unwrap();
    let mut options = AzureKeyVaultOptions::new(vault.base_url().parse().unwrap());
    options.ca_file = Some(ca);
    options.retry = RetrySettings {
        first_delay: Duration::from_millis(1),
        max_retries: 0,
        max_delay: Duration::from_millis(1),
    };
    AzureKeyVaultStore::new("hostile-kv", options, Arc::new(FixedToken)).unwrap()
}

fn payload() -> TokenPayload {
    common::payload(ACCESS_TOKEN, Format::Raw)
}

#[tokio::test]
async fn a_redirect_after_the_challenge_is_not_followed_and_nothing_reaches_its_target() {
    let elsewhere = HostileServer::start_tls(Behaviour::json(200, &json!({})))
        .await
        .unwrap();
    for status in [301, 302, 307, 308] {
        let vault = HostileServer::start_tls(Behaviour::redirect(
            status,
            &elsewhere.url("/secrets/graph-token"),
        ))
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = store(&vault, &dir);
        // the first request of each call goes without a token and is challenged
        vault.once(SECRET_PATH, challenge());
        let read = store.read("graph-token", None).await.unwrap_err();
        vault.once(SECRET_PATH, challenge());
        let write = store
            .write("graph-token", &payload(), &WritePrecondition::unread(false))
            .await
            .unwrap_err();
        for err in [read, write] {
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains(BEARER) && !text.contains(ACCESS_TOKEN),
                "{text}"
            );
            assert_eq!(err.kind(), ErrorKind::Protocol, "{text}");
            assert!(text.contains("follows no redirect"), "{text}");
        }
        let asked = vault.requests();
        assert!(
            asked.iter().any(|r| r.header("authorization").is_some()),
            "the bearer token went to the vault itself: {asked:?}"
        );
    }
    common::assert_nothing_reached(&elsewhere);
}

#[tokio::test]
async fn a_huge_answer_is_cut_off_and_named() {
    for huge in [
        Behaviour::huge_body(200, "application/json", 200 << 20).without_content_length(),
        Behaviour::huge_body(200, "application/json", 200 << 20),
    ] {
        let vault = HostileServer::start_tls(huge).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = store(&vault, &dir);
        vault.once(SECRET_PATH, challenge());
        let err = store.metadata("graph-token").await.unwrap_err();
        common::assert_cut_off(&err, &vault, 32 << 20);
    }
}
