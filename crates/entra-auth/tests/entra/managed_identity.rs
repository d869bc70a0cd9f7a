//! Managed identity hosts: which one the environment describes (as the Azure SDKs detect them,
//! an incomplete one refused), each host's answer shape (App Service's `expires_on` only), the
//! Azure Arc agent's key-file challenge and its refusals, and that no managed identity request
//! goes through a proxy while the token endpoint's still does.

use std::collections::HashMap;
use std::path::Path;

use entra_auth::{
    AppCredential, Authority, ClientOptions, Credential, ErrorKind, ManagedIdentity, TokenClient,
};
use secrecy::{ExposeSecret, SecretString};
use testkit::{ArcAgent, Behaviour, EntraEmulator, HostileServer};
use time::OffsetDateTime;
use url::Url;

use crate::common::*;

const MI_CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn detect(pairs: &[(&str, &str)], client_id: Option<&str>) -> Result<ManagedIdentity, String> {
    ManagedIdentity::from_vars(
        vars(pairs),
        client_id.map(|id| id.parse().unwrap()),
        Path::new("/var/opt/azcmagent/tokens"),
    )
    .map_err(|e| e.to_string())
}

const ENDPOINT: &str = "http://127.0.0.1:41566/msi/token";
const ARC_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";

#[test]
fn each_host_is_detected_as_the_sdks_do() {
    match detect(
        &[("IDENTITY_ENDPOINT", ENDPOINT), ("IDENTITY_HEADER", "h")],
        None,
    ) {
        Ok(ManagedIdentity::AppService { endpoint, .. }) => assert_eq!(endpoint.as_str(), ENDPOINT),
        other => panic!("App Service expected: {other:?}"),
    }
    // App Service sets MSI_ENDPOINT/MSI_SECRET as aliases too: IDENTITY_* wins.
    let both = detect(
        &[
            ("IDENTITY_ENDPOINT", ENDPOINT),
            ("IDENTITY_HEADER", "h"),
            ("MSI_ENDPOINT", ENDPOINT),
            ("MSI_SECRET", "h"),
        ],
        None,
    );
    assert!(
        matches!(both, Ok(ManagedIdentity::AppService { .. })),
        "{both:?}"
    );
    match detect(
        &[
            ("IDENTITY_ENDPOINT", ARC_ENDPOINT),
            ("IMDS_ENDPOINT", "http://localhost:40342"),
        ],
        None,
    ) {
        Ok(ManagedIdentity::AzureArc { endpoint, key_dir }) => {
            assert_eq!(endpoint.as_str(), ARC_ENDPOINT);
            assert_eq!(key_dir, Path::new(entra_auth::ARC_TOKEN_DIR));
        }
        other => panic!("Azure Arc expected: {other:?}"),
    }
    match detect(&[], Some(MI_CLIENT)) {
        Ok(ManagedIdentity::Imds {
            endpoint,
            client_id,
        }) => {
            assert_eq!(endpoint.as_str(), entra_auth::IMDS_ENDPOINT);
            assert_eq!(client_id.unwrap().as_str(), MI_CLIENT);
        }
        other => panic!("IMDS expected: {other:?}"),
    }
    // Empty values count as unset, as in the SDKs.
    let empty = detect(&[("IDENTITY_ENDPOINT", ""), ("IDENTITY_HEADER", " ")], None);
    assert!(
        matches!(empty, Ok(ManagedIdentity::Imds { .. })),
        "{empty:?}"
    );
    // MSAL's AZURE_POD_IDENTITY_AUTHORITY_HOST moves IMDS.
    match detect(
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:2579")],
        None,
    ) {
        Ok(ManagedIdentity::Imds { endpoint, .. }) => assert_eq!(
            endpoint.as_str(),
            "http://127.0.0.1:2579/metadata/identity/oauth2/token"
        ),
        other => panic!("IMDS at the pod identity host expected: {other:?}"),
    }
}

