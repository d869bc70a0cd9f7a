//! From a loaded config to what the engine runs: the shared token cache, one store per
//! backend the selected jobs use, and the jobs with their targets bound to those stores.
//!
//! No request is sent here. A backend that cannot be set up (an unset login variable, no AWS
//! region, an unreadable CA file) does not stop the others: it becomes a store whose every call
//! fails with that reason, so its targets are reported as failed and the rest of the run goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use entra_auth::{ClientOptions, EntraTokenCredential, RefreshPolicy, TokenCache, TokenClient};
use secrecy::SecretString;
use secret_backends::azure_kv::{
    AccessToken, AzureError, AzureErrorKind, TokenCredential, TokenRequestOptions,
};
use secret_backends::vault::{LoginSecret, VaultAuth, VaultOptions};
use secret_backends::{
    AwsStore, AzureKeyVaultOptions, AzureKeyVaultStore, BackendError, ErrorKind, FileStore,
    SecretMetadata, SecretStore, TokenPayload, WriteOutcome, WritePrecondition,
};
use tracing::warn;

use super::source::{self, Stores};
use super::{Engine, Job, Target};
use crate::config::{
    AzureKeyVaultSpec, BackendSpec, CredentialSpec, EntraIdentity, SecretSource, Settings,
    SyncConfig, Value, VaultAuthSpec, VaultSpec,
};

/// The engine and the jobs to run. `jobs` selects by name (empty: every job, in file order);
/// the caller has checked that each name exists.
pub async fn build(config: &SyncConfig, jobs: &[String]) -> anyhow::Result<(Engine, Vec<Job>)> {
    let cache = token_cache(&config.settings, Duration::ZERO)?;
    build_with_cache(config, jobs, cache).await
}

/// The token cache for `settings` (its `ca_file` and `refresh_before`), renewing tokens `lead`
/// earlier than `refresh_before` (the daemon's lead, see [`Engine::refresh_ahead`]; zero for
/// `run`). The daemon keeps one for its whole life, across reloads that do not change those
/// two settings.
pub fn token_cache(settings: &Settings, lead: Duration) -> anyhow::Result<Arc<TokenCache>> {
    let mut options = ClientOptions::default();
    if let Some(ca_file) = &settings.ca_file {
        let pem = std::fs::read(ca_file)
            .with_context(|| format!("settings.ca_file: cannot read {}", ca_file.display()))?;
        options.extra_root_certificates.push(pem);
    }
    let client =
        TokenClient::new(options).context("cannot set up the HTTPS client for Entra ID")?;
    Ok(Arc::new(TokenCache::new(
        client,
        RefreshPolicy {
            refresh_before: settings.refresh_before + lead,
        },
    )))
}

/// [`build`] over an existing token cache (made by [`token_cache`] for the same settings).
pub async fn build_with_cache(
    config: &SyncConfig,
    jobs: &[String],
    cache: Arc<TokenCache>,
) -> anyhow::Result<(Engine, Vec<Job>)> {
    let settings = &config.settings;
    let selected: Vec<_> = config
        .jobs
        .iter()
        .filter(|job| jobs.is_empty() || jobs.contains(&job.name))
        .collect();
    let mut needed = BTreeSet::new();
    for job in &selected {
        needed.extend(job.targets.iter().map(|t| t.backend.clone()));
        needed.extend(backends_read_by(&job.identity.credential));
        needed.extend(backend_of(&job.identity.tenant_id));
        needed.extend(backend_of(&job.identity.client_id));
        needed.extend(crate::actions::backends_read_by(job));
    }

    let mut stores = Stores::new();
    for name in needed {
        let Some(spec) = config.backends.get(&name) else {
            // The loader checks every reference; an unknown name here is a bug upstream.
            anyhow::bail!("backend {name:?} is used but not defined");
        };
        let store = match store(&name, spec, &cache).await {
            Ok(store) => store,
            Err(err) => {
                warn!(backend = %name, error = format!("{err:#}"),
                    "backend cannot be set up; its targets fail");
                Arc::new(Unusable::new(&name, &err))
            }
        };
        stores.insert(name, store);
    }

    // The identity, scope and pass timeout are the config's `Arc`s, one per distinct value
    // (the loader interns them: issue 15, 100,000 jobs over 1,000 apps).
    let jobs = selected
        .into_iter()
        .map(|spec| Job {
            name: spec.name.clone(),
            identity: Arc::clone(&spec.identity),
            scope: Arc::clone(&spec.scope),
            targets: spec
                .targets
                .iter()
                .map(|t| Target {
                    store: Arc::clone(&stores[&t.backend]),
                    name: t.name.clone(),
                    format: t.format,
                    adopt: t.adopt,
                })
                .collect(),
            pass_timeout: Arc::clone(&spec.pass_timeout),
        })
        .collect();
    let engine = Engine::new(cache, stores, settings.refresh_before, settings.concurrency);
    Ok((engine, jobs))
}

