//! The HashiCorp Vault / OpenBao backend (KV v1 and v2), through `vaultrs`.
//!
//! Vault is both a common place to keep the app registration's client credentials and a
//! target for the access token. This module reads and writes one KV mount, logs in with the
//! configured method, and keeps its Vault token valid: it renews a renewable token (or logs in
//! again) once two thirds of its lease have passed, and logs in again once if the server refuses
//! a token it had accepted, so a long-running daemon survives token expiry.
//!
//! A written token is a KV map `{access_token, token_type, expires_on, expires_at, managed_by}`
//! (`expires_on` in Unix seconds as a string, `expires_at` RFC 3339). On KV v2 the expiry and
//! managed-by marker are also stored as the secret's `custom_metadata`, so `metadata()` reads
//! them without the value; the custom metadata records the version it describes, so a version
//! written by hand later is judged by its own data. The payload's [`Format`](crate::Format)
//! does not matter here: the map is the native form. Reading without a `#field` returns the
//! whole map as compact JSON; with `#field`, that field.
//!
//! A value written back ([`SecretStore::write_value`]) is one `#field` of the map (the record in
//! sibling fields, one write) or, on KV v2, the whole map (the value must be a JSON object; the
//! record in custom_metadata under `secret-sync-*` keys with `secret-sync-value-sha256` naming
//! the data it describes, written before the data). KV v2 writes with check-and-set on the
//! version read; KV v1 (no versions) compares a fingerprint of the map read right before the
//! write, and takes no whole value (no metadata to hold its record).
//!
//! Auth methods: a token ([`VaultAuth::Token`]), AppRole, JWT/OIDC (e.g. a CI job's OIDC token)
//! and Kubernetes (the pod's service-account token). Plain `http://` is refused unless the
//! address is loopback or `allow_insecure_http` is set. Throttling (HTTP 429) and server
//! errors (5xx, sealed, standby) are retried with exponential backoff ([`RetryPolicy`]).
//! Login secrets given as files ([`LoginSecret::File`]) are read when used: the token file at
//! each renewal point and after the server refused the token, a secret id or JWT file at each
//! login. Requests follow a redirect only within the address's origin: one elsewhere fails the
//! call rather than send the Vault token (and what is being written) there.
//!
//! ```
//! use secrecy::SecretString;
//! use secret_backends::vault::{KvVersion, VaultAuth, VaultOptions, VaultStore};
//! // [backends.ops-vault]
//! // kind = "vault"
//! // address = "https://vault.example.com:8200"
//! // mount = "secret"
//! // kv_version = 2                    # optional: detected from sys/internal/ui/mounts
//! // namespace = "team-a"              # optional (Vault Enterprise / OpenBao namespaces)
//! // ca_file = "/etc/ssl/vault-ca.pem" # optional
//! // auth = { method = "approle", role_id = "4f1c...", secret_id_env = "VAULT_SECRET_ID" }
//! let options = VaultOptions {
//!     kv_version: Some(KvVersion::V2),
//!     namespace: Some("team-a".to_owned()),
//!     ..VaultOptions::new(
//!         "https://vault.example.com:8200",
//!         "secret",
//!         VaultAuth::AppRole {
//!             mount: "approle".to_owned(),
//!             role_id: "4f1c0000-0000-0000-0000-000000000000".to_owned(),
//!             // the caller reads it from VAULT_SECRET_ID
//!             secret_id: SecretString::from("secret-id-from-the-environment").into(),
//!         },
//!     )
//! };
//! let store = VaultStore::new("ops-vault", options).unwrap();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, OnceCell};
use tracing::instrument::{WithDispatch, WithSubscriber};
use tracing::subscriber::NoSubscriber;
use vaultrs::api::EndpointMiddleware;
use vaultrs::api::kv2::requests::{
    ReadSecretRequest, SetSecretMetadataRequest, SetSecretRequestOptions,
};
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::http::{BodyTooLarge, MAX_ANSWER_BYTES, ReadError, RedirectRefused, find_cause};
use crate::value::{canonical_json, check_size, fingerprint, set_field};
use crate::{
    BackendError, CredentialRecord, ErrorKind, SecretMetadata, SecretStore, SecretValue,
    StoredToken, StoredValue, TokenPayload, WriteOutcome, WritePrecondition, changed_since_read,
    expiry_from_map, pick_from_map,
};

/// The largest value this backend writes (Vault's storage backends commonly cap entries at 512 KiB).
const MAX_VALUE_BYTES: usize = 512 * 1024;

/// Which KV secrets engine version the mount runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvVersion {
    /// KV v1: `/v1/{mount}/{path}`, no versions, no metadata.
    V1,
    /// KV v2: `/v1/{mount}/data/{path}` and `/v1/{mount}/metadata/{path}`.
    V2,
}

/// How the store logs in to Vault. Secrets are passed in as values or as files to read; this
/// crate never reads the environment.
#[derive(Debug, Clone)]
pub enum VaultAuth {
    /// A Vault token: a value (e.g. read by the caller from the variable named by `token_env`)
    /// or a file (`token_file`, e.g. a Vault Agent sink), read again at each renewal and after
    /// the server refused the token, so a token rotated on disk is picked up.
    /// Renewed when renewable; when it expires, writes fail with `Unauthorized`.
    Token {
        /// The Vault token.
        token: LoginSecret,
    },
    /// AppRole: `POST auth/{mount}/login {role_id, secret_id}`.
    AppRole {
        /// The auth mount, usually `approle`.
        mount: String,
        /// The role id (an identifier, not a secret).
        role_id: String,
        /// The secret id; a file is read again at every login.
        secret_id: LoginSecret,
    },
    /// JWT/OIDC: `POST auth/{mount}/login {role, jwt}`, e.g. with a CI job's OIDC token.
    Jwt {
        /// The auth mount, usually `jwt`.
        mount: String,
        /// The role; `None` uses the mount's default role.
        role: Option<String>,
        /// Where the JWT comes from; a file is read again at every login.
        jwt: JwtSource,
    },
    /// Kubernetes: `POST auth/{mount}/login {role, jwt}` with the service-account token.
    Kubernetes {
        /// The auth mount, usually `kubernetes`.
        mount: String,
        /// The role.
        role: String,
        /// The service-account token, usually the file [`JwtSource::KUBERNETES_TOKEN_FILE`].
        jwt: JwtSource,
    },
}

