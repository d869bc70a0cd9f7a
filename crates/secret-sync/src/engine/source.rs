//! Reading what the config only points at: environment variables, files and secrets in
//! configured backends, turned into an `entra_auth::AppCredential` when a job needs a token.
//!
//! Nothing here runs while the engine decides whether a job can be skipped: a job's
//! credentials are read only when at least one of its targets needs a write. Secret values go
//! straight into `SecretString`; errors name the key and where its value was to come from,
//! never the value.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use entra_auth::{
    AppCredential, CertificateCredential, Credential, FederatedTokenSource, ManagedIdentity,
};
use rustix::fs::OFlags;
use secrecy::{ExposeSecret, SecretString};
use secret_backends::SecretStore;

use crate::config::{BackendRef, CredentialSpec, EntraIdentity, SecretSource, Value};

/// The configured stores by backend name, for `{ from = "BACKEND", ref = "..." }`.
pub type Stores = BTreeMap<String, Arc<dyn SecretStore>>;

/// Reads a secret; `what` names its key in errors (e.g. `client_secret`). An empty secret is
/// an error, never a credential.
pub async fn read_secret(
    source: &SecretSource,
    stores: &Stores,
    what: &str,
) -> anyhow::Result<SecretString> {
    let value = match source {
        SecretSource::Env(var) => env(var, what)?,
        SecretSource::File(path) => {
            let text = read_secret_file(path.clone())
                .await
                .with_context(|| format!("{what}: cannot read the file {}", path.display()))?;
            let trimmed = text
                .expose_secret()
                .strip_suffix('\n')
                .unwrap_or(text.expose_secret());
            SecretString::from(trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned())
        }
        SecretSource::From(reference) => from_backend(reference, stores, what).await?,
    };
    if value.expose_secret().trim().is_empty() {
        return Err(anyhow!(
            "{what} is empty ({}): give it a value",
            describe(source)
        ));
    }
    Ok(value)
}

/// The largest secret file read (a PEM with a certificate chain is a few KiB).
pub const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a secret file off the runtime thread (the daemon runs on one), as the file backend
/// reads: opened non-blocking so that a FIFO put in its place cannot hang the pass, refused
/// unless it is a regular file, and at most [`MAX_SECRET_FILE_BYTES`]. Symlinks are followed:
/// Kubernetes secret volumes are symlinks.
async fn read_secret_file(path: PathBuf) -> anyhow::Result<SecretString> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(OFlags::NONBLOCK.bits() as i32)
            .open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(anyhow!(
                "it is not a regular file (a FIFO, socket, device or directory): point at the file itself"
            ));
        }
        let too_big = || {
            anyhow!("it is larger than {MAX_SECRET_FILE_BYTES} bytes: is it the right file?")
        };
        if meta.len() > MAX_SECRET_FILE_BYTES {
            return Err(too_big());
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(MAX_SECRET_FILE_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
            return Err(too_big());
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("it is not UTF-8 text"))?;
        Ok(SecretString::from(text))
    })
    .await
    .context("the file read was cancelled")?
}

/// Reads and validates a non-secret value (a tenant or client id). When the value comes from
/// the environment or a backend, an error says what is wrong with it but never repeats it: a
/// ref pointing at the wrong field (`#client_secret` for `client_id`) would otherwise print the
/// secret in the summary and the log.
pub async fn read_value<T>(value: &Value<T>, stores: &Stores, what: &str) -> anyhow::Result<T>
where
    T: Clone + FromStr<Err = entra_auth::ConfigError>,
{
    let (text, from) = match value {
        Value::Literal(literal) => return Ok(literal.clone()),
        Value::Env(var) => (env(var, what)?, format!("environment variable {var}")),
        Value::From(reference) => (
            from_backend(reference, stores, what).await?,
            format!("backend {:?}, {}", reference.backend, reference.reference),
        ),
    };
    text.expose_secret().trim().parse().map_err(|err: entra_auth::ConfigError| {
        anyhow!(
            "{what} read from {from} is not usable: the value {}; {} (the value is not shown: it \
             is not written in the config and could be a secret)",
            err.problem(),
            err.fix()
        )
    })
}

