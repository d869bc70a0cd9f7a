//! After-write actions (issue 14): tell a token's consumer that a new one is in the store.
//!
//! A job's `actions` run once per pass in which at least one of its targets was created or
//! updated, after every target was tried; a target's `actions` run after that pass too, for
//! that target. Fresh, unchanged, skipped (`--dry-run`) and failed targets run nothing. The
//! kinds are [`exec`] (a command, no shell), [`signal`] (a process named by a pid file) and
//! [`webhook`] (a JSON POST). Config and validation: `config::load::actions`.
//!
//! Invariants:
//! - The token never reaches an action: not in an argument, the environment, stdin (which is
//!   `/dev/null`) or a webhook body. The consumer reads it from the store like any consumer.
//!   An `exec` also loses every environment variable the config names as a secret source
//!   ([`secret_env_names`]).
//! - A failed action fails the pass (exit 1 for `run`; the daemon's backoff), with a reason
//!   saying the write itself succeeded; the token is not rewritten because of it. The daemon
//!   keeps a failed action [`Due`] and reruns it at the job's next pass (which finds the
//!   targets fresh, so no token is requested) until it succeeds or a newer write replaces it.
//! - The actions of one job run one after another, never concurrently. Each one's time is
//!   bounded by its own `timeout`, the pass's deadline (the job's `pass_timeout` from the
//!   start of the pass) and [`ActionSpec::MAX_TIMEOUT`] (the daemon's SIGTERM grace). Once
//!   the daemon stops ([`Actions::stopping`]), they also end [`STOP_MARGIN`] before its grace
//!   ends: one still running then is cut off (dropped: a command's process group is killed)
//!   and reported as failed, one not started yet is not run.
//! - Logs and reports carry job, target and action names (the config key), exit statuses and
//!   HTTP statuses; a command's output goes to the log at debug level only.

pub mod exec;
pub mod pending;
pub mod signal;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::clients::Clients;
use crate::config::{
    ActionKind, ActionSpec, BackendSpec, CredentialSpec, EntraIdentity, GraphIdentity, JobSpec,
    SecretSource, SyncConfig, Value as ConfigValue, VaultAuthSpec,
};
use crate::engine::source::Stores;
use crate::engine::{Job, Outcome, PlanEntry, TargetReport};
use crate::output::rfc3339;

/// The actions of one job: its own, then each target's (by backend and name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobActions {
    job: Vec<ActionSpec>,
    targets: Vec<(String, String, Vec<ActionSpec>)>,
}

impl JobActions {
    /// `None` when neither the job nor any of its targets has an action.
    fn of(spec: &JobSpec) -> Option<JobActions> {
        let job: Vec<ActionSpec> = spec.actions.as_slice().to_vec();
        let targets: Vec<_> = spec
            .targets
            .iter()
            .filter(|t| !t.actions.is_empty())
            .map(|t| {
                let actions = t.actions.as_slice().to_vec();
                (t.backend.clone(), t.name.clone(), actions)
            })
            .collect();
        (!job.is_empty() || !targets.is_empty()).then_some(JobActions { job, targets })
    }

    /// The actions a pass with these reports makes due: the job's when any target was
    /// `counts` (written, or would be), each target's when that target was.
    fn due(&self, job: &str, reports: &[Written]) -> Vec<Due> {
        let mut due = Vec::new();
        if !reports.is_empty() && !self.job.is_empty() {
            let context = Context::of(job, reports);
            due.extend(self.job.iter().map(|action| Due {
                action: action.clone(),
                context: context.clone(),
            }));
        }
        for (backend, name, actions) in &self.targets {
            let Some(written) = reports
                .iter()
                .find(|w| &w.backend == backend && &w.name == name)
            else {
                continue;
            };
            let context = Context::of(job, std::slice::from_ref(written));
            due.extend(actions.iter().map(|action| Due {
                action: action.clone(),
                context: context.clone(),
            }));
        }
        due
    }
}

