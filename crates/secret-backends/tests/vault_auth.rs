//! The Vault backend against a real OpenBao dev server, beyond the conformance suite: the
//! login methods (AppRole, JWT), keeping the Vault token valid over time (renewal, re-login),
//! throttling by a real rate-limit quota, namespaces, and interop - what the backend wrote is
//! read back with the `bao` CLI and plain HTTP, and what the CLI wrote is read by the backend.

use std::process::Command;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use secret_backends::WritePrecondition;
use secret_backends::conformance::{self, Harness};
use secret_backends::vault::{
    JwtSource, KvVersion, LoginSecret, RetryPolicy, VaultAuth, VaultOptions, VaultStore,
};
use secret_backends::{BackendError, ErrorKind, Format, SecretStore, TokenPayload, WriteOutcome};
use serde_json::json;
use testkit::real::{JwtRole, OpenBao};
use time::OffsetDateTime;

const WRITER_POLICY: &str = r#"
path "secret/*" { capabilities = ["create", "read", "update", "list"] }
path "kv1/*" { capabilities = ["create", "read", "update", "list"] }
"#;

fn payload(token: &str) -> TokenPayload {
    TokenPayload::new(
        SecretString::from(token),
        "Bearer",
        OffsetDateTime::now_utc() + time::Duration::hours(1),
        "secret-sync",
        Format::Raw,
    )
    .unwrap()
}

/// Writes `payload(token)` under `name`, with no read before it.
async fn write(store: &VaultStore, name: &str, token: &str) -> Result<WriteOutcome, BackendError> {
    store
        .write(name, &payload(token), &WritePrecondition::unread(false))
        .await
}

fn token_store(bao: &OpenBao, mount: &str, token: SecretString) -> VaultStore {
    VaultStore::new(
        "ops-vault",
        VaultOptions::new(
            bao.address(),
            mount,
            VaultAuth::Token {
                token: token.into(),
            },
        ),
    )
    .unwrap()
}

fn approle_store(bao: &OpenBao, role_id: &str, secret_id: SecretString) -> VaultStore {
    let auth = VaultAuth::AppRole {
        mount: "approle".to_owned(),
        role_id: role_id.to_owned(),
        secret_id: secret_id.into(),
    };
    VaultStore::new(
        "ops-vault",
        VaultOptions::new(bao.address(), "secret", auth),
    )
    .unwrap()
}

#[tokio::test]
async fn approle_login_writes_and_a_wrong_secret_id_is_refused_without_echo() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let creds = bao.enable_approle("approle", "sync", &["writer"]);
    let store = approle_store(&bao, &creds.role_id, creds.secret_id.clone());
    let outcome = write(&store, "apps/graph-token", "approle.token.value")
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Created);
    let read = store
        .read("apps/graph-token", Some("access_token"))
        .await
        .unwrap();
    assert_eq!(read.expose_secret(), "approle.token.value");

    let wrong = "00000000-wrong-secret-id";
    let bad = approle_store(&bao, &creds.role_id, SecretString::from(wrong));
    let err = bad.read("apps/graph-token", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("approle login was refused"), "{text}");
    assert!(
        !text.contains(wrong),
        "the error shows the secret id: {text}"
    );
}

#[tokio::test]
async fn approle_store_passes_the_basic_conformance_checks() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let creds = bao.enable_approle("approle", "sync", &["writer"]);
    let counter = std::sync::atomic::AtomicU64::new(0);
    let harness = Harness {
        store: Box::new(approle_store(&bao, &creds.role_id, creds.secret_id.clone())),
        fresh_name: Box::new(move || {
            format!(
                "approle/t-{}",
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        }),
        formats: vec![Format::Raw, Format::Json],
        read_back: |_| Some("access_token"),
        invalid_name: "/absolute".to_owned(),
    };
    conformance::run_basic(&harness).await;
}

