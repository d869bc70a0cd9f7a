//! The Azure Key Vault backend against the testkit Key Vault emulator, over HTTPS.
//!
//! No public Key Vault emulator exists, so `testkit` serves the secrets API with a CA generated
//! at test time, the service's challenge authentication, and bearer tokens checked against
//! those the testkit Entra emulator issued. The store authenticates the way the binary does:
//! `entra_auth::EntraTokenCredential` over a client secret registered in the Entra emulator,
//! handed to the Azure SDK. On top of the shared conformance suite: the challenge flow, the
//! native `exp` attribute, content type and tags, a deleted-but-recoverable name explained and
//! (opted in) recovered (also when the recovery takes a while), a disabled secret, RBAC refusal,
//! a refused token replaced once (a second refusal final), tokens of another tenant (AKV10032)
//! and of another audience (AKV10022), throttling with `Retry-After`, an untrusted CA, and a CA
//! trusted through `SSL_CERT_FILE` instead of `ca_file`.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_auth::{
    AppCredential, Authority, ClientOptions, Credential, EntraTokenCredential, RefreshPolicy,
    TokenCache, TokenClient,
};
use secrecy::{ExposeSecret, SecretString};
use secret_backends::WritePrecondition;
use secret_backends::azure_kv::{
    AzureKeyVaultOptions, AzureKeyVaultStore, EXPIRES_AT_TAG, MANAGED_BY_TAG, RetrySettings,
};
use secret_backends::conformance::{self, Harness, MANAGED_BY};
use secret_backends::{BackendError, ErrorKind, Format, SecretStore, WriteOutcome};
use testkit::{AppRegistration, EntraEmulator, Fault, KeyVaultEmulator, KeyVaultOptions};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "3c9a6e0c-5a7e-4d5b-9f6d-0c1e2f3a4b5c";
const CLIENT_SECRET: &str = "kv-test-Cl1ent~Secret.value";

/// Both emulators, the CA file, and a store built against them.
struct Fixture {
    entra: EntraEmulator,
    vault: KeyVaultEmulator,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(|options| options).await
    }

    /// The app registered in TENANT, the vault started with `vault` applied to its options.
    async fn start_with(vault: impl FnOnce(KeyVaultOptions) -> KeyVaultOptions) -> Fixture {
        let entra = EntraEmulator::start().await.unwrap();
        entra.register_app(AppRegistration::new(TENANT, CLIENT_ID).with_secret(CLIENT_SECRET));
        let vault = KeyVaultEmulator::start(
            entra.token_validator(),
            vault(KeyVaultOptions::for_entra(&entra, TENANT)),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("vault-ca.pem");
        std::fs::write(&ca_file, vault.ca_pem()).unwrap();
        Fixture {
            entra,
            vault,
            ca_file,
            _dir: dir,
        }
    }

    /// Options for the emulated vault: its CA trusted, retries fast enough for tests.
    fn options(&self) -> AzureKeyVaultOptions {
        let mut options = AzureKeyVaultOptions::new(self.vault.vault_url().parse().unwrap());
        options.ca_file = Some(self.ca_file.clone());
        options.retry = RetrySettings {
            first_delay: Duration::from_millis(10),
            max_retries: 3,
            max_delay: Duration::from_millis(100),
        };
        options.recovery_timeout = Duration::from_secs(5);
        options
    }

    /// A credential for the registered app with `secret`, as the binary would build it.
    fn credential(&self, secret: &str) -> Arc<dyn azure_core::credentials::TokenCredential> {
        credential_at(&self.entra.base_url(), secret)
    }

    fn store_with(&self, options: AzureKeyVaultOptions) -> AzureKeyVaultStore {
        AzureKeyVaultStore::new("kv-test", options, self.credential(CLIENT_SECRET)).unwrap()
    }

    fn store(&self) -> AzureKeyVaultStore {
        self.store_with(self.options())
    }

    /// Writes a fresh name, soft-deletes it, and returns the name and a store that recovers
    /// deleted secrets before writing.
    async fn soft_deleted_and_a_recovering_store(&self) -> (String, AzureKeyVaultStore) {
        let name = fresh_name();
        write_raw(&self.store(), &name, &conformance::unique_token())
            .await
            .unwrap();
        assert!(self.vault.soft_delete(&name));
        let store = self.store_with(AzureKeyVaultOptions {
            recover_deleted: true,
            ..self.options()
        });
        (name, store)
    }

    fn harness(&self) -> Harness {
        Harness {
            store: Box::new(self.store()),
            fresh_name: Box::new(fresh_name),
            formats: vec![Format::Raw, Format::Json],
            read_back: conformance::default_read_back,
            invalid_name: "graph/access_token".to_owned(),
        }
    }
}