/// Builds the app credential of `identity`, reading what it points at.
pub async fn app_credential(
    identity: &EntraIdentity,
    stores: &Stores,
) -> anyhow::Result<AppCredential> {
    let client_id = match &identity.client_id {
        Some(value) => Some(read_value(value, stores, "client_id").await?),
        None => None,
    };
    let credential = match &identity.credential {
        CredentialSpec::ManagedIdentity => {
            return Ok(AppCredential::managed_identity(
                identity.authority.clone(),
                ManagedIdentity::from_env(client_id).context(
                    "managed_identity: cannot tell which managed identity this host has",
                )?,
            ));
        }
        CredentialSpec::ClientSecret(source) => {
            Credential::ClientSecret(read_secret(source, stores, "client_secret").await?)
        }
        CredentialSpec::Certificate {
            certificate,
            key,
            algorithm,
        } => {
            let cert = read_secret(certificate, stores, "certificate").await?;
            let key = match key {
                Some(key) => read_secret(key, stores, "certificate_key").await?,
                None => cert.clone(),
            };
            Credential::Certificate(
                CertificateCredential::from_pem(
                    cert.expose_secret().as_bytes(),
                    key.expose_secret().as_bytes(),
                    *algorithm,
                )
                .with_context(|| {
                    format!("certificate ({}) is not usable", describe(certificate))
                })?,
            )
        }
        CredentialSpec::FederatedTokenFile(path) => {
            Credential::Federated(FederatedTokenSource::File(path.clone()))
        }
        CredentialSpec::FederatedTokenEnv(var) => {
            Credential::Federated(FederatedTokenSource::Env(var.clone()))
        }
        CredentialSpec::WorkloadIdentity => {
            let path = std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").ok_or_else(|| {
                MissingEnv::with_message(
                    "workload_identity = true needs AZURE_FEDERATED_TOKEN_FILE: is workload \
                     identity enabled for this pod or service account?",
                )
            })?;
            Credential::Federated(FederatedTokenSource::File(path.into()))
        }
        CredentialSpec::GithubOidc => Credential::Federated(
            FederatedTokenSource::github_actions_from_env()
                .context("github_oidc = true works inside a GitHub Actions job")?,
        ),
    };
    let tenant = identity
        .tenant_id
        .as_ref()
        .ok_or_else(|| anyhow!("tenant_id is missing: set it"))?;
    let tenant = read_value(tenant, stores, "tenant_id").await?;
    let client_id = client_id.ok_or_else(|| anyhow!("client_id is missing: set it"))?;
    Ok(AppCredential {
        authority: identity.authority.clone(),
        tenant,
        client_id,
        credential,
    })
}

fn env(var: &str, what: &str) -> anyhow::Result<SecretString> {
    std::env::var(var)
        .map(SecretString::from)
        .map_err(|_| MissingEnv::new(what, var).into())
}

/// An environment variable the config names is not set: the user's setup is incomplete, a
/// usage error (exit 2, `failure.rs`), not a failure of a server. Found in an error's chain by
/// [`is_missing_env`], whatever context was added on the way.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct MissingEnv {
    message: String,
}

impl MissingEnv {
    /// `what` (a key, e.g. `client_secret`) was to come from `var`, which is not set.
    pub fn new(what: &str, var: &str) -> Self {
        MissingEnv {
            message: format!(
                "{what}: environment variable {var} is not set (or not UTF-8): export it"
            ),
        }
    }

    /// A variable that a setting needs (the message names both and says what to check).
    pub fn with_message(message: impl Into<String>) -> Self {
        MissingEnv {
            message: message.into(),
        }
    }
}

/// The missing environment variable somewhere in `err`'s chain, if one is the cause.
pub fn missing_env(err: &anyhow::Error) -> Option<&MissingEnv> {
    err.chain().find_map(|e| e.downcast_ref::<MissingEnv>())
}

/// Whether `err` comes from an environment variable that is not set (see [`MissingEnv`]).
pub fn is_missing_env(err: &anyhow::Error) -> bool {
    missing_env(err).is_some()
}

async fn from_backend(
    reference: &BackendRef,
    stores: &Stores,
    what: &str,
) -> anyhow::Result<SecretString> {
    let store = stores.get(&reference.backend).ok_or_else(|| {
        anyhow!(
            "{what}: backend {:?} is not available here (backend logins cannot read from other backends)",
            reference.backend
        )
    })?;
    let name = &reference.reference;
    store
        .read(&name.name, name.field.as_deref())
        .await
        .with_context(|| {
            format!(
                "{what}: cannot read {name} from backend {:?}",
                reference.backend
            )
        })
}

