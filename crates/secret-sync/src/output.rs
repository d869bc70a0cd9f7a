//! The summaries `run` and `plan` print on stdout: an aligned table for people, one JSON
//! document for programs (`--output json`). Logs go to stderr through `tracing`, never here.
//!
//! Reports carry names, outcomes, expiries and messages only; no secret or token value ever
//! reaches this module, so none can be printed.
//!
//! The JSON documents carry `"version": `[`JSON_VERSION`]: a field added keeps the version, a
//! field renamed or removed (or a meaning changed) bumps it. Their shape is in docs/cli.md.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::error::ConfigErrors;
use crate::engine::decide::Action;
use crate::engine::{Outcome, PlanEntry, TargetReport};

/// The version of the JSON documents of `run`, `plan` and their errors (see the module doc).
pub const JSON_VERSION: u64 = 1;

/// Writes a summary to stdout; a closed stdout (`| head`) is an error, not a panic.
pub fn print(summary: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(summary.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|err| anyhow::anyhow!("cannot write the summary to stdout: {err}"))
}

/// The `run` summary as a table, with a closing count line.
pub fn run_table(reports: &[TargetReport]) -> String {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            [
                r.job.clone(),
                target(&r.backend, &r.name),
                r.outcome.as_str().to_owned(),
                expiry(r.expires_on),
                r.detail.clone(),
            ]
        })
        .collect();
    let mut out = table(["JOB", "TARGET", "OUTCOME", "EXPIRES", "DETAIL"], &rows);
    let counts = counts(reports.iter().map(|r| r.outcome));
    let summary: Vec<String> = counts
        .iter()
        .filter(|&&(_, n)| n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    out.push_str(&format!(
        "{} target(s): {}\n",
        reports.len(),
        if summary.is_empty() {
            "none".to_owned()
        } else {
            summary.join(", ")
        }
    ));
    out
}

/// The `run` summary as one JSON document: every target has a `reason` (what happened, or
/// what went wrong); a failed one also has it as `error`.
pub fn run_json(reports: &[TargetReport], dry_run: bool) -> Value {
    let targets: Vec<Value> = reports
        .iter()
        .map(|r| {
            let mut entry = json!({
                "job": r.job,
                "backend": r.backend,
                "name": r.name,
                "outcome": r.outcome.as_str(),
                "expires_on": r.expires_on.map(OffsetDateTime::unix_timestamp),
                "expires_at": r.expires_on.map(rfc3339),
                "reason": r.detail,
            });
            if r.outcome == Outcome::Failed {
                entry["error"] = Value::String(r.detail.clone());
            }
            entry
        })
        .collect();
    json!({
        "version": JSON_VERSION,
        "ok": reports.iter().all(|r| r.outcome != Outcome::Failed),
        "dry_run": dry_run,
        "counts": counts_json(counts(reports.iter().map(|r| r.outcome))),
        "targets": targets,
    })
}

/// The JSON document `run` and `plan` print on stdout under `--output json` when they cannot
/// start (a config error, an unknown `--job`): `{"version", "ok": false, "error": {"kind",
/// "message", "errors"}}`, `errors` listing each config error with its position and key.
pub fn error_json(err: &anyhow::Error) -> Value {
    let message = format!("{err:#}");
    match err.downcast_ref::<ConfigErrors>() {
        Some(config) => json!({
            "version": JSON_VERSION,
            "ok": false,
            "error": {
                "kind": "config",
                "message": message,
                "errors": config.errors().iter().map(|e| json!({
                    "file": config.file().display().to_string(),
                    "line": e.position.map(|(line, _)| line),
                    "column": e.position.map(|(_, column)| column),
                    "key": e.key,
                    "message": e.message,
                })).collect::<Vec<_>>(),
            },
        }),
        None => json!({
            "version": JSON_VERSION,
            "ok": false,
            "error": { "kind": "usage", "message": message, "errors": [] },
        }),
    }
}

/// The plan as a table, with a closing line saying how many writes `run` would do.
pub fn plan_table(entries: &[PlanEntry]) -> String {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            [
                e.job.clone(),
                target(&e.backend, &e.name),
                action(e).to_owned(),
                expiry(e.expires_on),
                e.reason.clone(),
            ]
        })
        .collect();
    let mut out = table(["JOB", "TARGET", "ACTION", "EXPIRES", "REASON"], &rows);
    let writes = entries
        .iter()
        .filter(|e| e.action.is_some_and(|a| a.writes()))
        .count();
    let failures = entries.iter().filter(|e| e.is_failure()).count();
    out.push_str(&format!(
        "{} target(s): run would write {writes}; {failures} would fail\n",
        entries.len()
    ));
    out
}