/// A target a pass wrote (or would write), as an action is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub backend: String,
    pub name: String,
    /// `created`, `updated` (or what `plan`/`--dry-run` predict).
    pub outcome: &'static str,
    pub expires_on: Option<OffsetDateTime>,
}

/// What an action is told: the job, the targets it runs for and the new token's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub job: String,
    pub targets: Vec<Written>,
    /// The earliest expiry of those targets' new token.
    pub expires_on: Option<OffsetDateTime>,
}

impl Context {
    fn of(job: &str, targets: &[Written]) -> Context {
        Context {
            job: job.to_owned(),
            targets: targets.to_vec(),
            expires_on: targets.iter().filter_map(|t| t.expires_on).min(),
        }
    }

    /// `BACKEND:NAME` of each target.
    pub fn target_labels(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| format!("{}:{}", t.backend, t.name))
            .collect()
    }

    /// The targets' backends, each once, in order.
    pub fn backends(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.targets
            .iter()
            .filter(|t| seen.insert(t.backend.clone()))
            .map(|t| t.backend.clone())
            .collect()
    }

    /// What was written, for reasons: `local:a (updated), local:b (created)`.
    fn writes(&self) -> String {
        self.targets
            .iter()
            .map(|t| format!("{}:{} ({})", t.backend, t.name, t.outcome))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An action to run, with what it is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub action: ActionSpec,
    pub context: Context,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    Ok,
    Failed,
    /// `plan` and `run --dry-run`: it would run.
    WouldRun,
}

impl ActionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Ok => "ok",
            ActionOutcome::Failed => "failed",
            ActionOutcome::WouldRun => "would run",
        }
    }
}

/// One line of the summary's actions: which action, for which job and targets, how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionReport {
    pub job: String,
    /// The config key, e.g. `jobs.graph.actions[0]`.
    pub key: String,
    /// `exec`, `signal` or `webhook`.
    pub kind: &'static str,
    /// `exec /usr/bin/systemctl`, `signal HUP to /run/nginx.pid`, `webhook https://host/path`.
    pub what: String,
    pub targets: Vec<String>,
    pub outcome: ActionOutcome,
    pub detail: String,
}

impl ActionReport {
    fn new(due: &Due, outcome: ActionOutcome, detail: String) -> Self {
        ActionReport {
            job: due.context.job.clone(),
            key: due.action.key.clone(),
            kind: due.action.kind_name(),
            what: due.action.describe(),
            targets: due.context.target_labels(),
            outcome,
            detail,
        }
    }
}

/// Runs the actions of the jobs that have any. Built once per config; cheap when no job has
/// an action (an empty map; the HTTP client is made at the first webhook).
pub struct Actions {
    jobs: BTreeMap<String, Arc<JobActions>>,
    /// Environment variables an `exec` never inherits.
    secret_env: BTreeSet<String>,
    stores: Stores,
    /// The webhook clients, one per `ca_file` (`None`: the platform's roots only), each made
    /// at the first webhook that needs it.
    http: Clients<Option<PathBuf>, reqwest::Client>,
    /// When the daemon's stop cuts its actions off: `None` until it stops.
    stop: watch::Sender<Option<Instant>>,
}

/// How long before the end of the daemon's stop grace its actions are cut off, so that their
/// passes report them before the grace ends.
pub const STOP_MARGIN: Duration = Duration::from_millis(500);

/// Why an action the daemon's stop reached before it started did not run.
const NOT_RUN_STOPPING: &str =
    "not run: the daemon was stopping (SIGTERM or SIGINT) and its grace had ended";

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actions")
            .field("jobs", &self.jobs.keys().collect::<Vec<_>>())
            .field("secret_env", &self.secret_env)
            .finish_non_exhaustive()
    }
}