#[tokio::test]
async fn a_policy_without_write_access_is_forbidden() {
    let bao = OpenBao::start();
    bao.put_policy("reader", r#"path "secret/*" { capabilities = ["read"] }"#);
    let creds = bao.enable_approle("approle", "reader", &["reader"]);
    let store = approle_store(&bao, &creds.role_id, creds.secret_id.clone());
    let err = write(&store, "apps/x", "some.token.value")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(
        err.to_string().contains("policies do not allow this"),
        "{err}"
    );
    assert!(!format!("{err:?}").contains("some.token.value"));
}

#[tokio::test]
async fn jwt_login_reads_the_token_from_a_file() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let key = rcgen::KeyPair::generate().unwrap();
    let subject = "repo:org/repo:ref:refs/heads/main";
    bao.enable_jwt(
        "jwt",
        &JwtRole {
            role: "ci",
            public_key_pem: &key.public_key_pem(),
            bound_audience: "openbao",
            bound_subject: subject,
            policies: &["writer"],
        },
    );
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({"iss": "https://issuer.test", "aud": "openbao", "sub": subject, "iat": now, "exp": now + 300});
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = dir.path().join("oidc-token");
    std::fs::write(&jwt_file, format!("{jwt}\n")).unwrap();

    let auth = VaultAuth::Jwt {
        mount: "jwt".to_owned(),
        role: Some("ci".to_owned()),
        jwt: JwtSource::File(jwt_file.clone()),
    };
    let store = VaultStore::new(
        "ops-vault",
        VaultOptions::new(bao.address(), "secret", auth),
    )
    .unwrap();
    assert_eq!(
        write(&store, "ci/token", "jwt.token.value").await.unwrap(),
        WriteOutcome::Created
    );

    let wrong = VaultAuth::Jwt {
        mount: "jwt".to_owned(),
        role: Some("ci".to_owned()),
        jwt: JwtSource::Value(SecretString::from("eyJhbGciOiJFUzI1NiJ9.e30.bm90LWEtc2ln")),
    };
    let bad = VaultStore::new(
        "ops-vault",
        VaultOptions::new(bao.address(), "secret", wrong),
    )
    .unwrap();
    let err = bad.read("ci/token", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!format!("{err:?}").contains("bm90LWEtc2ln"), "{err:?}");

    let missing = VaultAuth::Jwt {
        mount: "jwt".to_owned(),
        role: Some("ci".to_owned()),
        jwt: JwtSource::File(dir.path().join("absent")),
    };
    let bad = VaultStore::new(
        "ops-vault",
        VaultOptions::new(bao.address(), "secret", missing),
    )
    .unwrap();
    let err = bad.read("ci/token", None).await.unwrap_err();
    assert!(
        err.to_string().contains("cannot read the login JWT"),
        "{err}"
    );
}

#[tokio::test]
async fn a_renewable_token_is_renewed_before_it_expires() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let created = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["writer"], "ttl": "3s", "renewable": true})),
    );
    let token = SecretString::from(created["auth"]["client_token"].as_str().unwrap().to_owned());
    let store = token_store(&bao, "secret", token);
    let started = Instant::now();
    write(&store, "renew/t", "renew.token.value").await.unwrap();
    // past two thirds of the lease: the next call renews
    tokio::time::sleep(Duration::from_millis(2200)).await;
    store.read("renew/t", None).await.unwrap();
    // past the original expiry: works only because the token was renewed
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(started.elapsed() > Duration::from_secs(3));
    let read = store.read("renew/t", Some("access_token")).await.unwrap();
    assert_eq!(read.expose_secret(), "renew.token.value");
}

#[tokio::test]
async fn approle_logs_in_again_when_its_token_reached_its_max_ttl() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let creds = bao.enable_approle("approle", "short", &["writer"]);
    bao.api(
        "POST",
        "auth/approle/role/short",
        Some(json!({"token_policies": ["writer"], "token_ttl": "2s", "token_max_ttl": "2s"})),
    );
    let store = approle_store(&bao, &creds.role_id, creds.secret_id.clone());
    write(&store, "relogin/t", "first.token.value")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let outcome = write(&store, "relogin/t", "second.token.value")
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
}

