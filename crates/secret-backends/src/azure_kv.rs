//! The Azure Key Vault backend: tokens and credentials as Key Vault secrets.
//!
//! For teams whose consumers (Logic Apps, Functions, App Service key-vault references, AKS with
//! the CSI driver) read secrets from Key Vault. Built on `azure_security_keyvault_secrets` 1.x
//! (the maintained successor of the legacy `azure_security_keyvault`), so the wire protocol,
//! challenge authentication and retry policy are the SDK's. This module adds what the sync
//! engine needs on top: names and sizes checked before any call, the native `exp` attribute,
//! tags, "unchanged" detection and errors that say what to do.
//!
//! Authentication is an `Arc<dyn TokenCredential>` handed in by the caller; the binary builds
//! `entra_auth::EntraTokenCredential` from its config, so there is one Entra stack in the
//! program. The first request goes out without a token; the vault's `401` challenge names the
//! resource, for which the credential is asked a token (scope `https://vault.azure.net/.default`
//! in the public cloud, `https://vault.usgovcloudapi.net/.default` and
//! `https://vault.azure.cn/.default` in the national clouds: [`AzureCloud`]). The SDK checks that
//! the vault's host is under the challenged resource; that check is turned off only when the
//! vault URL is a loopback address (tests, emulators). After a `401` on a request that carried a
//! token the SDK asks the credential again once (entra-auth's then replaces the refused token);
//! the second `401` is the error. A failed token request is reported as what it was (throttled,
//! unavailable, unreachable: retryable; refused), as the credential says it in the
//! `azure_core::Error` (see `credential_error`).
//!
//! What a write stores (`PUT /secrets/{name}`):
//! - value: the bare token ([`Format::Raw`]) or the JSON document ([`Format::Json`]);
//! - attributes: `enabled = true`, `exp` = the token's expiry (Key Vault shows it, and Azure
//!   Policy / Event Grid can alert on it);
//! - `contentType`: [`AzureKeyVaultOptions::content_type`], by default `application/jwt` for a
//!   raw token and `application/json` for the document;
//! - tags: `managed-by` (the marker) and `expires-at` (RFC 3339, for people), plus
//!   [`AzureKeyVaultOptions::tags`].
//!
//! A value written back ([`SecretStore::write_value`]: a client secret, whole or one `#field`
//! of a JSON value) is a new version that keeps the current one's tags and content type; a
//! whole value's record is in its tags ([`RECORD_TAGS`]). Key Vault has no conditional write,
//! so the latest version is read right before the PUT and compared with the one
//! [`SecretStore::read_stored`] saw: a writer between that read and the PUT is not seen.
//!
//! Before writing, the current version is read: when it already holds the same value and `exp`,
//! nothing is written ([`WriteOutcome::Unchanged`]), so a vault does not fill with versions.
//!
//! Errors: `401`/`403` say which role to grant; `404` is [`ErrorKind::NotFound`]; a name that is
//! deleted but recoverable (`409 ObjectIsDeletedButRecoverable`) says how to recover or purge
//! it, or with [`AzureKeyVaultOptions::recover_deleted`] is recovered and then written; `429`
//! and `5xx` are retried with backoff (1, 2, 4, 8, 16 s by default, at least the server's
//! `Retry-After`, see [`RetrySettings`]); transport errors are [`ErrorKind::Unreachable`]
//! (connection failures after the same retries; a refused TLS certificate at once, naming `ca_file`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use secret_backends::azure_kv::{AzureKeyVaultOptions, AzureKeyVaultStore, TokenCredential};
//!
//! # fn example(credential: Arc<dyn TokenCredential>) -> Result<(), Box<dyn std::error::Error>> {
//! // [backends.kv-prod]
//! // kind = "azure-key-vault"
//! // vault_url = "https://contoso-tokens.vault.azure.net"
//! // ca_file = "/etc/ssl/corp-proxy-ca.pem"      # optional: extra trusted root(s), PEM
//! // recover_deleted = false                     # optional: recover a soft-deleted name, then write
//! // content_type = "application/jwt"            # optional
//! // tags = { owner = "platform-team" }          # optional, at most 13
//! // auth = { method = "workload-identity" }     # the binary turns this into `credential`
//! let mut options = AzureKeyVaultOptions::new("https://contoso-tokens.vault.azure.net".parse()?);
//! options.recover_deleted = true;
//! options.tags.insert("owner".into(), "platform-team".into());
//! // `credential` is e.g. `entra_auth::EntraTokenCredential::new(cache, app).into_shared()`.
//! let store = AzureKeyVaultStore::new("kv-prod", options, credential)?;
//! # Ok(())
//! # }
//! ```
//!
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured too (through the platform verifier's system
//! roots); `ca_file` adds roots for this backend only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::headers::{RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use azure_core::http::policies::{RetryHeaders, RetryPolicy};
use azure_core::http::{
    AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, StatusCode, Transport, Url,
};
use azure_security_keyvault_secrets::models::{
    Secret, SecretAttributes, SecretClientGetSecretOptions, SetSecretParameters,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::Stream;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

pub use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
/// The Azure SDK's error and its kinds, for a [`TokenCredential`] written outside this crate.
pub use azure_core::{Error as AzureError, error::ErrorKind as AzureErrorKind};

use crate::http::{BodyTooLarge, MAX_ANSWER_BYTES};
use crate::value::{check_size, parse_document, set_field};
use crate::{
    BackendError, CredentialRecord, ErrorKind, Format, SecretMetadata, SecretStore, SecretValue,
    StoredValue, TokenPayload, WriteOutcome, WritePrecondition, parse_rfc3339, pick_field,
    pick_from_map, stored_time,
};

/// The largest value Key Vault accepts (25 KB).
pub const MAX_VALUE_BYTES: usize = 25 * 1024;

/// The tag holding the managed-by marker.
pub const MANAGED_BY_TAG: &str = "managed-by";

/// The tag holding the token's expiry as RFC 3339 (the `exp` attribute is authoritative).
pub const EXPIRES_AT_TAG: &str = "expires-at";

/// Key Vault allows 15 tags per secret; two are ours.
const MAX_EXTRA_TAGS: usize = 13;
const MAX_TAG_CHARS: usize = 256;
const MAX_CONTENT_TYPE_CHARS: usize = 255;
const RECOVERABLE_CODE: &str = "ObjectIsDeletedButRecoverable";
const NOT_FOUND_CODE: &str = "SecretNotFound";

/// Options of the Azure Key Vault backend. The credential is passed to
/// [`AzureKeyVaultStore::new`] beside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureKeyVaultOptions {
    /// The vault, e.g. `https://contoso-tokens.vault.azure.net` (see [`vault_url`] for a name).
    pub vault_url: Url,
    /// A PEM file of extra trusted root certificates (a TLS-inspecting proxy, an emulator).
    pub ca_file: Option<PathBuf>,
    /// When a write meets a deleted-but-recoverable secret, recover it and write (default: fail
    /// with instructions).
    pub recover_deleted: bool,
    /// The `contentType` written; `None`: `application/jwt` (raw) or `application/json` (json).
    pub content_type: Option<String>,
    /// Tags written beside `managed-by` and `expires-at` (at most 13, 256 characters each).
    pub tags: BTreeMap<String, String>,
    /// Retries of throttled, failed and unreachable requests.
    pub retry: RetrySettings,
    /// Timeout of each HTTP request (default 30 s; connecting has at most 10 s of it).
    pub timeout: Duration,
    /// How long to wait for a recovered secret to come back (default 60 s).
    pub recovery_timeout: Duration,
    /// The cloud of the vault and of its login (default public): named in refusals, and a
    /// vault host of another cloud is refused before any request.
    pub cloud: AzureCloud,
}

impl AzureKeyVaultOptions {
    /// Options for `vault_url` with the defaults.
    pub fn new(vault_url: Url) -> Self {
        AzureKeyVaultOptions {
            vault_url,
            ca_file: None,
            recover_deleted: false,
            content_type: None,
            tags: BTreeMap::new(),
            retry: RetrySettings::default(),
            timeout: Duration::from_secs(30),
            recovery_timeout: Duration::from_secs(60),
            cloud: AzureCloud::Public,
        }
    }
}

/// How requests that failed for a passing reason (429, 408, 5xx, connection errors) are retried.
///
/// The n-th retry waits `first_delay * 2^(n-1)`, or the server's `Retry-After` when longer,
/// never more than `max_delay`. Defaults: 1 s, 5 retries, 16 s (waits of 1, 2, 4, 8, 16 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// The wait before the first retry.
    pub first_delay: Duration,
    /// How many times a request is retried.
    pub max_retries: u32,
    /// The longest single wait, even when the server asks for more.
    pub max_delay: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            first_delay: Duration::from_secs(1),
            max_retries: 5,
            max_delay: Duration::from_secs(16),
        }
    }
}

