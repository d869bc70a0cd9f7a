//! The validated, typed form of a config file: what the engine runs.
//!
//! Nothing here knows TOML. `config::load` turns a file into a [`SyncConfig`] after checking
//! everything that can be checked without reading a secret or contacting a server: unknown
//! keys, types, durations, tenant/client id/scope/authority rules, backend names used by
//! targets and `from` references, target names against each backend's naming rule, duplicate
//! targets. What is left for run time is only what needs the outside world: environment
//! variables named by `{ env = "VAR" }`, files named by `{ file = "PATH" }`, secrets read
//! `{ from = "BACKEND", ref = "..." }`, and the servers themselves.
//!
//! # Who does what
//! - The config module (this directory) owns the file format, loading, validation and these
//!   types. Secret values are never held here: a [`SecretSource`] says where a secret is,
//!   not what it is, so `validate` and `plan` can hold a whole config without reading one.
//! - The engine (`crate::engine`) resolves [`SecretSource`]s and [`Value::Env`] at run time,
//!   builds the stores from [`BackendSpec`] (Azure Key Vault needs an `EntraTokenCredential`
//!   built from [`AzureKeyVaultSpec::auth`]), and turns a [`JobSpec`] into an
//!   `entra_auth::AppCredential` through its [`CredentialSpec`].
//!
//! Relative paths in the file (`dir`, `ca_file`, `{ file = ... }`, certificate files) are
//! already resolved against the config file's directory here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use entra_auth::{AssertionAlgorithm, Authority, ClientId, Scope, TenantId};
use secret_backends::vault::KvVersion;
use secret_backends::{AwsOptions, FileOptions, Format, NameRef};
use url::Url;

pub use super::load::actions::{ActionKind, ActionSpec, Actions, SignalName};

/// A whole config file, validated.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The file it was loaded from (for messages).
    pub source_path: PathBuf,
    /// `[settings]`, with defaults filled in.
    pub settings: Settings,
    /// `[backends.NAME]`, by name.
    pub backends: BTreeMap<String, BackendSpec>,
    /// `[jobs.NAME]`, in the order of the file.
    pub jobs: Vec<JobSpec>,
}

impl SyncConfig {
    /// The job named `name`, if any.
    pub fn job(&self, name: &str) -> Option<&JobSpec> {
        self.jobs.iter().find(|job| job.name == name)
    }

    /// How many targets all jobs have together.
    pub fn target_count(&self) -> usize {
        self.jobs.iter().map(|job| job.targets.len()).sum()
    }
}

/// `[settings]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A target whose token stays valid longer than this is fresh and not rewritten.
    /// Default [`Settings::DEFAULT_REFRESH_BEFORE`].
    pub refresh_before: Duration,
    /// At most this many token requests and target writes at once. Default 8.
    pub concurrency: usize,
    /// The Entra ID authority of jobs that do not name their own. Default: public cloud.
    pub authority: Authority,
    /// An extra PEM CA bundle to trust when talking to the authority (a private authority,
    /// a TLS-inspecting proxy, an emulator).
    pub ca_file: Option<PathBuf>,
    /// Address for `/healthz`, `/readyz` and `/metrics` in daemon mode (`secret-sync daemon`,
    /// `run --watch`); `None`: no listener. Unused by one-pass commands.
    pub listen: Option<SocketAddr>,
    /// The longest a job's pass may take (metadata reads, credential read, token request
    /// with its retries, every write), unless the job sets its own. Default
    /// [`Settings::DEFAULT_PASS_TIMEOUT`].
    pub pass_timeout: Duration,
    /// `[settings.credentials]`: watching and rotating the apps' own credentials (issue 13).
    pub credentials: super::lifecycle::CredentialSettings,
}

impl Settings {
    /// 15 minutes: Entra tokens live 60-90 minutes, so a token is rewritten after 45-75
    /// minutes, which stays clear of AWS's "one write per secret per 10 minutes" advice, and a
    /// schedule every 10 minutes (cron, CI) always finds a token with at least 5 minutes left.
    pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(15 * 60);
    /// Default of [`Settings::concurrency`].
    pub const DEFAULT_CONCURRENCY: usize = 8;
    /// Default of [`Settings::pass_timeout`]: 5 minutes, far more than a healthy pass takes
    /// (seconds) and than the token client's own retry budget.
    pub const DEFAULT_PASS_TIMEOUT: Duration = Duration::from_secs(5 * 60);
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            refresh_before: Self::DEFAULT_REFRESH_BEFORE,
            concurrency: Self::DEFAULT_CONCURRENCY,
            authority: Authority::public(),
            ca_file: None,
            listen: None,
            pass_timeout: Self::DEFAULT_PASS_TIMEOUT,
            credentials: super::lifecycle::CredentialSettings {
                state_dir: PathBuf::from("."),
                check_every: super::lifecycle::CredentialSettings::DEFAULT_CHECK_EVERY,
                defaults: super::lifecycle::WatchSpec::default(),
            },
        }
    }
}

