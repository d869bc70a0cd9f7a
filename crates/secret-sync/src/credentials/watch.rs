//! Watching: read the app registration from Microsoft Graph (`passwordCredentials`,
//! `keyCredentials`, never `key`), tell which secret the job uses, and show it: the
//! `secret-sync credentials` command (table or JSON), the state file for `plan`, and (from the
//! daemon) a metric and a warning.
//!
//! The Graph token is the caller's: the job's own app and credential by default, or the
//! identity `auth` names (e.g. a managed identity holding `Application.ReadWrite.All`), for
//! the cloud's Graph scope (`Cloud::graph_scope`). Graph's address is the cloud's unless
//! `graph_endpoint` overrides it.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use entra_auth::graph::{Application, GraphClient, GraphOptions};
use entra_auth::{AppCredential, ClientId, ClientOptions, Credential, TokenCache};
use secrecy::SecretString;
use serde_json::{Value, json};
use time::OffsetDateTime;
use url::Url;

use super::state::{CredentialState, JobState};
use super::{InUse, days_left, in_use};
use crate::cli::{CredentialsArgs, OutputFormat};
use crate::clients::Clients;
use crate::config::{CredentialSpec, GraphIdentity, JobSpec, SecretSource, SyncConfig};
use crate::engine::source::{self, Stores};
use crate::failure::Failure;
use crate::output::{self, rfc3339};

/// What the lifecycle needs of a loaded config: its stores (to read and write the jobs'
/// secrets) and a token client (for Graph tokens and to prove a new secret).
#[derive(Clone)]
pub struct Lifecycle {
    pub config: Arc<SyncConfig>,
    pub stores: Stores,
    pub cache: Arc<TokenCache>,
    /// The Graph clients made so far, one per endpoint ([`Lifecycle::graph`]), so that the
    /// daemon's checks reuse their connections instead of a new client and TLS handshake per
    /// job and check.
    graph_clients: Arc<Clients<Url, GraphClient>>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle").finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// Loads the config and builds its stores, as `run` does (exit 2 on a mistake).
    pub async fn load(args: &crate::cli::ConfigArgs, jobs: &[String]) -> Result<Self, Failure> {
        let config = crate::config::load(&args.config).map_err(Failure::usage)?;
        crate::run::check_job_names(&config, jobs).map_err(Failure::usage)?;
        let (engine, _) = crate::engine::build::build(&config, jobs)
            .await
            .map_err(Failure::usage)?;
        let (stores, cache) = engine.stores_and_cache();
        Ok(Lifecycle::new(
            Arc::new(config),
            stores.clone(),
            Arc::clone(cache),
        ))
    }

    /// The lifecycle of `config` over an engine's stores and token cache.
    pub fn new(config: Arc<SyncConfig>, stores: Stores, cache: Arc<TokenCache>) -> Self {
        Lifecycle {
            config,
            stores,
            cache,
            graph_clients: Arc::default(),
        }
    }

    /// The Graph client for `job`: its `graph_endpoint`, else its cloud's Graph; made at the
    /// first use of that endpoint (reading `[settings] ca_file` then), then shared.
    pub async fn graph(&self, job: &JobSpec) -> anyhow::Result<GraphClient> {
        let endpoint = match &job.lifecycle.watch.graph_endpoint {
            Some(url) => url.clone(),
            None => self.graph_authority(job).cloud().graph_endpoint(),
        };
        if let Some(client) = self.graph_clients.get(&endpoint) {
            return Ok(client);
        }
        let mut options = ClientOptions::default();
        if let Some(ca_file) = &self.config.settings.ca_file {
            let pem = tokio::fs::read(ca_file)
                .await
                .with_context(|| format!("settings.ca_file: cannot read {}", ca_file.display()))?;
            options.extra_root_certificates.push(pem);
        }
        let client = GraphClient::new(endpoint.clone(), GraphOptions::from(options))
            .context("cannot set up the Microsoft Graph client")?;
        Ok(self.graph_clients.keep(endpoint, client))
    }