impl Actions {
    /// The actions of `config`'s jobs; `stores` (the engine's) resolve a webhook's
    /// `signing_key = { from = ... }`.
    pub fn new(config: &SyncConfig, stores: &Stores) -> Actions {
        let jobs: BTreeMap<_, _> = config
            .jobs
            .iter()
            .filter_map(|job| Some((job.name.clone(), Arc::new(JobActions::of(job)?))))
            .collect();
        // Without actions (most configs, and the 100,000-job ones) nothing more is kept.
        let (secret_env, stores) = if jobs.is_empty() {
            (BTreeSet::new(), Stores::new())
        } else {
            (secret_env_names(config), stores.clone())
        };
        Actions {
            jobs,
            secret_env,
            stores,
            http: Clients::default(),
            stop: watch::Sender::new(None),
        }
    }

    /// The daemon stops (SIGTERM/SIGINT) and lets its passes in flight run until `grace_end`:
    /// their actions, running or still to run, end [`STOP_MARGIN`] before that.
    pub fn stopping(&self, grace_end: Instant) {
        let by = grace_end.checked_sub(STOP_MARGIN).unwrap_or(grace_end);
        self.stop.send_replace(Some(by));
    }

    /// Whether the daemon's stop has cut the actions off already.
    fn cut_off(&self) -> bool {
        self.stop.borrow().is_some_and(|by| Instant::now() >= by)
    }