/// A credential for the registered app at the Entra emulator `authority`, with `secret`.
fn credential_at(
    authority: &str,
    secret: &str,
) -> Arc<dyn azure_core::credentials::TokenCredential> {
    let client = TokenClient::new(ClientOptions::default()).unwrap();
    let cache = Arc::new(TokenCache::new(client, RefreshPolicy::default()));
    let app = AppCredential {
        authority: Authority::parse(authority).unwrap(),
        tenant: TENANT.parse().unwrap(),
        client_id: CLIENT_ID.parse().unwrap(),
        credential: Credential::ClientSecret(SecretString::from(secret)),
    };
    EntraTokenCredential::new(cache, app).into_shared()
}

/// Writes `token` as a raw payload of an hour under `name`, with no read before it.
async fn write_raw(
    store: &dyn SecretStore,
    name: &str,
    token: &SecretString,
) -> Result<WriteOutcome, BackendError> {
    store
        .write(
            name,
            &conformance::payload(token, 60, Format::Raw),
            &WritePrecondition::unread(false),
        )
        .await
}

fn fresh_name() -> String {
    format!("token-{}", uuid::Uuid::new_v4().simple())
}

/// A loopback https URL where nothing listens.
fn closed_url() -> url::Url {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("https://127.0.0.1:{port}").parse().unwrap()
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    conformance::missing_secret_is_not_found(&Fixture::start().await.harness()).await;
}

#[tokio::test]
async fn write_then_read_back() {
    conformance::write_then_read_back(&Fixture::start().await.harness()).await;
}

#[tokio::test]
async fn overwrite() {
    conformance::overwrite(&Fixture::start().await.harness()).await;
}

#[tokio::test]
async fn metadata_round_trip() {
    conformance::metadata_round_trip(&Fixture::start().await.harness()).await;
}

#[tokio::test]
async fn unchanged_write() {
    conformance::unchanged_write(&Fixture::start().await.harness()).await;
}

#[tokio::test]
async fn missing_field() {
    conformance::missing_field(&Fixture::start().await.harness()).await;
}

#[tokio::test]
async fn refused_before_network() {
    let f = Fixture::start().await;
    let offline = f.store_with(AzureKeyVaultOptions {
        vault_url: closed_url(),
        ..f.options()
    });
    conformance::refused_before_network(&f.harness(), &offline).await;
}

#[tokio::test]
async fn server_unreachable() {
    let f = Fixture::start().await;
    let unreachable = f.store_with(AzureKeyVaultOptions {
        vault_url: closed_url(),
        ..f.options()
    });
    conformance::server_unreachable(&f.harness(), &unreachable).await;
}

#[tokio::test]
async fn authentication_refused() {
    let f = Fixture::start().await;
    let wrong = "kv-test-Wrong~Secret.value";
    let bad_auth = AzureKeyVaultStore::new("kv-test", f.options(), f.credential(wrong)).unwrap();
    conformance::authentication_refused(&f.harness(), &bad_auth, wrong).await;
}

#[tokio::test]
async fn throttling_retried() {
    let f = Fixture::start().await;
    f.vault.inject_times(
        Fault::TooManyRequests {
            retry_after_secs: None,
        },
        2,
    );
    let throttled = f.store();
    conformance::throttling_retried(&f.harness(), &throttled).await;
    let throttled_answers = f
        .vault
        .requests()
        .iter()
        .filter(|r| r.status == Some(429))
        .count();
    assert_eq!(throttled_answers, 2, "the vault answered 429 twice");
}

#[tokio::test]
async fn the_first_request_meets_the_challenge_then_carries_a_vault_token() {
    let f = Fixture::start().await;
    let store = f.store();
    let name = fresh_name();
    assert_eq!(store.metadata(&name).await.unwrap(), None);
    let seen: Vec<(bool, Option<u16>)> = f
        .vault
        .requests()
        .iter()
        .map(|r| (r.authorized, r.status))
        .collect();
    assert_eq!(
        seen,
        [(false, Some(401)), (true, Some(404))],
        "(authorized, status) of the requests the vault saw"
    );
    let scopes: Vec<String> = f
        .entra
        .token_requests()
        .iter()
        .filter_map(|r| r.form.get("scope").cloned())
        .collect();
    assert_eq!(scopes, ["https://vault.azure.net/.default"]);

    // The scope is remembered: the next call goes out with a token at once.
    store.metadata(&name).await.unwrap();
    let last = f.vault.requests().last().cloned().unwrap();
    assert!(
        last.authorized && last.status == Some(404),
        "second call: {last:?}"
    );
}

