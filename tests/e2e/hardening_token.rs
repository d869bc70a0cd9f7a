//! `secret-sync token` against hostile servers (testkit's `HostileServer`) and hostile input:
//! absurd lifetimes and `Retry-After` values end in a clear error and exit 1, never a panic
//! (exit 101); a 200 MB answer is refused after at most a few MiB, naming the server, from the
//! token endpoint, the App Service identity endpoint and the GitHub OIDC endpoint alike; a
//! password in `--authority` / `AZURE_AUTHORITY_HOST` never reaches the output; the GitHub
//! request token is not sent over plain http to a host that is not loopback.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Behaviour, HostileServer};

use crate::support::{Run, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~hostile.client.secret-value";
const ACCESS_TOKEN: &str = "eyJhostile.printed-access-token.sig";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const TOKEN_PATH: &str = "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token";

/// `secret-sync token` with a client secret against `authority`.
async fn token_with_secret(authority: &str) -> Run {
    let mut args = crate::support::token_args(TENANT, CLIENT, authority);
    args.extend(["--client-secret-env", "APP_SECRET"]);
    secret_sync(&args, &[("APP_SECRET", SECRET)]).await
}

/// `secret-sync token --github-oidc` against `authority`, with the Actions request URL and
/// request token set.
async fn token_with_github_oidc(authority: &str, request_url: &str, request_token: &str) -> Run {
    let mut args = crate::support::token_args(TENANT, CLIENT, authority);
    args.push("--github-oidc");
    secret_sync(
        &args,
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", request_url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", request_token),
        ],
    )
    .await
}

/// Exit 1 with `needle` on stderr, nothing on stdout, no secret anywhere.
fn assert_failed_with(run: &Run, needle: &str) {
    run.assert_refused(&[needle]);
    run.assert_no_leak(&[SECRET, ACCESS_TOKEN]);
}

#[tokio::test]
async fn an_expires_in_of_a_trillion_seconds_is_refused_with_exit_1() {
    for expires_in in [
        json!(1e12),
        json!(1_000_000_000_000u64),
        json!("1000000000000"),
    ] {
        let server = HostileServer::start(Behaviour::json(
            200,
            &json!({"token_type": "Bearer", "access_token": ACCESS_TOKEN, "expires_in": expires_in}),
        ))
        .await
        .unwrap();
        let run = token_with_secret(&server.base_url()).await;
        assert_failed_with(&run, "longer than the 48 h a token may live");
        assert_eq!(
            server.request_count(),
            1,
            "a malformed answer is not retried"
        );
    }
}

