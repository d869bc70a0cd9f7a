//! The sync engine: one pass over a set of jobs, as `run` does it (and `plan` without writing).
//!
//! Per job: read every target's metadata (concurrently, never a value); when every target holds
//! a token that stays valid longer than `refresh_before` (and no `--force`), the job is done
//! with no credential read, no token request and no write. Otherwise the job's credentials are
//! read, one token is obtained through the shared [`TokenCache`] (jobs with the same app and
//! scope share one request), and the token is written to every target that needs it,
//! concurrently. A failing target never stops the others, and jobs run concurrently too; every
//! store call and every job's credential read + token request takes a permit of one semaphore,
//! so at most `concurrency` of them are in flight (a permit is never held while taking another).
//!
//! Invariants: the engine never holds a token outside `SecretString`/`TokenPayload`, never
//! puts one in a report or a log event, and never writes to a target whose metadata says it
//! was not written by secret-sync unless that target says `adopt = true` ([`decide`]).

pub mod build;
pub mod decide;
pub mod source;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use entra_auth::{Scope, TokenCache};
use futures::future::join_all;
use secret_backends::{Format, SecretStore, TokenPayload, WriteOutcome, WritePrecondition};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};
use tracing::{info, warn};

use self::decide::{Action, TargetState};
use self::source::Stores;
use crate::config::{EntraIdentity, PassTimeout};

/// The managed-by marker secret-sync writes beside every token, and looks for before overwriting.
pub const MANAGED_BY: &str = "secret-sync";

/// One job: where its credentials come from, the scope, and the targets to keep fresh.
///
/// The identity, scope and pass timeout are shared (`Arc`) by the jobs that have the same
/// ones (the config loader makes one copy of each distinct value): 100,000 jobs over 1,000 apps
/// hold 1,000 identities, not 100,000 (issue 15).
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// Who the token is for; read (through [`source`]) only when a target needs a write.
    pub identity: Arc<EntraIdentity>,
    pub scope: Arc<Scope>,
    pub targets: Vec<Target>,
    /// The deadline of one pass of this job, and the config key it comes from.
    pub pass_timeout: Arc<PassTimeout>,
}

impl Job {
    /// How long one pass of this job may take (`pass_timeout` of the job, else of
    /// `[settings]`): [`Engine::run`] fails whatever is unfinished by then, and the daemon
    /// bounds its waits for a pass in flight (reload drain, SIGTERM grace) by it.
    pub fn pass_timeout(&self) -> Duration {
        self.pass_timeout.limit
    }

    /// Why a step did not finish: the pass of this job ran into its deadline.
    fn past_deadline(&self, step: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{step}: the job's pass did not finish within its deadline, {} = \"{}\": a server \
             answers too slowly or not at all; fix or replace it, or raise {}",
            self.pass_timeout.key,
            humantime::format_duration(self.pass_timeout.limit),
            self.pass_timeout.key,
        )
    }
}

/// One place a job's token is written to.
#[derive(Debug, Clone)]
pub struct Target {
    pub store: Arc<dyn SecretStore>,
    pub name: String,
    pub format: Format,
    pub adopt: bool,
}

impl Target {
    /// The configured backend's name.
    pub fn backend(&self) -> &str {
        self.store.backend()
    }
}

/// How a pass behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassOptions {
    /// Rewrite targets whose token is still fresh (never one that secret-sync does not manage).
    pub force: bool,
    /// Read metadata only: no credential read, no token request, no write.
    pub dry_run: bool,
}

/// What happened to one target in a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The secret did not exist and now holds the token.
    Created,
    /// The secret now holds the new token.
    Updated,
    /// The secret already held exactly this token; nothing was written.
    Unchanged,
    /// The secret's token is fresh; it was not touched.
    Fresh,
    /// A write was needed but not done (`--dry-run`).
    Skipped,
    /// Something failed; see the detail.
    Failed,
}