/// The Azure cloud a vault is in: the host a bare vault name becomes and the resource (token
/// audience) its tokens are for (PROTOCOLS.md "National clouds").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AzureCloud {
    /// The public cloud: `*.vault.azure.net`, resource `https://vault.azure.net`.
    #[default]
    Public,
    /// Azure US Government: `*.vault.usgovcloudapi.net`, resource `https://vault.usgovcloudapi.net`.
    UsGovernment,
    /// Azure operated by 21Vianet (China): `*.vault.azure.cn`, resource `https://vault.azure.cn`.
    China,
}

impl AzureCloud {
    const ALL: [AzureCloud; 3] = [
        AzureCloud::Public,
        AzureCloud::UsGovernment,
        AzureCloud::China,
    ];

    /// The DNS suffix of this cloud's vaults, e.g. `vault.usgovcloudapi.net`.
    pub fn vault_suffix(self) -> &'static str {
        match self {
            AzureCloud::Public => "vault.azure.net",
            AzureCloud::UsGovernment => "vault.usgovcloudapi.net",
            AzureCloud::China => "vault.azure.cn",
        }
    }

    /// The resource Key Vault tokens of this cloud are for, e.g. `https://vault.usgovcloudapi.net`.
    pub fn key_vault_resource(self) -> &'static str {
        match self {
            AzureCloud::Public => "https://vault.azure.net",
            AzureCloud::UsGovernment => "https://vault.usgovcloudapi.net",
            AzureCloud::China => "https://vault.azure.cn",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            AzureCloud::Public => "the public cloud",
            AzureCloud::UsGovernment => "Azure US Government",
            AzureCloud::China => "Azure China (21Vianet)",
        }
    }

    /// The cloud whose vault suffix `host` has, if any.
    fn of_host(host: &str) -> Option<AzureCloud> {
        let host = host.to_ascii_lowercase();
        AzureCloud::ALL
            .into_iter()
            .find(|cloud| host.ends_with(&format!(".{}", cloud.vault_suffix())))
    }
}

/// The URL of the vault named `vault` in Azure's public cloud: `contoso-kv` becomes
/// `https://contoso-kv.vault.azure.net/`; a host (`contoso-kv.vault.azure.cn`) becomes
/// `https://HOST/`. See [`vault_url_in`] for the other clouds.
pub fn vault_url(vault: &str) -> Result<Url, BackendError> {
    vault_url_in(vault, AzureCloud::Public)
}

/// The URL of the vault named `vault` in `cloud`: `contoso-kv` becomes
/// `https://contoso-kv.{suffix}/` (`vault.azure.net`, `vault.usgovcloudapi.net`,
/// `vault.azure.cn`); a host (`contoso-kv.vault.azure.cn`) becomes `https://HOST/`. This is
/// how `azure-kv://VAULT/NAME` references and bare `vault_url` names are resolved.
pub fn vault_url_in(vault: &str, cloud: AzureCloud) -> Result<Url, BackendError> {
    let host = if vault.contains('.') {
        vault.to_owned()
    } else {
        format!("{vault}.{}", cloud.vault_suffix())
    };
    let valid = !vault.is_empty()
        && vault
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let url = valid
        .then(|| Url::parse(&format!("https://{host}/")).ok())
        .flatten();
    url.ok_or_else(|| {
        BackendError::new(
            ErrorKind::InvalidConfig,
            vault,
            format!(
                "\"{vault}\" is not a vault name or host: use the vault's name (contoso-kv) or host \
                 (contoso-kv.{})",
                cloud.vault_suffix()
            ),
        )
    })
}

/// A [`SecretStore`] over one Azure Key Vault.
pub struct AzureKeyVaultStore {
    backend: String,
    options: AzureKeyVaultOptions,
    client: SecretClient,
}

impl fmt::Debug for AzureKeyVaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVaultStore")
            .field("backend", &self.backend)
            .field("vault_url", &self.options.vault_url.as_str())
            .field("recover_deleted", &self.options.recover_deleted)
            .finish_non_exhaustive()
    }
}

