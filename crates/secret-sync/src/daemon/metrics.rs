//! The daemon's metrics and readiness, in one small registry: what `/metrics` renders in the
//! Prometheus text format and what `/readyz` decides from.
//!
//! Why its own registry and not a metrics crate: four counters and a gauge over a few fixed
//! label sets do not need one, and keeping the rendering here makes the invariant easy to see:
//! every label value is a job or target name from the config, or one word from a fixed outcome
//! set ([`Status`], [`Outcome`]); nothing read from a store or Entra ID ever becomes a label.
//!
//! Still hand-written after issue 14 added `secret_sync_actions_total`: the official
//! `prometheus-client` crate was weighed for it and not taken. It would bring typed families
//! and OpenMetrics output, but a handful of counters and gauges keyed by config names are a few
//! `BTreeMap`s and one table by job index here (issue 15: at 100,000 jobs a series map entry
//! with its own label strings per job, target and outcome was the largest part of the daemon's
//! memory after its first pass); with the crate every family needs a label-set type deriving its encoder,
//! `forget_job` would have to remember each label set it created (a `Family` removes one
//! exact set at a time), the output would become OpenMetrics text (`# EOF`, its `_total`
//! rules) instead of the 0.0.4 format that docs/operations.md's scrape config and alert rules
//! are tested against, and one more dependency tree would be built and audited for what
//! `render` already does in a page. If histograms (pass durations) are wanted
//! later, that is the time to switch.
//!
//! Names follow `secret_sync_<what>_<unit>_total` for counters. The registry is shared as
//! `Arc<Metrics>`; every method takes `&self` and holds one `Mutex` only while it copies numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use time::OffsetDateTime;

use crate::engine::Outcome;

/// How a token request, a job run or a config reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Success,
    Failure,
}

impl Status {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
        }
    }
}

impl<T, E> From<&Result<T, E>> for Status {
    fn from(result: &Result<T, E>) -> Self {
        if result.is_ok() {
            Status::Success
        } else {
            Status::Failure
        }
    }
}

/// Whether `/readyz` answers 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Why not, in one line that names the jobs (never a value).
    NotReady(String),
}

/// The registry. Create one per process, share it as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    token_requests: BTreeMap<(String, Status), u64>,
    /// Target writes, token expiries and job runs of the loaded config's jobs.
    table: Table,
    /// After-write actions run, by (job, kind, outcome) (issue 14).
    actions: BTreeMap<(String, &'static str, Status), u64>,
    config_reloads: BTreeMap<Status, u64>,
    config_loaded: bool,
    /// Jobs whose last run failed, with why (the first failed target and its reason).
    failing: BTreeMap<String, String>,
    /// Unix seconds at which the app credential of (job, kind) expires (issue 13's watch).
    credential_expiry: BTreeMap<(String, &'static str), i64>,
}

/// The series of every job and target of the loaded config ([`Metrics::set_jobs`]): the label
/// values back to back in one string, the numbers in flat vectors by job and target index.
/// A job with one target costs about 110 bytes here; a map entry per (job, target, outcome)
/// with its own label strings held some 270 bytes a job after the first pass at 100,000 jobs,
/// and one more entry for each outcome a target later saw (issue 15).
#[derive(Debug, Default)]
struct Table {
    /// Every job name and target label (`backend:name`).
    text: String,
    /// By job: where its name is in `text`, and its first target (its targets run up to the
    /// next job's first).
    jobs: Vec<(Range<usize>, usize)>,
    /// By target (a job's in the order of their labels): where its label is in `text`, and
    /// its series.
    targets: Vec<(Range<usize>, TargetSeries)>,
    /// By job: passes, by [`Status`] (success, failure).
    runs: Vec<[u64; 2]>,
    /// Job indices in the order of their names, for lookups and rendering.
    by_name: Vec<usize>,
}

/// One target's series.
#[derive(Debug, Clone, Copy, Default)]
struct TargetSeries {
    /// Passes that handled it, by outcome ([`Outcome::ALL`]'s order).
    writes: [u64; Outcome::ALL.len()],
    /// Unix seconds at which the token it holds expires.
    expiry: Option<i64>,
}

/// The outcomes in the order of their label values, as samples are rendered.
const OUTCOMES_BY_NAME: [Outcome; 6] = [
    Outcome::Created,
    Outcome::Failed,
    Outcome::Fresh,
    Outcome::Skipped,
    Outcome::Unchanged,
    Outcome::Updated,
];

impl Table {
    fn job_name(&self, job: usize) -> &str {
        &self.text[self.jobs[job].0.clone()]
    }

    /// The target indices of `job`.
    fn targets_of(&self, job: usize) -> Range<usize> {
        let end = self
            .jobs
            .get(job + 1)
            .map_or(self.targets.len(), |(_, first)| *first);
        self.jobs[job].1..end
    }

    fn label(&self, target: usize) -> &str {
        &self.text[self.targets[target].0.clone()]
    }

    fn job(&self, name: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|&job| self.job_name(job).cmp(name))
            .ok()
            .map(|at| self.by_name[at])
    }

    fn target(&self, job: &str, label: &str) -> Option<usize> {
        self.targets_of(self.job(job)?)
            .find(|&target| self.label(target) == label)
    }
}