impl Outcome {
    /// Every outcome, in the order summaries list them.
    pub const ALL: [Outcome; 6] = [
        Outcome::Created,
        Outcome::Updated,
        Outcome::Unchanged,
        Outcome::Fresh,
        Outcome::Skipped,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Fresh => "fresh",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

impl From<WriteOutcome> for Outcome {
    fn from(outcome: WriteOutcome) -> Self {
        match outcome {
            WriteOutcome::Created => Outcome::Created,
            WriteOutcome::Updated => Outcome::Updated,
            WriteOutcome::Unchanged => Outcome::Unchanged,
        }
    }
}

/// One line of the summary: a target and what happened to it, without any value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    pub job: String,
    pub backend: String,
    pub name: String,
    pub outcome: Outcome,
    /// Expiry of the token the target holds after the pass, when known.
    pub expires_on: Option<OffsetDateTime>,
    /// Why (for fresh, skipped and written targets) or what went wrong (failed).
    pub detail: String,
    /// A failed target whose cause is the user's setup, not a server: an environment variable
    /// the config names is not set ([`source::MissingEnv`]). `run` exits 2 for it
    /// (`failure.rs`); the other jobs still run.
    pub usage_error: bool,
}

impl TargetReport {
    fn new(
        job: &Job,
        target: &Target,
        outcome: Outcome,
        expires_on: Option<OffsetDateTime>,
        detail: String,
    ) -> Self {
        TargetReport {
            job: job.name.clone(),
            backend: target.backend().to_owned(),
            name: target.name.clone(),
            outcome,
            expires_on,
            detail,
            usage_error: false,
        }
    }

    /// Marks the report as a usage error when `err` comes from a missing environment variable.
    fn caused_by(mut self, err: &anyhow::Error) -> Self {
        self.usage_error = source::is_missing_env(err);
        self
    }
}

/// One line of a plan: what `run` would do to a target, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    pub job: String,
    pub backend: String,
    pub name: String,
    /// `None` when the metadata could not be read (the reason says why).
    pub action: Option<Action>,
    /// Expiry of the token the target holds now, when known.
    pub expires_on: Option<OffsetDateTime>,
    pub reason: String,
    /// The metadata could not be read because an environment variable the config names is not
    /// set (a backend's login): a usage error, as for [`TargetReport::usage_error`].
    pub usage_error: bool,
}

impl PlanEntry {
    /// Whether `run` would fail on this target (unreadable, or not managed without adopt).
    pub fn is_failure(&self) -> bool {
        matches!(self.action, None | Some(Action::Refuse))
    }
}

/// How a job's token step ended, for an observer (the daemon's metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStep {
    /// The cache held a token: no request was sent for this job.
    Cached,
    /// A token obtained at `obtained_at` by a request made while this job waited for it (jobs
    /// that shared one request see the same `obtained_at`).
    Requested { obtained_at: OffsetDateTime },
    /// No token: a request was sent to the token endpoint (or was on its way when the pass's
    /// deadline came) and failed. A job that failed before a request could be sent
    /// (credentials that could not be read: a missing variable or file, a federated token
    /// source that failed) reports no token step at all: it is a failed pass, not a request.
    Failed,
}

/// Whether a failed token step sent a request to the token endpoint: the credentials were read
/// and the failure is not one entra-auth reports before sending (its `Config` and
/// `CredentialSource` kinds: a key that cannot sign, a federated token that cannot be read).
fn reached_token_endpoint(err: &anyhow::Error, credentials_read: &AtomicBool) -> bool {
    if !credentials_read.load(Ordering::Relaxed) {
        return false;
    }
    let local = err
        .chain()
        .filter_map(|e| e.downcast_ref::<entra_auth::Error>())
        .any(|e| {
            matches!(
                e.kind(),
                entra_auth::ErrorKind::Config | entra_auth::ErrorKind::CredentialSource
            )
        });
    !local
}

/// Told about every job's token step; the daemon counts token requests with it.
pub trait TokenObserver: fmt::Debug + Send + Sync {
    fn token_step(&self, job: &str, step: TokenStep);
}

/// How a token falls short of `refresh_before` (see [`Engine::shortfall`]), with the message.
enum Shortfall {
    /// Already expired: not written.
    Expired(String),
    /// Valid, but not longer than `refresh_before`: written, and the target fails.
    Short(String),
}