#[tokio::test]
async fn throttling_by_a_rate_limit_quota_is_retried() {
    let bao = OpenBao::start();
    bao.enable_kv("throttled", 2);
    bao.api(
        "POST",
        "sys/quotas/rate-limit/tight",
        Some(json!({"path": "throttled/", "rate": 1, "interval": "1s"})),
    );
    // use up the quota, and make sure it is really enforced
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(bao.api_raw("GET", "throttled/data/probe", None).0);
    }
    assert!(
        statuses.contains(&429),
        "the quota did not throttle: {statuses:?}"
    );

    let no_retry = VaultStore::new(
        "ops-vault",
        VaultOptions {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            kv_version: Some(KvVersion::V2),
            ..VaultOptions::new(
                bao.address(),
                "throttled",
                VaultAuth::Token {
                    token: bao.root_token().clone().into(),
                },
            )
        },
    )
    .unwrap();
    let err = no_retry.read("x", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("rate-limit quota"), "{err}");

    let counter = std::sync::atomic::AtomicU64::new(0);
    let harness = Harness {
        store: Box::new(token_store(&bao, "throttled", bao.root_token().clone())),
        fresh_name: Box::new(move || {
            format!(
                "t-{}",
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        }),
        formats: vec![Format::Raw],
        read_back: |_| Some("access_token"),
        invalid_name: "a//b".to_owned(),
    };
    let throttled = token_store(&bao, "throttled", bao.root_token().clone());
    let started = Instant::now();
    conformance::throttling_retried(&harness, &throttled).await;
    // three requests under a quota of one per second: the store must have waited and retried
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "finished in {:?}: the quota did not slow the store down",
        started.elapsed()
    );
}

#[tokio::test]
async fn what_the_backend_wrote_reads_back_with_the_bao_cli_and_plain_http() {
    let bao = OpenBao::start();
    let store = token_store(&bao, "secret", bao.root_token().clone());
    let written = payload("interop.token.value");
    store
        .write("interop/graph", &written, &WritePrecondition::unread(false))
        .await
        .unwrap();

    let output = Command::new(testkit::real::tool("bao"))
        .args([
            "kv",
            "get",
            "-format=json",
            "-mount=secret",
            "interop/graph",
        ])
        .env("BAO_ADDR", bao.address())
        .env("BAO_TOKEN", bao.root_token().expose_secret())
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "bao kv get failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expires_on = written.expires_on().unix_timestamp().to_string();
    assert_eq!(
        cli["data"]["data"],
        json!({
            "access_token": "interop.token.value",
            "token_type": "Bearer",
            "expires_on": expires_on,
            "expires_at": written.expires_at_rfc3339(),
            "managed_by": "secret-sync",
        })
    );
    assert_eq!(
        cli["data"]["metadata"]["custom_metadata"]["expires_on"],
        expires_on.as_str()
    );

    let meta = bao.api("GET", "secret/metadata/interop/graph", None);
    assert_eq!(meta["data"]["custom_metadata"]["managed_by"], "secret-sync");
    assert_eq!(
        meta["data"]["custom_metadata"]["expires_at"],
        written.expires_at_rfc3339().as_str()
    );

    // KV v1 through plain HTTP
    bao.enable_kv("kv1", 1);
    let v1 = token_store(&bao, "kv1", bao.root_token().clone());
    v1.write("interop/graph", &written, &WritePrecondition::unread(false))
        .await
        .unwrap();
    let raw = bao.api("GET", "kv1/interop/graph", None);
    assert_eq!(raw["data"]["access_token"], "interop.token.value");
    assert_eq!(raw["data"]["expires_on"], expires_on.as_str());
}

