//! The cache serves a token until its refresh point, shares one request between concurrent
//! callers, refreshes proactively, and keeps serving a valid token when a refresh fails.

use std::sync::Arc;
use std::time::Duration;

use entra_auth::{Credential, RefreshPolicy, RetryPolicy, TokenCache, TokenClient};
use secrecy::ExposeSecret;
use testkit::{AppRegistration, Fault, TokenOptions};

use crate::common::*;

fn cache(entra: &testkit::EntraEmulator, policy: RefreshPolicy) -> TokenCache {
    TokenCache::new(client(entra), policy)
}

fn value(token: &entra_auth::AccessToken) -> String {
    token.secret().expose_secret().to_owned()
}

/// Whether two tokens are the same, compared without ever printing them.
fn same(a: &entra_auth::AccessToken, b: &entra_auth::AccessToken) -> bool {
    a.secret().expose_secret() == b.secret().expose_secret()
}

#[tokio::test]
async fn a_fresh_token_is_served_from_the_cache() {
    let entra = emulator_with_secret_app(false).await;
    let cache = cache(&entra, RefreshPolicy::default());
    let app = secret_app(&entra);
    let first = cache.get(&app, &scope()).await.unwrap();
    let second = cache.get(&app, &scope()).await.unwrap();
    assert!(same(&first, &second), "expected the same token");
    assert_eq!(entra.token_request_count(), 1);
}

#[tokio::test]
async fn a_hundred_concurrent_callers_share_one_request() {
    let entra = emulator_with_secret_app(true).await;
    // Slow answer, so that all callers are waiting while the one request is in flight.
    entra.inject(Fault::Delay(Duration::from_millis(300)));
    let cache = Arc::new(cache(&entra, RefreshPolicy::default()));
    let app = secret_app(&entra);
    let scope = scope();
    let calls = (0..100).map(|_| {
        let cache = cache.clone();
        let app = app.clone();
        let scope = scope.clone();
        tokio::spawn(async move { cache.get(&app, &scope).await })
    });
    let tokens: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| value(&joined.unwrap().unwrap()))
        .collect();
    assert_eq!(tokens.len(), 100);
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "every caller got the same token"
    );
    assert_eq!(entra.token_request_count(), 1);
}

#[tokio::test]
async fn concurrent_callers_share_a_failure_too() {
    let entra = emulator(false).await;
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret("another-secret"));
    entra.inject(Fault::Delay(Duration::from_millis(300)));
    let cache = Arc::new(cache(&entra, RefreshPolicy::default()));
    let app = secret_app(&entra);
    let calls = (0..20).map(|_| {
        let cache = cache.clone();
        let app = app.clone();
        tokio::spawn(async move { cache.get(&app, &scope()).await })
    });
    for result in futures::future::join_all(calls).await {
        let err = result.unwrap().unwrap_err();
        assert_eq!(err.aadsts_codes(), &[7000215], "{err}");
    }
    assert_eq!(
        entra.token_request_count(),
        1,
        "waiting callers reuse the failure"
    );
}

#[tokio::test]
async fn tokens_are_keyed_by_credential_and_scope() {
    let entra = emulator(false).await;
    entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_secret(SECRET)
            .with_secret("second-secret-value"),
    );
    let cache = cache(&entra, RefreshPolicy::default());
    let first = secret_app(&entra);
    let rotated = app(
        &entra,
        Credential::ClientSecret("second-secret-value".into()),
    );
    let graph: entra_auth::Scope = "https://graph.microsoft.com/.default".parse().unwrap();
    let a = cache.get(&first, &scope()).await.unwrap();
    let b = cache.get(&rotated, &scope()).await.unwrap();
    let c = cache.get(&first, &graph).await.unwrap();
    assert!(!same(&a, &b), "expected a different token");
    assert!(!same(&a, &c), "expected a different token");
    assert_eq!(entra.token_request_count(), 3);
    cache.get(&first, &scope()).await.unwrap();
    cache.get(&rotated, &scope()).await.unwrap();
    cache.get(&first, &graph).await.unwrap();
    assert_eq!(entra.token_request_count(), 3);
}