/// Where a secret comes from, for messages.
fn describe(source: &SecretSource) -> String {
    match source {
        SecretSource::Env(var) => format!("environment variable {var}"),
        SecretSource::File(path) => format!("file {}", path.display()),
        SecretSource::From(reference) => {
            format!("backend {:?}, {}", reference.backend, reference.reference)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_backends::{FileOptions, FileStore, NameRef};

    const SECRET: &str = "Zq8~unit.client.secret";

    fn stores(dir: &std::path::Path) -> Stores {
        let store: Arc<dyn SecretStore> = Arc::new(FileStore::new("local", FileOptions::new(dir)));
        Stores::from([("local".to_owned(), store)])
    }

    fn from(reference: &str) -> SecretSource {
        SecretSource::From(BackendRef {
            backend: "local".to_owned(),
            reference: NameRef::parse(reference).unwrap(),
        })
    }

    #[tokio::test]
    async fn reads_a_field_from_a_backend_and_refuses_empty_values_without_leaking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("creds.json"),
            format!(
                r#"{{"client_secret":"{SECRET}","empty":"","tenant":"contoso.onmicrosoft.com"}}"#
            ),
        )
        .unwrap();
        let stores = stores(dir.path());
        let got = read_secret(&from("creds.json#client_secret"), &stores, "client_secret")
            .await
            .unwrap();
        assert_eq!(got.expose_secret(), SECRET);

        let empty = read_secret(&from("creds.json#empty"), &stores, "client_secret")
            .await
            .unwrap_err();
        let text = format!("{empty:#} {empty:?}");
        assert!(
            text.contains("client_secret is empty (backend \"local\", creds.json#empty)"),
            "{text}"
        );
        assert!(!text.contains(SECRET), "a value leaked: {text}");

        let missing = read_secret(&from("creds.json#nope"), &stores, "client_secret")
            .await
            .unwrap_err();
        let text = format!("{missing:#}");
        assert!(
            text.starts_with("client_secret: cannot read creds.json#nope from backend \"local\""),
            "{text}"
        );
        assert!(!text.contains(SECRET), "a value leaked: {text}");

        let tenant: entra_auth::TenantId = read_value(
            &Value::From(BackendRef {
                backend: "local".to_owned(),
                reference: NameRef::parse("creds.json#tenant").unwrap(),
            }),
            &stores,
            "tenant_id",
        )
        .await
        .unwrap();
        assert_eq!(tenant.as_str(), "contoso.onmicrosoft.com");
    }

    #[tokio::test]
    async fn a_file_loses_one_trailing_newline_and_an_unset_variable_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let got = read_secret(&SecretSource::File(path), &Stores::new(), "client_secret")
            .await
            .unwrap();
        assert_eq!(got.expose_secret(), SECRET);

        let err = read_secret(
            &SecretSource::Env("SECRET_SYNC_UNIT_TEST_SURELY_UNSET".to_owned()),
            &Stores::new(),
            "client_secret",
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "client_secret: environment variable SECRET_SYNC_UNIT_TEST_SURELY_UNSET is not set \
             (or not UTF-8): export it"
        );
        // Found through any context, so that `run` can exit 2 for it.
        assert!(is_missing_env(
            &err.context("cannot read the job's credentials")
        ));
        assert!(!is_missing_env(&anyhow!("another failure")));
    }

    #[tokio::test]
    async fn a_parse_error_of_a_value_read_at_run_time_never_repeats_the_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("creds.json"),
            format!(r#"{{"client_secret":"{SECRET}"}}"#),
        )
        .unwrap();
        let stores = stores(dir.path());
        let wrong_field = Value::<entra_auth::ClientId>::From(BackendRef {
            backend: "local".to_owned(),
            reference: NameRef::parse("creds.json#client_secret").unwrap(),
        });
        let err = read_value(&wrong_field, &stores, "client_id")
            .await
            .unwrap_err();
        let text = format!("{err:#} {err:?}");
        assert!(
            text.contains(
                "client_id read from backend \"local\", creds.json#client_secret is not usable: \
                 the value is not a GUID"
            ),
            "{text}"
        );
        assert!(!text.contains(SECRET), "a value leaked: {text}");
    }

    #[tokio::test]
    async fn a_fifo_or_an_oversized_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            read_secret(&SecretSource::File(fifo), &Stores::new(), "client_secret"),
        )
        .await
        .expect("a FIFO does not block the read")
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("it is not a regular file"),
            "{err:#}"
        );

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        let err = read_secret(&SecretSource::File(big), &Stores::new(), "client_secret")
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("larger than"), "{err:#}");
    }
}
