//! Fault injection: each queued fault takes exactly one request, in order, on every route; the
//! request after the queue is served normally, and faulted requests are still counted.

use std::time::{Duration, Instant};

use testkit::Fault;

use crate::support::*;

#[tokio::test]
async fn too_many_requests_then_success() {
    let entra = emulator_with_secret_app().await;
    entra.inject(Fault::TooManyRequests {
        retry_after_secs: Some(7),
    });
    let throttled = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    throttled.assert_entra_error(429, "temporarily_unavailable", 90055);
    assert_eq!(
        throttled.headers.get("retry-after").map(String::as_str),
        Some("7")
    );
    let ok = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    assert_eq!(ok.status, 200);
    assert_eq!(entra.token_request_count(), 2);
    let statuses: Vec<_> = entra.token_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(200)]);
}

#[tokio::test]
async fn server_errors_queue_in_order() {
    let entra = emulator_with_secret_app().await;
    entra.inject_times(Fault::ServerError { status: 503 }, 2);
    entra.inject(Fault::ServerError { status: 500 });
    assert_eq!(entra.pending_faults(), 3);
    for status in [503, 503, 500] {
        post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE)
            .await
            .assert_entra_error(status, "temporarily_unavailable", 90033);
    }
    assert_eq!(entra.pending_faults(), 0);
    assert_eq!(
        post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn malformed_and_empty_token_bodies() {
    let entra = emulator_with_secret_app().await;
    entra.inject(Fault::MalformedBody);
    entra.inject(Fault::EmptyAccessToken);
    let malformed = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    assert_eq!(malformed.status, 200);
    assert!(malformed.body.is_null(), "not JSON: {}", malformed.text);
    let empty = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["access_token"], "");
    assert_eq!(empty.body["token_type"], "Bearer");
    assert!(entra.issued_tokens().is_empty());
}

#[tokio::test]
async fn entra_error_and_custom_faults() {
    let entra = emulator_with_secret_app().await;
    entra.inject(Fault::EntraError {
        status: 400,
        error: "invalid_client".into(),
        code: 70021,
        message: "No matching federated identity record found for presented assertion.".into(),
    });
    entra.inject(Fault::Custom {
        status: 200,
        content_type: "application/json".into(),
        body: r#"{"token_type":"pop","expires_in":3599,"access_token":"x"}"#.into(),
    });
    post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE)
        .await
        .assert_entra_error(400, "invalid_client", 70021);
    let custom = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    assert_eq!(custom.status, 200);
    assert_eq!(custom.body["token_type"], "pop");
}

#[tokio::test]
async fn delay_slows_the_answer_and_clients_can_time_out() {
    let entra = emulator_with_secret_app().await;
    entra.inject(Fault::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let slow = post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE).await;
    assert_eq!(slow.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    entra.inject(Fault::Delay(Duration::from_secs(5)));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let result = client
        .post(entra.token_url(TENANT))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    let recorded = entra.token_requests();
    assert_eq!(
        recorded.len(),
        2,
        "a request the client gave up on is still counted"
    );
    assert_eq!(recorded[1].status, None, "no answer reached the client");
}

#[tokio::test]
async fn dropped_connection_is_an_error_then_recovers() {
    let entra = emulator_with_secret_app().await;
    entra.inject(Fault::DropConnection);
    let client = reqwest::Client::new();
    let result = client
        .post(entra.token_url(TENANT))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", VAULT_SCOPE),
        ])
        .send()
        .await;
    assert!(
        result.is_err(),
        "expected a transport error, got {result:?}"
    );
    assert_eq!(
        post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE)
            .await
            .status,
        200
    );
    let statuses: Vec<_> = entra.token_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [None, Some(200)]);
}

#[tokio::test]
async fn clear_faults_empties_the_queue() {
    let entra = emulator_with_secret_app().await;
    entra.inject_times(Fault::ServerError { status: 500 }, 3);
    entra.clear_faults();
    assert_eq!(
        post_secret(&entra, TENANT, CLIENT_ID, SECRET, VAULT_SCOPE)
            .await
            .status,
        200
    );
}