impl AzureKeyVaultStore {
    /// A store named `backend` (for messages) over the vault in `options`, authenticating with
    /// `credential`. Checks the options and reads `ca_file`; no request is sent.
    pub fn new(
        backend: impl Into<String>,
        options: AzureKeyVaultOptions,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, BackendError> {
        let backend = backend.into();
        check_options(&backend, &options)?;
        let http = http_client(&backend, &options)?;
        let client_options = SecretClientOptions {
            client_options: ClientOptions {
                transport: Some(Transport::new(Arc::new(Http(http)))),
                retry: RetryOptions::custom(Arc::new(BackoffPolicy::new(options.retry))),
                ..ClientOptions::default()
            },
            verify_challenge_resource: Some(!is_loopback(&options.vault_url)),
            ..SecretClientOptions::default()
        };
        let client =
            SecretClient::new(options.vault_url.as_str(), credential, Some(client_options))
                .map_err(|e| {
                    BackendError::new(
                        ErrorKind::InvalidConfig,
                        &backend,
                        format!(
                            "cannot use the vault URL {}: give it as https://NAME.vault.azure.net",
                            options.vault_url
                        ),
                    )
                    .with_source(e)
                })?;
        Ok(AzureKeyVaultStore {
            backend,
            options,
            client,
        })
    }

    /// The options this store was built with.
    pub fn options(&self) -> &AzureKeyVaultOptions {
        &self.options
    }

    /// The latest version of `name`, `None` when it does not exist. The value is moved into a
    /// [`SecretString`] at once.
    async fn get(&self, name: &str) -> Result<Option<Current>, BackendError> {
        let response = self
            .client
            .get_secret(name, None::<SecretClientGetSecretOptions<'_>>)
            .await;
        let secret = match response.and_then(|r| r.into_model()) {
            Ok(secret) => secret,
            Err(err) if has_service_code(&err, StatusCode::NotFound, NOT_FOUND_CODE) => {
                return Ok(None);
            }
            Err(err) => return Err(self.translate(name, err)),
        };
        Ok(Some(Current::from(secret)))
    }

    /// `PUT /secrets/{name}` with the value, `exp`, content type and tags of `payload`.
    async fn set(&self, name: &str, payload: &TokenPayload) -> Result<(), azure_core::Error> {
        let mut tags: HashMap<String, String> = self.options.tags.clone().into_iter().collect();
        tags.insert(MANAGED_BY_TAG.to_owned(), payload.managed_by().to_owned());
        tags.insert(EXPIRES_AT_TAG.to_owned(), payload.expires_at_rfc3339());
        let content_type = self.options.content_type.clone().unwrap_or_else(|| {
            match payload.format() {
                Format::Raw => "application/jwt",
                Format::Json => "application/json",
            }
            .to_owned()
        });
        let parameters = SetSecretParameters {
            value: Some(payload.encode().expose_secret().to_owned()),
            content_type: Some(content_type),
            secret_attributes: Some(SecretAttributes {
                enabled: Some(true),
                expires: Some(payload.expires_on()),
                ..SecretAttributes::default()
            }),
            tags: Some(tags),
        };
        self.client
            .set_secret(name, parameters.try_into()?, None)
            .await?;
        Ok(())
    }

    /// Recovers the deleted secret `name` and waits until it can be read again.
    async fn recover(&self, name: &str) -> Result<(), BackendError> {
        tracing::info!(backend = %self.backend, secret = name, "recovering the deleted secret");
        if let Err(err) = self.client.recover_deleted_secret(name, None).await {
            return Err(self.translate(name, err));
        }
        let started = std::time::Instant::now();
        loop {
            if self.get(name).await?.is_some() {
                return Ok(());
            }
            if started.elapsed() >= self.options.recovery_timeout {
                return Err(self.error(
                    ErrorKind::Unavailable,
                    name,
                    format!(
                        "the deleted secret was recovered but did not come back within {:?}: run again later",
                        self.options.recovery_timeout
                    ),
                ));
            }
            tokio::time::sleep(self.options.retry.first_delay).await;
        }
    }

    fn error(&self, kind: ErrorKind, name: &str, message: impl Into<String>) -> BackendError {
        BackendError::new(kind, &self.backend, message).with_secret(name)
    }

    /// The one place an SDK error becomes a [`BackendError`]. Messages are built from status
    /// codes, the service's error codes and messages, and names: never from a value or token.
    fn translate(&self, name: &str, err: azure_core::Error) -> BackendError {
        let vault = self.options.vault_url.as_str().trim_end_matches('/');
        let (kind, message, retry_after) = match err.kind() {
            azure_core::error::ErrorKind::HttpResponse {
                status,
                raw_response,
                ..
            } => {
                let body = raw_response
                    .as_deref()
                    .map(|r| ServiceError::parse(r.body()))
                    .unwrap_or_default();
                let retry_after = raw_response.as_deref().and_then(|r| {
                    let headers = r.headers();
                    retry_after(
                        headers.get_optional_str(&RETRY_AFTER),
                        headers.get_optional_str(&RETRY_AFTER_MS),
                    )
                });
                let (kind, message) = http_error(name, vault, self.options.cloud, *status, &body);
                (kind, message, retry_after)
            }
            _ if crate::http::find_cause::<BodyTooLarge>(&err).is_some() => (
                ErrorKind::Protocol,
                format!(
                    "the vault {vault} sent an answer larger than {} KiB, so it was not read: check that \
                     vault_url is a Key Vault",
                    MAX_ANSWER_BYTES / 1024
                ),
                None,
            ),
            azure_core::error::ErrorKind::Connection | azure_core::error::ErrorKind::Io => (
                ErrorKind::Unreachable,
                format!(
                    "cannot reach the vault {vault}: {}: check the URL, DNS and network (firewall, private endpoint)",
                    root_cause(&err)
                ),
                None,
            ),
            azure_core::error::ErrorKind::Other
                if causes(&err).any(|c| c.downcast_ref::<TlsRefused>().is_some()) =>
            {
                (
                    ErrorKind::Unreachable,
                    format!(
                        "cannot reach the vault {vault}: its TLS certificate was refused ({}): trust the CA that \
                     signed it with ca_file or SSL_CERT_FILE (e.g. a TLS-inspecting proxy's CA), or fix vault_url",
                        root_cause(&err)
                    ),
                    None,
                )
            }
            azure_core::error::ErrorKind::Credential => credential_error(&err),
            azure_core::error::ErrorKind::DataConversion => (
                ErrorKind::Protocol,
                format!(
                    "the vault {vault} answered something that is not a Key Vault response ({err}): \
                     check that vault_url is a Key Vault"
                ),
                None,
            ),
            _ => (
                ErrorKind::Protocol,
                format!("the Azure SDK refused the request to {vault}: {err}"),
                None,
            ),
        };
        let mut error = self.error(kind, name, message).with_source(err);
        if let Some(wait) = retry_after {
            error = error.with_retry_after(wait);
        }
        error
    }
}

/// The tags of a whole value's credential record (written with the value: tags are per version).
pub const RECORD_TAGS: [&str; 5] = [
    "secret-sync-key-id",
    "secret-sync-key-expires-on",
    "secret-sync-previous-key-id",
    "secret-sync-retire-previous-on",
    "secret-sync-installation",
];

/// The most tags Key Vault keeps on a secret.
const MAX_TAGS: usize = 15;

/// The record in a version's tags.
fn record_from_tags(tags: &HashMap<String, String>) -> CredentialRecord {
    let bases = crate::value::RECORD_FIELDS;
    CredentialRecord::from_lookup(|base| {
        let at = bases.iter().position(|b| *b == base)?;
        tags.get(RECORD_TAGS[at]).cloned()
    })
}

/// What a write needs to know of the current version.
pub(crate) struct Current {
    value: Option<SecretString>,
    pub(crate) expires: Option<OffsetDateTime>,
    pub(crate) metadata: SecretMetadata,
    /// The version's tags (a value written back keeps them, its record tags replaced).
    tags: HashMap<String, String>,
    content_type: Option<String>,
}

impl From<Secret> for Current {
    fn from(secret: Secret) -> Self {
        let attributes = secret.attributes.unwrap_or_default();
        let tags = secret.tags.unwrap_or_default();
        let expires = attributes.expires.and_then(stored_time);
        // a tag anyone can edit in the portal: a time that cannot be stored is no expiry
        let expires_on =
            expires.or_else(|| tags.get(EXPIRES_AT_TAG).and_then(|t| parse_rfc3339(t)));
        let version = secret
            .id
            .as_deref()
            .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Current {
            value: secret.value.map(SecretString::from),
            expires,
            metadata: SecretMetadata {
                expires_on,
                managed_by: tags.get(MANAGED_BY_TAG).cloned(),
                version,
                updated_on: attributes.updated.and_then(stored_time),
            },
            tags,
            content_type: secret.content_type,
        }
    }
}

#[async_trait::async_trait]
impl SecretStore for AzureKeyVaultStore {
    fn backend(&self) -> &str {
        &self.backend
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        check_name(&self.backend, name)
    }

    fn max_value_bytes(&self) -> usize {
        MAX_VALUE_BYTES
    }

    async fn read(&self, name: &str, field: Option<&str>) -> Result<SecretString, BackendError> {
        self.check_name(name)?;
        let Some(current) = self.get(name).await? else {
            return Err(self.error(
                ErrorKind::NotFound,
                name,
                format!(
                    "the secret does not exist in {}: create it or fix the name",
                    self.options.vault_url.as_str().trim_end_matches('/')
                ),
            ));
        };
        let Some(value) = current.value else {
            return Err(self.error(
                ErrorKind::Protocol,
                name,
                "the vault returned the secret without a value",
            ));
        };
        pick_field(&self.backend, name, value, field)
    }

    async fn metadata(&self, name: &str) -> Result<Option<SecretMetadata>, BackendError> {
        self.check_name(name)?;
        Ok(self.get(name).await?.map(|current| current.metadata))
    }

    async fn write(
        &self,
        name: &str,
        payload: &TokenPayload,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        self.check_write(name, payload)?;
        if payload.managed_by().chars().count() > MAX_TAG_CHARS {
            return Err(self.error(
                ErrorKind::InvalidValue,
                name,
                format!("the managed-by marker is longer than the {MAX_TAG_CHARS} characters a Key Vault tag holds: shorten it"),
            ));
        }
        // Key Vault has no conditional write (every PUT makes a version): the rule is applied
        // to what this read finds, and a writer between it and the PUT is not seen.
        let exists = match self.get(name).await {
            Ok(Some(current)) => {
                precondition.check(
                    &self.backend,
                    name,
                    Some(&current.metadata),
                    payload.managed_by(),
                )?;
                let same_value = current
                    .value
                    .as_ref()
                    .is_some_and(|v| v.expose_secret() == payload.encode().expose_secret());
                if same_value && current.expires == Some(payload.expires_on()) {
                    tracing::debug!(backend = %self.backend, secret = name, "unchanged");
                    return Ok(WriteOutcome::Unchanged);
                }
                true
            }
            Ok(None) => false,
            // A disabled secret cannot be read, but a new (enabled) version can be written.
            // Its tags cannot be read either: the rule goes by what the caller's read saw.
            Err(err) if err.kind() == ErrorKind::Conflict => {
                precondition.check(
                    &self.backend,
                    name,
                    precondition.seen().flatten(),
                    payload.managed_by(),
                )?;
                true
            }
            Err(err) => return Err(err),
        };
        match self.set(name, payload).await {
            Ok(()) => {}
            Err(err)
                if self.options.recover_deleted
                    && has_service_code(&err, StatusCode::Conflict, RECOVERABLE_CODE) =>
            {
                self.recover(name).await?;
                self.set(name, payload)
                    .await
                    .map_err(|e| self.translate(name, e))?;
                return Ok(WriteOutcome::Updated);
            }
            Err(err) => return Err(self.translate(name, err)),
        }
        tracing::debug!(backend = %self.backend, secret = name, "written");
        Ok(if exists {
            WriteOutcome::Updated
        } else {
            WriteOutcome::Created
        })
    }

    async fn read_stored(
        &self,
        name: &str,
        field: Option<&str>,
    ) -> Result<StoredValue, BackendError> {
        self.check_name(name)?;
        let Some(current) = self.get(name).await? else {
            return Err(self.error(
                ErrorKind::NotFound,
                name,
                format!(
                    "the secret does not exist in {}: create it or fix the name",
                    self.options.vault_url.as_str().trim_end_matches('/')
                ),
            ));
        };
        let Some(value) = current.value else {
            return Err(self.error(
                ErrorKind::Protocol,
                name,
                "the vault returned the secret without a value",
            ));
        };
        let (value, record) = match field {
            Some(field) => {
                let map = parse_document(&self.backend, name, value.expose_secret(), field)?;
                (
                    pick_from_map(&self.backend, name, &map, field)?,
                    CredentialRecord::from_siblings(&map, field),
                )
            }
            None => (value, record_from_tags(&current.tags)),
        };
        Ok(StoredValue {
            value,
            record,
            metadata: current.metadata,
        })
    }

    async fn write_value(
        &self,
        name: &str,
        field: Option<&str>,
        value: &SecretValue,
        record: &CredentialRecord,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        self.check_write_value(name, field, value, record)?;
        // Key Vault has no conditional write (every PUT makes a version): the precondition is
        // checked against this read, and a writer between it and the PUT is not seen
        // (docs/backends.md).
        let current = self.get(name).await?;
        precondition.check_unchanged(
            &self.backend,
            name,
            current.as_ref().map(|c| c.metadata.version.as_deref()),
        )?;
        let current_text = match &current {
            Some(c) => Some(c.value.as_ref().ok_or_else(|| {
                self.error(
                    ErrorKind::Protocol,
                    name,
                    "the vault returned the secret without a value",
                )
            })?),
            None => None,
        };
        let text = match field {
            Some(field) => {
                let mut map = match current_text {
                    Some(text) => parse_document(&self.backend, name, text.expose_secret(), field)?,
                    None => serde_json::Map::new(),
                };
                let before = map.clone();
                set_field(&mut map, field, value, record);
                if current.is_some() && map == before {
                    return Ok(WriteOutcome::Unchanged);
                }
                serde_json::Value::Object(map).to_string()
            }
            None => {
                if let (Some(c), Some(text)) = (&current, current_text)
                    && text.expose_secret() == value.secret().expose_secret()
                    && record_from_tags(&c.tags) == *record
                {
                    return Ok(WriteOutcome::Unchanged);
                }
                value.secret().expose_secret().to_owned()
            }
        };
        check_size(&self.backend, name, text.len(), MAX_VALUE_BYTES)?;
        // The new version keeps the current one's tags and content type; a whole value's
        // record replaces the record tags (tags are per version: written with the value).
        let mut tags = current.as_ref().map(|c| c.tags.clone()).unwrap_or_default();
        if field.is_none() {
            tags.retain(|key, _| !RECORD_TAGS.contains(&key.as_str()));
            for ((_, text), key) in record.entries().into_iter().zip(RECORD_TAGS) {
                if let Some(text) = text {
                    tags.insert(key.to_owned(), text);
                }
            }
        }
        if tags.len() > MAX_TAGS {
            return Err(self.error(
                ErrorKind::InvalidValue,
                name,
                format!(
                    "the new version would carry {} tags (the secret's own and the credential \
                     record's), more than the {MAX_TAGS} Key Vault keeps: remove some of the \
                     secret's tags, or store the secret as a JSON document and name its #field \
                     (the record then goes in fields beside it)",
                    tags.len()
                ),
            ));
        }
        let parameters = SetSecretParameters {
            value: Some(text),
            content_type: current.as_ref().and_then(|c| c.content_type.clone()),
            secret_attributes: Some(SecretAttributes {
                enabled: Some(true),
                ..SecretAttributes::default()
            }),
            tags: Some(tags),
        };
        let request = parameters.try_into().map_err(|e| self.translate(name, e))?;
        self.client
            .set_secret(name, request, None)
            .await
            .map_err(|e| self.translate(name, e))?;
        Ok(if current.is_some() {
            WriteOutcome::Updated
        } else {
            WriteOutcome::Created
        })
    }
}

/// The Key Vault secret naming rule, without a store (e.g. to validate a config):
/// what [`SecretStore::check_name`] of an [`AzureKeyVaultStore`] named `backend` checks.
pub fn check_name(backend: &str, name: &str) -> Result<(), BackendError> {
    let valid = (1..=127).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        return Ok(());
    }
    Err(BackendError::new(
        ErrorKind::InvalidName,
        backend,
        "Key Vault secret names are 1-127 letters, digits and dashes (no \"/\", \"_\" or \".\"), \
         e.g. \"graph-access-token\"",
    )
    .with_secret(name))
}

/// Refuses unusable options before anything is built.
fn check_options(backend: &str, options: &AzureKeyVaultOptions) -> Result<(), BackendError> {
    let invalid = |message: String| {
        Err(BackendError::new(
            ErrorKind::InvalidConfig,
            backend,
            message,
        ))
    };
    let url = &options.vault_url;
    if url.scheme() != "https" {
        return invalid(format!(
            "the vault URL {url} is not https: Key Vault is only reachable over TLS (https://NAME.vault.azure.net)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty)
        || url.path() != "/"
        || url.query().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return invalid(format!(
            "the vault URL {} must be just the vault's address, e.g. https://contoso-kv.vault.azure.net \
             (no path, query or user)",
            redact_userinfo(url)
        ));
    }
    if let Some(host_cloud) = url.host_str().and_then(AzureCloud::of_host)
        && host_cloud != options.cloud
    {
        return invalid(format!(
            "the vault {} is in {}, but its login is {}'s: give the login that cloud's authority \
             (authority = \"usgov\" or \"china\"), or the vault of the login's cloud",
            redact_userinfo(url),
            host_cloud.describe(),
            options.cloud.describe()
        ));
    }
    if options.tags.len() > MAX_EXTRA_TAGS {
        return invalid(format!(
            "{} tags are configured, Key Vault keeps 15 per secret and secret-sync uses 2: keep at most {MAX_EXTRA_TAGS}",
            options.tags.len()
        ));
    }
    for (key, value) in &options.tags {
        if key == MANAGED_BY_TAG || key == EXPIRES_AT_TAG {
            return invalid(format!(
                "the tag \"{key}\" is written by secret-sync itself: remove it from tags"
            ));
        }
        if key.is_empty()
            || key.chars().count() > MAX_TAG_CHARS
            || value.chars().count() > MAX_TAG_CHARS
        {
            return invalid(format!(
                "the tag \"{key}\" is empty or longer than {MAX_TAG_CHARS} characters (name or value): shorten it"
            ));
        }
    }
    if let Some(content_type) = &options.content_type
        && (content_type.is_empty() || content_type.chars().count() > MAX_CONTENT_TYPE_CHARS)
    {
        return invalid(format!(
            "content_type must be 1-{MAX_CONTENT_TYPE_CHARS} characters, e.g. \"application/jwt\""
        ));
    }
    if options.retry.first_delay.is_zero() || options.retry.max_delay < options.retry.first_delay {
        return invalid(
            "retry.first_delay must be more than zero and not more than retry.max_delay".to_owned(),
        );
    }
    Ok(())
}

/// The vault URL without any user or password, for messages.
fn redact_userinfo(url: &Url) -> Url {
    let mut url = url.clone();
    // Only fails for URLs that cannot have credentials, which then have none to hide.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// The HTTP client: rustls with the system roots (honouring `SSL_CERT_FILE`) plus `ca_file`.
fn http_client(
    backend: &str,
    options: &AzureKeyVaultOptions,
) -> Result<reqwest::Client, BackendError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.timeout.min(Duration::from_secs(10)))
        .timeout(options.timeout)
        .redirect(reqwest::redirect::Policy::none());
    let mut extra = Vec::new();
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            BackendError::new(
                ErrorKind::InvalidConfig,
                backend,
                format!("cannot read ca_file {}: check the path", path.display()),
            )
            .with_source(e)
        })?;
        // Checked here for the message; platform_tls reads the PEM again.
        reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| {
                BackendError::new(
                    ErrorKind::InvalidConfig,
                    backend,
                    format!(
                        "ca_file {} holds no PEM certificate: give a file of \"-----BEGIN CERTIFICATE-----\" blocks",
                        path.display()
                    ),
                )
            })?;
        extra.push(pem);
    }
    // The platform's roots, read at the first handshake (platform-tls), and ca_file's.
    builder = platform_tls::platform_roots(builder, &extra).map_err(|message| {
        BackendError::new(
            ErrorKind::InvalidConfig,
            backend,
            format!("cannot use ca_file: {message}: check the file"),
        )
    })?;
    builder.build().map_err(|e| {
        BackendError::new(
            ErrorKind::InvalidConfig,
            backend,
            "cannot build the HTTPS client (is a ca_file certificate malformed?)",
        )
        .with_source(e)
    })
}