#[tokio::test]
async fn write_sets_exp_content_type_and_tags() {
    let f = Fixture::start().await;
    let mut options = f.options();
    options
        .tags
        .insert("owner".to_owned(), "platform-team".to_owned());
    let store = f.store_with(options);

    let raw_name = fresh_name();
    let token = conformance::unique_token();
    let raw = conformance::payload(&token, 60, Format::Raw);
    assert_eq!(
        store
            .write(&raw_name, &raw, &WritePrecondition::unread(false))
            .await
            .unwrap(),
        WriteOutcome::Created
    );
    let stored = f.vault.secret(&raw_name).expect("the secret was written");
    assert_eq!(stored.value.expose_secret(), token.expose_secret());
    assert_eq!(stored.expires, Some(raw.expires_on().unix_timestamp()));
    assert!(stored.enabled, "the written version is enabled");
    assert_eq!(stored.content_type.as_deref(), Some("application/jwt"));
    assert_eq!(
        stored.tags.get(MANAGED_BY_TAG).map(String::as_str),
        Some(MANAGED_BY)
    );
    assert_eq!(
        stored.tags.get(EXPIRES_AT_TAG),
        Some(&raw.expires_at_rfc3339())
    );
    assert_eq!(
        stored.tags.get("owner").map(String::as_str),
        Some("platform-team")
    );

    let json_name = fresh_name();
    let json = conformance::payload(&token, 60, Format::Json);
    store
        .write(&json_name, &json, &WritePrecondition::unread(false))
        .await
        .unwrap();
    let stored = f.vault.secret(&json_name).unwrap();
    assert_eq!(stored.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        stored.value.expose_secret(),
        json.json_document().expose_secret()
    );
    assert_eq!(stored.expires, Some(json.expires_on().unix_timestamp()));

    let meta = store.metadata(&json_name).await.unwrap().unwrap();
    assert_eq!(meta.version.as_deref(), Some(stored.version.as_str()));

    let chosen = f.store_with(AzureKeyVaultOptions {
        content_type: Some("text/plain".to_owned()),
        ..f.options()
    });
    let plain_name = fresh_name();
    chosen
        .write(&plain_name, &raw, &WritePrecondition::unread(false))
        .await
        .unwrap();
    assert_eq!(
        f.vault.secret(&plain_name).unwrap().content_type.as_deref(),
        Some("text/plain"),
        "the configured content type wins"
    );
    assert_eq!(
        meta.updated_on.map(|t| t.unix_timestamp()),
        Some(stored.updated)
    );
}

#[tokio::test]
async fn a_new_expiry_alone_makes_a_new_version() {
    let f = Fixture::start().await;
    let store = f.store();
    let name = fresh_name();
    let token = conformance::unique_token();
    write_raw(&store, &name, &token).await.unwrap();
    let later = conformance::payload(&token, 90, Format::Raw);
    assert_eq!(
        store
            .write(&name, &later, &WritePrecondition::unread(false))
            .await
            .unwrap(),
        WriteOutcome::Updated
    );
    assert_eq!(f.vault.version_count(&name), 2);
    assert_eq!(
        f.vault.secret(&name).unwrap().expires,
        Some(later.expires_on().unix_timestamp())
    );
}

#[tokio::test]
async fn a_secret_not_written_by_secret_sync_has_no_marker() {
    let f = Fixture::start().await;
    let store = f.store();
    let name = fresh_name();
    f.vault
        .set_secret(
            &name,
            r#"{"client_id":"app-1","client_secret":"hand-made-s3cret"}"#,
        )
        .unwrap();
    let meta = store.metadata(&name).await.unwrap().unwrap();
    assert_eq!(meta.managed_by, None);
    assert_eq!(meta.expires_on, None);
    let secret = store.read(&name, Some("client_secret")).await.unwrap();
    assert_eq!(secret.expose_secret(), "hand-made-s3cret");
}