/// Variables, a client id, and what the refusal must say.
type Refusal<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a [&'a str]);

/// Where MSAL would silently fall back to IMDS, an incomplete host is refused, naming the
/// variable and what it lacks.
#[test]
fn an_incomplete_or_unsupported_host_is_refused_clearly() {
    let cases: &[Refusal<'_>] = &[
        (
            &[("IDENTITY_ENDPOINT", ENDPOINT)],
            None,
            &[
                "IDENTITY_ENDPOINT",
                "without IDENTITY_HEADER",
                "IMDS_ENDPOINT",
            ],
        ),
        (
            &[("IDENTITY_HEADER", "h")],
            None,
            &["IDENTITY_HEADER", "IDENTITY_ENDPOINT is not"],
        ),
        (
            &[("IMDS_ENDPOINT", "http://localhost:40342")],
            None,
            &["IMDS_ENDPOINT", "IDENTITY_ENDPOINT is not", "Azure Arc"],
        ),
        (
            &[
                ("IDENTITY_ENDPOINT", ARC_ENDPOINT),
                ("IMDS_ENDPOINT", "http://localhost:40342"),
            ],
            Some(MI_CLIENT),
            &["user-assigned", "Arc"],
        ),
        (
            &[
                ("IDENTITY_ENDPOINT", ENDPOINT),
                ("IDENTITY_HEADER", "h"),
                ("IDENTITY_SERVER_THUMBPRINT", "AB12"),
            ],
            None,
            &["Service Fabric", "not supported"],
        ),
        (
            &[("MSI_ENDPOINT", "http://localhost:50342/oauth2/token")],
            None,
            &["MSI_ENDPOINT", "Cloud Shell", "not supported"],
        ),
        (
            &[("IDENTITY_ENDPOINT", "not a url"), ("IDENTITY_HEADER", "h")],
            None,
            &["IDENTITY_ENDPOINT", "not an http(s) URL"],
        ),
    ];
    for (pairs, client_id, needles) in cases {
        let err = detect(pairs, *client_id).expect_err(&format!("{pairs:?} is refused"));
        for needle in *needles {
            assert!(err.contains(needle), "{needle:?} in {err:?} for {pairs:?}");
        }
    }
    let secret_header = detect(&[("IDENTITY_HEADER", "header-secret-value")], None).unwrap_err();
    assert!(
        !secret_header.contains("header-secret-value"),
        "{secret_header}"
    );
}

async fn emulator_with_identity() -> (EntraEmulator, testkit::ManagedIdentity) {
    let entra = emulator(false).await;
    let identity = testkit::ManagedIdentity::new(TENANT, MI_CLIENT);
    entra.enable_managed_identity(identity.clone());
    (entra, identity)
}

fn mi_app(entra: &EntraEmulator, identity: ManagedIdentity) -> AppCredential {
    AppCredential::managed_identity(authority(entra), identity)
}

fn app_service(entra: &EntraEmulator, identity: &testkit::ManagedIdentity) -> ManagedIdentity {
    ManagedIdentity::AppService {
        endpoint: entra.identity_endpoint().parse().unwrap(),
        header: SecretString::from(identity.identity_header.clone()),
        client_id: None,
    }
}

fn arc(endpoint: &str, key_dir: &Path) -> ManagedIdentity {
    ManagedIdentity::AzureArc {
        endpoint: endpoint.parse().unwrap(),
        key_dir: key_dir.to_owned(),
    }
}

/// App Service's `2019-08-01` answer has `expires_on` (Unix seconds in a string) and no
/// `expires_in`: the expiry comes from `expires_on`.
#[tokio::test]
async fn the_app_service_answer_shape_is_handled() {
    let (entra, identity) = emulator_with_identity().await;
    let before = OffsetDateTime::now_utc();
    let token = client(&entra)
        .acquire(&mi_app(&entra, app_service(&entra, &identity)), &scope())
        .await
        .expect("a token from the App Service endpoint");
    let lifetime = (token.expires_on() - before).whole_seconds();
    assert!((3500..=3600).contains(&lifetime), "lifetime {lifetime} s");
    entra
        .validate_bearer(token.secret().expose_secret(), RESOURCE)
        .expect("the emulator's token");

    // The documented sample exactly, from a canned server: an expiry 42 minutes ahead.
    let expires_on = OffsetDateTime::now_utc().unix_timestamp() + 42 * 60;
    let server = HostileServer::start(Behaviour::json(
        200,
        &serde_json::json!({
            "access_token": "eyJ0eXAi.canned.token",
            "expires_on": expires_on.to_string(),
            "resource": RESOURCE,
            "token_type": "Bearer",
            "client_id": MI_CLIENT,
        }),
    ))
    .await
    .unwrap();
    let canned = ManagedIdentity::AppService {
        endpoint: server.url("/msi/token").parse().unwrap(),
        header: SecretString::from("h-value"),
        client_id: None,
    };
    let token = client(&entra)
        .acquire(&mi_app(&entra, canned), &scope())
        .await
        .expect("the documented shape is a token");
    assert_eq!(token.expires_on().unix_timestamp(), expires_on);
    let request = &server.requests()[0];
    assert_eq!(request.header("x-identity-header"), Some("h-value"));
    assert!(
        request
            .query
            .as_deref()
            .unwrap()
            .contains("api-version=2019-08-01"),
        "{request:?}"
    );
}

#[tokio::test]
async fn arc_challenge_flow_gets_a_token() {
    let (entra, _) = emulator_with_identity().await;
    let dir = tempfile::tempdir().unwrap();
    entra.enable_arc_agent(ArcAgent::new(dir.path()));
    let (logs, _guard) = Logs::capture();
    let token = client(&entra)
        .acquire(
            &mi_app(&entra, arc(&entra.arc_identity_endpoint(), dir.path())),
            &scope(),
        )
        .await
        .expect("a token after the challenge");
    let issued = entra
        .validate_bearer(token.secret().expose_secret(), RESOURCE)
        .unwrap();
    assert_eq!(issued.client_id, MI_CLIENT);
    let requests = entra.requests();
    assert_eq!(
        requests.len(),
        2,
        "challenge, then the answer: {requests:?}"
    );
    assert_eq!(requests[0].status, Some(401));
    assert_eq!(requests[1].status, Some(200));
    assert_eq!(requests[1].query["api-version"], "2019-11-01");
    assert_eq!(requests[1].query["resource"], RESOURCE);
    let key_file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let key = std::fs::read_to_string(key_file).unwrap();
    assert_no_secret(
        &logs.text(),
        &[
            ("arc key", key.as_str()),
            ("access token", token.secret().expose_secret()),
        ],
    );
}

/// A server at IDENTITY_ENDPOINT that challenges with `realm`, and the error the client gives.
async fn arc_refusal(key_dir: &Path, realm: &str) -> (entra_auth::Error, HostileServer) {
    let server = HostileServer::start(
        Behaviour::json(401, &serde_json::json!({"error": "unauthorized"}))
            .with_header("www-authenticate", &format!("Basic realm={realm}")),
    )
    .await
    .unwrap();
    let identity = arc(&server.url("/metadata/identity/oauth2/token"), key_dir);
    let app =
        AppCredential::managed_identity(Authority::parse(&server.base_url()).unwrap(), identity);
    let err = TokenClient::new(ClientOptions::default())
        .unwrap()
        .acquire(&app, &scope())
        .await
        .expect_err("refused");
    (err, server)
}

#[tokio::test]
async fn arc_refuses_key_files_it_may_not_read() {
    let root = tempfile::tempdir().unwrap();
    let key_dir = root.path().join("tokens");
    std::fs::create_dir(&key_dir).unwrap();
    let elsewhere = root.path().join("elsewhere.key");
    std::fs::write(&elsewhere, "outside-secret-content").unwrap();
    let oversized = key_dir.join("big.key");
    std::fs::write(&oversized, "x".repeat(4097)).unwrap();
    let exactly = key_dir.join("limit.key");
    std::fs::write(&exactly, "y".repeat(4096)).unwrap();
    let not_key = key_dir.join("secret.txt");
    std::fs::write(&not_key, "txt-secret-content").unwrap();
    let link = key_dir.join("link.key");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let fifo = key_dir.join("fifo.key");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let subdir = key_dir.join("sub");
    std::fs::create_dir(&subdir).unwrap();
    std::fs::write(subdir.join("nested.key"), "nested-secret").unwrap();
    let dotdot = format!("{}/../elsewhere.key", key_dir.display());

    let cases: Vec<(String, &str)> = vec![
        (
            elsewhere.display().to_string(),
            "is not in the agent's token directory",
        ),
        (dotdot, "is not in the agent's token directory"),
        (
            subdir.join("nested.key").display().to_string(),
            "is not in the agent's token directory",
        ),
        (
            "elsewhere.key".into(),
            "is not in the agent's token directory",
        ),
        (not_key.display().to_string(), "is not named *.key"),
        (oversized.display().to_string(), "larger than 4096 bytes"),
        (link.display().to_string(), "is not a regular file"),
        (fifo.display().to_string(), "is not a regular file"),
    ];
    for (realm, why) in cases {
        let (err, server) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            arc_refusal(&key_dir, &realm),
        )
        .await
        .unwrap_or_else(|_| panic!("{realm}: the client hung"));
        assert_eq!(err.kind(), ErrorKind::CredentialSource, "{realm}: {err}");
        let text = err.to_string();
        assert!(text.contains(why), "{why:?} in {text}");
        assert!(text.contains(&realm), "the path is named: {text}");
        assert!(!err.is_retryable(), "{err}");
        let requests = server.requests();
        assert_eq!(requests.len(), 1, "{realm}: no second request");
        assert!(requests[0].header("authorization").is_none());
        for content in [
            "outside-secret-content",
            "txt-secret-content",
            "nested-secret",
        ] {
            assert!(!text.contains(content), "{text}");
        }
    }

    // 4096 bytes is allowed: the request is repeated with it, and the server's second 401 is
    // reported as a refusal of the key.
    let (err, server) = arc_refusal(&key_dir, &exactly.display().to_string()).await;
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("refused the key"), "{err}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[1].header("authorization"),
        Some(format!("Basic {}", "y".repeat(4096)).as_str())
    );
    assert!(!err.to_string().contains(&"y".repeat(64)), "{err}");
}