    fn graph_authority<'a>(&self, job: &'a JobSpec) -> &'a entra_auth::Authority {
        match &job.lifecycle.watch.graph {
            GraphIdentity::Job => &job.identity.authority,
            GraphIdentity::Other(identity) => &identity.authority,
        }
    }

    /// The job's own app credential, with `secret` instead of what its source holds when given.
    pub async fn job_app(
        &self,
        job: &JobSpec,
        secret: Option<&SecretString>,
    ) -> anyhow::Result<AppCredential> {
        let mut app = source::app_credential(&job.identity, &self.stores).await?;
        if let Some(secret) = secret {
            app.credential = Credential::ClientSecret(secret.clone());
        }
        Ok(app)
    }

    /// A Graph token for `job`'s configured caller. `job_secret` is the job's client secret
    /// when already read (so the job's credential is read once).
    pub async fn graph_token(
        &self,
        job: &JobSpec,
        job_secret: Option<&SecretString>,
    ) -> anyhow::Result<SecretString> {
        let (app, who) = match &job.lifecycle.watch.graph {
            GraphIdentity::Job => (self.job_app(job, job_secret).await?, "the job's own app"),
            GraphIdentity::Other(identity) => (
                source::app_credential(identity, &self.stores).await?,
                "the identity of credentials.auth",
            ),
        };
        let scope = app.authority.cloud().graph_scope();
        let token =
            self.cache.get(&app, &scope).await.with_context(|| {
                format!("cannot get a Microsoft Graph token ({scope}) as {who}")
            })?;
        Ok(token.secret().clone())
    }
}

/// One job's watch: the app as Graph describes it, and which of its credentials is in use.
#[derive(Debug)]
pub struct JobWatch {
    pub job: String,
    pub app: ClientId,
    pub application: Application,
    /// The job's credential kind, as the rows name it: `password` (a client secret job) or
    /// `certificate`; `None` for another credential.
    pub kind: Option<&'static str>,
    /// Which credential of that kind the job's is.
    pub in_use: InUse,
    pub watched_at: OffsetDateTime,
}

impl JobWatch {
    /// The keyId in use when it is of `kind` (`password` or `certificate`).
    fn in_use_of(&self, kind: &str) -> Option<&str> {
        self.in_use.key_id().filter(|_| self.kind == Some(kind))
    }

    /// The end of the credential in use (a password or a certificate), if known.
    pub fn in_use_end(&self) -> Option<OffsetDateTime> {
        if let Some(key) = self.in_use_of("password") {
            return self
                .application
                .password_credentials
                .iter()
                .find(|p| p.key_id.eq_ignore_ascii_case(key))
                .and_then(|p| p.end);
        }
        let key = self.in_use_of("certificate")?;
        self.application
            .key_credentials
            .iter()
            .find(|k| k.key_id.eq_ignore_ascii_case(key))
            .and_then(|k| k.end)
    }

    /// The credential in use, for messages: `client secret` or `certificate`.
    pub fn in_use_word(&self) -> &'static str {
        match self.kind {
            Some("certificate") => "certificate",
            _ => "client secret",
        }
    }

    /// The expiry per kind for the metric: the client secret in use (else the earliest
    /// password), the certificate in use (else the earliest certificate).
    pub fn expiries(&self) -> Vec<(&'static str, OffsetDateTime)> {
        let mut out = Vec::new();
        let end_of_password = |key: &str| {
            self.application
                .password_credentials
                .iter()
                .find(|p| p.key_id.eq_ignore_ascii_case(key))
                .and_then(|p| p.end)
        };
        let secret = self
            .in_use_of("password")
            .and_then(end_of_password)
            .or_else(|| {
                self.application
                    .password_credentials
                    .iter()
                    .filter_map(|p| p.end)
                    .min()
            });
        if let Some(end) = secret {
            out.push(("client_secret", end));
        }
        let end_of_certificate = |key: &str| {
            self.application
                .key_credentials
                .iter()
                .find(|k| k.key_id.eq_ignore_ascii_case(key))
                .and_then(|k| k.end)
        };
        let certificate = self
            .in_use_of("certificate")
            .and_then(end_of_certificate)
            .or_else(|| {
                self.application
                    .key_credentials
                    .iter()
                    .filter_map(|k| k.end)
                    .min()
            });
        if let Some(end) = certificate {
            out.push(("certificate", end));
        }
        out
    }

    /// The rows of the `credentials` output and the state file.
    pub fn rows(&self) -> Vec<CredentialState> {
        let used = self.in_use_of("password");
        let used_certificate = self.in_use_of("certificate");
        let passwords = self
            .application
            .password_credentials
            .iter()
            .map(|p| CredentialState {
                kind: "password".into(),
                key_id: p.key_id.clone(),
                display_name: p.display_name.clone(),
                expires_on: p.end.map(rfc3339),
                in_use: used.is_some_and(|k| k.eq_ignore_ascii_case(&p.key_id)),
            });
        let certificates = self
            .application
            .key_credentials
            .iter()
            .map(|k| CredentialState {
                kind: "certificate".into(),
                key_id: k.key_id.clone(),
                display_name: k.display_name.clone(),
                expires_on: k.end.map(rfc3339),
                in_use: used_certificate.is_some_and(|c| c.eq_ignore_ascii_case(&k.key_id)),
            });
        passwords.chain(certificates).collect()
    }

    /// What the state file records.
    pub fn state(&self) -> JobState {
        JobState {
            watched_at: rfc3339(self.watched_at),
            app: self.app.to_string(),
            credentials: self.rows(),
        }
    }
}