/// The HTTP client the SDK sends through: reqwest, except that a refused TLS handshake (an
/// untrusted or mismatched certificate) is not reported as a connection error, which the SDK
/// would retry for half a minute although retrying cannot help.
#[derive(Debug)]
struct Http(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for Http {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let response = self.0.execute_request(request).await.map_err(|err| {
            if platform_tls::is_tls_refusal(&err) {
                azure_core::Error::new(azure_core::error::ErrorKind::Other, TlsRefused(err))
            } else {
                err
            }
        })?;
        // the SDK reads every body whole: it gets at most MAX_ANSWER_BYTES of it
        let (status, headers, body) = response.deconstruct();
        let capped = CappedBody {
            inner: body,
            read: 0,
            limit: MAX_ANSWER_BYTES,
        };
        Ok(AsyncRawResponse::new(status, headers, Box::pin(capped)))
    }
}

/// A response body that fails once more than `limit` bytes have come, so a hostile or broken
/// server cannot make the SDK hold an unbounded answer.
struct CappedBody {
    inner: azure_core::http::AsyncResponseBody,
    read: usize,
    limit: usize,
}

impl Stream for CappedBody {
    type Item = azure_core::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.read > self.limit {
            return std::task::Poll::Ready(None);
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            self.read = self.read.saturating_add(chunk.len());
            if self.read > self.limit {
                let limit = self.limit;
                return std::task::Poll::Ready(Some(Err(azure_core::Error::new(
                    azure_core::error::ErrorKind::Io,
                    BodyTooLarge { limit },
                ))));
            }
        }
        polled
    }
}