#[tokio::test]
async fn arc_without_a_challenge_header_is_explained() {
    let server = HostileServer::start(Behaviour::json(401, &serde_json::json!({})))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = AppCredential::managed_identity(
        Authority::parse(&server.base_url()).unwrap(),
        arc(&server.url("/metadata/identity/oauth2/token"), dir.path()),
    );
    let err = TokenClient::new(ClientOptions::default())
        .unwrap()
        .acquire(&app, &scope())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(err.to_string().contains("WWW-Authenticate"), "{err}");
}

const CHILD_ENTRA: &str = "MI_TEST_ENTRA_URL";
const CHILD_HEADER: &str = "MI_TEST_IDENTITY_HEADER";
const CHILD_ARC_DIR: &str = "MI_TEST_ARC_DIR";
const PROXIED_TOKEN: &str = "token-from-the-proxy";

/// With `HTTP_PROXY` pointing at a recording server, the managed identity requests (IMDS, App
/// Service, Arc) go straight to their endpoints and the proxy sees none of them; the token
/// endpoint's request still goes through the proxy.
#[tokio::test]
async fn managed_identity_requests_never_use_the_proxy() {
    if in_child() {
        let base = std::env::var(CHILD_ENTRA).unwrap();
        let header = std::env::var(CHILD_HEADER).unwrap();
        let arc_dir = std::env::var(CHILD_ARC_DIR).unwrap();
        let client = TokenClient::new(ClientOptions::default()).unwrap();
        let authority = Authority::parse(&base).unwrap();
        let url = |path: &str| Url::parse(&format!("{base}{path}")).unwrap();
        let identities = [
            ManagedIdentity::Imds {
                endpoint: url("/metadata/identity/oauth2/token"),
                client_id: None,
            },
            ManagedIdentity::AppService {
                endpoint: url("/msi/token"),
                header: SecretString::from(header),
                client_id: None,
            },
            ManagedIdentity::AzureArc {
                endpoint: url("/arc/metadata/identity/oauth2/token"),
                key_dir: arc_dir.into(),
            },
        ];
        for identity in identities {
            let what = format!("{identity:?}");
            let app = AppCredential::managed_identity(authority.clone(), identity);
            client
                .acquire(&app, &scope())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let secret_app = AppCredential {
            authority,
            tenant: TENANT.parse().unwrap(),
            client_id: CLIENT.parse().unwrap(),
            credential: Credential::ClientSecret(SECRET.into()),
        };
        let token = client.acquire(&secret_app, &scope()).await.unwrap();
        assert_eq!(
            token.secret().expose_secret(),
            PROXIED_TOKEN,
            "the token endpoint's answer came from the proxy"
        );
        return;
    }
    let (entra, identity) = emulator_with_identity().await;
    let dir = tempfile::tempdir().unwrap();
    entra.enable_arc_agent(ArcAgent::new(dir.path()));
    let proxy = HostileServer::start(Behaviour::json(
        200,
        &serde_json::json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "access_token": PROXIED_TOKEN,
        }),
    ))
    .await
    .unwrap();
    run_in_child(
        "managed_identity::managed_identity_requests_never_use_the_proxy",
        &[
            ("HTTP_PROXY", proxy.base_url()),
            ("http_proxy", proxy.base_url()),
            ("ALL_PROXY", proxy.base_url()),
            (CHILD_ENTRA, entra.base_url()),
            (CHILD_HEADER, identity.identity_header.clone()),
            (CHILD_ARC_DIR, dir.path().display().to_string()),
        ],
        &["NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"],
    )
    .await;
    let proxied = proxy.requests();
    assert_eq!(
        proxied.len(),
        1,
        "only the token endpoint's request reached the proxy: {proxied:?}"
    );
    assert_eq!(proxied[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert!(
        !proxied[0].mentions(&identity.identity_header),
        "the identity header never reached the proxy"
    );
    assert_eq!(
        entra.issued_tokens().len(),
        3,
        "IMDS, App Service and Arc answered directly"
    );
    assert_eq!(
        entra.token_request_count(),
        0,
        "the token request went to the proxy"
    );
}