impl VaultAuth {
    fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token { .. } => "token",
            VaultAuth::AppRole { .. } => "approle",
            VaultAuth::Jwt { .. } => "jwt",
            VaultAuth::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// Where a login secret (a Vault token, an AppRole secret id, a login JWT) comes from.
#[derive(Debug, Clone)]
pub enum LoginSecret {
    /// A file, read each time the secret is used to log in (rotated secrets are picked up);
    /// surrounding whitespace is ignored.
    File(PathBuf),
    /// A value the caller already holds.
    Value(SecretString),
}

/// The source of a login JWT: [`LoginSecret`] by its older name.
pub type JwtSource = LoginSecret;

impl From<SecretString> for LoginSecret {
    fn from(value: SecretString) -> Self {
        LoginSecret::Value(value)
    }
}

impl LoginSecret {
    /// Where Kubernetes mounts a pod's service-account token.
    pub const KUBERNETES_TOKEN_FILE: &'static str =
        "/var/run/secrets/kubernetes.io/serviceaccount/token";
}

/// Retries of throttled (429) and temporarily failing (5xx) requests: exponential backoff
/// from `base_delay`, capped at `max_delay`, with jitter, at most `max_attempts` tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, including the first (1 = no retry).
    pub max_attempts: u32,
    /// The first wait.
    pub base_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): half the exponential step plus a random half.
    fn delay(&self, retry: u32) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_delay);
        step / 2 + step.mul_f64(rand::random_range(0.0..0.5))
    }
}

/// Options of the Vault backend.
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// The server, e.g. `https://vault.example.com:8200`.
    pub address: String,
    /// The KV mount, e.g. `secret`.
    pub mount: String,
    /// The KV version; `None` detects it from `sys/internal/ui/mounts/{mount}` at first use.
    pub kv_version: Option<KvVersion>,
    /// The namespace (`X-Vault-Namespace`), if any.
    pub namespace: Option<String>,
    /// How to log in.
    pub auth: VaultAuth,
    /// Accept `http://` for a non-loopback address (default `false`).
    pub allow_insecure_http: bool,
    /// A PEM bundle of CA certificates to trust in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// The timeout of each request (default 30 s).
    pub timeout: Duration,
    /// Retries of throttled and temporarily failing requests.
    pub retry: RetryPolicy,
}

impl VaultOptions {
    /// Options with the defaults: KV version detected, no namespace, https required for
    /// non-loopback addresses, system CAs, 30 s timeout, [`RetryPolicy::default`].
    pub fn new(address: impl Into<String>, mount: impl Into<String>, auth: VaultAuth) -> Self {
        VaultOptions {
            address: address.into(),
            mount: mount.into(),
            kv_version: None,
            namespace: None,
            auth,
            allow_insecure_http: false,
            ca_file: None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// A logged-in client and when its Vault token needs attention.
struct Session {
    client: Arc<VaultClient>,
    /// Renew or log in again after this instant; `None` for a token that does not expire.
    refresh_at: Option<Instant>,
    renewable: bool,
}

/// A [`SecretStore`] over one KV mount of a Vault or OpenBao server.
pub struct VaultStore {
    backend: String,
    options: VaultOptions,
    mount: String,
    kv_version: OnceCell<KvVersion>,
    session: Mutex<Option<Session>>,
    /// Every request goes through it: redirects only within the address's origin.
    http: reqwest::Client,
}

impl fmt::Debug for VaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultStore")
            .field("backend", &self.backend)
            .field("address", &self.options.address)
            .field("mount", &self.mount)
            .field("namespace", &self.options.namespace)
            .field("auth", &self.options.auth.method())
            .finish_non_exhaustive()
    }
}

/// What one call is about, for messages: the secret (if any) and the action.
#[derive(Clone, Copy)]
struct Op<'a> {
    secret: Option<&'a str>,
    doing: &'a str,
}

impl VaultStore {
    /// A store named `backend` (for messages). Checks the options; connects at first use.
    pub fn new(backend: impl Into<String>, options: VaultOptions) -> Result<Self, BackendError> {
        let backend = backend.into();
        let invalid = |message: String| {
            Err(BackendError::new(
                ErrorKind::InvalidConfig,
                &backend,
                message,
            ))
        };
        let Ok(url) = url::Url::parse(&options.address) else {
            return invalid(format!(
                "the address \"{}\" is not a URL: write it like https://vault.example.com:8200",
                options.address
            ));
        };
        match url.scheme() {
            "https" => {}
            "http" if options.allow_insecure_http || is_loopback(&url) => {}
            "http" => {
                return invalid(format!(
                    "the address {} uses plain http to a non-loopback host, which would send the Vault token \
                     unencrypted: use https, or set allow_insecure_http = true if the network is trusted",
                    options.address
                ));
            }
            other => {
                return invalid(format!(
                    "the address scheme \"{other}\" is not http or https"
                ));
            }
        }
        let mount = options.mount.trim_matches('/').to_owned();
        if mount.is_empty() || !valid_path(&mount) {
            return invalid(format!(
                "the mount \"{}\" is not a valid mount path, e.g. \"secret\"",
                options.mount
            ));
        }
        if let Some(ca) = &options.ca_file
            && !ca.is_file()
        {
            return invalid(format!(
                "the CA file {} does not exist or is not a file: fix ca_file",
                ca.display()
            ));
        }
        let kv_version = OnceCell::new_with(options.kv_version);
        let http = http_client(&backend, &options, &url)?;
        Ok(VaultStore {
            backend,
            options,
            mount,
            kv_version,
            session: Mutex::new(None),
            http,
        })
    }

    fn error(&self, kind: ErrorKind, op: Op<'_>, message: impl Into<String>) -> BackendError {
        let err = BackendError::new(kind, &self.backend, message);
        match op.secret {
            Some(secret) => err.with_secret(secret),
            None => err,
        }
    }

    /// A vaultrs client for `token` (possibly empty, for a login call), over this store's own
    /// HTTP client ([`http_client`]) instead of the one vaultrs would build.
    fn new_client(&self, token: &str) -> Result<VaultClient, BackendError> {
        let op = Op {
            secret: None,
            doing: "configuring the client",
        };
        let mut settings = VaultClientSettingsBuilder::default();
        settings
            .address(&self.options.address)
            .token(token)
            .verify(true)
            .identity(None)
            .ca_certs(Vec::new())
            .timeout(Some(self.options.timeout))
            .namespace(self.options.namespace.clone());
        let settings = settings.build().map_err(|e| {
            self.error(
                ErrorKind::InvalidConfig,
                op,
                format!("the Vault client settings are invalid ({e}): check address and ca_file"),
            )
        })?;
        // what VaultClient::new sets up, but over our client
        let middle = EndpointMiddleware {
            token: settings.token.clone(),
            version: format!("v{}", settings.version),
            wrap: None,
            namespace: settings.namespace.clone(),
        };
        let http =
            rustify::clients::reqwest::Client::new(settings.address.as_str(), self.http.clone());
        Ok(VaultClient {
            http,
            middle,
            settings,
        })
    }