    /// Waits until the daemon's stop cuts the actions off (for ever if it does not stop).
    async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        let by = match stop.wait_for(Option::is_some).await {
            Ok(by) => *by,
            Err(_) => None,
        };
        match by {
            Some(by) => tokio::time::sleep_until(by).await,
            None => std::future::pending().await,
        }
    }

    /// Whether no job has an action.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The actions a finished pass of `job` makes due (its created and updated targets).
    pub fn due(&self, job: &str, reports: &[TargetReport]) -> Vec<Due> {
        let Some(actions) = self.jobs.get(job) else {
            return Vec::new();
        };
        let written: Vec<Written> = reports
            .iter()
            .filter(|r| r.job == job && matches!(r.outcome, Outcome::Created | Outcome::Updated))
            .map(|r| Written {
                backend: r.backend.clone(),
                name: r.name.clone(),
                outcome: r.outcome.as_str(),
                expires_on: r.expires_on,
            })
            .collect();
        actions.due(job, &written)
    }

    /// `run --dry-run`: the actions the skipped writes would make due, as `would run` lines.
    pub fn dry_run(&self, jobs: &[Job], reports: &[TargetReport]) -> Vec<ActionReport> {
        self.would_run(jobs, |job| {
            reports
                .iter()
                .filter(|r| r.job == job && r.outcome == Outcome::Skipped)
                .map(|r| Written {
                    backend: r.backend.clone(),
                    name: r.name.clone(),
                    outcome: "skipped",
                    expires_on: None,
                })
                .collect()
        })
    }

    /// `plan`: the actions the planned writes would make due, as `would run` lines.
    pub fn plan(&self, jobs: &[Job], entries: &[PlanEntry]) -> Vec<ActionReport> {
        self.would_run(jobs, |job| {
            entries
                .iter()
                .filter(|e| e.job == job && e.action.is_some_and(|a| a.writes()))
                .map(|e| Written {
                    backend: e.backend.clone(),
                    name: e.name.clone(),
                    outcome: e.action.map_or("", |a| a.as_str()),
                    expires_on: None,
                })
                .collect()
        })
    }

    fn would_run(&self, jobs: &[Job], written: impl Fn(&str) -> Vec<Written>) -> Vec<ActionReport> {
        let mut lines = Vec::new();
        for job in jobs {
            let Some(actions) = self.jobs.get(&job.name) else {
                continue;
            };
            for due in actions.due(&job.name, &written(&job.name)) {
                let detail = format!("would run after writing {}", due.context.writes());
                lines.push(ActionReport::new(&due, ActionOutcome::WouldRun, detail));
            }
        }
        lines
    }

    /// `run`: every job's due actions, jobs concurrently, each job's one after another; a
    /// job's actions end by `started` + its `pass_timeout`.
    pub async fn run_pass(
        &self,
        jobs: &[Job],
        reports: &[TargetReport],
        started: Instant,
    ) -> Vec<ActionReport> {
        let per_job = join_all(jobs.iter().map(|job| async move {
            let due = self.due(&job.name, reports);
            let deadline = Deadline::of(job, started);
            self.run_due(due, &deadline).await.0
        }))
        .await;
        per_job.into_iter().flatten().collect()
    }

    /// Runs `due` one after another; returns a report for each and the ones that failed
    /// (still due).
    pub async fn run_due(
        &self,
        due: Vec<Due>,
        deadline: &Deadline,
    ) -> (Vec<ActionReport>, Vec<Due>) {
        let mut reports = Vec::with_capacity(due.len());
        let mut failed = Vec::new();
        for due in due {
            let result = match deadline.left() {
                None => Err(format!(
                    "not run: the pass's deadline ({} = \"{}\") had passed",
                    deadline.key,
                    humantime::format_duration(deadline.limit)
                )),
                Some(_) if self.cut_off() => Err(NOT_RUN_STOPPING.to_owned()),
                Some(left) => tokio::select! {
                    biased;
                    () = self.stopped() => Err(format!(
                        "cut off by the daemon's stop: the grace after SIGTERM or SIGINT ended \
                         before it finished{}",
                        match due.action.kind {
                            ActionKind::Exec { .. } => " (killed with its process group)",
                            _ => "",
                        }
                    )),
                    result = self.run_one(&due, deadline, left) => result,
                },
            };
            match result {
                Ok(detail) => {
                    info!(job = %due.context.job, action = %due.action.key,
                        kind = due.action.kind_name(), outcome = "ok", detail = %detail,
                        "after-write action");
                    reports.push(ActionReport::new(&due, ActionOutcome::Ok, detail));
                }
                Err(problem) => {
                    // A daemon that is stopping runs it again at its next start.
                    let retry = if self.stop.borrow().is_some() {
                        "the daemon is stopping: the action stays pending (actions-pending.json \
                         in settings.credentials.state_dir) and runs at its next start"
                    } else {
                        "the daemon retries the action with the job's backoff"
                    };
                    let detail = format!(
                        "{problem}; the write itself succeeded ({}), and the token is not \
                         rewritten for a failed action: {retry}; after `run`, fix it and run \
                         the consumer's reload by hand, or `secret-sync run --force --job {}` \
                         (a new token, then the actions)",
                        due.context.writes(),
                        due.context.job
                    );
                    warn!(job = %due.context.job, action = %due.action.key,
                        kind = due.action.kind_name(), outcome = "failed", error = %problem,
                        "after-write action failed; the write itself succeeded");
                    reports.push(ActionReport::new(&due, ActionOutcome::Failed, detail));
                    failed.push(due);
                }
            }
        }
        (reports, failed)
    }

    /// One action within `left`; `Ok` with what happened, `Err` with what went wrong.
    async fn run_one(
        &self,
        due: &Due,
        deadline: &Deadline,
        left: Duration,
    ) -> Result<String, String> {
        match &due.action.kind {
            ActionKind::Exec { argv, timeout } => {
                let own = (*timeout).min(ActionSpec::MAX_TIMEOUT);
                let (limit, why) = if left < own {
                    let why = format!(
                        "what was left of the pass's deadline, {} = \"{}\"",
                        deadline.key,
                        humantime::format_duration(deadline.limit)
                    );
                    (left, why)
                } else {
                    (own, format!("{}.timeout", due.action.key))
                };
                let run = exec::Limit { time: limit, why };
                exec::run(argv, run, &self.env_for(due), &due.action.key).await
            }
            ActionKind::Signal {
                signal,
                pid_file,
                process_name,
            } => signal::send(*signal, pid_file, process_name.as_deref()).await,
            ActionKind::Webhook {
                url,
                signing_key,
                timeout,
                attempts,
                ca_file,
            } => {
                let key = match signing_key {
                    Some(source) => Some(
                        crate::engine::source::read_secret(source, &self.stores, "signing_key")
                            .await
                            .map_err(|err| format!("{err:#}"))?,
                    ),
                    None => None,
                };
                let client = self
                    .webhook_client(ca_file.as_deref(), &due.action.key)
                    .await?;
                let request = webhook::Request {
                    url,
                    body: webhook::body(&due.action.key, &due.context),
                    key: key.as_ref(),
                    timeout: *timeout,
                    attempts: *attempts,
                    within: left.min(ActionSpec::MAX_TIMEOUT),
                };
                webhook::send(&client, request).await
            }
        }
    }

    /// The webhook client that trusts `ca_file` (of the action `key`) beside the platform's
    /// roots, made once per file (reqwest clients are shared handles).
    async fn webhook_client(
        &self,
        ca_file: Option<&Path>,
        key: &str,
    ) -> Result<reqwest::Client, String> {
        let file = ca_file.map(Path::to_owned);
        if let Some(client) = self.http.get(&file) {
            return Ok(client);
        }
        let extra =
            match ca_file {
                Some(path) => vec![tokio::fs::read(path).await.map_err(|err| {
                    format!("{key}.ca_file: cannot read {}: {err}", path.display())
                })?],
                None => Vec::new(),
            };
        let client = webhook::client(&extra).map_err(|err| match ca_file {
            Some(path) => format!("{key}.ca_file: {}: {err:#}", path.display()),
            None => format!("{err:#}"),
        })?;
        Ok(self.http.keep(file, client))
    }

    /// The environment of an `exec`: the process's, minus the config's secret sources and any
    /// inherited `SECRET_SYNC_*`, plus the `SECRET_SYNC_*` variables of `due`.
    fn env_for(&self, due: &Due) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let mut env: Vec<_> = std::env::vars_os()
            .filter(|(name, _)| {
                let name = name.to_string_lossy();
                !self.secret_env.contains(name.as_ref()) && !name.starts_with("SECRET_SYNC_")
            })
            .collect();
        let context = &due.context;
        let ours = [
            ("SECRET_SYNC_JOB", context.job.clone()),
            ("SECRET_SYNC_ACTION", due.action.key.clone()),
            ("SECRET_SYNC_TARGETS", context.target_labels().join(" ")),
            ("SECRET_SYNC_BACKENDS", context.backends().join(" ")),
            (
                "SECRET_SYNC_EXPIRES_ON",
                context.expires_on.map(rfc3339).unwrap_or_default(),
            ),
        ];
        env.extend(ours.map(|(k, v)| (k.into(), v.into())));
        env
    }
}

