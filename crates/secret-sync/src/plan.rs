//! `secret-sync plan`: what `run` would do to each target and why, from metadata alone.
//!
//! Reads no credential, asks for no token and writes nothing: the stores are built exactly as
//! for `run` and only their metadata is read. Exit 1 when `run` would fail on some target.

use anyhow::anyhow;

use crate::cli::{OutputFormat, PlanArgs};
use crate::failure::Failure;
use crate::output;
use crate::run::prepare;

pub async fn run(args: PlanArgs) -> Result<(), Failure> {
    let (engine, jobs) = prepare(&args.config, &args.jobs).await?;
    let entries = engine.plan(&jobs, args.force).await;
    let summary = match args.output {
        OutputFormat::Text => output::plan_table(&entries),
        OutputFormat::Json => format!("{}\n", output::plan_json(&entries)),
    };
    output::print(&summary).map_err(Failure::failed)?;
    let failing = entries.iter().filter(|e| e.is_failure()).count();
    if failing > 0 {
        return Err(Failure::failed(anyhow!(
            "run would fail on {failing} of {} target(s): see the reasons above",
            entries.len()
        )));
    }
    Ok(())
}