/// A TLS handshake this client refused; the cause chain says why (e.g. `UnknownIssuer`).
#[derive(Debug, thiserror::Error)]
#[error("the vault's TLS certificate was refused")]
struct TlsRefused(#[source] azure_core::Error);

/// `err` and its sources, outermost first.
fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// Whether the vault is on this machine (an emulator): only then is the challenge's resource
/// allowed not to match the vault's domain.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The SDK's retry policy with our schedule: waits of `first_delay * 2^(n-1)`, at least the
/// server's `Retry-After`, at most `max_delay`.
#[derive(Debug)]
struct BackoffPolicy {
    settings: RetrySettings,
    headers: RetryHeaders,
}

impl BackoffPolicy {
    fn new(settings: RetrySettings) -> Self {
        BackoffPolicy {
            settings,
            headers: RetryHeaders {
                retry_headers: vec![X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER],
            },
        }
    }

    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let backoff = self.settings.first_delay.saturating_mul(1 << exponent);
        backoff
            .max(retry_after.unwrap_or_default())
            .min(self.settings.max_delay)
    }
}

#[async_trait::async_trait]
impl RetryPolicy for BackoffPolicy {
    fn is_expired(&self, _since_start: azure_core::time::Duration, retry_count: u32) -> bool {
        retry_count >= self.settings.max_retries
    }

    fn retry_headers(&self) -> Option<&RetryHeaders> {
        Some(&self.headers)
    }

    fn retry_status_codes(&self) -> &[StatusCode] {
        // Empty: the SDK's defaults (408, 429, 500, 502, 503, 504).
        &[]
    }

    fn sleep_duration(&self, retry_count: u32) -> azure_core::time::Duration {
        to_time_duration(self.delay(retry_count, None))
    }

    async fn wait(&self, retry_count: u32, retry_after: Option<azure_core::time::Duration>) {
        let retry_after = retry_after.and_then(|d| Duration::try_from(d).ok());
        let wait = self.delay(retry_count, retry_after);
        tracing::debug!(retry = retry_count, ?wait, "retrying a Key Vault request");
        tokio::time::sleep(wait).await;
    }
}

fn to_time_duration(d: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::try_from(d).unwrap_or(azure_core::time::Duration::MAX)
}

