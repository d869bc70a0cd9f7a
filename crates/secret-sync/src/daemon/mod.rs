//! Daemon mode (`run --watch`, `daemon`): keeps every job's targets fresh for as long as the
//! process lives, and reports how that goes on `[settings] listen`.
//!
//! One loop owns everything that changes: the schedule ([`scheduler::Queue`]), each job's
//! failure count, the passes in flight (a `JoinSet`, at most `concurrency` of them) and the
//! signals. A pass is [`Engine::run`] over one job, so the skip rule, the adopt rule and the
//! concurrency bound are the engine's, exactly as for `run`. When a pass ends the loop
//! reschedules its job from the expiries the pass reports ([`scheduler::Timing`]).
//!
//! Invariants:
//! - One token cache for the daemon's life: passes share it, so jobs with the same credentials
//!   and scope share one token request, across passes too. A reload keeps it unless
//!   `ca_file` or `refresh_before` changed.
//! - Stores and clients are built once per config, never per pass.
//! - Every pass has a deadline: its job's `pass_timeout`, which the engine enforces, plus
//!   [`OVERRUN`], after which the daemon abandons it. So no wait for a pass in flight is
//!   longer than that: a reload's drain, the SIGTERM grace.
//! - A reload that fails (load, validation, `--job` names, set-up) changes nothing: the running
//!   config keeps running and the errors are logged. A reload that succeeds waits for the
//!   passes in flight (each at most until its deadline), then runs every job of the new config
//!   at once (fresh ones cost a metadata read each) and schedules them from there. SIGTERM or
//!   SIGINT during a reload stops the daemon as at any other time.
//! - SIGTERM/SIGINT: no new pass starts; passes in flight get until the latest of their
//!   deadlines, at most [`SHUTDOWN_GRACE_MAX`], to finish; exit 0. Their after-write actions
//!   run within that grace too: one still running when it ends is cut off (a command killed
//!   with its process group) and logged as failed, before the grace ends.
//! - Vault logins stay alive between passes: every [`keepalive_period`] each Vault backend
//!   with a target gets one metadata read, which renews its token or logs in again when due.
//! - Logs and metrics carry job, backend and target names and outcomes, never a value.

pub mod http;
pub mod metrics;
pub mod scheduler;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use entra_auth::TokenCache;
use secret_backends::SecretStore;
use time::OffsetDateTime;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use self::http::Listener;
use self::metrics::{Metrics, Status};
use self::scheduler::{Queue, Rounds, Timing, holds_expired, random_sample};
use crate::cli::{DaemonArgs, RunArgs};
use crate::config::{BackendSpec, Settings, SyncConfig};
use crate::engine::build::{build_with_cache, token_cache};
use crate::engine::{Engine, Job, Outcome, PassOptions, TargetReport, TokenObserver, TokenStep};
use crate::failure::Failure;
use crate::logging::LIFECYCLE;
use crate::output::rfc3339;
use crate::run::check_job_names;

/// The longest the passes in flight may take to finish after SIGTERM/SIGINT; less when their
/// deadlines come sooner. A pass normally takes seconds; this is the grace for a slow one,
/// and below the 45 s that docs/operations.md gives systemd and Kubernetes before SIGKILL.
pub const SHUTDOWN_GRACE_MAX: Duration = Duration::from_secs(30);

/// How long after its `pass_timeout` the daemon abandons a pass that is still running. The
/// engine ends a pass at its deadline itself and reports why for each target; this margin is
/// the time it has for that, and the daemon's own bound if anything in the pass overruns.
pub const OVERRUN: Duration = Duration::from_secs(2);

/// The longest time between two uses of a Vault backend's login (see [`keepalive_period`]).
pub const VAULT_KEEPALIVE_MAX: Duration = Duration::from_secs(60);

/// How often each Vault backend with a target is used (one metadata read) between passes, so
/// its token is renewed after two thirds of its lease (or a new login made) even when passes
/// are further apart than the token's TTL: a minute, or a quarter of `refresh_before` if that
/// is shorter. A token whose TTL or period is at least three times this stays alive.
pub fn keepalive_period(refresh_before: Duration) -> Duration {
    (refresh_before / 4).clamp(Duration::from_secs(1), VAULT_KEEPALIVE_MAX)
}