#[tokio::test]
async fn credentials_written_by_people_are_read_by_field() {
    let bao = OpenBao::start();
    bao.api(
        "POST",
        "secret/data/apps/graph",
        Some(json!({"data": {"client_id": "cid", "client_secret": "s3cr3t-from-cli"}})),
    );
    let store = token_store(&bao, "secret", bao.root_token().clone());
    let secret = store
        .read("apps/graph", Some("client_secret"))
        .await
        .unwrap();
    assert_eq!(secret.expose_secret(), "s3cr3t-from-cli");
    let whole = store.read("apps/graph", None).await.unwrap();
    let whole: serde_json::Value = serde_json::from_str(whole.expose_secret()).unwrap();
    assert_eq!(whole["client_id"], "cid");
    let err = store
        .read("apps/graph", Some("tenant_id"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FieldNotFound);
    assert!(!format!("{err} {err:?}").contains("s3cr3t-from-cli"));

    // not written by secret-sync: no managed-by marker
    let meta = store.metadata("apps/graph").await.unwrap().unwrap();
    assert_eq!(meta.managed_by, None);
    assert_eq!(meta.version.as_deref(), Some("1"));
    assert!(meta.updated_on.is_some());

    // a token written by secret-sync over it (adopted): the next version, with the marker
    store
        .write(
            "apps/graph",
            &payload("over.token.value"),
            &WritePrecondition::unread(true),
        )
        .await
        .unwrap();
    let meta = store.metadata("apps/graph").await.unwrap().unwrap();
    assert_eq!(
        (meta.version.as_deref(), meta.managed_by.as_deref()),
        (Some("2"), Some("secret-sync"))
    );

    // a person writes a new version by hand: the old custom_metadata no longer describes it
    bao.api(
        "POST",
        "secret/data/apps/graph",
        Some(json!({"data": {"client_id": "cid", "client_secret": "rotated"}})),
    );
    let meta = store.metadata("apps/graph").await.unwrap().unwrap();
    assert_eq!(
        (meta.version.as_deref(), meta.managed_by, meta.expires_on),
        (Some("3"), None, None)
    );

    // soft-deleting the latest version makes the secret missing
    bao.api("DELETE", "secret/data/apps/graph", None);
    assert_eq!(store.metadata("apps/graph").await.unwrap(), None);
    assert_eq!(
        store.read("apps/graph", None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn namespaces_are_sent_with_every_request() {
    let bao = OpenBao::start();
    bao.api("POST", "sys/namespaces/team-a", None);
    bao.api(
        "POST",
        "team-a/sys/mounts/kvns",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    );
    let store = VaultStore::new(
        "ops-vault",
        VaultOptions {
            namespace: Some("team-a".to_owned()),
            ..VaultOptions::new(
                bao.address(),
                "kvns",
                VaultAuth::Token {
                    token: bao.root_token().clone().into(),
                },
            )
        },
    )
    .unwrap();
    write(&store, "graph", "ns.token.value").await.unwrap();
    let read = bao.api("GET", "team-a/kvns/data/graph", None);
    assert_eq!(read["data"]["data"]["access_token"], "ns.token.value");
    let (status, _) = bao.api_raw("GET", "kvns/data/graph", None);
    assert_ne!(
        status, 200,
        "the secret must not exist outside the namespace"
    );
}

#[tokio::test]
async fn a_mount_that_is_not_kv_is_reported() {
    let bao = OpenBao::start();
    let store = token_store(&bao, "cubbyhole", bao.root_token().clone());
    let err = store.read("x", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("not KV"), "{err}");
}

/// A `bao server -dev-tls` child process, killed and reaped on drop.
struct TlsBao {
    child: std::process::Child,
    address: String,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TlsBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsBao {
    fn start() -> TlsBao {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
        let child = Command::new(testkit::real::tool("bao"))
            .args([
                "server",
                "-dev-tls",
                "-dev-no-store-token",
                "-dev-root-token-id=tls-root",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-tls-cert-dir={}", dir.path().display()),
            ])
            .env("HOME", dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        TlsBao {
            child,
            address: format!("https://127.0.0.1:{port}"),
            ca_file: dir.path().join("vault-ca.pem"),
            _dir: dir,
        }
    }

    fn store(
        &self,
        ca_file: Option<std::path::PathBuf>,
    ) -> Result<VaultStore, secret_backends::BackendError> {
        VaultStore::new(
            "ops-vault",
            VaultOptions {
                ca_file,
                ..VaultOptions::new(
                    &self.address,
                    "secret",
                    VaultAuth::Token {
                        token: SecretString::from("tls-root").into(),
                    },
                )
            },
        )
    }
}

#[tokio::test]
async fn https_with_a_ca_file_is_verified() {
    let bao = TlsBao::start();
    let deadline = Instant::now() + Duration::from_secs(60);
    // the CA file appears when the server starts; then it may take a moment to answer
    let store = loop {
        if bao.ca_file.is_file()
            && let Ok(store) = bao.store(Some(bao.ca_file.clone()))
            && store.metadata("probe").await.is_ok()
        {
            break store;
        }
        assert!(
            Instant::now() < deadline,
            "bao -dev-tls did not come up at {}",
            bao.address
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        write(&store, "tls/t", "tls.token.value").await.unwrap(),
        WriteOutcome::Created
    );
    // without the CA the server's certificate is not trusted
    let untrusted = bao.store(None).unwrap();
    let err = untrusted.read("tls/t", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(
        err.to_string().contains("TLS certificate (ca_file)"),
        "{err}"
    );
}

/// A stand-in for the Kubernetes API's TokenReview endpoint, which OpenBao's (real) kubernetes
/// auth method calls to check a service-account token: it answers that any token belongs to
/// `system:serviceaccount:{namespace}:{name}`. Returns its address and a count of the reviews
/// it answered; serves until the test ends.
async fn fake_token_review(
    namespace: &'static str,
    name: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let reviews = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reviews.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                // read the head, then the body by Content-Length; the body's content is not needed
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_start = loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buffer[..body_start]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buffer.len() < body_start + length {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                }
                let body = json!({
                    "kind": "TokenReview",
                    "apiVersion": "authentication.k8s.io/v1",
                    "status": {
                        "authenticated": true,
                        "user": {
                            "username": format!("system:serviceaccount:{namespace}:{name}"),
                            "uid": "5f5e3c3a-0000-0000-0000-000000000001",
                            "groups": ["system:serviceaccounts"],
                        }
                    }
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (address, reviews)
}

#[tokio::test]
async fn kubernetes_login_with_the_service_account_token_file() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let (kubernetes, reviews) = fake_token_review("sync-jobs", "secret-sync").await;
    bao.api(
        "POST",
        "sys/auth/kubernetes",
        Some(json!({"type": "kubernetes"})),
    );
    bao.api(
        "POST",
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": kubernetes,
            "disable_local_ca_jwt": true,
            // required with disable_local_ca_jwt; unused over plain http
            "kubernetes_ca_cert": rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap().cert.pem(),
        })),
    );
    bao.api(
        "POST",
        "auth/kubernetes/role/sync",
        Some(json!({
            "bound_service_account_names": ["secret-sync"],
            "bound_service_account_namespaces": ["sync-jobs"],
            "token_policies": ["writer"],
            "token_ttl": "1h",
        })),
    );
    // a service-account token as the kubelet projects it (the fake review does not check the signature)
    let key = rcgen::KeyPair::generate().unwrap();
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "sub": "system:serviceaccount:sync-jobs:secret-sync",
        "kubernetes.io/serviceaccount/namespace": "sync-jobs",
        "kubernetes.io/serviceaccount/service-account.name": "secret-sync",
        "kubernetes.io/serviceaccount/service-account.uid": "5f5e3c3a-0000-0000-0000-000000000001",
    });
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &jwt).unwrap();

    let store = |role: &str| {
        let auth = VaultAuth::Kubernetes {
            mount: "kubernetes".to_owned(),
            role: role.to_owned(),
            jwt: JwtSource::File(token_file.clone()),
        };
        VaultStore::new(
            "ops-vault",
            VaultOptions::new(bao.address(), "secret", auth),
        )
        .unwrap()
    };
    let outcome = write(&store("sync"), "k8s/token", "k8s.token.value")
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Created);
    let reviewed = reviews.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        reviewed >= 1,
        "OpenBao never asked the TokenReview endpoint"
    );

    let err = store("no-such-role")
        .read("k8s/token", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains("kubernetes login was refused"),
        "{err}"
    );
    assert!(!format!("{err:?}").contains(&jwt), "{err:?}");
}

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn expected_failures_log_no_errors_and_logs_hold_no_secrets() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let creds = bao.enable_approle("approle", "sync", &["writer"]);
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    // a current-thread test runtime: everything below runs on this thread, under this subscriber
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = approle_store(&bao, &creds.role_id, creds.secret_id.clone());
    assert_eq!(store.metadata("absent").await.unwrap(), None);
    assert_eq!(
        store.read("absent", None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    write(&store, "logged/t", "logged.token.value")
        .await
        .unwrap();
    let wrong = approle_store(
        &bao,
        &creds.role_id,
        SecretString::from("wrong-secret-id-4711"),
    );
    wrong.read("logged/t", None).await.unwrap_err();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("logged in to Vault"),
        "the capture does not work: {logs}"
    );
    assert!(
        !logs.contains("ERROR"),
        "an expected outcome was logged as an error:\n{logs}"
    );
    for secret in [
        "logged.token.value",
        "wrong-secret-id-4711",
        creds.secret_id.expose_secret(),
        bao.root_token().expose_secret(),
    ] {
        assert!(!logs.contains(secret), "the logs hold a secret:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_login() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let creds = bao.enable_approle("approle", "once", &["writer"]);
    // a secret id that works for a single login: a second login would be refused
    bao.api(
        "POST",
        "auth/approle/role/once",
        Some(json!({"token_policies": ["writer"], "secret_id_num_uses": 1})),
    );
    let single_use = bao.api("POST", "auth/approle/role/once/secret-id", None)["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = std::sync::Arc::new(approle_store(
        &bao,
        &creds.role_id,
        SecretString::from(single_use.clone()),
    ));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                write(&store, &format!("many/t-{i}"), "shared.token.value").await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), WriteOutcome::Created);
    }
    // the secret id is used up: a second store (a second login) is refused
    let second = approle_store(&bao, &creds.role_id, SecretString::from(single_use));
    let err = second.read("many/t-0", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
}

