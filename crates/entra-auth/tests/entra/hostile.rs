//! Token endpoints that misbehave on purpose (testkit's `HostileServer`): absurd lifetimes and
//! `Retry-After` values end in a clear error, never a panic; every body we read is capped at
//! 1 MiB, read incrementally, and the error names the server; a body that drips is bounded by
//! the request timeout; user information in an authority and a plain-http GitHub OIDC endpoint
//! are refused without echoing anything secret. Credential files get the same 1 MiB cap.

use std::time::{Duration, Instant};

use entra_auth::{
    AppCredential, Authority, ClientOptions, Credential, ErrorKind, FederatedTokenSource,
    ManagedIdentity, RefreshPolicy, RetryPolicy, TokenCache, TokenClient,
};
use secrecy::SecretString;
use serde_json::json;
use testkit::{Behaviour, HostileServer};

use crate::common::*;

const TOKEN_PATH: &str = "/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/oauth2/v2.0/token";
const ACCESS_TOKEN: &str = "eyJhostile.access-token-value.sig";
const HUGE: u64 = 200 << 20;
const CAP: u64 = 1 << 20;

fn quick_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(20),
        },
        ..ClientOptions::default()
    }
}

fn hostile_app(server: &HostileServer) -> AppCredential {
    AppCredential {
        authority: Authority::parse(&server.base_url()).unwrap(),
        tenant: TENANT.parse().unwrap(),
        client_id: CLIENT.parse().unwrap(),
        credential: Credential::ClientSecret(SECRET.into()),
    }
}

fn token_body(fields: serde_json::Value) -> Behaviour {
    let mut body = json!({"token_type": "Bearer", "access_token": ACCESS_TOKEN});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    Behaviour::json(200, &body)
}

/// Acquires from a server answering `behaviour` on the token path.
async fn acquire_from(behaviour: Behaviour) -> Result<entra_auth::AccessToken, entra_auth::Error> {
    let server = HostileServer::start(behaviour).await.unwrap();
    let client = TokenClient::new(quick_options()).unwrap();
    client.acquire(&hostile_app(&server), &scope()).await
}

fn assert_clean(err: &entra_auth::Error) {
    let text = format!("{err} {err:?}");
    assert_no_secret(
        &text,
        &[("client secret", SECRET), ("access token", ACCESS_TOKEN)],
    );
}

#[tokio::test]
async fn an_expires_in_beyond_the_longest_lifetime_is_a_malformed_answer() {
    let max = entra_auth::MAX_TOKEN_LIFETIME.as_secs();
    for expires_in in [
        json!(1e12),
        json!(1_000_000_000_000u64),
        json!("1000000000000"),
        json!(u64::MAX),
        json!("99999999999999999999999999"),
        json!(max + 1),
    ] {
        let err = acquire_from(token_body(json!({ "expires_in": expires_in })))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidResponse,
            "{expires_in}: {err}"
        );
        assert!(!err.is_retryable(), "{expires_in}");
        assert!(
            err.to_string()
                .contains("longer than the 48 h a token may live"),
            "{expires_in}: {err}"
        );
        assert_clean(&err);
    }
    let token = acquire_from(token_body(json!({ "expires_in": max })))
        .await
        .expect("exactly the longest lifetime is accepted");
    let lifetime = token.expires_on() - token.obtained_at();
    assert_eq!(lifetime.whole_seconds(), i64::try_from(max).unwrap());
}

#[tokio::test]
async fn an_expires_on_far_ahead_or_out_of_range_is_a_malformed_answer() {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (expires_on, says) in [
        (json!(now + 3 * 86_400), "longer than the 48 h"),
        (json!(253_402_300_800i64), "not a Unix time"), // the year 10000
        (json!(1e300), "not a Unix time"),
    ] {
        let err = acquire_from(token_body(json!({ "expires_on": expires_on })))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidResponse,
            "{expires_on}: {err}"
        );
        assert!(err.to_string().contains(says), "{expires_on}: {err}");
    }
}

#[tokio::test]
async fn an_absurd_refresh_in_is_ignored() {
    for refresh_in in [json!(1e12), json!(i64::MAX), json!(-1)] {
        let token = acquire_from(token_body(
            json!({ "expires_in": 3600, "refresh_in": refresh_in }),
        ))
        .await
        .unwrap_or_else(|e| panic!("{refresh_in}: {e}"));
        assert_eq!(token.refresh_on(), None, "{refresh_in}");
    }
}

fn throttled(retry_after: &str) -> Behaviour {
    Behaviour::json(
        429,
        &json!({"error": "temporarily_unavailable", "error_description": "AADSTS50196: slow down"}),
    )
    .with_header("retry-after", retry_after)
}

fn throttled_for_ages() -> Behaviour {
    throttled("300000000000")
}