    /// The logged-in client, logging in or renewing first when needed.
    async fn client(&self) -> Result<Arc<VaultClient>, BackendError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref() {
            match s.refresh_at {
                Some(at) if Instant::now() >= at => {}
                _ => return Ok(s.client.clone()),
            }
            // a token file rotated on disk (a Vault Agent sink) replaces the token instead of
            // renewing it
            let rotated = match &self.options.auth {
                VaultAuth::Token {
                    token: source @ LoginSecret::File(_),
                } => {
                    let op = Op {
                        secret: None,
                        doing: "reading token_file",
                    };
                    // unreadable now: renew the token in hand (a login would report the file)
                    self.read_secret(source, "token", op)
                        .await
                        .is_ok_and(|now| now.expose_secret() != s.client.settings().token)
                }
                _ => false,
            };
            if rotated {
                tracing::debug!(backend = %self.backend, "token_file holds another token; using it");
            }
            if s.renewable
                && !rotated
                && let Ok(renewed) = self.renew(s.client.clone()).await
            {
                let client = renewed.client.clone();
                *session = Some(renewed);
                return Ok(client);
            }
        }
        let fresh = self.login().await?;
        let client = fresh.client.clone();
        *session = Some(fresh);
        Ok(client)
    }

    async fn renew(&self, client: Arc<VaultClient>) -> Result<Session, BackendError> {
        let op = Op {
            secret: None,
            doing: "renewing the Vault token",
        };
        let auth = quiet(client.renew(None))
            .await
            .map_err(|e| self.translate(e, op))?;
        tracing::debug!(backend = %self.backend, lease_s = auth.lease_duration, "renewed the Vault token");
        Ok(Session {
            refresh_at: refresh_at(auth.lease_duration),
            renewable: auth.renewable,
            client,
        })
    }

    /// Logs in with the configured method and returns the new session.
    async fn login(&self) -> Result<Session, BackendError> {
        let op = Op {
            secret: None,
            doing: "logging in",
        };
        let advice = match &self.options.auth {
            VaultAuth::Token { .. } => "the token is wrong, expired or revoked: issue a new token",
            VaultAuth::AppRole { .. } => {
                "check role_id and secret_id (a secret id can expire or run out of uses)"
            }
            VaultAuth::Jwt { .. } => {
                "check the role, and the JWT's issuer, audience, subject and expiry against the role's bound claims"
            }
            VaultAuth::Kubernetes { .. } => {
                "check the role, and that it is bound to this pod's service account and namespace"
            }
        };
        // a client error at login means the credentials were refused; other failures keep their kind
        let refused = |e: ClientError| match e {
            ClientError::APIError { code, errors } if (400..500).contains(&code) && code != 429 => {
                self.error(
                    ErrorKind::Unauthorized,
                    op,
                    format!(
                        "{} login was refused (Vault answered {}): {advice}",
                        self.options.auth.method(),
                        status_text(code, &errors)
                    ),
                )
            }
            other => self.translate(other, op),
        };
        if let VaultAuth::Token { token } = &self.options.auth {
            let token = self.read_secret(token, "token", op).await?;
            let client = self.new_client(token.expose_secret())?;
            let info = quiet(client.lookup()).await.map_err(refused)?;
            return Ok(Session {
                client: Arc::new(client),
                refresh_at: refresh_at(info.ttl),
                renewable: info.renewable.unwrap_or(false),
            });
        }
        let mut client = self.new_client("")?;
        let auth = match &self.options.auth {
            VaultAuth::Token { .. } => unreachable!("handled above"),
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let secret_id = self.read_secret(secret_id, "secret id", op).await?;
                quiet(vaultrs::auth::approle::login(
                    &client,
                    mount,
                    role_id,
                    secret_id.expose_secret(),
                ))
                .await
            }
            VaultAuth::Jwt { mount, role, jwt } => {
                let jwt = self.read_secret(jwt, "JWT", op).await?;
                quiet(vaultrs::auth::oidc::login(
                    &client,
                    mount,
                    jwt.expose_secret(),
                    role.clone(),
                ))
                .await
            }
            VaultAuth::Kubernetes { mount, role, jwt } => {
                let jwt = self.read_secret(jwt, "JWT", op).await?;
                quiet(vaultrs::auth::kubernetes::login(
                    &client,
                    mount,
                    role,
                    jwt.expose_secret(),
                ))
                .await
            }
        }
        .map_err(refused)?;
        client.set_token(&auth.client_token);
        tracing::debug!(
            backend = %self.backend,
            method = self.options.auth.method(),
            lease_s = auth.lease_duration,
            "logged in to Vault"
        );
        Ok(Session {
            client: Arc::new(client),
            refresh_at: refresh_at(auth.lease_duration),
            renewable: auth.renewable,
        })
    }

    /// The login secret (`what`: "token", "secret id", "JWT"): the value, or the file's
    /// content read now, trimmed.
    async fn read_secret(
        &self,
        source: &LoginSecret,
        what: &str,
        op: Op<'_>,
    ) -> Result<SecretString, BackendError> {
        let path = match source {
            LoginSecret::Value(value) => return Ok(value.clone()),
            LoginSecret::File(path) => path,
        };
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) => SecretString::from(text),
            Err(e) => {
                return Err(self
                    .error(
                        ErrorKind::Unauthorized,
                        op,
                        format!(
                            "cannot read the login {what} from {}: check the path and that the file is mounted",
                            path.display()
                        ),
                    )
                    .with_source(e));
            }
        };
        let trimmed = text.expose_secret().trim();
        if trimmed.is_empty() {
            return Err(self.error(
                ErrorKind::Unauthorized,
                op,
                format!(
                    "the login {what} file {} is empty: check what writes it",
                    path.display()
                ),
            ));
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// Runs `call` with a logged-in client: logs in again once if the server refuses the token,
    /// and retries throttling and temporary server errors per the retry policy.
    async fn call<T, F, Fut>(&self, op: Op<'_>, call: F) -> Result<T, BackendError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut retries = 0;
        let mut logged_in_again = false;
        loop {
            // a failed login (already translated) is retried like a failed call
            let outcome = match self.client().await {
                Ok(client) => quiet(call(client)).await.map_err(|e| self.translate(e, op)),
                Err(login_failed) => Err(login_failed),
            };
            let err = match outcome {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            // a token given as a value cannot change; a token file may have been rotated
            let can_login = !matches!(
                self.options.auth,
                VaultAuth::Token {
                    token: LoginSecret::Value(_)
                }
            );
            if err.kind() == ErrorKind::Forbidden && can_login && !logged_in_again {
                tracing::debug!(backend = %self.backend, "Vault refused the token; logging in again");
                *self.session.lock().await = None;
                logged_in_again = true;
                continue;
            }
            if err.is_retryable()
                && err.kind() != ErrorKind::Unreachable
                && retries + 1 < self.options.retry.max_attempts
            {
                let wait = self.options.retry.delay(retries);
                tracing::debug!(backend = %self.backend, kind = ?err.kind(), ?wait, "retrying a Vault request");
                tokio::time::sleep(wait).await;
                retries += 1;
                continue;
            }
            return Err(err);
        }
    }

    /// Translates a vaultrs error; the message never includes response bodies beyond Vault's
    /// own error strings, so it cannot carry a secret value.
    fn translate(&self, err: ClientError, op: Op<'_>) -> BackendError {
        let doing = op.doing;
        let status = |code: u16, errors: &[String]| {
            let (kind, advice) = match code {
                400 if errors.iter().any(|e| e.contains("check-and-set")) => (
                    ErrorKind::Conflict,
                    "another writer changed the secret at the same time: run again",
                ),
                400 => (ErrorKind::Protocol, "the request was refused as invalid"),
                401 => (ErrorKind::Unauthorized, "check the auth settings"),
                403 => (
                    ErrorKind::Forbidden,
                    "the Vault token is invalid or expired, or its policies do not allow this: check the auth \
                     settings and the policy of the role",
                ),
                404 => (ErrorKind::NotFound, "check the mount and the path"),
                412 => (
                    ErrorKind::Unavailable,
                    "the server is catching up with replication: retry",
                ),
                429 => (
                    ErrorKind::Throttled,
                    "a rate-limit quota applies: retry later or raise the quota",
                ),
                300..=399 => (
                    ErrorKind::Protocol,
                    "it kept redirecting within the address: set address to the server that answers",
                ),
                500..=599 => (
                    ErrorKind::Unavailable,
                    "the server is failing, sealed or in standby: check its status",
                ),
                _ => (ErrorKind::Protocol, "unexpected answer"),
            };
            self.error(
                kind,
                op,
                format!(
                    "Vault answered {} while {doing}: {advice}",
                    status_text(code, errors)
                ),
            )
        };
        match err {
            ClientError::APIError { code, errors } => status(code, &errors),
            ClientError::RestClientError { source } => match source {
                rustify::errors::ClientError::ServerResponseError { code, .. } => status(code, &[]),
                rustify::errors::ClientError::RequestError { source, .. }
                    if find_cause::<RedirectRefused>(&*source).is_some() =>
                {
                    let to = find_cause::<RedirectRefused>(&*source)
                        .map(|r| r.to.clone())
                        .unwrap_or_default();
                    self.redirect_refused(op, &to)
                }
                rustify::errors::ClientError::RequestError { source, .. } => self
                    .error(
                        ErrorKind::Unreachable,
                        op,
                        format!(
                            "cannot reach the Vault server at {} while {doing}: check the address, that the server \
                             is running, and its TLS certificate (ca_file)",
                            self.options.address
                        ),
                    )
                    .with_source(Cause(format!("{source:#}"))),
                rustify::errors::ClientError::ResponseError { source }
                    if find_cause::<BodyTooLarge>(&*source).is_some() =>
                {
                    self.error(
                        ErrorKind::Protocol,
                        op,
                        format!(
                            "the Vault server at {} sent an answer larger than {} KiB while {doing}, so it was \
                             not read: check that address is a Vault server",
                            self.options.address,
                            MAX_ANSWER_BYTES / 1024
                        ),
                    )
                }
                other => self.error(
                    ErrorKind::Protocol,
                    op,
                    format!("the Vault server's answer could not be used while {doing} ({other})"),
                ),
            },
            ClientError::FileReadError { path, .. }
            | ClientError::FileNotFoundError { path }
            | ClientError::ParseCertificateError { path, .. } => self.error(
                ErrorKind::InvalidConfig,
                op,
                format!("cannot use the CA file {path}: check ca_file (a PEM bundle)"),
            ),
            other => self.error(
                ErrorKind::Protocol,
                op,
                format!("the Vault server's answer could not be used while {doing} ({other})"),
            ),
        }
    }

    /// A redirect to another origin, which was not followed.
    fn redirect_refused(&self, op: Op<'_>, to: &str) -> BackendError {
        self.error(
            ErrorKind::Protocol,
            op,
            format!(
                "the Vault server at {} redirected to {to} while {}: secret-sync follows no redirect off \
                 the configured address, since it would send the Vault token (and what is being written) \
                 there: set address to the server that answers (the active node or the load balancer in \
                 front of the cluster), or let standby nodes forward requests (Vault's and OpenBao's default)",
                self.options.address, op.doing
            ),
        )
    }

    /// The mount's KV version, from the options or detected once; errors name `name`.
    async fn kv_version(&self, name: &str) -> Result<KvVersion, BackendError> {
        self.kv_version
            .get_or_try_init(|| async {
                let op = Op {
                    secret: None,
                    doing: "detecting the KV version of the mount",
                };
                let mount = self.mount.clone();
                let options = self
                    .call(op, move |client| {
                        let mount = mount.clone();
                        async move { mount_options(&client, &mount).await }
                    })
                    .await
                    .map_err(|e| match e.kind() {
                        ErrorKind::Forbidden | ErrorKind::NotFound | ErrorKind::Protocol => {
                            e.with_advice("or set kv_version = 1 or 2 in the backend's options to skip detection")
                        }
                        _ => e,
                    })?;
                match (options.kind.as_deref(), options.version.as_deref()) {
                    (Some("kv"), Some("2")) => Ok(KvVersion::V2),
                    (Some("kv"), _) => Ok(KvVersion::V1),
                    (kind, _) => Err(self.error(
                        ErrorKind::InvalidConfig,
                        op,
                        format!(
                            "the mount \"{}\" is a {} engine, not KV: set mount to a KV secrets engine",
                            self.mount,
                            kind.unwrap_or("unknown")
                        ),
                    )),
                }
            })
            .await
            .copied()
            .map_err(|e| e.with_secret(name))
    }

    /// The current KV map at `name` and, on KV v2, its version; `None` when missing.
    async fn read_map(
        &self,
        name: &str,
        doing: &str,
    ) -> Result<Option<(serde_json::Map<String, serde_json::Value>, Option<u64>)>, BackendError>
    {
        let op = Op {
            secret: Some(name),
            doing,
        };
        let (mount, path) = (self.mount.clone(), name.to_owned());
        let result = match self.kv_version(name).await? {
            KvVersion::V2 => self
                .call(op, move |client| {
                    let (mount, path) = (mount.clone(), path.clone());
                    async move {
                        let request = ReadSecretRequest::builder()
                            .mount(mount)
                            .path(path)
                            .build()
                            .expect("mount and path are set");
                        vaultrs::api::exec_with_result(&*client, request).await
                    }
                })
                .await
                .map(|r| (r.data, Some(r.metadata.version))),
            KvVersion::V1 => self
                .call(op, move |client| {
                    let (mount, path) = (mount.clone(), path.clone());
                    async move { vaultrs::kv1::get_raw(&*client, &mount, &path).await }
                })
                .await
                .map(|r| (r.data, None)),
        };
        match result {
            Ok((serde_json::Value::Object(map), version)) => Ok(Some((map, version))),
            // a soft-deleted KV v2 version reads as null data
            Ok((serde_json::Value::Null, _)) => Ok(None),
            Ok(_) => Err(self.error(
                ErrorKind::Protocol,
                op,
                "the secret's data is not a key/value map: check that the mount is a KV engine",
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn not_found(&self, name: &str) -> BackendError {
        BackendError::new(
            ErrorKind::NotFound,
            &self.backend,
            format!(
                "no secret at {}/{name}: check the mount and the path (give the path without \"data/\")",
                self.mount
            ),
        )
        .with_secret(name)
    }
}

/// The `type` and `options.version` of a mount, from `sys/internal/ui/mounts/{mount}`, which
/// every token with the default policy may read. vaultrs has no call for it, so it goes
/// through vaultrs' own HTTP client with the same headers its middleware adds.
async fn mount_options(client: &VaultClient, mount: &str) -> Result<MountInfo, ClientError> {
    let url = format!(
        "{}/v1/sys/internal/ui/mounts/{mount}",
        client.settings().address.as_str().trim_end_matches('/')
    );
    let mut request = client
        .http()
        .http
        .get(url)
        .header("X-Vault-Request", "true")
        .header("X-Vault-Token", client.settings().token.as_str());
    if let Some(namespace) = &client.settings().namespace {
        request = request.header("X-Vault-Namespace", namespace.as_str());
    }
    let response = request
        .send()
        .await
        .map_err(|e| rustify_request_error(e, mount))?;
    let code = response.status().as_u16();
    let body = match crate::http::read_capped(response, MAX_ANSWER_BYTES).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(ReadError::Transport(e)) => return Err(rustify_request_error(e, mount)),
        Err(ReadError::TooLarge(too_large)) => {
            return Err(ClientError::RestClientError {
                source: rustify::errors::ClientError::ResponseError {
                    source: too_large.into(),
                },
            });
        }
    };
    let body: serde_json::Value = body;
    if !(200..300).contains(&code) {
        let errors = body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        return Err(ClientError::APIError { code, errors });
    }
    Ok(MountInfo {
        kind: body["data"]["type"].as_str().map(str::to_owned),
        version: body["data"]["options"]["version"]
            .as_str()
            .map(str::to_owned),
    })
}

/// The HTTP client of a store: what vaultrs would build (rustls, the timeout, `ca_file` added to
/// the system roots), except that it follows a redirect only within the address's origin
/// ([`crate::http::same_origin_redirects`]): vaultrs' default follows up to ten to any host,
/// and reqwest keeps `X-Vault-Token` and a 307's body across hosts.
fn http_client(
    backend: &str,
    options: &VaultOptions,
    address: &url::Url,
) -> Result<reqwest::Client, BackendError> {
    let invalid = |message: String| BackendError::new(ErrorKind::InvalidConfig, backend, message);
    let mut builder = reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.timeout.min(Duration::from_secs(10)))
        .redirect(crate::http::same_origin_redirects());
    let mut extra = Vec::new();
    if address.scheme() == "http" {
        // as vaultrs does (reqwest#2988): no system roots to load for plain http
        builder = builder.tls_certs_only(Vec::new());
    } else if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            invalid(format!(
                "cannot read the CA file {}: check ca_file",
                path.display()
            ))
            .with_source(e)
        })?;
        // Checked here for the message; platform_tls reads the PEM again.
        reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| {
                invalid(format!(
                    "cannot use the CA file {}: check ca_file (a PEM bundle)",
                    path.display()
                ))
            })?;
        extra.push(pem);
    }
    if address.scheme() != "http" {
        // The platform's roots, read at the first handshake (platform-tls), and ca_file's.
        builder = platform_tls::platform_roots(builder, &extra).map_err(|message| {
            invalid(format!("cannot use the CA file: {message}: check ca_file"))
        })?;
    }
    builder.build().map_err(|e| {
        invalid("cannot build the HTTPS client (is a ca_file certificate malformed?)".to_owned())
            .with_source(e)
    })
}