impl From<RunArgs> for DaemonArgs {
    fn from(args: RunArgs) -> Self {
        DaemonArgs {
            config: args.config,
            jobs: args.jobs,
        }
    }
}

/// Runs until SIGTERM or SIGINT (exit 0). A config that does not load at start-up, unknown
/// `--job` names or a listen address that is taken are usage errors (exit 2).
pub async fn run(args: DaemonArgs) -> Result<(), Failure> {
    // Listen for signals first, so one sent during start-up is not fatal.
    let signals = Signals::new().map_err(Failure::failed)?;
    let metrics = Arc::new(Metrics::new());
    let observer = Arc::new(TokenRequests::new(Arc::clone(&metrics)));
    let path = args.config.config.clone();
    let config = load(&path, &args.jobs).map_err(Failure::usage)?;
    let cache = token_cache(
        &config.settings,
        scheduler::lead(config.settings.refresh_before),
    )
    .map_err(Failure::usage)?;
    let generation = Generation::build(config, &args.jobs, cache, &observer)
        .await
        .map_err(Failure::usage)?;
    // In the background: with 100,000 targets this takes seconds, which must delay neither the
    // listener, nor the first pass (whose writes clean their own targets first), nor a stop.
    let sweep = tokio::spawn({
        let (backends, jobs) = (generation.backends.clone(), Arc::clone(&generation.jobs));
        async move { crate::engine::build::remove_stale_temp_files(&backends, &jobs).await }
    });

    let (stop_listener, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut listener_addr = None;
    let listener = match generation.settings.listen {
        Some(addr) => {
            let listener = Listener::bind(addr).await.map_err(Failure::usage)?;
            listener_addr = Some(listener.local_addr());
            info!(listen = %listener.local_addr(), "health and metrics listener bound");
            let served = listener.serve(Arc::clone(&metrics), async {
                let _ = stopped.await;
            });
            Some(tokio::spawn(served))
        }
        None => None,
    };
    set_metric_jobs(&metrics, &generation.jobs);
    metrics.set_config_loaded(true);
    // At the default level too (`logging::LIFECYCLE`): a daemon that prints nothing looks hung.
    let listen = listener_addr.map_or_else(|| "none".to_owned(), |addr| addr.to_string());
    info!(target: LIFECYCLE, config = %path.display(), jobs = generation.jobs.len(),
        listen = %listen, "daemon started: every job runs a pass now");

    // The failed actions a previous run left pending (actions/pending.rs).
    let pending = crate::actions::pending::load(
        &generation.settings.credentials.state_dir,
        &generation.actions,
        &|name| generation.jobs.iter().any(|job| job.name == name),
    );
    let mut daemon = Daemon {
        path,
        job_filter: args.jobs,
        metrics,
        observer,
        generation,
        in_flight: JoinSet::new(),
        running: HashMap::new(),
        pending,
    };
    daemon.run_until_stopped(signals).await;
    sweep.abort();

    let _ = stop_listener.send(());
    if let Some(listener) = listener {
        let _ = listener.await;
    }
    info!(target: LIFECYCLE, "daemon stopped");
    Ok(())
}

/// Records the pending actions in `settings`' state directory (the entries of jobs that are
/// not `ours` stay); a failure is a warning (they stay pending in memory).
fn save_pending(
    settings: &Settings,
    pending: &crate::actions::Pending,
    ours: &dyn Fn(&str) -> bool,
) {
    let dir = &settings.credentials.state_dir;
    if let Err(err) = crate::actions::pending::save(dir, pending, ours) {
        warn!(error = %err, "the pending after-write actions are kept in memory only");
    }
}

fn keepalive_interval(refresh_before: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(keepalive_period(refresh_before));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// The signals the daemon acts on.
struct Signals {
    hangup: Signal,
    stop: StopSignals,
}

/// The signals that stop the daemon (kept apart from SIGHUP, so a reload can wait for them).
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    /// Waits for SIGTERM or SIGINT and says which came.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let listen = |kind| signal(kind).context("cannot listen for signals");
        Ok(Signals {
            hangup: listen(SignalKind::hangup())?,
            stop: StopSignals {
                terminate: listen(SignalKind::terminate())?,
                interrupt: listen(SignalKind::interrupt())?,
            },
        })
    }
}