/// `[backends.NAME]`: one secret store, by `kind`.
#[derive(Debug, Clone)]
pub enum BackendSpec {
    /// `kind = "file"`: the options are complete (nothing secret in them).
    File(FileOptions),
    /// `kind = "vault"` (also OpenBao).
    Vault(VaultSpec),
    /// `kind = "aws-secrets-manager"`: the options are complete; credentials come from the
    /// AWS default chain (or `profile`).
    Aws(AwsOptions),
    /// `kind = "azure-key-vault"`.
    AzureKeyVault(AzureKeyVaultSpec),
}

/// A Vault/OpenBao backend: `secret_backends::VaultOptions` without the login secret, which
/// is read at run time from [`VaultAuthSpec`].
#[derive(Debug, Clone)]
pub struct VaultSpec {
    /// `address`, e.g. `https://vault.example.com:8200`.
    pub address: Url,
    /// `mount`, default `secret`.
    pub mount: String,
    /// `kv_version` (1 or 2); `None`: detected at first use.
    pub kv_version: Option<KvVersion>,
    /// `namespace`.
    pub namespace: Option<String>,
    /// `auth = { method = ... }`.
    pub auth: VaultAuthSpec,
    /// `allow_insecure_http` (default false): http for a host that is not loopback.
    pub allow_insecure_http: bool,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `timeout`, per request (default 30 s).
    pub timeout: Duration,
}

/// How a Vault backend logs in (`auth = { method = ... }`).
#[derive(Debug, Clone)]
pub enum VaultAuthSpec {
    /// `method = "token"`, with `token_env` or `token_file`.
    Token {
        /// Where the Vault token is.
        token: SecretSource,
    },
    /// `method = "approle"`.
    AppRole {
        /// `mount`, default `approle`.
        mount: String,
        /// `role_id` (an identifier, not a secret).
        role_id: String,
        /// `secret_id_env` or `secret_id_file`.
        secret_id: SecretSource,
    },
    /// `method = "jwt"` (JWT/OIDC, e.g. a CI job's OIDC token).
    Jwt {
        /// `mount`, default `jwt`.
        mount: String,
        /// `role`; `None`: the mount's default role.
        role: Option<String>,
        /// `jwt_file` (re-read at every login) or `jwt_env`.
        jwt: SecretSource,
    },
    /// `method = "kubernetes"`.
    Kubernetes {
        /// `mount`, default `kubernetes`.
        mount: String,
        /// `role`.
        role: String,
        /// `jwt_file`, default the pod's service-account token file.
        jwt_file: PathBuf,
    },
}

/// An Azure Key Vault backend: `secret_backends::AzureKeyVaultOptions` fields from the file,
/// and the Entra identity the store authenticates with.
#[derive(Debug, Clone)]
pub struct AzureKeyVaultSpec {
    /// `vault_url` (`https://NAME.vault.azure.net`; http only for loopback is refused by the
    /// store, the Azure SDK needs https).
    pub vault_url: Url,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `recover_deleted` (default false).
    pub recover_deleted: bool,
    /// `auth = { method = ... }`: who the store is.
    pub auth: EntraIdentity,
}

/// An Entra ID identity: where to ask, which tenant and app, how it proves itself. Used by
/// jobs (the token they sync) and by Azure Key Vault backends (the token they write with).
/// `Eq` and `Hash` so that the engine can share one copy between the jobs of the same app
/// (issue 15).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntraIdentity {
    /// The job's `authority`, else `[settings] authority`.
    pub authority: Authority,
    /// `None` only for [`CredentialSpec::ManagedIdentity`], which takes no tenant.
    pub tenant_id: Option<Value<TenantId>>,
    /// `None` only for [`CredentialSpec::ManagedIdentity`] with the system-assigned identity.
    pub client_id: Option<Value<ClientId>>,
    /// How the app proves itself.
    pub credential: CredentialSpec,
}

