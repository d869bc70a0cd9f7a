//! `secret-sync token --managed-identity` as a user meets it on each Azure host: IMDS (moved to
//! the emulator with MSAL's `AZURE_POD_IDENTITY_AUTHORITY_HOST`), App Service's answer shape,
//! Azure Arc's key-file challenge and its refusals, an incomplete host environment refused
//! before any request, and `HTTP_PROXY`: the managed identity requests never reach a proxy
//! (a recording `HostileServer`) while the token endpoint's still go through it.

use serde_json::Value;
use testkit::{AppRegistration, ArcAgent, Behaviour, EntraEmulator, HostileServer};

use crate::support::{Run, now_unix, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const MI_CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const CLIENT: &str = "5e6f7a8b-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~emulated.client.secret-value";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const PROXIED_TOKEN: &str = "eyJ.token-the-proxy-made-up.sig";

fn mi_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "token",
        "--managed-identity",
        "--scope",
        GRAPH,
        "--output",
        "json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

async fn token(extra: &[&str], env: &[(&str, &str)]) -> Run {
    let args = mi_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    secret_sync(&args, env).await
}

async fn emulator_with_identity() -> (EntraEmulator, testkit::ManagedIdentity) {
    let entra = EntraEmulator::start().await.unwrap();
    let identity = testkit::ManagedIdentity::new(TENANT, MI_CLIENT);
    entra.enable_managed_identity(identity.clone());
    (entra, identity)
}

/// A recording proxy: it answers every request with a made-up token.
async fn recording_proxy() -> HostileServer {
    HostileServer::start(Behaviour::json(
        200,
        &serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "access_token": PROXIED_TOKEN}),
    ))
    .await
    .unwrap()
}

fn printed(run: &Run) -> Value {
    run.assert_code(0);
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|_| panic!("JSON: {}", run.stdout))
}

/// The printed token is the one the emulator issued (not the proxy's).
fn assert_issued(entra: &EntraEmulator, run: &Run) {
    let printed = printed(run);
    let token = printed["access_token"].as_str().unwrap();
    assert_ne!(
        token, PROXIED_TOKEN,
        "the answer did not come from the proxy"
    );
    entra
        .validate_bearer(token, "https://graph.microsoft.com")
        .expect("the printed token is the emulator's");
}

#[tokio::test]
async fn imds_app_service_and_arc_never_go_through_http_proxy() {
    let (entra, identity) = emulator_with_identity().await;
    let proxy = recording_proxy().await;
    let proxy_url = proxy.base_url();
    let proxies = [
        ("HTTP_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
    ];
    let base = entra.base_url();
    let imds = [
        &proxies[..],
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", base.as_str())],
    ]
    .concat();
    let run = token(&[], &imds).await;
    assert_issued(&entra, &run);

    let endpoint = entra.identity_endpoint();
    let app_service = [
        &proxies[..],
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IDENTITY_HEADER", identity.identity_header.as_str()),
        ],
    ]
    .concat();
    let run = token(&[], &app_service).await;
    assert_issued(&entra, &run);
    run.assert_no_leak(&[&identity.identity_header]);

    let dir = tempfile::tempdir().unwrap();
    entra.enable_arc_agent(ArcAgent::new(dir.path()));
    let (arc_endpoint, arc_imds) = (entra.arc_identity_endpoint(), entra.arc_imds_endpoint());
    let arc = [
        &proxies[..],
        &[
            ("IDENTITY_ENDPOINT", arc_endpoint.as_str()),
            ("IMDS_ENDPOINT", arc_imds.as_str()),
        ],
    ]
    .concat();
    let dir_arg = dir.path().display().to_string();
    let run = token(&["--arc-token-dir", &dir_arg], &arc).await;
    assert_issued(&entra, &run);

    assert!(
        proxy.requests().is_empty(),
        "the proxy saw managed identity requests: {:?}",
        proxy.requests()
    );
    assert_eq!(entra.issued_tokens().len(), 3);
}

#[tokio::test]
async fn the_token_endpoint_still_goes_through_http_proxy() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let proxy = recording_proxy().await;
    let base = entra.base_url();
    let run = secret_sync(
        &[
            "token",
            "--tenant-id",
            TENANT,
            "--client-id",
            CLIENT,
            "--client-secret-env",
            "APP_SECRET",
            "--authority",
            &base,
            "--scope",
            GRAPH,
        ],
        &[("APP_SECRET", SECRET), ("HTTP_PROXY", &proxy.base_url())],
    )
    .await;
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), PROXIED_TOKEN, "the proxy answered");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(entra.token_request_count(), 0, "nothing bypassed the proxy");
}