/// Loads and validates the config and checks the `--job` names.
fn load(path: &std::path::Path, jobs: &[String]) -> anyhow::Result<SyncConfig> {
    let config = crate::config::load(path)?;
    check_job_names(&config, jobs)?;
    Ok(config)
}

/// One loaded config: its engine, its jobs and their schedule.
///
/// Of the loaded [`SyncConfig`] it keeps only `[settings]` (reload compares `listen`, `ca_file`
/// and `refresh_before`) and `[backends]` (the start-up sweep of stale temporary files): the
/// jobs' specs are dropped once the engine's jobs are built from them (issue 15: about 1 KB a
/// job, 100 MB at 100,000 jobs, held for the daemon's life before).
struct Generation {
    settings: Settings,
    backends: std::collections::BTreeMap<String, BackendSpec>,
    cache: Arc<TokenCache>,
    engine: Arc<Engine>,
    jobs: Arc<[Job]>,
    /// The jobs' after-write actions (issue 14).
    actions: Arc<crate::actions::Actions>,
    /// Failed passes in a row, by job index.
    failures: Vec<u32>,
    queue: Queue,
    /// The shared retry rounds of jobs whose targets hold an expired token or none.
    rounds: Rounds,
    timing: Timing,
    /// At most this many passes at once.
    limit: usize,
    /// One (store, target name) per Vault backend that has targets, used between passes to
    /// keep its login alive.
    vault_keepalive: Vec<(Arc<dyn SecretStore>, String)>,
    /// The credential watch and rotation of this config's jobs (issue 13); dropped with it.
    _credentials: Option<crate::credentials::daemon::Task>,
}

impl Generation {
    /// Builds the engine over `cache` and schedules every job at once.
    async fn build(
        config: SyncConfig,
        job_filter: &[String],
        cache: Arc<TokenCache>,
        observer: &Arc<TokenRequests>,
    ) -> anyhow::Result<Self> {
        let timing = Timing {
            refresh_before: config.settings.refresh_before,
        };
        let (mut engine, jobs) = build_with_cache(&config, job_filter, Arc::clone(&cache)).await?;
        engine.refresh_ahead(timing.lead());
        engine.observe_tokens(Arc::clone(observer) as Arc<dyn TokenObserver>);
        let actions = crate::actions::Actions::new(&config, engine.stores_and_cache().0);
        let mut queue = Queue::new();
        let now = Instant::now();
        for job in 0..jobs.len() {
            queue.push(job, now);
        }
        let mut vault_backends = BTreeSet::new();
        let vault_keepalive = jobs
            .iter()
            .flat_map(|job| &job.targets)
            .filter(|target| {
                matches!(
                    config.backends.get(target.backend()),
                    Some(BackendSpec::Vault(_))
                ) && vault_backends.insert(target.backend().to_owned())
            })
            .map(|target| (Arc::clone(&target.store), target.name.clone()))
            .collect();
        let names: Vec<String> = jobs.iter().map(|job| job.name.clone()).collect();
        let credentials = crate::credentials::daemon::start(
            &config,
            &engine,
            &names,
            Arc::clone(&observer.metrics),
        );
        Ok(Generation {
            _credentials: credentials,
            vault_keepalive,
            timing,
            limit: config.settings.concurrency.max(1),
            failures: vec![0; jobs.len()],
            actions: Arc::new(actions),
            jobs: jobs.into(),
            engine: Arc::new(engine),
            cache,
            settings: config.settings,
            backends: config.backends,
            queue,
            rounds: Rounds::default(),
        })
    }
}