/// `HTTP 403 (permission denied)`: the status and Vault's own error strings (which name paths
/// and reasons, never values), shortened.
fn status_text(code: u16, errors: &[String]) -> String {
    if errors.is_empty() {
        return format!("HTTP {code}");
    }
    let mut joined = errors.join("; ");
    if joined.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| joined.is_char_boundary(i))
            .unwrap_or(0);
        joined.truncate(cut);
        joined.push_str("...");
    }
    format!("HTTP {code} ({joined})")
}

struct MountInfo {
    kind: Option<String>,
    version: Option<String>,
}

fn rustify_request_error(e: reqwest::Error, mount: &str) -> ClientError {
    ClientError::RestClientError {
        source: rustify::errors::ClientError::RequestError {
            source: e.into(),
            url: format!("sys/internal/ui/mounts/{mount}"),
            method: "GET".to_owned(),
        },
    }
}

/// A transport error's text, kept as the cause (it holds URLs and socket errors, never values).
#[derive(Debug)]
struct Cause(String);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Cause {}

/// Runs a vaultrs call with tracing switched off: vaultrs reports every failed request at
/// ERROR level (a 404 for a secret that does not exist yet, too), which would mislead whoever
/// reads the logs. The outcome is reported once, by our own error or debug event.
fn quiet<F: Future>(call: F) -> WithDispatch<F> {
    call.with_subscriber(NoSubscriber::default())
}