/// What the actions after one daemon pass did, and what is still due.
#[derive(Debug, Default)]
pub struct AfterPass {
    pub reports: Vec<ActionReport>,
    /// The actions that failed: run again at the job's next pass.
    pub pending: Vec<Due>,
}

/// The daemon's failed actions, by job; a job without any has no entry.
pub type Pending = std::collections::HashMap<String, Vec<Due>>;

impl Actions {
    /// The daemon's actions after a pass of `job`: what its writes made due, and the actions
    /// still `pending` from earlier passes that a newer write of the same action did not
    /// replace. A pass that wrote nothing (its targets are fresh) so reruns exactly the
    /// pending ones, with no token request.
    pub async fn after_pass(
        &self,
        job: &Job,
        reports: &[TargetReport],
        pending: Vec<Due>,
        started: Instant,
    ) -> AfterPass {
        let due = supersede(self.due(&job.name, reports), pending);
        if due.is_empty() {
            return AfterPass::default();
        }
        let (reports, pending) = self.run_due(due, &Deadline::of(job, started)).await;
        AfterPass { reports, pending }
    }

    /// The action of `job` at the config key `key` (a job's or one of its targets'), if any.
    pub fn action(&self, job: &str, key: &str) -> Option<ActionSpec> {
        let actions = self.jobs.get(job)?;
        actions
            .job
            .iter()
            .chain(actions.targets.iter().flat_map(|(_, _, a)| a))
            .find(|a| a.key == key)
            .cloned()
    }