/// `Retry-After` (seconds) or `retry-after-ms`, as the server sent it.
fn retry_after(seconds: Option<&str>, millis: Option<&str>) -> Option<Duration> {
    let parse = |v: Option<&str>| v.and_then(|v| v.trim().parse::<u64>().ok());
    parse(millis)
        .map(Duration::from_millis)
        .or_else(|| parse(seconds).map(Duration::from_secs))
}

/// The error document Key Vault sends: `{"error":{"code","message","innererror":{"code"}}}`.
#[derive(Debug, Default, PartialEq, Eq)]
struct ServiceError {
    code: Option<String>,
    inner_code: Option<String>,
    message: Option<String>,
}

impl ServiceError {
    fn parse(body: &[u8]) -> ServiceError {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
            return ServiceError::default();
        };
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        let error = doc.get("error");
        ServiceError {
            code: text(error.and_then(|e| e.get("code"))),
            inner_code: text(
                error
                    .and_then(|e| e.get("innererror"))
                    .and_then(|e| e.get("code")),
            ),
            message: text(error.and_then(|e| e.get("message"))),
        }
    }

    /// `Code/InnerCode: message` for messages, or the status when the body said nothing.
    fn describe(&self, status: StatusCode) -> String {
        let code = match (&self.code, &self.inner_code) {
            (Some(code), Some(inner)) => format!("{code}/{inner}"),
            (Some(code), None) => code.clone(),
            (None, Some(inner)) => inner.clone(),
            (None, None) => format!("HTTP {}", u16::from(status)),
        };
        match &self.message {
            Some(message) => format!("{code}: {message}"),
            None => code,
        }
    }

    fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code) || self.inner_code.as_deref() == Some(code)
    }
}

/// What a failed token request for the vault was. The credential says it in `azure_core`'s
/// words (entra-auth's `EntraTokenCredential` does): a `Credential` error whose source is a
/// `Connection` error (the token service was unreachable) or an `HttpResponse` with the token
/// service's status (429 throttled, 408/5xx unavailable, other: refused) and its `Retry-After`.
/// Any other credential error is a refusal.
fn credential_error(err: &azure_core::Error) -> (ErrorKind, String, Option<Duration>) {
    let cause = root_cause(err);
    let inner = causes(err)
        .filter_map(|e| e.downcast_ref::<azure_core::Error>())
        .map(azure_core::Error::kind)
        .find(|kind| !matches!(kind, azure_core::error::ErrorKind::Credential));
    match inner {
        Some(azure_core::error::ErrorKind::Connection | azure_core::error::ErrorKind::Io) => (
            ErrorKind::Unreachable,
            format!(
                "could not reach the token service for a vault token: {cause}: check the authority, \
                 DNS and network; it is tried again"
            ),
            None,
        ),
        Some(azure_core::error::ErrorKind::HttpResponse {
            status,
            raw_response,
            ..
        }) => {
            let retry_after = raw_response
                .as_deref()
                .and_then(|r| retry_after(r.headers().get_optional_str(&RETRY_AFTER), None));
            match u16::from(*status) {
                429 => (
                    ErrorKind::Throttled,
                    format!(
                        "the token service throttled the request for a vault token: {cause}: it is tried again later"
                    ),
                    retry_after,
                ),
                408 | 500..=599 => (
                    ErrorKind::Unavailable,
                    format!(
                        "the token service was unavailable for a vault token: {cause}: it is tried again later"
                    ),
                    retry_after,
                ),
                _ => (
                    ErrorKind::Unauthorized,
                    format!(
                        "the token service refused the vault login: {cause}: check the backend's auth settings"
                    ),
                    None,
                ),
            }
        }
        _ => (
            ErrorKind::Unauthorized,
            format!(
                "could not get an access token for the vault: {cause}: check the backend's auth settings"
            ),
            None,
        ),
    }
}

/// The kind and message for an HTTP error status from the vault.
fn http_error(
    name: &str,
    vault: &str,
    cloud: AzureCloud,
    status: StatusCode,
    body: &ServiceError,
) -> (ErrorKind, String) {
    let said = body.describe(status);
    match u16::from(status) {
        401 => (
            ErrorKind::Unauthorized,
            format!(
                "the vault {vault} refused the access token ({said}): check that the identity belongs to the \
                 vault's tenant and that the token is for {}",
                cloud.key_vault_resource()
            ),
        ),
        403 if body.has_code("SecretDisabled") => (
            ErrorKind::Conflict,
            format!(
                "the secret is disabled ({said}): enable it (`az keyvault secret set-attributes --enabled true`) \
                 or let secret-sync write a new, enabled version"
            ),
        ),
        403 => (
            ErrorKind::Forbidden,
            format!(
                "the identity has no access to secrets in this vault ({said}): grant it the \
                 'Key Vault Secrets Officer' role or an access policy with get/set"
            ),
        ),
        404 if body.has_code(NOT_FOUND_CODE) => (
            ErrorKind::NotFound,
            format!("the secret does not exist in {vault}: create it or fix the name"),
        ),
        404 => (
            ErrorKind::InvalidConfig,
            format!(
                "{vault} answered 404 ({said}), not as a Key Vault does: check that vault_url is the vault's \
                 address, e.g. https://contoso-kv.vault.azure.net"
            ),
        ),
        409 if body.has_code(RECOVERABLE_CODE) => (
            ErrorKind::Conflict,
            format!(
                "the secret {name} is deleted but recoverable: recover it (`az keyvault secret recover`), \
                 purge it, or set recover_deleted = true"
            ),
        ),
        409 => (
            ErrorKind::Conflict,
            format!(
                "the vault refused the change ({said}): check the secret's state in the portal, then run again"
            ),
        ),
        429 => (
            ErrorKind::Throttled,
            format!(
                "the vault {vault} kept throttling requests ({said}) after every retry: run again later, \
                 or lower the concurrency of jobs writing to this vault"
            ),
        ),
        408 | 500..=599 => (
            ErrorKind::Unavailable,
            format!("the vault {vault} failed ({said}) after every retry: run again later"),
        ),
        300..=399 => (
            ErrorKind::Protocol,
            format!(
                "the vault {vault} answered with a redirect ({said}): secret-sync follows no redirect, since it \
                 would send the bearer token (and what is being written) elsewhere: set vault_url to the vault itself"
            ),
        ),
        _ => (
            ErrorKind::Protocol,
            format!("the vault {vault} refused the request ({said})"),
        ),
    }
}

/// Whether `err` is an HTTP `status` whose error document carries `code`.
fn has_service_code(err: &azure_core::Error, status: StatusCode, code: &str) -> bool {
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status: got,
            raw_response: Some(raw),
            ..
        } if *got == status => ServiceError::parse(raw.body()).has_code(code),
        _ => false,
    }
}

