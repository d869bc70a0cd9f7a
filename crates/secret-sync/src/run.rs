//! `secret-sync run`: one pass of the sync engine over the config's jobs, then the summary.
//!
//! Loading and checking the config is a usage error (exit 2); once the pass starts, a failed
//! target or job is reported in the summary and makes the exit code 1, never stopping the rest.

use anyhow::anyhow;

use crate::cli::{ConfigArgs, OutputFormat, RunArgs};
use crate::config::SyncConfig;
use crate::engine::build::build;
use crate::engine::{Engine, Job, Outcome, PassOptions};
use crate::failure::Failure;
use crate::output;

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let (engine, jobs) = prepare(&args.config, &args.jobs).await?;
    let options = PassOptions {
        force: args.force,
        dry_run: args.dry_run,
    };
    let reports = engine.run(&jobs, options).await;
    let summary = match args.output {
        OutputFormat::Text => output::run_table(&reports),
        OutputFormat::Json => format!("{}\n", output::run_json(&reports, args.dry_run)),
    };
    output::print(&summary).map_err(Failure::failed)?;
    let failed = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .count();
    if failed > 0 {
        return Err(Failure::failed(anyhow!(
            "{failed} of {} target(s) failed: see the summary for each error",
            reports.len()
        )));
    }
    Ok(())
}

/// Loads the config, checks the `--job` names and builds the engine (exit 2 on any mistake).
pub async fn prepare(config: &ConfigArgs, jobs: &[String]) -> Result<(Engine, Vec<Job>), Failure> {
    let config = crate::config::load(&config.config).map_err(Failure::usage)?;
    check_job_names(&config, jobs).map_err(Failure::usage)?;
    build(&config, jobs).await.map_err(Failure::usage)
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
    Err(anyhow!(
        "--job {}: no such job in {} (its jobs: {})",
        unknown.join(", "),
        config.source_path.display(),
        known.join(", ")
    ))
}