#[tokio::test]
async fn a_retry_after_of_ten_thousand_years_ends_at_once_with_exit_1() {
    let server = HostileServer::start(
        Behaviour::json(
            429,
            &json!({"error": "temporarily_unavailable", "error_description": "AADSTS50196: throttled"}),
        )
        .with_header("retry-after", "300000000000"),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let run = token_with_secret(&server.base_url()).await;
    assert_failed_with(&run, "asked to wait 300000000000 s");
    assert!(run.stderr.contains("no retry was made"), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.request_count(), 1);
}

const HUGE: u64 = 200 << 20;

/// The server sent at most this much of its 200 MB: the binary read incrementally and stopped.
fn assert_stopped_early(server: &HostileServer) {
    let sent = server.body_bytes_sent();
    assert!(
        sent < 16 << 20,
        "the server sent {sent} of {HUGE} bytes: the body was read far past the 1 MiB cap"
    );
}

/// A server answering HTTP 200 with a 200 MB JSON body and no Content-Length.
async fn huge_json_without_length() -> HostileServer {
    HostileServer::start(
        Behaviour::huge_body(200, "application/json", HUGE).without_content_length(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_200_mb_token_answer_is_refused_naming_the_server() {
    for with_length in [true, false] {
        let mut behaviour = Behaviour::huge_body(200, "application/json", HUGE);
        if !with_length {
            behaviour = behaviour.without_content_length();
        }
        let server = HostileServer::start(behaviour).await.unwrap();
        let run = token_with_secret(&server.base_url()).await;
        assert_failed_with(
            &run,
            &format!(
                "the token endpoint {} answered HTTP 200 with a body of more than 1 MiB",
                server.base_url()
            ),
        );
        let requests = server.requests();
        assert_eq!(requests.len(), 1, "not retried");
        assert_eq!(requests[0].path, TOKEN_PATH);
        assert_stopped_early(&server);
    }
}

#[tokio::test]
async fn a_200_mb_managed_identity_answer_is_refused_naming_the_server() {
    let server = huge_json_without_length().await;
    let endpoint = server.url("/msi/token");
    let run = secret_sync(
        &["token", "--managed-identity", "--scope", GRAPH],
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IDENTITY_HEADER", "identity-header-secret-value"),
        ],
    )
    .await;
    assert_failed_with(
        &run,
        &format!(
            "the App Service managed identity endpoint {}",
            server.base_url()
        ),
    );
    run.assert_no_leak(&["identity-header-secret-value"]);
    assert_stopped_early(&server);
}

#[tokio::test]
async fn a_200_mb_github_oidc_answer_is_refused_naming_the_server() {
    let server = huge_json_without_length().await;
    let request_url = server.url("/oidc?api-version=2.0");
    let run = token_with_github_oidc(
        &server.base_url(),
        request_url.as_str(),
        "gha-request-token-9191",
    )
    .await;
    assert_failed_with(
        &run,
        &format!("the GitHub Actions OIDC endpoint {}", server.base_url()),
    );
    run.assert_no_leak(&["gha-request-token-9191"]);
    assert_stopped_early(&server);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "the token endpoint was never asked");
    assert_eq!(requests[0].path, "/oidc");
}

#[tokio::test]
async fn a_password_in_the_authority_never_reaches_the_output() {
    let password = "hunter2-authority-password";
    let server = HostileServer::start(Behaviour::hang()).await.unwrap();
    let port = server.port();
    for authority in [
        format!("https://user:{password}@login.example.com"),
        format!("http://user:{password}@127.0.0.1:{port}"),
        format!("https://user:{password}@login.example.com:notaport/"),
    ] {
        // As a flag.
        let run = token_with_secret(&authority).await;
        run.assert_code(2);
        run.assert_no_leak(&[password, SECRET]);
        assert!(run.stderr.contains("--authority"), "{}", run.stderr);
        // From the environment, as the Azure SDKs read it.
        let run = secret_sync(
            &[
                "token",
                "--tenant-id",
                TENANT,
                "--client-id",
                CLIENT,
                "--scope",
                GRAPH,
                "--client-secret-env",
                "APP_SECRET",
            ],
            &[("APP_SECRET", SECRET), ("AZURE_AUTHORITY_HOST", &authority)],
        )
        .await;
        run.assert_code(2);
        run.assert_no_leak(&[password, SECRET]);
        assert!(
            run.stderr.contains("AZURE_AUTHORITY_HOST"),
            "{}",
            run.stderr
        );
    }
    let run = token_with_secret(&format!("https://user:{password}@login.example.com")).await;
    assert!(run.stderr.contains("user:password@"), "{}", run.stderr);
    assert_eq!(server.request_count(), 0, "nothing was sent anywhere");
}

#[tokio::test]
async fn the_github_request_token_is_not_sent_over_plain_http_off_loopback() {
    let server = HostileServer::start(Behaviour::hang()).await.unwrap();
    for request_url in [
        "http://token.actions.example.invalid/oidc?api-version=2.0",
        "http://10.255.255.1:8080/oidc",
    ] {
        let started = Instant::now();
        let run =
            token_with_github_oidc(&server.base_url(), request_url, "gha-request-token-7777").await;
        run.assert_code(2);
        run.assert_no_leak(&["gha-request-token-7777"]);
        assert!(
            run.stderr
                .contains("ACTIONS_ID_TOKEN_REQUEST_URL: is not an https URL"),
            "{}",
            run.stderr
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no connection was tried"
        );
    }
    assert_eq!(server.request_count(), 0);
}
