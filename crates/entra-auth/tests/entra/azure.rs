//! `EntraTokenCredential` works as the Azure SDK's `TokenCredential`: it takes the scope the
//! SDK passes, answers from the shared cache, and refuses what it cannot serve.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use entra_auth::{EntraTokenCredential, RefreshPolicy, TokenCache};

use crate::common::*;

#[tokio::test]
async fn serves_the_sdk_scope_from_the_cache() {
    let entra = emulator_with_secret_app(true).await;
    let cache = Arc::new(TokenCache::new(client(&entra), RefreshPolicy::default()));
    let credential = EntraTokenCredential::new(cache.clone(), secret_app(&entra)).into_shared();

    let token = credential.get_token(&[SCOPE], None).await.unwrap();
    assert!(
        entra
            .validate_bearer(token.token.secret(), RESOURCE)
            .is_ok()
    );
    let again = credential.get_token(&[SCOPE], None).await.unwrap();
    assert!(
        token.token.secret() == again.token.secret(),
        "the second call is served from the cache"
    );
    assert_eq!(token.expires_on, again.expires_on);
    assert_eq!(entra.token_request_count(), 1);
    let debug = format!("{credential:?}");
    assert_no_secret(
        &debug,
        &[("client secret", SECRET), ("token", token.token.secret())],
    );
}

#[tokio::test]
async fn refuses_several_or_malformed_scopes() {
    let entra = emulator_with_secret_app(false).await;
    let cache = Arc::new(TokenCache::new(client(&entra), RefreshPolicy::default()));
    let credential = EntraTokenCredential::new(cache, secret_app(&entra));

    let err = credential
        .get_token(&[SCOPE, "https://graph.microsoft.com/.default"], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("one scope at a time"), "{err}");
    let err = credential.get_token(&[RESOURCE], None).await.unwrap_err();
    assert!(format!("{err:?}").contains("/.default"), "{err:?}");
    assert_eq!(entra.token_request_count(), 0);
}