#[tokio::test]
async fn a_retry_after_of_ten_thousand_years_ends_the_retries_with_a_clear_error() {
    let start = Instant::now();
    let err = acquire_from(throttled_for_ages()).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.attempts(), 1, "{err}");
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(300_000_000_000))
    );
    let text = err.to_string();
    assert!(
        text.contains("asked to wait 300000000000 s") && text.contains("no retry was made"),
        "{text}"
    );
    assert_clean(&err);

    // Past u64 too: still a wait too long to honour, not "no Retry-After".
    let err = acquire_from(throttled(&"9".repeat(30))).await.unwrap_err();
    assert_eq!(err.attempts(), 1, "{err}");
}

#[tokio::test]
async fn the_cache_survives_a_retry_after_of_ten_thousand_years() {
    let server = HostileServer::start(throttled_for_ages()).await.unwrap();
    let app = hostile_app(&server);
    let cache = TokenCache::new(
        TokenClient::new(quick_options()).unwrap(),
        RefreshPolicy::default(),
    );
    // No token yet: the error, and the next call repeats it without a request.
    let err = cache.get(&app, &scope()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    let again = cache.get(&app, &scope()).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Throttled);
    assert_eq!(server.request_count(), 1);

    // A token past its refresh point whose refresh is throttled for ages: still served.
    cache.invalidate(&app, &scope()).await;
    server.once(TOKEN_PATH, token_body(json!({"expires_in": 120})));
    let first = cache.get(&app, &scope()).await.expect("first token");
    let served = cache.get(&app, &scope()).await.expect("the cached token");
    assert_eq!(served.expires_on(), first.expires_on());
    assert_eq!(server.request_count(), 3);
}

/// Every endpoint whose answer entra-auth reads, each behind a hostile server.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Token,
    Imds,
    AppService,
    GithubOidc,
}

impl Endpoint {
    const ALL: [Endpoint; 4] = [
        Endpoint::Token,
        Endpoint::Imds,
        Endpoint::AppService,
        Endpoint::GithubOidc,
    ];

    /// The name the error must give the server.
    fn named(self) -> &'static str {
        match self {
            Endpoint::Token => "the token endpoint",
            Endpoint::Imds => "the managed identity endpoint (IMDS)",
            Endpoint::AppService => "the App Service managed identity endpoint",
            Endpoint::GithubOidc => "the GitHub Actions OIDC endpoint",
        }
    }

    fn app(self, server: &HostileServer) -> AppCredential {
        let url = |path: &str| url::Url::parse(&server.url(path)).unwrap();
        let authority = Authority::parse(&server.base_url()).unwrap();
        match self {
            Endpoint::Token => hostile_app(server),
            Endpoint::Imds => AppCredential::managed_identity(
                authority,
                ManagedIdentity::Imds {
                    endpoint: url("/metadata/identity/oauth2/token"),
                    client_id: None,
                },
            ),
            Endpoint::AppService => AppCredential::managed_identity(
                authority,
                ManagedIdentity::AppService {
                    endpoint: url("/msi/token"),
                    header: SecretString::from("identity-header-value"),
                    client_id: None,
                },
            ),
            Endpoint::GithubOidc => AppCredential {
                credential: Credential::Federated(FederatedTokenSource::GitHubActions {
                    request_url: url("/oidc?api-version=2.0"),
                    request_token: SecretString::from("github-request-token"),
                }),
                ..hostile_app(server)
            },
        }
    }
}

#[tokio::test]
async fn a_huge_body_is_cut_at_one_mib_and_the_error_names_the_server() {
    for endpoint in Endpoint::ALL {
        for (status, with_length) in [(200, true), (200, false), (400, false), (503, true)] {
            let mut behaviour = Behaviour::huge_body(status, "application/json", HUGE);
            if !with_length {
                behaviour = behaviour.without_content_length();
            }
            let server = HostileServer::start(behaviour).await.unwrap();
            let what = format!("{endpoint:?} HTTP {status} content-length {with_length}");
            let client = TokenClient::new(quick_options()).unwrap();
            let start = Instant::now();
            let err = client
                .acquire(&endpoint.app(&server), &scope())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{what}: {err}");
            assert!(!err.is_retryable(), "{what}: a huge answer is not retried");
            assert_eq!(server.request_count(), 1, "{what}");
            let text = err.to_string();
            let named = format!("{} {}", endpoint.named(), server.base_url());
            assert!(text.contains(&named), "{what}: {text}");
            assert!(text.contains("more than 1 MiB"), "{what}: {text}");
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
            // Read incrementally: stopped near the cap, not after 200 MB (socket buffers aside).
            let sent = server.body_bytes_sent();
            assert!(sent < 16 * CAP, "{what}: the server sent {sent} bytes");
            assert_clean(&err);
        }
    }
}