/// The plan as one JSON document.
pub fn plan_json(entries: &[PlanEntry]) -> Value {
    let targets: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "job": e.job,
                "backend": e.backend,
                "name": e.name,
                "action": action(e),
                "expires_on": e.expires_on.map(OffsetDateTime::unix_timestamp),
                "expires_at": e.expires_on.map(rfc3339),
                "reason": e.reason,
            })
        })
        .collect();
    json!({
        "version": JSON_VERSION,
        "ok": entries.iter().all(|e| !e.is_failure()),
        "writes": entries.iter().filter(|e| e.action.is_some_and(|a| a.writes())).count(),
        "counts": counts_json(counts(entries.iter().map(predicted_outcome))),
        "targets": targets,
    })
}

/// The outcome `run` would report for a plan entry (a plan cannot foresee `unchanged`, and
/// `skipped` is `run --dry-run`'s).
fn predicted_outcome(entry: &PlanEntry) -> Outcome {
    match entry.action {
        Some(Action::Keep) => Outcome::Fresh,
        Some(Action::Create) => Outcome::Created,
        Some(Action::Update) => Outcome::Updated,
        Some(Action::Refuse) | None => Outcome::Failed,
    }
}

fn action(entry: &PlanEntry) -> &'static str {
    entry.action.map_or("error", |a| a.as_str())
}

/// How many targets had each outcome, in the order of [`Outcome::ALL`], zeros included.
fn counts(outcomes: impl Iterator<Item = Outcome> + Clone) -> Vec<(&'static str, usize)> {
    Outcome::ALL
        .iter()
        .map(|&outcome| {
            let n = outcomes.clone().filter(|&o| o == outcome).count();
            (outcome.as_str(), n)
        })
        .collect()
}

/// Every outcome's count as a JSON object (zeros too, so a program can read any key).
fn counts_json(counts: Vec<(&'static str, usize)>) -> Value {
    Value::Object(
        counts
            .into_iter()
            .map(|(outcome, n)| (outcome.to_owned(), Value::from(n)))
            .collect(),
    )
}

fn target(backend: &str, name: &str) -> String {
    format!("{backend}:{name}")
}

fn expiry(at: Option<OffsetDateTime>) -> String {
    at.map_or_else(|| "-".to_owned(), rfc3339)
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// [`table`] for other commands' output (`credentials`).
pub fn columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    table(header, rows)
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn report(name: &str, outcome: Outcome, detail: &str) -> TargetReport {
        TargetReport {
            job: "graph".to_owned(),
            backend: "local".to_owned(),
            name: name.to_owned(),
            outcome,
            expires_on: (outcome != Outcome::Failed)
                .then_some(datetime!(2026-11-24 07:00:00.5 UTC)),
            detail: detail.to_owned(),
            usage_error: false,
        }
    }

    #[test]
    fn run_table_aligns_columns_and_counts_outcomes() {
        let reports = [
            report("graph.json", Outcome::Created, "the secret does not exist"),
            report("t", Outcome::Failed, "backend \"local\": cannot write"),
        ];
        assert_eq!(
            run_table(&reports),
            "\
JOB    TARGET            OUTCOME  EXPIRES               DETAIL
graph  local:graph.json  created  2026-11-24T07:00:00Z  the secret does not exist
graph  local:t           failed   -                     backend \"local\": cannot write
2 target(s): 1 created, 1 failed
"
        );
    }

    #[test]
    fn run_json_names_errors_and_reasons() {
        let reports = [
            report("a", Outcome::Fresh, "fresh"),
            report("b", Outcome::Failed, "boom"),
        ];
        let doc = run_json(&reports, false);
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["ok"], false);
        assert_eq!(
            doc["counts"],
            json!({"created": 0, "updated": 0, "unchanged": 0, "fresh": 1, "skipped": 0, "failed": 1})
        );
        assert_eq!(doc["targets"][0]["reason"], "fresh");
        assert_eq!(doc["targets"][0].get("error"), None);
        assert_eq!(doc["targets"][1]["reason"], "boom");
        assert_eq!(doc["targets"][0]["expires_at"], "2026-11-24T07:00:00Z");
        assert_eq!(doc["targets"][0]["expires_on"], 1_795_503_600_i64);
        assert_eq!(doc["targets"][1]["error"], "boom");
        assert_eq!(doc["targets"][1]["expires_at"], Value::Null);
    }

    #[test]
    fn plan_counts_writes_and_failures() {
        let entry = |action| PlanEntry {
            job: "graph".to_owned(),
            backend: "kv".to_owned(),
            name: "n".to_owned(),
            action,
            expires_on: None,
            reason: "why".to_owned(),
            usage_error: false,
        };
        let entries = [
            entry(Some(Action::Create)),
            entry(Some(Action::Keep)),
            entry(Some(Action::Refuse)),
            entry(None),
        ];
        let text = plan_table(&entries);
        assert!(
            text.ends_with("4 target(s): run would write 1; 2 would fail\n"),
            "{text}"
        );
        let doc = plan_json(&entries);
        assert_eq!(doc["writes"], 1);
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["version"], 1);
        assert_eq!(
            doc["counts"],
            json!({"created": 1, "updated": 0, "unchanged": 0, "fresh": 1, "skipped": 0, "failed": 2})
        );
        assert_eq!(doc["targets"][3]["action"], "error");
    }
}