struct Daemon {
    path: PathBuf,
    job_filter: Vec<String>,
    metrics: Arc<Metrics>,
    observer: Arc<TokenRequests>,
    generation: Generation,
    /// Passes in flight.
    in_flight: JoinSet<PassResult>,
    /// Each pass in flight, to reschedule one that panicked and to bound the waits for it.
    running: HashMap<Id, InFlight>,
    /// Failed after-write actions, by job: rerun at the job's next pass.
    pending: crate::actions::Pending,
}

/// What a pass in flight yields: its job index, reports and what its after-write actions did,
/// `None` if abandoned at its deadline.
type PassResult = (
    usize,
    Option<(Vec<TargetReport>, crate::actions::AfterPass)>,
);

/// A pass in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    job: usize,
    started: Instant,
    /// `started` + the job's `pass_timeout` + [`OVERRUN`]: the daemon abandons it then.
    deadline: Instant,
}

/// A stop signal (its name) that arrived while the daemon was busy with something else.
struct Stopped(&'static str);

impl Daemon {
    async fn run_until_stopped(&mut self, mut signals: Signals) {
        let mut keepalive = keepalive_interval(self.generation.timing.refresh_before);
        loop {
            let room = self.in_flight.len() < self.generation.limit;
            let next = self.generation.queue.next_due().filter(|_| room);
            // Never polled when there is no next due time (the branch is disabled).
            let deadline = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                signal = signals.stop.recv() => {
                    info!("{signal}: stopping");
                    break;
                }
                _ = signals.hangup.recv() => {
                    if let Err(Stopped(signal)) = self.reload(&mut signals.stop).await {
                        info!("{signal} during the reload: stopping");
                        break;
                    }
                    let period = keepalive_period(self.generation.timing.refresh_before);
                    if keepalive.period() != period {
                        keepalive = keepalive_interval(self.generation.timing.refresh_before);
                    }
                }
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    self.finished(joined);
                }
                () = tokio::time::sleep_until(deadline), if next.is_some() => self.start_due(),
                _ = keepalive.tick(), if !self.generation.vault_keepalive.is_empty() => {
                    self.keep_vault_logins_alive();
                }
            }
        }
        self.shutdown().await;
    }

    /// Starts every due job there is room for.
    fn start_due(&mut self) {
        let now = Instant::now();
        while self.in_flight.len() < self.generation.limit {
            let Some(job) = self.generation.queue.pop_due(now) else {
                break;
            };
            let engine = Arc::clone(&self.generation.engine);
            let jobs = Arc::clone(&self.generation.jobs);
            let started = Instant::now();
            let deadline = started + jobs[job].pass_timeout() + OVERRUN;
            let actions = Arc::clone(&self.generation.actions);
            let pending = self
                .pending
                .get(&jobs[job].name)
                .cloned()
                .unwrap_or_default();
            let handle = self.in_flight.spawn(async move {
                let pass = async {
                    let job = &jobs[job];
                    let reports = engine.run(std::slice::from_ref(job), PassOptions::default());
                    let reports = reports.await;
                    let after = actions.after_pass(job, &reports, pending, started).await;
                    (reports, after)
                };
                (job, tokio::time::timeout_at(deadline, pass).await.ok())
            });
            self.running.insert(
                handle.id(),
                InFlight {
                    job,
                    started,
                    deadline,
                },
            );
        }
    }

    /// One metadata read per Vault backend, in the background: the store renews its token
    /// (or logs in again) first when it is due. The result does not matter here; a backend
    /// that fails shows in the next pass of its jobs.
    fn keep_vault_logins_alive(&self) {
        for (store, name) in &self.generation.vault_keepalive {
            let (store, name) = (Arc::clone(store), name.clone());
            tokio::spawn(async move {
                if let Err(err) = store.metadata(&name).await {
                    debug!(backend = %store.backend(), error = %err,
                        "Vault keep-alive read failed; the next pass reports it");
                }
            });
        }
    }

    /// Records a finished pass and schedules the job's next one.
    fn finished(&mut self, joined: Result<(Id, PassResult), JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(err) => err.id(),
        };
        let Some(flight) = self.running.remove(&id) else {
            return;
        };
        let job = flight.job;
        let (reports, after) = match joined {
            Ok((_, (_, Some((reports, after))))) => (reports, Some(after)),
            Ok((_, (_, None))) => {
                let limit = self.generation.jobs[job].pass_timeout();
                warn!(job = %self.generation.jobs[job].name,
                    pass_timeout = %humantime::format_duration(limit),
                    "a job pass was still running past its deadline and was abandoned; its targets \
                     keep what they held (a write is atomic or not done)");
                (Vec::new(), None)
            }
            Err(err) => {
                error!(job = %self.generation.jobs[job].name, error = %err,
                    "a job pass ended abnormally; it is retried with backoff");
                (Vec::new(), None)
            }
        };
        let generation = &mut self.generation;
        let name = &generation.jobs[job].name;
        let now = OffsetDateTime::now_utc();
        for report in &reports {
            let target = target_label(report);
            self.metrics
                .record_target_write(name, &target, report.outcome);
            if let Some(expires_on) = report.expires_on {
                self.metrics.set_token_expiry(name, &target, expires_on);
            }
        }
        // A failed after-write action fails the pass: backoff, and it stays pending (also on
        // disk, for a restart).
        let had_pending = self.pending.contains_key(name);
        let failed_action = after.and_then(|after| {
            crate::actions::settle(&self.metrics, &mut self.pending, name, after)
        });
        if had_pending || self.pending.contains_key(name) {
            let ours = |name: &str| generation.jobs.iter().any(|job| job.name == name);
            save_pending(&generation.settings, &self.pending, &ours);
        }
        let pass = match Pass::judge(&reports, generation.timing.renew_within(), now) {
            Pass::Renewed { earliest_expiry } if failed_action.is_some() => Pass::Failed {
                earliest_expiry: Some(earliest_expiry),
            },
            pass => pass,
        };
        let wait = match pass {
            Pass::Renewed { earliest_expiry } => {
                generation.failures[job] = 0;
                generation
                    .timing
                    .after_success(earliest_expiry, now, random_sample())
            }
            Pass::Failed { earliest_expiry } | Pass::Stale { earliest_expiry } => {
                generation.failures[job] = generation.failures[job].saturating_add(1);
                let backoff = generation.timing.after_failure(
                    generation.failures[job],
                    earliest_expiry,
                    now,
                    random_sample(),
                );
                if holds_expired(earliest_expiry, now) {
                    // The quarter-of-the-time-left cap bounds nothing any more: retry in the
                    // coming round, at most EXPIRED_RETRY after this pass started.
                    let clock = Instant::now();
                    let round = generation
                        .rounds
                        .join(flight.started, clock, random_sample());
                    backoff.min(round.saturating_duration_since(clock))
                } else {
                    backoff
                }
            }
        };
        generation.queue.push(job, Instant::now() + wait);
        let next_in = humantime::format_duration(Duration::from_secs(wait.as_secs()));
        let next_at = rfc3339(now + wait);
        match pass {
            Pass::Renewed { earliest_expiry } => {
                self.metrics.record_job_run(name, Status::Success);
                info!(job = %name, outcome = "ok", written = written(&reports),
                    expires_on = %rfc3339(earliest_expiry), next_in = %next_in, next_at = %next_at,
                    "job pass");
            }
            Pass::Failed { .. } => {
                self.metrics.record_job_run(name, Status::Failure);
                // What /readyz says about the job: its first failed target's reason.
                if let Some(failed) = reports.iter().find(|r| r.outcome == Outcome::Failed) {
                    self.metrics.set_failure_reason(
                        name,
                        &format!("{}: {}", target_label(failed), failed.detail),
                    );
                } else if let Some(action) = &failed_action {
                    let reason = format!("{}: {}", action.key, action.detail);
                    self.metrics.set_failure_reason(name, &reason);
                }
                let failed = reports
                    .iter()
                    .filter(|r| r.outcome == Outcome::Failed)
                    .count();
                warn!(job = %name, outcome = "failed", failed_targets = failed,
                    failures_in_a_row = generation.failures[job], next_in = %next_in,
                    next_at = %next_at, "job pass failed; backing off");
            }
            // Once: most likely another job's request for the same credentials was in flight
            // and the cache served the previous token meanwhile; the retry gets the new one.
            Pass::Stale { .. } if generation.failures[job] == 1 => {
                info!(job = %name, outcome = "stale", next_in = %next_in, next_at = %next_at,
                    "job pass got the previous token (a request for it was in flight); retrying");
            }
            Pass::Stale { .. } => {
                self.metrics.record_job_run(name, Status::Failure);
                warn!(job = %name, outcome = "stale", failures_in_a_row = generation.failures[job],
                    next_in = %next_in, next_at = %next_at,
                    "job pass could not get a newer token (see the token refresh warning); backing off");
            }
        }
    }

    /// SIGHUP: swap in the config as it is now on disk, or keep the running one. A SIGTERM or
    /// SIGINT meanwhile ends the reload (the running config stays) and is returned.
    async fn reload(&mut self, stop: &mut StopSignals) -> Result<(), Stopped> {
        info!(config = %self.path.display(), "SIGHUP: reloading the config");
        let next = tokio::select! {
            next = self.next_generation() => next,
            signal = stop.recv() => return Err(Stopped(signal)),
        };
        let next = match next {
            Ok(next) => next,
            Err(err) => {
                self.metrics.record_reload(Status::Failure);
                error!(config = %self.path.display(), error = format!("{err:#}"),
                    "reload failed; the running config stays in use");
                return Ok(());
            }
        };
        if next.settings.listen != self.generation.settings.listen {
            warn!("[settings] listen changed: the listener keeps its address until a restart");
        }
        // Finish the passes of the old config, so no job runs twice at once. Each ends by its
        // deadline at the latest; a stop signal ends the wait at once.
        if !self.in_flight.is_empty() {
            info!(passes = self.in_flight.len(),
                within = %humantime::format_duration(self.longest_wait()),
                "reload: waiting for the passes in flight to finish");
        }
        tokio::select! {
            () = self.drain() => {}
            signal = stop.recv() => return Err(Stopped(signal)),
        }
        let kept: std::collections::HashSet<&str> =
            next.jobs.iter().map(|job| job.name.as_str()).collect();
        for job in self.generation.jobs.iter() {
            if !kept.contains(job.name.as_str()) {
                self.metrics.forget_job(&job.name);
            }
        }
        info!(
            jobs = next.jobs.len(),
            "config reloaded: every job runs a pass now"
        );
        // Failed actions the new config still has stay pending; the others are dropped.
        let had_pending = !self.pending.is_empty();
        self.pending = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(job, due)| {
                let kept = next.actions.still_configured(&job, due);
                (job, kept)
            })
            .filter(|(_, due)| !due.is_empty())
            .collect();
        if had_pending {
            // The jobs of both configs are this daemon's: a removed job's entries go too.
            let ours = |name: &str| {
                next.jobs.iter().any(|job| job.name == name)
                    || self.generation.jobs.iter().any(|job| job.name == name)
            };
            save_pending(&next.settings, &self.pending, &ours);
        }
        set_metric_jobs(&self.metrics, &next.jobs);
        self.generation = next;
        self.metrics.record_reload(Status::Success);
        Ok(())
    }

    /// Waits for every pass in flight, recording each as it ends. Each pass ends by its
    /// deadline (the daemon abandons it then), so this takes [`Daemon::longest_wait`] at most.
    async fn drain(&mut self) {
        while let Some(joined) = self.in_flight.join_next_with_id().await {
            self.finished(joined);
        }
    }

    /// The time until the latest deadline of the passes in flight.
    fn longest_wait(&self) -> Duration {
        let now = Instant::now();
        self.running
            .values()
            .map(|pass| pass.deadline.saturating_duration_since(now))
            .max()
            .unwrap_or_default()
    }

    async fn next_generation(&self) -> anyhow::Result<Generation> {
        let config = load(&self.path, &self.job_filter)?;
        let old = &self.generation.settings;
        let cache = if config.settings.ca_file == old.ca_file
            && config.settings.refresh_before == old.refresh_before
        {
            Arc::clone(&self.generation.cache)
        } else {
            token_cache(
                &config.settings,
                scheduler::lead(config.settings.refresh_before),
            )?
        };
        Generation::build(config, &self.job_filter, cache, &self.observer).await
    }

    /// Lets the passes in flight finish: until the latest of their deadlines, at most
    /// [`SHUTDOWN_GRACE_MAX`].
    async fn shutdown(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let grace = shutdown_grace(self.longest_wait());
        // Their after-write actions end by then too, reported as cut off by the stop.
        self.generation.actions.stopping(Instant::now() + grace);
        info!(passes = self.in_flight.len(),
            grace = %humantime::format_duration(Duration::from_secs(grace.as_secs())),
            "waiting for the passes in flight to finish");
        let drained = tokio::time::timeout(grace, self.drain()).await;
        if drained.is_err() {
            warn!(
                passes = self.in_flight.len(),
                "passes still running after the grace period are abandoned; their targets keep \
                 what they held (a write is atomic or not done)"
            );
            self.in_flight.abort_all();
        }
    }
}