    /// The pending actions of `job` that this config still has exactly (a reload keeps those).
    pub fn still_configured(&self, job: &str, pending: Vec<Due>) -> Vec<Due> {
        let Some(actions) = self.jobs.get(job) else {
            return Vec::new();
        };
        pending
            .into_iter()
            .filter(|due| {
                actions.job.contains(&due.action)
                    || actions
                        .targets
                        .iter()
                        .any(|(_, _, a)| a.contains(&due.action))
            })
            .collect()
    }
}

/// `due` (made due by this pass's writes), then each of `pending` that no newer write of the
/// same action replaced.
fn supersede(mut due: Vec<Due>, pending: Vec<Due>) -> Vec<Due> {
    for old in pending {
        if due.iter().any(|d| d.action.key == old.action.key) {
            info!(job = %old.context.job, action = %old.action.key,
                "a failed after-write action is superseded by a newer write");
        } else {
            due.push(old);
        }
    }
    due
}

/// Records what [`Actions::after_pass`] did: counts each action in `metrics`, keeps the
/// failed ones in `pending`; returns the first failed action's report, which fails the pass.
pub fn settle(
    metrics: &crate::daemon::metrics::Metrics,
    pending: &mut Pending,
    job: &str,
    after: AfterPass,
) -> Option<ActionReport> {
    use crate::daemon::metrics::Status;
    for report in &after.reports {
        let status = match report.outcome {
            ActionOutcome::Failed => Status::Failure,
            _ => Status::Success,
        };
        metrics.record_action(job, report.kind, status);
    }
    if after.pending.is_empty() {
        pending.remove(job);
    } else {
        pending.insert(job.to_owned(), after.pending);
    }
    after
        .reports
        .into_iter()
        .find(|r| r.outcome == ActionOutcome::Failed)
}

/// Where a pass's actions must end: the job's `pass_timeout` from the start of the pass.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
    key: String,
}

impl Deadline {
    pub fn of(job: &Job, started: Instant) -> Deadline {
        Deadline {
            at: started + job.pass_timeout(),
            limit: job.pass_timeout(),
            key: job.pass_timeout.key.clone(),
        }
    }

