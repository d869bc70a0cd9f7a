//! The state file of the last watch: `credentials-state.json` in `[settings.credentials]
//! state_dir`. `credentials`, `rotate` and the daemon write it after each watch; `plan` reads
//! it, so plan shows the recorded expiries without a Graph call or a token request.
//!
//! It holds what Graph answers about an app's credentials (keyIds, display names, hints are
//! not kept, expiries) and never a secret. Written atomically (temp file and rename), mode
//! 0600; a missing or unreadable file is "never watched", never an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// By job name.
    pub jobs: BTreeMap<String, JobState>,
}

/// One job's last watch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobState {
    /// When Graph was read (RFC 3339).
    pub watched_at: String,
    /// The app's client id.
    pub app: String,
    pub credentials: Vec<CredentialState>,
}

/// One credential of the app.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CredentialState {
    /// `password` or `certificate`.
    pub kind: String,
    pub key_id: String,
    pub display_name: Option<String>,
    /// RFC 3339, or none when Graph gave no end.
    pub expires_on: Option<String>,
    /// Whether it is the one the job uses (certificates: not determined, false).
    pub in_use: bool,
}

/// The path of the state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(crate::config::CredentialSettings::STATE_FILE)
}

/// Reads the state file; missing or unreadable: empty.
pub fn read(dir: &Path) -> State {
    let Ok(text) = std::fs::read_to_string(path(dir)) else {
        return State::default();
    };
    serde_json::from_str(&text).unwrap_or_default()
}

/// Records `job`'s watch, keeping the other jobs'.
pub fn record(dir: &Path, job: &str, watched: JobState) -> anyhow::Result<()> {
    let mut state = read(dir);
    state.version = 1;
    state.jobs.insert(job.to_owned(), watched);
    let text = serde_json::to_string_pretty(&state)?;
    let target = path(dir);
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        crate::config::CredentialSettings::STATE_FILE,
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)
    };
    write().with_context(|| {
        format!(
            "cannot record the watch in {} (settings.credentials.state_dir)",
            target.display()
        )
    })
}

/// What `plan` shows of the last watch of the jobs named `jobs` (every job when empty) of the
/// config at `config`: a text section and a JSON value. `None` when no selected job watches.
/// Reads the state file only: no Graph call, no token request.
pub fn for_plan(config: &Path, jobs: &[String]) -> Option<(String, serde_json::Value)> {
    let config = crate::config::load(config).ok()?;
    let watching: Vec<&str> = config
        .jobs
        .iter()
        .filter(|j| (jobs.is_empty() || jobs.contains(&j.name)) && j.lifecycle.uses_graph())
        .map(|j| j.name.as_str())
        .collect();
    if watching.is_empty() {
        return None;
    }
    let state = read(&config.settings.credentials.state_dir);
    let now = time::OffsetDateTime::now_utc();
    let mut text = String::from(
        "\nApp credentials (as recorded at the last watch; `secret-sync credentials` reads them again):\n",
    );
    let mut entries = Vec::new();
    for name in watching {
        let Some(job) = state.jobs.get(name) else {
            text.push_str(&format!("  {name}: never watched\n"));
            entries.push(serde_json::json!({"job": name, "watched_at": null, "credentials": []}));
            continue;
        };
        let mut shown = Vec::new();
        for c in &job.credentials {
            let end = c.expires_on.as_deref().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            let days = end.map(|end| super::days_left(end, now));
            if c.in_use || c.kind == "certificate" {
                text.push_str(&format!(
                    "  {name}: {} {} expires {} ({}){} (watched {})\n",
                    if c.kind == "password" {
                        "client secret"
                    } else {
                        "certificate"
                    },
                    c.key_id,
                    c.expires_on.as_deref().unwrap_or("never"),
                    days.map_or_else(|| "no end".to_owned(), |d| format!("{d} days left")),
                    if c.in_use { ", in use" } else { "" },
                    job.watched_at
                ));
            }
            shown.push(serde_json::json!({
                "kind": c.kind, "key_id": c.key_id, "display_name": c.display_name,
                "expires_on": c.expires_on, "days_left": days, "in_use": c.in_use,
            }));
        }
        if !job
            .credentials
            .iter()
            .any(|c| c.in_use || c.kind == "certificate")
        {
            text.push_str(&format!(
                "  {name}: {} password(s), the one in use not known (watched {})\n",
                job.credentials.len(),
                job.watched_at
            ));
        }
        entries.push(
            serde_json::json!({"job": name, "watched_at": job.watched_at, "credentials": shown}),
        );
    }
    Some((text, serde_json::Value::Array(entries)))
}