/// How long the passes in flight get after SIGTERM/SIGINT when the latest of their deadlines is
/// `until_deadline` away: that, at most [`SHUTDOWN_GRACE_MAX`] (and a whole second at least,
/// for the summary of a pass that is ending anyway).
fn shutdown_grace(until_deadline: Duration) -> Duration {
    until_deadline.clamp(Duration::from_secs(1), SHUTDOWN_GRACE_MAX)
}

/// What a pass achieved, for scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every target holds a token valid beyond `refresh_before` plus the lead.
    Renewed { earliest_expiry: OffsetDateTime },
    /// A target failed.
    Failed {
        earliest_expiry: Option<OffsetDateTime>,
    },
    /// No target failed but one still holds a token within `refresh_before` plus the lead: the token cache
    /// could not get a newer one and served the old one.
    Stale {
        earliest_expiry: Option<OffsetDateTime>,
    },
}

impl Pass {
    /// `earliest_expiry` of a failed or stale pass is `None` when a target holds no token or
    /// one of unknown expiry: the job then retries as if its tokens had expired.
    fn judge(reports: &[TargetReport], renew_within: Duration, now: OffsetDateTime) -> Pass {
        // `None` sorts first: one target without a known expiry makes the whole pass's `None`.
        let earliest_expiry = reports.iter().map(|r| r.expires_on).min().flatten();
        let failed = reports.is_empty() || reports.iter().any(|r| r.outcome == Outcome::Failed);
        match earliest_expiry {
            _ if failed => Pass::Failed { earliest_expiry },
            Some(earliest) if earliest - now > renew_within => Pass::Renewed {
                earliest_expiry: earliest,
            },
            _ => Pass::Stale { earliest_expiry },
        }
    }
}