/// The longest wait before a token is renewed (or its file read again), however long its lease:
/// a server may answer any `lease_duration`, and a day keeps the arithmetic far from overflow.
const MAX_RENEW_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// When to renew a token with a lease of `lease_s` seconds: after two thirds of it, at most
/// [`MAX_RENEW_INTERVAL`] from now.
pub(crate) fn refresh_at(lease_s: u64) -> Option<Instant> {
    (lease_s > 0).then(|| {
        let wait = Duration::from_secs(lease_s / 3 * 2 + lease_s % 3 * 2 / 3);
        Instant::now() + wait.min(MAX_RENEW_INTERVAL)
    })
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Path segments of letters, digits and `-_.@=+,:~`, none empty, `.` or `..`.
/// The Vault path rule, without a store (e.g. to validate a config): what
/// [`SecretStore::check_name`] of a [`VaultStore`] named `backend` checks.
pub fn check_name(backend: &str, name: &str) -> Result<(), BackendError> {
    if name.len() <= 512 && valid_path(name) {
        return Ok(());
    }
    Err(BackendError::new(
        ErrorKind::InvalidName,
        backend,
        "the path must be 1-512 characters of letters, digits and -_.@=+,:~ in segments separated by \"/\", \
         without empty, \".\" or \"..\" segments, e.g. \"apps/graph\" (give it without the mount and without \"data/\")",
    )
    .with_secret(name))
}

fn valid_path(path: &str) -> bool {
    path.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@=+,:~".contains(c))
    })
}

/// The prefix of the custom_metadata keys of a whole value's credential record.
const RECORD_PREFIX: &str = "secret-sync-";

/// The custom_metadata key that names the value a record describes.
const VALUE_SHA256: &str = "value_sha256";

/// The custom_metadata key of a record field: `secret-sync-key-id`, ..., `secret-sync-value-sha256`.
fn record_key(base: &str) -> String {
    format!("{RECORD_PREFIX}{}", base.replace('_', "-"))
}