/// Reads `job`'s app from Graph and tells which secret it uses, within the job's deadline
/// ([`super::Deadline`]).
pub async fn watch_job(lifecycle: &Lifecycle, job: &JobSpec) -> anyhow::Result<JobWatch> {
    super::Deadline::of(job)
        .run(
            "watching the app's credentials",
            watch_job_now(lifecycle, job),
        )
        .await
}

async fn watch_job_now(lifecycle: &Lifecycle, job: &JobSpec) -> anyhow::Result<JobWatch> {
    let client_id = match &job.identity.client_id {
        Some(value) => source::read_value(value, &lifecycle.stores, "client_id").await?,
        None => return Err(anyhow!("the job has no client_id: nothing to watch")),
    };
    // The job's secret: with its record when it is in a backend.
    let (secret, stored) = match &job.identity.credential {
        CredentialSpec::ClientSecret(SecretSource::From(reference)) => {
            let store = lifecycle
                .stores
                .get(&reference.backend)
                .ok_or_else(|| anyhow!("backend {:?} is not set up", reference.backend))?;
            let stored = store
                .read_stored(
                    &reference.reference.name,
                    reference.reference.field.as_deref(),
                )
                .await
                .context("cannot read the job's client_secret")?;
            (Some(stored.value.clone()), Some(stored))
        }
        CredentialSpec::ClientSecret(source) => (
            Some(source::read_secret(source, &lifecycle.stores, "client_secret").await?),
            None,
        ),
        _ => (None, None),
    };
    let graph = lifecycle.graph(job).await?;
    let token = lifecycle.graph_token(job, secret.as_ref()).await?;
    let application = graph
        .application(&token, &client_id)
        .await
        .context("cannot read the app registration from Microsoft Graph")?;
    let recorded = stored.as_ref().and_then(|s| s.record.key_id.clone());
    let (kind, in_use) = match &job.identity.credential {
        CredentialSpec::ClientSecret(_) => (
            Some("password"),
            in_use(
                &application.password_credentials,
                recorded.as_deref(),
                secret.as_ref(),
            ),
        ),
        CredentialSpec::Certificate { .. } => {
            // The job's certificate as its token requests load it (the x5t thumbprint).
            let app = lifecycle.job_app(job, None).await?;
            let in_use = match &app.credential {
                Credential::Certificate(certificate) => {
                    super::certificate_in_use(&application.key_credentials, certificate)
                }
                _ => InUse::Unknown,
            };
            (Some("certificate"), in_use)
        }
        _ => (None, InUse::Unknown),
    };
    Ok(JobWatch {
        job: job.name.clone(),
        app: client_id,
        application,
        kind,
        in_use,
        watched_at: OffsetDateTime::now_utc(),
    })
}

/// Records `watch` in the state file; a failure is a warning (the watch itself worked).
pub fn record(config: &SyncConfig, watch: &JobWatch) {
    if let Err(err) = super::state::record(
        &config.settings.credentials.state_dir,
        &watch.job,
        watch.state(),
    ) {
        tracing::warn!(job = %watch.job, error = format!("{err:#}"), "cannot record the credential watch");
    }
}

/// The jobs `--job` selects (or every job that watches or rotates), refusing one that does not.
pub fn selected<'a>(config: &'a SyncConfig, names: &[String]) -> Result<Vec<&'a JobSpec>, Failure> {
    if names.is_empty() {
        let jobs: Vec<&JobSpec> = config
            .jobs
            .iter()
            .filter(|j| j.lifecycle.uses_graph())
            .collect();
        if jobs.is_empty() {
            return Err(Failure::usage(anyhow!(
                "no job watches its credentials: set watch = true in [settings.credentials] \
                 or a job's [jobs.NAME.credentials] (docs/credentials.md)"
            )));
        }
        return Ok(jobs);
    }
    let mut jobs = Vec::new();
    for name in names {
        let Some(job) = config.job(name) else {
            continue;
        };
        if !job.lifecycle.uses_graph()
            && !matches!(
                job.identity.credential,
                CredentialSpec::ClientSecret(_) | CredentialSpec::Certificate { .. }
            )
        {
            return Err(Failure::usage(anyhow!(
                "job {name:?}: its credential is not a client secret or a certificate, so the \
                 app has no secret of its own to watch"
            )));
        }
        jobs.push(job);
    }
    Ok(jobs)
}