#[tokio::test]
async fn refresh_in_triggers_a_proactive_refresh() {
    let entra = emulator_with_secret_app(false).await;
    entra.set_token_options(TokenOptions {
        refresh_in: Some(Duration::from_secs(1)),
        ..TokenOptions::default()
    });
    let cache = cache(&entra, RefreshPolicy::default());
    let app = secret_app(&entra);
    let first = cache.get(&app, &scope()).await.unwrap();
    assert!(first.refresh_on().is_some());
    assert!(
        same(&cache.get(&app, &scope()).await.unwrap(), &first),
        "expected the same token"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = cache.get(&app, &scope()).await.unwrap();
    assert!(!same(&second, &first), "refreshed before expiry");
    assert!(
        first.expires_on() > time::OffsetDateTime::now_utc(),
        "the old one was still valid"
    );
    assert_eq!(entra.token_request_count(), 2);
}

#[tokio::test]
async fn refresh_before_expiry_by_policy() {
    let entra = emulator_with_secret_app(false).await;
    entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(4),
        ..TokenOptions::default()
    });
    let cache = cache(
        &entra,
        RefreshPolicy {
            refresh_before: Duration::from_secs(3),
        },
    );
    let app = secret_app(&entra);
    let first = cache.get(&app, &scope()).await.unwrap();
    let refresh_at = cache.policy().refresh_at(&first);
    assert_eq!(refresh_at, first.expires_on() - time::Duration::seconds(3));
    cache.get(&app, &scope()).await.unwrap();
    assert_eq!(entra.token_request_count(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = cache.get(&app, &scope()).await.unwrap();
    assert!(!same(&second, &first), "expected a different token");
    assert_eq!(entra.token_request_count(), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_serving_the_valid_token() {
    let entra = emulator_with_secret_app(false).await;
    entra.set_token_options(TokenOptions {
        refresh_in: Some(Duration::from_secs(1)),
        ..TokenOptions::default()
    });
    let mut options = options(&entra);
    options.retry = RetryPolicy::none();
    let cache = TokenCache::new(TokenClient::new(options).unwrap(), RefreshPolicy::default());
    let app = secret_app(&entra);
    let (logs, _guard) = Logs::capture();

    let first = cache.get(&app, &scope()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    entra.inject_times(Fault::ServerError { status: 503 }, 10);
    let served = cache.get(&app, &scope()).await.unwrap();
    assert!(same(&served, &first), "the still-valid token is served");
    assert_eq!(entra.token_request_count(), 2, "a refresh was attempted");
    // Right after a failure the cache does not ask again on every call.
    let again = cache.get(&app, &scope()).await.unwrap();
    assert!(same(&again, &first), "expected the same token");
    assert_eq!(entra.token_request_count(), 2);

    let text = logs.text();
    assert!(
        text.contains("serving the cached token"),
        "a warning is logged: {text}"
    );
    assert_no_secret(
        &text,
        &[("client secret", SECRET), ("token", &value(&first))],
    );
}

#[tokio::test]
async fn an_expired_token_is_not_served_when_refresh_fails() {
    let entra = emulator_with_secret_app(false).await;
    entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(1),
        ..TokenOptions::default()
    });
    let mut options = options(&entra);
    options.retry = RetryPolicy::none();
    let cache = TokenCache::new(TokenClient::new(options).unwrap(), RefreshPolicy::default());
    let app = secret_app(&entra);
    cache.get(&app, &scope()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    entra.inject(Fault::ServerError { status: 500 });
    let err = cache.get(&app, &scope()).await.unwrap_err();
    assert_eq!(err.http_status(), Some(500), "{err}");
    // A caller right after it (the next batch of jobs sharing these credentials) shares the
    // failure instead of asking again.
    let shared = cache.get(&app, &scope()).await.unwrap_err();
    assert_eq!(shared.http_status(), Some(500), "{shared}");
    assert_eq!(
        entra.token_request_count(),
        2,
        "no second request right after a failure"
    );
    // Invalidating the entry (a reload, a refused token) asks again at once, and succeeds.
    cache.invalidate(&app, &scope()).await;
    assert!(cache.get(&app, &scope()).await.is_ok());
    assert_eq!(entra.token_request_count(), 3);
}

/// An emulator, a cache holding a token that is still valid but past its refresh point (the
/// service said `refresh_in` 1 s, and 1.1 s have passed), the app and that token.
async fn past_its_refresh_point() -> (
    testkit::EntraEmulator,
    Arc<TokenCache>,
    entra_auth::AppCredential,
    entra_auth::AccessToken,
) {
    let entra = emulator_with_secret_app(false).await;
    entra.set_token_options(TokenOptions {
        refresh_in: Some(Duration::from_secs(1)),
        ..TokenOptions::default()
    });
    let cache = Arc::new(cache(&entra, RefreshPolicy::default()));
    let app = secret_app(&entra);
    let first = cache.get(&app, &scope()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    (entra, cache, app, first)
}

#[tokio::test]
async fn callers_do_not_wait_for_a_refresh_while_the_token_is_valid() {
    let (entra, cache, app, first) = past_its_refresh_point().await;

    // The next token must not be due for refresh as soon as it arrives after the slow answer.
    entra.set_token_options(TokenOptions::default());
    entra.inject(Fault::Delay(Duration::from_millis(1500)));
    let refreshing = {
        let (cache, app) = (cache.clone(), app.clone());
        tokio::spawn(async move { cache.get(&app, &scope()).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = std::time::Instant::now();
    let meanwhile = cache.get(&app, &scope()).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "waited {:?}",
        start.elapsed()
    );
    assert!(
        same(&meanwhile, &first),
        "the valid token is served during the refresh"
    );

    let refreshed = refreshing.await.unwrap().unwrap();
    assert!(!same(&refreshed, &first), "expected a different token");
    assert!(
        same(&cache.get(&app, &scope()).await.unwrap(), &refreshed),
        "expected the same token"
    );
    assert_eq!(entra.token_request_count(), 2);
}

#[tokio::test]
async fn get_renewed_waits_for_the_refresh_in_flight_and_gets_the_new_token() {
    let (entra, cache, app, first) = past_its_refresh_point().await;

    entra.set_token_options(TokenOptions::default());
    entra.inject(Fault::Delay(Duration::from_millis(800)));
    let refreshing = {
        let (cache, app) = (cache.clone(), app.clone());
        tokio::spawn(async move { cache.get_renewed(&app, &scope()).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = std::time::Instant::now();
    let waited = cache.get_renewed(&app, &scope()).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "did not wait for the refresh in flight: {:?}",
        start.elapsed()
    );
    let refreshed = refreshing.await.unwrap().unwrap();
    assert!(!same(&refreshed, &first), "expected a new token");
    assert!(
        same(&waited, &refreshed),
        "the waiting caller gets the new token, not the old one"
    );
    assert_eq!(entra.token_request_count(), 2, "one shared refresh");
}

#[tokio::test]
async fn throttling_holds_back_further_requests_until_retry_after() {
    let entra = emulator_with_secret_app(false).await;
    let cache = cache(&entra, RefreshPolicy::default());
    let app = secret_app(&entra);
    entra.inject(Fault::TooManyRequests {
        retry_after_secs: Some(120),
    });
    let first = cache.get(&app, &scope()).await.unwrap_err();
    assert_eq!(first.http_status(), Some(429), "{first}");
    let second = cache.get(&app, &scope()).await.unwrap_err();
    assert_eq!(second.http_status(), Some(429), "{second}");
    assert_eq!(
        entra.token_request_count(),
        1,
        "no request before Retry-After is over"
    );

    // Invalidation is the caller's way to ask again anyway.
    cache.invalidate(&app, &scope()).await;
    assert!(cache.get(&app, &scope()).await.is_ok());
    assert_eq!(entra.token_request_count(), 2);
}

#[tokio::test]
async fn the_pause_after_a_failed_refresh_ends_when_the_token_expires() {
    let entra = emulator_with_secret_app(false).await;
    entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(2),
        refresh_in: Some(Duration::from_secs(1)),
        ..TokenOptions::default()
    });
    let mut options = options(&entra);
    options.retry = RetryPolicy::none();
    let cache = TokenCache::new(
        TokenClient::new(options).unwrap(),
        RefreshPolicy {
            refresh_before: Duration::from_millis(500),
        },
    );
    let app = secret_app(&entra);
    let first = cache.get(&app, &scope()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    entra.inject(Fault::ServerError { status: 503 });
    let served = cache.get(&app, &scope()).await.unwrap();
    assert!(same(&served, &first), "served the still-valid token");
    assert_eq!(entra.token_request_count(), 2);

    // Once the token has expired, the next call asks again instead of waiting out 30 s.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fresh = cache.get(&app, &scope()).await.unwrap();
    assert!(!same(&fresh, &first), "a new token after expiry");
    assert_eq!(entra.token_request_count(), 3);
}