/// The record in `custom`, if it describes `map` (the current data); else an empty record.
fn record_from_custom(
    custom: &HashMap<String, String>,
    map: &serde_json::Map<String, serde_json::Value>,
) -> CredentialRecord {
    let describes = custom.get(&record_key(VALUE_SHA256)).map(String::as_str)
        == Some(fingerprint(&canonical_json(map)).as_str());
    if !describes {
        return CredentialRecord::default();
    }
    CredentialRecord::from_lookup(|base| custom.get(&record_key(base)).cloned())
}

/// The version a value write compares: KV v2's version number, or on KV v1 (no versions) a
/// fingerprint of the map.
fn map_version(map: &serde_json::Map<String, serde_json::Value>, version: Option<u64>) -> String {
    match version {
        Some(version) => version.to_string(),
        None => format!("sha256:{}", fingerprint(&canonical_json(map))),
    }
}

impl VaultStore {
    /// A whole value on KV v1, which keeps no metadata for its record.
    fn whole_value_on_v1(&self, name: &str) -> BackendError {
        BackendError::new(
            ErrorKind::InvalidConfig,
            &self.backend,
            format!(
                "the mount \"{}\" is KV v1, which keeps no metadata for the credential record of a \
                 whole value: name the field that holds the secret in the reference (e.g. \
                 #client_secret; the record goes in fields beside it), or use a KV v2 mount",
                self.mount
            ),
        )
        .with_secret(name)
    }

