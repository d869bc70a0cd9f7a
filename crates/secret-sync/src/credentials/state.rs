//! The state file of the last watch: `credentials-state.json` in `[settings.credentials]
//! state_dir`. `credentials`, `rotate` and the daemon write it after each watch; `plan` reads
//! it, so plan shows the recorded expiries without a Graph call or a token request.
//!
//! It holds what Graph answers about an app's credentials (keyIds, display names, hints are
//! not kept, expiries) and never a secret; a job's entry takes a few hundred bytes per
//! credential. It is read and written by the state-file rules (`crate::state_file`): written
//! atomically (a temp file created anew, without following a symlink, then renamed over it),
//! mode 0600; read `O_NOFOLLOW | O_NONBLOCK`, a regular file (fstat), at most 1 MiB, UTF-8 JSON.
//! A symlink, FIFO, device, huge, non-UTF-8 or unparseable file is ignored with a warning (it
//! reads as "never watched", and the next watch replaces it), never followed, waited on or read
//! whole. A missing file is "never watched" without a warning.

use std::collections::BTreeMap;
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
    /// Whether it is the one the job uses (a certificate: the job's certificate, by thumbprint).
    pub in_use: bool,
}

/// The path of the state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(crate::config::CredentialSettings::STATE_FILE)
}

/// Reads the state file; missing: empty; unusable (see the module doc): empty, with a warning.
pub fn read(dir: &Path) -> State {
    let path = path(dir);
    match read_checked(&path) {
        Ok(state) => state.unwrap_or_default(),
        Err(why) => {
            tracing::warn!(path = %path.display(),
                "the credential state file {} is ignored: {why}; the next watch replaces it",
                path.display());
            State::default()
        }
    }
}

/// The state file at `path`: `None` when missing, an error saying why it cannot be used.
fn read_checked(path: &Path) -> Result<Option<State>, String> {
    crate::state_file::read(path, "a state file secret-sync wrote")
}

/// Records `job`'s watch, keeping the other jobs'.
pub fn record(dir: &Path, job: &str, watched: JobState) -> anyhow::Result<()> {
    let mut state = read(dir);
    state.version = 1;
    state.jobs.insert(job.to_owned(), watched);
    crate::state_file::write(dir, crate::config::CredentialSettings::STATE_FILE, &state)
        .with_context(|| {
            format!(
                "cannot record the watch in {} (settings.credentials.state_dir)",
                path(dir).display()
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