#[tokio::test]
async fn deleted_but_recoverable_is_explained() {
    let f = Fixture::start().await;
    let store = f.store();
    let name = fresh_name();
    let token = conformance::unique_token();
    write_raw(&store, &name, &token).await.unwrap();
    assert!(f.vault.soft_delete(&name));

    let newer = conformance::unique_token();
    let err = write_raw(&store, &name, &newer)
        .await
        .expect_err("writing over a soft-deleted name must fail without recover_deleted");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(!err.is_retryable(), "{err}");
    let expected = format!(
        "the secret {name} is deleted but recoverable: recover it (`az keyvault secret recover`), \
         purge it, or set recover_deleted = true"
    );
    assert!(
        err.to_string().ends_with(&expected),
        "expected the message to end with {expected:?}, got {err}"
    );
    conformance::assert_no_leak(&err, &[token.expose_secret(), newer.expose_secret()]);
    assert!(
        f.vault.secret(&name).unwrap().deleted,
        "nothing was recovered"
    );
}

#[tokio::test]
async fn recover_deleted_recovers_then_writes() {
    let f = Fixture::start().await;
    let (name, store) = f.soft_deleted_and_a_recovering_store().await;
    let newer = conformance::unique_token();
    let outcome = write_raw(&store, &name, &newer).await.unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    let stored = f.vault.secret(&name).unwrap();
    assert!(!stored.deleted, "the secret was recovered");
    assert_eq!(stored.value.expose_secret(), newer.expose_secret());
    assert_eq!(
        stored.version_count, 2,
        "the recovered version plus the new one"
    );
    let recovers = f
        .vault
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("/deletedsecrets/{name}/recover"))
        .count();
    assert_eq!(recovers, 1, "one recover call");
}

