//! `EntraTokenCredential` works as the Azure SDK's `TokenCredential`: it takes the scope the
//! SDK passes, answers from the shared cache, replaces a token the service refused once, says
//! in `azure_core`'s words what kind of failure a token request was, and refuses what it
//! cannot serve.

use std::error::Error as _;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind as AzureErrorKind;
use azure_core::http::StatusCode;
use entra_auth::{EntraTokenCredential, RefreshPolicy, TokenCache};
use testkit::Fault;

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
    // Another SDK client's credential over the same cache.
    let other = EntraTokenCredential::new(cache.clone(), secret_app(&entra));
    let again = other.get_token(&[SCOPE], None).await.unwrap();
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

#[tokio::test]
async fn a_token_asked_for_again_while_fresh_was_refused_and_is_replaced_once() {
    let entra = emulator_with_secret_app(false).await;
    let cache = Arc::new(TokenCache::new(client(&entra), RefreshPolicy::default()));
    let credential = EntraTokenCredential::new(cache.clone(), secret_app(&entra));

    let first = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(entra.token_request_count(), 1);
    // The SDK asks again for a token it holds only after a 401: a new one is fetched.
    let renewed = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(
        entra.token_request_count(),
        2,
        "exactly one extra token request"
    );
    assert!(
        first.token.secret() != renewed.token.secret(),
        "a new token replaces the refused one"
    );
    // The replacement refused too: final, no more requests.
    let again = credential.get_token(&[SCOPE], None).await.unwrap();
    assert!(again.token.secret() == renewed.token.secret());
    assert_eq!(entra.token_request_count(), 2, "a second refusal is final");
    // The shared cache holds the new token for everyone else.
    let other = EntraTokenCredential::new(cache, secret_app(&entra));
    let shared = other.get_token(&[SCOPE], None).await.unwrap();
    assert!(shared.token.secret() == renewed.token.secret());
    assert_eq!(entra.token_request_count(), 2);
}

/// The `azure_core::Error` of kind `HttpResponse` inside a credential failure, if any.
fn token_service_status(err: &azure_core::Error) -> Option<(StatusCode, Option<String>)> {
    let inner = err.source()?.downcast_ref::<azure_core::Error>()?;
    match inner.kind() {
        AzureErrorKind::HttpResponse {
            status,
            raw_response,
            ..
        } => Some((
            *status,
            raw_response
                .as_deref()
                .and_then(|r| {
                    r.headers()
                        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                })
                .map(str::to_owned),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn a_token_service_failure_says_what_kind_it_was() {
    let entra = emulator_with_secret_app(false).await;
    let cache = Arc::new(TokenCache::new(client(&entra), RefreshPolicy::default()));

    // Throttled through every retry, with the wait the service asked for.
    entra.inject_times(
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
        10,
    );
    let credential = EntraTokenCredential::new(cache.clone(), secret_app(&entra));
    let err = credential.get_token(&[SCOPE], None).await.unwrap_err();
    assert!(matches!(err.kind(), AzureErrorKind::Credential), "{err:?}");
    assert_eq!(
        token_service_status(&err),
        Some((StatusCode::TooManyRequests, Some("0".to_owned()))),
        "{err:?}"
    );
    entra.clear_faults();

    // Unavailable through every retry.
    let cache = Arc::new(TokenCache::new(client(&entra), RefreshPolicy::default()));
    entra.inject_times(Fault::ServerError { status: 503 }, 10);
    let credential = EntraTokenCredential::new(cache, secret_app(&entra));
    let err = credential.get_token(&[SCOPE], None).await.unwrap_err();
    assert_eq!(
        token_service_status(&err).map(|(status, _)| status),
        Some(StatusCode::ServiceUnavailable),
        "{err:?}"
    );
    entra.clear_faults();

    // Refused: a wrong secret is Entra's 401, and the message says what to do.
    let cache = Arc::new(TokenCache::new(client(&entra), RefreshPolicy::default()));
    let wrong = app(&entra, entra_auth::Credential::ClientSecret("wrong".into()));
    let err = EntraTokenCredential::new(cache, wrong)
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err();
    assert_eq!(
        token_service_status(&err).map(|(status, _)| status),
        Some(StatusCode::Unauthorized),
        "{err:?}"
    );
    assert!(err.to_string().contains("client secret"), "{err}");
    match err
        .source()
        .and_then(|s| s.downcast_ref::<azure_core::Error>())
        .map(|e| e.kind())
    {
        Some(AzureErrorKind::HttpResponse { error_code, .. }) => {
            assert_eq!(error_code.as_deref(), Some("AADSTS7000215"));
        }
        other => panic!("expected the token service's answer, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_token_service_is_a_connection_failure() {
    let entra = emulator_with_secret_app(false).await;
    let app = secret_app(&entra);
    entra.shutdown().await;
    let mut options = entra_auth::ClientOptions::default();
    options.retry.max_attempts = 1;
    let cache = Arc::new(TokenCache::new(
        entra_auth::TokenClient::new(options).unwrap(),
        RefreshPolicy::default(),
    ));
    let err = EntraTokenCredential::new(cache, app)
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), AzureErrorKind::Credential), "{err:?}");
    let inner = err
        .source()
        .and_then(|s| s.downcast_ref::<azure_core::Error>());
    assert!(
        matches!(
            inner.map(azure_core::Error::kind),
            Some(AzureErrorKind::Connection)
        ),
        "{err:?}"
    );
}
