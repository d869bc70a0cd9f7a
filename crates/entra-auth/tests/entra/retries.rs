//! Throttling, server errors, timeouts and dropped connections are retried within the
//! policy's bounds; `Retry-After` is honoured, and a wait longer than the budget fails at once.

use std::time::{Duration, Instant};

use entra_auth::{ClientOptions, ErrorKind, RetryPolicy, TokenClient};
use testkit::Fault;

use crate::common::*;

fn client_with(
    entra: &testkit::EntraEmulator,
    change: impl FnOnce(&mut ClientOptions),
) -> TokenClient {
    let mut options = options(entra);
    change(&mut options);
    TokenClient::new(options).unwrap()
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let entra = emulator_with_secret_app(true).await;
    entra.inject(Fault::TooManyRequests {
        retry_after_secs: Some(2),
    });
    let start = Instant::now();
    let token = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "retried after {elapsed:?}, before Retry-After"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(entra.token_request_count(), 2);
    assert!(
        entra
            .validate_bearer(
                secrecy::ExposeSecret::expose_secret(token.secret()),
                RESOURCE
            )
            .is_ok()
    );
}

#[tokio::test]
async fn retry_after_beyond_the_budget_fails_at_once() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject(Fault::TooManyRequests {
        retry_after_secs: Some(120),
    });
    let start = Instant::now();
    let err = client(&entra)
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.http_status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(err.to_string().contains("retry budget"), "{err}");
    assert_eq!(entra.token_request_count(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject(Fault::ServerError { status: 503 });
    entra.inject(Fault::ServerError { status: 500 });
    let token = client(&entra).acquire(&secret_app(&entra), &scope()).await;
    assert!(token.is_ok(), "{token:?}");
    assert_eq!(entra.token_request_count(), 3);
}

#[tokio::test]
async fn transient_aadsts_codes_are_retried() {
    let entra = emulator_with_secret_app(false).await;
    for (error, code) in [
        ("invalid_client", 70021),
        ("temporarily_unavailable", 50033),
    ] {
        entra.inject(Fault::EntraError {
            status: 400,
            error: error.into(),
            code,
            message: "transient".into(),
        });
    }
    let token = client(&entra).acquire(&secret_app(&entra), &scope()).await;
    assert!(token.is_ok(), "{token:?}");
    assert_eq!(entra.token_request_count(), 3);
}

#[tokio::test]
async fn attempts_are_bounded() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject_times(Fault::ServerError { status: 502 }, 10);
    let client = client_with(&entra, |o| o.retry.max_attempts = 3);
    let err = client
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServiceUnavailable, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.attempts(), 3);
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert_eq!(entra.token_request_count(), 3);
}

#[tokio::test]
async fn elapsed_time_is_bounded() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject_times(Fault::ServerError { status: 503 }, 100);
    let client = client_with(&entra, |o| {
        o.retry = RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(200),
            max_elapsed: Duration::from_millis(800),
        }
    });
    let start = Instant::now();
    let err = client
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert!(err.attempts() < 100, "{err}");
    assert_eq!(err.kind(), ErrorKind::ServiceUnavailable);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject(Fault::Delay(Duration::from_secs(3)));
    let client = client_with(&entra, |o| o.request_timeout = Duration::from_millis(400));
    let start = Instant::now();
    let token = client.acquire(&secret_app(&entra), &scope()).await;
    assert!(token.is_ok(), "{token:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the timeout did not cut the wait"
    );
}

#[tokio::test]
async fn a_timeout_without_retries_says_so() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject(Fault::Delay(Duration::from_secs(3)));
    let client = client_with(&entra, |o| {
        o.request_timeout = Duration::from_millis(300);
        o.retry = RetryPolicy::none();
    });
    let err = client
        .acquire(&secret_app(&entra), &scope())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("no answer from"), "{err}");
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let entra = emulator_with_secret_app(false).await;
    entra.inject(Fault::DropConnection);
    let token = client(&entra).acquire(&secret_app(&entra), &scope()).await;
    assert!(token.is_ok(), "{token:?}");
}

#[tokio::test]
async fn an_unreachable_authority_is_a_network_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let entra = emulator_with_secret_app(false).await;
    let mut app = secret_app(&entra);
    app.authority = format!("http://127.0.0.1:{port}").parse().unwrap();
    let client = client_with(&entra, |o| o.retry.max_attempts = 2);
    let err = client.acquire(&app, &scope()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.attempts(), 2);
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