#[tokio::test]
async fn an_identity_without_access_is_told_which_role_to_grant() {
    let f = Fixture::start().await;
    f.vault.deny_client(CLIENT_ID);
    let store = f.store();
    let name = fresh_name();
    let token = conformance::unique_token();
    let errors = [
        store.read(&name, None).await.unwrap_err(),
        store.metadata(&name).await.unwrap_err(),
        write_raw(&store, &name, &token).await.unwrap_err(),
    ];
    for err in &errors {
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
        assert!(
            err.to_string().contains(
                "the identity has no access to secrets in this vault (Forbidden/ForbiddenByRbac: "
            ) && err.to_string().contains(
                "grant it the 'Key Vault Secrets Officer' role or an access policy with get/set"
            ),
            "{err}"
        );
        conformance::assert_no_leak(err, &[CLIENT_SECRET, token.expose_secret()]);
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let f = Fixture::start().await;
    let store = f.store_with(AzureKeyVaultOptions {
        retry: RetrySettings {
            first_delay: Duration::from_millis(10),
            max_retries: 3,
            max_delay: Duration::from_secs(5),
        },
        ..f.options()
    });
    let name = fresh_name();
    f.vault.inject(Fault::TooManyRequests {
        retry_after_secs: Some(1),
    });
    let started = Instant::now();
    let outcome = write_raw(&store, &name, &conformance::unique_token())
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Created);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry came after {:?}, before the 1 s the vault asked for",
        started.elapsed()
    );
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_reported() {
    let f = Fixture::start().await;
    let store = f.store();
    f.vault.inject_times(
        Fault::TooManyRequests {
            retry_after_secs: Some(0),
        },
        10,
    );
    let err = store.metadata(&fresh_name()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::ZERO));
    assert!(err.to_string().contains("kept throttling"), "{err}");
    let throttled = f
        .vault
        .requests()
        .iter()
        .filter(|r| r.status == Some(429))
        .count();
    assert_eq!(throttled, 4, "the first attempt and 3 retries");
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let f = Fixture::start().await;
    f.vault.inject(Fault::ServerError { status: 503 });
    let store = f.store();
    let name = fresh_name();
    let token = conformance::unique_token();
    write_raw(&store, &name, &token).await.unwrap();
    assert_eq!(
        store.read(&name, None).await.unwrap().expose_secret(),
        token.expose_secret()
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_unreachable_at_once_and_says_so() {
    let f = Fixture::start().await;
    let slow_retries = RetrySettings {
        first_delay: Duration::from_secs(2),
        max_retries: 3,
        max_delay: Duration::from_secs(2),
    };
    let store = f.store_with(AzureKeyVaultOptions {
        ca_file: None,
        retry: slow_retries,
        ..f.options()
    });
    let started = Instant::now();
    let err = store.metadata(&fresh_name()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("its TLS certificate was refused")
            && text.contains("UnknownIssuer")
            && text.contains("ca_file"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused certificate was retried: it took {:?}",
        started.elapsed()
    );
    assert!(
        f.vault.requests().is_empty(),
        "no request got through the TLS handshake"
    );
}

/// Disables the latest version of `name` through the vault's HTTP API, as the portal would.
async fn disable(f: &Fixture, name: &str) {
    let token = f
        .credential(CLIENT_SECRET)
        .get_token(&["https://vault.azure.net/.default"], None)
        .await
        .unwrap();
    let ca = reqwest::Certificate::from_pem(f.vault.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let answer = client
        .patch(format!(
            "{}/secrets/{name}?api-version=2025-07-01",
            f.vault.vault_url()
        ))
        .bearer_auth(token.token.secret())
        .json(&serde_json::json!({"attributes": {"enabled": false}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "disabling {name}");
}

#[tokio::test]
async fn a_disabled_secret_is_explained_and_a_write_gives_it_an_enabled_version() {
    let f = Fixture::start().await;
    let store = f.store();
    let name = fresh_name();
    write_raw(&store, &name, &conformance::unique_token())
        .await
        .unwrap();
    disable(&f, &name).await;

    let err = store.read(&name, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("the secret is disabled"), "{err}");

    let newer = conformance::unique_token();
    let outcome = write_raw(&store, &name, &newer).await.unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    let stored = f.vault.secret(&name).unwrap();
    assert!(stored.enabled, "the new version is enabled");
    assert_eq!(
        store.read(&name, None).await.unwrap().expose_secret(),
        newer.expose_secret()
    );
}

#[tokio::test]
async fn a_token_the_vault_refuses_is_replaced_once() {
    let f = Fixture::start().await;
    let store = f.store();
    let name = fresh_name();
    assert_eq!(store.metadata(&name).await.unwrap(), None);
    assert_eq!(f.entra.token_request_count(), 1);
    // The vault now refuses the token the credential still caches (as after a revocation).
    f.entra.expire_issued_tokens();
    assert_eq!(
        store.metadata(&name).await.unwrap(),
        None,
        "the request is repeated with a new token"
    );
    assert_eq!(
        f.entra.token_request_count(),
        2,
        "exactly one extra token request"
    );
    let last: Vec<(bool, Option<u16>)> = f
        .vault
        .requests()
        .iter()
        .rev()
        .take(2)
        .map(|r| (r.authorized, r.status))
        .collect();
    assert_eq!(
        last,
        [(true, Some(404)), (true, Some(401))],
        "(authorized, status), latest first"
    );
}

#[tokio::test]
async fn a_second_refusal_is_final_and_names_the_akv_code() {
    // A vault of another tenant refuses every token of this identity.
    const OTHER: &str = "0f0e0d0c-0b0a-0908-0706-050403020100";
    let f = Fixture::start_with(|options| KeyVaultOptions {
        tenant: OTHER.to_owned(),
        ..options
    })
    .await;
    let store = f.store();
    let name = fresh_name();
    store.metadata(&name).await.unwrap_err();
    assert_eq!(f.entra.token_request_count(), 1);
    // The SDK asks again for the refused token: it is replaced once, and refused again.
    let err = store.metadata(&name).await.unwrap_err();
    assert_eq!(
        f.entra.token_request_count(),
        2,
        "exactly one extra token request"
    );
    let again = store.metadata(&name).await.unwrap_err();
    assert_eq!(
        f.entra.token_request_count(),
        2,
        "a second refusal is final: no more token requests"
    );
    for err in [&err, &again] {
        assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
        assert!(!err.is_retryable(), "{err}");
        assert!(
            err.to_string()
                .contains("refused the access token (Unauthorized: AKV10032: Invalid issuer."),
            "{err}"
        );
        conformance::assert_no_leak(err, &[CLIENT_SECRET]);
    }
}

#[tokio::test]
async fn a_token_of_another_tenant_is_refused_as_an_invalid_issuer() {
    // The vault belongs to another tenant than the identity's.
    const OTHER: &str = "0f0e0d0c-0b0a-0908-0706-050403020100";
    let f = Fixture::start_with(|options| KeyVaultOptions {
        tenant: OTHER.to_owned(),
        ..options
    })
    .await;
    let err = f.store().metadata(&fresh_name()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "(Unauthorized: AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{OTHER}/, \
             found https://sts.windows.net/{TENANT}/.)"
        )),
        "{err}"
    );
    conformance::assert_no_leak(&err, &[CLIENT_SECRET]);
}

#[tokio::test]
async fn a_vault_that_does_not_know_the_api_version_is_a_bad_parameter() {
    // A vault that does not offer the SDK's version yet (a national cloud lagging behind).
    let f = Fixture::start_with(|options| KeyVaultOptions {
        api_versions: vec!["7.4"],
        ..options
    })
    .await;
    let err = f.store().metadata(&fresh_name()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains(
            "(BadParameter: The specified version (2025-07-01) is not recognized. Consider using \
             the latest supported version (7.4).)"
        ),
        "{err}"
    );
    let refused = f.vault.requests().last().cloned().unwrap();
    assert_eq!(refused.status, Some(400), "{refused:?}");
    assert_eq!(
        refused.query.get("api-version").map(String::as_str),
        Some("2025-07-01")
    );
}

/// A credential whose token client retries fast, against `authority`.
fn fast_credential(authority: &str) -> Arc<dyn azure_core::credentials::TokenCredential> {
    let mut options = ClientOptions::default();
    options.retry.max_attempts = 2;
    options.retry.initial_backoff = Duration::from_millis(10);
    options.retry.max_backoff = Duration::from_millis(20);
    let client = TokenClient::new(options).unwrap();
    let cache = Arc::new(TokenCache::new(client, RefreshPolicy::default()));
    let app = AppCredential {
        authority: Authority::parse(authority).unwrap(),
        tenant: TENANT.parse().unwrap(),
        client_id: CLIENT_ID.parse().unwrap(),
        credential: Credential::ClientSecret(SecretString::from(CLIENT_SECRET)),
    };
    EntraTokenCredential::new(cache, app).into_shared()
}

#[tokio::test]
async fn a_token_service_failure_is_reported_as_what_it_was() {
    let f = Fixture::start().await;
    let store = |authority: &str| {
        AzureKeyVaultStore::new("kv-test", f.options(), fast_credential(authority)).unwrap()
    };

    f.entra.inject_times(
        Fault::TooManyRequests {
            retry_after_secs: Some(7),
        },
        10,
    );
    let err = store(&f.entra.base_url())
        .metadata(&fresh_name())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{err}");
    assert!(
        err.to_string()
            .contains("the token service throttled the request for a vault token"),
        "{err}"
    );
    f.entra.clear_faults();

    f.entra.inject_times(Fault::ServerError { status: 503 }, 10);
    let err = store(&f.entra.base_url())
        .metadata(&fresh_name())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    f.entra.clear_faults();

    let closed = closed_url().as_str().replacen("https", "http", 1);
    let err = store(closed.trim_end_matches('/'))
        .metadata(&fresh_name())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("could not reach the token service"),
        "{err}"
    );

    // A refusal stays a refusal, with Entra's advice.
    let wrong =
        AzureKeyVaultStore::new("kv-test", f.options(), f.credential("kv-test-Wrong~S")).unwrap();
    let err = wrong.metadata(&fresh_name()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("the token service refused the vault login"),
        "{err}"
    );
    conformance::assert_no_leak(&err, &[CLIENT_SECRET, "kv-test-Wrong~S"]);
}

/// A credential that answers a token for `scope` whatever the SDK asks for (a misconfigured
/// identity, or a credential of another program).
#[derive(Debug)]
struct FixedScope {
    inner: Arc<dyn azure_core::credentials::TokenCredential>,
    scope: &'static str,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedScope {
    async fn get_token(
        &self,
        _scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        self.inner.get_token(&[self.scope], options).await
    }
}

#[tokio::test]
async fn a_token_for_another_resource_is_refused_as_an_invalid_audience() {
    let f = Fixture::start().await;
    let graph = Arc::new(FixedScope {
        inner: f.credential(CLIENT_SECRET),
        scope: "https://graph.microsoft.com/.default",
    });
    let store = AzureKeyVaultStore::new("kv-test", f.options(), graph).unwrap();
    let err = store.metadata(&fresh_name()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        err.to_string().contains(
            "(Unauthorized: AKV10022: Invalid audience. Expected https://vault.azure.net, \
             found: https://graph.microsoft.com.)"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_slow_recovery_is_waited_for_then_written() {
    let delay = Duration::from_millis(800);
    let f = Fixture::start_with(|options| KeyVaultOptions {
        recovery_delay: delay,
        ..options
    })
    .await;
    let (name, store) = f.soft_deleted_and_a_recovering_store().await;
    let newer = conformance::unique_token();
    let started = Instant::now();
    let outcome = write_raw(&store, &name, &newer).await.unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    assert!(
        started.elapsed() >= delay,
        "the write came {:?} after the recover, before the recovery finished",
        started.elapsed()
    );
    let stored = f.vault.secret(&name).unwrap();
    assert_eq!(stored.value.expose_secret(), newer.expose_secret());
    // The vault saw: the recover, reads answered 404 while it recovered, then a read and the PUT.
    let requests = f.vault.requests();
    let recover = requests
        .iter()
        .position(|r| r.method == "POST" && r.path == format!("/deletedsecrets/{name}/recover"))
        .expect("a recover call");
    let waiting = requests[recover..]
        .iter()
        .filter(|r| r.method == "GET" && r.status == Some(404))
        .count();
    assert!(
        waiting >= 2,
        "the wait loop polled while the secret recovered: {requests:?}"
    );
    assert!(
        !requests[recover..]
            .iter()
            .any(|r| r.method == "PUT" && r.status == Some(409)),
        "no write was sent while the secret was being recovered: {requests:?}"
    );
}

const CHILD_VAULT_URL: &str = "SECRET_SYNC_TEST_KV_CHILD_VAULT_URL";
const CHILD_ENTRA_URL: &str = "SECRET_SYNC_TEST_KV_CHILD_ENTRA_URL";
const CHILD_MARKER: &str = "child: written and read back through SSL_CERT_FILE";

/// `SSL_CERT_FILE` is process-wide, so this test runs itself again as a child process with it
/// set to the vault's CA (and no `ca_file`), against the emulators this process serves.
#[tokio::test]
async fn ssl_cert_file_is_honoured() {
    if let (Ok(vault_url), Ok(entra_url)) = (
        std::env::var(CHILD_VAULT_URL),
        std::env::var(CHILD_ENTRA_URL),
    ) {
        let options = AzureKeyVaultOptions::new(vault_url.parse().unwrap());
        let store =
            AzureKeyVaultStore::new("kv-test", options, credential_at(&entra_url, CLIENT_SECRET))
                .unwrap();
        let name = fresh_name();
        let token = conformance::unique_token();
        write_raw(&store, &name, &token).await.unwrap();
        let read = store.read(&name, None).await.unwrap();
        assert_eq!(read.expose_secret(), token.expose_secret());
        println!("{CHILD_MARKER}");
        return;
    }
    let f = Fixture::start().await;
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ssl_cert_file_is_honoured", "--nocapture"])
        .env("SSL_CERT_FILE", &f.ca_file)
        .env(CHILD_VAULT_URL, f.vault.vault_url())
        .env(CHILD_ENTRA_URL, f.entra.base_url())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains(CHILD_MARKER),
        "the child failed ({}):\n{stdout}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
    assert_eq!(
        f.vault
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count(),
        1,
        "the child's write reached the vault"
    );
}

#[tokio::test]
async fn a_url_that_is_not_a_key_vault_is_a_configuration_error() {
    let f = Fixture::start().await;
    // An HTTPS server trusted through the same CA, which is not a vault.
    let other = EntraEmulator::start_with(testkit::ServerOptions {
        port: 0,
        ca: Some(f.vault.ca()),
    })
    .await
    .unwrap();
    let store = f.store_with(AzureKeyVaultOptions {
        vault_url: other.base_url().parse().unwrap(),
        ..f.options()
    });
    let err = store.metadata(&fresh_name()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(
        err.to_string().contains("answered 404") && err.to_string().contains("vault_url"),
        "{err}"
    );
}

/// Another client (the emulator's own API) creates the secret between the read and the write.
/// Key Vault has no conditional write: the read right before the PUT is what refuses it.
#[tokio::test]
async fn created_since_read_is_not_overwritten() {
    let f = Fixture::start().await;
    conformance::created_since_read_is_not_overwritten(&f.harness(), &|name| {
        f.vault.set_secret(name, "someone-else-s-value").unwrap();
    })
    .await;
}

/// The emulator's own API writes `text` as a new version (no tags), as someone in the portal.
fn put_raw(f: &Fixture) -> impl Fn(&str, &str) + '_ {
    move |name, text| {
        f.vault.set_secret(name, text).unwrap();
    }
}

/// The record of a whole value is in the version's tags (`secret-sync-key-id`, ...).
#[tokio::test]
async fn value_round_trip() {
    let f = Fixture::start().await;
    conformance::value_round_trip(&f.harness()).await;
}

#[tokio::test]
async fn field_keeps_other_fields() {
    let f = Fixture::start().await;
    conformance::field_keeps_other_fields(&f.harness(), &put_raw(&f)).await;
}

/// Key Vault has no conditional write: the version read right before the PUT is compared
/// with the one read_stored saw, so a change before that read is refused (a writer between
/// that read and the PUT is not seen: docs/backends.md).
#[tokio::test]
async fn value_conflict_when_changed_since_read() {
    let f = Fixture::start().await;
    conformance::value_conflict_when_changed_since_read(&f.harness(), &put_raw(&f)).await;
}

#[tokio::test]
async fn field_conflict_when_changed_since_read() {
    let f = Fixture::start().await;
    conformance::field_conflict_when_changed_since_read(&f.harness(), &put_raw(&f)).await;
}

#[tokio::test]
async fn value_never_echoed() {
    let f = Fixture::start().await;
    conformance::value_never_echoed(&f.harness(), &put_raw(&f)).await;
}

/// A whole value written back keeps the version's own tags and content type, replaces the
/// record tags (one not recorded is dropped), and one write is one version; a record that would
/// take the version past Key Vault's 15 tags is refused before any write.
#[tokio::test]
async fn value_write_keeps_the_secrets_tags_and_refuses_more_than_15() {
    use secret_backends::{CredentialRecord, SecretValue};
    let f = Fixture::start().await;
    let mut options = f.options();
    options.tags.insert("owner".into(), "platform-team".into());
    let name = fresh_name();
    // a token write gives the version tags (managed-by, expires-at, owner) and a content type
    write_raw(&f.store_with(options), &name, &conformance::unique_token())
        .await
        .unwrap();
    let store = f.store();
    let read = store.read_stored(&name, None).await.unwrap();
    let record = conformance::full_record();
    let value = SecretValue::new(SecretString::from("Zq8~kv-value")).unwrap();
    let precondition = WritePrecondition::from_read(Some(read.metadata.clone()), true);
    let outcome = store
        .write_value(&name, None, &value, &record, &precondition)
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    let stored = f.vault.secret(&name).unwrap();
    assert_eq!(stored.version_count, 2, "one version per write");
    assert_eq!(stored.value.expose_secret(), "Zq8~kv-value");
    assert_eq!(stored.content_type.as_deref(), Some("application/jwt"));
    assert_eq!(stored.tags["owner"], "platform-team", "{:?}", stored.tags);
    assert_eq!(
        stored.tags["secret-sync-key-id"],
        record.key_id.clone().unwrap().as_str()
    );
    assert_eq!(
        stored.tags["secret-sync-retire-previous-on"],
        "2026-08-16T06:00:00Z"
    );
    assert_eq!(stored.tags["secret-sync-installation"], "inst-7f3a");

    let read = store.read_stored(&name, None).await.unwrap();
    assert_eq!(read.record, record);
    let fewer = CredentialRecord {
        installation: None,
        ..record.clone()
    };
    store
        .write_value(
            &name,
            None,
            &value,
            &fewer,
            &WritePrecondition::from_read(Some(read.metadata), true),
        )
        .await
        .unwrap();
    let stored = f.vault.secret(&name).unwrap();
    assert!(
        !stored.tags.contains_key("secret-sync-installation"),
        "{:?}",
        stored.tags
    );
    assert_eq!(stored.tags["owner"], "platform-team");

    // 2 + 13 tags on the version: no room for a record
    let mut options = f.options();
    options.tags = (0..13).map(|i| (format!("t{i}"), "v".to_owned())).collect();
    let full = fresh_name();
    write_raw(&f.store_with(options), &full, &conformance::unique_token())
        .await
        .unwrap();
    let err = store
        .write_value(
            &full,
            None,
            &value,
            &record,
            &WritePrecondition::unread(true),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err}");
    assert!(err.to_string().contains("15"), "{err}");
    conformance::assert_no_leak(&err, &["Zq8~kv-value"]);
    assert_eq!(f.vault.version_count(&full), 1, "nothing was written");
}