fn status_index(status: Status) -> usize {
    match status {
        Status::Success => 0,
        Status::Failure => 1,
    }
}

fn outcome_index(outcome: Outcome) -> usize {
    Outcome::ALL
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or_default()
}

const TOKEN_REQUESTS: &str = "secret_sync_token_requests_total";
const TARGET_WRITES: &str = "secret_sync_target_writes_total";
const TOKEN_EXPIRY: &str = "secret_sync_token_expiry_seconds";
const JOB_RUNS: &str = "secret_sync_job_runs_total";
const ACTIONS: &str = "secret_sync_actions_total";
const CONFIG_RELOADS: &str = "secret_sync_config_reloads_total";
const CONFIG_LOADED: &str = "secret_sync_config_loaded";
const CREDENTIAL_EXPIRY: &str = "secret_sync_credential_expiry_timestamp_seconds";

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only numbers behind; they stay usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One token request made for `job` (a coalesced request counts once, for the job that sent it).
    pub fn record_token_request(&self, job: &str, outcome: Status) {
        *self
            .state()
            .token_requests
            .entry((job.to_owned(), outcome))
            .or_default() += 1;
    }

    /// The loaded config's jobs, each with its targets' labels (`backend:name`), in file order:
    /// the jobs and targets whose target, expiry and run series are kept. The series of those
    /// that were loaded before carry over; those of jobs and targets no longer loaded are
    /// dropped. Call it before any pass of these jobs is recorded: a target or run of a job
    /// not loaded is not counted.
    pub fn set_jobs<'a, T>(&self, jobs: impl IntoIterator<Item = (&'a str, T)>)
    where
        T: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut table = Table::default();
        for (name, targets) in jobs {
            let start = table.text.len();
            table.text.push_str(name);
            table
                .jobs
                .push((start..table.text.len(), table.targets.len()));
            let first = table.targets.len();
            for (backend, target) in targets {
                let start = table.text.len();
                table.text.push_str(backend);
                table.text.push(':');
                table.text.push_str(target);
                table
                    .targets
                    .push((start..table.text.len(), TargetSeries::default()));
            }
            // A job's targets in the order of their labels, as they are rendered.
            let text = &table.text;
            table.targets[first..].sort_by(|a, b| text[a.0.clone()].cmp(&text[b.0.clone()]));
        }
        table.text.shrink_to_fit();
        table.runs = vec![[0; 2]; table.jobs.len()];
        let mut by_name: Vec<usize> = (0..table.jobs.len()).collect();
        by_name.sort_by(|a, b| table.job_name(*a).cmp(table.job_name(*b)));
        table.by_name = by_name;
        let mut state = self.state();
        let old = &state.table;
        for job in 0..table.jobs.len() {
            let Some(was) = old.job(table.job_name(job)) else {
                continue;
            };
            table.runs[job] = old.runs[was];
            for target in table.targets_of(job) {
                let label = table.label(target);
                if let Some(had) = old.targets_of(was).find(|&t| old.label(t) == label) {
                    table.targets[target].1 = old.targets[had].1;
                }
            }
        }
        state.table = table;
    }

    /// One target of `job` handled in a pass, with what happened to it.
    pub fn record_target_write(&self, job: &str, target: &str, outcome: Outcome) {
        let mut state = self.state();
        if let Some(at) = state.table.target(job, target) {
            state.table.targets[at].1.writes[outcome_index(outcome)] += 1;
        }
    }

    /// The token `target` of `job` now holds expires at `expires_on`.
    pub fn set_token_expiry(&self, job: &str, target: &str, expires_on: OffsetDateTime) {
        let mut state = self.state();
        if let Some(at) = state.table.target(job, target) {
            state.table.targets[at].1.expiry = Some(expires_on.unix_timestamp());
        }
    }

    /// The app credential of `job` of `kind` (`client_secret`, `certificate`) expires at
    /// `expires_on` (the one in use, else the earliest: `credentials::watch`).
    pub fn set_credential_expiry(&self, job: &str, kind: &'static str, expires_on: OffsetDateTime) {
        self.state()
            .credential_expiry
            .insert((job.to_owned(), kind), expires_on.unix_timestamp());
    }

    /// One pass of `job` ended; a failed one makes the daemon not ready once the job's
    /// earliest token expiry has passed (or when no token of it is known).
    pub fn record_job_run(&self, job: &str, outcome: Status) {
        let mut state = self.state();
        if let Some(at) = state.table.job(job) {
            state.table.runs[at][status_index(outcome)] += 1;
        }
        match outcome {
            Status::Success => {
                state.failing.remove(job);
            }
            Status::Failure => {
                state.failing.entry(job.to_owned()).or_default();
            }
        }
    }

    /// Why the last run of `job` failed, for `/readyz`: a target and its reason (names and
    /// messages, never a value). Call after [`Metrics::record_job_run`] with a failure.
    pub fn set_failure_reason(&self, job: &str, reason: &str) {
        if let Some(why) = self.state().failing.get_mut(job) {
            reason.clone_into(why);
        }
    }

    /// One after-write action of `job` ran (`kind`: exec, signal, webhook).
    pub fn record_action(&self, job: &str, kind: &'static str, outcome: Status) {
        *self
            .state()
            .actions
            .entry((job.to_owned(), kind, outcome))
            .or_default() += 1;
    }

    /// A SIGHUP reload ended (the first load is not a reload: call [`Metrics::set_config_loaded`]).
    pub fn record_reload(&self, outcome: Status) {
        *self.state().config_reloads.entry(outcome).or_default() += 1;
    }

    /// Whether a config is loaded and scheduled; `/readyz` fails until it is.
    pub fn set_config_loaded(&self, loaded: bool) {
        self.state().config_loaded = loaded;
    }

    /// Drop the token request, action and credential series and the readiness state of `job`
    /// (a reload removed it; its target and run series go with [`Metrics::set_jobs`]).
    pub fn forget_job(&self, job: &str) {
        let mut state = self.state();
        state.token_requests.retain(|(name, _), _| name != job);
        state.actions.retain(|(name, _, _), _| name != job);
        state.credential_expiry.retain(|(name, _), _| name != job);
        state.failing.remove(job);
    }

    /// Ready when a config is loaded and no job whose last run failed has a token past
    /// expiry (at `now`) or no token at all.
    pub fn readiness(&self, now: OffsetDateTime) -> Readiness {
        let state = self.state();
        if !state.config_loaded {
            return Readiness::NotReady("no config loaded yet".to_owned());
        }
        let now = now.unix_timestamp();
        let expired: Vec<String> = state
            .failing
            .iter()
            .filter(|(job, _)| {
                let table = &state.table;
                let earliest = table.job(job).and_then(|job| {
                    table
                        .targets_of(job)
                        .filter_map(|target| table.targets[target].1.expiry)
                        .min()
                });
                earliest.is_none_or(|expiry| expiry <= now)
            })
            .map(|(job, why)| {
                if why.is_empty() {
                    job.clone()
                } else {
                    format!("{job} ({why})")
                }
            })
            .collect();
        if expired.is_empty() {
            Readiness::Ready
        } else {
            Readiness::NotReady(format!(
                "{} job(s) failed and hold no valid token: {}",
                expired.len(),
                expired.join(", ")
            ))
        }
    }

    /// Every series in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let state = self.state();
        let mut out = String::new();
        header(
            &mut out,
            TOKEN_REQUESTS,
            "counter",
            "Token requests sent to Entra ID, by job and outcome.",
        );
        for ((job, outcome), value) in &state.token_requests {
            sample(
                &mut out,
                TOKEN_REQUESTS,
                &[("job", job), ("outcome", outcome.as_str())],
                *value,
            );
        }
        header(
            &mut out,
            TARGET_WRITES,
            "counter",
            "Targets handled in a pass, by job, target and outcome.",
        );
        let table = &state.table;
        for &job in &table.by_name {
            for target in table.targets_of(job) {
                for outcome in OUTCOMES_BY_NAME {
                    let value = table.targets[target].1.writes[outcome_index(outcome)];
                    if value > 0 {
                        sample(
                            &mut out,
                            TARGET_WRITES,
                            &[
                                ("job", table.job_name(job)),
                                ("target", table.label(target)),
                                ("outcome", outcome.as_str()),
                            ],
                            value,
                        );
                    }
                }
            }
        }
        header(
            &mut out,
            TOKEN_EXPIRY,
            "gauge",
            "Unix time at which the token a target holds expires.",
        );
        for &job in &table.by_name {
            for target in table.targets_of(job) {
                if let Some(expiry) = table.targets[target].1.expiry {
                    sample(
                        &mut out,
                        TOKEN_EXPIRY,
                        &[
                            ("job", table.job_name(job)),
                            ("target", table.label(target)),
                        ],
                        expiry,
                    );
                }
            }
        }
        header(
            &mut out,
            JOB_RUNS,
            "counter",
            "Passes of a job, by outcome.",
        );
        for &job in &table.by_name {
            for outcome in [Status::Success, Status::Failure] {
                let value = table.runs[job][status_index(outcome)];
                if value > 0 {
                    sample(
                        &mut out,
                        JOB_RUNS,
                        &[("job", table.job_name(job)), ("outcome", outcome.as_str())],
                        value,
                    );
                }
            }
        }
        header(
            &mut out,
            ACTIONS,
            "counter",
            "After-write actions run, by job, kind (exec, signal, webhook) and outcome.",
        );
        for ((job, kind, outcome), value) in &state.actions {
            sample(
                &mut out,
                ACTIONS,
                &[("job", job), ("kind", kind), ("outcome", outcome.as_str())],
                *value,
            );
        }
        header(
            &mut out,
            CONFIG_RELOADS,
            "counter",
            "Config reloads (SIGHUP), by outcome.",
        );
        for (outcome, value) in &state.config_reloads {
            sample(
                &mut out,
                CONFIG_RELOADS,
                &[("outcome", outcome.as_str())],
                *value,
            );
        }
        header(
            &mut out,
            CONFIG_LOADED,
            "gauge",
            "1 when a config is loaded and scheduled.",
        );
        sample(&mut out, CONFIG_LOADED, &[], i64::from(state.config_loaded));
        if !state.credential_expiry.is_empty() {
            header(
                &mut out,
                CREDENTIAL_EXPIRY,
                "gauge",
                "Unix time at which the app's client secret (the one in use) or certificate expires, by job and kind.",
            );
            for ((job, kind), value) in &state.credential_expiry {
                sample(
                    &mut out,
                    CREDENTIAL_EXPIRY,
                    &[("job", job), ("kind", kind)],
                    *value,
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // The help texts are constants without `\` or newlines, so they need no escaping.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape `\`, `"` and line feeds, as the text format requires.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::macros::datetime;

    use super::*;

    /// One parsed sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parse the text format strictly: every line is a `# HELP`/`# TYPE` comment or
    /// `name{label="value",...} value`; every sample's name was declared by a TYPE line.
    fn parse(text: &str) -> Vec<Sample> {
        let mut declared = Vec::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a kind");
                assert!(
                    ["counter", "gauge"].contains(&kind),
                    "type {kind} in {line}"
                );
                declared.push(name.to_owned());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
                None => (series, BTreeMap::new()),
            };
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "metric name {name:?}"
            );
            assert!(
                declared.iter().any(|d| d == name),
                "{name} has no TYPE line"
            );
            samples.push((name.to_owned(), labels, value));
        }
        samples
    }

    fn parse_labels(mut text: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        while !text.is_empty() {
            let (name, rest) = text.split_once("=\"").expect("label=\"");
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().expect("closing quote") {
                    (_, '\\') => match chars.next().expect("escaped char") {
                        (_, '\\') => value.push('\\'),
                        (_, '"') => value.push('"'),
                        (_, 'n') => value.push('\n'),
                        (_, other) => panic!("bad escape \\{other}"),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(name.to_owned(), value);
            text = rest[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&rest[end + 1..]);
        }
        labels
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn value(samples: &[Sample], name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
        let wanted = labels(pairs);
        samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
    }

    #[test]
    fn renders_every_series_with_help_type_and_counts() {
        let metrics = Metrics::new();
        metrics.set_jobs([("app", [("vault", "kv")])]);
        metrics.set_config_loaded(true);
        metrics.record_token_request("app", Status::Success);
        metrics.record_token_request("app", Status::Success);
        metrics.record_token_request("app", Status::Failure);
        metrics.record_target_write("app", "vault:kv", Outcome::Updated);
        metrics.record_target_write("app", "vault:kv", Outcome::Failed);
        metrics.set_token_expiry("app", "vault:kv", datetime!(2030-01-01 00:00 UTC));
        metrics.record_job_run("app", Status::Success);
        metrics.record_reload(Status::Failure);

        let text = metrics.render();
        let samples = parse(&text);
        for name in [
            TOKEN_REQUESTS,
            TARGET_WRITES,
            TOKEN_EXPIRY,
            JOB_RUNS,
            CONFIG_RELOADS,
            CONFIG_LOADED,
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "HELP for {name} in:\n{text}"
            );
        }
        let requests = |outcome| {
            value(
                &samples,
                TOKEN_REQUESTS,
                &[("job", "app"), ("outcome", outcome)],
            )
        };
        assert_eq!(requests("success"), Some(2.0));
        assert_eq!(requests("failure"), Some(1.0));
        let writes = [
            ("job", "app"),
            ("target", "vault:kv"),
            ("outcome", "updated"),
        ];
        assert_eq!(value(&samples, TARGET_WRITES, &writes), Some(1.0));
        assert_eq!(
            value(
                &samples,
                TOKEN_EXPIRY,
                &[("job", "app"), ("target", "vault:kv")]
            ),
            Some(1_893_456_000.0)
        );
        let runs = [("job", "app"), ("outcome", "success")];
        assert_eq!(value(&samples, JOB_RUNS, &runs), Some(1.0));
        assert_eq!(
            value(&samples, CONFIG_RELOADS, &[("outcome", "failure")]),
            Some(1.0)
        );
        assert_eq!(value(&samples, CONFIG_LOADED, &[]), Some(1.0));
    }

    #[test]
    fn label_values_are_escaped_and_parse_back() {
        let metrics = Metrics::new();
        let job = "we\"ird\\job\nname";
        metrics.set_jobs([(job, [("b", "t{a,b}=\"x\"")])]);
        metrics.record_target_write(job, "b:t{a,b}=\"x\"", Outcome::Created);

        let text = metrics.render();
        assert!(
            text.contains(r#"job="we\"ird\\job\nname""#),
            "escaped job label in:\n{text}"
        );
        let samples = parse(&text);
        let wanted = [
            ("job", job),
            ("target", "b:t{a,b}=\"x\""),
            ("outcome", "created"),
        ];
        assert_eq!(value(&samples, TARGET_WRITES, &wanted), Some(1.0), "{text}");
    }

    #[test]
    fn a_reload_drops_the_series_of_removed_jobs_and_keeps_the_others() {
        let metrics = Metrics::new();
        metrics.set_jobs([("gone", [("b", "t")]), ("kept", [("b", "t")])]);
        for job in ["gone", "kept"] {
            metrics.record_token_request(job, Status::Success);
            metrics.record_target_write(job, "b:t", Outcome::Updated);
            metrics.set_token_expiry(job, "b:t", datetime!(2030-01-01 00:00 UTC));
            metrics.record_job_run(job, Status::Failure);
        }
        // What the daemon does at a reload that removed `gone`.
        metrics.forget_job("gone");
        metrics.set_jobs([("kept", [("b", "t")])]);

        let samples = parse(&metrics.render());
        let jobs: Vec<&str> = samples
            .iter()
            .filter_map(|(_, labels, _)| labels.get("job").map(String::as_str))
            .collect();
        assert_eq!(jobs, ["kept"; 4], "{samples:?}");
    }

    #[test]
    fn not_ready_until_a_config_is_loaded() {
        let metrics = Metrics::new();
        let now = datetime!(2030-01-01 00:00 UTC);
        assert_eq!(
            metrics.readiness(now),
            Readiness::NotReady("no config loaded yet".to_owned())
        );
        metrics.set_config_loaded(true);
        assert_eq!(metrics.readiness(now), Readiness::Ready);
    }

    #[test]
    fn a_failed_job_is_tolerated_until_its_earliest_token_expires() {
        let metrics = Metrics::new();
        metrics.set_jobs([("app", [("b", "late"), ("b", "early")])]);
        metrics.set_config_loaded(true);
        metrics.set_token_expiry("app", "b:late", datetime!(2030-01-01 02:00 UTC));
        metrics.set_token_expiry("app", "b:early", datetime!(2030-01-01 01:00 UTC));
        metrics.record_job_run("app", Status::Failure);

        assert_eq!(
            metrics.readiness(datetime!(2030-01-01 00:59 UTC)),
            Readiness::Ready,
            "the tokens are still valid"
        );
        assert_eq!(
            metrics.readiness(datetime!(2030-01-01 01:00 UTC)),
            Readiness::NotReady("1 job(s) failed and hold no valid token: app".to_owned())
        );

        metrics.record_job_run("app", Status::Success);
        assert_eq!(
            metrics.readiness(datetime!(2030-01-01 03:00 UTC)),
            Readiness::Ready,
            "a successful pass clears the failure"
        );
    }

    #[test]
    fn a_failed_job_without_any_token_is_not_ready_and_named() {
        let metrics = Metrics::new();
        metrics.set_config_loaded(true);
        metrics.record_job_run("b-job", Status::Failure);
        metrics.record_job_run("a-job", Status::Failure);
        metrics.record_job_run("fine", Status::Success);

        assert_eq!(
            metrics.readiness(datetime!(2030-01-01 00:00 UTC)),
            Readiness::NotReady("2 job(s) failed and hold no valid token: a-job, b-job".to_owned())
        );
        metrics.forget_job("a-job");
        metrics.forget_job("b-job");
        assert_eq!(
            metrics.readiness(datetime!(2030-01-01 00:00 UTC)),
            Readiness::Ready
        );
    }

    #[test]
    fn series_carry_over_a_reload_by_job_and_target_and_render_in_label_order() {
        let metrics = Metrics::new();
        metrics.set_jobs([
            ("zeta", vec![("b", "z")]),
            ("alpha", vec![("vault", "y"), ("file", "x")]),
        ]);
        for target in ["vault:y", "file:x"] {
            metrics.record_target_write("alpha", target, Outcome::Created);
        }
        metrics.record_target_write("alpha", "vault:y", Outcome::Updated);
        metrics.record_target_write("zeta", "b:z", Outcome::Fresh);
        metrics.set_token_expiry("alpha", "file:x", datetime!(2030-01-01 00:00 UTC));
        metrics.record_job_run("alpha", Status::Success);
        // Not loaded: not counted.
        metrics.record_target_write("alpha", "file:other", Outcome::Created);
        metrics.record_target_write("unknown", "b:z", Outcome::Created);
        metrics.record_job_run("unknown", Status::Success);

        // A reload: alpha keeps file:x and gets a new target, vault:y and zeta are gone.
        metrics.set_jobs([
            ("alpha", vec![("file", "x"), ("file", "w")]),
            ("beta", vec![("b", "z")]),
        ]);
        metrics.record_target_write("alpha", "file:w", Outcome::Created);
        metrics.record_target_write("alpha", "file:x", Outcome::Updated);

        let text = metrics.render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                line.starts_with(TARGET_WRITES)
                    || line.starts_with(TOKEN_EXPIRY)
                    || line.starts_with(JOB_RUNS)
            })
            .collect();
        assert_eq!(
            lines,
            [
                "secret_sync_target_writes_total{job=\"alpha\",target=\"file:w\",outcome=\"created\"} 1",
                "secret_sync_target_writes_total{job=\"alpha\",target=\"file:x\",outcome=\"created\"} 1",
                "secret_sync_target_writes_total{job=\"alpha\",target=\"file:x\",outcome=\"updated\"} 1",
                "secret_sync_token_expiry_seconds{job=\"alpha\",target=\"file:x\"} 1893456000",
                "secret_sync_job_runs_total{job=\"alpha\",outcome=\"success\"} 1",
            ],
            "{text}"
        );
    }
}