/// `secret-sync credentials [--job NAME] [--output table|json]`.
pub async fn run(args: CredentialsArgs) -> Result<(), Failure> {
    let lifecycle = Lifecycle::load(&args.config, &args.jobs).await?;
    let jobs = selected(&lifecycle.config, &args.jobs)?;
    let now = OffsetDateTime::now_utc();
    let mut watched = Vec::new();
    let mut errors = Vec::new();
    for job in jobs {
        match watch_job(&lifecycle, job).await {
            Ok(watch) => {
                record(&lifecycle.config, &watch);
                if let Some(end) = watch.in_use_end()
                    && super::earlier(end, job.lifecycle.watch.warn_within) <= now
                {
                    eprintln!(
                        "warning: job {:?}: the {} in use ({}) expires in {} day(s), at {} (warn_within {})",
                        job.name,
                        watch.in_use_word(),
                        watch.in_use.key_id().unwrap_or(""),
                        days_left(end, now),
                        rfc3339(end),
                        super::shown(job.lifecycle.watch.warn_within)
                    );
                }
                watched.push(watch);
            }
            Err(err) => errors.push((job.name.clone(), format!("{err:#}"))),
        }
    }
    let text = match args.output {
        OutputFormat::Text => table(&watched, &errors, now),
        OutputFormat::Json => format!("{}\n", to_json(&watched, &errors, now)),
    };
    output::print(&text).map_err(Failure::failed)?;
    if errors.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = errors.iter().map(|(job, _)| job.as_str()).collect();
    Err(Failure::failed(anyhow!(
        "cannot watch the credentials of {}: {}",
        names.join(", "),
        errors
            .iter()
            .map(|(job, err)| format!("{job}: {err}"))
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

fn days(expires_on: Option<&str>, now: OffsetDateTime) -> Option<i64> {
    let end =
        OffsetDateTime::parse(expires_on?, &time::format_description::well_known::Rfc3339).ok()?;
    Some(days_left(end, now))
}

fn in_use_word(watch: &JobWatch, row: &CredentialState) -> String {
    match watch.kind {
        None => return "-".into(),
        // A credential of the other kind is not the job's.
        Some(kind) if kind != row.kind => return "no".into(),
        Some(_) => {}
    }
    match (&watch.in_use, row.in_use) {
        (_, true) => format!("yes ({})", watch.in_use.how()),
        (InUse::Ambiguous, false) => "ambiguous".into(),
        (InUse::Unknown, false) => "unknown".into(),
        _ => "no".into(),
    }
}

fn table(watched: &[JobWatch], errors: &[(String, String)], now: OffsetDateTime) -> String {
    let header = [
        "JOB",
        "APP",
        "KIND",
        "KEY ID",
        "NAME",
        "EXPIRES",
        "DAYS LEFT",
        "IN USE",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for watch in watched {
        for row in watch.rows() {
            rows.push([
                watch.job.clone(),
                watch.app.to_string(),
                row.kind.clone(),
                row.key_id.clone(),
                row.display_name.clone().unwrap_or_else(|| "-".into()),
                row.expires_on.clone().unwrap_or_else(|| "-".into()),
                days(row.expires_on.as_deref(), now).map_or_else(|| "-".into(), |d| d.to_string()),
                in_use_word(watch, &row),
            ]);
        }
    }
    for (job, _) in errors {
        rows.push([
            job.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "failed (see below)".into(),
        ]);
    }
    output::columns(header, &rows)
}

fn to_json(watched: &[JobWatch], errors: &[(String, String)], now: OffsetDateTime) -> Value {
    let mut credentials = Vec::new();
    for watch in watched {
        for row in watch.rows() {
            credentials.push(json!({
                "job": watch.job,
                "app": watch.app.to_string(),
                "kind": row.kind,
                "key_id": row.key_id,
                "display_name": row.display_name,
                "expires_on": row.expires_on,
                "days_left": days(row.expires_on.as_deref(), now),
                "in_use": if watch.kind.is_none() { Value::Null } else { Value::Bool(row.in_use) },
                "in_use_by": if row.in_use { Value::from(watch.in_use.how()) } else { Value::Null },
            }));
        }
    }
    let jobs: Vec<Value> = watched
        .iter()
        .map(|w| json!({"job": w.job, "app": w.app.to_string(), "in_use": w.in_use.how(), "in_use_key_id": w.in_use.key_id()}))
        .collect();
    let errors: Vec<Value> = errors
        .iter()
        .map(|(job, error)| json!({"job": job, "error": error}))
        .collect();
    json!({
        "version": 1,
        "jobs": jobs,
        "credentials": credentials,
        "errors": errors,
    })
}