/// How many targets a pass wrote.
fn written(reports: &[TargetReport]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Created | Outcome::Updated))
        .count()
}

/// Tells the metrics which jobs and targets are loaded (their series carry over a reload).
fn set_metric_jobs(metrics: &Metrics, jobs: &[Job]) {
    metrics.set_jobs(jobs.iter().map(|job| {
        let targets = job.targets.iter();
        (
            job.name.as_str(),
            targets.map(|target| (target.backend(), target.name.as_str())),
        )
    }));
}

/// The `target` label of a target: `BACKEND:NAME`, both from the config (as
/// [`set_metric_jobs`] gives them).
fn target_label(report: &TargetReport) -> String {
    format!("{}:{}", report.backend, report.name)
}

/// Counts token requests per job for the metrics. Jobs that shared one request see the same
/// token (same `obtained_at`); it is counted once, for the first job that reports it.
#[derive(Debug)]
struct TokenRequests {
    metrics: Arc<Metrics>,
    recent: Mutex<VecDeque<OffsetDateTime>>,
}

impl TokenRequests {
    /// How many recent requests are remembered to recognise shared ones.
    const REMEMBERED: usize = 1024;

    fn new(metrics: Arc<Metrics>) -> Self {
        TokenRequests {
            metrics,
            recent: Mutex::new(VecDeque::new()),
        }
    }
}