/// A non-negative duration rounded down to whole seconds, for messages.
fn whole_seconds(d: time::Duration) -> Duration {
    Duration::from_secs(u64::try_from(d.whole_seconds()).unwrap_or(0))
}

/// Runs passes over jobs; holds what jobs share (the token cache, the concurrency bound).
#[derive(Debug)]
pub struct Engine {
    cache: Arc<TokenCache>,
    stores: Stores,
    refresh_before: Duration,
    /// How much earlier than `refresh_before` targets count as due (the daemon's lead; zero
    /// for `run` and `plan`).
    lead: Duration,
    permits: Semaphore,
    observer: Option<Arc<dyn TokenObserver>>,
}

impl Engine {
    /// An engine over `cache` (shared with the Key Vault backends' credentials) and `stores`
    /// (for credentials read `from` a backend), keeping tokens valid for at least
    /// `refresh_before`, with at most `concurrency` store calls and token requests at once.
    pub fn new(
        cache: Arc<TokenCache>,
        stores: Stores,
        refresh_before: Duration,
        concurrency: usize,
    ) -> Self {
        Engine {
            cache,
            stores,
            refresh_before,
            lead: Duration::ZERO,
            permits: Semaphore::new(concurrency.max(1)),
            observer: None,
        }
    }

    /// Renews targets `lead` earlier than `refresh_before`: a target counts as due when its
    /// token expires within `refresh_before + lead`. The daemon sets it so that it can refresh
    /// ahead of the refresh point; its token cache must use the same sum.
    pub fn refresh_ahead(&mut self, lead: Duration) {
        self.lead = lead;
    }

    /// The configured stores by backend name and the token cache, for the credential
    /// lifecycle (`crate::credentials`), which reads and writes the jobs' client secrets.
    pub fn stores_and_cache(&self) -> (&Stores, &Arc<TokenCache>) {
        (&self.stores, &self.cache)
    }

    /// What counts as due: tokens that expire within this.
    fn renew_within(&self) -> Duration {
        self.refresh_before + self.lead
    }

    /// Reports every job's token step to `observer` from now on.
    pub fn observe_tokens(&mut self, observer: Arc<dyn TokenObserver>) {
        self.observer = Some(observer);
    }

