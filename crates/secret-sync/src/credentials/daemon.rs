//! The daemon's credential checks: every `check_every` (sooner when a recorded retirement or
//! a rotation is due, or after a failed check), for each job that watches or rotates: read the
//! app from Graph, record the watch (state file, metric
//! `secret_sync_credential_expiry_timestamp_seconds`), warn once when the secret in use is
//! inside `warn_within`, and run a rotation check ([`super::rotate::check`] in
//! [`Mode::Daemon`]: resume, clean up, rotate when due).
//!
//! It runs beside the sync loop as one task per loaded config ([`Task`]): a reload drops the
//! old generation's task (aborting it: every step resumes from the record) and starts one for
//! the new config. Each job keeps its own next check. A failed check is logged with when it
//! is retried: after a backoff (the token jobs': 5 s doubling, drawn between half and all of
//! it), at most `check_every`, so a Graph outage costs minutes, not an hour; the other jobs
//! keep their times. A failure never stops the token jobs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tracing::{error, warn};

use super::rotate::{self, Mode};
use super::watch::{Lifecycle, record, watch_job};
use super::{days_left, earlier, later};
use crate::config::SyncConfig;
use crate::daemon::metrics::Metrics;
use crate::daemon::scheduler::{backoff, random_sample};
use crate::engine::Engine;
use crate::output::rfc3339;

/// The running checks of one config; dropping it stops them.
#[derive(Debug)]
pub struct Task(tokio::task::AbortHandle);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the checks for the jobs named `jobs` of `config` (those that watch or rotate), over
/// the engine's stores and token cache; `None` when no job does.
pub fn start(
    config: &SyncConfig,
    engine: &Engine,
    jobs: &[String],
    metrics: Arc<Metrics>,
) -> Option<Task> {
    // A set: `jobs` may hold 100,000 names (issue 15), and a Vec's `contains` per job made
    // this quadratic (seconds before the daemon's listener came up).
    let jobs: std::collections::HashSet<&str> = jobs.iter().map(String::as_str).collect();
    let names: Vec<String> = config
        .jobs
        .iter()
        .filter(|job| job.lifecycle.uses_graph() && jobs.contains(job.name.as_str()))
        .map(|job| job.name.clone())
        .collect();
    if names.is_empty() {
        return None;
    }
    let (stores, cache) = engine.stores_and_cache();
    let lifecycle = Lifecycle::new(Arc::new(config.clone()), stores.clone(), Arc::clone(cache));
    let handle = tokio::spawn(run(lifecycle, names, metrics));
    Some(Task(handle.abort_handle()))
}

async fn run(lifecycle: Lifecycle, names: Vec<String>, metrics: Arc<Metrics>) {
    let check_every = lifecycle.config.settings.credentials.check_every;
    let mut warned: BTreeSet<(String, String)> = BTreeSet::new();
    // Each job's next check and its failed checks in a row: a job whose check failed (Graph
    // down, throttled, a store that refused the write-back) is checked again after a backoff
    // (5 s doubling, at most check_every), the others keep their own times.
    let start = OffsetDateTime::now_utc();
    let mut due: Vec<OffsetDateTime> = vec![start; names.len()];
    let mut failures: Vec<u32> = vec![0; names.len()];
    loop {
        for (index, name) in names.iter().enumerate() {
            if due[index] > OffsetDateTime::now_utc() {
                continue;
            }
            let Some(job) = lifecycle.config.job(name) else {
                due[index] = later(OffsetDateTime::now_utc(), check_every);
                continue;
            };
            let mut next = later(OffsetDateTime::now_utc(), check_every);
            let mut failed: Vec<(&str, String)> = Vec::new();
            match watch_job(&lifecycle, job).await {
                Ok(watch) => {
                    record(&lifecycle.config, &watch);
                    for (kind, end) in watch.expiries() {
                        metrics.set_credential_expiry(&job.name, kind, end);
                    }
                    let now = OffsetDateTime::now_utc();
                    if let (Some(key), Some(end)) = (watch.in_use.key_id(), watch.in_use_end())
                        && earlier(end, job.lifecycle.watch.warn_within) <= now
                        && warned.insert((job.name.clone(), key.to_owned()))
                    {
                        warn!(job = %job.name, key_id = %key, expires_on = %rfc3339(end),
                            days_left = days_left(end, now),
                            "the app's {} in use expires within warn_within", watch.in_use_word());
                    }
                }
                Err(err) => failed.push(("watch", format!("{err:#}"))),
            }
            if job.lifecycle.rotation.is_some() {
                match rotate::check(&lifecycle, job, Mode::Daemon).await {
                    Ok(report) => {
                        if let Some(at) = report.next_due {
                            next = next.min(at);
                        }
                    }
                    Err(err) => failed.push(("rotation", format!("{err:#}"))),
                }
            }
            if failed.is_empty() {
                failures[index] = 0;
            } else {
                failures[index] = failures[index].saturating_add(1);
                let wait = backoff(failures[index], check_every, random_sample());
                next = next.min(later(OffsetDateTime::now_utc(), wait));
                let retry_in =
                    humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                        .to_string();
                for (step, error) in failed {
                    if step == "watch" {
                        warn!(job = %job.name, error, retry_in,
                            failures = failures[index],
                            "cannot watch the app's credentials; retried after a backoff");
                    } else {
                        error!(job = %job.name, error, retry_in,
                            failures = failures[index],
                            "client secret rotation failed; the old secret is kept; retried after a backoff");
                    }
                }
            }
            due[index] = next;
        }
        let first = due
            .iter()
            .copied()
            .min()
            .unwrap_or_else(|| later(OffsetDateTime::now_utc(), check_every));
        let wait = first - OffsetDateTime::now_utc();
        let wait = Duration::try_from(wait)
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        tokio::time::sleep(wait + Duration::from_millis(200)).await;
    }
}
