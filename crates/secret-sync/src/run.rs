//! `secret-sync run`: one pass of the sync engine over the config's jobs, then the summary.
//!
//! Loading and checking the config is a usage error (exit 2; under `--output json` also a JSON
//! error document on stdout); once the pass starts, a failed target or job is reported in the
//! summary and never stops the rest. The exit code is then 1, or 2 when a target failed
//! because an environment variable the config names is not set (`failure.rs`).

use anyhow::anyhow;

use crate::actions::{self, Actions};
use crate::cli::{ConfigArgs, OutputFormat, RunArgs};
use crate::config::SyncConfig;
use crate::engine::build::build;
use crate::engine::{Engine, Job, Outcome, PassOptions};
use crate::failure::{Failure, PassFailures};
use crate::output;

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let (engine, jobs, actions) = prepare_for(&args.config, &args.jobs, args.output).await?;
    let options = PassOptions {
        force: args.force,
        dry_run: args.dry_run,
    };
    let started = tokio::time::Instant::now();
    let reports = engine.run(&jobs, options).await;
    // After-write actions (issue 14), after every job's writes; `--dry-run` only lists them.
    let action_reports = if args.dry_run {
        actions.dry_run(&jobs, &reports)
    } else {
        actions.run_pass(&jobs, &reports, started).await
    };
    let failed_actions = actions::failed(&action_reports);
    let summary = match args.output {
        OutputFormat::Text => output::run_table(&reports) + &actions::table(&action_reports),
        OutputFormat::Json => {
            let mut doc = output::run_json(&reports, args.dry_run);
            if !actions.is_empty() {
                doc["actions"] = actions::json(&action_reports);
                if failed_actions > 0 {
                    doc["ok"] = false.into();
                }
            }
            format!("{doc}\n")
        }
    };
    output::print(&summary).map_err(Failure::failed)?;
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .collect();
    let counts = PassFailures {
        failed: failed.len() + failed_actions,
        missing_env: failed.iter().filter(|r| r.usage_error).count(),
    };
    let mut what = format!("{} of {} target(s) failed", failed.len(), reports.len());
    if failed_actions > 0 {
        what.push_str(&format!(
            "; {failed_actions} after-write action(s) failed (the writes themselves succeeded)"
        ));
    }
    Failure::of_pass(counts, &what)
}

/// [`prepare`], and under `--output json` a JSON error document on stdout when it fails, so a
/// program reading stdout always gets a document.
pub async fn prepare_for(
    config: &ConfigArgs,
    jobs: &[String],
    format: OutputFormat,
) -> Result<(Engine, Vec<Job>, Actions), Failure> {
    let prepared = prepare(config, jobs).await;
    if let (Err(Failure::Usage(err) | Failure::Failed(err)), OutputFormat::Json) =
        (&prepared, format)
    {
        // Best effort: the error itself still goes to stderr with its exit code.
        let _ = output::print(&format!("{}\n", output::error_json(err)));
    }
    prepared
}

/// Loads the config, checks the `--job` names and builds the engine and the jobs' after-write
/// actions (exit 2 on any mistake).
pub async fn prepare(
    config: &ConfigArgs,
    jobs: &[String],
) -> Result<(Engine, Vec<Job>, Actions), Failure> {
    let config = crate::config::load(&config.config).map_err(Failure::usage)?;
    check_job_names(&config, jobs).map_err(Failure::usage)?;
    let (engine, jobs) = build(&config, jobs).await.map_err(Failure::usage)?;
    let actions = Actions::new(&config, engine.stores_and_cache().0);
    Ok((engine, jobs, actions))
}

pub fn check_job_names(config: &SyncConfig, jobs: &[String]) -> anyhow::Result<()> {
    let unknown: Vec<&str> = jobs
        .iter()
        .filter(|name| config.job(name).is_none())
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = config.jobs.iter().map(|job| job.name.as_str()).collect();
    let suggestions: Vec<String> = unknown
        .iter()
        .filter_map(|name| crate::config::load::suggest(name, known.iter().copied()))
        .map(|close| format!("did you mean \"{close}\"?"))
        .collect();
    let mut message = format!(
        "--job {}: no such job in {} (its jobs: {})",
        unknown.join(", "),
        config.source_path.display(),
        known.join(", ")
    );
    if !suggestions.is_empty() {
        message.push_str(&format!("; {}", suggestions.join(" ")));
    }
    Err(anyhow!(message))
}