/// A non-secret value: written in the file (and already validated), or read at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value<T> {
    /// Written in the file.
    Literal(T),
    /// `{ env = "VAR" }`: read from the environment at run time, then validated.
    Env(String),
    /// `{ from = "BACKEND", ref = "path#field" }`: read from a backend at run time, then validated.
    From(BackendRef),
}

/// Where a secret is. There is deliberately no literal: secrets do not go in config files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    /// `{ env = "VAR" }` (or `*_env = "VAR"` keys).
    Env(String),
    /// `{ file = "PATH" }` (or `*_file = "PATH"` keys): the whole file, one trailing newline
    /// removed (Kubernetes secret volumes, Docker secrets).
    File(PathBuf),
    /// `{ from = "BACKEND", ref = "path#field" }`.
    From(BackendRef),
}

/// `{ from = "BACKEND", ref = "path#field" }`: a secret in a configured backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendRef {
    /// The backend's name; checked to be defined. Backend logins (`auth`) never use `from`,
    /// so reading a job's credentials never depends on another credential read.
    pub backend: String,
    /// The name inside the backend and the optional `#field`; the name is checked against
    /// the backend's naming rule.
    pub reference: NameRef,
}

/// How an app proves itself to Entra ID. Exactly one per job (or Key Vault `auth`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CredentialSpec {
    /// `client_secret = { env | file | from }` (a literal is refused).
    ClientSecret(SecretSource),
    /// `certificate = { env | file | from }` (PEM: the certificate, and the key unless
    /// `certificate_key` is given), `certificate_key`, `assertion_alg` (`ps256` default, `rs256`).
    Certificate {
        /// The PEM holding the certificate (and maybe the key).
        certificate: SecretSource,
        /// The PEM holding the private key when it is not in `certificate`.
        key: Option<SecretSource>,
        /// The client assertion's signature algorithm.
        algorithm: AssertionAlgorithm,
    },
    /// `federated_token_file = "PATH"`: an OIDC token file, re-read at every request.
    FederatedTokenFile(PathBuf),
    /// `federated_token_env = "VAR"`: an OIDC token in an environment variable.
    FederatedTokenEnv(String),
    /// `workload_identity = true`: the file named by `AZURE_FEDERATED_TOKEN_FILE` at run time
    /// (tenant and client id default to `{ env = "AZURE_TENANT_ID" }` / `AZURE_CLIENT_ID`).
    WorkloadIdentity,
    /// `github_oidc = true`: GitHub Actions' OIDC endpoint (`ACTIONS_ID_TOKEN_REQUEST_*`).
    GithubOidc,
    /// `managed_identity = true`: the Azure host's managed identity (`client_id` picks a
    /// user-assigned one).
    ManagedIdentity,
}

/// `[jobs.NAME]`: one token, and where it goes.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job's name (the `NAME` of `[jobs.NAME]`).
    pub name: String,
    /// The app whose token is synced. Jobs with equal identities share one `Arc` (the loader
    /// interns them: 100,000 jobs over 1,000 apps hold 1,000 identities; issue 15), as they do
    /// the scope, the pass timeout and the lifecycle settings.
    pub identity: Arc<EntraIdentity>,
    /// `scope`: one resource, `/.default`.
    pub scope: Arc<Scope>,
    /// `targets`: at least one, no two with the same backend and name.
    pub targets: Vec<TargetSpec>,
    /// The deadline of this job's pass: its own `pass_timeout`, else `[settings] pass_timeout`.
    pub pass_timeout: Arc<PassTimeout>,
    /// `[jobs.NAME.credentials]` over `[settings.credentials]`, and `[jobs.NAME.rotation]`.
    pub lifecycle: Arc<super::lifecycle::JobLifecycle>,
    /// `actions`: run once per pass that created or updated one of its targets (issue 14).
    pub actions: Actions,
}

/// How long one pass of a job may take, and the config key that says so (for messages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PassTimeout {
    /// The deadline, counted from the start of the job's pass.
    pub limit: Duration,
    /// `settings.pass_timeout` or `jobs.NAME.pass_timeout`: where `limit` comes from.
    pub key: String,
}

/// One entry of a job's `targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// `to`: a defined backend.
    pub backend: String,
    /// `name`: valid for that backend.
    pub name: String,
    /// `format` (`raw` default, `json`).
    pub format: Format,
    /// `adopt` (default false): overwrite a secret that carries no managed-by marker.
    pub adopt: bool,
    /// `actions`: run after this target was created or updated (issue 14).
    pub actions: Actions,
}