    /// The secret's custom_metadata (KV v2); `None` when the secret has no metadata.
    async fn custom_metadata(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, BackendError> {
        let op = Op {
            secret: Some(name),
            doing: "reading the secret's custom_metadata",
        };
        let (mount, path) = (self.mount.clone(), name.to_owned());
        match self
            .call(op, move |client| {
                let (mount, path) = (mount.clone(), path.clone());
                async move { vaultrs::kv2::read_metadata(&*client, &mount, &path).await }
            })
            .await
        {
            Ok(meta) => Ok(Some(meta.custom_metadata.unwrap_or_default())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn set_custom_metadata(
        &self,
        name: &str,
        custom: HashMap<String, String>,
        doing: &str,
    ) -> Result<(), BackendError> {
        let op = Op {
            secret: Some(name),
            doing,
        };
        let (mount, path) = (self.mount.clone(), name.to_owned());
        self.call(op, |client| {
            let (mount, path, custom) = (mount.clone(), path.clone(), custom.clone());
            async move {
                let mut request = SetSecretMetadataRequest::builder();
                request.custom_metadata(custom);
                vaultrs::kv2::set_metadata(&*client, &mount, &path, Some(&mut request)).await
            }
        })
        .await
    }

    /// Writes `map` as the secret's data, conditionally: KV v2 with check-and-set on the version
    /// of `current` (0: must not exist), KV v1 unconditionally (racy: `current` was read right
    /// before). A check-and-set mismatch is the Conflict of a secret changed since the read.
    async fn put_map(
        &self,
        name: &str,
        kv: KvVersion,
        current: Option<&(serde_json::Map<String, serde_json::Value>, Option<u64>)>,
        map: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), BackendError> {
        let op = Op {
            secret: Some(name),
            doing: "writing the secret",
        };
        let (mount, path) = (self.mount.clone(), name.to_owned());
        let data: Arc<HashMap<String, serde_json::Value>> = Arc::new(map.into_iter().collect());
        let result = match kv {
            KvVersion::V1 => {
                self.call(op, |client| {
                    let (mount, path, data) = (mount.clone(), path.clone(), data.clone());
                    async move {
                        let data: HashMap<&str, &serde_json::Value> =
                            data.iter().map(|(k, v)| (k.as_str(), v)).collect();
                        vaultrs::kv1::set(&*client, &mount, &path, &data).await
                    }
                })
                .await
            }
            KvVersion::V2 => {
                let cas = match current {
                    Some((_, Some(version))) => u32::try_from(*version).unwrap_or(u32::MAX),
                    _ => 0,
                };
                self.call(op, |client| {
                    let (mount, path, data) = (mount.clone(), path.clone(), data.clone());
                    async move {
                        let options = SetSecretRequestOptions { cas };
                        vaultrs::kv2::set_with_options(&*client, &mount, &path, &*data, options)
                            .await
                            .map(drop)
                    }
                })
                .await
            }
        };
        result.map_err(|err| match err.kind() {
            ErrorKind::Conflict => changed_since_read(&self.backend, name),
            _ => err,
        })
    }
}

/// The KV map a token is written as.
fn token_map(payload: &TokenPayload) -> HashMap<&'static str, String> {
    HashMap::from([
        (
            "access_token",
            payload.access_token().expose_secret().to_owned(),
        ),
        ("token_type", payload.token_type().to_owned()),
        (
            "expires_on",
            payload.expires_on().unix_timestamp().to_string(),
        ),
        ("expires_at", payload.expires_at_rfc3339()),
        ("managed_by", payload.managed_by().to_owned()),
    ])
}

#[async_trait::async_trait]
impl SecretStore for VaultStore {
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
        let Some((map, _)) = self.read_map(name, "reading the secret").await? else {
            return Err(self.not_found(name));
        };
        match field {
            Some(field) => pick_from_map(&self.backend, name, &map, field),
            None => Ok(SecretString::from(
                serde_json::Value::Object(map).to_string(),
            )),
        }
    }

    async fn metadata(&self, name: &str) -> Result<Option<SecretMetadata>, BackendError> {
        self.check_name(name)?;
        let from_data = |map: &serde_json::Map<String, serde_json::Value>| SecretMetadata {
            expires_on: expiry_from_map(map),
            managed_by: map
                .get("managed_by")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            version: None,
            updated_on: None,
        };
        if self.kv_version(name).await? == KvVersion::V1 {
            let map = self.read_map(name, "reading the secret's metadata").await?;
            return Ok(map.map(|(map, _)| from_data(&map)));
        }
        let op = Op {
            secret: Some(name),
            doing: "reading the secret's metadata",
        };
        let (mount, path) = (self.mount.clone(), name.to_owned());
        let meta = match self
            .call(op, move |client| {
                let (mount, path) = (mount.clone(), path.clone());
                async move { vaultrs::kv2::read_metadata(&*client, &mount, &path).await }
            })
            .await
        {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let current = meta.versions.get(&meta.current_version.to_string());
        let Some(current) = current.filter(|v| v.deletion_time.is_empty() && !v.destroyed) else {
            return Ok(None);
        };
        let updated_on = crate::parse_rfc3339(&current.created_time);
        let custom: serde_json::Map<String, serde_json::Value> = meta
            .custom_metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let current_version = meta.current_version.to_string();
        let describes_current =
            custom.get("version").and_then(|v| v.as_str()) == Some(current_version.as_str());
        let mut found = from_data(&custom);
        if !describes_current {
            // the current version was written by something else (or before this marker existed):
            // what it says about itself is in its data
            found = match self.read_map(name, "reading the secret's metadata").await? {
                Some((map, _)) => from_data(&map),
                None => return Ok(None),
            };
        }
        Ok(Some(SecretMetadata {
            version: Some(meta.current_version.to_string()),
            updated_on,
            ..found
        }))
    }

    async fn write(
        &self,
        name: &str,
        payload: &TokenPayload,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        self.check_write(name, payload)?;
        let kv = self.kv_version(name).await?;
        // KV v2 after a read that saw version N with another expiry than the payload's: the
        // stored data (token and expiry) cannot be the payload's, and cas = N makes Vault
        // refuse the write if anyone wrote since, so the data is not read again; the rule is
        // applied to what the read saw, and again after a mismatch.
        let seen_version = match precondition.seen() {
            Some(Some(seen))
                if kv == KvVersion::V2 && seen.expires_on != Some(payload.expires_on()) =>
            {
                precondition.check(&self.backend, name, Some(seen), payload.managed_by())?;
                seen.version.as_deref().and_then(|v| v.parse::<u32>().ok())
            }
            _ => None,
        };
        // KV v2 after a read that saw no secret: nothing to compare, and cas = 0 makes Vault
        // refuse the write if one appeared since.
        let mut current =
            if kv == KvVersion::V2 && (precondition.expects_missing() || seen_version.is_some()) {
                None
            } else {
                self.read_map(name, "reading the secret before writing")
                    .await?
            };
        // Whether the write replaces a secret (Updated) or makes one (Created): what was read
        // here, or the version the caller's read saw when nothing was read here.
        let mut existed = current.is_some() || seen_version.is_some();
        let op = Op {
            secret: Some(name),
            doing: "writing the secret",
        };
        let data = Arc::new(token_map(payload));
        let (mount, path) = (self.mount.clone(), name.to_owned());
        // On KV v2, a check-and-set mismatch (someone wrote since the version checked) reads
        // the secret again and applies the rule to what is there: at most twice.
        let mut attempt = 0;
        let written = loop {
            attempt += 1;
            if let Some((map, version)) = &current {
                if StoredToken::from_map(map).is_some_and(|stored| {
                    stored.same_as(payload)
                        && stored.managed_by.as_deref() == Some(payload.managed_by())
                }) {
                    return Ok(WriteOutcome::Unchanged);
                }
                let found = SecretMetadata {
                    managed_by: map
                        .get("managed_by")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    version: version.map(|v| v.to_string()),
                    ..SecretMetadata::default()
                };
                precondition.check(&self.backend, name, Some(&found), payload.managed_by())?;
            }
            if kv == KvVersion::V1 {
                // KV v1 has no check-and-set: a writer since the read above is not seen.
                self.call(op, |client| {
                    let (mount, path, data) = (mount.clone(), path.clone(), data.clone());
                    async move {
                        let data: HashMap<&str, &str> =
                            data.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        vaultrs::kv1::set(&*client, &mount, &path, &data).await
                    }
                })
                .await?;
                break None;
            }
            // The version checked (read here or by the caller), 0 for "must not exist"; none for
            // a deleted latest version, which reads as no secret but has a version number
            // (after a mismatch only).
            let cas = match &current {
                Some((_, version)) => version.and_then(|v| u32::try_from(v).ok()),
                None if attempt == 1 => Some(seen_version.unwrap_or(0)),
                None => None,
            };
            let result = self
                .call(op, |client| {
                    let (mount, path, data) = (mount.clone(), path.clone(), data.clone());
                    async move {
                        match cas {
                            Some(cas) => {
                                let options = SetSecretRequestOptions { cas };
                                vaultrs::kv2::set_with_options(
                                    &*client, &mount, &path, &*data, options,
                                )
                                .await
                            }
                            None => vaultrs::kv2::set(&*client, &mount, &path, &*data).await,
                        }
                    }
                })
                .await;
            match result {
                Ok(written) => break Some(written),
                Err(err) if err.kind() == ErrorKind::Conflict && attempt < 2 => {
                    tracing::debug!(backend = %self.backend, secret = name,
                        "check-and-set mismatch: reading the secret again");
                    current = self
                        .read_map(
                            name,
                            "reading the secret again after a check-and-set mismatch",
                        )
                        .await?;
                    existed = current.is_some();
                }
                Err(err) => return Err(err),
            }
        };
        if let Some(written) = written {
            let custom: HashMap<String, String> = [
                (
                    "expires_on",
                    payload.expires_on().unix_timestamp().to_string(),
                ),
                ("expires_at", payload.expires_at_rfc3339()),
                ("managed_by", payload.managed_by().to_owned()),
                // custom_metadata outlives versions: this says which version it describes
                ("version", written.version.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let op = Op {
                secret: Some(name),
                doing: "writing the secret's custom_metadata (the token itself was written)",
            };
            self.call(op, |client| {
                let (mount, path, custom) = (mount.clone(), path.clone(), custom.clone());
                async move {
                    let mut request = SetSecretMetadataRequest::builder();
                    request.custom_metadata(custom);
                    vaultrs::kv2::set_metadata(&*client, &mount, &path, Some(&mut request)).await
                }
            })
            .await?;
        }
        Ok(if existed {
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
        let kv = self.kv_version(name).await?;
        if field.is_none() && kv == KvVersion::V1 {
            return Err(self.whole_value_on_v1(name));
        }
        let Some((map, version)) = self.read_map(name, "reading the secret").await? else {
            return Err(self.not_found(name));
        };
        let metadata = SecretMetadata {
            version: Some(map_version(&map, version)),
            ..SecretMetadata::default()
        };
        let (value, record) = match field {
            Some(field) => (
                pick_from_map(&self.backend, name, &map, field)?,
                CredentialRecord::from_siblings(&map, field),
            ),
            None => {
                let custom = self.custom_metadata(name).await?.unwrap_or_default();
                (
                    SecretString::from(serde_json::Value::Object(map.clone()).to_string()),
                    record_from_custom(&custom, &map),
                )
            }
        };
        Ok(StoredValue {
            value,
            record,
            metadata,
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
        let kv = self.kv_version(name).await?;
        let whole = match field {
            Some(_) => None,
            None if kv == KvVersion::V1 => return Err(self.whole_value_on_v1(name)),
            None => match serde_json::from_str::<serde_json::Value>(value.secret().expose_secret())
            {
                Ok(serde_json::Value::Object(map)) => Some(map),
                _ => {
                    return Err(BackendError::new(
                        ErrorKind::InvalidValue,
                        &self.backend,
                        "a Vault secret is a key/value map, and the value to write is not a JSON \
                         object: name the field to write in the reference (e.g. #client_secret)",
                    )
                    .with_secret(name));
                }
            },
        };
        let current = self
            .read_map(name, "reading the secret before writing")
            .await?;
        precondition.check_unchanged(
            &self.backend,
            name,
            current
                .as_ref()
                .map(|(map, version)| Some(map_version(map, *version)))
                .as_ref()
                .map(|v| v.as_deref()),
        )?;
        let new_map = match (&whole, field) {
            (Some(map), _) => map.clone(),
            (None, Some(field)) => {
                let mut map = current.as_ref().map(|(m, _)| m.clone()).unwrap_or_default();
                set_field(&mut map, field, value, record);
                map
            }
            (None, None) => unreachable!("a whole value is a map or refused above"),
        };
        let text = serde_json::Value::Object(new_map.clone()).to_string();
        check_size(&self.backend, name, text.len(), MAX_VALUE_BYTES)?;
        // A whole value's record is in the custom_metadata, which is written first, naming the
        // value it describes (so until the value is written, and if that fails, it describes
        // no stored value and reads as no record); the value's check-and-set write is the
        // commit point. On a failed value write the previous custom_metadata is put back.
        let custom = match &whole {
            Some(map) => {
                let old = self.custom_metadata(name).await?.unwrap_or_default();
                if let Some((current_map, _)) = &current
                    && current_map == map
                    && record_from_custom(&old, current_map) == *record
                {
                    return Ok(WriteOutcome::Unchanged);
                }
                let mut custom: HashMap<String, String> = old
                    .iter()
                    .filter(|(k, _)| !k.starts_with(RECORD_PREFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (base, text) in record.entries() {
                    if let Some(text) = text {
                        custom.insert(record_key(base), text);
                    }
                }
                custom.insert(record_key(VALUE_SHA256), fingerprint(&canonical_json(map)));
                self.set_custom_metadata(
                    name,
                    custom,
                    "writing the secret's record in custom_metadata",
                )
                .await?;
                Some(old)
            }
            None => {
                if let Some((current_map, _)) = &current
                    && *current_map == new_map
                {
                    return Ok(WriteOutcome::Unchanged);
                }
                None
            }
        };
        let written = self.put_map(name, kv, current.as_ref(), new_map).await;
        if let Err(err) = written {
            if let Some(old) = custom {
                // Best effort: the record written above names a value that is not stored, so it
                // reads as no record even if this fails.
                let restored = self
                    .set_custom_metadata(name, old, "restoring the secret's custom_metadata")
                    .await;
                if let Err(e) = restored {
                    tracing::warn!(backend = %self.backend, secret = name, error = %e,
                        "cannot restore the custom_metadata after a failed value write");
                }
            }
            return Err(err);
        }
        Ok(if current.is_some() {
            WriteOutcome::Updated
        } else {
            WriteOutcome::Created
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race check-and-set closes, made deterministic: someone writes after the value
    /// write's own read. The data write with cas = the version read is refused by OpenBao
    /// (Conflict) and the other writer's data stays.
    #[tokio::test]
    async fn check_and_set_refuses_a_version_written_after_the_read() {
        let bao = testkit::real::OpenBao::start();
        let store = VaultStore::new(
            "ops-vault",
            VaultOptions::new(
                bao.address(),
                "secret",
                VaultAuth::Token {
                    token: bao.root_token().clone().into(),
                },
            ),
        )
        .unwrap();
        let name = "race/creds";
        let put = |secret: &str| {
            bao.api(
                "POST",
                &format!("secret/data/{name}"),
                Some(serde_json::json!({"data": {"client_secret": secret}})),
            );
        };
        put("first");
        let read = store.read_map(name, "test").await.unwrap().unwrap();
        put("theirs");
        let mut mine = read.0.clone();
        mine.insert("client_secret".into(), "mine".into());
        let err = store
            .put_map(name, KvVersion::V2, Some(&read), mine.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(!format!("{err} {err:?}").contains("mine"), "{err}");
        let now = store.read_map(name, "test").await.unwrap().unwrap();
        assert_eq!(now.0["client_secret"], "theirs");
        // with the version that is there now, the same write goes through
        store
            .put_map(name, KvVersion::V2, Some(&now), mine)
            .await
            .unwrap();
        let after = store.read_map(name, "test").await.unwrap().unwrap();
        assert_eq!(after.0["client_secret"], "mine");
    }

    fn options(address: &str) -> VaultOptions {
        VaultOptions::new(
            address,
            "secret",
            VaultAuth::Token {
                token: SecretString::from("hvs.never-shown").into(),
            },
        )
    }

    #[test]
    fn plain_http_only_for_loopback_unless_allowed() {
        for ok in [
            "https://vault.example.com:8200",
            "http://127.0.0.1:8200",
            "http://localhost:8200",
            "http://[::1]:8200",
        ] {
            VaultStore::new("v", options(ok)).unwrap();
        }
        let err = VaultStore::new("v", options("http://vault.example.com:8200")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(
            err.to_string().contains("allow_insecure_http = true"),
            "{err}"
        );
        let allowed = VaultOptions {
            allow_insecure_http: true,
            ..options("http://vault.internal:8200")
        };
        VaultStore::new("v", allowed).unwrap();
        let err = VaultStore::new("v", options("vault.example.com")).unwrap_err();
        assert!(err.to_string().contains("is not a URL"), "{err}");
    }

    #[test]
    fn debug_shows_no_credential() {
        let store = VaultStore::new("v", options("https://vault.example.com")).unwrap();
        let text = format!("{store:?} {:?}", store.options);
        assert!(!text.contains("hvs.never-shown"), "{text}");
        assert!(text.contains("vault.example.com"), "{text}");
    }

    #[test]
    fn names_are_kv_paths() {
        let store = VaultStore::new("v", options("https://vault.example.com")).unwrap();
        for good in ["apps/graph", "graph-token", "a/b.c/d_e@f"] {
            store.check_name(good).unwrap();
        }
        for bad in [
            "", "/apps", "apps/", "a//b", "a/../b", "a b", "a#b", "a?b", "ä",
        ] {
            assert_eq!(
                store.check_name(bad).unwrap_err().kind(),
                ErrorKind::InvalidName,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn any_lease_duration_gives_a_renewal_time_without_overflow() {
        assert_eq!(
            refresh_at(0),
            None,
            "a token without a lease is not renewed"
        );
        let now = Instant::now();
        let at = refresh_at(3).unwrap();
        assert!(at >= now + Duration::from_secs(2) && at < now + Duration::from_secs(3));
        for huge in [u64::MAX, u64::MAX / 2, 1 << 62, 10_000_000_000] {
            let at = refresh_at(huge).unwrap();
            assert!(at <= Instant::now() + MAX_RENEW_INTERVAL, "{huge}");
            assert!(
                at >= now + MAX_RENEW_INTERVAL - Duration::from_secs(5),
                "{huge}"
            );
        }
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let d0 = policy.delay(0);
        assert!(
            d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
            "{d0:?}"
        );
        let d3 = policy.delay(3);
        assert!(
            d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800),
            "{d3:?}"
        );
        let d9 = policy.delay(9);
        assert!(
            d9 >= Duration::from_millis(500) && d9 <= Duration::from_secs(1),
            "{d9:?}"
        );
    }
}