impl TokenObserver for TokenRequests {
    fn token_step(&self, job: &str, step: TokenStep) {
        match step {
            TokenStep::Cached => {}
            TokenStep::Failed => self.metrics.record_token_request(job, Status::Failure),
            TokenStep::Requested { obtained_at } => {
                let mut recent = self
                    .recent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if recent.contains(&obtained_at) {
                    return;
                }
                if recent.len() == Self::REMEMBERED {
                    recent.pop_front();
                }
                recent.push_back(obtained_at);
                drop(recent);
                self.metrics.record_token_request(job, Status::Success);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 06:00 UTC);
    const WINDOW: Duration = Duration::from_secs(20);

    fn report(outcome: Outcome, expires_in: Option<i64>) -> TargetReport {
        TargetReport {
            job: "graph".to_owned(),
            backend: "local".to_owned(),
            name: "graph.json".to_owned(),
            outcome,
            expires_on: expires_in.map(|s| NOW + time::Duration::seconds(s)),
            detail: String::new(),
            usage_error: false,
        }
    }

    #[test]
    fn a_pass_is_judged_by_its_failures_and_earliest_expiry() {
        let fresh = |s| report(Outcome::Updated, Some(s));
        assert_eq!(
            Pass::judge(&[fresh(60), fresh(50)], WINDOW, NOW),
            Pass::Renewed {
                earliest_expiry: NOW + time::Duration::seconds(50)
            }
        );
        assert_eq!(
            Pass::judge(&[fresh(60), report(Outcome::Failed, Some(30))], WINDOW, NOW),
            Pass::Failed {
                earliest_expiry: Some(NOW + time::Duration::seconds(30))
            }
        );
        // A target that holds no token (or one of unknown expiry) makes the pass's expiry
        // unknown, however long the others' tokens live: the job retries as if expired.
        assert_eq!(
            Pass::judge(&[fresh(60), report(Outcome::Failed, None)], WINDOW, NOW),
            Pass::Failed {
                earliest_expiry: None
            }
        );
        // The cache served the old token after a failed refresh: written unchanged, still
        // within refresh_before.
        assert_eq!(
            Pass::judge(&[report(Outcome::Unchanged, Some(15))], WINDOW, NOW),
            Pass::Stale {
                earliest_expiry: Some(NOW + time::Duration::seconds(15))
            }
        );
        assert_eq!(
            Pass::judge(&[], WINDOW, NOW),
            Pass::Failed {
                earliest_expiry: None
            }
        );
    }

    #[test]
    fn the_sigterm_grace_is_the_time_to_the_latest_deadline_at_most_30_s() {
        assert_eq!(
            shutdown_grace(Duration::from_secs(8)),
            Duration::from_secs(8)
        );
        assert_eq!(shutdown_grace(Duration::from_secs(302)), SHUTDOWN_GRACE_MAX);
        assert_eq!(shutdown_grace(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn vault_logins_are_used_every_minute_or_quarter_of_refresh_before() {
        assert_eq!(
            keepalive_period(Duration::from_secs(15 * 60)),
            VAULT_KEEPALIVE_MAX
        );
        assert_eq!(
            keepalive_period(Duration::from_secs(10)),
            Duration::from_millis(2500)
        );
        assert_eq!(keepalive_period(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn a_shared_token_request_is_counted_once_for_the_job_that_reported_it_first() {
        let metrics = Arc::new(Metrics::new());
        let requests = TokenRequests::new(Arc::clone(&metrics));
        let obtained_at = NOW;
        requests.token_step("a", TokenStep::Requested { obtained_at });
        requests.token_step("b", TokenStep::Requested { obtained_at });
        requests.token_step("b", TokenStep::Cached);
        requests.token_step("b", TokenStep::Failed);
        let text = metrics.render();
        assert!(
            text.contains("secret_sync_token_requests_total{job=\"a\",outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("secret_sync_token_requests_total{job=\"b\",outcome=\"success\"}"),
            "{text}"
        );
        assert!(
            text.contains("secret_sync_token_requests_total{job=\"b\",outcome=\"failure\"} 1"),
            "{text}"
        );
    }
}