/// The backends a credential reads `from`.
fn backends_read_by(credential: &CredentialSpec) -> Vec<String> {
    let sources: Vec<&SecretSource> = match credential {
        CredentialSpec::ClientSecret(source) => vec![source],
        CredentialSpec::Certificate {
            certificate, key, ..
        } => [Some(certificate), key.as_ref()]
            .into_iter()
            .flatten()
            .collect(),
        _ => Vec::new(),
    };
    sources
        .into_iter()
        .filter_map(|source| match source {
            SecretSource::From(reference) => Some(reference.backend.clone()),
            _ => None,
        })
        .collect()
}

/// The backend a value is read `from`, if any.
fn backend_of<T>(value: &Option<Value<T>>) -> Option<String> {
    match value {
        Some(Value::From(reference)) => Some(reference.backend.clone()),
        _ => None,
    }
}

async fn store(
    name: &str,
    spec: &BackendSpec,
    cache: &Arc<TokenCache>,
) -> anyhow::Result<Arc<dyn SecretStore>> {
    Ok(match spec {
        BackendSpec::File(options) => Arc::new(FileStore::new(name, options.clone())),
        BackendSpec::Vault(spec) => Arc::new(secret_backends::vault::VaultStore::new(
            name,
            vault_options(spec).await?,
        )?),
        BackendSpec::Aws(options) => Arc::new(AwsStore::new(name, options.clone()).await?),
        BackendSpec::AzureKeyVault(spec) => Arc::new(azure_key_vault(name, spec, cache).await?),
    })
}

/// A Vault login secret: a file is handed to the store, which reads it at each use (rotated
/// secrets, Vault Agent sinks); a variable is read here, once (a process's environment does
/// not change under it).
async fn login_secret(source: &SecretSource, what: &str) -> anyhow::Result<LoginSecret> {
    Ok(match source {
        SecretSource::File(path) => LoginSecret::File(path.clone()),
        other => LoginSecret::Value(source::read_secret(other, &Stores::new(), what).await?),
    })
}

async fn vault_options(spec: &VaultSpec) -> anyhow::Result<VaultOptions> {
    let auth = match &spec.auth {
        VaultAuthSpec::Token { token } => VaultAuth::Token {
            token: login_secret(token, "auth token").await?,
        },
        VaultAuthSpec::AppRole {
            mount,
            role_id,
            secret_id,
        } => VaultAuth::AppRole {
            mount: mount.clone(),
            role_id: role_id.clone(),
            secret_id: login_secret(secret_id, "auth secret_id").await?,
        },
        VaultAuthSpec::Jwt { mount, role, jwt } => VaultAuth::Jwt {
            mount: mount.clone(),
            role: role.clone(),
            jwt: login_secret(jwt, "auth jwt").await?,
        },
        VaultAuthSpec::Kubernetes {
            mount,
            role,
            jwt_file,
        } => VaultAuth::Kubernetes {
            mount: mount.clone(),
            role: role.clone(),
            jwt: LoginSecret::File(jwt_file.clone()),
        },
    };
    let mut options = VaultOptions::new(
        spec.address.as_str().trim_end_matches('/'),
        spec.mount.clone(),
        auth,
    );
    options.kv_version = spec.kv_version;
    options.namespace = spec.namespace.clone();
    options.allow_insecure_http = spec.allow_insecure_http;
    options.ca_file = spec.ca_file.clone();
    options.timeout = spec.timeout;
    Ok(options)
}

async fn azure_key_vault(
    name: &str,
    spec: &AzureKeyVaultSpec,
    cache: &Arc<TokenCache>,
) -> anyhow::Result<AzureKeyVaultStore> {
    // read now, so a missing secret makes the backend unusable at once with the reason
    source::app_credential(&spec.auth, &Stores::new())
        .await
        .context("auth: cannot set up the Key Vault login")?;
    let credential = Arc::new(KeyVaultLogin {
        cache: Arc::clone(cache),
        auth: spec.auth.clone(),
        current: std::sync::Mutex::new(None),
    });
    let mut options = AzureKeyVaultOptions::new(spec.vault_url.clone());
    options.ca_file = spec.ca_file.clone();
    options.recover_deleted = spec.recover_deleted;
    options.cloud = crate::config::load::key_vault_cloud(spec.auth.authority.cloud());
    Ok(AzureKeyVaultStore::new(name, options, credential)?)
}

/// The Key Vault backend's credential: its `auth` is read again each time the Azure SDK asks
/// for a token (when it holds none, or its token is near expiry: a login), so a client secret or
/// certificate rotated on disk is used from the next login on, without a reload. The token
/// comes from the shared cache, whose key includes the credential, so a rotated secret asks
/// Entra ID for a token of its own. While the login read stays the same, the same
/// `EntraTokenCredential` answers, so it can tell the SDK asking again after a refusal (it
/// replaces a refused token once) from a first request.
struct KeyVaultLogin {
    cache: Arc<TokenCache>,
    auth: EntraIdentity,
    current: std::sync::Mutex<Option<EntraTokenCredential>>,
}