/// The innermost cause's text ("Connection refused", "invalid peer certificate: UnknownIssuer").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    causes(err)
        .last()
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::RawResponse;
    use azure_core::http::headers::Headers;
    use std::error::Error as _;

    /// A credential that is never asked: these tests send no request.
    #[derive(Debug)]
    struct NoCredential;

    #[async_trait::async_trait]
    impl TokenCredential for NoCredential {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "no credential in unit tests",
            ))
        }
    }

    fn options(url: &str) -> AzureKeyVaultOptions {
        AzureKeyVaultOptions::new(url.parse().unwrap())
    }

    fn store(options: AzureKeyVaultOptions) -> Result<AzureKeyVaultStore, BackendError> {
        AzureKeyVaultStore::new("kv", options, Arc::new(NoCredential))
    }

    fn http_failure(
        status: u16,
        headers: &[(&'static str, &str)],
        body: &str,
    ) -> azure_core::Error {
        let mut map = Headers::new();
        for (name, value) in headers {
            map.insert(*name, value.to_string());
        }
        let raw = RawResponse::from_bytes(StatusCode::from(status), map, body.to_owned());
        azure_core::Error::with_message(
            azure_core::error::ErrorKind::HttpResponse {
                status: StatusCode::from(status),
                error_code: None,
                raw_response: Some(Box::new(raw)),
            },
            "HTTP error",
        )
    }

    #[test]
    fn names_follow_key_vault_rules() {
        let kv = store(options("https://contoso.vault.azure.net")).unwrap();
        for good in ["a", "graph-access-token", "A1-b2", &"x".repeat(127)] {
            assert!(kv.check_name(good).is_ok(), "{good:?} should be accepted");
        }
        for bad in ["", "a/b", "a_b", "a.b", "é", "a b", &"x".repeat(128)] {
            let err = kv.check_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad:?}");
            assert!(
                err.to_string().contains("letters, digits and dashes"),
                "{err}"
            );
        }
        assert_eq!(kv.max_value_bytes(), 25_600);
    }

    #[test]
    fn a_bare_vault_name_is_a_host_of_its_cloud() {
        for (cloud, url, resource) in [
            (
                AzureCloud::Public,
                "https://contoso-kv.vault.azure.net/",
                "https://vault.azure.net",
            ),
            (
                AzureCloud::UsGovernment,
                "https://contoso-kv.vault.usgovcloudapi.net/",
                "https://vault.usgovcloudapi.net",
            ),
            (
                AzureCloud::China,
                "https://contoso-kv.vault.azure.cn/",
                "https://vault.azure.cn",
            ),
        ] {
            assert_eq!(vault_url_in("contoso-kv", cloud).unwrap().as_str(), url);
            assert_eq!(cloud.key_vault_resource(), resource);
            // A host stays as given, whatever the cloud.
            assert_eq!(
                vault_url_in("contoso-kv.vault.azure.cn", cloud)
                    .unwrap()
                    .as_str(),
                "https://contoso-kv.vault.azure.cn/"
            );
            let err = vault_url_in("a b", cloud).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("contoso-kv.{}", cloud.vault_suffix())),
                "{err}"
            );
            // A vault host of this cloud is fine; one of another cloud is refused.
            let mut o = options(url);
            o.cloud = cloud;
            store(o).unwrap();
        }
        let mut o = options("https://contoso-kv.vault.azure.net");
        o.cloud = AzureCloud::UsGovernment;
        let err = store(o).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(
            err.to_string()
                .contains("is in the public cloud, but its login is Azure US Government's"),
            "{err}"
        );
        // The refusal names the cloud's resource.
        let refused = ServiceError::parse(
            br#"{"error":{"code":"Unauthorized","message":"AKV10022: Invalid audience."}}"#,
        );
        let (_, message) = http_error(
            "s",
            "https://kv.vault.azure.cn",
            AzureCloud::China,
            StatusCode::Unauthorized,
            &refused,
        );
        assert!(
            message.ends_with("the token is for https://vault.azure.cn"),
            "{message}"
        );
    }

    #[test]
    fn vault_url_from_name_or_host() {
        assert_eq!(
            vault_url("contoso-kv").unwrap().as_str(),
            "https://contoso-kv.vault.azure.net/"
        );
        assert_eq!(
            vault_url("contoso-kv.vault.azure.cn").unwrap().as_str(),
            "https://contoso-kv.vault.azure.cn/"
        );
        for bad in ["", "a/b", "https://x", "a b"] {
            let err = vault_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{bad:?}");
        }
    }

    #[test]
    fn options_are_checked() {
        let refused = |o: AzureKeyVaultOptions, expected: &str| {
            let err = store(o).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
            assert!(
                err.to_string().contains(expected),
                "expected {expected:?} in: {err}"
            );
        };
        refused(options("http://contoso.vault.azure.net"), "is not https");
        refused(
            options("https://contoso.vault.azure.net/secrets"),
            "no path",
        );
        refused(
            options("https://user:pw-s3cr3t@contoso.vault.azure.net"),
            "no path, query or user",
        );
        let err = store(options("https://user:pw-s3cr3t@contoso.vault.azure.net")).unwrap_err();
        assert!(!err.to_string().contains("pw-s3cr3t"), "{err}");

        let mut o = options("https://contoso.vault.azure.net");
        o.tags = (0..14).map(|i| (format!("t{i}"), "v".into())).collect();
        refused(o, "keep at most 13");
        let mut o = options("https://contoso.vault.azure.net");
        o.tags.insert(MANAGED_BY_TAG.into(), "me".into());
        refused(o, "written by secret-sync itself");
        let mut o = options("https://contoso.vault.azure.net");
        o.content_type = Some(String::new());
        refused(o, "content_type");

        let dir = tempfile::tempdir().unwrap();
        let mut o = options("https://contoso.vault.azure.net");
        o.ca_file = Some(dir.path().join("missing.pem"));
        refused(o, "cannot read ca_file");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let mut o = options("https://contoso.vault.azure.net");
        o.ca_file = Some(not_pem);
        refused(o, "holds no PEM certificate");

        let kv = store(options("https://127.0.0.1:8443")).unwrap();
        assert_eq!(
            format!("{kv:?}"),
            "AzureKeyVaultStore { backend: \"kv\", vault_url: \"https://127.0.0.1:8443/\", recover_deleted: false, .. }"
        );
    }

    #[test]
    fn loopback_detection() {
        for (url, expected) in [
            ("https://127.0.0.1:8443", true),
            ("https://[::1]:8443", true),
            ("https://localhost:8443", true),
            ("https://contoso.vault.azure.net", false),
            ("https://10.0.0.1", false),
            ("https://localhost.example.com", false),
        ] {
            assert_eq!(is_loopback(&url.parse().unwrap()), expected, "{url}");
        }
    }

    #[test]
    fn backoff_schedule_and_retry_after() {
        let policy = BackoffPolicy::new(RetrySettings::default());
        let waits: Vec<u64> = (1..=5).map(|n| policy.delay(n, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            policy.delay(3, Some(Duration::from_secs(1))),
            Duration::from_secs(4)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(16)
        );
        assert_eq!(policy.delay(40, None), Duration::from_secs(16));
        assert!(!policy.is_expired(azure_core::time::Duration::ZERO, 4));
        assert!(policy.is_expired(azure_core::time::Duration::ZERO, 5));

        assert_eq!(retry_after(Some("7"), None), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(Some("7"), Some("250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), None),
            None
        );
    }

    #[test]
    fn service_errors_are_parsed() {
        let recoverable = ServiceError::parse(
            br#"{"error":{"code":"Conflict","message":"Secret x is currently in a deleted but recoverable state","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#,
        );
        assert!(recoverable.has_code(RECOVERABLE_CODE));
        assert_eq!(
            recoverable.describe(StatusCode::Conflict),
            "Conflict/ObjectIsDeletedButRecoverable: Secret x is currently in a deleted but recoverable state"
        );
        assert_eq!(
            ServiceError::parse(b"<html>").describe(StatusCode::BadGateway),
            "HTTP 502"
        );
    }

    #[test]
    fn http_errors_say_what_to_do() {
        let vault = "https://kv.example";
        let none = ServiceError::default();
        let cases: [(u16, &str, ErrorKind, &str); 8] = [
            (
                401,
                r#"{"error":{"code":"Unauthorized","message":"AKV10022: Invalid audience."}}"#,
                ErrorKind::Unauthorized,
                "AKV10022",
            ),
            (
                403,
                r#"{"error":{"code":"Forbidden","message":"Caller is not authorized","innererror":{"code":"ForbiddenByRbac"}}}"#,
                ErrorKind::Forbidden,
                "'Key Vault Secrets Officer' role",
            ),
            (
                403,
                r#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#,
                ErrorKind::Conflict,
                "the secret is disabled",
            ),
            (
                404,
                r#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) s was not found"}}"#,
                ErrorKind::NotFound,
                "does not exist",
            ),
            (
                409,
                r#"{"error":{"code":"Conflict","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#,
                ErrorKind::Conflict,
                "the secret s is deleted but recoverable: recover it (`az keyvault secret recover`), purge it, or set recover_deleted = true",
            ),
            (
                429,
                r#"{"error":{"code":"Throttled","message":"Too many requests"}}"#,
                ErrorKind::Throttled,
                "kept throttling",
            ),
            (503, "", ErrorKind::Unavailable, "HTTP 503"),
            (
                400,
                r#"{"error":{"code":"BadParameter","message":"Property has invalid value"}}"#,
                ErrorKind::Protocol,
                "BadParameter",
            ),
        ];
        for (status, body, kind, expected) in cases {
            let parsed = if body.is_empty() {
                ServiceError::default()
            } else {
                ServiceError::parse(body.as_bytes())
            };
            let (got, message) = http_error(
                "s",
                vault,
                AzureCloud::Public,
                StatusCode::from(status),
                &parsed,
            );
            assert_eq!(got, kind, "status {status}: {message}");
            assert!(
                message.contains(expected),
                "status {status}: expected {expected:?} in {message:?}"
            );
        }
        assert_eq!(
            http_error("s", vault, AzureCloud::Public, StatusCode::from(418), &none).0,
            ErrorKind::Protocol
        );
        let (kind, message) =
            http_error("s", vault, AzureCloud::Public, StatusCode::NotFound, &none);
        assert_eq!(
            kind,
            ErrorKind::InvalidConfig,
            "a 404 that is not SecretNotFound"
        );
        assert!(
            message.contains("check that vault_url is the vault's address"),
            "{message}"
        );
    }

    #[test]
    fn translate_keeps_retry_after_and_source() {
        let kv = store(options("https://contoso.vault.azure.net")).unwrap();
        let err = kv.translate(
            "graph-token",
            http_failure(
                429,
                &[("retry-after", "3")],
                r#"{"error":{"code":"Throttled","message":"slow down"}}"#,
            ),
        );
        assert_eq!(err.kind(), ErrorKind::Throttled);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(err.secret(), Some("graph-token"));
        assert!(
            err.source().is_some(),
            "the SDK error is kept as the source"
        );
        assert!(err.is_retryable());

        let recoverable = http_failure(
            409,
            &[],
            r#"{"error":{"code":"Conflict","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#,
        );
        assert!(has_service_code(
            &recoverable,
            StatusCode::Conflict,
            RECOVERABLE_CODE
        ));
        assert!(!has_service_code(
            &recoverable,
            StatusCode::NotFound,
            RECOVERABLE_CODE
        ));
        assert!(!has_service_code(
            &http_failure(409, &[], "{}"),
            StatusCode::Conflict,
            RECOVERABLE_CODE
        ));

        let io = azure_core::Error::with_error(
            azure_core::error::ErrorKind::Connection,
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused"),
            "failed to execute `reqwest` request",
        );
        let err = kv.translate("graph-token", io);
        assert_eq!(err.kind(), ErrorKind::Unreachable);
        assert!(err.to_string().contains("Connection refused"), "{err}");

        let credential = azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            "AADSTS7000215: Invalid client secret provided",
        );
        let err = kv.translate("graph-token", credential);
        assert_eq!(err.kind(), ErrorKind::Unauthorized);
        assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    }

    #[test]
    fn a_refused_handshake_is_told_from_a_refused_connection() {
        use std::io;
        // As the rustls connector reports it: InvalidData wrapped in Other.
        let handshake = io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        let tls = azure_core::Error::with_error(
            azure_core::error::ErrorKind::Connection,
            handshake,
            "failed to execute `reqwest` request",
        );
        assert!(platform_tls::is_tls_refusal(&tls));
        let refused = azure_core::Error::with_error(
            azure_core::error::ErrorKind::Connection,
            io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused"),
            "failed to execute `reqwest` request",
        );
        assert!(!platform_tls::is_tls_refusal(&refused));

        let kv = store(options("https://contoso.vault.azure.net")).unwrap();
        let wrapped = azure_core::Error::new(azure_core::error::ErrorKind::Other, TlsRefused(tls));
        let err = kv.translate("graph-token", wrapped);
        assert_eq!(err.kind(), ErrorKind::Unreachable);
        assert!(
            err.to_string().contains(
                "its TLS certificate was refused (invalid peer certificate: UnknownIssuer)"
            ),
            "{err}"
        );
    }

    #[test]
    fn current_version_from_a_recorded_bundle() {
        // Recorded by the Azure SDK for JS (set a secret with attributes), plus tags.
        let secret: Secret = serde_json::from_str(
            r#"{"value":"SECRET_VALUE","id":"https://keyvault_name.vault.azure.net/secrets/CRUDSecretName/67b988679f204f8c8a2f4599b3455abb",
                "attributes":{"enabled":true,"exp":32503680000,"created":1665617801,"updated":1665617801,
                "recoveryLevel":"CustomizedRecoverable+Purgeable","recoverableDays":7},
                "tags":{"managed-by":"secret-sync"}}"#,
        )
        .unwrap();
        let current = Current::from(secret);
        assert_eq!(
            current.value.as_ref().unwrap().expose_secret(),
            "SECRET_VALUE"
        );
        let expected = SecretMetadata {
            expires_on: Some(OffsetDateTime::from_unix_timestamp(32_503_680_000).unwrap()),
            managed_by: Some("secret-sync".into()),
            version: Some("67b988679f204f8c8a2f4599b3455abb".into()),
            updated_on: Some(OffsetDateTime::from_unix_timestamp(1_665_617_801).unwrap()),
        };
        assert_eq!(current.metadata, expected);
        assert_eq!(current.expires, expected.expires_on);

        // Without the exp attribute the expires-at tag is used.
        let secret: Secret = serde_json::from_str(
            r#"{"value":"v","id":"https://k.vault.azure.net/secrets/n/abc","attributes":{"enabled":true},
                "tags":{"expires-at":"2026-11-24T06:00:00Z"}}"#,
        )
        .unwrap();
        let current = Current::from(secret);
        assert_eq!(current.expires, None);
        assert_eq!(
            current.metadata.expires_on,
            Some(OffsetDateTime::from_unix_timestamp(1_795_500_000).unwrap())
        );
    }

    #[test]
    fn an_expires_at_tag_no_backend_can_store_is_no_expiry() {
        // year 9999 in its offset is year 10000 in UTC: no expiry (the target is refreshed), no panic
        for tag in [
            "9999-12-31T23:59:59-23:59",
            "+99999-01-01T00:00:00Z",
            "soon",
        ] {
            let secret: Secret = serde_json::from_str(&format!(
                r#"{{"value":"v","id":"https://k.vault.azure.net/secrets/n/abc","attributes":{{"enabled":true}},
                    "tags":{{"expires-at":"{tag}","managed-by":"secret-sync"}}}}"#
            ))
            .unwrap();
            let current = Current::from(secret);
            assert_eq!(current.metadata.expires_on, None, "{tag}");
            assert_eq!(current.metadata.managed_by.as_deref(), Some("secret-sync"));
        }
    }
}