    /// The time left, `None` once it has passed.
    fn left(&self) -> Option<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

/// Every environment variable the config names (`{ env = "VAR" }` and the `*_env` keys: client
/// secrets, certificates, federated tokens, Vault logins, webhook keys, Graph and Key Vault
/// identities, and the tenant and client ids read from the environment, including the
/// `AZURE_TENANT_ID`/`AZURE_CLIENT_ID` that `workload_identity` implies), and the ones the
/// credential kinds in use read secrets from
/// (`ACTIONS_ID_TOKEN_REQUEST_TOKEN` for `github_oidc`, `IDENTITY_HEADER` and `MSI_SECRET` for
/// a managed identity). An `exec` never inherits these.
pub fn secret_env_names(config: &SyncConfig) -> BTreeSet<String> {
    fn source(names: &mut BTreeSet<String>, s: &SecretSource) {
        if let SecretSource::Env(var) = s {
            names.insert(var.clone());
        }
    }
    fn identity(names: &mut BTreeSet<String>, id: &EntraIdentity) {
        // Not secrets, but named by `{ env }` too: the command does not get them either.
        for value in [
            id.tenant_id.as_ref().and_then(env_of),
            id.client_id.as_ref().and_then(env_of),
        ] {
            names.extend(value);
        }
        match &id.credential {
            CredentialSpec::ClientSecret(s) => source(names, s),
            CredentialSpec::Certificate {
                certificate, key, ..
            } => {
                source(names, certificate);
                if let Some(key) = key {
                    source(names, key);
                }
            }
            CredentialSpec::FederatedTokenEnv(var) => {
                names.insert(var.clone());
            }
            CredentialSpec::GithubOidc => {
                names.insert("ACTIONS_ID_TOKEN_REQUEST_TOKEN".to_owned());
            }
            CredentialSpec::ManagedIdentity => {
                names.insert("IDENTITY_HEADER".to_owned());
                names.insert("MSI_SECRET".to_owned());
            }
            CredentialSpec::FederatedTokenFile(_) | CredentialSpec::WorkloadIdentity => {}
        }
    }
    fn env_of<T>(value: &ConfigValue<T>) -> Option<String> {
        match value {
            ConfigValue::Env(var) => Some(var.clone()),
            ConfigValue::Literal(_) | ConfigValue::From(_) => None,
        }
    }
    let mut names = BTreeSet::new();
    for backend in config.backends.values() {
        match backend {
            BackendSpec::Vault(vault) => match &vault.auth {
                VaultAuthSpec::Token { token } => source(&mut names, token),
                VaultAuthSpec::AppRole { secret_id, .. } => source(&mut names, secret_id),
                VaultAuthSpec::Jwt { jwt, .. } => source(&mut names, jwt),
                VaultAuthSpec::Kubernetes { .. } => {}
            },
            BackendSpec::AzureKeyVault(kv) => identity(&mut names, &kv.auth),
            BackendSpec::File(_) | BackendSpec::Aws(_) => {}
        }
    }
    if let GraphIdentity::Other(id) = &config.settings.credentials.defaults.graph {
        identity(&mut names, id);
    }
    for job in &config.jobs {
        identity(&mut names, &job.identity);
        if let GraphIdentity::Other(id) = &job.lifecycle.watch.graph {
            identity(&mut names, id);
        }
        let actions = job
            .actions
            .as_slice()
            .iter()
            .chain(job.targets.iter().flat_map(|t| t.actions.as_slice()));
        for action in actions {
            if let ActionKind::Webhook {
                signing_key: Some(key),
                ..
            } = &action.kind
            {
                source(&mut names, key);
            }
        }
    }
    names
}

/// The backends a job's actions read a secret `from` (a webhook's `signing_key`), so that the
/// engine builds them.
pub fn backends_read_by(job: &JobSpec) -> Vec<String> {
    job.actions
        .as_slice()
        .iter()
        .chain(job.targets.iter().flat_map(|t| t.actions.as_slice()))
        .filter_map(|action| match &action.kind {
            ActionKind::Webhook {
                signing_key: Some(SecretSource::From(reference)),
                ..
            } => Some(reference.backend.clone()),
            _ => None,
        })
        .collect()
}

/// The actions part of the summary table, with a closing count line; empty without actions.
pub fn table(reports: &[ActionReport]) -> String {
    if reports.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 4]> = reports
        .iter()
        .map(|r| {
            [
                r.job.clone(),
                format!("{} ({})", r.what, r.key),
                r.outcome.as_str().to_owned(),
                r.detail.clone(),
            ]
        })
        .collect();
    let mut out = crate::output::columns(["JOB", "ACTION", "OUTCOME", "DETAIL"], &rows);
    let count = |o| reports.iter().filter(|r| r.outcome == o).count();
    let parts: Vec<String> = [
        ActionOutcome::Ok,
        ActionOutcome::Failed,
        ActionOutcome::WouldRun,
    ]
    .into_iter()
    .filter(|&o| count(o) > 0)
    .map(|o| format!("{} {}", count(o), o.as_str()))
    .collect();
    out.push_str(&format!(
        "{} action(s): {}\n",
        reports.len(),
        parts.join(", ")
    ));
    out
}

/// The `actions` array of the JSON summaries (docs/cli.md).
pub fn json(reports: &[ActionReport]) -> Value {
    Value::Array(
        reports
            .iter()
            .map(|r| {
                let mut entry = json!({
                    "job": r.job,
                    "action": r.key,
                    "kind": r.kind,
                    "description": r.what,
                    "targets": r.targets,
                    "outcome": r.outcome.as_str(),
                    "reason": r.detail,
                });
                if r.outcome == ActionOutcome::Failed {
                    entry["error"] = Value::String(r.detail.clone());
                }
                entry
            })
            .collect(),
    )
}