/// A token with `policies` and `ttl`, created by root.
fn create_token(bao: &OpenBao, policies: &[&str], ttl: &str) -> String {
    let created = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({"policies": policies, "ttl": ttl, "renewable": true})),
    );
    created["auth"]["client_token"].as_str().unwrap().to_owned()
}

fn token_file_store(bao: &OpenBao, file: &std::path::Path) -> VaultStore {
    VaultStore::new(
        "ops-vault",
        VaultOptions {
            kv_version: Some(KvVersion::V2),
            ..VaultOptions::new(
                bao.address(),
                "secret",
                VaultAuth::Token {
                    token: LoginSecret::File(file.to_owned()),
                },
            )
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_file_rotated_on_disk_is_read_again_after_the_old_token_is_refused() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vault-token");
    let first = create_token(&bao, &["writer"], "1h");
    std::fs::write(&file, format!("{first}\n")).unwrap();
    let store = token_file_store(&bao, &file);
    write(&store, "rotate/t", "first.token.value")
        .await
        .unwrap();

    // a Vault Agent sink: a new token on disk, the old one revoked
    let second = create_token(&bao, &["writer"], "1h");
    std::fs::write(&file, &second).unwrap();
    bao.api("POST", "auth/token/revoke", Some(json!({"token": first})));
    let outcome = write(&store, "rotate/t", "second.token.value")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        WriteOutcome::Updated,
        "the new token from the file was used"
    );

    // a file that no longer holds a usable token: refused, naming neither token
    std::fs::write(&file, "").unwrap();
    bao.api("POST", "auth/token/revoke", Some(json!({"token": second})));
    let err = store.read("rotate/t", None).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("is empty"), "{text}");
    assert!(!text.contains(&first) && !text.contains(&second), "{text}");
}