/// App Service answers `expires_on` only: the printed expiry is the one it sent.
#[tokio::test]
async fn the_app_service_answer_shape_gives_the_expiry() {
    let expires_on = now_unix() + 47 * 60;
    let server = HostileServer::start(Behaviour::json(
        200,
        &serde_json::json!({
            "access_token": "eyJ.app-service-token.sig",
            "expires_on": expires_on.to_string(),
            "resource": "https://graph.microsoft.com",
            "token_type": "Bearer",
            "client_id": MI_CLIENT,
        }),
    ))
    .await
    .unwrap();
    let endpoint = server.url("/msi/token");
    let run = token(
        &[],
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IDENTITY_HEADER", "identity-header-value"),
        ],
    )
    .await;
    let printed = printed(&run);
    assert_eq!(
        printed["expires_on"].as_i64(),
        Some(expires_on),
        "{printed}"
    );
    assert_eq!(printed["access_token"], "eyJ.app-service-token.sig");
}

#[tokio::test]
async fn arc_challenge_flow_prints_the_token() {
    let (entra, _) = emulator_with_identity().await;
    let dir = tempfile::tempdir().unwrap();
    entra.enable_arc_agent(ArcAgent::new(dir.path()));
    let (endpoint, imds) = (entra.arc_identity_endpoint(), entra.arc_imds_endpoint());
    let dir_arg = dir.path().display().to_string();
    let run = token(
        &["--arc-token-dir", &dir_arg],
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IMDS_ENDPOINT", imds.as_str()),
        ],
    )
    .await;
    assert_issued(&entra, &run);
    let key_file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let key = std::fs::read_to_string(key_file).unwrap();
    run.assert_no_leak(&[&key]);
}

/// The default token directory is the agent's: the emulator's key file (in a temp dir) is
/// outside it, so it is not read, and no request carries it.
#[tokio::test]
async fn arc_refuses_a_key_file_outside_the_agents_directory() {
    let (entra, _) = emulator_with_identity().await;
    let dir = tempfile::tempdir().unwrap();
    entra.enable_arc_agent(ArcAgent::new(dir.path()));
    let (endpoint, imds) = (entra.arc_identity_endpoint(), entra.arc_imds_endpoint());
    let run = token(
        &[],
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IMDS_ENDPOINT", imds.as_str()),
        ],
    )
    .await;
    run.assert_refused(&[
        "is not in the agent's token directory /var/opt/azcmagent/tokens",
        &dir.path().display().to_string(),
    ]);
    assert_eq!(
        entra.requests().len(),
        1,
        "the challenge only: {:?}",
        entra.requests()
    );
    assert!(entra.issued_tokens().is_empty());
}

#[tokio::test]
async fn arc_refuses_an_oversized_or_non_regular_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.key");
    std::fs::write(&big, "k".repeat(5000)).unwrap();
    let fifo = dir.path().join("fifo.key");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let dir_arg = dir.path().display().to_string();
    for (file, why) in [
        (&big, "is larger than 4096 bytes"),
        (&fifo, "is not a regular file"),
    ] {
        let server =
            HostileServer::start(Behaviour::json(401, &serde_json::json!({})).with_header(
                "www-authenticate",
                &format!("Basic realm={}", file.display()),
            ))
            .await
            .unwrap();
        let endpoint = server.url("/metadata/identity/oauth2/token");
        let run = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            token(
                &["--arc-token-dir", &dir_arg],
                &[
                    ("IDENTITY_ENDPOINT", endpoint.as_str()),
                    ("IMDS_ENDPOINT", &server.base_url()),
                ],
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{} made the binary hang", file.display()));
        run.assert_refused(&[why, &file.display().to_string()]);
        assert_eq!(server.requests().len(), 1, "no second request");
    }
}

/// IDENTITY_ENDPOINT without IDENTITY_HEADER or IMDS_ENDPOINT used to fall back to IMDS: it
/// is a usage error now, naming what is missing, and nothing is asked of anyone.
#[tokio::test]
async fn an_incomplete_managed_identity_environment_is_refused_clearly() {
    let server = recording_proxy().await;
    let endpoint = server.url("/msi/token");
    for (env, needles) in [
        (
            vec![("IDENTITY_ENDPOINT", endpoint.as_str())],
            vec![
                "IDENTITY_ENDPOINT",
                "without IDENTITY_HEADER",
                "IMDS_ENDPOINT",
            ],
        ),
        (
            vec![("IDENTITY_HEADER", "identity-header-value")],
            vec!["IDENTITY_HEADER", "IDENTITY_ENDPOINT is not"],
        ),
        (
            vec![("IMDS_ENDPOINT", "http://localhost:40342")],
            vec!["IMDS_ENDPOINT", "Azure Arc"],
        ),
    ] {
        let proxy = server.base_url();
        let env = [&env[..], &[("HTTP_PROXY", proxy.as_str())]].concat();
        let run = token(&[], &env).await;
        run.assert_code(2);
        for needle in needles {
            assert!(
                run.stderr.contains(needle),
                "{needle:?} in:\n{}",
                run.stderr
            );
        }
        run.assert_no_leak(&["identity-header-value"]);
    }
    // A user-assigned identity on Arc is refused the same way.
    let run = token(
        &["--client-id", MI_CLIENT],
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IMDS_ENDPOINT", "http://localhost:40342"),
        ],
    )
    .await;
    run.assert_code(2);
    assert!(run.stderr.contains("user-assigned"), "{}", run.stderr);
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}