/// How many of `reports` failed.
pub fn failed(reports: &[ActionReport]) -> usize {
    reports
        .iter()
        .filter(|r| r.outcome == ActionOutcome::Failed)
        .count()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An exec action at the config key `key` (also for pending.rs's tests).
    pub(crate) fn spec(key: &str) -> ActionSpec {
        ActionSpec {
            key: key.to_owned(),
            kind: ActionKind::Exec {
                argv: vec!["/bin/true".to_owned()],
                timeout: Duration::from_secs(1),
            },
        }
    }

    fn written(name: &str, outcome: &'static str) -> Written {
        Written {
            backend: "local".to_owned(),
            name: name.to_owned(),
            outcome,
            expires_on: None,
        }
    }

    #[test]
    fn a_job_action_is_due_once_for_all_written_targets_a_target_action_for_its_own() {
        let actions = JobActions {
            job: vec![spec("jobs.g.actions[0]")],
            targets: vec![(
                "local".to_owned(),
                "b".to_owned(),
                vec![spec("jobs.g.targets[1].actions[0]")],
            )],
        };
        let due = actions.due("g", &[written("a", "created"), written("c", "updated")]);
        assert_eq!(due.len(), 1, "{due:#?}");
        assert_eq!(due[0].context.target_labels(), ["local:a", "local:c"]);
        let due = actions.due("g", &[written("b", "updated")]);
        assert_eq!(
            due.iter()
                .map(|d| d.action.key.as_str())
                .collect::<Vec<_>>(),
            ["jobs.g.actions[0]", "jobs.g.targets[1].actions[0]"]
        );
        assert_eq!(due[1].context.target_labels(), ["local:b"]);
        assert!(actions.due("g", &[]).is_empty());
    }

    #[test]
    fn every_variable_the_config_names_is_kept_from_a_command() {
        let text = r#"
[backends.vault]
kind = "vault"
address = "http://127.0.0.1:8200"
auth = { method = "approle", role_id = "r", secret_id_env = "VAULT_SECRET_ID" }

[backends.kv]
kind = "azure-key-vault"
vault_url = "https://contoso-tokens.vault.azure.net"
auth = { method = "client-secret", tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47", client_id = "00000000-0000-0000-0000-000000000002", client_secret = { env = "KV_SECRET" } }

[jobs.a]
tenant_id = { env = "A_TENANT" }
client_id = "00000000-0000-0000-0000-000000000001"
certificate = { env = "A_CERT" }
certificate_key = { file = "key.pem" }
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "vault", name = "a", actions = [{ webhook = "https://h.example/x", signing_key = { env = "HOOK_KEY" } }] }]

[jobs.b]
workload_identity = true
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "kv", name = "b" }]

[jobs.c]
github_oidc = true
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
client_id = "00000000-0000-0000-0000-000000000001"
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "kv", name = "c" }]
"#;
        let config =
            crate::config::load::parse(text, std::path::Path::new("/tmp/t.toml"), &|_| None)
                .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = secret_env_names(&config).into_iter().collect();
        assert_eq!(
            names,
            [
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID",
                "A_CERT",
                "A_TENANT",
                "HOOK_KEY",
                "KV_SECRET",
                "VAULT_SECRET_ID"
            ]
        );
    }

    #[test]
    fn a_newer_write_supersedes_a_pending_action_and_the_others_stay_pending() {
        let due = |key: &str, target: &str| Due {
            action: spec(key),
            context: Context::of("g", &[written(target, "updated")]),
        };
        let pending = vec![
            due("jobs.g.actions[0]", "old"),
            due("jobs.g.targets[1].actions[0]", "b"),
        ];
        // A pass that wrote nothing reruns exactly the pending ones.
        assert_eq!(supersede(Vec::new(), pending.clone()), pending);
        // A new write of the job action replaces its pending run (new context), keeps the other.
        let merged = supersede(vec![due("jobs.g.actions[0]", "new")], pending);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].context.target_labels(), ["local:new"]);
        assert_eq!(merged[1].action.key, "jobs.g.targets[1].actions[0]");
    }
}
