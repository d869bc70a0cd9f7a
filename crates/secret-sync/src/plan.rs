//! `secret-sync plan`: what `run` would do to each target and why, from metadata alone.
//!
//! Reads no credential, asks for no token and writes nothing: the stores are built exactly as
//! for `run` and only their metadata is read. Exit 1 when `run` would fail on some target (2
//! when that is because an environment variable the config names is not set).

use crate::cli::{OutputFormat, PlanArgs};
use crate::failure::{Failure, PassFailures};
use crate::output;
use crate::run::prepare_for;

pub async fn run(args: PlanArgs) -> Result<(), Failure> {
    let (engine, jobs, actions) = prepare_for(&args.config, &args.jobs, args.output).await?;
    let entries = engine.plan(&jobs, args.force).await;
    // The after-write actions the planned writes would run (issue 14).
    let would_run = actions.plan(&jobs, &entries);
    // The app credentials' expiries as the last watch recorded them (issue 13): a file read.
    let credentials = crate::credentials::state::for_plan(&args.config.config, &args.jobs);
    let summary = match args.output {
        OutputFormat::Text => {
            let mut text = output::plan_table(&entries);
            text.push_str(&crate::actions::table(&would_run));
            if let Some((section, _)) = &credentials {
                text.push_str(section);
            }
            text
        }
        OutputFormat::Json => {
            let mut doc = output::plan_json(&entries);
            if !actions.is_empty() {
                doc["actions"] = crate::actions::json(&would_run);
            }
            if let (Some((_, value)), Some(map)) = (credentials, doc.as_object_mut()) {
                map.insert("credentials".into(), value);
            }
            format!("{doc}\n")
        }
    };
    output::print(&summary).map_err(Failure::failed)?;
    let failing: Vec<_> = entries.iter().filter(|e| e.is_failure()).collect();
    let counts = PassFailures {
        failed: failing.len(),
        missing_env: failing.iter().filter(|e| e.usage_error).count(),
    };
    Failure::of_pass(
        counts,
        &format!(
            "run would fail on {} of {} target(s)",
            failing.len(),
            entries.len()
        ),
    )
}