#[tokio::test]
async fn a_token_file_rotated_on_disk_is_used_at_the_next_renewal() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vault-token");
    // renewal is due after two thirds of 3 s
    let first = create_token(&bao, &["writer"], "3s");
    std::fs::write(&file, &first).unwrap();
    let store = token_file_store(&bao, &file);
    write(&store, "rotate/t", "first.token.value")
        .await
        .unwrap();
    let second = create_token(&bao, &["writer"], "1h");
    std::fs::write(&file, &second).unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // the first token is still valid, so only the renewal step can switch to the second
    store.read("rotate/t", None).await.unwrap();
    bao.api("POST", "auth/token/revoke", Some(json!({"token": second})));
    let err = store.read("rotate/t", None).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Forbidden | ErrorKind::Unauthorized),
        "the store still used the first token: {err}"
    );
}

#[tokio::test]
async fn a_secret_id_file_is_read_at_each_login() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER_POLICY);
    let creds = bao.enable_approle("approle", "short", &["writer"]);
    bao.api(
        "POST",
        "auth/approle/role/short",
        Some(json!({"token_policies": ["writer"], "token_ttl": "2s", "token_max_ttl": "2s"})),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret-id");
    std::fs::write(&file, format!("{}\n", creds.secret_id.expose_secret())).unwrap();
    let store = VaultStore::new(
        "ops-vault",
        VaultOptions {
            kv_version: Some(KvVersion::V2),
            ..VaultOptions::new(
                bao.address(),
                "secret",
                VaultAuth::AppRole {
                    mount: "approle".to_owned(),
                    role_id: creds.role_id.clone(),
                    secret_id: LoginSecret::File(file.clone()),
                },
            )
        },
    )
    .unwrap();
    write(&store, "relogin/t", "first.token.value")
        .await
        .unwrap();
    // a new secret id on disk, the old one destroyed: the next login must use the new one
    let new = bao.api("POST", "auth/approle/role/short/secret-id", None);
    let new_secret_id = new["data"]["secret_id"].as_str().unwrap().to_owned();
    bao.api(
        "POST",
        "auth/approle/role/short/secret-id/destroy",
        Some(json!({"secret_id": creds.secret_id.expose_secret()})),
    );
    std::fs::write(&file, &new_secret_id).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let outcome = write(&store, "relogin/t", "second.token.value")
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
}