#[tokio::test]
async fn a_body_just_under_the_cap_is_read() {
    // A valid answer padded with whitespace to just under 1 MiB still parses.
    let answer = json!({"token_type": "Bearer", "access_token": ACCESS_TOKEN, "expires_in": 3600})
        .to_string();
    let padding = usize::try_from(CAP).unwrap() - answer.len() - 1;
    let body = format!("{}{answer}", " ".repeat(padding));
    for with_length in [true, false] {
        let mut behaviour = Behaviour::answer(200, "application/json", body.clone());
        if !with_length {
            behaviour = behaviour.without_content_length();
        }
        let token = acquire_from(behaviour).await.expect("under the cap");
        assert_eq!(token.token_type(), "Bearer");
    }
}

#[tokio::test]
async fn a_body_that_drips_is_bounded_by_the_request_timeout() {
    let answer = json!({"token_type": "Bearer", "access_token": ACCESS_TOKEN, "expires_in": 3600})
        .to_string();
    for endpoint in Endpoint::ALL {
        let server = HostileServer::start(Behaviour::slow_drip(
            200,
            "application/json",
            answer.clone(),
            Duration::from_secs(1),
        ))
        .await
        .unwrap();
        let client = TokenClient::new(ClientOptions {
            request_timeout: Duration::from_secs(2),
            retry: RetryPolicy::none(),
            ..ClientOptions::default()
        })
        .unwrap();
        let start = Instant::now();
        let err = client
            .acquire(&endpoint.app(&server), &scope())
            .await
            .unwrap_err();
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(4),
            "{endpoint:?}: {elapsed:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Network, "{endpoint:?}: {err}");
        let text = err.to_string();
        assert!(text.contains("within 2 s"), "{endpoint:?}: {text}");
        assert!(text.contains(&server.base_url()), "{endpoint:?}: {text}");
        assert_clean(&err);
    }
}

#[tokio::test]
async fn a_hanging_server_is_bounded_by_the_request_timeout() {
    let server = HostileServer::start(Behaviour::hang()).await.unwrap();
    let client = TokenClient::new(ClientOptions {
        request_timeout: Duration::from_secs(1),
        retry: RetryPolicy::none(),
        ..ClientOptions::default()
    })
    .unwrap();
    let start = Instant::now();
    let err = client
        .acquire(&hostile_app(&server), &scope())
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(err.to_string().contains("within 1 s"), "{err}");
}

#[test]
fn an_authority_with_user_information_is_refused_without_echoing_it() {
    let password = "hunter2-authority-password";
    for value in [
        format!("https://user:{password}@login.example.com"),
        format!("https://{password}@login.example.com/"),
        format!("http://user:{password}@127.0.0.1:1"),
        format!("https://user:{password}@login.example.com:notaport"),
        format!("https://user:{password}@"),
    ] {
        let err = Authority::parse(&value).unwrap_err();
        let text = format!("{err} {err:?} {:?}", err.value());
        assert!(!text.contains(password), "{value}: {text}");
        assert!(text.starts_with("authority"), "{text}");
    }
    let err = Authority::parse(&format!("https://user:{password}@login.example.com")).unwrap_err();
    assert!(err.to_string().contains("user:password@"), "{err}");
}

#[tokio::test]
async fn the_github_oidc_request_token_goes_only_to_https_or_loopback() {
    let client = TokenClient::new(quick_options()).unwrap();
    let server = HostileServer::start(Behaviour::hang()).await.unwrap();
    for url in ["http://example.com/oidc?x=1", "http://10.0.0.1:8080/oidc"] {
        let app = AppCredential {
            credential: Credential::Federated(FederatedTokenSource::GitHubActions {
                request_url: url::Url::parse(url).unwrap(),
                request_token: SecretString::from("github-request-token"),
            }),
            ..hostile_app(&server)
        };
        let start = Instant::now();
        let err = client.acquire(&app, &scope()).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{url}: no request made"
        );
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
        let text = err.to_string();
        assert!(text.contains("ACTIONS_ID_TOKEN_REQUEST_URL"), "{text}");
        assert!(text.contains("https"), "{text}");
        assert!(!text.contains("github-request-token"), "{text}");
    }
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn credential_files_past_one_mib_are_refused_without_reading_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("token");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();

    let server = HostileServer::start(Behaviour::hang()).await.unwrap();
    let app = AppCredential {
        credential: Credential::Federated(FederatedTokenSource::File(zero.clone())),
        ..hostile_app(&server)
    };
    let start = Instant::now();
    let err = TokenClient::new(quick_options())
        .unwrap()
        .acquire(&app, &scope())
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind(), ErrorKind::CredentialSource, "{err}");
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
    assert_eq!(server.request_count(), 0);

    let err = entra_auth::CertificateCredential::from_files(
        &zero,
        &zero,
        entra_auth::AssertionAlgorithm::Ps256,
    )
    .unwrap_err();
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
}