impl KeyVaultLogin {
    /// The credential for `app`: the current one while the login is unchanged.
    fn credential(&self, app: entra_auth::AppCredential) -> EntraTokenCredential {
        let same = |a: &entra_auth::AppCredential, b: &entra_auth::AppCredential| {
            a.authority.as_str() == b.authority.as_str()
                && a.tenant == b.tenant
                && a.client_id == b.client_id
                && a.fingerprint() == b.fingerprint()
        };
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*current {
            Some(credential) if same(credential.app(), &app) => credential.clone(),
            _ => {
                let credential = EntraTokenCredential::new(Arc::clone(&self.cache), app);
                *current = Some(credential.clone());
                credential
            }
        }
    }
}

impl fmt::Debug for KeyVaultLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultLogin").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for KeyVaultLogin {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> Result<AccessToken, AzureError> {
        let app = source::app_credential(&self.auth, &Stores::new())
            .await
            .map_err(|e| {
                // the message names where the secret is (a path, a variable), never its value
                AzureError::with_message(
                    AzureErrorKind::Credential,
                    format!("auth: cannot read the Key Vault login: {e:#}"),
                )
            })?;
        self.credential(app).get_token(scopes, options).await
    }
}

/// A backend that could not be set up: every call fails with the reason, so the targets on it
/// fail and the others run.
pub(super) struct Unusable {
    pub(super) backend: String,
    /// Why, without the missing variable when there is one (that is the error's source).
    pub(super) reason: String,
    /// The environment variable that is not set, when that is why: kept as the errors' source,
    /// so the engine can tell a usage error (exit 2) from a failure.
    pub(super) missing_env: Option<source::MissingEnv>,
}

impl fmt::Debug for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unusable")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Unusable {
    fn new(backend: &str, err: &anyhow::Error) -> Self {
        let missing_env = source::missing_env(err).cloned();
        // With a missing variable, the reason is the context above it: the variable's own
        // message comes from the source, so `{:#}` prints each part once.
        let reason = match &missing_env {
            Some(_) => err
                .chain()
                .take_while(|e| !e.is::<source::MissingEnv>())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": "),
            None => format!("{err:#}"),
        };
        Unusable {
            backend: backend.to_owned(),
            reason,
            missing_env,
        }
    }

    fn error(&self) -> BackendError {
        let message = if self.reason.is_empty() {
            "the backend could not be set up".to_owned()
        } else {
            format!("the backend could not be set up: {}", self.reason)
        };
        let error = BackendError::new(ErrorKind::InvalidConfig, &self.backend, message);
        match &self.missing_env {
            Some(missing) => error.with_source(missing.clone()),
            None => error,
        }
    }
}

#[async_trait::async_trait]
impl SecretStore for Unusable {
    fn backend(&self) -> &str {
        &self.backend
    }

    fn check_name(&self, _name: &str) -> Result<(), BackendError> {
        Ok(())
    }

    fn max_value_bytes(&self) -> usize {
        0
    }

    async fn read(&self, name: &str, _field: Option<&str>) -> Result<SecretString, BackendError> {
        Err(self.error().with_secret(name))
    }

    async fn metadata(&self, name: &str) -> Result<Option<SecretMetadata>, BackendError> {
        Err(self.error().with_secret(name))
    }

    async fn write(
        &self,
        name: &str,
        _payload: &TokenPayload,
        _precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        Err(self.error().with_secret(name))
    }

    async fn read_stored(
        &self,
        name: &str,
        _field: Option<&str>,
    ) -> Result<secret_backends::StoredValue, BackendError> {
        Err(self.error().with_secret(name))
    }

    async fn write_value(
        &self,
        name: &str,
        _field: Option<&str>,
        _value: &secret_backends::SecretValue,
        _record: &secret_backends::CredentialRecord,
        _precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        Err(self.error().with_secret(name))
    }
}

/// Removes the temporary files that interrupted writes (kill -9, a crash) left beside every
/// file target of `jobs`, as each target's next write does (the backend's `stale_temp_after`).
/// The daemon runs it in the background from its start, so that targets that stay fresh are
/// cleaned up too. One store per backend, so a large directory is listed once, not once per
/// target (`FileStore::remove_stale_temp_files`). Problems are logged; nothing here stops the
/// daemon.
pub async fn remove_stale_temp_files(backends: &BTreeMap<String, BackendSpec>, jobs: &[Job]) {
    let stores: BTreeMap<&str, FileStore> = backends
        .iter()
        .filter_map(|(name, spec)| match spec {
            BackendSpec::File(options) => {
                Some((name.as_str(), FileStore::new(name, options.clone())))
            }
            _ => None,
        })
        .collect();
    for target in jobs.iter().flat_map(|job| &job.targets) {
        let Some(store) = stores.get(target.backend()) else {
            continue;
        };
        if let Err(err) = store.remove_stale_temp_files(&target.name).await {
            warn!(backend = target.backend(), target = %target.name, error = %err,
                "cannot remove the temporary files left by interrupted writes");
        }
    }
}