    /// One pass over `jobs`, concurrently; a report per target, in job and target order.
    pub async fn run(&self, jobs: &[Job], options: PassOptions) -> Vec<TargetReport> {
        join_all(jobs.iter().map(|job| self.run_job(job, options)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// What `run` would do, reading metadata only; an entry per target.
    pub async fn plan(&self, jobs: &[Job], force: bool) -> Vec<PlanEntry> {
        let now = OffsetDateTime::now_utc();
        let per_job = join_all(jobs.iter().map(|job| async move {
            let states = self.inspect(job, Instant::now() + job.pass_timeout()).await;
            job.targets
                .iter()
                .zip(states)
                .map(|(target, state)| {
                    let (action, expires_on, reason, usage_error) = match state {
                        Ok((state, _)) => (
                            Some(state.action(force)),
                            state.expires_on(),
                            state.reason(force, self.refresh_before, self.lead, now),
                            false,
                        ),
                        Err(err) => (None, None, format!("{err:#}"), source::is_missing_env(&err)),
                    };
                    PlanEntry {
                        job: job.name.clone(),
                        backend: target.backend().to_owned(),
                        name: target.name.clone(),
                        action,
                        expires_on,
                        reason,
                        usage_error,
                    }
                })
                .collect::<Vec<_>>()
        }))
        .await;
        per_job.into_iter().flatten().collect()
    }

    /// Reads every target's metadata, concurrently, and classifies it; a read unfinished at
    /// `deadline` is an error. Beside each state, what a write must check against: what the
    /// read saw and the target's `adopt`.
    async fn inspect(
        &self,
        job: &Job,
        deadline: Instant,
    ) -> Vec<anyhow::Result<(TargetState, WritePrecondition)>> {
        join_all(job.targets.iter().map(|target| async move {
            let metadata = timeout_at(deadline, async {
                let _permit = self.permit().await;
                target.store.metadata(&target.name).await
            })
            .await
            .map_err(|_| job.past_deadline("cannot read the target's metadata"))?
            .context("cannot read the target's metadata")?;
            let state = TargetState::classify(
                metadata.as_ref(),
                target.adopt,
                self.renew_within(),
                OffsetDateTime::now_utc(),
            );
            Ok((state, WritePrecondition::from_read(metadata, target.adopt)))
        }))
        .await
    }

    async fn run_job(&self, job: &Job, options: PassOptions) -> Vec<TargetReport> {
        // One deadline for the whole pass: metadata reads, credentials, token, writes.
        let deadline = Instant::now() + job.pass_timeout();
        let states = self.inspect(job, deadline).await;
        let now = OffsetDateTime::now_utc();
        let report = |target, outcome, expires_on, detail| {
            TargetReport::new(job, target, outcome, expires_on, detail)
        };

        // First the targets that need no token; remember the ones that need a write.
        let mut reports: Vec<Option<TargetReport>> = Vec::with_capacity(job.targets.len());
        let mut writes: Vec<(usize, TargetState, WritePrecondition)> = Vec::new();
        for (i, (target, state)) in job.targets.iter().zip(states).enumerate() {
            let (state, precondition) = match state {
                Ok(inspected) => inspected,
                Err(err) => {
                    warn!(job = %job.name, backend = %target.backend(), secret = %target.name,
                        error = format!("{err:#}"), "target failed");
                    reports.push(Some(
                        report(target, Outcome::Failed, None, format!("{err:#}")).caused_by(&err),
                    ));
                    continue;
                }
            };
            let reason = state.reason(options.force, self.refresh_before, self.lead, now);
            let line = match state.action(options.force) {
                Action::Keep => Some(report(target, Outcome::Fresh, state.expires_on(), reason)),
                Action::Refuse => {
                    warn!(job = %job.name, backend = %target.backend(), secret = %target.name,
                        "target not managed by secret-sync; not overwritten");
                    Some(report(target, Outcome::Failed, state.expires_on(), reason))
                }
                action if options.dry_run => Some(report(
                    target,
                    Outcome::Skipped,
                    state.expires_on(),
                    format!("dry run: would {}: {reason}", action.as_str()),
                )),
                _ => {
                    writes.push((i, state, precondition));
                    None
                }
            };
            reports.push(line);
        }

        if writes.is_empty() {
            info!(job = %job.name, "nothing to write: no credential read, no token request");
        } else {
            for (i, line) in self
                .write_job(job, &writes, options.force, now, deadline)
                .await
            {
                reports[i] = Some(line);
            }
        }
        reports.into_iter().flatten().collect()
    }

    /// Gets the job's token and writes it to the targets in `writes` (index, state).
    async fn write_job(
        &self,
        job: &Job,
        writes: &[(usize, TargetState, WritePrecondition)],
        force: bool,
        now: OffsetDateTime,
        deadline: Instant,
    ) -> Vec<(usize, TargetReport)> {
        let line = |i: usize, outcome, expires_on, detail| {
            let report = TargetReport::new(job, &job.targets[i], outcome, expires_on, detail);
            (i, report)
        };
        info!(job = %job.name, targets = writes.len(), "reading credentials and getting a token");
        let started = OffsetDateTime::now_utc();
        // Set once the credentials are read: from then on a request may be on its way.
        let credentials_read = AtomicBool::new(false);
        let token = timeout_at(deadline, async {
            let _permit = self.permit().await;
            let app = source::app_credential(&job.identity, &self.stores)
                .await
                .context("cannot read the job's credentials")?;
            credentials_read.store(true, Ordering::Relaxed);
            // Wait for a refresh another job has in flight: the targets need the new token.
            self.cache
                .get_renewed(&app, &job.scope)
                .await
                .with_context(|| format!("cannot get a token for {}", job.scope))
        })
        .await
        .unwrap_or_else(|_| {
            Err(job.past_deadline(&format!(
                "no token: reading the credentials and getting a token for {} did not finish",
                job.scope
            )))
        });
        if let Some(observer) = &self.observer {
            let step = match &token {
                Ok(token) if token.obtained_at() >= started => Some(TokenStep::Requested {
                    obtained_at: token.obtained_at(),
                }),
                Ok(_) => Some(TokenStep::Cached),
                Err(err) if reached_token_endpoint(err, &credentials_read) => {
                    Some(TokenStep::Failed)
                }
                // Failed before any request (a missing variable, an unreadable file).
                Err(_) => None,
            };
            if let Some(step) = step {
                observer.token_step(&job.name, step);
            }
        }
        let token = match token {
            Ok(token) => token,
            Err(err) => {
                warn!(job = %job.name, error = format!("{err:#}"), "job failed");
                return writes
                    .iter()
                    .map(|(i, state, _)| {
                        let (i, report) =
                            line(*i, Outcome::Failed, state.expires_on(), format!("{err:#}"));
                        (i, report.caused_by(&err))
                    })
                    .collect();
            }
        };
        let shortfall = self.shortfall(&token, token.obtained_at() >= started);
        if let Some(Shortfall::Expired(problem) | Shortfall::Short(problem)) = &shortfall {
            warn!(job = %job.name, expires_on = %token.expires_at(), problem = %problem,
                "the token does not last beyond refresh_before; its targets fail");
        } else if token.obtained_at() >= started
            && token.expires_on() - OffsetDateTime::now_utc() <= self.renew_within()
        {
            // Valid beyond refresh_before but within the daemon's lead: every pass renews it.
            warn!(job = %job.name, expires_on = %token.expires_at(),
                refresh_before = %humantime::format_duration(self.refresh_before),
                lead = %humantime::format_duration(self.lead),
                "the new token is valid for less than refresh_before plus the daemon's lead, so \
                 every pass will rewrite it: lower refresh_before (Entra ID tokens: 60-90 minutes)");
        }
        if let Some(Shortfall::Expired(problem)) = &shortfall {
            // Never write a token that no consumer can use over one that may still work.
            return writes
                .iter()
                .map(|(i, state, _)| {
                    line(
                        *i,
                        Outcome::Failed,
                        state.expires_on(),
                        format!("not written: {problem}"),
                    )
                })
                .collect();
        }

        join_all(writes.iter().map(|(i, state, precondition)| {
            let target = &job.targets[*i];
            let token = &token;
            let shortfall = &shortfall;
            async move {
                let reason = state.reason(force, self.refresh_before, self.lead, now);
                let written = timeout_at(deadline, async {
                    let payload = TokenPayload::new(
                        token.secret().clone(),
                        token.token_type(),
                        token.expires_on(),
                        MANAGED_BY,
                        target.format,
                    )
                    .context("refusing to write the token Entra ID returned")?;
                    let _permit = self.permit().await;
                    let outcome = target
                        .store
                        // The backend applies the adopt rule again at the write: a secret
                        // someone else wrote since the read is a Conflict saying so.
                        .write(&target.name, &payload, precondition)
                        .await
                        .context("cannot write the token")?;
                    anyhow::Ok((outcome, payload.expires_on()))
                })
                .await
                .unwrap_or_else(|_| Err(job.past_deadline("the write did not finish")));
                match written {
                    Ok((outcome, expires_on)) => {
                        info!(job = %job.name, backend = %target.backend(), secret = %target.name,
                            outcome = %outcome, "token written");
                        match shortfall {
                            // Written (it is newer than what the target held), but the target
                            // still does not hold a token valid for refresh_before.
                            Some(Shortfall::Short(problem)) => line(
                                *i,
                                Outcome::Failed,
                                Some(expires_on),
                                format!("written ({outcome}), but {problem}"),
                            ),
                            _ => line(*i, outcome.into(), Some(expires_on), reason),
                        }
                    }
                    Err(err) => {
                        warn!(job = %job.name, backend = %target.backend(), secret = %target.name,
                            error = format!("{err:#}"), "target failed");
                        let (i, report) =
                            line(*i, Outcome::Failed, state.expires_on(), format!("{err:#}"));
                        (i, report.caused_by(&err))
                    }
                }
            }
        }))
        .await
    }

    /// Whether `token` fails the promise of `refresh_before` (what targets hold stays valid
    /// longer than that), and what to change. `new`: obtained by this pass (else a cached
    /// token, returned because a refresh failed while it was still valid).
    fn shortfall(&self, token: &entra_auth::AccessToken, new: bool) -> Option<Shortfall> {
        let left = token.expires_on() - OffsetDateTime::now_utc();
        let refresh_before = humantime::format_duration(self.refresh_before);
        if left <= time::Duration::ZERO {
            return Some(Shortfall::Expired(format!(
                "the token {} had already expired when it arrived (expires_on {}): check this \
                 host's clock, and the token endpoint's",
                if new {
                    "Entra ID returned"
                } else {
                    "in the cache"
                },
                token.expires_on()
            )));
        }
        if left > self.refresh_before {
            return None;
        }
        let left = whole_seconds(left);
        Some(Shortfall::Short(if new {
            format!(
                "the token Entra ID issued is valid for only {}, not longer than refresh_before \
                 ({refresh_before}): consumers may get it near its expiry and every run rewrites \
                 it; lower refresh_before below the token lifetime, or ask for longer tokens \
                 (Entra ID: 60-90 minutes by default; a token lifetime policy)",
                humantime::format_duration(left)
            )
        } else {
            format!(
                "a new token could not be obtained (see the log) and the cached one written is \
                 valid for only {}, not longer than refresh_before ({refresh_before})",
                humantime::format_duration(left)
            )
        }))
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits
            .acquire()
            .await
            .expect("the engine never closes its semaphore")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CredentialSpec, SecretSource, Value};
    use entra_auth::{Authority, ClientOptions, RefreshPolicy, TokenClient};
    use secret_backends::{FileOptions, FileStore};
    use testkit::{AppRegistration, EntraEmulator};

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
    const SECRET: &str = "Zq8~engine.unit.secret";

    struct Fixture {
        entra: EntraEmulator,
        dir: tempfile::TempDir,
        engine: Engine,
        job: Job,
    }

    async fn fixture(concurrency: usize) -> Fixture {
        let entra = EntraEmulator::start().await.unwrap();
        entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let local: Arc<dyn SecretStore> = Arc::new(FileStore::new(
            "local",
            FileOptions::new(dir.path().join("out")),
        ));
        let down: Arc<dyn SecretStore> = Arc::new(build::Unusable {
            backend: "down".to_owned(),
            reason: "VAULT_TOKEN is not set".to_owned(),
            missing_env: None,
        });
        let target = |store: &Arc<dyn SecretStore>, name: &str, format| Target {
            store: Arc::clone(store),
            name: name.to_owned(),
            format,
            adopt: false,
        };
        let job = Job {
            name: "graph".to_owned(),
            identity: Arc::new(EntraIdentity {
                authority: Authority::parse(&entra.base_url()).unwrap(),
                tenant_id: Some(Value::Literal(TENANT.parse().unwrap())),
                client_id: Some(Value::Literal(CLIENT.parse().unwrap())),
                credential: CredentialSpec::ClientSecret(SecretSource::File(secret_file)),
            }),
            scope: Arc::new("https://graph.microsoft.com/.default".parse().unwrap()),
            targets: vec![
                target(&local, "a.json", Format::Json),
                target(&down, "tokens/graph", Format::Raw),
                target(&local, "b", Format::Raw),
            ],
            pass_timeout: Arc::new(PassTimeout {
                limit: Duration::from_secs(60),
                key: "settings.pass_timeout".to_owned(),
            }),
        };
        let client = TokenClient::new(ClientOptions::default()).unwrap();
        let cache = Arc::new(TokenCache::new(client, RefreshPolicy::default()));
        let engine = Engine::new(cache, Stores::new(), Duration::from_secs(900), concurrency);
        Fixture {
            entra,
            dir,
            engine,
            job,
        }
    }

    fn outcomes(reports: &[TargetReport]) -> Vec<(&str, Outcome)> {
        reports
            .iter()
            .map(|r| (r.name.as_str(), r.outcome))
            .collect()
    }

    #[tokio::test]
    async fn a_failing_target_never_stops_the_others_and_fresh_jobs_ask_nothing() {
        let f = fixture(1).await;
        let jobs = [f.job.clone()];
        let reports = f.engine.run(&jobs, PassOptions::default()).await;
        assert_eq!(
            outcomes(&reports),
            [
                ("a.json", Outcome::Created),
                ("tokens/graph", Outcome::Failed),
                ("b", Outcome::Created)
            ],
            "{reports:#?}"
        );
        assert!(
            reports[1].detail.contains("VAULT_TOKEN is not set"),
            "{}",
            reports[1].detail
        );
        assert_eq!(f.entra.token_request_count(), 1);
        let token = std::fs::read_to_string(f.dir.path().join("out/b")).unwrap();
        for r in &reports {
            assert!(!r.detail.contains(&token) && !r.detail.contains(SECRET));
        }

        // Fresh now: no token request (the unusable target keeps failing on its own).
        let again = f.engine.run(&jobs, PassOptions::default()).await;
        assert_eq!(
            outcomes(&again),
            [
                ("a.json", Outcome::Fresh),
                ("tokens/graph", Outcome::Failed),
                ("b", Outcome::Fresh)
            ]
        );
        assert_eq!(f.entra.token_request_count(), 1);

        // --dry-run with --force: would update, but writes and asks nothing.
        let dry = f
            .engine
            .run(
                &jobs,
                PassOptions {
                    force: true,
                    dry_run: true,
                },
            )
            .await;
        assert_eq!(dry[0].outcome, Outcome::Skipped);
        assert!(
            dry[0].detail.starts_with("dry run: would update: --force"),
            "{}",
            dry[0].detail
        );
        assert_eq!(f.entra.token_request_count(), 1);
        assert_eq!(
            std::fs::read_to_string(f.dir.path().join("out/b")).unwrap(),
            token
        );
    }

    #[tokio::test]
    async fn a_failed_token_request_fails_every_target_that_needed_it() {
        let f = fixture(4).await;
        f.entra
            .register_app(AppRegistration::new(TENANT, CLIENT).with_secret("another"));
        let reports = f
            .engine
            .run(std::slice::from_ref(&f.job), PassOptions::default())
            .await;
        assert!(reports.iter().all(|r| r.outcome == Outcome::Failed));
        assert!(
            reports[0]
                .detail
                .contains("cannot get a token for https://graph.microsoft.com/.default"),
            "{}",
            reports[0].detail
        );
        assert!(!f.dir.path().join("out/a.json").exists());
    }

    #[tokio::test]
    async fn a_token_endpoint_that_never_answers_fails_the_pass_at_its_deadline() {
        let mut f = fixture(4).await;
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Arc::make_mut(&mut f.job.identity).authority =
            Authority::parse(&format!("http://{addr}")).unwrap();
        f.job.pass_timeout = Arc::new(PassTimeout {
            limit: Duration::from_secs(1),
            key: "jobs.graph.pass_timeout".to_owned(),
        });
        let started = std::time::Instant::now();
        let reports = f
            .engine
            .run(std::slice::from_ref(&f.job), PassOptions::default())
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            outcomes(&reports),
            [
                ("a.json", Outcome::Failed),
                ("tokens/graph", Outcome::Failed),
                ("b", Outcome::Failed)
            ]
        );
        // The unusable backend failed on its own; the others at the deadline.
        assert!(reports[1].detail.contains("VAULT_TOKEN is not set"));
        for r in [&reports[0], &reports[2]] {
            assert!(
                r.detail.contains("did not finish within its deadline")
                    && r.detail.contains("jobs.graph.pass_timeout = \"1s\""),
                "{}",
                r.detail
            );
        }
    }
}
